//! `/.portcullis/*`: login start, OIDC callback, cross-domain session hand-over, logout and
//! userinfo. Each handler returns an [`Answer`] that the front door writes as it likes.

use super::Auth;
use crate::gateway::respond::{error_body, escape_html};
use crate::oidc::{OidcError, PendingLogin};
use crate::session::{CookieSettings, Purpose, SameSite, SessionCookie, SessionId, SessionRecord};
use crate::telemetry::{audit, metrics};
use base64::Engine;
use bytes::Bytes;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::Duration;

/// How long a login may take between start and callback.
const LOGIN_TTL: u64 = 600;
/// Logins in progress kept per browser; starting more clears the older ones.
const MAX_PENDING_LOGINS: usize = 5;
/// Claims that describe the token rather than the user: not kept in the session.
const TOKEN_CLAIMS: &[&str] = &[
    "iss",
    "aud",
    "exp",
    "iat",
    "nbf",
    "nonce",
    "at_hash",
    "c_hash",
    "auth_time",
    "sid",
    "azp",
    "jti",
    "s_hash",
];

/// A response to write: status, optional redirect, cookies, body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
    pub content_type: Option<&'static str>,
    pub body: Bytes,
}

impl Answer {
    fn redirect(to: String) -> Answer {
        Answer {
            status: StatusCode::FOUND,
            location: Some(to),
            set_cookies: Vec::new(),
            content_type: None,
            body: Bytes::new(),
        }
    }

    fn error(status: StatusCode, message: &str, html: bool) -> Answer {
        let (ct, body) = error_body(status, message, html);
        Answer {
            status,
            location: None,
            set_cookies: Vec::new(),
            content_type: Some(ct),
            body,
        }
    }

    fn json(status: StatusCode, value: serde_json::Value) -> Answer {
        Answer {
            status,
            location: None,
            set_cookies: Vec::new(),
            content_type: Some("application/json"),
            body: Bytes::from(value.to_string()),
        }
    }

    fn page(status: StatusCode, title: &str, text: &str) -> Answer {
        let html = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title></head>\
             <body style=\"font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto\"><h1>{t}</h1><p>{x}</p></body></html>",
            t = escape_html(title),
            x = escape_html(text)
        );
        Answer {
            status,
            location: None,
            set_cookies: Vec::new(),
            content_type: Some("text/html; charset=utf-8"),
            body: Bytes::from(html),
        }
    }
}

/// What a handler needs to know about the request.
pub struct EndpointRequest<'a> {
    pub method: &'a http::Method,
    /// The part after `/.portcullis/`.
    pub endpoint: &'a str,
    pub query: Option<&'a str>,
    /// `scheme://host[:port]` of this request, as the client sees it.
    pub here: url::Url,
    pub cookie_header: Option<&'a str>,
    pub wants_html: bool,
    pub client_ip: Option<IpAddr>,
}

impl EndpointRequest<'_> {
    fn param(&self, name: &str) -> Option<String> {
        let q = self.query?;
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// Every value of `name`, in order.
    fn params(&self, name: &str) -> Vec<String> {
        let Some(q) = self.query else {
            return Vec::new();
        };
        url::form_urlencoded::parse(q.as_bytes())
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .collect()
    }
}

/// The secrets of one login in progress, sealed into its own cookie.
#[derive(Serialize, Deserialize)]
struct LoginState {
    pending: PendingLogin,
    provider: String,
    rd: String,
    created: u64,
    /// A re-login asking for MFA (`allow.mfa`).
    #[serde(default)]
    step_up: bool,
}

pub async fn handle(auth: &Auth, req: EndpointRequest<'_>) -> Answer {
    let get = *req.method == http::Method::GET || *req.method == http::Method::HEAD;
    let post = *req.method == http::Method::POST;
    match req.endpoint {
        "start" if get => start(auth, &req),
        "callback" if get => callback(auth, &req).await,
        "session" if get => handover(auth, &req).await,
        "logout" if get || post => logout(auth, &req).await,
        "userinfo" if get => userinfo(auth, &req).await,
        "start" | "callback" | "session" | "logout" | "userinfo" => Answer::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed here",
            req.wants_html,
        ),
        _ => Answer::error(
            StatusCode::NOT_FOUND,
            "no such Portcullis endpoint",
            req.wants_html,
        ),
    }
}

fn now(auth: &Auth) -> u64 {
    auth.clock.now_secs()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
}

