//! Bytes in, engine facts out: the [`RequestView`] and the [`Presented`] credentials of a
//! request, for the proxy (the request itself) and for forward auth (the original request
//! described by `X-Original-*`, `X-Forwarded-*` or Envoy's path). This is the only place the
//! two front doors differ on the way in. Reading the proxied request also pins what the
//! upstream will receive to what was read.

use super::answer::Dialect;
use super::forwarded::{self, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use super::Ctx;
use crate::decision::Presented;
use crate::refusal::Refusal;
use crate::request::{self, BadRequest, RequestView, Target};
use http::{HeaderMap, HeaderName};
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use std::borrow::Cow;

pub(super) const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
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
    let req = session.req_header();
    let forwarded_https = ctx.peer_trusted
        && req
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
) -> Result<(RequestView, Option<String>), Refusal> {
    let req = session.req_header();
    let raw_head = || {
        session
            .as_downstream()
            .as_http1()
            .is_some_and(|h1| request::head_names_content_length(&h1.get_headers_raw_bytes()))
    };
    request::check_shape(req.version, &req.headers, req.raw_path().len(), raw_head)?;
    if req.method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(Refusal::Malformed(BadRequest::Method));
    }
    let target = Target::parse(req.raw_path()).map_err(Refusal::Malformed)?;
    // HTTP/1.1 absolute-form, or the authority Pingora took from an HTTP/2 request.
    let authority = target
        .authority
        .or_else(|| req.uri.authority().map(|a| a.as_str()));
    let host =
        routed_host(authority, req.headers.get(http::header::HOST)).map_err(Refusal::Malformed)?;
    // RFC 9112 §3.2.2: an absolute-form target's authority is the request's host.
    ctx.host_header = match authority {
        Some(a) => Some(a.to_string()),
        None => req
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    let path = target.normalised_path().map_err(Refusal::Malformed)?;
    let query = target.query.map(str::to_string);
    let envoy = envoy_target(&target);
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
    let own = ctx.host_header.as_deref().unwrap_or_default();
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
        .map(|v| String::from_utf8_lossy(v.as_bytes()));
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

/// The credentials and cross-site signals a request carries; `cookies` is its
/// [`cookie_header`].
pub(super) fn presented<'a>(headers: &'a HeaderMap, cookies: Option<&'a str>) -> Presented<'a> {
    Presented {
        cookie: cookies,
        authorization: header_str(headers, &http::header::AUTHORIZATION),
        origin: header_str(headers, &http::header::ORIGIN),
        fetch_site: header_str(headers, &SEC_FETCH_SITE),
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

/// The absolute URL the client asked for (the return URL after login).
pub(super) fn original_url(ctx: &Ctx, view: &RequestView) -> String {
    let mut url = here_url(ctx, view);
    url.set_path(&view.path);
    url.set_query(view.query.as_deref());
    url.to_string()
}

// ---------------------------------------------------------------------------------------------
// Forward auth: the original request, as the front proxy describes it
// ---------------------------------------------------------------------------------------------

/// The original target of an Envoy check, read from the raw request target before it is
/// normalised (normalising `/.portcullis/auth/envoy/../x` would climb out of the prefix).
fn envoy_target(target: &Target<'_>) -> Option<String> {
    let rest = target.path.strip_prefix("/.portcullis/auth/envoy")?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    let mut original = if rest.is_empty() {
        "/".to_string()
    } else {
        rest.to_string()
    };
    if let Some(q) = target.query {
        original.push('?');
        original.push_str(q);
    }
    Some(original)
}

/// Which front proxy asks, by the way it asks: Envoy by its path, nginx `auth_request` by
/// `X-Original-URL` (or `?mode=nginx`), anything else speaks Traefik's and Caddy's dialect.
pub(super) fn dialect(headers: &HeaderMap, auth_view: &RequestView, envoy: bool) -> Dialect {
    if envoy {
        return Dialect::Envoy;
    }
    let nginx = headers.contains_key(&X_ORIGINAL_URL)
        || auth_view.query.as_deref().is_some_and(|q| {
            url::form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "mode" && v == "nginx")
        });
    if nginx {
        Dialect::Nginx
    } else {
        Dialect::Traefik
    }
}

/// The original request a forward-auth check describes, and its URL (the return URL after
/// login). `auth_view` is the check request itself, `envoy` Envoy's original target; the
/// headers are believed only because the caller checked that the peer is a trusted proxy.
pub(super) fn original_request(
    method: &http::Method,
    headers: &HeaderMap,
    auth_view: &RequestView,
    envoy: Option<&str>,
) -> Result<(RequestView, String), Refusal> {
    original_parts(method, headers, auth_view, envoy).map_err(Refusal::BadOriginal)
}

fn original_parts(
    method: &http::Method,
    headers: &HeaderMap,
    auth_view: &RequestView,
    envoy: Option<&str>,
) -> Result<(RequestView, String), &'static str> {
    // A front proxy that appends instead of replacing puts the client's copy first.
    for name in [
        &X_ORIGINAL_URL,
        &X_ORIGINAL_METHOD,
        &X_FORWARDED_URI,
        &X_FORWARDED_METHOD,
        &X_FORWARDED_HOST,
        &X_FORWARDED_PROTO,
    ] {
        if headers.get_all(name).iter().nth(1).is_some() {
            return Err("a header describing the original request appears more than once (the front proxy must replace it, not append)");
        }
    }
    let h = |name: &HeaderName| {
        header_str(headers, name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let (method, scheme, authority, target): (&str, &str, &str, Cow<'_, str>) = if let Some(
        target,
    ) = envoy
    {
        // Envoy keeps the original method and Host, and appends the original target.
        let scheme = if auth_view.tls { "https" } else { "http" };
        (
            method.as_str(),
            scheme,
            &auth_view.authority,
            Cow::Borrowed(target),
        )
    } else if h(&X_ORIGINAL_URL).is_some()
        && (h(&X_FORWARDED_URI).is_some() || h(&X_FORWARDED_METHOD).is_some())
    {
        // A front proxy sends one description of the original request. Two mean a client
        // added one of them (nginx and Traefik pass client headers through): believing
        // either would let it choose the URL that is checked.
        return Err("both X-Original-URL and X-Forwarded-Uri/-Method: a front proxy sends only one (strip the other from client requests)");
    } else if let Some(original_url) = h(&X_ORIGINAL_URL) {
        // Split by hand, not with a URL parser: the raw target as sent is what
        // normalisation below must see (a parser re-encodes it), and this runs on every
        // check.
        let (scheme, after_scheme) = original_url
            .split_once("://")
            .ok_or("X-Original-URL is not an absolute URL")?;
        let scheme = match scheme {
            s if s.eq_ignore_ascii_case("https") => "https",
            s if s.eq_ignore_ascii_case("http") => "http",
            _ => return Err("X-Original-URL must be an http(s) URL"),
        };
        let (authority, target) = match after_scheme.find(['/', '?', '#']) {
            Some(i) => (&after_scheme[..i], &after_scheme[i..]),
            None => (after_scheme, "/"),
        };
        let target = if target.starts_with(['?', '#']) {
            Cow::Owned(format!("/{target}"))
        } else {
            Cow::Borrowed(target)
        };
        (
            h(&X_ORIGINAL_METHOD).unwrap_or("GET"),
            scheme,
            authority,
            target,
        )
    } else {
        let (Some(host), Some(uri)) = (h(&X_FORWARDED_HOST), h(&X_FORWARDED_URI)) else {
            return Err(
                "forward-auth needs X-Forwarded-Host and X-Forwarded-Uri, or X-Original-URL",
            );
        };
        if !uri.starts_with('/') {
            return Err("X-Forwarded-Uri must start with /");
        }
        let scheme = match h(&X_FORWARDED_PROTO) {
            Some(p) if p.eq_ignore_ascii_case("https") => "https",
            Some(p) if p.eq_ignore_ascii_case("http") => "http",
            Some(_) => return Err("X-Forwarded-Proto must be http or https"),
            None => "http",
        };
        (
            h(&X_FORWARDED_METHOD).unwrap_or("GET"),
            scheme,
            host,
            Cow::Borrowed(uri),
        )
    };
    let method = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| "the original method is not a valid HTTP method")?;
    if authority.contains(['/', '@', '\\']) {
        return Err("invalid original host");
    }
    let host = request::parse_host(authority).map_err(|_| "invalid original host")?;
    if target.len() > request::MAX_TARGET_BYTES {
        return Err("original request target too long");
    }
    if target.contains('#') {
        // nginx routes on the part before `#`; an app may resolve the whole.
        return Err("the original request target must not carry a fragment (#)");
    }
    if resolves_differently(target.split('?').next().unwrap_or_default()) {
        return Err("the original path has dot segments, encoded dots or empty segments: the app could resolve it differently than Portcullis");
    }
    let (path, query) = request::split_target(&target).map_err(|e| e.reason())?;
    let mut url = format!("{scheme}://{authority}{path}");
    if let Some(q) = &query {
        url.push('?');
        url.push_str(q);
    }
    let view = RequestView {
        method,
        tls: scheme == "https",
        host,
        forwarded_host: None,
        authority: authority.to_string(),
        path,
        query,
        client_ip: auth_view.client_ip,
        wants_html: auth_view.wants_html,
        // `Upgrade` is hop-by-hop and nginx does not pass it to `auth_request`; the
        // handshake's own headers are end-to-end.
        websocket: headers
            .get(http::header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
            || headers.contains_key(http::header::SEC_WEBSOCKET_KEY),
    };
    Ok((view, url))
}

/// Whether a raw path is one the app behind the front proxy may route differently than
/// Portcullis' normalised form: the front proxy forwards the raw target, and a prefix router in
/// the app that does not resolve `..` would send `/admin/../public` to its admin handler while
/// Portcullis decided on `/public`. In proxy mode the app gets the normalised path instead.
fn resolves_differently(raw_path: &str) -> bool {
    raw_path.contains("//")
        || raw_path
            .as_bytes()
            .windows(3)
            .any(|w| w[0] == b'%' && w[1] == b'2' && (w[2] == b'e' || w[2] == b'E'))
        || raw_path.split('/').any(|seg| seg == "." || seg == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth_view() -> RequestView {
        RequestView {
            method: http::Method::GET,
            tls: false,
            host: "auth.internal".into(),
            forwarded_host: None,
            authority: "auth.internal:4180".into(),
            path: "/.portcullis/auth".into(),
            query: None,
            client_ip: Some("203.0.113.7".parse().unwrap()),
            wants_html: true,
            websocket: false,
        }
    }

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

    fn read(pairs: &[(&str, &str)]) -> Result<(RequestView, String), Refusal> {
        original_request(&http::Method::GET, &headers(pairs), &auth_view(), None)
    }

    #[test]
    fn nginx_original_url() {
        let (v, url) = read(&[
            ("x-original-url", "HTTPS://App.Example.com:8443/a/%62?x=1"),
            ("x-original-method", "post"),
        ])
        .unwrap();
        assert_eq!(v.method, http::Method::POST);
        assert!(v.tls);
        assert_eq!(v.host, "app.example.com");
        assert_eq!(v.authority, "App.Example.com:8443");
        assert_eq!(v.path, "/a/b");
        assert_eq!(v.query.as_deref(), Some("x=1"));
        assert_eq!(v.client_ip, auth_view().client_ip);
        assert!(v.wants_html);
        assert_eq!(url, "https://App.Example.com:8443/a/b?x=1");
        let (v, _) = read(&[("x-original-url", "http://app.test?q")]).unwrap();
        assert_eq!((v.path.as_str(), v.query.as_deref()), ("/", Some("q")));
        let (v, _) = read(&[("x-original-url", "http://app.test")]).unwrap();
        assert_eq!(v.path, "/");
    }

    #[test]
    fn traefik_forwarded_headers() {
        let (v, url) = read(&[
            ("x-forwarded-host", "app.test"),
            ("x-forwarded-uri", "/x/y?z"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-method", "DELETE"),
            ("sec-websocket-key", "abc"),
        ])
        .unwrap();
        assert_eq!(v.method, http::Method::DELETE);
        assert_eq!((v.host.as_str(), v.path.as_str()), ("app.test", "/x/y"));
        assert!(v.tls && v.websocket);
        assert_eq!(url, "https://app.test/x/y?z");
    }

    #[test]
    fn envoy_keeps_method_and_host() {
        let mut auth = auth_view();
        auth.authority = "app.test".into();
        auth.host = "app.test".into();
        let (v, url) =
            original_request(&http::Method::PUT, &HeaderMap::new(), &auth, Some("/p?q")).unwrap();
        assert_eq!(v.method, http::Method::PUT);
        assert_eq!((v.host.as_str(), v.path.as_str()), ("app.test", "/p"));
        assert_eq!(url, "http://app.test/p?q");
        let t = Target::parse(b"/.portcullis/auth/envoy/a/../b?c").unwrap();
        assert_eq!(envoy_target(&t).as_deref(), Some("/a/../b?c"));
        let t = Target::parse(b"/.portcullis/auth/envoyx").unwrap();
        assert_eq!(envoy_target(&t), None);
    }

    #[test]
    fn unusable_descriptions_are_refused() {
        for pairs in [
            &[][..],
            &[("x-forwarded-host", "app.test")],
            &[("x-forwarded-host", "app.test"), ("x-forwarded-uri", "x")],
            &[
                ("x-forwarded-host", "app.test"),
                ("x-forwarded-uri", "/x"),
                ("x-forwarded-proto", "ftp"),
            ],
            &[("x-original-url", "/relative")],
            &[("x-original-url", "ftp://app.test/")],
            &[("x-original-url", "http://app.test/x#/../admin")],
            &[("x-original-url", "http://app.test#x")],
            &[
                ("x-forwarded-host", "app.test"),
                ("x-forwarded-uri", "/x#y"),
            ],
            &[("x-original-url", "http://evil@app.test/")],
            &[("x-original-url", "http://app.test/a/../b")],
            &[("x-original-url", "http://app.test/a/%2e%2e/b")],
            &[("x-original-url", "http://app.test//admin")],
            &[("x-original-url", "http://app.test/a%2Fb")],
            &[
                ("x-original-url", "http://app.test/"),
                ("x-original-method", "G T"),
            ],
            &[
                ("x-original-url", "http://app.test/"),
                ("x-forwarded-uri", "/admin"),
            ],
            &[
                ("x-original-url", "http://app.test/public"),
                ("x-original-url", "http://app.test/admin"),
            ],
            &[
                ("x-forwarded-host", "app.test"),
                ("x-forwarded-host", "admin.test"),
                ("x-forwarded-uri", "/x"),
            ],
            &[
                ("x-forwarded-host", "app.test"),
                ("x-forwarded-uri", "/public"),
                ("x-forwarded-uri", "/admin"),
            ],
        ] {
            let got = read(pairs);
            assert!(
                matches!(got, Err(Refusal::BadOriginal(_))),
                "{pairs:?}: {got:?}"
            );
        }
    }

    #[test]
    fn paths_an_app_may_resolve_differently() {
        for raw in [
            "/a/../b",
            "/a/./b",
            "//a",
            "/a//b",
            "/a/%2e%2e/b",
            "/a/%2E/b",
            "/..",
        ] {
            assert!(resolves_differently(raw), "{raw}");
        }
        for raw in [
            "/",
            "/a/b",
            "/a.b/c..d",
            "/.well-known/x",
            "/a/%2Fb",
            "/%2d",
        ] {
            assert!(!resolves_differently(raw), "{raw}");
        }
    }

    #[test]
    fn dialects() {
        let v = auth_view();
        assert_eq!(dialect(&HeaderMap::new(), &v, true), Dialect::Envoy);
        assert_eq!(
            dialect(&headers(&[("x-original-url", "http://a/")]), &v, false),
            Dialect::Nginx
        );
        let mut q = auth_view();
        q.query = Some("mode=nginx".into());
        assert_eq!(dialect(&HeaderMap::new(), &q, false), Dialect::Nginx);
        assert_eq!(dialect(&HeaderMap::new(), &v, false), Dialect::Traefik);
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
