//! `exo-bench kv`: put → get → increment cycles through ekv-proxy and directly on the same kind
//! of backend, with latency percentiles, ratios, the proxy's CPU per operation and memory.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use ekv::ops;
use ekv::{
    config::BackendConfig,
    model::{Condition, TableName},
};
use exo_sdk::{KvClient, Put, RetryPolicy};

use crate::{Samples, memory_kib, process_cpu, sibling_bin, spawn_any_proxy, us};

/// Options of the key-value benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct KvArgs {
    /// Backend: memory or embedded (cloud backends: see --config).
    #[arg(long, default_value = "memory")]
    backend: String,
    /// Cycles per phase.
    #[arg(long, default_value_t = 10000)]
    cycles: usize,
    /// Requests in flight in the throughput phase.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    value_bytes: usize,
    /// A proxy config file (cloud backends): the proxy runs with it and the direct backend is
    /// opened from its `backend:` section, so both reach the same service the same way.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The proxy also serves a Unix socket and the SDK calls it at `unix:PATH`.
    #[arg(long)]
    unix: bool,
}

#[derive(Default)]
struct Phase {
    put: Samples,
    get: Samples,
    increment: Samples,
    elapsed: Duration,
    ops: usize,
}

async fn via_proxy(client: &KvClient, cycles: usize, workers: usize, value: &[u8]) -> anyhow::Result<Phase> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let client = client.clone();
        let value = value.to_vec();
        let per = cycles / workers;
        tasks.spawn(async move {
            let mut phase = Phase::default();
            for i in 0..per {
                let key = format!("w{w}-{}", i % 100);
                let t = Instant::now();
                client.put("bench", &key, value.clone(), Put::default()).await?;
                phase.put.0.push(t.elapsed());
                let t = Instant::now();
                client.get("bench", &key).await?;
                phase.get.0.push(t.elapsed());
                let t = Instant::now();
                client.increment("bench", &format!("count-{key}"), 1).await?;
                phase.increment.0.push(t.elapsed());
                phase.ops += 3;
            }
            Ok::<_, anyhow::Error>(phase)
        });
    }
    collect(tasks, started).await
}

async fn direct(
    backend: std::sync::Arc<dyn ekv::backend::KeyValue>,
    cycles: usize,
    workers: usize,
    value: &[u8],
) -> anyhow::Result<Phase> {
    let table = TableName::parse("table", "bench", "table")?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let backend = backend.clone();
        let table = table.clone();
        let value = value.to_vec();
        let per = cycles / workers;
        tasks.spawn(async move {
            let mut phase = Phase::default();
            for i in 0..per {
                let key = format!("w{w}-{}", i % 100);
                let t = Instant::now();
                backend
                    .put(ops::Put {
                        table: &table,
                        key: &key,
                        value: value.clone(),
                        condition: &Condition::None,
                        expires_at_ms: 0,
                    })
                    .await?;
                phase.put.0.push(t.elapsed());
                let t = Instant::now();
                backend.get(ops::Get { table: &table, key: &key }).await?;
                phase.get.0.push(t.elapsed());
                let counter = format!("count-{key}");
                let t = Instant::now();
                backend
                    .increment(ops::Increment { table: &table, key: &counter, delta: 1, expires_at_ms: 0 })
                    .await?;
                phase.increment.0.push(t.elapsed());
                phase.ops += 3;
            }
            Ok::<_, anyhow::Error>(phase)
        });
    }
    collect(tasks, started).await
}

