//! Header hygiene: which request headers are stripped before anything else, which security
//! headers responses carry, and the per-route additions. All compiled at load time into
//! ready `HeaderName`/`HeaderValue` pairs so the hot path only copies them.

use http::{HeaderName, HeaderValue};

/// Identity headers (lower case) that apps migrated from other proxies commonly trust. These
/// are stripped even when not configured, so a forged one can never reach an app that still
/// reads it.
const WELL_KNOWN_IDENTITY: &[&str] = &[
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-groups",
    "x-auth-request-preferred-username",
    "x-auth-request-access-token",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-forwarded-access-token",
    "remote-user",
    "remote-email",
    "remote-groups",
    "remote-name",
    "x-remote-user",
];

/// Headers that make frameworks serve another path or method than the request line names
/// (Symfony and IIS `X-Original-URL`, method-override middleware). Portcullis decided on the
/// request line, so the app must act on it too: never forwarded, whoever sent them.
const OVERRIDES_THE_REQUEST_LINE: &[&str] = &[
    "x-original-url",
    "x-original-uri",
    "x-original-method",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Headers that tell the app about the client, the address, scheme or path prefix it used:
/// forwarded only from a trusted proxy. Frameworks and libraries read each of these (the Flask
/// "ReverseProxied" recipe reads `X-Script-Name`, npm `request-ip` prefers `X-Client-IP` to
/// `X-Forwarded-For`, gunicorn takes `X-Forwarded-Protocol` as the scheme, ...).
const DESCRIBES_THE_CLIENT: &[&str] = &[
    "forwarded",
    "x-forwarded",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-path",
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-forwarded-protocol",
    "x-script-name",
    "x-original-path",
    "x-original-host",
    "x-host",
    "x-http-host-override",
    "front-end-https",
    "x-url-scheme",
    "x-scheme",
    "x-client-ip",
    "client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "x-proxyuser-ip",
    "x-originating-ip",
    "x-remote-addr",
];

/// What becomes of one incoming request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Passed on.
    Keep,
    /// Removed at once, on every route, before anything reads the request: a forged identity
    /// (or a name a server reads as one).
    Strip,
    /// Read by Portcullis if it likes (forward auth reads `X-Original-URL`), never forwarded.
    NeverForwarded,
    /// Forwarded only when a trusted proxy sent it.
    ForwardedIfTrusted,
}

impl Fate {
    /// Whether a header of this fate, still in the request, must not reach the upstream of a
    /// request from a peer that is (or is not) `trusted`. Stripped headers are gone by then.
    pub fn withheld(self, trusted: bool) -> bool {
        match self {
            Fate::NeverForwarded => true,
            Fate::ForwardedIfTrusted => !trusted,
            Fate::Keep | Fate::Strip => false,
        }
    }
}

/// The rules for incoming request headers, compiled from `headers.identity` and
/// `headers.underscores_in_headers`. Deciding a name's [`Fate`] costs byte comparisons, no
/// hashing: it runs for every field of every request.
#[derive(Debug)]
pub struct StripList {
    /// `headers.underscores_in_headers`: keep other headers whose names hold `_`.
    keep_underscored: bool,
    /// The first letters of every name that is not kept as it is.
    first_letters: [bool; 256],
    /// Every name with a fate other than [`Fate::Keep`] (configured, well known, overriding
    /// or describing the client), by its length: a name is compared with the few of its own
    /// length only, instead of walking four lists.
    by_len: Vec<Vec<(Box<str>, Fate)>>,
}

impl Default for StripList {
    fn default() -> Self {
        StripList::new([], false)
    }
}

/// The built-in lists with the fate each gives; the identity list comes first, so a name in
/// two lists would take the stricter fate.
const BUILT_IN: [(&[&str], Fate); 3] = [
    (WELL_KNOWN_IDENTITY, Fate::Strip),
    (OVERRIDES_THE_REQUEST_LINE, Fate::NeverForwarded),
    (DESCRIBES_THE_CLIENT, Fate::ForwardedIfTrusted),
];

