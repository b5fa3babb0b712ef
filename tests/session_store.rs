//! One conformance suite for every session store: each behaviour below runs against the memory
//! store and against a real `redis-server` that the test starts on its own port. Time is a
//! [`ManualClock`], so expiry is tested without sleeping. Redis-only behaviour (encryption at
//! rest, key prefix, pub/sub between instances, restarts, outages, Sentinel, Cluster) follows.

#[path = "support/redis.rs"]
mod redis_support;

use portcullis::session::{
    Invalidation, ManualClock, MemoryStore, RedisSettings, RedisStore, RedisTarget, SessionCache,
    SessionId, SessionKeys, SessionRecord, SessionStore, StoreError, StoreSettings, UserKey,
};
use redis_support::{ClusterSetup, RedisServer, SentinelSetup, SENTINEL_MASTER};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIFETIME: Duration = Duration::from_secs(12 * 3600);
const IDLE: Duration = Duration::from_secs(3600);

fn settings() -> StoreSettings {
    StoreSettings {
        lifetime: LIFETIME,
        idle_timeout: IDLE,
        max_per_user: 3,
    }
}

fn keys() -> Arc<SessionKeys> {
    Arc::new(SessionKeys::from_secrets(&["q0bV1zYc2k3Xh8m4N5p6R7s8T9u0V1w2X3y4Z5a6B7c="]).unwrap())
}

/// A store under test, the clock it runs on, and the Redis behind it (if any).
struct Fixture {
    store: Arc<dyn SessionStore>,
    clock: Arc<ManualClock>,
    redis: Option<RedisServer>,
}

impl Fixture {
    fn memory(settings: StoreSettings) -> Fixture {
        let clock = ManualClock::new();
        Fixture {
            store: Arc::new(MemoryStore::new(settings, 10_000, clock.clone())),
            clock,
            redis: None,
        }
    }

    async fn redis(settings: StoreSettings) -> Fixture {
        let server = RedisServer::start();
        let clock = ManualClock::new();
        let store = redis_store(&server.url(), "t:", settings, clock.clone()).await;
        Fixture {
            store: Arc::new(store),
            clock,
            redis: Some(server),
        }
    }

    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }
}

async fn redis_store(
    url: &str,
    prefix: &str,
    settings: StoreSettings,
    clock: Arc<ManualClock>,
) -> RedisStore {
    let mut redis = RedisSettings::new(RedisTarget::Url(url.to_string()));
    redis.key_prefix = prefix.to_string();
    redis.op_timeout = Duration::from_millis(500);
    let store = RedisStore::connect(redis, settings, keys(), clock)
        .await
        .expect("redis store");
    assert!(store.wait_subscribed(Duration::from_secs(5)).await);
    store
}

/// A record like a real login's.
fn login(user: &str) -> SessionRecord {
    let mut r = SessionRecord::new("corp", format!("sub-{user}"), user);
    r.email = Some(format!("{user}@example.com"));
    r.groups = vec!["staff".into(), "engineering".into()];
    r.id_token = Some(format!(
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ7dXNlcn0ifQ.{}",
        "c2lnbmF0dXJl".repeat(20)
    ));
    r.access_token = Some(format!("AT-{}-opaque-access-token-value", user));
    r.refresh_token = Some(format!("RT-{}-opaque-refresh-token-value", user));
    r
}

/// Runs each named behaviour against both stores.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(|s| async move { super::Fixture::memory(s) }).await;
                }
            )*
        }
        mod on_redis {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Fixture::redis).await;
                }
            )*
        }
    };
}

conformance!(
    create_get_delete,
    lifetime_expiry,
    idle_expiry_and_refresh,
    max_per_user_ends_the_oldest,
    expired_sessions_do_not_count_toward_max_per_user,
    handover_code_is_single_use_and_expires,
    lock_is_exclusive_and_frees_itself,
    update_replaces_and_never_resurrects,
    delete_user_and_list_user,
    invalidations_are_delivered,
);

/// A fixture factory: the same test body builds either store.
trait Make<F: std::future::Future<Output = Fixture>>: Fn(StoreSettings) -> F {}
impl<F: std::future::Future<Output = Fixture>, T: Fn(StoreSettings) -> F> Make<F> for T {}

