//! Time-based one-time passwords (RFC 6238 over RFC 4226): HMAC-SHA-1, 6 digits, 30-second
//! steps, one step of clock skew accepted either way — what every authenticator app does by
//! default. Secrets are base32 (RFC 4648, upper case, no padding), as in `otpauth://` URIs.
//!
//! Only the arithmetic is here; the replay guard (a code is accepted once, on every replica)
//! is [`super::state::DirectoryState::claim`].

use hmac::{Hmac, Mac};
use sha1::Sha1;
use std::fmt::Write as _;

/// Seconds per step.
pub const STEP: u64 = 30;
/// Digits in a code.
pub const DIGITS: u32 = 6;
/// Steps of clock skew accepted before and after the current one.
pub const SKEW: u64 = 1;
/// Bytes of a generated secret (160 bits, RFC 4226's recommendation).
pub const SECRET_BYTES: usize = 20;
/// The shortest secret accepted from the users file (80 bits, RFC 4226's minimum).
pub const MIN_SECRET_BYTES: usize = 10;

/// Decodes a base32 secret, forgiving what people type: spaces and dashes, lower case and
/// missing `=` padding.
pub fn decode_secret(text: &str) -> Result<Vec<u8>, String> {
    let mut clean: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    while clean.ends_with('=') {
        clean.pop();
    }
    let bytes = data_encoding::BASE32_NOPAD
        .decode(clean.as_bytes())
        .map_err(|_| "not a base32 secret (letters A-Z and digits 2-7)".to_string())?;
    if bytes.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "too short: {} bits, at least {} are needed (portcullis gen-totp makes 160)",
            bytes.len() * 8,
            MIN_SECRET_BYTES * 8
        ));
    }
    Ok(bytes)
}

/// A new random secret, base32.
pub fn generate_secret() -> String {
    let bytes: [u8; SECRET_BYTES] = rand::random();
    data_encoding::BASE32_NOPAD.encode(&bytes)
}

/// The RFC 4226 HOTP value of `counter`, as a zero-padded string of [`DIGITS`] digits.
pub fn hotp(secret: &[u8], counter: u64) -> String {
    // HMAC takes keys of any length.
    let mut mac = match Hmac::<Sha1>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let offset = usize::from(h[19] & 0x0f);
    let bin = (u32::from(h[offset]) & 0x7f) << 24
        | u32::from(h[offset + 1]) << 16
        | u32::from(h[offset + 2]) << 8
        | u32::from(h[offset + 3]);
    format!(
        "{:0width$}",
        bin % 10u32.pow(DIGITS),
        width = DIGITS as usize
    )
}

/// The code for Unix time `now`.
#[cfg(test)]
pub fn code_at(secret: &[u8], now: u64) -> String {
    hotp(secret, now / STEP)
}

/// Whether `code` looks like a TOTP code (six digits) rather than a recovery code.
pub fn looks_like_code(code: &str) -> bool {
    code.len() == DIGITS as usize && code.bytes().all(|b| b.is_ascii_digit())
}

/// The step counters `code` is valid for at `now`, current step first (within [`SKEW`]).
/// Every candidate is computed and compared, whatever matches, so the time taken does not
/// depend on which step (if any) matched. The caller accepts the first one it can claim.
pub fn matching_steps(secret: &[u8], code: &str, now: u64) -> Vec<u64> {
    let current = now / STEP;
    let mut out = Vec::new();
    if !looks_like_code(code) {
        return out;
    }
    let mut candidates = vec![current];
    for d in 1..=SKEW {
        candidates.push(current.saturating_sub(d));
        candidates.push(current.saturating_add(d));
    }
    for step in candidates {
        if constant_eq(hotp(secret, step).as_bytes(), code.as_bytes()) && !out.contains(&step) {
            out.push(step);
        }
    }
    out
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `otpauth://totp/` URI authenticator apps read (the Key URI Format), for `issuer:user`.
pub fn otpauth_uri(issuer: &str, user: &str, secret_b32: &str) -> String {
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    format!(
        "otpauth://totp/{}:{}?secret={secret_b32}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP}",
        enc(issuer),
        enc(user),
        enc(issuer)
    )
}

/// `text` as a QR code drawn with Unicode half blocks (two rows of modules per line), dark
/// modules on a light background with the quiet zone the standard asks for, so a phone can
/// scan it from a terminal with either colour scheme.
pub fn qr_terminal(text: &str) -> Result<String, String> {
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| format!("cannot make a QR code: {e}"))?;
    let width = code.width();
    let colors = code.to_colors();
    let quiet = 2usize;
    let size = width + 2 * quiet;
    let dark = |x: usize, y: usize| -> bool {
        if x < quiet || y < quiet || x >= width + quiet || y >= width + quiet {
            return false;
        }
        colors[(y - quiet) * width + (x - quiet)] == qrcode::Color::Dark
    };
    let mut out = String::new();
    for row in (0..size).step_by(2) {
        for x in 0..size {
            let top = dark(x, row);
            let bottom = row + 1 < size && dark(x, row + 1);
            // Light modules are drawn (the terminal's background may be dark): a full block is
            // two light modules, a half block one.
            out.push(match (top, bottom) {
                (false, false) => '█',
                (false, true) => '▀',
                (true, false) => '▄',
                (true, true) => ' ',
            });
        }
        let _ = writeln!(out);
    }
    Ok(out)
}

