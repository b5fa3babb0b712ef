//! The Pingora adapter: turns a downstream request into a [`RequestView`], asks
//! [`decide`](crate::decision::decide), and turns the [`Decision`] into a proxied request or a
//! response of our own. No policy lives here.

mod forward_auth;
mod forwarded;
mod header_deadline;
pub mod respond;

pub use header_deadline::HeadDeadline;

use crate::auth::endpoints::{self, login_url, Answer, EndpointRequest};
use crate::auth::render_identity_headers;
use crate::decision::{self, Decision, Presented};
use crate::request::{self, BadRequest, RequestView};
use crate::routes::Route;
use crate::runtime::Runtime;
use crate::telemetry::{self, metrics};
use crate::upstream::Upstream;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::StatusCode;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{ErrorSource, ErrorType};
use respond::Reply;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// The proxy service. Holds only the swappable runtime.
pub struct Gateway {
    pub runtime: Arc<ArcSwap<Runtime>>,
}

/// Per-request state, created when the request arrives.
pub struct Ctx {
    /// The configuration this request is served under, even if a reload happens meanwhile.
    rt: Arc<Runtime>,
    start: Instant,
    route: Option<Arc<Route>>,
    /// Whether the client reached us over TLS (or a trusted proxy said so).
    tls: bool,
    peer_ip: Option<IpAddr>,
    peer_trusted: bool,
    client_ip: Option<IpAddr>,
    /// The `Host` the client named, for `X-Forwarded-Host`.
    host_header: Option<String>,
    /// Identity headers rendered for this request's session (empty when anonymous).
    identity: Vec<(http::HeaderName, http::HeaderValue)>,
    /// `Set-Cookie` clearing a session cookie that named no live session, for whatever answer
    /// this request gets.
    clear_cookie: Option<http::HeaderValue>,
}

