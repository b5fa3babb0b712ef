//! The integration-test harness: the real `portcullis` binary on free local ports, a real
//! upstream echo server, and a raw HTTP/1.1 client that sends exactly the bytes it is given.
//!
//! Every test builds its own [`Upstream`] and [`Portcullis`], each with its own ports and
//! temporary directory, so tests run in parallel without sharing anything.
#![allow(dead_code)]

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// How long any single wait in the harness may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------------

/// A port on 127.0.0.1 that nothing listens on right now, never handed out twice in this
/// process (the kernel may give the same ephemeral port to two tests in a row).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port");
        let port = listener.local_addr().expect("local address").port();
        drop(listener);
        if GIVEN.lock().expect("port registry").insert(port) {
            return port;
        }
    }
}

/// A port that refuses connections: bound once, then released, never listened on.
pub fn closed_port() -> u16 {
    free_port()
}

// ---------------------------------------------------------------------------------------------
// Upstream echo server
// ---------------------------------------------------------------------------------------------

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Echoed {
    pub method: String,
    /// Path and query exactly as received.
    pub uri: String,
    /// Header names lower-case, in the order received, one entry per field line.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Echoed {
    /// The first value of `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name` (case-insensitive).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or(&self.uri)
    }
}

#[derive(Default)]
struct UpstreamState {
    received: Mutex<Vec<Echoed>>,
}

impl UpstreamState {
    fn record(&self, e: Echoed) {
        self.received.lock().expect("upstream log").push(e);
    }
}

/// A real HTTP server on its own thread and runtime, so it keeps answering whatever the test
/// thread does.
///
/// - any path: `200` with JSON `{method, uri, headers, body}` describing the request received.
///   Query parameters steer the answer: `set=Name:Value` (repeatable) adds a response header,
///   `status=CODE` sets the status, `sleep_ms=N` waits before answering.
/// - `/ws` and `/blocked/ws`: WebSocket echo (text and binary frames come back unchanged).
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<UpstreamState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    pub fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the upstream");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("upstream address");
        let state = Arc::new(UpstreamState::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .route("/ws", get(ws_handler))
            .route("/blocked/ws", get(ws_handler))
            .fallback(echo_handler)
            .with_state(Arc::clone(&state));
        let thread = std::thread::Builder::new()
            .name(format!("upstream-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("upstream runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = rx.await;
                        })
                        .await;
                });
                // Open WebSocket tasks must not keep the thread alive.
                rt.shutdown_timeout(Duration::from_millis(100));
            })
            .expect("upstream thread");
        Upstream {
            addr,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, for a route's `upstream:`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request received so far, oldest first.
    pub fn received(&self) -> Vec<Echoed> {
        self.state.received.lock().expect("upstream log").clone()
    }

    pub fn count(&self) -> usize {
        self.state.received.lock().expect("upstream log").len()
    }

    /// The most recent request; panics if none arrived.
    pub fn last(&self) -> Echoed {
        self.received()
            .pop()
            .expect("the upstream received no request")
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // Not joined: a connection Portcullis keeps alive would hold graceful shutdown open.
        drop(self.thread.take());
    }
}

fn describe(parts: &http::request::Parts, body: Vec<u8>) -> Echoed {
    Echoed {
        method: parts.method.to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.to_string(), |pq| pq.as_str().to_string()),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    }
}

async fn echo_handler(State(state): State<Arc<UpstreamState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    let seen = describe(&parts, body);
    state.record(seen.clone());

    let mut status = http::StatusCode::OK;
    let mut extra = Vec::new();
    let mut sleep = None;
    if let Some(q) = parts.uri.query() {
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            match k.as_ref() {
                "set" => {
                    if let Some((n, val)) = v.split_once(':') {
                        extra.push((n.trim().to_string(), val.trim().to_string()));
                    }
                }
                "status" => {
                    if let Some(s) = v
                        .parse::<u16>()
                        .ok()
                        .and_then(|c| http::StatusCode::from_u16(c).ok())
                    {
                        status = s;
                    }
                }
                "sleep_ms" => sleep = v.parse::<u64>().ok().map(Duration::from_millis),
                _ => {}
            }
        }
    }
    if let Some(d) = sleep {
        tokio::time::sleep(d).await;
    }

    let mut headers = serde_json::Map::new();
    for (n, v) in &seen.headers {
        match headers.get_mut(n) {
            Some(serde_json::Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(v);
            }
            _ => {
                headers.insert(n.clone(), v.clone().into());
            }
        }
    }
    let doc = serde_json::json!({
        "method": seen.method,
        "uri": seen.uri,
        "headers": headers,
        "body": String::from_utf8_lossy(&seen.body),
    });
    let mut resp = (status, axum::Json(doc)).into_response();
    for (n, v) in extra {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(n.as_bytes()),
            http::HeaderValue::from_str(&v),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}