async fn create_get_delete<F: std::future::Future<Output = Fixture>>(make: impl Make<F>) {
    let f = make(settings()).await;
    let now = f.clock.now_secs_();
    let created = f.store.create(login("alice")).await.unwrap();
    assert!(created.evicted.is_empty());
    let r = &created.record;
    assert_eq!(r.created_at, now);
    assert_eq!(r.last_seen, now);
    assert_eq!(r.expires_at, now + LIFETIME.as_secs());

    let got = f.store.get(&r.sid).await.unwrap().expect("stored session");
    assert_eq!(&got, r);

    assert!(f.store.get(&SessionId::random()).await.unwrap().is_none());
    f.store.ping().await.unwrap();

    f.store.delete(&r.sid).await.unwrap();
    assert!(f.store.get(&r.sid).await.unwrap().is_none());
    f.store.delete(&r.sid).await.unwrap();

    // An earlier expiry asked for by the caller (e.g. the IdP session's) is kept.
    let mut short = login("bob");
    short.expires_at = now + 60;
    let created = f.store.create(short).await.unwrap();
    assert_eq!(created.record.expires_at, now + 60);
    f.advance(61);
    assert!(f.store.get(&created.record.sid).await.unwrap().is_none());
}

async fn lifetime_expiry<F: std::future::Future<Output = Fixture>>(make: impl Make<F>) {
    let f = make(StoreSettings {
        lifetime: Duration::from_secs(100),
        idle_timeout: Duration::from_secs(60),
        max_per_user: 0,
    })
    .await;
    let r = f.store.create(login("alice")).await.unwrap().record;
    f.advance(50);
    assert_eq!(f.store.touch(&r).await.unwrap(), Some(f.clock.now_secs_()));
    f.advance(40);
    let got = f.store.get(&r.sid).await.unwrap().expect("alive at 90 s");
    f.store.touch(&got).await.unwrap();
    f.advance(9);
    assert!(
        f.store.get(&r.sid).await.unwrap().is_some(),
        "alive at 99 s"
    );
    f.advance(1);
    assert!(
        f.store.get(&r.sid).await.unwrap().is_none(),
        "touches never extend past the absolute lifetime"
    );
    assert_eq!(f.store.touch(&got).await.unwrap(), None);
}

async fn idle_expiry_and_refresh<F: std::future::Future<Output = Fixture>>(make: impl Make<F>) {
    let s = StoreSettings {
        lifetime: Duration::from_secs(3600),
        idle_timeout: Duration::from_secs(60),
        max_per_user: 0,
    };
    let f = make(s).await;
    let idle = f.store.create(login("idle")).await.unwrap().record;
    let busy = f.store.create(login("busy")).await.unwrap().record;

    // Not due yet: the touch interval is a tenth of idle_timeout.
    assert!(!s.touch_due(&busy, f.clock.now_secs_() + 5));
    for _ in 0..5 {
        f.advance(30);
        let got = f.store.get(&busy.sid).await.unwrap().expect("busy stays");
        assert!(s.touch_due(&got, f.clock.now_secs_()));
        let seen = f.store.touch(&got).await.unwrap().expect("touched");
        let again = f.store.get(&busy.sid).await.unwrap().unwrap();
        assert_eq!(again.last_seen, seen);
        assert!(!s.touch_due(&again, f.clock.now_secs_()));
    }
    assert!(
        f.store.get(&idle.sid).await.unwrap().is_none(),
        "150 s without a touch is past the 60 s idle timeout"
    );
    f.advance(59);
    assert!(f.store.get(&busy.sid).await.unwrap().is_some());
    f.advance(1);
    assert!(f.store.get(&busy.sid).await.unwrap().is_none());
}

