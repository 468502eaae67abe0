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
    /// A Unix socket to serve on as well (`--unix-socket`, `EXO_<PROXY>_UNIX_SOCKET`: named per
    /// proxy, so it is read by [`main`] rather than declared here).
    #[arg(skip)]
    pub unix_socket: Option<std::path::PathBuf>,
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
        if let Some(path) = &self.unix_socket {
            config.unix_socket = Some(path.clone());
        }
    }
}

/// Sets up logging and a runtime sized by `server.worker-threads`, then runs `serve` to completion.
pub fn run<F, E>(server: &ServerConfig, serve: F) -> Result<(), E>
where
    F: Future<Output = Result<(), E>>,
    E: From<std::io::Error>,
{
    let runtime = server.runtime()?;
    // Inside the runtime: the trace exporter's gRPC channel is made there.
    let traces = {
        let _inside = runtime.enter();
        init_tracing(&server.log)
    };
    for warning in crate::config::take_deprecations() {
        tracing::warn!("{warning}");
    }
    let result = runtime.block_on(serve);
    if let Some(traces) = traces {
        runtime.block_on(traces.finish());
    }
    result
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
    /// The configured backend's kind, for the start-up log line.
    fn backend_kind(&self) -> &'static str;
    /// Every backend kind `--backend` may name (the proxy's registry).
    fn backend_kinds() -> &'static [&'static str];
}

/// Implements [`ProxyConfig`] for a proxy's config: a struct with `server:` and `backend:` fields,
/// the backend being its registry's `BackendConfig` (see [`crate::backends!`]); `validate` checks
/// the whole config. Every proxy's config is wired to the CLI the same way.
#[macro_export]
macro_rules! proxy_config {
    ($config:ty, $backend:ty, validate = $validate:expr) => {
        impl $crate::cli::ProxyConfig for $config {
            fn server_mut(&mut self) -> &mut $crate::config::ServerConfig {
                &mut self.server
            }
            fn server(&self) -> &$crate::config::ServerConfig {
                &self.server
            }
            fn select_backend(
                &mut self,
                kind: &str,
                data: Option<std::path::PathBuf>,
            ) -> Result<(), $crate::config::ConfigError> {
                self.backend = <$backend>::named(kind, data)?;
                Ok(())
            }
            fn set_data_path(&mut self, data: std::path::PathBuf) {
                self.backend.set_data_path(data);
            }
            fn backend_kind(&self) -> &'static str {
                self.backend.kind()
            }
            fn backend_kinds() -> &'static [&'static str] {
                <$backend>::KINDS
            }
            fn validate(&self) -> Result<(), $crate::config::ConfigError> {
                let validate: fn(&$config) -> Result<(), $crate::config::ConfigError> = $validate;
                validate(self)
            }
        }
    };
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

/// What a proxy binary's `main` needs of its proxy: the one start-up sequence every proxy
/// follows (validate, open the backend, bind, log "ready", serve until a signal, drain).
pub trait Proxy: Sized + Send + 'static {
    /// Its configuration file.
    type Config: ProxyConfig + Send + 'static;
    /// Validates `config`, opens its backend and binds its listen address.
    fn bind(config: &Self::Config) -> impl Future<Output = Result<Self, crate::ProxyError>> + Send;
    /// The address it listens on.
    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr>;
    /// Serves until `shutdown` resolves, then drains.
    fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = Result<(), crate::ProxyError>> + Send;
}

/// How a proxy binary names itself: its flags and `EXO_<PROXY>_*` environment variables
/// follow from these.
#[derive(Debug, Clone, Copy)]
pub struct Binary {
    /// The proxy's short name, `eqs`; the binary is `eqs-proxy`, its variables `EXO_EQS_*`.
    pub proxy: &'static str,
    /// The binary's version (`env!("CARGO_PKG_VERSION")` in the binary).
    pub version: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// The flag that points a local backend at its data (`db` or `root`).
    pub data_flag: &'static str,
    /// Its help.
    pub data_help: &'static str,
}

