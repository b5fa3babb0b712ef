//! What the upstream is told about the client: `X-Forwarded-*` and `X-Real-IP` from the real
//! peer (believing incoming ones only from trusted proxies), and the route's added headers.

use super::Ctx;
use crate::routes::Route;
use pingora::http::RequestHeader;
use pingora::Result;

/// Headers a client could use to confuse the app about the path or the client; dropped unless
/// a trusted proxy sent them.
const UNTRUSTED_DROP: &[&str] = &[
    "forwarded",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-original-url",
    "x-original-uri",
    "x-original-method",
    "x-rewrite-url",
];

/// Applies the forwarding headers to the request the upstream will receive (also used to show
/// that request in `echo://`).
pub fn prepare(req: &mut RequestHeader, ctx: &Ctx, route: &Route) -> Result<()> {
    let peer = ctx.peer_ip.map(|ip| ip.to_string()).unwrap_or_default();
    let trusted = ctx.peer_trusted;
    if !trusted {
        for name in UNTRUSTED_DROP {
            req.remove_header(*name);
        }
    }
    let incoming_xff = req
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .filter(|v| trusted && !v.trim().is_empty());
    let xff = match incoming_xff {
        Some(chain) if !peer.is_empty() => format!("{chain}, {peer}"),
        Some(chain) => chain.to_string(),
        None => peer,
    };
    if xff.is_empty() {
        req.remove_header("x-forwarded-for");
    } else {
        req.insert_header("x-forwarded-for", xff)?;
    }
    let keep_proto = trusted && req.headers.contains_key("x-forwarded-proto");
    let keep_host = trusted && req.headers.contains_key("x-forwarded-host");
    if !keep_proto {
        req.insert_header("x-forwarded-proto", if ctx.tls { "https" } else { "http" })?;
    }
    if !keep_host {
        match &ctx.host_header {
            Some(h) => req.insert_header("x-forwarded-host", h.as_str())?,
            None => {
                req.remove_header("x-forwarded-host");
            }
        }
    }
    match ctx.client_ip {
        Some(ip) => req.insert_header("x-real-ip", ip.to_string())?,
        None => {
            req.remove_header("x-real-ip");
        }
    }
    for (n, v) in &route.headers.request_add {
        req.insert_header(n.clone(), v.clone())?;
    }
    for (n, v) in &ctx.identity {
        req.insert_header(n.clone(), v.clone())?;
    }
    if let Some(auth) = &ctx.rt.auth {
        strip_own_cookies(req, &auth.config.cookie.name)?;
    }
    Ok(())
}

/// Removes Portcullis' cookies (the session and any login in progress) from what the app
/// receives: the app has no use for them, and its logs should never see them.
fn strip_own_cookies(req: &mut RequestHeader, name: &str) -> Result<()> {
    let values: Vec<String> = req
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    if values.is_empty() || !values.iter().any(|v| v.contains(name)) {
        return Ok(());
    }
    let login_prefix = format!("{name}_login_");
    let kept: Vec<&str> = values
        .iter()
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|kv| {
            let key = kv.split_once('=').map_or(*kv, |(k, _)| k).trim();
            !kv.is_empty() && key != name && !key.starts_with(&login_prefix)
        })
        .collect();
    req.remove_header(&http::header::COOKIE);
    if !kept.is_empty() {
        req.insert_header(http::header::COOKIE, kept.join("; "))?;
    }
    Ok(())
}
