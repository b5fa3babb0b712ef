//! `/.portcullis/auth` and `/.portcullis/auth/envoy/*` spoken to directly, as nginx, Traefik,
//! Caddy and Envoy would: the original request read from `X-Forwarded-*` / `X-Original-*`
//! only from trusted proxies, the answers each front proxy understands, path and host tricks
//! in the forwarded headers, and the very same decisions as the proxy mode.

mod support;

use support::idp::{Browser, Idp, IdpClient, IdpConfig, PASSWORD};
use support::{raw_get, Portcullis, RawResponse, Setup, Upstream};

const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

struct World {
    #[allow(dead_code)] // kept alive for the test's duration
    idp: Idp,
    #[allow(dead_code)]
    up: Upstream,
    pc: Portcullis,
}

impl World {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.pc.http_port())
    }

    fn port(&self) -> u16 {
        self.pc.http_port()
    }
}

/// `trusted` is the `server.trusted_proxies` list (tests connect from 127.0.0.1).
fn world(trusted: &str) -> World {
    let setup = Setup::new();
    let base = format!("http://127.0.0.1:{}", setup.http);
    let idp = Idp::start(IdpConfig::default().client(IdpClient::new(
        "portcullis",
        "portcullis-secret",
        &format!("{base}/.portcullis/callback"),
    )));
    let up = Upstream::start();
    let yaml = format!(
        "server:\n  listen: [\"127.0.0.1:@HTTP@\"]\n  threads: 1\n  public_url: {base}\n  trusted_proxies: [{trusted}]\n\
         admin:\n  listen: 127.0.0.1:@ADMIN@\n\
         session:\n  secrets: [\"{SECRET}\"]\n  cookie: {{ secure: false }}\n\
         providers:\n  - id: test\n    type: oidc\n    issuer: {issuer}\n    client_id: portcullis\n    client_secret: portcullis-secret\n    scopes: [openid, email, profile, groups]\n\
         routes:\n\
         \x20 - host: app.test\n    public_paths: [/public/]\n\
         \x20 - {{ host: app.test, path: /admin, allow: {{ groups: [admins] }} }}\n\
         \x20 - {{ host: open.test, auth: none }}\n\
         \x20 - {{ host: both.test, upstream: \"{up}\", allow: {{ groups: [admins] }} }}\n\
         \x20 - {{ host: both.test, path: /staff, upstream: \"{up}\", allow: {{ groups: [staff], methods: [GET, HEAD] }} }}\n\
         \x20 - {{ host: both.test, path: /office, upstream: \"{up}\", allow: {{ networks: [10.0.0.0/8] }} }}\n",
        issuer = idp.issuer(),
        up = up.url(),
    );
    let pc = setup.start(&yaml);
    World { idp, up, pc }
}

/// Logs `user` in on the public URL and returns the session's `Cookie` header value.
async fn session_of(w: &World, user: &str) -> String {
    let browser = Browser::new();
    let start = format!("{}/.portcullis/start?rd=%2F", w.base());
    browser.login(&start, user, PASSWORD).await;
    let value = browser
        .cookie_for(&w.base(), "_portcullis")
        .unwrap_or_else(|| panic!("{user} has a session cookie after login"));
    format!("_portcullis={value}")
}

/// A Traefik/Caddy-style check of `method host uri`.
async fn check(
    w: &World,
    method: &str,
    host: &str,
    uri: &str,
    extra: &[(&str, &str)],
) -> RawResponse {
    let mut headers = vec![
        ("x-forwarded-method", method),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", host),
        ("x-forwarded-uri", uri),
    ];
    headers.extend_from_slice(extra);
    raw_get(w.port(), "127.0.0.1", "/.portcullis/auth", &headers).await
}

/// An nginx-style check (`X-Original-URL`).
async fn check_nginx(w: &World, url: &str, extra: &[(&str, &str)]) -> RawResponse {
    let mut headers = vec![("x-original-url", url), ("x-original-method", "GET")];
    headers.extend_from_slice(extra);
    raw_get(w.port(), "127.0.0.1", "/.portcullis/auth", &headers).await
}

