//! Route policies end to end: real logins at a real IdP, then the same users against routes
//! whose `allow` / `deny` each test one criterion, both ways; public paths and their bypass
//! attempts; CSRF on cookie-authenticated unsafe methods; the `access_denied` audit event.

mod support;

use support::idp::{Browser, Idp, IdpClient, IdpConfig, IdpUser, PASSWORD};
use support::{Portcullis, Setup, Upstream};

struct World {
    #[allow(dead_code)] // kept alive for the test's duration
    idp: Idp,
    up: Upstream,
    pc: Portcullis,
}

impl World {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.pc.http_port())
    }
}

const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// One route per criterion, each as `allow` (`/a-…`) and as `deny` (`/d-…`).
const ROUTES: &str = r#"  - { path: /, upstream: "@UP@" }
  - { path: /a-users, upstream: "@UP@", allow: { users: [alice] } }
  - { path: /d-users, upstream: "@UP@", deny: { users: [alice] } }
  - { path: /a-emails, upstream: "@UP@", allow: { emails: [ALICE@example.com] } }
  - { path: /d-emails, upstream: "@UP@", deny: { emails: [alice@example.com] } }
  - { path: /a-domains, upstream: "@UP@", allow: { email_domains: [example.com] } }
  - { path: /d-domains, upstream: "@UP@", deny: { email_domains: [contractor.test] } }
  - { path: /a-groups, upstream: "@UP@", allow: { groups: [admins] } }
  - { path: /d-groups, upstream: "@UP@", deny: { groups: [contractors] } }
  - { path: /a-claims, upstream: "@UP@", allow: { claims: { department: [eng, ops] } } }
  - { path: /d-claims, upstream: "@UP@", deny: { claims: { department: sales } } }
  - { path: /a-net-here, upstream: "@UP@", allow: { networks: [127.0.0.0/8] } }
  - { path: /a-net-away, upstream: "@UP@", allow: { networks: [10.0.0.0/8, "2001:db8::/32"] } }
  - { path: /d-net-here, upstream: "@UP@", deny: { networks: [127.0.0.1] } }
  - { path: /a-methods, upstream: "@UP@", allow: { methods: [GET, HEAD] } }
  - { path: /d-methods, upstream: "@UP@", deny: { methods: [DELETE] } }
  - path: /either
    upstream: "@UP@"
    allow:
      - { groups: [admins], methods: [POST] }
      - { users: [carol] }
    deny: { email_domains: [evil.test] }
  - path: /docs
    upstream: "@UP@"
    public_paths: [/docs/public/, /docs/health]
    allow: { groups: [nobody] }
  - { path: /nocsrf, upstream: "@UP@", csrf: false }
"#;

fn world() -> World {
    let setup = Setup::new();
    let base = format!("http://127.0.0.1:{}", setup.http);
    let idp = Idp::start(
        IdpConfig::default()
            .client(IdpClient::new(
                "portcullis",
                "portcullis-secret",
                &format!("{base}/.portcullis/callback"),
            ))
            .user(IdpUser::new("alice").claim("department", "eng"))
            .user(IdpUser::new("carol").claim("department", "sales")),
    );
    let up = Upstream::start();
    let yaml = format!(
        "server:\n  listen: [\"127.0.0.1:@HTTP@\"]\n  threads: 1\n  public_url: {base}\nadmin:\n  listen: 127.0.0.1:@ADMIN@\n\
         session:\n  secrets: [\"{SECRET}\"]\n  cookie: {{ secure: false }}\n\
         providers:\n  - id: test\n    type: oidc\n    issuer: {issuer}\n    client_id: portcullis\n    client_secret: portcullis-secret\n    scopes: [openid, email, profile, groups]\n\
         routes:\n{ROUTES}",
        issuer = idp.issuer(),
    )
    .replace("@UP@", &up.url());
    let pc = setup.start(&yaml);
    World { idp, up, pc }
}

/// Logs `user` in and returns the `Cookie` header value of the session.
async fn session_of(w: &World, user: &str) -> String {
    let browser = Browser::new();
    let page = browser
        .login(&format!("{}/", w.base()), user, PASSWORD)
        .await;
    assert_eq!(page.status, 200, "{user} logs in: {}", page.body);
    let value = browser
        .cookie_for(&w.base(), "_portcullis")
        .expect("a session cookie after login");
    format!("_portcullis={value}")
}

