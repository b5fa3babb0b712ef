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

#[derive(Debug)]
pub struct Runtime {
    /// The file this was loaded from (for reload and messages).
    pub source: PathBuf,
    pub listeners: Listeners,
    /// Worker threads of the proxy service; already resolved (never 0).
    pub threads: usize,
    pub trusted_proxies: TrustedProxies,
    /// Downstream keep-alive idle timeout.
    pub idle_timeout: Duration,
    /// How long a client may take to send a request's head (`server.timeouts.request_header`).
    pub header_timeout: Duration,
    pub logging: LoggingSettings,
    pub strip: StripList,
    pub routes: RouteTable,
    /// Headers on Portcullis' own pages: the global security headers, a strict CSP, no-store.
    pub own_pages: SecurityHeaders,
    pub remove_response: Vec<HeaderName>,
    /// `headers.identity`: header name and template, sent upstream for logged-in users.
    pub identity_headers: Vec<(HeaderName, String)>,
    /// Login settings as compiled (pure data); `None` without providers.
    pub auth_config: Option<AuthConfig>,
    /// The live services for `auth_config`, set by [`Runtime::activate`] before serving.
    pub auth: Option<Arc<Auth>>,
}

impl Runtime {
    /// Builds the live login services, or reuses those of `previous` when what they are built
    /// from is unchanged (the fingerprint: secrets, store, providers, by value). A reload that
    /// does not touch those keeps every session and connection, and still serves its own
    /// per-request settings (cookies, return-URL domains).
    pub fn activate(&mut self, previous: Option<&Runtime>) -> Result<(), String> {
        let Some(config) = &self.auth_config else {
            self.auth = None;
            return Ok(());
        };
        if let Some(prev) = previous.and_then(|p| p.auth.as_ref()) {
            if prev.config.fingerprint == config.fingerprint {
                self.auth = Some(prev.reconfigure(config.clone()));
                return Ok(());
            }
        }
        self.auth = Some(Auth::start(config.clone(), &crate::background::handle())?);
        Ok(())
    }
}

/// Addresses bound at start; changing them needs a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listeners {
    pub plain: Vec<SocketAddr>,
    pub tls: Option<TlsListeners>,
    pub admin: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListeners {
    pub addrs: Vec<SocketAddr>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    Stdout,
    Off,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `portcullis=debug,warn`.
    pub level: String,
    pub access_log: bool,
    pub audit: AuditTarget,
}
