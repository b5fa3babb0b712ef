//! Builds and runs the Pingora server from a loaded [`Runtime`]: the proxy service on the plain
//! and TLS listeners, the admin service, and the reload watcher.

use crate::admin::AdminApp;
use crate::config::watch::Reloader;
use crate::gateway::{Gateway, HeadDeadline};
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::listening::Service;
use std::path::PathBuf;
use std::sync::Arc;

/// Starts serving `runtime` (loaded from `path`) and never returns.
pub fn run(runtime: Runtime, path: PathBuf) -> anyhow::Result<()> {
    let conf = ServerConf {
        threads: runtime.threads,
        // SIGTERM: stop accepting at once, then give in-flight requests up to 10 s.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(10),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let listeners = runtime.listeners.clone();
    let threads = runtime.threads;
    let current = Arc::new(ArcSwap::from_pointee(runtime));

    let gateway = pingora::proxy::http_proxy(
        &server.configuration,
        Gateway {
            runtime: Arc::clone(&current),
        },
    );
    let mut proxy = Service::new(
        "portcullis".into(),
        HeadDeadline {
            inner: Arc::new(gateway),
            runtime: Arc::clone(&current),
        },
    );
    proxy.threads = Some(threads);
    for addr in &listeners.plain {
        proxy.add_tcp(&addr.to_string());
    }
    if let Some(tls) = &listeners.tls {
        let cert = tls.cert_file.to_string_lossy();
        let key = tls.key_file.to_string_lossy();
        for addr in &tls.addrs {
            proxy
                .add_tls(&addr.to_string(), &cert, &key)
                .map_err(|e| anyhow::anyhow!("TLS listener {addr}: {e}"))?;
        }
    }
    server.add_service(proxy);

    if let Some(addr) = listeners.admin {
        let mut admin = Service::new(
            "portcullis-admin".into(),
            AdminApp {
                runtime: Arc::clone(&current),
            },
        );
        admin.threads = Some(1);
        admin.add_tcp(&addr.to_string());
        server.add_service(admin);
    }

    Reloader::new(path, Arc::clone(&current))
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting the config watcher: {e}"))?;

    tracing::info!(
        listen = ?listeners.plain,
        tls = ?listeners.tls.as_ref().map(|t| &t.addrs),
        admin = ?listeners.admin,
        threads,
        "portcullis starting"
    );
    server.run_forever()
}
