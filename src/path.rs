//! Request path normalisation. Routes and (later) public paths are matched on the normalised
//! form, and the normalised form is what the upstream receives, so the proxy and the app can
//! never disagree about which resource was asked for.

use std::borrow::Cow;

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

/// `b` as two upper-case hex digits.
fn hex_upper(b: u8) -> [u8; 2] {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]]
}

/// The common case, checked in one pass: printable ASCII without `%` or `\\`, no empty segment
/// but a final one, and no segment that is `.` or `..` or starts with `..` or `.;`. Such a path
/// is already normal.
fn is_plain(bytes: &[u8]) -> bool {
    // One table lookup per byte: most bytes are plain, and only `/` and `.` need more.
    const BAD: u8 = 0;
    const PLAIN: u8 = 1;
    const SLASH: u8 = 2;
    const DOT: u8 = 3;
    const CLASS: [u8; 256] = {
        let mut t = [BAD; 256];
        let mut b = 0x21;
        while b < 0x7f {
            t[b] = match b as u8 {
                b'%' | b'\\' => BAD,
                b'/' => SLASH,
                b'.' => DOT,
                _ => PLAIN,
            };
            b += 1;
        }
        t
    };
    let mut after_slash = true;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        match CLASS[usize::from(b)] {
            PLAIN => after_slash = false,
            SLASH if !after_slash => after_slash = true,
            // A segment led by a dot is a name (`.well-known`, `.portcullis`) unless it is
            // `.` or `..`, or hides one behind `;`.
            DOT if !after_slash => {}
            DOT if !matches!(bytes.get(i + 1), None | Some(b'/' | b'.' | b';')) => {
                after_slash = false;
            }
            _ => return false,
        }
    }
    true
}

/// Returns the normalised form of `raw` (the path part of the request target, no query).
///
/// Unreserved characters are decoded, other escapes are kept with upper-case hex, repeated
/// slashes collapse, `.` and `..` segments are resolved. A path whose meaning is ambiguous is
/// an error. When `raw` is already normal, no allocation beyond the returned copy happens.
pub fn normalize(raw: &str) -> Result<String, PathError> {
    normalized(raw).map(Cow::into_owned)
}

/// [`normalize`], borrowing `raw` when it is already normal (most paths): for a caller that
/// only reads the result, no copy at all.
pub fn normalized(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_plain(bytes) {
        return Ok(Cow::Borrowed(raw));
    }
    normalize_full(raw).map(Cow::Owned)
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
                    decoded.extend_from_slice(&hex_upper(v));
                }
            }
            plain.push(v);
            i += 3;
            continue;
        }
        match b {
            b'\\' => return Err(PathError::Backslash),
            0..=0x1f | 0x7f => return Err(PathError::ControlChar),
            // Raw non-ASCII (UTF-8 sent unencoded): kept in its canonical, percent-encoded
            // form, so `/café` and `/caf%C3%A9` are one path to routing and to the app.
            0x80..=0xff => {
                decoded.push(b'%');
                decoded.extend_from_slice(&hex_upper(b));
            }
            _ => decoded.push(b),
        }
        plain.push(b);
        i += 1;
    }
    if std::str::from_utf8(&plain).is_err() {
        return Err(PathError::InvalidUtf8);
    }
    // Pass 2: segments. `decoded` is ASCII: non-ASCII bytes were percent-encoded above.
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
    // By bytes: a `char` pattern's searcher costs more than most paths are long.
    if !path.as_bytes().contains(&b';') {
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

/// The path as the most lenient servers behind a proxy read it, for matching routes a second
/// time. Each reading any of them applies, all at once:
///
/// - percent-escapes decoded (werkzeug/Flask, Express);
/// - letters compared without case (IIS, ASP.NET, Express by default);
/// - each segment without trailing dots or spaces, and without an NTFS stream from its first
///   `:` (`::$DATA`, `:$i30:$INDEX_ALLOCATION`): Windows file APIs drop them, so IIS serves
///   `/admin./x` from `/admin/x`;
/// - ASP.NET cookieless segments (`/(S(abc))/admin`) dropped;
/// - a `*.php` segment followed by more path dropped: PHP front controllers (Symfony,
///   Laravel) route `/index.php/admin` as `/admin`;
/// - the last segment without its extension: Rails (`/admin.json`) and older Spring MVC
///   (`/admin.x`) route a format suffix to the bare path.
///
/// `path` is normalised and without `;` parameters. Borrowed when no reading can change it.
///
/// Case folding maps each character through its upper- then lower-case form, so that `ſ`
/// (long s) meets `s` and the Kelvin sign meets `k`: more equivalences than any one server
/// applies, which only ever makes the second match stricter.
pub fn lenient_reading(path: &str) -> std::borrow::Cow<'_, str> {
    lenient(path, true)
}

