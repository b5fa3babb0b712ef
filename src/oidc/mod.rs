//! The OpenID Connect relying party: discovery (kept fresh in the background), the
//! Authorization Code + PKCE login, ID token verification, userinfo, refresh, and the
//! RP-initiated logout URL. No HTTP handling of our own endpoints lives here.

pub mod bearer;
mod claims;
mod discovery;

pub use bearer::BearerError;
pub use claims::{ClaimNames, Identity};
pub use discovery::DiscoveryMetadata;

use crate::secret::Secret;
use arc_swap::ArcSwapOption;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreTokenResponse};
use openidconnect::reqwest;
use openidconnect::{
    AccessToken, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, LogoutRequest, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, PostLogoutRedirectUrl, RedirectUrl, RefreshToken, Scope,
    TokenResponse,
};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How far in the future an ID token's `iat` may be (clock skew between us and the IdP).
const MAX_IAT_SKEW: Duration = Duration::from_secs(60);
/// Re-fetch discovery and the JWKS at least this often, and at most this often on unknown `kid`.
const REDISCOVER_EVERY: Duration = Duration::from_secs(3600);
const MIN_REFETCH: Duration = Duration::from_secs(10);

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// One configured `type: oidc` provider, compiled. `Debug` shows no client secret; `Hash`
/// covers every field, the secret's value included (for the reload fingerprint).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProviderSettings {
    pub id: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<Secret<String>>,
    pub scopes: Vec<String>,
    pub claims: ClaimNames,
    pub extra_auth_params: Vec<(String, String)>,
    /// `<public_url>/.portcullis/callback`.
    pub redirect_uri: String,
    /// Audiences accepted in Bearer tokens (default: the client id).
    pub audiences: Vec<String>,
    /// Clients (`azp` / `client_id`) whose Bearer tokens are accepted; `None`: any.
    pub bearer_clients: Option<Vec<String>>,
    /// `acr` values that mean MFA, sent as `acr_values` when stepping up.
    pub mfa_acr: Vec<String>,
}

/// What can go wrong talking to the IdP, classified once for the HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// Discovery has not succeeded yet, or the IdP could not be reached: 502.
    #[error("identity provider unreachable: {0}")]
    Unreachable(String),
    /// The IdP refused the code or answered nonsense: the login fails (400 page).
    #[error("identity provider rejected the login: {0}")]
    Rejected(String),
    /// The ID token did not verify: the login fails.
    #[error("ID token invalid: {0}")]
    InvalidIdToken(String),
}

/// Why a refresh failed: `Revoked` ends the session, `Unavailable` keeps it for now.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("refresh token refused by the identity provider")]
    Revoked,
    #[error("identity provider unavailable for refresh: {0}")]
    Unavailable(String),
}

/// The secrets of one login in progress, kept in the per-login cookie until the callback.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct PendingLogin {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingLogin { .. }")
    }
}

/// Tokens from the IdP; `Debug` never shows them.
#[derive(Clone)]
pub struct Tokens {
    pub id_token: Option<String>,
    pub access_token: String,
    pub expires_in: Option<Duration>,
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// A finished login: who it is, every claim seen, and the tokens.
#[derive(Debug)]
pub struct Login {
    pub identity: Identity,
    pub claims: Map<String, Value>,
    pub tokens: Tokens,
}

struct Discovered {
    client: Client,
    /// The JWKS again, in the form Bearer tokens are verified with.
    keys: Vec<bearer::VerifyKey>,
    end_session: Option<String>,
    userinfo: Option<String>,
    /// The discovery document says `authorization_response_iss_parameter_supported: true`.
    iss_parameter: bool,
    fetched: Instant,
}

pub struct OidcProvider {
    pub settings: ProviderSettings,
    http: reqwest::Client,
    current: ArcSwapOption<Discovered>,
    /// When keys were last re-fetched because a token named an unknown `kid` (failed attempts
    /// too); held across the fetch, so a burst of such tokens causes one fetch, not one each.
    refetch: tokio::sync::Mutex<Option<Instant>>,
}

impl OidcProvider {
    pub fn new(settings: ProviderSettings, timeout: Duration) -> Result<Self, OidcError> {
        // Redirects stay off: following one from the IdP is how SSRF starts.
        let http = reqwest::ClientBuilder::new()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .map_err(|e| OidcError::Unreachable(format!("HTTP client: {e}")))?;
        Ok(OidcProvider {
            settings,
            http,
            current: ArcSwapOption::empty(),
            refetch: tokio::sync::Mutex::new(None),
        })
    }

