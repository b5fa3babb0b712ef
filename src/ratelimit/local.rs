//! The local store: one TAT per key in memory, exact and bounded.
//!
//! Keys are spread over shards, each its own small lock, so checks on different keys rarely
//! wait for each other and no lock covers the whole store. A check on a known key touches one
//! map entry and allocates nothing (the key is a 64-bit hash, the value a 64-bit TAT).
//!
//! Bounded twice over:
//! - **Forgetting**: a key whose TAT has passed has its whole budget again, exactly like a key
//!   never seen, so dropping it changes no answer. [`LocalStore::sweep`] drops them (the
//!   limiter runs it every second in the background), and a full shard drops its own before
//!   taking a new key.
//! - **The cap** (`max_keys`): if a shard is still full when every key in it is active, the
//!   eighth of its keys closest to expiry (the smallest TATs, whose remaining penalty is the
//!   least) are dropped at once. Refusing new keys instead would let whoever holds
//!   `max_keys` active keys lock every newcomer out; dropping the nearly-whole ones gives each
//!   dropped key at most one early refill. Memory stays flat once the cap is reached.

use super::gcra::{self, Outcome, Params};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The map's own hasher passes the key through: it already is a keyed hash.
#[derive(Default)]
pub struct Passthrough(u64);

impl Hasher for Passthrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (the keys are `u64`); fold anything else in.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Map = HashMap<u64, u64, BuildHasherDefault<Passthrough>>;

/// One shard, alone on its cache line so that two cores locking neighbours do not contend.
#[repr(align(64))]
struct Shard {
    map: Mutex<Map>,
}

/// TATs of one limiter's keys, in memory.
pub struct LocalStore {
    shards: Box<[Shard]>,
    mask: u64,
    max_keys: usize,
    /// Keys held, over all shards: touched only when a key comes or goes, never for a check
    /// on a known key.
    held: AtomicUsize,
    evicted: AtomicU64,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("shards", &self.shards.len())
            .field("max_keys", &self.max_keys)
            .finish()
    }
}

