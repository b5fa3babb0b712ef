//! The upstream receives exactly the request that was authorized. Requests are sent byte for
//! byte and what the app receives is read off a raw socket ([`RawUpstream`]), before any HTTP
//! library could tidy it: request targets that are not origin-form, absolute-form without
//! `Host`, paths an app reads without case or trailing dots, our cookies among odd bytes,
//! several session cookies, slow request heads.
//!
//! `generated_targets_reach_the_app_only_as_authorized` sends generated targets and checks
//! every request that reached the app against an independent oracle: under the literal,
//! werkzeug-style (Flask: percent-decoded) and IIS-style (decoded, case-insensitive, trailing
//! dots and spaces dropped) readings of the bytes the app got, the route must be one the user
//! may reach.

mod support;

use std::time::{Duration, Instant};
use support::idp::{Browser, Idp, IdpClient, IdpConfig, PASSWORD};
use support::{raw, raw_or_closed, Answer, Portcullis, RawConn, RawUpstream, Setup};

const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// Route prefix, label (sent upstream as `x-route`), and who may pass: `None` anyone,
/// `Some(groups)` a logged-in user in one of `groups` (`[]`: any logged-in user).
struct RouteSpec {
    prefix: &'static str,
    label: &'static str,
    allowed: Option<&'static [&'static str]>,
    public_paths: &'static [&'static str],
}

const ROUTES: &[RouteSpec] = &[
    RouteSpec {
        prefix: "/",
        label: "root",
        allowed: None,
        public_paths: &[],
    },
    RouteSpec {
        prefix: "/public",
        label: "public",
        allowed: None,
        public_paths: &[],
    },
    RouteSpec {
        prefix: "/staff",
        label: "staff",
        allowed: Some(&["staff"]),
        public_paths: &[],
    },
    RouteSpec {
        prefix: "/admin",
        label: "admin",
        allowed: Some(&["admins"]),
        public_paths: &[],
    },
    RouteSpec {
        prefix: "/admin/help",
        label: "admin-help",
        allowed: None,
        public_paths: &[],
    },
    RouteSpec {
        prefix: "/Docs",
        label: "docs",
        allowed: Some(&["admins"]),
        public_paths: &[],
    },
    RouteSpec {
        prefix: "/api",
        label: "api",
        allowed: Some(&[]),
        public_paths: &["/api/status"],
    },
];

struct World {
    #[allow(dead_code)] // kept alive for the test's duration
    idp: Idp,
    up: RawUpstream,
    pc: Portcullis,
}

impl World {
    /// A world whose proxy trusts 127.0.0.1 (so forward-auth checks are accepted).
    fn start(extra_server: &str) -> World {
        World::with_trusted(extra_server, "[127.0.0.1/32]")
    }

