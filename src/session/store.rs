//! The session store: one trait, the same behaviour from every backend (the conformance suite
//! in `tests/session_store.rs` holds them to it).
//!
//! # Expiry
//! A session ends at the first of two deadlines: `expires_at` (absolute, at most `lifetime`
//! after creation) and the idle deadline (`idle_timeout` after the idle clock was last
//! restarted). Expired means absent: `get` never returns an expired session, whatever the
//! backend has not yet cleaned up.
//!
//! # The idle clock without a write per request
//! Restarting the idle clock ([`SessionStore::touch`]) is a write, so it happens only when the
//! per-process cache refreshes a session from the store (at most once per `cache_ttl`) *and*
//! the clock is older than [`StoreSettings::touch_interval`] (a tenth of `idle_timeout`): an
//! active session costs at most ten small writes per `idle_timeout` and replica, however many
//! requests it makes, and a cache hit costs nothing. The price is precision: the store may see
//! activity up to one interval plus `cache_ttl` late, so a session can end that much *before*
//! it has truly been idle for `idle_timeout` — never after: `idle_timeout` stays a hard upper
//! bound on inactivity.

use super::record::{SessionId, SessionRecord, UserKey};
use async_trait::async_trait;
use std::time::Duration;
use tokio::sync::broadcast;

/// How long a hand-over code lives (SPEC §5 "Hosts": single use, 30 s).
pub const HANDOVER_TTL: Duration = Duration::from_secs(30);

/// What the store enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StoreSettings {
    /// Absolute lifetime of a session from its creation.
    pub lifetime: Duration,
    /// A session ends after this long without activity.
    pub idle_timeout: Duration,
    /// Sessions one user may hold; creating one more ends the oldest. 0 = no limit.
    pub max_per_user: usize,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            lifetime: Duration::from_secs(12 * 3600),
            idle_timeout: Duration::from_secs(3600),
            max_per_user: 10,
        }
    }
}

impl StoreSettings {
    /// How stale the idle clock may get before a request restarts it.
    pub fn touch_interval(&self) -> Duration {
        (self.idle_timeout / 10).max(Duration::from_secs(1))
    }

    /// Whether a request at `now_secs` should restart `record`'s idle clock: the clock is at
    /// least one interval old, and restarting it would actually move the session's end (near
    /// the end of its lifetime it would not).
    pub fn touch_due(&self, record: &SessionRecord, now_secs: u64) -> bool {
        let idle = self.idle_timeout.as_secs();
        now_secs.saturating_sub(record.last_seen) >= self.touch_interval().as_secs()
            && record.last_seen.saturating_add(idle) < record.expires_at
    }

    /// The moment (Unix ms) a session whose idle clock restarts at `from_ms` ends.
    pub fn deadline_ms(&self, expires_at: u64, from_ms: u64) -> u64 {
        let idle = u64::try_from(self.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        from_ms
            .saturating_add(idle)
            .min(expires_at.saturating_mul(1000))
    }

    /// Checks the settings make sense together (idle timeout within the lifetime ...).
    pub fn validate(&self) -> Result<(), String> {
        if self.lifetime < Duration::from_secs(1) || self.idle_timeout < Duration::from_secs(1) {
            return Err("lifetime and idle_timeout must be at least 1s".into());
        }
        Ok(())
    }
}

/// Why a store operation failed. `op` names the operation for
/// `portcullis_store_errors_total{op}`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached (connection refused, dropped, failing over).
    #[error("session store unavailable during {op}: {source}")]
    Unavailable {
        /// The operation.
        op: &'static str,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The backend did not answer in time (whether the operation's own deadline or the
    /// connection's connect or response timeout noticed it first).
    #[error("session store did not answer {op} within {after:?}")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The deadline that ran out.
        after: Duration,
    },
    /// The backend answered with an error (out of memory, wrong type, unknown command …).
    #[error("session store refused {op}: {source}")]
    Refused {
        /// The operation.
        op: &'static str,
        /// What the backend said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The in-process store is full of live entries of this kind.
    #[error("session store is full ({op})")]
    Full {
        /// The operation.
        op: &'static str,
    },
    /// A record could not be encoded.
    #[error("session record could not be encoded: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// The store's settings are unusable (bad URL, …).
    #[error("invalid session store settings: {0}")]
    Settings(String),
}

impl StoreError {
    /// Whether the same operation, sent again at once, may well succeed: the backend could not
    /// be reached (connection refused or dropped, a failover, Redis still loading its data
    /// after a restart). A connection broken by a restart is noticed only by the command that
    /// uses it, and that failure is what starts the reconnection a second attempt then waits
    /// for. A [`Timeout`](StoreError::Timeout) is not retryable: that attempt already waited
    /// the whole operation timeout, often on a live but slow connection, and a second one would
    /// double the wait while adding load. Nothing else is: the backend answered.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    /// The operation that failed, for metrics.
    pub fn op(&self) -> &'static str {
        match self {
            StoreError::Unavailable { op, .. }
            | StoreError::Timeout { op, .. }
            | StoreError::Refused { op, .. }
            | StoreError::Full { op } => op,
            StoreError::Encode(_) => "encode",
            StoreError::Settings(_) => "connect",
        }
    }
}

