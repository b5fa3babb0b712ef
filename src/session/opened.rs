//! Session cookie values already opened, so that a browser's next request with the same value
//! skips the base64 decoding and the AES-GCM open (about 1.6 k instructions, half the cost of
//! a forward-auth check's decision).
//!
//! Why this is as safe as opening the value again:
//!
//! - Only a value that [`SessionCookie::decode`] accepted is kept, with what it said (the
//!   session id and the cookie's own expiry). A value we did not seal never gets in, so the
//!   cache holds nothing a client chose.
//! - The expiry is checked on every hit, as `decode` would.
//! - The cache belongs to one configuration's [`Auth`](crate::auth::Auth), and so to the keys
//!   that opened its values: a reload builds a new one, and a value sealed under a retired key
//!   is opened (and refused) afresh.
//! - What a value names still goes through the session cache and the store: a logout or a
//!   revocation ends the session, not the cookie, and is seen as before.
//! - The map's hash is seeded per process, and keys are compared without an early exit. A
//!   client can neither aim a value at a chosen bucket nor learn, by timing, how much of
//!   someone else's cookie it guessed.
//!
//! Bounded: a shard that is full is emptied. A value that falls out costs one open again.

use super::cookie::{SessionCookie, ENCODED_LEN};
use super::keys::SessionKeys;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{PoisonError, RwLock};

const SHARDS: usize = 16;
/// Default bound on kept values: about 12 MiB when full (96 bytes a value, in maps of
/// 8 192 slots per shard).
pub const DEFAULT_CAPACITY: usize = 100_000;

/// A cookie value, compared in constant time.
#[derive(Clone, Copy)]
struct Value([u8; ENCODED_LEN]);

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        // No early exit: the time taken does not say where two values differ.
        self.0
            .iter()
            .zip(&other.0)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }
}

impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.0);
    }
}

type Shard = HashMap<Value, SessionCookie, foldhash::fast::RandomState>;

/// Session cookie values opened before, and what each said.
pub struct OpenedCookies {
    shards: Box<[RwLock<Shard>]>,
    per_shard: usize,
}

impl std::fmt::Debug for OpenedCookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedCookies")
            .field("capacity", &(self.per_shard * SHARDS))
            .finish_non_exhaustive()
    }
}

