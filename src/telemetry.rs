//! Logs, metrics and audit events. Nothing here ever receives a cookie, token or secret: callers
//! pass only the fields listed in each function.

use crate::runtime::{AuditTarget, LogFormat, LoggingSettings};
use prometheus::{register_histogram_vec, register_int_counter_vec, HistogramVec, IntCounterVec};
use std::io::Write;
use std::sync::{LazyLock, Mutex, OnceLock, RwLock};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

/// Prometheus metrics (SPEC names), registered once in the default registry that `/metrics`
/// serves.
pub mod metrics {
    use super::*;

    /// `portcullis_requests_total{route,status}`.
    pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
        register_int_counter_vec!(
            "portcullis_requests_total",
            "Requests answered, by route and status",
            &["route", "status"]
        )
        .expect("metric names are static and registered once")
    });
    /// `portcullis_request_duration_seconds{route}`.
    pub static DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
        register_histogram_vec!(
            "portcullis_request_duration_seconds",
            "Time from request start to the last byte of the response, by route",
            &["route"],
            vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0
            ]
        )
        .expect("metric names are static and registered once")
    });
    /// `portcullis_upstream_errors_total{route}`.
    pub static UPSTREAM_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
        register_int_counter_vec!(
            "portcullis_upstream_errors_total",
            "Requests that failed to reach or read the upstream",
            &["route"]
        )
        .expect("metric names are static and registered once")
    });
    /// `portcullis_config_reloads_total{result}`.
    pub static CONFIG_RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
        register_int_counter_vec!(
            "portcullis_config_reloads_total",
            "Configuration reloads, by result (success, failure)",
            &["result"]
        )
        .expect("metric names are static and registered once")
    });

    /// `portcullis_store_errors_total{op}`; count through [`count_store_error`].
    pub static STORE_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
        register_int_counter_vec!(
            "portcullis_store_errors_total",
            "Session store operations that failed, by operation",
            &["op"]
        )
        .expect("metric names are static and registered once")
    });
    /// `portcullis_rate_limited_total{limiter}`: requests refused by a rate limiter.
    pub static RATE_LIMITED: LazyLock<IntCounterVec> = LazyLock::new(|| {
        register_int_counter_vec!(
            "portcullis_rate_limited_total",
            "Requests refused by a rate limiter, by limiter",
            &["limiter"]
        )
        .expect("metric names are static and registered once")
    });

    /// Counts a failed session store operation, under the operation's name: the one way
    /// store errors reach `portcullis_store_errors_total`.
    pub fn count_store_error(e: &crate::session::StoreError) {
        STORE_ERRORS.with_label_values(&[e.op()]).inc();
    }

    /// `portcullis_invalid_session_cookies_total`: cookies that name no live session.
    pub static INVALID_COOKIES: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
        prometheus::register_int_counter!(
            "portcullis_invalid_session_cookies_total",
            "Session cookies that were tampered with, truncated, foreign or expired (treated as no session)"
        )
        .expect("metric names are static and registered once")
    });
    /// `portcullis_logins_total{provider,result}`.
    pub static LOGINS: LazyLock<IntCounterVec> = LazyLock::new(|| {
        register_int_counter_vec!(
            "portcullis_logins_total",
            "Finished logins, by provider and result (success, failure, error)",
            &["provider", "result"]
        )
        .expect("metric names are static and registered once")
    });
    /// `portcullis_auth_decisions_total{route,decision}`.
    pub static AUTH_DECISIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
        register_int_counter_vec!(
            "portcullis_auth_decisions_total",
            "Decisions on requests to routes with auth, by route and decision",
            &["route", "decision"]
        )
        .expect("metric names are static and registered once")
    });

    /// `portcullis_tokens_issued_total{grant}`: access tokens issued by the token endpoint.
    pub static TOKENS_ISSUED: LazyLock<IntCounterVec> = LazyLock::new(|| {
        register_int_counter_vec!(
            "portcullis_tokens_issued_total",
            "Access tokens issued by the token endpoint, by grant type",
            &["grant"]
        )
        .expect("metric names are static and registered once")
    });

    /// Bans of (user, client address) pairs by the login form's brute-force regulation.
    pub static LOGIN_BANS: LazyLock<IntCounterVec> = LazyLock::new(|| {
        register_int_counter_vec!(
            "portcullis_login_bans_total",
            "Bans of a (user, client address) pair by a local provider's brute-force regulation",
            &["provider"]
        )
        .expect("metric names are static and registered once")
    });

    /// Creates a local provider's login and ban series at zero, so that they are listed
    /// before the first login.
    pub fn login_series(provider: &str) {
        for result in ["success", "failure", "error"] {
            LOGINS.with_label_values(&[provider, result]);
        }
        LOGIN_BANS.with_label_values(&[provider]);
    }

    /// Registers every metric so that `/metrics` lists them before the first request.
    pub fn init() {
        LazyLock::force(&REQUESTS);
        LazyLock::force(&DURATION);
        LazyLock::force(&UPSTREAM_ERRORS);
        LazyLock::force(&STORE_ERRORS);
        LazyLock::force(&INVALID_COOKIES);
        LazyLock::force(&LOGINS);
        LazyLock::force(&LOGIN_BANS);
        LazyLock::force(&AUTH_DECISIONS);
        LazyLock::force(&RATE_LIMITED);
        LazyLock::force(&TOKENS_ISSUED);
        // The session store's common operations, so that a dashboard (or a test) can tell
        // "no error yet" from a metric that does not exist.
        for op in ["get", "create", "update", "delete", "ratelimit"] {
            STORE_ERRORS.with_label_values(&[op]);
        }
        CONFIG_RELOADS.with_label_values(&["success"]);
        CONFIG_RELOADS.with_label_values(&["failure"]);
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn render() -> Vec<u8> {
        let mut out = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = prometheus::Encoder::encode(&encoder, &prometheus::gather(), &mut out);
        out
    }
}

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();
static LOG_GUARD: OnceLock<tracing_appender::non_blocking::WorkerGuard> = OnceLock::new();
/// The same non-blocking stdout writer the subscriber uses, for access lines written directly.
static ACCESS: OnceLock<(tracing_appender::non_blocking::NonBlocking, LogFormat)> = OnceLock::new();

