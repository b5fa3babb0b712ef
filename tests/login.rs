//! Login end to end: a real OpenID provider (`oidc-provider`), the real server, a real
//! upstream, and a browser-like client that follows redirects and posts the IdP's forms.

mod support;

use std::time::Duration;
use support::idp::{Browser, Idp, IdpClient, IdpConfig, PASSWORD};
use support::{Portcullis, Setup, Upstream};

/// One test's world: an IdP that knows this Portcullis, the upstream, and Portcullis.
struct World {
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

/// Starts everything; `session` and `routes` are YAML blocks (placeholders `@UP@` for the
/// upstream URL and `@IDP@` for the issuer).
fn world_with(
    idp_config: impl FnOnce(IdpConfig) -> IdpConfig,
    session: &str,
    routes: &str,
) -> World {
    let setup = Setup::new();
    let base = format!("http://127.0.0.1:{}", setup.http);
    let idp = Idp::start(idp_config(
        IdpConfig::default().client(
            IdpClient::new(
                "portcullis",
                "portcullis-secret",
                &format!("{base}/.portcullis/callback"),
            )
            .post_logout_redirect_uri(&format!("{base}/bye")),
        ),
    ));
    let up = Upstream::start();
    let yaml = format!(
        "server:\n  listen: [\"127.0.0.1:@HTTP@\"]\n  threads: 1\n  public_url: {base}\nadmin:\n  listen: 127.0.0.1:@ADMIN@\n\
         session:\n  secrets: [\"{SECRET}\"]\n  cookie: {{ secure: false }}\n{session}\
         providers:\n  - id: test\n    type: oidc\n    issuer: {issuer}\n    client_id: portcullis\n    client_secret: portcullis-secret\n    scopes: [openid, email, profile, groups]\n\
         routes:\n{routes}",
        issuer = idp.issuer(),
    )
    .replace("@UP@", &up.url())
    .replace("@IDP@", idp.issuer());
    let pc = setup.start(&yaml);
    World { idp, up, pc }
}

fn world() -> World {
    world_with(
        |c| c,
        "",
        "  - { path: /, upstream: \"@UP@\", auth: required }\n  - { path: /public, upstream: \"@UP@\", auth: none }\n  - { path: /maybe, upstream: \"@UP@\", auth: optional }\n",
    )
}

/// Waits until the provider has been discovered (readiness).
async fn ready(w: &World) {
    let url = format!("http://127.0.0.1:{}/readyz", w.pc.admin_port());
    support::eventually(Duration::from_secs(10), "readyz", || {
        let url = url.clone();
        async move {
            let r = support::http_client().get(&url).send().await.ok()?;
            (r.status() == 200).then_some(())
        }
    })
    .await;
}

/// Waits until Portcullis has applied `count` reloads of its file.
/// A second session secret, for rotations.
const NEW: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

/// Puts `new` before the first session secret (still listed) and waits for the reload;
/// returns the config now in use.
async fn rotate_in(w: &World, new: &str) -> String {
    let yaml = w.pc.yaml().replace(
        &format!("[\"{SECRET}\"]"),
        &format!("[\"{new}\", \"{SECRET}\"]"),
    );
    assert_ne!(yaml, w.pc.yaml(), "the secret must appear in the config");
    w.pc.rewrite_config(&yaml);
    reloaded(w, 1).await;
    yaml
}

async fn reloaded(w: &World, count: u32) {
    support::eventually(Duration::from_secs(5), "reload", || {
        let pc = &w.pc;
        async move {
            (pc.metric("portcullis_config_reloads_total", &[("result", "success")])
                .await
                >= f64::from(count))
            .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn full_login_reaches_the_app_with_identity_headers() {
    let w = world();
    ready(&w).await;
    let browser = Browser::new();
    let page = browser
        .login(&format!("{}/private?x=1", w.base()), "alice", PASSWORD)
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let seen = w.up.received();
    let last = seen.last().expect("the upstream saw the request");
    assert_eq!(last.path(), "/private");
    assert_eq!(last.header("x-auth-request-user"), Some("alice"));
    assert_eq!(
        last.header("x-auth-request-email"),
        Some("alice@example.com")
    );
    assert_eq!(last.header("x-auth-request-groups"), Some("staff,admins"));
    // The app never sees Portcullis' cookies.
    assert!(
        last.header("cookie")
            .is_none_or(|c| !c.contains("_portcullis")),
        "{:?}",
        last.header("cookie")
    );

    let me = browser
        .get(&format!("{}/.portcullis/userinfo", w.base()))
        .await;
    assert_eq!(me.status, 200);
    let v: serde_json::Value = serde_json::from_str(&me.body).unwrap();
    assert_eq!(v["user"], "alice");
    assert_eq!(v["groups"], serde_json::json!(["staff", "admins"]));
}

/// A reload that rebuilds the login services (here: a new session secret) keeps what the
/// provider's discovery learnt: a login starts at once, even while the IdP cannot be reached
/// (its own discovery failing meanwhile), instead of a 502 until the new services have
/// discovered it again.
#[tokio::test]
async fn a_reload_that_rebuilds_the_services_keeps_the_discovered_provider() {
    let mut w = world();
    ready(&w).await;
    let start = |w: &World| {
        let url = format!("{}/private", w.base());
        async move {
            support::http_client()
                .get(url)
                .header("accept", "text/html")
                .send()
                .await
                .unwrap()
        }
    };
    // Logged out, a page sends the browser to the login start, which sends it to the IdP.
    let to_start = start(&w).await;
    assert_eq!(to_start.status(), 302);
    let start_url = to_start.headers()["location"].to_str().unwrap().to_string();
    let start_url = if start_url.starts_with('/') {
        format!("{}{start_url}", w.base())
    } else {
        start_url
    };
    let to_idp = |url: String| async move {
        let r = support::http_client().get(url).send().await.unwrap();
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (status, location)
    };
    let (status, location) = to_idp(start_url.clone()).await;
    assert_eq!(status, 302);
    let issuer = w.idp.issuer().to_string();
    assert!(location.starts_with(&issuer), "{location}");

    // The IdP goes away; the secrets change, so the services (and providers) are rebuilt.
    w.idp.kill();
    rotate_in(&w, NEW).await;
    let (status, location) = to_idp(start_url).await;
    assert_eq!(status, 302, "a login must start right after the reload");
    assert!(location.starts_with(&issuer), "{location}");
}

#[path = "support/redis.rs"]
mod redis_support;

/// Rotating `session.secrets` (new key first, old key kept) by hot reload logs nobody out:
/// the old cookie and the record sealed under the old key still open, and new logins are
/// sealed under the new key. Dropping the old key then ends the old sessions (counted as
/// invalid cookies) while those sealed under the new key live on, and logging in works: a new
/// browser, and the browser whose cookie was refused, each get a working session.
#[tokio::test]
async fn secret_rotation_by_reload_keeps_sessions() {
    let redis = redis_support::RedisServer::start();
    let session = format!("  store: redis\n  redis: {{ url: \"{}\" }}\n", redis.url());
    let routes = "  - { path: /, upstream: \"@UP@\", auth: required }\n";
    let w = world_with(|c| c, &session, routes);
    ready(&w).await;
    let browser = Browser::new();
    let page = browser
        .login(&format!("{}/before", w.base()), "alice", PASSWORD)
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let api = |cookie: String| {
        let url = format!("{}/api", w.base());
        async move {
            support::http_client()
                .get(url)
                .header("cookie", cookie)
                .header("accept", "application/json")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let cookie = browser
        .cookie_for(&w.base(), "_portcullis")
        .expect("a session cookie after login");
    let cookie = format!("_portcullis={cookie}");
    assert_eq!(api(cookie.clone()).await, 200);

    // New secret first, the old one still listed: everyone stays logged in.
    let yaml = rotate_in(&w, NEW).await;
    assert_eq!(
        api(cookie.clone()).await,
        200,
        "the old cookie must survive the rotation"
    );
    // A login during the rotation: sealed under the new key (checked once the old is gone).
    let during = Browser::new();
    let page = during
        .login(&format!("{}/during", w.base()), "bob", PASSWORD)
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let during_cookie = format!(
        "_portcullis={}",
        during
            .cookie_for(&w.base(), "_portcullis")
            .expect("a session cookie after the login during the rotation")
    );
    assert_ne!(during_cookie, cookie);
    assert_eq!(api(during_cookie.clone()).await, 200);

    // The old key removed: its cookies no longer open, and are counted as invalid.
    let before =
        w.pc.metric("portcullis_invalid_session_cookies_total", &[])
            .await;
    w.pc.rewrite_config(&yaml.replace(&format!(", \"{SECRET}\""), ""));
    reloaded(&w, 2).await;
    assert_eq!(
        api(cookie.clone()).await,
        401,
        "a cookie under a removed key is no session"
    );
    let after =
        w.pc.metric("portcullis_invalid_session_cookies_total", &[])
            .await;
    assert!(
        after > before,
        "invalid cookies are counted ({before} -> {after})"
    );

    // The session begun during the rotation was sealed under the key that stays.
    assert_eq!(
        api(during_cookie.clone()).await,
        200,
        "a cookie sealed under the new key survives dropping the old one"
    );
    assert_eq!(w.up.last().header("x-auth-request-user"), Some("bob"));

    // Logging in works under the new key alone: in a new browser ...
    let fresh = Browser::new();
    let page = fresh
        .login(&format!("{}/after", w.base()), "carol", PASSWORD)
        .await;
    assert_eq!(
        page.status, 200,
        "a login after the rotation: {}",
        page.body
    );
    assert_eq!(page.url.path(), "/after");
    assert_eq!(w.up.last().header("x-auth-request-user"), Some("carol"));
    let fresh_cookie = format!(
        "_portcullis={}",
        fresh
            .cookie_for(&w.base(), "_portcullis")
            .expect("a session cookie after the login")
    );
    assert_eq!(api(fresh_cookie.clone()).await, 200);
    assert_eq!(w.up.last().header("x-auth-request-user"), Some("carol"));

    // ... and in the browser whose cookie was refused: it is sent to log in again (its IdP
    // session still alive), gets a new cookie that opens, and the old one stays refused.
    let page = browser
        .login(&format!("{}/again", w.base()), "alice", PASSWORD)
        .await;
    assert_eq!(page.status, 200, "alice logs in again: {}", page.body);
    assert_eq!(page.url.path(), "/again");
    assert_eq!(w.up.last().header("x-auth-request-user"), Some("alice"));
    let renewed = format!(
        "_portcullis={}",
        browser
            .cookie_for(&w.base(), "_portcullis")
            .expect("a new session cookie")
    );
    assert_ne!(renewed, cookie, "a new cookie after logging in again");
    assert_eq!(api(renewed).await, 200);
    assert_eq!(
        api(cookie.clone()).await,
        401,
        "the cookie under the removed key is still no session"
    );
}
