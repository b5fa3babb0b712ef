//! Header hygiene: forged identity headers stripped, `X-Forwarded-*` built from the real peer,
//! security headers on responses (never duplicated), and the per-route header settings.

mod support;

use support::{raw_get, Portcullis, Upstream, SERVER};

#[tokio::test]
async fn forged_identity_headers_never_reach_the_upstream() {
    let up = Upstream::start();
    let pc = Portcullis::with_routes(&format!(
        r#"
headers:
  identity:
    X-User-Id: "{{sub}}"
    X-Auth-Request-Email: "{{email}}"
routes:
  - upstream: {}
"#,
        up.url()
    ));
    let forged = [
        // configured
        ("X-User-Id", "admin"),
        ("x-user-id", "admin2"),
        ("X_User_Id", "admin3"),
        ("X-Auth-Request-Email", "boss@example.com"),
        // the assertion and Portcullis' own namespace
        ("X-Portcullis-Assertion", "eyJhbGciOiJub25lIn0.e30."),
        ("X-Portcullis-Anything", "x"),
        // well-known headers of other proxies, configured or not
        ("X-Auth-Request-User", "root"),
        ("X-Auth-Request-Groups", "admins"),
        ("X-Forwarded-User", "root"),
        ("X-Forwarded-Email", "root@example.com"),
        ("X-Forwarded-Groups", "admins"),
        ("X-Forwarded-Preferred-Username", "root"),
        ("X-Forwarded-Access-Token", "token"),
        ("Remote-User", "root"),
        ("Remote-Groups", "admins"),
        ("X-Remote-User", "root"),
        // CGI-style underscore spellings of the same names
        ("X_Auth_Request_User", "root"),
        ("X_Forwarded_User", "root"),
        ("X_Portcullis_Assertion", "forged"),
        ("Remote_User", "root"),
    ];
    let mut headers: Vec<(&str, &str)> = forged.to_vec();
    headers.push(("X-Request-Id", "abc-123"));
    headers.push(("Authorization", "Basic dXNlcjpwYXNz"));
    let r = raw_get(pc.http_port(), "app.test", "/", &headers).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    for (name, _) in forged {
        assert!(
            !seen.has_header(name),
            "{name} reached the upstream: {:?}",
            seen.headers
        );
    }
    for (_, value) in forged {
        assert!(
            !seen.headers.iter().any(|(_, v)| v == value),
            "forged value {value:?} reached the upstream: {:?}",
            seen.headers
        );
    }
    // Ordinary headers are left alone.
    assert_eq!(seen.header("x-request-id"), Some("abc-123"));
    assert_eq!(seen.header("authorization"), Some("Basic dXNlcjpwYXNz"));
}

#[tokio::test]
async fn forged_identity_headers_are_stripped_on_every_kind_of_route() {
    // Also on routes Portcullis answers itself: echo:// shows what an upstream would get.
    let pc = Portcullis::with_routes(
        "headers:\n  identity:\n    X-Tenant: \"{user}\"\nroutes:\n  - upstream: \"echo://\"\n",
    );
    let r = raw_get(
        pc.http_port(),
        "app.test",
        "/",
        &[("X-Tenant", "other-tenant"), ("X-Forwarded-Email", "a@b.c")],
    )
    .await;
    let h = &r.json()["headers"];
    assert!(h.get("x-tenant").is_none(), "{h}");
    assert!(h.get("x-forwarded-email").is_none(), "{h}");
}

#[tokio::test]
async fn forwarded_headers_come_from_the_real_peer_when_it_is_not_trusted() {
    let up = Upstream::start();
    let pc = Portcullis::with_routes(&format!("routes:\n  - upstream: {}\n", up.url()));
    raw_get(
        pc.http_port(),
        "app.test:9000",
        "/",
        &[
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Real-IP", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.test"),
        ],
    )
    .await;
    let seen = up.last();
    assert_eq!(seen.header_all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.header_all("x-real-ip"), ["127.0.0.1"]);
    assert_eq!(seen.header_all("x-forwarded-proto"), ["http"]);
    assert_eq!(seen.header_all("x-forwarded-host"), ["app.test:9000"]);
    assert!(
        !seen.headers.iter().any(|(_, v)| v.contains("6.6.6.6")),
        "{:?}",
        seen.headers
    );
}

