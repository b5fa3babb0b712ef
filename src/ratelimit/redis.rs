//! The Redis store: one budget per key shared by every replica.
//!
//! One round trip per check: a Lua script (EVALSHA, loaded again with EVAL's twin if Redis
//! forgot it) runs the GCRA of [`super::gcra`] atomically on one key, so it is correct on a
//! Cluster too. The script reads the time from Redis itself (`TIME`), so replicas whose clocks
//! disagree still share one exact budget. Each key expires (`PX`) when its TAT passes: its
//! state is then worthless, as a fresh key's.
//!
//! When Redis cannot answer within a short timeout the limiter answers from its local state
//! (kept in step with what Redis said), the failure counted in
//! `portcullis_store_errors_total{op="ratelimit"}`, and for the next second every check stays
//! local without trying Redis (one check then tries again): a dead Redis costs one short
//! timeout a second, never a 500 and never an open door.

use super::key::Subject;
use crate::session::{Link, RedisSettings, StoreError};
use ::redis::Script;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

/// ARGV: interval, capacity (µs). Returns {admitted, µs until the budget is whole, µs until a
/// request would be admitted}.
static GCRA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or 0
local base = math.max(tat, now)
local nxt = base + interval
local limit = now + capacity
if nxt > limit then
  return {0, base - now, nxt - limit}
end
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000))
return {1, nxt - now, 0}",
    )
});

/// How long a check waits for Redis at most.
const CHECK_TIMEOUT: Duration = Duration::from_millis(250);
/// How long after a failure checks stay local without trying Redis.
const BACKOFF_NS: u64 = 1_000_000_000;

/// What Redis said about one request (µs).
pub struct SharedOutcome {
    pub admitted: bool,
    pub reset_us: u64,
    pub retry_us: u64,
}

/// One limiter's way to Redis.
pub struct Shared {
    link: Link,
    prefix: String,
    timeout: Duration,
    /// Local time (ns) until which checks do not try Redis; 0 while Redis answers.
    down_until: AtomicU64,
}

impl Shared {
    /// Prepares (without connecting) the way to Redis for limiter `name`. Must run inside a
    /// Tokio runtime (the background one).
    pub fn new(settings: &RedisSettings, name: &str) -> Result<Shared, StoreError> {
        Ok(Shared {
            link: Link::new(settings)?,
            prefix: format!("{}rl:{name}:", settings.key_prefix),
            timeout: settings.op_timeout.min(CHECK_TIMEOUT),
            down_until: AtomicU64::new(0),
        })
    }

    /// Runs the script for `subject`, or `None` when Redis is not to be asked or did not
    /// answer (counted).
    pub async fn check(
        &self,
        subject: &Subject<'_>,
        name: &str,
        interval_us: u64,
        capacity_us: u64,
        now_ns: u64,
    ) -> Option<SharedOutcome> {
        let down = self.down_until.load(Ordering::Relaxed);
        if down != 0 {
            // Only one check a second tries Redis again; the others stay local.
            let due = now_ns >= down
                && self
                    .down_until
                    .compare_exchange(
                        down,
                        now_ns + BACKOFF_NS,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    )
                    .is_ok();
            if !due {
                count_error();
                return None;
            }
        }
        let key = format!("{}{}", self.prefix, subject.shared_key(name));
        let attempt = async {
            let (mut conn, used) = self.link.conn().await?;
            let r: ::redis::RedisResult<(u64, u64, u64)> = GCRA
                .key(&key)
                .arg(interval_us)
                .arg(capacity_us)
                .invoke_async(&mut conn)
                .await;
            if let Err(e) = &r {
                self.link.failed(&used, Some(e));
            }
            r
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok((admitted, reset_us, retry_us))) => {
                if down != 0 {
                    self.down_until.store(0, Ordering::Relaxed);
                    tracing::info!("rate limits: Redis answers again");
                }
                Some(SharedOutcome {
                    admitted: admitted == 1,
                    reset_us,
                    retry_us,
                })
            }
            failed => {
                if self.down_until.swap(now_ns + BACKOFF_NS, Ordering::Relaxed) == 0 {
                    match failed {
                        Ok(Err(e)) => tracing::warn!(error = %e,
                            "rate limits: Redis failed; limiting from local state"),
                        _ => tracing::warn!(
                            "rate limits: Redis timed out; limiting from local state"
                        ),
                    }
                }
                count_error();
                None
            }
        }
    }
}

fn count_error() {
    crate::telemetry::metrics::STORE_ERRORS
        .with_label_values(&["ratelimit"])
        .inc();
}
