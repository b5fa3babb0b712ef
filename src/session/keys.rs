//! Keys derived from `session.secrets`, one independent AES-256-GCM key per purpose.
//!
//! Every configured secret yields a full set of purpose keys through HKDF-SHA256, so a value
//! sealed for one purpose (a login-state cookie, say) can never be opened as another (a session
//! cookie). The first secret seals; every secret opens, so a new secret can be put first while
//! cookies and records sealed under the old one stay readable until they expire.
//!
//! Sealed format: `version (1) | nonce (12) | ciphertext | tag (16)`. Nonces are random: AES-GCM
//! stays safe for about 2^32 seals per key with random 96-bit nonces, far beyond the logins and
//! refreshes one secret sees before it is rotated.

use aes_gcm::aead::{Aead, AeadInOut, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use hkdf::Hkdf;
use rand::Rng;
use sha2::Sha256;
use std::fmt;
use zeroize::Zeroize;

/// Format version, the first byte of every sealed value.
const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Bytes a sealed value has beyond its plaintext.
pub const SEAL_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
/// Length of one secret once base64-decoded.
pub const SECRET_LEN: usize = 32;
/// HKDF salt: fixed, so the same secret gives the same keys on every replica.
const SALT: &[u8] = b"portcullis session keys";

/// What a sealed value is for; each purpose has its own key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The session cookie.
    SessionCookie,
    /// A login in progress (its own cookie).
    LoginState,
    /// A record in the session store.
    StoreRecord,
    /// A session hand-over to another host.
    HandoverCode,
    /// The issuer's private keys in the shared store (`issuer.store: redis`).
    IssuerKeys,
}

impl Purpose {
    const ALL: [Purpose; 5] = [
        Purpose::SessionCookie,
        Purpose::LoginState,
        Purpose::StoreRecord,
        Purpose::HandoverCode,
        Purpose::IssuerKeys,
    ];

    fn index(self) -> usize {
        match self {
            Purpose::SessionCookie => 0,
            Purpose::LoginState => 1,
            Purpose::StoreRecord => 2,
            Purpose::HandoverCode => 3,
            Purpose::IssuerKeys => 4,
        }
    }

    /// HKDF `info`: changing one changes that purpose's key and nothing else.
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::SessionCookie => b"portcullis/v1/session-cookie",
            Purpose::LoginState => b"portcullis/v1/login-state-cookie",
            Purpose::StoreRecord => b"portcullis/v1/store-record",
            Purpose::HandoverCode => b"portcullis/v1/handover-code",
            Purpose::IssuerKeys => b"portcullis/v1/issuer-keys",
        }
    }
}

/// Why the configured secrets cannot be used. Never includes the secret itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("at least one session secret is required")]
    /// No secret at all.
    Empty,
    #[error("session secret #{index} is not valid base64")]
    /// Secret `index` is not base64.
    NotBase64 {
        /// Which secret (0-based).
        index: usize,
    },
    #[error("session secret #{index} decodes to {len} bytes; expected exactly 32")]
    /// Secret `index` decodes to `len` bytes instead of 32.
    WrongLength {
        /// Which secret (0-based).
        index: usize,
        /// Its decoded length.
        len: usize,
    },
    #[error("session secret #{index} is too weak (all its bytes are the same)")]
    /// Secret `index` has too little variety to be random.
    Weak {
        /// Which secret (0-based).
        index: usize,
    },
}

/// The purpose keys of one secret.
struct KeySet([Aes256Gcm; 5]);

impl KeySet {
    fn derive(secret: &[u8; SECRET_LEN]) -> KeySet {
        let hk = Hkdf::<Sha256>::new(Some(SALT), secret);
        KeySet(Purpose::ALL.map(|purpose| {
            let mut okm = [0u8; 32];
            // 32 bytes is far below HKDF-SHA256's limit of 255 * 32, so expand cannot fail.
            hk.expand(purpose.label(), &mut okm)
                .expect("32-byte HKDF output is always valid");
            let cipher = Aes256Gcm::new(&okm.into());
            okm.zeroize();
            cipher
        }))
    }

    fn cipher(&self, purpose: Purpose) -> &Aes256Gcm {
        &self.0[purpose.index()]
    }
}

/// The session layer's keys: the first set seals, every set opens.
pub struct SessionKeys {
    sets: Vec<KeySet>,
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys")
            .field("secrets", &self.sets.len())
            .finish_non_exhaustive()
    }
}

impl SessionKeys {
    /// Keys from the configured secrets, each a base64 (standard or URL-safe, padded or not)
    /// encoding of 32 random bytes, as `portcullis gen-secret` prints.
    pub fn from_secrets<S: AsRef<str>>(secrets: &[S]) -> Result<SessionKeys, KeyError> {
        if secrets.is_empty() {
            return Err(KeyError::Empty);
        }
        let mut raw = Vec::with_capacity(secrets.len());
        for (index, secret) in secrets.iter().enumerate() {
            let text = secret.as_ref().trim();
            let mut bytes = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                .iter()
                .find_map(|engine| engine.decode(text).ok())
                .ok_or(KeyError::NotBase64 { index })?;
            let key: Result<[u8; SECRET_LEN], _> = bytes.as_slice().try_into();
            let len = bytes.len();
            bytes.zeroize();
            let key = key.map_err(|_| KeyError::WrongLength { index, len })?;
            raw.push(key);
        }
        let keys = SessionKeys::from_raw(&raw);
        raw.iter_mut().for_each(Zeroize::zeroize);
        keys
    }

