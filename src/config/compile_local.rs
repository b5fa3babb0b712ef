//! `providers[]` entries of `type: local` (the built-in user directory), compiled into a
//! [`LocalProvider`]: the users file is read and checked on every load, its errors reported
//! in that file with their own line and column.

use super::compile::{note, resolve};
use super::error::Problems;
use super::schema;
use super::values;
use crate::directory::regulation::RegulationSettings;
use crate::directory::{users, LocalProvider, TotpMode};
use std::path::Path;
use std::sync::Arc;

/// Keys only OpenID Connect providers have: an error on a local one (they would do nothing).
fn oidc_keys(pr: &schema::Provider) -> Vec<&'static str> {
    let mut given = Vec::new();
    let checks: [(&'static str, bool); 10] = [
        ("issuer", !pr.issuer.is_empty()),
        ("client_id", !pr.client_id.is_empty()),
        ("client_secret", pr.client_secret.is_some()),
        ("client_secret_file", pr.client_secret_file.is_some()),
        ("scopes", pr.scopes.is_some()),
        ("extra_auth_params", !pr.extra_auth_params.is_empty()),
        ("audience", pr.audience.is_some()),
        ("bearer_clients", pr.bearer_clients.is_some()),
        (
            "claims",
            pr.claims.user.is_some()
                || pr.claims.email.is_some()
                || pr.claims.groups.is_some()
                || pr.claims.name.is_some(),
        ),
        ("mfa.acr", !pr.mfa.acr.is_empty()),
    ];
    for (k, set) in checks {
        if set {
            given.push(k);
        }
    }
    given
}

/// Errors for the keys of a local provider given on an OpenID Connect one.
pub fn refuse_local_keys(pr: &schema::Provider, key: &str, p: &mut Problems) {
    for (k, set) in [
        ("users_file", pr.users_file.is_some()),
        ("totp", pr.totp.is_some()),
        ("regulation", pr.regulation.is_some()),
    ] {
        if set {
            p.add(format!("{key}.{k}"), "only for providers of type: local");
        }
    }
}

/// One `type: local` provider, or `None` when it has errors (recorded under `key`, or in the
/// users file).
pub fn local_provider(
    pr: &schema::Provider,
    key: &str,
    base: &Path,
    p: &mut Problems,
) -> Option<LocalProvider> {
    let before = (p.0.len(), p.1.len());
    for k in oidc_keys(pr) {
        p.add(
            format!("{key}.{k}"),
            "not used by a local provider (type: local): remove it",
        );
    }
    let totp = match pr.totp.as_deref().unwrap_or("optional") {
        "optional" => TotpMode::Optional,
        "required" => TotpMode::Required,
        other => {
            p.add(
                format!("{key}.totp"),
                format!("unknown value {other:?}: use optional or required"),
            );
            TotpMode::Optional
        }
    };
    let d = RegulationSettings::default();
    let regulation = match &pr.regulation {
        None => d,
        Some(r) => {
            let dur = |p: &mut Problems, name: &str, v: &Option<String>, fallback| match v {
                None => fallback,
                Some(s) => note(
                    p,
                    format!("{key}.regulation.{name}"),
                    values::duration(s).and_then(|d| {
                        if d.as_secs() >= 1 {
                            Ok(d)
                        } else {
                            Err("must be at least 1s".to_string())
                        }
                    }),
                )
                .unwrap_or(fallback),
            };
            let max_retries = r.max_retries.unwrap_or(d.max_retries);
            if max_retries == 0 {
                p.add(
                    format!("{key}.regulation.max_retries"),
                    "must be at least 1",
                );
            }
            RegulationSettings {
                max_retries,
                find_time: dur(p, "find_time", &r.find_time, d.find_time),
                ban_time: dur(p, "ban_time", &r.ban_time, d.ban_time),
            }
        }
    };
    let users_file = match pr.users_file.as_deref() {
        None | Some("") => {
            p.add(
                format!("{key}.users_file"),
                "required for type: local: the users file (see docs/LOCAL_USERS.md)",
            );
            None
        }
        Some(f) => Some(resolve(base, f)),
    };
    let users = users_file.as_ref().and_then(|path| {
        match users::load(path, &|name| std::env::var(name).ok()) {
            Ok(u) => Some(u),
            Err(errors) => {
                // An unreadable file is the config's error; its contents' errors are its own.
                if errors.0.len() == 1 && errors.0[0].line.is_none() {
                    p.add(format!("{key}.users_file"), errors.0[0].message.clone());
                } else {
                    p.1.extend(errors.0);
                }
                None
            }
        }
    });
    if (p.0.len(), p.1.len()) != before {
        return None;
    }
    Some(LocalProvider {
        id: pr.id.clone(),
        users_file: users_file?,
        users: Arc::new(users?),
        totp,
        regulation,
    })
}
