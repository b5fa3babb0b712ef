//! The session cookie: a session id and its absolute expiry, sealed with the cookie key and
//! base64url-encoded (71 characters). Everything else about the session lives in the store, so
//! the cookie stays small and a logout (which deletes the record) makes it worthless.
//!
//! Decoding is on every authenticated request, so it allocates nothing: the value is decoded
//! and opened in stack buffers.

use super::keys::{Purpose, SessionKeys, SEAL_OVERHEAD};
use super::record::SessionId;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::fmt::Write as _;
use std::time::Duration;

/// Plaintext: session id, then the expiry as big-endian Unix seconds.
const PLAIN_LEN: usize = SessionId::LEN + 8;
const SEALED_LEN: usize = PLAIN_LEN + SEAL_OVERHEAD;
/// Length of an encoded cookie value (base64 without padding of `SEALED_LEN` bytes).
pub const ENCODED_LEN: usize = (SEALED_LEN * 4).div_ceil(3);

/// What a session cookie says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCookie {
    /// The session it names.
    pub sid: SessionId,
    /// Unix seconds; the cookie is worthless from then on, whatever the store says.
    pub expires_at: u64,
}

impl SessionCookie {
    /// The cookie value: sealed with the first secret, base64url without padding.
    pub fn encode(&self, keys: &SessionKeys) -> String {
        let mut plain = [0u8; PLAIN_LEN];
        plain[..SessionId::LEN].copy_from_slice(self.sid.as_bytes());
        plain[SessionId::LEN..].copy_from_slice(&self.expires_at.to_be_bytes());
        URL_SAFE_NO_PAD.encode(keys.seal(Purpose::SessionCookie, &plain, b""))
    }

    /// Reads a cookie value; `None` for anything that is not a live cookie of ours. The reason
    /// is logged at debug level, the value never.
    pub fn decode(value: &str, keys: &SessionKeys, now_secs: u64) -> Option<SessionCookie> {
        if value.len() != ENCODED_LEN {
            tracing::debug!(len = value.len(), "session cookie refused: wrong length");
            return None;
        }
        let mut sealed = [0u8; SEALED_LEN + 3];
        let n = match URL_SAFE_NO_PAD.decode_slice(value, &mut sealed) {
            Ok(n) => n,
            Err(_) => {
                tracing::debug!("session cookie refused: not base64url");
                return None;
            }
        };
        let mut plain = [0u8; PLAIN_LEN];
        match keys.open_into(Purpose::SessionCookie, &sealed[..n], b"", &mut plain) {
            Some(PLAIN_LEN) => {}
            _ => {
                tracing::debug!(
                    "session cookie refused: does not open (tampered, truncated or foreign)"
                );
                return None;
            }
        }
        let mut sid = [0u8; SessionId::LEN];
        sid.copy_from_slice(&plain[..SessionId::LEN]);
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&plain[SessionId::LEN..]);
        let cookie = SessionCookie {
            sid: SessionId::from_bytes(sid),
            expires_at: u64::from_be_bytes(exp),
        };
        if cookie.expires_at <= now_secs {
            tracing::debug!(sid = %cookie.sid.fingerprint(), "session cookie refused: expired");
            return None;
        }
        Some(cookie)
    }
}

/// The values of every cookie called `name` in a `Cookie` header, in order. Browsers may send
/// several (a host-only one and a domain one), so callers try each.
pub fn cookie_values<'a>(header: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    cookie_pairs(header).filter_map(move |(n, v)| (n == name).then_some(v))
}

/// Every `name=value` pair of a `Cookie` header, with spaces and tabs around name and value
/// removed (only those: a name led by another kind of space, such as U+00A0, is another name,
/// as browsers see it when they enforce the `__Host-` prefix) and one pair of quotes around
/// the value.
///
/// It runs on every request that carries cookies, so it splits with `memchr` (vectorised) and
/// trims bytes; `;`, `=`, space and tab are ASCII, so every cut is on a character boundary.
pub fn cookie_pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    cookie_segments(header.as_bytes()).filter_map(move |range| {
        let pair = &header[range];
        let eq = memchr::memchr(b'=', pair.as_bytes())?;
        let v = trim_blank(&pair[eq + 1..]);
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        Some((trim_blank(&pair[..eq]), v))
    })
}

