//! The per-process session cache, in front of the store on every authenticated request.
//!
//! A hit costs no store command: one read lock on one of 16 shards, a hash of the session id's
//! first 8 bytes (it is random, so it needs no hashing), and an `Arc` clone — no allocation.
//! Entries live at most `cache_ttl` after the store last confirmed them, so a revocation that
//! this process somehow did not hear about still takes effect within `cache_ttl`; revocations
//! it does hear about (the store's pub/sub, via [`SessionCache::listen`]) take effect at once.
//! When the store is unreachable, entries confirmed within `cache_ttl` keep serving and nothing
//! else does (SPEC §5 "Failures").

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
        let slot = shard.get(sid)?;
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
            },
        );
    }

    /// Forgets one session (it ended, here or on another replica).
    pub fn invalidate(&self, sid: &SessionId) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.shard(sid)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(sid);
    }

    /// Forgets every session (invalidations may have been missed).
    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for shard in self.shards.iter() {
            shard
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
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
    /// interval plus `cache_ttl`. When the store fails, an entry confirmed within `cache_ttl`
    /// still serves (a request racing its refresh); otherwise the store's error is returned.
    pub async fn load(
        &self,
        store: &dyn SessionStore,
        sid: &SessionId,
    ) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        if let Some(hit) = self.get(sid) {
            return Ok(Some(hit));
        }
        let cached = self.peek(sid);
        let epoch = self.epoch.load(Ordering::Acquire);
        let fallback = |e: StoreError| {
            let now_ms = self.clock.now_ms();
            match &cached {
                Some((record, verified)) if self.servable(record, *verified, now_ms) => {
                    tracing::debug!(sid = %sid.fingerprint(), error = %e,
                        "session store failed; serving the recently confirmed cached session");
                    Ok(Some(Arc::clone(record)))
                }
                _ => Err(e),
            }
        };
        let mut record = match store.get(sid).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                self.shard(sid)
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(sid);
                return Ok(None);
            }
            Err(e) => return fallback(e),
        };
        if self.settings.touch_due(&record, self.clock.now_secs()) {
            match store.touch(&record).await {
                Ok(Some(last_seen)) => record.last_seen = last_seen,
                Ok(None) => return Ok(None),
                Err(e) => return fallback(e),
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
                    Invalidation::All => cache.clear(),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::clock::{Clock, ManualClock};
    use crate::session::memory::MemoryStore;

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
