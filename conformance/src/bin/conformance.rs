//! `conformance`: run the ExoFlow behavioural suites against backends or running proxies.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use exo_conformance::{
    Service, Target, kv_cases, object_cases, queue_cases,
    report::{self, Totals},
    run_suite,
    runner::default_report_dir,
};
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
    List {
        /// Only this service's cases.
        #[arg(long, value_enum)]
        service: Option<Service>,
    },
    /// Run the cases.
    Run {
        /// Start a proxy in-process with this backend, for every service that has it
        /// (memory: queue, object and kv; embedded: queue and kv; fs: object; sqs: queue;
        /// s3: object; dynamodb: kv). Cloud backends without --config take their settings
        /// from the AWS environment (AWS_REGION, AWS_ENDPOINT_URL, credentials chain).
        #[arg(long, conflicts_with = "endpoint")]
        backend: Option<String>,
        /// Backend settings: a proxy config file (its `backend:` and `presign:` sections are
        /// used) of `--service`, or of the service `--backend` belongs to.
        #[arg(long, conflicts_with = "endpoint")]
        config: Option<PathBuf>,
        /// Test a running proxy instead, e.g. http://127.0.0.1:7401 (its service is detected).
        #[arg(long)]
        endpoint: Option<String>,
        /// Only this service.
        #[arg(long, value_enum)]
        service: Option<Service>,
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

const SERVICES: [Service; 3] = [Service::Queue, Service::Object, Service::Kv];

/// The one service with a backend named `kind` (cloud backends belong to one service each).
fn service_of(kind: &str) -> anyhow::Result<Service> {
    let mut found = Vec::new();
    if eqs::config::BackendConfig::named(kind, None).is_ok() {
        found.push(Service::Queue);
    }
    if eos::config::BackendConfig::named(kind, None).is_ok() {
        found.push(Service::Object);
    }
    if ekv::config::BackendConfig::named(kind, None).is_ok() {
        found.push(Service::Kv);
    }
    match found.as_slice() {
        [one] => Ok(*one),
        [] => anyhow::bail!("no service has a backend named '{kind}'"),
        _ => anyhow::bail!("backend '{kind}' exists for several services: add --service"),
    }
}

fn targets(
    backend: Option<String>,
    config: Option<PathBuf>,
    endpoint: Option<String>,
    service: Option<Service>,
    scratch: &std::path::Path,
) -> anyhow::Result<Vec<Target>> {
    let wanted = |s: Service| service.is_none_or(|only| only == s);
    if let Some(url) = endpoint {
        return Ok(SERVICES
            .into_iter()
            .filter(|s| wanted(*s))
            .map(|s| Target::Endpoint(s, url.clone()))
            .collect());
    }
    if let Some(path) = config {
        // The service: --service, else the one that has a backend named --backend.
        let service = match (service, &backend) {
            (Some(service), _) => service,
            (None, Some(kind)) => service_of(kind)?,
            (None, None) => {
                anyhow::bail!("--config needs --service or --backend to say which proxy it configures")
            }
        };
        let target = match service {
            Service::Queue => Target::Queue(load_yaml(&path)?, None),
            Service::Kv => Target::Kv(load_yaml(&path)?, None),
            Service::Object => Target::Object(load_yaml(&path)?),
        };
        let configured = match &target {
            Target::Queue(c, _) => c.backend.kind(),
            Target::Kv(c, _) => c.backend.kind(),
            Target::Object(c) => c.backend.kind(),
            Target::Endpoint(..) => "",
        };
        if let Some(kind) = &backend
            && kind != configured
        {
            anyhow::bail!("--backend {kind} but {} configures backend '{configured}'", path.display());
        }
        return Ok(vec![target]);
    }
    let Some(kind) = backend else {
        anyhow::bail!("say what to test: --backend NAME, --config FILE or --endpoint URL");
    };
    let mut found = Vec::new();
    if wanted(Service::Queue)
        && let Ok(backend) = eqs::config::BackendConfig::named(&kind, Some(scratch.join("eqs.db")))
    {
        found.push(Target::Queue(eqs::config::EqsConfig { backend, ..Default::default() }, None));
    }
    if wanted(Service::Object)
        && let Ok(backend) = eos::config::BackendConfig::named(&kind, Some(scratch.join("objects")))
    {
        found.push(Target::Object(eos::config::EosConfig { backend, ..Default::default() }));
    }
    if wanted(Service::Kv)
        && let Ok(backend) = ekv::config::BackendConfig::named(&kind, Some(scratch.join("ekv.db")))
    {
        found.push(Target::Kv(ekv::config::EkvConfig { backend, ..Default::default() }, None));
    }
    if found.is_empty() {
        anyhow::bail!(
            "no service has a backend named '{kind}' (queue: memory, embedded, sqs; object: memory, fs, s3; kv: memory, embedded, dynamodb)"
        );
    }
    Ok(found)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::List { service } => {
            let wanted = |s: Service| service.is_none_or(|only| only == s);
            if wanted(Service::Queue) {
                for case in queue_cases::queue_cases() {
                    let needs =
                        case.needs.map(|c| format!(" [needs {}]", c.as_str_name())).unwrap_or_default();
                    println!("{:<34} {}{needs}", case.name, case.description);
                }
            }
            if wanted(Service::Object) {
                for case in object_cases::object_cases() {
                    let needs =
                        case.needs.map(|c| format!(" [needs {}]", c.as_str_name())).unwrap_or_default();
                    println!("{:<34} {}{needs}", case.name, case.description);
                }
            }
            if wanted(Service::Kv) {
                for case in kv_cases::kv_cases() {
                    let needs =
                        case.needs.map(|c| format!(" [needs {}]", c.as_str_name())).unwrap_or_default();
                    println!("{:<34} {}{needs}", case.name, case.description);
                }
            }
            Ok(())
        }
        Command::Run { backend, config, endpoint, service, filter, parallel, report_dir } => {
            let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
            let detect = endpoint.is_some() && service.is_none();
            let mut totals = Totals::default();
            let mut ran = 0;
            for target in targets(backend, config, endpoint, service, scratch.path())? {
                let service = match &target {
                    Target::Endpoint(s, _) => *s,
                    Target::Queue(..) => Service::Queue,
                    Target::Kv(..) => Service::Kv,
                    Target::Object(..) => Service::Object,
                };
                let (backend, results) = match run_suite(target, &filter, parallel).await {
                    Ok(done) => done,
                    // A proxy serves one service; when detecting, skip the ones it does not serve.
                    Err(_) if detect => {
                        eprintln!("({} not served at this endpoint)", service.name());
                        continue;
                    }
                    Err(err) => return Err(err),
                };
                print!("{}", report::table(&format!("{} / {backend}", service.name()), &results));
                let name = format!("{}-{backend}", service.name());
                report::write_reports(&report_dir, &name, &results)
                    .with_context(|| format!("cannot write reports to {}", report_dir.display()))?;
                let t = report::totals(&results);
                totals.passed += t.passed;
                totals.failed += t.failed;
                totals.unsupported += t.unsupported;
                ran += results.len();
                println!();
            }
            println!("reports: {}", report_dir.display());
            println!("{}", report::summary_line(totals));
            if ran == 0 {
                anyhow::bail!("no case ran (filter {filter:?})");
            }
            if totals.failed > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