/// Where each `;`-separated piece of a `Cookie` header lies, split with `memchr`: a session
/// cookie's value is a few hundred bytes to step over. Ranges rather than slices, so that
/// text (`cookie_pairs`) and raw bytes (the stripping of our cookies from what the app
/// receives, which must work on any bytes) share one splitter.
pub fn cookie_segments(header: &[u8]) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let mut start = Some(0);
    std::iter::from_fn(move || {
        let from = start?;
        let end = match memchr::memchr(b';', &header[from..]) {
            Some(i) => {
                start = Some(from + i + 1);
                from + i
            }
            None => {
                start = None;
                header.len()
            }
        };
        Some(from..end)
    })
}

/// `bytes` as text: borrowed when they are UTF-8 (checked a word at a time for ASCII, as
/// cookie headers are), else with U+FFFD for what is not (`from_utf8_lossy` alone walks every
/// byte even when there is nothing to replace).
pub fn text_lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// `s` without leading and trailing spaces and tabs (only those).
fn trim_blank(s: &str) -> &str {
    let b = s.as_bytes();
    let blank = |c: &u8| *c == b' ' || *c == b'\t';
    let start = b.iter().position(|c| !blank(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !blank(c)).map_or(start, |e| e + 1);
    &s[start..end]
}

/// `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// Sent on top-level navigations from other sites (the default).
    Lax,
    /// Never sent on requests another site starts.
    Strict,
    /// Sent on every request (needs `Secure`).
    None,
}

impl SameSite {
    fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

/// How session cookies are set (SPEC §3 `session.cookie`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieSettings {
    /// The cookie's name as set and read (prefixed, see [`CookieSettings::with_host_prefix`]).
    pub name: String,
    /// `None` for a host-only cookie.
    pub domain: Option<String>,
    /// The `SameSite` attribute.
    pub same_site: SameSite,
    /// `Secure` is set unless this is false (plain-HTTP development setups).
    pub secure: bool,
}

impl Default for CookieSettings {
    fn default() -> Self {
        CookieSettings {
            name: "_portcullis".into(),
            domain: None,
            same_site: SameSite::Lax,
            secure: true,
        }
    }
}

