//! The login form's protection against login CSRF and replay, kept in the browser:
//!
//! - a **binding cookie** (`<session cookie>_login_form`, HttpOnly, `SameSite=Lax`, sealed,
//!   30 minutes) holding a random value, one per browser, shared by the forms of its tabs;
//! - a **state token** in each form's hidden `state` field, sealed, naming that binding, the
//!   provider, the return URL and, after a right password, the user and a nonce.
//!
//! A POST counts only with both, naming the same binding: another site can neither read the
//! token nor set the cookie (`__Host-` prefixed when secure). The second step's token is
//! single use — its nonce is claimed in the directory state, shared by every replica — and
//! lives five minutes, so it cannot be replayed nor reached without the first step.

use super::{b64, unb64};
use crate::auth::Auth;
use crate::session::{CookieSettings, Purpose, SameSite};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long a sign-in form (and its binding cookie) stays usable.
pub const FORM_TTL: u64 = 1800;
/// How long the second step may take after a right password.
pub const SECOND_TTL: u64 = 300;
/// Associated data of the state token: it opens as nothing else.
const STATE_AAD: &[u8] = b"portcullis/login-form/state";

/// What a form's hidden `state` field carries, sealed.
#[derive(Debug, Serialize, Deserialize)]
pub struct FormState {
    /// The binding cookie's value this form belongs to.
    pub binding: String,
    pub provider: String,
    /// The validated return URL.
    pub rd: String,
    /// A re-login asking for MFA (`allow.mfa`).
    pub step_up: bool,
    /// Unix seconds.
    pub created: u64,
    /// Set once the password was right.
    pub second: Option<Second>,
}

/// The second step: whose password was right, and this token's single-use nonce.
#[derive(Debug, Serialize, Deserialize)]
pub struct Second {
    pub user: String,
    pub nonce: String,
}

#[derive(Serialize, Deserialize)]
struct Binding {
    value: String,
    created: u64,
}

/// The binding cookie's name: host-only (`__Host-` when secure) even with a
/// `session.cookie.domain`, so that no sibling subdomain can plant one.
pub fn cookie_name(auth: &Auth) -> String {
    format!("{}_login_form", auth.config.handover_cookie.name)
}

/// The binding cookie's settings: host-only, and `Lax` even when the session is `Strict`
/// (the form is often reached through a cross-site redirect chain).
pub fn cookie_settings(auth: &Auth) -> CookieSettings {
    let mut c = auth.config.handover_cookie.clone();
    if c.same_site == SameSite::Strict {
        c.same_site = SameSite::Lax;
    }
    c
}

/// The browser's binding value, if its cookie is there, authentic and recent.
pub fn read_binding(auth: &Auth, cookie_header: Option<&str>, now: u64) -> Option<String> {
    let name = cookie_name(auth);
    let header = cookie_header?;
    let found = crate::session::cookie::cookie_values(header, &name).find_map(|v| {
        let sealed = unb64(v)?;
        let plain = auth
            .config
            .keys
            .open(Purpose::LoginState, &sealed, name.as_bytes())?;
        let b: Binding = serde_json::from_slice(&plain).ok()?;
        (b.created <= now && now < b.created + FORM_TTL).then_some(b.value)
    });
    found
}

/// A new binding value and the `Set-Cookie` line carrying it.
pub fn new_binding(auth: &Auth, now: u64) -> (String, String) {
    let value = b64(&rand::random::<[u8; 16]>());
    let name = cookie_name(auth);
    let plain = serde_json::to_vec(&Binding {
        value: value.clone(),
        created: now,
    })
    .unwrap_or_default();
    let sealed = auth
        .config
        .keys
        .seal(Purpose::LoginState, &plain, name.as_bytes());
    let line = cookie_settings(auth).set_named(&name, &b64(&sealed), Duration::from_secs(FORM_TTL));
    (value, line)
}

/// The sealed token for `state`.
pub fn seal(auth: &Auth, state: &FormState) -> String {
    let plain = serde_json::to_vec(state).unwrap_or_default();
    b64(&auth
        .config
        .keys
        .seal(Purpose::LoginState, &plain, STATE_AAD))
}

/// The state a token holds, if authentic, bound to `binding` and not too old for its step.
pub fn open(auth: &Auth, token: &str, binding: &str, now: u64) -> Option<FormState> {
    let sealed = unb64(token)?;
    let plain = auth
        .config
        .keys
        .open(Purpose::LoginState, &sealed, STATE_AAD)?;
    let state: FormState = serde_json::from_slice(&plain).ok()?;
    let ttl = if state.second.is_some() {
        SECOND_TTL
    } else {
        FORM_TTL
    };
    let fresh = state.created <= now && now < state.created + ttl;
    (fresh && constant_eq(state.binding.as_bytes(), binding.as_bytes())).then_some(state)
}

/// A random single-use nonce for a second-step token.
pub fn nonce() -> String {
    b64(&rand::random::<[u8; 16]>())
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
