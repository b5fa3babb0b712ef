//! Logging in with an OpenID provider: `/.portcullis/start` seals the login's secrets into a
//! cookie of its own and sends the browser to the provider; `/.portcullis/callback` checks
//! the answer, creates the session and sends the browser back (or on to a hand-over).

use super::handover::handover_url;
use super::{b64, now, same_origin, unb64, EndpointRequest, Failure};
use crate::answer::Answer;
use crate::auth::Auth;
use crate::oidc::{OidcError, PendingLogin};
use crate::pages::escape_html;
use crate::session::{CookieSettings, Purpose, SameSite, SessionCookie, SessionRecord};
use crate::telemetry::{audit, metrics};
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

pub(super) fn start(auth: &Auth, req: &EndpointRequest<'_>) -> Answer {
    let html = req.wants_html;
    let rd = match req.param("rd") {
        Some(rd) => match auth.config.redirects.check(&rd, &req.here) {
            Some(url) => url,
            None => return Failure::ReturnUrlNotAllowed.answer(html),
        },
        None => req.here.join("/").unwrap_or_else(|_| req.here.clone()),
    };
    // A local provider logs in with the form.
    let named = req.param("provider").filter(|p| !p.is_empty());
    let chosen = named.or_else(|| auth.config.default_provider.clone());
    if let Some(local) = chosen.as_deref().and_then(|id| auth.local(id)) {
        let step_up = req.param("step_up").as_deref() == Some("1");
        return Answer::redirect(&super::login_url(auth, rd.as_str(), &local.id, step_up));
    }
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
        return Answer::redirect(url.as_str());
    }
    let provider = match req.param("provider").filter(|p| !p.is_empty()) {
        Some(id) => auth.provider(&id),
        None => auth
            .config
            .default_provider
            .as_deref()
            .and_then(|id| auth.provider(id))
            .or_else(|| auth.default_provider()),
    };
    let Some(provider) = provider else {
        return Failure::UnknownProvider.answer(html);
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
            return Failure::IdpUnavailable.answer(html);
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
        return Failure::CannotStart.answer(html);
    };
    let sealed = auth
        .config
        .keys
        .seal(Purpose::LoginState, &plain, name.as_bytes());
    let cookies = login_cookie_settings(auth);
    let mut answer = Answer::redirect(&url);
    // A cap on logins in progress: clear the others when too many pile up.
    let prefix = format!("{}_login_", auth.config.cookie.name);
    let others: Vec<String> = pending_login_names(req.cookie_header, &prefix);
    if others.len() >= MAX_PENDING_LOGINS {
        for other in &others {
            answer = answer.with_cookie(&cookies.clear_named(other));
        }
    }
    answer.with_cookie(&cookies.set_named(&name, &b64(&sealed), Duration::from_secs(LOGIN_TTL)))
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

pub(super) async fn callback(auth: &Auth, req: &EndpointRequest<'_>) -> Answer {
    let html = true;
    let Some(state) = req.param("state").filter(|s| !s.is_empty()) else {
        return Failure::NoState.answer(html);
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
    let with_clear = |a: Answer| a.with_cookie(&clear);
    let Some(login) =
        login.filter(|l| l.pending.state == state && now(auth) <= l.created + LOGIN_TTL)
    else {
        login_failed(
            "-",
            "no matching login in progress (expired, replayed, or started elsewhere)",
            req.client_ip,
        );
        return with_clear(Failure::LoginNotInProgress.answer(html));
    };
    let Some(provider) = auth.provider(&login.provider) else {
        // Removed by a reload since the login started.
        login_failed(&login.provider, "unknown provider", req.client_ip);
        return with_clear(Failure::UnknownProvider.answer(html));
    };
    let unavailable = || with_clear(Failure::IdpUnavailable.answer(html));
    let unverified = || with_clear(Failure::NotVerified.answer(html));
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
        return with_clear(Failure::IdpRefused { error, description }.answer(html));
    }
    let Some(code) = req.param("code").filter(|c| !c.is_empty()) else {
        login_failed(&login.provider, "no code in the callback", req.client_ip);
        return with_clear(Failure::NoCode.answer(html));
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
    crate::auth::apply_tokens(&mut record, &done.tokens, t);
    let created = match auth.store.create(record).await {
        Ok(c) => c,
        Err(e) => {
            metrics::count_store_error(&e);
            metrics::LOGINS
                .with_label_values(&[&login.provider, "error"])
                .inc();
            tracing::error!(error = %e, "cannot store the new session");
            return with_clear(Failure::CannotStore.answer(html));
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
    let answer = if cookie_covers(auth, &rd) {
        bounce(auth, rd.as_str())
    } else {
        match handover_url(auth, &record, &rd).await {
            Ok(url) => bounce(auth, &url),
            Err(failure) => failure.answer(html),
        }
    };
    with_clear(answer.with_cookie(&auth.config.cookie.set_cookie(&cookie, max_age)))
}

/// A redirect after login. With `SameSite=Strict` the browser would not send the new cookie
/// on a redirect chain that began at the IdP, so the last hop is a same-site page instead.
pub(super) fn bounce(auth: &Auth, to: &str) -> Answer {
    if auth.config.cookie.same_site != SameSite::Strict {
        return Answer::redirect(to);
    }
    let esc = escape_html(to);
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={esc}\">\
         <title>Signed in</title></head><body><a href=\"{esc}\">Continue</a></body></html>"
    );
    Answer::html(StatusCode::OK, Bytes::from(html))
}

/// Whether the session cookie set on the public host also reaches `rd`'s host.
pub(super) fn cookie_covers(auth: &Auth, rd: &url::Url) -> bool {
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
