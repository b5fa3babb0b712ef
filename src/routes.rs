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
    /// `path` as lenient servers read it ([`crate::path::lenient_prefix`]).
    pub lenient_path: String,
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
    /// The limiters that must all admit a request (indices into the runtime's limiters).
    pub rate_limit: Vec<usize>,
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
    /// Whether some route's path reads differently to lenient servers (`/Admin`), so that
    /// every request needs the second, lenient lookup.
    lenient_prefixes: bool,
    exact: HostMap,
    /// `*.example.com` routes under `.example.com`: a host's candidates are its own suffixes
    /// at each dot, so the lookup costs one probe per label, however many wildcards exist.
    wildcard: HostMap,
    any: PathList,
}

/// Host names to route lists, hashed with FNV-1a: lookups only (the keys are the config's),
/// so an attacker choosing the looked-up host cannot grow a bucket, and FNV costs a fraction
/// of SipHash on every request.
type HostMap = HashMap<String, PathList, std::hash::BuildHasherDefault<Fnv>>;

/// FNV-1a, 64 bits.
#[derive(Debug)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

impl RouteTable {
    /// Builds the table; duplicates must have been refused by the caller.
    pub fn new(routes: Vec<Route>) -> Self {
        let mut table = RouteTable::default();
        for (i, r) in routes.iter().enumerate() {
            match &r.host {
                HostPattern::Exact(h) => table.exact.entry(h.clone()).or_default().push(i),
                HostPattern::Wildcard(s) => table.wildcard.entry(s.clone()).or_default().push(i),
                HostPattern::Any => table.any.push(i),
            }
        }
        let by_len = |list: &mut PathList| {
            list.sort_by(|&a, &b| routes[b].path.len().cmp(&routes[a].path.len()));
        };
        table.exact.values_mut().for_each(by_len);
        table.wildcard.values_mut().for_each(by_len);
        by_len(&mut table.any);
        table.lenient_prefixes = routes.iter().any(|r| r.lenient_path != r.path);
        table.routes = routes.into_iter().map(Arc::new).collect();
        table
    }

    /// The route a lenient server's reading of `path` would fall under, when it is another
    /// than `strict` (the route [`find`](Self::find) gave): a case-insensitive app serves
    /// `/ADMIN` from `/admin`, so `/ADMIN` must also meet `/admin`'s rules. `path` is
    /// normalised and without `;` parameters. Of routes whose lenient prefixes tie for the
    /// longest match, any other than `strict` is returned.
    pub fn find_lenient(
        &self,
        host: &str,
        path: &str,
        strict: Option<&Arc<Route>>,
    ) -> Option<&Arc<Route>> {
        let lenient = crate::path::lenient_reading(path);
        if !self.lenient_prefixes && lenient == path {
            return None;
        }
        let covering = |list: &PathList| -> Vec<&Arc<Route>> {
            let all: Vec<&Arc<Route>> = list
                .iter()
                .map(|&i| &self.routes[i])
                .filter(|r| under_prefix(&lenient, &r.lenient_path))
                .collect();
            let longest = all.iter().map(|r| r.lenient_path.len()).max().unwrap_or(0);
            all.into_iter()
                .filter(|r| r.lenient_path.len() == longest)
                .collect()
        };
        let candidates = self
            .lists(host)
            .map(covering)
            .find(|found| !found.is_empty())?;
        candidates
            .into_iter()
            .find(|r| strict.is_none_or(|s| !Arc::ptr_eq(s, r)))
    }

    /// The route for `host` (already parsed) and normalised `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        self.lists(host).find_map(|list| {
            list.iter()
                .map(|&i| &self.routes[i])
                .find(|r| under_prefix(path, &r.path))
        })
    }

    /// The route lists that may serve `host`, most specific first: its exact entry, the
    /// wildcards it falls under (longest suffix first), then the host-less routes.
    fn lists<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a PathList> + 'a {
        let exact = if self.exact.is_empty() {
            None
        } else {
            self.exact.get(host)
        };
        // `.b.example.com`, then `.example.com`, then `.com`: the longest suffix first. The
        // host itself is never a candidate (`*.example.com` does not serve example.com).
        let wild = (!self.wildcard.is_empty())
            .then(|| {
                host.match_indices('.')
                    .filter_map(move |(i, _)| self.wildcard.get(&host[i..]))
            })
            .into_iter()
            .flatten();
        exact
            .into_iter()
            .chain(wild)
            .chain(std::iter::once(&self.any))
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }
}