/// The login-state cookie must come back on the IdP's cross-site redirect: never Strict.
fn login_cookie_settings(auth: &Auth) -> CookieSettings {
    let mut c = auth.config.cookie.clone();
    if c.same_site == SameSite::Strict {
        c.same_site = SameSite::Lax;
    }
    c
}

fn login_cookie_name(auth: &Auth, state: &str) -> String {
    let short: String = state.chars().take(12).collect();
    format!("{}_login_{short}", auth.config.cookie.name)
}

fn same_origin(a: &url::Url, b: &url::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// The URL that begins a login and comes back to `rd` (used for the 302 on protected routes).
/// Where a browser starts logging in; `step_up` asks the IdP for a fresh login with MFA.
pub fn login_url(auth: &Auth, rd: &str, provider: &str, step_up: bool) -> String {
    let mut url = auth.config.public_url.clone();
    url.set_path("/.portcullis/start");
    url.query_pairs_mut()
        .clear()
        .append_pair("rd", rd)
        .append_pair("provider", provider);
    if step_up {
        url.query_pairs_mut().append_pair("step_up", "1");
    }
    url.to_string()
}

fn start(auth: &Auth, req: &EndpointRequest<'_>) -> Answer {
    let html = req.wants_html;
    let rd = match req.param("rd") {
        Some(rd) => match auth.config.redirects.check(&rd, &req.here) {
            Some(url) => url,
            None => {
                return Answer::error(
                    StatusCode::BAD_REQUEST,
                    "the return URL (rd) is not allowed",
                    html,
                )
            }
        },
        None => req.here.join("/").unwrap_or_else(|_| req.here.clone()),
    };
    // Logins start where the callback is, so the login cookie is there when the IdP returns.
    if !same_origin(&req.here, &auth.config.public_url) {
        let provider = req.param("provider").unwrap_or_default();
        let mut url = auth.config.public_url.clone();
        url.set_path("/.portcullis/start");
        url.query_pairs_mut().clear().append_pair("rd", rd.as_str());
        if !provider.is_empty() {
            url.query_pairs_mut().append_pair("provider", &provider);
        }
        if req.param("step_up").as_deref() == Some("1") {
            url.query_pairs_mut().append_pair("step_up", "1");
        }
        return Answer::redirect(url.to_string());
    }
    let provider = match req.param("provider").filter(|p| !p.is_empty()) {
        Some(id) => auth.provider(&id),
        None => auth.default_provider(),
    };
    let Some(provider) = provider else {
        return Answer::error(StatusCode::BAD_REQUEST, "unknown provider", html);
    };
    // Step-up: a fresh authentication (`prompt=login`), asking for the MFA `acr` values.
    let step_up = req.param("step_up").as_deref() == Some("1");
    let acr_values = provider.settings.mfa_acr.join(" ");
    let mut extra: Vec<(&str, &str)> = Vec::new();
    if step_up {
        extra.push(("prompt", "login"));
        if !acr_values.is_empty() {
            extra.push(("acr_values", &acr_values));
        }
    }
    let (url, pending) = match provider.begin(&extra) {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(provider = %provider.settings.id, error = %e, "login cannot start");
            return Answer::page(
                StatusCode::BAD_GATEWAY,
                "Sign-in is unavailable",
                "The identity provider cannot be reached right now. Please try again in a moment.",
            );
        }
    };
    let state = LoginState {
        provider: provider.settings.id.clone(),
        rd: rd.to_string(),
        created: now(auth),
        pending,
        step_up,
    };
    let name = login_cookie_name(auth, &state.pending.state);
    let Ok(plain) = serde_json::to_vec(&state) else {
        return Answer::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not start the login",
            html,
        );
    };
    let sealed = auth
        .config
        .keys
        .seal(Purpose::LoginState, &plain, name.as_bytes());
    let cookies = login_cookie_settings(auth);
    let mut answer = Answer::redirect(url);
    // A cap on logins in progress: clear the others when too many pile up.
    let prefix = format!("{}_login_", auth.config.cookie.name);
    let others: Vec<String> = pending_login_names(req.cookie_header, &prefix);
    if others.len() >= MAX_PENDING_LOGINS {
        answer
            .set_cookies
            .extend(others.iter().map(|n| cookies.clear_named(n)));
    }
    answer.set_cookies.push(cookies.set_named(
        &name,
        &b64(&sealed),
        Duration::from_secs(LOGIN_TTL),
    ));
    answer
}

