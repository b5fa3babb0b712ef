//! Turns the user's file (`schema`) into the `Runtime`, collecting every problem with the key
//! it belongs to. Reads only files the config names (TLS material, `*_file` secrets): no
//! network I/O, so `check` gives the same verdict anywhere.

use super::error::Problems;
use super::schema;
use super::values;
use crate::headers::{RouteHeaders, SecurityHeaders, StripList, OWN_PAGE_CSP};
use crate::request::TrustedProxies;
use crate::routes::{AuthMode, HostPattern, Route, RouteTable};
use crate::runtime::{AuditTarget, Listeners, LogFormat, LoggingSettings, Runtime, TlsListeners};
use crate::upstream::{Upstream, UpstreamTimeouts};
use http::{HeaderName, HeaderValue};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Placeholders an identity header template may use.
const TEMPLATE_FIELDS: &[&str] = &["user", "email", "groups", "name", "sub", "sid"];

/// Headers that carry framing or routing and must never be set from config.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "forwarded",
];

pub fn compile(file: schema::File, source: &Path) -> Result<Runtime, Problems> {
    let base = source.parent().unwrap_or(Path::new("."));
    let mut p = Problems::default();

    let listeners = listeners(&file, base, &mut p);
    let trusted_proxies = TrustedProxies(
        file.server
            .trusted_proxies
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                note(
                    &mut p,
                    format!("server.trusted_proxies[{i}]"),
                    values::network(s),
                )
            })
            .collect(),
    );
    let t = &file.server.timeouts;
    let mut dur = |key: &str, s: &str, fallback: u64| {
        note(
            &mut p,
            format!("server.timeouts.{key}"),
            values::duration(s).and_then(nonzero),
        )
        .unwrap_or(Duration::from_secs(fallback))
    };
    let timeouts = UpstreamTimeouts {
        connect: dur("upstream_connect", &t.upstream_connect, 5),
        read: dur("upstream_read", &t.upstream_read, 60),
        idle: dur("idle", &t.idle, 60),
    };
    let header_timeout = dur("request_header", &t.request_header, 10);
    let threads = match file.server.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n if n > 1024 => {
            p.add("server.threads", "at most 1024 threads");
            1
        }
        n => n,
    };

    let logging = logging(&file.logging, base, &mut p);
    let identity_headers = identity_headers(&file.headers.identity, &mut p);
    let strip = StripList::new(
        identity_headers.iter().map(|(n, _)| n.clone()),
        file.headers.underscores_in_headers,
    );
    let global = &file.headers.security;
    let mut own = merge_security(&[global, &schema::Headers::default().security]);
    own.content_security_policy = Some(Some(OWN_PAGE_CSP.into()));
    let mut own_pages = security_headers(&own, "headers.security", &mut p);
    own_pages.always.push((
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    ));
    let remove_response = file
        .headers
        .remove_response
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            note(
                &mut p,
                format!("headers.remove_response[{i}]"),
                header_name(n),
            )
        })
        .collect();

    let routes = routes(&file, base, &timeouts, &mut p);
    let hosts: Vec<HostPattern> = routes.iter().map(|r| r.host.clone()).collect();
    let auth_config = super::compile_auth::compile_auth(&file, &hosts, base, &mut p);

    if !p.is_empty() {
        return Err(p);
    }
    Ok(Runtime {
        source: source.to_path_buf(),
        listeners,
        threads,
        trusted_proxies,
        idle_timeout: timeouts.idle,
        header_timeout,
        logging,
        strip,
        routes: RouteTable::new(routes),
        own_pages,
        remove_response,
        identity_headers,
        auth_config,
        auth: None,
    })
}

/// Records an error under `key`, turning the result into an `Option`.
pub(super) fn note<T>(p: &mut Problems, key: String, r: Result<T, String>) -> Option<T> {
    r.map_err(|m| p.add(key, m)).ok()
}

fn nonzero(d: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        Err("must be greater than zero".into())
    } else {
        Ok(d)
    }
}