async fn max_per_user_ends_the_oldest<F: std::future::Future<Output = Fixture>>(
    make: impl Make<F>,
) {
    let f = make(settings()).await;
    let other = f.store.create(login("bob")).await.unwrap().record;
    let mut sids = Vec::new();
    for i in 0..5 {
        f.advance(1);
        let c = f.store.create(login("alice")).await.unwrap();
        match i {
            0..=2 => assert!(c.evicted.is_empty(), "session {i}"),
            _ => assert_eq!(c.evicted, vec![sids[i - 3]], "session {i}"),
        }
        sids.push(c.record.sid);
    }
    for (i, sid) in sids.iter().enumerate() {
        let alive = f.store.get(sid).await.unwrap().is_some();
        assert_eq!(alive, i >= 2, "session {i}");
    }
    let listed: Vec<SessionId> = f
        .store
        .list_user(&UserKey::new("corp", "sub-alice"))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.sid)
        .collect();
    assert_eq!(listed, sids[2..]);
    assert!(
        f.store.get(&other.sid).await.unwrap().is_some(),
        "other users are untouched"
    );
}

async fn expired_sessions_do_not_count_toward_max_per_user<
    F: std::future::Future<Output = Fixture>,
>(
    make: impl Make<F>,
) {
    let f = make(settings()).await;
    for _ in 0..3 {
        f.store.create(login("alice")).await.unwrap();
    }
    f.advance(IDLE.as_secs() + 1);
    let c = f.store.create(login("alice")).await.unwrap();
    assert!(c.evicted.is_empty(), "the three old ones are idle-expired");
    let listed = f
        .store
        .list_user(&UserKey::new("corp", "sub-alice"))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
}

async fn handover_code_is_single_use_and_expires<F: std::future::Future<Output = Fixture>>(
    make: impl Make<F>,
) {
    let f = make(settings()).await;
    f.store.put_handover("code-1", b"payload-1").await.unwrap();
    f.store.put_handover("code-2", b"payload-2").await.unwrap();
    assert_eq!(
        f.store.take_handover("code-1").await.unwrap().as_deref(),
        Some(&b"payload-1"[..])
    );
    assert_eq!(f.store.take_handover("code-1").await.unwrap(), None);
    assert_eq!(f.store.take_handover("unknown").await.unwrap(), None);

    f.advance(29);
    f.store.put_handover("code-3", b"payload-3").await.unwrap();
    f.advance(2);
    assert_eq!(
        f.store.take_handover("code-2").await.unwrap(),
        None,
        "31 s old"
    );
    assert_eq!(
        f.store.take_handover("code-3").await.unwrap().as_deref(),
        Some(&b"payload-3"[..]),
        "2 s old"
    );

    // Many concurrent takers: exactly one gets it.
    f.store.put_handover("race", b"x").await.unwrap();
    let takers = (0..20).map(|_| {
        let store = Arc::clone(&f.store);
        tokio::spawn(async move { store.take_handover("race").await.unwrap() })
    });
    let mut won = 0;
    for t in takers {
        won += usize::from(t.await.unwrap().is_some());
    }
    assert_eq!(won, 1);
}

async fn lock_is_exclusive_and_frees_itself<F: std::future::Future<Output = Fixture>>(
    make: impl Make<F>,
) {
    let f = make(settings()).await;
    let ttl = Duration::from_millis(300);
    let contenders = (0..20).map(|_| {
        let store = Arc::clone(&f.store);
        tokio::spawn(async move { store.try_lock("refresh:abc", ttl).await.unwrap() })
    });
    let mut held = Vec::new();
    for c in contenders {
        held.extend(c.await.unwrap());
    }
    assert_eq!(held.len(), 1, "exactly one of 20 wins");
    let first = held.pop().unwrap();
    assert_eq!(first.name(), "refresh:abc");
    assert!(f
        .store
        .try_lock("refresh:other", ttl)
        .await
        .unwrap()
        .is_some());

    // It frees itself after its TTL (the memory store by its clock, Redis by its own).
    f.clock.advance(ttl * 2);
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let second = f
        .store
        .try_lock("refresh:abc", Duration::from_secs(30))
        .await
        .unwrap()
        .expect("expired lock is free");
    // The first holder's late unlock must not free the second holder's lock.
    f.store.unlock(&first).await.unwrap();
    assert!(f
        .store
        .try_lock("refresh:abc", ttl)
        .await
        .unwrap()
        .is_none());
    f.store.unlock(&second).await.unwrap();
    assert!(f
        .store
        .try_lock("refresh:abc", ttl)
        .await
        .unwrap()
        .is_some());
}

