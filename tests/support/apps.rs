//! Real application servers for `tests/app_servers.rs`: the Flask app of `tests/apps/` under
//! gunicorn or under werkzeug's development server, and the Express app under Express 5 or
//! Express 4, each a child process on a free port of 127.0.0.1 with its own temporary
//! directory. Killed (with everything it started, e.g. gunicorn's workers) when dropped.
//!
//! Every handler of those apps appends one JSON line to a log file ([`AppServer::runs`]): the
//! test reads what the app actually *executed*, not only the bytes it was sent. A request
//! carries an `X-Probe` header so that its runs can be told apart ([`AppServer::runs_of`]).
//!
//! Needs `scripts/setup` (the virtualenv `tests/apps/.venv` from `tests/apps/requirements.txt`
//! and `npm ci` in `tests/apps`).
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, DEADLINE};

/// How many times a start is retried with a fresh port when the port was taken meanwhile.
const ATTEMPTS: usize = 3;

/// The app servers the suite knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppKind {
    /// `tests/apps/flask_app.py` under gunicorn (gthread worker), its defaults otherwise:
    /// `forwarded_allow_ips` 127.0.0.1, so a `SCRIPT_NAME` header from a loopback peer (a proxy
    /// on the same machine) sets the script name.
    Gunicorn,
    /// `tests/apps/flask_app.py` under werkzeug's development server (`run_simple`, threaded).
    Werkzeug,
    /// `tests/apps/express_app.js` under Express 5.
    Express5,
    /// `tests/apps/express_app.js` under Express 4.
    Express4,
}

impl AppKind {
    pub fn name(self) -> &'static str {
        match self {
            AppKind::Gunicorn => "gunicorn",
            AppKind::Werkzeug => "werkzeug",
            AppKind::Express5 => "express5",
            AppKind::Express4 => "express4",
        }
    }
}

/// One handler run, as the app logged it.
#[derive(Debug, Clone)]
pub struct Run(pub serde_json::Value);

impl Run {
    fn field(&self, name: &str) -> &str {
        self.0.get(name).and_then(|v| v.as_str()).unwrap_or("")
    }

    /// `admin`, `public`, `files`, `root`.
    pub fn handler(&self) -> &str {
        self.field("handler")
    }

    /// The method the app ran the handler for (after any method override).
    pub fn method(&self) -> &str {
        self.field("method")
    }

    /// The path the app routed on (Flask: `PATH_INFO`; Express: the URL it got).
    pub fn path(&self) -> &str {
        self.field("path")
    }

    /// `SCRIPT_NAME` (Flask only).
    pub fn script_name(&self) -> &str {
        self.field("script_name")
    }

    /// `wsgi.url_scheme` (Flask only).
    pub fn scheme(&self) -> &str {
        self.field("scheme")
    }

    /// The request's `X-Probe` header.
    pub fn probe(&self) -> &str {
        self.field("probe")
    }
}

/// A running app server.
pub struct AppServer {
    pub kind: AppKind,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

/// `tests/apps`.
pub fn apps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps")
}

