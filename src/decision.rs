//! The one decision point. Every front door (the proxy now, forward-auth later) builds a
//! [`RequestView`], asks [`decide`], and only turns the answer into its own kind of response.

use crate::request::RequestView;
use crate::routes::{AuthMode, Route};
use crate::runtime::Runtime;
use http::StatusCode;
use std::sync::Arc;

#[derive(Debug)]
pub enum Decision {
    /// Let the request through to the route's upstream.
    Forward(Arc<Route>),
    /// Answer with an error; `reason` is safe to show and to log.
    Deny {
        status: StatusCode,
        reason: &'static str,
        route: Option<Arc<Route>>,
    },
}

pub fn decide(rt: &Runtime, req: &RequestView) -> Decision {
    let Some(route) = rt.routes.find(&req.host, &req.path) else {
        return Decision::Deny {
            status: StatusCode::NOT_FOUND,
            reason: "no route for this host and path",
            route: None,
        };
    };
    if req.websocket && !route.websocket {
        return Decision::Deny {
            status: StatusCode::FORBIDDEN,
            reason: "WebSocket upgrades are disabled on this route",
            route: Some(Arc::clone(route)),
        };
    }
    match route.auth {
        AuthMode::None => Decision::Forward(Arc::clone(route)),
    }
}
