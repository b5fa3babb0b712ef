//! The Redis store (`session.store: redis`), shared by every replica.
//!
//! Keys, all under `key_prefix`:
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `s:<sid>` | string | the sealed record; its Redis expiry *is* the session's end |
//! | `u:<user key>` | sorted set | the user's session ids, scored by creation time |
//! | `l:<name>` | string | a lock's holder token, with a Redis TTL |
//! | `h:<sha256(code)>` | string | a sealed hand-over payload, 30 s TTL |
//!
//! and invalidations are published on the channel `invalidate`. Session ids appear in key
//! names: an id alone is not a credential (a cookie must also be sealed with the cookie key).
//! A hand-over code is one, so only its hash is stored.
//!
//! A session's end (the earlier of `expires_at` and the idle deadline) is the record key's
//! absolute expiry (`PXAT`, read back with `PEXPIRETIME`, Redis ≥ 7.0). So restarting the idle
//! clock moves the key's expiry and writes nothing else, one key per session is all there is
//! (about 0.9 KiB for a typical login), and Redis removes ended sessions by itself. The store
//! also compares that end with its own clock, so a test clock can end sessions without
//! waiting.

use super::clock::{millis, SharedClock};
use super::keys::{Purpose, SessionKeys};
use super::record::{SessionId, SessionRecord, UserKey};
use super::redis_conn::{store_error, Conn, Link, RedisSettings, Used};
use super::store::{
    Created, Invalidation, Invalidations, Lock, SessionStore, StoreError, StoreSettings,
    HANDOVER_TTL,
};
use ::redis::aio::ConnectionLike;
use ::redis::{cmd, pipe, Cmd, FromRedisValue, RedisResult, Script};
use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::future::join_all;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// Breaks ties between sessions created in the same millisecond.
static ORDER: AtomicU64 = AtomicU64::new(0);

/// Replaces a live session's record, keeping its expiry. `ARGV`: record, now (ms).
static UPDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local d = redis.call('PEXPIRETIME', KEYS[1])
if d < 0 or d <= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
return 1",
    )
});

/// Moves a live session's end to a later deadline. `ARGV`: deadline (ms), now (ms).
static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local d = redis.call('PEXPIRETIME', KEYS[1])
if d < 0 or d <= tonumber(ARGV[2]) then return 0 end
if tonumber(ARGV[1]) > d then redis.call('PEXPIREAT', KEYS[1], ARGV[1]) end
return 1",
    )
});

/// Deletes a lock only if it still holds the caller's token.
static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0",
    )
});

