//! The one decision engine. Both front doors — the proxy and forward-auth
//! (`/.portcullis/auth`) — build a [`RequestView`] and the [`Presented`] credentials of the
//! original request, and call [`decide`]; only reading the request and answering the
//! [`Decision`] differ between them.
//!
//! `decide` = [`route`] + authentication (the only I/O: session store, IdP keys) +
//! [`authorize`], which is pure and tested without a socket.

use crate::auth::bearer::{bearer_token, token_scopes};
use crate::auth::Lookup;
use crate::oidc::BearerError;
use crate::policy::{self, Verdict};
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
        }
    }

    pub fn route(&self) -> Option<&Arc<Route>> {
        match self {
            Decision::Forward { route, .. } | Decision::Login { route, .. } => Some(route),
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
/// the browser's cross-site signals. Borrowed from wherever the request arrived.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presented<'a> {
    pub cookie: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub fetch_site: Option<&'a str>,
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
}

/// Decides a request: routes it, authenticates it, applies CSRF and the route's policy.
/// Counts the decision and writes the `access_denied` audit event for refusals.
///
/// When the app may read the request as falling under another route — a lenient server
/// (case-insensitive, dropping trailing dots ...) reading the path, or the app going by a
/// trusted proxy's `X-Forwarded-Host` rather than `Host` — the request must pass that route's
/// rules too: the stricter answer is given (see [`route`]).
pub async fn decide(rt: &Runtime, view: &RequestView, presented: &Presented<'_>) -> Decided {
    let routed = match route(rt, view) {
        Ok(found) => found,
        Err(denied) => {
            return Decided {
                decision: denied,
                clear_session_cookie: false,
            }
        }
    };
    let mut decided = decide_on(rt, routed.route, view, presented).await;
    for other in routed.also.into_iter().flatten() {
        if !matches!(decided.decision, Decision::Forward { .. }) {
            break;
        }
        let second = decide_on(rt, other, view, presented).await;
        if !matches!(second.decision, Decision::Forward { .. }) {
            decided = Decided {
                decision: second.decision,
                clear_session_cookie: decided.clear_session_cookie || second.clear_session_cookie,
            };
        }
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
async fn decide_on(
    rt: &Runtime,
    route: Arc<Route>,
    view: &RequestView,
    presented: &Presented<'_>,
) -> Decided {
    let plain = |decision| Decided {
        decision,
        clear_session_cookie: false,
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
    Decided {
        decision: authorize(route, view, presented, who),
        clear_session_cookie,
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
    let (Some(auth), Some(provider)) = (rt.auth.as_ref(), route.provider.as_deref()) else {
        return Authenticated::Nobody;
    };
    if route.is_public(&crate::path::without_params(&view.path)) {
        return Authenticated::Nobody;
    }
    if route.bearer {
        if let Some(token) = bearer_token(presented.authorization) {
            return match auth.bearer(provider, token).await {
                Ok(record) => Authenticated::Bearer(record),
                Err(e) => Authenticated::BadToken(e),
            };
        }
    }
    match auth.session_lookup(presented.cookie).await {
        // A session from another provider does not count on this route (but is no stale one).
        Ok(Lookup::Found(s)) if s.provider == provider => Authenticated::Session(s),
        Ok(Lookup::Found(_) | Lookup::Absent) => Authenticated::Nobody,
        Ok(Lookup::Stale) => Authenticated::Stale,
        Err(_) => Authenticated::Unavailable,
    }
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
        if let Some(why) = cross_site(view, presented) {
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

/// Why a cookie-authenticated request looks cross-site, if it does (SPEC §5): an unsafe
/// method (or a WebSocket handshake) with `Sec-Fetch-Site: cross-site`, or with an `Origin`
/// other than the route's own.
fn cross_site(view: &RequestView, presented: &Presented<'_>) -> Option<&'static str> {
    let safe = matches!(
        view.method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
    );
    if safe && !view.websocket {
        return None;
    }
    if presented
        .fetch_site
        .is_some_and(|s| s.trim().eq_ignore_ascii_case("cross-site"))
    {
        return Some("cross-site request (Sec-Fetch-Site: cross-site)");
    }
    match presented.origin {
        Some(origin) if !same_origin(origin, view) => Some("cross-origin request (Origin)"),
        _ => None,
    }
}

/// Whether an `Origin` value names the origin the request was addressed to (`view.authority`:
/// through a trusted front proxy, the one it says).
fn same_origin(origin: &str, view: &RequestView) -> bool {
    let scheme = if view.tls { "https" } else { "http" };
    let Some(rest) = origin
        .trim()
        .get(..scheme.len() + 3)
        .filter(|p| p.eq_ignore_ascii_case(&format!("{scheme}://")))
        .map(|_| &origin.trim()[scheme.len() + 3..])
    else {
        return false;
    };
    let default_port = if view.tls { "443" } else { "80" };
    let port_of = |authority: &str| -> Option<String> {
        let after_host = match authority.strip_prefix('[') {
            Some(v6) => v6.split_once(']').map(|(_, p)| p)?,
            None => authority.rsplit_once(':').map_or("", |(_, p)| p),
        };
        let port = after_host.trim_start_matches(':');
        Some(if port.is_empty() { default_port } else { port }.to_string())
    };
    let (Ok(host), Ok(own)) = (
        crate::request::parse_host(rest),
        crate::request::parse_host(&view.authority),
    ) else {
        return false;
    };
    host == own && port_of(rest) == port_of(&view.authority)
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
            "host": view.host,
            "path": view.path,
            "reason": reason,
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(method: http::Method, tls: bool, authority: &str) -> RequestView {
        RequestView {
            method,
            tls,
            host: crate::request::parse_host(authority).unwrap(),
            forwarded_host: None,
            authority: authority.to_string(),
            path: "/".into(),
            query: None,
            client_ip: None,
            wants_html: false,
            websocket: false,
        }
    }

    /// Routes compiled from a real config (no I/O happens at compile time).
    fn routes() -> crate::runtime::Runtime {
        let yaml = r#"
server: { listen: ["127.0.0.1:1"], public_url: "http://app.test" }
session: { secrets: ["MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="] }
providers:
  - { id: corp, type: oidc, issuer: "https://idp.test", client_id: c, client_secret: s }
routes:
  - { name: open, path: /open, upstream: "static://200", auth: none }
  - { name: maybe, path: /maybe, upstream: "static://200", auth: optional }
  - { name: staff, path: /staff, upstream: "static://200", allow: { groups: [staff] }, public_paths: [/staff/pub] }
  - { name: api, path: /api, upstream: "static://200", bearer: true, scopes: [orders:read] }
  - { name: mfa, path: /mfa, upstream: "static://200", allow: { mfa: true } }
  - { name: nocsrf, path: /nocsrf, upstream: "static://200", csrf: false }
"#;
        crate::config::load_str(yaml, std::path::Path::new("t.yaml"), |_| None)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn route_named(rt: &crate::runtime::Runtime, name: &str) -> Arc<Route> {
        rt.routes
            .routes()
            .iter()
            .find(|r| &*r.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("no route {name}"))
    }

    fn at(method: http::Method, path: &str, html: bool) -> RequestView {
        RequestView {
            path: path.into(),
            wants_html: html,
            ..view(method, false, "app.test")
        }
    }

    fn session(groups: &[&str]) -> Authenticated {
        let mut r = SessionRecord::new("corp", "sub-1", "alice");
        r.groups = groups.iter().map(|g| g.to_string()).collect();
        Authenticated::Session(Arc::new(r))
    }

    fn refusal(d: Decision) -> Refusal {
        match d {
            Decision::Deny { refusal, .. } => refusal,
            other => panic!("not a refusal: {other:?}"),
        }
    }

    #[test]
    fn authorize_without_a_session() {
        let rt = routes();
        let get = |path: &str, html: bool| at(http::Method::GET, path, html);
        let none = Presented::default();
        let d = authorize(
            route_named(&rt, "open"),
            &get("/open", false),
            &none,
            Authenticated::Nobody,
        );
        assert!(matches!(d, Decision::Forward { identity: None, .. }));
        // A browser navigation is sent to log in; anything else is told 401.
        let staff = route_named(&rt, "staff");
        let d = authorize(
            Arc::clone(&staff),
            &get("/staff", true),
            &none,
            Authenticated::Nobody,
        );
        assert!(
            matches!(d, Decision::Login { step_up: false, ref provider, .. } if provider == "corp")
        );
        let d = authorize(
            Arc::clone(&staff),
            &get("/staff", false),
            &none,
            Authenticated::Stale,
        );
        assert_eq!(refusal(d), Refusal::Unauthenticated);
        let post = at(http::Method::POST, "/staff", true);
        let d = authorize(Arc::clone(&staff), &post, &none, Authenticated::Nobody);
        assert_eq!(refusal(d), Refusal::Unauthenticated);
        // Public paths need nobody.
        let d = authorize(
            Arc::clone(&staff),
            &get("/staff/pub/x", false),
            &none,
            Authenticated::Nobody,
        );
        assert!(matches!(d, Decision::Forward { identity: None, .. }));
        // The store down: 503 where a session is required, anonymous where it is optional.
        let d = authorize(
            Arc::clone(&staff),
            &get("/staff", true),
            &none,
            Authenticated::Unavailable,
        );
        assert_eq!(refusal(d), Refusal::SessionsUnavailable);
        let d = authorize(
            route_named(&rt, "maybe"),
            &get("/maybe", true),
            &none,
            Authenticated::Unavailable,
        );
        assert!(matches!(d, Decision::Forward { identity: None, .. }));
        let d = authorize(
            route_named(&rt, "api"),
            &get("/api", false),
            &none,
            Authenticated::BadToken(crate::oidc::BearerError::Expired),
        );
        assert!(matches!(refusal(d), Refusal::InvalidToken(_)));
    }

    #[test]
    fn authorize_with_a_session() {
        let rt = routes();
        let staff = route_named(&rt, "staff");
        let get = at(http::Method::GET, "/staff/x", true);
        let none = Presented::default();
        let d = authorize(Arc::clone(&staff), &get, &none, session(&["staff"]));
        assert!(
            matches!(d, Decision::Forward { identity: Some(ref who), .. } if who.user == "alice")
        );
        let d = authorize(Arc::clone(&staff), &get, &none, session(&["sales"]));
        assert_eq!(refusal(d), Refusal::Denied);
        // CSRF: a cross-site POST with the session cookie is refused; a same-origin one passes.
        let post = at(http::Method::POST, "/staff/x", false);
        let evil = Presented {
            origin: Some("http://evil.test"),
            ..Presented::default()
        };
        let d = authorize(Arc::clone(&staff), &post, &evil, session(&["staff"]));
        assert_eq!(refusal(d), Refusal::CrossSite);
        let own = Presented {
            origin: Some("http://app.test"),
            ..Presented::default()
        };
        let d = authorize(Arc::clone(&staff), &post, &own, session(&["staff"]));
        assert!(matches!(d, Decision::Forward { .. }));
        let d = authorize(route_named(&rt, "nocsrf"), &post, &evil, session(&[]));
        assert!(matches!(d, Decision::Forward { .. }), "csrf: false");
    }

    #[test]
    fn authorize_bearer_scopes_and_mfa() {
        let rt = routes();
        let api = route_named(&rt, "api");
        let post = at(http::Method::POST, "/api/orders", false);
        let evil = Presented {
            origin: Some("http://evil.test"),
            ..Presented::default()
        };
        let token = |scope: &str| {
            let mut r = SessionRecord::new("corp", "svc", "svc");
            r.claims.insert("scope".into(), serde_json::json!(scope));
            Authenticated::Bearer(Arc::new(r))
        };
        // Bearer tokens are no cookies: no CSRF check, but the route's scopes.
        let d = authorize(Arc::clone(&api), &post, &evil, token("orders:read other"));
        assert!(matches!(
            d,
            Decision::Forward {
                identity: Some(_),
                ..
            }
        ));
        let d = authorize(Arc::clone(&api), &post, &evil, token("other"));
        assert_eq!(refusal(d), Refusal::InsufficientScope("orders:read".into()));

        let mfa = route_named(&rt, "mfa");
        let get = at(http::Method::GET, "/mfa", true);
        let none = Presented::default();
        let d = authorize(Arc::clone(&mfa), &get, &none, session(&[]));
        assert!(matches!(d, Decision::Login { step_up: true, .. }));
        let mut stepped = SessionRecord::new("corp", "sub-1", "alice");
        stepped.stepped_up = true;
        let d = authorize(
            Arc::clone(&mfa),
            &get,
            &none,
            Authenticated::Session(Arc::new(stepped)),
        );
        assert_eq!(
            refusal(d),
            Refusal::MfaRequired,
            "no loop after a step-up without MFA"
        );
        let mut with_otp = SessionRecord::new("corp", "sub-1", "alice");
        with_otp.amr = vec!["otp".into()];
        let d = authorize(mfa, &get, &none, Authenticated::Session(Arc::new(with_otp)));
        assert!(matches!(
            d,
            Decision::Forward {
                identity: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn origins() {
        let v = view(http::Method::POST, false, "app.example.com:8080");
        assert!(same_origin("http://app.example.com:8080", &v));
        assert!(same_origin("HTTP://App.Example.com:8080", &v));
        assert!(!same_origin("http://app.example.com", &v));
        assert!(!same_origin("https://app.example.com:8080", &v));
        assert!(!same_origin("http://evil.com:8080", &v));
        assert!(!same_origin("http://app.example.com.evil.com:8080", &v));
        assert!(!same_origin("null", &v));
        assert!(!same_origin("", &v));
        let v = view(http::Method::POST, true, "app.example.com");
        assert!(same_origin("https://app.example.com", &v));
        assert!(same_origin("https://app.example.com:443", &v));
        assert!(!same_origin("http://app.example.com", &v));
    }

    #[test]
    fn csrf_signals() {
        let post = view(http::Method::POST, false, "app:80");
        let p = |origin: Option<&'static str>, site: Option<&'static str>| Presented {
            origin,
            fetch_site: site,
            ..Presented::default()
        };
        assert!(cross_site(&post, &p(None, None)).is_none());
        assert!(cross_site(&post, &p(Some("http://app"), Some("same-origin"))).is_none());
        assert!(cross_site(&post, &p(None, Some("cross-site"))).is_some());
        assert!(cross_site(&post, &p(Some("http://evil"), None)).is_some());
        assert!(cross_site(&post, &p(Some("null"), None)).is_some());
        let get = view(http::Method::GET, false, "app");
        assert!(cross_site(&get, &p(Some("http://evil"), Some("cross-site"))).is_none());
        let mut ws = get.clone();
        ws.websocket = true;
        assert!(cross_site(&ws, &p(Some("http://evil"), None)).is_some());
    }
}
