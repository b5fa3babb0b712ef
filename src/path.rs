//! Request path normalisation. Routes and (later) public paths are matched on the normalised
//! form, and the normalised form is what the upstream receives, so the proxy and the app can
//! never disagree about which resource was asked for.

/// Why a path was refused (always answered with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not an origin-form path starting with `/`.
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// `%2F` or `%5C`: a slash the app may decode that routing did not see.
    EncodedSlash,
    /// A raw or encoded backslash.
    Backslash,
    /// NUL or another control character, raw or encoded.
    ControlChar,
    /// The decoded bytes are not UTF-8 (overlong forms such as `%C0%AF` included).
    InvalidUtf8,
    /// `..` that climbs above the root.
    EscapesRoot,
    /// A dot segment hidden behind a `;` parameter (`..;`), which some servers resolve.
    DotSegmentParam,
}

impl PathError {
    pub fn reason(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path must start with /",
            PathError::BadEscape => "malformed percent-encoding",
            PathError::EncodedSlash => "encoded slash in path",
            PathError::Backslash => "backslash in path",
            PathError::ControlChar => "control character in path",
            PathError::InvalidUtf8 => "path is not valid UTF-8",
            PathError::EscapesRoot => "path escapes the root",
            PathError::DotSegmentParam => "dot segment with parameters in path",
        }
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The common case, checked in one pass: printable ASCII without `%` or `\\`, and no empty,
/// `.`-led segment (which covers `.`, `..`, `..;x` and `//`) except a final empty one. Such a
/// path is already normal.
fn is_plain(bytes: &[u8]) -> bool {
    let mut prev = b'/';
    for &b in &bytes[1..] {
        let ok = match b {
            b'%' | b'\\' | 0..=0x20 | 0x7f..=0xff => false,
            b'/' | b'.' => prev != b'/',
            _ => true,
        };
        if !ok {
            return false;
        }
        prev = b;
    }
    true
}

/// Returns the normalised form of `raw` (the path part of the request target, no query).
///
/// Unreserved characters are decoded, other escapes are kept with upper-case hex, repeated
/// slashes collapse, `.` and `..` segments are resolved. A path whose meaning is ambiguous is
/// an error. When `raw` is already normal, no allocation beyond the returned copy happens.
pub fn normalize(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_plain(bytes) {
        return Ok(raw.to_owned());
    }
    normalize_full(raw)
}

/// The whole algorithm, for paths the fast check could not vouch for.
fn normalize_full(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    // Pass 1: decode unreserved escapes, validate everything.
    let mut decoded = Vec::with_capacity(bytes.len());
    // Fully decoded bytes, only to check UTF-8 validity.
    let mut plain = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::BadEscape);
            };
            let v = h * 16 + l;
            match v {
                b'/' => return Err(PathError::EncodedSlash),
                b'\\' => return Err(PathError::Backslash),
                0..=0x1f | 0x7f => return Err(PathError::ControlChar),
                _ if is_unreserved(v) => decoded.push(v),
                _ => {
                    decoded.push(b'%');
                    decoded.extend_from_slice(format!("{v:02X}").as_bytes());
                }
            }
            plain.push(v);
            i += 3;
            continue;
        }
        match b {
            b'\\' => return Err(PathError::Backslash),
            0..=0x1f | 0x7f => return Err(PathError::ControlChar),
            _ => {}
        }
        decoded.push(b);
        plain.push(b);
        i += 1;
    }
    if std::str::from_utf8(&plain).is_err() {
        return Err(PathError::InvalidUtf8);
    }
    // Pass 2: segments. `decoded` is ASCII-or-valid-UTF-8 because `raw` was a &str.
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::InvalidUtf8)?;
    let mut out: Vec<&str> = Vec::new();
    let trailing_slash = decoded.len() > 1 && decoded.ends_with('/');
    let mut ends_in_dir = trailing_slash;
    for seg in decoded.split('/').skip(1) {
        let bare = seg.split(';').next().unwrap_or(seg);
        match seg {
            "" => continue,
            "." => {
                ends_in_dir = true;
                continue;
            }
            ".." => {
                if out.pop().is_none() {
                    return Err(PathError::EscapesRoot);
                }
                ends_in_dir = true;
                continue;
            }
            _ if bare == "." || bare == ".." => return Err(PathError::DotSegmentParam),
            _ => {
                out.push(seg);
                ends_in_dir = trailing_slash;
            }
        }
    }
    let mut result = String::with_capacity(decoded.len());
    for seg in &out {
        result.push('/');
        result.push_str(seg);
    }
    if result.is_empty() || ends_in_dir {
        result.push('/');
    }
    Ok(result)
}