async fn status(w: &World, method: &str, path: &str, cookie: &str, extra: &[(&str, &str)]) -> u16 {
    let mut req = support::http_client()
        .request(method.parse().unwrap(), format!("{}{path}", w.base()))
        .header("cookie", cookie)
        .header("accept", "application/json");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn every_criterion_allows_and_denies() {
    let w = world();
    w.pc.ready().await;
    let alice = session_of(&w, "alice").await;
    let carol = session_of(&w, "carol").await;
    let dave = session_of(&w, "dave").await; // email_verified: false
    let bob = session_of(&w, "bob").await;

    // (path, method, [alice, bob, carol, dave])
    let matrix: &[(&str, &str, [u16; 4])] = &[
        ("/", "GET", [200, 200, 200, 200]),
        ("/a-users", "GET", [200, 403, 403, 403]),
        ("/d-users", "GET", [403, 200, 200, 200]),
        ("/a-emails", "GET", [200, 403, 403, 403]),
        ("/d-emails", "GET", [403, 200, 200, 200]),
        // dave's address is in the domain but not verified: it does not count.
        ("/a-domains", "GET", [200, 200, 403, 403]),
        ("/d-domains", "GET", [200, 200, 403, 200]),
        ("/a-groups", "GET", [200, 403, 403, 403]),
        ("/d-groups", "GET", [200, 200, 403, 200]),
        ("/a-claims", "GET", [200, 403, 403, 403]),
        ("/d-claims", "GET", [200, 200, 403, 200]),
        ("/a-net-here", "GET", [200, 200, 200, 200]),
        ("/a-net-away", "GET", [403, 403, 403, 403]),
        ("/d-net-here", "GET", [403, 403, 403, 403]),
        ("/a-methods", "GET", [200, 200, 200, 200]),
        ("/a-methods", "DELETE", [403, 403, 403, 403]),
        ("/d-methods", "GET", [200, 200, 200, 200]),
        ("/d-methods", "DELETE", [403, 403, 403, 403]),
        // Path parameters (dropped by servlet containers) do not lead to a looser route.
        ("/a-groups;x", "GET", [200, 403, 403, 403]),
        ("/a-groups;jsessionid=1/y", "GET", [200, 403, 403, 403]),
        // Rules of a list: admins by POST, or carol by anything.
        ("/either", "GET", [403, 403, 200, 403]),
        ("/either", "POST", [200, 403, 200, 403]),
    ];
    let users = [
        ("alice", &alice),
        ("bob", &bob),
        ("carol", &carol),
        ("dave", &dave),
    ];
    for (path, method, want) in matrix {
        for ((name, cookie), want) in users.iter().zip(want) {
            let got = status(&w, method, path, cookie, &[]).await;
            assert_eq!(got, *want, "{name} {method} {path}");
        }
    }
    // A denied request never reached the app; an allowed one did, with identity headers.
    let before = w.up.count();
    assert_eq!(status(&w, "GET", "/a-groups", &bob, &[]).await, 403);
    assert_eq!(w.up.count(), before, "a denied request reaches the app");
    assert_eq!(status(&w, "GET", "/a-groups", &alice, &[]).await, 200);
    assert_eq!(w.up.last().header("x-auth-request-user"), Some("alice"));

    // Each denial explains itself in the audit log, naming the criterion that failed.
    let line =
        w.pc.wait_for_stdout_line(|l| {
            l.contains("\"access_denied\"")
                && l.contains("\"user\":\"bob\"")
                && l.contains("groups")
        })
        .await
        .expect("an access_denied audit event for bob");
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["route"], "*/a-groups");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("allow rule 0 not met: groups"),
        "{v}"
    );
    assert_eq!(v["client_ip"], "127.0.0.1");
    assert!(!line.contains(&bob[12..]), "the cookie must not be logged");
    assert!(
        w.pc.stdout()
            .contains("deny rule 0 matched (email_domains)"),
        "deny reasons name the rule"
    );

    // Denials are counted per route.
    let forbidden =
        w.pc.metric(
            "portcullis_auth_decisions_total",
            &[("route", "*/a-groups"), ("decision", "forbidden")],
        )
        .await;
    assert!(forbidden >= 4.0, "{forbidden}");
}

#[tokio::test]
async fn forbidden_answers_a_page_to_browsers_and_json_to_programs() {
    let w = world();
    w.pc.ready().await;
    let bob = session_of(&w, "bob").await;
    let r = support::http_client()
        .get(format!("{}/a-groups", w.base()))
        .header("cookie", &bob)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let r = support::http_client()
        .get(format!("{}/a-groups", w.base()))
        .header("cookie", &bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "forbidden");
}