async fn collect(
    mut tasks: tokio::task::JoinSet<anyhow::Result<Phase>>,
    started: Instant,
) -> anyhow::Result<Phase> {
    let mut total = Phase::default();
    while let Some(result) = tasks.join_next().await {
        let phase = result??;
        total.put.0.extend(phase.put.0);
        total.get.0.extend(phase.get.0);
        total.increment.0.extend(phase.increment.0);
        total.ops += phase.ops;
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

pub async fn bench(args: KvArgs) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let bin = sibling_bin("ekv-proxy")?;
    let mut flags = crate::backend_args(&args.backend, args.config.as_deref(), "--db");
    let socket = scratch.path().join("proxy.sock");
    if args.unix {
        flags.splice(0..0, ["--unix-socket".to_owned(), socket.display().to_string()]);
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut proxy =
        spawn_any_proxy(&bin, &flags, &scratch.path().join("proxy.db"), "ekv-proxy ready").await?;
    let url = if args.unix { format!("unix:{}", socket.display()) } else { proxy.url.clone() };
    let client = KvClient::connect(&url)?.with_retry(RetryPolicy::none());
    client.create_table("bench").await?;
    let direct_config = match &args.config {
        Some(file) => exo_proxy_core::config::load_yaml::<ekv::config::EkvConfig>(file)?.backend,
        None => BackendConfig::named(&args.backend, Some(scratch.path().join("direct.db")))?,
    };
    let backend = ekv::open_backend(
        &direct_config,
        std::time::Duration::from_secs(60),
        exo_proxy_core::metrics::Metrics::shared(),
    )
    .await?;
    backend.create_table(ops::CreateTable { table: &TableName::parse("table", "bench", "table")? }).await?;
    let value = vec![b'v'; args.value_bytes];

    // Warm-up.
    via_proxy(&client, 500, 1, &value).await?;
    direct(backend.clone(), 500, 1, &value).await?;

    let tcp = crate::floors::tcp_round_trips(args.value_bytes, args.cycles.min(5000))?;
    let unix = match args.unix {
        true => Some(crate::floors::unix_round_trips(args.value_bytes, args.cycles.min(5000))?),
        false => None,
    };
    let bare_tonic = crate::floors::tonic_round_trips(args.value_bytes, args.cycles.min(5000)).await?;
    let bare_hyper = crate::floors::echo_round_trips_via(
        crate::floors::EchoClient::HyperConnection,
        args.value_bytes,
        args.cycles.min(5000),
    )
    .await?;
    let cpu = process_cpu(proxy.pid)?;
    let via_serial = via_proxy(&client, args.cycles, 1, &value).await?;
    let proxy_cpu = process_cpu(proxy.pid)? - cpu;
    let direct_serial = direct(backend.clone(), args.cycles, 1, &value).await?;
    let cpu = process_cpu(proxy.pid)?;
    let via_parallel = via_proxy(&client, args.cycles, args.concurrency, &value).await?;
    let proxy_cpu_parallel = process_cpu(proxy.pid)? - cpu;
    let direct_parallel = direct(backend.clone(), args.cycles, args.concurrency, &value).await?;
    let (_, peak) = memory_kib(proxy.pid)?;

    println!(
        "## ekv: put → get → increment, backend `{}`, {} B values{}\n",
        direct_config.kind(),
        args.value_bytes,
        if args.unix { ", via proxy over its Unix socket (unix:)" } else { "" }
    );
    println!(
        "| call | direct p50 µs | via proxy p50 µs | added p50 µs | direct p99 µs | via proxy p99 µs | via proxy p99.9 µs |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, d, v) in [
        ("put", &direct_serial.put, &via_serial.put),
        ("get", &direct_serial.get, &via_serial.get),
        ("increment", &direct_serial.increment, &via_serial.increment),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} |",
            us(d.percentile(50.0)),
            us(v.percentile(50.0)),
            us(v.percentile(50.0).saturating_sub(d.percentile(50.0))),
            us(d.percentile(99.0)),
            us(v.percentile(99.0)),
            us(v.percentile(99.9)),
        );
    }
    println!(
        "| raw TCP round trip of {} B (floor) | – | {} | – | – | {} | {} |",
        args.value_bytes,
        us(tcp.percentile(50.0)),
        us(tcp.percentile(99.0)),
        us(tcp.percentile(99.9))
    );
    if let Some(unix) = &unix {
        println!(
            "| raw Unix socket round trip of {} B | – | {} | – | – | {} | {} |",
            args.value_bytes,
            us(unix.percentile(50.0)),
            us(unix.percentile(99.0)),
            us(unix.percentile(99.9))
        );
    }
    println!();
    crate::floor_ratios(
        &tcp,
        unix.as_ref(),
        &[
            ("bare tonic unary echo (TCP)", &bare_tonic),
            ("bare echo through hyper's HTTP/2 client (TCP)", &bare_hyper),
        ],
        &[("put", &via_serial.put), ("get", &via_serial.get), ("increment", &via_serial.increment)],
    );
    let rate = |p: &Phase| p.ops as f64 / p.elapsed.as_secs_f64();
    println!("\n| measure | direct | via proxy | ratio via/direct |");
    println!("|---|---|---|---|");
    println!(
        "| ops/s, 1 in flight | {:.0} | {:.0} | {:.3} |",
        rate(&direct_serial),
        rate(&via_serial),
        rate(&via_serial) / rate(&direct_serial)
    );
    println!(
        "| ops/s, {} in flight | {:.0} | {:.0} | {:.3} |",
        args.concurrency,
        rate(&direct_parallel),
        rate(&via_parallel),
        rate(&via_parallel) / rate(&direct_parallel)
    );
    println!("| proxy CPU µs per op, 1 in flight | | {} | |", us(proxy_cpu / via_serial.ops as u32));
    println!(
        "| proxy CPU µs per op, {} in flight | | {} | |",
        args.concurrency,
        us(proxy_cpu_parallel / via_parallel.ops as u32)
    );
    println!("| proxy peak RSS | | {:.1} MiB | |", peak as f64 / 1024.0);
    proxy.child.start_kill()?;
    let _ = proxy.child.wait().await;
    Ok(())
}
