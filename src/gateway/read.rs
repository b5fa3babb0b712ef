//! Bytes in, engine facts out: the [`RequestView`] and the [`Presented`] credentials of a
//! request, for the proxy (the request itself) and for forward auth (the original request
//! described by `X-Original-*`, `X-Forwarded-*` or Envoy's path). This is the only place the
//! two front doors differ on the way in. Reading the proxied request also pins what the
//! upstream will receive to what was read.

use super::forwarded;
use super::original::{self, CheckRequest};
use super::Ctx;
use crate::decision::Presented;
use crate::headers::Fate;
use crate::refusal::Refusal;
use crate::request::{self, BadRequest, RequestView, Shape, Target, Text};
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use std::borrow::Cow;

/// Who is on the other end of the connection: the peer, whether it is a trusted proxy, and
/// whether the connection is TLS. Until [`client`] hears a trusted proxy, the peer is the
/// client.
pub(super) fn peer(session: &Session, ctx: &mut Ctx) {
    ctx.peer_ip = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| request::canonical(a.ip()));
    ctx.peer_trusted = ctx
        .peer_ip
        .is_some_and(|ip| ctx.rt.trusted_proxies.contains(ip));
    ctx.tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    ctx.client_ip = ctx.peer_ip;
}

/// The real client, and whether it reached us over TLS, as a trusted proxy tells them
/// (`X-Forwarded-For`, `X-Forwarded-Proto`). Nothing a peer that is not trusted says about
/// itself is read.
pub(super) fn client(session: &Session, ctx: &mut Ctx, fields: &Fields) {
    if !ctx.peer_trusted {
        return;
    }
    let forwarded_https = fields
        .forwarded_proto
        .as_ref()
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    ctx.tls |= forwarded_https;
    let xff = match fields.forwarded_for_lines {
        0 | 1 => fields
            .forwarded_for
            .as_ref()
            .map(|v| Cow::Borrowed(v.to_str().unwrap_or("invalid"))),
        // Every line is read (see `forwarded::all_values`).
        _ => forwarded::all_values(&session.req_header().headers, &forwarded::X_FORWARDED_FOR),
    };
    ctx.client_ip = ctx
        .rt
        .trusted_proxies
        .client_ip(ctx.peer_ip, xff.as_deref());
}

/// The request fields read on most requests, taken on the one walk [`scan`] makes over the
/// headers anyway: comparing names there costs less than a hashed lookup per name. Each holds
/// the first value, as `HeaderMap::get` gives it; `Cookie` and `X-Forwarded-For`, of which
/// every line is read, also count their lines. A field [`scan`] strips (a configured identity
/// header may have any name that is not reserved) is not taken, as it is gone by the time
/// anything reads it.
#[derive(Default)]
pub(super) struct Fields {
    host: Option<HeaderValue>,
    accept: Option<HeaderValue>,
    cookie: Option<HeaderValue>,
    cookie_lines: u32,
    authorization: Option<HeaderValue>,
    origin: Option<HeaderValue>,
    fetch_site: Option<HeaderValue>,
    forwarded_proto: Option<HeaderValue>,
    forwarded_for: Option<HeaderValue>,
    forwarded_for_lines: u32,
    forwarded_host: Option<HeaderValue>,
    forwarded_port: Option<HeaderValue>,
}

impl Fields {
    fn take(&mut self, name: &HeaderName, value: &HeaderValue) {
        use http::header;
        // The standard names compare as small integers; the others by their text.
        let slot = if *name == header::HOST {
            &mut self.host
        } else if *name == header::ACCEPT {
            &mut self.accept
        } else if *name == header::COOKIE {
            self.cookie_lines += 1;
            &mut self.cookie
        } else if *name == header::AUTHORIZATION {
            &mut self.authorization
        } else if *name == header::ORIGIN {
            &mut self.origin
        } else {
            match name.as_str() {
                "sec-fetch-site" => &mut self.fetch_site,
                "x-forwarded-proto" => &mut self.forwarded_proto,
                "x-forwarded-for" => {
                    self.forwarded_for_lines += 1;
                    &mut self.forwarded_for
                }
                "x-forwarded-host" => &mut self.forwarded_host,
                "x-forwarded-port" => &mut self.forwarded_port,
                _ => return,
            }
        };
        if slot.is_none() {
            *slot = Some(value.clone());
        }
    }

