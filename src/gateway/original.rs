//! Forward auth's way in: the original request a check describes, read from `X-Original-*`
//! (nginx), `X-Forwarded-*` (Traefik, Caddy) or Envoy's path, and which dialect asks.

use super::answer::Dialect;
use crate::refusal::Refusal;
use crate::request::{self, RequestView, Target};
use http::{HeaderMap, HeaderValue};
use std::borrow::Cow;

/// The original target of an Envoy check, read from the raw request target before it is
/// normalised (normalising `/.portcullis/auth/envoy/../x` would climb out of the prefix).
pub(super) fn envoy_target(target: &Target<'_>) -> Option<String> {
    let rest = target.path.strip_prefix("/.portcullis/auth/envoy")?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    let mut original = if rest.is_empty() {
        "/".to_string()
    } else {
        rest.to_string()
    };
    if let Some(q) = target.query {
        original.push('?');
        original.push_str(q);
    }
    Some(original)
}

/// What answering a forward-auth check needs of the check request itself (the request that
/// is decided on is the original one it describes).
#[derive(Debug, Clone)]
pub(super) struct CheckRequest {
    /// Whether the check reached us over TLS (as a trusted front proxy says).
    pub tls: bool,
    /// The client the front proxy asks for (from its `X-Forwarded-For`, when trusted).
    pub client_ip: Option<std::net::IpAddr>,
    /// Whether the client asked for HTML: refusals are pages or JSON.
    pub wants_html: bool,
    /// The check's own query (`?mode=nginx`).
    pub query: Option<String>,
    /// Envoy's original request, when Envoy asks.
    pub envoy: Option<EnvoyOriginal>,
}

/// The original request of an Envoy check: the target appended to the check's path, and the
/// check's own `Host`, which Envoy keeps.
#[derive(Debug, Clone)]
pub(super) struct EnvoyOriginal {
    pub target: String,
    pub authority: String,
}

/// Which front proxy asks, by the way it asks: Envoy by its path, nginx `auth_request` by
/// `X-Original-URL` (or `?mode=nginx`), anything else speaks Traefik's and Caddy's dialect.
pub(super) fn dialect(described: &Described<'_>, check: &CheckRequest) -> Dialect {
    if check.envoy.is_some() {
        return Dialect::Envoy;
    }
    let nginx = described.original_url.is_some()
        || check.query.as_deref().is_some_and(|q| {
            url::form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "mode" && v == "nginx")
        });
    if nginx {
        Dialect::Nginx
    } else {
        Dialect::Traefik
    }
}

/// The original request a forward-auth check describes. `described` is read from the
/// check's headers, `method` is the check's own (Envoy keeps the original one); the headers
/// are believed only because the caller checked that the peer is a trusted proxy.
pub(super) fn original_request(
    method: &http::Method,
    described: &Described<'_>,
    check: &CheckRequest,
) -> Result<RequestView, Refusal> {
    original_parts(method, described, check).map_err(Refusal::BadOriginal)
}

/// The headers that describe an original request, read in one pass over the check's headers
/// (this runs on every check: one walk with byte comparisons instead of a hashed lookup per
/// name). Each holds the first value, as `HeaderMap::get` would give.
#[derive(Default)]
pub(super) struct Described<'a> {
    original_url: Option<&'a HeaderValue>,
    original_method: Option<&'a HeaderValue>,
    forwarded_uri: Option<&'a HeaderValue>,
    forwarded_method: Option<&'a HeaderValue>,
    forwarded_host: Option<&'a HeaderValue>,
    forwarded_proto: Option<&'a HeaderValue>,
    /// One of them came more than once.
    repeated: bool,
    /// `Upgrade` (its first value) and whether `Sec-WebSocket-Key` came: a WebSocket
    /// handshake's own headers, which reach the check.
    upgrade: Option<&'a HeaderValue>,
    websocket_key: bool,
}

