//! Verifying JWT access tokens (`Authorization: Bearer`) signed by a provider, with the keys of
//! its JWKS. The algorithm is pinned by the key: a key's `alg` if the JWKS names one, otherwise
//! the algorithms of its type (RSA: RS*/PS*, EC: by curve, OKP: EdDSA). Symmetric (`oct`) keys
//! are never used, so `none` and the HS256-with-a-public-key confusion cannot verify.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

/// One verification key from a JWKS.
pub struct VerifyKey {
    kid: Option<String>,
    algs: Vec<Algorithm>,
    key: DecodingKey,
}

/// Why a Bearer token was refused. The message is safe to send in `error_description`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    #[error("the token is signed by an unknown key")]
    UnknownKey,
    #[error("the token's signature is invalid")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is not meant for this audience")]
    Audience,
    #[error("the token was issued by another issuer")]
    Issuer,
    #[error("the token lacks a required claim")]
    MissingClaim,
    #[error("the token's signing keys are not available yet")]
    Unavailable,
    #[error("an ID token is not an access token")]
    IdToken,
    #[error("the token was issued to a client that is not accepted")]
    Client,
    #[error("the token is not an access token")]
    NotAccessToken,
    #[error("the token has been revoked")]
    Revoked,
}

/// The signing keys usable for verification in a JWKS (any JSON form of it); keys that are
/// symmetric, for encryption, or of an unsupported type are left out.
pub fn keys_from_jwks(jwks: &Value) -> Vec<VerifyKey> {
    let Some(keys) = jwks.get("keys").and_then(Value::as_array) else {
        return Vec::new();
    };
    keys.iter()
        .filter(|k| {
            k.get("use")
                .and_then(Value::as_str)
                .is_none_or(|u| u == "sig")
        })
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .filter_map(|jwk| {
            let algs = algorithms_for(&jwk);
            if algs.is_empty() {
                return None;
            }
            let key = DecodingKey::from_jwk(&jwk).ok()?;
            Some(VerifyKey {
                kid: jwk.common.key_id.clone(),
                algs,
                key,
            })
        })
        .collect()
}

fn algorithms_for(jwk: &Jwk) -> Vec<Algorithm> {
    use Algorithm as A;
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => {
            vec![A::RS256, A::RS384, A::RS512, A::PS256, A::PS384, A::PS512]
        }
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![A::ES256],
            EllipticCurve::P384 => vec![A::ES384],
            _ => Vec::new(),
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => vec![A::EdDSA],
        // Symmetric keys would let anyone who can read the JWKS sign tokens.
        _ => Vec::new(),
    };
    match jwk.common.key_algorithm {
        None => by_type,
        Some(named) => {
            let named = match named {
                KeyAlgorithm::RS256 => Some(A::RS256),
                KeyAlgorithm::RS384 => Some(A::RS384),
                KeyAlgorithm::RS512 => Some(A::RS512),
                KeyAlgorithm::PS256 => Some(A::PS256),
                KeyAlgorithm::PS384 => Some(A::PS384),
                KeyAlgorithm::PS512 => Some(A::PS512),
                KeyAlgorithm::ES256 => Some(A::ES256),
                KeyAlgorithm::ES384 => Some(A::ES384),
                KeyAlgorithm::EdDSA => Some(A::EdDSA),
                _ => None,
            };
            named.filter(|a| by_type.contains(a)).into_iter().collect()
        }
    }
}

/// The outcome of checking a token against one set of keys: `Err(None)` means no key with the
/// token's `kid` (fetch the JWKS again and retry).
pub fn verify(
    token: &str,
    keys: &[VerifyKey],
    issuer: &str,
    audiences: &[String],
) -> Result<Map<String, Value>, Option<BearerError>> {
    let header = match jsonwebtoken::decode_header(token) {
        Ok(h) => h,
        // `alg: none` (and any algorithm the library does not know) ends here.
        Err(_) => return Err(Some(malformed_or_algorithm(token))),
    };
    let alg = header.alg;
    let candidates: Vec<&VerifyKey> = keys
        .iter()
        .filter(|k| header.kid.is_none() || k.kid == header.kid)
        .collect();
    if candidates.is_empty() {
        return Err(if header.kid.is_some() {
            None
        } else {
            Some(BearerError::UnknownKey)
        });
    }
    let usable: Vec<&&VerifyKey> = candidates
        .iter()
        .filter(|k| k.algs.contains(&alg))
        .collect();
    if usable.is_empty() {
        return Err(Some(BearerError::Algorithm));
    }
    let mut validation = Validation::new(alg);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    validation.set_audience(audiences);
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let mut last = BearerError::Signature;
    for k in usable {
        match jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, &validation) {
            // ID tokens are signed by the same keys for the same audience (the client id), and
            // leak more easily (front-end code, logs): only access tokens are credentials here.
            Ok(data)
                if ["nonce", "at_hash", "c_hash"]
                    .iter()
                    .any(|c| data.claims.contains_key(*c)) =>
            {
                return Err(Some(BearerError::IdToken))
            }
            Ok(data) => return Ok(data.claims),
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind as K;
                last = match e.kind() {
                    K::InvalidSignature => BearerError::Signature,
                    K::ExpiredSignature => BearerError::Expired,
                    K::ImmatureSignature => BearerError::NotYetValid,
                    K::InvalidAudience => BearerError::Audience,
                    K::InvalidIssuer => BearerError::Issuer,
                    K::MissingRequiredClaim(_) => BearerError::MissingClaim,
                    K::InvalidAlgorithm => BearerError::Algorithm,
                    _ => BearerError::Malformed,
                };
                // A claim error is the same under every key; only a signature error may
                // differ (several keys without `kid`).
                if last != BearerError::Signature {
                    break;
                }
            }
        }
    }
    Err(Some(last))
}

