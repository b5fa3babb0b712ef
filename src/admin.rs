//! The admin listener: `/healthz` (the process runs), `/readyz` (a configuration is loaded and
//! the proxy can serve), `/metrics` (Prometheus text). Kept off the public listeners.

use crate::runtime::Runtime;
use crate::telemetry::metrics;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

pub struct AdminApp {
    pub runtime: Arc<ArcSwap<Runtime>>,
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method_ok = matches!(
            session.req_header().method,
            http::Method::GET | http::Method::HEAD
        );
        let (status, ct, body) = match (method_ok, session.req_header().uri.path()) {
            (false, _) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                b"method not allowed\n".to_vec(),
            ),
            (true, "/healthz") => (StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            (true, "/readyz") => {
                // Ready when a configuration is serving, its session store answers and every
                // identity provider has been discovered.
                let rt = self.runtime.load_full();
                let auth_ready = match &rt.auth {
                    Some(auth) => auth.ready().await,
                    None => Ok(()),
                };
                match auth_ready {
                    _ if rt.routes.routes().is_empty() => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        b"no routes\n".to_vec(),
                    ),
                    Err(e) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        format!("not ready: {e}\n").into_bytes(),
                    ),
                    Ok(()) => (StatusCode::OK, "text/plain", b"ready\n".to_vec()),
                }
            }
            (true, "/metrics") => (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                metrics::render(),
            ),
            (true, _) => (StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        };
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, ct)
            .header(http::header::CONTENT_LENGTH, body.len())
            .header(http::header::CACHE_CONTROL, "no-store")
            .body(body)
            .unwrap_or_default()
    }
}
