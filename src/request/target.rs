//! The request target: which forms are served, and how a target is split for routing.

use crate::path::{self, PathError};
use std::borrow::Cow;

/// A request that cannot be routed at all: always a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequest {
    Path(PathError),
    /// Neither origin-form (`/path`) nor absolute-form (`http://host/path`).
    Target,
    Host,
    HostMismatch,
    /// Neither `Host` nor an absolute-form authority: nothing to route on, and an upstream
    /// would pick its default site.
    NoHost,
    /// A method with lower-case letters: `delete` is not DELETE to the HTTP spec (nor to
    /// `deny: { methods }`), but it is to werkzeug, Django and ASP.NET.
    Method,
}

impl BadRequest {
    pub fn reason(self) -> &'static str {
        match self {
            BadRequest::Path(e) => e.reason(),
            BadRequest::Target => {
                "the request target must be a path starting with / or an absolute http(s) URL"
            }
            BadRequest::Host => "invalid Host header",
            BadRequest::HostMismatch => "Host header does not match the request target",
            BadRequest::NoHost => "a Host header is required",
            BadRequest::Method => "the method must be upper case",
        }
    }
}

/// A request target as sent on the request line, split for routing. Only the two forms a
/// proxy serves are accepted (RFC 9112 §3.2): origin-form `/path?query`, and absolute-form
/// `http://authority/path?query`, whose authority is the request's host (§3.2.2).
/// Everything else (`admin/x`, `*`, `host:443`, `%2Fadmin`) is refused: an app may resolve
/// such a target to a path that routing never saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// The authority of an absolute-form target.
    pub authority: Option<&'a str>,
    /// The path as sent (not yet normalised); `""` for `http://host` and `http://host?q`.
    pub path: &'a str,
    pub query: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// Splits the raw request target (Pingora's `raw_path()`: the bytes of the request line).
    pub fn parse(raw: &'a [u8]) -> Result<Target<'a>, BadRequest> {
        let raw = std::str::from_utf8(raw).map_err(|_| BadRequest::Path(PathError::InvalidUtf8))?;
        if raw.starts_with('/') {
            let (path, query) = split_query(raw);
            return Ok(Target {
                authority: None,
                path,
                query,
            });
        }
        let rest = ["http://", "https://"]
            .iter()
            .find_map(|scheme| {
                raw.get(..scheme.len())
                    .filter(|s| s.eq_ignore_ascii_case(scheme))
                    .map(|_| &raw[scheme.len()..])
            })
            .ok_or(BadRequest::Target)?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, after) = rest.split_at(end);
        if authority.is_empty() || authority.contains('@') || after.starts_with('#') {
            return Err(BadRequest::Target);
        }
        let (path, query) = split_query(after);
        Ok(Target {
            authority: Some(authority),
            path,
            query,
        })
    }

    /// The normalised path (`/` for an absolute-form target without one).
    pub fn normalised_path(&self) -> Result<Cow<'a, str>, BadRequest> {
        if self.path.is_empty() {
            return Ok(Cow::Borrowed("/"));
        }
        path::normalized(self.path).map_err(BadRequest::Path)
    }
}

/// A target split at its first `?`: the path, and the query if there is one. By bytes: a
/// `char` pattern's searcher costs more than the short strings of a target do.
pub fn split_query(target: &str) -> (&str, Option<&str>) {
    match target.bytes().position(|b| b == b'?') {
        Some(i) => (&target[..i], Some(&target[i + 1..])),
        None => (target, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_split_at_the_first_question_mark() {
        for target in ["/a?b?c", "/a", "/?", "?", "", "/a/b?x=1&y=?", "/é?é"] {
            let want = match target.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (target, None),
            };
            assert_eq!(split_query(target), want, "{target:?}");
        }
    }

    #[test]
    fn request_targets() {
        fn t(raw: &str) -> Result<Target<'_>, BadRequest> {
            Target::parse(raw.as_bytes())
        }
        assert_eq!(
            t("/a/b?x=1"),
            Ok(Target {
                authority: None,
                path: "/a/b",
                query: Some("x=1")
            })
        );
        assert_eq!(
            t("HTTP://App.Test:8080/p?q"),
            Ok(Target {
                authority: Some("App.Test:8080"),
                path: "/p",
                query: Some("q")
            })
        );
        assert_eq!(
            t("https://app.test"),
            Ok(Target {
                authority: Some("app.test"),
                path: "",
                query: None
            })
        );
        assert_eq!(t("http://app.test?q").unwrap().query, Some("q"));
        assert_eq!(
            t("http://app.test").unwrap().normalised_path(),
            Ok("/".into())
        );
        for bad in [
            "admin/report",
            "%2Fadmin/x",
            "../admin/x",
            "\\admin\\x",
            "",
            " /admin",
            "*",
            "app.test:443",
            "ftp://app.test/x",
            "http:/app.test/x",
            "http:///x",
            "http://user@app.test/x",
            "http://app.test#/x",
            "javascript://x/",
        ] {
            assert_eq!(t(bad), Err(BadRequest::Target), "{bad:?}");
        }
        assert!(Target::parse(b"/a\xff").is_err());
    }
}