async fn update_replaces_and_never_resurrects<F: std::future::Future<Output = Fixture>>(
    make: impl Make<F>,
) {
    let f = make(settings()).await;
    let r = f.store.create(login("alice")).await.unwrap().record;
    f.advance(10);
    let mut refreshed = f.store.get(&r.sid).await.unwrap().unwrap();
    refreshed.access_token = Some("new-access-token".into());
    refreshed.access_token_expires_at = Some(f.clock.now_secs_() + 300);
    refreshed.groups.push("admins".into());
    assert!(f.store.update(&refreshed).await.unwrap());
    let got = f.store.get(&r.sid).await.unwrap().unwrap();
    assert_eq!(got.access_token.as_deref(), Some("new-access-token"));
    assert_eq!(got.groups, refreshed.groups);
    assert_eq!(
        (got.created_at, got.expires_at, got.last_seen),
        (r.created_at, r.expires_at, r.last_seen)
    );

    f.store.delete(&r.sid).await.unwrap();
    assert!(!f.store.update(&refreshed).await.unwrap());
    assert!(f.store.get(&r.sid).await.unwrap().is_none());

    let expired = f.store.create(login("bob")).await.unwrap().record;
    f.advance(IDLE.as_secs() + 1);
    assert!(!f.store.update(&expired).await.unwrap());
    assert!(f.store.get(&expired.sid).await.unwrap().is_none());
}

async fn delete_user_and_list_user<F: std::future::Future<Output = Fixture>>(make: impl Make<F>) {
    let f = make(settings()).await;
    let mut alice = Vec::new();
    for _ in 0..3 {
        f.advance(1);
        alice.push(f.store.create(login("alice")).await.unwrap().record.sid);
    }
    let bob = f.store.create(login("bob")).await.unwrap().record.sid;
    let mut ended = f
        .store
        .delete_user(&UserKey::new("corp", "sub-alice"))
        .await
        .unwrap();
    ended.sort();
    alice.sort();
    assert_eq!(ended, alice);
    for sid in &alice {
        assert!(f.store.get(sid).await.unwrap().is_none());
    }
    assert!(f
        .store
        .list_user(&UserKey::new("corp", "sub-alice"))
        .await
        .unwrap()
        .is_empty());
    assert!(f.store.get(&bob).await.unwrap().is_some());
    assert_eq!(
        f.store
            .list_user(&UserKey::new("corp", "sub-bob"))
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn invalidations_are_delivered<F: std::future::Future<Output = Fixture>>(make: impl Make<F>) {
    let f = make(settings()).await;
    let mut inv = f.store.invalidations();
    let r = f.store.create(login("alice")).await.unwrap().record;
    f.store.delete(&r.sid).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(1), inv.next())
        .await
        .expect("invalidation within 1 s");
    assert_eq!(got, Some(Invalidation::Session(r.sid)));
    let other = SessionId::random();
    f.store.publish_invalidation(&other).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(1), inv.next())
        .await
        .unwrap();
    assert_eq!(got, Some(Invalidation::Session(other)));
}

/// `now_secs` without importing the trait in every test body.
trait NowSecs {
    fn now_secs_(&self) -> u64;
}
impl NowSecs for Arc<ManualClock> {
    fn now_secs_(&self) -> u64 {
        use portcullis::session::Clock;
        self.now_secs()
    }
}

