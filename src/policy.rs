//! Route access policies (`allow` / `deny`), compiled at load into lists that a request is
//! checked against without allocating. A rule matches when every criterion it names matches;
//! within a criterion, any listed value will do. `deny` rules are checked first; without
//! `allow` rules any authenticated user passes.

use crate::request::canonical;
use crate::session::SessionRecord;
use ipnet::IpNet;
use std::net::IpAddr;

/// One criterion of a rule, named as in the config (for denial reasons and audit events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Criterion {
    Users,
    Emails,
    EmailDomains,
    Groups,
    Claims,
    Networks,
    Methods,
    Mfa,
}

impl Criterion {
    pub fn key(self) -> &'static str {
        match self {
            Criterion::Users => "users",
            Criterion::Emails => "emails",
            Criterion::EmailDomains => "email_domains",
            Criterion::Groups => "groups",
            Criterion::Claims => "claims",
            Criterion::Networks => "networks",
            Criterion::Methods => "methods",
            Criterion::Mfa => "mfa",
        }
    }
}

/// What counts as multi-factor authentication for a provider.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MfaSettings {
    /// `amr` values that mean a second factor was used.
    pub amr: Vec<String>,
    /// `acr` values that mean MFA.
    pub acr: Vec<String>,
}

/// RFC 8176 methods that are, or include, a second factor.
pub const DEFAULT_MFA_AMR: &[&str] = &[
    "mfa", "otp", "hwk", "swk", "sc", "sms", "tel", "fpt", "face", "iris", "retina", "vbm",
];

impl MfaSettings {
    pub fn satisfied_by(&self, who: &SessionRecord) -> bool {
        who.amr.iter().any(|m| self.amr.contains(m))
            || who.acr.as_ref().is_some_and(|a| self.acr.contains(a))
    }
}

/// One compiled rule. `None` means the rule does not look at that criterion.
#[derive(Debug, Clone, Default)]
pub struct Rule {
    pub users: Option<Vec<String>>,
    /// Lower-case.
    pub emails: Option<Vec<String>>,
    /// Lower-case, without `@`.
    pub email_domains: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
    pub claims: Vec<(String, Vec<String>)>,
    pub networks: Option<Vec<IpNet>>,
    pub methods: Option<Vec<http::Method>>,
    pub mfa: bool,
}

/// The facts about a request a rule may look at, besides who sent it.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub method: &'a http::Method,
    /// The real client address (after `trusted_proxies`).
    pub client_ip: Option<IpAddr>,
}

/// The outcome of a policy check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Everything matched but multi-factor authentication: log in again with MFA.
    StepUp,
    /// Refused; the reason names the rule and criterion, for the audit event.
    Deny(String),
}

/// A route's compiled `allow` / `deny`.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub allow: Vec<Rule>,
    pub deny: Vec<Rule>,
    pub mfa: MfaSettings,
}

impl Policy {
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    pub fn evaluate(&self, who: &SessionRecord, cx: Context<'_>) -> Verdict {
        for (i, rule) in self.deny.iter().enumerate() {
            if rule.denies(who, cx, &self.mfa) {
                return Verdict::Deny(format!(
                    "deny rule {i} matched ({})",
                    rule.criteria().join(", ")
                ));
            }
        }
        if self.allow.is_empty() {
            return Verdict::Allow;
        }
        let mut first_failure = None;
        let mut step_up = false;
        for (i, rule) in self.allow.iter().enumerate() {
            match rule.allows(who, cx, &self.mfa) {
                Ok(()) => return Verdict::Allow,
                Err(Criterion::Mfa) => step_up = true,
                Err(c) => {
                    first_failure.get_or_insert((i, c));
                }
            }
        }
        if step_up {
            return Verdict::StepUp;
        }
        let (i, c) = first_failure.unwrap_or((0, Criterion::Users));
        Verdict::Deny(format!("allow rule {i} not met: {}", c.key()))
    }
}

impl Rule {
    /// The criteria this rule names, for messages.
    pub fn criteria(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut add = |present: bool, c: Criterion| {
            if present {
                v.push(c.key())
            }
        };
        add(self.users.is_some(), Criterion::Users);
        add(self.emails.is_some(), Criterion::Emails);
        add(self.email_domains.is_some(), Criterion::EmailDomains);
        add(self.groups.is_some(), Criterion::Groups);
        add(!self.claims.is_empty(), Criterion::Claims);
        add(self.networks.is_some(), Criterion::Networks);
        add(self.methods.is_some(), Criterion::Methods);
        add(self.mfa, Criterion::Mfa);
        v
    }

