//! What the store keeps about one session, and how it is written down: MessagePack with fields
//! in order (no names), JWTs as their raw bytes, then sealed with the record key. A store dump
//! therefore shows no token, claim or name; the record is also bound to its session id, so a
//! sealed record moved under another key does not open.

use super::keys::{Purpose, SessionKeys};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};

pub use super::rendered::{HeaderList, RenderedHeaders};

/// First byte of a record's plaintext, so the layout can change without misreading old records.
const FORMAT: u8 = 1;

/// A session's identifier: 128 random bits. It is not a credential on its own (a cookie must
/// also be sealed with the session key), but it is still kept out of logs: `Debug` and
/// [`fingerprint`](Self::fingerprint) show a hash instead.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SessionId([u8; 16]);

impl SessionId {
    /// Bytes in an id.
    pub const LEN: usize = 16;

    /// A new id from the operating system's random source.
    pub fn random() -> SessionId {
        let mut b = [0u8; Self::LEN];
        rand::rng().fill(&mut b);
        SessionId(b)
    }

    /// The id with these bytes.
    pub fn from_bytes(bytes: [u8; Self::LEN]) -> SessionId {
        SessionId(bytes)
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// Base64url, 22 characters: the form used in store keys and the user index.
    pub fn to_text(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// Reads [`SessionId::to_text`]'s form back.
    pub fn from_text(text: &str) -> Option<SessionId> {
        let mut b = [0u8; Self::LEN];
        match URL_SAFE_NO_PAD.decode_slice(text, &mut b) {
            Ok(Self::LEN) => Some(SessionId(b)),
            _ => None,
        }
    }

    /// A short hash of the id for logs and audit events (SPEC §8: "session id (hashed)").
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0);
        digest[..6].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl Hash for SessionId {
    /// The id is uniformly random, so its first 8 bytes are already a good hash: hashers built
    /// for it (the session cache's) take them as they are.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.0);
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.fingerprint())
    }
}

/// Which user a session belongs to, for the per-user index: a hash of provider and subject, so
/// store keys carry no personal data and no characters that need escaping.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct UserKey([u8; 16]);

impl UserKey {
    /// The key of `sub` at `provider`.
    pub fn new(provider: &str, sub: &str) -> UserKey {
        let mut h = Sha256::new();
        h.update((provider.len() as u64).to_be_bytes());
        h.update(provider.as_bytes());
        h.update(sub.as_bytes());
        let digest = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest[..16]);
        UserKey(b)
    }

    /// The key as stored (hashed: no user name in the store's key space).
    pub fn to_text(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }
}

/// One session. Times are Unix seconds.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Known from the store key; not written into the record itself.
    #[serde(skip, default = "nil_sid")]
    pub sid: SessionId,
    /// The `providers[].id` that logged the user in.
    pub provider: String,
    /// The mapped `user` claim (e.g. `preferred_username`).
    pub user: String,
    /// The IdP's `sub`: with `provider`, the stable identity the per-user index is keyed on.
    pub sub: String,
    /// The mapped `email` claim.
    pub email: Option<String>,
    /// The mapped `name` claim.
    pub name: Option<String>,
    /// The mapped `groups` claim.
    pub groups: Vec<String>,
    /// Further claims kept for policies (`allow.claims`) and header templates.
    pub claims: BTreeMap<String, serde_json::Value>,
    /// How the user authenticated (`amr`), for `allow.mfa`.
    pub amr: Vec<String>,
    /// The authentication context class (`acr`), for `allow.mfa`.
    pub acr: Option<String>,
    /// The IdP's ID token, kept for `id_token_hint` at logout.
    #[serde(with = "compact_token")]
    pub id_token: Option<String>,
    #[serde(with = "compact_token")]
    /// The IdP's access token.
    pub access_token: Option<String>,
    /// When the access token expires (Unix seconds).
    pub access_token_expires_at: Option<u64>,
    #[serde(with = "compact_token")]
    /// The IdP's refresh token.
    pub refresh_token: Option<String>,
    /// The access token's whole lifetime (seconds), to refresh it at a fitting moment.
    #[serde(default)]
    pub access_token_lifetime: Option<u64>,
    /// When the session began (Unix seconds).
    pub created_at: u64,
    /// Absolute end of the session (`created_at + lifetime` at most).
    pub expires_at: u64,
    /// When the idle clock was last restarted. Maintained by the store, not written into the
    /// record (refreshing it must not rewrite the record).
    #[serde(skip)]
    pub last_seen: u64,
    /// Whether this session came from a step-up login (re-authentication asked for MFA), so a
    /// step-up that still brought no MFA ends in 403 instead of another round trip.
    #[serde(default)]
    pub stepped_up: bool,
    /// The identity headers rendered for this session, kept with it (not stored).
    #[serde(skip)]
    pub rendered: RenderedHeaders,
}