#[tokio::test]
async fn public_paths_need_no_login_and_cannot_be_used_to_bypass_it() {
    let w = world();
    w.pc.ready().await;
    let anon = |target: &'static str| {
        let port = w.pc.http_port();
        async move {
            support::raw_get(port, "127.0.0.1", target, &[("accept", "application/json")]).await
        }
    };
    for open in [
        "/docs/public/",
        "/docs/public/a/b.css",
        "/docs/health",
        "/docs/./public/x",
        "/docs//public/x",
        "/docs/%70ublic/x",
    ] {
        let before = w.up.count();
        let r = anon(open).await;
        assert_eq!(r.status, 200, "{open} is public: {}", r.text());
        // The app answered this very request (not an earlier one), with no identity.
        assert_eq!(w.up.count(), before + 1, "{open} reached the app once");
        assert_eq!(r.json()["uri"], w.up.last().uri, "{open}");
        assert!(!w.up.last().has_header("x-auth-request-user"));
        // Without a session no identity can be passed along, so the line above cannot fail
        // by itself: an anonymous client's own identity headers must not get through the
        // public path either.
        let forged = support::raw_get(
            w.pc.http_port(),
            "127.0.0.1",
            open,
            &[
                ("accept", "application/json"),
                ("X-Auth-Request-User", "admin"),
                ("X-Auth-Request-Email", "admin@example.com"),
                ("X-Auth-Request-Groups", "nobody"),
            ],
        )
        .await;
        assert_eq!(forged.status, 200, "{open} with forged identity headers");
        assert_eq!(w.up.count(), before + 2, "{open} reached the app again");
        let seen = w.up.last();
        for name in [
            "x-auth-request-user",
            "x-auth-request-email",
            "x-auth-request-groups",
        ] {
            assert!(
                !seen.has_header(name),
                "{open}: a forged {name} reached the app: {:?}",
                seen.headers
            );
        }
    }
    for closed in [
        "/docs",
        "/docs/",
        "/docs/private",
        "/docs/public/../private",
        "/docs/public/%2e%2e/private",
        "/docs/public/.%2E/private",
        "//docs/public/../private",
        "/docs/publicity",
        "/docs/healthz",
        "/docs/PUBLIC/x",
        "/docs/public/../../docs/private",
    ] {
        let r = anon(closed).await;
        assert_eq!(r.status, 401, "{closed} must need a login: {}", r.text());
    }
    for ambiguous in [
        "/docs/public%2F..%2Fprivate",
        "/docs/public/..%2Fprivate",
        "/docs/public\\..\\private",
        "/docs/public/%00/x",
    ] {
        let r = anon(ambiguous).await;
        assert_eq!(r.status, 400, "{ambiguous} must be refused: {}", r.text());
    }
    // Host variants route the same way: still no bypass.
    let port = w.pc.http_port();
    for host in ["127.0.0.1.", "127.0.0.1:80"] {
        let r = support::raw_get(port, host, "/docs/public/../private", &[]).await;
        assert_eq!(r.status, 401, "host {host}");
    }
    // A logged-in user not allowed on the route still reaches its public paths.
    let alice = session_of(&w, "alice").await;
    assert_eq!(status(&w, "GET", "/docs/private", &alice, &[]).await, 403);
    assert_eq!(status(&w, "GET", "/docs/public/x", &alice, &[]).await, 200);
}

#[tokio::test]
async fn cross_site_unsafe_requests_with_the_session_cookie_are_refused() {
    let w = world();
    w.pc.ready().await;
    let alice = session_of(&w, "alice").await;
    let own = w.base();
    let evil = "http://evil.example";
    let before = w.up.count();
    assert_eq!(
        status(&w, "POST", "/x", &alice, &[("origin", evil)]).await,
        403
    );
    assert_eq!(
        status(&w, "POST", "/x", &alice, &[("origin", "null")]).await,
        403
    );
    assert_eq!(
        status(&w, "PUT", "/x", &alice, &[("sec-fetch-site", "cross-site")]).await,
        403
    );
    assert_eq!(
        status(
            &w,
            "DELETE",
            "/x",
            &alice,
            &[("origin", &own.replace("127.0.0.1", "localhost"))]
        )
        .await,
        403
    );
    assert_eq!(
        status(
            &w,
            "POST",
            "/x",
            &alice,
            &[("origin", &own.replace("http:", "https:"))]
        )
        .await,
        403
    );
    assert_eq!(
        w.up.count(),
        before,
        "no cross-site request reached the app"
    );

    // Same origin, same-site fetch metadata, or no browser signals at all: allowed.
    assert_eq!(
        status(&w, "POST", "/x", &alice, &[("origin", &own)]).await,
        200
    );
    assert_eq!(
        status(
            &w,
            "POST",
            "/x",
            &alice,
            &[("origin", &own), ("sec-fetch-site", "same-origin")]
        )
        .await,
        200
    );
    assert_eq!(status(&w, "PATCH", "/x", &alice, &[]).await, 200);
    // Safe methods are not state-changing: a cross-site GET is a plain navigation.
    assert_eq!(
        status(
            &w,
            "GET",
            "/x",
            &alice,
            &[("origin", evil), ("sec-fetch-site", "cross-site")]
        )
        .await,
        200
    );
    // Off per route.
    assert_eq!(
        status(&w, "POST", "/nocsrf", &alice, &[("origin", evil)]).await,
        200
    );

    let line =
        w.pc.wait_for_stdout_line(|l| l.contains("\"access_denied\"") && l.contains("cross-"))
            .await
            .expect("an access_denied event for the cross-site request");
    assert!(line.contains("\"user\":\"alice\""), "{line}");
}

#[tokio::test]
async fn config_check_explains_policy_mistakes() {
    let setup = Setup::new();
    let path = setup.write(
        "bad.yaml",
        "routes:\n  - upstream: echo://\n    auth: none\n    allow: { groups: [a], colour: [red] }\n",
    );
    let (code, _out, err) = support::run_cli(
        &["check", "--config", path.to_str().unwrap()],
        setup.path(),
        &[],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("bad.yaml:4:27: routes[0].allow.colour: unknown key"),
        "{err}"
    );
    assert!(
        err.contains("routes[0].allow: allow applies to routes with auth: required"),
        "{err}"
    );
}
