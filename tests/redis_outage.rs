//! Redis killed under load and restarted, end to end with real parts only: the `portcullis`
//! binary, a real OpenID provider (`tests/idp/`), a real upstream, and a private durable
//! `redis-server` (AOF, fsync always) on a free port, killed with SIGKILL and restarted on the
//! same port and data directory.
//!
//! While Redis is down, a session this process confirmed within `cache_ttl` is served from its
//! cache. When Redis comes back, the invalidation subscription reconnects and the cache is
//! flushed (invalidations may have been missed); the flushed entries stay as a fallback for
//! when the store still cannot answer (here: Redis loading its AOF, and the connection the
//! restart broke), and a lookup that cannot reach Redis is retried once. So with a long enough
//! `cache_ttl`, a session in use sees no failure at all; and with a short one, the outage shows
//! the bound (503 once `cache_ttl` has passed) and the first requests after Redis is back work.

mod support;

#[path = "support/redis.rs"]
mod redis_support;

use redis_support::RedisServer;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::idp::{Browser, Idp, IdpClient, IdpConfig, PASSWORD};
use support::{Portcullis, Setup, Upstream};

const SECRET: &str = "cmVkaXMtb3V0YWdlLXRlc3RzLXNlY3JldC0zMi1ieXQ=";
const COOKIE: &str = "_portcullis";
/// How long Redis stays down.
const OUTAGE: Duration = Duration::from_secs(4);
/// Concurrent request loops on the session under load.
const LOOPS: usize = 4;

/// The IdP, the upstream and one Portcullis on Redis (all killed on drop).
struct World {
    _idp: Idp,
    _up: Upstream,
    pc: Portcullis,
    http: reqwest::Client,
}

impl World {
    fn start(redis: &RedisServer, cache_ttl: &str) -> World {
        let setup = Setup::new();
        let base = format!("http://127.0.0.1:{}", setup.http);
        let client = IdpClient::new(
            "portcullis",
            "portcullis-secret",
            &format!("{base}/.portcullis/callback"),
        )
        .post_logout_redirect_uri(&format!("{base}/bye"));
        let idp = Idp::start(IdpConfig::default().client(client));
        let up = Upstream::start();
        // The cache's fallback and retry log at debug: the test counts those lines.
        let yaml = format!(
            "server:\n  listen: [\"127.0.0.1:@HTTP@\"]\n  threads: 1\n  public_url: {base}\n\
             admin:\n  listen: 127.0.0.1:@ADMIN@\n\
             logging:\n  level: \"info,portcullis::session::cache=debug\"\n\
             session:\n  secrets: [\"{SECRET}\"]\n  cookie: {{ secure: false }}\n  store: redis\n\
             \x20 redis: {{ url: \"redis://127.0.0.1:{port}/0\" }}\n  cache_ttl: {cache_ttl}\n\
             providers:\n  - id: test\n    type: oidc\n    issuer: {issuer}\n    client_id: portcullis\n    client_secret: portcullis-secret\n    scopes: [openid, email, profile, groups]\n\
             routes:\n  - {{ name: app, path: /, upstream: \"{up}\", auth: required }}\n  - {{ name: bye, path: /bye, upstream: \"{up}\", auth: none }}\n",
            port = redis.port,
            issuer = idp.issuer(),
            up = up.url(),
        );
        let pc = setup.start(&yaml);
        World {
            _idp: idp,
            _up: up,
            pc,
            http: support::http_client(),
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.pc.http_port())
    }

    fn app(&self) -> String {
        format!("{}/app", self.base())
    }

