//! Secret references in configuration: `env:NAME` (an environment variable), `file:/path` (a
//! file's contents, trailing newline removed; read on every resolve, so a rotated file is picked
//! up without a restart), or `env:encrypted:NAME` (an environment variable holding a value sealed
//! with `exo secret encrypt`, opened with the key in `EXO_SECRETS_KEY` or the file named by
//! `EXO_SECRETS_KEY_FILE`). Values never appear in `Debug` output, logs or errors.
//!
//! Sealed values are `exo1:` + base64url(nonce ‖ ciphertext ‖ tag) under ChaCha20-Poly1305 with a
//! 256-bit key: tampering, a wrong key or a truncated value fail to open, never yield garbage.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config_error::ConfigError;

/// Where a secret comes from.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SecretRef {
    /// An environment variable.
    Env(String),
    /// An environment variable holding a sealed value.
    EnvEncrypted(String),
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
        if let Some(name) = text.strip_prefix("env:encrypted:").filter(|n| !n.is_empty()) {
            Ok(Self::EnvEncrypted(name.to_owned()))
        } else if let Some(name) = text.strip_prefix("env:").filter(|n| !n.is_empty() && *n != "encrypted:") {
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
            SecretRef::EnvEncrypted(name) => format!("env:encrypted:{name}"),
            SecretRef::File(path) => format!("file:{}", path.display()),
        }
    }
}

