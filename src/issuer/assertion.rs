//! The identity assertion: a JWT sent upstream (and in allowed forward-auth answers) saying
//! who the request is from, signed by the issuer so the app can trust it without trusting the
//! network between it and Portcullis.
//!
//! Signing costs tens of microseconds; a request must not pay it. An assertion is signed once
//! per (session, audience) and reused until 80 % of its life has passed, then signed afresh.
//! An entry also remembers the very session record it was signed from (a new record — a
//! refresh, a reload from the store — may carry other claims) and the key set (a rotation
//! signs anew with the new key).
//!
//! `aud` is the request's host name (no scheme, no port): what the app knows itself as,
//! the same whichever port or scheme a front proxy uses.

use super::keys::Typ;
use super::Issuer;
use crate::session::SessionRecord;
use http::HeaderValue;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Assertions kept at most (per shard, of [`SHARDS`]); a full shard is emptied.
const SHARD_CAPACITY: usize = 8192;
const SHARDS: usize = 16;

struct Entry {
    audience: Box<str>,
    /// The record signed from; holding a `Weak` keeps its address from being reused.
    record: Weak<SessionRecord>,
    generation: u64,
    value: HeaderValue,
    refresh_at: u64,
}

/// Signed assertions by session and audience.
pub struct AssertionCache {
    ttl: u64,
    hasher: std::hash::RandomState,
    shards: Vec<Mutex<HashMap<u64, Entry>>>,
}

impl AssertionCache {
    pub fn new(ttl: Duration) -> AssertionCache {
        AssertionCache {
            ttl: ttl.as_secs().max(1),
            hasher: std::hash::RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// The assertion for `who` on `audience`: cached, or signed now.
    pub fn get(
        &self,
        issuer: &Issuer,
        who: &Arc<SessionRecord>,
        audience: &str,
    ) -> Option<HeaderValue> {
        let mut h = self.hasher.build_hasher();
        who.sid.as_bytes().hash(&mut h);
        audience.hash(&mut h);
        let slot = h.finish();
        let shard = &self.shards[(slot as usize) % SHARDS];
        let now = super::now_secs();
        let keys = issuer.key_set();
        if let Ok(map) = shard.lock() {
            if let Some(e) = map.get(&slot) {
                if e.refresh_at > now
                    && e.generation == keys.generation
                    && std::ptr::eq(e.record.as_ptr(), Arc::as_ptr(who))
                    && *e.audience == *audience
                {
                    return Some(e.value.clone());
                }
            }
        }
        let mut exp = now + self.ttl;
        if who.expires_at > now {
            exp = exp.min(who.expires_at);
        }
        let claims = serde_json::json!({
            "iss": issuer.config.iss,
            "aud": audience,
            "sub": who.sub,
            "user": who.user,
            "email": who.email,
            "groups": who.groups,
            "name": who.name,
            "sid": who.sid.fingerprint(),
            "iat": now,
            "exp": exp,
            "jti": super::new_jti(),
        });
        let token = keys
            .signer
            .sign(Typ::Assertion, claims.to_string().as_bytes());
        let value = HeaderValue::from_str(&token).ok()?;
        let entry = Entry {
            audience: audience.into(),
            record: Arc::downgrade(who),
            generation: keys.generation,
            value: value.clone(),
            refresh_at: now + (exp - now) * 4 / 5,
        };
        if let Ok(mut map) = shard.lock() {
            if map.len() >= SHARD_CAPACITY {
                map.clear();
            }
            map.insert(slot, entry);
        }
        Some(value)
    }
}
