//! The `Host` of a request (or the authority of its target), parsed and checked.

use super::BadRequest;

/// Parses a `Host` value (`name[:port]` or `[v6][:port]`) into its lower-case name without
/// port or trailing dot. Anything that is not a plausible DNS name or IP literal is refused.
pub fn parse_host(raw: &str) -> Result<String, BadRequest> {
    host_name(raw).map(str::to_ascii_lowercase)
}

/// `name` in lower case, held inline when short (see [`super::Text`]).
pub fn lower_case(name: &str) -> super::Text {
    let mut text = super::Text::new(name);
    text.make_ascii_lowercase();
    text
}

/// What [`parse_host`] checks and keeps, as sent (letters in the case they came in): for a
/// host that is only checked, or compared without regard to case, no copy is made.
pub fn host_name(raw: &str) -> Result<&str, BadRequest> {
    let raw = trim(raw);
    if raw.is_empty() || raw.len() > 260 {
        return Err(BadRequest::Host);
    }
    if let Some(rest) = raw.strip_prefix('[') {
        let end = rest.find(']').ok_or(BadRequest::Host)?;
        rest[..end]
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| BadRequest::Host)?;
        check_port(&rest[end + 1..])?;
        return Ok(&raw[..end + 2]);
    }
    // One forward pass (this runs on every request, some twice): every label 1 to 63
    // letters, digits, `-` or `_`, one trailing dot allowed; a `:` ends the name and starts
    // the port. A name never holds `:`, so the first one is the last one a valid host has.
    // One table lookup per byte.
    const BAD: u8 = 0;
    const NAME: u8 = 1;
    const DOT: u8 = 2;
    const COLON: u8 = 3;
    const CLASS: [u8; 256] = {
        let mut t = [BAD; 256];
        let mut b = 0;
        while b < 256 {
            t[b] = match b as u8 {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => NAME,
                b'.' => DOT,
                b':' => COLON,
                _ => BAD,
            };
            b += 1;
        }
        t
    };
    let bytes = raw.as_bytes();
    let mut label = 0usize;
    let mut end = bytes.len();
    for (i, &b) in bytes.iter().enumerate() {
        match CLASS[usize::from(b)] {
            NAME if label < 63 => label += 1,
            DOT if label > 0 => label = 0,
            COLON => {
                end = i;
                break;
            }
            _ => return Err(BadRequest::Host),
        }
    }
    check_port(&raw[end..])?;
    let name = &raw[..end];
    // `label` is 0 at the end only after a dot: the one trailing dot, dropped, if a label
    // came before it.
    let name = if label == 0 {
        match name.strip_suffix('.') {
            Some(n) if !n.is_empty() => n,
            _ => return Err(BadRequest::Host),
        }
    } else {
        name
    };
    Ok(name)
}

/// What follows a host name: nothing, or `:` and 1 to 5 digits.
fn check_port(port: &str) -> Result<(), BadRequest> {
    if port.is_empty() {
        return Ok(());
    }
    let digits = port.strip_prefix(':').ok_or(BadRequest::Host)?;
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BadRequest::Host);
    }
    Ok(())
}

/// `str::trim` without the Unicode tables on the usual ASCII edges (the same result: an
/// edge byte at or above 0x80 takes `str::trim` itself).
fn trim(raw: &str) -> &str {
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let bytes = raw.as_bytes();
    if bytes.first().is_some_and(|b| *b >= 0x80) || bytes.last().is_some_and(|b| *b >= 0x80) {
        return raw.trim();
    }
    let start = bytes.iter().position(|b| !ws(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !ws(b)).map_or(start, |i| i + 1);
    let trimmed = &raw[start..end.max(start)];
    // A non-ASCII edge uncovered by the ASCII trim may be Unicode space too.
    if trimmed.as_bytes().first().is_some_and(|b| *b >= 0x80)
        || trimmed.as_bytes().last().is_some_and(|b| *b >= 0x80)
    {
        return raw.trim();
    }
    trimmed
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

    /// The parser as it was before the one-pass rewrite: the new one must agree with it on
    /// every input, to the error.
    fn reference(raw: &str) -> Result<String, BadRequest> {
        let raw = raw.trim();
        if raw.is_empty() || raw.len() > 260 {
            return Err(BadRequest::Host);
        }
        let (name, port) = if let Some(rest) = raw.strip_prefix('[') {
            let end = rest.find(']').ok_or(BadRequest::Host)?;
            rest[..end]
                .parse::<std::net::Ipv6Addr>()
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
            if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(BadRequest::Host);
            }
        }
        if name.starts_with('[') {
            return Ok(name.to_ascii_lowercase());
        }
        let name = name.strip_suffix('.').unwrap_or(name);
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

    #[test]
    fn one_pass_agrees_with_the_reference_parser() {
        // Every string of up to four pieces from an alphabet of the pieces that matter:
        // dots, colons, brackets, digits, letters of both cases, spaces of both kinds.
        let pieces = [
            "", "a", "B", "0", "9", ".", ":", "::", "[", "]", "[::1]", "-", "_", "@", "/", " ",
            "\t", "\u{b}", "\u{a0}", "\u{3000}", "é", ":80", ":123456", "x.y", "..",
        ];
        let mut checked = 0;
        for s in crate::test_inputs::concatenations(&pieces, 4) {
            assert_eq!(parse_host(&s), reference(&s), "{s:?}");
            checked += 1;
        }
        assert_eq!(checked, pieces.len().pow(4));
        let long_label = "a".repeat(63);
        for s in [
            long_label.clone(),
            format!("{long_label}a"),
            format!("{long_label}.b:443"),
            format!("{}.", "b.".repeat(129)),
            "x".repeat(260),
            "x".repeat(261),
            " \u{a0}app.test\u{a0} ".to_string(),
            "\u{85}app.test".to_string(),
        ] {
            assert_eq!(parse_host(&s), reference(&s), "{s:?}");
        }
    }
}
