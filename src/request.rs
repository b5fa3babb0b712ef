//! `RequestView`: the facts about one request that every decision is made on, built once by
//! whichever front door received it (the proxy today, forward-auth later).

use crate::path::{self, PathError};
use ipnet::IpNet;
use std::net::IpAddr;

/// What the engine knows about a request: nothing here borrows from Pingora.
#[derive(Debug, Clone)]
pub struct RequestView {
    pub method: http::Method,
    /// `https` when the client reached us over TLS (or a trusted proxy said so).
    pub tls: bool,
    /// Lower-case, without port or trailing dot; empty when the request named no host.
    pub host: String,
    /// `host[:port]` as the client sent it (the origin check needs the port).
    pub authority: String,
    /// The normalised path (see [`crate::path::normalize`]).
    pub path: String,
    pub query: Option<String>,
    pub client_ip: Option<IpAddr>,
    /// Whether the client asked for HTML (browsers), which chooses page vs JSON answers.
    pub wants_html: bool,
    pub websocket: bool,
}

/// A request that cannot be routed at all: always a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequest {
    Path(PathError),
    /// Neither origin-form (`/path`) nor absolute-form (`http://host/path`).
    Target,
    Host,
    HostMismatch,
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
        let split_query = |s: &'a str| match s.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (s, None),
        };
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
    pub fn normalised_path(&self) -> Result<String, BadRequest> {
        if self.path.is_empty() {
            return Ok("/".to_string());
        }
        path::normalize(self.path).map_err(BadRequest::Path)
    }
}

/// Whether the raw request head names a `Content-Length` field. Pingora drops `Content-Length`
/// when `Transfer-Encoding` is also present (RFC 9112 §6.3), so the conflict can only be seen
/// in the bytes as received.
pub fn head_names_content_length(head: &[u8]) -> bool {
    const NAME: &[u8] = b"content-length:";
    head.split(|&b| b == b'\n')
        .skip(1)
        .any(|line| line.len() >= NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME))
}

/// Largest total of request header names and values accepted (431 beyond).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Longest request target accepted (414 beyond).
pub const MAX_TARGET_BYTES: usize = 16 * 1024;

/// Refuses requests that are too large or framed ambiguously, before anything else reads them.
pub fn check_shape(
    version: http::Version,
    headers: &http::HeaderMap,
    target_len: usize,
) -> Result<(), (http::StatusCode, &'static str)> {
    use http::StatusCode;
    if target_len > MAX_TARGET_BYTES {
        return Err((StatusCode::URI_TOO_LONG, "request target too long"));
    }
    let size: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if size > MAX_HEADER_BYTES {
        return Err((
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request headers too large",
        ));
    }
    if headers.contains_key(http::header::CONTENT_LENGTH)
        && headers.contains_key(http::header::TRANSFER_ENCODING)
    {
        // Request smuggling: two framings that different servers may read differently.
        return Err((
            StatusCode::BAD_REQUEST,
            "both Content-Length and Transfer-Encoding",
        ));
    }
    let hosts = headers.get_all(http::header::HOST).iter().count();
    if hosts > 1 || (hosts == 0 && version == http::Version::HTTP_11) {
        return Err((
            StatusCode::BAD_REQUEST,
            "exactly one Host header is required",
        ));
    }
    Ok(())
}

/// Parses a `Host` value (`name[:port]` or `[v6][:port]`) into its lower-case name without
/// port or trailing dot. Anything that is not a plausible DNS name or IP literal is refused.
pub fn parse_host(raw: &str) -> Result<String, BadRequest> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > 260 {
        return Err(BadRequest::Host);
    }
    let (name, port) = if let Some(rest) = raw.strip_prefix('[') {
        let end = rest.find(']').ok_or(BadRequest::Host)?;
        let v6 = &rest[..end];
        v6.parse::<std::net::Ipv6Addr>()
            .map_err(|_| BadRequest::Host)?;
        (&raw[..end + 2], &rest[end + 1..])
    } else {
        match raw.rsplit_once(':') {
            Some((n, _)) => (n, &raw[n.len()..]),
            None => (raw, ""),
        }
    };
    if !port.is_empty() {
        let digits = port.strip_prefix(':').ok_or(BadRequest::Host)?;
        if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadRequest::Host);
        }
    }
    if name.starts_with('[') {
        return Ok(name.to_ascii_lowercase());
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err(BadRequest::Host);
    }
    Ok(name.to_ascii_lowercase())
}