async fn ws_handler(
    State(state): State<Arc<UpstreamState>>,
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    state.record(Echoed {
        method: method.to_string(),
        uri: uri
            .path_and_query()
            .map_or_else(|| uri.to_string(), |pq| pq.as_str().to_string()),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: Vec::new(),
    });
    ws.on_upgrade(ws_echo)
}

async fn ws_echo(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        let reply = match msg {
            Message::Text(t) => Message::Text(t),
            Message::Binary(b) => Message::Binary(b),
            Message::Close(_) => break,
            _ => continue,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Portcullis process
// ---------------------------------------------------------------------------------------------

/// A temporary directory and a set of ports for one Portcullis instance, before it starts.
///
/// Config text may use placeholders: `@HTTP@`, `@TLS@`, `@ADMIN@` (ports) and `@DIR@` (the
/// directory, where the config file and any files the test writes live).
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub http: u16,
    pub tls: u16,
    pub admin: u16,
    env: Vec<(String, String)>,
}

impl Default for Setup {
    fn default() -> Self {
        Self::new()
    }
}

impl Setup {
    pub fn new() -> Setup {
        Setup {
            dir: tempfile::tempdir().expect("temporary directory"),
            http: free_port(),
            tls: free_port(),
            admin: free_port(),
            env: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to `name` inside the directory and returns the full path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("creating directories");
        }
        std::fs::write(&path, contents).expect("writing a test file");
        path
    }

    /// Sets an environment variable for the child process.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Substitutes the placeholders in `yaml`.
    pub fn render(&self, yaml: &str) -> String {
        yaml.replace("@HTTP@", &self.http.to_string())
            .replace("@TLS@", &self.tls.to_string())
            .replace("@ADMIN@", &self.admin.to_string())
            .replace("@DIR@", &self.dir.path().to_string_lossy())
    }

    /// Writes the config and starts Portcullis; panics with its logs if it does not come up.
    pub fn start(self, yaml: &str) -> Portcullis {
        match self.try_start(yaml) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`Setup::start`], returning the failure (with logs) instead of panicking. A port
    /// taken meanwhile by someone else is retried with fresh ports.
    pub fn try_start(self, yaml: &str) -> Result<Portcullis, String> {
        let mut p = Portcullis {
            setup: self,
            child: None,
            yaml: yaml.to_string(),
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            p.child = Some(spawn(&p.setup, yaml).map_err(|e| format!("spawning {BIN}: {e}"))?);
            let Err(e) = p.wait_ready(yaml) else {
                return Ok(p);
            };
            p.kill();
            let logs = format!("{}\n{}", p.stdout(), p.stderr());
            if attempt < 3 && logs.contains("ddress already in use") {
                p.setup.http = free_port();
                p.setup.tls = free_port();
                p.setup.admin = free_port();
                continue;
            }
            return Err(format!(
                "portcullis did not start: {e}\n--- config ---\n{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                p.setup.render(yaml),
                p.stdout(),
                p.stderr()
            ));
        }
    }
}

fn spawn(setup: &Setup, yaml: &str) -> std::io::Result<Child> {
    let config = setup.dir.path().join("portcullis.yaml");
    std::fs::write(&config, setup.render(yaml))?;
    // Logs go to a subdirectory: the config watcher looks only at the config's own directory.
    std::fs::create_dir_all(setup.dir.path().join("logs"))?;
    let stdout = std::fs::File::create(setup.dir.path().join("logs/stdout.log"))?;
    let stderr = std::fs::File::create(setup.dir.path().join("logs/stderr.log"))?;
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .current_dir(setup.dir.path())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .env_remove("PORTCULLIS_CONFIG")
        .env_remove("RUST_LOG");
    for (k, v) in &setup.env {
        cmd.env(k, v);
    }
    cmd.spawn()
}

/// A running Portcullis; killed when dropped.
pub struct Portcullis {
    pub setup: Setup,
    child: Option<Child>,
    yaml: String,
}

/// The usual head of a test config: one plain listener, the admin listener, one thread.
pub const SERVER: &str = "\
server:
  listen: [\"127.0.0.1:@HTTP@\"]
  threads: 1
admin:
  listen: 127.0.0.1:@ADMIN@
";

impl Portcullis {
    /// Starts Portcullis with `yaml` (placeholders as in [`Setup`]) in a fresh directory.
    pub fn start(yaml: &str) -> Portcullis {
        Setup::new().start(yaml)
    }

    /// Starts Portcullis with [`SERVER`] followed by `rest` (routes, headers ...).
    pub fn with_routes(rest: &str) -> Portcullis {
        Portcullis::start(&format!("{SERVER}{rest}"))
    }

    pub fn http_port(&self) -> u16 {
        self.setup.http
    }

    pub fn tls_port(&self) -> u16 {
        self.setup.tls
    }

    pub fn admin_port(&self) -> u16 {
        self.setup.admin
    }

    pub fn dir(&self) -> &Path {
        self.setup.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.setup.path().join("portcullis.yaml")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.setup.path().join("logs/stdout.log")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.setup.path().join("logs/stderr.log")).unwrap_or_default()
    }

    /// Waits until stdout holds a line for which `pred` is true, and returns that line.
    pub async fn wait_for_stdout_line(&self, pred: impl Fn(&str) -> bool) -> Option<String> {
        let start = Instant::now();
        loop {
            if let Some(l) = self.stdout().lines().find(|l| pred(l)) {
                return Some(l.to_string());
            }
            if start.elapsed() > DEADLINE {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Replaces the config file in place (placeholders substituted with this instance's).
    pub fn rewrite_config(&self, yaml: &str) {
        std::fs::write(self.config_path(), self.setup.render(yaml)).expect("rewriting config");
    }

    /// Sends SIGHUP to the process.
    pub fn sighup(&self) {
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(self.pid().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -HUP failed");
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let r = raw_get(self.admin_port(), "127.0.0.1", "/metrics", &[]).await;
        assert_eq!(r.status, 200, "GET /metrics");
        r.text()
    }

    /// The sum of every sample of `name` whose labels include all of `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics().await, name, labels)
    }

    fn wait_ready(&mut self, yaml: &str) -> Result<(), String> {
        let start = Instant::now();
        let mut ports = vec![self.setup.admin];
        if yaml.contains("@HTTP@") {
            ports.push(self.setup.http);
        }
        if yaml.contains("@TLS@") {
            ports.push(self.setup.tls);
        }
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("exited early with {status}"));
                }
            }
            let healthy = blocking_get(self.setup.admin, "/healthz").is_some_and(|s| s == 200);
            if healthy
                && ports.iter().all(|p| {
                    TcpStream::connect_timeout(
                        &SocketAddr::from(([127, 0, 0, 1], *p)),
                        Duration::from_millis(200),
                    )
                    .is_ok()
                })
            {
                return Ok(());
            }
            if start.elapsed() > DEADLINE {
                return Err("admin /healthz and listeners not up in time".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The yaml this instance was started with (placeholders not substituted).
    pub fn yaml(&self) -> &str {
        &self.yaml
    }
}

impl Drop for Portcullis {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let tail = |s: String| {
                let lines: Vec<&str> = s.lines().collect();
                lines[lines.len().saturating_sub(40)..].join("\n")
            };
            eprintln!(
                "--- portcullis stdout (tail) ---\n{}\n--- portcullis stderr (tail) ---\n{}",
                tail(self.stdout()),
                tail(self.stderr())
            );
        }
    }
}

/// Status of a plain `GET path` on 127.0.0.1:port, or `None` if nothing answered.
fn blocking_get(port: u16, path: &str) -> Option<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.split(' ').nth(1)?.parse().ok()
}

/// The sum of every sample of `name` in Prometheus `text` whose labels include `labels`.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut total = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let all = labels
            .iter()
            .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
        if all {
            total += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    total
}

/// Polls `check` every 25 ms until it returns `Some`, or panics with `what` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > within {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

/// A response read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Header names as sent, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }
}

/// Sends `request` verbatim to 127.0.0.1:port and reads one response. Fails if nothing
/// complete arrives within 5 s (a hang is a failure, not a wait).
pub async fn raw(port: u16, request: &[u8]) -> std::io::Result<RawResponse> {
    let head_request = request.starts_with(b"HEAD ");
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        // A server may answer and close before reading everything (oversized requests).
        let write_err = s.write_all(request).await.err();
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(r) = parse_response(&buf, head_request, false) {
                return Ok(r);
            }
            match s.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if buf.is_empty() => return Err(write_err.unwrap_or(e)),
                Err(_) => break,
            }
        }
        parse_response(&buf, head_request, true).ok_or_else(|| {
            write_err.unwrap_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed without a complete response ({} bytes: {:?})",
                        buf.len(),
                        String::from_utf8_lossy(&buf[..buf.len().min(200)])
                    ),
                )
            })
        })
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no response in 5 s"))?
}