#[tokio::test]
async fn forwarded_for_is_appended_to_when_the_peer_is_trusted() {
    let up = Upstream::start();
    let pc = Portcullis::start(&format!(
        r#"
server:
  listen: ["127.0.0.1:@HTTP@"]
  threads: 1
  trusted_proxies: [127.0.0.1/32]
admin:
  listen: 127.0.0.1:@ADMIN@
routes:
  - upstream: {}
"#,
        up.url()
    ));
    raw_get(
        pc.http_port(),
        "app.test",
        "/",
        &[
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "public.example.test"),
        ],
    )
    .await;
    let seen = up.last();
    assert_eq!(
        seen.header_all("x-forwarded-for"),
        ["203.0.113.7, 127.0.0.1"]
    );
    assert_eq!(seen.header("x-real-ip"), Some("203.0.113.7"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some("public.example.test"));

    // Without an incoming chain, the trusted peer itself is the client.
    raw_get(pc.http_port(), "app.test", "/", &[]).await;
    let seen = up.last();
    assert_eq!(seen.header_all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.header("x-real-ip"), Some("127.0.0.1"));
}

#[tokio::test]
async fn original_url_and_similar_headers_from_an_untrusted_client_are_dropped() {
    let up = Upstream::start();
    let pc = Portcullis::with_routes(&format!("routes:\n  - upstream: {}\n", up.url()));
    let sent = [
        ("X-Original-URL", "/admin"),
        ("X-Original-URI", "/admin"),
        ("X-Original-Method", "DELETE"),
        ("X-Rewrite-URL", "/admin"),
        ("Forwarded", "for=6.6.6.6;proto=https"),
        ("X-Forwarded-Prefix", "/admin"),
        ("X-Forwarded-Port", "443"),
        ("X-Forwarded-Server", "evil"),
    ];
    let r = raw_get(pc.http_port(), "app.test", "/public", &sent).await;
    assert_eq!(r.status, 200);
    let seen = up.last();
    assert_eq!(seen.path(), "/public");
    for (name, _) in sent {
        assert!(!seen.has_header(name), "{name}: {:?}", seen.headers);
    }
}

