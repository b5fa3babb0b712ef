//! The `Host` of a request (or the authority of its target), parsed and checked.

use super::BadRequest;

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
    // One pass: every label 1 to 63 letters, digits, `-` or `_` (runs on every request).
    let mut label = 0usize;
    for &b in name.as_bytes() {
        match b {
            b'.' if label > 0 => label = 0,
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' if label < 63 => label += 1,
            _ => return Err(BadRequest::Host),
        }
    }
    if label == 0 {
        return Err(BadRequest::Host);
    }
    Ok(name.to_ascii_lowercase())
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
}
