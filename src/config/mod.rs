//! Configuration: read the file, expand `${VAR}`, parse, find every unknown key, validate, and
//! compile into an immutable [`Runtime`]. Every problem comes back as `file:line:col`.

mod compile;
mod compile_auth;
mod compile_headers;
mod compile_issuer;
mod compile_limits;
mod compile_local;
mod compile_policy;
mod compile_route;
mod error;
pub(crate) mod expand;
pub(crate) mod locate;
mod schema;
mod values;
pub(crate) mod watch;

pub use compile::read_secret_file;
pub use error::{ConfigError, ConfigErrors};

use crate::runtime::Runtime;
use error::Problems;
use locate::Locations;
use std::path::Path;

/// Loads and compiles the file at `path`, reading variables from the process environment.
pub fn load(path: &Path) -> Result<Runtime, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::whole_file(path, format!("cannot read config: {e}")))?;
    load_str(&text, path, |name| std::env::var(name).ok())
}

/// Loads from `text`; `path` names the file in messages and anchors relative paths.
pub fn load_str(
    text: &str,
    path: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Runtime, ConfigErrors> {
    let at = |line: Option<usize>, col: Option<usize>, key: String, message: String| ConfigError {
        file: path.to_path_buf(),
        line,
        col,
        key,
        message,
    };
    // An unset variable is reported, then read as empty so that the rest of the file is
    // still checked; errors on the same line as an unset variable are its echoes and dropped.
    let (text, unset) = expand::expand(text, env);
    let locations = Locations::index(&text);
    let locate = |key: String, message: String| {
        let place = locations.find(&key);
        at(place.map(|p| p.0), place.map(|p| p.1), key, message)
    };
    let mut errors: Vec<ConfigError> = unset
        .iter()
        .map(|e| {
            let key = locations.key_at(e.line).unwrap_or_default();
            at(Some(e.line), Some(e.col), key, e.message.clone())
        })
        .collect();
    let echo_of_unset = |e: &ConfigError| unset.iter().any(|u| Some(u.line) == e.line);

    let mut unknown = Vec::new();
    let parsed: Result<schema::File, serde_yaml::Error> = if text.trim().is_empty() {
        Ok(schema::File::default())
    } else {
        let de = serde_yaml::Deserializer::from_str(&text);
        serde_ignored::deserialize(de, |p| unknown.push(key_of(&p)))
    };
    errors.extend(
        unknown
            .into_iter()
            .map(|key| locate(key, "unknown key".to_string())),
    );
    match parsed {
        Err(e) => {
            let e = yaml_error(path, &e);
            if !echo_of_unset(&e) {
                errors.push(e);
            }
        }
        Ok(file) => match compile::compile(file, path) {
            Ok(runtime) if errors.is_empty() => return Ok(runtime),
            Ok(_) => {}
            Err(Problems(list, elsewhere)) => {
                errors.extend(
                    list.into_iter()
                        .map(|(k, m)| locate(k, m))
                        .filter(|e| !echo_of_unset(e)),
                );
                // Already placed in their own file (a users file).
                errors.extend(elsewhere);
            }
        },
    }
    Err(ConfigErrors(errors))
}

/// A syntax or type error from the YAML parser, with its place taken out of the message.
pub(crate) fn yaml_error(path: &Path, e: &serde_yaml::Error) -> ConfigError {
    let full = e.to_string();
    let message = match full.find(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    };
    let (key, message) = match message.split_once(": ") {
        Some((k, m)) if !k.contains(' ') => (k.to_string(), m.to_string()),
        _ => (String::new(), message),
    };
    ConfigError {
        file: path.to_path_buf(),
        line: e.location().map(|l| l.line()),
        col: e.location().map(|l| l.column()),
        key,
        message,
    }
}

/// `routes[2].upstream` from serde_ignored's path.
pub(crate) fn key_of(p: &serde_ignored::Path) -> String {
    use serde_ignored::Path as P;
    match p {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", key_of(parent)),
        P::Map { parent, key } => {
            let parent = key_of(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            key_of(parent)
        }
    }
}

#[cfg(test)]
mod secret_tests;
#[cfg(test)]
mod tests;
