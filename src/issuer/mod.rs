//! Portcullis as an issuer of its own tokens: the signing keys ([`keys`]), the JWKS and
//! discovery documents ([`jwks`]), the identity assertion sent upstream ([`assertion`]), the
//! OAuth 2 token, introspection and revocation endpoints for machine clients ([`token`],
//! [`clients`]) and the list of revoked tokens ([`revoked`]).
//!
//! [`IssuerConfig`] is the compiled, pure form of `issuer:`; [`Issuer`] is the live service.
//! The key ring and the revocation list outlive reloads that do not change what they are
//! built from; the caches (assertions, verified client secrets) start afresh on every load,
//! so a changed client secret or header setting takes effect at once.

pub mod assertion;
pub mod clients;
pub mod jwks;
pub mod keys;
pub mod revoked;
pub mod store;
pub mod token;

use crate::auth::StoreBackend;
use crate::secret::Fingerprint;
use crate::session::SessionRecord;
use keys::{Alg, Key, Typ};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// Where the signing keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// PEM files, read when the config is loaded: the first signs, all verify.
    Files(Vec<Arc<Key>>),
    /// Neither files nor a store: one key generated at start, for this process only.
    Generated(Alg),
    /// `store: redis`: generated, shared by every replica and rotated.
    Redis(store::StoreSettings),
}

/// `issuer:`, compiled. Pure data; `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// The `iss` of every token: the issuer url without a trailing slash.
    pub iss: String,
    /// The issuer url's host: where discovery and `/.well-known/jwks.json` are served.
    pub host: String,
    pub keys: KeySource,
    pub assertion_header: crate::headers::FieldName,
    pub assertion_ttl: Duration,
    pub access_token_ttl: Duration,
    pub clients: Arc<clients::Clients>,
    /// Where revoked token ids are kept (the session store's backend).
    pub backend: StoreBackend,
    /// Of what the key ring and the revocation list are built from.
    pub fingerprint: Fingerprint,
}

/// The keys in use: all published and usable to verify, one signing.
#[derive(Debug)]
pub struct KeySet {
    pub keys: Vec<Arc<Key>>,
    pub signer: Arc<Key>,
    /// Counts key sets: cached assertions signed under another one are signed again.
    pub generation: u64,
    /// The JWKS document and its strong validator.
    pub jwks: jwks::Document,
}

impl KeySet {
    pub fn new(keys: Vec<Arc<Key>>, signer: Arc<Key>) -> KeySet {
        static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let jwks = jwks::Document::jwks(&keys);
        KeySet {
            keys,
            signer,
            generation: GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            jwks,
        }
    }
}

/// The live issuer.
pub struct Issuer {
    pub config: IssuerConfig,
    /// The current key set, swapped whole when keys change.
    keys: Arc<arc_swap::ArcSwap<KeySet>>,
    revoked: Arc<revoked::Revoked>,
    pub(crate) assertions: assertion::AssertionCache,
    pub(crate) verified: clients::VerifiedSecrets,
    discovery: jwks::Document,
    /// Verified Bearer tokens of ours, by SHA-256 of the token.
    bearers: std::sync::Mutex<std::collections::HashMap<[u8; 32], VerifiedBearer>>,
    /// The task refreshing shared keys (`store: redis`), stopped with the last issuer using it.
    poller: Arc<Poller>,
}

/// Aborts the key-refreshing task when dropped.
struct Poller(Option<tokio::task::JoinHandle<()>>);

impl Drop for Poller {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            t.abort();
        }
    }
}

/// Verified access tokens kept at most; the cache is emptied when full.
const BEARER_CACHE: usize = 10_000;