    /// Whether discovery has succeeded at least once.
    pub fn is_ready(&self) -> bool {
        self.current.load().is_some()
    }

    /// Fetches the discovery document and the JWKS, and swaps them in.
    pub async fn discover(&self) -> Result<(), OidcError> {
        let s = &self.settings;
        let issuer =
            IssuerUrl::new(s.issuer.clone()).map_err(|e| OidcError::Unreachable(e.to_string()))?;
        let metadata = DiscoveryMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| OidcError::Unreachable(format!("discovery of {}: {e}", s.issuer)))?;
        let end_session = metadata
            .additional_metadata()
            .end_session_endpoint
            .as_ref()
            .map(|u| u.url().to_string());
        let iss_parameter = metadata
            .additional_metadata()
            .additional_metadata
            .iss_parameter_supported();
        let userinfo = metadata.userinfo_endpoint().map(|u| u.url().to_string());
        let keys = serde_json::to_value(metadata.jwks())
            .map(|jwks| bearer::keys_from_jwks(&jwks))
            .unwrap_or_default();
        let redirect = RedirectUrl::new(s.redirect_uri.clone())
            .map_err(|e| OidcError::Unreachable(e.to_string()))?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(s.client_id.clone()),
            s.client_secret
                .as_ref()
                .map(|secret| ClientSecret::new(secret.expose().clone())),
        )
        .set_redirect_uri(redirect);
        self.current.store(Some(Arc::new(Discovered {
            client,
            keys,
            end_session,
            userinfo,
            iss_parameter,
            fetched: Instant::now(),
        })));
        Ok(())
    }

    /// Takes over what `previous` discovered when it was built from the same settings. A
    /// reload that rebuilds the login services (a rotated session secret, another store)
    /// builds new providers; without this, logins through them would fail (502) until their
    /// own discovery answered. Their discovery still runs at once and replaces it.
    pub fn carry_over(&self, previous: &OidcProvider) {
        if self.settings == previous.settings && self.current.load().is_none() {
            self.current.store(previous.current.load_full());
        }
    }

    /// Keeps discovery fresh: retries with backoff until it works, then refreshes hourly.
    pub fn spawn_discovery(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            loop {
                match me.discover().await {
                    Ok(()) => {
                        backoff = Duration::from_millis(500);
                        tracing::info!(provider = %me.settings.id, "identity provider discovered");
                        tokio::time::sleep(REDISCOVER_EVERY).await;
                    }
                    Err(e) => {
                        tracing::warn!(provider = %me.settings.id, error = %e, retry_in = ?backoff, "identity provider discovery failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                    }
                }
            }
        })
    }

    fn discovered(&self) -> Result<Arc<Discovered>, OidcError> {
        self.current.load_full().ok_or_else(|| {
            OidcError::Unreachable(format!(
                "{} has not been discovered yet",
                self.settings.issuer
            ))
        })
    }

    /// The authorization URL for a new login and the secrets to keep until the callback.
    /// `extra` adds parameters such as `prompt=login` or `acr_values` (step-up).
    pub fn begin(&self, extra: &[(&str, &str)]) -> Result<(String, PendingLogin), OidcError> {
        let d = self.discovered()?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = d
            .client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in self.settings.scopes.iter().filter(|s| *s != "openid") {
            req = req.add_scope(Scope::new(scope.clone()));
        }
        for (k, v) in &self.settings.extra_auth_params {
            req = req.add_extra_param(k.clone(), v.clone());
        }
        for (k, v) in extra {
            req = req.add_extra_param(k.to_string(), v.to_string());
        }
        let (url, state, nonce) = req.url();
        Ok((
            url.to_string(),
            PendingLogin {
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                pkce_verifier: verifier.secret().clone(),
            },
        ))
    }

    /// Mix-up defence (RFC 9207, RFC 9700 §4.4): `iss` of the authorization response (every
    /// value the query holds) must be exactly this provider's issuer. Missing is only allowed
    /// when discovery does not advertise `authorization_response_iss_parameter_supported`.
    /// Discovery already insists that the document's `issuer` is exactly `settings.issuer`.
    pub fn check_response_issuer(&self, iss: &[String]) -> Result<(), OidcError> {
        let advertised = match iss {
            [] => Some(self.discovered()?.iss_parameter),
            _ => None,
        };
        check_response_issuer(&self.settings.issuer, iss, advertised)
            .map_err(|e| OidcError::Rejected(e.to_string()))
    }

    /// Exchanges the code (with the PKCE verifier), verifies the ID token, merges userinfo.
    /// The caller has already checked `state`.
    pub async fn complete(&self, code: &str, pending: &PendingLogin) -> Result<Login, OidcError> {
        let d = self.discovered()?;
        let response: CoreTokenResponse = d
            .client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::Rejected(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| match classify_token_error(e) {
                TokenFailure::Unavailable(m) => OidcError::Unreachable(m),
                TokenFailure::InvalidGrant(m) | TokenFailure::Refused(m) => OidcError::Rejected(m),
            })?;
        let id_token = response
            .id_token()
            .ok_or_else(|| OidcError::Rejected("the token response has no id_token".into()))?
            .clone();
        let mut claims = self
            .verify_id_token(&id_token, Some(&pending.nonce))
            .await?;
        let access = response.access_token().clone();
        if let Some(info) = self.userinfo(&d, &access).await? {
            if info.get("sub") != claims.get("sub") {
                return Err(OidcError::Rejected(
                    "userinfo subject differs from the ID token's".into(),
                ));
            }
            for (k, v) in info {
                claims.entry(k).or_insert(v);
            }
        }
        let identity = Identity::from_claims(&claims, &self.settings.claims)
            .ok_or_else(|| OidcError::Rejected("no usable user claim".into()))?;
        Ok(Login {
            identity,
            claims,
            tokens: Tokens {
                id_token: Some(id_token.to_string()),
                access_token: access.secret().clone(),
                expires_in: response.expires_in(),
                refresh_token: response.refresh_token().map(|t| t.secret().clone()),
            },
        })
    }

    /// Verifies an ID token (signature through the JWKS, `iss`, `aud`, `azp`, `exp`, `iat`,
    /// and `nonce` when given) and returns its claims. An unknown `kid` re-fetches the JWKS
    /// once (keys rotate).
    pub async fn verify_id_token(
        &self,
        token: &CoreIdToken,
        nonce: Option<&str>,
    ) -> Result<Map<String, Value>, OidcError> {
        let d = self.discovered()?;
        match self.verify_with(&d, token, nonce) {
            Err(KeyMissing) => {
                self.refetch_keys(&d).await;
                let d = self.discovered()?;
                self.verify_with(&d, token, nonce).map_err(|KeyMissing| {
                    OidcError::InvalidIdToken("signed by an unknown key".into())
                })?
            }
            Ok(result) => result,
        }
    }

    fn verify_with(
        &self,
        d: &Discovered,
        token: &CoreIdToken,
        nonce: Option<&str>,
    ) -> Result<Result<Map<String, Value>, OidcError>, KeyMissing> {
        use openidconnect::{ClaimsVerificationError as C, SignatureVerificationError as S};
        let verifier = d.client.id_token_verifier();
        let expected = nonce.map(|n| Nonce::new(n.to_string()));
        let result = match &expected {
            Some(n) => token.claims(&verifier, n).map(|_| ()),
            // Refresh responses may omit the nonce; everything else is still checked.
            None => token
                .claims(&verifier, |_: Option<&Nonce>| Ok(()))
                .map(|_| ()),
        };
        match result {
            Err(C::SignatureVerification(S::NoMatchingKey)) => return Err(KeyMissing),
            Err(e) => return Ok(Err(OidcError::InvalidIdToken(e.to_string()))),
            Ok(()) => {}
        }
        let claims = match claims::payload(&token.to_string()) {
            Some(c) => c,
            None => return Ok(Err(OidcError::InvalidIdToken("unreadable payload".into()))),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        match claims.get("iat").and_then(Value::as_u64) {
            Some(iat) if iat <= now + MAX_IAT_SKEW.as_secs() => Ok(Ok(claims)),
            Some(_) => Ok(Err(OidcError::InvalidIdToken(
                "issued in the future".into(),
            ))),
            None => Ok(Err(OidcError::InvalidIdToken("no iat".into()))),
        }
    }

    /// Fetches discovery and keys again because a token named a key we do not hold. One fetch
    /// at a time and at most every `MIN_REFETCH` (failures count), since anyone can send tokens
    /// with made-up `kid`s. Returns whether keys newer than `seen` are now in place.
    async fn refetch_keys(&self, seen: &Arc<Discovered>) -> bool {
        let mut last = self.refetch.lock().await;
        let newer = |me: &Self| {
            me.current
                .load()
                .as_ref()
                .is_some_and(|cur| !Arc::ptr_eq(cur, seen))
        };
        // Another request re-fetched while this one waited for the lock.
        if newer(self) {
            return true;
        }
        let recent = |t: Instant| t.elapsed() < MIN_REFETCH;
        if recent(seen.fetched) || last.is_some_and(recent) {
            return false;
        }
        *last = Some(Instant::now());
        self.discover().await.is_ok() && newer(self)
    }

    async fn userinfo(
        &self,
        d: &Discovered,
        access: &AccessToken,
    ) -> Result<Option<Map<String, Value>>, OidcError> {
        let Some(url) = &d.userinfo else {
            return Ok(None); // the IdP has no userinfo endpoint
        };
        let resp = self
            .http
            .get(url)
            .bearer_auth(access.secret())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| OidcError::Unreachable(format!("userinfo: {e}")))?;
        if !resp.status().is_success() {
            return Err(OidcError::Rejected(format!(
                "userinfo answered {}",
                resp.status()
            )));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| OidcError::Unreachable(format!("userinfo: {e}")))?;
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|e| OidcError::Rejected(format!("userinfo: {e}")))?;
        match body {
            Value::Object(map) => Ok(Some(map)),
            _ => Err(OidcError::Rejected("userinfo is not a JSON object".into())),
        }
    }

    /// Uses a refresh token. `invalid_grant` means the session is over; anything else
    /// (network, 5xx) keeps the session until its lifetime.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, RefreshError> {
        let d = self
            .discovered()
            .map_err(|e| RefreshError::Unavailable(e.to_string()))?;
        let response = d
            .client
            .exchange_refresh_token(&RefreshToken::new(refresh_token.to_string()))
            .map_err(|e| RefreshError::Unavailable(e.to_string()))?
            .request_async(&self.http)
            .await
            .map_err(|e| match classify_token_error(e) {
                // Only the IdP saying the grant is gone ends the session; a misconfiguration
                // or an outage must not log everyone out.
                TokenFailure::InvalidGrant(_) => RefreshError::Revoked,
                TokenFailure::Refused(m) | TokenFailure::Unavailable(m) => {
                    RefreshError::Unavailable(m)
                }
            })?;
        let id_token = match response.id_token() {
            Some(t) => {
                self.verify_id_token(t, None).await.map_err(|e| match e {
                    OidcError::Unreachable(m) => RefreshError::Unavailable(m),
                    // A refreshed ID token that does not verify is not to be trusted.
                    _ => RefreshError::Revoked,
                })?;
                Some(t.to_string())
            }
            None => None,
        };
        Ok(Tokens {
            id_token,
            access_token: response.access_token().secret().clone(),
            expires_in: response.expires_in(),
            // Providers that do not rotate refresh tokens return none: keep the old one.
            refresh_token: Some(
                response
                    .refresh_token()
                    .map_or_else(|| refresh_token.to_string(), |t| t.secret().clone()),
            ),
        })
    }

    /// The IdP's logout URL (RP-initiated logout), when it has one.
    pub fn logout_url(
        &self,
        id_token_hint: Option<&str>,
        post_logout_redirect: Option<&str>,
    ) -> Option<String> {
        let d = self.current.load_full()?;
        let endpoint = d.end_session.as_ref()?;
        let mut req =
            LogoutRequest::from(openidconnect::EndSessionUrl::new(endpoint.clone()).ok()?)
                .set_client_id(ClientId::new(self.settings.client_id.clone()));
        if let Some(hint) = id_token_hint.and_then(|h| h.parse::<CoreIdToken>().ok()) {
            req = req.set_id_token_hint(&hint);
        }
        if let Some(url) =
            post_logout_redirect.and_then(|u| PostLogoutRedirectUrl::new(u.to_string()).ok())
        {
            req = req.set_post_logout_redirect_uri(url);
        }
        Some(req.http_get_url().to_string())
    }
}

