//! Real front proxies for the forward-auth tests: nginx and Caddy, each an unprivileged child
//! process on a free port of 127.0.0.1, with every file it writes (pid, logs, temp files,
//! Caddy's storage) in its own temporary directory. Killed when dropped.
//!
//! Both take their site configuration as text with the placeholder `@PORT@` for the port the
//! harness picked: [`Nginx::start`] takes what goes inside nginx's `http { }` block (`upstream`
//! and `server` blocks, as in `examples/nginx/nginx.conf`), [`Caddy::start`] a Caddyfile
//! without a global options block (as in `examples/caddy/Caddyfile`).
//!
//! Needs `nginx` (Debian: nginx-light; `/usr/sbin` is searched too) and `caddy` installed, as
//! `scripts/setup` does.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, DEADLINE};

/// How many times a start is retried with a fresh port when the port was taken meanwhile.
const ATTEMPTS: usize = 3;

/// `name` on `PATH`, else in `/usr/sbin` or `/usr/local/sbin` (nginx lives in `/usr/sbin`,
/// which is not on every user's `PATH`).
fn find_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: run scripts/setup (apt-get install nginx-light caddy)"
            )
        })
}

/// A temporary directory readable by anyone, so that a process that drops privileges (an
/// nginx master started as root) can still reach the files in it.
fn open_tempdir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temporary directory");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod of the temporary directory");
    }
    dir
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

