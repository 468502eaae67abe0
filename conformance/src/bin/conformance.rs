//! `conformance`: run the ExoFlow behavioural suite against a backend or a running proxy.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use eqs::config::{BackendConfig, EqsConfig};
use exo_conformance::{Target, cases, report, run_suite, runner::default_report_dir};
use exo_proxy_core::config::load_yaml;

#[derive(Debug, Parser)]
#[command(version, about = "The ExoFlow conformance suite")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the cases.
    List,
    /// Run the cases.
    Run {
        /// Start a proxy in-process with this backend (memory, embedded).
        #[arg(long, conflicts_with = "endpoint")]
        backend: Option<String>,
        /// Backend settings: an eqs-proxy config file (its `backend:` section is used).
        #[arg(long, conflicts_with = "endpoint")]
        config: Option<PathBuf>,
        /// Test a running proxy instead, e.g. http://127.0.0.1:7401.
        #[arg(long)]
        endpoint: Option<String>,
        /// Only cases whose name contains this.
        #[arg(long, default_value = "")]
        filter: String,
        /// Cases run at once.
        #[arg(long, default_value_t = 8)]
        parallel: usize,
        /// Where the JSON and JUnit XML reports go.
        #[arg(long, default_value_os_t = default_report_dir())]
        report_dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::List => {
            for case in cases::queue_cases() {
                let needs = case.needs.map(|c| format!(" [needs {}]", c.as_str_name())).unwrap_or_default();
                println!("{:<34} {}{needs}", case.name, case.description);
            }
            Ok(())
        }
        Command::Run { backend, config, endpoint, filter, parallel, report_dir } => {
            let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
            let target = match (endpoint, backend, config) {
                (Some(url), _, _) => Target::Endpoint(url),
                (None, backend, config) => {
                    let mut eqs = match &config {
                        Some(path) => load_yaml::<EqsConfig>(path)?,
                        None => EqsConfig::default(),
                    };
                    if let Some(kind) = backend {
                        if config.is_none() || eqs.backend.kind() != kind {
                            eqs.backend = BackendConfig::named(&kind, Some(scratch.path().join("eqs.db")))?;
                        }
                    } else if config.is_none() {
                        anyhow::bail!("say what to test: --backend NAME, --config FILE or --endpoint URL");
                    }
                    Target::Config(eqs)
                }
            };
            let (backend, results) = run_suite(target, &filter, parallel).await?;
            print!("{}", report::table(&backend, &results));
            report::write_reports(&report_dir, &backend, &results)
                .with_context(|| format!("cannot write reports to {}", report_dir.display()))?;
            let totals = report::totals(&results);
            println!("reports: {}", report_dir.display());
            println!("{}", report::summary_line(totals));
            if results.is_empty() {
                anyhow::bail!("no case matched --filter {filter:?}");
            }
            if totals.failed > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