/// The Redis session store. Cloning shares its connection and subscription.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    link: Arc<Link>,
    keys: Arc<SessionKeys>,
    settings: StoreSettings,
    clock: SharedClock,
    prefix: String,
    channel: String,
    op_timeout: Duration,
    tx: broadcast::Sender<Invalidation>,
    subscribed: watch::Receiver<bool>,
    subscriber: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on `redis`. Connects lazily: it is created even while Redis is down (and then
    /// [`ping`](SessionStore::ping) fails until Redis is back). Must be called inside the
    /// tokio runtime that will use it. Starts the invalidation subscriber.
    pub async fn connect(
        redis: RedisSettings,
        settings: StoreSettings,
        keys: Arc<SessionKeys>,
        clock: SharedClock,
    ) -> Result<RedisStore, StoreError> {
        settings.validate().map_err(StoreError::Settings)?;
        let link = Arc::new(Link::new(&redis)?);
        let (tx, _) = broadcast::channel(4096);
        let (subscribed_tx, subscribed) = watch::channel(false);
        let channel = format!("{}invalidate", redis.key_prefix);
        let subscriber = tokio::spawn(subscribe_loop(
            Arc::clone(&link),
            channel.clone(),
            tx.clone(),
            subscribed_tx,
            redis.op_timeout,
        ));
        Ok(RedisStore {
            inner: Arc::new(Inner {
                link,
                keys,
                settings,
                clock,
                prefix: redis.key_prefix,
                channel,
                op_timeout: redis.op_timeout,
                tx,
                subscribed,
                subscriber,
            }),
        })
    }

    /// Waits until the invalidation subscription is up, at most `within`.
    pub async fn wait_subscribed(&self, within: Duration) -> bool {
        let mut rx = self.inner.subscribed.clone();
        tokio::time::timeout(within, rx.wait_for(|up| *up))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The Redis key of a session's record (for operators and tests).
    pub fn session_key(&self, sid: &SessionId) -> String {
        format!("{}s:{}", self.inner.prefix, sid.to_text())
    }

    fn user_key(&self, user: &UserKey) -> String {
        format!("{}u:{}", self.inner.prefix, user.to_text())
    }

    fn handover_key(&self, code: &str) -> (String, [u8; 32]) {
        let hash: [u8; 32] = Sha256::digest(code.as_bytes()).into();
        (
            format!("{}h:{}", self.inner.prefix, URL_SAFE_NO_PAD.encode(hash)),
            hash,
        )
    }

    /// Runs one operation with a connection, bounded by the operation timeout.
    async fn run<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let mut used: Used = None;
        let attempt = async {
            let (conn, u) = self.inner.link.conn().await?;
            used = u;
            f(conn).await
        };
        match tokio::time::timeout(self.inner.op_timeout, attempt).await {
            Ok(Ok(v)) => Ok(v),
            // The connection's own connect or response timeout (also the operation timeout)
            // may fire before ours: a timeout either way, never worth an immediate retry.
            Ok(Err(e)) if e.is_timeout() => {
                self.inner.link.failed(&used, Some(&e));
                Err(StoreError::Timeout {
                    op,
                    after: self.inner.op_timeout,
                })
            }
            Ok(Err(e)) => {
                self.inner.link.failed(&used, Some(&e));
                Err(store_error(op, e))
            }
            Err(_) => {
                self.inner.link.failed(&used, None);
                Err(StoreError::Timeout {
                    op,
                    after: self.inner.op_timeout,
                })
            }
        }
    }

    async fn exec<T: FromRedisValue>(&self, op: &'static str, c: &Cmd) -> Result<T, StoreError> {
        self.run(op, |mut conn| async move { c.query_async(&mut conn).await })
            .await
    }

    /// The session's end (Unix ms) per its key's expiry; `None` if the key is gone.
    async fn end_of(&self, op: &'static str, key: &str) -> Result<Option<u64>, StoreError> {
        let end: i64 = self.exec(op, cmd("PEXPIRETIME").arg(key)).await?;
        Ok(u64::try_from(end).ok())
    }

    async fn publish(&self, op: &'static str, sid: &SessionId) -> Result<(), StoreError> {
        let _: i64 = self
            .exec(
                op,
                cmd("PUBLISH")
                    .arg(&self.inner.channel)
                    .arg(&sid.as_bytes()[..]),
            )
            .await?;
        Ok(())
    }

    /// The user's indexed sessions, oldest first, split into those still live and those gone.
    async fn index(
        &self,
        op: &'static str,
        ukey: &str,
    ) -> Result<(Vec<SessionId>, Vec<String>), StoreError> {
        let members: Vec<String> = self
            .exec(op, cmd("ZRANGE").arg(ukey).arg(0).arg(-1))
            .await?;
        let now_ms = self.inner.clock.now_ms();
        let ends = join_all(members.iter().map(|m| async move {
            match SessionId::from_text(m) {
                Some(sid) => self
                    .end_of(op, &self.session_key(&sid))
                    .await
                    .map(|end| end.filter(|e| *e > now_ms).map(|_| sid)),
                None => Ok(None),
            }
        }))
        .await;
        let mut live = Vec::new();
        let mut gone = Vec::new();
        for (member, end) in members.into_iter().zip(ends) {
            match end? {
                Some(sid) => live.push(sid),
                None => gone.push(member),
            }
        }
        Ok((live, gone))
    }

    /// Deletes sessions and announces their end; returns those that existed.
    async fn end_sessions(
        &self,
        op: &'static str,
        sids: &[SessionId],
    ) -> Result<Vec<SessionId>, StoreError> {
        let deleted = join_all(sids.iter().map(|sid| async move {
            let n: i64 = self.exec(op, cmd("DEL").arg(self.session_key(sid))).await?;
            self.publish(op, sid).await?;
            Ok::<_, StoreError>((n > 0).then_some(*sid))
        }))
        .await;
        deleted
            .into_iter()
            .filter_map(Result::transpose)
            .collect::<Result<Vec<_>, _>>()
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create(&self, mut record: SessionRecord) -> Result<Created, StoreError> {
        const OP: &str = "create";
        let settings = self.inner.settings;
        let now_ms = self.inner.clock.now_ms();
        let now = now_ms / 1000;
        let end = now.saturating_add(settings.lifetime.as_secs());
        record.created_at = now;
        record.last_seen = now;
        record.expires_at = match record.expires_at {
            0 => end,
            e => e.min(end),
        };
        let deadline = settings.deadline_ms(record.expires_at, now_ms);
        let sealed = record.seal(&self.inner.keys)?;
        let skey = self.session_key(&record.sid);
        let stored: Option<String> = self
            .exec(
                OP,
                cmd("SET")
                    .arg(&skey)
                    .arg(sealed)
                    .arg("PXAT")
                    .arg(deadline)
                    .arg("NX"),
            )
            .await?;
        if stored.is_none() {
            return Err(StoreError::Refused {
                op: OP,
                source: "a session with this id already exists".into(),
            });
        }

        let ukey = self.user_key(&record.user_key());
        // Scored by creation time in µs-like units: the clock's ms, then a per-process counter,
        // so two logins in the same millisecond still keep their order (exact in an f64 score).
        let score = now_ms
            .saturating_mul(1000)
            .saturating_add(ORDER.fetch_add(1, Ordering::Relaxed) % 1000);
        let mut p = pipe();
        p.cmd("ZADD")
            .arg(&ukey)
            .arg(score)
            .arg(record.sid.to_text())
            .ignore()
            .cmd("PEXPIRE")
            .arg(&ukey)
            .arg(millis(settings.lifetime).saturating_add(60_000))
            .ignore();
        self.run(OP, |mut conn| async move {
            conn.req_packed_commands(&p, 0, 0).await.map(|_| ())
        })
        .await?;

        let mut evicted = Vec::new();
        if settings.max_per_user > 0 {
            let (live, gone) = self.index(OP, &ukey).await?;
            let others: Vec<SessionId> = live.into_iter().filter(|s| *s != record.sid).collect();
            let excess = (others.len() + 1).saturating_sub(settings.max_per_user);
            let victims = &others[..excess.min(others.len())];
            let removed: Vec<String> = gone
                .into_iter()
                .chain(victims.iter().map(SessionId::to_text))
                .collect();
            if !removed.is_empty() {
                let _: i64 = self.exec(OP, cmd("ZREM").arg(&ukey).arg(&removed)).await?;
            }
            self.end_sessions(OP, victims).await?;
            evicted = victims.to_vec();
        }
        Ok(Created { record, evicted })
    }

    async fn get(&self, sid: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        const OP: &str = "get";
        let key = self.session_key(sid);
        let mut p = pipe();
        p.cmd("GET").arg(&key).cmd("PEXPIRETIME").arg(&key);
        let (sealed, end): (Option<Vec<u8>>, i64) = self
            .run(OP, |mut conn| async move { p.query_async(&mut conn).await })
            .await?;
        let now_ms = self.inner.clock.now_ms();
        let (Some(sealed), Ok(end)) = (sealed, u64::try_from(end)) else {
            return Ok(None);
        };
        if end <= now_ms {
            return Ok(None);
        }
        let Some(mut record) = SessionRecord::open(*sid, &sealed, &self.inner.keys) else {
            tracing::warn!(sid = %sid.fingerprint(),
                "session record does not open (secret removed, or tampered); treating as absent");
            return Ok(None);
        };
        let idle_ms = millis(self.inner.settings.idle_timeout);
        record.last_seen = (end.saturating_sub(idle_ms) / 1000).max(record.created_at);
        Ok(Some(record))
    }

    async fn update(&self, record: &SessionRecord) -> Result<bool, StoreError> {
        const OP: &str = "update";
        let sealed = record.seal(&self.inner.keys)?;
        let key = self.session_key(&record.sid);
        let now_ms = self.inner.clock.now_ms();
        let done: i64 = self
            .run(OP, |mut conn| async move {
                UPDATE
                    .key(&key)
                    .arg(sealed)
                    .arg(now_ms)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(done == 1)
    }

    async fn touch(&self, record: &SessionRecord) -> Result<Option<u64>, StoreError> {
        const OP: &str = "touch";
        let key = self.session_key(&record.sid);
        let now_ms = self.inner.clock.now_ms();
        let deadline = self.inner.settings.deadline_ms(record.expires_at, now_ms);
        let live: i64 = self
            .run(OP, |mut conn| async move {
                TOUCH
                    .key(&key)
                    .arg(deadline)
                    .arg(now_ms)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok((live == 1).then_some(now_ms / 1000))
    }

    async fn delete(&self, sid: &SessionId) -> Result<(), StoreError> {
        self.end_sessions("delete", std::slice::from_ref(sid))
            .await
            .map(|_| ())
    }

    async fn delete_user(&self, user: &UserKey) -> Result<Vec<SessionId>, StoreError> {
        const OP: &str = "delete_user";
        let ukey = self.user_key(user);
        let members: Vec<String> = self
            .exec(OP, cmd("ZRANGE").arg(&ukey).arg(0).arg(-1))
            .await?;
        let sids: Vec<SessionId> = members
            .iter()
            .filter_map(|m| SessionId::from_text(m))
            .collect();
        let ended = self.end_sessions(OP, &sids).await?;
        let _: i64 = self.exec(OP, cmd("DEL").arg(&ukey)).await?;
        Ok(ended)
    }

    async fn list_user(&self, user: &UserKey) -> Result<Vec<SessionRecord>, StoreError> {
        const OP: &str = "list_user";
        let ukey = self.user_key(user);
        let (live, gone) = self.index(OP, &ukey).await?;
        if !gone.is_empty() {
            let _: i64 = self.exec(OP, cmd("ZREM").arg(&ukey).arg(&gone)).await?;
        }
        let records = join_all(live.iter().map(|sid| self.get(sid))).await;
        records.into_iter().filter_map(Result::transpose).collect()
    }

    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<Lock>, StoreError> {
        let lock = Lock::new(name);
        let taken: Option<String> = self
            .exec(
                "try_lock",
                cmd("SET")
                    .arg(format!("{}l:{}", self.inner.prefix, name))
                    .arg(&lock.token[..])
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl).max(1)),
            )
            .await?;
        Ok(taken.map(|_| lock))
    }

    async fn unlock(&self, lock: &Lock) -> Result<(), StoreError> {
        let key = format!("{}l:{}", self.inner.prefix, lock.name);
        let _: i64 = self
            .run("unlock", |mut conn| async move {
                UNLOCK
                    .key(&key)
                    .arg(&lock.token[..])
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(())
    }

    async fn put_handover(&self, code: &str, payload: &[u8]) -> Result<(), StoreError> {
        let (key, hash) = self.handover_key(code);
        let deadline = self
            .inner
            .clock
            .now_ms()
            .saturating_add(millis(HANDOVER_TTL));
        let mut plain = Vec::with_capacity(8 + payload.len());
        plain.extend_from_slice(&deadline.to_be_bytes());
        plain.extend_from_slice(payload);
        let sealed = self.inner.keys.seal(Purpose::HandoverCode, &plain, &hash);
        let _: String = self
            .exec(
                "put_handover",
                cmd("SET")
                    .arg(&key)
                    .arg(sealed)
                    .arg("PX")
                    .arg(millis(HANDOVER_TTL)),
            )
            .await?;
        Ok(())
    }

    async fn take_handover(&self, code: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (key, hash) = self.handover_key(code);
        let sealed: Option<Vec<u8>> = self.exec("take_handover", cmd("GETDEL").arg(&key)).await?;
        let Some(plain) =
            sealed.and_then(|s| self.inner.keys.open(Purpose::HandoverCode, &s, &hash))
        else {
            return Ok(None);
        };
        let (deadline, payload) = plain.split_at_checked(8).unwrap_or((&[], &[]));
        let deadline = <[u8; 8]>::try_from(deadline).map_or(0, u64::from_be_bytes);
        Ok((deadline > self.inner.clock.now_ms()).then(|| payload.to_vec()))
    }

    async fn publish_invalidation(&self, sid: &SessionId) -> Result<(), StoreError> {
        self.publish("publish_invalidation", sid).await
    }

    fn invalidations(&self) -> Invalidations {
        Invalidations::new(self.inner.tx.subscribe())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self.exec("ping", &cmd("PING")).await?;
        Ok(())
    }
}

/// Keeps one subscription to the invalidation channel, forwarding what arrives. After any
/// gap in the subscription it sends [`Invalidation::All`], since messages may have been lost.
async fn subscribe_loop(
    link: Arc<Link>,
    channel: String,
    tx: broadcast::Sender<Invalidation>,
    subscribed: watch::Sender<bool>,
    op_timeout: Duration,
) {
    let mut backoff = Duration::from_millis(50);
    let mut ever = false;
    loop {
        let (clients, used) =
            match tokio::time::timeout(op_timeout, link.subscriber_clients()).await {
                Ok(Ok(found)) => found,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "session invalidations: no Redis to subscribe to");
                    (Vec::new(), None)
                }
                Err(_) => (Vec::new(), None),
            };
        let mut subscribed_once = false;
        for client in clients {
            let attempt = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                RedisResult::Ok(pubsub)
            };
            let pubsub = match tokio::time::timeout(op_timeout, attempt).await {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "session invalidations: subscribe failed");
                    continue;
                }
                Err(_) => continue,
            };
            subscribed_once = true;
            if ever {
                let _ = tx.send(Invalidation::All);
            }
            ever = true;
            backoff = Duration::from_millis(50);
            subscribed.send_replace(true);
            tracing::debug!("session invalidations: subscribed");
            let (mut sink, mut stream) = pubsub.split();
            let mut health = tokio::time::interval(Duration::from_secs(5));
            health.tick().await;
            loop {
                tokio::select! {
                    msg = stream.next() => {
                        let Some(msg) = msg else { break };
                        if let Ok(bytes) = <[u8; SessionId::LEN]>::try_from(msg.get_payload_bytes()) {
                            let _ = tx.send(Invalidation::Session(SessionId::from_bytes(bytes)));
                        }
                    }
                    _ = health.tick() => {
                        let alive = tokio::time::timeout(op_timeout, sink.ping::<::redis::Value>()).await;
                        if !matches!(alive, Ok(Ok(_))) {
                            break;
                        }
                    }
                }
            }
            subscribed.send_replace(false);
            tracing::warn!("session invalidations: subscription lost; resubscribing");
            break;
        }
        if !subscribed_once {
            // With Sentinel, the master may have moved: ask again next time.
            link.failed(&used, None);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
