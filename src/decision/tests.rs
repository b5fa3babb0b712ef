//! `authorize` on its own: routes compiled from a real config, identities made by hand.

use super::*;

fn view(method: http::Method, tls: bool, authority: &str) -> RequestView {
    RequestView {
        method,
        tls,
        host: crate::request::parse_host(authority).unwrap().into(),
        forwarded_host: None,
        authority: authority.into(),
        path: "/".into(),
        query: None,
        client_ip: None,
        wants_html: false,
        websocket: false,
    }
}

/// Routes compiled from a real config (no I/O happens at compile time).
fn routes() -> crate::runtime::Runtime {
    let yaml = r#"
server: { listen: ["127.0.0.1:1"], public_url: "http://app.test" }
session: { secrets: ["MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="] }
providers:
  - { id: corp, type: oidc, issuer: "https://idp.test", client_id: c, client_secret: s }
routes:
  - { name: open, path: /open, upstream: "static://200", auth: none }
  - { name: maybe, path: /maybe, upstream: "static://200", auth: optional }
  - { name: staff, path: /staff, upstream: "static://200", allow: { groups: [staff] }, public_paths: [/staff/pub] }
  - { name: api, path: /api, upstream: "static://200", bearer: true, scopes: [orders:read] }
  - { name: mfa, path: /mfa, upstream: "static://200", allow: { mfa: true } }
  - { name: nocsrf, path: /nocsrf, upstream: "static://200", csrf: false }
"#;
    crate::config::load_str(yaml, std::path::Path::new("t.yaml"), |_| None)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn route_named(rt: &crate::runtime::Runtime, name: &str) -> Arc<Route> {
    rt.routes
        .routes()
        .iter()
        .find(|r| &*r.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no route {name}"))
}

fn at(method: http::Method, path: &str, html: bool) -> RequestView {
    RequestView {
        path: path.into(),
        wants_html: html,
        ..view(method, false, "app.test")
    }
}

fn session(groups: &[&str]) -> Authenticated {
    let mut r = SessionRecord::new("corp", "sub-1", "alice");
    r.groups = groups.iter().map(|g| g.to_string()).collect();
    Authenticated::Session(Arc::new(r))
}

fn refusal(d: Decision) -> Refusal {
    match d {
        Decision::Deny { refusal, .. } => refusal,
        other => panic!("not a refusal: {other:?}"),
    }
}

#[test]
fn authorize_without_a_session() {
    let rt = routes();
    let get = |path: &str, html: bool| at(http::Method::GET, path, html);
    let none = Presented::default();
    let d = authorize(
        route_named(&rt, "open"),
        &get("/open", false),
        &none,
        Authenticated::Nobody,
    );
    assert!(matches!(d, Decision::Forward { identity: None, .. }));
    // A browser navigation is sent to log in; anything else is told 401.
    let staff = route_named(&rt, "staff");
    let d = authorize(
        Arc::clone(&staff),
        &get("/staff", true),
        &none,
        Authenticated::Nobody,
    );
    assert!(
        matches!(d, Decision::Login { step_up: false, ref provider, .. } if provider == "corp")
    );
    let d = authorize(
        Arc::clone(&staff),
        &get("/staff", false),
        &none,
        Authenticated::Stale,
    );
    assert_eq!(refusal(d), Refusal::Unauthenticated);
    let post = at(http::Method::POST, "/staff", true);
    let d = authorize(Arc::clone(&staff), &post, &none, Authenticated::Nobody);
    assert_eq!(refusal(d), Refusal::Unauthenticated);
    // Public paths need nobody.
    let d = authorize(
        Arc::clone(&staff),
        &get("/staff/pub/x", false),
        &none,
        Authenticated::Nobody,
    );
    assert!(matches!(d, Decision::Forward { identity: None, .. }));
    // The store down: 503 where a session is required, anonymous where it is optional.
    let d = authorize(
        Arc::clone(&staff),
        &get("/staff", true),
        &none,
        Authenticated::Unavailable,
    );
    assert_eq!(refusal(d), Refusal::SessionsUnavailable);
    let d = authorize(
        route_named(&rt, "maybe"),
        &get("/maybe", true),
        &none,
        Authenticated::Unavailable,
    );
    assert!(matches!(d, Decision::Forward { identity: None, .. }));
    let d = authorize(
        route_named(&rt, "api"),
        &get("/api", false),
        &none,
        Authenticated::BadToken(crate::oidc::BearerError::Expired),
    );
    assert!(matches!(refusal(d), Refusal::InvalidToken(_)));
}

#[test]
fn authorize_with_a_session() {
    let rt = routes();
    let staff = route_named(&rt, "staff");
    let get = at(http::Method::GET, "/staff/x", true);
    let none = Presented::default();
    let d = authorize(Arc::clone(&staff), &get, &none, session(&["staff"]));
    assert!(matches!(d, Decision::Forward { identity: Some(ref who), .. } if who.user == "alice"));
    let d = authorize(Arc::clone(&staff), &get, &none, session(&["sales"]));
    assert_eq!(refusal(d), Refusal::Denied);
    // CSRF: a cross-site POST with the session cookie is refused; a same-origin one passes.
    let post = at(http::Method::POST, "/staff/x", false);
    let evil = Presented {
        origin: Some("http://evil.test"),
        ..Presented::default()
    };
    let d = authorize(Arc::clone(&staff), &post, &evil, session(&["staff"]));
    assert_eq!(refusal(d), Refusal::CrossSite);
    let own = Presented {
        origin: Some("http://app.test"),
        ..Presented::default()
    };
    let d = authorize(Arc::clone(&staff), &post, &own, session(&["staff"]));
    assert!(matches!(d, Decision::Forward { .. }));
    let d = authorize(route_named(&rt, "nocsrf"), &post, &evil, session(&[]));
    assert!(matches!(d, Decision::Forward { .. }), "csrf: false");
}

#[test]
fn authorize_bearer_scopes_and_mfa() {
    let rt = routes();
    let api = route_named(&rt, "api");
    let post = at(http::Method::POST, "/api/orders", false);
    let evil = Presented {
        origin: Some("http://evil.test"),
        ..Presented::default()
    };
    let token = |scope: &str| {
        let mut r = SessionRecord::new("corp", "svc", "svc");
        r.claims.insert("scope".into(), serde_json::json!(scope));
        Authenticated::Bearer(Arc::new(r))
    };
    // Bearer tokens are no cookies: no CSRF check, but the route's scopes.
    let d = authorize(Arc::clone(&api), &post, &evil, token("orders:read other"));
    assert!(matches!(
        d,
        Decision::Forward {
            identity: Some(_),
            ..
        }
    ));
    let d = authorize(Arc::clone(&api), &post, &evil, token("other"));
    assert_eq!(refusal(d), Refusal::InsufficientScope("orders:read".into()));

    let mfa = route_named(&rt, "mfa");
    let get = at(http::Method::GET, "/mfa", true);
    let none = Presented::default();
    let d = authorize(Arc::clone(&mfa), &get, &none, session(&[]));
    assert!(matches!(d, Decision::Login { step_up: true, .. }));
    let mut stepped = SessionRecord::new("corp", "sub-1", "alice");
    stepped.stepped_up = true;
    let d = authorize(
        Arc::clone(&mfa),
        &get,
        &none,
        Authenticated::Session(Arc::new(stepped)),
    );
    assert_eq!(
        refusal(d),
        Refusal::MfaRequired,
        "no loop after a step-up without MFA"
    );
    let mut with_otp = SessionRecord::new("corp", "sub-1", "alice");
    with_otp.amr = vec!["otp".into()];
    let d = authorize(mfa, &get, &none, Authenticated::Session(Arc::new(with_otp)));
    assert!(matches!(
        d,
        Decision::Forward {
            identity: Some(_),
            ..
        }
    ));
}

#[test]
fn debug_strings_hold_no_credentials() {
    let p = Presented {
        cookie: Some("_portcullis=SECRETCOOKIE".into()),
        authorization: Some("Bearer SECRETTOKEN"),
        origin: Some("http://app.test"),
        fetch_site: None,
        headers: None,
    };
    let shown = format!("{p:?} {p:#?}");
    assert!(!shown.contains("SECRET"), "{shown}");
    assert!(shown.contains("<redacted>") && shown.contains("http://app.test"));
    let v = RequestView {
        query: Some("code=SECRETCODE&state=x".into()),
        ..view(http::Method::GET, false, "app.test")
    };
    let shown = format!("{v:?}");
    assert!(!shown.contains("SECRETCODE"), "{shown}");
}

/// The engine counts before authentication and refuses with `Limited`, carrying the most
/// restrictive limiter's note on every decision of a limited route.
#[tokio::test]
async fn rate_limits_count_before_authentication() {
    let yaml = r#"
server: { listen: ["127.0.0.1:1"] }
rate_limits:
  - { name: two, key: client_ip, limit: 1/m, burst: 2 }
  - { name: roomy, key: route, limit: 100/s, burst: 50 }
routes:
  - { name: open, path: /, upstream: "static://200", auth: none, rate_limit: [roomy, two] }
  - { name: free, path: /free, upstream: "static://200", auth: none }
"#;
    let rt = crate::config::load_str(yaml, std::path::Path::new("t.yaml"), |_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let from = |ip: &str| RequestView {
        client_ip: Some(ip.parse().unwrap()),
        ..at(http::Method::GET, "/x", false)
    };
    for left in [1, 0] {
        let d = decide(&rt, &from("192.0.2.1"), Presented::default).await;
        assert!(matches!(d.decision, Decision::Forward { .. }), "{d:?}");
        let note = d.rate.expect("a note on a limited route");
        assert_eq!(&*note.limiter.spec.name, "two", "the stricter one speaks");
        assert_eq!(note.remaining, left);
    }
    let d = decide(&rt, &from("192.0.2.1"), Presented::default).await;
    assert!(
        matches!(
            d.decision,
            Decision::Limited {
                retry_after: 60,
                ..
            }
        ),
        "{d:?}"
    );
    assert_eq!(d.decision.label(), "rate_limited");
    // Another address has its own budget; a route without limiters carries no note.
    let d = decide(&rt, &from("192.0.2.2"), Presented::default).await;
    assert!(matches!(d.decision, Decision::Forward { .. }));
    let free = RequestView {
        path: "/free".into(),
        ..from("192.0.2.1")
    };
    assert!(decide(&rt, &free, Presented::default).await.rate.is_none());
}