impl LocalStore {
    /// A store for at most `max_keys` keys (at least one).
    pub fn new(max_keys: usize) -> LocalStore {
        let max_keys = max_keys.max(1);
        // Small stores stay in one shard so that the cap is exact; large ones get up to 64.
        let shards = (max_keys / 4096).clamp(1, 64).next_power_of_two().min(64);
        LocalStore {
            shards: (0..shards)
                .map(|_| Shard {
                    map: Mutex::new(Map::default()),
                })
                .collect(),
            mask: shards as u64 - 1,
            max_keys,
            held: AtomicUsize::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: u64) -> MutexGuard<'_, Map> {
        // The map indexes by the low bits and tags by the top ones: pick shards in between.
        let i = ((key >> 32) & self.mask) as usize;
        self.shards[i]
            .map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Decides a request for `key` at `now` (ticks: nanoseconds) and records it if admitted.
    pub fn check(&self, key: u64, p: &Params, now: u64) -> Outcome {
        let mut map = self.shard(key);
        if let Some(tat) = map.get_mut(&key) {
            let o = gcra::check(p, *tat, now);
            *tat = o.tat;
            return o;
        }
        let o = gcra::check(p, 0, now);
        if o.admitted {
            self.insert(&mut map, key, o.tat, now);
        }
        o
    }

    /// Raises `key`'s TAT to at least `tat` (what a shared store said), so that falling back
    /// to this store later starts from what is known.
    pub fn raise(&self, key: u64, tat: u64, now: u64) {
        if tat <= now {
            return;
        }
        let mut map = self.shard(key);
        if let Some(t) = map.get_mut(&key) {
            *t = (*t).max(tat);
            return;
        }
        self.insert(&mut map, key, tat, now);
    }

    /// Adds a new key to its shard's `map`, making room first at the cap. The cap holds over
    /// all shards together (two shards at once may each add one key: at most one over per
    /// shard).
    fn insert(&self, map: &mut Map, key: u64, tat: u64, now: u64) {
        if self.held.load(Ordering::Relaxed) >= self.max_keys {
            self.make_room(map, now);
        }
        map.insert(key, tat);
        self.held.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops the keys of a full shard: first those whose budget is whole again, and if that
    /// frees nothing, the eighth closest to expiry.
    fn make_room(&self, map: &mut Map, now: u64) {
        let before = map.len();
        map.retain(|_, tat| *tat > now);
        let expired = before - map.len();
        self.held.fetch_sub(expired, Ordering::Relaxed);
        if expired > 0 || map.is_empty() {
            return;
        }
        let mut tats: Vec<u64> = map.values().copied().collect();
        let nth = tats.len() / 8;
        let (_, threshold, _) = tats.select_nth_unstable(nth);
        let threshold = *threshold;
        let before = map.len();
        map.retain(|_, tat| *tat > threshold);
        let dropped = before - map.len();
        self.held.fetch_sub(dropped, Ordering::Relaxed);
        self.evicted.fetch_add(dropped as u64, Ordering::Relaxed);
    }

    /// Drops every key whose budget is whole again at `now`. One shard locked at a time.
    pub fn sweep(&self, now: u64) {
        for shard in self.shards.iter() {
            let mut map = shard.map.lock().unwrap_or_else(|p| p.into_inner());
            let before = map.len();
            map.retain(|_, tat| *tat > now);
            self.held.fetch_sub(before - map.len(), Ordering::Relaxed);
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys dropped at the cap while still active, since start.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn burst_then_refusal_then_refill() {
        let store = LocalStore::new(100);
        let p = Params::new(1, 60 * S, 3);
        let now = 10 * S;
        for left in [2, 1, 0] {
            let o = store.check(7, &p, now);
            assert!(o.admitted);
            assert_eq!(o.remaining, left);
        }
        let o = store.check(7, &p, now);
        assert!(!o.admitted);
        assert_eq!(gcra::ceil_secs(o.retry, S), 60);
        // Another key is untouched.
        assert!(store.check(8, &p, now).admitted);
        // A minute later, one more.
        assert!(store.check(7, &p, now + 60 * S).admitted);
        assert!(!store.check(7, &p, now + 60 * S).admitted);
    }

    #[test]
    fn expired_keys_are_swept_and_equal_new_ones() {
        let store = LocalStore::new(1000);
        let p = Params::new(1, S, 2);
        for k in 0..100 {
            store.check(k, &p, S);
        }
        assert_eq!(store.len(), 100);
        store.sweep(S + S / 2);
        assert_eq!(store.len(), 100, "TATs at 2 s are still in force at 1.5 s");
        store.sweep(2 * S);
        assert!(store.is_empty());
        let o = store.check(3, &p, 2 * S);
        assert_eq!(o.remaining, 1, "a forgotten key has its whole budget");
    }

    #[test]
    fn the_cap_holds_and_drops_the_nearest_to_expiry() {
        let cap = 64;
        let store = LocalStore::new(cap);
        // Burst 1 at 1/h: every key stays active for an hour.
        let p = Params::new(1, 3600 * S, 1);
        for k in 0..1000u64 {
            // Later keys expire later.
            assert!(store.check(k, &p, S + k).admitted);
            assert!(store.len() <= cap);
        }
        assert!(store.evicted() > 0);
        // The most recent key is still held and still refused.
        assert!(!store.check(999, &p, S + 1000).admitted);
    }

    #[test]
    fn large_stores_shard() {
        let store = LocalStore::new(1_000_000);
        assert_eq!(store.shards.len(), 64);
        let p = Params::new(1, 3600 * S, 1);
        for k in 0..200_000u64 {
            store.check(k.wrapping_mul(0x9E37_79B9_7F4A_7C15), &p, S);
        }
        assert_eq!(store.len(), 200_000, "no key dropped below the cap");
        assert_eq!(store.evicted(), 0);
    }
}
