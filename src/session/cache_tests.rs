use super::*;
use crate::session::clock::{Clock, ManualClock};
use crate::session::memory::MemoryStore;
use crate::session::record::UserKey;
use crate::session::store::{Created, Lock};

fn settings() -> StoreSettings {
    StoreSettings {
        lifetime: Duration::from_secs(3600),
        idle_timeout: Duration::from_secs(600),
        max_per_user: 0,
    }
}

async fn setup() -> (Arc<ManualClock>, MemoryStore, Arc<SessionCache>, SessionId) {
    let clock = ManualClock::new();
    let store = MemoryStore::new(settings(), 100, clock.clone());
    let cache = Arc::new(SessionCache::new(
        1000,
        Duration::from_secs(10),
        settings(),
        clock.clone(),
    ));
    let created = store
        .create(SessionRecord::new("p", "s", "u"))
        .await
        .unwrap();
    (clock, store, cache, created.record.sid)
}

#[tokio::test]
async fn hit_after_load_and_expiry_after_ttl() {
    let (clock, store, cache, sid) = setup().await;
    assert!(cache.get(&sid).is_none());
    let loaded = cache.load(&store, &sid).await.unwrap().unwrap();
    assert_eq!(loaded.sid, sid);
    assert!(Arc::ptr_eq(&cache.get(&sid).unwrap(), &loaded));
    clock.advance(Duration::from_secs(10));
    assert!(cache.get(&sid).is_none(), "entries live at most cache_ttl");
}

#[tokio::test]
async fn deleted_session_is_gone_after_reload_and_invalidate_is_immediate() {
    let (_clock, store, cache, sid) = setup().await;
    cache.load(&store, &sid).await.unwrap();
    store.delete(&sid).await.unwrap();
    assert!(cache.get(&sid).is_some(), "not yet told");
    cache.invalidate(&sid);
    assert!(cache.get(&sid).is_none());
    assert!(cache.load(&store, &sid).await.unwrap().is_none());
}

