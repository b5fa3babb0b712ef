//! What the upstream is told about the client: `X-Forwarded-*` and `X-Real-IP` from the real
//! peer (believing incoming ones only from trusted proxies), and the route's added headers.

use super::{put, Ctx};
use crate::routes::Route;
use crate::session::CookieSettings;
use http::HeaderName;
use pingora::http::RequestHeader;
use pingora::{OrErr, Result};

// Header names as constants: a `&str` name is parsed again on every use (visible in profiles).
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

// The same names as static strings, for writing: Pingora copies a `HeaderName`'s spelling
// into a fresh buffer on every write, not a `&'static str`'s (see `put`). Lower case, as
// before, so the upstream receives the same bytes.
const WIRE_X_FORWARDED_FOR: &str = "x-forwarded-for";
const WIRE_X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const WIRE_X_FORWARDED_HOST: &str = "x-forwarded-host";
const WIRE_X_REAL_IP: &str = "x-real-ip";

/// Every line of a list header, joined with `, ` (borrowed when there is one line). Proxies
/// such as HAProxy append their own `X-Forwarded-For` line instead of extending the client's:
/// reading only the first line would believe the client's part of the chain.
pub fn all_values<'a>(
    headers: &'a http::HeaderMap,
    name: &HeaderName,
) -> Option<std::borrow::Cow<'a, str>> {
    // A line that is not text breaks the chain where it stands: nothing left of it is believed.
    let mut lines = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap_or("invalid"));
    let first = lines.next()?;
    match lines.next() {
        None => Some(std::borrow::Cow::Borrowed(first)),
        Some(second) => {
            let mut joined = format!("{first}, {second}");
            for line in lines {
                joined.push_str(", ");
                joined.push_str(line);
            }
            Some(std::borrow::Cow::Owned(joined))
        }
    }
}

/// Applies the forwarding headers to the request the upstream will receive (also used to show
/// that request in `echo://`).
pub fn prepare(req: &mut RequestHeader, ctx: &Ctx, route: &Route) -> Result<()> {
    let trusted = ctx.peer_trusted;
    // Noted when the request was read (`read::scan`): usually none.
    if ctx.withheld {
        let withheld: Vec<HeaderName> = req
            .headers
            .keys()
            .filter(|name| ctx.rt.strip.fate(name).withheld(trusted))
            .cloned()
            .collect();
        for name in &withheld {
            req.remove_header(name);
        }
    }
    // The peer's address as a header value, shared by X-Forwarded-For and X-Real-IP.
    let peer_text = ctx.peer_ip.map(ip_value);
    let incoming_xff = if trusted {
        all_values(&req.headers, &X_FORWARDED_FOR).filter(|v| !v.trim().is_empty())
    } else {
        None
    };
    let xff = match (incoming_xff, &peer_text) {
        (Some(chain), Some(peer)) => {
            let peer = peer.to_str().unwrap_or_default();
            http::HeaderValue::from_str(&format!("{chain}, {peer}")).ok()
        }
        (Some(chain), None) => http::HeaderValue::from_str(&chain).ok(),
        (None, peer) => peer.clone(),
    };
    match xff {
        Some(v) => req.insert_header(WIRE_X_FORWARDED_FOR, v)?,
        None => {
            req.remove_header(&X_FORWARDED_FOR);
        }
    }
    let keep_proto = trusted && req.headers.contains_key(&X_FORWARDED_PROTO);
    let keep_host = trusted && req.headers.contains_key(&X_FORWARDED_HOST);
    if !keep_proto {
        let proto = if ctx.tls { "https" } else { "http" };
        req.insert_header(
            WIRE_X_FORWARDED_PROTO,
            http::HeaderValue::from_static(proto),
        )?;
    }
    if !keep_host {
        match &ctx.host_header {
            Some(h) => req.insert_header(WIRE_X_FORWARDED_HOST, h.clone())?,
            None => {
                req.remove_header(&X_FORWARDED_HOST);
            }
        }
    }
    match (ctx.client_ip, peer_text) {
        // Usually the client is the peer: reuse its text rather than format it again.
        (Some(ip), Some(peer)) if Some(ip) == ctx.peer_ip => {
            req.insert_header(WIRE_X_REAL_IP, peer)?
        }
        (Some(ip), _) => req.insert_header(WIRE_X_REAL_IP, ip_value(ip))?,
        (None, _) => {
            req.remove_header(&X_REAL_IP);
        }
    }
    for (n, v) in &route.headers.request_add {
        put::request(req, n, v.clone())?;
    }
    for (n, v) in ctx.identity.iter().flat_map(|h| h.iter()) {
        req.insert_header(n.wire, v.clone())?;
    }
    if let Some((n, v)) = ctx.assertion.as_deref() {
        req.insert_header(n.wire, v.clone())?;
    }
    if let Some(auth) = &ctx.rt.auth {
        strip_own_cookies(req, auth.config.cookie_base.as_bytes())?;
    }
    Ok(())
}

