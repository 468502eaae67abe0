//! The core every ExoFlow proxy (eqs, eos, ekv) is built on:
//!
//! - [`ExoError`]: the one error type, mapped to gRPC status + detail and to problem+json;
//! - [`config`]: the shared `server:` settings and the YAML loader;
//! - [`metrics`]: Prometheus metrics per operation, backend and outcome;
//! - [`server`]: gRPC and HTTP/JSON on one port, health, reflection, graceful shutdown;
//! - [`json`]: HTTP/JSON bodies whose rejections are problem+json;
//! - [`registry`]: the one list of a proxy's backends ([`backends!`]) and what a backend provides;
//! - [`layers`]: cross-cutting behaviour (observe, shed load, breaker, retry, timeout) written once
//!   over a [`layers::Call`], which each [`layers::Operation`] makes;
//! - [`cli`]: the one `main` and start-up sequence of every proxy binary;
//! - [`telemetry`]: log setup.
//!
//! Backends live in each proxy's crate; this crate knows nothing about queues, objects or keys.

pub mod auth;
pub mod cli;
pub mod config;
mod config_error;
pub mod connections;
pub mod deadline;
pub mod descriptor;
mod error;
pub mod failover;
pub mod idle;
pub mod json;
pub mod layers;
pub mod listener;
pub mod metrics;
pub mod names;
pub mod registry;
pub mod reload;
pub mod secret;
pub mod server;
pub mod stalls;
pub mod telemetry;
pub mod tls;
pub mod traces;
pub mod unread;

pub use descriptor::Descriptor;
pub use error::{ExoError, ExoResult, default_retryable, grpc_code, http_status, readiness, with_causes};
pub use names::ResourceName;

/// Why a proxy could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The backend could not be opened.
    #[error("cannot open backend: {0}")]
    Backend(#[from] ExoError),
    /// The server failed.
    #[error(transparent)]
    Serve(#[from] server::ServeError),
}

/// Milliseconds since the Unix epoch, the contract's timestamp unit.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
