//! The eos-proxy configuration file.
//!
//! ```yaml
//! server:
//!   listen: 127.0.0.1:7402
//! backend:
//!   kind: fs                   # or: memory
//!   root: .exo/objects
//! presign:                     # URLs the local backends sign and this proxy serves
//!                              # (or, for kind: s3 — see exo_aws::AwsSettings — the S3
//!                              # endpoint presigned URLs name)
//!   base-url: http://127.0.0.1:7402   # default: http://<listen>
//!   secret: env:EXO_PRESIGN_SECRET    # default: random per start (URLs die with the process)
//! ```

use std::path::PathBuf;

use exo_proxy_core::{
    config::{ConfigError, ServerConfig},
    secret::SecretRef,
};
use serde::{Deserialize, Serialize};

/// Default port of eos.
pub const DEFAULT_PORT: u16 = 7402;
/// Largest object the memory backend holds by default.
pub const DEFAULT_MEMORY_OBJECT_BYTES: u64 = 256 * 1024 * 1024;

/// Which backend stores the objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", rename_all_fields = "kebab-case", deny_unknown_fields)]
pub enum BackendConfig {
    /// In-process, not durable.
    Memory {
        /// Largest object in bytes.
        #[serde(default = "default_memory_bytes")]
        max_object_bytes: u64,
    },
    /// Amazon S3 (see [`crate::services::s3`]): region, endpoint override, credentials.
    S3(exo_aws::AwsSettings),
    /// Azure Blob Storage (see [`crate::services::azure_blob`]): account, endpoint, credentials.
    #[serde(rename = "azure-blob")]
    AzureBlob(exo_azure::AzureSettings),
    /// An ordered chain of backends: writes to the first that answers, reads fall through.
    Failover {
        /// Members in priority order (at least one).
        members: Vec<BackendConfig>,
        /// The journal of uploads and deletes a standby takes while the primary is out (local,
        /// durable; replayed onto the primary before it serves those objects again).
        #[serde(default = "default_journal_path")]
        journal: PathBuf,
        /// The deadline of one call to one member (not a streamed upload's body).
        #[serde(default = "default_member_timeout", with = "humantime_serde")]
        member_timeout: std::time::Duration,
    },
    /// Files under a data root.
    Fs {
        /// The data root; created if missing.
        #[serde(default = "default_root")]
        root: PathBuf,
    },
}

fn default_memory_bytes() -> u64 {
    DEFAULT_MEMORY_OBJECT_BYTES
}

fn default_journal_path() -> PathBuf {
    PathBuf::from(".exo/eos-failover.db")
}

fn default_member_timeout() -> std::time::Duration {
    exo_proxy_core::failover::MEMBER_TIMEOUT
}

fn default_root() -> PathBuf {
    PathBuf::from(".exo/objects")
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self::Fs { root: default_root() }
    }
}

impl BackendConfig {
    /// Every backend kind [`Self::named`] makes (`failover` is configured in a file); the one
    /// list help texts and errors quote.
    pub const KINDS: &[&str] = &["memory", "fs", "s3", "azure-blob"];

    /// The backend's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Memory { .. } => "memory",
            Self::Fs { .. } => "fs",
            Self::S3(_) => "s3",
            Self::AzureBlob(_) => "azure-blob",
            Self::Failover { .. } => "failover",
        }
    }

    /// A backend of `kind` with default settings (`root` for fs).
    pub fn named(kind: &str, root: Option<PathBuf>) -> Result<Self, ConfigError> {
        match kind {
            "memory" => Ok(Self::Memory { max_object_bytes: DEFAULT_MEMORY_OBJECT_BYTES }),
            "fs" => Ok(Self::Fs { root: root.unwrap_or_else(default_root) }),
            "s3" => Ok(Self::S3(exo_aws::AwsSettings::default())),
            "azure-blob" => Ok(Self::AzureBlob(exo_azure::AzureSettings::default())),
            other => Err(ConfigError::Invalid(format!(
                "unknown object backend '{other}' (known: {})",
                Self::KINDS.join(", ")
            ))),
        }
    }
}

/// Presigned URLs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct PresignConfig {
    /// Local backends: base of the URLs (how clients reach this proxy); default
    /// `http://<listen>`. `s3`: the S3 endpoint the URLs name; default the backend's endpoint.
    pub base_url: Option<String>,
    /// HMAC key; default random per start.
    pub secret: Option<SecretRef>,
}

/// The whole eos-proxy configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EosConfig {
    /// Listener, limits, logging.
    #[serde(default = "default_server")]
    pub server: ServerConfig,
    /// The backend.
    #[serde(default)]
    pub backend: BackendConfig,
    /// Presigned URLs.
    #[serde(default)]
    pub presign: PresignConfig,
}

fn default_server() -> ServerConfig {
    ServerConfig::with_listen(std::net::SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)))
}

impl Default for EosConfig {
    fn default() -> Self {
        Self {
            server: default_server(),
            backend: BackendConfig::default(),
            presign: PresignConfig::default(),
        }
    }
}

impl exo_proxy_core::cli::ProxyConfig for EosConfig {
    fn server_mut(&mut self) -> &mut ServerConfig {
        &mut self.server
    }
    fn server(&self) -> &ServerConfig {
        &self.server
    }
    fn select_backend(&mut self, kind: &str, data: Option<PathBuf>) -> Result<(), ConfigError> {
        self.backend = BackendConfig::named(kind, data)?;
        Ok(())
    }
    fn set_data_path(&mut self, data: PathBuf) {
        if let BackendConfig::Fs { root } = &mut self.backend {
            *root = data;
        }
    }
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        fn check(backend: &BackendConfig) -> Result<(), ConfigError> {
            match backend {
                BackendConfig::S3(settings) => settings.validate(),
                BackendConfig::AzureBlob(settings) => settings.validate(),
                BackendConfig::Failover { members, .. } if members.is_empty() => {
                    Err(ConfigError::Invalid("backend.members of a failover chain must not be empty".into()))
                }
                BackendConfig::Failover { members, .. } => members.iter().try_for_each(check),
                _ => Ok(()),
            }
        }
        check(&self.backend)?;
        Ok(())
    }
}