pub(super) fn resolve(base: &Path, file: &str) -> PathBuf {
    let path = Path::new(file);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

fn listeners(file: &schema::File, base: &Path, p: &mut Problems) -> Listeners {
    let mut seen = HashMap::new();
    let mut addr = |p: &mut Problems, key: String, s: &str| {
        let a = note(p, key.clone(), values::listen_addr(s))?;
        if let Some(first) = seen.insert(a, key.clone()) {
            p.add(key, format!("{a} is already used by {first}"));
            return None;
        }
        Some(a)
    };
    let plain: Vec<_> = file
        .server
        .listen
        .iter()
        .enumerate()
        .filter_map(|(i, s)| addr(p, format!("server.listen[{i}]"), s))
        .collect();
    let tls = file.server.tls.as_ref().map(|t| {
        let addrs: Vec<_> = t
            .listen
            .iter()
            .enumerate()
            .filter_map(|(i, s)| addr(p, format!("server.tls.listen[{i}]"), s))
            .collect();
        if t.listen.is_empty() {
            p.add(
                "server.tls.listen",
                "at least one address is needed, e.g. [\"0.0.0.0:8443\"]",
            );
        }
        let cert_file = resolve(base, &t.cert_file);
        let key_file = resolve(base, &t.key_file);
        check_pem(p, "server.tls.cert_file", &t.cert_file, &cert_file, true);
        check_pem(p, "server.tls.key_file", &t.key_file, &key_file, false);
        TlsListeners {
            addrs,
            cert_file,
            key_file,
        }
    });
    let admin = match file.admin.listen.as_deref() {
        None | Some("off") => None,
        Some(s) => addr(p, "admin.listen".into(), s),
    };
    if plain.is_empty() && tls.as_ref().is_none_or(|t| t.addrs.is_empty()) && p.is_empty() {
        p.add(
            "server.listen",
            "no listener: give server.listen or server.tls.listen",
        );
    }
    Listeners { plain, tls, admin }
}

/// Reads a certificate chain or private key so that a bad file is a config error, not a
/// failure after start.
fn check_pem(p: &mut Problems, key: &str, given: &str, path: &Path, cert: bool) {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    if given.is_empty() {
        p.add(key, "a file is required");
        return;
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return p.add(key, format!("cannot read {}: {e}", path.display())),
    };
    let ok = if cert {
        let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
        matches!(certs, Ok(c) if !c.is_empty())
    } else {
        PrivateKeyDer::from_pem_slice(&bytes).is_ok()
    };
    if !ok {
        let what = if cert {
            "PEM certificate"
        } else {
            "PEM private key"
        };
        p.add(
            key,
            format!("{} does not hold a valid {what}", path.display()),
        );
    }
}

fn logging(l: &schema::Logging, base: &Path, p: &mut Problems) -> LoggingSettings {
    let format = match l.format.as_str() {
        "json" => LogFormat::Json,
        "pretty" => LogFormat::Pretty,
        other => {
            p.add(
                "logging.format",
                format!("unknown format {other:?}: use json or pretty"),
            );
            LogFormat::Json
        }
    };
    if tracing_subscriber::EnvFilter::try_new(&l.level).is_err() || l.level.trim().is_empty() {
        p.add(
            "logging.level",
            format!(
                "invalid level {:?}: use trace, debug, info, warn or error",
                l.level
            ),
        );
    }
    let audit = match l.audit.as_str() {
        "stdout" => AuditTarget::Stdout,
        "off" => AuditTarget::Off,
        "" => {
            p.add("logging.audit", "use stdout, off or a file path");
            AuditTarget::Off
        }
        path => AuditTarget::File(resolve(base, path)),
    };
    LoggingSettings {
        format,
        level: l.level.clone(),
        access_log: l.access_log,
        audit,
    }
}

fn header_name(s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.as_bytes()).map_err(|_| format!("invalid header name {s:?}"))
}

fn settable_header(s: &str) -> Result<HeaderName, String> {
    let name = header_name(s)?;
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err(format!(
            "{s} is managed by Portcullis and cannot be set from config"
        ));
    }
    Ok(name)
}

fn header_value(s: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(s)
        .map_err(|_| "invalid header value (control characters or non-ASCII?)".to_string())
}

fn identity_headers(map: &BTreeMap<String, String>, p: &mut Problems) -> Vec<(HeaderName, String)> {
    let mut out = Vec::new();
    for (name, template) in map {
        let key = format!("headers.identity.{name}");
        let n = note(p, key.clone(), settable_header(name));
        let t = note(p, key, check_template(template));
        if let (Some(n), Some(())) = (n, t) {
            out.push((n, template.clone()));
        }
    }
    out
}

