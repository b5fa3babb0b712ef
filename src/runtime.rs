//! `Runtime`: the compiled, immutable form of one configuration file. Requests hold an
//! `Arc<Runtime>` for their whole life, so a reload never changes a request mid-flight.

use crate::auth::{Auth, AuthConfig};
use crate::headers::{SecurityHeaders, StripList};
use crate::request::TrustedProxies;
use crate::routes::RouteTable;
use http::HeaderName;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// One configuration file, compiled: what a request is served under.
#[derive(Debug)]
pub struct Runtime {
    pub(crate) listeners: Listeners,
    /// Worker threads of the proxy service; already resolved (never 0).
    pub(crate) threads: usize,
    pub(crate) trusted_proxies: TrustedProxies,
    /// Downstream keep-alive idle timeout.
    pub(crate) idle_timeout: Duration,
    /// How long a client may take to send a request's head (`server.timeouts.request_header`).
    pub(crate) header_timeout: Duration,
    pub(crate) logging: LoggingSettings,
    pub(crate) strip: StripList,
    pub(crate) routes: RouteTable,
    /// Headers on Portcullis' own pages: the global security headers, a strict CSP, no-store.
    pub(crate) own_pages: SecurityHeaders,
    pub(crate) remove_response: Vec<HeaderName>,
    /// `headers.identity`: header name and template, sent upstream for logged-in users.
    pub(crate) identity_headers: Vec<(crate::headers::FieldName, String)>,
    /// Tells these templates from those of any other load: a session's rendered headers are
    /// kept for the templates they were rendered with.
    pub(crate) identity_generation: u64,
    /// Login settings as compiled (pure data); `None` without providers.
    pub(crate) auth_config: Option<AuthConfig>,
    /// The live services for `auth_config`, set by [`Runtime::activate`] before serving.
    pub(crate) auth: Option<Arc<Auth>>,
    /// Every rate limiter (`rate_limits` and the built-in `auth-endpoints`).
    pub(crate) limiters: crate::ratelimit::Limiters,
    /// `issuer:` as compiled; `None` when the issuer is off.
    pub(crate) issuer_config: Option<crate::issuer::IssuerConfig>,
    /// The live issuer for `issuer_config`, set by [`Runtime::activate`].
    pub(crate) issuer: Option<Arc<crate::issuer::Issuer>>,
}

impl Runtime {
    /// The logging settings, applied at start (the format cannot change on reload).
    pub fn logging(&self) -> &LoggingSettings {
        &self.logging
    }

    /// What `portcullis check` prints about a valid file: listeners, threads, routes.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = writeln!(out, "  listeners: {:?}", self.listeners.plain);
        if let Some(tls) = &self.listeners.tls {
            let _ = writeln!(out, "  tls: {:?}", tls.addrs);
        }
        match self.listeners.admin {
            Some(admin) => {
                let _ = writeln!(out, "  admin: {admin}");
            }
            None => out.push_str("  admin: off\n"),
        }
        let _ = writeln!(out, "  threads: {}", self.threads);
        let _ = writeln!(out, "  routes: {}", self.routes.routes().len());
        for r in self.routes.routes() {
            let _ = writeln!(out, "    {} -> {}", r.name, r.upstream.describe());
        }
        if let Some(i) = &self.issuer_config {
            let _ = writeln!(out, "  issuer: {} ({} client(s))", i.iss, i.clients.len());
        }
        if let Some(a) = &self.auth_config {
            let memory = matches!(a.backend, crate::auth::StoreBackend::Memory);
            for l in &a.local {
                out.push_str(&crate::directory::summary(l, memory));
            }
        }
        out
    }

    /// Files besides the config whose changes are a reload (the users files).
    pub(crate) fn watched_files(&self) -> Vec<PathBuf> {
        self.auth_config
            .iter()
            .flat_map(|a| a.local.iter())
            .map(|l| l.users_file.clone())
            .collect()
    }

    /// Builds the live login services, or reuses those of `previous` when what they are built
    /// from is unchanged (the fingerprint: secrets, store, providers, by value). A reload that
    /// does not touch those keeps every session and connection, and still serves its own
    /// per-request settings (cookies, return-URL domains).
    pub fn activate(&mut self, previous: Option<&Runtime>) -> Result<(), String> {
        // Unchanged limiters keep their state (and their Redis connection) across a reload.
        self.limiters.activate(previous.map(|p| &p.limiters))?;
        self.issuer = match &self.issuer_config {
            None => None,
            Some(config) => Some(crate::issuer::Issuer::start(
                config.clone(),
                previous.and_then(|p| p.issuer.as_deref()),
                &crate::background::handle(),
            )?),
        };
        let Some(config) = &self.auth_config else {
            self.auth = None;
            return Ok(());
        };
        let previous_auth = previous.and_then(|p| p.auth.as_deref());
        if let Some(prev) = previous_auth {
            if prev.config.fingerprint == config.fingerprint {
                self.auth = Some(prev.reconfigure(config.clone()));
                return Ok(());
            }
        }
        self.auth = Some(Auth::start(
            config.clone(),
            &crate::background::handle(),
            previous_auth,
        )?);
        Ok(())
    }
}

/// Addresses bound at start; changing them needs a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listeners {
    pub plain: Vec<SocketAddr>,
    pub tls: Option<TlsListeners>,
    pub admin: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsListeners {
    pub addrs: Vec<SocketAddr>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// `logging.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object a line.
    Json,
    /// For humans.
    Pretty,
}

/// `logging.audit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    /// Among the logs, on stdout.
    Stdout,
    /// No audit events.
    Off,
    /// Appended to this file.
    File(PathBuf),
}

/// `logging`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingSettings {
    /// `logging.format`.
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `portcullis=debug,warn`.
    pub level: String,
    /// One line per request.
    pub access_log: bool,
    /// Where audit events go.
    pub audit: AuditTarget,
}