fn pending_login_names(cookie_header: Option<&str>, prefix: &str) -> Vec<String> {
    cookie_header
        .map(|h| {
            h.split(';')
                .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.trim()))
                .filter(|k| k.starts_with(prefix))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn login_failed(provider: &str, reason: &str, client_ip: Option<IpAddr>) {
    metrics::LOGINS
        .with_label_values(&[provider, "failure"])
        .inc();
    audit(
        "login_failure",
        serde_json::json!({ "provider": provider, "reason": reason, "client_ip": client_ip.map(|i| i.to_string()) }),
    );
}

async fn callback(auth: &Auth, req: &EndpointRequest<'_>) -> Answer {
    let html = true;
    let Some(state) = req.param("state").filter(|s| !s.is_empty()) else {
        return Answer::error(
            StatusCode::BAD_REQUEST,
            "the sign-in response has no state",
            html,
        );
    };
    let name = login_cookie_name(auth, &state);
    let login: Option<LoginState> = req
        .cookie_header
        .and_then(|h| crate::session::cookie::cookie_values(h, &name).next())
        .and_then(unb64)
        .and_then(|sealed| {
            auth.config
                .keys
                .open(Purpose::LoginState, &sealed, name.as_bytes())
        })
        .and_then(|plain| serde_json::from_slice(&plain).ok());
    let cookies = login_cookie_settings(auth);
    let clear = cookies.clear_named(&name);
    let with_clear = |mut a: Answer| {
        a.set_cookies.push(clear.clone());
        a
    };
    let Some(login) =
        login.filter(|l| l.pending.state == state && now(auth) <= l.created + LOGIN_TTL)
    else {
        login_failed(
            "-",
            "no matching login in progress (expired, replayed, or started elsewhere)",
            req.client_ip,
        );
        return with_clear(Answer::page(
            StatusCode::BAD_REQUEST,
            "This sign-in link is no longer valid",
            "It has expired, was already used, or was started in another browser. Please open the page you wanted again.",
        ));
    };
    let Some(provider) = auth.provider(&login.provider) else {
        // Removed by a reload since the login started.
        login_failed(&login.provider, "unknown provider", req.client_ip);
        return with_clear(Answer::error(
            StatusCode::BAD_REQUEST,
            "unknown provider",
            html,
        ));
    };
    let unavailable = || {
        with_clear(Answer::page(
            StatusCode::BAD_GATEWAY,
            "Sign-in is unavailable",
            "The identity provider cannot be reached right now. Please try again in a moment.",
        ))
    };
    let unverified = || {
        with_clear(Answer::page(
            StatusCode::UNAUTHORIZED,
            "Sign-in failed",
            "The identity provider's answer could not be verified. Please try again.",
        ))
    };
    // Mix-up defence (RFC 9207): the response, error responses included, must come from the
    // provider this login was started with, the one in the sealed login state; never one
    // picked from the response's own `iss`.
    match provider.check_response_issuer(&req.params("iss")) {
        Ok(()) => {}
        Err(OidcError::Unreachable(e)) => {
            metrics::LOGINS
                .with_label_values(&[&login.provider, "error"])
                .inc();
            tracing::warn!(provider = %login.provider, error = %e, "identity provider unreachable during callback");
            return unavailable();
        }
        Err(e) => {
            login_failed(&login.provider, &e.to_string(), req.client_ip);
            return unverified();
        }
    }
    if let Some(error) = req.param("error") {
        let description = req.param("error_description").unwrap_or_default();
        let description: String = description.chars().take(200).collect();
        login_failed(
            &login.provider,
            &format!("identity provider error: {error}"),
            req.client_ip,
        );
        return with_clear(Answer::page(
            StatusCode::FORBIDDEN,
            "Sign-in was not completed",
            &format!("The identity provider answered: {error}. {description}"),
        ));
    }
    let Some(code) = req.param("code").filter(|c| !c.is_empty()) else {
        login_failed(&login.provider, "no code in the callback", req.client_ip);
        return with_clear(Answer::error(
            StatusCode::BAD_REQUEST,
            "the sign-in response has no code",
            html,
        ));
    };
    let done = match provider.complete(&code, &login.pending).await {
        Ok(done) => done,
        Err(OidcError::Unreachable(e)) => {
            metrics::LOGINS
                .with_label_values(&[&login.provider, "error"])
                .inc();
            tracing::warn!(provider = %login.provider, error = %e, "identity provider unreachable during callback");
            return unavailable();
        }
        Err(e) => {
            login_failed(&login.provider, &e.to_string(), req.client_ip);
            return unverified();
        }
    };
    let t = now(auth);
    let id = &done.identity;
    let mut record = SessionRecord::new(login.provider.clone(), id.sub.clone(), id.user.clone());
    record.email = id.email.clone();
    record.name = id.name.clone();
    record.groups = id.groups.clone();
    record.amr = id.amr.clone();
    record.acr = id.acr.clone();
    record.stepped_up = login.step_up;
    let mapped = &provider.settings.claims;
    record.claims = done
        .claims
        .iter()
        .filter(|(k, _)| {
            !TOKEN_CLAIMS.contains(&k.as_str())
                && ![&mapped.user, &mapped.email, &mapped.groups, &mapped.name].contains(k)
                && !["sub", "amr", "acr"].contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    super::apply_tokens(&mut record, &done.tokens, t);
    let created = match auth.store.create(record).await {
        Ok(c) => c,
        Err(e) => {
            metrics::STORE_ERRORS.with_label_values(&[e.op()]).inc();
            metrics::LOGINS
                .with_label_values(&[&login.provider, "error"])
                .inc();
            tracing::error!(error = %e, "cannot store the new session");
            return with_clear(Answer::page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in is temporarily unavailable",
                "Sessions cannot be stored right now. Please try again in a moment.",
            ));
        }
    };
    for sid in &created.evicted {
        auth.cache.invalidate(sid);
        audit(
            "session_revoked",
            serde_json::json!({
                "user": created.record.user, "session": sid.fingerprint(), "reason": "max_per_user exceeded"
            }),
        );
    }
    let record = created.record;
    metrics::LOGINS
        .with_label_values(&[&login.provider, "success"])
        .inc();
    audit(
        "login_success",
        serde_json::json!({
            "user": record.user, "provider": record.provider, "session": record.sid.fingerprint(),
            "client_ip": req.client_ip.map(|i| i.to_string()),
        }),
    );
    let cookie = SessionCookie {
        sid: record.sid,
        expires_at: record.expires_at,
    }
    .encode(&auth.config.keys);
    let max_age = Duration::from_secs(record.expires_at.saturating_sub(t));
    let rd = url::Url::parse(&login.rd).unwrap_or_else(|_| auth.config.public_url.clone());
    let mut answer = if cookie_covers(auth, &rd) {
        bounce(auth, rd.to_string())
    } else {
        match handover_url(auth, &record, &rd).await {
            Ok(url) => bounce(auth, url),
            Err(a) => a,
        }
    };
    answer
        .set_cookies
        .push(auth.config.cookie.set_cookie(&cookie, max_age));
    with_clear(answer)
}

/// A redirect after login. With `SameSite=Strict` the browser would not send the new cookie
/// on a redirect chain that began at the IdP, so the last hop is a same-site page instead.
fn bounce(auth: &Auth, to: String) -> Answer {
    if auth.config.cookie.same_site != SameSite::Strict {
        return Answer::redirect(to);
    }
    let esc = escape_html(&to);
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={esc}\">\
         <title>Signed in</title></head><body><a href=\"{esc}\">Continue</a></body></html>"
    );
    Answer {
        status: StatusCode::OK,
        location: None,
        set_cookies: Vec::new(),
        content_type: Some("text/html; charset=utf-8"),
        body: Bytes::from(html),
    }
}

/// Whether the session cookie set on the public host also reaches `rd`'s host.
fn cookie_covers(auth: &Auth, rd: &url::Url) -> bool {
    let Some(host) = rd.host_str() else {
        return false;
    };
    match auth.config.cookie.domain.as_deref() {
        Some(d) => {
            let d = d.trim_start_matches('.');
            host == d || host.ends_with(&format!(".{d}"))
        }
        None => {
            same_origin(rd, &auth.config.public_url)
                || Some(host) == auth.config.public_url.host_str()
        }
    }
}

/// Stores a one-time code that lets `rd`'s host set its own cookie for this session.
async fn handover_url(
    auth: &Auth,
    record: &SessionRecord,
    rd: &url::Url,
) -> Result<String, Answer> {
    let mut code = [0u8; 32];
    rand::fill(&mut code);
    let code = b64(&code);
    let host = rd.host_str().unwrap_or_default();
    let mut payload = Vec::with_capacity(24 + host.len());
    payload.extend_from_slice(record.sid.as_bytes());
    payload.extend_from_slice(&record.expires_at.to_be_bytes());
    payload.extend_from_slice(host.as_bytes());
    if let Err(e) = auth.store.put_handover(&code, &payload).await {
        metrics::STORE_ERRORS.with_label_values(&[e.op()]).inc();
        return Err(Answer::page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in is temporarily unavailable",
            "Sessions cannot be stored right now. Please try again in a moment.",
        ));
    }
    let mut url = rd.clone();
    url.set_path("/.portcullis/session");
    url.set_fragment(None);
    url.query_pairs_mut()
        .clear()
        .append_pair("code", &code)
        .append_pair("rd", rd.as_str());
    Ok(url.to_string())
}

