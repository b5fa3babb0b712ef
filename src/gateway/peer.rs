//! The Pingora peer for a route's HTTP upstream.

use crate::upstream::HttpUpstream;
use pingora::upstreams::peer::HttpPeer;

/// The peer to connect to for `up`, with the route's timeouts. `body`: the request has a body
/// to send; without one, the write of its small head needs no timer of its own (the read
/// timeout bounds the exchange), and a timer per request is measurable.
/// Boxed where it is made: Pingora wants it boxed, and a peer is large enough that each move
/// of it shows in a profile.
pub(super) async fn peer(up: &HttpUpstream, body: bool) -> std::io::Result<Box<HttpPeer>> {
    let addr = up.addr().await?;
    let sni = if up.tls() {
        up.host().to_string()
    } else {
        String::new()
    };
    let mut peer = Box::new(HttpPeer::new(addr, up.tls(), sni));
    let t = up.timeouts();
    let o = &mut peer.options;
    o.connection_timeout = Some(t.connect);
    o.total_connection_timeout = Some(t.connect);
    o.read_timeout = Some(t.read);
    o.write_timeout = body.then_some(t.read);
    o.idle_timeout = Some(t.idle);
    Ok(peer)
}