fn nil_sid() -> SessionId {
    SessionId([0; SessionId::LEN])
}

impl SessionRecord {
    /// A new session for `sub` at `provider`, with a fresh id; the store sets its times.
    pub fn new(
        provider: impl Into<String>,
        sub: impl Into<String>,
        user: impl Into<String>,
    ) -> SessionRecord {
        SessionRecord {
            sid: SessionId::random(),
            provider: provider.into(),
            user: user.into(),
            sub: sub.into(),
            email: None,
            name: None,
            groups: Vec::new(),
            rendered: RenderedHeaders::default(),
            claims: BTreeMap::new(),
            amr: Vec::new(),
            acr: None,
            id_token: None,
            access_token: None,
            access_token_expires_at: None,
            refresh_token: None,
            access_token_lifetime: None,
            created_at: 0,
            expires_at: 0,
            last_seen: 0,
            stepped_up: false,
        }
    }

    /// The key of the per-user index this session is listed under.
    pub fn user_key(&self) -> UserKey {
        UserKey::new(&self.provider, &self.sub)
    }

    /// The plaintext wire form (format byte, then MessagePack).
    pub fn to_bytes(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        let mut out = vec![FORMAT];
        rmp_serde::encode::write(&mut out, self)?;
        Ok(out)
    }

    /// Reads the wire form; `None` if it is not a record of a known format.
    pub fn from_bytes(sid: SessionId, bytes: &[u8]) -> Option<SessionRecord> {
        let (&format, body) = bytes.split_first()?;
        if format != FORMAT {
            return None;
        }
        let mut record: SessionRecord = rmp_serde::from_slice(body).ok()?;
        record.sid = sid;
        Some(record)
    }

    /// The record encrypted with the record key and bound to its session id.
    pub fn seal(&self, keys: &SessionKeys) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        let plain = Wiped(self.to_bytes()?);
        Ok(keys.seal(Purpose::StoreRecord, &plain.0, self.sid.as_bytes()))
    }

    /// Opens what [`seal`](Self::seal) wrote for `sid`; `None` if it was tampered with, sealed
    /// for another session, or under a key no longer configured.
    pub fn open(sid: SessionId, sealed: &[u8], keys: &SessionKeys) -> Option<SessionRecord> {
        let plain = Wiped(keys.open(Purpose::StoreRecord, sealed, sid.as_bytes())?);
        SessionRecord::from_bytes(sid, &plain.0)
    }
}

/// A buffer wiped when dropped: the record's plaintext holds tokens.
struct Wiped(Vec<u8>);

impl Drop for Wiped {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |t: &Option<String>| {
            if t.is_some() {
                crate::secret::REDACTED
            } else {
                "<none>"
            }
        };
        f.debug_struct("SessionRecord")
            .field("sid", &self.sid)
            .field("provider", &self.provider)
            .field("user", &self.user)
            .field("sub", &self.sub)
            .field("email", &self.email)
            .field("name", &self.name)
            .field("groups", &self.groups)
            .field("claims", &self.claims.keys().collect::<Vec<_>>())
            .field("amr", &self.amr)
            .field("acr", &self.acr)
            .field("id_token", &hidden(&self.id_token))
            .field("access_token", &hidden(&self.access_token))
            .field("access_token_expires_at", &self.access_token_expires_at)
            .field("refresh_token", &hidden(&self.refresh_token))
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("last_seen", &self.last_seen)
            .finish()
    }
}