impl AppServer {
    /// Starts `kind` on a free port and waits until it listens; panics with its output if it
    /// does not come up.
    pub fn start(kind: AppKind) -> AppServer {
        AppServer::try_start(kind).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_start(kind: AppKind) -> Result<AppServer, String> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("app-{}-", kind.name()))
            .tempdir()
            .expect("temporary directory");
        let mut app = AppServer {
            kind,
            dir,
            port: 0,
            child: None,
        };
        for attempt in 1..=ATTEMPTS {
            app.port = free_port();
            let mut cmd = app.command();
            let out = std::fs::File::create(app.output_path()).expect("app output file");
            let err = out.try_clone().expect("app output file");
            cmd.current_dir(apps_dir())
                .env("APP_LOG", app.log_path())
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .env("PYTHONUNBUFFERED", "1")
                // gunicorn reads these from the environment: the app runs on gunicorn's own
                // defaults, not on whatever the developer's shell holds.
                .env_remove("SCRIPT_NAME")
                .env_remove("FORWARDED_ALLOW_IPS")
                .env_remove("GUNICORN_CMD_ARGS")
                .env_remove("NODE_OPTIONS")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                // Its own process group, so that drop ends gunicorn's workers too.
                .process_group(0);
            let program = format!("{:?}", cmd.get_program());
            let child = cmd.spawn().map_err(|e| {
                format!(
                    "running {program} for {}: {e} (run scripts/setup)",
                    kind.name()
                )
            })?;
            let child = app.child.insert(child);
            let Err(e) = wait_listening(child, app.port) else {
                return Ok(app);
            };
            app.stop();
            let output = app.output();
            if attempt < ATTEMPTS && output.contains("ddress already in use") {
                continue;
            }
            return Err(format!(
                "{} did not start: {e}\n--- output ---\n{}",
                kind.name(),
                tail(&output, 40)
            ));
        }
        unreachable!("the last attempt returns")
    }

    fn command(&self) -> Command {
        let dir = apps_dir();
        let venv_bin = dir.join(".venv/bin");
        let need = |p: PathBuf| {
            assert!(
                p.exists(),
                "{} is missing: run scripts/setup (it installs tests/apps/requirements.txt into \
                 tests/apps/.venv and runs npm ci in tests/apps)",
                p.display()
            );
            p
        };
        let port = self.port.to_string();
        match self.kind {
            AppKind::Gunicorn => {
                let mut c = Command::new(need(venv_bin.join("gunicorn")));
                c.args([
                    "--bind",
                    &format!("127.0.0.1:{port}"),
                    "--workers",
                    "1",
                    "--worker-class",
                    "gthread",
                    "--threads",
                    "4",
                    "--access-logfile",
                    "-",
                    "--error-logfile",
                    "-",
                    // Else it listens on $HOME/.gunicorn/gunicorn.ctl, shared by every instance.
                    "--no-control-socket",
                    "flask_app:app",
                ]);
                c
            }
            AppKind::Werkzeug => {
                let mut c = Command::new(need(venv_bin.join("python")));
                c.args(["flask_app.py", &port]);
                c
            }
            AppKind::Express5 | AppKind::Express4 => {
                need(dir.join("node_modules/express/package.json"));
                need(dir.join("node_modules/express4/package.json"));
                let node = std::env::var_os("NODE").unwrap_or_else(|| "node".into());
                let mut c = Command::new(node);
                c.args(["express_app.js", &port]).env(
                    "EXPRESS_MODULE",
                    if self.kind == AppKind::Express5 {
                        "express"
                    } else {
                        "express4"
                    },
                );
                c
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:port`: an upstream URL for Portcullis.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("runs.jsonl")
    }

    fn output_path(&self) -> PathBuf {
        self.dir.path().join("output.log")
    }

    /// What the server printed (stdout and stderr).
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.output_path()).unwrap_or_default()
    }

    /// Every handler run so far, in order.
    pub fn runs(&self) -> Vec<Run> {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                Run(serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!("{}: a log line is not JSON ({e}): {l}", self.kind.name())
                }))
            })
            .collect()
    }

    /// The handler runs of requests whose `X-Probe` was `probe`.
    pub fn runs_of(&self, probe: &str) -> Vec<Run> {
        self.runs()
            .into_iter()
            .filter(|r| r.probe() == probe)
            .collect()
    }

    /// Ends the whole process group (gunicorn stops its workers before it exits): TERM, then
    /// KILL if the server is still there after 3 s. The group is signalled only while its
    /// leader is not reaped, so its id cannot have been reused by then.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = format!("-{}", child.id());
        let signal = |sig: &str| {
            let _ = Command::new("kill")
                .args([sig, "--", &group])
                .stderr(Stdio::null())
                .status();
        };
        if let Ok(None) = child.try_wait() {
            signal("-TERM");
        }
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(None) if start.elapsed() < Duration::from_secs(3) => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    signal("-KILL");
                    let _ = child.wait();
                    break;
                }
                _ => break,
            }
        }
    }
}

impl Drop for AppServer {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- {} output (tail) ---\n{}",
                self.kind.name(),
                tail(&self.output(), 40)
            );
        }
    }
}

/// Waits until 127.0.0.1:`port` accepts connections, or `child` exits, or [`DEADLINE`].
fn wait_listening(child: &mut Child, port: u16) -> Result<(), String> {
    let start = Instant::now();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited early with {status}"));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if start.elapsed() > DEADLINE {
            return Err(format!("not listening on {addr} after {DEADLINE:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
