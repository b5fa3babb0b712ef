//! Forward auth behind real front proxies: a real nginx (`auth_request`) and a real Caddy
//! (`forward_auth`) run the configurations shipped in `examples/nginx/` and `examples/caddy/`
//! (only ports and the host name substituted), in front of the echo upstream, with Portcullis
//! as their forward-auth server (the example's `portcullis.yaml`, plus two routes the tests
//! need) and a real OpenID provider. A browser without JavaScript logs in through the front
//! proxy, on the app's own host name `app.localhost` (resolved to the front proxy).
//!
//! Needs `nginx` and `caddy` (scripts/setup installs them) and the test IdP (tests/idp).

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use support::front::{Caddy, Nginx};
use support::idp::{Browser, Idp, IdpClient, IdpConfig, PASSWORD};
use support::{Portcullis, Setup, Upstream};

/// The session cookie of the shipped examples: secure and host-only, so `__Host-` prefixed.
const COOKIE: &str = "__Host-_portcullis";

/// The app's host name as the browser sees it. A `.localhost` name, so the browser sends the
/// `Secure` session cookie over plain HTTP as real browsers do for localhost, and the examples
/// keep `secure: true`.
const HOST: &str = "app.localhost";
const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// The identity headers of `headers.identity` (the defaults) and the assertion header.
const IDENTITY: [&str; 4] = [
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-groups",
    "x-portcullis-assertion",
];

/// Routes the tests add to the example's: a public path, one only admins may use, and one
/// with a tight rate limit (defined after the routes).
const EXTRA_ROUTES: &str = "
  - name: public
    host: ${APP_HOST}
    path: /public
    auth: none

  - name: limited
    host: ${APP_HOST}
    path: /limited
    auth: none
    rate_limit: [tight]

  - name: admin
    host: ${APP_HOST}
    path: /admin
    auth: required
    allow: { groups: [admins] }

rate_limits:
  - name: tight
    key: client_ip
    limit: 1/m
    burst: 2
";

/// The parts of `examples/nginx/nginx.conf` a test cannot run: a certificate, and port 80.
const NGINX_CERTIFICATE: &str = "    ssl_certificate     /etc/ssl/certs/app.example.com.pem;
    ssl_certificate_key /etc/ssl/private/app.example.com.key;
";
const NGINX_DEFAULT_SERVER: &str = "    listen 443 ssl default_server;
    listen 80 default_server;
    server_name _;
    ssl_reject_handshake on;
";
const NGINX_REDIRECT_SERVER: &str = "server {
    listen 80;
    server_name app.example.com;
    return 301 https://$host$request_uri;
}
";

#[derive(Debug, Clone, Copy)]
enum Kind {
    Nginx,
    Caddy,
}

enum Front {
    Nginx(Nginx),
    Caddy(Caddy),
}

impl Front {
    fn port(&self) -> u16 {
        match self {
            Front::Nginx(n) => n.port(),
            Front::Caddy(c) => c.port(),
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Front::Nginx(n) => n.addr(),
            Front::Caddy(c) => c.addr(),
        }
    }

    fn log(&self) -> String {
        match self {
            Front::Nginx(n) => format!("{}\n{}", n.error_log(), n.access_log()),
            Front::Caddy(c) => c.log(),
        }
    }
}

/// One test's world. Fields drop in order: Portcullis, the front proxy, the IdP, the app.
struct World {
    pc: Portcullis,
    front: Front,
    #[allow(dead_code)] // kept alive for the test's duration
    idp: Idp,
    up: Upstream,
}