/// A verified access token: its identity, `jti` and `exp`.
#[derive(Clone)]
struct VerifiedBearer {
    record: Arc<SessionRecord>,
    jti: Arc<str>,
    exp: u64,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("iss", &self.config.iss)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// Builds the live issuer, reusing the keys and revocation list of `previous` when they
    /// are built from the same settings (a generated key survives a reload).
    pub fn start(
        config: IssuerConfig,
        previous: Option<&Issuer>,
        io: &tokio::runtime::Handle,
    ) -> Result<Arc<Issuer>, String> {
        let reuse = previous.filter(|p| p.config.fingerprint == config.fingerprint);
        let (keys, revoked, poller) = match reuse {
            Some(p) => (
                Arc::clone(&p.keys),
                Arc::clone(&p.revoked),
                Arc::clone(&p.poller),
            ),
            None => {
                let mut shared = None;
                let set = match &config.keys {
                    KeySource::Redis(settings) => {
                        let _enter = io.enter();
                        let store = store::SharedKeys::new(settings.clone())
                            .map_err(|e| format!("issuer keys: {e}"))?;
                        let set = io
                            .block_on(store.sync(now_secs()))
                            .map_err(|e| format!("issuer keys: {e}"))?;
                        shared = Some(store);
                        set
                    }
                    KeySource::Files(keys) => {
                        let signer = Arc::clone(keys.first().ok_or("issuer: no key")?);
                        KeySet::new(keys.clone(), signer)
                    }
                    KeySource::Generated(alg) => {
                        let key = Arc::new(Key::generate(*alg)?);
                        tracing::warn!(
                            kid = %key.kid,
                            "issuer: no keys configured; signing with a key generated at start. \
                             Tokens and assertions it signs die with this process: give \
                             issuer.keys (portcullis gen-key) for keys that outlive a restart"
                        );
                        KeySet::new(vec![Arc::clone(&key)], key)
                    }
                };
                let _enter = io.enter();
                let revoked = revoked::Revoked::new(&config.backend)
                    .map_err(|e| format!("issuer revocation list: {e}"))?;
                let keys = Arc::new(arc_swap::ArcSwap::from_pointee(set));
                let poller = shared.map(|store| io.spawn(poll(store, Arc::clone(&keys))));
                (keys, Arc::new(revoked), Arc::new(Poller(poller)))
            }
        };
        if !config.clients.is_empty() {
            crate::password::warm_up();
        }
        crate::telemetry::metrics::TOKENS_ISSUED.with_label_values(&["client_credentials"]);
        let discovery = jwks::Document::discovery(&config, &keys.load().keys);
        Ok(Arc::new(Issuer {
            discovery,
            keys,
            revoked,
            assertions: assertion::AssertionCache::new(config.assertion_ttl),
            verified: clients::VerifiedSecrets::new(),
            bearers: std::sync::Mutex::default(),
            poller,
            config,
        }))
    }

    /// `GET /.well-known/<doc>` on the issuer's host (and `/.portcullis/jwks.json`): the
    /// discovery document or the JWKS; `None` for any other document (the app's own).
    pub fn well_known(
        &self,
        method: &http::Method,
        doc: &str,
        if_none_match: Option<&str>,
    ) -> Option<crate::answer::Answer> {
        let keys;
        let document = match doc {
            "openid-configuration" => &self.discovery,
            "jwks.json" => {
                keys = self.key_set();
                &keys.jwks
            }
            _ => return None,
        };
        if *method != http::Method::GET && *method != http::Method::HEAD {
            return Some(
                crate::answer::Answer::error(
                    http::StatusCode::METHOD_NOT_ALLOWED,
                    "use GET",
                    false,
                )
                .with_header(http::header::ALLOW, "GET, HEAD"),
            );
        }
        Some(document.answer(if_none_match))
    }

    /// The current key set.
    pub fn key_set(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.keys.load()
    }

    /// Whether a token's header names one of our keys (so it is ours to verify, not the
    /// provider's). Reads the header only.
    pub fn names_our_key(&self, token: &str) -> bool {
        keys::peek_kid(token).is_some_and(|kid| self.key_set().keys.iter().any(|k| k.kid == kid))
    }

