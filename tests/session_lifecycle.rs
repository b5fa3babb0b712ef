//! The session lifecycle end to end, with real parts only: the `portcullis` binary (one or two
//! instances), a real OpenID provider (`oidc-provider`, see `tests/idp/`), a real upstream and
//! a private `redis-server` per test on a free port (never a shared one).
//!
//! Covered: the memory store; the Redis store shared by two instances (a cookie from one works
//! on the other, a logout on one is refused by the other within 100 ms through pub/sub); absolute
//! lifetime and idle timeout; token refresh (exact count at the IdP, once under 20 concurrent
//! requests, `invalid_grant` ends the session, an IdP failure keeps it); `max_per_user`; a
//! Redis restart; Redis down and back; the IdP down; the size and encryption of a stored record;
//! the metrics; and zero Redis commands for a cached session.
//!
//! Timing: expiry and refresh tests use second-scale settings (`lifetime: 3s`,
//! `idle_timeout: 2s`, IdP tokens of 3 s, `cache_ttl: 1s`) and poll with deadlines.

mod support;

#[path = "support/redis.rs"]
mod redis_support;

use futures_util::future::join_all;
use redis_support::RedisServer;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::idp::{Browser, Idp, IdpClient, IdpConfig, PASSWORD};
use support::{Portcullis, Setup, Upstream};

/// `portcullis gen-secret` output, shared by every instance of one test (they must agree).
const SECRET: &str = "c2Vzc2lvbi1saWZlY3ljbGUtdGVzdHMtMzItYnl0ZXM=";
/// The session cookie's name (the default).
const COOKIE: &str = "_portcullis";
/// The IdP token lifetime of the refresh tests: `refresh_due` fires with 1 s left, so a
/// refresh is due 2 to 3 s after the tokens were issued and the tokens are dead after 3 s.
const TOKEN_TTL: Duration = Duration::from_secs(3);
/// How long after a login (or refresh) the tokens have surely expired, so a refresh is due.
const PAST_TOKEN_EXPIRY: Duration = Duration::from_millis(3300);

// ---------------------------------------------------------------------------------------------
// The world of one test
// ---------------------------------------------------------------------------------------------

/// What to start.
struct Opts {
    /// Portcullis instances sharing one config (apart from their ports and `public_url`).
    instances: usize,
    /// Lines under `session:` besides `secrets` and `cookie`, each indented by two spaces.
    session: String,
    /// IdP access and ID token lifetime (default one hour).
    token_ttl: Option<Duration>,
    /// Kill the IdP before Portcullis starts (it is never discovered).
    idp_down_at_start: bool,
}

impl Opts {
    fn new(session: &str) -> Opts {
        Opts {
            instances: 1,
            session: session.to_string(),
            token_ttl: None,
            idp_down_at_start: false,
        }
    }

    fn instances(mut self, n: usize) -> Opts {
        self.instances = n;
        self
    }

    fn token_ttl(mut self, ttl: Duration) -> Opts {
        self.token_ttl = Some(ttl);
        self
    }
}

/// `session:` lines for the Redis store at `redis`, followed by `more`.
fn redis_session(redis: &RedisServer, more: &str) -> String {
    format!(
        "  store: redis\n  redis: {{ url: \"redis://127.0.0.1:{}/0\" }}\n{more}",
        redis.port
    )
}

/// One test's world: the IdP, the upstream, and the Portcullis instances (all killed on drop).
struct World {
    idp: Idp,
    up: Upstream,
    pcs: Vec<Portcullis>,
    /// A client that follows no redirects, for requests with a hand-picked cookie.
    http: reqwest::Client,
}

impl World {
    fn start(opts: Opts) -> World {
        let setups: Vec<Setup> = (0..opts.instances).map(|_| Setup::new()).collect();
        let bases: Vec<String> = setups
            .iter()
            .map(|s| format!("http://127.0.0.1:{}", s.http))
            .collect();
        let mut client = IdpClient::new(
            "portcullis",
            "portcullis-secret",
            &format!("{}/.portcullis/callback", bases[0]),
        );
        for base in &bases {
            if base != &bases[0] {
                client = client.redirect_uri(&format!("{base}/.portcullis/callback"));
            }
            client = client.post_logout_redirect_uri(&format!("{base}/bye"));
        }
        let mut idp_config = IdpConfig::default().client(client);
        if let Some(ttl) = opts.token_ttl {
            idp_config = idp_config.token_ttl(ttl);
        }
        let mut idp = Idp::start(idp_config);
        if opts.idp_down_at_start {
            idp.kill();
        }
        let up = Upstream::start();
        let pcs = setups
            .into_iter()
            .zip(&bases)
            .map(|(setup, base)| {
                let yaml = format!(
                    "server:\n  listen: [\"127.0.0.1:@HTTP@\"]\n  threads: 1\n  public_url: {base}\n\
                     admin:\n  listen: 127.0.0.1:@ADMIN@\n\
                     session:\n  secrets: [\"{SECRET}\"]\n  cookie: {{ secure: false }}\n{session}\
                     providers:\n  - id: test\n    type: oidc\n    issuer: {issuer}\n    client_id: portcullis\n    client_secret: portcullis-secret\n    scopes: [openid, email, profile, groups]\n\
                     routes:\n  - {{ name: app, path: /, upstream: \"{up}\", auth: required }}\n  - {{ name: bye, path: /bye, upstream: \"{up}\", auth: none }}\n",
                    session = opts.session,
                    issuer = idp.issuer(),
                    up = up.url(),
                );
                setup.start(&yaml)
            })
            .collect();
        World {
            idp,
            up,
            pcs,
            http: support::http_client(),
        }
    }