fn example(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `text` with each `from` replaced by its `to`; every `from` must occur, so that a change to
/// an example that the tests no longer match fails loudly instead of testing something else.
fn substitute(name: &str, text: &str, pairs: &[(&str, String)]) -> String {
    let mut out = text.to_string();
    for (from, to) in pairs {
        assert!(
            out.contains(from),
            "{name} no longer contains {from:?}: update tests/forward_auth_front.rs"
        );
        out = out.replace(from, to);
    }
    out
}

impl World {
    fn start(kind: Kind) -> World {
        let up = Upstream::start();
        let setup = Setup::new();
        let portcullis = format!("127.0.0.1:{}", setup.http);
        let app = format!("127.0.0.1:{}", up.port());
        let front = match kind {
            Kind::Nginx => Front::Nginx(Nginx::start(&substitute(
                "examples/nginx/nginx.conf",
                &example("nginx/nginx.conf"),
                &[
                    // Plain HTTP on a free port instead of TLS on 443, and no redirect server.
                    (NGINX_REDIRECT_SERVER, String::new()),
                    // The catch-all server on the same plain port.
                    (
                        NGINX_DEFAULT_SERVER,
                        "    listen 127.0.0.1:@PORT@ default_server;\n    server_name _;\n"
                            .to_string(),
                    ),
                    ("listen 443 ssl;", "listen 127.0.0.1:@PORT@;".to_string()),
                    (NGINX_CERTIFICATE, String::new()),
                    (
                        "server_name app.example.com;",
                        format!("server_name {HOST};"),
                    ),
                    ("server 127.0.0.1:4180;", format!("server {portcullis};")),
                    ("server 127.0.0.1:3000;", format!("server {app};")),
                ],
            ))),
            Kind::Caddy => Front::Caddy(Caddy::start(&substitute(
                "examples/caddy/Caddyfile",
                &example("caddy/Caddyfile"),
                &[
                    ("app.example.com {", format!("http://{HOST}:@PORT@ {{")),
                    ("127.0.0.1:4180", portcullis.clone()),
                    ("127.0.0.1:3000", app.clone()),
                ],
            ))),
        };
        let public_url = format!("http://{HOST}:{}", front.port());
        let idp = Idp::start(IdpConfig::default().client(IdpClient::new(
            "portcullis",
            "portcullis-secret",
            &format!("{public_url}/.portcullis/callback"),
        )));
        let (yaml_name, yaml) = match kind {
            Kind::Nginx => (
                "examples/nginx/portcullis.yaml",
                example("nginx/portcullis.yaml"),
            ),
            Kind::Caddy => (
                "examples/caddy/portcullis.yaml",
                example("caddy/portcullis.yaml"),
            ),
        };
        // The example's default addresses become this test's ports (placeholders of Setup).
        let yaml = substitute(
            yaml_name,
            &yaml,
            &[
                ("127.0.0.1:4180", "127.0.0.1:@HTTP@".to_string()),
                ("127.0.0.1:9901", "127.0.0.1:@ADMIN@".to_string()),
            ],
        ) + EXTRA_ROUTES;
        let pc = setup
            .env("PORTCULLIS_SESSION_SECRET", SECRET)
            .env("OIDC_ISSUER", idp.issuer())
            .env("OIDC_CLIENT_ID", "portcullis")
            .env("OIDC_CLIENT_SECRET", "portcullis-secret")
            .env("PORTCULLIS_PUBLIC_URL", &public_url)
            .env("APP_HOST", HOST)
            .env("PORTCULLIS_LOG_FORMAT", "json")
            .start(&yaml);
        World { pc, front, idp, up }
    }

    /// `path` on the app, through the front proxy.
    fn url(&self, path: &str) -> String {
        format!("http://{HOST}:{}{path}", self.front.port())
    }

    /// A browser that reaches `app.localhost` at the front proxy.
    fn browser(&self) -> Browser {
        Browser::with_hosts(&[(HOST, self.front.addr())])
    }

    /// A non-browser HTTP client that reaches `app.localhost` at the front proxy and follows
    /// no redirects.
    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .resolve(HOST, self.front.addr())
            .build()
            .expect("HTTP client")
    }

    /// Waits until Portcullis has discovered the IdP.
    async fn ready(&self) {
        self.pc.ready().await;
    }

    /// A browser logged in as `user` (it ends on `path`, which must let `user` in).
    async fn logged_in(&self, user: &str, path: &str) -> Browser {
        let browser = self.browser();
        let page = browser.login(&self.url(path), user, PASSWORD).await;
        assert_eq!(
            page.status,
            200,
            "{user} logging in from {path}: ended on {} (chain {:#?})\n{}\n--- front proxy log ---\n{}",
            page.url,
            page.chain,
            page.body,
            self.front.log()
        );
        browser
    }

    /// Requests the app received on `path` (exact, without the query).
    fn received_on(&self, path: &str) -> usize {
        self.up
            .received()
            .iter()
            .filter(|e| e.path() == path)
            .count()
    }
}

/// The identity headers the app received with `e`, with empty values left out (an empty
/// header carries no identity).
fn identity_of(e: &support::Echoed) -> Vec<(String, String)> {
    e.headers
        .iter()
        .filter(|(n, v)| IDENTITY.contains(&n.as_str()) && !v.trim().is_empty())
        .cloned()
        .collect()
}

