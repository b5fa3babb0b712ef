//! Decisions out: the only place the two front doors differ on the way out. [`Front`] says
//! which door asked; [`answer`] turns a [`Decision`] into the request going upstream or an
//! [`Answer`], and [`write`] writes every answer with what its [`Style`] needs.

use super::put::ResponseFields;
use super::{forwarded, Ctx};
use crate::answer::{Answer, Style};
use crate::auth::endpoints::login_url;
use crate::auth::render_identity_headers;
use crate::decision::Decision;
use crate::headers::SecurityHeaders;
use crate::refusal::Refusal;
use crate::request::RequestView;
use crate::upstream::Upstream;
use http::StatusCode;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;
use std::sync::Arc;

/// Which front door a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// Clients reach the app through Portcullis.
    Proxy,
    /// A front proxy asks `/.portcullis/auth` about a request it will serve itself.
    ForwardAuth(Dialect),
}

/// How a forward-auth front proxy wants to be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Traefik `ForwardAuth` and Caddy `forward_auth`: the answer reaches the browser as it
    /// is, so a 302 logs in.
    Traefik,
    /// nginx `auth_request` understands only 2xx, 401 and 403 (anything else becomes a 500):
    /// "log in" is a 401 carrying `Location` for `error_page 401`, and "rate limited" a 403
    /// carrying `Retry-After`, which `error_page 403` turns into the client's 429 (see
    /// `examples/nginx`); an nginx without that mapping still refuses, with 403.
    Nginx,
    /// Envoy `ext_authz` (HTTP): like Traefik.
    Envoy,
}

impl Front {
    /// The status `refusal` is answered with through this door.
    fn status(self, refusal: &Refusal) -> StatusCode {
        let status = refusal.status();
        match (self, status.as_u16()) {
            (Front::ForwardAuth(Dialect::Nginx), 400 | 404 | 429) => StatusCode::FORBIDDEN,
            _ => status,
        }
    }

    /// The status that sends a browser to log in.
    fn login_status(self) -> StatusCode {
        match self {
            Front::ForwardAuth(Dialect::Nginx) => StatusCode::UNAUTHORIZED,
            _ => StatusCode::FOUND,
        }
    }
}

/// Whether an answer is a page (a browser navigation) or JSON (a program). A 401 is always
/// for a program: a browser that may log in is sent to log in instead.
fn as_page(view_wants_html: bool, status: StatusCode) -> bool {
    view_wants_html && status != StatusCode::UNAUTHORIZED
}

/// The answer to a refusal through `front`.
pub(super) fn refusal(front: Front, refusal: &Refusal, wants_html: bool) -> Answer {
    let status = front.status(refusal);
    let mut answer = Answer::error(status, refusal.reason(), as_page(wants_html, status));
    if let Some(challenge) = refusal.challenge() {
        answer = answer.with_header(http::header::WWW_AUTHENTICATE, &challenge);
    }
    if let Refusal::RateLimited(secs) = refusal {
        // The body says what happened even where the status had to be another (nginx).
        let own = refusal.status();
        let (ct, body) = crate::pages::error_body(own, refusal.reason(), as_page(wants_html, own));
        answer.content_type = Some(ct);
        answer.body = body;
        answer
            .headers
            .push((http::header::RETRY_AFTER, http::HeaderValue::from(*secs)));
    }
    answer
}