impl StripList {
    pub fn new(configured: impl IntoIterator<Item = HeaderName>, keep_underscored: bool) -> Self {
        // `x` for Portcullis' own `x-portcullis-` namespace; the table adds the rest.
        let mut first_letters = [false; 256];
        first_letters[usize::from(b'x')] = true;
        let mut by_len: Vec<Vec<(Box<str>, Fate)>> = Vec::new();
        let mut add = |name: &str, fate: Fate| {
            if let Some(b) = name.as_bytes().first() {
                first_letters[usize::from(*b)] = true;
            }
            if by_len.len() <= name.len() {
                by_len.resize_with(name.len() + 1, Vec::new);
            }
            let bucket = &mut by_len[name.len()];
            if !bucket.iter().any(|(n, _)| &**n == name) {
                bucket.push((name.into(), fate));
            }
        };
        for name in configured {
            add(name.as_str(), Fate::Strip);
        }
        for (names, fate) in BUILT_IN {
            for name in names {
                add(name, fate);
            }
        }
        StripList {
            keep_underscored,
            first_letters,
            by_len,
        }
    }

    /// What becomes of an incoming header named `name`.
    pub fn fate(&self, name: &HeaderName) -> Fate {
        let s = name.as_str();
        let underscored = has_underscore(s.as_bytes());
        // Most fields (`accept`, `host`, `user-agent`, ...) are none of these: the names in
        // the table, and the `x-portcullis-` namespace, start with a few letters.
        if !underscored
            && !s
                .as_bytes()
                .first()
                .is_some_and(|b| self.first_letters[usize::from(*b)])
        {
            return Fate::Keep;
        }
        if underscored || s.starts_with("x-portcullis-") {
            // No list holds such a name: it goes, or stays, by `matches` alone.
            return if self.matches(name) {
                Fate::Strip
            } else {
                Fate::Keep
            };
        }
        self.listed(s).unwrap_or(Fate::Keep)
    }

    /// Whether an incoming header of this name must go at once. Any name with `_` goes (as
    /// nginx ignores them by default): CGI-style servers turn `-` and `_` into the same
    /// variable, so `X_Forwarded_For` may override what Portcullis sets, and gunicorn takes a
    /// client's `SCRIPT_NAME` header as the script name, moving the path the app routes on.
    /// With `underscores_in_headers`, only those that name a stripped header go
    /// (`X_Auth_Request_User`). Anything in Portcullis' own `X-Portcullis-` namespace goes
    /// too (the assertion header among them).
    pub fn matches(&self, name: &HeaderName) -> bool {
        let s = name.as_str();
        if s.starts_with("x-portcullis-") || s.starts_with("x_portcullis_") {
            return true;
        }
        if s.contains('_') {
            if !self.keep_underscored {
                return true;
            }
            let dashed = s.replace('_', "-");
            return self.listed(&dashed) == Some(Fate::Strip);
        }
        self.listed(s) == Some(Fate::Strip)
    }

    /// The fate the lists give `name` (lower case), if they name it.
    fn listed(&self, name: &str) -> Option<Fate> {
        self.by_len
            .get(name.len())?
            .iter()
            // Names of one length differ mostly at the end (`-url`/`-uri`, `-user`/`-email`):
            // the last byte first spares most full comparisons.
            .find(|(n, _)| n.as_bytes().last() == name.as_bytes().last() && &**n == name)
            .map(|(_, fate)| *fate)
    }
}

/// A configured header name that Portcullis writes on many requests (the identity headers),
/// with its spelling on the wire as a `&'static str`.
///
/// Pingora keeps each header's spelling in a second map, taken from the name it is given: a
/// `HeaderName` is copied into a fresh buffer on every write, a `&'static str` is not. `wire`
/// is the spelling Pingora gave the `HeaderName` (its title case for the few names it knows,
/// otherwise lower case), so writing either puts the same bytes on the wire. Each distinct
/// name is kept once for the life of the process, however often the configuration reloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldName {
    pub name: HeaderName,
    pub wire: &'static str,
}