async fn handover(auth: &Auth, req: &EndpointRequest<'_>) -> Answer {
    let html = req.wants_html;
    let (Some(code), Some(rd)) = (req.param("code"), req.param("rd")) else {
        return Answer::error(StatusCode::BAD_REQUEST, "code and rd are required", html);
    };
    let Some(rd) = auth
        .config
        .redirects
        .check(&rd, &req.here)
        .filter(|u| same_origin(u, &req.here))
    else {
        return Answer::error(
            StatusCode::BAD_REQUEST,
            "the return URL (rd) is not allowed",
            html,
        );
    };
    let payload = match auth.store.take_handover(&code).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return Answer::page(
                StatusCode::BAD_REQUEST,
                "This sign-in link is no longer valid",
                "It has expired or was already used. Please open the page you wanted again.",
            )
        }
        Err(e) => {
            metrics::STORE_ERRORS.with_label_values(&[e.op()]).inc();
            return Answer::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "sessions are temporarily unavailable",
                html,
            );
        }
    };
    let host_ok =
        payload.len() > 24 && req.here.host_str().map(str::as_bytes) == Some(&payload[24..]);
    if !host_ok {
        return Answer::error(
            StatusCode::BAD_REQUEST,
            "this code was issued for another host",
            html,
        );
    }
    let mut sid = [0u8; SessionId::LEN];
    sid.copy_from_slice(&payload[..SessionId::LEN]);
    let mut exp = [0u8; 8];
    exp.copy_from_slice(&payload[16..24]);
    let cookie = SessionCookie {
        sid: SessionId::from_bytes(sid),
        expires_at: u64::from_be_bytes(exp),
    };
    let host_only = &auth.config.handover_cookie;
    let max_age = Duration::from_secs(cookie.expires_at.saturating_sub(now(auth)));
    let mut answer = bounce(auth, rd.to_string());
    answer
        .set_cookies
        .push(host_only.set_cookie(&cookie.encode(&auth.config.keys), max_age));
    answer
}

