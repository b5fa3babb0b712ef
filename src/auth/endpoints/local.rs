//! `GET,POST /.portcullis/login`: the built-in directory's login form (`type: local`).
//!
//! `GET ?rd=URL` shows the form; `POST` checks it. A right password either creates the session
//! (`amr: ["pwd"]`) or, for a user with a TOTP secret, leads to the second step, whose code
//! (or recovery code) completes it (`amr: ["pwd", "otp"]`). Every failure — unknown user,
//! disabled user, wrong password, wrong or reused code — counts against the (user, client
//! address) pair; a banned pair gets 429 with `Retry-After`. Wrong password, unknown user
//! and disabled user get the same page, status and time. See `local_form` for the CSRF and
//! replay protection of the form itself.

use super::handover::handover_url;
use super::local_form::{self as form_state, FormState, Second};
use super::login::cookie_covers;
use super::{now, same_origin, EndpointRequest, Failure};
use crate::answer::Answer;
use crate::auth::Auth;
use crate::directory::regulation::pair_key;
use crate::directory::users::User;
use crate::directory::{form, key_digest, totp, LocalProvider, PasswordCheck, TotpMode};
use crate::session::{SessionCookie, SessionRecord, StoreError};
use crate::telemetry::{audit, metrics};
use http::StatusCode;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The most of a posted form read (fields are short; anything longer is not a login).
pub const MAX_FORM_BYTES: usize = 8 * 1024;
/// A used TOTP step is remembered for longer than it can be valid (±1 step of skew).
const USED_CODE_TTL: Duration = Duration::from_secs(totp::STEP * (2 * totp::SKEW + 2));

/// A page of the form. Its own `Referrer-Policy`: under `no-referrer` (which
/// `headers.security` may set for every page) browsers send `Origin: null` with the form,
/// which the cross-site check must refuse.
fn page(status: StatusCode, body: bytes::Bytes) -> Answer {
    Answer::html(status, body).with_header(http::header::REFERRER_POLICY, "same-origin")
}

pub(super) async fn login(auth: &Auth, req: &EndpointRequest<'_>) -> Answer {
    if *req.method == http::Method::POST {
        submit(auth, req).await
    } else {
        show(auth, req).await
    }
}

/// The local provider a request names (`provider=`), or the first one.
fn provider<'a>(auth: &'a Auth, id: Option<&str>) -> Option<&'a Arc<LocalProvider>> {
    match id.filter(|p| !p.is_empty()) {
        Some(id) => auth.local(id),
        None => auth
            .config
            .default_provider
            .as_deref()
            .and_then(|d| auth.local(d))
            .or_else(|| auth.config.local.first()),
    }
}

/// Where to start over: this form again, for the same provider and return URL.
fn restart_url(auth: &Auth, provider: &str, rd: &str) -> String {
    super::login_url(auth, rd, provider, false)
}

async fn show(auth: &Auth, req: &EndpointRequest<'_>) -> Answer {
    let rd = match req.param("rd") {
        Some(rd) => match auth.config.redirects.check(&rd, &req.here) {
            Some(url) => url,
            None => return Failure::ReturnUrlNotAllowed.answer(true),
        },
        None => req.here.join("/").unwrap_or_else(|_| req.here.clone()),
    };
    let Some(local) = provider(auth, req.param("provider").as_deref()) else {
        return Failure::UnknownProvider.answer(true);
    };
    let step_up = req.param("step_up").as_deref() == Some("1");
    // The form lives on the public URL, where the session cookie is set.
    if !same_origin(&req.here, &auth.config.public_url) {
        let url = super::login_url(auth, rd.as_str(), &local.id, step_up);
        return Answer::redirect(&url);
    }
    // Already signed in with this provider (a second tab, the back button): go on.
    if !step_up {
        if let Ok(Some(s)) = auth.session(req.cookie_header).await {
            if s.provider == local.id {
                return Answer::redirect(rd.as_str());
            }
        }
    }
    let t = now(auth);
    let (binding, set_cookie) = match form_state::read_binding(auth, req.cookie_header, t) {
        Some(b) => (b, None),
        None => {
            let (b, line) = form_state::new_binding(auth, t);
            (b, Some(line))
        }
    };
    let state = FormState {
        binding,
        provider: local.id.clone(),
        rd: rd.to_string(),
        step_up,
        created: t,
        second: None,
    };
    let token = form_state::seal(auth, &state);
    let answer = page(StatusCode::OK, form::sign_in(&token, "", None));
    match set_cookie {
        Some(line) => answer.with_cookie(&line),
        None => answer,
    }
}

