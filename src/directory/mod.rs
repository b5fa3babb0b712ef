//! The built-in user directory (`providers[].type: local`): a users file ([`users`]),
//! passwords checked with argon2id ([`crate::password`]), TOTP second factors ([`totp`]),
//! brute-force regulation per (user, client address) ([`regulation`]), the state they share
//! between requests and replicas ([`state`]), and the login form's pages ([`form`]).
//!
//! The HTTP side — the `/.portcullis/login` endpoint, its cookies and the session it creates —
//! is a login endpoint like the others (`auth::endpoints::local`). A session from here is a
//! session like any other: policies, identity headers and forward auth see no difference.

pub mod form;
pub mod regulation;
pub mod state;
mod state_redis;
pub mod totp;
pub mod users;

use crate::secret::Secret;
use regulation::RegulationSettings;
use std::path::PathBuf;
use std::sync::Arc;
use users::{User, Users};

/// `providers[].totp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TotpMode {
    /// Users with a secret give a code; users without one log in with their password.
    Optional,
    /// Every user must have a secret; one without cannot log in.
    Required,
}

/// One `type: local` provider, compiled: pure data, rebuilt on every configuration load (so
/// a changed users file takes effect with the reload).
#[derive(Debug, Clone)]
pub struct LocalProvider {
    pub id: String,
    /// The users file, resolved (watched for changes).
    pub users_file: PathBuf,
    pub users: Arc<Users>,
    pub totp: TotpMode,
    pub regulation: RegulationSettings,
}

/// How a password check ended. Every outcome but `Ok` costs one argon2 verification, so
/// an unknown, a disabled and an existing user take the same time.
#[derive(Debug)]
pub enum PasswordCheck<'a> {
    Ok(&'a User),
    /// No such user (the reason is for the audit log only).
    UnknownUser,
    Disabled,
    WrongPassword,
}

impl PasswordCheck<'_> {
    /// Why the login failed, for `login_failure` (never shown to the user).
    pub fn reason(&self) -> &'static str {
        match self {
            PasswordCheck::Ok(_) => "",
            PasswordCheck::UnknownUser => "unknown user",
            PasswordCheck::Disabled => "user disabled",
            PasswordCheck::WrongPassword => "wrong password",
        }
    }
}

impl LocalProvider {
    /// Checks `name` and `password` against the users file.
    pub fn check_password(&self, name: &str, password: &str) -> PasswordCheck<'_> {
        match self.users.get(name) {
            None => {
                crate::password::verify_missing(password);
                PasswordCheck::UnknownUser
            }
            Some(u) => {
                let ok = crate::password::verify(password, u.password.expose());
                if u.disabled {
                    PasswordCheck::Disabled
                } else if ok {
                    PasswordCheck::Ok(u)
                } else {
                    PasswordCheck::WrongPassword
                }
            }
        }
    }

    /// Whether `name` may hold a session now (exists, not disabled).
    pub fn active(&self, name: &str) -> bool {
        self.users.get(name).is_some_and(|u| !u.disabled)
    }
}

/// What `check` says about a local provider: its users, and what may surprise (users who
/// cannot log in under `totp: required`, recovery codes forgotten on restart).
pub fn summary(l: &LocalProvider, memory_store: bool) -> String {
    let mut out = format!(
        "  local provider {}: {} user(s) from {}\n",
        l.id,
        l.users.len(),
        l.users_file.display()
    );
    if l.totp == TotpMode::Required {
        let missing: Vec<&str> = l.users.without_totp().collect();
        if !missing.is_empty() {
            out.push_str(&format!(
                "  warning: providers {}: totp: required, and these users have no TOTP secret, so they cannot log in: {}\n",
                l.id,
                missing.join(", ")
            ));
        }
    }
    if memory_store && l.users.any_recovery_codes() {
        out.push_str(&format!(
            "  warning: providers {}: with session.store: memory, used recovery codes are remembered in memory only: after a restart they work again (use store: redis, or remove used codes from the users file)\n",
            l.id
        ));
    }
    out
}

/// The recovery code of `user` that `code` is, by its index, if any. Each hash is tried
/// (argon2: slow by design, so a user has a handful).
pub fn recovery_code_index(user: &User, code: &str) -> Option<usize> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.is_empty() {
        return None;
    }
    user.recovery_codes
        .iter()
        .position(|h: &Secret<String>| crate::password::verify(&code, h.expose()))
}

/// A short, stable digest of a value for store keys (user names, hashes): no personal data or
/// secret in a key.
pub fn key_digest(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
