//! `rate_limits` and the routes' `rate_limit`: each limiter checked and compiled, the
//! built-in `auth-endpoints` added unless the file defines one of that name.

use super::error::Problems;
use super::schema;
use crate::auth::{AuthConfig, StoreBackend};
use crate::ratelimit::{KeyKind, Limiter, Limiters, Spec, StoreKind, DEFAULT_MAX_KEYS};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The most a burst may be: beyond, a limiter limits nothing worth the name.
const MAX_BURST: u64 = 1_000_000;

/// Limiter names to their index in [`Limiters::list`]: the file's, in order, then the
/// built-in `auth-endpoints` when the file does not define it.
pub(super) fn names(file: &schema::File) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for l in &file.rate_limits {
        let n = out.len();
        out.entry(l.name.trim().to_string()).or_insert(n);
    }
    let n = out.len();
    out.entry(crate::ratelimit::AUTH_ENDPOINTS.to_string())
        .or_insert(n);
    out
}

/// A route's `rate_limit`, as indices; undefined names are errors.
pub(super) fn route_limits(
    r: &schema::Route,
    key: &str,
    names: &HashMap<String, usize>,
    p: &mut Problems,
) -> Vec<usize> {
    let mut out = Vec::new();
    for (j, name) in r.rate_limit.iter().enumerate() {
        match names.get(name.trim()) {
            Some(&i) if !out.contains(&i) => out.push(i),
            Some(_) => {}
            None => {
                let mut known: Vec<&str> = names.keys().map(String::as_str).collect();
                known.sort_unstable();
                p.add(
                    format!("{key}.rate_limit[{j}]"),
                    format!(
                        "no limiter named {name:?} under rate_limits (defined: {})",
                        known.join(", ")
                    ),
                );
            }
        }
    }
    out
}

/// Compiles every limiter, in the order of [`names`].
pub(super) fn limiters(
    file: &schema::File,
    auth: Option<&AuthConfig>,
    p: &mut Problems,
) -> Limiters {
    let mut list: Vec<Arc<Limiter>> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut auth_endpoints = None;
    for (i, l) in file.rate_limits.iter().enumerate() {
        let key = format!("rate_limits[{i}]");
        let name = l.name.trim().to_string();
        if let Some(first) = seen.insert(name.clone(), i) {
            p.add(
                format!("{key}.name"),
                format!("duplicate limiter name {name:?}: rate_limits[{first}] has it already"),
            );
            continue;
        }
        let spec = spec(l, &key, auth, p).unwrap_or_else(|| Spec {
            name: name.clone(),
            ..Spec::auth_endpoints()
        });
        if name == crate::ratelimit::AUTH_ENDPOINTS {
            auth_endpoints = Some(list.len());
        }
        list.push(Arc::new(Limiter::new(spec)));
    }
    let auth_endpoints = auth_endpoints.unwrap_or_else(|| {
        list.push(Arc::new(Limiter::new(Spec::auth_endpoints())));
        list.len() - 1
    });
    Limiters {
        list,
        auth_endpoints,
    }
}

