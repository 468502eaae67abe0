//! The ekv-proxy configuration file: the shared `server:` section and the `backend:` section.
//!
//! ```yaml
//! server:
//!   listen: 127.0.0.1:7403
//! backend:
//!   kind: embedded            # or: memory
//!   path: .exo/ekv.db
//! ```

use exo_proxy_core::config::ServerConfig;
use serde::{Deserialize, Serialize};

/// Default port of ekv.
pub const DEFAULT_PORT: u16 = 7403;

pub use crate::services::{BackendConfig, failover::FailoverConfig};

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

exo_proxy_core::proxy_config!(
    EkvConfig,
    BackendConfig,
    validate = |config| {
        config.server.validate()?;
        config.backend.validate()
    }
);