/// Installs the global subscriber (once per process). `log` records from Pingora are
/// forwarded into it.
pub fn init_logging(settings: &LoggingSettings) {
    let filter = EnvFilter::try_new(&settings.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        // Buffered: the writer thread drains every queued line, then flushes once, so a busy
        // proxy makes one write(2) per batch instead of one per line.
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stdout(),
        ));
    let _ = ACCESS.set((writer.clone(), settings.format));
    let fmt = match settings.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(writer)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_writer(writer)
            .boxed(),
    };
    if tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .is_ok()
    {
        let _ = FILTER.set(handle);
        let _ = LOG_GUARD.set(guard);
    }
    set_audit(&settings.audit);
}

/// Applies a reloaded configuration's level and audit target.
pub fn apply_logging(settings: &LoggingSettings) {
    if let (Some(handle), Ok(filter)) = (FILTER.get(), EnvFilter::try_new(&settings.level)) {
        let _ = handle.reload(filter);
    }
    set_audit(&settings.audit);
}

/// Where audit events go; swapped on reload when `logging.audit` changes.
static AUDIT: RwLock<Option<(AuditTarget, AuditSink)>> = RwLock::new(None);

enum AuditSink {
    Stdout,
    Off,
    File(Mutex<std::fs::File>),
}

fn set_audit(target: &AuditTarget) {
    let Ok(mut guard) = AUDIT.write() else { return };
    if guard.as_ref().is_some_and(|(t, _)| t == target) {
        return;
    }
    let sink = match target {
        AuditTarget::Stdout => AuditSink::Stdout,
        AuditTarget::Off => AuditSink::Off,
        AuditTarget::File(path) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => AuditSink::File(Mutex::new(f)),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot open audit log; audit events go to stdout");
                AuditSink::Stdout
            }
        },
    };
    *guard = Some((target.clone(), sink));
}