impl OpenedCookies {
    /// A cache of at most `capacity` values.
    pub fn new(capacity: usize) -> OpenedCookies {
        OpenedCookies {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    /// What [`SessionCookie::decode`] says of `value`, from the cache when this value was
    /// opened before.
    pub fn decode(&self, value: &str, keys: &SessionKeys, now_secs: u64) -> Option<SessionCookie> {
        let Ok(bytes) = <[u8; ENCODED_LEN]>::try_from(value.as_bytes()) else {
            return SessionCookie::decode(value, keys, now_secs);
        };
        let value_key = Value(bytes);
        // The nonce's characters pick the shard: random in every value we sealed.
        let shard = &self.shards[usize::from(bytes[8]) % SHARDS];
        let kept = shard
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&value_key)
            .copied();
        if let Some(cookie) = kept {
            if cookie.expires_at <= now_secs {
                tracing::debug!(sid = %cookie.sid.fingerprint(), "session cookie refused: expired");
                return None;
            }
            return Some(cookie);
        }
        let cookie = SessionCookie::decode(value, keys, now_secs)?;
        let mut shard = shard.write().unwrap_or_else(PoisonError::into_inner);
        if shard.len() >= self.per_shard {
            shard.clear();
        }
        shard.insert(value_key, cookie);
        Some(cookie)
    }

    /// How many values are kept.
    pub fn len(&self) -> usize {
        super::cache::entries(&self.shards)
    }

    /// Whether no value is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::record::SessionId;
    use crate::session::Purpose;

    fn keys(byte: u8) -> SessionKeys {
        let mut secret = [byte; 32];
        secret[0] = byte.wrapping_add(1);
        SessionKeys::from_raw(&[secret]).unwrap()
    }

    fn sealed(keys: &SessionKeys, expires_at: u64) -> (SessionCookie, String) {
        let cookie = SessionCookie {
            sid: SessionId::random(),
            expires_at,
        };
        (cookie, cookie.encode(keys))
    }

    /// A hit says what opening the value says, and the expiry is checked on every hit.
    #[test]
    fn a_kept_value_answers_as_opening_it_would() {
        let keys = keys(7);
        let opened = OpenedCookies::new(100);
        let (cookie, value) = sealed(&keys, 1_000);
        assert_eq!(opened.decode(&value, &keys, 10), Some(cookie));
        assert_eq!(opened.len(), 1);
        assert_eq!(opened.decode(&value, &keys, 999), Some(cookie));
        assert_eq!(
            opened.decode(&value, &keys, 1_000),
            None,
            "expired, kept or not"
        );
        assert_eq!(SessionCookie::decode(&value, &keys, 1_000), None);
    }

    /// Only values that open are kept: tampered, foreign, truncated and otherwise sealed
    /// values are refused every time, and the cache stays empty.
    #[test]
    fn values_that_do_not_open_are_never_kept() {
        let keys = keys(7);
        let opened = OpenedCookies::new(100);
        let (_, value) = sealed(&keys, 1_000);
        let mut tampered = value.clone().into_bytes();
        tampered[40] = if tampered[40] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        let (_, foreign) = sealed(&self::keys(8), 1_000);
        let other_purpose = {
            use base64::Engine;
            let plain = [0u8; SessionId::LEN + 8];
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(keys.seal(
                Purpose::LoginState,
                &plain,
                b"",
            ))
        };
        for bad in [
            tampered.as_str(),
            foreign.as_str(),
            &value[..ENCODED_LEN - 1],
            &"A".repeat(ENCODED_LEN),
            other_purpose.as_str(),
        ] {
            for _ in 0..2 {
                assert_eq!(opened.decode(bad, &keys, 10), None, "{bad:?}");
            }
        }
        assert!(opened.is_empty());
    }

    /// A value opened under one key is not accepted by a cache serving another: each
    /// configuration's keys get their own cache, and this one only answers for values it
    /// opened itself.
    #[test]
    fn a_value_is_kept_for_the_keys_that_opened_it() {
        let old = keys(7);
        let new = keys(8);
        let (_, value) = sealed(&old, 1_000);
        let under_old = OpenedCookies::new(100);
        assert!(under_old.decode(&value, &old, 10).is_some());
        let under_new = OpenedCookies::new(100);
        assert_eq!(under_new.decode(&value, &new, 10), None);
        assert!(under_new.is_empty());
    }

    /// A kept value is answered from the cache, not opened again: even keys that cannot
    /// open it get what it said. (This is why a cache never serves another configuration.)
    #[test]
    fn a_kept_value_is_not_opened_again() {
        let keys = keys(7);
        let opened = OpenedCookies::new(100);
        let (cookie, value) = sealed(&keys, 1_000);
        assert_eq!(opened.decode(&value, &keys, 10), Some(cookie));
        let other = self::keys(8);
        assert_eq!(SessionCookie::decode(&value, &other, 10), None);
        assert_eq!(opened.decode(&value, &other, 10), Some(cookie));
    }

    /// The cache never holds more than its capacity: a full shard is emptied.
    #[test]
    fn bounded() {
        let keys = keys(7);
        let opened = OpenedCookies::new(32);
        for _ in 0..1_000 {
            let (cookie, value) = sealed(&keys, 1_000);
            assert_eq!(opened.decode(&value, &keys, 10), Some(cookie));
        }
        assert!(opened.len() <= 32, "{}", opened.len());
        assert!(!opened.is_empty());
    }

    /// Equal values compare equal, and values differing in any one byte do not.
    #[test]
    fn values_compare_whole() {
        let a = Value([b'a'; ENCODED_LEN]);
        assert!(a == Value([b'a'; ENCODED_LEN]));
        for i in 0..ENCODED_LEN {
            let mut b = a;
            b.0[i] = b'b';
            assert!(a != b, "byte {i}");
        }
    }
}