/// The signing key was not in the JWKS we hold.
struct KeyMissing;

/// Why an authorization response's `iss` was refused.
#[derive(Debug, PartialEq, thiserror::Error)]
enum IssMismatch {
    #[error("authorization response without iss, but the provider advertises authorization_response_iss_parameter_supported (RFC 9207)")]
    Missing,
    #[error("authorization response iss {got:?} is not the provider's issuer {expected:?} (mix-up, RFC 9207)")]
    Other { got: String, expected: String },
    #[error("authorization response with more than one iss")]
    Repeated,
}

/// The RFC 9207 decision: `iss` holds every `iss` value of the response, `advertised` whether
/// discovery says the provider sends it (only consulted when there is none). Exact string
/// comparison, no normalisation.
fn check_response_issuer(
    expected: &str,
    iss: &[String],
    advertised: Option<bool>,
) -> Result<(), IssMismatch> {
    match iss {
        [] if advertised == Some(true) => Err(IssMismatch::Missing),
        [] => Ok(()),
        [got] if got == expected => Ok(()),
        [got] => Err(IssMismatch::Other {
            // Chosen by whoever sent the response: only a bounded piece goes into the logs.
            got: got.chars().take(200).collect(),
            expected: expected.to_string(),
        }),
        _ => Err(IssMismatch::Repeated),
    }
}

