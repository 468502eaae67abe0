//! Runs the cases of one service against a proxy: one started in-process with a chosen backend,
//! or any running proxy by URL.

use std::{
    future::Future,
    path::PathBuf,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use ekv::{EkvProxy, backend::KeyValue, config::EkvConfig};
use eos::{EosProxy, config::EosConfig};
use eqs::{EqsProxy, backend::Queue, config::EqsConfig};
use exo_sdk::{KvClient, ObjectClient, QueueClient, RetryPolicy, TopicClient};
use futures::{StreamExt as _, stream};
use rand::Rng as _;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::{
    Case, CaseFuture, KvCtx, ObjectCtx, QueueCtx, kv_cases, object_cases, push_app::PushApp, queue_cases,
};

/// Longest a single case may run.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(90);

/// How a case ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "result", content = "detail")]
pub enum Outcome {
    /// The behaviour holds.
    Pass,
    /// It does not; the text says how.
    Fail(String),
    /// The backend does not declare the capability and correctly answers UNSUPPORTED.
    Unsupported(String),
    /// Not proven by this run: against an emulator known unable to prove it (see
    /// [`crate::emulators`]), or a case this kind of run cannot set up (see [`crate::not_run`]).
    /// Neither a pass nor a failure; the text says why and what this run saw.
    Unverified(String),
}

/// One case's result.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// Case name.
    pub name: String,
    /// What it checks.
    pub description: String,
    /// Outcome.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Wall time.
    pub millis: u128,
}

/// The services with a suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "lower")]
pub enum Service {
    /// eqs.
    Queue,
    /// ekv.
    Kv,
    /// eos.
    Object,
}

impl Service {
    /// Short name used in report file names.
    pub fn name(self) -> &'static str {
        match self {
            Service::Queue => "queue",
            Service::Kv => "kv",
            Service::Object => "object",
        }
    }
}

/// What to run against.
pub enum Target {
    /// A running proxy of `Service` at a URL.
    Endpoint(Service, String),
    /// An eqs proxy started in-process (listen address replaced by an ephemeral loopback port),
    /// optionally around an already opened backend.
    Queue(Box<EqsConfig>, Option<Arc<dyn Queue>>),
    /// An ekv proxy started in-process.
    Kv(EkvConfig, Option<Arc<dyn KeyValue>>),
    /// An eos proxy started in-process.
    Object(EosConfig),
}

/// A proxy started for the run.
struct InProcess {
    url: String,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl InProcess {
    /// Serves `proxy` (already bound) on a task until stopped.
    fn start<P: exo_proxy_core::cli::Proxy>(proxy: P) -> anyhow::Result<Self> {
        let url = format!("http://{}", proxy.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stopped = async move {
                let _ = stopped.await;
            };
            if let Err(err) = proxy.serve(stopped).await {
                eprintln!("in-process proxy failed: {err}");
            }
        });
        Ok(Self { url, stop, task })
    }

    async fn stop(mut self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
    }
}

fn ephemeral(server: &mut exo_proxy_core::config::ServerConfig) -> anyhow::Result<()> {
    server.listen = "127.0.0.1:0".parse()?;
    server.shutdown_grace = Duration::from_secs(1);
    Ok(())
}

/// A started target: its service, URL, the in-process proxy to stop, the push endpoint.
type Started = (Service, String, Option<InProcess>, Option<PushApp>);

async fn start(target: Target, id: &str) -> anyhow::Result<Started> {
    match target {
        Target::Endpoint(service, url) => Ok((service, url.trim_end_matches('/').to_owned(), None, None)),
        Target::Queue(mut config, backend) => {
            ephemeral(&mut config.server)?;
            config.validate()?;
            let backend = match backend {
                Some(backend) => backend,
                None => {
                    eqs::open_backend(
                        &config.backend,
                        config.server.request_timeout,
                        exo_proxy_core::metrics::Metrics::shared(),
                    )
                    .await?
                }
            };
            // The push cases' topic, declared like an app's: only a proxy started here can have it.
            let push = if backend.descriptor().require(eqs::model::Capability::Topics, "topics").is_ok() {
                let app = PushApp::start(&format!("cf{id}-push")).await?;
                config.topics.push(app.declare(&*backend).await?);
                Some(app)
            } else {
                None
            };
            let server = InProcess::start(EqsProxy::bind_with(&config, backend).await?)?;
            Ok((Service::Queue, server.url.clone(), Some(server), push))
        }
        Target::Kv(mut config, backend) => {
            ephemeral(&mut config.server)?;
            let proxy = match backend {
                Some(backend) => EkvProxy::bind_with(&config, backend).await?,
                None => EkvProxy::bind(&config).await?,
            };
            let server = InProcess::start(proxy)?;
            Ok((Service::Kv, server.url.clone(), Some(server), None))
        }
        Target::Object(mut config) => {
            ephemeral(&mut config.server)?;
            let server = InProcess::start(EosProxy::bind(&config).await?)?;
            Ok((Service::Object, server.url.clone(), Some(server), None))
        }
    }
}

fn run_id() -> String {
    let mut rng = rand::rng();
    (0..6).map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)])).collect()
}