    /// The identity of one of our access tokens presented as a Bearer token: signature (by
    /// `kid`, algorithm pinned), `typ: at+jwt`, `iss`, `exp`, an `aud` among `audiences`, and
    /// not revoked. A verified token is remembered until it expires (at most
    /// [`BEARER_CACHE`] of them), so a client reusing its token costs no signature check and
    /// keeps the same identity (and with it, its cached assertion); `aud` and revocation are
    /// checked on every request.
    pub async fn bearer(
        &self,
        token: &str,
        audiences: &[&str],
        now: u64,
    ) -> Result<Arc<SessionRecord>, keys::TokenError> {
        use sha2::Digest;
        let hash: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let cached = self
            .bearers
            .lock()
            .ok()
            .and_then(|m| m.get(&hash).filter(|v| v.exp > now).cloned());
        let verified = match cached {
            Some(v) => v,
            None => {
                let claims = self.verify_signed(token, now)?;
                let v = VerifiedBearer {
                    record: Arc::new(Issuer::identity(&claims, &hash)),
                    jti: claims
                        .get("jti")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .into(),
                    exp: claims.get("exp").and_then(Value::as_u64).unwrap_or(0),
                };
                if let Ok(mut m) = self.bearers.lock() {
                    if m.len() >= BEARER_CACHE {
                        m.clear();
                    }
                    m.insert(hash, v.clone());
                }
                v
            }
        };
        let aud_ok = match verified.record.claims.get("aud") {
            Some(Value::String(a)) => audiences.contains(&a.as_str()),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| audiences.contains(&a)),
            _ => false,
        };
        if !aud_ok {
            return Err(keys::TokenError::Audience);
        }
        if self.revoked.contains(&verified.jti).await {
            return Err(keys::TokenError::Revoked);
        }
        Ok(verified.record)
    }

    /// Signature, type, issuer, expiry and revocation of an access token; any audience.
    pub async fn verify_unrevoked(
        &self,
        token: &str,
        now: u64,
    ) -> Result<Map<String, Value>, keys::TokenError> {
        let claims = self.verify_signed(token, now)?;
        let jti = claims.get("jti").and_then(Value::as_str).unwrap_or("");
        if self.revoked.contains(jti).await {
            return Err(keys::TokenError::Revoked);
        }
        Ok(claims)
    }

    /// Signature, type, issuer and expiry of an access token (no revocation check).
    pub fn verify_signed(
        &self,
        token: &str,
        now: u64,
    ) -> Result<Map<String, Value>, keys::TokenError> {
        let set = self.key_set();
        let claims = keys::verify_signature(token, &set.keys, Typ::AccessToken)?;
        if claims.get("iss").and_then(Value::as_str) != Some(self.config.iss.as_str()) {
            return Err(keys::TokenError::Issuer);
        }
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(keys::TokenError::MissingClaim)?;
        if exp <= now {
            return Err(keys::TokenError::Expired);
        }
        if claims.get("jti").and_then(Value::as_str).is_none() {
            return Err(keys::TokenError::MissingClaim);
        }
        Ok(claims)
    }

    /// The session-shaped identity of a verified access token of ours: a machine client,
    /// whose `sub` and `user` are its id.
    pub fn identity(claims: &Map<String, Value>, token_hash: &[u8; 32]) -> SessionRecord {
        let client = claims
            .get("client_id")
            .or_else(|| claims.get("sub"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut r = SessionRecord::new("portcullis", client, client);
        let mut sid = [0u8; crate::session::SessionId::LEN];
        sid.copy_from_slice(&token_hash[..crate::session::SessionId::LEN]);
        r.sid = crate::session::SessionId::from_bytes(sid);
        r.claims = claims
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "scope" | "client_id" | "aud" | "iss"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        r.expires_at = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        r
    }
}

/// Refreshes shared keys every poll interval: picks up a key another replica published, and
/// moves to the next signer when its time comes. A failed poll keeps the keys in use.
async fn poll(store: store::SharedKeys, keys: Arc<arc_swap::ArcSwap<KeySet>>) {
    loop {
        tokio::time::sleep(store.poll_every()).await;
        match store.sync(now_secs()).await {
            Ok(set) => {
                let current = keys.load();
                let same = current.signer.kid == set.signer.kid
                    && current.keys.len() == set.keys.len()
                    && current
                        .keys
                        .iter()
                        .zip(&set.keys)
                        .all(|(a, b)| a.kid == b.kid);
                if !same {
                    tracing::info!(signer = %set.signer.kid, published = set.keys.len(), "issuer: key set changed");
                    keys.store(Arc::new(set));
                }
            }
            Err(e) => {
                crate::telemetry::metrics::count_store_error(&e);
                tracing::warn!(error = %e, "issuer: refreshing the shared keys failed; keeping the current ones");
            }
        }
    }
}

/// A new random token id (128 bits, base64url).
pub fn new_jti() -> String {
    use base64::Engine;
    let mut b = [0u8; 16];
    rand::fill(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
