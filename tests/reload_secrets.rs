//! Rotating a secret held in a `*_file` file: changing only what the file holds (its path and
//! the config stay the same) and reloading makes Portcullis use the new value, with real parts
//! only: the binary, a private `redis-server` with `requirepass`, the test OpenID provider and
//! a recording upstream. The secrets never appear in Portcullis' logs, even at trace level.
//!
//! `headers.add_file` is covered in `tests/reload.rs`
//! (`sighup_reloads_even_when_only_a_referenced_file_changed`).

mod support;

#[path = "support/redis.rs"]
mod redis_support;

use redis_support::RedisServer;
use std::time::Duration;
use support::idp::{Browser, Idp, IdpClient, IdpConfig, PASSWORD};
use support::{eventually, raw_get, Portcullis, Setup, Upstream};

const SECRET: &str = "cmVsb2FkLXNlY3JldHMtdGVzdHMtMzItYnl0ZXMhISE=";
const WITHIN: Duration = Duration::from_secs(10);

/// A connection to `redis` authenticated with `password`.
fn redis_as(redis: &RedisServer, password: &str) -> redis::Connection {
    redis::Client::open(format!("redis://:{password}@127.0.0.1:{}/0", redis.port))
        .expect("client")
        .get_connection()
        .expect("connection to the test redis")
}

fn keys(conn: &mut redis::Connection) -> usize {
    redis::cmd("DBSIZE")
        .query::<usize>(conn)
        .expect("DBSIZE on the test redis")
}

async fn readyz(pc: &Portcullis) -> u16 {
    raw_get(pc.admin_port(), "127.0.0.1", "/readyz", &[])
        .await
        .status
}

/// Waits for the `n`-th successful reload.
async fn reloaded(pc: &Portcullis, n: f64) {
    eventually(WITHIN, "the reload", || async {
        (pc.metric("portcullis_config_reloads_total", &[("result", "success")])
            .await
            >= n)
            .then_some(())
    })
    .await;
}

/// The config of one test: `session` and `provider` are lines of those sections. Logs at
/// `trace`, so that the check that no secret is logged covers every line anyone writes.
fn config(base: &str, idp: &Idp, up: &Upstream, session: &str, provider: &str) -> String {
    format!(
        "server:\n  listen: [\"127.0.0.1:@HTTP@\"]\n  threads: 1\n  public_url: {base}\n\
         admin:\n  listen: 127.0.0.1:@ADMIN@\nlogging: {{ level: trace }}\n\
         session:\n  secrets: [\"{SECRET}\"]\n  cookie: {{ secure: false }}\n{session}\
         providers:\n  - id: test\n    type: oidc\n    issuer: {issuer}\n    client_id: portcullis\n{provider}    scopes: [openid, email, profile, groups]\n\
         routes:\n  - {{ name: app, path: /, upstream: \"{up}\", auth: required }}\n",
        issuer = idp.issuer(),
        up = up.url(),
    )
}

fn idp_for(setup: &Setup, client_secret: &str) -> Idp {
    Idp::start(IdpConfig::default().client(IdpClient::new(
        "portcullis",
        client_secret,
        &format!("http://127.0.0.1:{}/.portcullis/callback", setup.http),
    )))
}

/// Logs in as alice with a fresh browser; the page where the login ends.
async fn login(pc: &Portcullis) -> (Browser, support::idp::Page) {
    let browser = Browser::new();
    let app = format!("http://127.0.0.1:{}/app", pc.http_port());
    let page = browser.login(&app, "alice", PASSWORD).await;
    (browser, page)
}

/// Checks that none of `secrets` is in the logs (written at `trace` level, every crate's).
fn assert_not_logged(pc: &Portcullis, secrets: &[&str]) {
    let logs = format!("{}\n{}", pc.stdout(), pc.stderr());
    assert!(logs.contains("TRACE"), "the logs are not at trace level");
    for s in secrets {
        assert!(!logs.contains(s), "{s} is in the logs:\n{logs}");
    }
}

#[tokio::test]
async fn a_rotated_redis_password_in_url_file_is_used_after_a_reload() {
    let redis = RedisServer::start();
    let mut admin = redis.raw();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("old-redis-pass")
        .exec(&mut admin)
        .expect("setting the first password");

    let setup = Setup::new();
    let base = format!("http://127.0.0.1:{}", setup.http);
    let idp = idp_for(&setup, "portcullis-secret");
    let up = Upstream::start();
    // In a subdirectory, where the config watcher does not look.
    let url = |pass: &str| format!("redis://:{pass}@127.0.0.1:{}/0\n", redis.port);
    setup.write("secrets/redis-url", url("old-redis-pass"));
    let pc = setup.start(&config(
        &base,
        &idp,
        &up,
        "  store: redis\n  redis: { url_file: secrets/redis-url }\n",
        "    client_secret: portcullis-secret\n",
    ));
    pc.ready().await;
    let (browser, page) = login(&pc).await;
    assert_eq!(page.status, 200, "login: {} {}", page.url, page.body);
    assert_eq!(up.last().header("x-auth-request-user"), Some("alice"));
    let cookie = browser
        .cookie_for(&base, "_portcullis")
        .expect("a session cookie");
    let cookie = format!("_portcullis={cookie}");
    let mut redis_conn = redis_as(&redis, "old-redis-pass");
    let stored = keys(&mut redis_conn);
    assert!(stored > 0, "the session is in Redis");

    // Rotate the password in Redis and drop every connection made with the old one.
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("new-redis-pass")
        .exec(&mut redis_conn)
        .expect("rotating the password");
    for kind in ["normal", "pubsub"] {
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg(kind)
            .exec(&mut redis_conn)
            .expect("dropping Portcullis' connections");
    }
    // With the old password the store cannot be reached: not ready.
    eventually(WITHIN, "readyz to fail with the old password", || async {
        (readyz(&pc).await == 503).then_some(())
    })
    .await;

    // Only what the file holds changes; SIGHUP reloads.
    std::fs::write(pc.dir().join("secrets/redis-url"), url("new-redis-pass"))
        .expect("rotating the URL file");
    pc.sighup();
    reloaded(&pc, 1.0).await;
    eventually(WITHIN, "readyz with the new password", || async {
        (readyz(&pc).await == 200).then_some(())
    })
    .await;

    // The session made before the rotation is read from Redis with the new password...
    let mut redis_conn = redis_as(&redis, "new-redis-pass");
    let app = format!("{base}/app");
    let r = support::http_client()
        .get(&app)
        .header("cookie", &cookie)
        .header("accept", "application/json")
        .send()
        .await
        .expect("request with the old session");
    assert_eq!(r.status(), 200, "the session survives the rotation");
    assert_eq!(up.last().header("x-auth-request-user"), Some("alice"));
    // ...and a new login is stored there.
    let (_, page) = login(&pc).await;
    assert_eq!(page.status, 200, "login: {} {}", page.url, page.body);
    assert!(
        keys(&mut redis_conn) > stored,
        "the new session is in Redis"
    );

    assert_not_logged(&pc, &["old-redis-pass", "new-redis-pass"]);
}

