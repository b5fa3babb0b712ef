//! `POST /.portcullis/token` (RFC 6749 `client_credentials`, tokens per RFC 9068),
//! `POST /.portcullis/introspect` (RFC 7662) and `POST /.portcullis/revoke` (RFC 7009).
//!
//! Requests are form bodies only (`application/x-www-form-urlencoded`, at most
//! [`MAX_BODY_BYTES`]), every parameter at most once. Clients authenticate with HTTP Basic
//! (`client_secret_basic`) or with `client_id` and `client_secret` in the body
//! (`client_secret_post`), never both. Every failure is an RFC 6749 error object.

use super::clients::{Client, Credentials};
use super::keys::Typ;
use super::Issuer;
use crate::answer::Answer;
use crate::secret::Secret;
use crate::telemetry;
use base64::Engine;
use http::{HeaderValue, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::Arc;

/// The largest request body read: a token request is a few hundred bytes, and a token to
/// introspect or revoke a few kilobytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The endpoints served here (after `/.portcullis/`).
pub const ENDPOINTS: [&str; 3] = ["token", "introspect", "revoke"];

/// The request body as read by the front door.
pub enum Body<'a> {
    Read(&'a [u8]),
    /// Larger than [`MAX_BODY_BYTES`]: not read further.
    TooLarge,
}

/// What the endpoints need to know about a request. `Debug` is not derived: it holds
/// credentials.
pub struct TokenRequest<'a> {
    pub method: &'a http::Method,
    pub endpoint: &'a str,
    pub authorization: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub body: Body<'a>,
    pub client_ip: Option<IpAddr>,
}

/// An RFC 6749 §5.2 error.
struct OAuthError {
    status: StatusCode,
    code: &'static str,
    description: &'static str,
}

impl OAuthError {
    fn new(status: StatusCode, code: &'static str, description: &'static str) -> OAuthError {
        OAuthError {
            status,
            code,
            description,
        }
    }

    fn invalid_request(description: &'static str) -> OAuthError {
        OAuthError::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    fn invalid_client() -> OAuthError {
        OAuthError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        )
    }

    fn answer(&self) -> Answer {
        let mut a = Answer::json(
            self.status,
            &json!({ "error": self.code, "error_description": self.description }),
        );
        a.headers
            .push((http::header::PRAGMA, HeaderValue::from_static("no-cache")));
        match self.status {
            StatusCode::UNAUTHORIZED => a.with_header(
                http::header::WWW_AUTHENTICATE,
                "Basic realm=\"portcullis\", charset=\"UTF-8\"",
            ),
            StatusCode::METHOD_NOT_ALLOWED => a.with_header(http::header::ALLOW, "POST"),
            _ => a,
        }
    }
}

/// Answers `/.portcullis/{token,introspect,revoke}`.
pub async fn handle(issuer: &Issuer, req: TokenRequest<'_>) -> Answer {
    match serve(issuer, &req).await {
        Ok(answer) => answer,
        Err(e) => e.answer(),
    }
}

async fn serve(issuer: &Issuer, req: &TokenRequest<'_>) -> Result<Answer, OAuthError> {
    if *req.method != http::Method::POST {
        return Err(OAuthError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "use POST",
        ));
    }
    let form = Form::read(req)?;
    let client = authenticate(issuer, req, &form).await?;
    match req.endpoint {
        "token" => token(issuer, req, &form, &client),
        "introspect" => introspect(issuer, &form).await,
        _ => revoke(issuer, req, &form, &client).await,
    }
}

/// The parameters of a form body, each at most once; empty ones count as absent (RFC 6749
/// §3.1).
struct Form(Vec<(String, String)>);

impl Form {
    fn read(req: &TokenRequest<'_>) -> Result<Form, OAuthError> {
        let body = match req.body {
            Body::Read(b) => b,
            Body::TooLarge => {
                return Err(OAuthError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request",
                    "the request body is too large",
                ))
            }
        };
        let media = req
            .content_type
            .and_then(|c| c.split(';').next())
            .map(str::trim);
        if !media.is_some_and(|m| m.eq_ignore_ascii_case("application/x-www-form-urlencoded")) {
            return Err(OAuthError::invalid_request(
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        let mut params: Vec<(String, String)> = Vec::new();
        for (k, v) in url::form_urlencoded::parse(body) {
            if params.iter().any(|(seen, _)| *seen == k) {
                return Err(OAuthError::invalid_request(
                    "a parameter is given more than once",
                ));
            }
            params.push((k.into_owned(), v.into_owned()));
        }
        Ok(Form(params))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// The client credentials of a request, by Basic or in the body (not both).
fn credentials(req: &TokenRequest<'_>, form: &Form) -> Result<Credentials, OAuthError> {
    let basic = req.authorization.and_then(|a| {
        let (scheme, rest) = a.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("basic").then(|| rest.trim())
    });
    let posted_secret = form.get("client_secret");
    match (basic, posted_secret) {
        (Some(_), Some(_)) => Err(OAuthError::invalid_request(
            "use one client authentication method, not two",
        )),
        (Some(encoded), None) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| OAuthError::invalid_client())?;
            let text = String::from_utf8(decoded).map_err(|_| OAuthError::invalid_client())?;
            let (id, secret) = text
                .split_once(':')
                .ok_or_else(OAuthError::invalid_client)?;
            // RFC 6749 §2.3.1: both are form-urlencoded before Basic encoding.
            let id = form_decode(id);
            if form.get("client_id").is_some_and(|posted| posted != id) {
                return Err(OAuthError::invalid_request(
                    "client_id differs from the authenticated client",
                ));
            }
            Ok(Credentials {
                id,
                secret: Secret::new(form_decode(secret)),
            })
        }
        (None, Some(secret)) => {
            let id = form
                .get("client_id")
                .ok_or_else(OAuthError::invalid_client)?;
            Ok(Credentials {
                id: id.to_string(),
                secret: Secret::new(secret.to_string()),
            })
        }
        (None, None) => Err(OAuthError::invalid_client()),
    }
}

fn form_decode(s: &str) -> String {
    let with_spaces = s.replace('+', " ");
    percent_encoding::percent_decode_str(&with_spaces)
        .decode_utf8_lossy()
        .into_owned()
}

async fn authenticate(
    issuer: &Issuer,
    req: &TokenRequest<'_>,
    form: &Form,
) -> Result<Arc<Client>, OAuthError> {
    let creds = credentials(req, form)?;
    match issuer
        .verified
        .authenticate(&issuer.config.clients, &creds)
        .await
    {
        Some(client) => Ok(client),
        None => {
            tracing::info!(
                client_id = %creds.id.chars().take(64).collect::<String>(),
                endpoint = req.endpoint,
                "client authentication failed"
            );
            Err(OAuthError::invalid_client())
        }
    }
}

#[derive(Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    client_id: &'a str,
    aud: &'a str,
    scope: &'a str,
    iat: u64,
    exp: u64,
    jti: &'a str,
}

#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
    scope: &'a str,
}

