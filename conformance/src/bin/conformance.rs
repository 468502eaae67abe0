//! `conformance`: run the ExoFlow behavioural suites against backends or running proxies.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use exo_conformance::{
    Service, Target,
    backends::{SERVICES, kinds, known_backends, provider_kind, providers},
    kv_cases, object_cases, queue_cases,
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
        /// A provider (e.g. local, aws, azure) runs every service it offers; a backend name runs
        /// every service that has it (`conformance list-backends` lists both). Without
        /// --config, AWS settings come from the AWS environment (AWS_REGION, AWS_ENDPOINT_URL,
        /// the credentials chain), Azure's from AZURE_STORAGE_CONNECTION_STRING or
        /// AZURE_STORAGE_ACCOUNT + AZURE_STORAGE_KEY.
        #[arg(long, conflicts_with = "endpoint")]
        backend: Option<String>,
        /// Backend settings: a proxy config file (its `backend:` and `presign:` sections are
        /// used); repeat it for a provider (one file per service, told apart by backend kind).
        #[arg(long, conflicts_with = "endpoint")]
        config: Vec<PathBuf>,
        /// Test a running proxy instead, e.g. http://127.0.0.1:7401 (its service is detected).
        #[arg(long)]
        endpoint: Option<String>,
        /// Only this service.
        #[arg(long, value_enum)]
        service: Option<Service>,
        /// Only cases whose name contains this.
        #[arg(long, default_value = "")]
        filter: String,
        /// Cases run at once (per service).
        #[arg(long, default_value_t = 8)]
        parallel: usize,
        /// Where the JSON and JUnit XML reports go.
        #[arg(long, default_value_os_t = default_report_dir())]
        report_dir: PathBuf,
        /// The backend is an emulator: the cases it is known unable to prove (see
        /// `conformance/src/emulators.rs`) are reported as unverified, never as passed.
        #[arg(long, value_enum)]
        emulator: Option<exo_conformance::emulators::Emulator>,
    },
    /// Try a rendered Kubernetes workload's probes (startup, readiness, liveness: httpGet,
    /// tcpSocket, grpc) against its running pod, as the kubelet would; for runtimes that do not
    /// act on them (`podman kube play`). The pod's ports must be reachable on --host.
    Probes {
        /// The rendered file (e.g. k8s/deployment.yaml).
        file: PathBuf,
        /// Where the pod's ports are reachable.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Longest wait for any one probe, in seconds (a probe's own thresholds may be shorter).
        #[arg(long, default_value_t = 60)]
        max_wait: u64,
    },
    /// List the providers and the backends of each service.
    ListBackends {
        /// Print the docs table (the README's generated section) instead.
        #[arg(long)]
        markdown: bool,
    },
}

/// The one service with a backend named `kind` (cloud backends belong to one service each).
fn service_of(kind: &str) -> anyhow::Result<Service> {
    let found: Vec<Service> = SERVICES.into_iter().filter(|s| kinds(*s).contains(&kind)).collect();
    match found.as_slice() {
        [one] => Ok(*one),
        [] if kind == "failover" => anyhow::bail!("a failover chain serves any service: add --service"),
        [] => anyhow::bail!("no service has a backend named '{kind}' ({})", known_backends()),
        _ => anyhow::bail!("backend '{kind}' exists for several services: add --service"),
    }
}

/// Azure settings from the environment, as the Azure CLI and SDKs read them.
fn azure_from_env() -> anyhow::Result<exo_azure::AzureSettings> {
    use exo_proxy_core::secret::SecretRef;
    let mut settings = exo_azure::AzureSettings::default();
    if std::env::var_os("AZURE_STORAGE_CONNECTION_STRING").is_some() {
        settings
            .credentials
            .insert("connection-string".into(), SecretRef::Env("AZURE_STORAGE_CONNECTION_STRING".into()));
    } else if let (Ok(account), true) =
        (std::env::var("AZURE_STORAGE_ACCOUNT"), std::env::var_os("AZURE_STORAGE_KEY").is_some())
    {
        settings.account = account;
        settings.credentials.insert("account-key".into(), SecretRef::Env("AZURE_STORAGE_KEY".into()));
    } else {
        anyhow::bail!(
            "Azure backends need AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT and \
             AZURE_STORAGE_KEY, or --config"
        );
    }
    Ok(settings)
}

/// The settings of a backend named on the command line: defaults, except that Azure backends read
/// their account from the environment (as the Azure CLI and SDKs do).
fn named_backend<B: serde::de::DeserializeOwned>(
    service: Service,
    kind: &str,
    defaults: Result<B, exo_proxy_core::config::ConfigError>,
) -> anyhow::Result<Option<B>> {
    let Ok(defaults) = defaults else { return Ok(None) };
    let from_azure =
        exo_conformance::backends::entries(service).iter().any(|e| e.kind == kind && e.provider == "azure");
    if !from_azure {
        return Ok(Some(defaults));
    }
    let mut section = serde_json::to_value(azure_from_env()?)?;
    if let Some(map) = section.as_object_mut() {
        map.insert("kind".into(), kind.into());
    }
    Ok(Some(serde_json::from_value(section)?))
}

