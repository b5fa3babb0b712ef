//! Bytes in, engine facts out: the [`RequestView`] and the [`Presented`] credentials of a
//! request, for the proxy (the request itself) and for forward auth (the original request
//! described by `X-Original-*`, `X-Forwarded-*` or Envoy's path). This is the only place the
//! two front doors differ on the way in. Reading the proxied request also pins what the
//! upstream will receive to what was read.

use super::forwarded::{self, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use super::Ctx;
use crate::decision::Presented;
use crate::headers::Fate;
use crate::refusal::Refusal;
use crate::request::{self, BadRequest, RequestView, Shape, Target};
use http::{HeaderMap, HeaderName};
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use std::borrow::Cow;

pub(super) const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// Who is on the other end of the connection: the peer, whether it is a trusted proxy, the
/// real client, and whether the client reached us over TLS (or a trusted proxy says so).
pub(super) fn connection(session: &Session, ctx: &mut Ctx) {
    ctx.peer_ip = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| request::canonical(a.ip()));
    ctx.peer_trusted = ctx
        .peer_ip
        .is_some_and(|ip| ctx.rt.trusted_proxies.contains(ip));
    let downstream_tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    if !ctx.peer_trusted {
        // The peer is the client; nothing it says about itself is read.
        ctx.tls = downstream_tls;
        ctx.client_ip = ctx.peer_ip;
        return;
    }
    let req = session.req_header();
    let forwarded_https = req
        .headers
        .get(&X_FORWARDED_PROTO)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    ctx.tls = downstream_tls || forwarded_https;
    let xff = forwarded::all_values(&req.headers, &forwarded::X_FORWARDED_FOR);
    ctx.client_ip = ctx
        .rt
        .trusted_proxies
        .client_ip(ctx.peer_ip, xff.as_deref());
}

/// One pass over the request's header fields: gathers what the size and framing limits need,
/// names the fields to remove at once (forged identities), and notes in `ctx` those that must
/// not be forwarded. Allocates nothing when no field needs removing.
pub(super) fn scan(req: &RequestHeader, ctx: &mut Ctx) -> (Shape, Vec<HeaderName>) {
    let mut shape = Shape::default();
    let mut doomed = Vec::new();
    for (name, value) in &req.headers {
        shape.add(name, value);
        match ctx.rt.strip.fate(name) {
            Fate::Keep => {}
            Fate::Strip => doomed.push(name.clone()),
            Fate::NeverForwarded => ctx.not_forwarded.push(name.clone()),
            Fate::ForwardedIfTrusted if !ctx.peer_trusted => ctx.not_forwarded.push(name.clone()),
            Fate::ForwardedIfTrusted => {}
        }
    }
    (shape, doomed)
}

/// Whether the client asked for HTML (a browser), which chooses page vs JSON answers.
pub(super) fn wants_html(req: &RequestHeader) -> bool {
    request::accepts_html(
        req.headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    )
}

