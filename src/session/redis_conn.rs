//! Reaching Redis: one server by URL, a Cluster, or the master named by Sentinel.
//!
//! Commands go over one multiplexed connection per process (a `ConnectionManager`, or the
//! cluster connection), cloned into every task; both reconnect by themselves. Sentinel needs
//! more: the manager would keep reconnecting to the *old* master after a failover, so on a
//! connection error, timeout or `READONLY` the current master is dropped and the next command
//! asks Sentinel again. No connection is made at start-up, so the proxy starts (and reports
//! "not ready") while Redis is down, and recovers without a restart.

use super::store::StoreError;
use crate::secret::{redact_url as redact, REDACTED};
use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClient, ClusterConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use ::redis::{
    Client, Cmd, ErrorKind, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult,
    ServerErrorKind, TlsCertificates, TlsMode, Value,
};
use arc_swap::ArcSwapOption;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Where the sessions are (SPEC §3 `session.redis`). `Debug` shows no password.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum RedisTarget {
    /// `redis://[user:pass@]host:port/db` or `rediss://…` for TLS.
    Url(String),
    /// Seed nodes of a Redis Cluster.
    Cluster(Vec<String>),
    /// Sentinels watching `master`; `db`, `username`, `password` and `tls` are for the
    /// master itself (the sentinels' own credentials go in their URLs).
    Sentinel {
        /// The name the sentinels know the master by.
        master: String,
        /// The sentinels.
        urls: Vec<String>,
        /// The master's database number.
        db: i64,
        /// The master's user name (ACL).
        username: Option<String>,
        /// The master's password.
        password: Option<String>,
        /// Whether to speak TLS to the master.
        tls: bool,
    },
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisTarget::Url(u) => f.debug_tuple("Url").field(&redact(u)).finish(),
            RedisTarget::Cluster(urls) => f
                .debug_tuple("Cluster")
                .field(&urls.iter().map(|u| redact(u)).collect::<Vec<_>>())
                .finish(),
            RedisTarget::Sentinel {
                master,
                urls,
                db,
                username,
                password,
                tls,
            } => f
                .debug_struct("Sentinel")
                .field("master", master)
                .field("urls", &urls.iter().map(|u| redact(u)).collect::<Vec<_>>())
                .field("db", db)
                .field("username", username)
                .field("password", &password.as_ref().map(|_| REDACTED))
                .field("tls", tls)
                .finish(),
        }
    }
}

/// How to reach Redis and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RedisSettings {
    /// Which Redis.
    pub target: RedisTarget,
    /// Prepended to every key and to the invalidation channel (`session.redis.key_prefix`).
    pub key_prefix: String,
    /// Upper bound on any one store operation, connecting included.
    pub op_timeout: Duration,
    /// PEM certificates to trust for `rediss://` instead of the system's roots (a private CA).
    /// Not supported with Sentinel yet.
    pub ca_pem: Option<Vec<u8>>,
}

impl RedisSettings {
    /// Settings for `target` with the default timeouts and key prefix.
    pub fn new(target: RedisTarget) -> RedisSettings {
        RedisSettings {
            target,
            key_prefix: "portcullis:".into(),
            op_timeout: Duration::from_secs(1),
            ca_pem: None,
        }
    }
}

