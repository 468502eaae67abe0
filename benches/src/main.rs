//! `exo-bench`: what does the sidecar cost?
//!
//! `exo-bench queue` drives send → receive → ack cycles twice in one run: through the SDK and
//! a real `eqs-proxy` process over loopback, and directly on the same kind of backend
//! in-process. It prints ops/s, latency percentiles per call, the via-proxy/direct ratios, the
//! proxy's CPU per operation and memory (from /proc), cold start and binary size.
//!
//! Build in release for meaningful numbers: `cargo build --release -p eqs -p exo-bench`.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

mod floors;
mod kv;
mod layers;
mod object;
mod soak;
mod topic;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use eqs::{
    backend::Queue,
    config::BackendConfig,
    model::{QueueName, ReceiveParams},
};
use exo_proto::queue::v1 as pb;
use exo_sdk::{QueueClient, QueueOptions, Receive, RetryPolicy};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
};

#[derive(Debug, Parser)]
#[command(version, about = "Proxy cost against direct backend calls")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// send → receive → ack cycles via eqs-proxy and directly.
    Queue(QueueArgs),
    /// Object put/get throughput via eos-proxy and directly on the same backend.
    Object(object::ObjectArgs),
    /// Key-value put/get latency and throughput via ekv-proxy and directly.
    Kv(kv::KvArgs),
    /// Topic publish throughput and publish → receive latency with 1, 3, 10 subscriptions.
    Topic(topic::TopicArgs),
    /// A mixed load on all three proxies for minutes, failing on errors or RSS / descriptor growth.
    Soak(soak::SoakArgs),
    /// The cost per call of each layer of the standard stack when the backend answers at once.
    Layers(layers::LayersArgs),
}

#[derive(Debug, Clone, clap::Args)]
struct QueueArgs {
    /// Backend: memory or embedded (cloud backends: see --config).
    #[arg(long, default_value = "memory")]
    backend: String,
    /// Cycles per measured phase.
    #[arg(long, default_value_t = 5000)]
    cycles: usize,
    /// Concurrent workers in the throughput phase.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// Requests per second for the paced memory measurement.
    #[arg(long, default_value_t = 1000)]
    paced_rps: u32,
    /// The eqs-proxy binary (default: next to this executable).
    #[arg(long)]
    proxy_bin: Option<PathBuf>,
    /// A proxy config file (cloud backends): the proxy runs with it and the direct backend is
    /// opened from its `backend:` section, so both reach the same service the same way.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Serve TLS (a throw-away CA, a certificate for localhost) and call over `https://`: what
    /// TLS costs per call, against the same floors. Local backends only.
    #[arg(long, conflicts_with = "config")]
    tls: bool,
    /// The proxy also serves a Unix socket and the SDK calls it at `unix:PATH` (a sidecar in
    /// the same pod): what the TCP stack costs, against a raw Unix socket round trip as well.
    #[arg(long, conflicts_with_all = ["tls", "hop"])]
    unix: bool,
    /// Also call through an edge eqs-proxy (`kind: remote`) forwarding to the measured proxy
    /// (over TLS with `--tls`): what one forwarding hop adds, in the same run.
    #[arg(long)]
    hop: bool,
}

/// Latencies of one kind of call.
#[derive(Debug, Default, Clone)]
struct Samples(Vec<Duration>);

impl Samples {
    fn percentile(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let index = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
        sorted[index.min(sorted.len() - 1)]
    }
}

#[derive(Debug, Default, Clone)]
struct Phase {
    send: Samples,
    receive: Samples,
    ack: Samples,
    ops: usize,
    elapsed: Duration,
}

impl Phase {
    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    fn merge(&mut self, other: Phase) {
        self.send.0.extend(other.send.0);
        self.receive.0.extend(other.receive.0);
        self.ack.0.extend(other.ack.0);
        self.ops += other.ops;
    }
}

