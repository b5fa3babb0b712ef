//! The one decision engine. Every front door (the proxy now, forward-auth next) builds a
//! [`RequestView`], finds the route with [`route`], looks up the session if the route needs
//! one, and asks [`authorize`]; only reading the request and answering differ between doors.

use crate::request::RequestView;
use crate::routes::{AuthMode, Route};
use crate::runtime::Runtime;
use crate::session::SessionRecord;
use http::StatusCode;
use std::sync::Arc;

#[derive(Debug)]
pub enum Decision {
    /// Let the request through to the route's upstream, with the identity if there is one.
    Forward {
        route: Arc<Route>,
        identity: Option<Arc<SessionRecord>>,
    },
    /// Not logged in, and a browser: send it to log in with `provider`.
    Login { route: Arc<Route>, provider: String },
    /// Answer with an error; `reason` is safe to show and to log.
    Deny {
        status: StatusCode,
        reason: &'static str,
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
            Decision::Login { .. } => "login",
            Decision::Deny { status, .. } if *status == StatusCode::UNAUTHORIZED => {
                "unauthenticated"
            }
            Decision::Deny { status, .. } if *status == StatusCode::FORBIDDEN => "forbidden",
            Decision::Deny { .. } => "error",
        }
    }
}

/// What the session lookup found for a request.
#[derive(Debug)]
pub enum SessionLookup {
    /// The route does not look at sessions, or the request carries none.
    None,
    Found(Arc<SessionRecord>),
    /// The store could not answer (and the session was not cached).
    Unavailable,
}

/// The route for a request, or the answer when there is none.
pub fn route(rt: &Runtime, req: &RequestView) -> Result<Arc<Route>, Decision> {
    let Some(route) = rt.routes.find(&req.host, &req.path) else {
        return Err(Decision::Deny {
            status: StatusCode::NOT_FOUND,
            reason: "no route for this host and path",
            route: None,
        });
    };
    if req.websocket && !route.websocket {
        return Err(Decision::Deny {
            status: StatusCode::FORBIDDEN,
            reason: "WebSocket upgrades are disabled on this route",
            route: Some(Arc::clone(route)),
        });
    }
    Ok(Arc::clone(route))
}

/// Decides a routed request given its session.
pub fn authorize(route: Arc<Route>, req: &RequestView, session: SessionLookup) -> Decision {
    // A session from another provider does not count on this route.
    let identity = match session {
        SessionLookup::Found(s) if route.provider.as_deref() == Some(s.provider.as_str()) => {
            Some(s)
        }
        SessionLookup::Unavailable if route.auth == AuthMode::Required => {
            return Decision::Deny {
                status: StatusCode::SERVICE_UNAVAILABLE,
                reason: "sessions are temporarily unavailable",
                route: Some(route),
            }
        }
        _ => None,
    };
    match (route.auth, identity) {
        (AuthMode::None, _) => Decision::Forward {
            route,
            identity: None,
        },
        (AuthMode::Optional, identity) => Decision::Forward { route, identity },
        (AuthMode::Required, Some(identity)) => Decision::Forward {
            route,
            identity: Some(identity),
        },
        (AuthMode::Required, None) => {
            let browser = req.wants_html
                && (req.method == http::Method::GET || req.method == http::Method::HEAD);
            match (browser, route.provider.clone()) {
                (true, Some(provider)) => Decision::Login { route, provider },
                _ => Decision::Deny {
                    status: StatusCode::UNAUTHORIZED,
                    reason: "unauthenticated",
                    route: Some(route),
                },
            }
        }
    }
}