// ---------------------------------------------------------------------------------------------
// Redis only
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn redis_records_are_encrypted_at_rest_and_small() {
    let f = Fixture::redis(settings()).await;
    let server = f.redis.as_ref().unwrap();
    let mut record = login("alice");
    // A typical IdP ID token: ~700 bytes, RS256.
    record.id_token = Some(typical_id_token());
    record.access_token = Some("yZ3xQ8vB2nM5kL7jH4gF6dS9aP1oI0uY".into());
    record.refresh_token = Some("rT5eW3qA8zX2cV6bN9mK1lJ4hG7fD0sA".into());
    record.groups = vec!["staff".into(), "engineering".into(), "oncall".into()];
    record.name = Some("Alice Example".into());
    let created = f.store.create(record.clone()).await.unwrap();

    let mut raw = server.raw();
    let key = format!("t:s:{}", created.record.sid.to_text());
    let value: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&value).into_owned();
    for secret in [
        record.id_token.as_deref().unwrap(),
        &record.id_token.as_deref().unwrap()[..40],
        record.access_token.as_deref().unwrap(),
        record.refresh_token.as_deref().unwrap(),
        "alice@example.com",
        "engineering",
        "Alice Example",
    ] {
        assert!(!text.contains(secret), "{secret:?} readable in Redis");
    }
    let usage: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&key)
        .arg("SAMPLES")
        .arg(0)
        .query(&mut raw)
        .unwrap();
    println!(
        "typical session in Redis: id_token {} B, value {} B, MEMORY USAGE {} B",
        record.id_token.as_deref().unwrap().len(),
        value.len(),
        usage
    );
    assert!(value.len() <= 1024, "value is {} bytes", value.len());
    assert!(usage <= 1024, "MEMORY USAGE is {usage} bytes");

    // A record copied under another session's key does not open there.
    let victim = f.store.create(login("bob")).await.unwrap().record;
    let vkey = format!("t:s:{}", victim.sid.to_text());
    let _: () = redis::cmd("SET")
        .arg(&vkey)
        .arg(&value)
        .arg("KEEPTTL")
        .query(&mut raw)
        .unwrap();
    assert!(f.store.get(&victim.sid).await.unwrap().is_none());
    // Nor does a tampered one.
    let mut tampered = value.clone();
    tampered[40] ^= 1;
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(&tampered)
        .arg("KEEPTTL")
        .query(&mut raw)
        .unwrap();
    assert!(f.store.get(&created.record.sid).await.unwrap().is_none());
}

fn typical_id_token() -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let header = URL_SAFE_NO_PAD
        .encode(br#"{"alg":"RS256","typ":"JWT","kid":"Xk3bJ9qL2vR8tY0wA1sD4fG6hJ7kL9mN"}"#);
    let payload = URL_SAFE_NO_PAD.encode(
        br#"{"iss":"https://idp.example.com/realms/main","sub":"sub-alice","aud":"portcullis","exp":1767225600,"iat":1767182400,"nonce":"Qm9vdHN0cmFwTm9uY2U","email":"alice@example.com","name":"Alice"}"#,
    );
    let sig: Vec<u8> = (0..256u32).map(|i| (i * 151 % 251) as u8).collect();
    format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[tokio::test]
async fn redis_key_prefix_is_respected() {
    let server = RedisServer::start();
    let clock = ManualClock::new();
    let a = redis_store(&server.url(), "app-a:", settings(), clock.clone()).await;
    let b = redis_store(&server.url(), "app-b:", settings(), clock.clone()).await;
    let sid = a.create(login("alice")).await.unwrap().record.sid;
    a.try_lock("l", Duration::from_secs(10)).await.unwrap();
    a.put_handover("code", b"p").await.unwrap();
    let mut raw = server.raw();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut raw).unwrap();
    assert!(keys.len() >= 4, "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("app-a:")), "{keys:?}");
    assert!(
        keys.iter().all(|k| !k.contains("code")),
        "hand-over codes are stored hashed: {keys:?}"
    );
    assert!(b.get(&sid).await.unwrap().is_none());
    assert!(a.get(&sid).await.unwrap().is_some());
    // Invalidations are per prefix too. Positive controls: another store under a's prefix
    // does receive a's logout, within the same 200 ms that b is given; and b's subscription
    // is live, before and after (b's own logouts arrive, and the first to arrive after a's
    // logout is b's own, not a's late).
    let a2 = redis_store(&server.url(), "app-a:", settings(), clock.clone()).await;
    let mut inv_a2 = a2.invalidations();
    let mut inv_b = b.invalidations();
    let b_first = b.create(login("bob")).await.unwrap().record.sid;
    b.delete(&b_first).await.unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(1), inv_b.next())
            .await
            .expect("b hears its own logout"),
        Some(Invalidation::Session(b_first))
    );
    a.delete(&sid).await.unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_millis(200), inv_a2.next())
            .await
            .expect("a store under a's prefix hears a's logout within 200 ms"),
        Some(Invalidation::Session(sid))
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), inv_b.next())
            .await
            .is_err()
    );
    let b_second = b.create(login("carol")).await.unwrap().record.sid;
    b.delete(&b_second).await.unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(1), inv_b.next())
            .await
            .expect("b still hears its own logouts"),
        Some(Invalidation::Session(b_second)),
        "b heard a's logout late, or something else"
    );
}

