//! Runs the cases against a proxy: one started in-process with a chosen backend, or any
//! running proxy by URL.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use eqs::{EqsProxy, backend::Queue, config::EqsConfig};
use exo_sdk::{QueueClient, RetryPolicy};
use futures::{StreamExt as _, stream};
use rand::Rng as _;
use serde::Serialize;
use tokio::{net::TcpListener, sync::oneshot};

use crate::{Case, Ctx, cases};

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

/// What to run against.
pub enum Target {
    /// A running proxy.
    Endpoint(String),
    /// A proxy started in-process with this configuration (listen address is replaced by an
    /// ephemeral loopback port).
    Config(EqsConfig),
    /// A proxy started in-process around an already opened backend (tests use this to wrap a
    /// backend, e.g. to hide a capability).
    Backend(EqsConfig, Arc<dyn Queue>),
}

/// A proxy started for the run; stops when dropped.
struct InProcess {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl InProcess {
    async fn start(mut config: EqsConfig, backend: Option<Arc<dyn Queue>>) -> anyhow::Result<Self> {
        config.server.listen = "127.0.0.1:0".parse()?;
        config.server.shutdown_grace = Duration::from_secs(1);
        let proxy = match backend {
            Some(backend) => EqsProxy::with_backend(&config, backend),
            None => EqsProxy::new(&config)?,
        };
        let listener: TcpListener = proxy.bind().await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            if let Err(err) = proxy
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await
            {
                eprintln!("in-process proxy failed: {err}");
            }
        });
        Ok(Self { url, stop: Some(stop), task })
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
    }
}

/// Runs every case whose name contains `filter` (all if empty), `parallel` at a time.
pub async fn run_suite(
    target: Target,
    filter: &str,
    parallel: usize,
) -> anyhow::Result<(String, Vec<CaseResult>)> {
    let (url, server) = match target {
        Target::Endpoint(url) => (url.trim_end_matches('/').to_owned(), None),
        Target::Config(config) => {
            let server = InProcess::start(config, None).await?;
            (server.url.clone(), Some(server))
        }
        Target::Backend(config, backend) => {
            let server = InProcess::start(config, Some(backend)).await?;
            (server.url.clone(), Some(server))
        }
    };
    let client = QueueClient::connect(&url)?.with_retry(RetryPolicy::none());
    let backend =
        client.describe().await.map_err(|e| anyhow::anyhow!("cannot describe proxy at {url}: {e}"))?;
    let run_id: String = {
        let mut rng = rand::rng();
        (0..6).map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)])).collect()
    };
    let selected: Vec<(usize, Case)> =
        cases::queue_cases().into_iter().filter(|c| c.name.contains(filter)).enumerate().collect();
    let results = stream::iter(selected)
        .map(|(index, case)| {
            let ctx = Ctx {
                client: client.clone(),
                backend: backend.clone(),
                http_base: url.clone(),
                prefix: format!("cf{run_id}-{index}"),
            };
            run_case(case, ctx)
        })
        .buffer_unordered(parallel.max(1))
        .collect::<Vec<_>>()
        .await;
    let mut results = results;
    let order: Vec<&str> = cases::queue_cases().iter().map(|c| c.name).collect();
    results.sort_by_key(|r| order.iter().position(|n| *n == r.name));
    if let Some(server) = server {
        server.stop().await;
    }
    Ok((backend.backend, results))
}

async fn run_case(case: Case, ctx: Ctx) -> CaseResult {
    let started = Instant::now();
    let declared = case.needs.is_none_or(|cap| ctx.backend.capabilities.contains(&(cap as i32)));
    let outcome = if declared {
        match tokio::time::timeout(CASE_TIMEOUT, (case.run)(ctx)).await {
            Ok(Ok(())) => Outcome::Pass,
            Ok(Err(why)) => Outcome::Fail(why),
            Err(_) => Outcome::Fail(format!("timed out after {CASE_TIMEOUT:?}")),
        }
    } else {
        let capability = case.needs.unwrap_or_default();
        match cases::probe_unsupported(&ctx, capability).await {
            Ok(()) => Outcome::Unsupported(format!(
                "{} not declared; calls answer UNSUPPORTED",
                capability.as_str_name()
            )),
            Err(why) => Outcome::Fail(why),
        }
    };
    CaseResult {
        name: case.name.to_owned(),
        description: case.description.to_owned(),
        outcome,
        millis: started.elapsed().as_millis(),
    }
}

/// Where reports go unless told otherwise.
pub fn default_report_dir() -> PathBuf {
    PathBuf::from("reports/conformance")
}
