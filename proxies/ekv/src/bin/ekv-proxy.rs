//! `ekv-proxy`: the ExoFlow key-value sidecar.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context as _;
use clap::Parser;
use ekv::{EkvProxy, config::EkvConfig};
use exo_proxy_core::{cli::ServerArgs, server::shutdown_signal};

/// The ExoFlow key-value proxy: serves exo.kv.v1 over gRPC and HTTP/JSON on one port.
///
/// Settings come from --config, then EXO_* environment variables, then flags (highest).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// YAML config file (see the ekv README for the format).
    #[arg(long, env = "EXO_EKV_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (gRPC and HTTP/JSON share it).
    #[arg(long, env = "EXO_EKV_LISTEN")]
    listen: Option<SocketAddr>,
    /// Backend kind (a failover chain needs --config).
    #[arg(long, env = "EXO_EKV_BACKEND", value_parser = clap::builder::PossibleValuesParser::new(ekv::config::BackendConfig::KINDS))]
    backend: Option<String>,
    /// Database file of the embedded backend.
    #[arg(long, env = "EXO_EKV_DB")]
    db: Option<PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
    /// Print the effective configuration as YAML and exit.
    #[arg(long)]
    print_config: bool,
}

fn effective_config(args: &Args) -> anyhow::Result<EkvConfig> {
    Ok(exo_proxy_core::cli::effective_config(
        args.config.as_deref(),
        args.listen,
        args.backend.as_deref(),
        args.db.clone(),
        &args.server,
    )?)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    exo_proxy_core::cli::launch(effective_config(&args)?, args.print_config, serve)
}

async fn serve(config: EkvConfig) -> anyhow::Result<()> {
    let proxy = EkvProxy::new(&config).await.context("cannot start ekv-proxy")?;
    let listener = proxy.bind().await?;
    tracing::info!(backend = config.backend.kind(), addr = %listener.local_addr()?, "ekv-proxy ready");
    proxy.serve(listener, shutdown_signal()).await?;
    tracing::info!("ekv-proxy stopped");
    Ok(())
}