fn token(
    issuer: &Issuer,
    req: &TokenRequest<'_>,
    form: &Form,
    client: &Client,
) -> Result<Answer, OAuthError> {
    match form.get("grant_type") {
        None => return Err(OAuthError::invalid_request("grant_type is required")),
        Some("client_credentials") => {}
        Some(_) => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only client_credentials is supported",
            ))
        }
    }
    let scope = match form.get("scope") {
        None => client.scopes.join(" "),
        Some(asked) => {
            let mut granted: Vec<&str> = Vec::new();
            for s in asked.split(' ').filter(|s| !s.is_empty()) {
                if !client.scopes.iter().any(|c| c == s) {
                    return Err(OAuthError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_scope",
                        "a requested scope is not granted to this client",
                    ));
                }
                if !granted.contains(&s) {
                    granted.push(s);
                }
            }
            granted.join(" ")
        }
    };
    let now = super::now_secs();
    let ttl = issuer.config.access_token_ttl.as_secs();
    let jti = super::new_jti();
    let claims = AccessClaims {
        iss: &issuer.config.iss,
        sub: &client.id,
        client_id: &client.id,
        aud: &client.audience,
        scope: &scope,
        iat: now,
        exp: now + ttl,
        jti: &jti,
    };
    let claims = serde_json::to_vec(&claims).map_err(|_| {
        OAuthError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the token could not be built",
        )
    })?;
    let signer = Arc::clone(&issuer.key_set().signer);
    let access_token = signer.sign(Typ::AccessToken, &claims);
    let body = serde_json::to_vec(&TokenResponse {
        access_token: &access_token,
        token_type: "Bearer",
        expires_in: ttl,
        scope: &scope,
    })
    .unwrap_or_default();
    telemetry::metrics::TOKENS_ISSUED
        .with_label_values(&["client_credentials"])
        .inc();
    telemetry::audit(
        "token_issued",
        json!({
            "client_id": client.id,
            "grant": "client_credentials",
            "scope": scope,
            "token_id": jti,
            "client_ip": req.client_ip.map(|ip| ip.to_string()),
        }),
    );
    let mut answer = Answer {
        content_type: Some("application/json"),
        body: bytes::Bytes::from(body),
        ..Answer::empty(StatusCode::OK)
    };
    answer
        .headers
        .push((http::header::PRAGMA, HeaderValue::from_static("no-cache")));
    Ok(answer)
}

fn inactive() -> Answer {
    Answer::json(StatusCode::OK, &json!({ "active": false }))
}

async fn introspect(issuer: &Issuer, form: &Form) -> Result<Answer, OAuthError> {
    let token = form
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    let claims = match issuer.verify_unrevoked(token, super::now_secs()).await {
        Ok(c) => c,
        Err(_) => return Ok(inactive()),
    };
    let mut out = serde_json::Map::new();
    out.insert("active".into(), Value::Bool(true));
    for name in [
        "scope",
        "client_id",
        "sub",
        "aud",
        "iss",
        "exp",
        "iat",
        "jti",
    ] {
        if let Some(v) = claims.get(name) {
            out.insert(name.into(), v.clone());
        }
    }
    out.insert("token_type".into(), Value::String("Bearer".into()));
    Ok(Answer::json(StatusCode::OK, &Value::Object(out)))
}

async fn revoke(
    issuer: &Issuer,
    req: &TokenRequest<'_>,
    form: &Form,
    client: &Client,
) -> Result<Answer, OAuthError> {
    let token = form
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    let done = Answer::empty(StatusCode::OK);
    // Expired, foreign or malformed tokens: nothing to revoke (RFC 7009 §2.2).
    let claims = match issuer.verify_signed(token, super::now_secs()) {
        Ok(c) => c,
        Err(_) => return Ok(done),
    };
    if claims.get("client_id").and_then(Value::as_str) != Some(client.id.as_str()) {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "the token was issued to another client",
        ));
    }
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
    if let Err(e) = issuer.revoked.revoke(jti, exp).await {
        telemetry::metrics::count_store_error(&e);
        tracing::warn!(error = %e, "token revocation could not be stored");
        return Err(OAuthError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the revocation could not be stored; try again",
        ));
    }
    telemetry::audit(
        "token_revoked",
        json!({
            "client_id": client.id,
            "token_id": jti,
            "client_ip": req.client_ip.map(|ip| ip.to_string()),
        }),
    );
    Ok(done)
}
