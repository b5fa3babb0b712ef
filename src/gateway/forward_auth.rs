//! The second front door: `/.portcullis/auth` (nginx `auth_request`, Traefik `ForwardAuth`,
//! Caddy `forward_auth`) and `/.portcullis/auth/envoy/<path>` (Envoy `ext_authz`, HTTP).
//! It rebuilds the *original* request from the headers the front proxy sets, asks the same
//! [`decide`](crate::decision::decide) as the proxy, and answers in the form each front proxy
//! understands. Those headers are believed only from `server.trusted_proxies`.

use super::respond::{self, Reply};
use super::{cookie_header, deny, header_str, Ctx, SEC_FETCH_SITE};
use crate::auth::render_identity_headers;
use crate::decision::{self, Decision, Presented};
use crate::headers::SecurityHeaders;
use crate::request::{self, RequestView};
use http::{HeaderName, StatusCode};
use pingora::proxy::Session;
use pingora::Result;
use std::sync::Arc;

const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");

static NO_SECURITY_HEADERS: SecurityHeaders = SecurityHeaders {
    always: Vec::new(),
    hsts: None,
};

/// How the front proxy wants "log in first" said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    /// Traefik, Caddy, Envoy: the answer goes to the browser as is, so a 302 works.
    Redirect,
    /// nginx `auth_request` understands only 2xx, 401 and 403: 401 carrying `Location`.
    Nginx,
}

/// The original request, as the front proxy described it.
struct Original {
    view: RequestView,
    /// `scheme://authority/path?query`, the return URL after login.
    url: String,
    flavor: Flavor,
}

/// The original target of an Envoy check, read from the raw request target before it is
/// normalised (normalising `/.portcullis/auth/envoy/../x` would climb out of the prefix).
pub(super) fn envoy_target(target: &request::Target<'_>) -> Option<String> {
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

/// Answers a forward-auth check; `envoy` is the original target for Envoy's form.
pub(super) async fn handle(
    session: &mut Session,
    ctx: &mut Ctx,
    auth_view: &RequestView,
    envoy: Option<String>,
) -> Result<bool> {
    let html = auth_view.wants_html;
    if !ctx.peer_trusted {
        crate::telemetry::audit(
            "access_denied",
            serde_json::json!({
                "client_ip": ctx.peer_ip.map(|ip| ip.to_string()),
                "route": "forward-auth",
                "reason": "forward-auth request from a peer not in server.trusted_proxies",
            }),
        );
        return deny(
            session,
            ctx,
            StatusCode::FORBIDDEN,
            "forward-auth requests are accepted only from trusted proxies",
            html,
        )
        .await;
    }
    let nginx = envoy.is_none() && asks_like_nginx(session.req_header(), auth_view);
    let original = match original_request(session, ctx, auth_view, envoy, nginx) {
        Ok(o) => o,
        Err(reason) => {
            // nginx turns anything but 2xx/401/403 from the auth request into a 500.
            let status = if nginx {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::BAD_REQUEST
            };
            return deny(session, ctx, status, reason, html).await;
        }
    };
    let rt = Arc::clone(&ctx.rt);
    let req = session.req_header();
    let cookies = cookie_header(req);
    let presented = Presented {
        cookie: cookies.as_deref(),
        authorization: header_str(req, &http::header::AUTHORIZATION),
        origin: header_str(req, &http::header::ORIGIN),
        fetch_site: header_str(req, &SEC_FETCH_SITE),
    };
    let decided = decision::decide(&rt, &original.view, &presented).await;
    drop(cookies);
    if decided.clear_session_cookie {
        ctx.clear_cookie = super::clearing_cookie(&rt);
    }
    answer(session, ctx, &original, decided.decision).await
}

/// nginx `auth_request` is recognised by `X-Original-URL` or asked for with `?mode=nginx`.
fn asks_like_nginx(req: &pingora::http::RequestHeader, auth_view: &RequestView) -> bool {
    req.headers.contains_key(&X_ORIGINAL_URL)
        || auth_view.query.as_deref().is_some_and(|q| {
            url::form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "mode" && v == "nginx")
        })
}

