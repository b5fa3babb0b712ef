//! The `rate_limited` audit event, sampled so that a flood cannot flood the log: at most one
//! line per limiter and key per [`INTERVAL_NS`], carrying the number of refusals it stands
//! for. The first refusal of a key is written at once; those that follow within the interval
//! are counted and written as one line when the interval ends (by the limiter's background
//! sweep, or by the next refusal after it). Bounded: beyond [`MAX_KEYS`] keys in one interval,
//! refusals of further keys are written together under the key `*`. Sharded like the store, so
//! that a flood of refusals on many cores does not queue on one lock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// At most one line per limiter and key per this long (10 s).
pub const INTERVAL_NS: u64 = 10_000_000_000;
/// Keys remembered per limiter within one interval.
const MAX_KEYS: usize = 10_000;
const SHARDS: usize = 16;

/// What a line says besides the count.
#[derive(Debug, Clone)]
pub struct Facts {
    pub key: String,
    pub client_ip: Option<IpAddr>,
    pub route: String,
    pub user: Option<String>,
}

struct Tally {
    since: u64,
    pending: u64,
    facts: Facts,
}

/// One limiter's refusals not yet written.
pub struct Sampler {
    shards: [Mutex<HashMap<u64, Tally>>; SHARDS],
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sampler")
    }
}

impl Sampler {
    /// Notes a refusal of `key` at `now`; `facts` is called only when a new key is noted.
    /// Returns the count of the line written, if one was.
    pub fn refused(
        &self,
        limiter: &str,
        key: u64,
        now: u64,
        facts: impl FnOnce() -> Facts,
    ) -> Option<u64> {
        let shard = &self.shards[(key >> 48) as usize % SHARDS];
        let mut keys = shard.lock().unwrap_or_else(|p| p.into_inner());
        let key = if keys.contains_key(&key) || keys.len() < MAX_KEYS / SHARDS {
            key
        } else {
            // The overflow bucket.
            u64::MAX
        };
        match keys.get_mut(&key) {
            Some(t) if now.saturating_sub(t.since) >= INTERVAL_NS => {
                let count = t.pending + 1;
                write(limiter, &t.facts, count);
                t.since = now;
                t.pending = 0;
                Some(count)
            }
            Some(t) => {
                t.pending += 1;
                None
            }
            None => {
                let mut facts = facts();
                if key == u64::MAX {
                    facts = Facts {
                        key: "*".into(),
                        client_ip: None,
                        route: facts.route,
                        user: None,
                    };
                }
                write(limiter, &facts, 1);
                keys.insert(
                    key,
                    Tally {
                        since: now,
                        pending: 0,
                        facts,
                    },
                );
                Some(1)
            }
        }
    }

    /// Writes the counts of intervals that have ended and forgets quiet keys. Returns the
    /// counts written.
    pub fn flush(&self, limiter: &str, now: u64) -> Vec<u64> {
        let mut written = Vec::new();
        for shard in &self.shards {
            let mut keys = shard.lock().unwrap_or_else(|p| p.into_inner());
            Self::flush_shard(&mut keys, limiter, now, &mut written);
        }
        written
    }

    fn flush_shard(
        keys: &mut HashMap<u64, Tally>,
        limiter: &str,
        now: u64,
        written: &mut Vec<u64>,
    ) {
        keys.retain(|_, t| {
            if now.saturating_sub(t.since) < INTERVAL_NS {
                return true;
            }
            if t.pending == 0 {
                return false;
            }
            write(limiter, &t.facts, t.pending);
            written.push(t.pending);
            t.since = now;
            t.pending = 0;
            true
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

fn write(limiter: &str, facts: &Facts, count: u64) {
    crate::telemetry::audit(
        "rate_limited",
        serde_json::json!({
            "limiter": limiter,
            "key": facts.key,
            "client_ip": facts.client_ip.map(|ip| ip.to_string()),
            "route": facts.route,
            "user": facts.user,
            "count": count,
            "reason": "rate limit exceeded",
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            key: "k".into(),
            client_ip: None,
            route: "r".into(),
            user: None,
        }
    }

    #[test]
    fn one_line_per_key_and_interval_with_the_count() {
        let s = Sampler::default();
        let t0 = 5 * INTERVAL_NS;
        assert_eq!(s.refused("l", 1, t0, facts), Some(1), "the first at once");
        for i in 1..=99 {
            assert_eq!(s.refused("l", 1, t0 + i, facts), None, "then counted");
        }
        assert_eq!(
            s.refused("l", 2, t0, facts),
            Some(1),
            "another key has its own"
        );
        assert!(
            s.flush("l", t0 + INTERVAL_NS / 2).is_empty(),
            "not before the end"
        );
        let mut written = s.flush("l", t0 + INTERVAL_NS);
        written.sort_unstable();
        assert_eq!(
            written,
            [99],
            "key 1's refusals in one line; key 2 had none more"
        );
        assert_eq!(s.len(), 1, "key 2 is forgotten");
        assert!(s.flush("l", t0 + 2 * INTERVAL_NS).is_empty());
        assert_eq!(s.len(), 0, "quiet keys go");
    }

    #[test]
    fn bounded() {
        let s = Sampler::default();
        for k in 0..(MAX_KEYS as u64 * 2) {
            s.refused("l", k.wrapping_mul(0x9E37_79B9_7F4A_7C15), 1, facts);
        }
        assert_eq!(
            s.len(),
            MAX_KEYS + SHARDS,
            "the keys, and per shard one line for all the others"
        );
    }
}