/// The posted fields (the first of each name).
fn fields(body: &[u8]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

/// Why a POST is not from this site's own form page, if it is not.
fn cross_site(req: &EndpointRequest<'_>) -> Option<&'static str> {
    if req.fetch_site == Some("cross-site") {
        return Some("Sec-Fetch-Site: cross-site");
    }
    match req.origin {
        None => None,
        Some(o) => match url::Url::parse(o) {
            Ok(u) if same_origin(&u, &req.here) => None,
            _ => Some("Origin is not this site"),
        },
    }
}

fn failed(provider: &str, user: &str, reason: &str, req: &EndpointRequest<'_>) {
    metrics::LOGINS
        .with_label_values(&[provider, "failure"])
        .inc();
    let user: String = user.chars().take(128).collect();
    audit(
        "login_failure",
        serde_json::json!({
            "provider": provider, "user": user, "reason": reason,
            "client_ip": req.client_ip.map(|i| i.to_string()),
        }),
    );
}

fn store_failed(provider: &str, e: &StoreError) -> Answer {
    metrics::count_store_error(e);
    metrics::LOGINS
        .with_label_values(&[provider, "error"])
        .inc();
    tracing::error!(error = %e, "the login form cannot reach its state store");
    Failure::CannotStore.answer(true)
}

fn too_many(remaining_ms: u64, again: &str) -> Answer {
    let secs = remaining_ms.div_ceil(1000).max(1);
    page(
        StatusCode::TOO_MANY_REQUESTS,
        form::message(
            "Too many attempts",
            "Sign-in is paused for this account from your address after too many failed attempts. Please try again later.",
            Some(again),
        ),
    )
    .with_header(http::header::RETRY_AFTER, &secs.to_string())
}

/// A POST whose form token is missing, forged or expired: a fresh form, with a word on why.
fn expired(auth: &Auth, provider: &str, rd: &str) -> Answer {
    let t = now(auth);
    let (binding, line) = form_state::new_binding(auth, t);
    let state = FormState {
        binding,
        provider: provider.to_string(),
        rd: rd.to_string(),
        step_up: false,
        created: t,
        second: None,
    };
    let token = form_state::seal(auth, &state);
    page(
        StatusCode::BAD_REQUEST,
        form::sign_in(
            &token,
            "",
            Some("This sign-in form has expired. Please sign in again."),
        ),
    )
    .with_cookie(&line)
}

async fn submit(auth: &Auth, req: &EndpointRequest<'_>) -> Answer {
    let default_rd = req
        .here
        .join("/")
        .map(|u| u.to_string())
        .unwrap_or_default();
    let Some(first) = auth.config.local.first() else {
        return Failure::NoSuchEndpoint.answer(true);
    };
    if let Some(why) = cross_site(req) {
        failed(
            &first.id,
            "",
            &format!("cross-site login form post ({why})"),
            req,
        );
        return Failure::CrossSiteForm.answer(true);
    }
    let f = fields(req.body.unwrap_or_default());
    let t = now(auth);
    let binding = form_state::read_binding(auth, req.cookie_header, t);
    let state = f
        .get("state")
        .zip(binding.as_deref())
        .and_then(|(token, b)| form_state::open(auth, token, b, t));
    let Some(state) = state else {
        failed(
            &first.id,
            "",
            "login form token missing, forged or expired",
            req,
        );
        return expired(auth, &first.id, &default_rd);
    };
    let Some(local) = auth.local(&state.provider).cloned() else {
        return expired(auth, &first.id, &default_rd);
    };
    // The return URL was checked when the form was shown; the allowed domains may have
    // changed since.
    let rd = match auth.config.redirects.check(&state.rd, &req.here) {
        Some(rd) => rd,
        None => return Failure::ReturnUrlNotAllowed.answer(true),
    };
    let again = restart_url(auth, &local.id, rd.as_str());
    match &state.second {
        None => password_step(auth, req, &local, &state, &f, &rd, &again).await,
        Some(second) => code_step(auth, req, &local, &state, second, &f, &rd, &again).await,
    }
}

async fn password_step(
    auth: &Auth,
    req: &EndpointRequest<'_>,
    local: &LocalProvider,
    state: &FormState,
    f: &HashMap<String, String>,
    rd: &url::Url,
    again: &str,
) -> Answer {
    let username = f.get("username").map_or("", |s| s.trim());
    let password = f.get("password").map_or("", String::as_str);
    let token = || form_state::seal(auth, state);
    if username.is_empty() || password.is_empty() || username.len() > 128 {
        return page(
            StatusCode::BAD_REQUEST,
            form::sign_in(&token(), "", Some("Enter your user name and password.")),
        );
    }
    let pair = pair_key(&local.id, username, req.client_ip);
    match auth.directory.banned(&pair).await {
        Ok(Some(ms)) => {
            failed(
                &local.id,
                username,
                "too many failures: address banned for this user",
                req,
            );
            return too_many(ms, again);
        }
        Ok(None) => {}
        Err(e) => return store_failed(&local.id, &e),
    }
    let user = match local.check_password(username, password) {
        PasswordCheck::Ok(user) => user.clone(),
        other => {
            return fail_and_answer(auth, req, local, username, other.reason(), again, || {
                page(
                    StatusCode::UNAUTHORIZED,
                    form::sign_in(&token(), username, Some("Incorrect user name or password.")),
                )
            })
            .await;
        }
    };
    if user.totp.is_none() {
        if local.totp == TotpMode::Required {
            failed(
                &local.id,
                username,
                "no TOTP secret and totp: required",
                req,
            );
            return page(
                StatusCode::FORBIDDEN,
                form::message(
                    "Two-step verification is required",
                    "Your account has no authenticator app set up, and this site requires one. Ask your administrator to enrol you (portcullis gen-totp), then sign in again.",
                    Some(again),
                ),
            );
        }
        return sign_in(auth, req, local, &user, &["pwd"], state.step_up, rd, &pair).await;
    }
    let next = FormState {
        binding: state.binding.clone(),
        provider: local.id.clone(),
        rd: rd.to_string(),
        step_up: state.step_up,
        created: now(auth),
        second: Some(Second {
            user: user.name.clone(),
            nonce: form_state::nonce(),
        }),
    };
    page(
        StatusCode::OK,
        form::second_factor(&form_state::seal(auth, &next), again, None),
    )
}

/// Counts a failure of the pair and answers: 429 when it starts a ban, else `answer()`.
async fn fail_and_answer(
    auth: &Auth,
    req: &EndpointRequest<'_>,
    local: &LocalProvider,
    username: &str,
    reason: &str,
    again: &str,
    answer: impl FnOnce() -> Answer,
) -> Answer {
    let pair = pair_key(&local.id, username, req.client_ip);
    match auth.directory.fail(&pair, &local.regulation).await {
        Ok(Some(ban_ms)) => {
            metrics::LOGIN_BANS.with_label_values(&[&local.id]).inc();
            failed(
                &local.id,
                username,
                &format!("{reason}; too many failures: banned for {}s", ban_ms / 1000),
                req,
            );
            too_many(ban_ms, again)
        }
        Ok(None) => {
            failed(&local.id, username, reason, req);
            answer()
        }
        Err(e) => store_failed(&local.id, &e),
    }
}

#[allow(clippy::too_many_arguments)]
async fn code_step(
    auth: &Auth,
    req: &EndpointRequest<'_>,
    local: &LocalProvider,
    state: &FormState,
    second: &Second,
    f: &HashMap<String, String>,
    rd: &url::Url,
    again: &str,
) -> Answer {
    // Single use: this token's nonce is claimed before anything else, on every replica.
    let ttl = Duration::from_secs(form_state::SECOND_TTL + 60);
    match auth
        .directory
        .claim(&format!("form:{}", second.nonce), Some(ttl))
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            failed(
                &local.id,
                &second.user,
                "second-step form submitted twice",
                req,
            );
            return expired(auth, &local.id, rd.as_str());
        }
        Err(e) => return store_failed(&local.id, &e),
    }
    let pair = pair_key(&local.id, &second.user, req.client_ip);
    match auth.directory.banned(&pair).await {
        Ok(Some(ms)) => {
            failed(
                &local.id,
                &second.user,
                "too many failures: address banned for this user",
                req,
            );
            return too_many(ms, again);
        }
        Ok(None) => {}
        Err(e) => return store_failed(&local.id, &e),
    }
    // The users file may have changed since the password step.
    let Some(user) = local
        .users
        .get(&second.user)
        .filter(|u| !u.disabled)
        .cloned()
    else {
        failed(
            &local.id,
            &second.user,
            "user removed or disabled during sign-in",
            req,
        );
        return expired(auth, &local.id, rd.as_str());
    };
    let code: String = f
        .get("code")
        .map(|c| c.chars().filter(|c| !c.is_whitespace()).collect())
        .unwrap_or_default();
    let verdict = match check_code(auth, local, &user, &code).await {
        Ok(v) => v,
        Err(e) => return store_failed(&local.id, &e),
    };
    if let Err(reason) = verdict {
        let next = FormState {
            binding: state.binding.clone(),
            provider: local.id.clone(),
            rd: rd.to_string(),
            step_up: state.step_up,
            created: state.created,
            second: Some(Second {
                user: user.name.clone(),
                nonce: form_state::nonce(),
            }),
        };
        let token = form_state::seal(auth, &next);
        return fail_and_answer(auth, req, local, &user.name, reason, again, || {
            page(
                StatusCode::UNAUTHORIZED,
                form::second_factor(&token, again, Some("That code is not valid. Try again.")),
            )
        })
        .await;
    }
    sign_in(
        auth,
        req,
        local,
        &user,
        &["pwd", "otp"],
        state.step_up,
        rd,
        &pair,
    )
    .await
}

