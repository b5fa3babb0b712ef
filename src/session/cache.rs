//! The per-process session cache, in front of the store on every authenticated request.
//!
//! A hit costs no store command: one read lock on one of 16 shards, a hash of the session id's
//! first 8 bytes (it is random, so it needs no hashing), and an `Arc` clone — no allocation.
//! Entries live at most `cache_ttl` after the store last confirmed them, so a revocation that
//! this process somehow did not hear about still takes effect within `cache_ttl`; revocations
//! it does hear about (the store's pub/sub, via [`SessionCache::listen`]) take effect at once.
//! When the store is unreachable, entries confirmed within `cache_ttl` keep serving and nothing
//! else does (SPEC §5 "Failures").
//!
//! # After a gap in the invalidations
//! When the subscription comes back after an outage (or this listener fell behind), some
//! invalidations may have been missed, so the cache is *flushed* ([`SessionCache::flush`]):
//! no entry is a hit any more, and every session is read from the store again. The entries are
//! not forgotten, though: each stays as a *fallback*, used only when the store then fails to
//! answer for it, and only until its own `cache_ttl` ends. A Redis that is back but shaky
//! (loading its data, connections being re-made) thus does not turn valid sessions into 503s,
//! while a store that answers is always believed: a session revoked during the outage is
//! refused as soon as Redis answers for it.
//!
//! # One retry
//! A store read that fails because the store could not be reached
//! ([`StoreError::is_retryable`]) is sent once more, at once, before falling back or failing:
//! a connection broken by a Redis restart is noticed only by the command that uses it, and
//! that failure starts the reconnection the second attempt waits for. No sleep, no loop: a
//! lookup waits at most two operation timeouts (a connection error is in practice immediate,
//! and timeouts are not retried).

use super::clock::{millis, SharedClock};
use super::record::{SessionId, SessionRecord};
use super::store::{Invalidation, Invalidations, SessionStore, StoreError, StoreSettings};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

const SHARDS: usize = 16;

/// Default `session.cache_ttl`.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(10);
/// Default bound on cached sessions.
pub const DEFAULT_CACHE_CAPACITY: usize = 100_000;

/// Hashes a [`SessionId`] by taking its first 8 (random) bytes.
#[derive(Default)]
struct SidHasher(u64);

impl Hasher for SidHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut first = [0u8; 8];
        let n = bytes.len().min(8);
        first[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(first);
    }
}

type Shard = HashMap<SessionId, Slot, BuildHasherDefault<SidHasher>>;

struct Slot {
    record: Arc<SessionRecord>,
    /// When the store last confirmed this session (Unix ms).
    verified_ms: u64,
    /// Kept through a [`flush`](SessionCache::flush): never a hit, only a fallback for when the
    /// store fails, until `verified_ms + cache_ttl`.
    fallback_only: bool,
}

/// Bounded, expiring cache of live sessions.
pub struct SessionCache {
    shards: Box<[RwLock<Shard>]>,
    per_shard: usize,
    ttl_ms: u64,
    settings: StoreSettings,
    clock: SharedClock,
    /// Bumped by every invalidation, so a load that started before one cannot put back what
    /// it removed.
    epoch: AtomicU64,
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache")
            .field("ttl_ms", &self.ttl_ms)
            .field("capacity", &(self.per_shard * SHARDS))
            .field("len", &self.len())
            .finish()
    }
}

impl SessionCache {
    /// A cache of at most `capacity` sessions, each trusted for `ttl` after the store confirmed
    /// it. `settings` are the store's, for expiry and idle-clock checks.
    pub fn new(
        capacity: usize,
        ttl: Duration,
        settings: StoreSettings,
        clock: SharedClock,
    ) -> SessionCache {
        SessionCache {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            ttl_ms: millis(ttl),
            settings,
            clock,
            epoch: AtomicU64::new(0),
        }
    }

    fn shard(&self, sid: &SessionId) -> &RwLock<Shard> {
        &self.shards[usize::from(sid.as_bytes()[15]) % SHARDS]
    }

    /// Whether `record` may serve a request at `now_ms` on the strength of a confirmation at
    /// `verified_ms`.
    fn servable(&self, record: &SessionRecord, verified_ms: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(verified_ms) < self.ttl_ms
            && self
                .settings
                .deadline_ms(record.expires_at, record.last_seen.saturating_mul(1000))
                > now_ms
    }

    /// The entry for `sid`, hit or fallback, with when it was confirmed.
    fn peek(&self, sid: &SessionId) -> Option<(Arc<SessionRecord>, u64)> {
        let shard = self
            .shard(sid)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        shard
            .get(sid)
            .map(|slot| (Arc::clone(&slot.record), slot.verified_ms))
    }

    /// The cached session if it may serve a request now without asking the store: confirmed
    /// within `cache_ttl` and not expired. The idle clock is restarted only when the entry is
    /// refreshed from the store (see [`load`](Self::load)), so a hit never costs a command.
    pub fn get(&self, sid: &SessionId) -> Option<Arc<SessionRecord>> {
        let now_ms = self.clock.now_ms();
        let shard = self
            .shard(sid)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let slot = shard.get(sid).filter(|slot| !slot.fallback_only)?;
        self.servable(&slot.record, slot.verified_ms, now_ms)
            .then(|| Arc::clone(&slot.record))
    }

    /// Caches `record` as confirmed by the store now.
    pub fn insert(&self, record: Arc<SessionRecord>) {
        let epoch = self.epoch.load(Ordering::Acquire);
        self.insert_unless_invalidated(record, epoch);
    }