/// Tells a token with a refused algorithm (`none`, HS*) from one that is plain garbage.
fn malformed_or_algorithm(token: &str) -> BearerError {
    use base64::Engine;
    let header = token
        .split('.')
        .next()
        .and_then(|h| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    match header.as_ref().and_then(|h| h.get("alg")) {
        Some(Value::String(_)) => BearerError::Algorithm,
        _ => BearerError::Malformed,
    }
}

impl super::OidcProvider {
    /// Verifies a JWT access token presented as `Authorization: Bearer` and returns its claims.
    /// An unknown `kid` fetches the JWKS again (at most every `MIN_REFETCH`).
    pub async fn verify_access_token(
        &self,
        token: &str,
    ) -> Result<Map<String, Value>, BearerError> {
        let s = &self.settings;
        let d = self.discovered().map_err(|_| BearerError::Unavailable)?;
        match verify(token, &d.keys, &s.issuer, &s.audiences) {
            Ok(claims) => self.check_client(claims),
            Err(Some(e)) => Err(e),
            Err(None) => {
                if !self.refetch_keys(&d).await {
                    return Err(BearerError::UnknownKey);
                }
                let d = self.discovered().map_err(|_| BearerError::Unavailable)?;
                verify(token, &d.keys, &s.issuer, &s.audiences)
                    .map_err(|e| e.unwrap_or(BearerError::UnknownKey))
                    .and_then(|claims| self.check_client(claims))
            }
        }
    }

    /// With `bearer_clients`, a token must name one of them as `azp` or `client_id`: in many
    /// IdPs any client's administrator can put our audience into its own tokens.
    fn check_client(&self, claims: Map<String, Value>) -> Result<Map<String, Value>, BearerError> {
        let Some(allowed) = &self.settings.bearer_clients else {
            return Ok(claims);
        };
        let client = claims
            .get("azp")
            .or_else(|| claims.get("client_id"))
            .and_then(Value::as_str);
        match client {
            Some(c) if allowed.iter().any(|a| a == c) => Ok(claims),
            _ => Err(BearerError::Client),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_and_encryption_keys_are_never_used() {
        let jwks = serde_json::json!({ "keys": [
            { "kty": "oct", "k": "c2VjcmV0", "kid": "h" },
            { "kty": "EC", "crv": "P-256", "use": "enc", "kid": "e",
              "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
              "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" },
            { "kty": "EC", "crv": "P-256", "kid": "s",
              "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
              "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" },
        ]});
        let keys = keys_from_jwks(&jwks);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("s"));
        assert_eq!(keys[0].algs, vec![Algorithm::ES256]);
    }

    #[test]
    fn none_and_hmac_tokens_are_refused_as_algorithm_errors() {
        use base64::Engine;
        let b64 = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
        };
        let jwks = serde_json::json!({ "keys": [
            { "kty": "EC", "crv": "P-256", "kid": "s",
              "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
              "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" } ]});
        let keys = keys_from_jwks(&jwks);
        let payload = b64(&serde_json::json!({ "iss": "i", "aud": "a", "exp": 9999999999u64 }));
        let none = format!(
            "{}.{payload}.",
            b64(&serde_json::json!({ "alg": "none", "kid": "s" }))
        );
        assert_eq!(
            verify(&none, &keys, "i", &["a".into()]).unwrap_err(),
            Some(BearerError::Algorithm)
        );
        let hs = format!(
            "{}.{payload}.c2ln",
            b64(&serde_json::json!({ "alg": "HS256", "kid": "s" }))
        );
        assert_eq!(
            verify(&hs, &keys, "i", &["a".into()]).unwrap_err(),
            Some(BearerError::Algorithm)
        );
        assert_eq!(
            verify("garbage", &keys, "i", &["a".into()]).unwrap_err(),
            Some(BearerError::Malformed)
        );
        let unknown = format!(
            "{}.{payload}.c2ln",
            b64(&serde_json::json!({ "alg": "ES256", "kid": "other" }))
        );
        assert_eq!(
            verify(&unknown, &keys, "i", &["a".into()]).unwrap_err(),
            None
        );
    }
}
