//! The integration-test harness: the real `portcullis` binary on free local ports, a real
//! upstream echo server ([`upstream`]), and a raw HTTP/1.1 client that sends exactly the bytes
//! it is given ([`raw_http`]).
//!
//! Every test builds its own [`Upstream`] and [`Portcullis`], each with its own ports and
//! temporary directory, so tests run in parallel without sharing anything.
#![allow(dead_code)]

pub mod apps;
pub mod front;
pub mod idp;
pub mod local;
mod raw_http;
mod raw_upstream;
mod upstream;

// Not every test file uses every part of the harness.
#[allow(unused_imports)]
pub use raw_http::*;
#[allow(unused_imports)]
pub use raw_upstream::*;
#[allow(unused_imports)]
pub use upstream::*;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// How long any single wait in the harness may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The first value of `name` (case-insensitive) in a list of header lines.
pub fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Every value of `name` (case-insensitive) in a list of header lines.
pub fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------------

/// A port on 127.0.0.1 that nothing listens on now, never handed out twice in this process.
///
/// Taken from 25000–31000, below the kernel's ephemeral range (32768–60999): a port handed out
/// here can then never be taken meanwhile by another test's `bind(0)` or outgoing connection
/// before the server it is meant for binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LO: u32 = 25000;
    const SPAN: u32 = 31000 - 25000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    // Processes running at the same time start at different places.
    let offset = std::process::id().wrapping_mul(7919) % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(LO + (offset + n) % SPAN).expect("the range is below 65536");
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
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

    /// Replaces the config file (placeholders substituted with this instance's) atomically: the
    /// text goes to a temporary file in the same directory, which is then renamed over the
    /// config. A reload triggered meanwhile reads the old file or the new one, never a
    /// truncated or half-written one (which `std::fs::write` in place would let it see).
    pub fn rewrite_config(&self, yaml: &str) {
        write_atomically(&self.config_path(), self.setup.render(yaml).as_bytes());
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

    /// Waits (up to 10 s) until `/readyz` answers 200: a configuration is serving, the session
    /// store answers and every provider has been discovered.
    pub async fn ready(&self) {
        let port = self.admin_port();
        eventually(Duration::from_secs(10), "readyz", || async move {
            let r = raw_get(port, "127.0.0.1", "/readyz", &[]).await;
            (r.status == 200).then_some(())
        })
        .await;
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let r = raw_get(self.admin_port(), "127.0.0.1", "/metrics", &[]).await;
        assert_eq!(r.status, 200, "GET /metrics");
        r.text()
    }

    /// The sum of every sample of `name` whose labels include all of `labels`; panics if
    /// `/metrics` does not know `name` (see [`metric_value`]).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics().await, name, labels)
    }

    /// Like [`Portcullis::metric`], `None` while `/metrics` does not list `name` yet (see
    /// [`try_metric_value`]): only for polling.
    pub async fn try_metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        try_metric_value(&self.metrics().await, name, labels)
    }

    /// Up means: the admin listener's `/healthz` answers 200 and every listener the config
    /// names accepts connections. A config without `@ADMIN@` runs without an admin listener
    /// (`admin: null`); then the plain listener answering HTTP (any status) stands in for it.
    fn wait_ready(&mut self, yaml: &str) -> Result<(), String> {
        let start = Instant::now();
        let with_admin = yaml.contains("@ADMIN@");
        let mut ports = Vec::new();
        if with_admin {
            ports.push(self.setup.admin);
        }
        if yaml.contains("@HTTP@") {
            ports.push(self.setup.http);
        }
        if yaml.contains("@TLS@") {
            ports.push(self.setup.tls);
        }
        if !with_admin && !yaml.contains("@HTTP@") {
            return Err("a config without @ADMIN@ needs an @HTTP@ listener to see it is up".into());
        }
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("exited early with {status}"));
                }
            }
            let healthy = if with_admin {
                blocking_get(self.setup.admin, "/healthz").is_some_and(|s| s == 200)
            } else {
                blocking_get(self.setup.http, "/").is_some()
            };
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
                return Err("admin /healthz (or without admin, the HTTP listener) and listeners not up in time".into());
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

/// Writes `contents` to `path` by writing a temporary file beside it (same directory, so the
/// same file system) and renaming it over `path`: readers see the whole old file or the whole
/// new one.
pub fn write_atomically(path: &Path, contents: &[u8]) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = path.parent().expect("the file has a directory");
    let name = path
        .file_name()
        .expect("the file has a name")
        .to_string_lossy();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file =
        std::fs::File::create(&tmp).unwrap_or_else(|e| panic!("creating {}: {e}", tmp.display()));
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
    drop(file);
    std::fs::rename(&tmp, path)
        .unwrap_or_else(|e| panic!("renaming {} to {}: {e}", tmp.display(), path.display()));
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
///
/// Panics if `text` does not know `name` at all (no sample and no `# HELP`/`# TYPE` line; a
/// histogram's `_bucket`, `_sum` and `_count` are known through the histogram's name): a
/// misspelt or renamed metric must fail loudly, not read as 0 and pass every `== 0` check. A
/// known metric with no sample for `labels` is 0.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    try_metric_value(text, name, labels).unwrap_or_else(|| {
        let mut names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        names.dedup();
        panic!(
            "no metric named {name} in /metrics (no sample, no # HELP or # TYPE line); \
             the metrics there: {names:?}"
        )
    })
}

/// Like [`metric_value`], `None` where that panics: for polling a counter that the product
/// lists only from its first sample on (the Prometheus client leaves out a labelled metric
/// that has no series yet). A poll that never sees it still fails, at its deadline.
pub fn try_metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut known = false;
    let mut total = 0.0;
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            let (kind, metric, rest) = (words.next(), words.next(), words.next());
            if !matches!(kind, Some("HELP" | "TYPE")) {
                continue;
            }
            let Some(metric) = metric else { continue };
            let summary = kind == Some("TYPE") && matches!(rest, Some("histogram" | "summary"));
            let part_of_it = summary
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(metric));
            known |= metric == name || part_of_it;
            continue;
        }
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
        known = true;
        let all = labels
            .iter()
            .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
        if all {
            total += value
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("metric {name}: sample {line:?}: {e}"));
        }
    }
    known.then_some(total)
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
// TLS material and HTTP clients
// ---------------------------------------------------------------------------------------------

/// A self-signed certificate for `localhost` and `127.0.0.1`: (certificate PEM, key PEM).
pub fn self_signed_localhost() -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".into()])
        .expect("generating a certificate");
    (ck.cert.pem(), ck.key_pair.serialize_pem())
}

/// Runs the independent JWT verifier (node `jose`, tests/idp/verify-jwt.mjs): keys from the
/// JWKS url alone, issuer, audience and `typ` checked. Its verdict, `{"ok": true, …}` or
/// `{"ok": false, "error": …}`; output that is not JSON (node or the script broken) fails the
/// test rather than reading as a refusal.
pub fn jose_verify(jwks: &str, iss: &str, aud: &str, typ: &str, token: &str) -> serde_json::Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/idp");
    let out = std::process::Command::new("node")
        .arg("verify-jwt.mjs")
        .args([jwks, iss, aud, typ, token])
        .current_dir(dir)
        .output()
        .expect("running node");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "verifier output: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
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