impl Ctx {
    fn route_label(&self) -> &str {
        self.route.as_deref().map_or("-", |r| &r.name)
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            rt: self.runtime.load_full(),
            start: Instant::now(),
            route: None,
            tls: false,
            peer_ip: None,
            peer_trusted: false,
            client_ip: None,
            host_header: None,
            identity: Vec::new(),
            clear_cookie: None,
        }
    }

    /// Runs first for every request. Strips forged identity headers, normalises the path,
    /// decides, and answers everything that is not proxied. `Ok(true)` means a response was
    /// written here and the request ends.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        header_deadline::head_received();
        let rt = Arc::clone(&ctx.rt);
        session.set_keepalive(Some(rt.idle_timeout.as_secs()));

        let doomed = rt.strip.to_remove(&session.req_header().headers);
        for name in doomed {
            session.req_header_mut().remove_header(&name);
        }

        ctx.peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| request::canonical(a.ip()));
        ctx.peer_trusted = ctx
            .peer_ip
            .is_some_and(|ip| rt.trusted_proxies.contains(ip));
        let downstream_tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let req = session.req_header();
        let forwarded_https = ctx.peer_trusted
            && req
                .headers
                .get(&forwarded::X_FORWARDED_PROTO)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
        ctx.tls = downstream_tls || forwarded_https;
        let xff = forwarded::all_values(&req.headers, &forwarded::X_FORWARDED_FOR);
        ctx.client_ip = rt.trusted_proxies.client_ip(ctx.peer_ip, xff.as_deref());
        let wants_html = request::accepts_html(
            req.headers
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok()),
        );

        if let Err((status, reason)) =
            request::check_shape(req.version, &req.headers, req.raw_path().len())
        {
            return deny(session, ctx, status, reason, wants_html).await;
        }
        if req.headers.contains_key(http::header::TRANSFER_ENCODING)
            && session
                .as_downstream()
                .as_http1()
                .is_some_and(|h1| request::head_names_content_length(&h1.get_headers_raw_bytes()))
        {
            // Request smuggling: two framings that servers behind us may read differently.
            // Pingora already dropped the Content-Length and will close the connection.
            return deny(
                session,
                ctx,
                StatusCode::BAD_REQUEST,
                "both Content-Length and Transfer-Encoding",
                wants_html,
            )
            .await;
        }

        let (view, envoy) = match read_request(session, ctx, wants_html) {
            Ok(read) => read,
            Err(bad) => {
                return deny(
                    session,
                    ctx,
                    StatusCode::BAD_REQUEST,
                    bad.reason(),
                    wants_html,
                )
                .await;
            }
        };

        if envoy.is_some() || view.path == "/.portcullis/auth" {
            return forward_auth::handle(session, ctx, &view, envoy).await;
        }
        if let Some(endpoint) = view.path.strip_prefix("/.portcullis/") {
            return self.own_endpoint(session, ctx, &view, endpoint).await;
        }

        let req = session.req_header();
        let cookies = cookie_header(req);
        let presented = Presented {
            cookie: cookies.as_deref(),
            authorization: header_str(req, &http::header::AUTHORIZATION),
            origin: header_str(req, &http::header::ORIGIN),
            fetch_site: header_str(req, &SEC_FETCH_SITE),
        };
        let decided = decision::decide(&rt, &view, &presented).await;
        drop(cookies);
        if decided.clear_session_cookie {
            ctx.clear_cookie = clearing_cookie(&rt);
        }
        self.answer(session, ctx, &view, decided.decision).await
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(Upstream::Http(up)) = ctx.route.as_deref().map(|r| &r.upstream) else {
            return Error::e_explain(
                ErrorType::InternalError,
                "no HTTP upstream for this request",
            );
        };
        match up.peer().await {
            Ok(peer) => Ok(Box::new(peer)),
            Err(e) => Err(Error::explain(
                ErrorType::ConnectNoRoute,
                format!("resolving {}: {e}", up.url),
            )
            .into_up()),
        }
    }

    /// Runs once the upstream connection is ready: sets `X-Forwarded-*` from the real peer and
    /// the route's added headers.
    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(route) = ctx.route.clone() {
            forwarded::prepare(upstream_request, ctx, &route)?;
        }
        Ok(())
    }

    /// Runs on every proxied response: removes `remove_response` headers, sets the route's
    /// response headers, and adds security headers the upstream did not set.
    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        for name in &ctx.rt.remove_response {
            resp.remove_header(name);
        }
        if let Some(clear) = &ctx.clear_cookie {
            resp.append_header(http::header::SET_COOKIE, clear.clone())?;
        }
        let Some(route) = ctx.route.as_deref() else {
            return Ok(());
        };
        for (n, v) in &route.headers.response_add {
            resp.insert_header(n.clone(), v.clone())?;
        }
        let security = &route.headers.security;
        for (n, v) in &security.always {
            if !resp.headers.contains_key(n) {
                resp.insert_header(n.clone(), v.clone())?;
            }
        }
        if let (true, Some(v)) = (ctx.tls, &security.hsts) {
            if !resp
                .headers
                .contains_key(http::header::STRICT_TRANSPORT_SECURITY)
            {
                resp.insert_header(http::header::STRICT_TRANSPORT_SECURITY, v.clone())?;
            }
        }
        Ok(())
    }

    /// Answers a request that failed: 502 when the upstream is unreachable, 504 when it timed
    /// out, 400 for a broken client request; always our own page, never the upstream's words.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if *e.esource() == ErrorSource::Upstream =>
            {
                504
            }
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if *e.esource() == ErrorSource::Upstream {
            match ctx.route.as_deref() {
                Some(r) => r.metrics.upstream_errors.inc(),
                None => metrics::UPSTREAM_ERRORS.with_label_values(&["-"]).inc(),
            }
        }
        if code > 0 && session.response_written().is_none() {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
            let reason = match code {
                502 => "the application behind this address is not reachable",
                504 => "the application behind this address did not answer in time",
                400 => "the request could not be read",
                _ => "the request failed",
            };
            let html = request::accepts_html(
                session
                    .req_header()
                    .headers
                    .get(http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok()),
            );
            let (ct, body) = respond::error_body(status, reason, html);
            let rt = Arc::clone(&ctx.rt);
            let _ = respond::write(
                session,
                Reply {
                    status,
                    content_type: Some(ct),
                    body,
                    security: &rt.own_pages,
                    extra: &[],
                    tls: ctx.tls,
                },
            )
            .await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Runs when the request is over: metrics and the access log line.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        header_deadline::request_done();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let route = ctx.route_label();
        let elapsed = ctx.start.elapsed();
        let status_code = StatusCode::from_u16(status).ok();
        let status_text = status_code.as_ref().map_or("0", |s| s.as_str());
        match ctx.route.as_deref() {
            Some(r) => {
                if status == 200 {
                    r.metrics.ok.inc();
                } else {
                    metrics::REQUESTS
                        .with_label_values(&[route, status_text])
                        .inc();
                }
                r.metrics.duration.observe(elapsed.as_secs_f64());
            }
            None => {
                metrics::REQUESTS
                    .with_label_values(&[route, status_text])
                    .inc();
                metrics::DURATION
                    .with_label_values(&[route])
                    .observe(elapsed.as_secs_f64());
            }
        }
        if ctx.rt.logging.access_log {
            let req = session.req_header();
            telemetry::access(&telemetry::AccessRecord {
                method: req.method.as_str(),
                host: ctx.host_header.as_deref().unwrap_or(""),
                path: req.uri.path(),
                status,
                duration: elapsed,
                route,
                upstream: ctx.route.as_deref().map_or("-", |r| r.upstream.describe()),
                client_ip: ctx.client_ip,
                error: e.map(|e| e.etype().as_str()),
            });
        }
    }

    /// What Pingora prints about a failed request: never the query string, which may hold
    /// codes or tokens.
    fn request_summary(&self, session: &Session, ctx: &Ctx) -> String {
        let req = session.req_header();
        format!(
            "{} {}{} route={}",
            req.method,
            ctx.host_header.as_deref().unwrap_or(""),
            req.uri.path(),
            ctx.route_label()
        )
    }
}

