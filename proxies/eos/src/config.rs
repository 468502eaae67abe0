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

use exo_proxy_core::{config::ServerConfig, secret::SecretRef};
use serde::{Deserialize, Serialize};

/// Default port of eos.
pub const DEFAULT_PORT: u16 = 7402;
pub use crate::services::DEFAULT_MEMORY_OBJECT_BYTES;

pub use crate::services::{BackendConfig, failover::FailoverConfig};

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

exo_proxy_core::proxy_config!(
    EosConfig,
    BackendConfig,
    validate = |config| {
        config.server.validate()?;
        config.backend.validate()
    }
);
