//! The issuer's signing keys: ES256 (P-256), EdDSA (Ed25519) and RS256 (RSA ≥ 2048 bits),
//! read from PEM or generated, held parsed (signing never re-reads a key), and named by their
//! RFC 7638 JWK thumbprint.
//!
//! Tokens are built and verified here by hand rather than through a JWT library: the header
//! of each key is encoded once, and verification pins the algorithm to the key named by
//! `kid`, so `alg: none`, HS256 keyed with a public key, or a key of another type never
//! verify.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use p256::ecdsa::signature::{SignatureEncoding, Signer, Verifier};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use serde_json::{json, Map, Value};
use sha2::Digest;
use std::fmt;
use zeroize::Zeroizing;

/// A signature algorithm of the issuer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    Es256,
    EdDsa,
    Rs256,
}

impl Alg {
    /// The JOSE name (`ES256`, `EdDSA`, `RS256`).
    pub fn name(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
            Alg::Rs256 => "RS256",
        }
    }

    /// Reads a JOSE name, exactly as spelt (a token's `alg` is case-sensitive).
    pub fn parse(s: &str) -> Option<Alg> {
        match s {
            "ES256" => Some(Alg::Es256),
            "EdDSA" => Some(Alg::EdDsa),
            "RS256" => Some(Alg::Rs256),
            _ => None,
        }
    }
}

/// RSA keys shorter than this are refused (NIST SP 800-131A).
const MIN_RSA_BITS: usize = 2048;

enum Private {
    Es256(p256::ecdsa::SigningKey),
    EdDsa(ed25519_dalek::SigningKey),
    Rs256(
        Box<rsa::pkcs1v15::SigningKey<sha2_10::Sha256>>,
        Box<rsa::RsaPrivateKey>,
    ),
}

enum Public {
    Es256(p256::ecdsa::VerifyingKey),
    EdDsa(ed25519_dalek::VerifyingKey),
    Rs256(Box<rsa::pkcs1v15::VerifyingKey<sha2_10::Sha256>>),
}

/// One key pair: signs tokens and verifies them. `Debug` shows its `kid` and algorithm only.
pub struct Key {
    pub kid: String,
    pub alg: Alg,
    private: Private,
    public: Public,
    /// The public JWK as published (`kty`, curve or modulus, `kid`, `alg`, `use`).
    pub jwk: Value,
    /// `base64url(header)` for `typ: JWT` and `typ: at+jwt`, encoded once.
    header_jwt: String,
    header_at: String,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// What kind of token a JWT header announces (`typ`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Typ {
    /// The identity assertion (`JWT`).
    Assertion,
    /// An RFC 9068 access token (`at+jwt`).
    AccessToken,
}

impl Key {
    /// A fresh key pair from the operating system's random source.
    pub fn generate(alg: Alg) -> Result<Key, String> {
        let mut rng = rand_core_06::OsRng;
        let private = match alg {
            Alg::Es256 => Private::Es256(p256::ecdsa::SigningKey::random(&mut rng)),
            Alg::EdDsa => Private::EdDsa(ed25519_dalek::SigningKey::generate(&mut rng)),
            Alg::Rs256 => {
                let key = rsa::RsaPrivateKey::new(&mut rng, MIN_RSA_BITS)
                    .map_err(|e| format!("generating an RSA key: {e}"))?;
                rsa_private(key)
            }
        };
        Ok(Key::from_private(private))
    }