    /// Keys from raw 32-byte secrets, first sealing.
    pub fn from_raw(secrets: &[[u8; SECRET_LEN]]) -> Result<SessionKeys, KeyError> {
        if secrets.is_empty() {
            return Err(KeyError::Empty);
        }
        for (index, s) in secrets.iter().enumerate() {
            if s.iter().all(|b| *b == s[0]) {
                return Err(KeyError::Weak { index });
            }
        }
        Ok(SessionKeys {
            sets: secrets.iter().map(KeySet::derive).collect(),
        })
    }

    /// A fresh random secret, base64: what `portcullis gen-secret` prints.
    pub fn generate_secret() -> String {
        let mut bytes = [0u8; SECRET_LEN];
        rand::rng().fill(&mut bytes);
        let text = STANDARD.encode(bytes);
        bytes.zeroize();
        text
    }

    /// How many secrets are configured.
    pub fn secret_count(&self) -> usize {
        self.sets.len()
    }

    /// Encrypts and authenticates `plaintext` for `purpose`, binding `aad` (authenticated, not
    /// stored: the opener must present the same bytes).
    pub fn seal(&self, purpose: Purpose, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill(&mut nonce);
        let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let cipher = self.sets[0].cipher(purpose);
        // AES-GCM fails only past 64 GiB of plaintext or 2^61 bytes of aad, which no caller
        // comes near (cookies and records are a few hundred bytes).
        let tag = cipher
            .encrypt_inout_detached(&Nonce::from(nonce), aad, (&mut out[1 + NONCE_LEN..]).into())
            .expect("AES-GCM input within limits");
        out.extend_from_slice(tag.as_slice());
        out
    }

    /// The plaintext of a value sealed for `purpose` with `aad` under any configured secret;
    /// `None` for anything tampered, truncated, foreign or sealed for another purpose.
    pub fn open(&self, purpose: Purpose, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        let (nonce, body) = split(sealed)?;
        self.sets.iter().find_map(|set| {
            set.cipher(purpose)
                .decrypt(&nonce, Payload { msg: body, aad })
                .ok()
        })
    }

    /// Like [`open`](Self::open), decrypting into `out` without allocating; returns the
    /// plaintext length. `None` also when `out` is too small.
    pub fn open_into(
        &self,
        purpose: Purpose,
        sealed: &[u8],
        aad: &[u8],
        out: &mut [u8],
    ) -> Option<usize> {
        let (nonce, body) = split(sealed)?;
        let (ciphertext, tag) = body.split_at(body.len() - TAG_LEN);
        let tag = Tag::try_from(tag).ok()?;
        let out = out.get_mut(..ciphertext.len())?;
        self.sets.iter().find_map(|set| {
            let buf = aes_gcm::aead::inout::InOutBuf::new(ciphertext, &mut *out).ok()?;
            set.cipher(purpose)
                .decrypt_inout_detached(&nonce, aad, buf, &tag)
                .ok()
                .map(|()| ciphertext.len())
        })
    }
}