/// Tokens as MessagePack: a JWS in compact form (`a.b.c`, base64url without padding) is stored
/// as the raw bytes of its three parts, a quarter smaller than its text, and rebuilt exactly on
/// reading; any other token is stored as text.
mod compact_token {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub fn serialize<S: Serializer>(token: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        match token {
            None => s.serialize_none(),
            Some(t) => match to_binary(t) {
                Some(bin) => s.serialize_bytes(&bin),
                None => s.serialize_str(t),
            },
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_any(TokenVisitor)
    }

    /// `len(header) u16 | len(payload) u16 | header | payload | signature`, or `None` when the
    /// token is not a JWS whose text the bytes would reproduce exactly.
    fn to_binary(token: &str) -> Option<Vec<u8>> {
        let mut parts = token.split('.');
        let (h, p, sig) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let (h, p, sig) = (
            URL_SAFE_NO_PAD.decode(h).ok()?,
            URL_SAFE_NO_PAD.decode(p).ok()?,
            URL_SAFE_NO_PAD.decode(sig).ok()?,
        );
        let mut out = Vec::with_capacity(4 + h.len() + p.len() + sig.len());
        out.extend_from_slice(&u16::try_from(h.len()).ok()?.to_be_bytes());
        out.extend_from_slice(&u16::try_from(p.len()).ok()?.to_be_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(&p);
        out.extend_from_slice(&sig);
        // Strict decoding already refuses non-canonical text; checking costs one encode at
        // write time and guarantees the token handed back is byte-for-byte the one stored.
        (from_binary(&out).as_deref() == Some(token)).then_some(out)
    }

    fn from_binary(bin: &[u8]) -> Option<String> {
        let h = usize::from(u16::from_be_bytes([*bin.first()?, *bin.get(1)?]));
        let p = usize::from(u16::from_be_bytes([*bin.get(2)?, *bin.get(3)?]));
        let rest = bin.get(4..)?;
        let (header, rest) = (rest.get(..h)?, rest.get(h..)?);
        let (payload, sig) = (rest.get(..p)?, rest.get(p..)?);
        Some(format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(sig)
        ))
    }

    struct TokenVisitor;

    impl<'de> Visitor<'de> for TokenVisitor {
        type Value = Option<String>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("nil, a string or a compact JWS")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(TokenVisitor)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
            from_binary(v)
                .map(Some)
                .ok_or_else(|| E::custom("malformed compact token"))
        }
    }

