//! Loader tests: every error is found, and each one points at the right line and column.

use super::*;
use std::path::PathBuf;

fn env(name: &str) -> Option<String> {
    match name {
        "UPSTREAM" => Some("http://127.0.0.1:3000".into()),
        _ => None,
    }
}

fn load(text: &str) -> Result<crate::runtime::Runtime, ConfigErrors> {
    load_str(text, Path::new("/etc/portcullis/test.yaml"), env)
}

fn errors(text: &str) -> Vec<String> {
    load(text)
        .expect_err("config should be refused")
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn a_minimal_file_loads_with_defaults() {
    let rt = load("routes:\n  - upstream: echo://\n").unwrap();
    assert_eq!(rt.listeners.plain, vec!["0.0.0.0:8080".parse().unwrap()]);
    assert_eq!(rt.listeners.admin, Some("127.0.0.1:9901".parse().unwrap()));
    assert!(rt.threads >= 1);
    assert_eq!(rt.routes.routes().len(), 1);
    assert_eq!(&*rt.routes.routes()[0].name, "*/");
}

#[test]
fn every_unknown_key_is_reported_with_its_place() {
    let errs = errors(
        "server:\n  listne: [\":8080\"]\nroutes:\n  - upstream: echo://\n    hots: a.example.com\n  - upstream: echo://\n    pth: /x\n",
    );
    assert_eq!(
        errs,
        [
            "/etc/portcullis/test.yaml:2:3: server.listne: unknown key",
            "/etc/portcullis/test.yaml:5:5: routes[0].hots: unknown key",
            "/etc/portcullis/test.yaml:7:5: routes[1].pth: unknown key",
            // With the misspelt keys ignored, both routes serve any host at /.
            "/etc/portcullis/test.yaml:6:5: routes[1].path: duplicate route: routes[0] already serves host * path /",
        ]
    );
}

#[test]
fn rate_limit_errors_name_their_place() {
    let errs = errors(
        "rate_limits:\n  - name: a\n    key: cookie\n    limit: 0/s\n  - name: b\n    key: client_ip\n    limit: 10/parsec\n    burst: 0\n  - name: c\n    key: \"header:\"\n    limit: 1/s\n    store: redis\n  - name: a\n    key: route\n    limit: 1/s\nroutes:\n  - upstream: echo://\n    rate_limit: [a, nope]\n",
    );
    assert_eq!(
        errs,
        [
            "/etc/portcullis/test.yaml:18:21: routes[0].rate_limit[1]: no limiter named \"nope\" under rate_limits (defined: a, auth-endpoints, b, c)",
            "/etc/portcullis/test.yaml:3:5: rate_limits[0].key: unknown key kind \"cookie\": expected client_ip, user, route or header:NAME",
            "/etc/portcullis/test.yaml:4:5: rate_limits[0].limit: invalid rate \"0/s\": the count must be at least 1",
            "/etc/portcullis/test.yaml:7:5: rate_limits[1].limit: invalid rate \"10/parsec\": expected requests/period, e.g. 100/s, 600/m or 5/15m",
            "/etc/portcullis/test.yaml:8:5: rate_limits[1].burst: burst must be at least 1",
            "/etc/portcullis/test.yaml:10:5: rate_limits[2].key: invalid header name \"\" in key \"header:\"",
            "/etc/portcullis/test.yaml:12:5: rate_limits[2].store: store: redis uses the session store's Redis: set session.store: redis and session.redis",
            "/etc/portcullis/test.yaml:13:5: rate_limits[3].name: duplicate limiter name \"a\": rate_limits[0] has it already",
        ]
    );
}

#[test]
fn rate_limits_compile() {
    let rt = load(
        "rate_limits:\n  - name: per-ip\n    key: client_ip\n    limit: 5/15m\n    burst: 3\n  - name: api\n    key: header:X-Api-Key\n    limit: 100/s\n    max_keys: 10\nroutes:\n  - upstream: echo://\n    auth: none\n    rate_limit: [per-ip, api, per-ip, auth-endpoints]\n",
    )
    .unwrap();
    let l = &rt.limiters;
    assert_eq!(l.list.len(), 3, "the two, and the built-in auth-endpoints");
    assert_eq!(
        l.list[l.auth_endpoints].spec,
        crate::ratelimit::Spec::auth_endpoints()
    );
    let per_ip = &l.list[0].spec;
    assert_eq!(
        (per_ip.count, per_ip.period.as_secs(), per_ip.burst),
        (5, 900, 3)
    );
    assert_eq!(l.list[1].spec.burst, 1, "burst defaults to 1");
    assert_eq!(
        rt.routes.routes()[0].rate_limit,
        [0, 1, 2],
        "each limiter once"
    );
}

const WITH_PROVIDER: &str = "session:\n  secrets: [\"MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=\"]\nserver:\n  public_url: http://auth.example.com\nproviders:\n  - id: corp\n    type: oidc\n    issuer: http://idp.example.com\n    client_id: p\n    client_secret: s\n";

#[test]
fn policies_compile_in_both_forms() {
    let rt = load(&format!(
        "{WITH_PROVIDER}routes:\n  - upstream: echo://\n    public_paths: [/static/, /healthz]\n    allow:\n      - {{ groups: [staff], mfa: true }}\n      - {{ emails: [Boss@Example.com], networks: [10.0.0.0/8], methods: [get] }}\n    deny: {{ email_domains: [\"@contractor.test\"], claims: {{ dept: [x, y], level: z }} }}\n    bearer: true\n    scopes: [orders:read]\n    csrf: false\n"
    ))
    .unwrap();
    let r = &rt.routes.routes()[0];
    assert_eq!(r.policy.allow.len(), 2);
    assert!(r.policy.allow[0].mfa);
    assert_eq!(
        r.policy.allow[1].emails.as_deref(),
        Some(&["boss@example.com".to_string()][..])
    );
    assert_eq!(
        r.policy.allow[1].methods.as_deref(),
        Some(&[http::Method::GET][..])
    );
    assert_eq!(
        r.policy.deny[0].email_domains.as_deref(),
        Some(&["contractor.test".to_string()][..])
    );
    assert_eq!(r.policy.deny[0].claims.len(), 2);
    assert!(r.is_public("/static/app.js") && r.is_public("/healthz") && !r.is_public("/healthzz"));
    assert!(r.bearer && !r.csrf);
    assert_eq!(r.scopes, ["orders:read"]);
    assert!(r.policy.mfa.amr.contains(&"otp".to_string()));
}

#[test]
fn policy_mistakes_are_reported_where_they_are() {
    let errs = errors(&format!(
        "{WITH_PROVIDER}routes:\n  - upstream: echo://\n    allow: {{ groups: [], nets: [x] }}\n  - upstream: echo://\n    path: /b\n    allow:\n      - {{ networks: [10.0.0.0/33], methods: [\"G ET\"] }}\n      - {{ email_domains: [a@b.com], emails: [\"\\\"x@y\\\"@z.com\"] }}\n      - {{}}\n    public_paths: [/a/../b]\n  - upstream: echo://\n    path: /c\n    auth: none\n    deny: {{ users: [x] }}\n    scopes: [a]\n"
    ));
    let want = [
        "routes[0].allow.nets: unknown key",
        "routes[0].allow.groups: an empty list never matches",
        "routes[1].allow[0].networks[0]: invalid network",
        "routes[1].allow[0].methods[0]:",
        "routes[1].allow[1].email_domains[0]:",
        "routes[1].allow[1].emails[0]:",
        "routes[1].allow[2]: a rule with no criteria",
        "routes[1].public_paths[0]: public path \"/a/../b\" is not in normal form",
        "routes[2].deny: deny applies to routes with auth: required",
        "routes[2].scopes: scopes apply to Bearer tokens",
    ];
    for w in want {
        assert!(
            errs.iter().any(|e| e.contains(w)),
            "missing {w:?} in {errs:#?}"
        );
    }
    assert_eq!(errs.len(), want.len(), "{errs:#?}");
}

#[test]
fn a_route_without_upstream_serves_forward_auth_only() {
    let rt = load(&format!(
        "{WITH_PROVIDER}routes:\n  - host: app.example.com\n"
    ))
    .unwrap();
    assert!(matches!(
        rt.routes.routes()[0].upstream,
        crate::upstream::Upstream::None
    ));
}

#[test]
fn semantic_errors_are_all_collected_and_located() {
    let text = "\
server:
  listen: [\"nope\"]
  timeouts: { upstream_read: 10x }
  trusted_proxies: [10.0.0.0/8, bogus]
logging:
  format: xml
routes:
  - host: app.example.com
    upstream: ftp://x
  - host: app.example.com
    upstream: echo://
  - host: app.example.com
    upstream: echo://
  - path: /a/../b
    upstream: static://700
    headers:
      add: { Host: x, \"bad name\": y }
";
    let errs = errors(text);
    let expect = [
        ":2:12: server.listen[0]: invalid listen address",
        ":3:15: server.timeouts.upstream_read: invalid duration",
        ":4:33: server.trusted_proxies[1]: invalid network",
        ":6:3: logging.format: unknown format",
        ":9:5: routes[0].upstream: unsupported upstream scheme",
        ":12:5: routes[2].path: duplicate route: routes[1] already serves",
        ":14:5: routes[3].path: route path \"/a/../b\" is not in normal form",
        ":15:5: routes[3].upstream: invalid static upstream",
        ":17:23: routes[3].headers.add.bad name: invalid header name",
        ":17:14: routes[3].headers.add.Host: Host is managed by Portcullis",
    ];
    for e in expect {
        assert!(
            errs.iter().any(|got| got.contains(e)),
            "missing {e:?} in {errs:#?}"
        );
    }
    assert_eq!(errs.len(), expect.len(), "{errs:#?}");
}

#[test]
fn type_and_syntax_errors_are_located() {
    let errs = errors("server:\n  threads: many\nroutes: []\n");
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("/etc/portcullis/test.yaml:2:12: server.threads: invalid type"),
        "{errs:?}"
    );
    let errs = errors("routes:\n  - upstream: echo://\n   bad indent: [\n");
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("/etc/portcullis/test.yaml:3:"),
        "{errs:?}"
    );
}

#[test]
fn environment_variables_expand_and_unset_ones_fail() {
    let rt = load("routes:\n  - upstream: ${UPSTREAM}\n    path: ${ROUTE_PATH:-/app}\n").unwrap();
    assert_eq!(
        rt.routes.routes()[0].upstream.describe(),
        "http://127.0.0.1:3000"
    );
    assert_eq!(rt.routes.routes()[0].path, "/app");
    let errs = errors("routes:\n  - upstream: ${NOT_SET_ANYWHERE}\n");
    assert_eq!(
        errs,
        ["/etc/portcullis/test.yaml:2:15: routes[0].upstream: environment variable NOT_SET_ANYWHERE is not set"]
    );
}

#[test]
fn secrets_are_read_from_files_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "Bearer s3cret\n").unwrap();
    let path: PathBuf = dir.path().join("portcullis.yaml");
    let text =
        "routes:\n  - upstream: echo://\n    headers:\n      add_file: { Authorization: token }\n";
    let rt = load_str(text, &path, env).unwrap();
    let added = &rt.routes.routes()[0].headers.request_add;
    assert_eq!(added.len(), 1);
    assert_eq!(added[0].0, "authorization");
    assert_eq!(added[0].1, "Bearer s3cret");

    let missing =
        "routes:\n  - upstream: echo://\n    headers:\n      add_file: { Authorization: nope }\n";
    let errs = load_str(missing, &path, env).unwrap_err();
    assert!(
        errs.to_string()
            .contains("routes[0].headers.add_file.Authorization: cannot read"),
        "{errs}"
    );
}