async fn logout(auth: &Auth, req: &EndpointRequest<'_>) -> Answer {
    // A return URL that is not allowed is ignored, never followed: signing out must work
    // whatever link brought the user here.
    let rd = req
        .param("rd")
        .and_then(|rd| auth.config.redirects.check(&rd, &req.here));
    let session = auth.session(req.cookie_header).await.ok().flatten();
    let mut idp_logout = None;
    if let Some(record) = &session {
        if let Err(e) = auth.store.delete(&record.sid).await {
            metrics::STORE_ERRORS.with_label_values(&[e.op()]).inc();
            return Answer::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "sessions are temporarily unavailable; you are not signed out yet, please try again",
                req.wants_html,
            );
        }
        auth.cache.invalidate(&record.sid);
        audit(
            "logout",
            serde_json::json!({
                "user": record.user, "session": record.sid.fingerprint(),
                "client_ip": req.client_ip.map(|i| i.to_string()),
            }),
        );
        idp_logout = auth.provider(&record.provider).and_then(|p| {
            p.logout_url(
                record.id_token.as_deref(),
                rd.as_ref().map(url::Url::as_str),
            )
        });
    }
    let mut answer = match (idp_logout, rd) {
        (Some(url), _) => Answer::redirect(url),
        (None, Some(rd)) => Answer::redirect(rd.to_string()),
        (None, None) => Answer::page(StatusCode::OK, "Signed out", "You have been signed out."),
    };
    answer.set_cookies.push(auth.config.cookie.clear_cookie());
    if auth.config.handover_cookie != auth.config.cookie {
        // A hand-over may have left a host-only cookie here too.
        answer
            .set_cookies
            .push(auth.config.handover_cookie.clear_cookie());
    }
    answer
}

async fn userinfo(auth: &Auth, req: &EndpointRequest<'_>) -> Answer {
    match auth.session(req.cookie_header).await {
        Ok(Some(r)) => Answer::json(
            StatusCode::OK,
            serde_json::json!({
                "user": r.user, "email": r.email, "name": r.name, "groups": r.groups, "sub": r.sub,
                "provider": r.provider, "expires_at": r.expires_at,
            }),
        ),
        Ok(None) => Answer::json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({ "error": "unauthenticated" }),
        ),
        Err(_) => Answer::json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "error": "unavailable" }),
        ),
    }
}