    fn with_trusted(extra_server: &str, trusted: &str) -> World {
        let setup = Setup::new();
        let base = format!("http://127.0.0.1:{}", setup.http);
        let idp = Idp::start(IdpConfig::default().client(IdpClient::new(
            "portcullis",
            "portcullis-secret",
            &format!("{base}/.portcullis/callback"),
        )));
        let up = RawUpstream::start();
        let mut routes = String::new();
        for r in ROUTES {
            let auth = match r.allowed {
                None => "auth: none".to_string(),
                Some([]) => "auth: required".to_string(),
                Some(groups) => format!("allow: {{ groups: [{}] }}", groups.join(", ")),
            };
            let public = if r.public_paths.is_empty() {
                String::new()
            } else {
                format!(", public_paths: [{}]", r.public_paths.join(", "))
            };
            routes.push_str(&format!(
                "  - {{ path: \"{}\", upstream: \"{}\", {auth}{public}, headers: {{ add: {{ x-route: {} }} }} }}\n",
                r.prefix,
                up.url(),
                r.label
            ));
        }
        routes.push_str(&format!(
            "  - {{ host: secret.test, path: /, upstream: \"{}\", allow: {{ groups: [admins] }}, headers: {{ add: {{ x-route: secret }} }} }}\n",
            up.url()
        ));
        let yaml = format!(
            "server:\n  listen: [\"127.0.0.1:@HTTP@\"]\n  threads: 1\n  public_url: {base}\n  trusted_proxies: {trusted}\n{extra_server}\
             admin:\n  listen: 127.0.0.1:@ADMIN@\n\
             session:\n  secrets: [\"{SECRET}\"]\n  cookie: {{ secure: false }}\n\
             providers:\n  - id: test\n    type: oidc\n    issuer: {issuer}\n    client_id: portcullis\n    client_secret: portcullis-secret\n    scopes: [openid, email, profile, groups]\n\
             routes:\n{routes}",
            issuer = idp.issuer(),
        );
        let pc = setup.start(&yaml);
        World { idp, up, pc }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.pc.http_port())
    }

    /// Logs `user` in and returns the `Cookie` header value of the session.
    async fn session_of(&self, user: &str) -> String {
        let browser = Browser::new();
        let page = browser
            .login(&format!("{}/staff/", self.base()), user, PASSWORD)
            .await;
        assert!(
            page.status == 200 || page.status == 403,
            "{user} logs in: {} {}",
            page.status,
            page.body
        );
        let value = browser
            .cookie_for(&self.base(), "_portcullis")
            .expect("a session cookie after login");
        format!("_portcullis={value}")
    }

    /// Sends `GET target` (raw bytes) with `Host: app.test` and returns the status, or
    /// `None` when the server closed the connection without an answer.
    async fn get(&self, target: &[u8], cookie: Option<&str>) -> Option<u16> {
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(target);
        req.extend_from_slice(b" HTTP/1.1\r\nHost: app.test\r\nAccept: application/json\r\n");
        if let Some(c) = cookie {
            req.extend_from_slice(format!("Cookie: {c}\r\n").as_bytes());
        }
        req.extend_from_slice(b"Connection: close\r\n\r\n");
        match raw_or_closed(self.pc.http_port(), &req).await {
            Answer::Response(r) => Some(r.status),
            Answer::Closed(_) => None,
        }
    }
}

/// The first and only request the upstream received since `before`, if any.
fn received_since(up: &RawUpstream, before: usize) -> Option<support::RawSeen> {
    let all = up.received();
    assert!(
        all.len() <= before + 1,
        "one request produced {} upstream requests: {:?}",
        all.len() - before,
        &all[before..]
    );
    all.get(before).cloned()
}

#[tokio::test]
async fn targets_that_are_not_a_path_or_an_absolute_url_are_refused() {
    let w = World::start("");
    w.pc.ready().await;
    let bob = w.session_of("bob").await; // staff, not admins
    for target in [
        &b"admin/report"[..],
        b"admin",
        b"%2Fadmin/report",
        b"../admin/report",
        b"./admin/report",
        b"\\admin\\report",
        b"*",
        b"app.test:80",
        b"ftp://app.test/admin",
        b"http:/app.test/admin",
        b"http://bob@app.test/admin",
    ] {
        for cookie in [None, Some(bob.as_str())] {
            let before = w.up.count();
            let status = w.get(target, cookie).await;
            let shown = String::from_utf8_lossy(target);
            assert_eq!(status, Some(400), "{shown} (cookie: {})", cookie.is_some());
            assert_eq!(w.up.count(), before, "{shown} reached the app");
        }
    }
    // Two spaces before the target: whatever the parser makes of it, nothing under /admin
    // reaches the app for someone who may not see it.
    let before = w.up.count();
    let r = raw_or_closed(
        w.pc.http_port(),
        b"GET  /admin/report HTTP/1.1\r\nHost: app.test\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
    )
    .await;
    if let Answer::Response(r) = r {
        assert!(
            r.status == 400 || r.status == 401,
            "two spaces: {}",
            r.status
        );
    }
    assert_eq!(w.up.count(), before, "two spaces reached the app");
}

#[tokio::test]
async fn the_app_receives_the_normalised_target_that_was_routed() {
    let w = World::start("");
    w.pc.ready().await;
    for (sent, expected, route) in [
        ("/public/x", "/public/x", "public"),
        (
            "/public/../public/a?q=/../admin",
            "/public/a?q=/../admin",
            "public",
        ),
        ("//public///a", "/public/a", "public"),
        ("/%70ublic/a", "/public/a", "public"),
        ("/public/caf\u{e9}", "/public/caf%C3%A9", "public"),
        ("/admin/../public/b", "/public/b", "public"),
        ("/admin/help/x", "/admin/help/x", "admin-help"),
        (
            "http://app.test/public/abs?x=1",
            "/public/abs?x=1",
            "public",
        ),
        ("HTTP://app.test/public/abs2", "/public/abs2", "public"),
    ] {
        let before = w.up.count();
        let status = w.get(sent.as_bytes(), None).await;
        assert_eq!(status, Some(200), "{sent}");
        let seen = received_since(&w.up, before).expect("forwarded");
        assert_eq!(seen.target_str(), expected, "{sent}");
        assert_eq!(seen.method(), "GET");
        assert_eq!(seen.header("x-route").as_deref(), Some(route), "{sent}");
    }
}

