//! The `rate_limited` audit event, sampled so that a flood cannot flood the log: at most one
//! line per limiter and key per [`INTERVAL_NS`], carrying the number of refusals it stands
//! for. The first refusal of a key is written at once; those that follow within the interval
//! are counted and written as one line when the interval ends (by the limiter's background
//! sweep, or by the next refusal after it). Bounded: beyond [`MAX_KEYS`] keys in one interval,
//! refusals of further keys are written together under the key `*`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// At most one line per limiter and key per this long (10 s).
pub const INTERVAL_NS: u64 = 10_000_000_000;
/// Keys remembered per limiter within one interval.
const MAX_KEYS: usize = 10_000;

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
#[derive(Default)]
pub struct Sampler {
    keys: Mutex<HashMap<u64, Tally>>,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sampler")
    }
}

impl Sampler {
    /// Notes a refusal of `key` at `now`; `facts` is called only when a new key is noted.
    pub fn refused(&self, limiter: &str, key: u64, now: u64, facts: impl FnOnce() -> Facts) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let key = if keys.contains_key(&key) || keys.len() < MAX_KEYS {
            key
        } else {
            // The overflow bucket.
            u64::MAX
        };
        match keys.get_mut(&key) {
            Some(t) if now.saturating_sub(t.since) >= INTERVAL_NS => {
                write(limiter, &t.facts, t.pending + 1);
                t.since = now;
                t.pending = 0;
            }
            Some(t) => t.pending += 1,
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
            }
        }
    }

    /// Writes the counts of intervals that have ended and forgets quiet keys.
    pub fn flush(&self, limiter: &str, now: u64) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.retain(|_, t| {
            if now.saturating_sub(t.since) < INTERVAL_NS {
                return true;
            }
            if t.pending == 0 {
                return false;
            }
            write(limiter, &t.facts, t.pending);
            t.since = now;
            t.pending = 0;
            true
        });
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