#[tokio::test]
async fn redis_invalidation_reaches_another_instance_within_100ms() {
    let server = RedisServer::start();
    let clock = ManualClock::new();
    let a = redis_store(&server.url(), "p:", settings(), clock.clone()).await;
    let b = redis_store(&server.url(), "p:", settings(), clock.clone()).await;
    let cache_b = Arc::new(SessionCache::new(
        1000,
        Duration::from_secs(10),
        settings(),
        clock.clone(),
    ));
    let _listener = cache_b.listen(b.invalidations());
    let sid = a.create(login("alice")).await.unwrap().record.sid;
    assert!(cache_b.load(&b, &sid).await.unwrap().is_some());
    assert!(cache_b.get(&sid).is_some(), "cached on B");

    let started = Instant::now();
    a.delete(&sid).await.unwrap();
    while cache_b.get(&sid).is_some() {
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "B still serves the session 100 ms after logout on A"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!("logout on A reached B's cache in {:?}", started.elapsed());
    assert!(cache_b.load(&b, &sid).await.unwrap().is_none());
}

#[tokio::test]
async fn redis_restart_reconnects_and_durable_data_survives() {
    let mut server = RedisServer::start_durable();
    let clock = ManualClock::new();
    let store = redis_store(&server.url(), "p:", settings(), clock.clone()).await;
    let mut inv = store.invalidations();
    let sid = store.create(login("alice")).await.unwrap().record.sid;

    server.restart();
    let got = eventually(Duration::from_secs(10), || store.get(&sid)).await;
    assert!(got.is_some(), "session survived the restart (AOF)");
    // The subscription came back too, and told caches to drop what they may have missed.
    let mut saw_all = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(Invalidation::All)) =
            tokio::time::timeout(Duration::from_millis(200), inv.next()).await
        {
            saw_all = true;
            break;
        }
    }
    assert!(saw_all, "resubscribed after the restart");
    assert!(store.wait_subscribed(Duration::from_secs(5)).await);
    store.delete(&sid).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(1), inv.next()).await;
    assert_eq!(got.unwrap(), Some(Invalidation::Session(sid)));
}

#[tokio::test]
async fn redis_restart_without_persistence_reconnects() {
    let mut server = RedisServer::start();
    let clock = ManualClock::new();
    let store = redis_store(&server.url(), "p:", settings(), clock.clone()).await;
    let sid = store.create(login("alice")).await.unwrap().record.sid;
    server.restart();
    let got = eventually(Duration::from_secs(10), || store.get(&sid)).await;
    assert!(got.is_none(), "--save \"\" loses data on restart");
    let new = store.create(login("alice")).await.unwrap().record.sid;
    assert!(store.get(&new).await.unwrap().is_some());
}

#[tokio::test]
async fn redis_down_fails_fast_cache_serves_then_recovers() {
    let mut server = RedisServer::start();
    let clock = ManualClock::new();
    let store = redis_store(&server.url(), "p:", settings(), clock.clone()).await;
    let cache = SessionCache::new(1000, Duration::from_secs(10), settings(), clock.clone());
    let sid = store.create(login("alice")).await.unwrap().record.sid;
    assert!(cache.load(&store, &sid).await.unwrap().is_some());

    server.stop();
    // Every operation fails, quickly, with a StoreError.
    for _ in 0..3 {
        let started = Instant::now();
        let err = store.get(&sid).await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Unavailable { .. } | StoreError::Timeout { .. }
            ),
            "{err}"
        );
        assert_eq!(err.op(), "get");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let started = Instant::now();
        assert!(store.ping().await.is_err());
        assert!(store.create(login("bob")).await.is_err());
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    // The session confirmed 0 s ago keeps serving from the cache, even when the store is asked.
    clock.advance(Duration::from_secs(5));
    assert!(cache.get(&sid).is_some());
    assert!(cache.load(&store, &sid).await.unwrap().is_some());
    // ... but not beyond cache_ttl, and no other session does.
    assert!(cache.load(&store, &SessionId::random()).await.is_err());
    clock.advance(Duration::from_secs(5));
    assert!(cache.get(&sid).is_none());
    assert!(cache.load(&store, &sid).await.is_err());

    server.restart();
    let started = Instant::now();
    eventually(Duration::from_secs(10), || store.ping()).await;
    println!("store usable {:?} after Redis came back", started.elapsed());
    let sid = store.create(login("carol")).await.unwrap().record.sid;
    assert!(cache.load(&store, &sid).await.unwrap().is_some());
}