impl CookieSettings {
    /// Checks what a browser would otherwise silently drop: an invalid name or domain,
    /// `SameSite=None` without `Secure`, and the `__Host-`/`__Secure-` prefix rules.
    pub fn validate(&self) -> Result<(), String> {
        let token = |c: char| c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?={}".contains(c);
        if self.name.is_empty() || !self.name.chars().all(token) {
            return Err(format!("invalid cookie name {:?}", self.name));
        }
        if let Some(d) = &self.domain {
            let bare = d.strip_prefix('.').unwrap_or(d);
            if bare.is_empty()
                || !bare
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                return Err(format!("invalid cookie domain {d:?}"));
            }
        }
        if self.same_site == SameSite::None && !self.secure {
            return Err(
                "same_site: none requires secure: true (browsers drop it otherwise)".into(),
            );
        }
        if self.name.starts_with("__Host-") && (!self.secure || self.domain.is_some()) {
            return Err("a __Host- cookie needs secure: true and no domain".into());
        }
        if self.name.starts_with("__Secure-") && !self.secure {
            return Err("a __Secure- cookie needs secure: true".into());
        }
        Ok(())
    }

    /// These settings with the cookie named `__Host-<name>` where browsers allow it (secure,
    /// host-only, and not already prefixed): such a cookie can only have been set by this very
    /// host over HTTPS, so a sibling subdomain cannot plant one ("cookie tossing").
    pub fn with_host_prefix(mut self) -> CookieSettings {
        if self.secure && self.domain.is_none() && !self.name.starts_with("__") {
            self.name = format!("__Host-{}", self.name);
        }
        self
    }

    /// The host-only cookie for a host outside `domain` (the session hand-over), prefixed as
    /// in [`with_host_prefix`](Self::with_host_prefix).
    pub fn host_only(&self) -> CookieSettings {
        CookieSettings {
            domain: None,
            ..self.clone()
        }
        .with_host_prefix()
    }

    /// Whether a cookie of this name is one of Portcullis' own: the session cookie under any
    /// prefix, or a login in progress. `base` is the configured name, without prefix. Names
    /// are compared after removing any whitespace around them, Unicode's included: an app may
    /// trim more than Portcullis reads, and such a cookie must not reach it either.
    pub fn is_own_cookie(base: &[u8], name: &[u8]) -> bool {
        let text = text_lossy(name);
        let name = text.trim().as_bytes();
        let name = name
            .strip_prefix(b"__Host-")
            .or_else(|| name.strip_prefix(b"__Secure-"))
            .unwrap_or(name);
        name.strip_prefix(base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"_login_"))
    }

    /// `Set-Cookie` value for a session cookie holding `value`, living `max_age`.
    pub fn set_cookie(&self, value: &str, max_age: Duration) -> String {
        self.render(&self.name, value, max_age.as_secs(), false)
    }

    /// `Set-Cookie` value that removes the session cookie.
    pub fn clear_cookie(&self) -> String {
        self.render(&self.name, "", 0, true)
    }

    /// `Set-Cookie` for another cookie (e.g. a login-state cookie) with these attributes.
    pub fn set_named(&self, name: &str, value: &str, max_age: Duration) -> String {
        self.render(name, value, max_age.as_secs(), false)
    }

    /// `Set-Cookie` that removes another cookie set with [`set_named`](Self::set_named).
    pub fn clear_named(&self, name: &str) -> String {
        self.render(name, "", 0, true)
    }

    fn render(&self, name: &str, value: &str, max_age: u64, clear: bool) -> String {
        let mut s = String::with_capacity(name.len() + value.len() + 96);
        // Writing into a String cannot fail.
        let _ = write!(s, "{name}={value}; Path=/; Max-Age={max_age}");
        if clear {
            s.push_str("; Expires=Thu, 01 Jan 1970 00:00:00 GMT");
        }
        if let Some(d) = &self.domain {
            let _ = write!(s, "; Domain={d}");
        }
        s.push_str("; HttpOnly");
        if self.secure {
            s.push_str("; Secure");
        }
        let _ = write!(s, "; SameSite={}", self.same_site.as_str());
        s
    }
}

#[cfg(test)]
mod tests {

    /// The byte-level split reads every header the way the `str` one it replaced did.
    #[test]
    fn cookie_pairs_read_like_a_plain_split() {
        fn reference(header: &str) -> Vec<(&str, &str)> {
            header
                .split(';')
                .filter_map(|pair| {
                    let (n, v) = pair.split_once('=')?;
                    let v = v.trim_matches([' ', '\t']);
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or(v);
                    Some((n.trim_matches([' ', '\t']), v))
                })
                .collect()
        }
        for header in [
            "",
            ";",
            "a",
            "a=1",
            "a=1;b=2",
            " a = 1 ;\tb=2\t; ;c=",
            "=x; =; ==; a==b=c",
            "q=\"quoted\"; h=\"half; e=\"\"",
            "\u{a0}_portcullis=1; _portcullis=2;",
            "note=café; ünï=cödé ; x=1;;;",
            "  ;  ; a=1  ",
        ] {
            assert_eq!(
                cookie_pairs(header).collect::<Vec<_>>(),
                reference(header),
                "{header:?}"
            );
        }
    }

    use super::*;

    fn keys(byte: u8) -> SessionKeys {
        let mut s = [byte; 32];
        s[0] = byte ^ 0x55;
        SessionKeys::from_raw(&[s]).unwrap()
    }

    const NOW: u64 = 1_767_182_400;

    fn cookie() -> SessionCookie {
        SessionCookie {
            sid: SessionId::random(),
            expires_at: NOW + 3600,
        }
    }