impl Gateway {
    /// Turns a decision into the proxied request or our own response.
    async fn answer(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        view: &RequestView,
        decision: Decision,
    ) -> Result<bool> {
        match decision {
            Decision::Deny {
                status,
                reason,
                route,
                challenge,
            } => {
                ctx.route = route;
                // Not logged in and not a browser navigation (an API call, a form POST): the
                // answer is for a program, whatever Accept says (SPEC §5).
                let html = view.wants_html && status != StatusCode::UNAUTHORIZED;
                deny_with(session, ctx, status, reason, html, challenge.as_deref()).await
            }
            Decision::Login {
                route,
                provider,
                step_up,
            } => {
                ctx.route = Some(route);
                let rd = original_url(ctx, view);
                send_to_login(session, ctx, StatusCode::FOUND, &rd, &provider, step_up).await
            }
            Decision::Forward { route, identity } => {
                ctx.route = Some(Arc::clone(&route));
                if let Some(identity) = &identity {
                    ctx.identity = render_identity_headers(&ctx.rt.identity_headers, identity);
                }
                match &route.upstream {
                    Upstream::Http(_) => Ok(false),
                    Upstream::None => {
                        deny(
                            session,
                            ctx,
                            StatusCode::NOT_FOUND,
                            "this address only answers forward-auth checks",
                            view.wants_html,
                        )
                        .await
                    }
                    Upstream::Static(status) => {
                        answer_as_upstream(session, ctx, &route, *status, None, bytes::Bytes::new())
                            .await
                    }
                    Upstream::Echo => {
                        let mut seen = session.req_header().clone();
                        forwarded::prepare(&mut seen, ctx, &route)?;
                        let (ct, body) = respond::echo_body(&seen, &route.name, view.wants_html);
                        answer_as_upstream(session, ctx, &route, StatusCode::OK, Some(ct), body)
                            .await
                    }
                }
            }
        }
    }

    /// `/.portcullis/*`: served on route hosts and the public URL's host.
    async fn own_endpoint(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        view: &RequestView,
        endpoint: &str,
    ) -> Result<bool> {
        let Some(auth) = ctx.rt.auth.clone() else {
            return deny(
                session,
                ctx,
                StatusCode::NOT_FOUND,
                "login is not configured",
                view.wants_html,
            )
            .await;
        };
        let public_host = auth.config.public_url.host_str() == Some(view.host.as_str());
        if !public_host
            && ctx.rt.routes.find(&view.host, "/").is_none()
            && ctx.rt.routes.find(&view.host, &view.path).is_none()
        {
            return deny(
                session,
                ctx,
                StatusCode::NOT_FOUND,
                "no route for this host and path",
                view.wants_html,
            )
            .await;
        }
        let cookies = cookie_header(session.req_header());
        let here = here_url(ctx, view);
        let req = EndpointRequest {
            method: &view.method,
            endpoint,
            query: view.query.as_deref(),
            here,
            cookie_header: cookies.as_deref(),
            wants_html: view.wants_html,
            client_ip: ctx.client_ip,
        };
        let answer = endpoints::handle(&auth, req).await;
        write_answer(session, ctx, answer).await
    }
}

