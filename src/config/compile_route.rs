//! One route of the user's file compiled into a [`Route`], and the table of them.

use super::compile::{note, read_secret_file, resolve};
use super::compile_headers::{header_pairs, merge_security, security_headers, sensitive};
use super::error::Problems;
use super::schema;
use crate::headers::RouteHeaders;
use crate::routes::{AuthMode, HostPattern, Route};
use crate::upstream::{Upstream, UpstreamTimeouts};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// What every route of a file is compiled against.
struct Shared<'a> {
    file: &'a schema::File,
    base: &'a Path,
    timeouts: &'a UpstreamTimeouts,
    /// `providers[].id`, in order: the first is the default.
    providers: Vec<String>,
    builtin: schema::SecurityHeaders,
    /// Limiter names to their index in the runtime's limiters.
    limit_names: HashMap<String, usize>,
}

/// Every route of the file; duplicates (same host and path) are errors.
pub(super) fn routes(
    file: &schema::File,
    base: &Path,
    timeouts: &UpstreamTimeouts,
    p: &mut Problems,
) -> Vec<Route> {
    if file.routes.is_empty() {
        p.add(
            "routes",
            "no routes: add at least one route with an upstream",
        );
    }
    let shared = Shared {
        file,
        base,
        timeouts,
        providers: file.providers.iter().map(|pr| pr.id.clone()).collect(),
        builtin: schema::Headers::default().security,
        limit_names: super::compile_limits::names(file),
    };
    let mut seen: HashMap<(HostPattern, String), usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, r) in file.routes.iter().enumerate() {
        let key = format!("routes[{i}]");
        let Some(route) = compile_route(r, &key, &shared, p) else {
            continue;
        };
        if let Some(first) = seen.insert((route.host.clone(), route.path.clone()), i) {
            p.add(
                format!("{key}.path"),
                format!(
                    "duplicate route: routes[{first}] already serves host {} path {}",
                    route.host.describe(),
                    route.path
                ),
            );
            continue;
        }
        out.push(route);
    }
    out
}