/// Checks a second-factor code: a TOTP code (accepted once per time step, on every replica)
/// or a recovery code (each accepted once, for good). `Ok(Err(reason))` for a refused code.
async fn check_code(
    auth: &Auth,
    local: &LocalProvider,
    user: &User,
    code: &str,
) -> Result<Result<(), &'static str>, StoreError> {
    let who = key_digest(&[&local.id, &user.name]);
    if totp::looks_like_code(code) {
        let Some(secret) = &user.totp else {
            return Ok(Err("TOTP code for a user without a secret"));
        };
        let steps = totp::matching_steps(secret.expose(), code, auth.clock.now_secs());
        if steps.is_empty() {
            return Ok(Err("wrong TOTP code"));
        }
        for step in steps {
            let key = format!("totp:{who}:{step}");
            if auth.directory.claim(&key, Some(USED_CODE_TTL)).await? {
                return Ok(Ok(()));
            }
        }
        return Ok(Err("TOTP code already used"));
    }
    let Some(index) = crate::directory::recovery_code_index(user, code) else {
        return Ok(Err("wrong code"));
    };
    let hash = key_digest(&[user.recovery_codes[index].expose()]);
    if auth
        .directory
        .claim(&format!("recovery:{who}:{hash}"), None)
        .await?
    {
        audit(
            "recovery_code_used",
            serde_json::json!({ "provider": local.id, "user": user.name, "index": index }),
        );
        Ok(Ok(()))
    } else {
        Ok(Err("recovery code already used"))
    }
}