/// The result of creating a session.
#[derive(Debug, Clone)]
pub struct Created {
    /// The stored session, with its times set.
    pub record: SessionRecord,
    /// Sessions of the same user ended to stay within `max_per_user`, oldest first. They are
    /// already deleted and their invalidation published.
    pub evicted: Vec<SessionId>,
}

/// A held lock; give it back to [`SessionStore::unlock`]. Only its holder can unlock it, so
/// its token never appears in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Lock {
    pub(crate) name: String,
    pub(crate) token: [u8; 16],
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Lock {
    pub(crate) fn new(name: &str) -> Lock {
        Lock {
            name: name.to_string(),
            token: rand::random(),
        }
    }

    /// The channel's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A change every session cache must apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation {
    /// This session ended (logout, revocation, eviction).
    Session(SessionId),
    /// Invalidations may have been missed (the subscription was down or lagging): drop
    /// everything.
    All,
}

/// The invalidations published by any replica, this one included.
pub struct Invalidations(broadcast::Receiver<Invalidation>);

impl Invalidations {
    pub(crate) fn new(rx: broadcast::Receiver<Invalidation>) -> Invalidations {
        Invalidations(rx)
    }

    /// The next invalidation; `None` once the store is gone. Falling behind yields
    /// [`Invalidation::All`] rather than silently skipping.
    pub async fn next(&mut self) -> Option<Invalidation> {
        match self.0.recv().await {
            Ok(i) => Some(i),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Invalidation::All),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// Where sessions live. Every method is bounded in time: an unreachable backend is an error,
/// never a hang.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session: sets `created_at` and the idle clock to now and `expires_at` to
    /// at most `lifetime` from now (an earlier `expires_at` on the record is kept), then ends
    /// the user's oldest sessions beyond `max_per_user`.
    async fn create(&self, record: SessionRecord) -> Result<Created, StoreError>;

    /// The live session `sid`, or `None` if it never existed, ended, or expired.
    async fn get(&self, sid: &SessionId) -> Result<Option<SessionRecord>, StoreError>;

    /// Replaces the contents of a live session (after a token refresh). Its id, creation,
    /// expiry and idle clock are unchanged. `false` if the session is gone (it is not
    /// recreated).
    async fn update(&self, record: &SessionRecord) -> Result<bool, StoreError>;

    /// Restarts the idle clock of the live session `record` (never past its `expires_at`); see
    /// the module docs for when to call it. Returns the new `last_seen`, or `None` if the
    /// session is gone.
    async fn touch(&self, record: &SessionRecord) -> Result<Option<u64>, StoreError>;

    /// Ends a session and publishes its invalidation. Ending a missing session is not an error.
    async fn delete(&self, sid: &SessionId) -> Result<(), StoreError>;

    /// Ends every session of a user; returns their ids.
    async fn delete_user(&self, user: &UserKey) -> Result<Vec<SessionId>, StoreError>;

    /// The live sessions of a user, oldest first.
    async fn list_user(&self, user: &UserKey) -> Result<Vec<SessionRecord>, StoreError>;

    /// Takes the lock `name` for `ttl` if nobody holds it, e.g. so that exactly one request
    /// refreshes a session's tokens. The lock frees itself after `ttl`.
    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<Lock>, StoreError>;

    /// Frees a lock if it is still held by `lock` (not if it expired and someone else took it).
    async fn unlock(&self, lock: &Lock) -> Result<(), StoreError>;

    /// Keeps `payload` under a one-time `code` for [`HANDOVER_TTL`]. The code is a credential:
    /// stores keep only its hash.
    async fn put_handover(&self, code: &str, payload: &[u8]) -> Result<(), StoreError>;

    /// Takes the payload for `code` and forgets it, atomically: a second take finds nothing.
    async fn take_handover(&self, code: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Tells every replica's cache that `sid` ended.
    async fn publish_invalidation(&self, sid: &SessionId) -> Result<(), StoreError>;

    /// A stream of the invalidations published from now on.
    fn invalidations(&self) -> Invalidations;

    /// Whether the store answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}