    /// A key from a PEM private key: PKCS#8 (`PRIVATE KEY`, as `gen-key` prints), SEC1
    /// (`EC PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<Key, String> {
        let pem = pem.trim();
        let private = if pem.starts_with("-----BEGIN EC PRIVATE KEY-----") {
            let secret = p256::SecretKey::from_sec1_pem(pem)
                .map_err(|_| "not a P-256 EC private key (only P-256 is supported)")?;
            Private::Es256(secret.into())
        } else if pem.starts_with("-----BEGIN RSA PRIVATE KEY-----") {
            use rsa::pkcs1::DecodeRsaPrivateKey;
            let key = rsa::RsaPrivateKey::from_pkcs1_pem(pem)
                .map_err(|_| "not a valid PKCS#1 RSA private key")?;
            rsa_checked(key)?
        } else if pem.starts_with("-----BEGIN PRIVATE KEY-----") {
            if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
                Private::Es256(k)
            } else if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
                Private::EdDsa(k)
            } else if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_pem(pem) {
                rsa_checked(k)?
            } else {
                return Err("a PKCS#8 private key of an unsupported type: use a P-256, \
                            Ed25519 or RSA key (portcullis gen-key)"
                    .into());
            }
        } else {
            return Err("not a PEM private key (-----BEGIN PRIVATE KEY-----): \
                        see portcullis gen-key"
                .into());
        };
        Ok(Key::from_private(private))
    }

    /// The private key as PKCS#8 PEM (for `gen-key` and the shared key store).
    pub fn to_pem(&self) -> Result<Zeroizing<String>, String> {
        let pem = match &self.private {
            Private::Es256(k) => k.to_pkcs8_pem(LineEnding::LF),
            Private::EdDsa(k) => k.to_pkcs8_pem(LineEnding::LF),
            Private::Rs256(_, k) => k.to_pkcs8_pem(LineEnding::LF),
        };
        pem.map_err(|e| format!("encoding the key: {e}"))
    }

    fn from_private(private: Private) -> Key {
        let (alg, public, members) = match &private {
            Private::Es256(k) => {
                let vk = *k.verifying_key();
                let point = vk.to_encoded_point(false);
                let x = B64.encode(point.x().map(|x| x.as_slice()).unwrap_or_default());
                let y = B64.encode(point.y().map(|y| y.as_slice()).unwrap_or_default());
                (
                    Alg::Es256,
                    Public::Es256(vk),
                    // RFC 7638: the required members, in lexicographic order, no spaces.
                    vec![
                        ("crv", "P-256".to_string()),
                        ("kty", "EC".into()),
                        ("x", x),
                        ("y", y),
                    ],
                )
            }
            Private::EdDsa(k) => {
                let vk = k.verifying_key();
                let x = B64.encode(vk.as_bytes());
                (
                    Alg::EdDsa,
                    Public::EdDsa(vk),
                    vec![
                        ("crv", "Ed25519".to_string()),
                        ("kty", "OKP".into()),
                        ("x", x),
                    ],
                )
            }
            Private::Rs256(_, k) => {
                use rsa::traits::PublicKeyParts;
                let pk = k.to_public_key();
                let n = B64.encode(pk.n().to_bytes_be());
                let e = B64.encode(pk.e().to_bytes_be());
                (
                    Alg::Rs256,
                    Public::Rs256(Box::new(rsa::pkcs1v15::VerifyingKey::new(pk))),
                    vec![("e", e), ("kty", "RSA".to_string()), ("n", n)],
                )
            }
        };
        let kid = thumbprint(&members);
        let mut jwk = Map::new();
        for (name, value) in members {
            jwk.insert(name.into(), Value::String(value));
        }
        jwk.insert("kid".into(), Value::String(kid.clone()));
        jwk.insert("alg".into(), Value::String(alg.name().into()));
        jwk.insert("use".into(), Value::String("sig".into()));
        let header = |typ: &str| {
            B64.encode(json!({ "alg": alg.name(), "typ": typ, "kid": kid }).to_string())
        };
        Key {
            header_jwt: header("JWT"),
            header_at: header("at+jwt"),
            kid,
            alg,
            private,
            public,
            jwk: Value::Object(jwk),
        }
    }

    /// A compact JWS of `claims` (a JSON object's bytes) with this key's header for `typ`.
    pub fn sign(&self, typ: Typ, claims: &[u8]) -> String {
        let header = match typ {
            Typ::Assertion => &self.header_jwt,
            Typ::AccessToken => &self.header_at,
        };
        let payload_len = claims.len().div_ceil(3) * 4;
        let mut out = String::with_capacity(header.len() + payload_len + 350);
        out.push_str(header);
        out.push('.');
        B64.encode_string(claims, &mut out);
        let signature = match &self.private {
            Private::Es256(k) => {
                let s: p256::ecdsa::Signature = k.sign(out.as_bytes());
                s.to_vec()
            }
            Private::EdDsa(k) => k.sign(out.as_bytes()).to_vec(),
            Private::Rs256(k, _) => k.sign(out.as_bytes()).to_vec(),
        };
        out.push('.');
        B64.encode_string(signature, &mut out);
        out
    }

    /// Whether `signature` is this key's over `input`.
    fn verifies(&self, input: &[u8], signature: &[u8]) -> bool {
        match &self.public {
            Public::Es256(k) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|s| k.verify(input, &s).is_ok()),
            Public::EdDsa(k) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|s| k.verify_strict(input, &s).is_ok()),
            Public::Rs256(k) => rsa::pkcs1v15::Signature::try_from(signature)
                .is_ok_and(|s| k.verify(input, &s).is_ok()),
        }
    }
}

