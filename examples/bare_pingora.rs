//! The smallest Pingora pass-through proxy, as the baseline for `bench/run.sh`.
//!
//! Every request goes to one fixed upstream, unchanged. The Pingora settings are the ones
//! Portcullis uses (see `src/server.rs`), so the difference between the two is Portcullis's own
//! work per request.
//!
//! Usage: `bare_pingora LISTEN UPSTREAM [THREADS] [--contract] [--answer]`, e.g.
//! `cargo run --release --example bare_pingora -- 127.0.0.1:8081 127.0.0.1:8080 1`
//!
//! `--contract` adds, in the cheapest way Pingora's API allows, only what Portcullis's contract
//! makes every proxied request carry whatever its route: the four forwarding headers
//! (`X-Forwarded-For`, `-Proto`, `-Host`, `X-Real-IP`), the three default security headers
//! where the upstream did not set them, `Server` removed, and the upstream read and pool idle
//! timeouts. No routing, no policy, no parsing of the target. `bench/instructions.sh` counts
//! it as the floor a public route cannot go below on Pingora (see docs/BENCHMARKS.md).
//!
//! `--answer` answers every request itself, `200` with an empty body, without an upstream:
//! the floor for an answer such as a forward-auth check's.

use async_trait::async_trait;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// Downstream keep-alive, as Portcullis's default `server.timeouts.idle` (60 s).
const KEEPALIVE_SECS: u64 = 60;

/// The same allocator as the `portcullis` binary, so the comparison measures the proxy code.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The reference: every request forwarded unchanged. Kept exactly as it was before the other
/// two modes existed, so the baseline does not pay for them.
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

/// `--contract`: the pass-through plus the headers and timeouts every Portcullis route must
/// have.
struct Contract {
    upstream: SocketAddr,
}

/// The security headers Portcullis adds by default, with names as `&'static str` (no copy of
/// the name per insert) in the bytes Pingora writes for them today.
const SECURITY: [(&str, &str); 3] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "SAMEORIGIN"),
    ("referrer-policy", "strict-origin-when-cross-origin"),
];

#[async_trait]
impl ProxyHttp for Contract {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        session.set_keepalive(Some(KEEPALIVE_SECS));
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = Box::new(HttpPeer::new(self.upstream, false, String::new()));
        peer.options.read_timeout = Some(Duration::from_secs(60));
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(peer)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let peer = HeaderValue::from_str(&peer).unwrap_or_else(|_| HeaderValue::from_static(""));
        let host = req.headers.get(http::header::HOST).cloned();
        req.insert_header("x-forwarded-for", peer.clone())?;
        req.insert_header("x-forwarded-proto", HeaderValue::from_static("http"))?;
        if let Some(host) = host {
            req.insert_header("x-forwarded-host", host)?;
        }
        req.insert_header("x-real-ip", peer)?;
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        if resp.headers.contains_key(http::header::SERVER) {
            resp.remove_header(&http::header::SERVER);
        }
        for (name, value) in SECURITY {
            if !resp.headers.contains_key(name) {
                resp.insert_header(name, HeaderValue::from_static(value))?;
            }
        }
        Ok(())
    }
}

/// `--answer`: every request answered here, `200` with an empty body; nothing forwarded.
struct Answer;

#[async_trait]
impl ProxyHttp for Answer {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        session.set_keepalive(Some(KEEPALIVE_SECS));
        let mut resp = ResponseHeader::build_no_case(200, Some(2))?;
        resp.insert_header(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"))?;
        session.write_response_header(Box::new(resp), true).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Error::e_explain(ErrorType::InternalError, "--answer forwards nothing")
    }
}

/// Runs `app` as the proxy service on `listen` with Portcullis's server settings.
fn serve<A>(app: A, listen: &str, threads: usize) -> ExitCode
where
    A: ProxyHttp + Send + Sync + 'static,
    A::CTX: Send + Sync,
{
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(10),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy =
        pingora::proxy::http_proxy_service_with_name(&server.configuration, app, "bare-pingora");
    proxy.threads = Some(threads);
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let usage = || {
        eprintln!("usage: bare_pingora LISTEN UPSTREAM [THREADS] [--contract] [--answer]");
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
    let flag = |name: &str| args.iter().skip(3).any(|a| a == name);
    let (contract, answer) = (flag("--contract"), flag("--answer"));
    let args: Vec<String> = args
        .into_iter()
        .filter(|a| a != "--contract" && a != "--answer")
        .collect();
    let threads = match args.get(3).map(|t| t.parse::<usize>()) {
        None => 1,
        Some(Ok(t)) if t > 0 => t,
        Some(_) => {
            eprintln!("bare_pingora: THREADS must be a positive integer");
            return usage();
        }
    };

    let mode = match (contract, answer) {
        (true, true) => {
            eprintln!("bare_pingora: --contract and --answer exclude each other");
            return usage();
        }
        (true, false) => " (--contract)",
        (false, true) => " (--answer)",
        (false, false) => "",
    };
    eprintln!("bare_pingora: {listen} -> {upstream}, {threads} thread(s){mode}");
    if contract {
        serve(Contract { upstream }, &listen, threads)
    } else if answer {
        serve(Answer, &listen, threads)
    } else {
        serve(PassThrough { upstream }, &listen, threads)
    }
}