/// Sends each request on one keep-alive connection, reading one response after each; fails
/// if the connection closes early or an answer takes more than 5 s.
pub async fn raw_keepalive(port: u16, requests: &[&[u8]]) -> std::io::Result<Vec<RawResponse>> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let mut out = Vec::new();
        for req in requests {
            s.write_all(req).await?;
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            let head = req.starts_with(b"HEAD ");
            loop {
                if let Some(r) = parse_response(&buf, head, false) {
                    out.push(r);
                    break;
                }
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("connection closed after {} response(s)", out.len()),
                    ));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
        Ok(out)
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no response in 5 s"))?
}

/// `GET target` with `Host: host`, the given extra header lines and `Connection: close`;
/// panics on an I/O failure.
pub async fn raw_get(port: u16, host: &str, target: &str, headers: &[(&str, &str)]) -> RawResponse {
    raw_request(port, "GET", host, target, headers, b"").await
}

/// Any method, with an optional body (`Content-Length` added when non-empty).
pub async fn raw_request(
    port: u16,
    method: &str,
    host: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("Connection: close\r\n\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    raw(port, &bytes)
        .await
        .unwrap_or_else(|e| panic!("{method} {target} (Host: {host}): {e}"))
}

/// Parses one complete response from `buf`; `eof` means no more bytes will come.
fn parse_response(buf: &[u8], head_request: bool, eof: bool) -> Option<RawResponse> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &buf[end + 4..];
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let resp = |body: Vec<u8>| RawResponse {
        status,
        headers: headers.clone(),
        body,
    };
    if (100..200).contains(&status) && status != 101 {
        // An interim response: parse what follows it.
        return parse_response(rest, head_request, eof);
    }
    if head_request || status == 204 || status == 304 || status == 101 {
        return Some(resp(Vec::new()));
    }
    if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return dechunk(rest).map(resp);
    }
    if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        return (rest.len() >= len).then(|| resp(rest[..len].to_vec()));
    }
    eof.then(|| resp(rest.to_vec()))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if data.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

// ---------------------------------------------------------------------------------------------
// TLS material and HTTP clients
// ---------------------------------------------------------------------------------------------

/// A self-signed certificate for `localhost` and `127.0.0.1`: (certificate PEM, key PEM).
pub fn self_signed_localhost() -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".into()])
        .expect("generating a certificate");
    (ck.cert.pem(), ck.key_pair.serialize_pem())
}

/// A reqwest client that talks only to 127.0.0.1 (no proxies from the environment) and
/// follows no redirects.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client")
}

/// Like [`http_client`], trusting `cert_pem` and resolving `localhost` to 127.0.0.1:port.
pub fn https_client(cert_pem: &str, port: u16) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("certificate PEM"),
        )
        .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], port)))
        .build()
        .expect("HTTPS client")
}

/// Runs the binary with `args` (no `PORTCULLIS_CONFIG` inherited) and returns
/// (exit code, stdout, stderr), failing if it runs longer than [`DEADLINE`].
pub fn run_cli(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("PORTCULLIS_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawning portcullis");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(DEADLINE) {
        Ok(out) => out.expect("collecting output"),
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("portcullis {args:?} still running after {DEADLINE:?}");
        }
    };
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
