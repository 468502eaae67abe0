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
    /// The whole YAML configuration as text instead of a file, for platforms that pass
    /// settings as environment variables (an ECS task definition, for one).
    #[arg(long, env = "EXO_CONFIG_YAML", hide_env_values = true)]
    pub config_yaml: Option<String>,
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

/// Sets up logging and a runtime sized by `server.worker-threads`, then runs `serve` to completion.
pub fn run<F, E>(server: &ServerConfig, serve: F) -> Result<(), E>
where
    F: Future<Output = Result<(), E>>,
    E: From<std::io::Error>,
{
    init_tracing(&server.log);
    for warning in crate::config::take_deprecations() {
        tracing::warn!("{warning}");
    }
    server.runtime()?.block_on(serve)
}

/// A proxy's whole configuration file, as the shared command-line entry needs to see it.
pub trait ProxyConfig: serde::de::DeserializeOwned + serde::Serialize + Default {
    /// The `server:` section.
    fn server_mut(&mut self) -> &mut ServerConfig;
    /// The `server:` section.
    fn server(&self) -> &ServerConfig;
    /// Replaces the backend with `kind`'s defaults (`data`: its file or directory).
    fn select_backend(
        &mut self,
        kind: &str,
        data: Option<std::path::PathBuf>,
    ) -> Result<(), crate::config::ConfigError>;
    /// Points the configured backend at `data`, if it keeps data.
    fn set_data_path(&mut self, data: std::path::PathBuf);
    /// Checks the settings hang together.
    fn validate(&self) -> Result<(), crate::config::ConfigError>;
}

/// The effective configuration: the file (or defaults), then the flags and environment.
pub fn effective_config<C: ProxyConfig>(
    file: Option<&std::path::Path>,
    listen: Option<std::net::SocketAddr>,
    backend: Option<&str>,
    data: Option<std::path::PathBuf>,
    server: &ServerArgs,
) -> Result<C, crate::config::ConfigError> {
    let mut config = match (file, &server.config_yaml) {
        (Some(_), Some(_)) => {
            return Err(crate::config::ConfigError::Invalid(
                "give the configuration either as a file (--config) or as text (EXO_CONFIG_YAML), not both"
                    .into(),
            ));
        }
        (Some(path), None) => crate::config::load_yaml::<C>(path)?,
        (None, Some(text)) => crate::config::parse_yaml::<C>(text, "EXO_CONFIG_YAML")?,
        (None, None) => C::default(),
    };
    if let Some(listen) = listen {
        config.server_mut().listen = listen;
    }
    match (backend, data) {
        (Some(kind), data) => config.select_backend(kind, data)?,
        (None, Some(data)) => config.set_data_path(data),
        (None, None) => {}
    }
    server.apply(config.server_mut());
    config.validate()?;
    Ok(config)
}

/// A proxy binary's `main`: print the effective configuration and exit (`--print-config`), or
/// set up logging and the runtime and run `serve` until it returns.
pub fn launch<C, F, Fut, E>(config: C, print_config: bool, serve: F) -> Result<(), E>
where
    C: ProxyConfig,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: From<std::io::Error> + From<serde_yaml_ng::Error>,
{
    if print_config {
        print!("{}", serde_yaml_ng::to_string(&config)?);
        return Ok(());
    }
    let server = config.server().clone();
    run(&server, serve(config))
}
