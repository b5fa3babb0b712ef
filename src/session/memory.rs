//! The in-process store (`session.store: memory`): for a single instance. Bounded: past its
//! capacity it first drops expired entries, then the session closest to its end. Records are
//! kept as values (this process's memory is not a dump anyone reads), handover payloads as
//! given, keyed by the hash of their code.

use super::clock::{millis, SharedClock};
use super::record::{SessionId, SessionRecord, UserKey};
use super::store::{
    Created, Invalidation, Invalidations, Lock, SessionStore, StoreError, StoreSettings,
    HANDOVER_TTL,
};
use async_trait::async_trait;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::broadcast;

/// Default bound on sessions kept.
pub const DEFAULT_CAPACITY: usize = 100_000;
/// Bound on live locks and on live hand-over codes, each.
const SMALL_CAPACITY: usize = 10_000;

/// The in-process session store. Cloning shares it.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    settings: StoreSettings,
    clock: SharedClock,
    capacity: usize,
    tx: broadcast::Sender<Invalidation>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<SessionId, Stored>,
    /// Per user: (created ms, sid), in creation order. Entries of ended sessions are pruned
    /// when the user next logs in or is listed.
    users: HashMap<UserKey, Vec<(u64, SessionId)>>,
    locks: HashMap<String, ([u8; 16], u64)>,
    handovers: HashMap<[u8; 32], (u64, Vec<u8>)>,
}

struct Stored {
    record: SessionRecord,
    /// When the session ends: the earlier of `expires_at` and the idle deadline (Unix ms).
    deadline_ms: u64,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("settings", &self.inner.settings)
            .field("capacity", &self.inner.capacity)
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// A store for at most `capacity` sessions.
    pub fn new(settings: StoreSettings, capacity: usize, clock: SharedClock) -> MemoryStore {
        let (tx, _) = broadcast::channel(1024);
        MemoryStore {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                settings,
                clock,
                capacity: capacity.max(1),
                tx,
            }),
        }
    }

    /// Sessions currently held, expired or not (for tests and metrics).
    pub fn len(&self) -> usize {
        self.state().sessions.len()
    }

    /// Whether no session is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The state. A panic while holding the lock cannot leave it half-changed in a way that
    /// matters (each operation is a few map edits), so a poisoned lock is simply taken over.
    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    fn announce(&self, sid: SessionId) {
        // No receiver is fine: nobody caches.
        let _ = self.inner.tx.send(Invalidation::Session(sid));
    }
}

fn code_hash(code: &str) -> [u8; 32] {
    Sha256::digest(code.as_bytes()).into()
}

impl State {
    fn live(&self, sid: &SessionId, now_ms: u64) -> bool {
        self.sessions
            .get(sid)
            .is_some_and(|s| s.deadline_ms > now_ms)
    }

