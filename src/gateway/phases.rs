//! The Pingora `ProxyHttp` phases. Each says when Pingora runs it, what it may change, and
//! what an early return means; each is a few lines calling [`read`], the engine and [`answer`].

use super::answer::{self, Front};
use super::{forwarded, header_deadline, original, peer, put, read, Ctx, Gateway};
use crate::answer::Answer;
use crate::auth::endpoints::{self, EndpointRequest};
use crate::decision;
use crate::issuer::{self, token, Issuer};
use crate::refusal::Refusal;
use crate::request::RequestView;
use crate::telemetry::{self, metrics};
use crate::upstream::Upstream;
use async_trait::async_trait;
use http::StatusCode;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{ErrorSource, ErrorType};
use std::sync::Arc;

#[async_trait]
impl ProxyHttp for Gateway {
    /// Boxed: Pingora keeps the context inside each request's future, which it moves into
    /// the heap whole (a copy of its size, twice per request); a box is one pointer there.
    type CTX = Box<Ctx>;

    /// Runs once, before the server starts: no per-request modules. Pingora's default adds a
    /// response compression module, disabled, that still runs on every request (an
    /// allocation and a filter call for each head and body); Portcullis compresses nothing,
    /// and answers and proxied responses go out as before.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    /// Runs when a request's head has been read: the request keeps the configuration current
    /// now for its whole life, even if a reload happens meanwhile.
    fn new_ctx(&self) -> Box<Ctx> {
        Box::new(Ctx::new(self.runtime.load_full()))
    }

    /// Runs first for every request, before anything is sent upstream. Strips forged identity
    /// headers, reads the request, decides, and answers everything that is not proxied.
    /// `Ok(true)`: a response was written here and the request ends; `Ok(false)`: proxy it.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        header_deadline::head_received();
        session.set_keepalive(Some(ctx.rt.idle_timeout.as_secs()));
        read::peer(session, ctx);
        let (shape, doomed, fields) = read::scan(session.req_header(), ctx);
        read::client(session, ctx, &fields);
        for name in doomed {
            session.req_header_mut().remove_header(&name);
        }
        let wants_html = fields.wants_html();
        let view = match read::request(session, ctx, &fields, wants_html, &shape) {
            Ok(read::Read::Request(view)) => view,
            Ok(read::Read::Check(check)) => {
                return forward_auth(session, ctx, &check, &fields).await;
            }
            Err(refusal) => {
                let answer = answer::refusal(Front::Proxy, &refusal, wants_html);
                return answer::write(session, ctx, answer).await;
            }
        };
        if let Some(endpoint) = view.path.strip_prefix("/.portcullis/") {
            // Boxed: the login endpoints' futures (a code exchange with the IdP among them)
            // are large, and kept inline they would enlarge every request's future, which
            // Pingora moves into the heap whole on each request.
            return Box::pin(own_endpoint(session, ctx, &view, endpoint)).await;
        }
        if let Some(issuer) = ctx.rt.issuer.clone() {
            if view.host == issuer.config.host {
                if let Some(doc) = view.path.strip_prefix("/.well-known/") {
                    let inm = read::header_str(
                        &session.req_header().headers,
                        &http::header::IF_NONE_MATCH,
                    );
                    if let Some(answer) = issuer.well_known(&view.method, doc, inm) {
                        return answer::write(session, ctx, answer).await;
                    }
                }
            }
        }
        let rt = Arc::clone(&ctx.rt);
        let req = session.req_header();
        let decided = decision::decide(&rt, &view, || read::presented(&fields, &req.headers)).await;
        if decided.clear_session_cookie {
            ctx.clear_cookie = clearing_cookie(&ctx.rt);
        }
        ctx.rate = decided.rate;
        answer::answer(session, ctx, Front::Proxy, &view, decided.decision).await
    }

    /// Runs for proxied requests once `request_filter` let them through: where to connect.
    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let Some(Upstream::Http(up)) = ctx.route.as_deref().map(|r| &r.upstream) else {
            return Error::e_explain(
                ErrorType::InternalError,
                "no HTTP upstream for this request",
            );
        };
        let body = !session.is_body_empty() || session.is_upgrade_req();
        match peer::peer(up, body).await {
            Ok(peer) => Ok(peer),
            Err(e) => Err(Error::explain(
                ErrorType::ConnectNoRoute,
                format!("resolving {}: {e}", up.url),
            )
            .into_up()),
        }
    }

    /// Runs once the upstream connection is ready, on the request about to be sent: sets
    /// `X-Forwarded-*` from the real peer, the route's headers and the identity headers.
    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(route) = ctx.route.clone() {
            forwarded::prepare(upstream_request, ctx, &route)?;
        }
        Ok(())
    }

    /// Runs on every proxied response before it goes to the client: removes
    /// `remove_response` headers, sets the route's response headers, adds security headers the
    /// upstream did not set, and clears a dead session cookie.
    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        for name in &ctx.rt.remove_response {
            // One hashed lookup when the name is absent: Pingora touches its case map only
            // when the value map held the name.
            resp.remove_header(name);
        }
        if let Some(clear) = &ctx.clear_cookie {
            resp.append_header(http::header::SET_COOKIE, clear.as_ref().clone())?;
        }
        answer::rate_headers(ctx, resp)?;
        let Some(route) = ctx.route.as_deref() else {
            return Ok(());
        };
        for (n, v) in &route.headers.response_add {
            put::response(resp, n, v.clone())?;
        }
        answer::add_security(resp, &route.headers.security, ctx.tls)
    }

    /// Runs when proxying failed: 502 when the upstream is unreachable, 504 when it timed
    /// out, 400 for a broken client request; always our own page, never the upstream's words.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
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
            let html = read::wants_html(session.req_header());
            let _ = answer::write(session, ctx, Answer::error(status, reason, html)).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Runs when the request is over, whatever happened: metrics and the access log line.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
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
                host: ctx.host_text(),
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
    fn request_summary(&self, session: &Session, ctx: &Self::CTX) -> String {
        let req = session.req_header();
        format!(
            "{} {}{} route={}",
            req.method,
            ctx.host_text(),
            req.uri.path(),
            ctx.route_label()
        )
    }
}

