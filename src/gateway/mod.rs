//! The Pingora adapter: the two front doors — the proxy, and forward auth
//! (`/.portcullis/auth`) — around the one decision engine. [`read`] turns bytes into a
//! [`RequestView`](crate::request::RequestView), [`decide`](crate::decision::decide) decides,
//! [`answer`] turns the decision into the proxied request or a response; [`phases`] is the
//! `ProxyHttp` impl that calls them. No policy lives here.

mod answer;
mod forwarded;
mod header_deadline;
mod original;
mod peer;
mod phases;
mod put;
mod read;

pub use header_deadline::HeadDeadline;

use crate::routes::Route;
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// The proxy service. Holds only the swappable runtime.
pub struct Gateway {
    pub runtime: Arc<ArcSwap<Runtime>>,
}

/// Per-request state, created when the request's head has been read. Kept small: Pingora
/// moves it with its request futures several times per request (each move a `memcpy` of its
/// size), so what most requests lack is boxed.
pub struct Ctx {
    /// The configuration this request is served under, even if a reload happens meanwhile.
    rt: Arc<Runtime>,
    start: Instant,
    /// The route the request was decided on, once it is.
    route: Option<Arc<Route>>,
    /// Whether the client reached us over TLS (or a trusted proxy said so).
    tls: bool,
    peer_ip: Option<IpAddr>,
    peer_trusted: bool,
    client_ip: Option<IpAddr>,
    /// The `Host` the client named (or the absolute-form authority), for `X-Forwarded-Host`.
    host_header: Option<http::HeaderValue>,
    /// Whether the request holds headers that must not reach the upstream (override and
    /// client-describing headers, see [`crate::headers::Fate`]); usually not. Only noted on
    /// the first walk: the names are found again, from the same table, only for a request
    /// that is proxied (a forward-auth check, which always holds some, never is).
    withheld: bool,
    /// Identity headers for the upstream (none when anonymous), rendered once per session.
    identity: Option<crate::session::record::HeaderList>,
    /// The signed identity assertion for the upstream (none when anonymous or no issuer).
    assertion: Option<Box<(crate::headers::FieldName, http::HeaderValue)>>,
    /// `Set-Cookie` clearing a session cookie that named no live session, for whatever answer
    /// this request gets.
    clear_cookie: Option<Box<http::HeaderValue>>,
    /// The most restrictive rate limiter's answer, whose headers every response carries.
    rate: Option<crate::ratelimit::Note>,
}

impl Ctx {
    /// A request's state before anything of it is read, served under `rt`.
    fn new(rt: Arc<Runtime>) -> Ctx {
        Ctx {
            rt,
            start: Instant::now(),
            route: None,
            tls: false,
            peer_ip: None,
            peer_trusted: false,
            client_ip: None,
            host_header: None,
            withheld: false,
            identity: None,
            assertion: None,
            clear_cookie: None,
            rate: None,
        }
    }

    fn route_label(&self) -> &str {
        self.route.as_deref().map_or("-", |r| &r.name)
    }

    /// The `Host` the client named, as text ("" when none).
    fn host_text(&self) -> &str {
        self.host_header
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}