/// Carries out `decision` for the request `view` that came through `front`. `Ok(false)`:
/// proxy the request upstream (the identity headers are in `ctx`); `Ok(true)`: answered here.
pub(super) async fn answer(
    session: &mut Session,
    ctx: &mut Ctx,
    front: Front,
    view: &RequestView,
    decision: Decision,
) -> Result<bool> {
    ctx.route = decision.route().cloned();
    let answer = match decision {
        Decision::Deny { refusal: r, .. } => refusal(front, &r, view.wants_html),
        Decision::Limited { retry_after, .. } => {
            refusal(front, &Refusal::RateLimited(retry_after), view.wants_html)
        }
        Decision::Login {
            provider, step_up, ..
        } => match ctx.rt.auth.as_deref() {
            Some(auth) => Answer {
                content_type: Some("text/plain; charset=utf-8"),
                // Browsers follow the Location; keep the page tiny.
                body: bytes::Bytes::from_static(b"Sign in required\n"),
                ..Answer::empty(front.login_status())
            }
            .with_location(&login_url(auth, &return_url(view), &provider, step_up)),
            None => refusal(front, &Refusal::Unauthenticated, view.wants_html),
        },
        Decision::Forward { route, identity } => {
            let rt = &ctx.rt;
            let render = |who: &crate::session::SessionRecord| {
                render_identity_headers(&rt.identity_headers, who)
            };
            // The signed assertion, for both doors: cached per session and audience.
            let assertion = rt.issuer.as_ref().map(|issuer| {
                let name = issuer.config.assertion_header.clone();
                let value = identity
                    .as_ref()
                    .and_then(|who| issuer.assertions.get(issuer, who, &view.host));
                (name, value)
            });
            if front != Front::Proxy {
                let assertion = assertion.map(|(name, value)| {
                    (
                        name,
                        value.unwrap_or_else(|| http::HeaderValue::from_static("")),
                    )
                });
                let head = match &identity {
                    Some(who) => who.rendered.head_or_build(
                        rt.identity_generation,
                        || render(who),
                        |headers| check_head(headers.iter().map(|(n, v)| (&n.name, v.clone()))),
                    ),
                    // Anonymous checks carry the identity headers empty: front proxies that
                    // copy them onto the request (Traefik, Caddy) then overwrite whatever a
                    // client sent.
                    None => check_head(
                        rt.identity_headers
                            .iter()
                            .map(|(n, _)| (&n.name, http::HeaderValue::from_static(""))),
                    ),
                };
                Answer {
                    style: Style::Check { head, assertion },
                    ..Answer::empty(StatusCode::OK)
                }
            } else {
                if let Some((name, Some(value))) = assertion {
                    ctx.assertion = Some(Box::new((name, value)));
                }
                let rendered = identity.as_ref().map(|who| {
                    who.rendered
                        .get_or_render(rt.identity_generation, || render(who))
                });
                match &route.upstream {
                    Upstream::Http(_) => {
                        ctx.identity = rendered;
                        return Ok(false);
                    }
                    Upstream::None => refusal(front, &Refusal::ForwardAuthOnly, view.wants_html),
                    Upstream::Static(status) => Answer {
                        style: Style::AsUpstream(Arc::clone(&route)),
                        ..Answer::empty(*status)
                    },
                    Upstream::Echo => {
                        ctx.identity = rendered;
                        let mut seen = session.req_header().clone();
                        forwarded::prepare(&mut seen, ctx, &route)?;
                        let (ct, body) =
                            crate::pages::echo_body(&seen, &route.name, view.wants_html);
                        Answer {
                            content_type: Some(ct),
                            body,
                            style: Style::AsUpstream(Arc::clone(&route)),
                            ..Answer::empty(StatusCode::OK)
                        }
                    }
                }
            }
        }
    };
    write(session, ctx, answer).await
}