fn spec(
    l: &schema::RateLimit,
    key: &str,
    auth: Option<&AuthConfig>,
    p: &mut Problems,
) -> Option<Spec> {
    let name = l.name.trim();
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !name_ok {
        p.add(
            format!("{key}.name"),
            format!(
                "invalid limiter name {name:?}: 1 to 64 letters, digits, '-', '_' or '.' (it names metrics and headers)"
            ),
        );
    }
    let kind = match l.key.trim() {
        "client_ip" => Some(KeyKind::ClientIp),
        "user" => Some(KeyKind::User),
        "route" => Some(KeyKind::Route),
        other => match other.strip_prefix("header:") {
            Some(h) => match http::HeaderName::from_bytes(h.trim().as_bytes()) {
                Ok(n) if !h.trim().is_empty() => Some(KeyKind::Header(n)),
                _ => {
                    p.add(
                        format!("{key}.key"),
                        format!("invalid header name {h:?} in key {other:?}"),
                    );
                    None
                }
            },
            None => {
                p.add(
                    format!("{key}.key"),
                    format!(
                        "unknown key kind {other:?}: expected client_ip, user, route or header:NAME"
                    ),
                );
                None
            }
        },
    };
    let rate = rate(&l.limit)
        .map_err(|m| p.add(format!("{key}.limit"), m))
        .ok();
    let burst = match l.burst.unwrap_or(1) {
        0 => {
            p.add(format!("{key}.burst"), "burst must be at least 1");
            None
        }
        b if b > MAX_BURST => {
            p.add(
                format!("{key}.burst"),
                format!("burst must be at most {MAX_BURST}"),
            );
            None
        }
        b => u32::try_from(b).ok(),
    };
    let max_keys = match l.max_keys {
        Some(0) => {
            p.add(format!("{key}.max_keys"), "max_keys must be at least 1");
            None
        }
        Some(n) => usize::try_from(n).ok(),
        None => Some(DEFAULT_MAX_KEYS),
    };
    let store = match l.store.as_deref().map(str::trim) {
        None | Some("local") => Some(StoreKind::Local),
        Some("redis") => match auth.map(|a| &a.backend) {
            Some(StoreBackend::Redis(settings)) => Some(StoreKind::Redis(settings.clone())),
            _ => {
                p.add(
                    format!("{key}.store"),
                    "store: redis uses the session store's Redis: set session.store: redis and session.redis",
                );
                None
            }
        },
        Some(other) => {
            p.add(
                format!("{key}.store"),
                format!("unknown store {other:?}: expected local or redis"),
            );
            None
        }
    };
    let ((count, period), kind, burst, store, max_keys) = (rate?, kind?, burst?, store?, max_keys?);
    name_ok.then(|| Spec {
        name: name.to_string(),
        kind,
        count,
        period,
        burst,
        store,
        max_keys,
    })
}

/// `100/s`, `600/m`, `5/15m`: a count of requests over a period (a unit alone means one of
/// it). Zero counts and periods are refused.
pub(super) fn rate(s: &str) -> Result<(u64, Duration), String> {
    let bad =
        || format!("invalid rate {s:?}: expected requests/period, e.g. 100/s, 600/m or 5/15m");
    let (count, period) = s.trim().split_once('/').ok_or_else(bad)?;
    let count: u64 = count.trim().parse().map_err(|_| bad())?;
    let period = period.trim();
    let period = if period.starts_with(|c: char| c.is_ascii_digit()) {
        super::values::duration(period).map_err(|_| bad())?
    } else {
        super::values::duration(&format!("1{period}")).map_err(|_| bad())?
    };
    if count == 0 {
        return Err(format!("invalid rate {s:?}: the count must be at least 1"));
    }
    if period < Duration::from_millis(1) {
        return Err(format!(
            "invalid rate {s:?}: the period must be at least 1ms"
        ));
    }
    if period > Duration::from_secs(366 * 86400) {
        return Err(format!(
            "invalid rate {s:?}: the period must be at most 366d"
        ));
    }
    if u128::from(count) > period.as_nanos() / 1000 {
        return Err(format!(
            "invalid rate {s:?}: at most one request per microsecond"
        ));
    }
    Ok((count, period))
}

#[cfg(test)]
mod tests {
    use super::rate;
    use std::time::Duration;

    #[test]
    fn rates() {
        assert_eq!(rate("100/s"), Ok((100, Duration::from_secs(1))));
        assert_eq!(rate("600/m"), Ok((600, Duration::from_secs(60))));
        assert_eq!(rate("5/15m"), Ok((5, Duration::from_secs(900))));
        assert_eq!(rate(" 1 / h "), Ok((1, Duration::from_secs(3600))));
        for bad in [
            "0/s",
            "1/0s",
            "x/s",
            "10",
            "10/",
            "10/parsec",
            "-1/s",
            "1/s/s",
            "",
        ] {
            assert!(rate(bad).is_err(), "{bad}");
        }
    }
}