/// The `Set-Cookie` that clears the session cookie.
fn clearing_cookie(rt: &Runtime) -> Option<http::HeaderValue> {
    let auth = rt.auth.as_ref()?;
    http::HeaderValue::from_str(&auth.config.cookie.clear_cookie()).ok()
}

const SEC_FETCH_SITE: http::HeaderName = http::HeaderName::from_static("sec-fetch-site");

/// A request header as text, when present and visible ASCII.
fn header_str<'a>(req: &'a RequestHeader, name: &http::HeaderName) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Every `Cookie` header of the request joined (HTTP/2 may split them), as text. A header
/// with bytes that are not UTF-8 is read with replacement characters: another cookie's odd
/// bytes never hide ours.
fn cookie_header(req: &RequestHeader) -> Option<std::borrow::Cow<'_, str>> {
    let mut values = req
        .headers
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
            Some(std::borrow::Cow::Owned(joined))
        }
    }
}

/// `scheme://host[:port]` as the client addressed us.
fn here_url(ctx: &Ctx, view: &RequestView) -> url::Url {
    let scheme = if ctx.tls { "https" } else { "http" };
    let authority = ctx.host_header.as_deref().unwrap_or(view.host.as_str());
    url::Url::parse(&format!("{scheme}://{authority}/"))
        .unwrap_or_else(|_| url::Url::parse("http://invalid/").expect("a constant URL parses"))
}

/// The absolute URL the client asked for (the return URL after login).
fn original_url(ctx: &Ctx, view: &RequestView) -> String {
    let mut url = here_url(ctx, view);
    url.set_path(&view.path);
    url.set_query(view.query.as_deref());
    url.to_string()
}

/// Sends a browser to log in and come back to `rd`: a 302, or (nginx forward auth) a 401
/// carrying the same `Location`.
async fn send_to_login(
    session: &mut Session,
    ctx: &Ctx,
    status: StatusCode,
    rd: &str,
    provider: &str,
    step_up: bool,
) -> Result<bool> {
    let Some(auth) = ctx.rt.auth.clone() else {
        return deny(
            session,
            ctx,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            false,
        )
        .await;
    };
    let answer = Answer {
        status,
        location: Some(login_url(&auth, rd, provider, step_up)),
        set_cookies: Vec::new(),
        // Browsers follow the Location; keep the page tiny.
        content_type: Some("text/plain; charset=utf-8"),
        body: bytes::Bytes::from_static(b"Sign in required\n"),
    };
    write_answer(session, ctx, answer).await
}

/// Writes an endpoint's answer with our own pages' headers.
async fn write_answer(session: &mut Session, ctx: &Ctx, answer: Answer) -> Result<bool> {
    write_answer_with(session, ctx, answer, &[]).await
}

/// Like [`write_answer`], with further headers (identity headers of a forward-auth answer).
async fn write_answer_with(
    session: &mut Session,
    ctx: &Ctx,
    answer: Answer,
    headers: &[(http::HeaderName, http::HeaderValue)],
) -> Result<bool> {
    let mut extra = headers.to_vec();
    if let Some(clear) = &ctx.clear_cookie {
        extra.push((http::header::SET_COOKIE, clear.clone()));
    }
    if let Some(loc) = &answer.location {
        if let Ok(v) = http::HeaderValue::from_str(loc) {
            extra.push((http::header::LOCATION, v));
        }
    }
    for c in &answer.set_cookies {
        if let Ok(v) = http::HeaderValue::from_str(c) {
            extra.push((http::header::SET_COOKIE, v));
        }
    }
    respond::write(
        session,
        Reply {
            status: answer.status,
            content_type: answer.content_type,
            body: answer.body,
            security: &ctx.rt.own_pages,
            extra: &extra,
            tls: ctx.tls,
        },
    )
    .await?;
    Ok(true)
}

