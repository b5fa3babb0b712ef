//! The one decision engine. Both front doors — the proxy and forward-auth
//! (`/.portcullis/auth`) — build a [`RequestView`] and the [`Presented`] credentials of the
//! original request, and call [`decide`]; only reading the request and answering the
//! [`Decision`] differ between them.
//!
//! `decide` = [`route`] + authentication (the only I/O: session store, IdP keys) +
//! [`authorize`], which is pure and tested without a socket.

mod csrf;

use crate::auth::bearer::{bearer_token, token_scopes};
use crate::auth::Lookup;
use crate::issuer::Issuer;
use crate::oidc::BearerError;
use crate::policy::{self, Verdict};
use crate::ratelimit::{Asker, Note};
use crate::refusal::Refusal;
use crate::request::RequestView;
use crate::routes::{AuthMode, Route};
use crate::runtime::Runtime;
use crate::session::SessionRecord;
use crate::telemetry::{self, metrics};
use std::sync::Arc;

/// What to do with a request. Each front door answers it in its own way (see
/// `gateway::answer`); nothing here knows how.
#[derive(Debug)]
pub enum Decision {
    /// Let the request through to the route's upstream, with the identity if there is one.
    Forward {
        route: Arc<Route>,
        identity: Option<Arc<SessionRecord>>,
    },
    /// Not logged in (or not with MFA), and a browser: send it to log in with `provider`.
    Login {
        route: Arc<Route>,
        provider: String,
        /// Log in again asking for multi-factor authentication.
        step_up: bool,
    },
    /// Refuse, for the reason named.
    Deny {
        refusal: Refusal,
        route: Option<Arc<Route>>,
    },
    /// A rate limiter of the route refused: try again in `retry_after` seconds. The
    /// limiter's headers are in [`Decided::rate`].
    Limited { route: Arc<Route>, retry_after: u64 },
}

impl Decision {
    /// Label for `portcullis_auth_decisions_total{decision}`.
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Forward {
                identity: Some(_), ..
            } => "allow",
            Decision::Forward { identity: None, .. } => "anonymous",
            Decision::Login { step_up: true, .. } => "step_up",
            Decision::Login { .. } => "login",
            Decision::Deny { refusal, .. } => refusal.label(),
            Decision::Limited { .. } => "rate_limited",
        }
    }

    pub fn route(&self) -> Option<&Arc<Route>> {
        match self {
            Decision::Forward { route, .. }
            | Decision::Login { route, .. }
            | Decision::Limited { route, .. } => Some(route),
            Decision::Deny { route, .. } => route.as_ref(),
        }
    }

    fn deny(refusal: Refusal, route: Arc<Route>) -> Decision {
        Decision::Deny {
            refusal,
            route: Some(route),
        }
    }
}

/// What the original request carried besides its method, host and path: credentials and
/// the browser's cross-site signals. Borrowed from wherever the request arrived. `Debug`
/// says whether a cookie or `Authorization` was there, never what it holds.
#[derive(Clone, Default)]
pub struct Presented<'a> {
    /// Every `Cookie` header, joined.
    pub cookie: Option<std::borrow::Cow<'a, str>>,
    pub authorization: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub fetch_site: Option<&'a str>,
    /// All the request's headers, for limiters keyed on one (`header:NAME`).
    pub headers: Option<&'a http::HeaderMap>,
}

impl std::fmt::Debug for Presented<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |v: Option<&str>| v.map(|_| "<redacted>");
        f.debug_struct("Presented")
            .field("cookie", &shown(self.cookie.as_deref()))
            .field("authorization", &shown(self.authorization))
            .field("origin", &self.origin)
            .field("fetch_site", &self.fetch_site)
            .finish()
    }
}

/// Who the request turned out to be, after the I/O of authentication.
#[derive(Debug)]
pub enum Authenticated {
    /// No credentials, or none that count on this route.
    Nobody,
    /// A session cookie that names no live session: like `Nobody`, and the cookie is cleared.
    Stale,
    Session(Arc<SessionRecord>),
    Bearer(Arc<SessionRecord>),
    /// A Bearer token was presented and refused.
    BadToken(BearerError),
    /// The session store could not answer (and the session was not cached).
    Unavailable,
}