/// Removes Portcullis' cookies (the session under any prefix, and logins in progress) from
/// what the app receives: the app has no use for them, its logs should never see them, and an
/// app on a public route must not be able to collect them. Works on bytes, so a `Cookie`
/// header holding anything (`note=café`, invalid UTF-8) is stripped all the same.
fn strip_own_cookies(req: &mut RequestHeader, base: &[u8]) -> Result<()> {
    let mentions_ours = req
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .any(|v| contains(v.as_bytes(), base));
    if !mentions_ours {
        return Ok(());
    }
    let mut kept: Vec<u8> = Vec::new();
    for value in req.headers.get_all(http::header::COOKIE) {
        let value = value.as_bytes();
        for range in crate::session::cookie::cookie_segments(value) {
            let pair = value[range].trim_ascii();
            let name = pair
                .split(|&b| b == b'=')
                .next()
                .unwrap_or(pair)
                .trim_ascii();
            if pair.is_empty() || CookieSettings::is_own_cookie(base, name) {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
    }
    req.remove_header(&http::header::COOKIE);
    if !kept.is_empty() {
        let value = http::HeaderValue::from_bytes(&kept)
            .or_err(pingora::ErrorType::InvalidHTTPHeader, "rebuilding Cookie")?;
        req.insert_header(http::header::COOKIE, value)?;
    }
    Ok(())
}

/// Whether `needle` occurs in `hay`. Vectorised search for its first byte, then a compare:
/// cheap when our cookie leads the header (the usual case) and when it is absent. (A
/// `memmem` finder built per call costs more than the whole search here.)
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let mut at = 0;
    while let Some(i) = memchr::memchr(first, &hay[at..]) {
        at += i + 1;
        if hay[at..].starts_with(rest) {
            return true;
        }
    }
    false
}

/// An IP address as a header value. IPv4, the common case, is written by hand: the `fmt`
/// machinery costs more than the rest of a request's forwarding headers.
fn ip_value(ip: std::net::IpAddr) -> http::HeaderValue {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut buf = [0u8; 15];
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + (octet / 10) % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            http::HeaderValue::from_bytes(&buf[..n])
                .unwrap_or_else(|_| http::HeaderValue::from_static(""))
        }
        v6 => http::HeaderValue::from_str(&v6.to_string())
            .unwrap_or_else(|_| http::HeaderValue::from_static("")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_cookie_name_anywhere() {
        let base = b"_portcullis";
        assert!(contains(b"_portcullis=abc", base));
        assert!(contains(b"a=1; b=_x; _portcullis_csrf=2", base));
        assert!(contains(b"x=_portcullis", base));
        assert!(!contains(b"a=1; _portcullix=2; _portcul", base));
        assert!(!contains(b"", base));
        assert!(contains(b"anything", b""));
    }

    #[test]
    fn ip_values() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.0.255",
            "127.0.0.1",
            "255.255.255.255",
            "192.168.100.9",
        ] {
            assert_eq!(ip_value(ip.parse().unwrap()), ip);
        }
        assert_eq!(ip_value("::1".parse().unwrap()), "::1");
        assert_eq!(ip_value("2001:db8::7".parse().unwrap()), "2001:db8::7");
    }
}