/// Reads the original method, scheme, host and target from the forward-auth request;
/// `nginx` says which dialect the answer is in (see [`asks_like_nginx`]).
fn original_request(
    session: &Session,
    ctx: &Ctx,
    auth_view: &RequestView,
    envoy: Option<String>,
    nginx: bool,
) -> std::result::Result<Original, &'static str> {
    use std::borrow::Cow;
    let req = session.req_header();
    let h = |name: &HeaderName| {
        header_str(req, name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };

    let (method, scheme, authority, target): (&str, &str, &str, Cow<'_, str>) = if let Some(
        target,
    ) = envoy
    {
        // Envoy keeps the original method and Host, and appends the original target.
        let scheme = if ctx.tls { "https" } else { "http" };
        (
            req.method.as_str(),
            scheme,
            &auth_view.authority,
            Cow::Owned(target),
        )
    } else if h(&X_ORIGINAL_URL).is_some()
        && (h(&X_FORWARDED_URI).is_some() || h(&X_FORWARDED_METHOD).is_some())
    {
        // A front proxy sends one description of the original request. Two mean a client
        // added one of them (nginx and Traefik pass client headers through): believing either
        // would let it choose the URL that is checked.
        return Err("both X-Original-URL and X-Forwarded-Uri/-Method: a front proxy sends only one (strip the other from client requests)");
    } else if let Some(original_url) = h(&X_ORIGINAL_URL) {
        // Split by hand, not with a URL parser: the raw target as sent is what normalisation
        // below must see (a parser re-encodes it), and this runs on every check.
        let (scheme, after_scheme) = original_url
            .split_once("://")
            .ok_or("X-Original-URL is not an absolute URL")?;
        let scheme = match scheme {
            s if s.eq_ignore_ascii_case("https") => "https",
            s if s.eq_ignore_ascii_case("http") => "http",
            _ => return Err("X-Original-URL must be an http(s) URL"),
        };
        if after_scheme.contains('#') {
            // nginx routes on the part before `#`; an app may resolve the whole.
            return Err("X-Original-URL must not carry a fragment (#)");
        }
        let (authority, target) = match after_scheme.find(['/', '?']) {
            Some(i) => (&after_scheme[..i], &after_scheme[i..]),
            None => (after_scheme, "/"),
        };
        let target = if target.starts_with('?') {
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
        let (Some(host), Some(uri)) = (h(&super::forwarded::X_FORWARDED_HOST), h(&X_FORWARDED_URI))
        else {
            return Err(
                "forward-auth needs X-Forwarded-Host and X-Forwarded-Uri, or X-Original-URL",
            );
        };
        if !uri.starts_with('/') {
            return Err("X-Forwarded-Uri must start with /");
        }
        let scheme = match h(&super::forwarded::X_FORWARDED_PROTO) {
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
    let flavor = if nginx {
        Flavor::Nginx
    } else {
        Flavor::Redirect
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
        authority: authority.to_string(),
        path,
        query,
        client_ip: ctx.client_ip,
        wants_html: auth_view.wants_html,
        // `Upgrade` is hop-by-hop and nginx does not pass it to `auth_request`; the
        // handshake's own headers are end-to-end.
        websocket: req
            .headers
            .get(http::header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
            || req.headers.contains_key(http::header::SEC_WEBSOCKET_KEY),
    };
    Ok(Original { view, url, flavor })
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

/// Answers a decision in the forward-auth dialect.
async fn answer(
    session: &mut Session,
    ctx: &mut Ctx,
    original: &Original,
    decision: Decision,
) -> Result<bool> {
    let html = original.view.wants_html;
    match decision {
        Decision::Forward { route, identity } => {
            ctx.route = Some(route);
            // Anonymous (public) answers carry the identity headers empty: front proxies that
            // copy them onto the request (Traefik, Caddy) then overwrite whatever a client sent.
            let mut headers = match identity {
                Some(who) => render_identity_headers(&ctx.rt.identity_headers, &who),
                None => ctx
                    .rt
                    .identity_headers
                    .iter()
                    .map(|(n, _)| (n.clone(), http::HeaderValue::from_static("")))
                    .collect(),
            };
            headers.push((
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-store"),
            ));
            if let Some(clear) = &ctx.clear_cookie {
                headers.push((http::header::SET_COOKIE, clear.clone()));
            }
            // The front proxy reads this answer, no browser does: the page security headers
            // would only be bytes to write on every check.
            respond::write(
                session,
                Reply {
                    status: StatusCode::OK,
                    content_type: None,
                    body: bytes::Bytes::new(),
                    security: &NO_SECURITY_HEADERS,
                    extra: &headers,
                    tls: ctx.tls,
                },
            )
            .await?;
            Ok(true)
        }
        Decision::Login {
            route,
            provider,
            step_up,
        } => {
            ctx.route = Some(route);
            let status = match original.flavor {
                Flavor::Redirect => StatusCode::FOUND,
                Flavor::Nginx => StatusCode::UNAUTHORIZED,
            };
            super::send_to_login(session, ctx, status, &original.url, &provider, step_up).await
        }
        Decision::Deny {
            status,
            reason,
            route,
            challenge,
        } => {
            ctx.route = route;
            // nginx turns anything but 2xx/401/403 from the auth request into a 500.
            let status = match (original.flavor, status.as_u16()) {
                (Flavor::Nginx, 400 | 404) => StatusCode::FORBIDDEN,
                _ => status,
            };
            let html = html && status != StatusCode::UNAUTHORIZED;
            super::deny_with(session, ctx, status, reason, html, challenge.as_deref()).await
        }
    }
}
