//! Real Redis for tests: `redis-server` processes on free local ports, each in its own
//! temporary directory, killed when dropped. Also a Sentinel setup (master, replica, sentinel)
//! and a three-master Cluster. Nothing here talks to a shared Redis.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The `redis-server` to run: `$REDIS_SERVER` if set, otherwise the first on `PATH`.
pub fn redis_server() -> PathBuf {
    program("redis-server", "REDIS_SERVER", "redis-server")
}

/// The `redis-cli` to run (Cluster setup): `$REDIS_CLI` if set, otherwise the first on `PATH`.
pub fn redis_cli() -> PathBuf {
    program("redis-cli", "REDIS_CLI", "redis-tools")
}

/// `name` from the environment variable `var` (a path, or a bare name looked up on `PATH`),
/// or else from `PATH`; panics saying how to get it when it is nowhere.
fn program(name: &str, var: &str, debian_package: &str) -> PathBuf {
    let given = std::env::var_os(var).filter(|v| !v.is_empty());
    let wanted = given.clone().unwrap_or_else(|| name.into());
    let wanted = Path::new(&wanted);
    let found = if wanted.components().count() > 1 {
        is_executable(wanted).then(|| wanted.to_path_buf())
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(wanted))
                .find(|p| is_executable(p))
        })
    };
    found.unwrap_or_else(|| match given {
        Some(v) => panic!(
            "{var}={} is not an executable file (nor a program on PATH): point {var} at {name}, \
             or unset it to look for {name} on PATH",
            v.to_string_lossy()
        ),
        None => panic!(
            "{name} not found on PATH ({}): the Redis tests start their own {name}; install it \
             (Debian: apt-get install {debian_package}, or run scripts/setup) or set {var} to \
             its path",
            std::env::var("PATH").unwrap_or_default()
        ),
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A port on 127.0.0.1 that nothing listens on now, never handed out twice in this process.
///
/// Taken from 10000–14000, below the kernel's ephemeral range (32768–60999): a port handed out
/// here can then never be taken meanwhile by another test's `bind(0)` or outgoing connection
/// before the server it is meant for binds it.
/// Cluster nodes also listen on port + 10000 (20000–24000, also below that range and apart
/// from the harness's own 25000–31000): both must be free.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LO: u32 = 10000;
    const SPAN: u32 = 14000 - 10000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    // Processes running at the same time start at different places.
    let offset = std::process::id().wrapping_mul(7919) % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(LO + (offset + n) % SPAN).expect("the range is below 65536");
        if TcpListener::bind(("127.0.0.1", port)).is_err()
            || TcpListener::bind(("127.0.0.1", port + 10_000)).is_err()
        {
            continue;
        }
        if GIVEN.lock().expect("port registry").insert(port) {
            return port;
        }
    }
}

/// One `redis-server`. Restartable on the same port and directory.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// A throw-away server: no RDB snapshots, no AOF.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// A server that keeps its data across restarts (AOF, fsync always).
    pub fn start_durable() -> RedisServer {
        RedisServer::start_with(&[
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
    }

    pub fn start_with(extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let mut server = RedisServer {
            port: free_port(),
            dir,
            args: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        server.spawn();
        server
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(redis_server());
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(cmd.spawn().expect("starting redis-server"));
        wait_for_ping(self.port, Duration::from_secs(10));
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (SIGKILL: nothing is flushed beyond what fsync already wrote).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// A plain synchronous connection for inspecting what the store wrote.
    pub fn raw(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("client")
            .get_connection()
            .expect("raw connection to the test redis")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until `PING` on `port` answers.
pub fn wait_for_ping(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let ok = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok();
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "redis on port {port} never answered PING"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A master, one replica and one sentinel watching them as `mymaster`.
pub struct SentinelSetup {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinel: Child,
    pub sentinel_port: u16,
    sentinel_dir: tempfile::TempDir,
}

pub const SENTINEL_MASTER: &str = "mymaster";

impl SentinelSetup {
    pub fn start() -> SentinelSetup {
        let master = RedisServer::start();
        let replica = RedisServer::start_with(&[
            "--save",
            "",
            "--appendonly",
            "no",
            "--replicaof",
            "127.0.0.1",
            &master.port.to_string(),
        ]);
        let sentinel_dir = tempfile::tempdir().expect("temp dir for sentinel");
        let sentinel_port = free_port();
        let conf = sentinel_dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {dir}\nlogfile {dir}/sentinel.log\n\
                 sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {m} 1\n\
                 sentinel down-after-milliseconds {SENTINEL_MASTER} 500\n\
                 sentinel failover-timeout {SENTINEL_MASTER} 3000\n\
                 sentinel parallel-syncs {SENTINEL_MASTER} 1\n",
                dir = sentinel_dir.path().display(),
                m = master.port,
            ),
        )
        .expect("writing sentinel.conf");
        let sentinel = Command::new(redis_server())
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis sentinel");
        wait_for_ping(sentinel_port, Duration::from_secs(10));
        let setup = SentinelSetup {
            master,
            replica,
            sentinel,
            sentinel_port,
            sentinel_dir,
        };
        // Wait until the replica is in sync and the sentinel knows about it.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mut c = setup.replica.raw();
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut c)
                .unwrap_or_default();
            let replicas = setup.sentinel_replicas();
            if info.contains("master_link_status:up") && replicas > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "replica never synced: {info}");
            std::thread::sleep(Duration::from_millis(50));
        }
        setup
    }

    pub fn sentinel_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.sentinel_port)
    }

    fn sentinel_replicas(&self) -> usize {
        let Ok(mut c) = redis::Client::open(self.sentinel_url()).and_then(|c| c.get_connection())
        else {
            return 0;
        };
        redis::cmd("SENTINEL")
            .arg("REPLICAS")
            .arg(SENTINEL_MASTER)
            .query::<Vec<redis::Value>>(&mut c)
            .map(|v| v.len())
            .unwrap_or(0)
    }

    /// The master's port as Sentinel currently reports it.
    pub fn reported_master_port(&self) -> Option<u16> {
        let mut c = redis::Client::open(self.sentinel_url())
            .ok()?
            .get_connection()
            .ok()?;
        let addr: Vec<String> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(SENTINEL_MASTER)
            .query(&mut c)
            .ok()?;
        addr.get(1)?.parse().ok()
    }

    pub fn sentinel_log(&self) -> String {
        std::fs::read_to_string(self.sentinel_dir.path().join("sentinel.log")).unwrap_or_default()
    }
}

impl Drop for SentinelSetup {
    fn drop(&mut self) {
        let _ = self.sentinel.kill();
        let _ = self.sentinel.wait();
    }
}

/// Three cluster-enabled masters joined into one Cluster with `redis-cli --cluster create`.
pub struct ClusterSetup {
    pub nodes: Vec<RedisServer>,
}

impl ClusterSetup {
    pub fn start() -> ClusterSetup {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(&[
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new(redis_cli())
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .arg("--cluster-replicas")
            .arg("0")
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .output()
            .expect("running redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        for node in &nodes {
            loop {
                let mut c = node.raw();
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut c)
                    .unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster never became ok: {info}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        ClusterSetup { nodes }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}