    /// Whether the client asked for HTML (a browser), which chooses page vs JSON answers.
    pub(super) fn wants_html(&self) -> bool {
        request::accepts_html(self.accept.as_ref().and_then(|v| v.to_str().ok()))
    }
}

/// One pass over the request's header fields: gathers what the size and framing limits need
/// and the [`Fields`] read later, names the fields to remove at once (forged identities), and
/// notes in `ctx` those that must not be forwarded. Allocates nothing when no field needs
/// removing.
pub(super) fn scan(req: &RequestHeader, ctx: &mut Ctx) -> (Shape, Vec<HeaderName>, Fields) {
    let mut shape = Shape::default();
    let mut doomed = Vec::new();
    let mut fields = Fields::default();
    for (name, value) in &req.headers {
        shape.add(name, value);
        let fate = ctx.rt.strip.fate(name);
        ctx.withheld |= fate.withheld(ctx.peer_trusted);
        match fate {
            Fate::Keep | Fate::ForwardedIfTrusted => fields.take(name, value),
            Fate::Strip => doomed.push(name.clone()),
            Fate::NeverForwarded => {}
        }
    }
    (shape, doomed, fields)
}

/// Whether the client asked for HTML (a browser), which chooses page vs JSON answers.
pub(super) fn wants_html(req: &RequestHeader) -> bool {
    request::accepts_html(
        req.headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    )
}

/// What [`request`] read: a request for an app or for Portcullis' own endpoints, or a
/// forward-auth check, which describes another request in its headers.
pub(super) enum Read {
    Request(RequestView),
    Check(CheckRequest),
}

/// The path nginx `auth_request`, Traefik and Caddy ask (Envoy asks below it, see
/// [`original::envoy_target`]).
const CHECK_PATH: &str = "/.portcullis/auth";

/// Reads the request: its shape, target and host. Pins what the upstream will receive to
/// what was read: the target becomes the normalised origin-form path that routing sees, and
/// an absolute-form target's authority becomes the `Host`. A forward-auth check is read for
/// what answering it needs of it: its host is checked like any other, but kept in no view
/// (the view that is decided on is the original request's, which the check describes).
pub(super) fn request(
    session: &mut Session,
    ctx: &mut Ctx,
    fields: &Fields,
    wants_html: bool,
    shape: &Shape,
) -> Result<Read, Refusal> {
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
    let host_header = fields.host.as_ref();
    let host = routed_host(authority, host_header).map_err(Refusal::Malformed)?;
    // RFC 9112 §3.2.2: an absolute-form target's authority is the request's host.
    ctx.host_header = match authority {
        Some(a) => http::HeaderValue::from_str(a).ok(),
        None => host_header.cloned(),
    };
    let path = target.normalised_path().map_err(Refusal::Malformed)?;
    let pin = Pin::new(req, &target, &path).map_err(Refusal::Malformed)?;
    let envoy = original::envoy_target(&target);
    let own = || {
        ctx.host_header
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    if envoy.is_some() || path == CHECK_PATH {
        let check = CheckRequest {
            tls: ctx.tls,
            client_ip: ctx.client_ip,
            wants_html,
            query: target.query.map(str::to_string),
            // Envoy keeps the original Host: the check's own is the original's.
            envoy: envoy.map(|target| original::EnvoyOriginal {
                target,
                authority: own().to_string(),
            }),
        };
        pin.apply(session.req_header_mut())
            .map_err(Refusal::Malformed)?;
        return Ok(Read::Check(check));
    }
    let host = request::lower_case(host);
    let path = Text::from(path);
    let query = target.query.map(str::to_string);
    let method = req.method.clone();
    pin.apply(session.req_header_mut())
        .map_err(Refusal::Malformed)?;
    let websocket = session.is_upgrade_req();
    let own = own();
    let (authority, forwarded_host) = if ctx.peer_trusted {
        let public = public_authority(&fields.forwarded_host, &fields.forwarded_port, own)
            .map_err(Refusal::Malformed)?;
        let named = request::host_name(&public).map_err(Refusal::Malformed)?;
        let other = (!named.eq_ignore_ascii_case(&host) && !own.is_empty())
            .then(|| request::lower_case(named));
        (public, other)
    } else {
        (Text::from(own), None)
    };
    Ok(Read::Request(RequestView {
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
    }))
}

/// The host a request is routed on, as sent: the target's authority (absolute-form) or
/// `Host`; both must agree when both are given; one of them is required (even of HTTP/1.0).
fn routed_host<'a>(
    authority: Option<&'a str>,
    host_header: Option<&'a http::HeaderValue>,
) -> Result<&'a str, BadRequest> {
    let host_header = host_header
        .map(|v| v.to_str().map_err(|_| BadRequest::Host))
        .transpose()?;
    match (authority, host_header) {
        (Some(authority), Some(h)) => {
            let h = request::host_name(h)?;
            if !request::host_name(authority)?.eq_ignore_ascii_case(h) {
                return Err(BadRequest::HostMismatch);
            }
            Ok(h)
        }
        (Some(authority), None) => request::host_name(authority),
        (None, Some(h)) => request::host_name(h),
        (None, None) => Err(BadRequest::NoHost),
    }
}