/// Builds the engine's view of the request from the request line and `Host`, and pins what
/// the upstream will receive to it: the target becomes the normalised origin-form path that
/// routing sees, and an absolute-form target's authority becomes the `Host`. Returns the view
/// and, for Envoy checks, the original target; or says why the request cannot be routed.
fn read_request(
    session: &mut Session,
    ctx: &mut Ctx,
    wants_html: bool,
) -> std::result::Result<(RequestView, Option<String>), BadRequest> {
    let req = session.req_header();
    let target = request::Target::parse(req.raw_path())?;
    // HTTP/1.1 absolute-form, or the authority Pingora took from an HTTP/2 request.
    let authority = target
        .authority
        .or_else(|| req.uri.authority().map(|a| a.as_str()));
    let host_header = req
        .headers
        .get(http::header::HOST)
        .map(|v| v.to_str().map_err(|_| BadRequest::Host));
    let host = match (authority, host_header) {
        (Some(authority), Some(h)) => {
            let h = request::parse_host(h?)?;
            if request::parse_host(authority)? != h {
                return Err(BadRequest::HostMismatch);
            }
            h
        }
        (Some(authority), None) => request::parse_host(authority)?,
        (None, Some(h)) => request::parse_host(h?)?,
        (None, None) => String::new(),
    };
    // RFC 9112 §3.2.2: an absolute-form target's authority is the request's host.
    ctx.host_header = match authority {
        Some(a) => Some(a.to_string()),
        None => req
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    let path = target.normalised_path()?;
    let query = target.query.map(str::to_string);
    let envoy = forward_auth::envoy_target(&target);
    let method = req.method.clone();
    let absolute_authority = target.authority.map(str::to_string);
    let websocket = session.is_upgrade_req();
    pin_upstream_request(
        session.req_header_mut(),
        &path,
        query.as_deref(),
        absolute_authority.as_deref(),
    )?;
    let view = RequestView {
        method,
        tls: ctx.tls,
        host,
        authority: ctx.host_header.clone().unwrap_or_default(),
        path,
        query,
        client_ip: ctx.client_ip,
        wants_html,
        websocket,
    };
    Ok((view, envoy))
}

/// Makes the request the upstream will receive say exactly what was routed: the target is
/// `path?query` in origin-form (Pingora would otherwise write the raw bytes it received, which
/// an app may resolve to another path), and an absolute-form `authority` is the `Host`.
fn pin_upstream_request(
    req: &mut RequestHeader,
    path: &str,
    query: Option<&str>,
    authority: Option<&str>,
) -> std::result::Result<(), BadRequest> {
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

/// Writes an error page for a denied request.
async fn deny(
    session: &mut Session,
    ctx: &Ctx,
    status: StatusCode,
    reason: &str,
    html: bool,
) -> Result<bool> {
    deny_with(session, ctx, status, reason, html, None).await
}

/// Writes an error page; 401 answers (and token errors) carry a `WWW-Authenticate` challenge.
async fn deny_with(
    session: &mut Session,
    ctx: &Ctx,
    status: StatusCode,
    reason: &str,
    html: bool,
    challenge: Option<&str>,
) -> Result<bool> {
    let (ct, body) = respond::error_body(status, reason, html);
    let value = match challenge.map(http::HeaderValue::from_str) {
        Some(Ok(v)) => Some(v),
        _ if status == StatusCode::UNAUTHORIZED => Some(http::HeaderValue::from_static("Bearer")),
        _ => None,
    };
    let mut extra = Vec::new();
    if let Some(v) = value {
        extra.push((http::header::WWW_AUTHENTICATE, v));
    }
    if let Some(clear) = &ctx.clear_cookie {
        extra.push((http::header::SET_COOKIE, clear.clone()));
    }
    respond::write(
        session,
        Reply {
            status,
            content_type: Some(ct),
            body,
            security: &ctx.rt.own_pages,
            extra: &extra,
            tls: ctx.tls,
        },
    )
    .await?;
    Ok(true)
}

/// Writes a `static://` or `echo://` answer with the headers a proxied response would get.
async fn answer_as_upstream(
    session: &mut Session,
    ctx: &Ctx,
    route: &Route,
    status: StatusCode,
    content_type: Option<&'static str>,
    body: bytes::Bytes,
) -> Result<bool> {
    let mut extra = route.headers.response_add.clone();
    if let Some(clear) = &ctx.clear_cookie {
        extra.push((http::header::SET_COOKIE, clear.clone()));
    }
    if content_type.is_some() {
        extra.push((
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        ));
    }
    respond::write(
        session,
        Reply {
            status,
            content_type,
            body,
            security: &route.headers.security,
            extra: &extra,
            tls: ctx.tls,
        },
    )
    .await?;
    Ok(true)
}