    fn pc(&self, i: usize) -> &Portcullis {
        &self.pcs[i]
    }

    fn base(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.pcs[i].http_port())
    }

    fn app(&self, i: usize) -> String {
        format!("{}/app", self.base(i))
    }

    /// `/readyz` status of instance `i`.
    async fn readyz(&self, i: usize) -> u16 {
        let url = format!("http://127.0.0.1:{}/readyz", self.pc(i).admin_port());
        match self.http.get(url).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// Waits until every instance is ready (store reachable, IdP discovered).
    async fn ready(&self) {
        for i in 0..self.pcs.len() {
            support::eventually(Duration::from_secs(10), "readyz 200", || async move {
                (self.readyz(i).await == 200).then_some(())
            })
            .await;
        }
    }

    /// Logs `browser` in as alice through instance 0 and returns its session cookie
    /// (`name=value`), checking that the app saw alice.
    async fn login(&self, browser: &Browser) -> String {
        let page = browser.login(&self.app(0), "alice", PASSWORD).await;
        assert_eq!(
            page.status, 200,
            "login did not reach the app: {} {}",
            page.url, page.body
        );
        assert_eq!(
            self.up.last().header("x-auth-request-user"),
            Some("alice"),
            "the app got the identity after login"
        );
        let value = browser
            .cookie_for(&self.base(0), COOKIE)
            .expect("a session cookie after login");
        format!("{COOKIE}={value}")
    }

    /// `GET /app` on instance `i` with only `cookie`, as an API client (`Accept: JSON`) or a
    /// browser (`Accept: text/html`): the status and `Location`.
    async fn probe(&self, i: usize, cookie: &str, as_browser: bool) -> (u16, Option<String>) {
        let accept = if as_browser {
            "text/html,application/xhtml+xml"
        } else {
            "application/json"
        };
        let mut req = self.http.get(self.app(i)).header("accept", accept);
        if !cookie.is_empty() {
            req = req.header("cookie", cookie);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /app on instance {i}: {e}"));
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (resp.status().as_u16(), location)
    }

    /// The status an API client gets from instance `i` with `cookie`.
    async fn api(&self, i: usize, cookie: &str) -> u16 {
        self.probe(i, cookie, false).await.0
    }

    /// Asserts that `cookie` is no session on instance `i`: a browser is sent to log in (302 to
    /// `/.portcullis/start`), an API client gets 401.
    async fn assert_logged_out(&self, i: usize, cookie: &str, what: &str) {
        let (status, location) = self.probe(i, cookie, true).await;
        assert_eq!(status, 302, "{what}: a browser is sent to log in again");
        let location = location.unwrap_or_default();
        assert!(
            location.contains("/.portcullis/start"),
            "{what}: redirected to the login start, not {location:?}"
        );
        assert_eq!(
            self.api(i, cookie).await,
            401,
            "{what}: an API client gets 401"
        );
    }

    /// Asserts that `cookie` passes on instance `i` `n` times in a row.
    async fn assert_works(&self, i: usize, cookie: &str, n: usize, what: &str) {
        for k in 0..n {
            assert_eq!(
                self.api(i, cookie).await,
                200,
                "{what}: request {k} on instance {i}"
            );
        }
    }

    /// Logs out the session of `cookie` on instance `i` (without following the redirect to
    /// the IdP) and returns the status.
    async fn logout(&self, i: usize, cookie: &str) -> u16 {
        let resp = self
            .http
            .get(format!("{}/.portcullis/logout", self.base(i)))
            .header("cookie", cookie)
            .header("accept", "text/html")
            .send()
            .await
            .expect("logout request");
        resp.status().as_u16()
    }

    /// Waits for an audit line of `event` on instance `i`'s stdout.
    async fn audit_line(&self, i: usize, event: &str) -> Option<String> {
        let needle = format!("\"event\":\"{event}\"");
        self.pc(i)
            .wait_for_stdout_line(|l| l.contains(&needle))
            .await
    }

    /// Whether instance `i` logged an audit line of `event` so far.
    fn has_audit(&self, i: usize, event: &str) -> bool {
        let needle = format!("\"event\":\"{event}\"");
        self.pc(i).stdout().lines().any(|l| l.contains(&needle))
    }
}

async fn sleep_until(t: Instant) {
    tokio::time::sleep(t.saturating_duration_since(Instant::now())).await;
}

// ---------------------------------------------------------------------------------------------
// Redis inspection
// ---------------------------------------------------------------------------------------------

/// `INFO commandstats` as command -> calls.
fn command_stats(conn: &mut redis::Connection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(conn)
        .expect("INFO commandstats");
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// Commands run between two [`command_stats`] snapshots, `INFO` itself left out.
fn command_delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter(|(name, _)| name.as_str() != "info")
        .filter_map(|(name, n)| {
            let d = n - before.get(name).copied().unwrap_or(0);
            (d > 0).then(|| (name.clone(), d))
        })
        .collect()
}

/// Subscribers of the invalidation channel.
fn invalidation_subscribers(conn: &mut redis::Connection) -> i64 {
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("portcullis:invalidate")
        .query(conn)
        .expect("PUBSUB NUMSUB");
    n
}

/// Waits until `n` processes subscribe to the invalidation channel of `redis`.
async fn wait_subscribers(redis: &RedisServer, n: i64) {
    support::eventually(
        Duration::from_secs(10),
        &format!("{n} subscribers of portcullis:invalidate"),
        || async move {
            let Ok(mut conn) = redis::Client::open(redis.url()).and_then(|c| c.get_connection())
            else {
                return None;
            };
            (invalidation_subscribers(&mut conn) == n).then_some(())
        },
    )
    .await;
}

/// Shannon entropy of `bytes`, in bits per byte.
fn entropy(bytes: &[u8]) -> f64 {
    let mut counts = [0usize; 256];
    for b in bytes {
        counts[usize::from(*b)] += 1;
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Memory store
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn memory_store_login_persists_and_logout_ends_it() {
    let w = World::start(Opts::new("  store: memory\n"));
    w.ready().await;
    let browser = Browser::new();
    let cookie = w.login(&browser).await;

    // The session persists across requests, for browser and API alike.
    w.assert_works(0, &cookie, 5, "memory session").await;
    let page = browser.get(&w.app(0)).await;
    assert_eq!(page.status, 200);
    let me = browser
        .get(&format!("{}/.portcullis/userinfo", w.base(0)))
        .await;
    assert_eq!(me.status, 200, "{}", me.body);
    let me: serde_json::Value = serde_json::from_str(&me.body).unwrap();
    assert_eq!(me["user"], "alice");
    assert_eq!(me["email"], "alice@example.com");

    // Logout ends it: the browser's cookie is cleared, and the old cookie, replayed, is no
    // session any more (not after cache_ttl: at once).
    let status = w.logout(0, &cookie).await;
    assert!(status == 302 || status == 200, "logout answered {status}");
    w.assert_logged_out(0, &cookie, "memory session after logout")
        .await;
    assert!(w.has_audit(0, "logout"), "a logout audit event");
}

// ---------------------------------------------------------------------------------------------
// Redis store, two instances
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn redis_cookie_works_on_a_second_instance_and_logout_reaches_it_within_100ms() {
    let redis = RedisServer::start();
    let w = World::start(Opts::new(&redis_session(&redis, "")).instances(2));
    w.ready().await;
    wait_subscribers(&redis, 2).await;

    let browser = Browser::new();
    let cookie = w.login(&browser).await;
    w.assert_works(0, &cookie, 2, "instance A").await;

    // Instance B never saw this login: it finds the session in Redis (same secrets).
    let before = w.up.count();
    w.assert_works(1, &cookie, 3, "instance B, with A's cookie")
        .await;
    assert_eq!(w.up.count(), before + 3);
    assert_eq!(w.up.last().header("x-auth-request-user"), Some("alice"));
    assert_eq!(
        w.up.last().header("x-auth-request-email"),
        Some("alice@example.com")
    );

    // B has the session cached (cache_ttl 10 s by default): only the invalidation published
    // on Redis can end it there before then.
    assert_eq!(w.api(1, &cookie).await, 200);
    let status = w.logout(0, &cookie).await;
    let logged_out = Instant::now();
    assert!(status == 302 || status == 200, "logout answered {status}");

    let mut polls = 0;
    let refused_after = loop {
        polls += 1;
        let status = w.api(1, &cookie).await;
        let elapsed = logged_out.elapsed();
        if status == 401 {
            break elapsed;
        }
        assert_eq!(
            status, 200,
            "B answered {status} while the logout propagates"
        );
        assert!(
            elapsed <= Duration::from_millis(100),
            "instance B still accepted the cookie {elapsed:?} after the logout on A ({polls} polls)"
        );
    };
    eprintln!("logout on A refused on B after {refused_after:?} ({polls} polls)");
    assert!(refused_after <= Duration::from_millis(100));
    w.assert_logged_out(1, &cookie, "B after logout on A").await;
    w.assert_logged_out(0, &cookie, "A after its own logout")
        .await;
}

// ---------------------------------------------------------------------------------------------
// Lifetime and idle timeout
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn lifetime_ends_even_an_active_session() {
    let redis = RedisServer::start();
    let w = World::start(Opts::new(&redis_session(
        &redis,
        "  lifetime: 3s\n  cache_ttl: 1s\n",
    )));
    w.ready().await;
    let browser = Browser::new();
    let cookie = w.login(&browser).await;
    let logged_in = Instant::now();

    // A request every 100 ms: activity does not stretch the absolute lifetime.
    let ended = loop {
        let status = w.api(0, &cookie).await;
        let elapsed = logged_in.elapsed();
        if status == 401 {
            break elapsed;
        }
        assert_eq!(status, 200, "at {elapsed:?}");
        assert!(
            elapsed < Duration::from_millis(3800),
            "the session outlived its 3 s lifetime ({elapsed:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("lifetime 3s: the session ended {ended:?} after login");
    // The lifetime counts whole seconds from the login: it ends 2 to 3 s later.
    assert!(
        ended >= Duration::from_millis(1500),
        "ended too early: {ended:?}"
    );
    w.assert_logged_out(0, &cookie, "after lifetime").await;
}

#[tokio::test]
async fn idle_timeout_ends_an_unused_session_and_activity_keeps_one_alive() {
    let redis = RedisServer::start();
    let w = World::start(Opts::new(&redis_session(
        &redis,
        "  idle_timeout: 2s\n  cache_ttl: 1s\n",
    )));
    w.ready().await;
    let active = Browser::new();
    let idle = Browser::new();
    let active_cookie = w.login(&active).await;
    let idle_cookie = w.login(&idle).await;
    let t0 = Instant::now();

    // One session makes a request every 250 ms for 5 s (2.5 × idle_timeout); the other none.
    let mut checked_idle = false;
    while t0.elapsed() < Duration::from_secs(5) {
        let status = w.api(0, &active_cookie).await;
        assert_eq!(
            status,
            200,
            "an active session ended after {:?}",
            t0.elapsed()
        );
        if !checked_idle && t0.elapsed() >= Duration::from_millis(3200) {
            // No request for over 3 s > idle_timeout.
            w.assert_logged_out(0, &idle_cookie, "the idle session")
                .await;
            checked_idle = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(checked_idle);
    // And the active one, left alone in turn, ends too.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    w.assert_logged_out(0, &active_cookie, "the formerly active session, now idle")
        .await;
}

// ---------------------------------------------------------------------------------------------
// Refresh
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn refresh_keeps_the_session_past_token_expiry_with_exactly_one_grant_each_time() {
    let redis = RedisServer::start();
    let w =
        World::start(Opts::new(&redis_session(&redis, "  refresh: true\n")).token_ttl(TOKEN_TTL));
    w.ready().await;
    let browser = Browser::new();
    let cookie = w.login(&browser).await;
    let logged_in = Instant::now();
    w.assert_works(0, &cookie, 3, "fresh tokens").await;
    assert_eq!(
        w.idp.counter("grant:refresh_token").await,
        0,
        "no refresh while the tokens are fresh"
    );

    // The IdP's access token has expired: requests still pass, after one refresh.
    sleep_until(logged_in + PAST_TOKEN_EXPIRY).await;
    w.assert_works(0, &cookie, 5, "after the access token expired")
        .await;
    let refreshed = Instant::now();
    assert_eq!(
        w.idp.counter("grant:refresh_token").await,
        1,
        "exactly one refresh grant for five requests"
    );

    // And again with the new tokens (the rotated refresh token was kept: reusing the old one
    // would have revoked the grant).
    sleep_until(refreshed + PAST_TOKEN_EXPIRY).await;
    w.assert_works(0, &cookie, 5, "after the refreshed token expired")
        .await;
    assert_eq!(w.idp.counter("grant:refresh_token").await, 2);
    assert_eq!(w.idp.grant_error_count("refresh_token"), 0);
    let me = browser
        .get(&format!("{}/.portcullis/userinfo", w.base(0)))
        .await;
    assert_eq!(me.status, 200);
    assert!(me.body.contains("\"alice\""), "{}", me.body);
}

/// Fires `n` requests at once, spread over the instances, and returns their statuses.
async fn burst(w: &World, cookie: &str, n: usize) -> Vec<u16> {
    let instances = w.pcs.len();
    join_all((0..n).map(|k| w.api(k % instances, cookie))).await
}

#[tokio::test]
async fn twenty_concurrent_requests_due_for_refresh_refresh_once_memory() {
    let w = World::start(Opts::new("  store: memory\n").token_ttl(TOKEN_TTL));
    w.ready().await;
    let browser = Browser::new();
    let cookie = w.login(&browser).await;
    let logged_in = Instant::now();
    sleep_until(logged_in + PAST_TOKEN_EXPIRY).await;
    // A slow token endpoint keeps the refresh in flight while all 20 arrive.
    w.idp.delay_token_requests(Duration::from_millis(400)).await;
    let started = Instant::now();
    let statuses = burst(&w, &cookie, 20).await;
    let took = started.elapsed();
    assert!(
        statuses.iter().all(|s| *s == 200),
        "all 20 pass: {statuses:?}"
    );
    // The request that refreshed waited for the slow token endpoint, so the refresh happened
    // during the burst, and only once.
    assert!(took >= Duration::from_millis(400), "burst took {took:?}");
    assert_eq!(
        w.idp.counter("grant:refresh_token").await,
        1,
        "one refresh for 20 concurrent requests"
    );
    w.idp.reset_faults().await;
    w.assert_works(0, &cookie, 3, "after the refresh").await;
    assert_eq!(w.idp.counter("grant:refresh_token").await, 1);
}

#[tokio::test]
async fn twenty_concurrent_requests_on_two_instances_refresh_once_redis() {
    let redis = RedisServer::start();
    let w = World::start(
        Opts::new(&redis_session(&redis, ""))
            .instances(2)
            .token_ttl(TOKEN_TTL),
    );
    w.ready().await;
    let browser = Browser::new();
    let cookie = w.login(&browser).await;
    let logged_in = Instant::now();
    // Both instances hold the session in their caches.
    w.assert_works(0, &cookie, 1, "A").await;
    w.assert_works(1, &cookie, 1, "B").await;
    sleep_until(logged_in + PAST_TOKEN_EXPIRY).await;
    w.idp.delay_token_requests(Duration::from_millis(400)).await;
    let started = Instant::now();
    let statuses = burst(&w, &cookie, 20).await;
    let took = started.elapsed();
    assert!(
        statuses.iter().all(|s| *s == 200),
        "all 20 pass: {statuses:?}"
    );
    assert!(took >= Duration::from_millis(400), "burst took {took:?}");
    assert_eq!(
        w.idp.counter("grant:refresh_token").await,
        1,
        "one refresh for 20 concurrent requests on two instances"
    );
    w.idp.reset_faults().await;
    // Neither instance refreshes again: B dropped its stale copy (pub/sub) and read the new one.
    w.assert_works(0, &cookie, 3, "A after the refresh").await;
    w.assert_works(1, &cookie, 3, "B after the refresh").await;
    assert_eq!(w.idp.counter("grant:refresh_token").await, 1);
    assert_eq!(w.idp.grant_error_count("refresh_token"), 0);
}

#[tokio::test]
async fn invalid_grant_on_refresh_ends_the_session_with_an_audit_event() {
    let redis = RedisServer::start();
    let w = World::start(Opts::new(&redis_session(&redis, "")).token_ttl(TOKEN_TTL));
    w.ready().await;
    let browser = Browser::new();
    let cookie = w.login(&browser).await;
    let logged_in = Instant::now();
    w.assert_works(0, &cookie, 1, "before revocation").await;

    w.idp.revoke_user("alice").await;
    // Still valid until a refresh is due: Portcullis does not ask the IdP on every request.
    sleep_until(logged_in + PAST_TOKEN_EXPIRY).await;
    let (status, location) = w.probe(0, &cookie, true).await;
    assert_eq!(
        status, 302,
        "the refresh was refused with invalid_grant: the session ends"
    );
    assert!(location.unwrap_or_default().contains("/.portcullis/start"));
    w.assert_logged_out(0, &cookie, "after invalid_grant").await;
    assert!(w.idp.grant_error_count("refresh_token") >= 1);
    let line = w
        .audit_line(0, "session_revoked")
        .await
        .expect("an audit event session_revoked");
    let v: serde_json::Value = serde_json::from_str(&line).expect("audit line is JSON");
    assert_eq!(v["user"], "alice");
    // The record is gone from Redis too.
    let mut conn = redis.raw();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("portcullis:s:*")
        .query(&mut conn)
        .unwrap();
    assert!(keys.is_empty(), "session records left: {keys:?}");
}

/// DOCS/LOGIN.md "Refresh": the IdP "fails otherwise" (here 503 `temporarily_unavailable`):
/// the session is kept and refresh is tried again later; only `invalid_grant` ends it.
#[tokio::test]
async fn token_endpoint_failing_with_503_keeps_the_session() {
    let redis = RedisServer::start();
    let w = World::start(Opts::new(&redis_session(&redis, "")).token_ttl(TOKEN_TTL));
    w.ready().await;
    let browser = Browser::new();
    let cookie = w.login(&browser).await;
    let logged_in = Instant::now();
    w.idp.fail_token_requests(3, 503).await;
    sleep_until(logged_in + PAST_TOKEN_EXPIRY).await;
    // The refresh attempt meets a 503 (temporarily_unavailable): the session is kept, and
    // the attempt is not repeated on every request: the refresh lock is left to expire
    // (15 s), a back-off across requests and replicas.
    for k in 0..6 {
        let (status, location) = w.probe(0, &cookie, true).await;
        assert_eq!(
            status, 200,
            "request {k}: a failing token endpoint (503) must not end the session (got {status}, Location {location:?})"
        );
    }
    assert_eq!(
        w.idp.counter("token_injected_failure").await,
        1,
        "one attempt, then back-off"
    );
    assert_eq!(w.idp.counter("grant:refresh_token").await, 0);
    assert!(
        !w.has_audit(0, "session_revoked"),
        "no session_revoked for a 503"
    );
}

// ---------------------------------------------------------------------------------------------
// max_per_user
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn max_per_user_ends_the_oldest_session_on_every_instance() {
    let redis = RedisServer::start();
    let w = World::start(Opts::new(&redis_session(&redis, "  max_per_user: 2\n")).instances(2));
    w.ready().await;
    wait_subscribers(&redis, 2).await;
    let first = Browser::new();
    let second = Browser::new();
    let third = Browser::new();
    let c1 = w.login(&first).await;
    // Cached on both instances.
    w.assert_works(0, &c1, 1, "first on A").await;
    w.assert_works(1, &c1, 1, "first on B").await;
    let c2 = w.login(&second).await;
    w.assert_works(0, &c1, 1, "two sessions are allowed").await;
    let c3 = w.login(&third).await;
    let third_login = Instant::now();

    w.assert_logged_out(0, &c1, "the oldest session on A").await;
    // B had it cached: the eviction reaches it through pub/sub, well before cache_ttl (10 s).
    support::eventually(
        Duration::from_secs(1),
        "B refuses the oldest session",
        || {
            let c1 = c1.clone();
            let w = &w;
            async move { (w.api(1, &c1).await == 401).then_some(()) }
        },
    )
    .await;
    eprintln!(
        "max_per_user: B refused the evicted session {:?} after the third login",
        third_login.elapsed()
    );
    w.assert_logged_out(1, &c1, "the oldest session on B").await;
    for (i, c) in [(0, &c2), (1, &c2), (0, &c3), (1, &c3)] {
        w.assert_works(i, c, 2, "one of the two newest").await;
    }
    let line = w
        .audit_line(0, "session_revoked")
        .await
        .expect("a session_revoked audit event for the evicted session");
    assert!(line.contains("max_per_user"), "{line}");
}

// ---------------------------------------------------------------------------------------------
// Redis restarted, Redis down
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sessions_survive_a_redis_restart_without_restarting_portcullis() {
    let mut redis = RedisServer::start_durable();
    let w = World::start(Opts::new(&redis_session(&redis, "  cache_ttl: 1s\n")));
    w.ready().await;
    let browser = Browser::new();
    let cookie = w.login(&browser).await;
    w.assert_works(0, &cookie, 2, "before the restart").await;

    redis.restart();
    // Past cache_ttl, so the next request must ask Redis.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let start = Instant::now();
    loop {
        let status = w.api(0, &cookie).await;
        if status == 200 {
            break;
        }
        assert_eq!(
            status, 503,
            "after a Redis restart the session must not be lost (got {status})"
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "requests did not work again within 10 s of the Redis restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "Redis restart: requests work again after {:?}",
        start.elapsed()
    );
    let mut conn = redis.raw();
    let gets = command_stats(&mut conn).get("get").copied().unwrap_or(0);
    assert!(
        gets >= 1,
        "the session was read from the restarted Redis, not only from the cache"
    );
    w.assert_works(0, &cookie, 3, "after the restart").await;
    assert_eq!(w.readyz(0).await, 200);
    // The invalidation subscription is back too.
    wait_subscribers(&redis, 1).await;

    // New logins work, and logout still ends a session at once.
    let other = Browser::new();
    let c2 = w.login(&other).await;
    w.assert_works(0, &c2, 1, "a login after the restart").await;
    assert!(matches!(w.logout(0, &cookie).await, 200 | 302));
    w.assert_logged_out(0, &cookie, "logout after the restart")
        .await;
}

#[tokio::test]
async fn redis_down_serves_cached_sessions_for_cache_ttl_then_503_and_recovers() {
    let mut redis = RedisServer::start_durable();
    let w = World::start(Opts::new(&redis_session(&redis, "  cache_ttl: 5s\n")));
    w.ready().await;
    let browser = Browser::new();
    let cookie = w.login(&browser).await;
    // The login's last hop put the session in the cache; this one is a cache hit.
    let verified = Instant::now();
    w.assert_works(0, &cookie, 1, "before the outage").await;
    let get_errors = w
        .pc(0)
        .metric("portcullis_store_errors_total", &[("op", "get")])
        .await;
    let create_errors = w
        .pc(0)
        .metric("portcullis_store_errors_total", &[("op", "create")])
        .await;

    redis.stop();
    let stopped = Instant::now();

    // The cached session keeps working up to cache_ttl, then 503 (never a login loop).
    let first_503 = loop {
        let (status, location) = w.probe(0, &cookie, true).await;
        let elapsed = verified.elapsed();
        if status == 503 {
            break elapsed;
        }
        assert_eq!(
            status, 200,
            "while Redis is down a cached session gets 200 then 503 (Location {location:?}) at {elapsed:?}"
        );
        assert!(
            elapsed < Duration::from_millis(6500),
            "still served from the cache {elapsed:?} after it was verified (cache_ttl 5s)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "Redis down: the cached session served for {first_503:?} after it was verified \
         ({:?} after Redis stopped)",
        stopped.elapsed()
    );
    assert!(
        first_503 >= Duration::from_secs(4),
        "the cached session should serve for about cache_ttl (5 s), got {first_503:?}"
    );
    assert_eq!(w.api(0, &cookie).await, 503, "an API client gets 503 too");
    assert!(
        w.pc(0)
            .metric("portcullis_store_errors_total", &[("op", "get")])
            .await
            > get_errors,
        "portcullis_store_errors_total{{op=\"get\"}} counts the failures"
    );

    // A new login gets a clear 503 page.
    let newcomer = Browser::new();
    let page = newcomer.login(&w.app(0), "alice", PASSWORD).await;
    assert_eq!(
        page.status, 503,
        "a new login while Redis is down: {}",
        page.body
    );
    assert!(
        page.header("content-type")
            .unwrap_or_default()
            .starts_with("text/html"),
        "an HTML page"
    );
    assert!(
        page.body.contains("temporarily unavailable"),
        "a clear page: {}",
        page.body
    );
    assert!(newcomer.cookie_for(&w.base(0), COOKIE).is_none());
    assert!(
        w.pc(0)
            .metric("portcullis_store_errors_total", &[("op", "create")])
            .await
            > create_errors
    );
    assert!(
        w.pc(0)
            .metric(
                "portcullis_logins_total",
                &[("provider", "test"), ("result", "error")]
            )
            .await
            >= 1.0
    );
    assert_eq!(w.readyz(0).await, 503, "/readyz fails while Redis is down");

    // Redis is back: everything resumes without restarting Portcullis.
    redis.restart();
    support::eventually(
        Duration::from_secs(10),
        "readyz 200 after Redis is back",
        || {
            let w = &w;
            async move { (w.readyz(0).await == 200).then_some(()) }
        },
    )
    .await;
    support::eventually(
        Duration::from_secs(10),
        "the old session works again",
        || {
            let (w, cookie) = (&w, &cookie);
            async move {
                let status = w.api(0, cookie).await;
                assert!(status == 200 || status == 503, "got {status}");
                (status == 200).then_some(())
            }
        },
    )
    .await;
    let again = Browser::new();
    let c2 = w.login(&again).await;
    w.assert_works(0, &c2, 2, "a new login after Redis is back")
        .await;
}

// ---------------------------------------------------------------------------------------------
// IdP down
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn idp_down_existing_sessions_keep_working_through_a_due_refresh() {
    let redis = RedisServer::start();
    let mut w = World::start(Opts::new(&redis_session(&redis, "")).token_ttl(TOKEN_TTL));
    w.ready().await;
    let browser = Browser::new();
    let cookie = w.login(&browser).await;
    let logged_in = Instant::now();
    w.idp.kill();
    w.assert_works(0, &cookie, 2, "IdP just killed").await;
    // A refresh is due and the token endpoint cannot be reached: the session is kept.
    sleep_until(logged_in + PAST_TOKEN_EXPIRY).await;
    for k in 0..4 {
        let (status, location) = w.probe(0, &cookie, true).await;
        assert_eq!(
            status, 200,
            "request {k} with the IdP down and a refresh due (Location {location:?})"
        );
    }
    let me = browser
        .get(&format!("{}/.portcullis/userinfo", w.base(0)))
        .await;
    assert_eq!(me.status, 200);
    assert!(!w.has_audit(0, "session_revoked"));
}

#[tokio::test]
async fn idp_unreachable_during_login_gets_a_clear_502_page() {
    let redis = RedisServer::start();
    let mut w = World::start(Opts::new(&redis_session(&redis, "")));
    w.ready().await;
    let browser = Browser::new();
    // The user logs in at the IdP; the IdP dies before Portcullis exchanges the code.
    let page = browser.get(&w.app(0)).await;
    assert!(
        page.has_login_form(),
        "at the IdP's login form: {}",
        page.url
    );
    let form = page
        .forms()
        .into_iter()
        .find(|f| f.has_field("password"))
        .unwrap();
    let callback = format!("{}/.portcullis/callback", w.base(0));
    let at_callback = browser
        .submit_form(
            &page,
            form,
            &[("username", "alice"), ("password", PASSWORD)],
            Some(&callback),
        )
        .await;
    let callback_url = at_callback
        .stopped_at
        .expect("the IdP sent the browser back to the callback");
    w.idp.kill();
    let answer = browser.get(callback_url.as_str()).await;
    assert_eq!(answer.status, 502, "{}", answer.body);
    assert!(answer
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/html"));
    assert!(
        answer.body.contains("cannot be reached"),
        "a clear page: {}",
        answer.body
    );
    assert!(browser.cookie_for(&w.base(0), COOKIE).is_none());
}

#[tokio::test]
async fn idp_never_reached_login_start_gets_a_clear_502_page() {
    let redis = RedisServer::start();
    let mut opts = Opts::new(&redis_session(&redis, ""));
    opts.idp_down_at_start = true;
    let w = World::start(opts);
    assert_eq!(
        w.readyz(0).await,
        503,
        "not ready while the IdP was never discovered"
    );
    let browser = Browser::new();
    let page = browser.get(&w.app(0)).await;
    assert_eq!(page.status, 502, "{} {}", page.url, page.body);
    assert!(page.url.path().starts_with("/.portcullis/start"));
    assert!(page.body.contains("cannot be reached"), "{}", page.body);
}

/// SPEC §5 "Failures": IdP unreachable → logins answer 502 with a clear page. A token endpoint
/// answering 503 is the IdP failing, not the login being refused.
#[tokio::test]
async fn idp_token_endpoint_503_during_login_gets_a_502_page() {
    let redis = RedisServer::start();
    let w = World::start(Opts::new(&redis_session(&redis, "")));
    w.ready().await;
    w.idp.fail_token_requests(1, 503).await;
    let browser = Browser::new();
    let page = browser.login(&w.app(0), "alice", PASSWORD).await;
    assert_eq!(
        page.status, 502,
        "the IdP's token endpoint answered 503 (temporarily_unavailable): {}",
        page.body
    );
    assert!(page.body.contains("cannot be reached"), "{}", page.body);
}

// ---------------------------------------------------------------------------------------------
// The stored record
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn redis_record_is_small_and_encrypted_at_rest() {
    let redis = RedisServer::start();
    let w = World::start(Opts::new(&redis_session(&redis, "")));
    w.ready().await;
    let browser = Browser::new();
    let _cookie = w.login(&browser).await;

    let mut conn = redis.raw();
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    keys.sort();
    let records: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with("portcullis:s:"))
        .collect();
    assert_eq!(records.len(), 1, "one session record: {keys:?}");
    let key = records[0];
    let len: usize = redis::cmd("STRLEN").arg(key).query(&mut conn).unwrap();
    let usage: usize = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .query(&mut conn)
        .unwrap();
    let raw: Vec<u8> = redis::cmd("GET").arg(key).query(&mut conn).unwrap();
    let bits = entropy(&raw);
    eprintln!(
        "session record: STRLEN {len} bytes, MEMORY USAGE {usage} bytes, entropy {bits:.2} bits/byte; keys {keys:?}"
    );
    assert_eq!(raw.len(), len);
    assert!(len <= 1024, "the session record is {len} bytes (> 1 KiB)");

    // Nothing readable: no identity, no JWT, no issuer, anywhere in keys or values.
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    for needle in [
        "alice",
        "example.com",
        "staff",
        "admins",
        "eyj", // base64 of `{"`: the start of every JWT part
        "\"alg\"",
        "127.0.0.1",
        "refresh",
        "test",
    ] {
        assert!(!text.contains(needle), "the stored record shows {needle:?}");
    }
    for k in &keys {
        assert!(!k.contains("alice") && !k.contains("example"), "key {k}");
    }
    let user_index: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with("portcullis:u:"))
        .collect();
    assert_eq!(user_index.len(), 1, "one per-user index: {keys:?}");
    // Sealed bytes look random (plaintext MessagePack with JWT JSON would be far below 7).
    assert!(
        bits > 7.0,
        "the record does not look encrypted: {bits:.2} bits/byte"
    );
}

// ---------------------------------------------------------------------------------------------
// Metrics and the cost of a cached session
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn metrics_count_decisions_and_logins() {
    let redis = RedisServer::start();
    let w = World::start(Opts::new(&redis_session(&redis, "")));
    w.ready().await;
    let m = |decision: &'static str| {
        let w = &w;
        async move {
            w.pc(0)
                .metric(
                    "portcullis_auth_decisions_total",
                    &[("route", "app"), ("decision", decision)],
                )
                .await
        }
    };
    // Unauthenticated: a browser is sent to log in, an API client gets 401.
    assert_eq!(w.probe(0, "", true).await.0, 302);
    assert_eq!(w.api(0, "").await, 401);
    assert_eq!(m("login").await, 1.0);
    assert_eq!(m("unauthenticated").await, 1.0);
    assert_eq!(m("allow").await, 0.0);

    let browser = Browser::new();
    let cookie = w.login(&browser).await; // one more "login", then one "allow"
    w.assert_works(0, &cookie, 3, "logged in").await;
    assert_eq!(m("login").await, 2.0);
    assert_eq!(m("allow").await, 4.0);
    assert_eq!(
        w.pc(0)
            .metric(
                "portcullis_logins_total",
                &[("provider", "test"), ("result", "success")]
            )
            .await,
        1.0
    );
    // The auth: none route is not an auth decision.
    let resp = w
        .http
        .get(format!("{}/bye", w.base(0)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        w.pc(0)
            .metric("portcullis_auth_decisions_total", &[("route", "bye")])
            .await,
        0.0
    );
}

#[tokio::test]
async fn a_cached_session_costs_no_redis_command() {
    let redis = RedisServer::start();
    let w = World::start(Opts::new(&redis_session(&redis, "  cache_ttl: 30s\n")).instances(2));
    w.ready().await;
    let browser = Browser::new();
    let cookie = w.login(&browser).await;
    w.assert_works(0, &cookie, 1, "warm the cache").await;

    let mut conn = redis.raw();
    let before = command_stats(&mut conn);
    let started = Instant::now();
    w.assert_works(0, &cookie, 100, "cached").await;
    let took = started.elapsed();
    let after = command_stats(&mut conn);
    let delta = command_delta(&before, &after);
    let total: u64 = delta.values().sum();
    eprintln!("100 cached requests in {took:?}: {total} Redis commands {delta:?}");
    // At most the invalidation subscribers' keepalive PING (every 5 s each).
    let pings = delta.get("ping").copied().unwrap_or(0);
    assert_eq!(
        total - pings,
        0,
        "Redis commands for 100 cached requests: {delta:?}"
    );
    assert!(
        pings <= 2 * (1 + took.as_secs() / 5),
        "keepalive pings: {pings} in {took:?}"
    );

    // The measurement does see Portcullis' commands: the first request on instance B (a cache
    // miss) reads the session from Redis.
    let before = command_stats(&mut conn);
    w.assert_works(1, &cookie, 1, "a cache miss on B").await;
    let miss = command_delta(&before, &command_stats(&mut conn));
    eprintln!("one cache miss: {miss:?}");
    assert!(miss.get("get").copied().unwrap_or(0) >= 1, "{miss:?}");
}