    /// `Ok` when every criterion matches; otherwise the first that does not, with `mfa`
    /// checked last so that `Err(Mfa)` means "only MFA is missing". Facts that cannot be
    /// established (an unverified, malformed or missing email, an unknown client address)
    /// never match.
    fn allows(
        &self,
        who: &SessionRecord,
        cx: Context<'_>,
        mfa: &MfaSettings,
    ) -> Result<(), Criterion> {
        self.matches(who, verified_email(who), cx, mfa, false)
    }

    /// Whether this deny rule applies. Facts that cannot be established count as matching,
    /// so a deny rule fails closed: a malformed or missing email under an `emails` or
    /// `email_domains` deny rule is denied, as is an unknown client address under `networks`.
    /// (Groups and claims cannot fail closed: a user outside every group is simply not in a
    /// denied one.) An unverified email still counts here: it is the user's claim either way.
    fn denies(&self, who: &SessionRecord, cx: Context<'_>, mfa: &MfaSettings) -> bool {
        let email = who.email.as_deref().and_then(email_parts);
        self.matches(who, email, cx, mfa, true).is_ok()
    }

    /// The one matcher behind `allows` and `denies`; `unknown_matches` says what a criterion
    /// whose fact is unknown (`email` or `cx.client_ip` absent) does.
    fn matches(
        &self,
        who: &SessionRecord,
        email: Option<(&str, &str)>,
        cx: Context<'_>,
        mfa: &MfaSettings,
        unknown_matches: bool,
    ) -> Result<(), Criterion> {
        let check = |ok: bool, c: Criterion| if ok { Ok(()) } else { Err(c) };
        if let Some(users) = &self.users {
            check(users.contains(&who.user), Criterion::Users)?;
        }
        if let Some(emails) = &self.emails {
            let ok = email.map_or(unknown_matches, |(whole, _)| {
                emails.iter().any(|e| e.eq_ignore_ascii_case(whole))
            });
            check(ok, Criterion::Emails)?;
        }
        if let Some(domains) = &self.email_domains {
            let ok = email.map_or(unknown_matches, |(_, domain)| {
                domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
            });
            check(ok, Criterion::EmailDomains)?;
        }
        if let Some(groups) = &self.groups {
            check(
                who.groups.iter().any(|g| groups.contains(g)),
                Criterion::Groups,
            )?;
        }
        for (name, values) in &self.claims {
            check(claim_matches(who, name, values), Criterion::Claims)?;
        }
        if let Some(nets) = &self.networks {
            let ok = cx
                .client_ip
                .map(canonical)
                .map_or(unknown_matches, |ip| nets.iter().any(|n| n.contains(&ip)));
            check(ok, Criterion::Networks)?;
        }
        if let Some(methods) = &self.methods {
            check(methods.contains(cx.method), Criterion::Methods)?;
        }
        if self.mfa {
            check(mfa.satisfied_by(who), Criterion::Mfa)?;
        }
        Ok(())
    }
}

/// The address and its domain, when the address is a plain `local@domain` (compare them
/// ignoring ASCII case). Quoted local parts, comments, several `@` and whitespace are refused:
/// they are how `"a@allowed.com"@evil.com` tricks a naive suffix check.
pub fn email_parts(email: &str) -> Option<(&str, &str)> {
    if email.len() > 320
        || email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "\"\\()<>,;:[]".contains(c))
    {
        return None;
    }
    let (local, domain) = email.split_once('@')?;
    if local.is_empty() || domain.is_empty() || domain.contains('@') || domain.ends_with('.') {
        return None;
    }
    Some((email, domain))
}

/// The email to allow on: only when well-formed and not explicitly unverified.
fn verified_email(who: &SessionRecord) -> Option<(&str, &str)> {
    let unverified = who
        .claims
        .get("email_verified")
        .is_some_and(|v| v == &serde_json::Value::Bool(false) || v == "false");
    if unverified {
        return None;
    }
    who.email.as_deref().and_then(email_parts)
}

