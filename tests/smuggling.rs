//! What a refused request carries never runs. A request Portcullis refuses (401, 403, or a 302
//! to the login) may have a body, and on a keep-alive connection a body that is not read, or
//! read as the start of the next request, is a request smuggled past the check: here each body
//! is a complete request for a route the app would serve without a session. After the refusal
//! the connection is either closed or answers the client's real next request, and only that one;
//! the app never receives anything.
//!
//! (Conflicting `Content-Length` / `Transfer-Encoding` framing is in `errors.rs`.)

mod support;

use support::idp::{Browser, Idp, IdpClient, IdpConfig, PASSWORD};
use support::{Answer, Portcullis, RawConn, Setup, Upstream};

const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// The hidden request: `open.test` is `auth: none` on the same upstream, so if the body ever
/// ran as a request the app would receive `GET /admin`.
const HIDDEN: &str = "GET /admin HTTP/1.1\r\nHost: open.test\r\n\r\n";

/// The client's real next request: `echo.test` answers with what it received (the app is not
/// involved), and asks to close the connection after it.
const FOLLOW_UP: &[u8] = b"GET /follow-up HTTP/1.1\r\nHost: echo.test\r\nConnection: close\r\n\r\n";

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

    /// Logs `user` in on the public URL and returns the session's `Cookie` header value.
    async fn session_of(&self, user: &str) -> String {
        let browser = Browser::new();
        let start = format!("{}/.portcullis/start?rd=%2F", self.base());
        browser.login(&start, user, PASSWORD).await;
        let value = browser
            .cookie_for(&self.base(), "_portcullis")
            .unwrap_or_else(|| panic!("{user} has a session cookie after login"));
        format!("_portcullis={value}")
    }
}

async fn world() -> World {
    let setup = Setup::new();
    let base = format!("http://127.0.0.1:{}", setup.http);
    let idp = Idp::start(IdpConfig::default().client(IdpClient::new(
        "portcullis",
        "portcullis-secret",
        &format!("{base}/.portcullis/callback"),
    )));
    let up = Upstream::start();
    let yaml = format!(
        "server:\n  listen: [\"127.0.0.1:@HTTP@\"]\n  threads: 1\n  public_url: {base}\n\
         admin:\n  listen: 127.0.0.1:@ADMIN@\n\
         session:\n  secrets: [\"{SECRET}\"]\n  cookie: {{ secure: false }}\n\
         providers:\n  - id: test\n    type: oidc\n    issuer: {issuer}\n    client_id: portcullis\n    client_secret: portcullis-secret\n    scopes: [openid, email, profile, groups]\n\
         routes:\n\
         \x20 - {{ host: app.test, upstream: \"{up}\", auth: required }}\n\
         \x20 - {{ host: app.test, path: /admin, upstream: \"{up}\", allow: {{ groups: [admins] }} }}\n\
         \x20 - {{ host: open.test, upstream: \"{up}\", auth: none }}\n\
         \x20 - {{ host: echo.test, upstream: \"echo://\", auth: none }}\n",
        issuer = idp.issuer(),
        up = up.url(),
    );
    let pc = setup.start(&yaml);
    pc.ready().await;
    World { idp, up, pc }
}

/// `method target` on app.test with `headers` and [`HIDDEN`] as its `Content-Length` body.
fn with_hidden_body(method: &str, target: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: app.test\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{HIDDEN}", HIDDEN.len()));
    req.into_bytes()
}

/// Like [`with_hidden_body`], the body framed as one chunk.
fn with_hidden_chunk(method: &str, target: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: app.test\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str(&format!(
        "Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{HIDDEN}\r\n0\r\n\r\n",
        HIDDEN.len()
    ));
    req.into_bytes()
}

/// Sends `request` (refused with `status`) on a keep-alive connection, then [`FOLLOW_UP`]:
/// first after reading the refusal, then on a second connection both at once (pipelined).
/// The refusal is `status`; after it the connection is closed or answers the follow-up only;
/// the app receives nothing.
async fn assert_body_never_runs(w: &World, what: &str, request: &[u8], status: u16) {
    for pipelined in [false, true] {
        let what = format!("{what}{}", if pipelined { ", pipelined" } else { "" });
        let mut conn = RawConn::open(w.pc.http_port()).await;
        if pipelined {
            conn.send(&[request, FOLLOW_UP].concat()).await;
        } else {
            conn.send(request).await;
        }
        let refusal = conn.next(false).await.response(&what);
        assert_eq!(refusal.status, status, "{what}: {}", refusal.text());
        if !pipelined {
            conn.send(FOLLOW_UP).await;
        }
        let mut after = Vec::new();
        while let Answer::Response(r) = conn.next(false).await {
            after.push(r);
            assert!(after.len() <= 2, "{what}: answers keep coming");
        }
        assert_eq!(
            w.up.count(),
            0,
            "{what}: the app received {:?}",
            w.up.received()
                .iter()
                .map(|e| format!("{} {} (Host {:?})", e.method, e.uri, e.header("host")))
                .collect::<Vec<_>>()
        );
        match after.as_slice() {
            // Closed after the refusal.
            [] => {}
            // Kept open: the one answer after the refusal is the follow-up's.
            [r] => {
                assert_eq!(r.status, 200, "{what}: after the refusal: {}", r.text());
                let doc = r.json();
                assert_eq!(
                    (
                        doc["method"].as_str(),
                        doc["uri"].as_str(),
                        doc["route"].as_str()
                    ),
                    (Some("GET"), Some("/follow-up"), Some("echo.test/")),
                    "{what}: the answer after the refusal is not the follow-up's: {doc}"
                );
            }
            more => panic!(
                "{what}: {} answers after the refusal: {:?}",
                more.len(),
                more.iter()
                    .map(|r| format!("{} {}", r.status, r.text()))
                    .collect::<Vec<_>>()
            ),
        }
    }
}

/// 401: an API POST without a session.
#[tokio::test]
async fn the_body_of_a_401_never_runs_as_a_request() {
    let w = world().await;
    let req = with_hidden_body("POST", "/form", &[("Accept", "application/json")]);
    assert_body_never_runs(&w, "POST without a session", &req, 401).await;
    let req = with_hidden_chunk("POST", "/form", &[("Accept", "application/json")]);
    assert_body_never_runs(&w, "chunked POST without a session", &req, 401).await;
}

/// 403: authenticated, but the route's policy denies the user (bob is no admin).
#[tokio::test]
async fn the_body_of_a_403_never_runs_as_a_request() {
    let w = world().await;
    let bob = w.session_of("bob").await;
    let req = with_hidden_body(
        "POST",
        "/admin/users",
        &[("Accept", "application/json"), ("Cookie", &bob)],
    );
    assert_body_never_runs(&w, "bob POST /admin/users", &req, 403).await;
}

/// 302: a browser GET without a session is sent to log in; a GET may carry a body too.
#[tokio::test]
async fn the_body_of_a_login_redirect_never_runs_as_a_request() {
    let w = world().await;
    let req = with_hidden_body(
        "GET",
        "/private",
        &[("Accept", "text/html,application/xhtml+xml")],
    );
    assert_body_never_runs(&w, "browser GET without a session", &req, 302).await;
}