/// An in-process target for `service` on backend `kind` with default settings (Azure's from
/// the environment); `None` if the service has no such backend.
fn named_target(service: Service, kind: &str, scratch: &std::path::Path) -> anyhow::Result<Option<Target>> {
    use {
        ekv::config::BackendConfig as Kv, eos::config::BackendConfig as Object,
        eqs::config::BackendConfig as Queue,
    };
    Ok(match service {
        Service::Queue => named_backend(service, kind, Queue::named(kind, Some(scratch.join("eqs.db"))))?
            .map(|backend| {
                Target::Queue(Box::new(eqs::config::EqsConfig { backend, ..Default::default() }), None)
            }),
        Service::Object => named_backend(service, kind, Object::named(kind, Some(scratch.join("objects"))))?
            .map(|backend| Target::Object(eos::config::EosConfig { backend, ..Default::default() })),
        Service::Kv => named_backend(service, kind, Kv::named(kind, Some(scratch.join("ekv.db"))))?
            .map(|backend| Target::Kv(ekv::config::EkvConfig { backend, ..Default::default() }, None)),
    })
}

/// The backend kind a proxy config file names.
fn configured_kind(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).with_context(|| format!("{} is not YAML", path.display()))?;
    value["backend"]["kind"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{} has no backend.kind", path.display()))
}

fn targets(
    backend: Option<String>,
    configs: Vec<PathBuf>,
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
    let provider = backend.as_deref().filter(|b| providers().contains(b));
    let expected = |s: Service| -> Option<&str> {
        match provider {
            Some(provider) => provider_kind(provider, s),
            None => backend.as_deref(),
        }
    };
    if !configs.is_empty() {
        if configs.len() > 1 && service.is_some() {
            anyhow::bail!("--service goes with one --config");
        }
        let mut found = Vec::new();
        for path in &configs {
            let kind = configured_kind(path)?;
            // The service: --service, else the one that has the file's backend kind.
            let of = match service {
                Some(service) => service,
                None => service_of(&kind)?,
            };
            if let Some(want) = expected(of)
                && want != kind
            {
                anyhow::bail!(
                    "--backend {} wants {want} for {}, but {} configures '{kind}'",
                    backend.as_deref().unwrap_or(""),
                    of.name(),
                    path.display()
                );
            }
            found.push(match of {
                Service::Queue => Target::Queue(Box::new(load_yaml(path)?), None),
                Service::Kv => Target::Kv(load_yaml(path)?, None),
                Service::Object => Target::Object(load_yaml(path)?),
            });
        }
        return Ok(found);
    }
    let Some(kind) = backend.as_deref() else {
        anyhow::bail!(
            "say what to test: --backend NAME, --config FILE or --endpoint URL ({})",
            known_backends()
        );
    };
    let mut found = Vec::new();
    for s in SERVICES.into_iter().filter(|s| wanted(*s)) {
        let kind = expected(s).unwrap_or(kind);
        if let Some(target) = named_target(s, kind, scratch)? {
            found.push(target);
        }
    }
    if found.is_empty() {
        anyhow::bail!("no service has a backend named '{kind}' ({})", known_backends());
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
        Command::Probes { file, host, max_wait } => {
            let yaml =
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let probes = exo_conformance::probes::read_probes(&yaml)?;
            println!("probes of {} against {host}", file.display());
            exo_conformance::probes::check_all(&host, &probes, std::time::Duration::from_secs(max_wait))
                .await?;
            println!("every probe succeeded");
            Ok(())
        }
        Command::ListBackends { markdown: true } => {
            println!("{}", exo_conformance::backends::BEGIN);
            print!("{}", exo_conformance::backends::markdown_table());
            println!("{}", exo_conformance::backends::END);
            Ok(())
        }
        Command::ListBackends { markdown: false } => {
            for provider in providers() {
                let offered: Vec<String> = SERVICES
                    .iter()
                    .filter_map(|s| provider_kind(provider, *s).map(|k| format!("{}={k}", s.name())))
                    .collect();
                println!("{provider:<8} {}", offered.join(" "));
            }
            for service in SERVICES {
                println!("{:<8} {}", service.name(), kinds(service).join(", "));
            }
            Ok(())
        }
        Command::Run { backend, config, endpoint, service, filter, parallel, report_dir, emulator } => {
            let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
            let detect = endpoint.is_some() && service.is_none();
            let mut totals = Totals::default();
            let mut ran = 0;
            // The services' suites run at once (each waits mostly on its backend); reports
            // print in service order.
            let runs =
                targets(backend, config, endpoint, service, scratch.path())?.into_iter().map(|target| {
                    let service = match &target {
                        Target::Endpoint(s, _) => *s,
                        Target::Queue(..) => Service::Queue,
                        Target::Kv(..) => Service::Kv,
                        Target::Object(..) => Service::Object,
                    };
                    let filter = filter.clone();
                    async move { (service, run_suite(target, &filter, parallel).await) }
                });
            for (service, outcome) in futures::future::join_all(runs).await {
                let (backend, mut results) = match outcome {
                    Ok(done) => done,
                    // A proxy serves one service; when detecting, skip the ones it does not serve.
                    Err(_) if detect => {
                        eprintln!("({} not served at this endpoint)", service.name());
                        continue;
                    }
                    Err(err) => return Err(err),
                };
                exo_conformance::emulators::mark_unverified(emulator, &backend, &mut results);
                print!("{}", report::table(&format!("{} / {backend}", service.name()), &results));
                let name = format!("{}-{backend}", service.name());
                report::write_reports(&report_dir, &name, &results)
                    .with_context(|| format!("cannot write reports to {}", report_dir.display()))?;
                let t = report::totals(&results);
                totals.passed += t.passed;
                totals.failed += t.failed;
                totals.unsupported += t.unsupported;
                totals.unverified += t.unverified;
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
