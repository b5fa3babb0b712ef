//! What the upstream is told about the client: `X-Forwarded-*` and `X-Real-IP` from the real
//! peer (believing incoming ones only from trusted proxies), and the route's added headers.

use super::Ctx;
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

/// Headers that tell the app about the client, the address, scheme or path prefix it used:
/// dropped unless a trusted proxy sent them. Frameworks and libraries read each of these (the
/// Flask "ReverseProxied" recipe reads `X-Script-Name`, npm `request-ip` prefers
/// `X-Client-IP` to `X-Forwarded-For`, ...).
const UNTRUSTED_DROP: [HeaderName; 28] = [
    http::header::FORWARDED,
    HeaderName::from_static("x-forwarded"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-forwarded-server"),
    HeaderName::from_static("x-forwarded-path"),
    HeaderName::from_static("x-forwarded-uri"),
    HeaderName::from_static("x-forwarded-method"),
    HeaderName::from_static("x-forwarded-ssl"),
    HeaderName::from_static("x-forwarded-scheme"),
    HeaderName::from_static("x-forwarded-protocol"),
    HeaderName::from_static("x-script-name"),
    HeaderName::from_static("x-original-path"),
    HeaderName::from_static("x-original-host"),
    HeaderName::from_static("x-host"),
    HeaderName::from_static("x-http-host-override"),
    HeaderName::from_static("front-end-https"),
    HeaderName::from_static("x-url-scheme"),
    HeaderName::from_static("x-scheme"),
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("client-ip"),
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("cf-connecting-ip"),
    HeaderName::from_static("fastly-client-ip"),
    HeaderName::from_static("x-cluster-client-ip"),
    HeaderName::from_static("x-proxyuser-ip"),
    HeaderName::from_static("x-originating-ip"),
    HeaderName::from_static("x-remote-addr"),
];

/// Headers that make frameworks serve another path or method than the request line names
/// (Symfony and IIS `X-Original-URL`, method-override middleware). Portcullis decided on the
/// request line, so the app must act on it too: always dropped, whoever sent them.
const ALWAYS_DROP: [HeaderName; 7] = [
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-original-uri"),
    HeaderName::from_static("x-original-method"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

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
    let peer = ctx.peer_ip.map(|ip| ip.to_string()).unwrap_or_default();
    let trusted = ctx.peer_trusted;
    for name in &ALWAYS_DROP {
        if req.headers.contains_key(name) {
            req.remove_header(name);
        }
    }
    if !trusted {
        for name in &UNTRUSTED_DROP {
            if req.headers.contains_key(name) {
                req.remove_header(name);
            }
        }
    }
    let incoming_xff =
        all_values(&req.headers, &X_FORWARDED_FOR).filter(|v| trusted && !v.trim().is_empty());
    let peer_text =
        http::HeaderValue::from_str(&peer).unwrap_or(http::HeaderValue::from_static(""));
    let xff = match incoming_xff {
        Some(chain) if !peer.is_empty() => format!("{chain}, {peer}"),
        Some(chain) => chain.into_owned(),
        None => peer,
    };
    if xff.is_empty() {
        req.remove_header(&X_FORWARDED_FOR);
    } else {
        req.insert_header(X_FORWARDED_FOR, xff)?;
    }
    let keep_proto = trusted && req.headers.contains_key(&X_FORWARDED_PROTO);
    let keep_host = trusted && req.headers.contains_key(&X_FORWARDED_HOST);
    if !keep_proto {
        req.insert_header(X_FORWARDED_PROTO, if ctx.tls { "https" } else { "http" })?;
    }
    if !keep_host {
        match &ctx.host_header {
            Some(h) => req.insert_header(X_FORWARDED_HOST, h.as_str())?,
            None => {
                req.remove_header(&X_FORWARDED_HOST);
            }
        }
    }
    match ctx.client_ip {
        // Usually the client is the peer: reuse its text rather than format it again.
        Some(ip) if Some(ip) == ctx.peer_ip && !peer_text.is_empty() => {
            req.insert_header(X_REAL_IP, peer_text)?
        }
        Some(ip) => req.insert_header(X_REAL_IP, ip.to_string())?,
        None => {
            req.remove_header(&X_REAL_IP);
        }
    }
    for (n, v) in &route.headers.request_add {
        req.insert_header(n.clone(), v.clone())?;
    }
    for (n, v) in &ctx.identity {
        req.insert_header(n.clone(), v.clone())?;
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
        .any(|v| v.as_bytes().windows(base.len()).any(|w| w == base));
    if !mentions_ours {
        return Ok(());
    }
    let mut kept: Vec<u8> = Vec::new();
    for value in req.headers.get_all(http::header::COOKIE) {
        for pair in value.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
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
