//! `eos-proxy`: the ExoFlow object-store sidecar.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context as _;
use clap::Parser;
use eos::{
    EosProxy,
    config::{BackendConfig, EosConfig},
};
use exo_proxy_core::{cli::ServerArgs, config::load_yaml, server::shutdown_signal};

/// The ExoFlow object-store proxy: serves exo.object.v1 over gRPC and HTTP on one port.
///
/// Settings come from --config, then EXO_* environment variables, then flags (highest).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// YAML config file (see the eos README for the format).
    #[arg(long, env = "EXO_EOS_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (gRPC and HTTP share it).
    #[arg(long, env = "EXO_EOS_LISTEN")]
    listen: Option<SocketAddr>,
    /// Backend: memory or fs.
    #[arg(long, env = "EXO_EOS_BACKEND")]
    backend: Option<String>,
    /// Data root of the fs backend.
    #[arg(long, env = "EXO_EOS_ROOT")]
    root: Option<PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
    /// Print the effective configuration as YAML and exit.
    #[arg(long)]
    print_config: bool,
}

fn effective_config(args: &Args) -> anyhow::Result<EosConfig> {
    let mut config = match &args.config {
        Some(path) => load_yaml::<EosConfig>(path)?,
        None => EosConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(kind) = &args.backend {
        config.backend = BackendConfig::named(kind, args.root.clone())?;
    } else if let (Some(new_root), BackendConfig::Fs { root }) = (&args.root, &mut config.backend) {
        *root = new_root.clone();
    }
    args.server.apply(&mut config.server);
    config.server.validate()?;
    Ok(config)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = effective_config(&args)?;
    if args.print_config {
        print!("{}", serde_yaml_ng::to_string(&config)?);
        return Ok(());
    }
    exo_proxy_core::cli::run(&config.server.clone(), serve(config))
}

async fn serve(config: EosConfig) -> anyhow::Result<()> {
    let proxy = EosProxy::bind(&config).await.context("cannot start eos-proxy")?;
    tracing::info!(backend = config.backend.kind(), addr = %proxy.local_addr()?, "eos-proxy ready");
    proxy.serve(shutdown_signal()).await?;
    tracing::info!("eos-proxy stopped");
    Ok(())
}
