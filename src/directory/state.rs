//! What the built-in directory remembers between requests: regulation counters, TOTP codes
//! already used, recovery codes already used, second-step forms already submitted. It lives
//! where the sessions live: in memory with `session.store: memory` (one instance; forgotten on
//! restart), in Redis with `session.store: redis` (shared by every replica, kept across
//! restarts), under the session key prefix.

use super::regulation::{PairState, RegulationSettings};
use super::state_redis::RedisState;
use crate::session::{RedisSettings, SharedClock, StoreError};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Entries the memory backend keeps of each kind at most; beyond, expired ones are dropped
/// first, then the oldest.
const MEMORY_CAPACITY: usize = 100_000;

/// The directory's shared state.
pub enum DirectoryState {
    Memory(MemoryState),
    Redis(RedisState),
}

impl std::fmt::Debug for DirectoryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DirectoryState::Memory(_) => "DirectoryState::Memory",
            DirectoryState::Redis(_) => "DirectoryState::Redis",
        })
    }
}

impl DirectoryState {
    pub fn memory(clock: SharedClock) -> DirectoryState {
        DirectoryState::Memory(MemoryState {
            clock,
            claims: Mutex::new(HashMap::new()),
            pairs: Mutex::new(HashMap::new()),
        })
    }

    /// On the Redis of the session store (connects when first used).
    pub fn redis(settings: &RedisSettings, clock: SharedClock) -> Result<DirectoryState, String> {
        RedisState::new(settings, clock)
            .map(DirectoryState::Redis)
            .map_err(|e| e.to_string())
    }

    /// Claims `key` once: `true` the first time, `false` for as long as the claim lives
    /// (`ttl`; `None`: for good). Used codes, used forms.
    pub async fn claim(&self, key: &str, ttl: Option<Duration>) -> Result<bool, StoreError> {
        match self {
            DirectoryState::Memory(m) => Ok(m.claim(key, ttl)),
            DirectoryState::Redis(r) => r.claim(key, ttl).await,
        }
    }

    /// Milliseconds left of the pair's ban, if it is banned.
    pub async fn banned(&self, pair: &str) -> Result<Option<u64>, StoreError> {
        match self {
            DirectoryState::Memory(m) => Ok(m.banned(pair)),
            DirectoryState::Redis(r) => r.banned(pair).await,
        }
    }

    /// Counts a failure of the pair; the ban's length in milliseconds when it starts one.
    pub async fn fail(
        &self,
        pair: &str,
        s: &RegulationSettings,
    ) -> Result<Option<u64>, StoreError> {
        match self {
            DirectoryState::Memory(m) => Ok(m.fail(pair, s)),
            DirectoryState::Redis(r) => r.fail(pair, s).await,
        }
    }

    /// Forgets the pair's failures and bans (after a successful login).
    pub async fn succeed(&self, pair: &str) -> Result<(), StoreError> {
        match self {
            DirectoryState::Memory(m) => {
                m.lock_pairs().remove(pair);
                Ok(())
            }
            DirectoryState::Redis(r) => r.succeed(pair).await,
        }
    }
}

/// The memory backend: two maps under locks held for a few instructions.
pub struct MemoryState {
    clock: SharedClock,
    /// Claimed keys and when their claim ends (`u64::MAX`: never).
    claims: Mutex<HashMap<String, u64>>,
    /// Regulation state by pair, and when it may be forgotten.
    pairs: Mutex<HashMap<String, (PairState, u64)>>,
}

impl MemoryState {
    fn lock_claims(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.claims.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_pairs(&self) -> std::sync::MutexGuard<'_, HashMap<String, (PairState, u64)>> {
        self.pairs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn claim(&self, key: &str, ttl: Option<Duration>) -> bool {
        let now = self.clock.now_ms();
        let mut claims = self.lock_claims();
        if claims.get(key).is_some_and(|end| *end > now) {
            return false;
        }
        if claims.len() >= MEMORY_CAPACITY {
            claims.retain(|_, end| *end > now);
            if claims.len() >= MEMORY_CAPACITY {
                // Full of live claims: drop the ones ending soonest (never the permanent ones,
                // which are used recovery codes and few).
                let mut ends: Vec<u64> = claims.values().copied().collect();
                ends.sort_unstable();
                let cut = ends[ends.len() / 10];
                claims.retain(|_, end| *end > cut);
            }
        }
        let end = ttl.map_or(u64::MAX, |t| {
            now.saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
        });
        claims.insert(key.to_string(), end);
        true
    }

    fn banned(&self, pair: &str) -> Option<u64> {
        let now = self.clock.now_ms();
        self.lock_pairs()
            .get(pair)
            .and_then(|(state, _)| state.banned(now))
    }

    fn fail(&self, pair: &str, s: &RegulationSettings) -> Option<u64> {
        let now = self.clock.now_ms();
        let mut pairs = self.lock_pairs();
        if pairs.len() >= MEMORY_CAPACITY && !pairs.contains_key(pair) {
            pairs.retain(|_, (_, forget)| *forget > now);
            if pairs.len() >= MEMORY_CAPACITY {
                // Keep the banned pairs; the counting ones are the cheapest to lose.
                pairs.retain(|_, (state, _)| state.banned(now).is_some());
            }
        }
        let entry = pairs
            .entry(pair.to_string())
            .or_insert((PairState::default(), 0));
        if entry.1 != 0 && entry.1 <= now {
            entry.0 = PairState::default();
        }
        let ban = entry.0.fail(now, s);
        entry.1 = entry.0.forget_at(s);
        ban.map(|until| until - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::ManualClock;

    #[tokio::test]
    async fn memory_claims_and_bans() {
        let clock = ManualClock::new();
        let state = DirectoryState::memory(clock.clone());
        assert!(state
            .claim("a", Some(Duration::from_secs(5)))
            .await
            .unwrap());
        assert!(!state
            .claim("a", Some(Duration::from_secs(5)))
            .await
            .unwrap());
        assert!(state.claim("forever", None).await.unwrap());
        clock.advance(Duration::from_secs(6));
        assert!(state
            .claim("a", Some(Duration::from_secs(5)))
            .await
            .unwrap());
        assert!(!state.claim("forever", None).await.unwrap());

        let s = RegulationSettings {
            max_retries: 2,
            find_time: Duration::from_secs(60),
            ban_time: Duration::from_secs(30),
        };
        assert_eq!(state.fail("p", &s).await.unwrap(), None);
        assert_eq!(state.fail("p", &s).await.unwrap(), Some(30_000));
        assert_eq!(state.banned("p").await.unwrap(), Some(30_000));
        assert_eq!(state.banned("q").await.unwrap(), None);
        state.succeed("p").await.unwrap();
        assert_eq!(state.banned("p").await.unwrap(), None);
    }
}