/// How often a backend that follows a rotated `file:` secret reads it again (cloud
/// credentials, the remote's bearer token; the proxy's own token is read on every check).
pub const REREAD_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl SecretRef {
    /// Whether the secret is a file, which may change while the proxy runs (environment
    /// variables cannot).
    pub fn is_file(&self) -> bool {
        matches!(self, SecretRef::File(_))
    }

    /// Reads the secret's current value.
    pub fn resolve(&self) -> Result<Vec<u8>, ConfigError> {
        match self {
            SecretRef::Env(name) => std::env::var(name)
                .map(String::into_bytes)
                .map_err(|_| ConfigError::Invalid(format!("secret env:{name} is not set"))),
            SecretRef::EnvEncrypted(name) => {
                let sealed = std::env::var(name)
                    .map_err(|_| ConfigError::Invalid(format!("secret env:encrypted:{name} is not set")))?;
                open(&sealed, &secrets_key()?).map_err(|why| {
                    ConfigError::Invalid(format!("secret env:encrypted:{name} cannot be opened: {why}"))
                })
            }
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

/// How a [`ReloadingSecret`] secret's bytes become its value; the error says why they do not.
type MakeValue<T> = dyn Fn(&[u8]) -> Result<T, String> + Send + Sync;

/// A value made from a secret and kept in step with it: when asked for, a `file:` secret is
/// read again if [`REREAD_EVERY`] has passed since it last was, or a reload was asked for
/// (`SIGHUP`, see [`crate::reload`]). Bytes that changed and make a
/// value replace the value (its generation goes up); a file that cannot be read, is empty, or
/// does not make a value (half written, say) keeps the last one, with a warning naming `what`.
/// Other secrets cannot change while the proxy runs and are read once.
///
/// The reread happens on the asking caller, at most once per interval (others get the current
/// value meanwhile), and holds no lock while it reads.
pub struct ReloadingSecret<T> {
    secret: SecretRef,
    what: &'static str,
    make: Box<MakeValue<T>>,
    every: std::time::Duration,
    state: std::sync::Mutex<Reading<T>>,
}

/// What a [`ReloadingSecret`] secret last read and made.
struct Reading<T> {
    /// When it was read, and the reload generation then (see [`crate::reload`]).
    read_at: std::time::Instant,
    read_in: u64,
    bytes: Vec<u8>,
    value: std::sync::Arc<T>,
    /// 0 for the value read at start, one more for each change taken since.
    generation: u64,
}

impl<T> ReloadingSecret<T> {
    /// Reads `secret` now and makes its value; the error (naming `what`) when either fails.
    pub fn new(
        secret: SecretRef,
        what: &'static str,
        make: impl Fn(&[u8]) -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Self, ConfigError> {
        let bytes = secret.resolve().map_err(|e| ConfigError::Invalid(format!("{what}: {e}")))?;
        let value = make(&bytes).map_err(|why| ConfigError::Invalid(format!("{what}: {why}")))?;
        let state = Reading {
            read_at: std::time::Instant::now(),
            read_in: crate::reload::generation(),
            bytes,
            value: std::sync::Arc::new(value),
            generation: 0,
        };
        Ok(Self {
            secret,
            what,
            make: Box::new(make),
            every: REREAD_EVERY,
            state: std::sync::Mutex::new(state),
        })
    }

    /// Reads the file again at most every `every` instead of [`REREAD_EVERY`] (tests).
    pub fn rereading_every(mut self, every: std::time::Duration) -> Self {
        self.every = every;
        self
    }

    /// The current value and its generation (0 for the one read at start, one more for each
    /// change taken since).
    pub fn current(&self) -> (std::sync::Arc<T>, u64) {
        let lock = || self.state.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut state = lock();
            let asked = crate::reload::generation();
            if !self.secret.is_file() || (state.read_at.elapsed() < self.every && state.read_in == asked) {
                return (state.value.clone(), state.generation);
            }
            // This caller rereads; the others keep the current value until it is done.
            (state.read_at, state.read_in) = (std::time::Instant::now(), asked);
        }
        let fresh = match self.secret.resolve() {
            Ok(bytes) if bytes.is_empty() => Err("the file is empty".to_owned()),
            Ok(bytes) => Ok(bytes),
            Err(err) => Err(err.to_string()),
        };
        let mut state = lock();
        match fresh {
            Ok(bytes) if bytes == state.bytes => {}
            Ok(bytes) => match (self.make)(&bytes) {
                Ok(value) => {
                    state.bytes = bytes;
                    state.value = std::sync::Arc::new(value);
                    state.generation += 1;
                    tracing::info!(secret = ?self.secret, "{}: changed; new requests use it", self.what);
                }
                Err(why) => {
                    tracing::warn!(secret = ?self.secret, %why, "{}: keeping the last one", self.what)
                }
            },
            Err(why) => tracing::warn!(secret = ?self.secret, %why, "{}: keeping the last one", self.what),
        }
        (state.value.clone(), state.generation)
    }
}

impl ReloadingSecret<String> {
    /// A text secret (a password, a token) followed as [`ReloadingSecret::new`] does; bytes that are
    /// not UTF-8 are refused, naming `what`.
    pub fn text(secret: SecretRef, what: &'static str) -> Result<Self, ConfigError> {
        Self::new(secret, what, |bytes| String::from_utf8(bytes.to_vec()).map_err(|_| "not UTF-8".to_owned()))
    }
}

/// Environment variable holding the base64 secrets key.
pub const KEY_ENV: &str = "EXO_SECRETS_KEY";
/// Environment variable naming a file holding the base64 secrets key.
pub const KEY_FILE_ENV: &str = "EXO_SECRETS_KEY_FILE";
const SEALED_PREFIX: &str = "exo1:";

/// The secrets key from `EXO_SECRETS_KEY` or `EXO_SECRETS_KEY_FILE`.
pub fn secrets_key() -> Result<[u8; 32], ConfigError> {
    let encoded = match (std::env::var(KEY_ENV), std::env::var(KEY_FILE_ENV)) {
        (Ok(key), _) => key,
        (Err(_), Ok(path)) => std::fs::read_to_string(&path).map_err(|err| {
            ConfigError::Invalid(format!("cannot read {KEY_FILE_ENV}={path}: {}", err.kind()))
        })?,
        _ => {
            return Err(ConfigError::Invalid(format!(
                "env:encrypted secrets need a key: set {KEY_ENV} or {KEY_FILE_ENV} (make one with `exo secret keygen`)"
            )));
        }
    };
    decode_key(encoded.trim())
}

fn decode_key(encoded: &str) -> Result<[u8; 32], ConfigError> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| ConfigError::Invalid("the secrets key is not base64".into()))?;
    bytes.try_into().map_err(|_| ConfigError::Invalid("the secrets key must be 32 bytes".into()))
}

/// A new random secrets key, base64.
pub fn generate_key() -> String {
    use base64::Engine as _;
    use rand::Rng as _;
    let mut key = [0u8; 32];
    rand::rng().fill(&mut key);
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// Seals `plaintext` under `key` (a fresh random nonce each time).
pub fn seal(plaintext: &[u8], key: &[u8; 32]) -> String {
    use base64::Engine as _;
    use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, aead::Aead};
    use rand::Rng as _;
    let mut nonce = [0u8; 12];
    rand::rng().fill(&mut nonce);
    let cipher = ChaCha20Poly1305::new(key.into());
    // Encryption with a valid key and nonce cannot fail for in-memory buffers.
    let sealed = cipher.encrypt(Nonce::from_slice(&nonce), plaintext).unwrap_or_default();
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    format!("{SEALED_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out))
}

/// Opens a value made by [`seal`].
pub fn open(sealed: &str, key: &[u8; 32]) -> Result<Vec<u8>, &'static str> {
    use base64::Engine as _;
    use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, aead::Aead};
    let body = sealed.trim().strip_prefix(SEALED_PREFIX).ok_or("not a sealed value (exo1:...)")?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).map_err(|_| "not base64")?;
    if raw.len() < 12 + 16 {
        return Err("too short");
    }
    let (nonce, ciphertext) = raw.split_at(12);
    ChaCha20Poly1305::new(key.into())
        .decrypt(Nonce::from_slice(nonce), ciphertext)
        .map_err(|_| "wrong key or altered value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_followed_file_is_taken_when_it_makes_a_value_and_kept_when_it_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "one\n").unwrap();
        let parse = |bytes: &[u8]| {
            let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
            if text.contains(' ') { Err("a space".to_owned()) } else { Ok(text.to_owned()) }
        };
        let followed = ReloadingSecret::new(SecretRef::File(path.clone()), "test token", parse)
            .unwrap()
            .rereading_every(std::time::Duration::ZERO);
        assert_eq!(followed.current(), (std::sync::Arc::new("one".to_owned()), 0));
        std::fs::write(&path, "two").unwrap();
        assert_eq!(followed.current(), (std::sync::Arc::new("two".to_owned()), 1));
        for bad in ["half written", ""] {
            std::fs::write(&path, bad).unwrap();
            assert_eq!(
                followed.current(),
                (std::sync::Arc::new("two".to_owned()), 1),
                "{bad:?} is not taken"
            );
        }
        std::fs::remove_file(&path).unwrap();
        assert_eq!(followed.current().1, 1, "a missing file keeps the last value");
        std::fs::write(&path, "three").unwrap();
        assert_eq!(followed.current(), (std::sync::Arc::new("three".to_owned()), 2));
        let err = ReloadingSecret::new(SecretRef::File(path.clone()), "test token", |_: &[u8]| {
            Err::<(), _>("no".into())
        });
        assert!(err.err().unwrap().to_string().contains("test token: no"));
    }

    #[test]
    fn a_reload_asked_for_rereads_a_followed_file_before_its_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "old").unwrap();
        let followed = ReloadingSecret::text(SecretRef::File(path.clone()), "test password")
            .unwrap()
            .rereading_every(std::time::Duration::from_secs(3600));
        std::fs::write(&path, "new").unwrap();
        // (No other test in this crate asks for a reload: it is process-wide.)
        assert_eq!(*followed.current().0, "old", "not read again within the hour");
        let waiter = crate::reload::changed();
        crate::reload::ask();
        assert!(waiter.has_changed().unwrap(), "what waits for files is woken");
        assert_eq!(followed.current(), (std::sync::Arc::new("new".to_owned()), 1), "read again at once");
    }

    #[test]
    fn a_followed_secret_that_is_not_a_file_is_read_once() {
        let followed = ReloadingSecret::new(SecretRef::Env("PATH".into()), "path", |b: &[u8]| Ok(b.len()))
            .unwrap()
            .rereading_every(std::time::Duration::ZERO);
        assert_eq!(followed.current().1, 0);
        assert_eq!(followed.current().1, 0);
    }

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

    #[test]
    fn sealed_values_open_only_with_their_key_and_unaltered() {
        let key = decode_key(&generate_key()).unwrap();
        let other = decode_key(&generate_key()).unwrap();
        let sealed = seal(b"client-secret-value", &key);
        assert!(sealed.starts_with("exo1:") && !sealed.contains("client-secret"));
        assert_eq!(open(&sealed, &key).unwrap(), b"client-secret-value");
        assert_ne!(seal(b"client-secret-value", &key), sealed, "a fresh nonce each time");
        assert_eq!(open(&sealed, &other), Err("wrong key or altered value"));
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert!(open(std::str::from_utf8(&altered).unwrap(), &key).is_err());
        assert!(open("plain", &key).is_err());
        assert_eq!(
            SecretRef::try_from("env:encrypted:ARM_CLIENT_SECRET".to_owned()).unwrap(),
            SecretRef::EnvEncrypted("ARM_CLIENT_SECRET".into())
        );
        assert!(SecretRef::try_from("env:encrypted:".to_owned()).is_err());
    }
}