fn check_template(t: &str) -> Result<(), String> {
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("unclosed {{ in template {t:?}"))?;
        let field = &rest[open + 1..open + close];
        if !TEMPLATE_FIELDS.contains(&field) {
            return Err(format!(
                "unknown placeholder {{{field}}} in {t:?}: use one of {}",
                TEMPLATE_FIELDS
                    .iter()
                    .map(|f| format!("{{{f}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = &rest[open + close + 1..];
    }
    Ok(())
}

/// Field-wise merge: the first layer that mentions a header decides it.
fn merge_security(layers: &[&schema::SecurityHeaders]) -> schema::SecurityHeaders {
    let pick = |f: fn(&schema::SecurityHeaders) -> &Option<Option<String>>| {
        layers.iter().find_map(|l| f(l).clone())
    };
    schema::SecurityHeaders {
        strict_transport_security: pick(|s| &s.strict_transport_security),
        content_type_options: pick(|s| &s.content_type_options),
        frame_options: pick(|s| &s.frame_options),
        referrer_policy: pick(|s| &s.referrer_policy),
        content_security_policy: pick(|s| &s.content_security_policy),
        permissions_policy: pick(|s| &s.permissions_policy),
        cross_origin_opener_policy: pick(|s| &s.cross_origin_opener_policy),
    }
}

fn security_headers(s: &schema::SecurityHeaders, key: &str, p: &mut Problems) -> SecurityHeaders {
    let mut out = SecurityHeaders::default();
    let fields: [(&str, &Option<Option<String>>, &'static str); 6] = [
        (
            "content_type_options",
            &s.content_type_options,
            "x-content-type-options",
        ),
        ("frame_options", &s.frame_options, "x-frame-options"),
        ("referrer_policy", &s.referrer_policy, "referrer-policy"),
        (
            "content_security_policy",
            &s.content_security_policy,
            "content-security-policy",
        ),
        (
            "permissions_policy",
            &s.permissions_policy,
            "permissions-policy",
        ),
        (
            "cross_origin_opener_policy",
            &s.cross_origin_opener_policy,
            "cross-origin-opener-policy",
        ),
    ];
    for (field, value, header) in fields {
        if let Some(Some(v)) = value {
            if let Some(v) = note(p, format!("{key}.{field}"), header_value(v)) {
                out.always.push((HeaderName::from_static(header), v));
            }
        }
    }
    if let Some(Some(v)) = &s.strict_transport_security {
        out.hsts = note(
            p,
            format!("{key}.strict_transport_security"),
            header_value(v),
        );
    }
    out
}

fn header_pairs<V>(
    map: &BTreeMap<String, V>,
    key: &str,
    p: &mut Problems,
    value_of: impl Fn(&V) -> Result<String, String>,
) -> Vec<(HeaderName, HeaderValue)> {
    map.iter()
        .filter_map(|(name, raw)| {
            let k = format!("{key}.{name}");
            let n = note(p, k.clone(), settable_header(name))?;
            let v = note(p, k, value_of(raw).and_then(|v| header_value(&v)))?;
            Some((n, v))
        })
        .collect()
}

/// A value set on upstream requests: it may be a credential (from `add_file`, or a `${VAR}` in
/// `add`), so it is marked sensitive: `http` shows it as `Sensitive` in `Debug`, and HTTP/2
/// never puts it into a compression table.
fn sensitive((name, mut value): (HeaderName, HeaderValue)) -> (HeaderName, HeaderValue) {
    value.set_sensitive(true);
    (name, value)
}

/// Reads a `*_file` secret: the file's content without its trailing newline.
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

fn routes(
    file: &schema::File,
    base: &Path,
    timeouts: &UpstreamTimeouts,
    p: &mut Problems,
) -> Vec<Route> {
    let providers: Vec<String> = file.providers.iter().map(|pr| pr.id.clone()).collect();
    if file.routes.is_empty() {
        p.add(
            "routes",
            "no routes: add at least one route with an upstream",
        );
    }
    let global = &file.headers.security;
    let builtin = schema::Headers::default().security;
    let mut seen: HashMap<(HostPattern, String), usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, r) in file.routes.iter().enumerate() {
        let key = format!("routes[{i}]");
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
        let mut security_layers = vec![global, &builtin];
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
        let policy = super::compile_policy::policy(r, &key, mfa, p);
        let public_paths = super::compile_policy::public_paths(r, &key, p);
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
        if !r.scopes.is_empty() && !r.bearer {
            p.add(
                format!("{key}.scopes"),
                "scopes apply to Bearer tokens: set bearer: true as well",
            );
        }
        let (Some(host), Some(path), Some(upstream), Some(auth)) = (host, path, upstream, auth)
        else {
            continue;
        };
        if let Some(first) = seen.insert((host.clone(), path.clone()), i) {
            p.add(
                format!("{key}.path"),
                format!(
                    "duplicate route: routes[{first}] already serves host {} path {path}",
                    host.describe()
                ),
            );
            continue;
        }
        let name: Arc<str> = match &r.name {
            Some(n) if !n.trim().is_empty() => n.trim().into(),
            _ => format!("{}{}", host.describe(), path).into(),
        };
        let metrics = crate::routes::RouteMetrics::new(&name);
        out.push(Route {
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
        });
    }
    out
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