/// How a token request failed.
enum TokenFailure {
    /// `invalid_grant`: the code or refresh token is not (or no longer) valid.
    InvalidGrant(String),
    /// Any other error answer the IdP gave on purpose (`invalid_client`, ...).
    Refused(String),
    /// Network, timeouts, 5xx or `temporarily_unavailable`/`server_error`, unreadable answers.
    Unavailable(String),
}

fn classify_token_error<RE>(
    e: openidconnect::RequestTokenError<
        RE,
        openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    >,
) -> TokenFailure
where
    RE: std::error::Error + 'static,
{
    use openidconnect::core::CoreErrorResponseType as T;
    use openidconnect::RequestTokenError as R;
    match e {
        R::ServerResponse(r) => match r.error() {
            T::InvalidGrant => TokenFailure::InvalidGrant(r.to_string()),
            T::Extension(x) if x == "temporarily_unavailable" || x == "server_error" => {
                TokenFailure::Unavailable(r.to_string())
            }
            _ => TokenFailure::Refused(r.to_string()),
        },
        R::Request(e) => TokenFailure::Unavailable(e.to_string()),
        R::Parse(e, _) => TokenFailure::Unavailable(format!("unreadable token response: {e}")),
        R::Other(s) => TokenFailure::Unavailable(s),
    }
}

#[cfg(test)]
mod tests;
