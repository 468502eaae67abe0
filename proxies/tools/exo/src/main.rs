//! `exo`: the developer front door.
//!
//! `exo up` runs every ExoFlow proxy on its embedded local backend under one data directory,
//! prints where each listens, and stops them all cleanly on Ctrl-C or SIGTERM.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ekv::{EkvProxy, config::EkvConfig};
use eos::{EosProxy, config::EosConfig};
use eqs::{
    EqsProxy,
    config::{BackendConfig, EqsConfig},
};
use exo_proxy_core::{
    config::{LogConfig, LogFormat, ServerConfig},
    server::shutdown_signal,
    telemetry::init_tracing,
};
use tokio::sync::watch;

#[derive(Debug, Parser)]
#[command(version, about = "ExoFlow: one contract for queues, objects and key-value on any cloud")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxies on embedded local backends (no cloud account needed).
    Up {
        /// Where the embedded backends keep their data.
        #[arg(long, env = "EXO_DATA_DIR", default_value = ".exo")]
        data_dir: PathBuf,
        /// Address of the queue proxy (eqs).
        #[arg(long, env = "EXO_EQS_LISTEN", default_value = "127.0.0.1:7401")]
        eqs: SocketAddr,
        /// Address of the object proxy (eos).
        #[arg(long, env = "EXO_EOS_LISTEN", default_value = "127.0.0.1:7402")]
        eos: SocketAddr,
        /// Address of the key-value proxy (ekv).
        #[arg(long, env = "EXO_EKV_LISTEN", default_value = "127.0.0.1:7403")]
        ekv: SocketAddr,
        /// Also serve each proxy on a Unix socket in this directory (`eqs.sock`, `eos.sock`,
        /// `ekv.sock`; endpoints `unix:DIR/eqs.sock`…): the cheapest call for apps on this host.
        #[arg(long, env = "EXO_SOCKET_DIR")]
        socket_dir: Option<PathBuf>,
        /// Log lines as JSON.
        #[arg(long)]
        json_logs: bool,
        /// An app manifest whose topics (with their subscriptions, push ones included) eqs makes
        /// as it starts, as its sidecar would: try an app's topics locally.
        #[arg(long, env = "EXO_MANIFEST")]
        manifest: Option<PathBuf>,
    },
    /// Seal secrets for `env:encrypted:NAME` references.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Turn an ExoFlow app manifest into deployment files.
    Deploy {
        #[command(subcommand)]
        command: DeployCommand,
    },
}

#[derive(Debug, Subcommand)]
enum SecretCommand {
    /// Print a new random key (give it to proxies as EXO_SECRETS_KEY or EXO_SECRETS_KEY_FILE).
    Keygen,
    /// Seal standard input with the key in EXO_SECRETS_KEY / EXO_SECRETS_KEY_FILE; print the value
    /// to store in the environment variable an `env:encrypted:NAME` reference names.
    Encrypt,
}

#[derive(Debug, Subcommand)]
enum DeployCommand {
    /// Check a manifest; print every problem with its line and column.
    Validate {
        /// The manifest (exoflow.yaml).
        manifest: PathBuf,
    },
    /// Print which targets the manifest's affinity selects, and why.
    Plan {
        /// The manifest.
        manifest: PathBuf,
    },
    /// Print the manifest's JSON Schema (for editors).
    Schema,
    /// Structurally check an ARM template (no offline ARM validator exists; see exo-deploy's arm_check).
    CheckArm {
        /// The template (JSON).
        template: PathBuf,
    },
    /// Structurally check the custom resources (KEDA, PodMonitor) among rendered k8s files, which
    /// kubernetes-validate does not know (see exo-deploy's crd_check).
    CheckCrds {
        /// The rendered `k8s/` directory.
        dir: PathBuf,
    },
    /// Render deployment files into a directory (nothing is written if the manifest has errors).
    Render {
        /// The manifest.
        manifest: PathBuf,
        /// k8s, compose, systemd, cloudformation, arm, or all (every target the manifest selects).
        #[arg(long, default_value = "all")]
        target: String,
        /// Output directory (replaced as a whole, never left half-written).
        #[arg(long)]
        out: PathBuf,
        /// Kubernetes: classic sidecars (plain containers) instead of native ones.
        #[arg(long)]
        classic_sidecars: bool,
        /// Registry the proxy images come from (overrides the manifest's
        /// `app.container.proxy-registry`; default ghcr.io/exoflow).
        #[arg(long)]
        proxy_registry: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Up { data_dir, eqs, eos, ekv, socket_dir, json_logs, manifest } => {
            up(data_dir, (eqs, eos, ekv), socket_dir, json_logs, manifest).await
        }
        Command::Deploy { command } => deploy(command),
        Command::Secret { command } => secret(command),
    }
}

