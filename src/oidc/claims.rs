//! Reading an identity out of claims, by the names the config maps (`claims:`).

use base64::Engine;
use serde_json::{Map, Value};

/// Which claim holds each part of the identity (`providers[].claims`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClaimNames {
    pub user: String,
    pub email: String,
    pub groups: String,
    pub name: String,
}

impl Default for ClaimNames {
    fn default() -> Self {
        ClaimNames {
            user: "preferred_username".into(),
            email: "email".into(),
            groups: "groups".into(),
            name: "name".into(),
        }
    }
}

/// The identity Portcullis forwards and decides on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub sub: String,
    pub user: String,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub name: Option<String>,
    pub groups: Vec<String>,
    pub amr: Vec<String>,
    pub acr: Option<String>,
}

impl Identity {
    /// `user` falls back to a verified (or not explicitly unverified) `email`, then `sub`, so
    /// that every login has a user name.
    pub fn from_claims(claims: &Map<String, Value>, names: &ClaimNames) -> Option<Identity> {
        let string = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_string);
        let sub = string("sub")?;
        let email = string(&names.email);
        let email_verified = claims.get("email_verified").and_then(Value::as_bool);
        // An address the IdP says it has not verified could be anyone's: never a user name.
        let user = string(&names.user)
            .or_else(|| email.clone().filter(|_| email_verified != Some(false)))
            .unwrap_or_else(|| sub.clone());
        Some(Identity {
            user,
            email,
            email_verified,
            name: string(&names.name),
            groups: list(claims.get(&names.groups)),
            amr: list(claims.get("amr")),
            acr: string("acr"),
            sub,
        })
    }
}

/// A claim that may be a list or a single (space- or comma-free) string.
fn list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// The claims of a JWT whose signature has already been verified.
pub fn payload(jwt: &str) -> Option<Map<String, Value>> {
    let part = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unverified_email_is_never_the_user_name() {
        let names = ClaimNames::default();
        let c =
            serde_json::json!({ "sub": "u-9", "email": "ceo@corp.com", "email_verified": false });
        let id = Identity::from_claims(c.as_object().unwrap(), &names).unwrap();
        assert_eq!(id.user, "u-9");
        let c =
            serde_json::json!({ "sub": "u-9", "email": "ceo@corp.com", "email_verified": true });
        assert_eq!(
            Identity::from_claims(c.as_object().unwrap(), &names)
                .unwrap()
                .user,
            "ceo@corp.com"
        );
    }

    #[test]
    fn identity_from_mapped_claims() {
        let claims: Map<String, Value> = serde_json::from_str(
            r#"{"sub":"u1","preferred_username":"alice","email":"a@example.com","roles":["x","y"],"amr":["pwd","otp"]}"#,
        )
        .unwrap();
        let names = ClaimNames {
            groups: "roles".into(),
            ..ClaimNames::default()
        };
        let id = Identity::from_claims(&claims, &names).unwrap();
        assert_eq!(id.user, "alice");
        assert_eq!(id.groups, ["x", "y"]);
        assert_eq!(id.amr, ["pwd", "otp"]);
        let no_user: Map<String, Value> =
            serde_json::from_str(r#"{"sub":"u2","email":"b@example.com"}"#).unwrap();
        assert_eq!(
            Identity::from_claims(&no_user, &ClaimNames::default())
                .unwrap()
                .user,
            "b@example.com"
        );
        let no_sub: Map<String, Value> =
            serde_json::from_str(r#"{"email":"b@example.com"}"#).unwrap();
        assert!(Identity::from_claims(&no_sub, &ClaimNames::default()).is_none());
    }
}
