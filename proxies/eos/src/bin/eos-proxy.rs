//! `eos-proxy`: the ExoFlow object-store sidecar.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context as _;
use clap::Parser;
use eos::{EosProxy, config::EosConfig};
use exo_proxy_core::{cli::ServerArgs, server::shutdown_signal};

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
    /// Backend kind (a failover chain needs --config).
    #[arg(long, env = "EXO_EOS_BACKEND", value_parser = clap::builder::PossibleValuesParser::new(eos::config::BackendConfig::KINDS))]
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
    Ok(exo_proxy_core::cli::effective_config(
        args.config.as_deref(),
        args.listen,
        args.backend.as_deref(),
        args.root.clone(),
        &args.server,
    )?)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    exo_proxy_core::cli::launch(effective_config(&args)?, args.print_config, serve)
}

async fn serve(config: EosConfig) -> anyhow::Result<()> {
    let proxy = EosProxy::bind(&config).await.context("cannot start eos-proxy")?;
    tracing::info!(backend = config.backend.kind(), addr = %proxy.local_addr()?, "eos-proxy ready");
    proxy.serve(shutdown_signal()).await?;
    tracing::info!("eos-proxy stopped");
    Ok(())
}