fn rsa_private(key: rsa::RsaPrivateKey) -> Private {
    Private::Rs256(
        Box::new(rsa::pkcs1v15::SigningKey::new(key.clone())),
        Box::new(key),
    )
}

fn rsa_checked(key: rsa::RsaPrivateKey) -> Result<Private, String> {
    use rsa::traits::PublicKeyParts;
    if key.size() * 8 < MIN_RSA_BITS {
        return Err(format!(
            "an RSA key of {} bits is too short: at least {MIN_RSA_BITS}",
            key.size() * 8
        ));
    }
    key.validate()
        .map_err(|_| "the RSA private key is not consistent")?;
    Ok(rsa_private(key))
}

/// The RFC 7638 thumbprint of a JWK given its required members in order: base64url of the
/// SHA-256 of their canonical JSON.
fn thumbprint(members: &[(&str, String)]) -> String {
    let mut canonical = Map::new();
    for (name, value) in members {
        canonical.insert((*name).into(), Value::String(value.clone()));
    }
    // serde_json's map is ordered by key (no `preserve_order`), and compact: canonical.
    let text = Value::Object(canonical).to_string();
    B64.encode(sha2::Sha256::digest(text.as_bytes()))
}

/// Why a token is not one of ours, or not a valid one. Safe to show to its bearer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token is signed by an unknown key")]
    UnknownKey,
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    #[error("the token is not an access token")]
    Type,
    #[error("the token's signature is invalid")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token was issued by another issuer")]
    Issuer,
    #[error("the token is not meant for this audience")]
    Audience,
    #[error("the token has been revoked")]
    Revoked,
    #[error("the token lacks a required claim")]
    MissingClaim,
}

/// The parts of a compact JWS, split without copying.
struct Parts<'a> {
    header: Map<String, Value>,
    input: &'a str,
    payload: &'a str,
    signature: &'a str,
}

fn split(token: &str) -> Result<Parts<'_>, TokenError> {
    let mut it = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(TokenError::Malformed);
    };
    let header = B64.decode(h).map_err(|_| TokenError::Malformed)?;
    let Ok(Value::Object(header)) = serde_json::from_slice::<Value>(&header) else {
        return Err(TokenError::Malformed);
    };
    Ok(Parts {
        header,
        input: &token[..h.len() + 1 + p.len()],
        payload: p,
        signature: s,
    })
}

/// The `kid` of a token's header, if it is a JWT with one (without verifying anything).
pub fn peek_kid(token: &str) -> Option<String> {
    let parts = split(token).ok()?;
    parts.header.get("kid")?.as_str().map(str::to_string)
}

