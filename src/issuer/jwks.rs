//! The public documents of the issuer: the JWKS (public key parts only) and the discovery
//! document, each rendered once per key set or config, with a strong `ETag`, cacheable by
//! anyone (`Cache-Control: public`) and readable from any origin (CORS `*`: they are public).

use super::keys::Key;
use super::IssuerConfig;
use crate::answer::Answer;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::{json, Value};
use sha2::Digest;
use std::sync::Arc;

/// How long clients may cache the documents (5 minutes): short enough that a verifier
/// refetching at this pace learns a new key long before it signs anything.
pub const MAX_AGE_SECS: u64 = 300;

/// One rendered document.
#[derive(Debug, Clone)]
pub struct Document {
    pub body: Bytes,
    pub etag: HeaderValue,
}

impl Document {
    fn new(value: &Value) -> Document {
        let body = Bytes::from(value.to_string());
        let digest = sha2::Sha256::digest(&body);
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16]);
        Document {
            etag: HeaderValue::from_str(&format!("\"{tag}\""))
                .unwrap_or_else(|_| HeaderValue::from_static("\"0\"")),
            body,
        }
    }

    /// `{"keys":[…]}`: every published key's public JWK.
    pub fn jwks(keys: &[Arc<Key>]) -> Document {
        let keys: Vec<&Value> = keys.iter().map(|k| &k.jwk).collect();
        Document::new(&json!({ "keys": keys }))
    }

    /// The OpenID Provider / RFC 8414 metadata of the issuer.
    pub fn discovery(config: &IssuerConfig, keys: &[Arc<Key>]) -> Document {
        let at = |path: &str| format!("{}{path}", config.iss);
        let mut algs: Vec<&str> = keys.iter().map(|k| k.alg.name()).collect();
        algs.dedup();
        let auth_methods = ["client_secret_basic", "client_secret_post"];
        Document::new(&json!({
            "issuer": config.iss,
            "jwks_uri": at("/.well-known/jwks.json"),
            "token_endpoint": at("/.portcullis/token"),
            "introspection_endpoint": at("/.portcullis/introspect"),
            "revocation_endpoint": at("/.portcullis/revoke"),
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "token_endpoint_auth_methods_supported": auth_methods,
            "introspection_endpoint_auth_methods_supported": auth_methods,
            "revocation_endpoint_auth_methods_supported": auth_methods,
            "id_token_signing_alg_values_supported": algs,
            "access_token_signing_alg_values_supported": algs,
            "scopes_supported": config.clients.all_scopes(),
        }))
    }

    /// The answer to a `GET` of this document: `304` when `if_none_match` names it.
    pub fn answer(&self, if_none_match: Option<&str>) -> Answer {
        let cache = HeaderValue::from_static(cache_control());
        let cors = HeaderValue::from_static("*");
        let headers = vec![
            (http::header::ETAG, self.etag.clone()),
            (http::header::CACHE_CONTROL, cache),
            (http::header::ACCESS_CONTROL_ALLOW_ORIGIN, cors),
            (
                HeaderName::from_static("vary"),
                HeaderValue::from_static("Origin"),
            ),
        ];
        if if_none_match.is_some_and(|v| matches(v, &self.etag)) {
            return Answer {
                headers,
                ..Answer::empty(StatusCode::NOT_MODIFIED)
            };
        }
        Answer {
            content_type: Some("application/json"),
            body: self.body.clone(),
            headers,
            ..Answer::empty(StatusCode::OK)
        }
    }
}

const fn cache_control() -> &'static str {
    // Must match MAX_AGE_SECS.
    "public, max-age=300"
}

/// `If-None-Match` uses the weak comparison (RFC 9110 §13.1.2): `W/` is ignored, `*` matches.
fn matches(if_none_match: &str, etag: &HeaderValue) -> bool {
    let ours = etag.to_str().unwrap_or_default();
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_forms() {
        let d = Document::new(&json!({"a": 1}));
        let tag = d.etag.to_str().unwrap().to_string();
        assert!(matches(&tag, &d.etag));
        assert!(matches(&format!("W/{tag}"), &d.etag));
        assert!(matches(&format!("\"x\", {tag}"), &d.etag));
        assert!(matches("*", &d.etag));
        assert!(!matches("\"other\"", &d.etag));
        assert_eq!(d.answer(Some(&tag)).status, StatusCode::NOT_MODIFIED);
        assert_eq!(d.answer(None).status, StatusCode::OK);
        assert_eq!(cache_control(), format!("public, max-age={MAX_AGE_SECS}"));
    }

    #[test]
    fn jwks_has_public_parts_only() {
        for alg in [
            super::super::keys::Alg::Es256,
            super::super::keys::Alg::EdDsa,
        ] {
            let key = Arc::new(Key::generate(alg).unwrap());
            let doc = Document::jwks(&[key]);
            let v: Value = serde_json::from_slice(&doc.body).unwrap();
            for k in v["keys"].as_array().unwrap() {
                for private in ["d", "p", "q", "dp", "dq", "qi"] {
                    assert!(k.get(private).is_none(), "{private} in {k}");
                }
            }
        }
    }
}
