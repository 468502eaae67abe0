//! Secret references in configuration: `env:NAME` (an environment variable) or `file:/path`
//! (a file's contents, trailing newline removed; read on every resolve, so a rotated file is
//! picked up without a restart). Values never appear in `Debug` output, logs or errors.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// Where a secret comes from.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SecretRef {
    /// An environment variable.
    Env(String),
    /// A file.
    File(std::path::PathBuf),
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The reference is not secret, the value is; print only the reference.
        write!(f, "SecretRef({})", String::from(self.clone()))
    }
}

impl TryFrom<String> for SecretRef {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        if let Some(name) = text.strip_prefix("env:").filter(|n| !n.is_empty()) {
            Ok(Self::Env(name.to_owned()))
        } else if let Some(path) = text.strip_prefix("file:").filter(|p| !p.is_empty()) {
            Ok(Self::File(path.into()))
        } else {
            Err(format!(
                "a secret must be given as env:NAME or file:/path, not inline (got a value starting {:?})",
                text.chars().take(4).collect::<String>()
            ))
        }
    }
}

impl From<SecretRef> for String {
    fn from(secret: SecretRef) -> Self {
        match secret {
            SecretRef::Env(name) => format!("env:{name}"),
            SecretRef::File(path) => format!("file:{}", path.display()),
        }
    }
}

impl SecretRef {
    /// Reads the secret's current value.
    pub fn resolve(&self) -> Result<Vec<u8>, ConfigError> {
        match self {
            SecretRef::Env(name) => std::env::var(name)
                .map(String::into_bytes)
                .map_err(|_| ConfigError::Invalid(format!("secret env:{name} is not set"))),
            SecretRef::File(path) => std::fs::read(path)
                .map(|mut bytes| {
                    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        bytes.pop();
                    }
                    bytes
                })
                .map_err(|err| {
                    ConfigError::Invalid(format!(
                        "cannot read secret file:{}: {}",
                        path.display(),
                        err.kind()
                    ))
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_and_resolve_without_leaking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "hunter2\n").unwrap();
        let secret = SecretRef::try_from(format!("file:{}", path.display())).unwrap();
        assert_eq!(secret.resolve().unwrap(), b"hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
        std::fs::write(&path, "rotated").unwrap();
        assert_eq!(secret.resolve().unwrap(), b"rotated", "a rotated file is read again");
        let err = SecretRef::try_from("hunter2".to_owned()).unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(SecretRef::try_from("env:".to_owned()).is_err());
        assert!(SecretRef::Env("EXO_TEST_SURELY_UNSET_VAR".into()).resolve().is_err());
    }
}
