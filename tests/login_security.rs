//! Login security: what an attacker can try against the OpenID Connect login and the session
//! cookie, with a real IdP (`oidc-provider`, able to forge bad ID tokens on request), the real
//! server and a real upstream. Each test starts its own IdP, upstream and Portcullis.
//!
//! Covered: state mismatch, replayed callbacks, PKCE binding of the code, the mix-up defence
//! (RFC 9207 `iss`), nonce and ID token verification, tampered / truncated / foreign / expired
//! cookies, hostile `rd` values on start and logout, IdP errors, browser vs API answers per
//! `auth:` mode, forged identity headers, cookie attributes, logout, the cross-host hand-over,
//! userinfo, and secrets in logs.

mod support;

use base64::Engine;
use portcullis::session::{Purpose, SessionCookie, SessionKeys};
use reqwest::Url;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::idp::{Browser, Idp, IdpClient, IdpConfig, Page, PASSWORD};
use support::{Portcullis, Setup, Upstream};

/// The session secret of most instances, and another one for "foreign" cookies.
const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const OTHER_SECRET: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
const CLIENT_SECRET: &str = "portcullis-client-secret-4f1c";
const COOKIE: &str = "_portcullis";

// ---------------------------------------------------------------------------------------------
// The world of one test
// ---------------------------------------------------------------------------------------------

/// How to configure one Portcullis.
struct Opts {
    /// Host of `server.public_url` (its port is the HTTP listener's).
    public_host: &'static str,
    secret: &'static str,
    /// Inside `session.cookie: { ... }`.
    cookie: &'static str,
    /// Extra top-level YAML (e.g. `logging:`), full lines.
    extra: &'static str,
    /// `routes:` items; `@UP@` is the upstream URL.
    routes: &'static str,
}

const ROUTES: &str = "  - { path: /, upstream: \"@UP@\", auth: required }
  - { path: /maybe, upstream: \"@UP@\", auth: optional }
  - { path: /open, upstream: \"@UP@\", auth: none }
  - { path: /bye, upstream: \"@UP@\", auth: none }
";

impl Default for Opts {
    fn default() -> Self {
        Opts {
            public_host: "127.0.0.1",
            secret: SECRET,
            cookie: "secure: false",
            extra: "",
            routes: ROUTES,
        }
    }
}

struct World {
    idp: Idp,
    up: Upstream,
    pc: Portcullis,
    /// `http://<public_host>:<port>`.
    base: String,
}

impl World {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn callback_prefix(&self) -> String {
        self.url("/.portcullis/callback")
    }

    async fn failures(&self) -> f64 {
        self.pc
            .metric("portcullis_logins_total", &[("result", "failure")])
            .await
    }

    async fn successes(&self) -> f64 {
        self.pc
            .metric("portcullis_logins_total", &[("result", "success")])
            .await
    }

    /// Requests the upstream received carrying an identity header.
    fn identified_requests(&self) -> usize {
        self.up
            .received()
            .iter()
            .filter(|e| e.has_header("x-auth-request-user"))
            .count()
    }
}

/// The IdP's client: one redirect URI and `/bye` as post-logout URI per base.
fn idp_config(bases: &[&str]) -> IdpConfig {
    let mut client = IdpClient::new(
        "portcullis",
        CLIENT_SECRET,
        &format!("{}/.portcullis/callback", bases[0]),
    );
    for b in &bases[1..] {
        client = client.redirect_uri(&format!("{b}/.portcullis/callback"));
    }
    for b in bases {
        client = client
            .post_logout_redirect_uri(&format!("{b}/bye"))
            .post_logout_redirect_uri(&format!("{b}/bye/abs"));
    }
    IdpConfig::default().client(client)
}

fn config_yaml(base: &str, idp: &Idp, up: &Upstream, o: &Opts) -> String {
    // Many logins from 127.0.0.1 per test: the built-in auth-endpoints limiter (burst 10,
    // tests/rate_limits.rs) made roomy.
    format!(
        "rate_limits:\n  - {{ name: auth-endpoints, key: client_ip, limit: 6000/m, burst: 1000 }}\n\
         server:\n  listen: [\"127.0.0.1:@HTTP@\"]\n  threads: 1\n  public_url: {base}\n\
         admin:\n  listen: 127.0.0.1:@ADMIN@\n{extra}\
         session:\n  secrets: [\"{secret}\"]\n  cookie: {{ {cookie} }}\n\
         providers:\n  - id: test\n    type: oidc\n    issuer: {issuer}\n    client_id: portcullis\n    client_secret: {CLIENT_SECRET}\n    scopes: [openid, email, profile, groups]\n\
         routes:\n{routes}",
        extra = o.extra,
        secret = o.secret,
        cookie = o.cookie,
        issuer = idp.issuer(),
        routes = o.routes.replace("@UP@", &up.url()),
    )
}

/// Starts Portcullis on `setup` and waits until the provider is discovered.
async fn start_pc(setup: Setup, idp: &Idp, up: &Upstream, o: &Opts) -> (Portcullis, String) {
    let base = format!("http://{}:{}", o.public_host, setup.http);
    let pc = setup.start(&config_yaml(&base, idp, up, o));
    let url = format!("http://127.0.0.1:{}/readyz", pc.admin_port());
    support::eventually(Duration::from_secs(10), "readyz", || {
        let url = url.clone();
        async move {
            let r = support::http_client().get(&url).send().await.ok()?;
            (r.status() == 200).then_some(())
        }
    })
    .await;
    (pc, base)
}

async fn world_with(o: Opts) -> World {
    let setup = Setup::new();
    let base = format!("http://{}:{}", o.public_host, setup.http);
    let idp = Idp::start(idp_config(&[&base]));
    let up = Upstream::start();
    let (pc, base) = start_pc(setup, &idp, &up, &o).await;
    World { idp, up, pc, base }
}

async fn world() -> World {
    world_with(Opts::default()).await
}

const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// A browser resolving each of `hosts` to 127.0.0.1.
fn browser_for(hosts: &[&str]) -> Browser {
    let map: Vec<(&str, SocketAddr)> = hosts.iter().map(|h| (*h, LOOPBACK)).collect();
    Browser::with_hosts(&map)
}

/// A plain client (no cookies, no redirects) resolving each of `hosts` to 127.0.0.1.
fn client_for(hosts: &[&str]) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10));
    for h in hosts {
        b = b.resolve(h, LOOPBACK);
    }
    b.build().expect("HTTP client")
}

// ---------------------------------------------------------------------------------------------
// Requests and answers
// ---------------------------------------------------------------------------------------------

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn send(client: &reqwest::Client, method: &str, url: &str, headers: &[(&str, &str)]) -> Resp {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client.request(method.clone(), url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.text().await.unwrap_or_default();
    Resp {
        status,
        headers,
        body,
    }
}

const HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// Asserts a 401 JSON `{"error":"unauthenticated"}` with `WWW-Authenticate: Bearer`.
fn assert_api_401(r: &Resp, what: &str) {
    assert_eq!(r.status, 401, "{what}: status; body {}", r.body);
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer"),
        "{what}: WWW-Authenticate {challenge:?}"
    );
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "{what}: content-type {ct:?}"
    );
    let v: serde_json::Value = serde_json::from_str(&r.body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {}", r.body));
    assert_eq!(v["error"], "unauthenticated", "{what}: {}", r.body);
}

/// Asserts a 302 to `<base>/.portcullis/start` whose `rd` is `rd`.
fn assert_login_redirect(r: &Resp, base: &str, rd: &str, what: &str) {
    assert_eq!(r.status, 302, "{what}: status; body {}", r.body);
    let loc = r.header("location").unwrap_or_default();
    let url = Url::parse(loc).unwrap_or_else(|e| panic!("{what}: Location {loc:?}: {e}"));
    assert_eq!(
        url.origin().ascii_serialization(),
        base,
        "{what}: Location {loc}"
    );
    assert_eq!(url.path(), "/.portcullis/start", "{what}: Location {loc}");
    assert_eq!(
        query(&url, "rd").as_deref(),
        Some(rd),
        "{what}: Location {loc}"
    );
}

fn query(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The `Set-Cookie` line among `lines` that sets `name`.
fn set_cookie_named<'a>(lines: &[&'a str], name: &str) -> Option<&'a str> {
    lines
        .iter()
        .copied()
        .find(|l| l.split_once('=').is_some_and(|(n, _)| n.trim() == name))
}

fn cookie_value(set_cookie: &str) -> &str {
    set_cookie
        .split(';')
        .next()
        .and_then(|p| p.split_once('='))
        .map_or("", |(_, v)| v.trim())
}