/// A connection to use for one operation. Cheap to clone; commands on clones share one
/// socket per node.
#[derive(Clone)]
pub(crate) enum Conn {
    Manager(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Manager(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Manager(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Manager(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The master Sentinel named last, and a manager connected to it.
pub(crate) struct Master {
    client: Client,
    manager: ConnectionManager,
}

// One per store, never in a collection: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Single {
        client: Client,
        manager: ConnectionManager,
    },
    Cluster {
        seeds: Vec<Client>,
        conn: ClusterConnection,
    },
    Sentinel(Box<SentinelLink>),
}

struct SentinelLink {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    current: ArcSwapOption<Master>,
    config: ConnectionManagerConfig,
}

/// The way to Redis shared by the store's operations and its subscriber task.
pub(crate) struct Link {
    backend: Backend,
}

/// Which master an operation used, so only that one is dropped when it fails.
pub(crate) type Used = Option<Arc<Master>>;

fn manager_config(op_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(op_timeout))
        .set_response_timeout(Some(op_timeout))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
}

fn certs(ca_pem: &[u8]) -> TlsCertificates {
    TlsCertificates {
        client_tls: None,
        root_cert: Some(ca_pem.to_vec()),
    }
}

fn settings_error(what: &str, e: RedisError) -> StoreError {
    StoreError::Settings(format!("{what}: {e}"))
}

impl Link {
    /// Checks the settings and prepares connections; connects to nothing yet.
    pub(crate) fn new(settings: &RedisSettings) -> Result<Link, StoreError> {
        let backend = match &settings.target {
            RedisTarget::Url(url) => {
                let client = match &settings.ca_pem {
                    None => Client::open(url.as_str()),
                    Some(ca) => Client::build_with_tls(url.as_str(), certs(ca)),
                }
                .map_err(|e| settings_error("invalid session.redis.url", e))?;
                let manager = ConnectionManager::new_lazy_with_config(
                    client.clone(),
                    manager_config(settings.op_timeout),
                )
                .map_err(|e| settings_error("session.redis.url", e))?;
                Backend::Single { client, manager }
            }
            RedisTarget::Cluster(urls) => {
                if urls.is_empty() {
                    return Err(StoreError::Settings(
                        "session.redis.cluster needs at least one URL".into(),
                    ));
                }
                let seeds = urls
                    .iter()
                    .map(|u| match &settings.ca_pem {
                        None => Client::open(u.as_str()),
                        Some(ca) => Client::build_with_tls(u.as_str(), certs(ca)),
                    })
                    .collect::<RedisResult<Vec<_>>>()
                    .map_err(|e| settings_error("invalid session.redis.cluster URL", e))?;
                let infos = urls
                    .iter()
                    .map(|u| u.as_str().into_connection_info())
                    .collect::<RedisResult<Vec<_>>>()
                    .map_err(|e| settings_error("invalid session.redis.cluster URL", e))?;
                let mut builder = ClusterClient::builder(infos)
                    .connection_timeout(settings.op_timeout)
                    .response_timeout(settings.op_timeout)
                    .retries(2);
                if let Some(ca) = &settings.ca_pem {
                    builder = builder.certs(certs(ca));
                }
                let client = builder
                    .build()
                    .map_err(|e| settings_error("session.redis.cluster", e))?;
                let conn = client.get_pending_async_connection_with_config(
                    ClusterConfig::new()
                        .set_connection_timeout(settings.op_timeout)
                        .set_response_timeout(settings.op_timeout),
                );
                Backend::Cluster { seeds, conn }
            }
            RedisTarget::Sentinel {
                master,
                urls,
                db,
                username,
                password,
                tls,
            } => {
                if urls.is_empty() {
                    return Err(StoreError::Settings(
                        "session.redis.sentinel needs at least one URL".into(),
                    ));
                }
                if settings.ca_pem.is_some() {
                    return Err(StoreError::Settings(
                        "a custom CA for Redis is not supported with Sentinel yet".into(),
                    ));
                }
                let mut info = ::redis::RedisConnectionInfo::default().set_db(*db);
                if let Some(u) = username {
                    info = info.set_username(u);
                }
                if let Some(p) = password {
                    info = info.set_password(p);
                }
                let mut node =
                    SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
                if *tls {
                    node = node.set_tls_mode(TlsMode::Secure);
                }
                let sentinel = SentinelClient::build(
                    urls.iter().map(String::as_str).collect(),
                    master.as_str(),
                    Some(node),
                    SentinelServerType::Master,
                )
                .map_err(|e| settings_error("session.redis.sentinel", e))?;
                Backend::Sentinel(Box::new(SentinelLink {
                    sentinel: tokio::sync::Mutex::new(sentinel),
                    current: ArcSwapOption::empty(),
                    config: manager_config(settings.op_timeout),
                }))
            }
        };
        Ok(Link { backend })
    }

    /// A connection for one operation (for Sentinel, to the current master, asking the
    /// sentinels first if there is none).
    pub(crate) async fn conn(&self) -> Result<(Conn, Used), RedisError> {
        match &self.backend {
            Backend::Single { manager, .. } => Ok((Conn::Manager(manager.clone()), None)),
            Backend::Cluster { conn, .. } => Ok((Conn::Cluster(conn.clone()), None)),
            Backend::Sentinel(link) => {
                let SentinelLink {
                    sentinel,
                    current,
                    config,
                } = &**link;
                if let Some(m) = current.load_full() {
                    return Ok((Conn::Manager(m.manager.clone()), Some(m)));
                }
                let mut sentinel = sentinel.lock().await;
                // Someone else may have resolved it while this task waited for the lock.
                if let Some(m) = current.load_full() {
                    return Ok((Conn::Manager(m.manager.clone()), Some(m)));
                }
                let client = sentinel.async_get_client().await?;
                let manager =
                    ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
                let master = Arc::new(Master { client, manager });
                current.store(Some(Arc::clone(&master)));
                tracing::info!(master = ?master.client.get_connection_info().addr(),
                    "session store: using the master named by Sentinel");
                Ok((Conn::Manager(master.manager.clone()), Some(master)))
            }
        }
    }

    /// Notes that an operation on `used` failed with `error` (`None`: it timed out). With
    /// Sentinel, anything that may mean a failover drops that master, so the next operation
    /// asks the sentinels again.
    pub(crate) fn failed(&self, used: &Used, error: Option<&RedisError>) {
        let (Backend::Sentinel(link), Some(used)) = (&self.backend, used) else {
            return;
        };
        let current = &link.current;
        if error.is_none_or(is_unavailable) {
            let prev = current.compare_and_swap(used, None::<Arc<Master>>);
            if prev.as_ref().is_some_and(|p| Arc::ptr_eq(p, used)) {
                tracing::warn!("session store: master failed; asking Sentinel again");
            }
        }
    }

    /// Clients on which to subscribe to invalidations, in order of preference. A Cluster
    /// broadcasts `PUBLISH` to every node, so any seed will do; with Sentinel, the master (if
    /// subscribing to it fails, pass the returned [`Used`] to [`failed`](Self::failed)).
    pub(crate) async fn subscriber_clients(&self) -> Result<(Vec<Client>, Used), RedisError> {
        match &self.backend {
            Backend::Single { client, .. } => Ok((vec![client.clone()], None)),
            Backend::Cluster { seeds, .. } => Ok((seeds.clone(), None)),
            Backend::Sentinel(_) => {
                let (_, used) = self.conn().await?;
                let clients = used.iter().map(|m| m.client.clone()).collect();
                Ok((clients, used))
            }
        }
    }
}

/// Whether an error means Redis could not be reached or is failing over (as opposed to
/// refusing a command).
pub(crate) fn is_unavailable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || matches!(
            e.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::MasterNameNotFoundBySentinel
                | ErrorKind::NoValidReplicasFoundBySentinel
                | ErrorKind::Server(
                    ServerErrorKind::ReadOnly
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::BusyLoading
                )
        )
}

/// A Redis error as a store error of operation `op`.
pub(crate) fn store_error(op: &'static str, e: RedisError) -> StoreError {
    if is_unavailable(&e) {
        StoreError::Unavailable {
            op,
            source: Box::new(e),
        }
    } else {
        StoreError::Refused {
            op,
            source: Box::new(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let t = RedisTarget::Url("redis://user:s3cret@host:6379/0".into());
        let shown = format!("{t:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("host:6379"), "{shown}");
        let t = RedisTarget::Cluster(vec!["redis://:pw0@c1:7000".into()]);
        let shown = format!("{t:#?}");
        assert!(!shown.contains("pw0"), "{shown}");
        let t = RedisTarget::Sentinel {
            master: "m".into(),
            urls: vec!["redis://:pw1@s1:26379".into()],
            db: 0,
            username: None,
            password: Some("pw2".into()),
            tls: false,
        };
        let mut settings = RedisSettings::new(t);
        settings.key_prefix = "pfx:".into();
        for shown in [format!("{settings:?}"), format!("{settings:#?}")] {
            assert!(!shown.contains("pw1") && !shown.contains("pw2"), "{shown}");
            assert!(shown.contains("pfx:"), "{shown}");
        }
    }

    #[test]
    fn bad_urls_are_settings_errors() {
        let bad = RedisSettings::new(RedisTarget::Url("http://x".into()));
        assert!(matches!(Link::new(&bad), Err(StoreError::Settings(_))));
        let none = RedisSettings::new(RedisTarget::Cluster(vec![]));
        assert!(matches!(Link::new(&none), Err(StoreError::Settings(_))));
    }
}