/// The URL a request was addressed to, where a login returns: the scheme and authority the
/// client used (through a trusted front proxy, the ones it names), the normalised path and
/// the query.
pub(super) fn return_url(view: &RequestView) -> String {
    let scheme = if view.tls { "https" } else { "http" };
    let authority = if view.authority.is_empty() {
        view.host.as_str()
    } else {
        view.authority.as_str()
    };
    let mut url = format!("{scheme}://{authority}{}", view.path);
    if let Some(q) = &view.query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// Adds the rate limit headers of the request's most restrictive limiter, if any: on every
/// answer, refusals or not, written here or proxied.
pub(super) fn rate_headers(ctx: &Ctx, resp: &mut impl ResponseFields) -> Result<()> {
    if let Some(note) = &ctx.rate {
        let mut failed = None;
        note.headers(|n, spelling, v| {
            if let Err(e) = resp.set_spelled(n, spelling, v) {
                failed = Some(e);
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Ok(())
}

/// Adds the security headers `resp` lacks (HSTS only over TLS): to proxied responses, where
/// the app's own win, and to answers written here.
pub(super) fn add_security(
    resp: &mut impl ResponseFields,
    security: &SecurityHeaders,
    tls: bool,
) -> Result<()> {
    for (n, v) in security.wanted(tls) {
        if !resp.has(n) {
            resp.set(n, v.clone())?;
        }
    }
    Ok(())
}

/// The head of an allowed forward-auth check: `Content-Length: 0`, the identity headers and
/// `Cache-Control: no-store`. The front proxy reads this answer, no browser does: page
/// security headers would only be bytes to write on every check.
///
/// It also holds `Date` and `Connection`, which Pingora sets on every answer head it writes
/// (HTTP/1: both, always; HTTP/2: `Date`, and `Connection` removed): here they are
/// replaced in place, and the copy of this head made for each check (whose room is exactly
/// its entries) need not grow for them. `forward_auth.rs` checks that the `Date` a check
/// gets is the current one, not this one.
fn check_head<'a>(
    identity: impl ExactSizeIterator<Item = (&'a http::HeaderName, http::HeaderValue)>,
) -> http::HeaderMap {
    // Room for what an answer may add: the assertion, a clearing cookie, rate limit headers.
    let mut head = http::HeaderMap::with_capacity(identity.len() + 8);
    head.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from_static("0"),
    );
    for (n, v) in identity {
        head.insert(n.clone(), v);
    }
    head.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    head.insert(
        http::header::DATE,
        pingora::protocols::http::date::get_cached_date(),
    );
    head.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    head
}

/// Writes `answer` with a `Content-Length` (Pingora closes the connection without one), the
/// headers of its style, and the clearing of a dead session cookie. A HEAD request gets the
/// headers only. Always `Ok(true)`: the request is answered.
pub(super) async fn write(session: &mut Session, ctx: &Ctx, mut answer: Answer) -> Result<bool> {
    let head = session.req_header().method == http::Method::HEAD;
    // Built as `http` parts and given to Pingora without a case map: our own header names
    // have no original spelling to keep, and the parts take each `HeaderName` as it is,
    // where Pingora's inserts would parse it from bytes again (with a fresh copy of every
    // name it does not know). On the wire, the same bytes as Pingora's own no-case header.
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = answer.status;
    // 1xx, 204 and 304 must not carry a Content-Length (RFC 9110 §8.6).
    let bodiless = answer.status.is_informational()
        || answer.status == StatusCode::NO_CONTENT
        || answer.status == StatusCode::NOT_MODIFIED;
    let resp = &mut parts.headers;
    if let Style::Check { head, .. } = &mut answer.style {
        // A check's head comes whole, `Content-Length: 0` included (see `check_head`).
        debug_assert!(answer.body.is_empty() && answer.content_type.is_none() && !bodiless);
        *resp = std::mem::take(head);
    } else {
        resp.reserve(12);
        if let Some(ct) = answer.content_type {
            resp.set(
                &http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(ct),
            )?;
        }
        if !bodiless {
            // Most answers written here without a body are checks and redirects: a static
            // "0" spares formatting the number into a fresh buffer.
            let length = match answer.body.len() {
                0 => http::HeaderValue::from_static("0"),
                len => http::HeaderValue::from(len),
            };
            resp.set(&http::header::CONTENT_LENGTH, length)?;
        }
    }
    for (n, v) in answer.headers {
        if n == http::header::SET_COOKIE {
            resp.add(&n, v)?;
        } else {
            resp.set(&n, v)?;
        }
    }
    if let Some(clear) = &ctx.clear_cookie {
        resp.add(&http::header::SET_COOKIE, clear.as_ref().clone())?;
    }
    rate_headers(ctx, resp)?;
    let security = match &answer.style {
        Style::OwnPage => Some(&ctx.rt.own_pages),
        Style::AsUpstream(route) => {
            for (n, v) in &route.headers.response_add {
                resp.set(n, v.clone())?;
            }
            if answer.content_type.is_some() {
                resp.set(
                    &http::header::CACHE_CONTROL,
                    http::HeaderValue::from_static("no-store"),
                )?;
            }
            Some(&route.headers.security)
        }
        Style::Check { assertion, .. } => {
            if let Some((n, v)) = assertion {
                resp.set(&n.name, v.clone())?;
            }
            None
        }
    };
    if let Some(security) = security {
        add_security(resp, security, ctx.tls)?;
    }
    let body_empty = head || bodiless || answer.body.is_empty();
    session
        .write_response_header(Box::new(ResponseHeader::from(parts)), body_empty)
        .await?;
    if !body_empty {
        session.write_response_body(Some(answer.body), true).await?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    fn security() -> SecurityHeaders {
        SecurityHeaders {
            always: vec![
                (
                    HeaderName::from_static("x-frame-options"),
                    HeaderValue::from_static("DENY"),
                ),
                (
                    HeaderName::from_static("x-content-type-options"),
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            hsts: Some(HeaderValue::from_static("max-age=1")),
        }
    }

    fn wire(resp: &ResponseHeader) -> String {
        let mut buf = bytes::BytesMut::new();
        resp.header_to_h1_wire(&mut buf);
        String::from_utf8(buf.to_vec()).unwrap()
    }

    /// The app's own security headers win, with their spelling; the missing ones are added
    /// once; HSTS only over TLS.
    #[test]
    fn security_headers_never_duplicate_and_keep_the_apps() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("X-Frame-Options", "SAMEORIGIN").unwrap();
        add_security(&mut resp, &security(), false).unwrap();
        add_security(&mut resp, &security(), false).unwrap();
        assert_eq!(
            wire(&resp),
            "X-Frame-Options: SAMEORIGIN\r\nx-content-type-options: nosniff\r\n"
        );
        add_security(&mut resp, &security(), true).unwrap();
        assert_eq!(
            wire(&resp),
            "X-Frame-Options: SAMEORIGIN\r\nx-content-type-options: nosniff\r\n\
             strict-transport-security: max-age=1\r\n"
        );
    }
}