#[tokio::test]
async fn listener_applies_store_invalidations() {
    let (_clock, store, cache, sid) = setup().await;
    let task = cache.listen(store.invalidations());
    cache.load(&store, &sid).await.unwrap();
    store.delete(&sid).await.unwrap();
    for _ in 0..100 {
        if cache.get(&sid).is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(cache.get(&sid).is_none());
    task.abort();
}

#[tokio::test]
async fn insert_racing_an_invalidation_is_dropped() {
    let (_clock, store, cache, sid) = setup().await;
    let record = Arc::new(store.get(&sid).await.unwrap().unwrap());
    let epoch = cache.epoch.load(Ordering::Acquire);
    cache.invalidate(&sid);
    cache.insert_unless_invalidated(record, epoch);
    assert!(cache.get(&sid).is_none());
}

#[tokio::test]
async fn idle_clock_is_restarted_through_the_store_when_due() {
    let (clock, store, cache, sid) = setup().await;
    cache.load(&store, &sid).await.unwrap();
    // Past the touch interval (60 s), with the cache refreshed every 18 s.
    for _ in 0..10 {
        clock.advance(Duration::from_secs(9));
        cache.load(&store, &sid).await.unwrap().unwrap();
    }
    let r = store.get(&sid).await.unwrap().unwrap();
    assert!(r.last_seen > r.created_at, "the store's idle clock moved");
    // Still alive long after the first idle deadline, thanks to the touches.
    for _ in 0..100 {
        clock.advance(Duration::from_secs(9));
        assert!(cache.load(&store, &sid).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn bounded() {
    let clock = ManualClock::new();
    let cache = SessionCache::new(32, Duration::from_secs(10), settings(), clock.clone());
    for _ in 0..1000 {
        let mut r = SessionRecord::new("p", "s", "u");
        r.expires_at = clock.now_secs() + 100;
        r.last_seen = clock.now_secs();
        cache.insert(Arc::new(r));
    }
    assert!(cache.len() <= 32, "{}", cache.len());
}

/// How [`FlakyStore`] fails its next `get`s and `touch`es.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Failure {
    Unreachable,
    Timeout,
    Refused,
}

impl Failure {
    fn error(self, op: &'static str) -> StoreError {
        match self {
            Failure::Unreachable => StoreError::Unavailable {
                op,
                source: "connection refused".into(),
            },
            Failure::Timeout => StoreError::Timeout {
                op,
                after: Duration::from_secs(1),
            },
            Failure::Refused => StoreError::Refused {
                op,
                source: "OOM".into(),
            },
        }
    }
}

type Hook = Box<dyn FnOnce() + Send>;

/// A memory store whose reads fail on demand, counting the attempts.
struct FlakyStore {
    inner: MemoryStore,
    /// How many of the next `get`/`touch` calls fail, how, and only those of one operation
    /// if it is named.
    failing: std::sync::Mutex<(usize, Failure, Option<&'static str>)>,
    /// Run inside the next failing call, before it fails (something happening meanwhile).
    during_failure: std::sync::Mutex<Option<Hook>>,
    calls: AtomicU64,
}

impl FlakyStore {
    fn new(inner: MemoryStore) -> FlakyStore {
        FlakyStore {
            inner,
            failing: std::sync::Mutex::new((0, Failure::Unreachable, None)),
            during_failure: std::sync::Mutex::new(None),
            calls: AtomicU64::new(0),
        }
    }

    /// The next `n` reads fail with `how`.
    fn fail(&self, n: usize, how: Failure) {
        *self.failing.lock().unwrap() = (n, how, None);
    }

    /// The next `n` calls of `op` fail with `how`; other reads succeed.
    fn fail_only(&self, op: &'static str, n: usize, how: Failure) {
        *self.failing.lock().unwrap() = (n, how, Some(op));
    }

    /// Reads made since the last call.
    fn take_calls(&self) -> u64 {
        self.calls.swap(0, Ordering::SeqCst)
    }

    fn attempt(&self, op: &'static str) -> Result<(), StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut failing = self.failing.lock().unwrap();
        if failing.0 == 0 || failing.2.is_some_and(|only| only != op) {
            return Ok(());
        }
        failing.0 -= 1;
        let how = failing.1;
        drop(failing);
        if let Some(hook) = self.during_failure.lock().unwrap().take() {
            hook();
        }
        Err(how.error(op))
    }
}

#[async_trait::async_trait]
impl SessionStore for FlakyStore {
    async fn create(&self, record: SessionRecord) -> Result<Created, StoreError> {
        self.inner.create(record).await
    }
    async fn get(&self, sid: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        self.attempt("get")?;
        self.inner.get(sid).await
    }
    async fn update(&self, record: &SessionRecord) -> Result<bool, StoreError> {
        self.inner.update(record).await
    }
    async fn touch(&self, record: &SessionRecord) -> Result<Option<u64>, StoreError> {
        self.attempt("touch")?;
        self.inner.touch(record).await
    }
    async fn delete(&self, sid: &SessionId) -> Result<(), StoreError> {
        self.inner.delete(sid).await
    }
    async fn delete_user(&self, user: &UserKey) -> Result<Vec<SessionId>, StoreError> {
        self.inner.delete_user(user).await
    }
    async fn list_user(&self, user: &UserKey) -> Result<Vec<SessionRecord>, StoreError> {
        self.inner.list_user(user).await
    }
    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<Lock>, StoreError> {
        self.inner.try_lock(name, ttl).await
    }
    async fn unlock(&self, lock: &Lock) -> Result<(), StoreError> {
        self.inner.unlock(lock).await
    }
    async fn put_handover(&self, code: &str, payload: &[u8]) -> Result<(), StoreError> {
        self.inner.put_handover(code, payload).await
    }
    async fn take_handover(&self, code: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.take_handover(code).await
    }
    async fn publish_invalidation(&self, sid: &SessionId) -> Result<(), StoreError> {
        self.inner.publish_invalidation(sid).await
    }
    fn invalidations(&self) -> Invalidations {
        self.inner.invalidations()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

/// A flaky store with one session, cached (confirmed now) in a cache of `cache_ttl` 10 s.
async fn flaky_setup() -> (Arc<ManualClock>, FlakyStore, Arc<SessionCache>, SessionId) {
    let (clock, store, cache, sid) = setup().await;
    let store = FlakyStore::new(store);
    cache.load(&store, &sid).await.unwrap().unwrap();
    store.take_calls();
    (clock, store, cache, sid)
}

#[tokio::test]
async fn flushed_entry_is_no_hit_but_serves_when_the_store_fails() {
    let (clock, store, cache, sid) = flaky_setup().await;
    let cached = cache.get(&sid).unwrap();
    clock.advance(Duration::from_secs(3));
    cache.flush();
    assert!(cache.get(&sid).is_none(), "a flushed entry is never a hit");
    assert_eq!(cache.len(), 1, "but it is kept");

    // The store cannot answer: the fallback serves, after one retry.
    store.fail(2, Failure::Unreachable);
    let served = cache.load(&store, &sid).await.unwrap().unwrap();
    assert!(Arc::ptr_eq(&served, &cached));
    assert_eq!(store.take_calls(), 2, "one retry, then the fallback");
    assert!(
        cache.get(&sid).is_none(),
        "serving it did not make it a hit"
    );

    // Any store error will do (the store did not answer for the session).
    for how in [Failure::Timeout, Failure::Refused] {
        store.fail(1, how);
        assert!(cache.load(&store, &sid).await.unwrap().is_some());
        assert_eq!(store.take_calls(), 1, "not retried");
    }

    // The store answers again: the session is confirmed and cached afresh, a hit again.
    let fresh = cache.load(&store, &sid).await.unwrap().unwrap();
    assert!(!Arc::ptr_eq(&fresh, &cached), "read from the store");
    assert!(Arc::ptr_eq(&cache.get(&sid).unwrap(), &fresh));
}

#[tokio::test]
async fn flushed_entry_serves_no_longer_than_its_cache_ttl() {
    let (clock, store, cache, sid) = flaky_setup().await;
    clock.advance(Duration::from_secs(6));
    cache.flush();
    store.fail(usize::MAX, Failure::Unreachable);
    clock.advance(Duration::from_millis(3999));
    assert!(
        cache.load(&store, &sid).await.unwrap().is_some(),
        "9.999 s after it was confirmed"
    );
    clock.advance(Duration::from_millis(1));
    let err = cache.load(&store, &sid).await.unwrap_err();
    assert!(err.is_retryable(), "the store's own error: {err}");

    // Entries already past cache_ttl when flushed are dropped at once.
    let sid2 = store
        .inner
        .create(SessionRecord::new("p", "s", "u2"))
        .await
        .unwrap()
        .record
        .sid;
    store.fail(0, Failure::Unreachable);
    cache.load(&store, &sid2).await.unwrap().unwrap();
    clock.advance(Duration::from_secs(10));
    cache.flush();
    assert_eq!(cache.len(), 0);
}

#[tokio::test]
async fn store_answer_always_wins_over_the_fallback() {
    let (_clock, store, cache, sid) = flaky_setup().await;
    let cached = cache.get(&sid).unwrap();
    let mut changed = (*cached).clone();
    changed.access_token = Some("rotated".into());
    assert!(store.inner.update(&changed).await.unwrap());
    cache.flush();
    // The first attempt fails, the retry answers: the store's record, not the fallback.
    store.fail(1, Failure::Unreachable);
    let got = cache.load(&store, &sid).await.unwrap().unwrap();
    assert_eq!(got.access_token.as_deref(), Some("rotated"));
    assert_eq!(store.take_calls(), 2);
}

#[tokio::test]
async fn session_revoked_during_the_outage_is_refused_once_the_store_answers() {
    let (_clock, store, cache, sid) = flaky_setup().await;
    // Redis goes away; the session ends meanwhile (another replica, an admin) and this
    // process never hears of it; the subscription comes back: flush.
    store.inner.delete(&sid).await.unwrap();
    cache.flush();
    // While the store still fails, the fallback serves (at most cache_ttl, SPEC §5).
    store.fail(2, Failure::Unreachable);
    assert!(cache.load(&store, &sid).await.unwrap().is_some());
    // The store answers: refused, and the fallback is gone for good.
    assert!(cache.load(&store, &sid).await.unwrap().is_none());
    store.fail(2, Failure::Unreachable);
    assert!(
        cache.load(&store, &sid).await.is_err(),
        "no fallback for a session the store said is gone"
    );
}

#[tokio::test]
async fn an_invalidation_removes_the_fallback_even_during_the_store_call() {
    let (_clock, store, cache, sid) = flaky_setup().await;
    cache.flush();
    cache.invalidate(&sid);
    store.fail(2, Failure::Unreachable);
    assert!(
        cache.load(&store, &sid).await.is_err(),
        "invalidated: no fallback"
    );

    // Cached again, flushed, and invalidated while the store is being asked.
    let (_clock, store, cache, sid) = flaky_setup().await;
    cache.flush();
    store.fail(2, Failure::Unreachable);
    let during = Arc::clone(&cache);
    *store.during_failure.lock().unwrap() = Some(Box::new(move || during.invalidate(&sid)));
    assert!(
        cache.load(&store, &sid).await.is_err(),
        "the fallback is the entry as it is when the store failed"
    );
}

#[tokio::test]
async fn only_unreachable_is_retried_and_only_once() {
    let (clock, store, cache, sid) = flaky_setup().await;
    // Uncached (past cache_ttl), so nothing to fall back on.
    clock.advance(Duration::from_secs(10));
    store.fail(1, Failure::Unreachable);
    assert!(cache.load(&store, &sid).await.unwrap().is_some());
    assert_eq!(store.take_calls(), 2, "a connection error is retried");

    clock.advance(Duration::from_secs(10));
    store.fail(2, Failure::Unreachable);
    assert!(cache.load(&store, &sid).await.is_err());
    assert_eq!(store.take_calls(), 2, "once");

    for how in [Failure::Timeout, Failure::Refused] {
        clock.advance(Duration::from_secs(10));
        store.fail(1, how);
        assert!(cache.load(&store, &sid).await.is_err());
        assert_eq!(store.take_calls(), 1, "not retried");
    }

    // A touch (the idle clock is due: 71 s since it started) is retried the same way.
    clock.advance(Duration::from_secs(31));
    let before = store.inner.get(&sid).await.unwrap().unwrap().last_seen;
    store.fail_only("touch", 1, Failure::Unreachable);
    let got = cache.load(&store, &sid).await.unwrap().unwrap();
    assert_eq!(store.take_calls(), 3, "get, touch, touch again");
    assert!(got.last_seen > before, "touched");
}

#[tokio::test]
async fn listener_flushes_on_a_gap_in_the_invalidations() {
    let clock = ManualClock::new();
    let cache = Arc::new(SessionCache::new(
        1000,
        Duration::from_secs(10),
        settings(),
        clock.clone(),
    ));
    let (tx, rx) = tokio::sync::broadcast::channel(4);
    let task = cache.listen(Invalidations::new(rx));
    let mut r = SessionRecord::new("p", "s", "u");
    r.expires_at = clock.now_secs() + 100;
    r.last_seen = clock.now_secs();
    let sid = r.sid;
    cache.insert(Arc::new(r));
    tx.send(Invalidation::All).unwrap();
    for _ in 0..100 {
        if cache.get(&sid).is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(cache.get(&sid).is_none(), "no longer a hit");
    assert_eq!(cache.len(), 1, "kept as a fallback");
    task.abort();
}

#[test]
fn sid_hasher_uses_the_first_bytes() {
    use std::hash::BuildHasher;
    let sid = SessionId::from_bytes([1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 9, 9, 9, 9, 9]);
    let b = BuildHasherDefault::<SidHasher>::default();
    assert_eq!(
        b.hash_one(sid),
        u64::from_le_bytes([1, 2, 3, 4, 5, 6, 7, 8])
    );
}