async fn up(
    data_dir: PathBuf,
    (eqs_listen, eos_listen, ekv_listen): (SocketAddr, SocketAddr, SocketAddr),
    socket_dir: Option<PathBuf>,
    json_logs: bool,
    manifest: Option<PathBuf>,
) -> anyhow::Result<()> {
    let log = LogConfig {
        format: if json_logs { LogFormat::Json } else { LogFormat::Text },
        ..LogConfig::default()
    };
    let traces = init_tracing(&log);
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    if let Some(dir) = &socket_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let socket = |proxy: &str| socket_dir.as_ref().map(|dir| dir.join(format!("{proxy}.sock")));

    // The manifest's topics, made by eqs with their queues (nothing else makes them locally).
    let topics = match &manifest {
        Some(path) => match checked(path)? {
            Some(m) => exo_deploy::render::declared_topics(&m, true),
            None => anyhow::bail!("{} has errors (listed above)", path.display()),
        },
        None => Vec::new(),
    };
    let eqs_config = EqsConfig {
        server: ServerConfig {
            listen: eqs_listen,
            unix_socket: socket("eqs"),
            log: log.clone(),
            ..ServerConfig::default()
        },
        backend: BackendConfig::named("embedded", Some(data_dir.join("eqs.db")))?,
        topics,
        large_messages: None,
    };
    let eqs = EqsProxy::bind(&eqs_config).await.context("cannot start eqs")?;
    let eos_config = EosConfig {
        server: ServerConfig {
            listen: eos_listen,
            unix_socket: socket("eos"),
            log: log.clone(),
            ..ServerConfig::default()
        },
        backend: eos::config::BackendConfig::named("fs", Some(data_dir.join("objects")))?,
        ..EosConfig::default()
    };
    let eos = EosProxy::bind(&eos_config).await.context("cannot start eos")?;
    let ekv_config = EkvConfig {
        server: ServerConfig {
            listen: ekv_listen,
            unix_socket: socket("ekv"),
            log: log.clone(),
            ..ServerConfig::default()
        },
        backend: ekv::config::BackendConfig::named("embedded", Some(data_dir.join("ekv.db")))?,
    };
    let ekv = EkvProxy::bind(&ekv_config).await.context("cannot start ekv")?;

    // One signal stops every proxy; each drains its own in-flight requests.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let eqs_stop = stopped(stop_rx.clone());
    tasks.spawn(async move { eqs.serve(eqs_stop).await.map_err(|e| anyhow::anyhow!("eqs: {e}")) });
    let eos_stop = stopped(stop_rx.clone());
    tasks.spawn(async move { eos.serve(eos_stop).await.map_err(|e| anyhow::anyhow!("eos: {e}")) });
    let ekv_stop = stopped(stop_rx.clone());
    tasks.spawn(async move { ekv.serve(ekv_stop).await.map_err(|e| anyhow::anyhow!("ekv: {e}")) });

    println!("ExoFlow is up (data in {})", data_dir.display());
    println!("  eqs  queue    grpc+http  http://{eqs_listen}   (EXO_EQS_ENDPOINT)   backend embedded");
    println!("  eos  object   grpc+http  http://{eos_listen}   (EXO_EOS_ENDPOINT)   backend fs");
    println!("  ekv  kv       grpc+http  http://{ekv_listen}   (EXO_EKV_ENDPOINT)   backend embedded");
    if let Some(dir) = &socket_dir {
        println!("  Unix sockets: unix:{0}/eqs.sock  unix:{0}/eos.sock  unix:{0}/ekv.sock", dir.display());
    }
    println!("Press Ctrl-C to stop.");

    tokio::select! {
        () = shutdown_signal() => {}
        Some(result) = tasks.join_next() => {
            // A proxy stopped on its own: that is a failure; stop the rest.
            let _ = stop_tx.send(true);
            return result.context("proxy task panicked")?.and(Err(anyhow::anyhow!("a proxy stopped unexpectedly")));
        }
    }
    tracing::info!("stopping proxies");
    let _ = stop_tx.send(true);
    while let Some(result) = tasks.join_next().await {
        result.context("proxy task panicked")??;
    }
    if let Some(traces) = traces {
        traces.finish().await;
    }
    println!("ExoFlow stopped.");
    Ok(())
}