/// What `portcullis gen-totp --user NAME` prints: a new secret, the line for the users file,
/// its `otpauth://` URI and that URI as a QR code for authenticator apps.
pub fn enrolment_text(user: &str, issuer: &str) -> Result<String, String> {
    if user.is_empty() || user.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("--user needs a user name without spaces or control characters".into());
    }
    let secret = generate_secret();
    let uri = otpauth_uri(issuer, user, &secret);
    let qr = qr_terminal(&uri)?;
    Ok(format!(
        "TOTP secret for {user} (base32; keep it secret):\n{secret}\n\n\
         In the users file:\n  {user}:\n    totp: {secret}\n\n\
         For authenticator apps (SHA-1, 6 digits, 30 s):\n{uri}\n\n{qr}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1, truncated to 6 digits (the RFC lists 8).
    #[test]
    fn rfc6238_vectors() {
        let secret = b"12345678901234567890";
        for (t, eight) in [
            (59u64, "94287082"),
            (1111111109, "07081804"),
            (1111111111, "14050471"),
            (1234567890, "89005924"),
            (2000000000, "69279037"),
            (20000000000, "65353130"),
        ] {
            assert_eq!(code_at(secret, t), eight[2..], "t={t}");
        }
    }

    #[test]
    fn rfc4226_vectors() {
        let secret = b"12345678901234567890";
        let want = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(hotp(secret, i as u64), *w);
        }
    }

    #[test]
    fn skew_and_secrets() {
        let secret = decode_secret("jbsw y3dp-ehpk3pxp").unwrap();
        assert_eq!(secret, b"Hello!\xde\xad\xbe\xef");
        let now = 1_700_000_000;
        let code = code_at(&secret, now);
        assert_eq!(matching_steps(&secret, &code, now), vec![now / STEP]);
        assert_eq!(matching_steps(&secret, &code, now + STEP), vec![now / STEP]);
        assert_eq!(matching_steps(&secret, &code, now - STEP), vec![now / STEP]);
        assert!(matching_steps(&secret, &code, now + 2 * STEP).is_empty());
        assert!(matching_steps(&secret, "12345", now).is_empty());
        assert!(decode_secret("JBSWY3DP").is_err(), "40 bits is too short");
        assert!(decode_secret("not base32!").is_err());
        let g = generate_secret();
        assert_eq!(decode_secret(&g).unwrap().len(), SECRET_BYTES);
    }

    #[test]
    fn uri_and_qr() {
        let uri = otpauth_uri("Portcullis", "alice smith", "JBSWY3DPEHPK3PXP");
        assert!(
            uri.starts_with(
                "otpauth://totp/Portcullis:alice%20smith?secret=JBSWY3DPEHPK3PXP&issuer=Portcullis"
            ),
            "{uri}"
        );
        let qr = qr_terminal(&uri).unwrap();
        let lines: Vec<&str> = qr.lines().collect();
        assert!(lines.len() > 10);
        assert!(lines
            .iter()
            .all(|l| l.chars().count() == lines[0].chars().count()));
    }
}