#[test]
fn tls_files_must_exist_and_parse() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    let path = dir.path().join("portcullis.yaml");
    let text = "server:\n  tls:\n    listen: [\"127.0.0.1:8443\"]\n    cert_file: cert.pem\n    key_file: missing.pem\nroutes:\n  - upstream: echo://\n";
    let errs = load_str(text, &path, env).unwrap_err().to_string();
    assert!(
        errs.contains(":4:5: server.tls.cert_file:")
            && errs.contains("does not hold a valid PEM certificate"),
        "{errs}"
    );
    assert!(
        errs.contains(":5:5: server.tls.key_file: cannot read"),
        "{errs}"
    );
}

#[test]
fn routes_match_most_specific_host_then_longest_prefix() {
    let rt = load(
        "routes:
  - { name: any, upstream: echo:// }
  - { name: wild, host: \"*.example.com\", upstream: echo:// }
  - { name: deep, host: \"*.eu.example.com\", upstream: echo:// }
  - { name: app, host: app.example.com, upstream: echo:// }
  - { name: app-api, host: App.Example.com, path: /api, upstream: echo:// }
  - { name: app-static, host: app.example.com, path: /static/, upstream: echo:// }
",
    )
    .unwrap();
    let name = |host: &str, path: &str| rt.routes.find(host, path).map(|r| r.name.to_string());
    assert_eq!(name("app.example.com", "/"), Some("app".into()));
    assert_eq!(name("app.example.com", "/api"), Some("app-api".into()));
    assert_eq!(name("app.example.com", "/api/v1"), Some("app-api".into()));
    assert_eq!(name("app.example.com", "/apix"), Some("app".into()));
    assert_eq!(
        name("app.example.com", "/static"),
        Some("app-static".into())
    );
    assert_eq!(name("other.example.com", "/"), Some("wild".into()));
    assert_eq!(name("x.eu.example.com", "/"), Some("deep".into()));
    assert_eq!(name("a.b.example.com", "/"), Some("wild".into()));
    assert_eq!(name("example.com", "/"), Some("any".into()));
    assert_eq!(name("evilexample.com", "/"), Some("any".into()));
}

#[test]
fn security_headers_merge_route_over_global_over_defaults() {
    let rt = load(
        "headers:
  security:
    frame_options: DENY
    referrer_policy: null
routes:
  - upstream: echo://
  - path: /embed
    upstream: echo://
    headers:
      security: { frame_options: null, content_security_policy: \"default-src 'self'\" }
",
    )
    .unwrap();
    let names = |i: usize| {
        let s = &rt.routes.routes()[i].headers.security;
        s.always
            .iter()
            .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(0),
        ["x-content-type-options: nosniff", "x-frame-options: DENY"]
    );
    assert_eq!(
        names(1),
        [
            "x-content-type-options: nosniff",
            "content-security-policy: default-src 'self'"
        ]
    );
    assert!(rt.routes.routes()[0].headers.security.hsts.is_some());
    let own: Vec<_> = rt
        .own_pages
        .always
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert!(own.contains(&"content-security-policy") && own.contains(&"cache-control"));
}

#[test]
fn unknown_keys_unset_variables_and_bad_values_are_reported_together() {
    let errs = errors(
        "server:\n  timeouts: { idle: 10x }\nroutes:\n  - upstream: ${NOT_SET_ANYWHERE}\n    upstrem: x\n  - upstream: ftp://x\n",
    );
    let expect = [
        ":4:15: routes[0].upstream: environment variable NOT_SET_ANYWHERE is not set",
        ":5:5: routes[0].upstrem: unknown key",
        ":2:15: server.timeouts.idle: invalid duration",
        ":6:5: routes[1].upstream: unsupported upstream scheme",
    ];
    for e in expect {
        assert!(
            errs.iter().any(|got| got.contains(e)),
            "missing {e:?} in {errs:#?}"
        );
    }
    // The empty value left by the unset variable is not reported a second time.
    assert_eq!(errs.len(), expect.len(), "{errs:#?}");
}

#[test]
fn mfa_belongs_in_allow_rules() {
    let errs = errors(&format!(
        "{WITH_PROVIDER}routes:\n  - upstream: echo://\n    deny: {{ groups: [x], mfa: true }}\n"
    ));
    assert!(
        errs.iter()
            .any(|e| e.contains("routes[0].deny: mfa applies to allow rules")),
        "{errs:?}"
    );
}

#[test]
fn admin_null_or_off_disables_the_admin_listener() {
    for text in [
        "admin: null\n",
        "admin: ~\n",
        "admin:\n",
        "admin: { listen: null }\n",
        "admin:\n  listen:\n",
        "admin: { listen: off }\n",
        "admin: { listen: \"off\" }\n",
    ] {
        let rt = load(&format!("{text}routes:\n  - upstream: echo://\n"))
            .unwrap_or_else(|e| panic!("{text:?} refused: {e}"));
        assert_eq!(rt.listeners.admin, None, "{text:?}");
    }
    // An empty map keeps the default; a misspelt key is still reported.
    let rt = load("admin: {}\nroutes:\n  - upstream: echo://\n").unwrap();
    assert_eq!(rt.listeners.admin, Some("127.0.0.1:9901".parse().unwrap()));
    let rt =
        load("admin: { listen: \"127.0.0.1:9902\" }\nroutes:\n  - upstream: echo://\n").unwrap();
    assert_eq!(rt.listeners.admin, Some("127.0.0.1:9902".parse().unwrap()));
    assert_eq!(
        errors("admin: { lisen: x }\nroutes:\n  - upstream: echo://\n"),
        ["/etc/portcullis/test.yaml:1:10: admin.lisen: unknown key"]
    );
    assert_eq!(
        errors("admin:\n  lisen: null\nroutes:\n  - upstream: echo://\n"),
        ["/etc/portcullis/test.yaml:2:3: admin.lisen: unknown key"]
    );
    let errs = errors("admin: [x]\nroutes:\n  - upstream: echo://\n");
    assert!(
        errs.len() == 1
            && errs[0].starts_with("/etc/portcullis/test.yaml:1:8: admin: invalid type"),
        "{errs:?}"
    );
    let errs = errors("admin: { listen: nowhere }\nroutes:\n  - upstream: echo://\n");
    assert!(
        errs.len() == 1 && errs[0].contains(":1:10: admin.listen: invalid listen address"),
        "{errs:?}"
    );
}
