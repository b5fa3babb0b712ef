//! Configuration errors that point into the file: `file:line:col: key: message`.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found in a configuration file.
///
/// `key` is the dotted path of the setting at fault (`routes[2].upstream`); `line`/`col` are
/// 1-based and present whenever the key (or its closest parent) can be found in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line of the key, when it could be found.
    pub line: Option<usize>,
    /// 1-based column of the key.
    pub col: Option<usize>,
    /// The key, as `routes[2].upstream`.
    pub key: String,
    /// What is wrong, and what to write instead.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let (Some(line), Some(col)) = (self.line, self.col) {
            write!(f, ":{line}:{col}")?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key, self.message)
        }
    }
}

/// Every error found in one load; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// A single error that is about the file as a whole (unreadable, not UTF-8 ...).
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigError {
            file: file.to_path_buf(),
            line: None,
            col: None,
            key: String::new(),
            message: message.into(),
        }])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Errors gathered during validation, before they are given a place in the file; the second
/// list holds errors already placed in another file (a provider's users file).
#[derive(Debug, Default)]
pub struct Problems(pub Vec<(String, String)>, pub Vec<ConfigError>);

impl Problems {
    /// Records that the setting at `key` is wrong, and why.
    pub fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push((key.into(), message.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty() && self.1.is_empty()
    }
}
