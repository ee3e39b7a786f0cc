//! Configuration errors: which key is wrong, why, and where the bad value
//! came from.
//!
//! A user who sees `read_timeout: '30' is not a duration` still has to find
//! the `30`: it may sit in the file, in a `TRACEGATE_*` variable set by a
//! deployment script, or on the command line. So every value the gateway
//! reads carries its [`Origin`] from the moment a layer produces it, and
//! every [`ConfigError`] names it: a file line, a variable, a flag, or the
//! default. Messages never repeat a secret (route header values, OTLP
//! headers, tokens, upstream credentials): they name the key instead.

use std::path::PathBuf;

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A line of the configuration file.
    File {
        /// The file, as it was named.
        path: PathBuf,
        /// The line of the value (1-based).
        line: usize,
    },
    /// An environment variable.
    Env(String),
    /// A command-line flag (`--read-timeout`), or a value set in code.
    Flag(String),
    /// Nobody set it: the gateway's default.
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{} line {line}", path.display()),
            Origin::Env(var) => f.write_str(var),
            Origin::Flag(flag) => f.write_str(flag),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// A configuration error: one line naming the key, what is wrong with its
/// value, and where that value came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key}: {message} ({origin})")]
pub struct ConfigError {
    /// The key, as written in the file (`store.batch_max`,
    /// `routes[0] (claude): auth`), or `config` for the file itself.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// Where the bad value came from.
    pub origin: Origin,
}

impl ConfigError {
    /// An error about `key`, whose value came from `origin`.
    pub fn new(key: impl Into<String>, message: impl std::fmt::Display, origin: Origin) -> Self {
        ConfigError {
            key: key.into(),
            message: message.to_string(),
            origin,
        }
    }
}
