//! Authentication by `Authorization: Bearer` JWT: the provider verifies the token, the claims
//! become an identity shaped like a session (so policies and identity headers treat both the
//! same), and verified tokens are cached until they expire, keeping signature checks off the
//! hot path of a client that reuses its token.

use super::Auth;
use crate::oidc::{BearerError, ClaimNames, Identity};
use crate::session::{SessionId, SessionRecord};
use serde_json::{Map, Value};
use sha2::Digest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Verified tokens kept at most; the cache is emptied when full (tokens are cheap to re-verify).
const CACHE_CAPACITY: usize = 10_000;

/// A verified token's identity and expiry (Unix seconds).
type Verified = (Arc<SessionRecord>, u64);

/// Verified tokens by SHA-256 of provider and token.
#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<[u8; 32], Verified>>,
}

/// The token of an `Authorization: Bearer` header, if that is what it holds.
pub fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl Auth {
    /// The identity a Bearer token from `provider` stands for.
    pub async fn bearer(
        &self,
        provider: &str,
        token: &str,
    ) -> Result<Arc<SessionRecord>, BearerError> {
        let now = self.clock.now_secs();
        let mut h = sha2::Sha256::new();
        h.update(provider.as_bytes());
        h.update([0]);
        h.update(token.as_bytes());
        let key: [u8; 32] = h.finalize().into();
        if let Ok(cache) = self.tokens.entries.lock() {
            if let Some((record, exp)) = cache.get(&key) {
                if *exp > now {
                    return Ok(Arc::clone(record));
                }
            }
        }
        let p = self.provider(provider).ok_or(BearerError::Unavailable)?;
        let claims = p.verify_access_token(token).await?;
        let record = Arc::new(record_from_claims(
            provider,
            &key,
            &claims,
            &p.settings.claims,
        )?);
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(now);
        if let Ok(mut cache) = self.tokens.entries.lock() {
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(key, (Arc::clone(&record), exp));
        }
        Ok(record)
    }
}

/// A session-shaped identity from verified token claims. Machine tokens often carry no user
/// name: `user` falls back to `sub`, then `client_id`.
fn record_from_claims(
    provider: &str,
    key: &[u8; 32],
    claims: &Map<String, Value>,
    names: &ClaimNames,
) -> Result<SessionRecord, BearerError> {
    let mut with_sub = claims.clone();
    if !with_sub.contains_key("sub") {
        let client = claims
            .get("client_id")
            .cloned()
            .ok_or(BearerError::MissingClaim)?;
        with_sub.insert("sub".into(), client);
    }
    let id = Identity::from_claims(&with_sub, names).ok_or(BearerError::MissingClaim)?;
    let mut r = SessionRecord::new(provider, id.sub, id.user);
    let mut sid = [0u8; SessionId::LEN];
    sid.copy_from_slice(&key[..SessionId::LEN]);
    r.sid = SessionId::from_bytes(sid);
    r.email = id.email;
    r.name = id.name;
    r.groups = id.groups;
    r.amr = id.amr;
    r.acr = id.acr;
    r.claims = claims
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "iat" | "nbf" | "jti" | "exp"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    r.expires_at = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
    Ok(r)
}

/// The scopes a token grants: `scope` (space-separated, RFC 9068) or `scp` (list or string).
pub fn token_scopes(r: &SessionRecord) -> impl Iterator<Item = &str> {
    let scope = r
        .claims
        .get("scope")
        .and_then(Value::as_str)
        .into_iter()
        .flat_map(str::split_whitespace);
    let scp = r.claims.get("scp").into_iter().flat_map(|v| match v {
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect::<Vec<_>>(),
        Value::String(s) => s.split_whitespace().collect(),
        _ => Vec::new(),
    });
    scope.chain(scp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_forms() {
        assert_eq!(bearer_token(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(Some("Basic abc")), None);
        assert_eq!(bearer_token(Some("Bearer ")), None);
        assert_eq!(bearer_token(Some("Bearerabc")), None);
        assert_eq!(bearer_token(None), None);
    }

    #[test]
    fn scopes_from_scope_and_scp() {
        let mut r = SessionRecord::new("p", "s", "u");
        r.claims.insert(
            "scope".into(),
            serde_json::json!("orders:read  orders:write"),
        );
        r.claims.insert("scp".into(), serde_json::json!(["admin"]));
        let got: Vec<&str> = token_scopes(&r).collect();
        assert_eq!(got, vec!["orders:read", "orders:write", "admin"]);
    }

    #[test]
    fn machine_tokens_get_a_user_from_client_id() {
        let claims = serde_json::json!({ "client_id": "billing", "scope": "x", "exp": 5 });
        let r = record_from_claims(
            "p",
            &[7; 32],
            claims.as_object().unwrap(),
            &ClaimNames::default(),
        )
        .unwrap();
        assert_eq!(r.user, "billing");
        assert_eq!(r.sub, "billing");
        let none = serde_json::json!({ "exp": 5 });
        assert!(record_from_claims(
            "p",
            &[7; 32],
            none.as_object().unwrap(),
            &ClaimNames::default()
        )
        .is_err());
    }
}
