//! The smallest Pingora pass-through proxy, as the baseline for `bench/run.sh`.
//!
//! Every request goes to one fixed upstream, unchanged. The Pingora settings are the ones
//! Portcullis uses (see `src/server.rs`), so the difference between the two is Portcullis's own
//! work per request.
//!
//! Usage: `bare_pingora LISTEN UPSTREAM [THREADS]`, e.g.
//! `cargo run --release --example bare_pingora -- 127.0.0.1:8081 127.0.0.1:8080 1`

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::process::ExitCode;

/// Downstream keep-alive, as Portcullis's default `server.timeouts.idle` (60 s).
const KEEPALIVE_SECS: u64 = 60;

/// The same allocator as the `portcullis` binary, so the comparison measures the proxy code.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct PassThrough {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for PassThrough {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        session.set_keepalive(Some(KEEPALIVE_SECS));
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let usage = || {
        eprintln!("usage: bare_pingora LISTEN UPSTREAM [THREADS]");
        ExitCode::FAILURE
    };
    let (listen, upstream) = match (args.get(1), args.get(2)) {
        (Some(l), Some(u)) => (l.clone(), u),
        _ => return usage(),
    };
    let Ok(upstream) = upstream.parse::<SocketAddr>() else {
        eprintln!("bare_pingora: UPSTREAM must be IP:PORT, got {upstream:?}");
        return usage();
    };
    let threads = match args.get(3).map(|t| t.parse::<usize>()) {
        None => 1,
        Some(Ok(t)) if t > 0 => t,
        Some(_) => {
            eprintln!("bare_pingora: THREADS must be a positive integer");
            return usage();
        }
    };

    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(10),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        PassThrough { upstream },
        "bare-pingora",
    );
    proxy.threads = Some(threads);
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    eprintln!("bare_pingora: {listen} -> {upstream}, {threads} thread(s)");
    server.run_forever()
}