/// Reads and checks a manifest, printing its problems; `None` if it has errors.
fn checked(path: &std::path::Path) -> anyhow::Result<Option<exo_deploy::manifest::Manifest>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    match exo_deploy::validate::check(&text) {
        Ok((manifest, warnings)) => {
            for w in warnings {
                eprintln!("{}:{w}", path.display());
            }
            Ok(Some(manifest))
        }
        Err(problems) => {
            for p in &problems {
                eprintln!("{}:{p}", path.display());
            }
            let errors =
                problems.iter().filter(|p| p.severity == exo_deploy::validate::Severity::Error).count();
            eprintln!("{}: {errors} error(s); nothing rendered", path.display());
            Ok(None)
        }
    }
}

fn deploy(command: DeployCommand) -> anyhow::Result<()> {
    match command {
        DeployCommand::Validate { manifest } => match checked(&manifest)? {
            Some(_) => {
                println!("{}: ok", manifest.display());
                Ok(())
            }
            None => std::process::exit(1),
        },
        DeployCommand::Schema => {
            print!("{}", exo_deploy::manifest::json_schema());
            Ok(())
        }
        DeployCommand::CheckCrds { dir } => {
            let mut docs = Vec::new();
            let mut entries: Vec<_> = std::fs::read_dir(&dir)
                .with_context(|| format!("cannot read {}", dir.display()))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
                .collect();
            entries.sort();
            for path in entries {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let value: serde_json::Value = serde_yaml_ng::from_str(&text)
                    .with_context(|| format!("{} is not YAML", path.display()))?;
                docs.push(value);
            }
            let problems = exo_deploy::crd_check::check(&docs);
            if problems.is_empty() {
                println!("{}: custom resources ok", dir.display());
                return Ok(());
            }
            for p in &problems {
                eprintln!("{}: {p}", dir.display());
            }
            std::process::exit(1)
        }
        DeployCommand::CheckArm { template } => {
            let text = std::fs::read_to_string(&template)
                .with_context(|| format!("cannot read {}", template.display()))?;
            let value: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{} is not JSON", template.display()))?;
            let problems = exo_deploy::arm_check::check(&value);
            if problems.is_empty() {
                println!("{}: ARM template structure ok", template.display());
                return Ok(());
            }
            for p in &problems {
                eprintln!("{}: {p}", template.display());
            }
            std::process::exit(1)
        }
        DeployCommand::Plan { manifest } => {
            let Some(m) = checked(&manifest)? else { std::process::exit(1) };
            for (target, why) in exo_deploy::plan(&m) {
                println!("{:<8} {why}", target.name());
            }
            Ok(())
        }
        DeployCommand::Render { manifest, target, out, classic_sidecars, proxy_registry } => {
            let Some(mut m) = checked(&manifest)? else { std::process::exit(1) };
            if let Some(registry) = proxy_registry {
                exo_deploy::validate::check_registry(&registry)
                    .map_err(|why| anyhow::anyhow!("--proxy-registry: {why}"))?;
                m.app.container.proxy_registry = Some(registry);
            }
            let targets = if target == "all" {
                exo_deploy::plan(&m).into_iter().map(|(t, _)| t).collect()
            } else {
                vec![
                    exo_deploy::Target::parse(&target)
                        .with_context(|| format!("unknown target '{target}' (k8s, compose, systemd, all)"))?,
                ]
            };
            let mut files = exo_deploy::Files::new();
            for t in targets {
                files.extend(exo_deploy::render(&m, t, !classic_sidecars));
            }
            exo_deploy::write(&out, &files).with_context(|| format!("cannot write {}", out.display()))?;
            for path in files.keys() {
                println!("{}", out.join(path).display());
            }
            Ok(())
        }
    }
}

fn secret(command: SecretCommand) -> anyhow::Result<()> {
    use exo_proxy_core::secret;
    match command {
        SecretCommand::Keygen => println!("{}", secret::generate_key()),
        SecretCommand::Encrypt => {
            let key = secret::secrets_key()?;
            let mut plaintext = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut plaintext)
                .context("cannot read standard input")?;
            while plaintext.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                plaintext.pop();
            }
            println!("{}", secret::seal(&plaintext, &key));
        }
    }
    Ok(())
}