/// Creates the session and sends the browser on to `rd`.
#[allow(clippy::too_many_arguments)]
async fn sign_in(
    auth: &Auth,
    req: &EndpointRequest<'_>,
    local: &LocalProvider,
    user: &User,
    amr: &[&str],
    step_up: bool,
    rd: &url::Url,
    pair: &str,
) -> Answer {
    if let Err(e) = auth.directory.succeed(pair).await {
        metrics::count_store_error(&e);
    }
    let mut record = SessionRecord::new(local.id.clone(), user.name.clone(), user.name.clone());
    record.email = user.email.clone();
    record.name = user.display_name.clone();
    record.groups = user.groups.clone();
    record.amr = amr.iter().map(|s| s.to_string()).collect();
    record.stepped_up = step_up;
    let created = match auth.store.create(record).await {
        Ok(c) => c,
        Err(e) => return store_failed(&local.id, &e),
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
        .with_label_values(&[&local.id, "success"])
        .inc();
    audit(
        "login_success",
        serde_json::json!({
            "user": record.user, "provider": record.provider, "session": record.sid.fingerprint(),
            "amr": record.amr, "client_ip": req.client_ip.map(|i| i.to_string()),
        }),
    );
    let cookie = SessionCookie {
        sid: record.sid,
        expires_at: record.expires_at,
    }
    .encode(&auth.config.keys);
    let max_age = Duration::from_secs(record.expires_at.saturating_sub(now(auth)));
    let next = if cookie_covers(auth, rd) {
        rd.to_string()
    } else {
        match handover_url(auth, &record, rd).await {
            Ok(url) => url,
            Err(failure) => return failure.answer(true),
        }
    };
    // After a form POST: 303 on this origin; elsewhere, a page that moves on (a redirect
    // there would break the form's CSP, `form-action 'self'`).
    let answer = match url::Url::parse(&next) {
        Ok(u) if same_origin(&u, &req.here) => {
            Answer::empty(StatusCode::SEE_OTHER).with_location(&next)
        }
        _ => page(StatusCode::OK, form::continue_to(&next)),
    };
    answer.with_cookie(&auth.config.cookie.set_cookie(&cookie, max_age))
}