/// Verifies a token's signature with the key its `kid` names among `keys`, pinned to that
/// key's algorithm, and that its `typ` is `typ`. Returns the claims; checks no claim.
pub fn verify_signature(
    token: &str,
    keys: &[std::sync::Arc<Key>],
    typ: Typ,
) -> Result<Map<String, Value>, TokenError> {
    if token.len() > 16 * 1024 {
        return Err(TokenError::Malformed);
    }
    let parts = split(token)?;
    let kid = parts
        .header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(TokenError::UnknownKey)?;
    let key = keys
        .iter()
        .find(|k| k.kid == kid)
        .ok_or(TokenError::UnknownKey)?;
    let alg = parts.header.get("alg").and_then(Value::as_str);
    if alg != Some(key.alg.name()) {
        return Err(TokenError::Algorithm);
    }
    // Extensions we do not understand must be refused (RFC 7515 §4.1.11).
    if parts.header.contains_key("crit") {
        return Err(TokenError::Malformed);
    }
    let declared = parts.header.get("typ").and_then(Value::as_str);
    let typ_ok = match (typ, declared) {
        (Typ::AccessToken, Some(t)) => {
            t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
        }
        (Typ::Assertion, Some(t)) => t.eq_ignore_ascii_case("JWT"),
        (_, None) => false,
    };
    if !typ_ok {
        return Err(TokenError::Type);
    }
    let signature = B64
        .decode(parts.signature)
        .map_err(|_| TokenError::Malformed)?;
    if !key.verifies(parts.input.as_bytes(), &signature) {
        return Err(TokenError::Signature);
    }
    let payload = B64
        .decode(parts.payload)
        .map_err(|_| TokenError::Malformed)?;
    match serde_json::from_slice::<Value>(&payload) {
        Ok(Value::Object(claims)) => Ok(claims),
        _ => Err(TokenError::Malformed),
    }
}

/// `portcullis gen-key`: a new private key for `alg` (`ES256`, `EdDSA` or `RS256`), as PKCS#8
/// PEM.
pub fn gen_key_pem(alg: &str) -> Result<String, String> {
    let alg = Alg::parse(alg)
        .ok_or_else(|| format!("unknown algorithm {alg:?}: use ES256, EdDSA or RS256"))?;
    let key = Key::generate(alg)?;
    Ok(key.to_pem()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn roundtrip(alg: Alg) {
        let key = Key::generate(alg).unwrap();
        assert_eq!(key.alg, alg);
        let pem = key.to_pem().unwrap();
        let again = Key::from_pem(&pem).unwrap();
        assert_eq!(again.kid, key.kid, "the kid is a property of the key");
        assert_eq!(again.jwk, key.jwk);
        let token = key.sign(Typ::AccessToken, br#"{"sub":"x"}"#);
        let keys = vec![Arc::new(again)];
        let claims = verify_signature(&token, &keys, Typ::AccessToken).unwrap();
        assert_eq!(claims["sub"], "x");
        assert_eq!(
            verify_signature(&token, &keys, Typ::Assertion),
            Err(TokenError::Type)
        );
        // A flipped bit of the payload breaks the signature.
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        parts[1] = B64.encode(br#"{"sub":"y"}"#);
        assert_eq!(
            verify_signature(&parts.join("."), &keys, Typ::AccessToken),
            Err(TokenError::Signature)
        );
        // No private part in the published key.
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(key.jwk.get(private).is_none());
        }
    }

    #[test]
    fn es256_roundtrip() {
        roundtrip(Alg::Es256);
    }

    #[test]
    fn eddsa_roundtrip() {
        roundtrip(Alg::EdDsa);
    }

    #[test]
    fn rs256_roundtrip() {
        roundtrip(Alg::Rs256);
    }

    #[test]
    fn rfc7638_example_thumbprint() {
        // The example of RFC 7638 §3.1.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let got = thumbprint(&[("e", "AQAB".into()), ("kty", "RSA".into()), ("n", n.into())]);
        assert_eq!(got, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn none_and_hmac_never_verify() {
        let key = Key::generate(Alg::Es256).unwrap();
        let keys = vec![Arc::new(key)];
        let kid = &keys[0].kid;
        let claims = B64.encode(br#"{"sub":"x"}"#);
        for alg in ["none", "HS256", "RS256", "es256"] {
            let header = B64.encode(json!({"alg": alg, "typ": "at+jwt", "kid": kid}).to_string());
            let token = format!("{header}.{claims}.{}", B64.encode(b"sig"));
            assert_eq!(
                verify_signature(&token, &keys, Typ::AccessToken),
                Err(TokenError::Algorithm),
                "{alg}"
            );
            let token = format!("{header}.{claims}.");
            assert!(verify_signature(&token, &keys, Typ::AccessToken).is_err());
        }
        assert_eq!(
            verify_signature("a.b", &keys, Typ::AccessToken),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn bad_pem_is_a_clear_error() {
        assert!(Key::from_pem("hello").unwrap_err().contains("PEM"));
        assert!(
            Key::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----").is_err()
        );
    }
}