/// A decision, and whether the answer should clear a session cookie that named no live
/// session (so the browser stops sending it), whatever the answer is.
#[derive(Debug)]
pub struct Decided {
    pub decision: Decision,
    pub clear_session_cookie: bool,
    /// The most restrictive answer of the route's rate limiters, whose headers every answer
    /// carries (`None` on a route without limiters).
    pub rate: Option<Note>,
}

/// Decides a request: routes it, authenticates it, applies CSRF and the route's policy.
/// Counts the decision and writes the `access_denied` audit event for refusals.
///
/// When the app may read the request as falling under another route — a lenient server
/// (case-insensitive, dropping trailing dots ...) reading the path, or the app going by a
/// trusted proxy's `X-Forwarded-Host` rather than `Host` — the request must pass that route's
/// rules too: the stricter answer is given (see [`route`]).
///
/// `presented` reads the request's credentials; it is called only when a route looks at them
/// (an `auth: none` route never does).
pub async fn decide<'a>(
    rt: &Runtime,
    view: &RequestView,
    presented: impl FnOnce() -> Presented<'a>,
) -> Decided {
    let routed = match route(rt, view) {
        Ok(found) => found,
        Err(denied) => {
            return Decided {
                decision: denied,
                clear_session_cookie: false,
                rate: None,
            }
        }
    };
    let routes = || std::iter::once(&routed.route).chain(routed.also.iter().flatten());
    let limited = routes().any(|r| !r.rate_limit.is_empty());
    let looks = limited || routes().any(|r| r.auth != AuthMode::None);
    let presented = if looks {
        presented()
    } else {
        Presented::default()
    };
    let presented = &presented;
    // `header:NAME` limiter keys read the request's headers, before and after authentication.
    let header = |n: &http::HeaderName| {
        presented
            .headers
            .and_then(|h| h.get(n))
            .map(http::HeaderValue::as_bytes)
    };
    // Every request to a limited route counts, before authentication decides anything (only
    // `user` keys wait for it); a refusal ends the request here.
    let mut rate = None;
    if limited {
        let asker = Asker {
            client_ip: view.client_ip,
            route: &routed.route.name,
            user: None,
            header: &header,
        };
        rate = if routed.also.iter().all(Option::is_none) {
            // The common case, without a list: one route, whose limiters are each listed once.
            let before = routed.route.rate_limit.iter().copied().filter(|&i| {
                rt.limiters
                    .list
                    .get(i)
                    .is_some_and(|l| !l.after_authentication())
            });
            rt.limiters.check(before, &asker, None).await
        } else {
            let before = limiters_of(rt, &routed, false);
            rt.limiters.check(before.into_iter(), &asker, None).await
        };
        if let Some(note) = rate.as_ref().filter(|n| !n.admitted) {
            metrics::AUTH_DECISIONS
                .with_label_values(&[&routed.route.name, "rate_limited"])
                .inc();
            return limited_decision(&routed.route, note, rate.clone());
        }
    }
    let primary = Arc::clone(&routed.route);
    let (mut decided, mut user) = decide_on(rt, Arc::clone(&routed.route), view, presented).await;
    for other in routed.also.iter().flatten() {
        if !matches!(decided.decision, Decision::Forward { .. }) {
            break;
        }
        let (second, who) = decide_on(rt, Arc::clone(other), view, presented).await;
        user = user.or(who);
        if !matches!(second.decision, Decision::Forward { .. }) {
            decided = Decided {
                decision: second.decision,
                clear_session_cookie: decided.clear_session_cookie || second.clear_session_cookie,
                rate: None,
            };
        }
    }
    if limited {
        let after = limiters_of(rt, &routed, true);
        if !after.is_empty() {
            let asker = Asker {
                client_ip: view.client_ip,
                route: &primary.name,
                user: user.as_deref().map(|u| u.user.as_str()),
                header: &header,
            };
            rate = rt.limiters.check(after.into_iter(), &asker, rate).await;
            if let Some(note) = rate.as_ref().filter(|n| !n.admitted) {
                let clear = decided.clear_session_cookie;
                decided = limited_decision(&primary, note, rate.clone());
                decided.clear_session_cookie = clear;
            }
        }
        decided.rate = rate;
    }
    match &decided.decision {
        // An `auth: none` route makes no auth decision.
        Decision::Forward { route, .. } if route.auth == AuthMode::None => {}
        Decision::Forward {
            route,
            identity: Some(_),
        } => route.metrics.allowed.inc(),
        other => {
            if let Some(route) = other.route() {
                metrics::AUTH_DECISIONS
                    .with_label_values(&[&route.name, other.label()])
                    .inc();
            }
        }
    }
    decided
}