    #[test]
    fn round_trip_and_length() {
        let k = keys(1);
        let c = cookie();
        let v = c.encode(&k);
        assert_eq!(v.len(), ENCODED_LEN);
        assert_eq!(ENCODED_LEN, 71);
        assert!(v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(SessionCookie::decode(&v, &k, NOW), Some(c));
    }

    #[test]
    fn rotation_old_cookie_still_opens_new_cookie_uses_new_key() {
        let mut old_s = [1u8; 32];
        old_s[0] = 2;
        let mut new_s = [3u8; 32];
        new_s[0] = 4;
        let old = SessionKeys::from_raw(&[old_s]).unwrap();
        let rotated = SessionKeys::from_raw(&[new_s, old_s]).unwrap();
        let c = cookie();
        assert_eq!(
            SessionCookie::decode(&c.encode(&old), &rotated, NOW),
            Some(c)
        );
        let fresh = c.encode(&rotated);
        assert_eq!(SessionCookie::decode(&fresh, &rotated, NOW), Some(c));
        assert_eq!(SessionCookie::decode(&fresh, &old, NOW), None);
    }

    #[test]
    fn tampered_truncated_foreign_and_garbage_are_none() {
        let k = keys(1);
        let v = cookie().encode(&k);
        for i in 0..v.len() {
            let mut b = v.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let t = String::from_utf8(b).unwrap();
            assert_eq!(SessionCookie::decode(&t, &k, NOW), None, "char {i}");
        }
        for n in 0..v.len() {
            assert_eq!(SessionCookie::decode(&v[..n], &k, NOW), None);
        }
        assert_eq!(SessionCookie::decode(&format!("{v}A"), &k, NOW), None);
        assert_eq!(SessionCookie::decode(&v, &keys(2), NOW), None);
        let garbage = "é".repeat(ENCODED_LEN / 2) + "x";
        assert_eq!(SessionCookie::decode(&garbage, &k, NOW), None);
        assert_eq!(
            SessionCookie::decode(&"!".repeat(ENCODED_LEN), &k, NOW),
            None
        );
        assert_eq!(SessionCookie::decode("", &k, NOW), None);
    }

    #[test]
    fn sealed_for_another_purpose_is_none() {
        let k = keys(1);
        let c = cookie();
        let mut plain = [0u8; PLAIN_LEN];
        plain[..16].copy_from_slice(c.sid.as_bytes());
        plain[16..].copy_from_slice(&c.expires_at.to_be_bytes());
        for p in [
            Purpose::LoginState,
            Purpose::StoreRecord,
            Purpose::HandoverCode,
        ] {
            let v = URL_SAFE_NO_PAD.encode(k.seal(p, &plain, b""));
            assert_eq!(SessionCookie::decode(&v, &k, NOW), None, "{p:?}");
        }
    }

    #[test]
    fn expired_cookie_is_none() {
        let k = keys(1);
        let c = cookie();
        let v = c.encode(&k);
        assert!(SessionCookie::decode(&v, &k, c.expires_at - 1).is_some());
        assert_eq!(SessionCookie::decode(&v, &k, c.expires_at), None);
        assert_eq!(SessionCookie::decode(&v, &k, c.expires_at + 100), None);
    }

    #[test]
    fn only_spaces_and_tabs_are_trimmed_from_names() {
        let h = "\u{a0}_portcullis=a; \t_portcullis\t=\"b\"; _portcullis\u{2000}=c";
        assert_eq!(cookie_values(h, "_portcullis").collect::<Vec<_>>(), ["b"]);
        assert!(CookieSettings::is_own_cookie(
            b"_portcullis",
            "\u{a0}__Host-_portcullis".as_bytes()
        ));
        assert!(CookieSettings::is_own_cookie(
            b"_portcullis",
            "_portcullis\u{3000}".as_bytes()
        ));
    }

    #[test]
    fn cookie_header_values() {
        let h = "a=1; _portcullis=first; b=\"2\"; _portcullis = second ;_portcullisx=no";
        let found: Vec<_> = cookie_values(h, "_portcullis").collect();
        assert_eq!(found, ["first", "second"]);
        assert_eq!(cookie_values(h, "b").collect::<Vec<_>>(), ["2"]);
        assert_eq!(cookie_values("garbage;;=;", "x").count(), 0);
    }

    #[test]
    fn set_cookie_attributes() {
        let mut s = CookieSettings {
            domain: Some(".example.com".into()),
            ..CookieSettings::default()
        };
        assert_eq!(
            s.set_cookie("VALUE", Duration::from_secs(3600)),
            "_portcullis=VALUE; Path=/; Max-Age=3600; Domain=.example.com; HttpOnly; Secure; SameSite=Lax"
        );
        s.same_site = SameSite::Strict;
        s.secure = false;
        s.domain = None;
        assert_eq!(
            s.set_cookie("V", Duration::from_secs(5)),
            "_portcullis=V; Path=/; Max-Age=5; HttpOnly; SameSite=Strict"
        );
        s.same_site = SameSite::None;
        s.secure = true;
        assert_eq!(
            s.clear_cookie(),
            "_portcullis=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; Secure; SameSite=None"
        );
        assert!(s
            .set_named("_portcullis_login_ab", "x", Duration::from_secs(600))
            .starts_with("_portcullis_login_ab=x; Path=/; Max-Age=600; HttpOnly"));
        assert!(s.clear_named("n").contains("Max-Age=0"));
    }

    #[test]
    fn host_prefix_where_browsers_allow_it() {
        let plain = CookieSettings::default();
        assert_eq!(plain.clone().with_host_prefix().name, "__Host-_portcullis");
        assert_eq!(plain.host_only().name, "__Host-_portcullis");
        let insecure = CookieSettings {
            secure: false,
            ..CookieSettings::default()
        };
        assert_eq!(insecure.clone().with_host_prefix().name, "_portcullis");
        let shared = CookieSettings {
            domain: Some(".example.com".into()),
            ..CookieSettings::default()
        };
        assert_eq!(shared.clone().with_host_prefix().name, "_portcullis");
        assert_eq!(shared.host_only().name, "__Host-_portcullis");
        assert_eq!(shared.host_only().domain, None);
        let named = CookieSettings {
            name: "__Secure-s".into(),
            ..CookieSettings::default()
        };
        assert_eq!(named.with_host_prefix().name, "__Secure-s");
        for own in [
            "_portcullis",
            "__Host-_portcullis",
            "__Secure-_portcullis",
            "_portcullis_login_abc",
            "__Host-_portcullis_login_abc",
        ] {
            assert!(
                CookieSettings::is_own_cookie(b"_portcullis", own.as_bytes()),
                "{own}"
            );
        }
        for other in [
            "_portcullisx",
            "x_portcullis",
            "__Host-x",
            "_portcullis_loginx",
        ] {
            assert!(
                !CookieSettings::is_own_cookie(b"_portcullis", other.as_bytes()),
                "{other}"
            );
        }
    }

    #[test]
    fn settings_validation() {
        let ok = CookieSettings::default();
        assert!(ok.validate().is_ok());
        let bad = |f: fn(&mut CookieSettings)| {
            let mut s = CookieSettings::default();
            f(&mut s);
            s.validate().unwrap_err()
        };
        assert!(bad(|s| s.name = "a b".into()).contains("name"));
        assert!(bad(|s| s.name = String::new()).contains("name"));
        assert!(bad(|s| s.domain = Some("ex ample.com".into())).contains("domain"));
        assert!(bad(|s| s.domain = Some(".".into())).contains("domain"));
        assert!(bad(|s| {
            s.same_site = SameSite::None;
            s.secure = false
        })
        .contains("secure"));
        assert!(bad(|s| {
            s.name = "__Host-s".into();
            s.domain = Some("example.com".into())
        })
        .contains("__Host-"));
        assert!(bad(|s| {
            s.name = "__Secure-s".into();
            s.secure = false
        })
        .contains("__Secure-"));
    }
}