/// The second front door: `/.portcullis/auth` (nginx `auth_request`, Traefik `ForwardAuth`,
/// Caddy `forward_auth`) and `/.portcullis/auth/envoy/<path>` (Envoy `ext_authz`, HTTP). The
/// original request is read from what the front proxy says about it, believed only from
/// `server.trusted_proxies`, and decided like a proxied one.
async fn forward_auth(
    session: &mut Session,
    ctx: &mut Ctx,
    check: &original::CheckRequest,
    fields: &read::Fields,
) -> Result<bool> {
    let req = session.req_header();
    let described = original::Described::read(&req.headers);
    let front = Front::ForwardAuth(original::dialect(&described, check));
    if !ctx.peer_trusted {
        telemetry::audit(
            "access_denied",
            serde_json::json!({
                "client_ip": ctx.peer_ip.map(|ip| ip.to_string()),
                "route": "forward-auth",
                "reason": "forward-auth request from a peer not in server.trusted_proxies",
            }),
        );
        let answer = answer::refusal(front, &Refusal::UntrustedPeer, check.wants_html);
        return answer::write(session, ctx, answer).await;
    }
    let original = match original::original_request(&req.method, &described, check) {
        Ok(read) => read,
        Err(refusal) => {
            let answer = answer::refusal(front, &refusal, check.wants_html);
            return answer::write(session, ctx, answer).await;
        }
    };
    let rt = Arc::clone(&ctx.rt);
    let decided = decision::decide(&rt, &original, || read::presented(fields, &req.headers)).await;
    if decided.clear_session_cookie {
        ctx.clear_cookie = clearing_cookie(&rt);
    }
    ctx.rate = decided.rate;
    answer::answer(session, ctx, front, &original, decided.decision).await
}

/// `/.portcullis/*`: login, hand-over, logout, userinfo; served on route hosts and the public
/// URL's host.
async fn own_endpoint(
    session: &mut Session,
    ctx: &mut Ctx,
    view: &RequestView,
    endpoint: &str,
) -> Result<bool> {
    if let Some(issuer) = ctx.rt.issuer.clone() {
        if endpoint == "jwks.json" || issuer::token::ENDPOINTS.contains(&endpoint) {
            // Boxed: kept out of the size of every request's future.
            return Box::pin(issuer_endpoint(session, ctx, view, endpoint, &issuer)).await;
        }
    }
    let Some(auth) = ctx.rt.auth.clone() else {
        let answer = answer::refusal(Front::Proxy, &Refusal::LoginNotConfigured, view.wants_html);
        return answer::write(session, ctx, answer).await;
    };
    let public_host = auth.config.public_url.host_str() == Some(view.host.as_str());
    if !public_host
        && ctx.rt.routes.find(&view.host, "/").is_none()
        && ctx.rt.routes.find(&view.host, &view.path).is_none()
    {
        let answer = answer::refusal(Front::Proxy, &Refusal::NoRoute, view.wants_html);
        return answer::write(session, ctx, answer).await;
    }
    if let Some(written) = auth_endpoints_limit(session, ctx, view, endpoint).await? {
        return Ok(written);
    }
    // The login form posts its fields: read them first (bounded).
    let body = if endpoint == "login" && view.method == http::Method::POST {
        match form_body(session).await? {
            Some(body) => Some(body),
            None => {
                let answer = endpoints::Failure::FormTooLarge.answer(true);
                return answer::write(session, ctx, answer).await;
            }
        }
    } else {
        None
    };
    let req = session.req_header();
    let cookies = read::cookie_header(&req.headers);
    let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
    let request = EndpointRequest {
        method: &view.method,
        endpoint,
        query: view.query.as_deref(),
        here: read::here_url(ctx, view),
        cookie_header: cookies.as_deref(),
        wants_html: view.wants_html,
        client_ip: ctx.client_ip,
        body: body.as_deref(),
        origin: header("origin"),
        fetch_site: header("sec-fetch-site"),
    };
    let answer = endpoints::handle(&auth, request).await;
    drop(cookies);
    answer::write(session, ctx, answer).await
}