    #[cfg(test)]
    pub(super) fn binary_len(token: &str) -> Option<usize> {
        to_binary(token).map(|b| b.len())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A record shaped like a real login: an ~700-byte RS256 ID token, two short opaque tokens
    /// and a few groups.
    pub fn typical() -> SessionRecord {
        let b64 = |n: usize, seed: u8| {
            let bytes: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
            URL_SAFE_NO_PAD.encode(bytes)
        };
        let header = URL_SAFE_NO_PAD
            .encode(br#"{"alg":"RS256","typ":"JWT","kid":"Xk3bJ9qL2vR8tY0wA1sD4fG6hJ7kL9mN"}"#);
        let payload = URL_SAFE_NO_PAD.encode(
            br#"{"iss":"https://idp.example.com/realms/main","sub":"8f14e45f-ceea-467f-a0e6-1f6c2b0d4a11","aud":"portcullis","exp":1767225600,"iat":1767182400,"nonce":"Qm9vdHN0cmFwTm9uY2U","email":"alice@example.com"}"#,
        );
        let id_token = format!("{header}.{payload}.{}", b64(256, 7));
        let mut r = SessionRecord::new("corp", "8f14e45f-ceea-467f-a0e6-1f6c2b0d4a11", "alice");
        r.email = Some("alice@example.com".into());
        r.name = Some("Alice Example".into());
        r.groups = vec!["staff".into(), "engineering".into(), "oncall".into()];
        r.claims
            .insert("department".into(), serde_json::json!("engineering"));
        r.amr = vec!["pwd".into(), "otp".into()];
        r.acr = Some("1".into());
        r.id_token = Some(id_token);
        r.access_token = Some(b64(32, 1));
        r.access_token_expires_at = Some(1_767_186_000);
        r.refresh_token = Some(b64(32, 2));
        r.created_at = 1_767_182_400;
        r.expires_at = 1_767_225_600;
        r
    }

    fn keys() -> SessionKeys {
        let mut s = [5u8; 32];
        s[1] = 6;
        SessionKeys::from_raw(&[s]).unwrap()
    }

    #[test]
    fn session_id_text_round_trip_and_rejects() {
        let sid = SessionId::random();
        let text = sid.to_text();
        assert_eq!(text.len(), 22);
        assert_eq!(SessionId::from_text(&text), Some(sid));
        assert_eq!(SessionId::from_text("short"), None);
        assert_eq!(SessionId::from_text(&format!("{text}AA")), None);
        assert_eq!(SessionId::from_text("!!!!!!!!!!!!!!!!!!!!!!"), None);
        assert_ne!(SessionId::random(), sid);
    }

    #[test]
    fn debug_of_an_id_is_a_fingerprint() {
        let sid = SessionId::random();
        let shown = format!("{sid:?}");
        assert!(!shown.contains(&sid.to_text()));
        assert_eq!(shown, format!("SessionId({})", sid.fingerprint()));
        assert_eq!(sid.fingerprint().len(), 12);
    }

    #[test]
    fn user_key_separates_providers_and_subjects() {
        assert_eq!(UserKey::new("corp", "a"), UserKey::new("corp", "a"));
        assert_ne!(UserKey::new("corp", "a"), UserKey::new("corp", "b"));
        assert_ne!(UserKey::new("cor", "pa"), UserKey::new("corp", "a"));
    }

    #[test]
    fn record_round_trips_through_seal() {
        let k = keys();
        let r = typical();
        let sealed = r.seal(&k).unwrap();
        let back = SessionRecord::open(r.sid, &sealed, &k).unwrap();
        assert_eq!(back, r);
        assert!(SessionRecord::open(SessionId::random(), &sealed, &k).is_none());
    }

    #[test]
    fn sealed_record_shows_no_token_or_claim() {
        let k = keys();
        let r = typical();
        let sealed = r.seal(&k).unwrap();
        let text = String::from_utf8_lossy(&sealed);
        for secret in [
            r.access_token.as_deref().unwrap(),
            r.refresh_token.as_deref().unwrap(),
            "alice",
            "engineering",
        ] {
            assert!(!text.contains(secret));
        }
    }

    #[test]
    fn typical_record_is_well_under_a_kibibyte() {
        let r = typical();
        let id_len = r.id_token.as_ref().unwrap().len();
        assert!((650..=760).contains(&id_len), "ID token is {id_len} bytes");
        let sealed = r.seal(&keys()).unwrap();
        println!(
            "typical record: id_token {id_len} B, sealed record {} B",
            sealed.len()
        );
        assert!(
            sealed.len() <= 900,
            "sealed record is {} bytes",
            sealed.len()
        );
    }

    #[test]
    fn compact_tokens_are_exact_and_fall_back_to_text() {
        let mut r = typical();
        let jws = r.id_token.clone().unwrap();
        assert!(compact_token::binary_len(&jws).unwrap() < jws.len() * 4 / 5);
        for odd in [
            "opaque-token",
            "a.b",
            "a.b.c.d.e",
            "eyJ.eyJ.",
            "a+b.c.d",
            "YQ==.YQ.YQ",
            "YR.YQ.YQ",
            "..",
            "",
        ] {
            r.access_token = Some(odd.to_string());
            let back = SessionRecord::from_bytes(r.sid, &r.to_bytes().unwrap()).unwrap();
            assert_eq!(back.access_token.as_deref(), Some(odd), "{odd:?}");
        }
        r.refresh_token = None;
        let back = SessionRecord::from_bytes(r.sid, &r.to_bytes().unwrap()).unwrap();
        assert_eq!(back.refresh_token, None);
        assert_eq!(back.id_token.as_deref(), Some(jws.as_str()));
    }

    #[test]
    fn garbage_is_no_record_not_a_panic() {
        let sid = SessionId::random();
        assert!(SessionRecord::from_bytes(sid, b"").is_none());
        assert!(SessionRecord::from_bytes(sid, b"\x02\x90").is_none());
        assert!(SessionRecord::from_bytes(sid, b"\x01\xff\xff").is_none());
        let good = typical().to_bytes().unwrap();
        for n in 0..good.len() {
            let _ = SessionRecord::from_bytes(sid, &good[..n]);
        }
    }

    #[test]
    fn debug_hides_tokens() {
        let r = typical();
        let shown = format!("{r:?}");
        for t in [&r.id_token, &r.access_token, &r.refresh_token] {
            assert!(!shown.contains(t.as_deref().unwrap()));
        }
        assert!(shown.contains(crate::secret::REDACTED));
        assert!(!shown.contains(&r.sid.to_text()));
    }
}
