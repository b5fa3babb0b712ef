//! The Pingora peer for a route's HTTP upstream.

use crate::upstream::HttpUpstream;
use pingora::upstreams::peer::HttpPeer;

/// The peer to connect to for `up`, with the route's timeouts.
pub(super) async fn peer(up: &HttpUpstream) -> std::io::Result<HttpPeer> {
    let addr = up.addr().await?;
    let sni = if up.tls() {
        up.host().to_string()
    } else {
        String::new()
    };
    let mut peer = HttpPeer::new(addr, up.tls(), sni);
    let t = up.timeouts();
    let o = &mut peer.options;
    o.connection_timeout = Some(t.connect);
    o.total_connection_timeout = Some(t.connect);
    o.read_timeout = Some(t.read);
    o.write_timeout = Some(t.read);
    o.idle_timeout = Some(t.idle);
    Ok(peer)
}