/// A route prefix as [`lenient_reading`] reads request paths, but keeping its last segment's
/// extension: a prefix names a place, not a resource in some format, and `/api/v1.0` must not
/// become `/api/v1`.
pub fn lenient_prefix(prefix: &str) -> std::borrow::Cow<'_, str> {
    lenient(prefix, false)
}

fn lenient(path: &str, drop_extension: bool) -> std::borrow::Cow<'_, str> {
    if !may_read_differently(path.as_bytes()) {
        return std::borrow::Cow::Borrowed(path);
    }
    let decoded = percent_decode(path);
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    // The last named segment (a trailing slash leaves an empty one after it).
    let last = segments.iter().rposition(|s| !s.is_empty()).unwrap_or(0);
    let mut out = String::with_capacity(decoded.len());
    for (i, segment) in segments.iter().enumerate() {
        let is_last = i == last;
        if is_cookieless(segment) || (!is_last && ends_with_ignore_case(segment, ".php")) {
            continue;
        }
        let mut segment = match segment.find(':') {
            Some(colon) => &segment[..colon],
            None => segment,
        };
        segment = segment.trim_end_matches(['.', ' ']);
        if is_last && drop_extension {
            if let Some(dot) = segment.rfind('.').filter(|&d| d > 0) {
                segment = segment[..dot].trim_end_matches(['.', ' ']);
            }
        }
        if segment.is_empty() {
            continue;
        }
        out.push('/');
        out.extend(segment.chars().map(fold_char));
    }
    if out.is_empty() || (decoded.len() > 1 && decoded.ends_with('/')) {
        out.push('/');
    }
    std::borrow::Cow::Owned(out)
}

/// Whether [`lenient_reading`] could change `path`: an upper-case letter, an escape, a
/// non-ASCII byte, a colon, a dot, a space or a parenthesis.
fn may_read_differently(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .any(|&b| matches!(b, b'A'..=b'Z' | b'%' | b':' | b'.' | b' ' | b'(' | 0x80..=0xff))
}

/// An ASP.NET cookieless session segment, `(S(...))` and its kin.
fn is_cookieless(segment: &str) -> bool {
    let b = segment.as_bytes();
    b.len() >= 5
        && b[0] == b'('
        && b[1].is_ascii_alphabetic()
        && b[2] == b'('
        && segment.ends_with("))")
}

/// `s` ends with the ASCII `suffix`, ignoring case (safe on any UTF-8: compares bytes).
fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// Every `%XX` decoded; invalid UTF-8 (impossible after [`normalize`]) becomes U+FFFD.
fn percent_decode(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.contains('%') {
        return std::borrow::Cow::Borrowed(path);
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let (b'%', Some(h), Some(l)) = (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// One character without case: its upper-case form's lower-case form, when each is a single
/// character.
fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    fn single(mut chars: impl Iterator<Item = char>) -> Option<char> {
        let first = chars.next()?;
        chars.next().is_none().then_some(first)
    }
    let upper = single(c.to_uppercase()).unwrap_or(c);
    single(upper.to_lowercase()).unwrap_or(upper)
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
mod tests;