/// Writes one audit event as a JSON line: `time`, `event`, then `fields` (an object).
pub fn audit(event: &str, fields: serde_json::Value) {
    let mut line = serde_json::Map::new();
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    line.insert("time".into(), now.into());
    line.insert("audit".into(), true.into());
    line.insert("event".into(), event.into());
    if let serde_json::Value::Object(map) = fields {
        line.extend(map);
    }
    let mut text = serde_json::Value::Object(line).to_string();
    text.push('\n');
    let Ok(guard) = AUDIT.read() else { return };
    match guard.as_ref().map(|(_, s)| s) {
        Some(AuditSink::Off) => {}
        Some(AuditSink::File(f)) => {
            if let Ok(mut f) = f.lock() {
                let _ = f.write_all(text.as_bytes());
            }
        }
        Some(AuditSink::Stdout) | None => {
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
        }
    }
}

/// One access-log line. Formatted here by hand rather than through `tracing`'s JSON layer,
/// which cost more per request than the whole proxying (see docs/BENCHMARKS.md).
pub(crate) struct AccessRecord<'a> {
    pub method: &'a str,
    pub host: &'a str,
    /// The normalised path, never the query string.
    pub path: &'a str,
    pub status: u16,
    pub duration: std::time::Duration,
    pub route: &'a str,
    pub upstream: &'a str,
    pub client_ip: Option<std::net::IpAddr>,
    pub error: Option<&'a str>,
}

/// Writes `rec` as one line on the log output (JSON or pretty, as `logging.format`).
pub(crate) fn access(rec: &AccessRecord<'_>) {
    use std::fmt::Write as _;
    use tracing_subscriber::fmt::MakeWriter;
    thread_local! {
        static LINE: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(256));
    }
    let Some((writer, format)) = ACCESS.get() else {
        return;
    };
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let ms = rec.duration.as_secs_f64() * 1000.0;
    LINE.with(|line| {
        let Ok(mut line) = line.try_borrow_mut() else {
            return;
        };
        line.clear();
        match format {
            LogFormat::Json => {
                line.push_str("{\"timestamp\":\"");
                line.push_str(&now);
                line.push_str("\",\"level\":\"INFO\",\"target\":\"access\",\"method\":");
                json_str(&mut line, rec.method);
                line.push_str(",\"host\":");
                json_str(&mut line, rec.host);
                line.push_str(",\"path\":");
                json_str(&mut line, rec.path);
                let _ = write!(
                    line,
                    ",\"status\":{},\"duration_ms\":{ms:.3},\"route\":",
                    rec.status
                );
                json_str(&mut line, rec.route);
                line.push_str(",\"upstream\":");
                json_str(&mut line, rec.upstream);
                line.push_str(",\"client_ip\":");
                match rec.client_ip {
                    Some(ip) => {
                        let _ = write!(line, "\"{ip}\"");
                    }
                    None => line.push_str("null"),
                }
                if let Some(e) = rec.error {
                    line.push_str(",\"error\":");
                    json_str(&mut line, e);
                }
                line.push_str("}\n");
            }
            LogFormat::Pretty => {
                let _ = writeln!(
                    line,
                    "{now}  INFO access: {} {}{} {} {ms:.3}ms route={} upstream={} client={}{}",
                    rec.method,
                    rec.host.escape_debug(),
                    rec.path.escape_debug(),
                    rec.status,
                    rec.route,
                    rec.upstream,
                    rec.client_ip.map(|i| i.to_string()).unwrap_or_default(),
                    rec.error.map(|e| format!(" error={e}")).unwrap_or_default(),
                );
            }
        }
        let _ = writer.make_writer().write_all(line.as_bytes());
    });
}

/// Appends `s` as a JSON string literal.
fn json_str(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        super::json_str(&mut s, "a\"b\\c\nd\u{1}");
        assert_eq!(s, r#""a\"b\\c\u000ad\u0001""#);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v, "a\"b\\c\nd\u{1}");
    }
}
