//! The users file of a `type: local` provider: who may log in, with what password, second
//! factor, e-mail, name and groups.
//!
//! It is read like the config itself: `${VAR}` expanded in the text first, unknown keys and
//! every invalid value reported at once as `file:line:col: key: message`, relative to nothing
//! (it names no other file). It is read again on every configuration load, so a change to it
//! (an edit, or a new file renamed over it) is a reload: a valid file is swapped in with the
//! rest of the configuration, an invalid one is logged and the running users stay.

use crate::config::{ConfigError, ConfigErrors};
use crate::secret::Secret;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// A user name at most this long (bytes).
const MAX_NAME: usize = 128;

/// One user, compiled. `Debug` shows no hash or secret.
#[derive(Clone)]
pub struct User {
    /// The name typed in the form, and the session's `user` (and `sub`).
    pub name: String,
    /// The argon2 PHC string of the password.
    pub password: Secret<String>,
    pub email: Option<String>,
    /// The display name (`name` in the file).
    pub display_name: Option<String>,
    pub groups: Vec<String>,
    /// The decoded TOTP secret, when the user has enrolled.
    pub totp: Option<Secret<Vec<u8>>>,
    /// argon2 PHC strings of the recovery codes.
    pub recovery_codes: Vec<Secret<String>>,
    pub disabled: bool,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("email", &self.email)
            .field("groups", &self.groups)
            .field("totp", &self.totp.is_some())
            .field("recovery_codes", &self.recovery_codes.len())
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// Every user of one file, by name.
#[derive(Debug, Clone, Default)]
pub struct Users {
    by_name: BTreeMap<String, User>,
}

impl Users {
    /// The user called exactly `name` (names are case-sensitive, as in the file).
    pub fn get(&self, name: &str) -> Option<&User> {
        self.by_name.get(name)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Names of the users that have no TOTP secret (for `totp: required`).
    pub fn without_totp(&self) -> impl Iterator<Item = &str> {
        self.by_name
            .values()
            .filter(|u| u.totp.is_none() && !u.disabled)
            .map(|u| u.name.as_str())
    }

    /// Whether anyone has recovery codes.
    pub fn any_recovery_codes(&self) -> bool {
        self.by_name.values().any(|u| !u.recovery_codes.is_empty())
    }
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct FileSchema {
    users: UniqueMap<Entry>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Entry {
    password: Option<Secret<String>>,
    email: Option<String>,
    name: Option<String>,
    groups: Vec<String>,
    totp: Option<Secret<String>>,
    recovery_codes: Vec<Secret<String>>,
    disabled: bool,
}

/// A map whose keys must differ: YAML parsers keep the last of two equal keys, which for a
/// users file would silently drop a user (or a password).
struct UniqueMap<T>(Vec<(String, T)>);

impl<T> Default for UniqueMap<T> {
    fn default() -> Self {
        UniqueMap(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for UniqueMap<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = UniqueMap<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of user names to users")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(UniqueMap(Vec::new()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, T)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if out.iter().any(|(k, _)| *k == key) {
                        return Err(serde::de::Error::custom(format!(
                            "user {key:?} is listed twice"
                        )));
                    }
                    let value = map.next_value()?;
                    out.push((key, value));
                }
                Ok(UniqueMap(out))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Reads and checks the users file at `path`, with variables from `env`.
pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Users, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::whole_file(path, format!("cannot read the users file: {e}")))?;
    parse(&text, path, env)
}

/// Checks the users file `text`; `path` names it in messages.
pub fn parse(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Users, ConfigErrors> {
    use crate::config::{expand, key_of, locate::Locations, yaml_error};
    let (text, unset) = expand::expand(text, env);
    let locations = Locations::index(&text);
    let at = |key: String, message: String| {
        let place = locations.find(&key);
        ConfigError {
            file: path.to_path_buf(),
            line: place.map(|p| p.0),
            col: place.map(|p| p.1),
            key,
            message,
        }
    };
    let mut errors: Vec<ConfigError> = unset
        .iter()
        .map(|e| ConfigError {
            file: path.to_path_buf(),
            line: Some(e.line),
            col: Some(e.col),
            key: locations.key_at(e.line).unwrap_or_default(),
            message: e.message.clone(),
        })
        .collect();
    let mut unknown = Vec::new();
    let parsed: Result<FileSchema, _> = if text.trim().is_empty() {
        Ok(FileSchema::default())
    } else {
        let de = serde_yaml::Deserializer::from_str(&text);
        serde_ignored::deserialize(de, |p| unknown.push(key_of(&p)))
    };
    errors.extend(
        unknown
            .into_iter()
            .map(|key| at(key, "unknown key".to_string())),
    );
    let file = match parsed {
        Ok(f) => f,
        Err(e) => {
            errors.push(yaml_error(path, &e));
            return Err(ConfigErrors(errors));
        }
    };
    let mut by_name = BTreeMap::new();
    for (name, entry) in file.users.0 {
        let key = format!("users.{name}");
        match user(&name, entry, &key) {
            Ok(u) => {
                by_name.insert(name, u);
            }
            Err(list) => errors.extend(
                list.into_iter()
                    .map(|(k, m)| at(k, m))
                    // Errors on the line of an unset variable are its echoes.
                    .filter(|e| !unset.iter().any(|u| Some(u.line) == e.line)),
            ),
        }
    }
    if errors.is_empty() {
        Ok(Users { by_name })
    } else {
        Err(ConfigErrors(errors))
    }
}

/// One entry, or its problems as `(key, message)`.
fn user(name: &str, e: Entry, key: &str) -> Result<User, Vec<(String, String)>> {
    let mut p: Vec<(String, String)> = Vec::new();
    if name.is_empty()
        || name.len() > MAX_NAME
        || name.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        p.push((
            key.to_string(),
            format!("a user name of 1 to {MAX_NAME} bytes without spaces or control characters"),
        ));
    }
    match &e.password {
        None => p.push((
            key.to_string(),
            "password is required: an argon2id hash from `portcullis hash-password`".into(),
        )),
        Some(h) => {
            if let Err(m) = crate::password::check_phc(h.expose()) {
                p.push((
                    format!("{key}.password"),
                    format!("{m}; make one with `portcullis hash-password`"),
                ));
            }
        }
    }
    if let Some(email) = &e.email {
        if crate::policy::email_parts(email).is_none() {
            p.push((
                format!("{key}.email"),
                format!("{email:?} is not a plain address (local@domain)"),
            ));
        }
    }
    for (i, g) in e.groups.iter().enumerate() {
        if g.is_empty() || g.contains(',') || g.chars().any(char::is_control) {
            p.push((
                format!("{key}.groups[{i}]"),
                "a group name must be non-empty, without commas or control characters".into(),
            ));
        }
    }
    let totp = match &e.totp {
        None => None,
        Some(s) => match super::totp::decode_secret(s.expose()) {
            Ok(bytes) => Some(Secret::new(bytes)),
            Err(m) => {
                p.push((format!("{key}.totp"), format!("{m} (portcullis gen-totp)")));
                None
            }
        },
    };
    for (i, c) in e.recovery_codes.iter().enumerate() {
        if let Err(m) = crate::password::check_phc(c.expose()) {
            p.push((
                format!("{key}.recovery_codes[{i}]"),
                format!(
                    "{m}: store recovery codes hashed, as `portcullis hash-password` prints them"
                ),
            ));
        }
    }
    if !p.is_empty() {
        return Err(p);
    }
    Ok(User {
        name: name.to_string(),
        password: e.password.unwrap_or_default(),
        email: e.email,
        display_name: e.name,
        groups: e.groups,
        totp,
        recovery_codes: e.recovery_codes,
        disabled: e.disabled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$1c1yS5eMAP3rhTEaTjkdWq5cQaJqb6b2vGvyRPlwhOo";

    fn env(name: &str) -> Option<String> {
        (name == "ALICE_TOTP").then(|| "JBSWY3DPEHPK3PXP".to_string())
    }

    #[test]
    fn a_good_file() {
        let text = format!(
            "users:\n  alice:\n    password: \"{HASH}\"\n    email: alice@example.com\n    name: Alice\n    groups: [staff, admins]\n    totp: ${{ALICE_TOTP}}\n  bob:\n    password: '{HASH}'\n    disabled: true\n"
        );
        let users = parse(&text, Path::new("users.yaml"), &env).unwrap();
        assert_eq!(users.len(), 2);
        let alice = users.get("alice").unwrap();
        assert_eq!(alice.groups, ["staff", "admins"]);
        assert!(alice.totp.is_some());
        assert!(users.get("bob").unwrap().disabled);
        assert!(users.get("Alice").is_none());
        assert!(!format!("{alice:?}").contains("argon2"));
        assert_eq!(users.without_totp().count(), 0);
    }

    #[test]
    fn every_error_with_its_place() {
        let text = format!(
            "users:\n  alice:\n    password: plain\n    emali: a@example.com\n    totp: \"abc\"\n  bob:\n    email: \"x@y@z\"\n    recovery_codes: [\"1234\"]\n    password: \"{HASH}\"\n    groups: ['a,b']\n"
        );
        let errors = parse(&text, Path::new("u.yaml"), &env).unwrap_err();
        let shown: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
        let want = [
            "u.yaml:4:5: users.alice.emali: unknown key",
            "u.yaml:3:5: users.alice.password: ",
            "u.yaml:5:5: users.alice.totp: ",
            "u.yaml:7:5: users.bob.email: ",
            "u.yaml:10:14: users.bob.groups[0]: ",
            "u.yaml:8:22: users.bob.recovery_codes[0]: ",
        ];
        for w in want {
            assert!(
                shown.iter().any(|s| s.starts_with(w)),
                "{w} not in {shown:#?}"
            );
        }
    }

    #[test]
    fn duplicates_syntax_and_missing_variables() {
        let text = format!("users:\n  a:\n    password: '{HASH}'\n  a:\n    password: '{HASH}'\n");
        let e = parse(&text, Path::new("u.yaml"), &env).unwrap_err();
        assert!(e.to_string().contains("listed twice"), "{e}");
        let e = parse("users: [", Path::new("u.yaml"), &env).unwrap_err();
        assert!(e.to_string().starts_with("u.yaml:"), "{e}");
        let e = parse(
            "users:\n  a:\n    password: ${NOPE}\n",
            Path::new("u.yaml"),
            &env,
        )
        .unwrap_err();
        assert!(e.to_string().contains("u.yaml:3:15"), "{e}");
        assert_eq!(parse("", Path::new("u.yaml"), &env).unwrap().len(), 0);
        let e = parse("users:\n  a: {}\n", Path::new("u.yaml"), &env).unwrap_err();
        assert!(e.to_string().contains("password is required"), "{e}");
    }
}
