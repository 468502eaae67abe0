//! The ekv-proxy configuration file: the shared `server:` section and the `backend:` section.
//!
//! ```yaml
//! server:
//!   listen: 127.0.0.1:7403
//! backend:
//!   kind: embedded            # or: memory
//!   path: .exo/ekv.db
//! ```

use std::path::PathBuf;

use exo_proxy_core::config::{ConfigError, ServerConfig};
use serde::{Deserialize, Serialize};

/// Default port of ekv.
pub const DEFAULT_PORT: u16 = 7403;

/// Which backend serves the tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", rename_all_fields = "kebab-case", deny_unknown_fields)]
pub enum BackendConfig {
    /// In-process, not durable.
    Memory,
    /// Amazon DynamoDB (see [`crate::services::dynamodb`]): region, endpoint override, credentials.
    Dynamodb(exo_aws::AwsSettings),
    /// Azure Table storage (see [`crate::services::azure_table`]): account, endpoint, credentials.
    #[serde(rename = "azure-table")]
    AzureTable(exo_azure::AzureSettings),
    /// An ordered chain of backends: writes to the first that answers, reads fall through.
    Failover {
        /// Members in priority order (at least one).
        members: Vec<BackendConfig>,
        /// The journal of writes a standby takes while the primary is out (local, durable;
        /// replayed onto the primary before it serves those keys again).
        #[serde(default = "default_journal_path")]
        journal: PathBuf,
        /// The deadline of one call to one member (a hung member is set aside after it).
        #[serde(default = "default_member_timeout", with = "humantime_serde")]
        member_timeout: std::time::Duration,
    },
    /// Durable SQLite file.
    Embedded {
        /// The database file; created with its directory if missing.
        #[serde(default = "default_db_path")]
        path: PathBuf,
    },
}

fn default_journal_path() -> PathBuf {
    PathBuf::from(".exo/ekv-failover.db")
}

fn default_member_timeout() -> std::time::Duration {
    exo_proxy_core::failover::MEMBER_TIMEOUT
}

fn default_db_path() -> PathBuf {
    PathBuf::from(".exo/ekv.db")
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self::Embedded { path: default_db_path() }
    }
}

impl BackendConfig {
    /// Every backend kind [`Self::named`] makes (`failover` is configured in a file); the one
    /// list help texts and errors quote.
    pub const KINDS: &[&str] = &["memory", "embedded", "dynamodb", "azure-table"];

    /// The backend's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Embedded { .. } => "embedded",
            Self::Dynamodb(_) => "dynamodb",
            Self::AzureTable(_) => "azure-table",
            Self::Failover { .. } => "failover",
        }
    }

    /// A backend of `kind` with default settings (`path` for embedded).
    pub fn named(kind: &str, path: Option<PathBuf>) -> Result<Self, ConfigError> {
        match kind {
            "memory" => Ok(Self::Memory),
            "embedded" => Ok(Self::Embedded { path: path.unwrap_or_else(default_db_path) }),
            "dynamodb" => Ok(Self::Dynamodb(exo_aws::AwsSettings::default())),
            "azure-table" => Ok(Self::AzureTable(exo_azure::AzureSettings::default())),
            other => Err(ConfigError::Invalid(format!(
                "unknown kv backend '{other}' (known: {})",
                Self::KINDS.join(", ")
            ))),
        }
    }
}

/// The whole ekv-proxy configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EkvConfig {
    /// Listener, limits, logging.
    #[serde(default = "default_server")]
    pub server: ServerConfig,
    /// The backend.
    #[serde(default)]
    pub backend: BackendConfig,
}

fn default_server() -> ServerConfig {
    ServerConfig::with_listen(std::net::SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)))
}

impl Default for EkvConfig {
    fn default() -> Self {
        Self { server: default_server(), backend: BackendConfig::default() }
    }
}

impl exo_proxy_core::cli::ProxyConfig for EkvConfig {
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
        if let BackendConfig::Embedded { path } = &mut self.backend {
            *path = data;
        }
    }
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        fn check(backend: &BackendConfig) -> Result<(), ConfigError> {
            match backend {
                BackendConfig::Dynamodb(settings) => settings.validate(),
                BackendConfig::AzureTable(settings) => settings.validate(),
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
