//! The user's file, as serde types. Nothing here is validated: `compile` turns it into the
//! `Runtime`. Unknown keys are found with `serde_ignored`, so every one of them is reported.
//!
//! Every value that may be a credential is a [`Secret`] or a [`SecretUrl`], so that `Debug` of
//! any of these types (a whole `File` included) shows none of them.

use crate::secret::{Secret, SecretUrl};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct File {
    pub server: Server,
    /// `admin: null` (or an empty `admin:`) disables the admin listener, as `listen: null` does.
    #[serde(deserialize_with = "admin_or_off")]
    pub admin: Admin,
    pub logging: Logging,
    pub headers: Headers,
    pub session: Option<Session>,
    pub providers: Vec<Provider>,
    pub rate_limits: Vec<RateLimit>,
    pub routes: Vec<Route>,
    pub issuer: Option<Issuer>,
}

/// `rate_limits[]`: one limiter (SPEC §3, §5 "Rate limiting").
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RateLimit {
    pub name: String,
    /// `client_ip` | `user` | `route` | `header:NAME`.
    pub key: String,
    /// `100/s`, `600/m`, `5/15m`.
    pub limit: String,
    /// Requests a fresh key may make at once (default 1).
    pub burst: Option<u64>,
    /// `local` (default) or `redis`.
    pub store: Option<String>,
    /// Keys held at most by a local store (default 1 000 000).
    pub max_keys: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct Server {
    pub listen: Vec<String>,
    pub tls: Option<Tls>,
    /// Where `/.portcullis/callback` and (later) the issuer live.
    pub public_url: Option<String>,
    /// Extra domains `rd=` may return to (`.example.com` covers subdomains).
    pub allowed_redirect_domains: Vec<String>,
    pub trusted_proxies: Vec<String>,
    pub threads: usize,
    pub timeouts: Timeouts,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: vec!["0.0.0.0:8080".into()],
            tls: None,
            public_url: None,
            allowed_redirect_domains: Vec::new(),
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
    /// How long a client may take to send a request's head.
    pub request_header: String,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            upstream_connect: "5s".into(),
            upstream_read: "60s".into(),
            idle: "60s".into(),
            request_header: "10s".into(),
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

/// `admin: null` is `Admin { listen: None }`; an absent `admin` keeps the default (through
/// `#[serde(default)]`). A map still goes through `Admin`, so misspelt keys are reported.
fn admin_or_off<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Admin, D::Error> {
    Ok(Option::<Admin>::deserialize(d)?.unwrap_or(Admin { listen: None }))
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
    /// Keep client headers whose names hold `_` (default: removed, as nginx does).
    pub underscores_in_headers: bool,
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
            underscores_in_headers: false,
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
    /// Absent for routes that only answer forward-auth checks.
    pub upstream: Option<String>,
    /// `required`, `optional` or `none`; default `required` when providers exist.
    pub auth: Option<String>,
    /// The `providers[].id` to log in with; default the first provider.
    pub provider: Option<String>,
    pub websocket: Option<bool>,
    pub headers: RouteHeaders,
    /// Prefixes under which no login is needed (matched on the normalised path).
    pub public_paths: Vec<String>,
    /// Who may pass: one rule, or a list of rules of which any may match.
    pub allow: Option<Rules>,
    /// Who may not pass, checked before `allow`.
    pub deny: Option<Rules>,
    /// Accept `Authorization: Bearer` JWTs signed by the route's provider.
    pub bearer: bool,
    /// Scopes a Bearer token must carry, all of them.
    pub scopes: Vec<String>,
    /// Refuse cross-site unsafe-method requests authenticated by the session cookie.
    pub csrf: Option<bool>,
    /// Names of `rate_limits` that must all admit a request.
    pub rate_limit: Vec<String>,
}

/// `allow:`/`deny:` accept a single rule or a list of rules. Not `untagged`: that would hide
/// unknown keys inside a rule behind "did not match any variant".
#[derive(Debug)]
pub enum Rules {
    One(Rule),
    Many(Vec<Rule>),
}

impl Rules {
    pub fn as_slice(&self) -> &[Rule] {
        match self {
            Rules::One(r) => std::slice::from_ref(r),
            Rules::Many(v) => v,
        }
    }
}

impl<'de> Deserialize<'de> for Rules {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Rules;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a rule (a map such as { groups: [staff] }) or a list of rules")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Rules, A::Error> {
                Rule::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Rules::One)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Rules, A::Error> {
                Vec::<Rule>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(Rules::Many)
            }
        }
        d.deserialize_any(V)
    }
}

/// One policy rule: every key given must match; within a key, any listed value.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Rule {
    pub users: Option<Vec<String>>,
    pub emails: Option<Vec<String>>,
    pub email_domains: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
    pub claims: Option<BTreeMap<String, StringOrList>>,
    pub networks: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
    pub mfa: Option<bool>,
}