    /// Inserts unless an invalidation happened since `epoch` was read.
    fn insert_unless_invalidated(&self, record: Arc<SessionRecord>, epoch: u64) {
        let now_ms = self.clock.now_ms();
        let mut shard = self
            .shard(&record.sid)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Checked under the shard lock: `invalidate` bumps the epoch before taking it, so an
        // invalidation either is seen here or removes the entry after this insert.
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if shard.len() >= self.per_shard && !shard.contains_key(&record.sid) {
            shard.retain(|_, s| now_ms.saturating_sub(s.verified_ms) < self.ttl_ms);
            if shard.len() >= self.per_shard {
                if let Some(victim) = shard.keys().next().copied() {
                    shard.remove(&victim);
                }
            }
        }
        shard.insert(
            record.sid,
            Slot {
                record,
                verified_ms: now_ms,
                fallback_only: false,
            },
        );
    }

    /// Forgets one session (it ended, here or on another replica), fallback included.
    pub fn invalidate(&self, sid: &SessionId) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.shard(sid)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(sid);
    }

    /// Stops trusting every entry (invalidations may have been missed: the subscription was
    /// down, or this listener fell behind), without forgetting them outright.
    ///
    /// No entry is a cache hit any more: the next request for each session asks the store, and
    /// the store's answer wins, whatever it is (the session, changed or not, is cached afresh;
    /// its absence removes the entry). An entry still within `cache_ttl` of its last
    /// confirmation is kept as a *fallback*, served only when the store cannot answer for it
    /// (see [`load`](Self::load)), and only until that same `cache_ttl` ends: never longer than
    /// it would have served as a hit. Older entries are dropped now.
    ///
    /// The trade-off: a session revoked while this process was not listening may still be
    /// served for the rest of its `cache_ttl`, but only while the store is failing; that is
    /// exactly SPEC §5's promise for an unreachable Redis ("sessions recently verified by this
    /// process keep working for at most `session.cache_ttl`"), and it spares valid sessions a
    /// 503 while Redis comes back (loading its data, connections being re-made).
    pub fn flush(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let now_ms = self.clock.now_ms();
        for shard in self.shards.iter() {
            shard
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|_, slot| {
                    slot.fallback_only = true;
                    now_ms.saturating_sub(slot.verified_ms) < self.ttl_ms
                });
        }
    }

    /// Removes the entry for `sid`, fallback included: the store said the session is gone.
    fn forget(&self, sid: &SessionId) {
        self.shard(sid)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(sid);
    }

    /// What to answer when the store failed with `error` for `sid`: the entry as it is *now*
    /// (not as it was before the store was asked: an invalidation may have removed it
    /// meanwhile, or another request refreshed it) if it was confirmed within `cache_ttl` and
    /// has not expired, hit or fallback; else the error.
    fn fallback(
        &self,
        sid: &SessionId,
        error: StoreError,
    ) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        let now_ms = self.clock.now_ms();
        match self.peek(sid) {
            Some((record, verified)) if self.servable(&record, verified, now_ms) => {
                tracing::debug!(sid = %sid.fingerprint(), error = %error,
                    "session store failed; serving the recently confirmed cached session");
                Ok(Some(record))
            }
            _ => Err(error),
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The session `sid` for a request: from the cache when it may serve, else from the store
    /// and then cached. A refresh from the store also restarts the session's idle clock when
    /// that is due, so an active session's clock lags its last request by at most the touch
    /// interval plus `cache_ttl`.
    ///
    /// A store call that could not reach the store ([`StoreError::is_retryable`]) is sent once
    /// more at once (see the module docs). When the store still fails, an entry confirmed
    /// within `cache_ttl` serves: a request racing its refresh, or a fallback kept by
    /// [`flush`](Self::flush); otherwise the store's error is returned. A store that answers
    /// always wins over the fallback.
    pub async fn load(
        &self,
        store: &dyn SessionStore,
        sid: &SessionId,
    ) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        if let Some(hit) = self.get(sid) {
            return Ok(Some(hit));
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let mut record = match retrying(sid, || store.get(sid)).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                self.forget(sid);
                return Ok(None);
            }
            Err(e) => return self.fallback(sid, e),
        };
        if self.settings.touch_due(&record, self.clock.now_secs()) {
            match retrying(sid, || store.touch(&record)).await {
                Ok(Some(last_seen)) => record.last_seen = last_seen,
                Ok(None) => {
                    self.forget(sid);
                    return Ok(None);
                }
                Err(e) => return self.fallback(sid, e),
            }
        }
        let record = Arc::new(record);
        self.insert_unless_invalidated(Arc::clone(&record), epoch);
        Ok(Some(record))
    }

    /// Applies `invalidations` to this cache until the store or the cache is dropped.
    pub fn listen(
        self: &Arc<Self>,
        mut invalidations: Invalidations,
    ) -> tokio::task::JoinHandle<()> {
        let cache: Weak<SessionCache> = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(inv) = invalidations.next().await {
                let Some(cache) = cache.upgrade() else { return };
                match inv {
                    Invalidation::Session(sid) => cache.invalidate(&sid),
                    Invalidation::All => cache.flush(),
                }
            }
        })
    }
}

/// Runs the store call `op`, and once more at once if it could not reach the store.
async fn retrying<T, F, Fut>(sid: &SessionId, op: F) -> Result<T, StoreError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    match op().await {
        Err(e) if e.is_retryable() => {
            tracing::debug!(sid = %sid.fingerprint(), error = %e,
                "session store unreachable; retrying once");
            op().await
        }
        done => done,
    }
}

#[cfg(test)]
mod tests {
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
}