fn stop(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------------------------

/// A running nginx: one process (`master_process off`, so it never changes user and dies with
/// one signal), in the foreground, configured entirely inside its temporary directory.
pub struct Nginx {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    conf: String,
}

impl Nginx {
    /// Writes `nginx.conf` around `http_conf` (the contents of the `http { }` block, `@PORT@`
    /// standing for the port picked here) and starts nginx; panics with the error log if it
    /// does not come up.
    pub fn start(http_conf: &str) -> Nginx {
        Nginx::try_start(http_conf).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_start(http_conf: &str) -> Result<Nginx, String> {
        let bin = find_binary("nginx");
        let dir = open_tempdir("nginx-");
        for sub in ["tmp", "logs"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("nginx directories");
        }
        let mut n = Nginx {
            dir,
            port: 0,
            child: None,
            conf: String::new(),
        };
        for attempt in 1..=ATTEMPTS {
            n.port = free_port();
            n.conf = n.render(http_conf);
            let conf_path = n.dir.path().join("nginx.conf");
            std::fs::write(&conf_path, &n.conf).expect("writing nginx.conf");
            let _ = std::fs::remove_file(n.error_log_path());
            let out = std::fs::File::create(n.dir.path().join("logs/stdout.log"))
                .expect("nginx stdout log");
            let err = std::fs::File::create(n.dir.path().join("logs/stderr.log"))
                .expect("nginx stderr log");
            let child = Command::new(&bin)
                .arg("-p")
                .arg(n.dir.path())
                .arg("-e")
                .arg(n.error_log_path())
                .arg("-c")
                .arg(&conf_path)
                .current_dir(n.dir.path())
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("running {}: {e}", bin.display()))?;
            let child = n.child.insert(child);
            let Err(e) = wait_listening(child, n.port) else {
                return Ok(n);
            };
            stop(&mut n.child);
            let log = n.error_log();
            if attempt < ATTEMPTS && log.contains("Address already in use") {
                continue;
            }
            return Err(format!(
                "nginx did not start: {e}\n--- nginx.conf ---\n{}\n--- error log ---\n{}\n--- stderr ---\n{}",
                n.conf,
                log,
                read(&n.dir.path().join("logs/stderr.log"))
            ));
        }
        unreachable!("the loop returns")
    }

    fn render(&self, http_conf: &str) -> String {
        let d = self.dir.path().display();
        let body = http_conf.replace("@PORT@", &self.port.to_string());
        let body = body.trim_end();
        format!(
            "# Written by tests/support/front.rs\n\
             daemon off;\n\
             master_process off;\n\
             worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/logs/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             access_log {d}/logs/access.log;\n\
             client_body_temp_path {d}/tmp/client_body;\n\
             proxy_temp_path {d}/tmp/proxy;\n\
             fastcgi_temp_path {d}/tmp/fastcgi;\n\
             uwsgi_temp_path {d}/tmp/uwsgi;\n\
             scgi_temp_path {d}/tmp/scgi;\n\
             {body}\n\
             }}\n"
        )
    }

    fn error_log_path(&self) -> PathBuf {
        self.dir.path().join("logs/error.log")
    }

    /// The port nginx listens on (what `@PORT@` became).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`, e.g. for [`super::idp::Browser::with_hosts`].
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The whole `nginx.conf` as written.
    pub fn conf(&self) -> &str {
        &self.conf
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The error log so far.
    pub fn error_log(&self) -> String {
        read(&self.error_log_path())
    }

    /// The access log so far.
    pub fn access_log(&self) -> String {
        read(&self.dir.path().join("logs/access.log"))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop(&mut self.child);
        if std::thread::panicking() {
            eprintln!(
                "--- nginx error log (tail) ---\n{}\n--- nginx access log (tail) ---\n{}",
                tail(&self.error_log(), 40),
                tail(&self.access_log(), 20)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Caddy
// ---------------------------------------------------------------------------------------------

/// A running Caddy (`caddy run`): admin endpoint off, automatic HTTPS off, its storage and
/// config autosave in the temporary directory (`HOME`, `XDG_DATA_HOME`, `XDG_CONFIG_HOME`).
pub struct Caddy {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    caddyfile: String,
}

impl Caddy {
    /// Writes a Caddyfile of the harness' global options followed by `site` (site blocks,
    /// `@PORT@` standing for the port picked here; no global options block of its own) and
    /// starts Caddy; panics with its log if it does not come up.
    pub fn start(site: &str) -> Caddy {
        Caddy::try_start(site).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_start(site: &str) -> Result<Caddy, String> {
        let bin = find_binary("caddy");
        let dir = open_tempdir("caddy-");
        for sub in ["data", "config", "logs"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("caddy directories");
        }
        let mut c = Caddy {
            dir,
            port: 0,
            child: None,
            caddyfile: String::new(),
        };
        for attempt in 1..=ATTEMPTS {
            c.port = free_port();
            c.caddyfile = c.render(site);
            let path = c.dir.path().join("Caddyfile");
            std::fs::write(&path, &c.caddyfile).expect("writing the Caddyfile");
            let out = std::fs::File::create(c.dir.path().join("logs/stdout.log"))
                .expect("caddy stdout log");
            let err = std::fs::File::create(c.dir.path().join("logs/stderr.log"))
                .expect("caddy stderr log");
            let child = Command::new(&bin)
                .arg("run")
                .arg("--config")
                .arg(&path)
                .arg("--adapter")
                .arg("caddyfile")
                .current_dir(c.dir.path())
                .env("HOME", c.dir.path())
                .env("XDG_DATA_HOME", c.dir.path().join("data"))
                .env("XDG_CONFIG_HOME", c.dir.path().join("config"))
                .env_remove("CADDYPATH")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("running {}: {e}", bin.display()))?;
            let child = c.child.insert(child);
            let Err(e) = wait_listening(child, c.port) else {
                return Ok(c);
            };
            stop(&mut c.child);
            let log = c.log();
            if attempt < ATTEMPTS && log.contains("address already in use") {
                continue;
            }
            return Err(format!(
                "caddy did not start: {e}\n--- Caddyfile ---\n{}\n--- log ---\n{log}",
                c.caddyfile
            ));
        }
        unreachable!("the loop returns")
    }

    fn render(&self, site: &str) -> String {
        let d = self.dir.path().display();
        let body = site.replace("@PORT@", &self.port.to_string());
        let body = body.trim_end();
        format!(
            "# Written by tests/support/front.rs\n\
             {{\n\
             \tadmin off\n\
             \tauto_https off\n\
             \tstorage file_system {{\n\
             \t\troot {d}/data\n\
             \t}}\n\
             \tdefault_bind 127.0.0.1\n\
             \tlog {{\n\
             \t\toutput file {d}/logs/caddy.log\n\
             \t\tlevel DEBUG\n\
             \t}}\n\
             }}\n\
             \n\
             {body}\n"
        )
    }

    /// The port Caddy listens on (what `@PORT@` became).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`, e.g. for [`super::idp::Browser::with_hosts`].
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The whole Caddyfile as written.
    pub fn caddyfile(&self) -> &str {
        &self.caddyfile
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Caddy's log so far (its own log file, then anything on stdout and stderr).
    pub fn log(&self) -> String {
        let d = self.dir.path();
        format!(
            "{}{}{}",
            read(&d.join("logs/caddy.log")),
            read(&d.join("logs/stdout.log")),
            read(&d.join("logs/stderr.log"))
        )
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        stop(&mut self.child);
        if std::thread::panicking() {
            eprintln!("--- caddy log (tail) ---\n{}", tail(&self.log(), 40));
        }
    }
}