    async fn ready(&self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.pc.admin_port());
        support::eventually(Duration::from_secs(10), "readyz 200", || {
            let (http, url) = (&self.http, &url);
            async move {
                let ok = http
                    .get(url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().as_u16() == 200);
                ok.then_some(())
            }
        })
        .await;
    }

    /// Logs a new browser in as alice; its session cookie (`name=value`).
    async fn login(&self) -> String {
        let browser = Browser::new();
        let page = browser.login(&self.app(), "alice", PASSWORD).await;
        assert_eq!(page.status, 200, "login: {} {}", page.url, page.body);
        let value = browser
            .cookie_for(&self.base(), COOKIE)
            .expect("a session cookie after login");
        format!("{COOKIE}={value}")
    }

    /// The status an API client gets for `GET /app` with `cookie` (0: no answer).
    async fn api(&self, cookie: &str) -> u16 {
        get_app(&self.http, &self.app(), cookie).await
    }

    /// Logs the session out (without following the redirect to the IdP); the status.
    async fn logout(&self, cookie: &str) -> u16 {
        self.http
            .get(format!("{}/.portcullis/logout", self.base()))
            .header("cookie", cookie)
            .header("accept", "text/html")
            .send()
            .await
            .expect("logout request")
            .status()
            .as_u16()
    }

    /// Lines of Portcullis' log containing `needle`.
    fn log_lines(&self, needle: &str) -> usize {
        self.pc
            .stdout()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

async fn get_app(http: &reqwest::Client, url: &str, cookie: &str) -> u16 {
    match http
        .get(url)
        .header("accept", "application/json")
        .header("cookie", cookie)
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// One request of the load: when it was sent, when it was answered, the status (0: none).
#[derive(Debug, Clone, Copy)]
struct Sample {
    sent: Instant,
    done: Instant,
    status: u16,
}

/// [`LOOPS`] tasks sending `GET /app` with one session back to back until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(w: &World, cookie: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..LOOPS)
            .map(|_| {
                let (stop, samples) = (Arc::clone(&stop), Arc::clone(&samples));
                let (http, url, cookie) = (w.http.clone(), w.app(), cookie.to_string());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let sent = Instant::now();
                        let status = get_app(&http, &url, &cookie).await;
                        let done = Instant::now();
                        samples.lock().unwrap().push(Sample { sent, done, status });
                    }
                })
            })
            .collect();
        Load {
            stop,
            samples,
            tasks,
        }
    }

    async fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("load task");
        }
        let mut samples = self.samples.lock().unwrap().clone();
        samples.sort_by_key(|s| s.sent);
        samples
    }
}

/// A `--key-load-delay` (µs per key, a Redis debug setting) and enough filler keys that a
/// restart spends about 3 s loading the AOF, answering `LOADING` meanwhile: longer than the
/// subscription's reconnection back-off (at most 2 s), so the subscription comes back and the
/// cache is flushed while Redis still refuses to read sessions.
const KEY_LOAD_DELAY_US: &str = "300";
const FILLER_KEYS: u32 = 10_000;

fn durable_slow_loading_redis() -> RedisServer {
    let redis = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--key-load-delay",
        KEY_LOAD_DELAY_US,
    ]);
    let _: i64 = redis::cmd("EVAL")
        .arg("for i = 1, tonumber(ARGV[1]) do redis.call('SET', 'filler:' .. i, 'x') end return 1")
        .arg(0)
        .arg(FILLER_KEYS)
        .query(&mut redis.raw())
        .expect("filler keys");
    redis
}

/// Session record keys in Redis.
fn session_keys(redis: &RedisServer) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("portcullis:s:*")
        .query(&mut redis.raw())
        .expect("KEYS");
    keys.sort();
    keys
}

fn summary(samples: &[Sample]) -> String {
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for s in samples {
        *by_status.entry(s.status).or_default() += 1;
    }
    format!("{by_status:?}")
}

/// `cache_ttl: 30s` covers a 4 s outage: the session in use never fails, before, during, while
/// Redis loads its data after the restart, and after; a session revoked while this process was
/// not listening is refused as soon as Redis answers for it; logout works after recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_and_restarted_no_request_of_a_recent_session_fails() {
    let mut redis = durable_slow_loading_redis();
    let w = World::start(&redis, "30s");
    w.ready().await;

    let busy = w.login().await;
    let before = session_keys(&redis);
    let quiet = w.login().await;
    let quiet_key = session_keys(&redis)
        .into_iter()
        .find(|k| !before.contains(k))
        .expect("the second login's record");
    assert_eq!(w.api(&quiet).await, 200, "the quiet session, used once");

    let load = Load::start(&w, &busy);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let killed = Instant::now();
    tokio::task::block_in_place(|| redis.stop());
    tokio::time::sleep(OUTAGE).await;
    let restarting = Instant::now();
    // Returns once Redis answers PING, i.e. has loaded its AOF (the session records too).
    tokio::task::block_in_place(|| redis.restart());
    let loaded = Instant::now();
    eprintln!(
        "Redis down {:?}, then loading for {:?}",
        restarting - killed,
        loaded - restarting
    );

    // The quiet session ended while this process was not listening (no invalidation is
    // published): once the subscription is back (the cache flushed) and Redis answers, it is
    // refused, long before its cache_ttl (30 s) would have ended it.
    let _: i64 = redis::cmd("DEL")
        .arg(&quiet_key)
        .query(&mut redis.raw())
        .expect("DEL");
    let refused = support::eventually(
        Duration::from_secs(5),
        "the session revoked behind this process' back is refused",
        || {
            let (w, quiet) = (&w, &quiet);
            async move {
                let status = w.api(quiet).await;
                assert!(matches!(status, 200 | 401), "got {status}");
                (status == 401).then(|| loaded.elapsed())
            }
        },
    )
    .await;
    eprintln!("revoked session refused {refused:?} after Redis had loaded");

    tokio::time::sleep(Duration::from_secs(3)).await;
    let samples = load.finish().await;

    let failed: Vec<&Sample> = samples.iter().filter(|s| s.status != 200).collect();
    let during = samples
        .iter()
        .filter(|s| s.sent >= killed && s.done <= loaded)
        .count();
    let after = samples.iter().filter(|s| s.sent >= loaded).count();
    let fallbacks = w.log_lines("serving the recently confirmed cached session");
    let retries = w.log_lines("retrying once");
    eprintln!(
        "{} requests {}: {during} while Redis was down or loading, {after} after; \
         {fallbacks} served by the fallback, {retries} retried",
        samples.len(),
        summary(&samples)
    );
    assert!(
        failed.is_empty(),
        "no request of the session in use may fail: {} of {} did, first at {:?} after the kill ({:?})",
        failed.len(),
        samples.len(),
        failed[0].sent.saturating_duration_since(killed),
        failed[0]
    );
    assert!(
        during >= 20,
        "requests went on while Redis was down or loading"
    );
    assert!(after >= 20, "requests went on after Redis was back");
    assert!(
        fallbacks >= 1,
        "the cache was flushed while Redis was still loading, so some lookups were answered by \
         the fallback (else this test did not exercise it)"
    );

    // After recovery, logout ends the session at once.
    assert!(matches!(w.logout(&busy).await, 200 | 302));
    assert_eq!(w.api(&busy).await, 401, "logged out after the recovery");
}

