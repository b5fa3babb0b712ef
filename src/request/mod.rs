//! What the engine knows about one request, and how it is read: the [`RequestView`] every
//! decision is made on (built by whichever front door received the request), the request
//! target ([`target`]), the `Host` ([`host`]), the real client address ([`client_ip`]) and the
//! size and framing limits ([`limits`]). Nothing here borrows from Pingora.

pub mod client_ip;
pub mod host;
pub mod limits;
pub mod target;

pub use client_ip::{canonical, TrustedProxies};
pub use host::{host_name, lower_case, parse_host};
pub use limits::{head_names_content_length, Shape, MAX_TARGET_BYTES};
pub use target::{split_query, BadRequest, Target};

use std::net::IpAddr;

/// The text a view holds: up to 24 bytes inline (most hosts, authorities and paths), longer
/// on the heap. Reads as a `str`; reading a request allocates nothing for what fits.
pub type Text = compact_str::CompactString;

/// What the engine knows about a request: nothing here borrows from Pingora.
#[derive(Clone)]
pub struct RequestView {
    pub method: http::Method,
    /// `https` when the client reached us over TLS (or a trusted proxy said so).
    pub tls: bool,
    /// Lower-case, without port or trailing dot; empty when the request named no host.
    pub host: Text,
    /// Another host a trusted front proxy named in `X-Forwarded-Host` (lower-case, no port),
    /// when it differs from `host`: the app may go by either, so the request must pass the
    /// routes of both.
    pub forwarded_host: Option<Text>,
    /// `host[:port]` as the client addressed it: through a trusted front proxy, as it says
    /// (the origin check and return URLs need the port).
    pub authority: Text,
    /// The normalised path (see [`crate::path::normalize`]).
    pub path: Text,
    pub query: Option<String>,
    pub client_ip: Option<IpAddr>,
    /// Whether the client asked for HTML (browsers), which chooses page vs JSON answers.
    pub wants_html: bool,
    pub websocket: bool,
}

/// Whether an `Accept` header asks for HTML (a browser navigation).
pub fn accepts_html(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("text/html"))
}

/// Everything but the query string's contents, which may hold a login `code` or a token.
impl std::fmt::Debug for RequestView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestView")
            .field("method", &self.method)
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("forwarded_host", &self.forwarded_host)
            .field("authority", &self.authority)
            .field("path", &self.path)
            .field("query_len", &self.query.as_ref().map(String::len))
            .field("client_ip", &self.client_ip)
            .field("wants_html", &self.wants_html)
            .field("websocket", &self.websocket)
            .finish()
    }
}