/// Why a proxy binary stopped.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The flags or configuration are wrong.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The proxy could not start or failed while serving.
    #[error("{binary}: {source}")]
    Proxy {
        /// The binary.
        binary: String,
        /// What went wrong.
        source: Box<crate::ProxyError>,
    },
    /// Writing the configuration or setting up the runtime failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The configuration could not be printed.
    #[error(transparent)]
    Yaml(#[from] serde_yaml_ng::Error),
}

/// A proxy binary's whole `main`: flags and environment, the effective configuration,
/// `--print-config`, logging and runtime, then the start-up sequence of [`Proxy`].
pub fn main<P: Proxy>(binary: &Binary) -> Result<(), CliError> {
    use clap::{Arg, ArgAction, FromArgMatches as _, builder::PossibleValuesParser, value_parser};
    let name = format!("{}-proxy", binary.proxy);
    let env = |what: &str| format!("EXO_{}_{what}", binary.proxy.to_uppercase());
    let command = clap::Command::new(name.clone())
        .arg(
            Arg::new("config")
                .long("config")
                .env(env("CONFIG"))
                .value_name("FILE")
                .value_parser(value_parser!(std::path::PathBuf))
                .help(format!("YAML config file (see the {} README for the format)", binary.proxy)),
        )
        .arg(
            Arg::new("listen")
                .long("listen")
                .env(env("LISTEN"))
                .value_name("ADDR")
                .value_parser(value_parser!(std::net::SocketAddr))
                .help("Address to listen on (gRPC and HTTP/JSON share it)"),
        )
        .arg(
            Arg::new("unix-socket")
                .long("unix-socket")
                .env(env("UNIX_SOCKET"))
                .value_name("PATH")
                .value_parser(value_parser!(std::path::PathBuf))
                .help("Also serve on this Unix socket (clients in the same pod or host: unix:PATH)"),
        )
        .arg(
            Arg::new("backend")
                .long("backend")
                .env(env("BACKEND"))
                .value_name("KIND")
                .value_parser(PossibleValuesParser::new(P::Config::backend_kinds()))
                .help("Backend kind (a failover chain needs --config)"),
        )
        .arg(
            Arg::new("data")
                .long(binary.data_flag)
                .env(env(&binary.data_flag.to_uppercase()))
                .value_name("PATH")
                .value_parser(value_parser!(std::path::PathBuf))
                .help(binary.data_help),
        )
        .arg(
            Arg::new("print-config")
                .long("print-config")
                .action(ArgAction::SetTrue)
                .help("Print the effective configuration as YAML and exit"),
        );
    // The shared flags' struct doc would become the about text: set the binary's after them.
    let matches = <ServerArgs as clap::Args>::augment_args(command)
        .version(binary.version)
        .about(binary.about)
        .after_help("Settings come from --config, then EXO_* environment variables, then flags (highest).")
        .get_matches();
    let mut server = match ServerArgs::from_arg_matches(&matches) {
        Ok(server) => server,
        Err(err) => err.exit(),
    };
    server.unix_socket = matches.get_one::<std::path::PathBuf>("unix-socket").cloned();
    let config: P::Config = effective_config(
        matches.get_one::<std::path::PathBuf>("config").map(|p| p.as_path()),
        matches.get_one::<std::net::SocketAddr>("listen").copied(),
        matches.get_one::<String>("backend").map(String::as_str),
        matches.get_one::<std::path::PathBuf>("data").cloned(),
        &server,
    )?;
    launch(config, matches.get_flag("print-config"), |config| async move {
        let failed = |source| CliError::Proxy { binary: name.clone(), source: Box::new(source) };
        let proxy = P::bind(&config).await.map_err(failed)?;
        tracing::info!(backend = config.backend_kind(), addr = %proxy.local_addr()?, "{name} ready");
        proxy.serve(crate::server::shutdown_signal()).await.map_err(failed)?;
        tracing::info!("{name} stopped");
        Ok(())
    })
}
