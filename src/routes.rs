//! The route table: host patterns and path prefixes compiled for a lookup that allocates
//! nothing. Most specific host first (exact, then the longest `*.` suffix, then any host);
//! within a host, the longest path prefix on a segment boundary.

use crate::headers::RouteHeaders;
use crate::path::under_prefix;
use crate::policy::Policy;
use crate::upstream::Upstream;
use std::collections::HashMap;
use std::sync::Arc;

/// Who must be logged in on a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Login required: browsers are sent to log in, API clients get 401.
    Required,
    /// Identity forwarded when there is a session; anonymous requests pass too.
    Optional,
    /// No session is looked at.
    None,
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    /// Label for metrics and logs.
    pub name: Arc<str>,
    pub host: HostPattern,
    pub path: String,
    pub upstream: Upstream,
    pub auth: AuthMode,
    /// The provider to log in with (an id from `providers`), when the route has auth.
    pub provider: Option<String>,
    pub websocket: bool,
    pub headers: RouteHeaders,
    /// Normalised prefixes under which no login is needed.
    pub public_paths: Vec<String>,
    /// `allow` / `deny`, compiled.
    pub policy: Policy,
    /// Whether `Authorization: Bearer` JWTs from the route's provider are accepted.
    pub bearer: bool,
    /// Scopes every Bearer token must carry.
    pub scopes: Vec<String>,
    /// Whether cookie-authenticated unsafe-method requests must come from the route's origin.
    pub csrf: bool,
    /// This route's metric series, looked up once at load instead of per request.
    pub metrics: RouteMetrics,
}

/// Handles to a route's Prometheus series. Creating them also makes every route's series
/// visible at zero before the first request.
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    pub duration: prometheus::Histogram,
    /// `portcullis_requests_total{status="200"}`, the common case; other statuses are looked up.
    pub ok: prometheus::IntCounter,
    pub upstream_errors: prometheus::IntCounter,
    /// `portcullis_auth_decisions_total{decision="allow"}`, the common case of an auth route.
    pub allowed: prometheus::IntCounter,
}

impl Route {
    /// Whether `path` (normalised) is under one of the route's `public_paths`.
    pub fn is_public(&self, path: &str) -> bool {
        self.public_paths.iter().any(|p| under_prefix(path, p))
    }
}

impl RouteMetrics {
    pub fn new(route: &str) -> RouteMetrics {
        use crate::telemetry::metrics;
        RouteMetrics {
            duration: metrics::DURATION.with_label_values(&[route]),
            ok: metrics::REQUESTS.with_label_values(&[route, "200"]),
            upstream_errors: metrics::UPSTREAM_ERRORS.with_label_values(&[route]),
            allowed: metrics::AUTH_DECISIONS.with_label_values(&[route, "allow"]),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com` stored as `.example.com`; matches any depth of subdomain.
    Wildcard(String),
    Any,
}

impl HostPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let lower = s.trim().to_ascii_lowercase();
        let lower = lower.strip_suffix('.').unwrap_or(&lower).to_string();
        if lower == "*" {
            return Ok(HostPattern::Any);
        }
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        crate::request::parse_host(name)
            .ok()
            .filter(|parsed| parsed == name)
            .ok_or_else(|| format!("invalid host {s:?}: expected a name such as app.example.com or *.example.com, without port"))?;
        Ok(if wild {
            HostPattern::Wildcard(format!(".{name}"))
        } else {
            HostPattern::Exact(name.to_string())
        })
    }

    pub fn describe(&self) -> String {
        match self {
            HostPattern::Exact(h) => h.clone(),
            HostPattern::Wildcard(s) => format!("*{s}"),
            HostPattern::Any => "*".into(),
        }
    }
}

/// Indexes into `routes`, longest path prefix first.
type PathList = Vec<usize>;

#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    exact: HashMap<String, PathList>,
    /// Longest suffix first.
    wildcard: Vec<(String, PathList)>,
    any: PathList,
}

impl RouteTable {
    /// Builds the table; duplicates must have been refused by the caller.
    pub fn new(routes: Vec<Route>) -> Self {
        let mut table = RouteTable::default();
        let mut wild: HashMap<String, PathList> = HashMap::new();
        for (i, r) in routes.iter().enumerate() {
            match &r.host {
                HostPattern::Exact(h) => table.exact.entry(h.clone()).or_default().push(i),
                HostPattern::Wildcard(s) => wild.entry(s.clone()).or_default().push(i),
                HostPattern::Any => table.any.push(i),
            }
        }
        table.wildcard = wild.into_iter().collect();
        table
            .wildcard
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        let by_len = |list: &mut PathList| {
            list.sort_by(|&a, &b| routes[b].path.len().cmp(&routes[a].path.len()));
        };
        table.exact.values_mut().for_each(by_len);
        table.wildcard.iter_mut().for_each(|(_, l)| by_len(l));
        by_len(&mut table.any);
        table.routes = routes.into_iter().map(Arc::new).collect();
        table
    }

    /// The route for `host` (already parsed) and normalised `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        let in_list = |list: &PathList| {
            list.iter()
                .map(|&i| &self.routes[i])
                .find(|r| under_prefix(path, &r.path))
        };
        if let Some(r) = self.exact.get(host).and_then(in_list) {
            return Some(r);
        }
        for (suffix, list) in &self.wildcard {
            if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                if let Some(r) = in_list(list) {
                    return Some(r);
                }
            }
        }
        in_list(&self.any)
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }
}