/// Lower-case attribute names of a `Set-Cookie` line, with their values.
fn cookie_attrs(set_cookie: &str) -> Vec<(String, String)> {
    set_cookie
        .split(';')
        .skip(1)
        .map(|a| {
            let (k, v) = a.split_once('=').unwrap_or((a, ""));
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect()
}

fn attr<'a>(attrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Asserts that a request carrying `cookie` (a whole `Cookie` header) has no session: a browser
/// GET is sent to log in, API calls get 401 JSON, userinfo 401, never a 500, and nothing reaches
/// the upstream with an identity.
async fn assert_no_session(w: &World, cookie: &str, what: &str) {
    let c = support::http_client();
    let identified = w.identified_requests();
    let with = |accept: &'static str| vec![("cookie", cookie), ("accept", accept)];

    let r = send(&c, "GET", &w.url("/private/x?y=1"), &with(HTML)).await;
    assert_login_redirect(&r, &w.base, &w.url("/private/x?y=1"), what);
    let r = send(&c, "GET", &w.url("/private/x"), &with("application/json")).await;
    assert_api_401(&r, &format!("{what}: API GET"));
    let r = send(&c, "POST", &w.url("/private/x"), &with("*/*")).await;
    assert_api_401(&r, &format!("{what}: POST"));
    let r = send(
        &c,
        "GET",
        &w.url("/.portcullis/userinfo"),
        &with("application/json"),
    )
    .await;
    assert_eq!(r.status, 401, "{what}: userinfo: {}", r.body);
    let r = send(&c, "GET", &w.url("/maybe/x"), &with(HTML)).await;
    assert_eq!(r.status, 200, "{what}: optional route");
    assert_eq!(
        w.identified_requests(),
        identified,
        "{what}: the upstream received an identity"
    );
}

// ---------------------------------------------------------------------------------------------
// Login steps
// ---------------------------------------------------------------------------------------------

/// Follows a login from `start` (posting the IdP's form as `user` if it is shown) until a
/// redirect to a URL starting with `stop`, and returns that URL without visiting it.
async fn login_until(b: &Browser, start: &str, user: &str, stop: &str) -> Url {
    let page = b.get_until(start, stop).await;
    let page = if page.stopped_at.is_some() {
        page
    } else {
        let form = page
            .forms()
            .into_iter()
            .find(|f| f.has_field("password"))
            .unwrap_or_else(|| {
                panic!(
                    "expected the IdP's login form at {} (status {}):\n{}",
                    page.url, page.status, page.body
                )
            });
        b.submit_form(
            &page,
            form,
            &[("username", user), ("password", PASSWORD)],
            Some(stop),
        )
        .await
    };
    page.stopped_at.unwrap_or_else(|| {
        panic!(
            "the login never reached {stop}: ended at {} (status {}), chain {:#?}\n{}",
            page.url, page.status, page.chain, page.body
        )
    })
}

/// Up to the IdP's redirect to the callback.
async fn to_callback(w: &World, b: &Browser, start: &str, user: &str) -> Url {
    login_until(b, start, user, &w.callback_prefix()).await
}

/// A complete login of `user` landing on `path`; returns the session cookie value.
async fn login(w: &World, b: &Browser, path: &str, user: &str) -> String {
    let page = b.login(&w.url(path), user, PASSWORD).await;
    assert_eq!(
        page.status, 200,
        "login landed on {}: {}",
        page.url, page.body
    );
    assert_eq!(page.url.as_str(), w.url(path), "chain {:#?}", page.chain);
    b.cookie_for(&w.base, COOKIE)
        .expect("a session cookie after login")
}

/// Whether any `Set-Cookie` of `page` gives `name` a non-empty value.
fn sets_cookie(headers: &[&str], name: &str) -> bool {
    set_cookie_named(headers, name).is_some_and(|l| !cookie_value(l).is_empty())
}

// ---------------------------------------------------------------------------------------------
// Callback: state, replay, PKCE
// ---------------------------------------------------------------------------------------------

/// A callback whose `state` matches no login cookie is refused with 400, creates no session,
/// and the code is never exchanged. Covers a state unrelated to the cookie (no cookie of that
/// name) and a state sharing the cookie's name prefix but differing after it.
#[tokio::test]
async fn state_mismatch_is_refused_and_creates_no_session() {
    let w = world().await;
    let b = Browser::new();
    let cb = to_callback(&w, &b, &w.url("/private"), "alice").await;
    let state = query(&cb, "state").expect("state in the callback");
    let code = query(&cb, "code").expect("code in the callback");
    assert!(state.len() > 16, "state {state:?} too short to be random");

    let mut same_prefix = state.clone();
    let last = same_prefix.pop().expect("non-empty state");
    same_prefix.push(if last == 'A' { 'B' } else { 'A' });
    let cases = [
        ("unrelated state", "x".repeat(43)),
        ("state differing only at the end", same_prefix),
        ("empty state", String::new()),
    ];
    for (i, (what, bad)) in cases.iter().enumerate() {
        let url = w.url(&format!(
            "/.portcullis/callback?code={}&state={}",
            enc(&code),
            enc(bad)
        ));
        let page = b.get_once(&url).await;
        assert_eq!(page.status, 400, "{what}: {}", page.body);
        assert!(
            !sets_cookie(&page.header_all("set-cookie"), COOKIE),
            "{what}: a session cookie was set: {:?}",
            page.header_all("set-cookie")
        );
        assert!(b.cookie_for(&w.base, COOKIE).is_none(), "{what}");
        // The empty state is refused before any lookup; the other two count as failed logins.
        if i < 2 {
            let want = (i + 1) as f64;
            support::eventually(Duration::from_secs(5), "login failure metric", || async {
                (w.failures().await == want).then_some(())
            })
            .await;
        }
    }
    // The IdP never saw the code come back: nothing was exchanged.
    assert_eq!(w.idp.counter("grant:authorization_code").await, 0);
    assert_eq!(w.successes().await, 0.0);
    let me = b.get(&w.url("/.portcullis/userinfo")).await;
    assert_eq!(me.status, 401, "{}", me.body);
    assert_eq!(w.identified_requests(), 0);
}

/// The same callback URL visited twice: the second is refused (its login cookie is gone),
/// and visiting it from another browser (without the cookie), before or after, is refused
/// too. The code is exchanged exactly once.
#[tokio::test]
async fn replayed_callback_is_refused() {
    let w = world().await;
    let b = Browser::new();
    let cb = to_callback(&w, &b, &w.url("/private/r"), "alice").await;

    // Stolen before use: another browser, no login cookie.
    let thief = Browser::new();
    let page = thief.get_once(cb.as_str()).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(!sets_cookie(&page.header_all("set-cookie"), COOKIE));

    // The rightful use works.
    let page = b.get_once(cb.as_str()).await;
    assert_eq!(page.status, 302, "{}", page.body);
    assert_eq!(page.location(), Some(w.url("/private/r").as_str()));
    let session = b.cookie_for(&w.base, COOKIE).expect("session cookie");

    // Replayed in the same browser: refused, and no new session cookie.
    let page = b.get_once(cb.as_str()).await;
    assert_eq!(page.status, 400, "replay: {}", page.body);
    assert!(!sets_cookie(&page.header_all("set-cookie"), COOKIE));
    assert_eq!(
        b.cookie_for(&w.base, COOKIE).as_deref(),
        Some(session.as_str())
    );

    // Replayed elsewhere after use: refused.
    let page = thief.get_once(cb.as_str()).await;
    assert_eq!(page.status, 400, "replay elsewhere: {}", page.body);
    assert!(!sets_cookie(&page.header_all("set-cookie"), COOKIE));
    let me = thief.get(&w.url("/.portcullis/userinfo")).await;
    assert_eq!(me.status, 401);

    assert_eq!(w.idp.counter("grant:authorization_code").await, 1);
    assert_eq!(w.successes().await, 1.0);
    assert_eq!(w.failures().await, 3.0);
}

/// Two logins in progress in one browser; the code of the first delivered with the state of
/// the second passes the state check but must fail the PKCE check at the IdP (the verifier is
/// the second login's): no session.
#[tokio::test]
async fn code_of_one_login_with_the_state_of_another_is_refused() {
    let w = world().await;
    let b = Browser::new();
    let first = to_callback(&w, &b, &w.url("/private/one"), "alice").await;
    let second = to_callback(&w, &b, &w.url("/private/two"), "alice").await;
    let mut spliced = second.clone();
    spliced
        .query_pairs_mut()
        .clear()
        .append_pair("code", &query(&first, "code").unwrap())
        .append_pair("state", &query(&second, "state").unwrap())
        .append_pair("iss", w.idp.issuer());
    let page = b.get_once(spliced.as_str()).await;
    assert!(
        (400..500).contains(&page.status),
        "spliced callback: {} {}",
        page.status,
        page.body
    );
    assert!(!sets_cookie(&page.header_all("set-cookie"), COOKIE));
    assert!(b.cookie_for(&w.base, COOKIE).is_none());
    // It was the IdP that refused the exchange (the verifier did not match the challenge).
    assert_eq!(w.idp.counter("grant_error:authorization_code").await, 1);
    assert_eq!(w.idp.counter("grant:authorization_code").await, 0);
    assert_eq!(w.successes().await, 0.0);
    assert_eq!(w.failures().await, 1.0);
    assert_eq!(w.identified_requests(), 0);
}

// ---------------------------------------------------------------------------------------------
// Mix-up defence: the callback's `iss` (RFC 9207)
// ---------------------------------------------------------------------------------------------

const EVIL_ISSUER: &str = "http://idp.evil.test";

/// A world whose IdP is told `without_iss` (an IdP from before RFC 9207), with a second provider
/// `other` after the first: another real IdP, a login's `iss` could name it.
async fn mixup_world(without_iss: bool) -> (World, Idp) {
    let setup = Setup::new();
    let base = format!("http://127.0.0.1:{}", setup.http);
    let mut config = idp_config(&[&base]);
    config.without_iss_parameter = without_iss;
    let idp = Idp::start(config);
    let other = Idp::start(idp_config(&[&base]));
    let up = Upstream::start();
    let second = format!(
        "  - id: other\n    type: oidc\n    issuer: {}\n    client_id: portcullis\n    client_secret: {CLIENT_SECRET}\nroutes:\n",
        other.issuer()
    );
    let yaml = config_yaml(&base, &idp, &up, &Opts::default()).replacen("routes:\n", &second, 1);
    let pc = setup.start(&yaml);
    pc.ready().await;
    (World { idp, up, pc, base }, other)
}

/// `url` with every `name` parameter taken out and `values` appended under that name.
fn with_param(url: &Url, name: &str, values: &[&str]) -> Url {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut out = url.clone();
    {
        let mut q = out.query_pairs_mut();
        q.clear().extend_pairs(&kept);
        for v in values {
            q.append_pair(name, v);
        }
    }
    out
}

async fn discovery(idp: &Idp) -> serde_json::Value {
    support::http_client()
        .get(idp.discovery_url())
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("discovery JSON")
}

/// Visits the callback `cb` (from a login `b` started) and asserts it is refused as a mix-up:
/// the "Sign-in failed" page with 401, no session, the login cookie cleared, the code never
/// taken to any IdP, one more failed login and a `login_failure` audit line saying `reason`.
async fn assert_mixup_refused(w: &World, b: &Browser, cb: &Url, reason: &str, what: &str) {
    let failures = w.failures().await;
    let audited = || {
        w.pc.stdout()
            .lines()
            .filter(|l| l.contains("\"event\":\"login_failure\"") && l.contains(reason))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let audited_before = audited().len();
    let exchanges = w.idp.counter("grant:authorization_code").await
        + w.idp.counter("grant_error:authorization_code").await;
    let state = query(cb, "state").expect("state in the callback");
    let login_cookie = format!("{COOKIE}_login_{}", &state[..12]);
    assert!(
        b.has_cookie(&login_cookie),
        "{what}: no login cookie before"
    );

    let page = b.get_once(cb.as_str()).await;
    assert_eq!(page.status, 401, "{what}: {}", page.body);
    assert!(
        page.header("content-type")
            .unwrap_or_default()
            .starts_with("text/html"),
        "{what}: {:?}",
        page.header("content-type")
    );
    assert!(
        page.body.contains("Sign-in failed"),
        "{what}: {}",
        page.body
    );
    assert!(
        !sets_cookie(&page.header_all("set-cookie"), COOKIE),
        "{what}: a session cookie was set: {:?}",
        page.header_all("set-cookie")
    );
    assert!(b.cookie_for(&w.base, COOKIE).is_none(), "{what}");
    assert!(!b.has_cookie(&login_cookie), "{what}: login cookie kept");
    let me = b.get(&w.url("/.portcullis/userinfo")).await;
    assert_eq!(me.status, 401, "{what}: userinfo {}", me.body);
    assert_eq!(
        w.idp.counter("grant:authorization_code").await
            + w.idp.counter("grant_error:authorization_code").await,
        exchanges,
        "{what}: the code went to the IdP"
    );
    assert_eq!(w.failures().await, failures + 1.0, "{what}");
    let line = support::eventually(Duration::from_secs(5), "login_failure audit line", || {
        let lines = audited();
        async move { lines.get(audited_before).cloned() }
    })
    .await;
    assert!(line.contains("\"provider\":\"test\""), "{what}: {line}");
}

/// The test IdP (oidc-provider) advertises `authorization_response_iss_parameter_supported` and
/// puts `iss` into its responses. A callback whose `iss` was changed, even to the issuer of the
/// other configured provider (the mix-up: never a reason to switch providers), or removed, or
/// given twice, is refused before the code is used; the untouched callback logs in.
#[tokio::test]
async fn callback_iss_must_be_the_login_providers_issuer() {
    let (w, other) = mixup_world(false).await;
    let issuer = w.idp.issuer().to_string();
    assert_eq!(
        discovery(&w.idp).await["authorization_response_iss_parameter_supported"],
        true
    );
    let slash = format!("{issuer}/");
    let cases: [(&str, Vec<&str>, &str); 6] = [
        (
            "iss of an unknown issuer",
            vec![EVIL_ISSUER],
            "is not the provider's issuer",
        ),
        (
            "iss of the other provider",
            vec![other.issuer()],
            "is not the provider's issuer",
        ),
        (
            "iss with a trailing slash",
            vec![&slash],
            "is not the provider's issuer",
        ),
        ("iss empty", vec![""], "is not the provider's issuer"),
        ("iss removed", vec![], "without iss"),
        ("iss twice", vec![&issuer, EVIL_ISSUER], "more than one iss"),
    ];
    for (what, values, reason) in cases {
        let b = Browser::new();
        let cb = to_callback(&w, &b, &w.url("/private/m"), "alice").await;
        assert_eq!(
            query(&cb, "iss").as_deref(),
            Some(issuer.as_str()),
            "{what}"
        );
        assert_mixup_refused(&w, &b, &with_param(&cb, "iss", &values), reason, what).await;
    }
    assert_eq!(w.idp.counter("grant:authorization_code").await, 0);
    assert_eq!(other.counter("grant:authorization_code").await, 0);
    assert_eq!(other.counter("grant_error:authorization_code").await, 0);
    assert_eq!(w.identified_requests(), 0);

    // Untouched, the same login works.
    let b = Browser::new();
    let cb = to_callback(&w, &b, &w.url("/private/ok"), "alice").await;
    let page = b.get_once(cb.as_str()).await;
    assert_eq!(page.status, 302, "{}", page.body);
    assert_eq!(page.location(), Some(w.url("/private/ok").as_str()));
    let me = b.get(&w.url("/.portcullis/userinfo")).await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert!(me.body.contains("\"user\":\"alice\""), "{}", me.body);
    assert_eq!(w.successes().await, 1.0);
    assert_eq!(w.failures().await, 6.0);
    assert_eq!(w.idp.counter("grant:authorization_code").await, 1);
}

/// An IdP from before RFC 9207 (no `iss`, not advertised): its callbacks log in as before, but
/// an `iss` that is present is still compared (RFC 9207 section 2.4).
#[tokio::test]
async fn without_advertised_iss_a_present_one_is_still_compared() {
    let (w, other) = mixup_world(true).await;
    let issuer = w.idp.issuer().to_string();
    let disco = discovery(&w.idp).await;
    assert!(
        disco
            .get("authorization_response_iss_parameter_supported")
            .is_none(),
        "{disco}"
    );

    for (what, values) in [
        ("iss of an unknown issuer", vec![EVIL_ISSUER]),
        ("iss of the other provider", vec![other.issuer()]),
    ] {
        let b = Browser::new();
        let cb = to_callback(&w, &b, &w.url("/private/m"), "alice").await;
        assert_eq!(query(&cb, "iss"), None, "{what}: the IdP sent iss");
        let cb = with_param(&cb, "iss", &values);
        assert_mixup_refused(&w, &b, &cb, "is not the provider's issuer", what).await;
    }
    assert_eq!(w.idp.counter("grant:authorization_code").await, 0);

    // Without iss, as this IdP answers, and with the right one added: both log in.
    for (i, values) in [vec![], vec![issuer.as_str()]].into_iter().enumerate() {
        let b = Browser::new();
        let path = format!("/private/ok{i}");
        let cb = to_callback(&w, &b, &w.url(&path), "alice").await;
        let page = b.get_once(with_param(&cb, "iss", &values).as_str()).await;
        assert_eq!(page.status, 302, "iss {values:?}: {}", page.body);
        assert_eq!(page.location(), Some(w.url(&path).as_str()));
        assert!(b.cookie_for(&w.base, COOKIE).is_some(), "iss {values:?}");
    }
    assert_eq!(w.successes().await, 2.0);
    assert_eq!(w.failures().await, 2.0);
}

// ---------------------------------------------------------------------------------------------
// ID token verification
// ---------------------------------------------------------------------------------------------

/// A login whose ID token the IdP was told to forge with `mode` is refused: a 4xx page, no
/// session cookie, a failed-login count, and the upstream never reached as the user.
async fn assert_forged_id_token_refused(w: &World, mode: &str, failures_before: f64) {
    w.idp.tamper_next_id_token(mode).await;
    let b = Browser::new();
    let page = b.login(&w.url("/private/t"), "alice", PASSWORD).await;
    assert_eq!(
        w.idp.counter(&format!("id_token_tampered:{mode}")).await,
        1,
        "{mode}: the IdP did not forge the token"
    );
    assert!(
        (400..500).contains(&page.status),
        "{mode}: a forged ID token gave {} at {}:\n{}",
        page.status,
        page.url,
        page.body
    );
    assert!(
        page.url.as_str().starts_with(&w.callback_prefix()),
        "{mode}: ended at {}",
        page.url
    );
    assert!(
        b.cookie_for(&w.base, COOKIE).is_none(),
        "{mode}: a session cookie was set"
    );
    let me = b.get(&w.url("/.portcullis/userinfo")).await;
    assert_eq!(me.status, 401, "{mode}: userinfo {}", me.body);
    assert_eq!(
        w.identified_requests(),
        0,
        "{mode}: upstream saw an identity"
    );
    assert_eq!(
        w.failures().await,
        failures_before + 1.0,
        "{mode}: failure metric"
    );
}

/// Nonce mismatch (and a missing nonce) in an otherwise valid, correctly signed ID token.
#[tokio::test]
async fn nonce_mismatch_is_refused() {
    let w = world().await;
    assert_forged_id_token_refused(&w, "nonce", 0.0).await;
    assert_forged_id_token_refused(&w, "no_nonce", 1.0).await;
    // The same setup logs in fine with an honest token.
    let b = Browser::new();
    login(&w, &b, "/private/ok", "alice").await;
    assert_eq!(w.successes().await, 1.0);
}

/// ID tokens signed by a key not in the JWKS, by another key under the real `kid`, modified
/// after signing, unsigned (`alg: none`), for another audience or issuer, or expired.
#[tokio::test]
async fn forged_id_tokens_are_refused() {
    let w = world().await;
    let modes = [
        "unknown_key",
        "wrong_key",
        "modified",
        "alg_none",
        "aud",
        "iss",
        "expired",
    ];
    for (i, mode) in modes.iter().enumerate() {
        assert_forged_id_token_refused(&w, mode, i as f64).await;
    }
    let b = Browser::new();
    login(&w, &b, "/private/ok", "alice").await;
    assert_eq!(w.up.last().header("x-auth-request-user"), Some("alice"));
}

// ---------------------------------------------------------------------------------------------
// Session cookies that are not ours
// ---------------------------------------------------------------------------------------------

/// Flipped characters, truncation, extension, garbage, a value sealed for another purpose and
/// an expired cookie (sealed with the right key, live session id) are all simply no session.
#[tokio::test]
async fn tampered_truncated_and_expired_cookies_are_no_session() {
    let w = world().await;
    let b = Browser::new();
    let good = login(&w, &b, "/private/a", "alice").await;
    // The genuine cookie works, as a plain header too.
    let c = support::http_client();
    let r = send(
        &c,
        "GET",
        &w.url("/private/check"),
        &[
            ("cookie", &format!("{COOKIE}={good}")),
            ("accept", "application/json"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let flip = |s: &str, i: usize| {
        let mut chars: Vec<char> = s.chars().collect();
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect::<String>()
    };
    let keys = SessionKeys::from_secrets(&[SECRET]).expect("keys");
    let real = SessionCookie::decode(&good, &keys, now_secs()).expect("our cookie decodes");
    let expired = SessionCookie {
        sid: real.sid,
        expires_at: now_secs() - 1,
    }
    .encode(&keys);
    let mut plain = real.sid.as_bytes().to_vec();
    plain.extend_from_slice(&real.expires_at.to_be_bytes());
    let other_purpose = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(keys.seal(
        Purpose::LoginState,
        &plain,
        b"",
    ));
    assert_eq!(other_purpose.len(), good.len());

    let n = good.len();
    let cases: Vec<(&str, String)> = vec![
        ("first character flipped", flip(&good, 0)),
        ("middle character flipped", flip(&good, n / 2)),
        ("last character flipped", flip(&good, n - 1)),
        ("truncated by one", good[..n - 1].to_string()),
        ("truncated by half", good[..n / 2].to_string()),
        ("extended", format!("{good}A")),
        ("empty", String::new()),
        ("garbage of the right length", "!".repeat(n)),
        ("a character outside base64url", format!("+{}", &good[1..])),
        ("quoted garbage", "\"abc\"".to_string()),
        ("very long", "A".repeat(3000)),
        ("sealed for the login-state purpose", other_purpose),
        ("expired (right key, live session)", expired),
    ];
    for (what, value) in &cases {
        assert_no_session(&w, &format!("{COOKIE}={value}"), what).await;
    }
    // Broken headers around the cookie.
    for header in [
        COOKIE.to_string(),
        format!("{COOKIE}="),
        format!("{COOKIE}=="),
        ";;;".to_string(),
        format!("{COOKIE}_login_x={good}"),
    ] {
        assert_no_session(&w, &header, &format!("cookie header {header:?}")).await;
    }
    // A garbage cookie of the same name before the real one (a host-only and a domain cookie,
    // say) does not hide it.
    let r = send(
        &c,
        "GET",
        &w.url("/private/both"),
        &[
            (
                "cookie",
                &format!("{COOKIE}={}; {COOKIE}={good}", flip(&good, 3)),
            ),
            ("accept", "application/json"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The genuine cookie is still good: the session was not harmed by the attempts.
    let fresh = SessionCookie {
        sid: real.sid,
        expires_at: real.expires_at,
    }
    .encode(&keys);
    let r = send(
        &c,
        "GET",
        &w.url("/private/after"),
        &[
            ("cookie", &format!("{COOKIE}={fresh}")),
            ("accept", "application/json"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "a re-sealed live cookie: {}", r.body);
    assert_eq!(w.up.last().header("x-auth-request-user"), Some("alice"));
}

/// A cookie sealed by another Portcullis with another `session.secrets` (a real login there)
/// is no session here, and the other way round.
#[tokio::test]
async fn cookie_from_an_instance_with_another_secret_is_no_session() {
    let setup_a = Setup::new();
    let setup_b = Setup::new();
    let base_a = format!("http://127.0.0.1:{}", setup_a.http);
    let base_b = format!("http://127.0.0.1:{}", setup_b.http);
    let idp = Idp::start(idp_config(&[&base_a, &base_b]));
    let up = Upstream::start();
    let (pc_b, _) = start_pc(
        setup_b,
        &idp,
        &up,
        &Opts {
            secret: OTHER_SECRET,
            ..Opts::default()
        },
    )
    .await;
    let (pc_a, _) = start_pc(setup_a, &idp, &up, &Opts::default()).await;

    let browser = Browser::new();
    let page = browser
        .login(&format!("{base_b}/private/b"), "alice", PASSWORD)
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let foreign = browser.cookie_for(&base_b, COOKIE).expect("B's cookie");

    let w = World {
        idp,
        up,
        pc: pc_a,
        base: base_a,
    };
    assert_no_session(&w, &format!("{COOKIE}={foreign}"), "B's cookie at A").await;

    // And A's cookie at B.
    let b2 = Browser::new();
    let own = login(&w, &b2, "/private/a", "bob").await;
    let c = support::http_client();
    let r = send(
        &c,
        "GET",
        &format!("{base_b}/private/x"),
        &[
            ("cookie", &format!("{COOKIE}={own}")),
            ("accept", "application/json"),
        ],
    )
    .await;
    assert_api_401(&r, "A's cookie at B");
    // Each still works at home.
    let r = send(
        &c,
        "GET",
        &format!("{base_b}/.portcullis/userinfo"),
        &[("cookie", &format!("{COOKIE}={foreign}"))],
    )
    .await;
    assert_eq!(r.status, 200, "B's cookie at B: {}", r.body);
    drop(pc_b);
}

// ---------------------------------------------------------------------------------------------
// Return URLs
// ---------------------------------------------------------------------------------------------

/// Hostile `rd` values. `@P@` is Portcullis's port, `@Q@` another port on the same host,
/// `@I@` the IdP's port.
const HOSTILE_RD: &[&str] = &[
    "//evil.com",
    "//evil.com/path",
    "///evil.com",
    "////evil.com/",
    "/\\evil.com",
    "\\/evil.com",
    "\\\\evil.com",
    "/\\/evil.com",
    "%2F%2Fevil.com",
    "%2f%2fevil.com/",
    "/%2F%2Fevil.com",
    "%5C%5Cevil.com",
    "/\t/evil.com",
    "/\n/evil.com",
    "/\r\n/evil.com",
    "\t//evil.com",
    " //evil.com",
    "/ /evil.com",
    "https://evil.com",
    "http://evil.com/",
    "HTTP://EVIL.COM/",
    "evil.com",
    "evil.com/path",
    "https:evil.com",
    "https:/evil.com",
    "http:\\\\evil.com",
    "https://127.0.0.1:@P@@evil.com/",
    "http://127.0.0.1@evil.com/",
    "http://user:pass@evil.com/",
    "http://evil.com#@127.0.0.1:@P@/",
    "http://evil.com?@127.0.0.1:@P@/",
    "http://evil.com\\@127.0.0.1:@P@/",
    "http://127.0.0.1.evil.com:@P@/",
    "http://127.0.0.1.evil.com/",
    "http://evil.com/127.0.0.1:@P@",
    "http://127.0.0.1:@Q@/",
    "http://127.0.0.1:@I@/",
    "http://localhost:@P@/",
    "http://[::1]:@P@/",
    "http://evil。com/",
    "http://ｅｖｉｌ.com/",
    "http://%65vil.com/",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "java\tscript:alert(1)",
    "javascript://127.0.0.1:@P@/%0Aalert(1)",
    "data:text/html,<script>alert(1)</script>",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "vbscript:msgbox(1)",
    "file:///etc/passwd",
    "ftp://127.0.0.1:@P@/",
    "//127.0.0.1.evil.com",
    "",
];

fn rd_value(template: &str, w: &World, other_port: u16) -> String {
    template
        .replace("@P@", &w.pc.http_port().to_string())
        .replace("@Q@", &other_port.to_string())
        .replace("@I@", &w.idp.port().to_string())
}

/// Where a redirect may lead: Portcullis's own origin, or (from Portcullis) the IdP's
/// authorization or end-session endpoint. Also refuses Location values that browsers
/// rewrite (backslashes, control characters, scheme-relative).
fn check_location(raw: &str, from: &Url, w: &World, what: &str) -> Url {
    assert!(
        !raw.chars().any(|c| c.is_control() || c == '\\' || c == ' '),
        "{what}: Location with control characters, spaces or backslashes: {raw:?}"
    );
    assert!(
        !raw.starts_with("//"),
        "{what}: scheme-relative Location {raw:?}"
    );
    let next = from
        .join(raw)
        .unwrap_or_else(|e| panic!("{what}: bad Location {raw:?}: {e}"));
    let origin = next.origin().ascii_serialization();
    let idp = w.idp.issuer();
    let on_site = origin == w.base;
    let from_origin = from.origin().ascii_serialization();
    // From Portcullis only to the IdP's authorization or end-session endpoint; the IdP may
    // redirect within itself.
    let to_idp =
        origin == idp && (from_origin == idp || ["/auth", "/session/end"].contains(&next.path()));
    assert!(
        on_site || to_idp,
        "{what}: redirected off-site from {from} to {raw:?}"
    );
    if to_idp {
        if let Some(back) = query(&next, "post_logout_redirect_uri") {
            let back = Url::parse(&back).unwrap_or_else(|e| panic!("{what}: {back:?}: {e}"));
            assert_eq!(
                back.origin().ascii_serialization(),
                w.base,
                "{what}: post_logout_redirect_uri {back} leads off-site"
            );
        }
    }
    next
}

/// Follows redirects from `url` by hand, checking every hop with [`check_location`]; returns
/// the status of the first answer and the last page.
async fn walk(w: &World, b: &Browser, url: &str, what: &str) -> (u16, Page) {
    let mut url = Url::parse(url).expect("start URL");
    let mut first = None;
    for _ in 0..10 {
        let page = b.get_once(url.as_str()).await;
        assert!(
            page.status < 500,
            "{what}: {} answered {}: {}",
            page.url,
            page.status,
            page.body
        );
        let first = *first.get_or_insert(page.status);
        let Some(loc) = page.location() else {
            return (first, page);
        };
        let next = check_location(loc, &page.url, w, what);
        if !matches!(page.status, 301 | 302 | 303 | 307 | 308) {
            return (first, page);
        }
        url = next;
    }
    panic!("{what}: too many redirects");
}

/// No hostile `rd` on `/.portcullis/start` leads off-site, neither at once nor after the login
/// completes; good values land where they say after login.
#[tokio::test]
async fn hostile_rd_on_start_never_leads_off_site() {
    let w = world().await;
    let other_port = support::free_port();
    let b = Browser::new();
    // Log in at the IdP once, so later logins go straight through.
    login(&w, &b, "/private/first", "alice").await;
    assert!(HOSTILE_RD.len() >= 20);
    let mut accepted = Vec::new();
    for template in HOSTILE_RD {
        let rd = rd_value(template, &w, other_port);
        let what = format!("start rd={rd:?}");
        let start = w.url(&format!("/.portcullis/start?rd={}", enc(&rd)));
        let (first, last) = walk(&w, &b, &start, &what).await;
        if first != 400 {
            accepted.push(rd.clone());
        }
        assert_eq!(
            last.url.origin().ascii_serialization(),
            w.base,
            "{what}: ended at {}",
            last.url
        );
        // Raw in the query (not percent-encoded) where the HTTP client allows it.
        if rd
            .chars()
            .all(|c| c.is_ascii_graphic() && !"#&+%".contains(c))
        {
            let raw = w.url(&format!("/.portcullis/start?rd={rd}"));
            if Url::parse(&raw).is_ok() {
                walk(&w, &b, &raw, &format!("{what} (raw)")).await;
            }
        }
    }
    // Only the one value that is a path on this site (with an encoded slash, which the path
    // rules refuse later) may be accepted; everything else is refused outright.
    assert!(
        accepted.iter().all(|rd| rd == "/%2F%2Fevil.com"),
        "accepted as return URLs: {accepted:#?}"
    );

    // Good values: a relative path and the app's own absolute URL.
    for (rd, lands) in [
        ("/private/good?x=1".to_string(), w.url("/private/good?x=1")),
        (w.url("/private/abs"), w.url("/private/abs")),
    ] {
        let b = Browser::new();
        let start = w.url(&format!("/.portcullis/start?rd={}", enc(&rd)));
        let page = b.login(&start, "bob", PASSWORD).await;
        assert_eq!(page.status, 200, "rd={rd}: {}", page.body);
        assert_eq!(page.url.as_str(), lands, "rd={rd}: chain {:#?}", page.chain);
        let seen = w.up.last();
        assert_eq!(seen.uri, lands.trim_start_matches(&w.base));
        assert_eq!(seen.header("x-auth-request-user"), Some("bob"));
    }
}

/// No hostile `rd` on `/.portcullis/logout` leads off-site, with or without a session (the
/// IdP's `post_logout_redirect_uri` included); a good `rd` comes back after the IdP.
#[tokio::test]
async fn hostile_rd_on_logout_never_leads_off_site() {
    let w = world().await;
    let other_port = support::free_port();
    let c = support::http_client();
    let b = Browser::new();
    login(&w, &b, "/private/first", "alice").await;
    for template in HOSTILE_RD {
        let rd = rd_value(template, &w, other_port);
        let url = w.url(&format!("/.portcullis/logout?rd={}", enc(&rd)));
        for method in ["GET", "POST"] {
            let what = format!("anonymous {method} logout rd={rd:?}");
            let r = send(&c, method, &url, &[("accept", HTML)]).await;
            assert!(r.status < 500, "{what}: {}", r.status);
            if let Some(loc) = r.header("location") {
                check_location(loc, &Url::parse(&url).unwrap(), &w, &what);
            }
        }
        // With a session.
        if b.get(&w.url("/.portcullis/userinfo")).await.status != 200 {
            login(&w, &b, "/private/again", "alice").await;
        }
        let what = format!("logout rd={rd:?} with a session");
        let page = b
            .get_once(&w.url(&format!("/.portcullis/logout?rd={}", enc(&rd))))
            .await;
        assert!(page.status < 500, "{what}: {}", page.status);
        if let Some(loc) = page.location() {
            check_location(loc, &page.url, &w, &what);
        }
    }

    // Good values come back after the IdP.
    for (rd, lands) in [
        ("/bye".to_string(), w.url("/bye")),
        (w.url("/bye/abs"), w.url("/bye/abs")),
    ] {
        if b.get(&w.url("/.portcullis/userinfo")).await.status != 200 {
            login(&w, &b, "/private/again", "alice").await;
        }
        let what = format!("logout rd={rd}");
        let url = w.url(&format!("/.portcullis/logout?rd={}", enc(&rd)));
        let (_, last) = walk(&w, &b, &url, &what).await;
        assert_eq!(last.status, 200, "{what}: {}", last.body);
        assert_eq!(
            last.url.as_str().split('?').next(),
            Some(lands.as_str()),
            "{what}"
        );
        assert_eq!(b.get(&w.url("/.portcullis/userinfo")).await.status, 401);
    }
}

/// The return URL of an unauthenticated request is built from its `Host`; a forged `Host` (or
/// `X-Forwarded-Host` from a peer that is not a trusted proxy) must not become an off-site
/// redirect once the login completes.
///
/// Each case has one expected outcome, never "whatever happened":
/// - `Host: evil.com` (with or without a port): the route has no `host`, so the request is
///   served, as a 302 to the login on the *legitimate* origin (`public_url`); the login then
///   refuses the foreign return URL with a 400 page on that origin.
/// - `X-Forwarded-Host: evil.com` from an untrusted peer is ignored: a 302 to the login on the
///   legitimate origin whose `rd` is the page on the legitimate origin, where the login lands.
#[tokio::test]
async fn forged_host_headers_do_not_lead_off_site() {
    let w = world().await;
    let b = Browser::new();
    login(&w, &b, "/private/first", "alice").await;
    let c = support::http_client();
    let port = w.pc.http_port();
    let evil_port = format!("evil.com:{port}");
    let page = w.url("/private/h?x=1");
    let evil_rd = "http://evil.com/private/h?x=1".to_string();
    let evil_port_rd = format!("http://evil.com:{port}/private/h?x=1");
    // (header, value, the `rd` of the login redirect, the last answer after following it).
    for (name, value, rd, last_status, lands) in [
        ("host", "evil.com", &evil_rd, 400, None),
        ("host", evil_port.as_str(), &evil_port_rd, 400, None),
        ("x-forwarded-host", "evil.com", &page, 200, Some(&page)),
    ] {
        let what = format!("{name}: {value}");
        let r = send(&c, "GET", &page, &[(name, value), ("accept", HTML)]).await;
        // A login redirect on the legitimate origin (asserted whole: status, origin, path, rd).
        assert_login_redirect(&r, &w.base, rd, &what);
        let loc = r.header("location").expect("checked above");
        let from = Url::parse(&page).unwrap();
        let next = check_location(loc, &from, &w, &what);
        let (first, last) = walk(&w, &b, next.as_str(), &what).await;
        assert_eq!(
            last.url.origin().ascii_serialization(),
            w.base,
            "{what}: ended at {}",
            last.url
        );
        assert_eq!(
            last.status, last_status,
            "{what}: {}: {}",
            last.url, last.body
        );
        match lands {
            Some(lands) => {
                assert_eq!(last.url.as_str(), lands, "{what}");
                assert_eq!(first, 302, "{what}: the login starts with a redirect");
            }
            None => {
                // Refused at the login start, before the IdP: the foreign `rd` is named.
                assert_eq!(first, 400, "{what}: {}", last.body);
                assert_eq!(last.url.path(), "/.portcullis/start", "{what}");
                assert!(
                    last.body.contains("return URL"),
                    "{what}: a page saying why: {}",
                    last.body
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// IdP errors, metrics and audit
// ---------------------------------------------------------------------------------------------

/// The user cancels at the IdP: the callback carries `error=access_denied` and a valid state.
/// Portcullis answers a 403 page naming the error, counts a failure and writes an audit line;
/// a successful login counts a success and writes `login_success`. Error text an attacker
/// might inject is escaped.
#[tokio::test]
async fn idp_error_on_callback_is_a_clear_page_and_counted() {
    let w = world().await;
    let b = Browser::new();
    let form = b.get(&w.url("/private/e")).await;
    assert!(
        form.has_login_form(),
        "expected the IdP login form: {}",
        form.body
    );
    let abort = form
        .body
        .split('"')
        .find(|s| s.starts_with("/interaction/") && s.ends_with("/abort"))
        .expect("the IdP's cancel link");
    let cb = b
        .get_until(&w.idp.url(abort), &w.callback_prefix())
        .await
        .stopped_at
        .expect("the IdP sends the browser back to the callback");
    assert_eq!(query(&cb, "error").as_deref(), Some("access_denied"));
    assert!(query(&cb, "state").is_some());

    let page = b.get_once(cb.as_str()).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(
        page.header("content-type")
            .unwrap_or_default()
            .starts_with("text/html"),
        "{:?}",
        page.header("content-type")
    );
    assert!(page.body.contains("access_denied"), "{}", page.body);
    assert!(!sets_cookie(&page.header_all("set-cookie"), COOKIE));
    assert_eq!(w.failures().await, 1.0);
    assert_eq!(w.successes().await, 0.0);
    let line =
        w.pc.wait_for_stdout_line(|l| l.contains("\"event\":\"login_failure\""))
            .await
            .expect("an audit line for the failed login");
    assert!(line.contains("access_denied"), "{line}");

    // An error "from the IdP" without a login in progress is just an invalid callback.
    let page = b
        .get_once(
            &w.url("/.portcullis/callback?error=access_denied&error_description=forged&state=nope"),
        )
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(!page.body.contains("forged"), "{}", page.body);
    assert_eq!(w.failures().await, 2.0);

    // An error for a login in progress, but without the `iss` this IdP always sends (RFC 9207):
    // not believed to come from the IdP, so its text is not shown.
    let start = b.get_once(&w.url("/.portcullis/start?rd=/private/e")).await;
    let auth = Url::parse(start.location().expect("redirect to the IdP")).unwrap();
    let state = query(&auth, "state").expect("state");
    let page = b
        .get_once(&w.url(&format!(
            "/.portcullis/callback?state={}&error=access_denied&error_description=forged-{}",
            enc(&state),
            "x".repeat(8)
        )))
        .await;
    assert_eq!(page.status, 401, "{}", page.body);
    assert!(page.body.contains("Sign-in failed"), "{}", page.body);
    assert!(!page.body.contains("forged-"), "{}", page.body);
    assert_eq!(w.failures().await, 3.0);

    // Injected error text is shown escaped.
    let start = b.get_once(&w.url("/.portcullis/start?rd=/private/e")).await;
    let auth = Url::parse(start.location().expect("redirect to the IdP")).unwrap();
    let state = query(&auth, "state").expect("state");
    let page = b
        .get_once(&w.url(&format!(
            "/.portcullis/callback?state={}&error={}&error_description={}&iss={}",
            enc(&state),
            enc("<script>alert(1)</script>"),
            enc("<img src=x onerror=alert(2)>"),
            enc(w.idp.issuer())
        )))
        .await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(!page.body.contains("<script>alert(1)"), "{}", page.body);
    assert!(!page.body.contains("<img src=x"), "{}", page.body);
    assert_eq!(w.failures().await, 4.0);

    // A successful login.
    let b = Browser::new();
    login(&w, &b, "/private/s", "alice").await;
    assert_eq!(w.successes().await, 1.0);
    assert_eq!(w.failures().await, 4.0);
    let line =
        w.pc.wait_for_stdout_line(|l| l.contains("\"event\":\"login_success\""))
            .await
            .expect("an audit line for the login");
    assert!(line.contains("\"user\":\"alice\""), "{line}");
}

// ---------------------------------------------------------------------------------------------
// Browser vs API, auth modes, identity headers
// ---------------------------------------------------------------------------------------------

/// `auth: required`: a browser GET/HEAD is sent to log in with `rd` = the original URL; POST,
/// JSON and header-less requests get 401 JSON. `optional`: forwarded, identity only with a
/// session. `none`: forwarded, identity headers stripped even when forged or logged in.
#[tokio::test]
async fn browser_and_api_answers_by_auth_mode() {
    let w = world().await;
    let c = support::http_client();
    let forged: &[(&str, &str)] = &[
        ("x-auth-request-user", "admin"),
        ("X-Auth-Request-Email", "admin@example.com"),
        ("x-auth-request-groups", "admins"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        let mut v = forged.to_vec();
        v.extend_from_slice(extra);
        v
    };

    let r = send(
        &c,
        "GET",
        &w.url("/private/p?x=1&y=%2F"),
        &[("accept", HTML)],
    )
    .await;
    assert_login_redirect(&r, &w.base, &w.url("/private/p?x=1&y=%2F"), "browser GET");
    let r = send(&c, "HEAD", &w.url("/private/h"), &[("accept", HTML)]).await;
    assert_eq!(r.status, 302, "browser HEAD");
    for (method, accept) in [
        ("POST", "application/json"),
        ("POST", "*/*"),
        ("GET", "application/json"),
        ("GET", "*/*"),
        ("PUT", "application/json"),
        ("DELETE", "application/json"),
    ] {
        let r = send(&c, method, &w.url("/private/api"), &[("accept", accept)]).await;
        assert_api_401(&r, &format!("{method} Accept: {accept}"));
    }
    let r = send(&c, "GET", &w.url("/private/api"), &with(&[])).await;
    assert_api_401(&r, "GET without Accept, forged headers");
    assert_eq!(
        w.up.count(),
        0,
        "nothing may reach the upstream unauthenticated"
    );

    // optional, anonymous
    let r = send(&c, "GET", &w.url("/maybe/a"), &with(&[("accept", HTML)])).await;
    assert_eq!(r.status, 200);
    let seen = w.up.last();
    assert_eq!(seen.path(), "/maybe/a");
    for (h, _) in forged {
        assert!(
            !seen.has_header(h),
            "optional anonymous: {h} reached the app"
        );
    }
    // none, anonymous
    let r = send(
        &c,
        "POST",
        &w.url("/open/a"),
        &with(&[("accept", "application/json")]),
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = w.up.last();
    assert_eq!(seen.path(), "/open/a");
    for (h, _) in forged {
        assert!(!seen.has_header(h), "none anonymous: {h} reached the app");
    }

    // Logged in.
    let b = Browser::new();
    let cookie = format!("{COOKIE}={}", login(&w, &b, "/private/in", "bob").await);
    let logged = |extra: &[(&'static str, &'static str)]| {
        let mut v: Vec<(&str, &str)> = with(extra);
        v.push(("cookie", cookie.as_str()));
        v
    };
    for (path, method) in [("/private/x", "GET"), ("/private/y", "POST")] {
        let r = send(
            &c,
            method,
            &w.url(path),
            &logged(&[("accept", "application/json")]),
        )
        .await;
        assert_eq!(r.status, 200, "{method} {path}: {}", r.body);
        let seen = w.up.last();
        assert_eq!(seen.path(), path);
        assert_eq!(seen.header_all("x-auth-request-user"), ["bob"], "{path}");
        assert_eq!(
            seen.header_all("x-auth-request-email"),
            ["bob@example.com"],
            "{path}"
        );
        assert_eq!(
            seen.header_all("x-auth-request-groups"),
            ["staff"],
            "{path}"
        );
    }
    let r = send(&c, "GET", &w.url("/maybe/b"), &logged(&[("accept", HTML)])).await;
    assert_eq!(r.status, 200);
    let seen = w.up.last();
    assert_eq!(
        seen.header_all("x-auth-request-user"),
        ["bob"],
        "optional, logged in"
    );
    assert_eq!(seen.header_all("x-auth-request-groups"), ["staff"]);
    let r = send(&c, "GET", &w.url("/open/b"), &logged(&[("accept", HTML)])).await;
    assert_eq!(r.status, 200);
    let seen = w.up.last();
    assert_eq!(seen.path(), "/open/b");
    for (h, _) in forged {
        assert!(!seen.has_header(h), "none, logged in: {h} reached the app");
    }
    // Repeated and oddly cased forged headers are all replaced.
    let r = send(
        &c,
        "GET",
        &w.url("/private/z"),
        &[
            ("cookie", cookie.as_str()),
            ("X-AUTH-REQUEST-USER", "root"),
            ("x-auth-request-user", "admin"),
            ("accept", "application/json"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(w.up.last().header_all("x-auth-request-user"), ["bob"]);
}

/// SPEC §5: a request that is not a browser navigation (`GET`/`HEAD` with `Accept: text/html`)
/// gets `401` JSON `{"error":"unauthenticated"}`: that includes a browser's form `POST`, whose
/// `Accept` does include `text/html`.
#[tokio::test]
async fn browser_post_without_session_gets_401_json() {
    let w = world().await;
    let c = support::http_client();
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = send(
            &c,
            method,
            &w.url("/private/form"),
            &[
                ("accept", HTML),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
        )
        .await;
        assert_api_401(&r, &format!("{method} with a browser's Accept"));
    }
    assert_eq!(w.up.count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Cookie attributes
// ---------------------------------------------------------------------------------------------

/// Runs a login through its steps and returns (start response, callback response, the browser).
async fn stepwise_login(w: &World, hosts: &[&str], rd: &str, user: &str) -> (Page, Page, Browser) {
    let b = browser_for(hosts);
    let start = b
        .get_once(&w.url(&format!("/.portcullis/start?rd={}", enc(rd))))
        .await;
    assert_eq!(start.status, 302, "start: {}", start.body);
    let to_idp = start.location().expect("redirect to the IdP").to_string();
    let cb = to_callback(w, &b, &to_idp, user).await;
    let callback = b.get_once(cb.as_str()).await;
    (start, callback, b)
}

/// Attribute checks common to every session cookie.
fn assert_cookie_basics(line: &str, what: &str) {
    let a = cookie_attrs(line);
    assert!(
        attr(&a, "httponly").is_some(),
        "{what}: not HttpOnly: {line}"
    );
    assert_eq!(attr(&a, "path"), Some("/"), "{what}: {line}");
    let max_age: i64 = attr(&a, "max-age")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no Max-Age: {line}"));
    assert!(max_age > 0, "{what}: {line}");
}

/// Default cookie settings: HttpOnly, Path=/, SameSite=Lax, Secure, no Domain, and so the
/// `__Host-` prefix (no sibling subdomain can plant such a cookie); the login-state cookie has
/// the same protections and is cleared by the callback.
#[tokio::test]
async fn session_cookie_attributes_default() {
    let w = world_with(Opts {
        cookie: "",
        ..Opts::default()
    })
    .await;
    let (start, callback, b) = stepwise_login(&w, &[], "/private/c", "alice").await;
    let cookie = format!("__Host-{COOKIE}");

    let start_cookies = start.header_all("set-cookie");
    let login_line = start_cookies
        .iter()
        .find(|l| l.starts_with(&format!("{cookie}_login_")))
        .unwrap_or_else(|| panic!("no login-state cookie: {start_cookies:?}"));
    let login_name = login_line.split('=').next().unwrap().to_string();
    assert_cookie_basics(login_line, "login cookie");
    let a = cookie_attrs(login_line);
    assert!(attr(&a, "secure").is_some(), "{login_line}");
    assert!(attr(&a, "domain").is_none(), "{login_line}");
    let max_age: u64 = attr(&a, "max-age").unwrap().parse().unwrap();
    assert!(
        max_age <= 3600,
        "a login cookie should be short-lived: {login_line}"
    );

    assert_eq!(callback.status, 302, "{}", callback.body);
    let lines = callback.header_all("set-cookie");
    let session = set_cookie_named(&lines, &cookie).unwrap_or_else(|| panic!("{lines:?}"));
    assert_cookie_basics(session, "session cookie");
    let a = cookie_attrs(session);
    assert_eq!(attr(&a, "samesite"), Some("Lax"), "{session}");
    assert!(attr(&a, "secure").is_some(), "{session}");
    assert!(attr(&a, "domain").is_none(), "{session}");
    let value = cookie_value(session);
    assert!(
        value.len() < 200,
        "the cookie should hold only an id: {value}"
    );
    // The login cookie is cleared.
    let clear = set_cookie_named(&lines, &login_name)
        .unwrap_or_else(|| panic!("login cookie not cleared: {lines:?}"));
    assert!(cookie_value(clear).is_empty(), "{clear}");
    assert_eq!(attr(&cookie_attrs(clear), "max-age"), Some("0"), "{clear}");
    assert!(!b.has_cookie(&login_name));
    // And the session works.
    let page = b.get(&w.url("/private/c")).await;
    assert_eq!(page.status, 200);
    assert_eq!(w.up.last().header("x-auth-request-user"), Some("alice"));
}

/// `same_site: strict`, `secure: false` and another name: SameSite=Strict, no Secure; the
/// login-state cookie stays Lax (it must survive the IdP's cross-site redirect) and the login
/// still completes.
#[tokio::test]
async fn session_cookie_attributes_strict_insecure() {
    let w = world_with(Opts {
        cookie: "name: sid, same_site: strict, secure: false",
        ..Opts::default()
    })
    .await;
    let (start, callback, b) = stepwise_login(&w, &[], "/private/s", "alice").await;
    let login_line = start
        .header_all("set-cookie")
        .into_iter()
        .find(|l| l.starts_with("sid_login_"))
        .expect("login-state cookie")
        .to_string();
    let a = cookie_attrs(&login_line);
    assert_eq!(attr(&a, "samesite"), Some("Lax"), "{login_line}");
    assert!(attr(&a, "httponly").is_some(), "{login_line}");

    assert!(
        callback.status == 200 || callback.status == 302,
        "{}",
        callback.body
    );
    let lines = callback.header_all("set-cookie");
    let session = set_cookie_named(&lines, "sid").unwrap_or_else(|| panic!("{lines:?}"));
    assert_cookie_basics(session, "session cookie");
    let a = cookie_attrs(session);
    assert_eq!(attr(&a, "samesite"), Some("Strict"), "{session}");
    assert!(attr(&a, "secure").is_none(), "{session}");
    assert!(attr(&a, "domain").is_none(), "{session}");
    assert!(set_cookie_named(&lines, COOKIE).is_none(), "{lines:?}");
    let page = b.get(&w.url("/private/s")).await;
    assert_eq!(page.status, 200);
    assert_eq!(w.up.last().header("x-auth-request-user"), Some("alice"));
}

/// `domain` configured: the cookie carries it and hosts under it share the session without a
/// hand-over; logout clears both the domain and a host-only cookie.
#[tokio::test]
async fn session_cookie_with_domain_is_shared() {
    let w = world_with(Opts {
        public_host: "auth.example.test",
        cookie: "domain: .example.test, secure: false",
        routes: "  - { host: app.example.test, path: /, upstream: \"@UP@\", auth: required }\n",
        ..Opts::default()
    })
    .await;
    let port = w.pc.http_port();
    let app = format!("http://app.example.test:{port}/dash?x=1");
    let (_, callback, b) = stepwise_login(
        &w,
        &["auth.example.test", "app.example.test"],
        &app,
        "alice",
    )
    .await;
    assert_eq!(callback.status, 302, "{}", callback.body);
    assert_eq!(
        callback.location(),
        Some(app.as_str()),
        "no hand-over needed"
    );
    let lines = callback.header_all("set-cookie");
    let session = set_cookie_named(&lines, COOKIE).unwrap_or_else(|| panic!("{lines:?}"));
    assert_cookie_basics(session, "session cookie");
    let a = cookie_attrs(session);
    assert_eq!(
        attr(&a, "domain").map(|d| d.trim_start_matches('.')),
        Some("example.test"),
        "{session}"
    );
    let page = b.get(&app).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(w.up.last().header("x-auth-request-user"), Some("alice"));

    let out = b
        .get_once(&format!(
            "http://app.example.test:{port}/.portcullis/logout"
        ))
        .await;
    let lines = out.header_all("set-cookie");
    let clears: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with(&format!("{COOKIE}=")) && cookie_value(l).is_empty())
        .collect();
    assert!(
        clears
            .iter()
            .any(|l| attr(&cookie_attrs(l), "domain").is_some())
            && clears
                .iter()
                .any(|l| attr(&cookie_attrs(l), "domain").is_none()),
        "logout should clear the domain and the host-only cookie: {lines:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Logout
// ---------------------------------------------------------------------------------------------

/// Logout deletes the session (the old cookie is worthless afterwards), clears the cookie,
/// goes to the IdP's end_session endpoint with `id_token_hint` and `post_logout_redirect_uri`,
/// comes back to `rd`, and writes a `logout` audit line.
#[tokio::test]
async fn logout_ends_the_session_everywhere() {
    let w = world().await;
    let b = Browser::new();
    let value = login(&w, &b, "/private/in", "alice").await;
    let page = b.get(&w.url("/maybe/in")).await;
    assert_eq!(page.status, 200);
    assert_eq!(w.up.last().header("x-auth-request-user"), Some("alice"));

    let out = b.get_once(&w.url("/.portcullis/logout?rd=/bye")).await;
    assert_eq!(out.status, 302, "{}", out.body);
    let loc = Url::parse(out.location().unwrap()).unwrap();
    assert_eq!(loc.origin().ascii_serialization(), w.idp.issuer(), "{loc}");
    assert_eq!(loc.path(), "/session/end", "{loc}");
    assert_eq!(
        query(&loc, "post_logout_redirect_uri").as_deref(),
        Some(w.url("/bye").as_str())
    );
    let hint = query(&loc, "id_token_hint").expect("id_token_hint");
    let payload = hint.split('.').nth(1).expect("a JWT");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url payload"),
    )
    .expect("JSON claims");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], "portcullis");
    let lines = out.header_all("set-cookie");
    let clear = set_cookie_named(&lines, COOKIE).unwrap_or_else(|| panic!("{lines:?}"));
    assert!(cookie_value(clear).is_empty(), "{clear}");
    assert!(b.cookie_for(&w.base, COOKIE).is_none());

    // Through the IdP and back to rd.
    let page = b.get(loc.as_str()).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.url.path(), "/bye", "chain {:#?}", page.chain);
    assert_eq!(w.idp.wait_for_events("LOGOUT", &[], 1).await, 1);

    // The old cookie is worthless; the app gets no identity.
    assert_no_session(&w, &format!("{COOKIE}={value}"), "after logout").await;
    let page = b.get(&w.url("/maybe/out")).await;
    assert_eq!(page.status, 200);
    assert!(!w.up.last().has_header("x-auth-request-user"));
    let line =
        w.pc.wait_for_stdout_line(|l| l.contains("\"event\":\"logout\""))
            .await
            .expect("a logout audit line");
    assert!(line.contains("\"user\":\"alice\""), "{line}");
    assert!(!line.contains(&value), "{line}");

    // Logging out again, without a session, is harmless.
    let again = b.get_once(&w.url("/.portcullis/logout?rd=/bye")).await;
    assert!(
        again.status == 200 || again.status == 302,
        "{}",
        again.status
    );
    if let Some(l) = again.location() {
        assert_eq!(l, w.url("/bye"));
    }
}

// ---------------------------------------------------------------------------------------------
// Several hosts
// ---------------------------------------------------------------------------------------------

const TWO_HOSTS: &str = "  - { host: app.test, path: /, upstream: \"@UP@\", auth: required }
  - { host: other.test, path: /, upstream: \"@UP@\", auth: required }
";

/// A route host outside the cookie domain gets its session through a one-time
/// `/.portcullis/session?code=` hand-over that sets a host-only cookie; the code works once,
/// only on the host it was issued for.
#[tokio::test]
async fn handover_to_another_host_is_single_use_and_host_bound() {
    let w = world_with(Opts {
        public_host: "app.test",
        routes: TWO_HOSTS,
        ..Opts::default()
    })
    .await;
    let port = w.pc.http_port();
    let hosts = ["app.test", "other.test"];
    let other = format!("http://other.test:{port}");
    let app = format!("http://app.test:{port}");
    let target = format!("{other}/page?x=1");
    let handover_prefix = format!("{other}/.portcullis/session");

    // Not logged in on other.test: sent to log in on the public host.
    let c = client_for(&hosts);
    let r = send(&c, "GET", &target, &[("accept", HTML)]).await;
    assert_login_redirect(&r, &app, &target, "other.test");

    let b = browser_for(&hosts);
    let h = login_until(&b, &target, "alice", &handover_prefix).await;
    assert_eq!(query(&h, "rd").as_deref(), Some(target.as_str()));
    let code = query(&h, "code").expect("a hand-over code");
    assert!(code.len() >= 32, "code {code:?}");

    let page = b.get_once(h.as_str()).await;
    assert_eq!(page.status, 302, "{}", page.body);
    assert_eq!(page.location(), Some(target.as_str()));
    let lines = page.header_all("set-cookie");
    let cookie = set_cookie_named(&lines, COOKIE).unwrap_or_else(|| panic!("{lines:?}"));
    assert!(!cookie_value(cookie).is_empty());
    assert!(
        attr(&cookie_attrs(cookie), "domain").is_none(),
        "host-only: {cookie}"
    );
    assert_cookie_basics(cookie, "hand-over cookie");
    let page = b.get(&target).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let seen = w.up.last();
    assert_eq!(seen.header("x-auth-request-user"), Some("alice"));

    // Single use: again in this browser, and in another one.
    let again = b.get_once(h.as_str()).await;
    assert_eq!(again.status, 400, "{}", again.body);
    assert!(!sets_cookie(&again.header_all("set-cookie"), COOKIE));
    let thief = browser_for(&hosts);
    let stolen = thief.get_once(h.as_str()).await;
    assert_eq!(stolen.status, 400, "{}", stolen.body);
    assert!(!sets_cookie(&stolen.header_all("set-cookie"), COOKIE));
    let r = send(&c, "GET", &target, &[("accept", "application/json")]).await;
    assert_api_401(&r, "no session on other.test without a cookie");

    // A fresh code presented on a host it was not issued for.
    let b2 = browser_for(&hosts);
    let h2 = login_until(&b2, &target, "bob", &handover_prefix).await;
    let code2 = query(&h2, "code").unwrap();
    let thief = browser_for(&hosts);
    for (what, url) in [
        (
            "rd on other.test",
            format!(
                "{app}/.portcullis/session?code={}&rd={}",
                enc(&code2),
                enc(&target)
            ),
        ),
        (
            "rd on app.test",
            format!(
                "{app}/.portcullis/session?code={}&rd={}",
                enc(&code2),
                enc(&format!("{app}/x"))
            ),
        ),
    ] {
        let page = thief.get_once(&url).await;
        assert_eq!(page.status, 400, "{what}: {}", page.body);
        assert!(
            !sets_cookie(&page.header_all("set-cookie"), COOKIE),
            "{what}: {:?}",
            page.header_all("set-cookie")
        );
    }
    let me = thief.get(&format!("{app}/.portcullis/userinfo")).await;
    assert_eq!(me.status, 401, "{}", me.body);
    // Hostile return URLs on the other host's start are refused there, a good one is passed
    // on to the public host's start.
    let q = support::free_port();
    for rd in [
        "//evil.com".to_string(),
        "/\\evil.com".to_string(),
        "http://evil.com/".to_string(),
        format!("http://other.test.evil.com:{port}/"),
        format!("http://other.test:{q}/"),
        format!("http://app.test:{port}@evil.com/"),
    ] {
        let r = send(
            &c,
            "GET",
            &format!("{other}/.portcullis/start?rd={}", enc(&rd)),
            &[("accept", HTML)],
        )
        .await;
        assert_eq!(
            r.status,
            400,
            "rd={rd:?} on other.test: {:?}",
            r.header("location")
        );
    }
    let r = send(
        &c,
        "GET",
        &format!("{other}/.portcullis/start?rd=/x"),
        &[("accept", HTML)],
    )
    .await;
    assert_eq!(r.status, 302);
    let loc = Url::parse(r.header("location").unwrap()).unwrap();
    assert_eq!(loc.origin().ascii_serialization(), app);
    assert_eq!(
        query(&loc, "rd").as_deref(),
        Some(format!("{other}/x").as_str())
    );
    // A made-up code.
    let page = thief
        .get_once(&format!(
            "{other}/.portcullis/session?code={}&rd={}",
            "A".repeat(43),
            enc(&target)
        ))
        .await;
    assert_eq!(page.status, 400);
}

// ---------------------------------------------------------------------------------------------
// userinfo
// ---------------------------------------------------------------------------------------------

/// `/.portcullis/userinfo`: 401 JSON without a session (browser or not), 200 JSON with the
/// identity and no token when logged in.
#[tokio::test]
async fn userinfo_is_json_or_401() {
    let w = world().await;
    let c = support::http_client();
    for accept in [HTML, "application/json"] {
        let r = send(
            &c,
            "GET",
            &w.url("/.portcullis/userinfo"),
            &[("accept", accept)],
        )
        .await;
        assert_eq!(r.status, 401, "{accept}");
        assert!(r
            .header("content-type")
            .unwrap_or_default()
            .starts_with("application/json"));
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
        assert_eq!(v["error"], "unauthenticated");
    }
    let b = Browser::new();
    login(&w, &b, "/private/u", "bob").await;
    let me = b.get(&w.url("/.portcullis/userinfo")).await;
    assert_eq!(me.status, 200);
    assert!(me
        .header("content-type")
        .unwrap_or_default()
        .starts_with("application/json"));
    let v: serde_json::Value = serde_json::from_str(&me.body).expect("JSON");
    assert_eq!(v["user"], "bob");
    assert_eq!(v["email"], "bob@example.com");
    assert_eq!(v["groups"], serde_json::json!(["staff"]));
    for secret in ["access_token", "refresh_token", "id_token", "sid"] {
        assert!(
            v.get(secret).is_none(),
            "userinfo shows {secret}: {}",
            me.body
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets in logs
// ---------------------------------------------------------------------------------------------

/// After logins (one through the cross-host hand-over), failed and replayed callbacks, and a
/// logout, neither stdout nor stderr of Portcullis holds a cookie value, code, state, token or
/// secret.
#[tokio::test]
async fn secrets_never_appear_in_logs() {
    secrets_stay_out_of_logs("").await;
}

/// The same at `level: debug`, which an operator turns on to diagnose a login problem.
#[tokio::test]
async fn secrets_never_appear_in_debug_logs() {
    secrets_stay_out_of_logs("logging:\n  level: debug\n").await;
}

async fn secrets_stay_out_of_logs(logging: &'static str) {
    let w = world_with(Opts {
        public_host: "app.test",
        routes: TWO_HOSTS,
        extra: logging,
        ..Opts::default()
    })
    .await;
    w.idp.capture_tokens().await;
    let port = w.pc.http_port();
    let hosts = ["app.test", "other.test"];
    let app = format!("http://app.test:{port}");
    let other = format!("http://other.test:{port}");
    let mut secrets: Vec<(String, String)> = vec![
        ("session secret".into(), SECRET.into()),
        ("client secret".into(), CLIENT_SECRET.into()),
    ];

    // A login on app.test, step by step.
    let (start, callback, b) = stepwise_login(&w, &hosts, &format!("{app}/a"), "alice").await;
    for l in start.header_all("set-cookie") {
        if !cookie_value(l).is_empty() {
            secrets.push(("login cookie".into(), cookie_value(l).to_string()));
        }
    }
    let to_idp = Url::parse(start.location().unwrap()).unwrap();
    secrets.push(("state".into(), query(&to_idp, "state").unwrap()));
    secrets.push(("nonce".into(), query(&to_idp, "nonce").unwrap()));
    let cb_url = callback.url.clone();
    secrets.push(("code".into(), query(&cb_url, "code").unwrap()));
    let session = b.cookie_for(&app, COOKIE).expect("session cookie");
    secrets.push(("session cookie".into(), session.clone()));
    // Replay, bogus code with a live state, and a few requests.
    let _ = b.get_once(cb_url.as_str()).await;
    let s2 = b.get_once(&format!("{app}/.portcullis/start?rd=/a")).await;
    let st2 = query(&Url::parse(s2.location().unwrap()).unwrap(), "state").unwrap();
    let bogus = "bogus-code-value-9f8e7d6c5b4a39281706";
    secrets.push(("bogus code".into(), bogus.into()));
    let page = b
        .get_once(&format!(
            "{app}/.portcullis/callback?code={bogus}&state={}&iss={}",
            enc(&st2),
            enc(w.idp.issuer())
        ))
        .await;
    assert!((400..500).contains(&page.status), "{}", page.body);
    assert_eq!(b.get(&format!("{app}/a")).await.status, 200);

    // A second login through the hand-over to other.test.
    let b2 = browser_for(&hosts);
    let h = login_until(
        &b2,
        &format!("{other}/page"),
        "bob",
        &format!("{other}/.portcullis/session"),
    )
    .await;
    secrets.push(("hand-over code".into(), query(&h, "code").unwrap()));
    let page = b2.get(h.as_str()).await;
    assert_eq!(page.status, 200, "{}", page.body);
    for host in [&app, &other] {
        if let Some(v) = b2.cookie_for(host, COOKIE) {
            secrets.push((format!("session cookie on {host}"), v));
        }
    }

    // Logout, through the IdP.
    let out = b
        .get_once(&format!("{app}/.portcullis/logout?rd=/bye"))
        .await;
    assert_eq!(out.status, 302);
    let _ = b.get(out.location().unwrap()).await;

    let tokens = w.idp.issued_tokens().await;
    assert!(tokens.len() >= 5, "tokens issued: {}", tokens.len());
    for t in tokens {
        if t.matches('.').count() == 2 {
            // A JWT: its header is the same for every token, so look for the rest.
            let mut parts = t.split('.').skip(1);
            secrets.push(("ID token payload".into(), parts.next().unwrap().into()));
            secrets.push(("ID token signature".into(), parts.next().unwrap().into()));
        } else {
            secrets.push(("token".into(), t));
        }
    }

    // Wait for the last lines to reach the files: one more request, whose own access line
    // must appear. Access lines and the other log lines go out through one ordered queue, so
    // once that line is in the file, every line before it is too (audit lines are written
    // before the answer that follows them).
    let last = send(
        &client_for(&hosts),
        "GET",
        &format!("{app}/logs-flushed"),
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(last.status, 401, "{}", last.body);
    w.pc.wait_for_stdout_line(|l| {
        l.contains("\"target\":\"access\"") && l.contains("\"path\":\"/logs-flushed\"")
    })
    .await
    .unwrap_or_else(|| panic!("no access line for the last request:\n{}", w.pc.stdout()));
    let logs = format!("{}\n{}", w.pc.stdout(), w.pc.stderr());
    assert!(
        logs.contains("login_success"),
        "audit lines expected in the logs"
    );
    for (what, value) in &secrets {
        assert!(
            value.len() >= 16,
            "{what}: {value:?} too short to search for"
        );
        let needle = value.as_str();
        let decoded: String = url::form_urlencoded::parse(format!("x={needle}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        for n in [needle, decoded.as_str(), &needle[..needle.len().min(24)]] {
            if let Some(at) = logs.find(n) {
                let line = logs[..at].rsplit('\n').next().unwrap_or("").to_string()
                    + logs[at..].split('\n').next().unwrap_or("");
                panic!("{what} appears in the logs:\n{line}");
            }
        }
    }
}