/// Whether claim `name` (a string, a number, a boolean or a list of them) holds any of
/// `values`. The mapped identity fields are found under their usual names too.
fn claim_matches(who: &SessionRecord, name: &str, values: &[String]) -> bool {
    use serde_json::Value;
    let one = |v: &Value| match v {
        Value::String(s) => values.iter().any(|x| x == s),
        Value::Bool(b) => values.iter().any(|x| *x == b.to_string()),
        Value::Number(n) => values.iter().any(|x| *x == n.to_string()),
        _ => false,
    };
    if let Some(v) = who.claims.get(name) {
        return match v {
            Value::Array(items) => items.iter().any(one),
            other => one(other),
        };
    }
    match name {
        "sub" => values.contains(&who.sub),
        "email" => who.email.as_ref().is_some_and(|e| values.contains(e)),
        "name" => who.name.as_ref().is_some_and(|n| values.contains(n)),
        "groups" => who.groups.iter().any(|g| values.contains(g)),
        "amr" => who.amr.iter().any(|a| values.contains(a)),
        "acr" => who.acr.as_ref().is_some_and(|a| values.contains(a)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> SessionRecord {
        let mut r = SessionRecord::new("corp", "u-1", "alice");
        r.email = Some("Alice@Example.com".into());
        r.groups = vec!["staff".into(), "admins".into()];
        r.amr = vec!["pwd".into()];
        r.claims
            .insert("department".into(), serde_json::json!("eng"));
        r.claims
            .insert("roles".into(), serde_json::json!(["reader", "writer"]));
        r
    }

    fn cx(method: &http::Method, ip: &str) -> Context<'static> {
        let method: &'static http::Method = Box::leak(Box::new(method.clone()));
        Context {
            method,
            client_ip: ip.parse().ok(),
        }
    }

    fn policy(allow: Vec<Rule>, deny: Vec<Rule>) -> Policy {
        Policy {
            allow,
            deny,
            mfa: MfaSettings {
                amr: DEFAULT_MFA_AMR.iter().map(|s| s.to_string()).collect(),
                acr: vec!["gold".into()],
            },
        }
    }

    fn s(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|x| x.to_string()).collect())
    }

    #[test]
    fn each_criterion_allows_and_denies() {
        let get = http::Method::GET;
        let here = cx(&get, "10.1.2.3");
        let who = alice();
        let cases: Vec<(Rule, Rule)> = vec![
            (
                Rule {
                    users: s(&["alice"]),
                    ..Rule::default()
                },
                Rule {
                    users: s(&["bob"]),
                    ..Rule::default()
                },
            ),
            (
                Rule {
                    emails: s(&["alice@example.com"]),
                    ..Rule::default()
                },
                Rule {
                    emails: s(&["bob@example.com"]),
                    ..Rule::default()
                },
            ),
            (
                Rule {
                    email_domains: s(&["example.com"]),
                    ..Rule::default()
                },
                Rule {
                    email_domains: s(&["mple.com"]),
                    ..Rule::default()
                },
            ),
            (
                Rule {
                    groups: s(&["admins"]),
                    ..Rule::default()
                },
                Rule {
                    groups: s(&["contractors"]),
                    ..Rule::default()
                },
            ),
            (
                Rule {
                    claims: vec![("roles".into(), vec!["writer".into()])],
                    ..Rule::default()
                },
                Rule {
                    claims: vec![("department".into(), vec!["sales".into()])],
                    ..Rule::default()
                },
            ),
            (
                Rule {
                    networks: Some(vec!["10.0.0.0/8".parse().unwrap()]),
                    ..Rule::default()
                },
                Rule {
                    networks: Some(vec!["192.168.0.0/16".parse().unwrap()]),
                    ..Rule::default()
                },
            ),
            (
                Rule {
                    methods: Some(vec![http::Method::GET]),
                    ..Rule::default()
                },
                Rule {
                    methods: Some(vec![http::Method::POST]),
                    ..Rule::default()
                },
            ),
        ];
        for (yes, no) in cases {
            let label = yes.criteria().join(",");
            assert_eq!(
                policy(vec![yes.clone()], vec![]).evaluate(&who, here),
                Verdict::Allow,
                "{label}"
            );
            let refused = policy(vec![no.clone()], vec![]).evaluate(&who, here);
            assert!(
                matches!(&refused, Verdict::Deny(r) if r.contains(&label)),
                "{label}: {refused:?}"
            );
            // The same rule as a deny rule refuses exactly when it would have allowed.
            assert!(matches!(
                policy(vec![], vec![yes]).evaluate(&who, here),
                Verdict::Deny(_)
            ));
            assert_eq!(
                policy(vec![], vec![no]).evaluate(&who, here),
                Verdict::Allow
            );
        }
    }

    #[test]
    fn deny_wins_and_no_allow_means_anyone() {
        let get = http::Method::GET;
        let who = alice();
        assert_eq!(
            policy(vec![], vec![]).evaluate(&who, cx(&get, "1.1.1.1")),
            Verdict::Allow
        );
        let p = policy(
            vec![Rule {
                groups: s(&["staff"]),
                ..Rule::default()
            }],
            vec![Rule {
                groups: s(&["admins"]),
                ..Rule::default()
            }],
        );
        assert!(
            matches!(p.evaluate(&who, cx(&get, "1.1.1.1")), Verdict::Deny(r) if r.contains("deny rule 0"))
        );
        // All criteria of a rule must hold; any rule of a list may.
        let both = Rule {
            groups: s(&["staff"]),
            methods: Some(vec![http::Method::POST]),
            ..Rule::default()
        };
        assert!(
            matches!(policy(vec![both.clone()], vec![]).evaluate(&who, cx(&get, "1.1.1.1")), Verdict::Deny(r) if r.contains("methods"))
        );
        let p = policy(
            vec![
                both,
                Rule {
                    users: s(&["alice"]),
                    ..Rule::default()
                },
            ],
            vec![],
        );
        assert_eq!(p.evaluate(&who, cx(&get, "1.1.1.1")), Verdict::Allow);
    }

    #[test]
    fn mfa_steps_up_only_when_it_is_all_that_is_missing() {
        let get = http::Method::GET;
        let mut who = alice();
        let rule = Rule {
            groups: s(&["staff"]),
            mfa: true,
            ..Rule::default()
        };
        let p = policy(vec![rule], vec![]);
        assert_eq!(p.evaluate(&who, cx(&get, "1.1.1.1")), Verdict::StepUp);
        who.amr = vec!["pwd".into(), "otp".into()];
        assert_eq!(p.evaluate(&who, cx(&get, "1.1.1.1")), Verdict::Allow);
        who.amr = vec!["pwd".into()];
        who.acr = Some("gold".into());
        assert_eq!(p.evaluate(&who, cx(&get, "1.1.1.1")), Verdict::Allow);
        let p = policy(
            vec![Rule {
                groups: s(&["nobody"]),
                mfa: true,
                ..Rule::default()
            }],
            vec![],
        );
        assert!(matches!(
            p.evaluate(&alice(), cx(&get, "1.1.1.1")),
            Verdict::Deny(_)
        ));
    }

    #[test]
    fn email_tricks_never_allow_and_always_deny() {
        let get = http::Method::GET;
        let allow = policy(
            vec![Rule {
                email_domains: s(&["example.com"]),
                ..Rule::default()
            }],
            vec![],
        );
        let deny = policy(
            vec![],
            vec![Rule {
                email_domains: s(&["evil.com"]),
                ..Rule::default()
            }],
        );
        for bad in [
            "\"a@example.com\"@evil.com",
            "a@evil.com@example.com",
            "a@example.com ",
            "a(comment)@example.com",
            "a@example.com.",
            "@example.com",
            "a@",
            "a\r\n@example.com",
        ] {
            let mut who = alice();
            who.email = Some(bad.into());
            assert!(
                matches!(allow.evaluate(&who, cx(&get, "1.1.1.1")), Verdict::Deny(_)),
                "{bad:?} allowed"
            );
            assert!(
                matches!(deny.evaluate(&who, cx(&get, "1.1.1.1")), Verdict::Deny(_)),
                "{bad:?} not denied"
            );
        }
        // Exact domain: no subdomain or suffix match.
        for other in [
            "a@sub.example.com",
            "a@notexample.com",
            "a@example.com.evil.com",
        ] {
            let mut who = alice();
            who.email = Some(other.into());
            assert!(
                matches!(allow.evaluate(&who, cx(&get, "1.1.1.1")), Verdict::Deny(_)),
                "{other}"
            );
        }
        // No email at all: never allowed by an email rule, always denied by one.
        let mut who = alice();
        who.email = None;
        assert!(matches!(
            allow.evaluate(&who, cx(&get, "1.1.1.1")),
            Verdict::Deny(_)
        ));
        assert!(matches!(
            deny.evaluate(&who, cx(&get, "1.1.1.1")),
            Verdict::Deny(_)
        ));
        // An email the IdP marks unverified does not count.
        let mut who = alice();
        who.claims
            .insert("email_verified".into(), serde_json::json!(false));
        assert!(matches!(
            allow.evaluate(&who, cx(&get, "1.1.1.1")),
            Verdict::Deny(_)
        ));
    }

    #[test]
    fn unknown_client_address_fails_closed() {
        let get = http::Method::GET;
        let nets = Rule {
            networks: Some(vec!["0.0.0.0/0".parse().unwrap()]),
            ..Rule::default()
        };
        let none = Context {
            method: &get,
            client_ip: None,
        };
        assert!(matches!(
            policy(vec![nets.clone()], vec![]).evaluate(&alice(), none),
            Verdict::Deny(_)
        ));
        assert!(matches!(
            policy(vec![], vec![nets]).evaluate(&alice(), none),
            Verdict::Deny(_)
        ));
        // IPv4-mapped IPv6 addresses are their IPv4 address.
        let v4 = Rule {
            networks: Some(vec!["10.0.0.0/8".parse().unwrap()]),
            ..Rule::default()
        };
        assert_eq!(
            policy(vec![v4], vec![]).evaluate(&alice(), cx(&get, "::ffff:10.0.0.1")),
            Verdict::Allow
        );
    }
}