/// Runs every case of the target's service whose name contains `filter`, `parallel` at a time.
/// Returns the backend's name and the results in suite order.
pub async fn run_suite(
    target: Target,
    filter: &str,
    parallel: usize,
) -> anyhow::Result<(String, Vec<CaseResult>)> {
    let id = run_id();
    let (service, url, server, push) = start(target, &id).await?;
    // Each service: its client, its context, its cases, its capability probes.
    macro_rules! suite {
        ($client:ty, $ctx:ident, $cases:expr, $probe:path, $what:literal $(, $field:ident: $value:expr)*) => {{
            let client = <$client>::connect(&url)?.with_retry(RetryPolicy::none());
            let backend = client
                .describe()
                .await
                .map_err(|e| anyhow::anyhow!("cannot describe {} at {url}: {e}", $what))?;
            let declared = backend.capabilities.clone();
            let ctx = |index: usize| $ctx {
                client: client.clone(),
                backend: backend.clone(),
                http_base: url.clone(),
                prefix: format!("cf{id}-{index}"),
                $($field: $value.clone(),)*
            };
            let probe = |ctx: $ctx, cap| -> CaseFuture { Box::pin(async move { $probe(&ctx, cap).await }) };
            let results =
                run_cases($cases, filter, parallel, ctx, |cap| declared.contains(&(cap as i32)), probe).await;
            (backend.backend.clone(), results)
        }};
    }
    let outcome = match service {
        Service::Queue => {
            let topics = TopicClient::connect(&url)?.with_retry(RetryPolicy::none());
            suite!(
                QueueClient,
                QueueCtx,
                queue_cases::queue_cases(),
                queue_cases::probe_unsupported,
                "eqs",
                topics: topics,
                push: push
            )
        }
        Service::Kv => suite!(KvClient, KvCtx, kv_cases::kv_cases(), kv_cases::probe_unsupported, "ekv"),
        Service::Object => {
            suite!(
                ObjectClient,
                ObjectCtx,
                object_cases::object_cases(),
                object_cases::probe_unsupported,
                "eos"
            )
        }
    };
    if let Some(server) = server {
        server.stop().await;
    }
    Ok(outcome)
}

async fn run_cases<C, K>(
    cases: Vec<Case<C, K>>,
    filter: &str,
    parallel: usize,
    make_ctx: impl Fn(usize) -> C,
    declared: impl Fn(K) -> bool,
    probe: impl Fn(C, K) -> CaseFuture,
) -> Vec<CaseResult>
where
    C: Send + 'static,
    K: Copy + std::fmt::Debug + AsStrName + Send + 'static,
{
    let selected: Vec<_> = cases.iter().copied().filter(|c| c.name.contains(filter)).enumerate().collect();
    let futures = selected.into_iter().map(|(index, case)| {
        let ctx = make_ctx(index);
        let started = Instant::now();
        let body: Pin<Box<dyn Future<Output = Outcome> + Send>> = match case.needs {
            Some(cap) if !declared(cap) => {
                let probe = probe(ctx, cap);
                let name = cap.as_str_name();
                Box::pin(async move {
                    match probe.await {
                        Ok(()) => Outcome::Unsupported(format!(
                            "{name} not declared; the probe confirms it is not offered"
                        )),
                        Err(why) => Outcome::Fail(why),
                    }
                })
            }
            _ => {
                let run = (case.run)(ctx);
                Box::pin(async move {
                    match run.await {
                        Ok(()) => Outcome::Pass,
                        Err(why) => match why.strip_prefix(crate::NOT_RUN) {
                            Some(why) => Outcome::Unverified(why.to_owned()),
                            None => Outcome::Fail(why),
                        },
                    }
                })
            }
        };
        async move {
            let outcome = tokio::time::timeout(CASE_TIMEOUT, body)
                .await
                .unwrap_or_else(|_| Outcome::Fail(format!("timed out after {CASE_TIMEOUT:?}")));
            CaseResult {
                name: case.name.to_owned(),
                description: case.description.to_owned(),
                outcome,
                millis: started.elapsed().as_millis(),
            }
        }
    });
    let mut results: Vec<CaseResult> =
        stream::iter(futures).buffer_unordered(parallel.max(1)).collect().await;
    let order: Vec<&str> = cases.iter().map(|c| c.name).collect();
    results.sort_by_key(|r| order.iter().position(|n| *n == r.name));
    results
}

/// Capability enums name themselves.
pub trait AsStrName {
    /// The proto enum value name.
    fn as_str_name(&self) -> &'static str;
}

impl AsStrName for exo_sdk::QueueCapability {
    fn as_str_name(&self) -> &'static str {
        exo_sdk::QueueCapability::as_str_name(self)
    }
}

impl AsStrName for exo_sdk::ObjectCapability {
    fn as_str_name(&self) -> &'static str {
        exo_sdk::ObjectCapability::as_str_name(self)
    }
}

impl AsStrName for exo_sdk::KvCapability {
    fn as_str_name(&self) -> &'static str {
        exo_sdk::KvCapability::as_str_name(self)
    }
}

/// Where reports go unless told otherwise.
pub fn default_report_dir() -> PathBuf {
    PathBuf::from("reports/conformance")
}
