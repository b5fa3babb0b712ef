//! The directory's state in Redis (`session.store: redis`), shared by every replica. Keys,
//! under the session key prefix:
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `d:c:<key>` | string | a claim (a used TOTP step, recovery code or form), with a TTL or none |
//! | `d:r:<pair>` | hash | one (user, address) pair's regulation state, expiring when it no longer matters |
//!
//! Pair keys are hashes of provider, user and address ([`super::regulation::pair_key`]):
//! Redis holds no user name or address. Each operation touches one key, so it works on a
//! Cluster as on one server.

use super::regulation::{RegulationSettings, REMEMBER};
use crate::session::{store_error, Conn, Link, RedisSettings, SharedClock, StoreError, Used};
use ::redis::{cmd, RedisResult, Script};
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// Counts a failure of a pair, as [`super::regulation::PairState::fail`] does. `ARGV`: now,
/// find_time, max_retries, ban_time, max ban, remember (all ms but max_retries). Returns the
/// new ban's length in ms, or 0.
static FAIL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local now = tonumber(ARGV[1])
local find = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
local base = tonumber(ARGV[4])
local cap = tonumber(ARGV[5])
local remember = tonumber(ARGV[6])
local v = redis.call('HMGET', KEYS[1], 'fails', 'start', 'until', 'bans')
local fails = tonumber(v[1]) or 0
local start = tonumber(v[2]) or 0
local ban_until = tonumber(v[3]) or 0
local bans = tonumber(v[4]) or 0
if ban_until > now then return 0 end
if fails == 0 or start + find <= now then
  fails = 0
  start = now
end
fails = fails + 1
local ban = 0
if fails >= max then
  bans = bans + 1
  ban = base * 2 ^ math.min(bans - 1, 32)
  if ban > cap then ban = math.max(cap, base) end
  ban_until = now + ban
  fails = 0
  start = 0
end
redis.call('HSET', KEYS[1], 'fails', fails, 'start', start, 'until', ban_until, 'bans', bans)
local forget = start + find
if bans > 0 and ban_until + remember > forget then forget = ban_until + remember end
redis.call('PEXPIREAT', KEYS[1], math.floor(forget))
return math.floor(ban)",
    )
});

/// The Redis backend of [`super::state::DirectoryState`].
pub struct RedisState {
    link: Arc<Link>,
    prefix: String,
    op_timeout: Duration,
    clock: SharedClock,
}

impl RedisState {
    pub fn new(settings: &RedisSettings, clock: SharedClock) -> Result<RedisState, StoreError> {
        Ok(RedisState {
            link: Arc::new(Link::new(settings)?),
            prefix: format!("{}d:", settings.key_prefix),
            op_timeout: settings.op_timeout,
            clock,
        })
    }

    /// Runs one operation, bounded by the operation timeout (as the session store does).
    async fn run<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let mut used: Used = None;
        let attempt = async {
            let (conn, u) = self.link.conn().await?;
            used = u;
            f(conn).await
        };
        match tokio::time::timeout(self.op_timeout, attempt).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.is_timeout() => {
                self.link.failed(&used, Some(&e));
                Err(StoreError::Timeout {
                    op,
                    after: self.op_timeout,
                })
            }
            Ok(Err(e)) => {
                self.link.failed(&used, Some(&e));
                Err(store_error(op, e))
            }
            Err(_) => {
                self.link.failed(&used, None);
                Err(StoreError::Timeout {
                    op,
                    after: self.op_timeout,
                })
            }
        }
    }

    pub async fn claim(&self, key: &str, ttl: Option<Duration>) -> Result<bool, StoreError> {
        let mut c = cmd("SET");
        c.arg(format!("{}c:{key}", self.prefix)).arg(1).arg("NX");
        if let Some(ttl) = ttl {
            c.arg("PX")
                .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        }
        let done: Option<String> = self
            .run("directory_claim", |mut conn| async move {
                c.query_async(&mut conn).await
            })
            .await?;
        Ok(done.is_some())
    }

    pub async fn banned(&self, pair: &str) -> Result<Option<u64>, StoreError> {
        let key = format!("{}r:{pair}", self.prefix);
        let until: Option<u64> = self
            .run("directory_banned", |mut conn| async move {
                cmd("HGET")
                    .arg(&key)
                    .arg("until")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let now = self.clock.now_ms();
        Ok(until.filter(|u| *u > now).map(|u| u - now))
    }

    pub async fn fail(
        &self,
        pair: &str,
        s: &RegulationSettings,
    ) -> Result<Option<u64>, StoreError> {
        let key = format!("{}r:{pair}", self.prefix);
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let now = self.clock.now_ms();
        let args = (
            now,
            ms(s.find_time),
            s.max_retries,
            ms(s.ban_time),
            ms(super::regulation::MAX_BAN),
            ms(REMEMBER),
        );
        let ban: u64 = self
            .run("directory_fail", |mut conn| async move {
                FAIL.key(&key)
                    .arg(args.0)
                    .arg(args.1)
                    .arg(args.2)
                    .arg(args.3)
                    .arg(args.4)
                    .arg(args.5)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok((ban > 0).then_some(ban))
    }

    pub async fn succeed(&self, pair: &str) -> Result<(), StoreError> {
        let key = format!("{}r:{pair}", self.prefix);
        let _: i64 = self
            .run("directory_reset", |mut conn| async move {
                cmd("DEL").arg(&key).query_async(&mut conn).await
            })
            .await?;
        Ok(())
    }
}