/// Decides a request on one route: WebSocket permission, then authentication and
/// [`authorize`]. Writes `access_denied` for refusals; counts nothing.
/// Also returns who authenticated (session or Bearer), for limiters keyed on the user.
async fn decide_on(
    rt: &Runtime,
    route: Arc<Route>,
    view: &RequestView,
    presented: &Presented<'_>,
) -> (Decided, Option<Arc<SessionRecord>>) {
    let plain = |decision| {
        (
            Decided {
                decision,
                clear_session_cookie: false,
                rate: None,
            },
            None,
        )
    };
    if view.websocket && !route.websocket {
        return plain(Decision::deny(Refusal::WebSocketDisabled, route));
    }
    if route.auth == AuthMode::None {
        return plain(Decision::Forward {
            route,
            identity: None,
        });
    }
    let who = authenticate(rt, &route, view, presented).await;
    let clear_session_cookie = matches!(who, Authenticated::Stale);
    let user = match &who {
        Authenticated::Session(s) | Authenticated::Bearer(s) => Some(Arc::clone(s)),
        _ => None,
    };
    let decided = Decided {
        decision: authorize(route, view, presented, who),
        clear_session_cookie,
        rate: None,
    };
    (decided, user)
}

/// The limiters of the routes a request falls under, each once: those keyed before
/// authentication, or (`after`) those keyed on the user.
fn limiters_of(rt: &Runtime, routed: &Routed, after: bool) -> Vec<usize> {
    let mut out = Vec::new();
    let routes = std::iter::once(&routed.route).chain(routed.also.iter().flatten());
    for i in routes.flat_map(|r| r.rate_limit.iter().copied()) {
        let wanted = rt
            .limiters
            .list
            .get(i)
            .is_some_and(|l| l.after_authentication() == after);
        if wanted && !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

fn limited_decision(route: &Arc<Route>, refused: &Note, rate: Option<Note>) -> Decided {
    Decided {
        decision: Decision::Limited {
            route: Arc::clone(route),
            retry_after: refused.retry_after,
        },
        clear_session_cookie: false,
        rate,
    }
}

/// The route a request matches, and the other routes its app may see it under.
pub struct Routed {
    pub route: Arc<Route>,
    /// The route a lenient server's reading of the path falls under
    /// ([`crate::routes::RouteTable::find_lenient`]), and the route of the host in a trusted
    /// proxy's `X-Forwarded-Host`; each only when it is another route.
    pub also: [Option<Arc<Route>>; 2],
}

/// The route for a request and the other routes its app may see it under ([`Routed`]), or the
/// answer when there is no route.
pub fn route(rt: &Runtime, req: &RequestView) -> Result<Routed, Decision> {
    let path = crate::path::without_params(&req.path);
    let Some(route) = rt.routes.find(&req.host, &path) else {
        return Err(Decision::Deny {
            refusal: Refusal::NoRoute,
            route: None,
        });
    };
    let lenient = rt
        .routes
        .find_lenient(&req.host, &path, Some(route))
        .cloned();
    let forwarded = match req.forwarded_host.as_deref() {
        None => None,
        Some(host) => match rt.routes.find(host, &path) {
            // The app may serve a host Portcullis has no route for: nothing to decide on.
            None => {
                return Err(Decision::Deny {
                    refusal: Refusal::NoRoute,
                    route: None,
                })
            }
            Some(other) if Arc::ptr_eq(other, route) => None,
            Some(other) if lenient.as_ref().is_some_and(|l| Arc::ptr_eq(l, other)) => None,
            Some(other) => Some(Arc::clone(other)),
        },
    };
    Ok(Routed {
        route: Arc::clone(route),
        also: [lenient, forwarded],
    })
}

/// Finds who sent the request: a Bearer token on `bearer: true` routes, else the session
/// cookie. Public paths look at nothing.
async fn authenticate(
    rt: &Runtime,
    route: &Route,
    view: &RequestView,
    presented: &Presented<'_>,
) -> Authenticated {
    if route.is_public(&crate::path::without_params(&view.path)) {
        return Authenticated::Nobody;
    }
    let token = route
        .bearer
        .then(|| bearer_token(presented.authorization))
        .flatten();
    if let (Some(token), Some(issuer)) = (token, rt.issuer.as_deref()) {
        // A token naming one of our keys is ours to judge, and only ours.
        if issuer.names_our_key(token) {
            return Box::pin(own_bearer(issuer, view, token)).await;
        }
    }
    let (Some(auth), Some(provider)) = (rt.auth.as_ref(), route.provider.as_deref()) else {
        return Authenticated::Nobody;
    };
    if route.bearer {
        if let Some(token) = token {
            // Boxed, like the token check above: a JWT's verification (and a key fetch it
            // may need) dwarfs one allocation, and kept inline its future would enlarge every
            // request's.
            return match Box::pin(auth.bearer(provider, token)).await {
                Ok(record) => Authenticated::Bearer(record),
                Err(e) => Authenticated::BadToken(e),
            };
        }
    }
    match auth.session_lookup(presented.cookie.as_deref()).await {
        // A session from another provider does not count on this route (but is no stale one).
        Ok(Lookup::Found(s)) if s.provider == provider => Authenticated::Session(s),
        Ok(Lookup::Found(_) | Lookup::Absent) => Authenticated::Nobody,
        Ok(Lookup::Stale) => Authenticated::Stale,
        Err(_) => Authenticated::Unavailable,
    }
}

/// A Bearer token signed by our issuer: an access token (`typ: at+jwt`, never an assertion)
/// whose `aud` is the issuer url or this route's origin, not revoked.
async fn own_bearer(issuer: &Issuer, view: &RequestView, token: &str) -> Authenticated {
    use crate::issuer::keys::TokenError as T;
    let origin = origin(view);
    let audiences = [issuer.config.iss.as_str(), origin.as_str()];
    match issuer
        .bearer(token, &audiences, crate::issuer::now_secs())
        .await
    {
        Ok(record) => Authenticated::Bearer(record),
        Err(e) => Authenticated::BadToken(match e {
            T::Malformed => BearerError::Malformed,
            T::UnknownKey => BearerError::UnknownKey,
            T::Algorithm => BearerError::Algorithm,
            T::Type => BearerError::NotAccessToken,
            T::Signature => BearerError::Signature,
            T::Expired => BearerError::Expired,
            T::Issuer => BearerError::Issuer,
            T::Audience => BearerError::Audience,
            T::Revoked => BearerError::Revoked,
            T::MissingClaim => BearerError::MissingClaim,
        }),
    }
}

/// The origin a request was addressed to (`https://app.example.com`, a port only when it is
/// not the scheme's default), as a route-bound token's `aud` names it.
fn origin(view: &RequestView) -> String {
    let scheme = if view.tls { "https" } else { "http" };
    let authority = if view.authority.is_empty() {
        view.host.as_str()
    } else {
        view.authority.as_str()
    };
    let default_port = if view.tls { ":443" } else { ":80" };
    let authority = authority.strip_suffix(default_port).unwrap_or(authority);
    format!("{scheme}://{}", authority.to_ascii_lowercase())
}

/// Decides a routed request given who sent it. Pure: no I/O.
pub fn authorize(
    route: Arc<Route>,
    view: &RequestView,
    presented: &Presented<'_>,
    who: Authenticated,
) -> Decision {
    if route.auth == AuthMode::None || route.is_public(&crate::path::without_params(&view.path)) {
        return Decision::Forward {
            route,
            identity: None,
        };
    }
    let required = route.auth == AuthMode::Required;
    let (identity, by_cookie) = match who {
        Authenticated::Session(s) => (s, true),
        Authenticated::Bearer(s) => (s, false),
        Authenticated::BadToken(e) => {
            denied(&route, view, None, &format!("bearer token refused: {e}"));
            return Decision::deny(Refusal::InvalidToken(e.to_string()), route);
        }
        Authenticated::Unavailable if required => {
            return Decision::deny(Refusal::SessionsUnavailable, route)
        }
        Authenticated::Nobody | Authenticated::Stale | Authenticated::Unavailable if required => {
            return login_or_401(route, view, false)
        }
        Authenticated::Nobody | Authenticated::Stale | Authenticated::Unavailable => {
            return Decision::Forward {
                route,
                identity: None,
            }
        }
    };
    // Cookies ride along on cross-site requests; Bearer tokens do not.
    if by_cookie && route.csrf {
        if let Some(why) = csrf::cross_site(view, presented) {
            denied(&route, view, Some(&identity), why);
            return Decision::deny(Refusal::CrossSite, route);
        }
    }
    if !by_cookie && !route.scopes.is_empty() {
        let granted: Vec<&str> = token_scopes(&identity).collect();
        if let Some(missing) = route.scopes.iter().find(|s| !granted.contains(&s.as_str())) {
            denied(
                &route,
                view,
                Some(&identity),
                &format!("bearer token lacks scope {missing}"),
            );
            let wanted = route.scopes.join(" ");
            return Decision::deny(Refusal::InsufficientScope(wanted), route);
        }
    }
    if !required || route.policy.is_open() {
        return Decision::Forward {
            route,
            identity: Some(identity),
        };
    }
    let cx = policy::Context {
        method: &view.method,
        client_ip: view.client_ip,
    };
    match route.policy.evaluate(&identity, cx) {
        Verdict::Allow => Decision::Forward {
            route,
            identity: Some(identity),
        },
        Verdict::StepUp if by_cookie && !identity.stepped_up && browser(view) => {
            login_or_401(route, view, true)
        }
        Verdict::StepUp => {
            denied(
                &route,
                view,
                Some(&identity),
                "multi-factor authentication required",
            );
            Decision::deny(Refusal::MfaRequired, route)
        }
        Verdict::Deny(why) => {
            denied(&route, view, Some(&identity), &why);
            Decision::deny(Refusal::Denied, route)
        }
    }
}

/// A browser navigation: redirects make sense; anything else gets status codes.
fn browser(view: &RequestView) -> bool {
    view.wants_html && (view.method == http::Method::GET || view.method == http::Method::HEAD)
}

fn login_or_401(route: Arc<Route>, view: &RequestView, step_up: bool) -> Decision {
    match (browser(view), route.provider.clone()) {
        (true, Some(provider)) => Decision::Login {
            route,
            provider,
            step_up,
        },
        _ => Decision::deny(Refusal::Unauthenticated, route),
    }
}

/// The `access_denied` audit event.
fn denied(route: &Route, view: &RequestView, who: Option<&SessionRecord>, reason: &str) {
    telemetry::audit(
        "access_denied",
        serde_json::json!({
            "user": who.map(|w| w.user.as_str()),
            "session": who.filter(|w| w.expires_at > 0 && w.created_at > 0).map(|w| w.sid.fingerprint()),
            "client_ip": view.client_ip.map(|ip| ip.to_string()),
            "route": &*route.name,
            "method": view.method.as_str(),
            "host": view.host.as_str(),
            "path": view.path.as_str(),
            "reason": reason,
        }),
    );
}

#[cfg(test)]
mod tests;