/// Login, callback and the token endpoints count against the `auth-endpoints` limiter, one
/// budget per client address whichever of them it asks. `Some(written)` when the request was
/// refused (and answered here); `None` to go on, with the limiter's headers noted for the
/// answer.
async fn auth_endpoints_limit(
    session: &mut Session,
    ctx: &mut Ctx,
    view: &RequestView,
    endpoint: &str,
) -> Result<Option<bool>> {
    if !crate::ratelimit::AUTH_ENDPOINT_PATHS.contains(&endpoint) {
        return Ok(None);
    }
    let rt = Arc::clone(&ctx.rt);
    let headers = &session.req_header().headers;
    let header = |n: &http::HeaderName| headers.get(n).map(http::HeaderValue::as_bytes);
    let asker = crate::ratelimit::Asker {
        client_ip: ctx.client_ip,
        route: "/.portcullis/",
        user: None,
        header: &header,
    };
    let limiters = &rt.limiters;
    let Some(note) = limiters
        .check(std::iter::once(limiters.auth_endpoints), &asker, None)
        .await
    else {
        return Ok(None);
    };
    let refused = (!note.admitted).then_some(note.retry_after);
    ctx.rate = Some(note);
    match refused {
        Some(secs) => {
            let answer =
                answer::refusal(Front::Proxy, &Refusal::RateLimited(secs), view.wants_html);
            answer::write(session, ctx, answer).await.map(Some)
        }
        None => Ok(None),
    }
}

/// `/.portcullis/jwks.json` and the token, introspection and revocation endpoints, on the
/// issuer's host and every route's host.
async fn issuer_endpoint(
    session: &mut Session,
    ctx: &mut Ctx,
    view: &RequestView,
    endpoint: &str,
    issuer: &Issuer,
) -> Result<bool> {
    let known_host = view.host == issuer.config.host
        || ctx
            .rt
            .auth
            .as_ref()
            .is_some_and(|a| a.config.public_url.host_str() == Some(view.host.as_str()))
        || ctx.rt.routes.find(&view.host, "/").is_some()
        || ctx.rt.routes.find(&view.host, &view.path).is_some();
    if !known_host {
        let answer = answer::refusal(Front::Proxy, &Refusal::NoRoute, view.wants_html);
        return answer::write(session, ctx, answer).await;
    }
    if let Some(written) = auth_endpoints_limit(session, ctx, view, endpoint).await? {
        return Ok(written);
    }
    if endpoint == "jwks.json" {
        let inm = read::header_str(&session.req_header().headers, &http::header::IF_NONE_MATCH);
        let answer = issuer
            .well_known(&view.method, "jwks.json", inm)
            .unwrap_or_else(|| Answer::empty(StatusCode::NOT_FOUND));
        return answer::write(session, ctx, answer).await;
    }
    let body = if view.method == http::Method::POST {
        bounded_body(session, token::MAX_BODY_BYTES).await?
    } else {
        Some(Vec::new())
    };
    let req = session.req_header();
    let header = |name: &http::HeaderName| read::header_str(&req.headers, name);
    let request = token::TokenRequest {
        method: &view.method,
        endpoint,
        authorization: header(&http::header::AUTHORIZATION),
        content_type: header(&http::header::CONTENT_TYPE),
        body: match &body {
            Some(b) => token::Body::Read(b),
            None => token::Body::TooLarge,
        },
        client_ip: ctx.client_ip,
    };
    let answer = token::handle(issuer, request).await;
    answer::write(session, ctx, answer).await
}

/// A request body, read whole; `None` when it is larger than `limit` (the rest is not read).
async fn bounded_body(session: &mut Session, limit: usize) -> Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    while let Some(chunk) = session.read_request_body().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// A login form's body, read whole; `None` when it is larger than any login form.
async fn form_body(session: &mut Session) -> Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    while let Some(chunk) = session.read_request_body().await? {
        if body.len() + chunk.len() > endpoints::MAX_FORM_BYTES {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// The `Set-Cookie` that clears the session cookie.
fn clearing_cookie(rt: &crate::runtime::Runtime) -> Option<Box<http::HeaderValue>> {
    let auth = rt.auth.as_ref()?;
    http::HeaderValue::from_str(&auth.config.cookie.clear_cookie())
        .ok()
        .map(Box::new)
}