/// Generates one test per front proxy from `async fn $name(kind: Kind)`.
macro_rules! with_both_fronts {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn nginx() {
                    super::$name(super::Kind::Nginx).await;
                }

                #[tokio::test]
                async fn caddy() {
                    super::$name(super::Kind::Caddy).await;
                }
            }
        )*
    };
}

with_both_fronts!(
    rate_limited_through_the_front_proxy,
    login_through_the_front_proxy_reaches_the_app_with_identity,
    forged_identity_headers_never_reach_the_app,
    api_requests_without_a_session_get_401,
    the_route_policy_denies_with_403,
    original_request_headers_from_clients_are_not_believed,
    a_dead_session_cookie_is_cleared_through_the_front_proxy,
);

/// nginx serves only the app's host: a request naming another host (say, that of a public
/// route in Portcullis' config) gets no answer instead of reaching the app.
#[tokio::test]
async fn nginx_answers_no_other_host() {
    let w = World::start(Kind::Nginx);
    w.ready().await;
    let before = w.up.count();
    // `return 444`: nginx closes the connection without a word. An answer fails, and so does
    // a hang (the harness's timeout).
    let other = support::raw_or_closed(
        w.front.port(),
        b"GET /private HTTP/1.1\r\nHost: open.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    if let support::Answer::Response(r) = other {
        panic!("another Host was answered: {} {}", r.status, r.text());
    }
    assert_eq!(
        w.up.count(),
        before,
        "the app saw a request for another host"
    );
}

/// A cookie whose session ended elsewhere (logged out from another client) is cleared by the
/// `Set-Cookie` of the forward-auth answer, which the front proxy passes to the browser.
async fn a_dead_session_cookie_is_cleared_through_the_front_proxy(kind: Kind) {
    let w = World::start(kind);
    w.ready().await;
    let browser = w.logged_in("alice", "/private").await;
    let cookie = browser
        .cookie_for(&w.url("/"), COOKIE)
        .expect("a session cookie after login");
    // The session ends through another client; the browser still holds its cookie.
    let out = w
        .client()
        .get(w.url("/.portcullis/logout"))
        .header("cookie", format!("{COOKIE}={cookie}"))
        .send()
        .await
        .unwrap();
    assert!(out.status().as_u16() < 400, "logout: {}", out.status());
    assert!(browser.cookie_for(&w.url("/"), COOKIE).is_some());

    let page = browser.get_once(&w.url("/private/again")).await;
    assert_eq!(
        page.status, 302,
        "{kind:?}: sent to log in again: {}",
        page.body
    );
    let cleared = page
        .header_all("set-cookie")
        .into_iter()
        .any(|c| c.starts_with(&format!("{COOKIE}=;")) && c.contains("Max-Age=0"));
    assert!(
        cleared,
        "{kind:?}: the dead cookie is cleared: {:?}",
        page.headers
    );
    assert!(
        browser.cookie_for(&w.url("/"), COOKIE).is_none(),
        "{kind:?}: the browser dropped the dead cookie"
    );
}