impl FieldName {
    pub fn new(name: HeaderName) -> FieldName {
        match pingora_title_case(&name) {
            Some(wire) => FieldName { name, wire },
            None => {
                // The kept spelling is the name itself (lower case): the `HeaderName` is made
                // from it too, so that cloning it on every answer is a copy of two words, not
                // a shared buffer's reference count to bump and drop.
                let wire = intern(name.as_str());
                FieldName {
                    name: HeaderName::from_static(wire),
                    wire,
                }
            }
        }
    }
}

impl From<HeaderName> for FieldName {
    fn from(name: HeaderName) -> FieldName {
        FieldName::new(name)
    }
}

/// The names Pingora writes in title case when given a `HeaderName`.
fn pingora_title_case(name: &HeaderName) -> Option<&'static str> {
    use http::header;
    Some(match *name {
        header::ACCEPT_RANGES => "Accept-Ranges",
        header::AGE => "Age",
        header::CACHE_CONTROL => "Cache-Control",
        header::CONNECTION => "Connection",
        header::CONTENT_TYPE => "Content-Type",
        header::CONTENT_ENCODING => "Content-Encoding",
        header::CONTENT_LENGTH => "Content-Length",
        header::DATE => "Date",
        header::TRANSFER_ENCODING => "Transfer-Encoding",
        header::HOST => "Host",
        header::SERVER => "Server",
        header::SET_COOKIE => "Set-Cookie",
        _ => return None,
    })
}

/// `name`, kept for the life of the process: once per distinct name, so reloads do not grow it.
fn intern(name: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(kept) = names.get(name) {
        return kept;
    }
    let kept: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(kept);
    kept
}

/// Security headers for one kind of response; added only where the response lacks them.
#[derive(Debug, Clone, Default)]
pub struct SecurityHeaders {
    pub always: Vec<(HeaderName, HeaderValue)>,
    /// Strict-Transport-Security, sent only on responses to TLS requests.
    pub hsts: Option<HeaderValue>,
}

impl SecurityHeaders {
    /// The headers a response should carry: all of them, HSTS only over TLS.
    pub fn wanted(&self, tls: bool) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        let hsts = self
            .hsts
            .as_ref()
            .filter(|_| tls)
            .map(|v| (&http::header::STRICT_TRANSPORT_SECURITY, v));
        self.always.iter().map(|(n, v)| (n, v)).chain(hsts)
    }
}

/// A route's header changes.
#[derive(Clone, Default)]
pub struct RouteHeaders {
    /// Set on the upstream request, replacing client values. May hold upstream credentials
    /// (`headers.add_file`): `Debug` shows the names only.
    pub request_add: Vec<(HeaderName, HeaderValue)>,
    /// Set on the response, replacing upstream values.
    pub response_add: Vec<(HeaderName, HeaderValue)>,
    pub security: SecurityHeaders,
}

impl std::fmt::Debug for RouteHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::secret::Secret;
        let request_add: Vec<_> = self
            .request_add
            .iter()
            .map(|(n, v)| (n, Secret::new(v)))
            .collect();
        f.debug_struct("RouteHeaders")
            .field("request_add", &request_add)
            .field("response_add", &self.response_add)
            .field("security", &self.security)
            .finish()
    }
}

/// The strict policy for pages Portcullis writes itself (errors, login pages).
pub const OWN_PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Whether `name` holds `_`, eight bytes at a time (this runs on every request header; a
/// generic byte search costs more than the usual 10 to 20 bytes do).
fn has_underscore(name: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const UNDERSCORES: u64 = ONES * b'_' as u64;
    // A byte of `word` is `_` exactly when that byte of `x` is zero: the classic test for a
    // zero byte, which has no false positives when only "any?" is asked.
    let any = |word: &[u8]| {
        let x = u64::from_le_bytes(word.try_into().expect("eight bytes")) ^ UNDERSCORES;
        x.wrapping_sub(ONES) & !x & HIGHS != 0
    };
    if name.len() < 8 {
        // A plain loop: `contains` would call the generic search this function avoids.
        return name.iter().fold(false, |found, &b| found | (b == b'_'));
    }
    let mut words = name.chunks_exact(8);
    if words.by_ref().any(any) {
        return true;
    }
    // The last bytes, as the eight that end the name (some read twice).
    !words.remainder().is_empty() && any(&name[name.len() - 8..])
}

#[cfg(test)]
mod tests;