    /// Makes room for one more session: expired ones go first, then the one nearest its end.
    fn make_room(&mut self, capacity: usize, now_ms: u64) -> Option<SessionId> {
        if self.sessions.len() < capacity {
            return None;
        }
        self.sessions.retain(|_, s| s.deadline_ms > now_ms);
        if self.sessions.len() < capacity {
            return None;
        }
        let victim = self
            .sessions
            .iter()
            .min_by_key(|(_, s)| s.deadline_ms)
            .map(|(sid, _)| *sid)?;
        self.sessions.remove(&victim);
        Some(victim)
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(&self, mut record: SessionRecord) -> Result<Created, StoreError> {
        let settings = self.inner.settings;
        let now_ms = self.now_ms();
        let now = now_ms / 1000;
        let end = now.saturating_add(settings.lifetime.as_secs());
        record.created_at = now;
        record.last_seen = now;
        record.expires_at = match record.expires_at {
            0 => end,
            e => e.min(end),
        };
        let deadline_ms = settings.deadline_ms(record.expires_at, now_ms);
        let sid = record.sid;
        let user = record.user_key();

        let mut evicted = Vec::new();
        let squeezed;
        {
            let mut st = self.state();
            squeezed = st.make_room(self.inner.capacity, now_ms);
            st.sessions.insert(
                sid,
                Stored {
                    record: record.clone(),
                    deadline_ms,
                },
            );
            let mut index = st.users.remove(&user).unwrap_or_default();
            index.retain(|(_, s)| st.live(s, now_ms));
            index.push((now_ms, sid));
            if settings.max_per_user > 0 && index.len() > settings.max_per_user {
                let excess = index.len() - settings.max_per_user;
                for (_, old) in index.drain(..excess) {
                    st.sessions.remove(&old);
                    evicted.push(old);
                }
            }
            st.users.insert(user, index);
        }
        for sid in evicted.iter().chain(squeezed.iter()) {
            self.announce(*sid);
        }
        Ok(Created { record, evicted })
    }

    async fn get(&self, sid: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let now_ms = self.now_ms();
        let mut st = self.state();
        match st.sessions.get(sid) {
            Some(s) if s.deadline_ms > now_ms => Ok(Some(s.record.clone())),
            Some(_) => {
                st.sessions.remove(sid);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn update(&self, record: &SessionRecord) -> Result<bool, StoreError> {
        let now_ms = self.now_ms();
        let mut st = self.state();
        match st.sessions.get_mut(&record.sid) {
            Some(s) if s.deadline_ms > now_ms => {
                let kept = (s.record.created_at, s.record.expires_at, s.record.last_seen);
                s.record = record.clone();
                (s.record.created_at, s.record.expires_at, s.record.last_seen) = kept;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn touch(&self, record: &SessionRecord) -> Result<Option<u64>, StoreError> {
        let now_ms = self.now_ms();
        let mut st = self.state();
        match st.sessions.get_mut(&record.sid) {
            Some(s) if s.deadline_ms > now_ms => {
                let deadline = self.inner.settings.deadline_ms(s.record.expires_at, now_ms);
                if deadline > s.deadline_ms {
                    s.deadline_ms = deadline;
                    s.record.last_seen = now_ms / 1000;
                }
                Ok(Some(s.record.last_seen))
            }
            _ => Ok(None),
        }
    }

    async fn delete(&self, sid: &SessionId) -> Result<(), StoreError> {
        self.state().sessions.remove(sid);
        self.announce(*sid);
        Ok(())
    }

    async fn delete_user(&self, user: &UserKey) -> Result<Vec<SessionId>, StoreError> {
        let ended: Vec<SessionId> = {
            let mut st = self.state();
            let index = st.users.remove(user).unwrap_or_default();
            index
                .into_iter()
                .filter_map(|(_, sid)| st.sessions.remove(&sid).map(|_| sid))
                .collect()
        };
        for sid in &ended {
            self.announce(*sid);
        }
        Ok(ended)
    }

    async fn list_user(&self, user: &UserKey) -> Result<Vec<SessionRecord>, StoreError> {
        let now_ms = self.now_ms();
        let mut st = self.state();
        let mut index = st.users.remove(user).unwrap_or_default();
        index.retain(|(_, s)| st.live(s, now_ms));
        let records = index
            .iter()
            .filter_map(|(_, sid)| st.sessions.get(sid).map(|s| s.record.clone()))
            .collect();
        if !index.is_empty() {
            st.users.insert(*user, index);
        }
        Ok(records)
    }

    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<Lock>, StoreError> {
        let now_ms = self.now_ms();
        let mut st = self.state();
        if st.locks.get(name).is_some_and(|(_, d)| *d > now_ms) {
            return Ok(None);
        }
        if st.locks.len() >= SMALL_CAPACITY {
            st.locks.retain(|_, (_, d)| *d > now_ms);
            if st.locks.len() >= SMALL_CAPACITY {
                return Err(StoreError::Full { op: "try_lock" });
            }
        }
        let lock = Lock::new(name);
        st.locks.insert(
            name.to_string(),
            (lock.token, now_ms.saturating_add(millis(ttl))),
        );
        Ok(Some(lock))
    }

    async fn unlock(&self, lock: &Lock) -> Result<(), StoreError> {
        let mut st = self.state();
        if st
            .locks
            .get(&lock.name)
            .is_some_and(|(t, _)| *t == lock.token)
        {
            st.locks.remove(&lock.name);
        }
        Ok(())
    }

    async fn put_handover(&self, code: &str, payload: &[u8]) -> Result<(), StoreError> {
        let now_ms = self.now_ms();
        let mut st = self.state();
        if st.handovers.len() >= SMALL_CAPACITY {
            st.handovers.retain(|_, (d, _)| *d > now_ms);
            if st.handovers.len() >= SMALL_CAPACITY {
                return Err(StoreError::Full { op: "put_handover" });
            }
        }
        st.handovers.insert(
            code_hash(code),
            (
                now_ms.saturating_add(millis(HANDOVER_TTL)),
                payload.to_vec(),
            ),
        );
        Ok(())
    }

    async fn take_handover(&self, code: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let now_ms = self.now_ms();
        let taken = self.state().handovers.remove(&code_hash(code));
        Ok(taken.and_then(|(deadline, payload)| (deadline > now_ms).then_some(payload)))
    }

    async fn publish_invalidation(&self, sid: &SessionId) -> Result<(), StoreError> {
        self.announce(*sid);
        Ok(())
    }

    fn invalidations(&self) -> Invalidations {
        Invalidations::new(self.inner.tx.subscribe())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