/// One route, or `None` when it has errors (all of them recorded under `key`).
fn compile_route(
    r: &schema::Route,
    key: &str,
    shared: &Shared<'_>,
    p: &mut Problems,
) -> Option<Route> {
    let (file, base, timeouts) = (shared.file, shared.base, shared.timeouts);
    let providers = &shared.providers;
    let global = &file.headers.security;
    let builtin = &shared.builtin;
    let host = match &r.host {
        None => Some(HostPattern::Any),
        Some(h) => note(p, format!("{key}.host"), HostPattern::parse(h)),
    };
    let path = note(
        p,
        format!("{key}.path"),
        route_path(r.path.as_deref().unwrap_or("/")),
    );
    let upstream = match r.upstream.as_deref() {
        None => Some(Upstream::None),
        Some("") => {
            p.add(
                format!("{key}.upstream"),
                "an empty upstream: give http://, https://, static://CODE or echo://, or leave the key out for a forward-auth-only route",
            );
            None
        }
        Some(u) => note(p, format!("{key}.upstream"), Upstream::parse(u, timeouts)),
    };
    let default_auth = if providers.is_empty() {
        "none"
    } else {
        "required"
    };
    let auth = match r.auth.as_deref().unwrap_or(default_auth) {
        "none" => Some(AuthMode::None),
        mode @ ("required" | "optional") if providers.is_empty() => {
            p.add(
                format!("{key}.auth"),
                format!("auth: {mode} needs at least one entry in providers"),
            );
            None
        }
        "required" => Some(AuthMode::Required),
        "optional" => Some(AuthMode::Optional),
        other => {
            p.add(
                format!("{key}.auth"),
                format!("unknown auth mode {other:?}: use required, optional or none"),
            );
            None
        }
    };
    let provider = match &r.provider {
        Some(id) if !providers.contains(id) => {
            p.add(
                format!("{key}.provider"),
                format!("no provider with id {id:?}"),
            );
            None
        }
        Some(id) => Some(id.clone()),
        None => providers.first().cloned(),
    };
    let h = &r.headers;
    let mut security_layers = vec![global, builtin];
    if let Some(s) = &h.security {
        security_layers.insert(0, s);
    }
    let headers = RouteHeaders {
        request_add: {
            let mut v = header_pairs(&h.add, &format!("{key}.headers.add"), p, |s| {
                Ok(s.expose().clone())
            });
            // Read again on every load, so a reload always sends the file's current value.
            v.extend(header_pairs(
                &h.add_file,
                &format!("{key}.headers.add_file"),
                p,
                |f| read_secret_file(&resolve(base, f)),
            ));
            v.into_iter().map(sensitive).collect()
        },
        response_add: header_pairs(
            &h.add_response,
            &format!("{key}.headers.add_response"),
            p,
            |s| Ok(s.clone()),
        ),
        security: security_headers(
            &merge_security(&security_layers),
            &format!("{key}.headers.security"),
            p,
        ),
    };
    for name in h
        .add
        .keys()
        .filter(|n| h.add_file.keys().any(|m| m.eq_ignore_ascii_case(n)))
    {
        p.add(
            format!("{key}.headers.add_file.{name}"),
            "also given in headers.add: keep one",
        );
    }
    let mfa = super::compile_policy::mfa_settings(
        provider
            .as_ref()
            .and_then(|id| file.providers.iter().find(|pr| pr.id == *id)),
    );
    let policy = super::compile_policy::policy(r, key, mfa, p);
    let public_paths = super::compile_policy::public_paths(r, key, p);
    if let Some(mode) = auth.filter(|a| *a != AuthMode::Required) {
        let word = if mode == AuthMode::None {
            "none"
        } else {
            "optional"
        };
        for (given, what) in [
            (r.allow.is_some(), "allow"),
            (r.deny.is_some(), "deny"),
            (!r.public_paths.is_empty(), "public_paths"),
        ] {
            if given {
                p.add(
                    format!("{key}.{what}"),
                    format!("{what} applies to routes with auth: required, and this route has auth: {word}"),
                );
            }
        }
        if r.bearer && mode == AuthMode::None {
            p.add(
                format!("{key}.bearer"),
                "bearer tokens need a provider: this route has auth: none",
            );
        }
    }
    let local_provider = provider
        .as_ref()
        .and_then(|id| file.providers.iter().find(|pr| pr.id == *id))
        .is_some_and(|pr| pr.kind == "local");
    let issuer = file.issuer.as_ref().is_some_and(|i| i.enabled);
    if r.bearer && local_provider && !issuer {
        p.add(
            format!("{key}.bearer"),
            "bearer tokens need an OpenID Connect provider or the issuer: this route's provider is type: local",
        );
    }
    if !r.scopes.is_empty() && !r.bearer {
        p.add(
            format!("{key}.scopes"),
            "scopes apply to Bearer tokens: set bearer: true as well",
        );
    }
    let rate_limit = super::compile_limits::route_limits(r, key, &shared.limit_names, p);
    let (Some(host), Some(path), Some(upstream), Some(auth)) = (host, path, upstream, auth) else {
        return None;
    };
    let name: Arc<str> = match &r.name {
        Some(n) if !n.trim().is_empty() => n.trim().into(),
        _ => format!("{}{}", host.describe(), path).into(),
    };
    let metrics = crate::routes::RouteMetrics::new(&name);
    Some(Route {
        metrics,
        name,
        host,
        lenient_path: crate::path::lenient_prefix(&path).into_owned(),
        path,
        upstream,
        auth,
        provider,
        websocket: r.websocket.unwrap_or(true),
        headers,
        public_paths,
        policy,
        bearer: r.bearer,
        scopes: r.scopes.clone(),
        csrf: r.csrf.unwrap_or(true),
        rate_limit,
    })
}

fn route_path(s: &str) -> Result<String, String> {
    if s.contains('?') || s.contains('#') {
        return Err(format!(
            "route path {s:?} must not contain a query or fragment"
        ));
    }
    match crate::path::normalize(s) {
        Ok(n) if n == s => Ok(n),
        Ok(n) => Err(format!(
            "route path {s:?} is not in normal form: write {n:?}"
        )),
        Err(e) => Err(format!("invalid route path {s:?}: {}", e.reason())),
    }
}