/// The three calls of a cycle, via SDK or direct.
trait Cycle: Clone + Send + Sync + 'static {
    fn cycle(
        &self,
        queue: &str,
        body: &[u8],
        phase: &mut Phase,
    ) -> impl std::future::Future<Output = anyhow::Result<()>> + Send;

    /// Sends `count` messages in one batch call.
    fn send_batch(
        &self,
        queue: &str,
        body: &[u8],
        count: usize,
    ) -> impl std::future::Future<Output = anyhow::Result<()>> + Send;
}

#[derive(Clone)]
struct ViaProxy(QueueClient);

impl Cycle for ViaProxy {
    async fn cycle(&self, queue: &str, body: &[u8], phase: &mut Phase) -> anyhow::Result<()> {
        let t = Instant::now();
        self.0.send(queue, body.to_vec()).await?;
        phase.send.0.push(t.elapsed());
        let t = Instant::now();
        let messages = self.0.receive(queue, Receive::up_to(1).visibility(Duration::from_secs(60))).await?;
        phase.receive.0.push(t.elapsed());
        let Some(message) = messages.into_iter().next() else { bail!("receive returned nothing") };
        let t = Instant::now();
        self.0.ack(queue, &message.receipt).await?;
        phase.ack.0.push(t.elapsed());
        phase.ops += 3;
        Ok(())
    }

    async fn send_batch(&self, queue: &str, body: &[u8], count: usize) -> anyhow::Result<()> {
        let messages = vec![exo_sdk::Outgoing::new(body.to_vec()); count];
        for result in self.0.send_batch(queue, messages).await? {
            result?;
        }
        Ok(())
    }
}

#[derive(Clone)]
struct Direct(Arc<dyn Queue>);

impl Cycle for Direct {
    async fn cycle(&self, queue: &str, body: &[u8], phase: &mut Phase) -> anyhow::Result<()> {
        let name = QueueName::parse("queue", queue, "queue")?;
        let t = Instant::now();
        let message = pb::OutgoingMessage { body: body.to_vec(), ..Default::default() };
        self.0.send(eqs::ops::Send { queue: &name, messages: vec![message] }).await?;
        phase.send.0.push(t.elapsed());
        let t = Instant::now();
        let params = ReceiveParams { max_messages: 1, wait: Duration::ZERO, visibility_seconds: Some(60) };
        let messages = self.0.receive(eqs::ops::Receive { queue: &name, params }).await?;
        phase.receive.0.push(t.elapsed());
        let Some(message) = messages.into_iter().next() else { bail!("receive returned nothing") };
        let t = Instant::now();
        self.0.ack(eqs::ops::Ack { queue: &name, receipt: &message.receipt }).await?;
        phase.ack.0.push(t.elapsed());
        phase.ops += 3;
        Ok(())
    }

    async fn send_batch(&self, queue: &str, body: &[u8], count: usize) -> anyhow::Result<()> {
        let name = QueueName::parse("queue", queue, "queue")?;
        let message = pb::OutgoingMessage { body: body.to_vec(), ..Default::default() };
        for result in self.0.send(eqs::ops::Send { queue: &name, messages: vec![message; count] }).await? {
            result?;
        }
        Ok(())
    }
}

