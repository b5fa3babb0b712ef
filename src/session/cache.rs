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

/// Entries in a map split into locked shards (this cache's and the opened cookies').
pub(super) fn entries<K, V, S>(shards: &[RwLock<HashMap<K, V, S>>]) -> usize {
    shards
        .iter()
        .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
        .sum()
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

    /// Sessions cached now (fallback entries included).
    pub fn len(&self) -> usize {
        entries(&self.shards)
    }

    /// Whether nothing is cached.
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
#[path = "cache_tests.rs"]
mod tests;
