//! The upstream of the tests: a real HTTP server that reports what it received, with a
//! WebSocket echo endpoint.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
        super::header_value(&self.headers, name)
    }

    /// Every value of `name` (case-insensitive).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        super::header_values(&self.headers, name)
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