/// Not logged in: the browser is sent to the login start on the app's own host, logs in at the
/// IdP, comes back to the very URL it asked for, and the app receives the identity.
async fn login_through_the_front_proxy_reaches_the_app_with_identity(kind: Kind) {
    let w = World::start(kind);
    w.ready().await;
    let target = w.url("/private/page?x=1&y=two");
    let browser = w.browser();

    let first = browser.get_once(&target).await;
    assert_eq!(
        first.status, 302,
        "{kind:?}: a browser without a session is redirected to log in: {:?}\n{}",
        first.headers, first.body
    );
    let login = first
        .url
        .join(first.location().expect("a Location"))
        .expect("a valid Location");
    assert_eq!(
        login.host_str(),
        Some(HOST),
        "login on the app's host: {login}"
    );
    assert_eq!(
        login.port(),
        Some(w.front.port()),
        "through the front proxy: {login}"
    );
    assert_eq!(login.path(), "/.portcullis/start", "{login}");
    let rd = login
        .query_pairs()
        .find(|(k, _)| k == "rd")
        .map(|(_, v)| v.into_owned());
    assert_eq!(
        rd.as_deref(),
        Some(target.as_str()),
        "rd is the original URL: {login}"
    );
    assert_eq!(w.up.count(), 0, "the app saw nothing before the login");

    let login_page = browser.get(login.as_str()).await;
    let page = browser.complete_login(login_page, "alice", PASSWORD).await;
    assert_eq!(
        page.status, 200,
        "{kind:?}: {:#?}\n{}",
        page.chain, page.body
    );
    assert_eq!(page.url.as_str(), target, "back at the original URL");

    let seen = w.up.last();
    assert_eq!(seen.uri, "/private/page?x=1&y=two");
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.header("x-auth-request-user"), Some("alice"));
    assert_eq!(
        seen.header("x-auth-request-email"),
        Some("alice@example.com")
    );
    assert_eq!(seen.header("x-auth-request-groups"), Some("staff,admins"));
    for name in IDENTITY {
        assert!(
            seen.header_all(name).len() <= 1,
            "{name} once: {:?}",
            seen.headers
        );
    }

    // The session holds: the next request goes straight through, and so does an API call
    // carrying the session cookie.
    let again = browser.get_once(&w.url("/other")).await;
    assert_eq!(again.status, 200, "{:?}", again.headers);
    assert_eq!(w.up.last().header("x-auth-request-user"), Some("alice"));
    let cookie = browser
        .cookie_for(&w.url("/"), COOKIE)
        .expect("the session cookie, set on the app's host through the front proxy");
    let api = w
        .client()
        .post(w.url("/api/items"))
        .header("cookie", format!("{COOKIE}={cookie}"))
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .body("{\"n\":1}")
        .send()
        .await
        .expect("POST through the front proxy");
    assert_eq!(
        api.status().as_u16(),
        200,
        "{kind:?}: an API call with the session"
    );
    let seen = w.up.last();
    assert_eq!((seen.method.as_str(), seen.path()), ("POST", "/api/items"));
    assert_eq!(seen.body, b"{\"n\":1}", "the body reaches the app");
    assert_eq!(seen.header("x-auth-request-user"), Some("alice"));
}

/// Identity headers a client sends never reach the app: it gets the real identity when there
/// is one, and none at all when there is not.
async fn forged_identity_headers_never_reach_the_app(kind: Kind) {
    let w = World::start(kind);
    w.ready().await;
    let forged = [
        ("X-Auth-Request-User", "mallory"),
        ("X-Auth-Request-Email", "mallory@evil.test"),
        ("X-Auth-Request-Groups", "admins"),
        ("X-Portcullis-Assertion", "forged.jwt.value"),
    ];
    let forge = |req: reqwest::RequestBuilder| {
        forged
            .iter()
            .fold(req, |req, (name, value)| req.header(*name, *value))
    };

    // No session, public route: the app is reached, with no identity.
    let r = forge(w.client().get(w.url("/public/page")))
        .header("accept", "application/json")
        .send()
        .await
        .expect("GET /public");
    assert_eq!(r.status().as_u16(), 200, "{kind:?}: the public route");
    let seen = w.up.last();
    assert_eq!(seen.path(), "/public/page");
    assert_eq!(identity_of(&seen), vec![], "{kind:?}: {:?}", seen.headers);

    // No session, protected route: the app is not reached at all.
    let before = w.up.count();
    let r = forge(w.client().get(w.url("/private")))
        .header("accept", "application/json")
        .send()
        .await
        .expect("GET /private");
    assert_eq!(r.status().as_u16(), 401, "{kind:?}");
    let r = forge(w.client().get(w.url("/private")))
        .header("accept", "text/html")
        .send()
        .await
        .expect("GET /private");
    assert_eq!(r.status().as_u16(), 302, "{kind:?}");
    assert_eq!(w.up.count(), before, "{kind:?}: the app was not reached");

    // Logged in as bob (not an admin): the app gets bob, once, whatever the client claims.
    let browser = w.logged_in("bob", "/start").await;
    for (name, value) in forged {
        browser.set_header(name, value);
    }
    let page = browser.get_once(&w.url("/private")).await;
    assert_eq!(page.status, 200, "{kind:?}: {:?}", page.headers);
    let seen = w.up.last();
    assert_eq!(seen.path(), "/private");
    assert_eq!(seen.header_all("x-auth-request-user"), vec!["bob"]);
    assert_eq!(
        seen.header_all("x-auth-request-email"),
        vec!["bob@example.com"]
    );
    assert_eq!(seen.header_all("x-auth-request-groups"), vec!["staff"]);
    let assertion = seen.header_all("x-portcullis-assertion");
    assert!(
        assertion.iter().all(|a| *a != "forged.jwt.value"),
        "{kind:?}: the forged assertion reached the app: {assertion:?}"
    );

    // Logged in, on the public route: still never the forged values.
    let page = browser.get_once(&w.url("/public/x")).await;
    assert_eq!(page.status, 200);
    let seen = w.up.last();
    assert_eq!(seen.path(), "/public/x");
    for (name, value) in identity_of(&seen) {
        assert!(
            !forged.iter().any(|(_, f)| *f == value),
            "{kind:?}: forged {name}: {value} reached the app"
        );
    }
}