/// After a Redis restart the store's connection is broken, and only the command that uses it
/// finds out (that failure starts the reconnection). The cache's lookup retries such a failure
/// once, so the first lookup after Redis is back succeeds, even with nothing cached to fall
/// back on.
#[tokio::test]
async fn first_lookup_after_a_redis_restart_succeeds_through_one_retry() {
    let mut server = RedisServer::start_durable();
    let clock = ManualClock::new();
    let store = redis_store(&server.url(), "p:", settings(), clock.clone()).await;
    let cache = SessionCache::new(1000, Duration::from_secs(10), settings(), clock.clone());
    let sid = store.create(login("alice")).await.unwrap().record.sid;
    assert!(cache.load(&store, &sid).await.unwrap().is_some());

    // What the retry is for: the bare store's first command after a restart fails ...
    server.restart();
    let first = store.get(&sid).await;
    assert!(
        matches!(&first, Err(e) if e.is_retryable()),
        "the first command after a restart meets the broken connection: {first:?}"
    );
    // ... and the next one, sent at once, works.
    assert!(store.get(&sid).await.unwrap().is_some());

    // Through the cache, that first failure is invisible: the session is past cache_ttl (no
    // fallback), Redis restarted again, and the very first lookup answers.
    server.restart();
    clock.advance(Duration::from_secs(10));
    assert!(cache.get(&sid).is_none());
    let started = Instant::now();
    assert!(cache.load(&store, &sid).await.unwrap().is_some());
    println!("first lookup after the restart: {:?}", started.elapsed());
}