/// Peers whose `X-Forwarded-*` headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl TrustedProxies {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The real client address: the peer itself, unless the peer is trusted, in which case the
    /// right-most address in `X-Forwarded-For` that is not itself a trusted proxy. `None` when
    /// a malformed entry comes before any such address.
    pub fn client_ip(&self, peer: Option<IpAddr>, forwarded_for: Option<&str>) -> Option<IpAddr> {
        let peer = peer.map(canonical)?;
        if !self.contains(peer) {
            return Some(peer);
        }
        let Some(xff) = forwarded_for else {
            return Some(peer);
        };
        let mut leftmost = None;
        for entry in xff.rsplit(',') {
            let Ok(ip) = entry.trim().parse::<IpAddr>().map(canonical) else {
                // A malformed hop breaks the chain of trust before an untrusted address was
                // found: the client is unknown (policies on networks then fail closed), not
                // the proxy that forwarded the garbage.
                return None;
            };
            if !self.contains(ip) {
                return Some(ip);
            }
            leftmost = Some(ip);
        }
        Some(leftmost.unwrap_or(peer))
    }
}

/// IPv4-mapped IPv6 addresses are treated as the IPv4 address they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether an `Accept` header asks for HTML (a browser navigation).
pub fn accepts_html(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("text/html"))
}

/// Splits an origin-form target (`/path?query`) and normalises the path.
pub fn split_target(path_and_query: &str) -> Result<(String, Option<String>), BadRequest> {
    let (raw_path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (path_and_query, None),
    };
    let path = path::normalize(raw_path).map_err(BadRequest::Path)?;
    Ok((path, query))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(parse_host("App.Example.COM").unwrap(), "app.example.com");
        assert_eq!(
            parse_host("app.example.com:8443").unwrap(),
            "app.example.com"
        );
        assert_eq!(parse_host("app.example.com.").unwrap(), "app.example.com");
        assert_eq!(parse_host("127.0.0.1:80").unwrap(), "127.0.0.1");
        assert_eq!(parse_host("[::1]:80").unwrap(), "[::1]");
        for bad in [
            "",
            "a b",
            "a..b",
            "evil.com/x",
            "a:b",
            "a:",
            "host:123456",
            "[zz]",
            "a@b",
            "é.com",
        ] {
            assert_eq!(parse_host(bad), Err(BadRequest::Host), "{bad:?}");
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

    #[test]
    fn content_length_in_the_raw_head() {
        assert!(head_names_content_length(
            b"POST / HTTP/1.1\r\nHost: a\r\ncontent-LENGTH: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(!head_names_content_length(
            b"POST / HTTP/1.1\r\nHost: a\r\nX-Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(!head_names_content_length(
            b"POST /content-length: HTTP/1.1\r\n\r\n"
        ));
    }

    #[test]
    fn request_shape_limits() {
        use http::{HeaderMap, HeaderValue, StatusCode, Version};
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("x"));
        assert!(check_shape(Version::HTTP_11, &h, 10).is_ok());
        assert_eq!(
            check_shape(Version::HTTP_11, &h, MAX_TARGET_BYTES + 1)
                .unwrap_err()
                .0,
            StatusCode::URI_TOO_LONG
        );
        let mut big = h.clone();
        big.insert(
            "x-big",
            HeaderValue::from_str(&"a".repeat(MAX_HEADER_BYTES)).unwrap(),
        );
        assert_eq!(
            check_shape(Version::HTTP_11, &big, 1).unwrap_err().0,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let mut both = h.clone();
        both.insert("content-length", HeaderValue::from_static("5"));
        both.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        assert_eq!(
            check_shape(Version::HTTP_11, &both, 1).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
        assert!(check_shape(Version::HTTP_11, &HeaderMap::new(), 1).is_err());
        assert!(check_shape(Version::HTTP_10, &HeaderMap::new(), 1).is_ok());
        let mut two = h.clone();
        two.append("host", HeaderValue::from_static("y"));
        assert!(check_shape(Version::HTTP_11, &two, 1).is_err());
    }

    #[test]
    fn client_ip_trusts_only_configured_proxies() {
        let trusted = TrustedProxies(vec!["10.0.0.0/8".parse().unwrap()]);
        let peer: IpAddr = "10.1.1.1".parse().unwrap();
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        // An untrusted peer's X-Forwarded-For is ignored.
        assert_eq!(
            trusted.client_ip(Some(stranger), Some("1.2.3.4")),
            Some(stranger)
        );
        // A trusted peer: right-most untrusted hop wins, spoofed left entries are ignored.
        assert_eq!(
            trusted.client_ip(Some(peer), Some("6.6.6.6, 198.51.100.7, 10.2.2.2")),
            Some("198.51.100.7".parse().unwrap())
        );
        assert_eq!(trusted.client_ip(Some(peer), None), Some(peer));
        assert_eq!(trusted.client_ip(Some(peer), Some("garbage")), None);
        assert_eq!(
            trusted.client_ip(Some(peer), Some("garbage, 198.51.100.7")),
            Some("198.51.100.7".parse().unwrap())
        );
        assert_eq!(
            trusted.client_ip(Some(peer), Some("10.9.9.9, invalid, 10.2.2.2")),
            None
        );
        let mapped: IpAddr = "::ffff:10.1.1.1".parse().unwrap();
        assert!(trusted.contains(mapped));
    }
}