/// A rate limiter's refusal reaches the client as 429 with `Retry-After` through either front
/// proxy: Caddy passes Portcullis' 429 on; nginx, which turns anything but 401/403 from
/// `auth_request` into a 500, gets a 403 with `Retry-After` that the example's `error_page 403`
/// turns into the 429.
async fn rate_limited_through_the_front_proxy(kind: Kind) {
    let w = World::start(kind);
    w.ready().await;
    let client = w.client();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = client
            .get(w.url("/limited/x"))
            .header("accept", "application/json")
            .send()
            .await
            .expect("GET /limited/x");
        let status = r.status().as_u16();
        let header = |n: &str| {
            r.headers()
                .get(n)
                .map(|v| v.to_str().unwrap_or_default().to_string())
        };
        let (retry, policy, rate) = (
            header("retry-after"),
            header("ratelimit-policy"),
            header("ratelimit"),
        );
        let body = r.text().await.unwrap_or_default();
        statuses.push(status);
        if status == 429 {
            let secs: u64 = retry
                .as_deref()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{kind:?}: Retry-After, got {retry:?}"));
            assert!((59..=60).contains(&secs), "{kind:?}: Retry-After {secs}");
            assert_eq!(policy.as_deref(), Some("\"tight\";q=2;w=120"), "{kind:?}");
            assert!(
                rate.as_deref()
                    .is_some_and(|v| v.starts_with("\"tight\";r=0;t=")),
                "{kind:?}: RateLimit {rate:?}"
            );
            let json: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{kind:?}: JSON, got {body:?}: {e}"));
            assert_eq!(json["error"], "rate_limited", "{kind:?}");
        }
    }
    assert_eq!(statuses, [200, 200, 429], "{kind:?}\n{}", w.front.log());
    assert_eq!(
        w.received_on("/limited/x"),
        2,
        "{kind:?}: the refused one never reached the app"
    );
}

/// Requests that are not browser navigations get 401 JSON without a session, never a redirect,
/// and never reach the app.
async fn api_requests_without_a_session_get_401(kind: Kind) {
    let w = World::start(kind);
    w.ready().await;
    let client = w.client();

    let r = client
        .get(w.url("/api/items?page=2"))
        .header("accept", "application/json")
        .send()
        .await
        .expect("GET /api/items");
    let status = r.status().as_u16();
    let www = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap_or_default().to_string());
    let location = r.headers().get("location").cloned();
    let body = r.text().await.unwrap_or_default();
    assert_eq!(status, 401, "{kind:?}: {body}");
    assert_eq!(location, None, "{kind:?}: no redirect for an API call");
    let json: serde_json::Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{kind:?}: a JSON body, got {body:?}: {e}"));
    assert_eq!(json["error"], "unauthenticated", "{kind:?}: {body}");
    assert!(
        www.as_deref().is_some_and(|v| v.starts_with("Bearer")),
        "{kind:?}: WWW-Authenticate: Bearer, got {www:?}"
    );

    // A form POST from a browser is no navigation either.
    let r = client
        .post(w.url("/private/form"))
        .header("accept", "text/html")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("a=1")
        .send()
        .await
        .expect("POST /private/form");
    assert_eq!(r.status().as_u16(), 401, "{kind:?}: POST without a session");

    // A made-up session cookie is no session.
    let r = client
        .get(w.url("/api/items"))
        .header("accept", "application/json")
        .header("cookie", format!("{COOKIE}=bm90LWEtc2Vzc2lvbg"))
        .send()
        .await
        .expect("GET /api/items");
    assert_eq!(r.status().as_u16(), 401, "{kind:?}: a forged cookie");

    assert_eq!(w.up.count(), 0, "{kind:?}: the app was never reached");
}