#[tokio::test]
async fn absolute_form_is_routed_on_its_authority_and_the_app_sees_that_host() {
    let w = World::start("");
    w.pc.ready().await;
    // HTTP/1.0 without Host: the target's authority is the host. secret.test is admins-only.
    let before = w.up.count();
    let r = raw(
        w.pc.http_port(),
        b"GET http://secret.test/x HTTP/1.0\r\nAccept: application/json\r\n\r\n",
    )
    .await
    .expect("an answer");
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(w.up.count(), before);

    // A public host-less route: forwarded with Host = the authority it was routed on.
    let r = raw(
        w.pc.http_port(),
        b"GET http://app.test:8080/public/abs HTTP/1.0\r\n\r\n",
    )
    .await
    .expect("an answer");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = received_since(&w.up, before).expect("forwarded");
    assert_eq!(seen.target_str(), "/public/abs");
    assert_eq!(seen.header_all("host"), [b"app.test:8080".to_vec()]);

    // Absolute-form naming another host than Host: refused.
    let before = w.up.count();
    let r = raw(
        w.pc.http_port(),
        b"GET http://secret.test/x HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("an answer");
    assert_eq!(r.status, 400);
    assert_eq!(w.up.count(), before);
}

#[tokio::test]
async fn paths_a_lenient_app_reads_differently_meet_the_stricter_route() {
    let w = World::start("");
    w.pc.ready().await;
    let bob = w.session_of("bob").await; // staff, not admins
    let alice = w.session_of("alice").await; // staff and admins
                                             // (path, bob's status, alice's status): each of these would be /admin or /Docs to IIS,
                                             // ASP.NET or Express, whose rules bob does not meet.
    for (path, for_bob, for_alice) in [
        ("/ADMIN/report", 403, 200),
        ("/Admin", 403, 200),
        ("/admin./report", 403, 200),
        ("/admin%20/report", 403, 200),
        ("/admin::$DATA", 403, 200),
        ("/%41DMIN/report", 403, 200),
        ("/docs/page", 403, 200),
        ("/DOCS/page", 403, 200),
        ("/Docs/page", 403, 200),
        ("/STAFF/x", 200, 200),
    ] {
        for (who, cookie, want) in [("bob", &bob, for_bob), ("alice", &alice, for_alice)] {
            let before = w.up.count();
            assert_eq!(
                w.get(path.as_bytes(), Some(cookie)).await,
                Some(want),
                "{who} {path}"
            );
            let forwarded = received_since(&w.up, before).is_some();
            assert_eq!(forwarded, want == 200, "{who} {path}");
        }
        // Anonymous: never forwarded, whatever the spelling.
        let before = w.up.count();
        assert_eq!(
            w.get(path.as_bytes(), None).await,
            Some(401),
            "anonymous {path}"
        );
        assert_eq!(w.up.count(), before);
    }
    // Public paths are matched exactly: another spelling needs a login.
    assert_eq!(w.get(b"/api/status", None).await, Some(200));
    assert_eq!(w.get(b"/api/STATUS", None).await, Some(401));
    assert_eq!(w.get(b"/api/status./x", None).await, Some(401));
}

#[tokio::test]
async fn formats_front_controllers_streams_and_cookieless_segments_meet_the_route() {
    let w = World::start("");
    w.pc.ready().await;
    let bob = w.session_of("bob").await; // staff, not admins
    for path in [
        "/admin.json",
        "/ADMIN.JSON",
        "/admin.json/",
        "/index.php/admin",
        "/index.php/admin/x",
        "/(S(abc))/admin",
        "/admin:$i30:$INDEX_ALLOCATION/x",
        "/admin::$INDEX_ALLOCATION/x",
    ] {
        let before = w.up.count();
        assert_eq!(
            w.get(path.as_bytes(), None).await,
            Some(401),
            "anonymous {path}"
        );
        assert_eq!(
            w.get(path.as_bytes(), Some(&bob)).await,
            Some(403),
            "bob {path}"
        );
        assert_eq!(w.up.count(), before, "{path} reached the app");
    }
    // Ordinary files and non-Latin paths are served (and never crash anything).
    for (path, sent) in [
        ("/public/app.js", "/public/app.js"),
        (
            "/wiki/%E6%97%A5%E6%9C%AC%E8%AA%9E",
            "/wiki/%E6%97%A5%E6%9C%AC%E8%AA%9E",
        ),
        (
            "/\u{43d}\u{43e}\u{432}\u{43e}\u{441}\u{442}\u{438}",
            "/%D0%BD%D0%BE%D0%B2%D0%BE%D1%81%D1%82%D0%B8",
        ),
        ("/blog/stra\u{df}e-1234", "/blog/stra%C3%9Fe-1234"),
    ] {
        let before = w.up.count();
        assert_eq!(w.get(path.as_bytes(), None).await, Some(200), "{path}");
        assert_eq!(
            received_since(&w.up, before)
                .expect("forwarded")
                .target_str(),
            sent
        );
    }
}

#[tokio::test]
async fn headers_an_app_server_reads_as_its_own_variables_never_reach_it() {
    // The client is no trusted proxy here.
    let w = World::with_trusted("", "[]");
    w.pc.ready().await;
    let before = w.up.count();
    let r = raw(
        w.pc.http_port(),
        b"GET /public/admin HTTP/1.1\r\nHost: app.test\r\nSCRIPT_NAME: /public\r\nscript_name: /public\r\nPATH_INFO: /admin\r\nX_Forwarded_For: 10.9.9.9\r\nX-Real_IP: 10.9.9.9\r\nX_Original_URL: /admin\r\nX-Script-Name: /public\r\nX-Client-IP: 10.9.9.9\r\nTrue-Client-IP: 10.9.9.9\r\nX-Forwarded-Uri: /admin\r\nX-Original-Path: /admin\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("an answer");
    assert_eq!(r.status, 200);
    let seen = received_since(&w.up, before).expect("forwarded");
    for line in &seen.header_lines {
        let name = String::from_utf8_lossy(line);
        let name = name
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(!name.contains('_'), "{name} reached the app");
        assert!(
            ![
                "x-script-name",
                "x-client-ip",
                "true-client-ip",
                "x-forwarded-uri",
                "x-original-path",
                "x-original-url"
            ]
            .contains(&name.as_str()),
            "{name} reached the app"
        );
    }
    assert_eq!(seen.header("x-real-ip").as_deref(), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn methods_content_lengths_and_hosts_that_servers_read_differently_are_refused() {
    let w = World::start("");
    w.pc.ready().await;
    for req in [
        &b"delete /public/x HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"[..],
        b"Delete /public/x HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        b"POST /public/x HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5, 5\r\nConnection: close\r\n\r\nhello",
        b"POST /public/x HTTP/1.1\r\nHost: app.test\r\nContent-Length: 05\r\nConnection: close\r\n\r\nhello",
        b"GET /public/x HTTP/1.0\r\n\r\n",
    ] {
        let before = w.up.count();
        let r = raw_or_closed(w.pc.http_port(), req).await;
        let shown = String::from_utf8_lossy(req);
        if let Answer::Response(r) = r {
            assert_eq!(r.status, 400, "{shown}");
        }
        assert_eq!(w.up.count(), before, "{shown} reached the app");
    }
}

/// A trusted front proxy may keep `Host` internal and name the public host in
/// `X-Forwarded-Host`; the app may go by either (Rails prefers `X-Forwarded-Host`, Django
/// `Host`), so the request must pass the routes of both.
#[tokio::test]
async fn a_trusted_proxys_forwarded_host_must_pass_its_own_route_too() {
    let w = World::start("");
    w.pc.ready().await;
    let bob = w.session_of("bob").await; // staff, not admins
    let alice = w.session_of("alice").await; // admins
                                             // 127.0.0.1 is a trusted proxy in this world; secret.test is admins-only, app.test's
                                             // /public is open to all.
    let forged = |cookie: Option<String>| {
        let mut h = vec![("x-forwarded-host".to_string(), "secret.test".to_string())];
        if let Some(c) = cookie {
            h.push(("cookie".into(), c));
        }
        h
    };
    for (who, cookie, want) in [
        ("anonymous", None, 401),
        ("bob", Some(bob.clone()), 403),
        ("alice", Some(alice.clone()), 200),
    ] {
        let before = w.up.count();
        let headers = forged(cookie);
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let r = support::raw_get(w.pc.http_port(), "app.test", "/public/x", &headers).await;
        assert_eq!(r.status, want, "{who}: {}", r.text());
        let seen = received_since(&w.up, before);
        assert_eq!(seen.is_some(), want == 200, "{who}");
        if let Some(seen) = seen {
            assert_eq!(
                seen.header("x-forwarded-host").as_deref(),
                Some("secret.test")
            );
        }
    }
    // A host with no route at all: nothing to decide on.
    let r = support::raw_get(
        w.pc.http_port(),
        "app.test",
        "/public/x",
        &[("x-forwarded-host", "unknown.test")],
    )
    .await;
    assert_eq!(
        r.status,
        200,
        "host-less routes serve any host: {}",
        r.text()
    );
    // The same host with the port the client used is the same route: the public origin.
    let before = w.up.count();
    let r = support::raw_get(
        w.pc.http_port(),
        "app.test",
        "/public/x",
        &[("x-forwarded-host", "app.test:8443")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        received_since(&w.up, before)
            .expect("forwarded")
            .header("x-forwarded-host")
            .as_deref(),
        Some("app.test:8443")
    );
}

#[tokio::test]
async fn our_cookies_never_reach_the_app_whatever_else_the_header_holds() {
    let w = World::start("");
    w.pc.ready().await;
    let bob = w.session_of("bob").await;
    let value = bob.strip_prefix("_portcullis=").expect("cookie value");
    let headers: Vec<Vec<u8>> = vec![
        format!("note=caf\u{e9}; {bob}; x=1").into_bytes(),
        [
            b"a=\xff\xfe; ".to_vec(),
            bob.clone().into_bytes(),
            b"; b=2".to_vec(),
        ]
        .concat(),
        bob.clone().into_bytes(),
        format!("  {bob} ;x=1").into_bytes(),
        format!("__Host-_portcullis={value}; _portcullis_login_abc=zz; keep=1").into_bytes(),
        // Names led or followed by Unicode spaces: another name to a browser's prefix rules,
        // never a session here, and never passed on either.
        format!("\u{a0}_portcullis={value}; keep=1").into_bytes(),
        format!("_portcullis\u{2000}={value}; keep=1").into_bytes(),
        format!("\u{3000}__Host-_portcullis={value}; keep=1").into_bytes(),
    ];
    for header in headers {
        for target in [&b"/public/x"[..], b"/staff/x"] {
            let before = w.up.count();
            let mut req = b"GET ".to_vec();
            req.extend_from_slice(target);
            req.extend_from_slice(b" HTTP/1.1\r\nHost: app.test\r\nCookie: ");
            req.extend_from_slice(&header);
            req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
            let r = raw(w.pc.http_port(), &req).await.expect("an answer");
            let shown = String::from_utf8_lossy(&header);
            let unicode_spaced = ['\u{a0}', '\u{2000}', '\u{3000}']
                .iter()
                .any(|c| shown.contains(*c));
            if target == b"/staff/x" && unicode_spaced {
                assert_eq!(
                    r.status, 401,
                    "{shown}: a name with Unicode spaces is no session"
                );
            }
            let Some(seen) = received_since(&w.up, before) else {
                // Only a staff page may be refused (a cookie under another name is no
                // session here); a public page never.
                assert_eq!(target, b"/staff/x", "{shown}: {}", r.status);
                continue;
            };
            for cookie in seen.header_all("cookie") {
                let text = String::from_utf8_lossy(&cookie);
                assert!(
                    !text.contains(value) && !text.contains("_portcullis"),
                    "{shown}: the app got {text}"
                );
            }
            if header.starts_with(b"note=") {
                // Everything else arrives byte for byte.
                assert_eq!(
                    seen.header_all("cookie"),
                    ["note=caf\u{e9}; x=1".as_bytes().to_vec()],
                    "{shown}"
                );
                // The odd bytes did not hide the session either.
                assert_eq!(r.status, 200, "{shown} {}", String::from_utf8_lossy(target));
            }
        }
    }
}

#[tokio::test]
async fn two_session_cookies_naming_different_sessions_count_as_none() {
    let w = World::start("");
    w.pc.ready().await;
    let bob = w.session_of("bob").await;
    let alice = w.session_of("alice").await;
    assert_eq!(w.get(b"/staff/x", Some(&bob)).await, Some(200));
    // The same session twice is still that session.
    assert_eq!(
        w.get(b"/staff/x", Some(&format!("{bob}; {bob}"))).await,
        Some(200)
    );
    // A planted one beside it, in either order: neither is believed.
    for both in [format!("{bob}; {alice}"), format!("{alice}; {bob}")] {
        let before = w.up.count();
        assert_eq!(w.get(b"/staff/x", Some(&both)).await, Some(401));
        assert_eq!(w.get(b"/admin/x", Some(&both)).await, Some(401));
        assert_eq!(w.up.count(), before);
    }
}

#[tokio::test]
async fn a_fragment_in_x_original_url_is_refused() {
    let w = World::start("");
    w.pc.ready().await;
    let bob = w.session_of("bob").await;
    for url in [
        "http://app.test/public/x#/../../admin/x",
        "http://app.test/staff#x",
        "http://app.test#/admin",
    ] {
        let r = support::raw_get(
            w.pc.http_port(),
            "auth.test",
            "/.portcullis/auth",
            &[
                ("x-original-url", url),
                ("cookie", &bob),
                ("accept", "application/json"),
            ],
        )
        .await;
        // nginx reads anything but 2xx/401/403 as an error: the refusal is a 403.
        assert_eq!(r.status, 403, "{url}: {}", r.text());
        assert!(r.text().contains("fragment"), "{url}: {}", r.text());
    }
    // The same check without the fragment passes.
    let r = support::raw_get(
        w.pc.http_port(),
        "auth.test",
        "/.portcullis/auth",
        &[
            ("x-original-url", "http://app.test/staff"),
            ("cookie", &bob),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn a_slow_request_head_loses_its_connection() {
    let w = World::start("  timeouts: { request_header: 1s, idle: 5s }\n");
    w.pc.ready().await;
    // A client trickling its head one byte at a time, faster than any per-read timeout.
    let mut slow = RawConn::open(w.pc.http_port()).await;
    slow.send(b"GET /public/x HTTP/1.1\r\nHost: app.test\r\n")
        .await;
    let started = Instant::now();
    let mut closed_after = None;
    for byte in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
        slow.send(std::slice::from_ref(byte)).await;
        if slow.is_closed() {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after = match closed_after {
        Some(t) => t,
        None => match slow.next(false).await {
            Answer::Closed(_) => started.elapsed(),
            Answer::Response(r) => panic!("the slow head was answered: {}", r.status),
        },
    };
    assert!(
        closed_after < Duration::from_secs(3),
        "closed only after {closed_after:?}"
    );

    // A keep-alive client that pauses between requests (less than idle + request_header)
    // keeps its connection.
    let mut patient = RawConn::open(w.pc.http_port()).await;
    for _ in 0..2 {
        patient
            .send(b"GET /public/y HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await;
        patient.next(false).await.response("keep-alive request");
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    patient
        .send(b"GET /public/z HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    assert_eq!(
        patient.next(false).await.response("after a pause").status,
        200
    );
}

// ---------------------------------------------------------------------------------------------
// Generated targets and the oracle
// ---------------------------------------------------------------------------------------------

/// A small deterministic generator (xorshift64*), so a failure can be replayed by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() % items.len() as u64) as usize]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Segments an app is likely to see, in many spellings.
const SEGMENTS: &[&str] = &[
    "admin",
    "ADMIN",
    "Admin",
    "aDmIn",
    "admin.",
    "admin..",
    "admin%20",
    "admin%2e",
    "admin::$DATA",
    "%61dmin",
    "%41DMIN",
    "staff",
    "STAFF",
    "public",
    "Public",
    "help",
    "HELP",
    "docs",
    "Docs",
    "DOCS",
    "Docs.",
    "api",
    "API",
    "status",
    "STATUS",
    "x",
    "a.b",
    ".",
    "..",
    ".%2e",
    "%2e%2e",
    "%2E",
    "%2e",
    "...",
    "caf\u{e9}",
    "caf%C3%A9",
    "%C5%BFtaff",
    ";x",
    "admin;jsessionid=1",
    "~",
    "%7e",
    "%E2%84%AA",
    "%3F",
    "%23",
];
/// Segments that make a path ambiguous (each should be refused), used less often.
const ODD_SEGMENTS: &[&str] = &[
    "%2F", "%2f", "%5C", "%00", "%", "%zz", "%C0%AE", "..;", "%ff",
];
const SEPARATORS: &[&str] = &["/", "/", "/", "/", "/", "//", "\\", "/./", "%2f", "/../"];
const STARTS: &[&str] = &[
    "/",
    "/",
    "/",
    "/",
    "/",
    "/",
    "/",
    "/",
    "",
    "//",
    "\\",
    "./",
    "../",
    "http://app.test/",
    "HTTP://app.test/",
    "http://secret.test/",
    "%2F",
];

fn generate(rng: &mut Rng) -> String {
    let mut t = rng.pick(STARTS).to_string();
    let n = 1 + rng.next() % 4;
    for i in 0..n {
        if i > 0 {
            t.push_str(rng.pick(SEPARATORS));
        }
        let pool = if rng.chance(8) {
            ODD_SEGMENTS
        } else {
            SEGMENTS
        };
        t.push_str(rng.pick(pool));
    }
    if rng.chance(15) {
        t.push('/');
    }
    if rng.chance(10) {
        t.push_str("?next=/admin/../x");
    }
    if rng.chance(5) {
        t.push_str("#/../admin");
    }
    t
}

/// Decodes every `%XX`; `None` when the result is not UTF-8 or an escape is broken.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Resolves dot segments and empty segments as a file server would.
fn resolve(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut p = format!("/{}", out.join("/"));
    if path.ends_with('/') && p.len() > 1 {
        p.push('/');
    }
    p
}

/// The path as Java servlet containers read it: `;params` dropped from every segment.
fn without_params(path: &str) -> String {
    let segments: Vec<&str> = path
        .split('/')
        .map(|s| s.split(';').next().unwrap_or(""))
        .collect();
    resolve(&segments.join("/"))
}

/// The ways an app may read the path it received. Each returns the path to match and whether
/// matching ignores case.
fn readings(path: &str) -> Vec<(&'static str, String, bool)> {
    let mut out = vec![("literal", path.to_string(), false)];
    out.push(("tomcat", without_params(path), false));
    if let Some(decoded) = percent_decode(path) {
        // werkzeug / Flask / gunicorn: PATH_INFO is the percent-decoded path.
        out.push(("werkzeug", resolve(&decoded), false));
        // IIS / ASP.NET: decoded, `\` is `/`, dots and spaces end no name, no case.
        let windows = decoded.replace('\\', "/");
        let segments: Vec<String> = windows
            .split('/')
            .map(|s| {
                let s = s.split(';').next().unwrap_or("");
                let mut s = s.to_string();
                loop {
                    let before = s.len();
                    s = s.trim_end_matches(['.', ' ']).to_string();
                    if s.to_ascii_lowercase().ends_with("::$data") {
                        s.truncate(s.len() - 7);
                    }
                    if s.len() == before {
                        break;
                    }
                }
                s
            })
            .collect();
        out.push(("iis", resolve(&segments.join("/")), true));
        // Rails, older Spring MVC: a format suffix on the last segment routes to the bare path.
        let named: Vec<&str> = decoded.split('/').filter(|s| !s.is_empty()).collect();
        if let Some((last, before)) = named.split_last() {
            if let Some(dot) = last.rfind('.').filter(|&d| d > 0) {
                let mut p = before.to_vec();
                p.push(&last[..dot]);
                out.push(("rails", resolve(&format!("/{}", p.join("/"))), false));
            }
        }
        // PHP front controllers: `/index.php/admin` is `/admin`.
        if let Some(i) = named
            .iter()
            .position(|s| s.to_ascii_lowercase().ends_with(".php"))
            .filter(|&i| i + 1 < named.len())
        {
            out.push((
                "php",
                resolve(&format!("/{}", named[i + 1..].join("/"))),
                false,
            ));
        }
        // ASP.NET cookieless sessions: `/(S(x))/admin` is `/admin`.
        let cookieless: Vec<&str> = named
            .iter()
            .copied()
            .filter(|s| !(s.starts_with('(') && s.ends_with("))")))
            .collect();
        out.push((
            "aspnet",
            resolve(&format!("/{}", cookieless.join("/"))),
            true,
        ));
    }
    out
}

/// Whether `path` falls under `prefix` on a segment boundary (optionally without case).
fn under(path: &str, prefix: &str, nocase: bool) -> bool {
    let (p, x) = if nocase {
        (path.to_lowercase(), prefix.to_lowercase())
    } else {
        (path.to_string(), prefix.to_string())
    };
    x == "/" || p == x || p.starts_with(&format!("{x}/"))
}

/// The route an app reading `path` this way would be behind (longest prefix).
fn route_for<'a>(path: &str, nocase: bool) -> &'a RouteSpec {
    ROUTES
        .iter()
        .filter(|r| under(path, r.prefix, nocase))
        .max_by_key(|r| r.prefix.len())
        .expect("/ covers everything")
}

/// Whether a user in `groups` (`None`: anonymous) may reach `path` under route `r`.
fn may_reach(r: &RouteSpec, path: &str, nocase: bool, groups: Option<&[&str]>) -> bool {
    match (r.allowed, groups) {
        (None, _) => true,
        _ if r.public_paths.iter().any(|p| under(path, p, nocase)) => {
            // A public path under one reading only: the literal reading decides elsewhere.
            true
        }
        (Some(_), None) => false,
        (Some([]), Some(_)) => true,
        (Some(wanted), Some(have)) => wanted.iter().any(|g| have.contains(g)),
    }
}

/// Who sends a generated request: a label, the `Cookie` header, the user's groups.
type User<'a> = (&'a str, Option<&'a str>, Option<&'a [&'a str]>);

#[tokio::test]
async fn generated_targets_reach_the_app_only_as_authorized() {
    let seed: u64 = std::env::var("PORTCULLIS_TARGET_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_0042);
    let count: usize = std::env::var("PORTCULLIS_TARGET_COUNT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let w = World::start("");
    w.pc.ready().await;
    let bob = w.session_of("bob").await;
    let users: [User<'_>; 2] = [
        ("anonymous", None, None),
        ("bob", Some(bob.as_str()), Some(&["staff"])),
    ];
    let mut rng = Rng(seed);
    let (mut forwarded, mut refused, mut bad) = (0, 0, 0);
    for _ in 0..count {
        let target = generate(&mut rng);
        for (who, cookie, groups) in users {
            let before = w.up.count();
            let status = w.get(target.as_bytes(), cookie).await;
            let what = format!("seed {seed:#x}: {who} GET {target:?} -> {status:?}");
            let seen = received_since(&w.up, before);
            let Some(seen) = seen else {
                assert!(
                    status.is_none_or(|s| matches!(s, 400 | 401 | 403 | 404)),
                    "{what}"
                );
                if status == Some(400) {
                    bad += 1;
                } else {
                    refused += 1;
                }
                continue;
            };
            forwarded += 1;
            assert_eq!(status, Some(200), "{what}");
            let got = seen.target_str();
            let path = got.split('?').next().unwrap_or_default();
            // What the app got is a normal, origin-form path: nothing left to resolve.
            assert!(
                path.starts_with('/') && !path.contains("//"),
                "{what}: app got {got:?}"
            );
            assert!(
                !path.contains('\\') && !path.contains('#') && got.is_ascii(),
                "{what}: app got {got:?}"
            );
            assert_eq!(resolve(path), path, "{what}: app got {got:?}");
            // Routes match on the path without `;params` (as servlet containers read it).
            let routed = route_for(&without_params(path), false);
            assert_eq!(
                seen.header("x-route").as_deref(),
                Some(routed.label),
                "{what}: app got {got:?}"
            );
            for (reading, read, nocase) in readings(path) {
                let r = route_for(&read, nocase);
                assert!(
                    may_reach(r, &read, nocase, groups),
                    "{what}: the app got {got:?}, which a {reading} app reads as {read:?} on route {}, where {who} may not go",
                    r.label
                );
            }
        }
    }
    // The generator must exercise all three outcomes, or the test proves nothing.
    assert!(forwarded > count / 10, "only {forwarded} forwarded");
    assert!(refused > count / 20, "only {refused} refused by policy");
    assert!(bad > count / 10, "only {bad} refused as bad requests");
    eprintln!("{forwarded} forwarded, {refused} refused, {bad} bad requests (seed {seed:#x})");
}
