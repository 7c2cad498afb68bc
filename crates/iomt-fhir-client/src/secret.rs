//! Secrets: client secrets, private keys and bearer tokens, and where they come from.
//!
//! # What must hold
//! * A secret's text is never formatted: [`Secret`]'s `Debug` and `Display` print `***`, and so
//!   does the `value` form of a [`SecretSource`]. Logging a config, an error or a request builder
//!   can therefore not leak one. The text is reachable only through [`Secret::expose`], which
//!   the auth code calls where it builds a request.
//! * Configuration names *where* a secret is ([`SecretSource::Env`], [`SecretSource::File`]);
//!   putting the secret itself in the file ([`SecretSource::Value`]) is allowed for tests and
//!   local runs only, and `iomt check` warns about it.
//! * Resolving a source is I/O (an environment lookup or a file read), so it happens when the
//!   client is built, never during validation.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A secret value whose `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret text.
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The secret text. Call it only to put the secret where it is used (a request header or
    /// form, a key parser), never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty or only whitespace.
    pub fn is_blank(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

impl Serialize for Secret {
    /// Serializes as `***`: a config written back out never contains the secret.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("***")
    }
}

/// Where a secret comes from: `{env: NAME}`, `{file: PATH}` or `{value: TEXT}`.
///
/// A file's content is taken without its trailing line break (`\n` or `\r\n`), so files written
/// by `echo` or by Kubernetes secret mounts both work.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretSource {
    /// The value of an environment variable.
    Env(String),
    /// The content of a file; read again when the FHIR server rejects a static token, so a
    /// rotated token file is picked up without a restart.
    File(PathBuf),
    /// The secret itself, in the configuration (for tests and local runs).
    Value(Secret),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(name) => write!(f, "Env({name:?})"),
            SecretSource::File(path) => write!(f, "File({path:?})"),
            SecretSource::Value(_) => f.write_str("Value(***)"),
        }
    }
}

impl fmt::Display for SecretSource {
    /// Where the secret is, for messages: `environment variable X`, `file /p`, `inline value`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(name) => write!(f, "environment variable {name}"),
            SecretSource::File(path) => write!(f, "file {}", path.display()),
            SecretSource::Value(_) => f.write_str("inline value"),
        }
    }
}

/// Why a secret could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The environment variable is not set (or not UTF-8).
    #[error("environment variable {name} is not set: export it or point the setting elsewhere")]
    EnvMissing {
        /// The variable's name.
        name: String,
    },
    /// The file could not be read.
    #[error("cannot read secret file {path}: {reason}")]
    FileUnreadable {
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The secret is empty.
    #[error("the secret from {source_desc} is empty")]
    Empty {
        /// Where it came from (never the secret itself).
        source_desc: String,
    },
}

impl SecretSource {
    /// Reads the secret.
    ///
    /// # Errors
    /// [`SecretError`] when the variable is unset, the file unreadable, or the secret empty.
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        let secret = match self {
            SecretSource::Env(name) => {
                std::env::var(name).map_err(|_| SecretError::EnvMissing { name: name.clone() })?
            }
            SecretSource::File(path) => {
                let mut text =
                    std::fs::read_to_string(path).map_err(|e| SecretError::FileUnreadable {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
                if text.ends_with('\n') {
                    text.pop();
                    if text.ends_with('\r') {
                        text.pop();
                    }
                }
                text
            }
            SecretSource::Value(secret) => secret.0.clone(),
        };
        if secret.trim().is_empty() {
            return Err(SecretError::Empty {
                source_desc: self.to_string(),
            });
        }
        Ok(Secret(secret))
    }

    /// Whether the secret is written in the configuration itself.
    pub fn is_inline(&self) -> bool {
        matches!(self, SecretSource::Value(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_formats_the_secret() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        let src: SecretSource = serde_json::from_str(r#"{"value":"hunter2"}"#).unwrap();
        assert_eq!(format!("{src:?} {src}"), "Value(***) inline value");
        assert_eq!(serde_json::to_string(&src).unwrap(), r#"{"value":"***"}"#);
        assert_eq!(src.resolve().unwrap().expose(), "hunter2");
    }

    #[test]
    fn reads_files_without_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("iomt-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "abc\r\n").unwrap();
        let src = SecretSource::File(path.clone());
        assert_eq!(src.resolve().unwrap().expose(), "abc");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(src.resolve(), Err(SecretError::Empty { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            SecretSource::File(path).resolve(),
            Err(SecretError::FileUnreadable { .. })
        ));
    }

    #[test]
    fn missing_env_says_which() {
        let err = SecretSource::Env("IOMT_TEST_SURELY_UNSET_42".into())
            .resolve()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable IOMT_TEST_SURELY_UNSET_42 is not set: export it or point the setting elsewhere"
        );
    }

    #[test]
    fn rejects_unknown_forms() {
        assert!(serde_json::from_str::<SecretSource>(r#"{"vault":"x"}"#).is_err());
        assert!(serde_json::from_str::<SecretSource>(r#""plain""#).is_err());
    }
}