impl<'a> Described<'a> {
    pub(super) fn read(headers: &'a HeaderMap) -> Described<'a> {
        let mut d = Described::default();
        for (name, value) in headers {
            if *name == http::header::UPGRADE {
                d.upgrade = d.upgrade.or(Some(value));
                continue;
            }
            if *name == http::header::SEC_WEBSOCKET_KEY {
                d.websocket_key = true;
                continue;
            }
            let name = name.as_str();
            // The other six start with `x-`; most request headers do not.
            if !name.starts_with("x-") {
                continue;
            }
            let slot = match name {
                "x-original-url" => &mut d.original_url,
                "x-original-method" => &mut d.original_method,
                "x-forwarded-uri" => &mut d.forwarded_uri,
                "x-forwarded-method" => &mut d.forwarded_method,
                "x-forwarded-host" => &mut d.forwarded_host,
                "x-forwarded-proto" => &mut d.forwarded_proto,
                _ => continue,
            };
            if slot.is_some() {
                d.repeated = true;
            } else {
                *slot = Some(value);
            }
        }
        d
    }
}

/// A describing header's value as text, trimmed; `None` when absent, empty or not text.
/// (`to_str` admits visible ASCII, space and tab only, so trimming ASCII whitespace is all
/// `str::trim` would do.)
fn text(value: Option<&HeaderValue>) -> Option<&str> {
    value
        .and_then(|v| v.to_str().ok())
        .map(str::trim_ascii)
        .filter(|v| !v.is_empty())
}

fn original_parts(
    method: &http::Method,
    d: &Described<'_>,
    check: &CheckRequest,
) -> Result<RequestView, &'static str> {
    // A front proxy that appends instead of replacing puts the client's copy first.
    if d.repeated {
        return Err("a header describing the original request appears more than once (the front proxy must replace it, not append)");
    }
    let original_url = text(d.original_url);
    let (method, scheme, authority, target): (&str, &str, &str, Cow<'_, str>) = if let Some(envoy) =
        &check.envoy
    {
        // Envoy keeps the original method and Host, and appends the original target.
        let scheme = if check.tls { "https" } else { "http" };
        (
            method.as_str(),
            scheme,
            &envoy.authority,
            Cow::Borrowed(&envoy.target),
        )
    } else if original_url.is_some()
        && (text(d.forwarded_uri).is_some() || text(d.forwarded_method).is_some())
    {
        // A front proxy sends one description of the original request. Two mean a client
        // added one of them (nginx and Traefik pass client headers through): believing
        // either would let it choose the URL that is checked.
        return Err("both X-Original-URL and X-Forwarded-Uri/-Method: a front proxy sends only one (strip the other from client requests)");
    } else if let Some(original_url) = original_url {
        // Split by hand, not with a URL parser: the raw target as sent is what
        // normalisation below must see (a parser re-encodes it), and this runs on every
        // check.
        // The scheme ends at the first `:` (neither `http` nor `https` holds one), which a
        // one-byte search finds for a fraction of what a search for "://" costs.
        let (scheme, after_scheme) = original_url
            .bytes()
            .position(|b| b == b':')
            .and_then(|i| {
                Some((
                    &original_url[..i],
                    original_url[i + 1..].strip_prefix("//")?,
                ))
            })
            .ok_or("X-Original-URL is not an absolute URL")?;
        let scheme = match scheme {
            s if s.eq_ignore_ascii_case("https") => "https",
            s if s.eq_ignore_ascii_case("http") => "http",
            _ => return Err("X-Original-URL must be an http(s) URL"),
        };
        let (authority, target) = match after_scheme
            .bytes()
            .position(|b| matches!(b, b'/' | b'?' | b'#'))
        {
            Some(i) => (&after_scheme[..i], &after_scheme[i..]),
            None => (after_scheme, "/"),
        };
        let target = if target.starts_with(['?', '#']) {
            Cow::Owned(format!("/{target}"))
        } else {
            Cow::Borrowed(target)
        };
        (
            text(d.original_method).unwrap_or("GET"),
            scheme,
            authority,
            target,
        )
    } else {
        let (Some(host), Some(uri)) = (text(d.forwarded_host), text(d.forwarded_uri)) else {
            return Err(
                "forward-auth needs X-Forwarded-Host and X-Forwarded-Uri, or X-Original-URL",
            );
        };
        if !uri.starts_with('/') {
            return Err("X-Forwarded-Uri must start with /");
        }
        let scheme = match text(d.forwarded_proto) {
            Some(p) if p.eq_ignore_ascii_case("https") => "https",
            Some(p) if p.eq_ignore_ascii_case("http") => "http",
            Some(_) => return Err("X-Forwarded-Proto must be http or https"),
            None => "http",
        };
        (
            text(d.forwarded_method).unwrap_or("GET"),
            scheme,
            host,
            Cow::Borrowed(uri),
        )
    };
    // Methods are compared in upper case (nginx passes `$request_method` as sent); copy only
    // when there is something to change.
    let method = if method.bytes().any(|b| b.is_ascii_lowercase()) {
        http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
    } else {
        http::Method::from_bytes(method.as_bytes())
    }
    .map_err(|_| "the original method is not a valid HTTP method")?;
    if authority.bytes().any(|b| matches!(b, b'/' | b'@' | b'\\')) {
        return Err("invalid original host");
    }
    let host = request::host_name(authority).map_err(|_| "invalid original host")?;
    if target.len() > request::MAX_TARGET_BYTES {
        return Err("original request target too long");
    }
    if target.bytes().any(|b| b == b'#') {
        // nginx routes on the part before `#`; an app may resolve the whole.
        return Err("the original request target must not carry a fragment (#)");
    }
    let (raw_path, query) = request::split_query(&target);
    if resolves_differently(raw_path) {
        return Err("the original path has dot segments, encoded dots or empty segments: the app could resolve it differently than Portcullis");
    }
    let path = crate::path::normalized(raw_path).map_err(|e| e.reason())?;
    let view = RequestView {
        method,
        tls: scheme == "https",
        host: request::lower_case(host),
        forwarded_host: None,
        authority: authority.into(),
        path: path.into(),
        query: query.map(str::to_string),
        client_ip: check.client_ip,
        wants_html: check.wants_html,
        // `Upgrade` is hop-by-hop and nginx does not pass it to `auth_request`; the
        // handshake's own headers are end-to-end.
        websocket: d
            .upgrade
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
            || d.websocket_key,
    };
    Ok(view)
}

/// Whether a raw path is one the app behind the front proxy may route differently than
/// Portcullis' normalised form: the front proxy forwards the raw target, and a prefix router in
/// the app that does not resolve `..` would send `/admin/../public` to its admin handler while
/// Portcullis decided on `/public`. In proxy mode the app gets the normalised path instead.
///
/// One pass over the bytes: an empty segment between two slashes (`//`), a segment that is
/// `.` or `..`, or an encoded dot (`%2e`, `%2E`) anywhere.
fn resolves_differently(raw_path: &str) -> bool {
    let b = raw_path.as_bytes();
    let mut segment = 0;
    for i in 0..=b.len() {
        match b.get(i) {
            Some(b'%')
                if b.get(i + 1) == Some(&b'2') && matches!(b.get(i + 2), Some(b'e' | b'E')) =>
            {
                return true
            }
            Some(b'/') | None => {
                match &b[segment..i] {
                    b"." | b".." => return true,
                    b"" if i > 0 && b.get(i) == Some(&b'/') => return true,
                    _ => {}
                }
                segment = i + 1;
            }
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::answer::return_url;
    use http::HeaderName;

    fn check() -> CheckRequest {
        CheckRequest {
            tls: false,
            client_ip: Some("203.0.113.7".parse().unwrap()),
            wants_html: true,
            query: None,
            envoy: None,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn read(pairs: &[(&str, &str)]) -> Result<RequestView, Refusal> {
        original_request(
            &http::Method::GET,
            &Described::read(&headers(pairs)),
            &check(),
        )
    }

    #[test]
    fn nginx_original_url() {
        let v = read(&[
            ("x-original-url", "HTTPS://App.Example.com:8443/a/%62?x=1"),
            ("x-original-method", "post"),
        ])
        .unwrap();
        assert_eq!(v.method, http::Method::POST);
        assert!(v.tls);
        assert_eq!(v.host, "app.example.com");
        assert_eq!(v.authority, "App.Example.com:8443");
        assert_eq!(v.path, "/a/b");
        assert_eq!(v.query.as_deref(), Some("x=1"));
        assert_eq!(v.client_ip, check().client_ip);
        assert!(v.wants_html);
        assert_eq!(return_url(&v), "https://App.Example.com:8443/a/b?x=1");
        let v = read(&[("x-original-url", "http://app.test?q")]).unwrap();
        assert_eq!((v.path.as_str(), v.query.as_deref()), ("/", Some("q")));
        let v = read(&[("x-original-url", "http://app.test")]).unwrap();
        assert_eq!(v.path, "/");
    }

    #[test]
    fn traefik_forwarded_headers() {
        let v = read(&[
            ("x-forwarded-host", "app.test"),
            ("x-forwarded-uri", "/x/y?z"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-method", "DELETE"),
            ("sec-websocket-key", "abc"),
        ])
        .unwrap();
        assert_eq!(v.method, http::Method::DELETE);
        assert_eq!((v.host.as_str(), v.path.as_str()), ("app.test", "/x/y"));
        assert!(v.tls && v.websocket);
        assert_eq!(return_url(&v), "https://app.test/x/y?z");
    }

    #[test]
    fn envoy_keeps_method_and_host() {
        let mut envoy = check();
        envoy.envoy = Some(EnvoyOriginal {
            target: "/p?q".into(),
            authority: "app.test".into(),
        });
        let v = original_request(&http::Method::PUT, &Described::default(), &envoy).unwrap();
        assert_eq!(v.method, http::Method::PUT);
        assert_eq!((v.host.as_str(), v.path.as_str()), ("app.test", "/p"));
        assert_eq!(return_url(&v), "http://app.test/p?q");
        let t = Target::parse(b"/.portcullis/auth/envoy/a/../b?c").unwrap();
        assert_eq!(envoy_target(&t).as_deref(), Some("/a/../b?c"));
        let t = Target::parse(b"/.portcullis/auth/envoyx").unwrap();
        assert_eq!(envoy_target(&t), None);
    }

    #[test]
    fn unusable_descriptions_are_refused() {
        for pairs in [
            &[][..],
            &[("x-forwarded-host", "app.test")],
            &[("x-forwarded-host", "app.test"), ("x-forwarded-uri", "x")],
            &[
                ("x-forwarded-host", "app.test"),
                ("x-forwarded-uri", "/x"),
                ("x-forwarded-proto", "ftp"),
            ],
            &[("x-original-url", "/relative")],
            &[("x-original-url", "ftp://app.test/")],
            &[("x-original-url", "http:app.test/")],
            &[("x-original-url", "http:/app.test/")],
            &[("x-original-url", "ht:tp://app.test/")],
            &[("x-original-url", "http:/x://app.test/")],
            &[("x-original-url", "://app.test/")],
            &[("x-original-url", "http://app.test/x#/../admin")],
            &[("x-original-url", "http://app.test#x")],
            &[
                ("x-forwarded-host", "app.test"),
                ("x-forwarded-uri", "/x#y"),
            ],
            &[("x-original-url", "http://evil@app.test/")],
            &[("x-original-url", "http://app.test/a/../b")],
            &[("x-original-url", "http://app.test/a/%2e%2e/b")],
            &[("x-original-url", "http://app.test//admin")],
            &[("x-original-url", "http://app.test/a%2Fb")],
            &[
                ("x-original-url", "http://app.test/"),
                ("x-original-method", "G T"),
            ],
            &[
                ("x-original-url", "http://app.test/"),
                ("x-forwarded-uri", "/admin"),
            ],
            &[
                ("x-original-url", "http://app.test/public"),
                ("x-original-url", "http://app.test/admin"),
            ],
            &[
                ("x-forwarded-host", "app.test"),
                ("x-forwarded-host", "admin.test"),
                ("x-forwarded-uri", "/x"),
            ],
            &[
                ("x-forwarded-host", "app.test"),
                ("x-forwarded-uri", "/public"),
                ("x-forwarded-uri", "/admin"),
            ],
        ] {
            let got = read(pairs);
            assert!(
                matches!(got, Err(Refusal::BadOriginal(_))),
                "{pairs:?}: {got:?}"
            );
        }
    }

    #[test]
    fn paths_an_app_may_resolve_differently() {
        for raw in [
            "/a/../b",
            "/a/./b",
            "//a",
            "/a//b",
            "/a/%2e%2e/b",
            "/a/%2E/b",
            "/..",
        ] {
            assert!(resolves_differently(raw), "{raw}");
        }
        for raw in [
            "/",
            "/a/b",
            "/a.b/c..d",
            "/.well-known/x",
            "/a/%2Fb",
            "/%2d",
        ] {
            assert!(!resolves_differently(raw), "{raw}");
        }
    }

    #[test]
    fn dialects() {
        let v = check();
        let none = Described::default();
        let mut envoy = check();
        envoy.envoy = Some(EnvoyOriginal {
            target: "/".into(),
            authority: "a".into(),
        });
        assert_eq!(dialect(&none, &envoy), Dialect::Envoy);
        let nginx = headers(&[("x-original-url", "http://a/")]);
        assert_eq!(dialect(&Described::read(&nginx), &v), Dialect::Nginx);
        let mut q = check();
        q.query = Some("mode=nginx".into());
        assert_eq!(dialect(&none, &q), Dialect::Nginx);
        assert_eq!(dialect(&none, &v), Dialect::Traefik);
    }

    /// A WebSocket handshake's headers mark the original request as one, read on the same
    /// walk as the describing headers: `Upgrade` by its first value, or `Sec-WebSocket-Key`.
    #[test]
    fn websocket_handshakes() {
        let ws = |pairs: &[(&str, &str)]| {
            let mut all = vec![("x-original-url", "http://app.test/ws")];
            all.extend_from_slice(pairs);
            read(&all).unwrap().websocket
        };
        assert!(ws(&[("Upgrade", "WebSocket")]));
        assert!(ws(&[("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]));
        assert!(!ws(&[("Upgrade", "h2c"), ("Upgrade", "websocket")]));
        assert!(!ws(&[]));
    }

    #[test]
    fn one_pass_path_check_agrees_with_the_three_searches() {
        let reference = |p: &str| {
            p.contains("//")
                || p.as_bytes()
                    .windows(3)
                    .any(|w| w[0] == b'%' && w[1] == b'2' && (w[2] == b'e' || w[2] == b'E'))
                || p.split('/').any(|seg| seg == "." || seg == "..")
        };
        let pieces = [
            "", "/", ".", "..", "%2e", "%2E", "%2", "%", "2e", "a", "e", "?",
        ];
        let mut flagged = 0;
        for p in crate::test_inputs::concatenations(&pieces, 5) {
            assert_eq!(resolves_differently(&p), reference(&p), "{p:?}");
            flagged += usize::from(reference(&p));
        }
        // Both answers occur: the comparison is not between two constants.
        assert!(flagged > 0 && flagged < pieces.len().pow(5));
    }
}
