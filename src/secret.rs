//! Values that must never reach a log line or a `Debug` string.
//!
//! [`Secret`] wraps a credential (a session secret, a client secret, an upstream header value):
//! its `Debug` prints `<redacted>`, it has no `Display`, and the value is read only through
//! [`Secret::expose`], so every use is visible in the code. [`SecretUrl`] is a URL that may
//! carry a password: its `Debug` shows the URL with the password replaced, which keeps the host
//! and port for whoever reads the log. [`redact_url`] does the same for text.
//!
//! [`Fingerprint`] is what a reload compares to decide whether live services can be kept: a
//! hash of the settings' *values* (secrets included) under a key drawn at random once per
//! process, so it can be kept and compared but says nothing about the values outside it.

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};

/// What `Debug` prints in place of a secret.
pub const REDACTED: &str = "<redacted>";

/// A value that is never shown: `Debug` prints [`REDACTED`], whatever it holds.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub const fn new(value: T) -> Secret<T> {
        Secret(value)
    }

    /// The value itself, for the one place that needs it (never for a log line).
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Secret<T> {
        Secret(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Reads as `T` would: `secrets: [..]` in the config is a list of plain strings.
impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Secret)
    }
}

/// A URL that may carry a password (`redis://:password@host:6379/0`): `Debug` shows it with
/// the password replaced (see [`redact_url`]).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> SecretUrl {
        SecretUrl(url.into())
    }

    /// The URL with its password, for the one place that connects with it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&redact_url(&self.0), f)
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretUrl)
    }
}

/// `url` for a log line, an error message or `Debug`: with any password replaced by
/// [`REDACTED`] (`redis://user:<redacted>@host:6379/0`), and a user name without a password
/// too (`https://<redacted>@host/`: that is where a token goes). Text that does not parse as
/// a URL might be anything, a bare password included, so it is not shown at all.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) if u.password().is_some() => format!(
            "{}://{}:{REDACTED}@{}",
            u.scheme(),
            u.username(),
            &u[url::Position::BeforeHost..]
        ),
        Ok(u) if !u.username().is_empty() => format!(
            "{}://{REDACTED}@{}",
            u.scheme(),
            &u[url::Position::BeforeHost..]
        ),
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable url>".into(),
    }
}

/// A hash of settings (secrets included) to tell whether two configurations need different
/// live services. Keyed with a random key drawn once per process: equal settings give equal
/// fingerprints within the process, and a fingerprint tells nothing about the values outside
/// it (a weak password cannot be guessed offline from one). Not shown by `Debug`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(u64);

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fingerprint(..)")
    }
}

/// Builds a [`Fingerprint`]: feed it values with [`Hash::hash`].
pub struct Fingerprinter(std::hash::DefaultHasher);

impl Fingerprinter {
    pub fn new() -> Fingerprinter {
        static KEY: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
        Fingerprinter(KEY.get_or_init(std::hash::RandomState::new).build_hasher())
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint(self.0.finish())
    }
}

impl Default for Fingerprinter {
    fn default() -> Self {
        Fingerprinter::new()
    }
}

impl Hasher for Fingerprinter {
    fn finish(&self) -> u64 {
        self.0.finish()
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show() {
        let s = Secret::new("hunter2-value".to_string());
        for shown in [format!("{s:?}"), format!("{s:#?}")] {
            assert_eq!(shown, REDACTED);
        }
        let nested = Some(vec![Secret::new("hunter2-value")]);
        assert!(!format!("{nested:#?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-value");
    }

    #[test]
    fn secrets_read_as_their_value() {
        let s: Vec<Secret<String>> = serde_yaml::from_str("[a, b]").unwrap();
        assert_eq!(s[1].expose(), "b");
        let u: SecretUrl = serde_yaml::from_str("\"redis://:pw@h:1/0\"").unwrap();
        assert_eq!(u.expose(), "redis://:pw@h:1/0");
    }

    #[test]
    fn urls_keep_everything_but_the_password() {
        assert_eq!(
            redact_url("redis://user:s3cret@host:6379/0"),
            "redis://user:<redacted>@host:6379/0"
        );
        assert_eq!(
            redact_url("rediss://:s3cret@[::1]:6380/2?protocol=resp3"),
            "rediss://:<redacted>@[::1]:6380/2?protocol=resp3"
        );
        assert_eq!(redact_url("redis://host:6379/0"), "redis://host:6379/0");
        assert_eq!(
            redact_url("https://ghp_t0ken@host/"),
            "https://<redacted>@host/"
        );
        assert_eq!(redact_url("s3cret"), "<unparsable url>");
        let u = SecretUrl::new("redis://:p%40ss@host/");
        for shown in [format!("{u:?}"), format!("{u:#?}")] {
            assert!(
                !shown.contains("p%40ss") && shown.contains("host"),
                "{shown}"
            );
        }
    }

    #[test]
    fn fingerprints_follow_values_and_show_nothing() {
        let fp = |v: &str| {
            let mut h = Fingerprinter::new();
            Secret::new(v).hash(&mut h);
            h.fingerprint()
        };
        assert_eq!(fp("one"), fp("one"));
        assert_ne!(fp("one"), fp("two"));
        assert_eq!(format!("{:?}", fp("one")), "Fingerprint(..)");
    }
}