/// A value written either as `x` or as `[x, y]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            StringOrList::One(s) => vec![s.clone()],
            StringOrList::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RouteHeaders {
    /// Added to the request sent upstream, replacing any value the client sent. Secret: a
    /// `${VAR}` may have put a credential there.
    pub add: BTreeMap<String, Secret<String>>,
    /// Like `add`, but each value is read from a file (secrets such as upstream credentials).
    pub add_file: BTreeMap<String, String>,
    /// Added to the response sent to the client, replacing any value the upstream sent.
    pub add_response: BTreeMap<String, String>,
    pub security: Option<SecurityHeaders>,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct Session {
    pub store: String,
    pub redis: Option<Redis>,
    /// Base64 32-byte keys; the first encrypts, all decrypt.
    pub secrets: Vec<Secret<String>>,
    /// A file with one secret per line (same order and meaning as `secrets`).
    pub secrets_file: Option<String>,
    pub cookie: Cookie,
    pub lifetime: String,
    pub idle_timeout: String,
    pub max_per_user: usize,
    pub cache_ttl: String,
    pub refresh: bool,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            store: "memory".into(),
            redis: None,
            secrets: Vec::new(),
            secrets_file: None,
            cookie: Cookie::default(),
            lifetime: "12h".into(),
            idle_timeout: "1h".into(),
            max_per_user: 10,
            cache_ttl: "10s".into(),
            refresh: true,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Redis {
    pub url: Option<SecretUrl>,
    pub url_file: Option<String>,
    pub cluster: Vec<SecretUrl>,
    pub sentinel: Option<Sentinel>,
    pub key_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Sentinel {
    pub master: String,
    pub urls: Vec<SecretUrl>,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct Cookie {
    pub name: String,
    pub domain: Option<String>,
    pub same_site: String,
    pub secure: bool,
}

impl Default for Cookie {
    fn default() -> Self {
        Cookie {
            name: "_portcullis".into(),
            domain: None,
            same_site: "lax".into(),
            secure: true,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Provider {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<Secret<String>>,
    pub client_secret_file: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub claims: Claims,
    pub extra_auth_params: BTreeMap<String, String>,
    /// Audiences accepted in Bearer tokens from this provider (default: `client_id`).
    pub audience: Option<StringOrList>,
    /// If set, Bearer tokens must have been issued to one of these clients (`azp` or
    /// `client_id` claim).
    pub bearer_clients: Option<Vec<String>>,
    /// What counts as multi-factor authentication for `allow.mfa`.
    pub mfa: Mfa,
    /// `type: local`: the users file, relative to the config file.
    pub users_file: Option<String>,
    /// `type: local`: `optional` or `required` (every user must have a TOTP secret).
    pub totp: Option<String>,
    /// `type: local`: brute-force protection of the login form.
    pub regulation: Option<Regulation>,
}

/// `providers[].regulation` (`type: local`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Regulation {
    pub max_retries: Option<u32>,
    pub find_time: Option<String>,
    pub ban_time: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Mfa {
    /// `amr` values that mean a second factor was used (default: RFC 8176 MFA methods).
    pub amr: Option<Vec<String>>,
    /// `acr` values that mean MFA; also sent as `acr_values` when stepping up.
    pub acr: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Claims {
    pub user: Option<String>,
    pub email: Option<String>,
    pub groups: Option<String>,
    pub name: Option<String>,
}

/// `issuer`: signed identity assertions, the JWKS and OAuth 2 tokens for machine clients.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct Issuer {
    pub enabled: bool,
    /// Default: `server.public_url`.
    pub url: Option<String>,
    /// PEM private keys: the first signs, all verify.
    pub keys: Vec<IssuerKey>,
    /// `redis`: keys generated, shared by every replica and rotated.
    pub store: Option<String>,
    /// For generated keys.
    pub algorithm: String,
    pub rotate_every: String,
    pub assertion: Assertion,
    pub access_token_ttl: String,
    pub clients: Vec<Client>,
}

impl Default for Issuer {
    fn default() -> Self {
        Issuer {
            enabled: true,
            url: None,
            keys: Vec::new(),
            store: None,
            algorithm: "ES256".into(),
            rotate_every: "30d".into(),
            assertion: Assertion::default(),
            access_token_ttl: "15m".into(),
            clients: Vec::new(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct IssuerKey {
    pub file: String,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct Assertion {
    pub header: String,
    pub ttl: String,
}

impl Default for Assertion {
    fn default() -> Self {
        Assertion {
            header: "X-Portcullis-Assertion".into(),
            ttl: "5m".into(),
        }
    }
}

/// A machine client of the token endpoint.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Client {
    pub id: String,
    /// An argon2id PHC string (`portcullis hash-password`).
    pub secret_hash: Option<Secret<String>>,
    pub secret_hash_file: Option<String>,
    pub scopes: Vec<String>,
    /// The tokens' `aud`; default: the issuer url.
    pub audience: Option<String>,
}