/// A logged-in user whom the route's policy does not allow gets 403 and the app never sees
/// the request; a user it allows gets through.
async fn the_route_policy_denies_with_403(kind: Kind) {
    let w = World::start(kind);
    w.ready().await;

    // bob is in staff, not in admins.
    let bob = w.logged_in("bob", "/welcome").await;
    let page = bob.get_once(&w.url("/admin/panel")).await;
    assert_eq!(
        page.status, 403,
        "{kind:?}: bob on the admins-only route: {:?}\n{}",
        page.headers, page.body
    );
    let r = w
        .client()
        .get(w.url("/admin/api"))
        .header(
            "cookie",
            format!(
                "{COOKIE}={}",
                bob.cookie_for(&w.url("/"), COOKIE)
                    .expect("bob's session cookie")
            ),
        )
        .header("accept", "application/json")
        .send()
        .await
        .expect("GET /admin/api");
    assert_eq!(r.status().as_u16(), 403, "{kind:?}: bob's API call");
    assert_eq!(
        w.received_on("/admin/panel") + w.received_on("/admin/api"),
        0
    );
    // The rest of the app stays open to bob.
    assert_eq!(bob.get_once(&w.url("/welcome")).await.status, 200);

    // alice is in admins.
    let alice = w.logged_in("alice", "/admin/panel").await;
    let seen = w.up.last();
    assert_eq!(seen.path(), "/admin/panel");
    assert_eq!(seen.header("x-auth-request-user"), Some("alice"));
    assert_eq!(alice.get_once(&w.url("/admin/other")).await.status, 200);
}

/// The front proxy, not the client, says what the original request was: a client that sends
/// X-Original-URL or X-Forwarded-Uri/-Host/-Method pointing at a public or allowed path does
/// not get a protected one served.
async fn original_request_headers_from_clients_are_not_believed(kind: Kind) {
    let w = World::start(kind);
    w.ready().await;
    let spoof = |req: reqwest::RequestBuilder, path: &str| {
        req.header("x-original-url", w.url(path))
            .header("x-original-method", "GET")
            .header("x-forwarded-uri", path)
            .header("x-forwarded-host", format!("{HOST}:{}", w.front.port()))
            .header("x-forwarded-proto", "http")
            .header("x-forwarded-method", "GET")
    };

    // No session: /private described as the public /public/x.
    let r = spoof(w.client().get(w.url("/private/secret")), "/public/x")
        .header("accept", "application/json")
        .send()
        .await
        .expect("GET /private/secret");
    assert_eq!(
        r.status().as_u16(),
        401,
        "{kind:?}: a spoofed original URL must not open a protected path"
    );
    assert_eq!(w.received_on("/private/secret"), 0, "{kind:?}");

    // bob: /admin described as /welcome, which he may see.
    let bob = w.logged_in("bob", "/welcome").await;
    let cookie = bob
        .cookie_for(&w.url("/"), COOKIE)
        .expect("bob's session cookie");
    let r = spoof(w.client().get(w.url("/admin/panel")), "/welcome")
        .header("cookie", format!("{COOKIE}={cookie}"))
        .header("accept", "application/json")
        .send()
        .await
        .expect("GET /admin/panel");
    assert_eq!(
        r.status().as_u16(),
        403,
        "{kind:?}: a spoofed original URL must not open the admins-only path to bob"
    );
    assert_eq!(w.received_on("/admin/panel"), 0, "{kind:?}");

    // A POST described as a GET: still a POST without a session.
    let r = w
        .client()
        .post(w.url("/private/form"))
        .header("x-original-method", "GET")
        .header("x-forwarded-method", "GET")
        .header("accept", "text/html")
        .body("a=1")
        .send()
        .await
        .expect("POST /private/form");
    assert_eq!(r.status().as_u16(), 401, "{kind:?}");
    assert_eq!(w.received_on("/private/form"), 0, "{kind:?}");
}

/// Only the trusted front proxy may ask: the same forward-auth request from another address
/// (127.0.0.2, not in `trusted_proxies: [127.0.0.1/32]`) is refused with 403.
#[tokio::test]
async fn forward_auth_from_an_untrusted_peer_is_refused() {
    let w = World::start(Kind::Nginx);
    w.ready().await;
    let direct = format!("http://127.0.0.1:{}/.portcullis/auth", w.pc.http_port());
    let ask = |from: [u8; 4]| {
        let direct = direct.clone();
        let original = w.url("/private");
        async move {
            reqwest::Client::builder()
                .no_proxy()
                .local_address(Some(std::net::IpAddr::from(from)))
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client")
                .get(direct)
                .header("host", HOST)
                .header("x-original-url", original)
                .header("x-original-method", "GET")
                .header("accept", "application/json")
                .send()
                .await
                .expect("GET /.portcullis/auth")
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        ask([127, 0, 0, 1]).await,
        401,
        "from the trusted proxy: not logged in"
    );
    assert_eq!(ask([127, 0, 0, 2]).await, 403, "from an untrusted peer");
}