#[tokio::test]
async fn security_headers_are_added_to_proxied_responses() {
    let up = Upstream::start();
    let pc = Portcullis::with_routes(&format!("routes:\n  - upstream: {}\n", up.url()));
    let r = raw_get(pc.http_port(), "app.test", "/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header_all("x-content-type-options"), ["nosniff"]);
    assert_eq!(r.header_all("x-frame-options"), ["SAMEORIGIN"]);
    assert_eq!(
        r.header_all("referrer-policy"),
        ["strict-origin-when-cross-origin"]
    );
    // HSTS only over TLS; no CSP imposed on applications by default.
    assert!(
        !r.has_header("strict-transport-security"),
        "{:?}",
        r.headers
    );
    assert!(!r.has_header("content-security-policy"), "{:?}", r.headers);
}

#[tokio::test]
async fn security_headers_the_upstream_set_are_kept_and_never_duplicated() {
    let up = Upstream::start();
    let pc = Portcullis::with_routes(&format!("routes:\n  - upstream: {}\n", up.url()));
    let r = raw_get(
        pc.http_port(),
        "app.test",
        "/?set=X-Frame-Options:DENY&set=referrer-policy:no-referrer&set=X-Content-Type-Options:nosniff",
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header_all("x-frame-options"), ["DENY"], "{:?}", r.headers);
    assert_eq!(r.header_all("referrer-policy"), ["no-referrer"]);
    assert_eq!(r.header_all("x-content-type-options"), ["nosniff"]);
}

#[tokio::test]
async fn route_security_settings_override_and_null_turns_a_header_off() {
    let up = Upstream::start();
    let pc = Portcullis::with_routes(&format!(
        r#"
headers:
  security:
    frame_options: DENY
    content_security_policy: "default-src 'self'"
routes:
  - name: plain
    path: /
    upstream: {u}
  - name: embeddable
    path: /embed
    upstream: {u}
    headers:
      security:
        frame_options: null
        referrer_policy: no-referrer
        content_security_policy: null
"#,
        u = up.url()
    ));
    let r = raw_get(pc.http_port(), "app.test", "/", &[]).await;
    assert_eq!(r.header_all("x-frame-options"), ["DENY"]);
    assert_eq!(
        r.header_all("content-security-policy"),
        ["default-src 'self'"]
    );
    assert_eq!(
        r.header_all("referrer-policy"),
        ["strict-origin-when-cross-origin"]
    );

    let r = raw_get(pc.http_port(), "app.test", "/embed/widget", &[]).await;
    assert!(!r.has_header("x-frame-options"), "{:?}", r.headers);
    assert!(!r.has_header("content-security-policy"), "{:?}", r.headers);
    assert_eq!(r.header_all("referrer-policy"), ["no-referrer"]);
    // Not mentioned on the route: inherited.
    assert_eq!(r.header_all("x-content-type-options"), ["nosniff"]);
}

#[tokio::test]
async fn remove_response_strips_server_and_x_powered_by_by_default() {
    let up = Upstream::start();
    let pc = Portcullis::with_routes(&format!("routes:\n  - upstream: {}\n", up.url()));
    let r = raw_get(
        pc.http_port(),
        "app.test",
        "/?set=Server:Apache/2.4.1&set=X-Powered-By:PHP/5.2&set=X-Kept:yes",
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        !r.headers
            .iter()
            .any(|(_, v)| v.contains("Apache") || v.contains("PHP")),
        "{:?}",
        r.headers
    );
    assert_eq!(r.header("x-kept"), Some("yes"));
}

#[tokio::test]
async fn remove_response_takes_the_configured_list() {
    let up = Upstream::start();
    let pc = Portcullis::with_routes(&format!(
        "headers:\n  remove_response: [X-AspNet-Version, Server]\nroutes:\n  - upstream: {}\n",
        up.url()
    ));
    let r = raw_get(
        pc.http_port(),
        "app.test",
        "/?set=X-AspNet-Version:4.0&set=Server:IIS&set=X-Kept:yes",
        &[],
    )
    .await;
    assert!(!r.has_header("x-aspnet-version"), "{:?}", r.headers);
    assert!(
        !r.headers.iter().any(|(_, v)| v == "IIS"),
        "{:?}",
        r.headers
    );
    assert_eq!(r.header("x-kept"), Some("yes"));
}

#[tokio::test]
async fn route_headers_add_and_add_file_reach_the_upstream() {
    let up = Upstream::start();
    let setup = support::Setup::new();
    setup.write("secrets/upstream-token", "Bearer s3cr3t-from-file\n");
    let pc = setup.start(&format!(
        r#"{SERVER}
routes:
  - upstream: {}
    headers:
      add:
        X-Env: prod
        X-Team: platform
      add_file:
        Authorization: secrets/upstream-token
"#,
        up.url()
    ));
    let r = raw_get(
        pc.http_port(),
        "app.test",
        "/",
        &[("X-Env", "dev"), ("Authorization", "Bearer client-token")],
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = up.last();
    // Replaces, never appends to, what the client sent.
    assert_eq!(seen.header_all("x-env"), ["prod"]);
    assert_eq!(seen.header_all("x-team"), ["platform"]);
    assert_eq!(
        seen.header_all("authorization"),
        ["Bearer s3cr3t-from-file"]
    );
}

#[tokio::test]
async fn route_add_response_sets_headers_replacing_the_upstream_values() {
    let up = Upstream::start();
    let pc = Portcullis::with_routes(&format!(
        r#"
routes:
  - upstream: {}
    headers:
      add_response:
        X-Served-By: portcullis
        Cache-Control: private
"#,
        up.url()
    ));
    let r = raw_get(
        pc.http_port(),
        "app.test",
        "/?set=X-Served-By:app&set=Cache-Control:public",
        &[],
    )
    .await;
    assert_eq!(
        r.header_all("x-served-by"),
        ["portcullis"],
        "{:?}",
        r.headers
    );
    assert_eq!(r.header_all("cache-control"), ["private"]);
}

#[tokio::test]
async fn add_response_also_applies_to_builtin_upstreams() {
    let pc = Portcullis::with_routes(
        r#"
routes:
  - upstream: "static://200"
    headers:
      add_response: { X-Served-By: portcullis }
"#,
    );
    let r = raw_get(pc.http_port(), "app.test", "/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header_all("x-served-by"), ["portcullis"]);
}