/// `path` (normalised) without `;` parameters in its segments, for matching routes and public
/// paths: Java servlet containers (Tomcat, Jetty, Spring, ...) drop `;jsessionid=...` and any
/// other `;param` before routing, so `/admin;x/users` *is* `/admin/users` to the app and must
/// meet `/admin`'s rules. Segments that were only parameters disappear. Allocates only when
/// there is a `;`.
pub fn without_params(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.contains(';') {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        let name = segment.split(';').next().unwrap_or("");
        if !name.is_empty() || i == last {
            out.push('/');
            out.push_str(name);
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    std::borrow::Cow::Owned(out)
}

/// Whether `path` (normalised) falls under `prefix` on a segment boundary: `/api` covers `/api`
/// and `/api/x` but not `/apix`; a prefix ending in `/` covers everything below it.
pub fn under_prefix(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        None => {
            // `/api/` also covers `/api` itself.
            prefix.ends_with('/') && path.len() + 1 == prefix.len() && prefix.starts_with(path)
        }
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_dropped_for_matching() {
        for (given, want) in [
            ("/admin", "/admin"),
            ("/admin;x", "/admin"),
            ("/admin;x/users", "/admin/users"),
            ("/admin;jsessionid=1/users;a=b;c", "/admin/users"),
            ("/;/admin", "/admin"),
            ("/;x", "/"),
            ("/admin;x/", "/admin/"),
            ("/a/;x/b", "/a/b"),
        ] {
            assert_eq!(without_params(given), want, "{given}");
        }
        assert!(matches!(
            without_params("/plain/path"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    fn ok(raw: &str) -> String {
        normalize(raw).unwrap_or_else(|e| panic!("{raw:?} refused: {e:?}"))
    }

    #[test]
    fn normal_paths_are_kept() {
        for p in [
            "/",
            "/a",
            "/a/b/",
            "/a%20b",
            "/caf%C3%A9",
            "/a;b=c",
            "/a:b@c",
        ] {
            assert_eq!(ok(p), p);
        }
    }

    #[test]
    fn dot_segments_and_slashes_resolve() {
        assert_eq!(ok("/a/../b"), "/b");
        assert_eq!(ok("/a/./b"), "/a/b");
        assert_eq!(ok("//a///b"), "/a/b");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a/."), "/a/");
        assert_eq!(ok("/public/../admin"), "/admin");
    }

    #[test]
    fn unreserved_escapes_decode() {
        assert_eq!(ok("/%61dmin"), "/admin");
        assert_eq!(ok("/public/%2e%2e/admin"), "/admin");
        assert_eq!(ok("/public/%2E./admin"), "/admin");
        assert_eq!(ok("/a%7eb"), "/a~b");
        assert_eq!(ok("/x%3fy"), "/x%3Fy");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        let cases = [
            ("a", PathError::NotAbsolute),
            ("/a%2Fb", PathError::EncodedSlash),
            ("/a%2fb", PathError::EncodedSlash),
            ("/a%5cb", PathError::Backslash),
            ("/a\\b", PathError::Backslash),
            ("/a%00", PathError::ControlChar),
            ("/a%0d%0a", PathError::ControlChar),
            ("/%C0%AF", PathError::InvalidUtf8),
            ("/%c0%ae%c0%ae/", PathError::InvalidUtf8),
            ("/%zz", PathError::BadEscape),
            ("/%4", PathError::BadEscape),
            ("/..", PathError::EscapesRoot),
            ("/a/../../b", PathError::EscapesRoot),
            ("/%2e%2e/etc", PathError::EscapesRoot),
            ("/public/..;/admin", PathError::DotSegmentParam),
            ("/public/.;x/admin", PathError::DotSegmentParam),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw), Err(want), "{raw:?}");
        }
    }

    #[test]
    fn fast_path_agrees_with_the_full_one() {
        for p in [
            "/",
            "/a/b",
            "/a/b/",
            "/a.b/c.d",
            "/a/.hidden",
            "/a//b",
            "/a/./b",
            "/a/..",
            "/..;/x",
            "/a/",
            "/a/b/.",
        ] {
            if is_plain(p.as_bytes()) {
                // A plain path must be a fixed point of the full algorithm.
                assert_eq!(normalize_full(p), Ok(p.to_string()), "{p:?}");
            }
        }
        assert!(is_plain(b"/a/b/"));
        assert!(!is_plain(b"/a/.hidden"));
        assert!(!is_plain(b"/a//b"));
        assert!(!is_plain(b"/%41"));
    }

    #[test]
    fn prefixes_respect_segments() {
        assert!(under_prefix("/api", "/api"));
        assert!(under_prefix("/api/x", "/api"));
        assert!(!under_prefix("/apix", "/api"));
        assert!(under_prefix("/static/a.css", "/static/"));
        assert!(under_prefix("/static", "/static/"));
        assert!(!under_prefix("/staticx", "/static/"));
        assert!(under_prefix("/anything", "/"));
    }
}