/// Reads the proxied request: its shape, target and host. Pins what the upstream will
/// receive to what was read: the target becomes the normalised origin-form path that routing
/// sees, and an absolute-form target's authority becomes the `Host`. Returns the view and, for
/// Envoy checks, the original target.
pub(super) fn request(
    session: &mut Session,
    ctx: &mut Ctx,
    wants_html: bool,
    shape: &Shape,
) -> Result<(RequestView, Option<String>), Refusal> {
    let req = session.req_header();
    let raw_head = || {
        session
            .as_downstream()
            .as_http1()
            .is_some_and(|h1| request::head_names_content_length(&h1.get_headers_raw_bytes()))
    };
    shape.check(req.version, req.raw_path().len(), raw_head)?;
    if req.method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(Refusal::Malformed(BadRequest::Method));
    }
    let target = Target::parse(req.raw_path()).map_err(Refusal::Malformed)?;
    // HTTP/1.1 absolute-form, or the authority Pingora took from an HTTP/2 request.
    let authority = target
        .authority
        .or_else(|| req.uri.authority().map(|a| a.as_str()));
    let host_header = req.headers.get(http::header::HOST);
    let host = routed_host(authority, host_header).map_err(Refusal::Malformed)?;
    // RFC 9112 §3.2.2: an absolute-form target's authority is the request's host.
    ctx.host_header = match authority {
        Some(a) => http::HeaderValue::from_str(a).ok(),
        None => host_header.cloned(),
    };
    let path = target.normalised_path().map_err(Refusal::Malformed)?;
    let query = target.query.map(str::to_string);
    let envoy = super::original::envoy_target(&target);
    let method = req.method.clone();
    let absolute_authority = target.authority.map(str::to_string);
    let websocket = session.is_upgrade_req();
    pin_upstream_request(
        session.req_header_mut(),
        &path,
        query.as_deref(),
        absolute_authority.as_deref(),
    )
    .map_err(Refusal::Malformed)?;
    let own = ctx
        .host_header
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // A forward-auth check's own X-Forwarded-Host describes the original request, not this one.
    let checking = envoy.is_some() || path == "/.portcullis/auth";
    let (authority, forwarded_host) = if ctx.peer_trusted && !checking {
        let public =
            public_authority(&session.req_header().headers, own).map_err(Refusal::Malformed)?;
        let named = request::parse_host(&public).map_err(Refusal::Malformed)?;
        let other = (named != host && !own.is_empty()).then_some(named);
        (public, other)
    } else {
        (own.to_string(), None)
    };
    let view = RequestView {
        method,
        tls: ctx.tls,
        host,
        forwarded_host,
        authority,
        path,
        query,
        client_ip: ctx.client_ip,
        wants_html,
        websocket,
    };
    Ok((view, envoy))
}

/// The host a request is routed on: the target's authority (absolute-form) or `Host`; both
/// must agree when both are given; one of them is required (even of HTTP/1.0).
fn routed_host(
    authority: Option<&str>,
    host_header: Option<&http::HeaderValue>,
) -> Result<String, BadRequest> {
    let host_header = host_header
        .map(|v| v.to_str().map_err(|_| BadRequest::Host))
        .transpose()?;
    match (authority, host_header) {
        (Some(authority), Some(h)) => {
            let h = request::parse_host(h)?;
            if request::parse_host(authority)? != h {
                return Err(BadRequest::HostMismatch);
            }
            Ok(h)
        }
        (Some(authority), None) => request::parse_host(authority),
        (None, Some(h)) => request::parse_host(h),
        (None, None) => Err(BadRequest::NoHost),
    }
}

/// The authority the client addressed, as a trusted front proxy tells it: `X-Forwarded-Host`
/// (its first entry) and `X-Forwarded-Port`, else `own` (the request's `Host`). nginx's
/// common `proxy_set_header Host $host` drops the port, which `X-Forwarded-Host
/// $host:$server_port` or `X-Forwarded-Port` carry: return URLs, login redirects, the
/// hand-over and CSRF origin checks need it.
fn public_authority(headers: &HeaderMap, own: &str) -> Result<String, BadRequest> {
    let first = |name: &HeaderName| {
        header_str(headers, name)
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let host = match first(&X_FORWARDED_HOST) {
        Some(h) => {
            request::parse_host(h)?;
            h
        }
        None => own,
    };
    let port = match first(&X_FORWARDED_PORT) {
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or(BadRequest::Host)?,
        ),
        None => None,
    };
    let has_port = host
        .rsplit_once(']')
        .map_or(host, |(_, after)| after)
        .contains(':');
    Ok(match port {
        Some(p) if !has_port && !host.is_empty() => format!("{host}:{p}"),
        _ => host.to_string(),
    })
}

/// Makes the request the upstream will receive say exactly what was routed: the target is
/// `path?query` in origin-form (Pingora would otherwise write the raw bytes it received, which
/// an app may resolve to another path), and an absolute-form `authority` is the `Host`.
fn pin_upstream_request(
    req: &mut RequestHeader,
    path: &str,
    query: Option<&str>,
    authority: Option<&str>,
) -> Result<(), BadRequest> {
    let raw = req.raw_path();
    let same = match query {
        None => raw == path.as_bytes(),
        Some(q) => {
            raw.len() == path.len() + 1 + q.len()
                && raw.starts_with(path.as_bytes())
                && raw[path.len()] == b'?'
                && raw.ends_with(q.as_bytes())
        }
    };
    if !same {
        let target = match query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        let uri = http::Uri::builder()
            .path_and_query(target)
            .build()
            .map_err(|_| BadRequest::Target)?;
        req.set_uri(uri);
    }
    if let Some(authority) = authority {
        let value = http::HeaderValue::from_str(authority).map_err(|_| BadRequest::Host)?;
        if req.headers.get(http::header::HOST) != Some(&value) {
            req.insert_header(http::header::HOST, value)
                .map_err(|_| BadRequest::Host)?;
        }
    }
    Ok(())
}