/// Splits a sealed value into nonce and `ciphertext | tag`, checking version and length.
fn split(sealed: &[u8]) -> Option<(Nonce<aes_gcm::aead::consts::U12>, &[u8])> {
    if sealed.len() < SEAL_OVERHEAD || sealed[0] != VERSION {
        return None;
    }
    let nonce = Nonce::try_from(&sealed[1..1 + NONCE_LEN]).ok()?;
    Some((nonce, &sealed[1 + NONCE_LEN..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(byte: u8) -> [u8; 32] {
        let mut s = [byte; 32];
        s[0] = byte.wrapping_add(1);
        s
    }

    fn keys(secrets: &[[u8; 32]]) -> SessionKeys {
        SessionKeys::from_raw(secrets).unwrap()
    }

    #[test]
    fn round_trip_every_purpose() {
        let k = keys(&[secret(1)]);
        for purpose in Purpose::ALL {
            let sealed = k.seal(purpose, b"hello", b"aad");
            assert_eq!(sealed.len(), 5 + SEAL_OVERHEAD);
            assert_eq!(k.open(purpose, &sealed, b"aad").unwrap(), b"hello");
            let mut out = [0u8; 16];
            let n = k.open_into(purpose, &sealed, b"aad", &mut out).unwrap();
            assert_eq!(&out[..n], b"hello");
        }
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let k = keys(&[secret(1)]);
        let sealed = k.seal(Purpose::StoreRecord, b"", b"");
        assert_eq!(k.open(Purpose::StoreRecord, &sealed, b"").unwrap(), b"");
    }

    #[test]
    fn nonces_differ_between_seals() {
        let k = keys(&[secret(1)]);
        let a = k.seal(Purpose::SessionCookie, b"same", b"");
        let b = k.seal(Purpose::SessionCookie, b"same", b"");
        assert_ne!(a, b);
    }

    #[test]
    fn rotation_old_key_still_opens_new_key_seals() {
        let old = keys(&[secret(1)]);
        let rotated = keys(&[secret(2), secret(1)]);
        let by_old = old.seal(Purpose::SessionCookie, b"v", b"");
        assert_eq!(
            rotated.open(Purpose::SessionCookie, &by_old, b"").unwrap(),
            b"v"
        );
        let by_new = rotated.seal(Purpose::SessionCookie, b"v", b"");
        assert!(
            old.open(Purpose::SessionCookie, &by_new, b"").is_none(),
            "the new first secret must be the one that seals"
        );
        let new_only = keys(&[secret(2)]);
        assert_eq!(
            new_only.open(Purpose::SessionCookie, &by_new, b"").unwrap(),
            b"v"
        );
        let mut out = [0u8; 8];
        assert_eq!(
            rotated.open_into(Purpose::SessionCookie, &by_old, b"", &mut out),
            Some(1)
        );
    }

    #[test]
    fn every_tampered_byte_is_refused() {
        let k = keys(&[secret(1)]);
        let sealed = k.seal(Purpose::StoreRecord, b"payload", b"sid");
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert!(
                k.open(Purpose::StoreRecord, &t, b"sid").is_none(),
                "byte {i}"
            );
            let mut out = [0u8; 64];
            assert!(k
                .open_into(Purpose::StoreRecord, &t, b"sid", &mut out)
                .is_none());
        }
    }

    #[test]
    fn truncated_and_extended_are_refused() {
        let k = keys(&[secret(1)]);
        let sealed = k.seal(Purpose::StoreRecord, b"payload", b"");
        for n in 0..sealed.len() {
            assert!(k.open(Purpose::StoreRecord, &sealed[..n], b"").is_none());
            let mut out = [0u8; 64];
            assert!(k
                .open_into(Purpose::StoreRecord, &sealed[..n], b"", &mut out)
                .is_none());
        }
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(k.open(Purpose::StoreRecord, &longer, b"").is_none());
    }

    #[test]
    fn foreign_key_wrong_purpose_and_wrong_aad_are_refused() {
        let k = keys(&[secret(1)]);
        let foreign = keys(&[secret(9)]);
        let sealed = k.seal(Purpose::SessionCookie, b"v", b"a");
        assert!(foreign
            .open(Purpose::SessionCookie, &sealed, b"a")
            .is_none());
        for other in [
            Purpose::LoginState,
            Purpose::StoreRecord,
            Purpose::HandoverCode,
        ] {
            assert!(k.open(other, &sealed, b"a").is_none(), "{other:?}");
        }
        assert!(k.open(Purpose::SessionCookie, &sealed, b"b").is_none());
    }

    #[test]
    fn output_buffer_too_small_is_refused_not_a_panic() {
        let k = keys(&[secret(1)]);
        let sealed = k.seal(Purpose::SessionCookie, b"0123456789", b"");
        let mut out = [0u8; 4];
        assert!(k
            .open_into(Purpose::SessionCookie, &sealed, b"", &mut out)
            .is_none());
    }

    #[test]
    fn secrets_parse_from_base64_and_bad_ones_are_named_not_shown() {
        let good = SessionKeys::generate_secret();
        let url = URL_SAFE_NO_PAD.encode(secret(3));
        let k = SessionKeys::from_secrets(&[good.as_str(), url.as_str()]).unwrap();
        assert_eq!(k.secret_count(), 2);

        let none: [&str; 0] = [];
        assert_eq!(
            SessionKeys::from_secrets(&none).unwrap_err(),
            KeyError::Empty
        );
        assert_eq!(
            SessionKeys::from_secrets(&[good.as_str(), "not base64!"]).unwrap_err(),
            KeyError::NotBase64 { index: 1 }
        );
        let short = STANDARD.encode([7u8; 16]);
        let err = SessionKeys::from_secrets(&[short.as_str()]).unwrap_err();
        assert_eq!(err, KeyError::WrongLength { index: 0, len: 16 });
        assert!(!err.to_string().contains(&short));
        let zeros = STANDARD.encode([0u8; 32]);
        assert_eq!(
            SessionKeys::from_secrets(&[zeros.as_str()]).unwrap_err(),
            KeyError::Weak { index: 0 }
        );
    }

    #[test]
    fn same_secret_gives_same_keys_on_every_replica() {
        let a = keys(&[secret(4)]);
        let b = keys(&[secret(4)]);
        let sealed = a.seal(Purpose::HandoverCode, b"x", b"");
        assert_eq!(b.open(Purpose::HandoverCode, &sealed, b"").unwrap(), b"x");
    }

    #[test]
    fn debug_shows_no_key_material() {
        let k = keys(&[secret(1), secret(2)]);
        let shown = format!("{k:?}");
        assert_eq!(shown, "SessionKeys { secrets: 2, .. }");
    }
}
