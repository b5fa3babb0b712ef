//! The user's file, as serde types. Nothing here is validated: `compile` turns it into the
//! `Runtime`. Unknown keys are found with `serde_ignored`, so every one of them is reported.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct File {
    pub server: Server,
    pub admin: Admin,
    pub logging: Logging,
    pub headers: Headers,
    pub routes: Vec<Route>,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct Server {
    pub listen: Vec<String>,
    pub tls: Option<Tls>,
    pub trusted_proxies: Vec<String>,
    pub threads: usize,
    pub timeouts: Timeouts,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: vec!["0.0.0.0:8080".into()],
            tls: None,
            trusted_proxies: Vec::new(),
            threads: 0,
            timeouts: Timeouts::default(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Tls {
    pub listen: Vec<String>,
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct Timeouts {
    pub upstream_connect: String,
    pub upstream_read: String,
    pub idle: String,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            upstream_connect: "5s".into(),
            upstream_read: "60s".into(),
            idle: "60s".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct Admin {
    /// `null` (or `off`) disables the admin listener.
    pub listen: Option<String>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: Some("127.0.0.1:9901".into()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct Logging {
    pub format: String,
    pub level: String,
    pub access_log: bool,
    pub audit: String,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            format: "json".into(),
            level: "info".into(),
            access_log: true,
            audit: "stdout".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct Headers {
    /// Header name -> claim template. All of them are stripped from incoming requests.
    pub identity: BTreeMap<String, String>,
    pub security: SecurityHeaders,
    pub remove_response: Vec<String>,
}

impl Default for Headers {
    fn default() -> Self {
        let identity = [
            ("X-Auth-Request-User", "{user}"),
            ("X-Auth-Request-Email", "{email}"),
            ("X-Auth-Request-Groups", "{groups}"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Headers {
            identity,
            security: SecurityHeaders::defaults(),
            remove_response: vec!["Server".into(), "X-Powered-By".into()],
        }
    }
}

/// Each field is the header's value; `null` turns that header off. In a route's
/// `headers.security`, a missing field inherits the global value.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct SecurityHeaders {
    #[serde(deserialize_with = "present")]
    pub strict_transport_security: Option<Option<String>>,
    #[serde(deserialize_with = "present")]
    pub content_type_options: Option<Option<String>>,
    #[serde(deserialize_with = "present")]
    pub frame_options: Option<Option<String>>,
    #[serde(deserialize_with = "present")]
    pub referrer_policy: Option<Option<String>>,
    #[serde(deserialize_with = "present")]
    pub content_security_policy: Option<Option<String>>,
    #[serde(deserialize_with = "present")]
    pub permissions_policy: Option<Option<String>>,
    #[serde(deserialize_with = "present")]
    pub cross_origin_opener_policy: Option<Option<String>>,
}

impl SecurityHeaders {
    fn defaults() -> Self {
        let some = |s: &str| Some(Some(s.to_string()));
        SecurityHeaders {
            strict_transport_security: some("max-age=31536000; includeSubDomains"),
            content_type_options: some("nosniff"),
            frame_options: some("SAMEORIGIN"),
            referrer_policy: some("strict-origin-when-cross-origin"),
            content_security_policy: Some(None),
            permissions_policy: Some(None),
            cross_origin_opener_policy: Some(None),
        }
    }
}

/// Distinguishes a key that is absent (outer `None`, via `default`) from one set to `null`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Route {
    /// Label for metrics and logs; defaults to `host + path`.
    pub name: Option<String>,
    /// Exact host or `*.example.com`; absent means any host.
    pub host: Option<String>,
    pub path: Option<String>,
    pub upstream: String,
    pub auth: Option<String>,
    pub websocket: Option<bool>,
    pub headers: RouteHeaders,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RouteHeaders {
    /// Added to the request sent upstream, replacing any value the client sent.
    pub add: BTreeMap<String, String>,
    /// Like `add`, but each value is read from a file (secrets such as upstream credentials).
    pub add_file: BTreeMap<String, String>,
    /// Added to the response sent to the client, replacing any value the upstream sent.
    pub add_response: BTreeMap<String, String>,
    pub security: Option<SecurityHeaders>,
}