const HTML: (&str, &str) = ("accept", "text/html,application/xhtml+xml");

fn rd_of(location: &str) -> String {
    let url = url::Url::parse(location).unwrap();
    url.query_pairs()
        .find(|(k, _)| k == "rd")
        .map(|(_, v)| v.into_owned())
        .expect("an rd parameter")
}

#[tokio::test]
async fn only_trusted_proxies_may_ask() {
    let w = world("10.0.0.0/8");
    w.pc.ready().await;
    let r = check(&w, "GET", "app.test", "/", &[HTML]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = check_nginx(&w, "http://app.test/", &[]).await;
    assert_eq!(r.status, 403);
    let r = raw_get(w.port(), "app.test", "/.portcullis/auth/envoy/", &[]).await;
    assert_eq!(r.status, 403);
    let line = w
        .pc
        .wait_for_stdout_line(|l| l.contains("\"access_denied\"") && l.contains("trusted_proxies"))
        .await
        .expect("an audit event for the untrusted forward-auth request");
    assert!(line.contains("\"client_ip\":\"127.0.0.1\""), "{line}");
}

#[tokio::test]
async fn answers_in_each_front_proxys_dialect() {
    let w = world("127.0.0.1/32");
    w.pc.ready().await;

    // Traefik / Caddy: a browser gets a 302 to the login, returning to the original URL.
    let r = check(&w, "GET", "app.test", "/private?x=1", &[HTML]).await;
    assert_eq!(r.status, 302, "{}", r.text());
    let location = r.header("location").unwrap();
    assert!(
        location.starts_with(&format!("{}/.portcullis/start?", w.base())),
        "{location}"
    );
    assert_eq!(rd_of(location), "http://app.test/private?x=1");

    // nginx: 401 with the same Location, for `error_page 401`.
    let r = check_nginx(&w, "https://app.test/private?x=1", &[HTML]).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        rd_of(r.header("location").unwrap()),
        "https://app.test/private?x=1"
    );
    let r = raw_get(
        w.port(),
        "127.0.0.1",
        "/.portcullis/auth?mode=nginx",
        &[
            ("x-forwarded-host", "app.test"),
            ("x-forwarded-uri", "/p"),
            HTML,
        ],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(rd_of(r.header("location").unwrap()), "http://app.test/p");

    // API clients: 401 JSON with a Bearer challenge, never a redirect.
    for r in [
        check(
            &w,
            "GET",
            "app.test",
            "/api",
            &[("accept", "application/json")],
        )
        .await,
        check(&w, "POST", "app.test", "/form", &[HTML]).await,
        check_nginx(&w, "http://app.test/api", &[]).await,
    ] {
        assert_eq!(r.status, 401);
        assert!(r.header("location").is_none());
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert_eq!(r.json()["error"], "unauthenticated");
    }

    // Public routes and paths: 200 without identity headers.
    let r = check(&w, "GET", "open.test", "/anything", &[]).await;
    assert_eq!(r.status, 200);
    let r = check(
        &w,
        "GET",
        "app.test",
        "/public/app.css",
        &[("x-auth-request-user", "admin")],
    )
    .await;
    assert_eq!(r.status, 200);
    // Present but empty: front proxies that copy it overwrite a client's forged value.
    assert_eq!(r.header_all("x-auth-request-user"), vec![""]);
    assert_eq!(r.header("x-auth-request-email"), Some(""));

    // Unknown host: 404, and 403 for nginx (which turns other codes into 500).
    assert_eq!(check(&w, "GET", "nowhere.test", "/", &[]).await.status, 404);
    assert_eq!(
        check_nginx(&w, "http://nowhere.test/", &[]).await.status,
        403
    );

    // What cannot be read is a clear 400.
    let bad: &[&[(&str, &str)]] = &[
        &[("x-forwarded-uri", "/")],
        &[("x-forwarded-host", "app.test")],
        &[
            ("x-forwarded-host", "app.test"),
            ("x-forwarded-uri", "relative"),
        ],
        &[
            ("x-forwarded-host", "app.test"),
            ("x-forwarded-uri", "/"),
            ("x-forwarded-proto", "gopher"),
        ],
        &[
            ("x-forwarded-host", "evil.test/x"),
            ("x-forwarded-uri", "/"),
        ],
        &[("x-forwarded-host", "a@app.test"), ("x-forwarded-uri", "/")],
        &[
            ("x-forwarded-host", "app.test"),
            ("x-forwarded-uri", "/"),
            ("x-forwarded-method", "G(T"),
        ],
    ];
    for headers in bad {
        let r = raw_get(w.port(), "127.0.0.1", "/.portcullis/auth", headers).await;
        assert_eq!(r.status, 400, "{headers:?}: {}", r.text());
    }

    let login =
        w.pc.metric(
            "portcullis_auth_decisions_total",
            &[("route", "app.test/"), ("decision", "login")],
        )
        .await;
    assert!(login >= 1.0, "{login}");
}

#[tokio::test]
async fn a_session_is_allowed_with_identity_headers_and_policies_apply() {
    let w = world("127.0.0.1/32");
    w.pc.ready().await;
    let alice = session_of(&w, "alice").await;
    let bob = session_of(&w, "bob").await;

    let r = check(
        &w,
        "GET",
        "app.test",
        "/x",
        &[("cookie", &alice), ("x-auth-request-user", "root")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header_all("x-auth-request-user"), vec!["alice"]);
    assert_eq!(r.header("x-auth-request-email"), Some("alice@example.com"));
    assert_eq!(r.header("x-auth-request-groups"), Some("staff,admins"));
    assert!(r.header("set-cookie").is_none());

    assert_eq!(
        check(&w, "GET", "app.test", "/admin/x", &[("cookie", &alice)])
            .await
            .status,
        200
    );
    assert_eq!(
        check(&w, "GET", "app.test", "/admin/x", &[("cookie", &bob)])
            .await
            .status,
        403
    );
    assert_eq!(
        check_nginx(&w, "http://app.test/admin", &[("cookie", &bob)])
            .await
            .status,
        403
    );
    assert_eq!(
        check_nginx(&w, "http://app.test/admin", &[("cookie", &alice)])
            .await
            .status,
        200
    );

    // The cookie of a logged-out session no longer passes.
    let r = raw_get(
        w.port(),
        "127.0.0.1",
        "/.portcullis/logout",
        &[("cookie", &bob)],
    )
    .await;
    assert!(r.status < 400, "logout: {}", r.status);
    assert_eq!(
        check(&w, "GET", "app.test", "/x", &[("cookie", &bob)])
            .await
            .status,
        401
    );

    // CSRF applies to the original request too.
    let r = check(
        &w,
        "POST",
        "app.test",
        "/x",
        &[("cookie", &alice), ("origin", "http://evil.test")],
    )
    .await;
    assert_eq!(r.status, 403);
    let r = check(
        &w,
        "POST",
        "app.test",
        "/x",
        &[("cookie", &alice), ("origin", "http://app.test")],
    )
    .await;
    assert_eq!(r.status, 200);
}

/// A logged-in user's check answer is built once per session and copied for each check; the
/// `Date` and `Connection` it carries are Pingora's, set as each answer is written: the date
/// of that moment, not of the first check, and `keep-alive` on a kept connection.
#[tokio::test]
async fn a_sessions_check_answer_carries_the_current_date_and_connection() {
    let w = world("127.0.0.1/32");
    w.pc.ready().await;
    let alice = session_of(&w, "alice").await;
    let first = check(&w, "GET", "app.test", "/x", &[("cookie", &alice)]).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header_all("date").len(), 1);
    assert_eq!(first.header_all("connection"), vec!["close"]);
    // HTTP dates count whole seconds.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let later = check(&w, "GET", "app.test", "/x", &[("cookie", &alice)]).await;
    assert_eq!(later.status, 200);
    assert_eq!(later.header_all("x-auth-request-user"), vec!["alice"]);
    assert_eq!(later.header_all("date").len(), 1);
    assert_ne!(later.header("date"), first.header("date"));

    let request = format!(
        "GET /.portcullis/auth HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Original-URL: http://app.test/x\r\n\
         Cookie: {alice}\r\n\r\n"
    );
    let answers = support::raw_keepalive(w.port(), &[request.as_bytes(), request.as_bytes()])
        .await
        .expect("two checks on one kept connection");
    for r in &answers {
        assert_eq!(r.status, 200);
        assert_eq!(r.header_all("connection"), vec!["keep-alive"]);
        assert_eq!(r.header_all("date").len(), 1);
        assert_eq!(r.header_all("x-auth-request-user"), vec!["alice"]);
    }
}

#[tokio::test]
async fn path_and_host_tricks_in_forwarded_headers_do_not_bypass_login() {
    let w = world("127.0.0.1/32");
    w.pc.ready().await;
    let bob = session_of(&w, "bob").await;
    // The front proxy forwards the raw target, which an app may resolve differently than
    // Portcullis' normalised path (`/admin/../public/x` to a prefix router is under /admin):
    // dot segments, encoded dots and empty segments are refused, never decided on.
    for uri in [
        "/public/../admin",
        "/admin/../public/x",
        "//public/../admin",
        "/public/./x",
        "/public//x",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/.%2e/admin",
        "/public/%2e/x",
    ] {
        let r = check(&w, "GET", "app.test", uri, &[]).await;
        assert_eq!(r.status, 400, "{uri}: {}", r.text());
        let r = check(&w, "GET", "app.test", uri, &[("cookie", &bob)]).await;
        assert_eq!(r.status, 400, "{uri} for bob");
        let r = check_nginx(&w, &format!("http://app.test{uri}"), &[("cookie", &bob)]).await;
        assert_eq!(r.status, 403, "nginx {uri}");
    }
    // Path parameters: servlet containers drop `;x`, so `/admin;x` is /admin's.
    for uri in ["/admin;x", "/admin;jsessionid=1/users", "/;/admin"] {
        let r = check(&w, "GET", "app.test", uri, &[("cookie", &bob)]).await;
        assert_eq!(r.status, 403, "{uri} for bob is under /admin");
    }
    assert_eq!(
        check(&w, "GET", "app.test", "/public;x/y", &[])
            .await
            .status,
        200,
        "public paths keep working with parameters"
    );
    // Paths are case-sensitive: /PUBLIC is not /public.
    assert_eq!(
        check(&w, "GET", "app.test", "/PUBLIC/x", &[]).await.status,
        401
    );
    // Ambiguous paths are refused, never matched against a public path.
    for uri in [
        "/public%2F..%2Fadmin",
        "/public/..%2fadmin",
        "/public/..\\admin",
        "/public/%00/x",
        "/public/../../admin",
    ] {
        let r = check(&w, "GET", "app.test", uri, &[]).await;
        assert_eq!(r.status, 400, "{uri}: {}", r.text());
        let r = check_nginx(&w, &format!("http://app.test{uri}"), &[]).await;
        assert_eq!(r.status, 403, "nginx {uri}");
    }
    // Host variants: case, trailing dot, port; all the same route and the same decision.
    for host in ["APP.TEST", "app.test.", "app.test:8443", "App.Test.:80"] {
        let r = check(&w, "GET", host, "/admin", &[("cookie", &bob)]).await;
        assert_eq!(r.status, 403, "{host}");
        let r = check(&w, "GET", host, "/public/x", &[]).await;
        assert_eq!(r.status, 200, "{host}");
    }
}

#[tokio::test]
async fn envoy_ext_authz_checks_the_appended_path() {
    let w = world("127.0.0.1/32");
    w.pc.ready().await;
    let alice = session_of(&w, "alice").await;
    let bob = session_of(&w, "bob").await;
    let r = raw_get(
        w.port(),
        "app.test",
        "/.portcullis/auth/envoy/private?q=1",
        &[HTML],
    )
    .await;
    assert_eq!(r.status, 302);
    assert_eq!(
        rd_of(r.header("location").unwrap()),
        "http://app.test/private?q=1"
    );
    let r = raw_get(
        w.port(),
        "app.test",
        "/.portcullis/auth/envoy/private",
        &[("cookie", &alice)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-auth-request-user"), Some("alice"));
    let r = raw_get(
        w.port(),
        "app.test",
        "/.portcullis/auth/envoy/admin",
        &[("cookie", &bob)],
    )
    .await;
    assert_eq!(r.status, 403);
    let r = raw_get(
        w.port(),
        "app.test",
        "/.portcullis/auth/envoy/public/x",
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    let r = raw_get(w.port(), "app.test", "/.portcullis/auth/envoy", &[]).await;
    assert_eq!(r.status, 401, "the root of the app");
    // Climbing out of the prefix is checked on the original path, not the endpoint's.
    for climb in [
        "/.portcullis/auth/envoy/../admin",
        "/.portcullis/auth/envoy/public/../../admin",
        "/.portcullis/auth/envoy/%2e%2e/admin",
    ] {
        let r = raw_get(w.port(), "app.test", climb, &[("cookie", &bob)]).await;
        assert_eq!(r.status, 400, "{climb}: {}", r.text());
    }
    let r = raw_get(
        w.port(),
        "app.test",
        "/.portcullis/auth/envoy/public/../admin",
        &[("cookie", &bob)],
    )
    .await;
    assert_eq!(
        r.status, 400,
        "dot segments in the original path are refused"
    );
    let r = raw_get(
        w.port(),
        "app.test",
        "/.portcullis/auth/envoy/admin;x",
        &[("cookie", &bob)],
    )
    .await;
    assert_eq!(r.status, 403, "/admin;x is /admin");
}

/// One engine: for the same user and path, forward-auth and the proxy give the answer the
/// route table says, not merely the same answer as each other.
///
/// On both.test: `/` is for admins (alice), `/staff` for staff (alice, bob) with GET/HEAD only,
/// `/office` for 10.0.0.0/8 (nobody here: the tests connect from 127.0.0.1).
#[tokio::test]
async fn forward_auth_and_proxy_decide_alike() {
    let w = world("127.0.0.1/32");
    w.pc.ready().await;
    let alice = session_of(&w, "alice").await;
    let bob = session_of(&w, "bob").await;
    // (path, expected status for alice, bob, nobody); API clients, so 401 without a session.
    let table: &[(&str, [u16; 3])] = &[
        ("/", [200, 403, 401]),
        ("/other", [200, 403, 401]),
        ("/staff", [200, 200, 401]),
        ("/staff/x", [200, 200, 401]),
        // Segment boundaries: /staffroom is not under /staff but under /.
        ("/staffroom", [200, 403, 401]),
        ("/office", [403, 403, 401]),
    ];
    let users = [
        ("alice", alice.as_str()),
        ("bob", bob.as_str()),
        ("nobody", ""),
    ];
    for (path, expected) in table {
        for ((who, cookie), want) in users.iter().zip(expected) {
            let mut headers = vec![("accept", "application/json")];
            if !cookie.is_empty() {
                headers.push(("cookie", cookie));
            }
            let before = w.up.count();
            let proxied = raw_get(w.port(), "both.test", path, &headers).await;
            assert_eq!(
                proxied.status,
                *want,
                "proxy: {who} GET {path}: {}",
                proxied.text()
            );
            if *want == 200 {
                // Answered by the app, for this very request and user.
                assert_eq!(w.up.count(), before + 1, "proxy: {who} {path}");
                let seen = w.up.last();
                assert_eq!((seen.method.as_str(), seen.uri.as_str()), ("GET", *path));
                assert_eq!(seen.header("x-auth-request-user"), Some(*who));
            } else {
                assert_eq!(w.up.count(), before, "proxy: {who} {path} reached the app");
            }
            let checked = check(&w, "GET", "both.test", path, &headers).await;
            assert_eq!(
                checked.status,
                *want,
                "forward-auth: {who} GET {path}: {}",
                checked.text()
            );
            if *want == 200 {
                assert_eq!(checked.header_all("x-auth-request-user"), vec![*who]);
            }
        }
    }
    // The method rule: DELETE on /staff is refused to staff in both modes, allowed on / to an
    // admin (and so not refused as a cross-site request).
    for (who, cookie, path, want) in [
        ("bob", &bob, "/staff/x", 403),
        ("alice", &alice, "/staff/x", 403),
        ("alice", &alice, "/other", 200),
    ] {
        let headers = [("accept", "application/json"), ("cookie", cookie.as_str())];
        let proxied = support::raw_request(w.port(), "DELETE", "both.test", path, &headers, b"")
            .await
            .status;
        let checked = check(&w, "DELETE", "both.test", path, &headers)
            .await
            .status;
        assert_eq!(
            (proxied, checked),
            (want, want),
            "{who} DELETE {path}: proxy {proxied}, forward-auth {checked}"
        );
    }
}

/// Behind a trusted proxy that appends its own `X-Forwarded-For` line (HAProxy), every line
/// counts: the client's own line cannot make it look like it comes from the office network.
/// And headers that make apps serve another path or method never reach the app.
#[tokio::test]
async fn forwarded_for_lines_and_override_headers_from_behind_a_trusted_proxy() {
    let w = world("127.0.0.1/32");
    w.pc.ready().await;
    let alice = session_of(&w, "alice").await;
    let get = |xff: Vec<&'static str>| {
        let port = w.port();
        let cookie = alice.clone();
        async move {
            let mut req = format!("GET /office HTTP/1.1\r\nHost: both.test\r\nCookie: {cookie}\r\nAccept: application/json\r\nConnection: close\r\n");
            for line in xff {
                req.push_str(&format!("X-Forwarded-For: {line}\r\n"));
            }
            req.push_str("\r\n");
            support::raw(port, req.as_bytes()).await.unwrap().status
        }
    };
    assert_eq!(
        get(vec!["10.1.1.1"]).await,
        200,
        "from the office through the proxy"
    );
    assert_eq!(
        get(vec!["10.1.1.1", "203.0.113.9"]).await,
        403,
        "the proxy's line names the real client"
    );
    assert_eq!(get(vec!["10.1.1.1, 203.0.113.9"]).await, 403);
    assert_eq!(
        get(vec!["garbage"]).await,
        403,
        "an unreadable chain is no office address"
    );

    // Override headers: bob (staff) may GET /staff/x, but neither GET /admin (admins only)
    // nor DELETE anything under /staff (GET and HEAD only). Each override below names one of
    // those refused requests: honouring any of them, for the decision or in the app, fails.
    const OVERRIDES: [(&str, &str); 7] = [
        ("x-original-url", "/admin"),
        ("x-original-uri", "/admin"),
        ("x-rewrite-url", "/admin"),
        ("x-original-method", "DELETE"),
        ("x-http-method-override", "DELETE"),
        ("x-http-method", "DELETE"),
        ("x-method-override", "DELETE"),
    ];
    let bob = session_of(&w, "bob").await;
    let mut headers = vec![("cookie", bob.as_str()), ("accept", "application/json")];
    headers.extend_from_slice(&OVERRIDES);
    let before = w.up.count();
    let r = raw_get(w.port(), "both.test", "/staff/x", &headers).await;
    assert_eq!(r.status, 200, "decided on the request line: {}", r.text());
    assert_eq!(w.up.count(), before + 1);
    let seen = w.up.last();
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        ("GET", "/staff/x"),
        "the app got the request line Portcullis decided on"
    );
    assert_eq!(seen.header("x-auth-request-user"), Some("bob"));
    for (name, _) in OVERRIDES {
        assert!(!seen.has_header(name), "{name} reached the app");
    }
    // The requests the overrides name are refused when sent for real, and reach no app: so the
    // 200 above was not the overrides being harmless.
    let cookie_only = [("cookie", bob.as_str()), ("accept", "application/json")];
    let r = raw_get(w.port(), "both.test", "/admin", &cookie_only).await;
    assert_eq!(r.status, 403, "bob GET /admin: {}", r.text());
    let r = support::raw_request(
        w.port(),
        "DELETE",
        "both.test",
        "/staff/x",
        &cookie_only,
        b"",
    )
    .await;
    assert_eq!(r.status, 403, "bob DELETE /staff/x: {}", r.text());
    assert_eq!(
        w.up.count(),
        before + 1,
        "a refused request reached the app"
    );
}