#[tokio::test]
async fn a_rotated_client_secret_file_is_used_after_a_reload() {
    let setup = Setup::new();
    let base = format!("http://127.0.0.1:{}", setup.http);
    let idp = idp_for(&setup, "the-right-client-secret");
    let up = Upstream::start();
    setup.write("secrets/client-secret", "a-stale-client-secret\n");
    let pc = setup.start(&config(
        &base,
        &idp,
        &up,
        "",
        "    client_secret_file: secrets/client-secret\n",
    ));
    pc.ready().await;
    // The IdP refuses the stale secret at the code exchange: no login.
    let (_, page) = login(&pc).await;
    assert_ne!(page.status, 200, "login with a stale secret: {}", page.url);
    assert_eq!(up.count(), 0, "nothing reached the app");

    std::fs::write(
        pc.dir().join("secrets/client-secret"),
        "the-right-client-secret\n",
    )
    .expect("rotating the client secret file");
    pc.sighup();
    reloaded(&pc, 1.0).await;
    pc.ready().await;
    let (_, page) = login(&pc).await;
    assert_eq!(page.status, 200, "login: {} {}", page.url, page.body);
    assert_eq!(up.last().header("x-auth-request-user"), Some("alice"));

    assert_not_logged(&pc, &["a-stale-client-secret", "the-right-client-secret"]);
}

#[tokio::test]
async fn a_rotated_secrets_file_is_used_after_a_reload() {
    // Sessions live in Redis, so they outlive the services a changed secret rebuilds: what
    // opens them shows which secrets are in use.
    const OLD: &str = "b2xkLXNlc3Npb24tc2VjcmV0LW9mLTMyLWJ5dGVzISE=";
    const NEW: &str = "bmV3LXNlc3Npb24tc2VjcmV0LW9mLTMyLWJ5dGVzISE=";
    let redis = RedisServer::start();
    let setup = Setup::new();
    let base = format!("http://127.0.0.1:{}", setup.http);
    let idp = idp_for(&setup, "portcullis-secret");
    let up = Upstream::start();
    setup.write("secrets/session", format!("{OLD}\n"));
    let session = format!(
        "  store: redis\n  redis: {{ url: \"{}\" }}\n  secrets_file: secrets/session\n",
        redis.url()
    );
    let pc = setup.start(
        &config(
            &base,
            &idp,
            &up,
            &session,
            "    client_secret: portcullis-secret\n",
        )
        .replace(&format!("  secrets: [\"{SECRET}\"]\n"), ""),
    );
    pc.ready().await;
    let (browser, page) = login(&pc).await;
    assert_eq!(page.status, 200, "login: {} {}", page.url, page.body);
    let old_cookie = browser.cookie_for(&base, "_portcullis").expect("a cookie");
    let status = |cookie: String| {
        let app = format!("{base}/app");
        async move {
            support::http_client()
                .get(&app)
                .header("cookie", format!("_portcullis={cookie}"))
                .header("accept", "application/json")
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }
    };
    assert_eq!(status(old_cookie.clone()).await, 200);

    // Only the new secret in the file: the session sealed under the old one no longer opens.
    std::fs::write(pc.dir().join("secrets/session"), format!("{NEW}\n")).expect("rotating");
    pc.sighup();
    reloaded(&pc, 1.0).await;
    assert_eq!(status(old_cookie.clone()).await, 401);

    // The new secret first, the old one after it (a rotation as documented): the old session
    // opens again, and a new login is sealed under the new secret.
    std::fs::write(pc.dir().join("secrets/session"), format!("{NEW}\n{OLD}\n")).expect("rotating");
    pc.sighup();
    reloaded(&pc, 2.0).await;
    assert_eq!(status(old_cookie).await, 200);
    let (browser, page) = login(&pc).await;
    assert_eq!(page.status, 200, "login: {} {}", page.url, page.body);
    let new_cookie = browser.cookie_for(&base, "_portcullis").expect("a cookie");
    assert_eq!(status(new_cookie.clone()).await, 200);

    // Back to the old secret alone: the new session does not open, which it would if it had
    // been sealed under the old one.
    std::fs::write(pc.dir().join("secrets/session"), format!("{OLD}\n")).expect("rotating");
    pc.sighup();
    reloaded(&pc, 3.0).await;
    assert_eq!(status(new_cookie).await, 401);

    assert_not_logged(&pc, &[OLD, NEW]);
}