/// Runs `cycles` cycles over `workers` workers, each on its own queue (so receives see only
/// their own sends).
async fn run_phase<C: Cycle>(
    driver: &C,
    queues: &[String],
    cycles: usize,
    body: &[u8],
) -> anyhow::Result<Phase> {
    let per_worker = cycles / queues.len();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    // On the current-thread runtime these are interleaved, not parallel: "workers" are
    // concurrent requests in flight, as an async app would have.
    for queue in queues {
        let queue = queue.clone();
        let driver = driver.clone();
        let body = body.to_vec();
        tasks.spawn(async move {
            let mut phase = Phase::default();
            for _ in 0..per_worker {
                driver.cycle(&queue, &body, &mut phase).await?;
            }
            Ok::<_, anyhow::Error>(phase)
        });
    }
    let mut total = Phase::default();
    while let Some(result) = tasks.join_next().await {
        total.merge(result??);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

/// Messages per second sent in batches of `batch`, `queues.len()` batch calls in flight (one
/// worker per queue), about `messages` in all; and how many were sent.
async fn run_batches<C: Cycle>(
    driver: &C,
    queues: &[String],
    messages: usize,
    batch: usize,
    body: &[u8],
) -> anyhow::Result<(f64, usize)> {
    let calls_per_worker = (messages / batch / queues.len()).max(1);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for queue in queues {
        let (queue, driver, body) = (queue.clone(), driver.clone(), body.to_vec());
        tasks.spawn(async move {
            for _ in 0..calls_per_worker {
                driver.send_batch(&queue, &body, batch).await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let sent = calls_per_worker * batch * queues.len();
    Ok((sent as f64 / started.elapsed().as_secs_f64(), sent))
}

/// Paced cycles at `rps` requests per second for `duration`.
async fn run_paced(
    driver: &ViaProxy,
    queue: &str,
    rps: u32,
    duration: Duration,
    body: &[u8],
) -> anyhow::Result<()> {
    let cycle_interval = Duration::from_secs_f64(3.0 / f64::from(rps.max(3)));
    let mut ticker = tokio::time::interval(cycle_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let until = Instant::now() + duration;
    let mut phase = Phase::default();
    while Instant::now() < until {
        ticker.tick().await;
        driver.cycle(queue, body, &mut phase).await?;
    }
    Ok(())
}

struct ProxyProcess {
    child: Child,
    pid: u32,
    url: String,
    cold_start: Duration,
}

async fn spawn_proxy(
    bin: &Path,
    args: &QueueArgs,
    tls: Option<&ServerTls>,
    db: &Path,
) -> anyhow::Result<ProxyProcess> {
    let config = tls.map(|t| t.config.as_path()).or(args.config.as_deref());
    let mut backend = backend_args(&args.backend, config, "--db");
    if args.unix {
        backend.splice(0..0, ["--unix-socket".to_owned(), db.with_extension("sock").display().to_string()]);
    }
    let backend: Vec<&str> = backend.iter().map(String::as_str).collect();
    // Over TLS the plain-HTTP probe cannot ask: ready is the proxy's own "ready" line.
    spawn_any_proxy_probing(bin, &backend, db, "eqs-proxy ready", tls.is_none()).await
}

/// A throw-away CA and a certificate for `localhost` (rcgen), and a proxy config serving TLS with
/// them over `backend`: what `--tls` measures with.
struct ServerTls {
    ca_file: PathBuf,
    config: PathBuf,
}

impl ServerTls {
    fn new(dir: &Path, backend: &str) -> anyhow::Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
        let key = KeyPair::generate()?;
        let cert = CertificateParams::new(vec!["localhost".to_owned()])?.signed_by(&key, &*issuer)?;
        let (ca_file, cert_file, key_file) =
            (dir.join("ca.pem"), dir.join("proxy.pem"), dir.join("proxy.key"));
        std::fs::write(&ca_file, issuer.pem())?;
        std::fs::write(&cert_file, cert.pem())?;
        std::fs::write(&key_file, key.serialize_pem())?;
        let config = dir.join("tls.yaml");
        std::fs::write(
            &config,
            format!(
                "server:\n  tls:\n    cert-file: {}\n    key-file: {}\nbackend:\n  kind: {backend}\n",
                cert_file.display(),
                key_file.display()
            ),
        )?;
        Ok(Self { ca_file, config })
    }
}

/// Flags selecting the proxy's backend: its config file, or a local backend by name; `data`
/// is the flag naming the local backend's file or directory (ignored by cloud backends).
pub(crate) fn backend_args(backend: &str, config: Option<&Path>, data: &str) -> Vec<String> {
    match config {
        Some(file) => vec!["--config".into(), file.display().to_string(), data.into()],
        None => vec!["--backend".into(), backend.into(), data.into()],
    }
}

/// Starts a proxy binary on an ephemeral port with `args` + `data` and waits until it logs
/// `ready` and answers `/readyz`.
async fn spawn_any_proxy(
    bin: &Path,
    args: &[&str],
    data: &Path,
    ready: &str,
) -> anyhow::Result<ProxyProcess> {
    spawn_any_proxy_probing(bin, args, data, ready, true).await
}

/// [`spawn_any_proxy`]; `probe_http`: also wait for `/readyz` over plain HTTP.
async fn spawn_any_proxy_probing(
    bin: &Path,
    args: &[&str],
    data: &Path,
    ready: &str,
    probe_http: bool,
) -> anyhow::Result<ProxyProcess> {
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(args)
        .arg(data)
        .env("RUST_LOG", "warn,exo_proxy_core::cli=info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let pid = child.id().context("proxy has no pid")?;
    let mut lines = BufReader::new(child.stderr.take().context("no stderr")?).lines();
    let mut addr = None;
    while let Some(line) = lines.next_line().await? {
        if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
            && event["message"] == ready
        {
            addr = event["addr"].as_str().map(str::to_owned);
            break;
        }
    }
    let addr = addr.context("proxy exited before it was ready")?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let url = format!("http://{addr}");
    let http = reqwest::Client::new();
    if probe_http {
        loop {
            if let Ok(response) = http.get(format!("{url}/readyz")).send().await
                && response.status().is_success()
            {
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("proxy not ready after 10 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Ok(ProxyProcess { child, pid, url, cold_start: started.elapsed() })
}

/// (user + system) CPU time of a process.
fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("bad /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(Duration::from_secs_f64((utime + stime) as f64 / ticks))
}

fn self_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec * 1000) as u32);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// VmRSS and VmHWM (peak) in KiB.
fn memory_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Option<u64> {
        status.lines().find(|l| l.starts_with(name))?.split_whitespace().nth(1)?.parse().ok()
    };
    Ok((field("VmRSS:").context("no VmRSS")?, field("VmHWM:").context("no VmHWM")?))
}

/// Each call via the proxy as a multiple of the raw TCP round trip (p50 against p50, p99
/// against p99), and the bare tonic echo's for comparison: how far the SDK call is from the
/// floor, whatever the machine's speed at that moment.
/// Each call's p50 and p99 as multiples of the raw TCP round trip's (and of the raw Unix
/// socket's, when the calls went over one).
pub(crate) fn floor_ratios(
    tcp: &Samples,
    unix: Option<&Samples>,
    bare: &[(&str, &Samples)],
    calls: &[(&str, &Samples)],
) {
    let ratio = |a: &Samples, b: &Samples, p: f64| {
        a.percentile(p).as_secs_f64() / b.percentile(p).as_secs_f64().max(1e-9)
    };
    match unix {
        Some(_) => {
            println!(
                "| call (one in flight) | p50 ÷ raw TCP p50 | p99 ÷ raw TCP p99 | p50 ÷ raw Unix p50 | p99 ÷ raw Unix p99 |"
            );
            println!("|---|---|---|---|---|");
        }
        None => {
            println!("| call (one in flight) | p50 ÷ raw TCP p50 | p99 ÷ raw TCP p99 |");
            println!("|---|---|---|");
        }
    }
    for (name, samples) in calls.iter().chain(bare).copied() {
        print!("| {name} | {:.2} | {:.2} |", ratio(samples, tcp, 50.0), ratio(samples, tcp, 99.0));
        if let Some(unix) = unix {
            print!(" {:.2} | {:.2} |", ratio(samples, unix, 50.0), ratio(samples, unix, 99.0));
        }
        println!();
    }
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn default_proxy_bin() -> anyhow::Result<PathBuf> {
    sibling_bin("eqs-proxy")
}

/// A binary next to this one (same cargo profile).
fn sibling_bin(name: &str) -> anyhow::Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name(name))
}

async fn queue_bench(args: QueueArgs) -> anyhow::Result<()> {
    let bin = match &args.proxy_bin {
        Some(bin) => bin.clone(),
        None => default_proxy_bin()?,
    };
    let scratch = tempfile::tempdir()?;
    let body = vec![b'x'; args.body_bytes];
    let size =
        std::fs::metadata(&bin).with_context(|| format!("no proxy binary at {}", bin.display()))?.len();
    let tls = if args.tls { Some(ServerTls::new(scratch.path(), &args.backend)?) } else { None };

    // Cold start: best of 5 fresh starts.
    let mut cold = Duration::MAX;
    for i in 0..5 {
        let mut proxy =
            spawn_proxy(&bin, &args, tls.as_ref(), &scratch.path().join(format!("cold{i}.db"))).await?;
        cold = cold.min(proxy.cold_start);
        proxy.child.start_kill()?;
        let _ = proxy.child.wait().await;
    }

    let mut proxy = spawn_proxy(&bin, &args, tls.as_ref(), &scratch.path().join("proxy.db")).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (idle_rss, _) = memory_kib(proxy.pid)?;
    let client = match &tls {
        Some(tls) => {
            let port = proxy.url.rsplit(':').next().context("no port in the proxy's address")?;
            let settings = exo_sdk::Tls { ca_file: Some(tls.ca_file.clone()), ..Default::default() };
            QueueClient::connect_with_tls(&format!("https://localhost:{port}"), &settings)?
        }
        None if args.unix => {
            QueueClient::connect(&format!("unix:{}", scratch.path().join("proxy.sock").display()))?
        }
        None => QueueClient::connect(&proxy.url)?,
    }
    .with_retry(RetryPolicy::none());
    let via = ViaProxy(client.clone());
    let direct_config = match &args.config {
        Some(file) => exo_proxy_core::config::load_yaml::<eqs::config::EqsConfig>(file)?.backend,
        None => BackendConfig::named(&args.backend, Some(scratch.path().join("direct.db")))?,
    };
    let direct_backend = eqs::open_backend(
        &direct_config,
        Duration::from_secs(60),
        exo_proxy_core::metrics::Metrics::shared(),
    )
    .await?;
    let direct = Direct(direct_backend.clone());

    let workers = args.concurrency.max(1);
    let mut proxy_queues = Vec::new();
    let mut direct_queues = Vec::new();
    for w in 0..workers {
        let name = format!("bench-{w}");
        client.create_queue(&name, QueueOptions::default()).await?;
        let options = pb::QueueOptions {
            visibility_timeout_seconds: Some(30),
            retention_seconds: 345_600,
            ..Default::default()
        };
        direct_backend
            .create_queue(eqs::ops::CreateQueue {
                queue: &QueueName::parse("queue", &name, "name")?,
                options: &options,
            })
            .await?;
        proxy_queues.push(name.clone());
        direct_queues.push(name);
    }
    // Warm up both paths (connections, caches, allocator).
    run_phase(&via, &proxy_queues[..1], 500.min(args.cycles), &body).await?;
    run_phase(&direct, &direct_queues[..1], 500.min(args.cycles), &body).await?;

    // Transport floor: Describe touches no backend, so its latency is gRPC over loopback plus
    // the proxy's routing.
    let mut floor = Samples::default();
    for _ in 0..args.cycles.min(5000) {
        let t = Instant::now();
        client.describe().await?;
        floor.0.push(t.elapsed());
    }

    // Physical floors of the same size, in the same run (see `floors`).
    let tcp = floors::tcp_round_trips(args.body_bytes, args.cycles.min(5000))?;
    let unix = if args.unix {
        Some(floors::unix_round_trips(args.body_bytes, args.cycles.min(5000))?)
    } else {
        None
    };
    let bare_tonic = floors::tonic_round_trips(args.body_bytes, args.cycles.min(5000)).await?;
    let bare_hyper = floors::echo_round_trips_via(
        floors::EchoClient::HyperConnection,
        args.body_bytes,
        args.cycles.min(5000),
    )
    .await?;

    // Latency: one worker, so each call is measured alone.
    let cpu_before = process_cpu(proxy.pid)?;
    let via_serial = run_phase(&via, &proxy_queues[..1], args.cycles, &body).await?;
    let proxy_cpu_serial = process_cpu(proxy.pid)? - cpu_before;
    let self_before = self_cpu();
    let direct_serial = run_phase(&direct, &direct_queues[..1], args.cycles, &body).await?;
    let direct_cpu_serial = self_cpu() - self_before;

    // Throughput: many workers.
    let cpu_before = process_cpu(proxy.pid)?;
    let via_parallel = run_phase(&via, &proxy_queues, args.cycles, &body).await?;
    let proxy_cpu_parallel = process_cpu(proxy.pid)? - cpu_before;
    let direct_parallel = run_phase(&direct, &direct_queues, args.cycles, &body).await?;

    // Batched sends: 10 messages per call, as many calls in flight as workers.
    let batched_messages = (args.cycles * 10).max(1000);
    let cpu_before = process_cpu(proxy.pid)?;
    let (via_batched, sent_batched) = run_batches(&via, &proxy_queues, batched_messages, 10, &body).await?;
    let proxy_cpu_batched = process_cpu(proxy.pid)? - cpu_before;
    let (direct_batched, _) = run_batches(&direct, &direct_queues, batched_messages, 10, &body).await?;
    // Leave the queues as they were: the paced phase below measures memory, not a backlog.
    for (via_queue, direct_queue) in proxy_queues.iter().zip(&direct_queues) {
        client.purge(via_queue).await?;
        direct_backend
            .purge(eqs::ops::Purge { queue: &QueueName::parse("queue", direct_queue, "queue")? })
            .await?;
    }

    let hop = match args.hop {
        true => {
            Some(hop_phases(&bin, &args, &proxy, tls.as_ref(), scratch.path(), &proxy_queues, &body).await?)
        }
        false => None,
    };

    // Memory under a steady paced load.
    run_paced(&via, &proxy_queues[0], args.paced_rps, Duration::from_secs(3), &body).await?;
    let (paced_rss, peak_rss) = memory_kib(proxy.pid)?;
    proxy.child.start_kill()?;
    let _ = proxy.child.wait().await;

    println!(
        "## eqs: send → receive → ack, backend `{}`, {} B bodies{}\n",
        direct_config.kind(),
        args.body_bytes,
        if args.tls {
            ", via proxy over TLS (https://, rustls)"
        } else if args.unix {
            ", via proxy over its Unix socket (unix:)"
        } else {
            ""
        }
    );
    println!(
        "| call | direct p50 µs | via proxy p50 µs | added p50 µs | direct p99 µs | via proxy p99 µs | added p99 µs | via proxy p99.9 µs |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, d, v) in [
        ("send", &direct_serial.send, &via_serial.send),
        ("receive", &direct_serial.receive, &via_serial.receive),
        ("ack", &direct_serial.ack, &via_serial.ack),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} |",
            us(d.percentile(50.0)),
            us(v.percentile(50.0)),
            us(v.percentile(50.0).saturating_sub(d.percentile(50.0))),
            us(d.percentile(99.0)),
            us(v.percentile(99.0)),
            us(v.percentile(99.0).saturating_sub(d.percentile(99.0))),
            us(v.percentile(99.9)),
        );
    }
    println!(
        "| describe (no backend: the gRPC + loopback floor) | – | {} | – | – | {} | – | {} |",
        us(floor.percentile(50.0)),
        us(floor.percentile(99.0)),
        us(floor.percentile(99.9))
    );
    println!(
        "| raw TCP round trip of {} B (floor) | – | {} | – | – | {} | – | {} |",
        args.body_bytes,
        us(tcp.percentile(50.0)),
        us(tcp.percentile(99.0)),
        us(tcp.percentile(99.9))
    );
    println!(
        "| bare tonic unary echo of {} B | – | {} | – | – | {} | – | {} |",
        args.body_bytes,
        us(bare_tonic.percentile(50.0)),
        us(bare_tonic.percentile(99.0)),
        us(bare_tonic.percentile(99.9))
    );
    if let Some(unix) = &unix {
        println!(
            "| raw Unix socket round trip of {} B | – | {} | – | – | {} | – | {} |",
            args.body_bytes,
            us(unix.percentile(50.0)),
            us(unix.percentile(99.0)),
            us(unix.percentile(99.9))
        );
    }
    println!();
    floor_ratios(
        &tcp,
        unix.as_ref(),
        &[
            ("bare tonic unary echo (TCP)", &bare_tonic),
            ("bare echo through hyper's HTTP/2 client (TCP)", &bare_hyper),
        ],
        &[("send", &via_serial.send), ("receive", &via_serial.receive), ("ack", &via_serial.ack)],
    );
    println!();
    println!("| measure | direct | via proxy | ratio via/direct |");
    println!("|---|---|---|---|");
    println!(
        "| ops/s, 1 worker | {:.0} | {:.0} | {:.3} |",
        direct_serial.ops_per_sec(),
        via_serial.ops_per_sec(),
        via_serial.ops_per_sec() / direct_serial.ops_per_sec()
    );
    println!(
        "| ops/s, {workers} workers | {:.0} | {:.0} | {:.3} |",
        direct_parallel.ops_per_sec(),
        via_parallel.ops_per_sec(),
        via_parallel.ops_per_sec() / direct_parallel.ops_per_sec()
    );
    println!(
        "| CPU µs per op, 1 worker (direct: whole bench process; proxy: proxy process) | {} | {} | |",
        us(direct_cpu_serial / direct_serial.ops as u32),
        us(proxy_cpu_serial / via_serial.ops as u32)
    );
    println!(
        "| proxy CPU µs per op, {workers} workers | | {} | |",
        us(proxy_cpu_parallel / via_parallel.ops as u32)
    );
    println!(
        "| messages/s sent in batches of 10, {workers} calls in flight | {direct_batched:.0} | {via_batched:.0} | {:.3} |",
        via_batched / direct_batched
    );
    println!(
        "| proxy CPU µs per batched message | | {:.2} | |",
        proxy_cpu_batched.as_secs_f64() * 1e6 / sent_batched.max(1) as f64
    );
    println!();
    println!("| proxy | value |");
    println!("|---|---|");
    let until = if args.tls { "its ready log line" } else { "/readyz 200" };
    println!("| cold start (spawn → {until}), best of 5 | {:.1} ms |", cold.as_secs_f64() * 1e3);
    println!("| RSS idle | {:.1} MiB |", idle_rss as f64 / 1024.0);
    println!("| RSS after 3 s at {} req/s | {:.1} MiB |", args.paced_rps, paced_rss as f64 / 1024.0);
    println!("| peak RSS (VmHWM, whole run) | {:.1} MiB |", peak_rss as f64 / 1024.0);
    println!("| binary size ({}) | {:.1} MiB |", bin.display(), size as f64 / (1024.0 * 1024.0));
    if let Some(hop) = hop {
        hop.print(&via_serial, &via_parallel, &tcp, args.tls, workers);
    }
    Ok(())
}

/// The calls through an edge proxy forwarding to the measured one.
struct Hop {
    serial: Phase,
    parallel: Phase,
    edge_cpu_serial: Duration,
    edge_cpu_parallel: Duration,
}

/// Starts an edge eqs-proxy whose backend is the measured proxy (`kind: remote`) and runs the
/// serial and parallel phases through it, on the same queues.
async fn hop_phases(
    bin: &Path,
    args: &QueueArgs,
    proxy: &ProxyProcess,
    tls: Option<&ServerTls>,
    dir: &Path,
    queues: &[String],
    body: &[u8],
) -> anyhow::Result<Hop> {
    let port = proxy.url.rsplit(':').next().context("no port in the proxy's address")?;
    let remote = match tls {
        Some(tls) => format!("  url: https://localhost:{port}\n  ca-file: {}\n", tls.ca_file.display()),
        None => format!("  url: {}\n", proxy.url),
    };
    let config = dir.join("edge.yaml");
    std::fs::write(&config, format!("backend:\n  kind: remote\n{remote}"))?;
    let config = config.display().to_string();
    let edge =
        spawn_any_proxy(bin, &["--config", &config, "--db"], &dir.join("edge.db"), "eqs-proxy ready").await?;
    let via_edge = ViaProxy(QueueClient::connect(&edge.url)?.with_retry(RetryPolicy::none()));
    run_phase(&via_edge, &queues[..1], 500.min(args.cycles), body).await?;
    let cpu_before = process_cpu(edge.pid)?;
    let serial = run_phase(&via_edge, &queues[..1], args.cycles, body).await?;
    let edge_cpu_serial = process_cpu(edge.pid)? - cpu_before;
    let cpu_before = process_cpu(edge.pid)?;
    let parallel = run_phase(&via_edge, queues, args.cycles, body).await?;
    let edge_cpu_parallel = process_cpu(edge.pid)? - cpu_before;
    Ok(Hop { serial, parallel, edge_cpu_serial, edge_cpu_parallel })
}

impl Hop {
    fn print(&self, one: &Phase, one_parallel: &Phase, tcp: &Samples, tls: bool, workers: usize) {
        println!(
            "\n## one forwarding hop: SDK → edge eqs-proxy (`kind: remote`{}) → eqs-proxy\n",
            if tls { ", https://" } else { ", http://" }
        );
        println!(
            "| call | one proxy p50 µs | edge + proxy p50 µs | the hop adds p50 µs | ÷ raw TCP p50 | one proxy p99 µs | edge + proxy p99 µs |"
        );
        println!("|---|---|---|---|---|---|---|");
        let rtt = tcp.percentile(50.0).as_secs_f64();
        for (name, d, v) in [
            ("send", &one.send, &self.serial.send),
            ("receive", &one.receive, &self.serial.receive),
            ("ack", &one.ack, &self.serial.ack),
        ] {
            let added = v.percentile(50.0).saturating_sub(d.percentile(50.0));
            println!(
                "| {name} | {} | {} | {} | {:.2} | {} | {} |",
                us(d.percentile(50.0)),
                us(v.percentile(50.0)),
                us(added),
                added.as_secs_f64() / rtt,
                us(d.percentile(99.0)),
                us(v.percentile(99.0)),
            );
        }
        println!();
        println!("| measure | one proxy | edge + proxy | ratio |");
        println!("|---|---|---|---|");
        println!(
            "| ops/s, {workers} workers | {:.0} | {:.0} | {:.3} |",
            one_parallel.ops_per_sec(),
            self.parallel.ops_per_sec(),
            self.parallel.ops_per_sec() / one_parallel.ops_per_sec()
        );
        println!(
            "| edge CPU µs per op, 1 worker / {workers} workers | | {} / {} | |",
            us(self.edge_cpu_serial / self.serial.ops as u32),
            us(self.edge_cpu_parallel / self.parallel.ops as u32)
        );
    }
}

fn main() -> anyhow::Result<()> {
    // The client side (SDK and the direct backend calls) runs on one thread, like a small app
    // beside its sidecar, leaving the other core to the proxy; both paths get the same runtime.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match Args::parse().command {
        Cmd::Queue(args) => runtime.block_on(queue_bench(args)),
        Cmd::Object(args) => runtime.block_on(object::bench(args)),
        Cmd::Kv(args) => runtime.block_on(kv::bench(args)),
        Cmd::Topic(args) => runtime.block_on(topic::bench(args)),
        Cmd::Soak(args) => runtime.block_on(soak::bench(args)),
        Cmd::Layers(args) => runtime.block_on(layers::bench(args)),
    }
}