/// A request header as text, when present and visible ASCII.
pub(super) fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Every `Cookie` header of the request joined (HTTP/2 may split them), as text. A header
/// with bytes that are not UTF-8 is read with replacement characters: another cookie's odd
/// bytes never hide ours.
pub(super) fn cookie_header(headers: &HeaderMap) -> Option<Cow<'_, str>> {
    let mut values = headers
        .get_all(http::header::COOKIE)
        .iter()
        .map(|v| crate::session::cookie::text_lossy(v.as_bytes()));
    let first = values.next()?;
    match values.next() {
        None => Some(first),
        Some(second) => {
            let mut joined = format!("{first}; {second}");
            for v in values {
                joined.push_str("; ");
                joined.push_str(&v);
            }
            Some(Cow::Owned(joined))
        }
    }
}

/// The credentials and cross-site signals a request carries.
pub(super) fn presented(headers: &HeaderMap) -> Presented<'_> {
    Presented {
        cookie: cookie_header(headers),
        authorization: header_str(headers, &http::header::AUTHORIZATION),
        origin: header_str(headers, &http::header::ORIGIN),
        fetch_site: header_str(headers, &SEC_FETCH_SITE),
        headers: Some(headers),
    }
}

/// `scheme://host[:port]` as the client addressed us (through a trusted front proxy: as it
/// says).
pub(super) fn here_url(ctx: &Ctx, view: &RequestView) -> url::Url {
    let scheme = if ctx.tls { "https" } else { "http" };
    let authority = if view.authority.is_empty() {
        view.host.as_str()
    } else {
        view.authority.as_str()
    };
    url::Url::parse(&format!("{scheme}://{authority}/"))
        .unwrap_or_else(|_| url::Url::parse("http://invalid/").expect("a constant URL parses"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn public_authority_from_a_front_proxy() {
        let h = |pairs: &[(&str, &str)]| public_authority(&headers(pairs), "app.test");
        assert_eq!(h(&[]), Ok("app.test".into()));
        assert_eq!(
            h(&[("x-forwarded-host", "app.test:8443")]),
            Ok("app.test:8443".into())
        );
        assert_eq!(
            h(&[("x-forwarded-port", "8443")]),
            Ok("app.test:8443".into())
        );
        assert_eq!(
            h(&[
                ("x-forwarded-host", "app.test:8443, inner:80"),
                ("x-forwarded-port", "1")
            ]),
            Ok("app.test:8443".into())
        );
        assert_eq!(
            public_authority(
                &headers(&[("x-forwarded-host", "[::1]"), ("x-forwarded-port", "8080")]),
                "[::1]"
            ),
            Ok("[::1]:8080".into())
        );
        assert_eq!(
            h(&[("x-forwarded-host", "other.test")]),
            Ok("other.test".into())
        );
        assert_eq!(h(&[("x-forwarded-host", "a b")]), Err(BadRequest::Host));
        assert_eq!(h(&[("x-forwarded-port", "http")]), Err(BadRequest::Host));
    }

    #[test]
    fn routed_host_agrees_with_host() {
        let hv = |s: &'static str| http::HeaderValue::from_static(s);
        assert_eq!(
            routed_host(None, Some(&hv("App.Test:8080"))),
            Ok("app.test".into())
        );
        assert_eq!(routed_host(Some("app.test"), None), Ok("app.test".into()));
        assert_eq!(
            routed_host(Some("app.test"), Some(&hv("other.test"))),
            Err(BadRequest::HostMismatch)
        );
        assert_eq!(routed_host(None, None), Err(BadRequest::NoHost));
        assert_eq!(routed_host(None, Some(&hv("a b"))), Err(BadRequest::Host));
    }
}
