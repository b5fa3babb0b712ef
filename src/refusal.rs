//! [`Refusal`]: why a request is not let through, classified once. The decision engine and the
//! request readers name the reason; each front door maps it to a status in one place
//! ([`Refusal::status`], and the forward-auth dialects' remapping), never by matching on text.

use crate::request::BadRequest;
use http::StatusCode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The request target, `Host` or path cannot be read or is ambiguous.
    Malformed(BadRequest),
    TargetTooLong,
    HeadersTooLarge,
    /// `Content-Length` together with `Transfer-Encoding` (request smuggling).
    AmbiguousFraming,
    /// HTTP/1.1 without exactly one `Host`.
    HostCount,
    /// A `Content-Length` that is not one plain number.
    BadContentLength,
    NoRoute,
    /// A route without `upstream` answers forward-auth checks only.
    ForwardAuthOnly,
    /// `/.portcullis/*` on a Portcullis without providers.
    LoginNotConfigured,
    WebSocketDisabled,
    /// No session (or Bearer token) where one is required.
    Unauthenticated,
    /// A Bearer token was presented and refused; the text is safe to show.
    InvalidToken(String),
    /// A Bearer token without every scope the route wants (the wanted scopes, space-joined).
    InsufficientScope(String),
    /// A cookie-authenticated unsafe request from another site.
    CrossSite,
    /// The route's `allow`/`deny` rules.
    Denied,
    /// The route wants MFA and the session has none (and a step-up cannot help).
    MfaRequired,
    /// The session store cannot answer for an uncached session.
    SessionsUnavailable,
    /// A forward-auth check from a peer outside `server.trusted_proxies`.
    UntrustedPeer,
    /// A forward-auth check whose description of the original request cannot be used.
    BadOriginal(&'static str),
    /// A rate limiter refused: try again in this many seconds (`Retry-After`).
    RateLimited(u64),
}

impl Refusal {
    /// The status this refusal is answered with (a forward-auth dialect may remap it).
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Malformed(_)
            | Refusal::AmbiguousFraming
            | Refusal::HostCount
            | Refusal::BadContentLength
            | Refusal::BadOriginal(_) => StatusCode::BAD_REQUEST,
            Refusal::TargetTooLong => StatusCode::URI_TOO_LONG,
            Refusal::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::NoRoute | Refusal::ForwardAuthOnly | Refusal::LoginNotConfigured => {
                StatusCode::NOT_FOUND
            }
            Refusal::Unauthenticated | Refusal::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Refusal::WebSocketDisabled
            | Refusal::InsufficientScope(_)
            | Refusal::CrossSite
            | Refusal::Denied
            | Refusal::MfaRequired
            | Refusal::UntrustedPeer => StatusCode::FORBIDDEN,
            Refusal::SessionsUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// What the answer says; safe to show and to log.
    pub fn reason(&self) -> &str {
        match self {
            Refusal::Malformed(bad) => bad.reason(),
            Refusal::TargetTooLong => "request target too long",
            Refusal::HeadersTooLarge => "request headers too large",
            Refusal::AmbiguousFraming => "both Content-Length and Transfer-Encoding",
            Refusal::HostCount => "exactly one Host header is required",
            Refusal::BadContentLength => "Content-Length must be one number",
            Refusal::NoRoute => "no route for this host and path",
            Refusal::ForwardAuthOnly => "this address only answers forward-auth checks",
            Refusal::LoginNotConfigured => "login is not configured",
            Refusal::WebSocketDisabled => "WebSocket upgrades are disabled on this route",
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::InvalidToken(_) => "invalid bearer token",
            Refusal::InsufficientScope(_) => "insufficient scope",
            Refusal::CrossSite => "cross-site request refused",
            Refusal::Denied => "access denied",
            Refusal::MfaRequired => "multi-factor authentication required",
            Refusal::SessionsUnavailable => "sessions are temporarily unavailable",
            Refusal::UntrustedPeer => {
                "forward-auth requests are accepted only from trusted proxies"
            }
            Refusal::BadOriginal(why) => why,
            Refusal::RateLimited(_) => "too many requests: try again later",
        }
    }

    /// The `WWW-Authenticate` challenge: RFC 6750 error details for token problems, the plain
    /// `Bearer` scheme on any other 401.
    pub fn challenge(&self) -> Option<String> {
        match self {
            Refusal::InvalidToken(why) => Some(format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                why.replace(['"', '\\'], "'")
            )),
            Refusal::InsufficientScope(wanted) => Some(format!(
                "Bearer error=\"insufficient_scope\", scope=\"{wanted}\""
            )),
            other if other.status() == StatusCode::UNAUTHORIZED => Some("Bearer".into()),
            _ => None,
        }
    }

    /// Label for `portcullis_auth_decisions_total{decision}`.
    pub fn label(&self) -> &'static str {
        match self.status() {
            StatusCode::UNAUTHORIZED => "unauthenticated",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            _ => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_challenges() {
        assert_eq!(Refusal::Unauthenticated.status(), 401);
        assert_eq!(
            Refusal::Unauthenticated.challenge().as_deref(),
            Some("Bearer")
        );
        let bad = Refusal::InvalidToken("token \"expired\"".into());
        assert_eq!(bad.status(), 401);
        assert_eq!(
            bad.challenge().as_deref(),
            Some("Bearer error=\"invalid_token\", error_description=\"token 'expired'\"")
        );
        let scope = Refusal::InsufficientScope("a b".into());
        assert_eq!(scope.status(), 403);
        assert_eq!(
            scope.challenge().as_deref(),
            Some("Bearer error=\"insufficient_scope\", scope=\"a b\"")
        );
        assert_eq!(Refusal::Denied.challenge(), None);
        assert_eq!(Refusal::SessionsUnavailable.status(), 503);
        assert_eq!(Refusal::TargetTooLong.status(), 414);
        assert_eq!(Refusal::HeadersTooLarge.status(), 431);
        assert_eq!(Refusal::Malformed(BadRequest::Target).status(), 400);
        assert_eq!(Refusal::Denied.label(), "forbidden");
        assert_eq!(Refusal::Unauthenticated.label(), "unauthenticated");
        assert_eq!(Refusal::NoRoute.label(), "error");
        assert_eq!(Refusal::RateLimited(3).status(), 429);
        assert_eq!(Refusal::RateLimited(3).label(), "rate_limited");
        assert_eq!(Refusal::RateLimited(3).challenge(), None);
    }
}