/// The authority the client addressed, as a trusted front proxy tells it: `X-Forwarded-Host`
/// (its first entry) and `X-Forwarded-Port`, else `own` (the request's `Host`). nginx's
/// common `proxy_set_header Host $host` drops the port, which `X-Forwarded-Host
/// $host:$server_port` or `X-Forwarded-Port` carry: return URLs, login redirects, the
/// hand-over and CSRF origin checks need it.
fn public_authority(
    forwarded_host: &Option<HeaderValue>,
    forwarded_port: &Option<HeaderValue>,
    own: &str,
) -> Result<Text, BadRequest> {
    fn first(value: &Option<HeaderValue>) -> Option<&str> {
        value
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }
    let host = match first(forwarded_host) {
        Some(h) => {
            request::host_name(h)?;
            h
        }
        None => own,
    };
    let port = match first(forwarded_port) {
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
        Some(p) if !has_port && !host.is_empty() => compact_str::format_compact!("{host}:{p}"),
        _ => Text::from(host),
    })
}

/// What makes the request the upstream will receive say exactly what was routed: the target
/// in origin-form `path?query` (Pingora would otherwise write the raw bytes it received, which
/// an app may resolve to another path), and an absolute-form target's authority as the
/// `Host`. Worked out while the request is read, applied once reading it is done.
#[derive(Default)]
struct Pin {
    uri: Option<http::Uri>,
    host: Option<HeaderValue>,
}

impl Pin {
    fn new(req: &RequestHeader, target: &Target<'_>, path: &str) -> Result<Pin, BadRequest> {
        let raw = req.raw_path();
        let same = match target.query {
            None => raw == path.as_bytes(),
            Some(q) => {
                raw.len() == path.len() + 1 + q.len()
                    && raw.starts_with(path.as_bytes())
                    && raw[path.len()] == b'?'
                    && raw.ends_with(q.as_bytes())
            }
        };
        let mut pin = Pin::default();
        if !same {
            let target = match target.query {
                Some(q) => format!("{path}?{q}"),
                None => path.to_string(),
            };
            let uri = http::Uri::builder()
                .path_and_query(target)
                .build()
                .map_err(|_| BadRequest::Target)?;
            pin.uri = Some(uri);
        }
        if let Some(authority) = target.authority {
            let value = http::HeaderValue::from_str(authority).map_err(|_| BadRequest::Host)?;
            if req.headers.get(http::header::HOST) != Some(&value) {
                pin.host = Some(value);
            }
        }
        Ok(pin)
    }

    fn apply(self, req: &mut RequestHeader) -> Result<(), BadRequest> {
        if let Some(uri) = self.uri {
            req.set_uri(uri);
        }
        if let Some(host) = self.host {
            req.insert_header(http::header::HOST, host)
                .map_err(|_| BadRequest::Host)?;
        }
        Ok(())
    }
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
pub(super) fn presented<'a>(fields: &'a Fields, headers: &'a HeaderMap) -> Presented<'a> {
    let text = |v: &'a Option<HeaderValue>| v.as_ref().and_then(|v| v.to_str().ok());
    let cookie = match fields.cookie_lines {
        0 | 1 => fields
            .cookie
            .as_ref()
            .map(|v| crate::session::cookie::text_lossy(v.as_bytes())),
        _ => cookie_header(headers),
    };
    Presented {
        cookie,
        authorization: text(&fields.authorization),
        origin: text(&fields.origin),
        fetch_site: text(&fields.fetch_site),
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
mod tests;
