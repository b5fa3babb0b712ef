//! [`Answer`]: every response Portcullis writes itself — refusals, login redirects, the login
//! endpoints' pages, forward-auth verdicts, `static://` and `echo://` — as one type. The
//! front door writes it with one writer, which adds what every answer of its [`Style`] needs
//! (security headers, `Cache-Control: no-store`, the clearing of a dead session cookie).

use crate::pages;
use crate::routes::Route;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use std::sync::Arc;

/// A response to write.
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<&'static str>,
    pub body: Bytes,
    /// Set on the response: `Set-Cookie` lines are added, any other name replaces.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub style: Style,
}

/// Which headers the writer adds to an [`Answer`] besides its own.
#[derive(Debug, Clone)]
pub enum Style {
    /// A page of Portcullis' own: the global security headers, a strict CSP, `no-store`.
    OwnPage,
    /// A `static://` or `echo://` answer: the route's security and response headers, as a
    /// proxied response would get (and `no-store` when it has a body).
    AsUpstream(Arc<Route>),
    /// An allowed forward-auth check, read by the front proxy rather than a browser: only
    /// `no-store`, and the identity headers. Its head comes whole (built once per session
    /// and copied), `Content-Length` included.
    Check {
        head: http::HeaderMap,
        /// The signed assertion (empty for anonymous checks).
        assertion: Option<(crate::headers::FieldName, http::HeaderValue)>,
    },
}

/// Status and headers only: a cookie or a code in a `Location` must never reach a log.
impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("content_type", &self.content_type)
            .field("body_len", &self.body.len())
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("style", &self.style)
            .finish()
    }
}

impl Answer {
    /// An empty answer of Portcullis' own.
    pub fn empty(status: StatusCode) -> Answer {
        Answer {
            status,
            content_type: None,
            body: Bytes::new(),
            headers: Vec::new(),
            style: Style::OwnPage,
        }
    }

    /// A 302 to `to`.
    pub fn redirect(to: &str) -> Answer {
        Answer::empty(StatusCode::FOUND).with_location(to)
    }

    /// An error: a small page for browsers (`html`), else `{"error","message"}` JSON.
    pub fn error(status: StatusCode, reason: &str, html: bool) -> Answer {
        let (ct, body) = pages::error_body(status, reason, html);
        Answer {
            content_type: Some(ct),
            body,
            ..Answer::empty(status)
        }
    }

    pub fn json(status: StatusCode, value: &serde_json::Value) -> Answer {
        Answer {
            content_type: Some("application/json"),
            body: Bytes::from(value.to_string()),
            ..Answer::empty(status)
        }
    }

    /// A page people read, with a title and one paragraph.
    pub fn page(status: StatusCode, title: &str, text: &str) -> Answer {
        Answer::html(status, pages::page(title, text))
    }

    pub fn html(status: StatusCode, body: Bytes) -> Answer {
        Answer {
            content_type: Some("text/html; charset=utf-8"),
            body,
            ..Answer::empty(status)
        }
    }

    /// Adds a header (a value that cannot be a header value is left out).
    pub fn with_header(mut self, name: HeaderName, value: &str) -> Answer {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    pub fn with_location(self, to: &str) -> Answer {
        self.with_header(http::header::LOCATION, to)
    }

    /// Adds a `Set-Cookie` line.
    pub fn with_cookie(self, set_cookie: &str) -> Answer {
        self.with_header(http::header::SET_COOKIE, set_cookie)
    }
}
