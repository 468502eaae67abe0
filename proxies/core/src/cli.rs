//! Command-line flags every proxy binary shares, and the process entry that runs a proxy.

use std::future::Future;

use clap::Args;

use crate::{
    config::{LogFormat, ServerConfig},
    telemetry::init_tracing,
};

/// Flags (and their environment variables) that override the `server:` section.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Log format: text or json.
    #[arg(long, env = "EXO_LOG_FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// Threads serving requests (default 1).
    #[arg(long, env = "EXO_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Allow a non-loopback listen address without TLS.
    #[arg(long, env = "EXO_ALLOW_INSECURE_NON_LOOPBACK")]
    pub allow_insecure_non_loopback: bool,
}

impl ServerArgs {
    /// Applies the flags given on top of `config`.
    pub fn apply(&self, config: &mut ServerConfig) {
        if let Some(format) = &self.log_format {
            config.log.format = if format == "json" { LogFormat::Json } else { LogFormat::Text };
        }
        if let Some(threads) = self.worker_threads {
            config.worker_threads = threads;
        }
        if self.allow_insecure_non_loopback {
            config.allow_insecure_non_loopback = true;
        }
    }
}

/// Sets up logging and a runtime sized by `server.worker_threads`, then runs `serve` to completion.
pub fn run<F, E>(server: &ServerConfig, serve: F) -> Result<(), E>
where
    F: Future<Output = Result<(), E>>,
    E: From<std::io::Error>,
{
    init_tracing(&server.log);
    server.runtime()?.block_on(serve)
}