/// With `cache_ttl: 2s`, a 4 s outage outlives the cached session: it is served until its
/// cache_ttl ends, then answered 503 (never a login redirect), as before; once Redis answers
/// again, every request works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_cache_ttl_bounds_the_outage_then_everything_works_again() {
    let mut redis = RedisServer::start_durable();
    let w = World::start(&redis, "2s");
    w.ready().await;
    let cookie = w.login().await;

    let load = Load::start(&w, &cookie);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed = Instant::now();
    tokio::task::block_in_place(|| redis.stop());
    tokio::time::sleep(OUTAGE).await;
    let restarting = Instant::now();
    tokio::task::block_in_place(|| redis.restart());
    let back = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let samples = load.finish().await;
    eprintln!("{} requests {}", samples.len(), summary(&samples));

    let odd: Vec<&Sample> = samples
        .iter()
        .filter(|s| !matches!(s.status, 200 | 503))
        .collect();
    assert!(odd.is_empty(), "only 200 or 503: {odd:?}");
    // Not a request after the cache_ttl (plus slack for a request in flight) of the last
    // confirmation, itself before the kill, is served while Redis is down.
    let expired = killed + Duration::from_millis(2500);
    let late_200 = samples
        .iter()
        .filter(|s| s.sent >= expired && s.done <= restarting && s.status == 200)
        .count();
    let late_503 = samples
        .iter()
        .filter(|s| s.sent >= expired && s.done <= restarting && s.status == 503)
        .count();
    assert_eq!(late_200, 0, "served past cache_ttl during the outage");
    assert!(late_503 >= 1, "503 once cache_ttl has passed");
    if let Some(first) = samples.iter().find(|s| s.status == 503) {
        eprintln!(
            "first 503 sent {:?} after the kill",
            first.sent.saturating_duration_since(killed)
        );
    }
    let after: Vec<&Sample> = samples.iter().filter(|s| s.sent >= back).collect();
    let failed_after: Vec<&&Sample> = after.iter().filter(|s| s.status != 200).collect();
    assert!(after.len() >= 20, "requests after Redis was back");
    assert!(
        failed_after.is_empty(),
        "once Redis answers, every request works: {} of {} failed, first {:?} after it was back",
        failed_after.len(),
        after.len(),
        failed_after[0].sent.saturating_duration_since(back)
    );
}

/// Nothing asked Redis during the outage, so the connection the restart broke is found broken
/// only by the first lookup after it; the session is past its cache_ttl, so there is nothing to
/// fall back on. The lookup's one retry reconnects: the very first request works.
#[tokio::test]
async fn first_request_after_a_restart_works_with_nothing_cached() {
    let mut redis = RedisServer::start_durable();
    let w = World::start(&redis, "1s");
    w.ready().await;
    let cookie = w.login().await;
    assert_eq!(w.api(&cookie).await, 200);

    redis.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.restart();
    assert_eq!(
        w.api(&cookie).await,
        200,
        "the first request after Redis is back"
    );
    assert!(
        w.log_lines("retrying once") >= 1,
        "it met the broken connection and retried"
    );
    assert_eq!(
        w.log_lines("serving the recently confirmed cached session"),
        0
    );
}