#[tokio::test]
async fn redis_unreachable_at_start_is_not_fatal() {
    let port = redis_support::free_port();
    let clock = ManualClock::new();
    let mut redis = RedisSettings::new(RedisTarget::Url(format!("redis://127.0.0.1:{port}/")));
    redis.op_timeout = Duration::from_millis(300);
    let store = RedisStore::connect(redis, settings(), keys(), clock)
        .await
        .expect("created while Redis is down");
    let started = Instant::now();
    assert!(store.ping().await.is_err());
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Retries `op` until it succeeds or `within` passes.
async fn eventually<T, Fut>(within: Duration, mut op: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = Instant::now() + within;
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) => {
                assert!(Instant::now() < deadline, "still failing: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_follows_a_failover() {
    let mut setup = SentinelSetup::start();
    let clock = ManualClock::new();
    let mut redis = RedisSettings::new(RedisTarget::Sentinel {
        master: SENTINEL_MASTER.into(),
        urls: vec![setup.sentinel_url()],
        db: 0,
        username: None,
        password: None,
        tls: false,
    });
    redis.op_timeout = Duration::from_millis(500);
    let store = RedisStore::connect(redis, settings(), keys(), clock.clone())
        .await
        .unwrap();
    let sid = eventually(Duration::from_secs(5), || store.create(login("alice")))
        .await
        .record
        .sid;
    // Wait until the replica has the session, so it survives the failover.
    let key = store.session_key(&sid);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let exists: i64 = redis::cmd("EXISTS")
            .arg(&key)
            .query(&mut setup.replica.raw())
            .unwrap();
        if exists == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "never replicated");
        std::thread::sleep(Duration::from_millis(20));
    }

    let old_port = setup.master.port;
    let started = Instant::now();
    setup.master.stop();
    // Operations fail (quickly) during the failover, then succeed against the new master.
    let got = eventually(Duration::from_secs(20), || store.get(&sid)).await;
    let recovered = started.elapsed();
    assert!(got.is_some(), "the promoted replica has the session");
    let new_sid = eventually(Duration::from_secs(20), || store.create(login("bob")))
        .await
        .record
        .sid;
    assert_eq!(setup.reported_master_port(), Some(setup.replica.port));
    assert_ne!(setup.replica.port, old_port);
    let on_new: i64 = redis::cmd("EXISTS")
        .arg(store.session_key(&new_sid))
        .query(&mut setup.replica.raw())
        .unwrap();
    assert_eq!(on_new, 1, "writes go to the new master");
    println!("sentinel failover: store usable again after {recovered:?}");
    // Invalidations follow the new master too.
    assert!(store.wait_subscribed(Duration::from_secs(10)).await);
    let mut inv = store.invalidations();
    store.delete(&new_sid).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(2), inv.next()).await {
            Ok(Some(Invalidation::All)) => continue,
            got => {
                assert_eq!(got.unwrap(), Some(Invalidation::Session(new_sid)));
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_smoke() {
    let setup = ClusterSetup::start();
    let clock = ManualClock::new();
    let mut redis = RedisSettings::new(RedisTarget::Cluster(setup.urls()));
    redis.op_timeout = Duration::from_secs(2);
    let store = RedisStore::connect(redis, settings(), keys(), clock.clone())
        .await
        .unwrap();
    assert!(store.wait_subscribed(Duration::from_secs(5)).await);
    let mut inv = store.invalidations();
    // Enough users and sessions that keys land on every node.
    let mut sids = Vec::new();
    for i in 0..12 {
        let c = store
            .create(login(&format!("user{}", i % 4)))
            .await
            .unwrap();
        sids.push(c.record.sid);
    }
    for sid in &sids[..] {
        // max_per_user 3 of 3 sessions per user: none evicted.
        assert!(store.get(sid).await.unwrap().is_some());
    }
    let on_node: Vec<i64> = setup
        .nodes
        .iter()
        .map(|n| redis::cmd("DBSIZE").query(&mut n.raw()).unwrap())
        .collect();
    assert!(
        on_node.iter().all(|n| *n > 0),
        "keys on every node: {on_node:?}"
    );
    let c = store.create(login("user0")).await.unwrap();
    assert_eq!(c.evicted, vec![sids[0]], "max_per_user across slots");
    let r = store.get(&c.record.sid).await.unwrap().unwrap();
    assert!(store.update(&r).await.unwrap());
    assert!(store.touch(&r).await.unwrap().is_some());
    store.put_handover("code", b"p").await.unwrap();
    assert_eq!(
        store.take_handover("code").await.unwrap().as_deref(),
        Some(&b"p"[..])
    );
    let lock = store
        .try_lock("l", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert!(store
        .try_lock("l", Duration::from_secs(5))
        .await
        .unwrap()
        .is_none());
    store.unlock(&lock).await.unwrap();
    let ended = store
        .delete_user(&UserKey::new("corp", "sub-user1"))
        .await
        .unwrap();
    assert_eq!(ended.len(), 3);
    store.ping().await.unwrap();
    // The eviction above was broadcast on the cluster bus and came back to the subscriber.
    let got = tokio::time::timeout(Duration::from_secs(2), inv.next()).await;
    assert_eq!(got.unwrap(), Some(Invalidation::Session(sids[0])));
}

#[tokio::test]
async fn redis_over_tls_verifies_the_server() {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
    let tls_port = redis_support::free_port();
    let _server = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "no",
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        cert_file.to_str().unwrap(),
        "--tls-key-file",
        key_file.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}/");
    let clock = ManualClock::new();

    let mut trusted = RedisSettings::new(RedisTarget::Url(url.clone()));
    trusted.ca_pem = Some(cert.cert.pem().into_bytes());
    let store = RedisStore::connect(trusted, settings(), keys(), clock.clone())
        .await
        .unwrap();
    let sid = eventually(Duration::from_secs(5), || store.create(login("alice")))
        .await
        .record
        .sid;
    assert!(store.get(&sid).await.unwrap().is_some());
    assert!(store.wait_subscribed(Duration::from_secs(5)).await);

    // The system roots do not know this self-signed certificate: refused.
    let untrusted = RedisStore::connect(
        RedisSettings::new(RedisTarget::Url(url)),
        settings(),
        keys(),
        clock,
    )
    .await
    .unwrap();
    assert!(untrusted.ping().await.is_err());
}
