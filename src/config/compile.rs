//! Turns the user's file (`schema`) into the `Runtime`, collecting every problem with the key
//! it belongs to. Reads only files the config names (TLS material, `*_file` secrets): no
//! network I/O, so `check` gives the same verdict anywhere.

use super::compile_headers::{header_name, identity_headers, merge_security, security_headers};
use super::error::Problems;
use super::schema;
use super::values;
use crate::headers::{StripList, OWN_PAGE_CSP};
use crate::request::TrustedProxies;
use crate::routes::{HostPattern, RouteTable};
use crate::runtime::{AuditTarget, Listeners, LogFormat, LoggingSettings, Runtime, TlsListeners};
use crate::upstream::UpstreamTimeouts;
use http::HeaderValue;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
        identity_headers
            .iter()
            .map(|(n, _)| n.name.clone())
            .chain(super::compile_issuer::assertion_header(&file)),
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

    let routes = super::compile_route::routes(&file, base, &timeouts, &mut p);
    let hosts: Vec<HostPattern> = routes.iter().map(|r| r.host.clone()).collect();
    let auth_config = super::compile_auth::compile_auth(&file, &hosts, base, &mut p);
    let limiters = super::compile_limits::limiters(&file, auth_config.as_ref(), &mut p);
    let issuer_config =
        super::compile_issuer::compile_issuer(&file, auth_config.as_ref(), base, &mut p);

    if !p.is_empty() {
        return Err(p);
    }
    Ok(Runtime {
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
        identity_generation: {
            static LOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
            LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        },
        auth_config,
        auth: None,
        limiters,
        issuer_config,
        issuer: None,
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

/// Reads a `*_file` secret: the file's content without its trailing newline.
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}
