//! `routes[].allow` / `deny` / `public_paths` and `providers[].mfa`, compiled into the
//! [`Policy`] a request is checked against.

use super::compile::note;
use super::error::Problems;
use super::schema;
use super::values;
use crate::policy::{MfaSettings, Policy, Rule, DEFAULT_MFA_AMR};

/// The MFA settings of a provider.
pub fn mfa_settings(provider: Option<&schema::Provider>) -> MfaSettings {
    let amr = provider
        .and_then(|p| p.mfa.amr.clone())
        .unwrap_or_else(|| DEFAULT_MFA_AMR.iter().map(|s| s.to_string()).collect());
    let acr = provider.map(|p| p.mfa.acr.clone()).unwrap_or_default();
    MfaSettings { amr, acr }
}

pub fn policy(r: &schema::Route, key: &str, mfa: MfaSettings, p: &mut Problems) -> Policy {
    let mut rules = |which: &str, given: &Option<schema::Rules>| -> Vec<Rule> {
        let Some(given) = given else {
            return Vec::new();
        };
        let list = given.as_slice();
        if list.is_empty() {
            p.add(
                format!("{key}.{which}"),
                "an empty list of rules: leave the key out instead",
            );
        }
        let many = matches!(given, schema::Rules::Many(_));
        list.iter()
            .enumerate()
            .map(|(i, rule)| {
                let at = if many {
                    format!("{key}.{which}[{i}]")
                } else {
                    format!("{key}.{which}")
                };
                compile_rule(rule, &at, p)
            })
            .collect()
    };
    let allow = rules("allow", &r.allow);
    let deny = rules("deny", &r.deny);
    if deny.iter().any(|rule| rule.mfa) {
        p.add(
            format!("{key}.deny"),
            "mfa applies to allow rules (a deny rule with mfa: true would refuse exactly the users who did use MFA)",
        );
    }
    Policy { allow, deny, mfa }
}

fn compile_rule(r: &schema::Rule, key: &str, p: &mut Problems) -> Rule {
    let mut list =
        |name: &str, v: &Option<Vec<String>>, f: &dyn Fn(&str) -> Result<String, String>| {
            let v = v.as_ref()?;
            if v.is_empty() {
                p.add(
                    format!("{key}.{name}"),
                    "an empty list never matches: leave the key out or list values",
                );
            }
            Some(
                v.iter()
                    .enumerate()
                    .filter_map(|(i, s)| note(p, format!("{key}.{name}[{i}]"), f(s.trim())))
                    .collect::<Vec<_>>(),
            )
        };
    let plain = |s: &str| -> Result<String, String> {
        if s.is_empty() {
            Err("an empty value".into())
        } else {
            Ok(s.to_string())
        }
    };
    let users = list("users", &r.users, &plain);
    let groups = list("groups", &r.groups, &plain);
    let emails = list("emails", &r.emails, &|s| {
        crate::policy::email_parts(s)
            .map(|(whole, _)| whole.to_ascii_lowercase())
            .ok_or_else(|| format!("{s:?} is not a plain address such as alice@example.com"))
    });
    let email_domains = list("email_domains", &r.email_domains, &|s| {
        let d = s.strip_prefix('@').unwrap_or(s).to_ascii_lowercase();
        match crate::request::parse_host(&d) {
            Ok(h) if h == d => Ok(d),
            _ => Err(format!("{s:?} is not a domain such as example.com")),
        }
    });
    let networks = r.networks.as_ref().map(|v| {
        if v.is_empty() {
            p.add(format!("{key}.networks"), "an empty list never matches");
        }
        v.iter()
            .enumerate()
            .filter_map(|(i, s)| note(p, format!("{key}.networks[{i}]"), values::network(s)))
            .collect()
    });
    let methods = r.methods.as_ref().map(|v| {
        if v.is_empty() {
            p.add(format!("{key}.methods"), "an empty list never matches");
        }
        v.iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let m = s.trim().to_ascii_uppercase();
                let parsed = http::Method::from_bytes(m.as_bytes())
                    .map_err(|_| format!("{s:?} is not an HTTP method"));
                note(p, format!("{key}.methods[{i}]"), parsed)
            })
            .collect()
    });
    let mut claims = Vec::new();
    for (name, values) in r.claims.iter().flatten() {
        let values = values.to_vec();
        if values.is_empty() {
            p.add(
                format!("{key}.claims.{name}"),
                "an empty list never matches",
            );
        }
        claims.push((name.clone(), values));
    }
    let rule = Rule {
        users,
        emails,
        email_domains,
        groups,
        claims,
        networks,
        methods,
        mfa: r.mfa.unwrap_or(false),
    };
    if rule.criteria().is_empty() {
        p.add(
            key.to_string(),
            "a rule with no criteria matches everyone: name at least one (users, emails, email_domains, groups, claims, networks, methods, mfa)",
        );
    }
    rule
}

/// `public_paths`: normalised prefixes.
pub fn public_paths(r: &schema::Route, key: &str, p: &mut Problems) -> Vec<String> {
    r.public_paths
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let checked = match crate::path::normalize(s) {
                Ok(n) if n == *s && s.starts_with('/') => Ok(n),
                Ok(n) => Err(format!(
                    "public path {s:?} is not in normal form: write {n:?}"
                )),
                Err(e) => Err(format!("invalid public path {s:?}: {}", e.reason())),
            };
            note(p, format!("{key}.public_paths[{i}]"), checked)
        })
        .collect()
}
