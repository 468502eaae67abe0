//! `exo-bench soak`: a mixed load on all three proxies for minutes, watching for leaks.
//!
//! eqs (embedded), eos (fs) and ekv (embedded) run as processes; workers loop over
//! send → receive → ack, put → get on a key, and put → get → delete of a 64 KiB object. Every
//! `--sample-seconds` the proxies' RSS and open file descriptors are read from /proc. After the
//! first minute (allocator and caches warm) that sample is the baseline; the run fails if any
//! call failed, or if a proxy's RSS at the end is 5 % or more above its baseline, or its open
//! descriptors grew by more than the workers (each may hold one file mid-call). Opt-in (it takes `--minutes`): `exo-bench soak --minutes 10`.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use exo_sdk::{
    GetOptions, KvClient, ObjectClient, Put, PutOptions, QueueClient, QueueOptions, Receive, RetryPolicy,
};

use crate::{memory_kib, sibling_bin, spawn_any_proxy};

/// Options of the soak.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// How long the load runs.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Workers (each runs all three kinds of calls in turn).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10)]
    sample_seconds: u64,
}

/// Open file descriptors of a process.
fn open_fds(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// One worker's calls until `until`: (calls, failures, first failure).
async fn worker(
    id: usize,
    queues: QueueClient,
    kv: KvClient,
    objects: ObjectClient,
    until: Instant,
) -> (u64, u64, Option<String>) {
    let queue = format!("soak-{id}");
    let body = vec![b'q'; 1024];
    let value = vec![b'v'; 1024];
    let object = bytes::Bytes::from(vec![b'o'; 64 * 1024]);
    let (mut calls, mut failures, mut first) = (0u64, 0u64, None);
    let mut i = 0u64;
    while Instant::now() < until {
        let key = format!("k{id}-{}", i % 100);
        let round: anyhow::Result<u64> = async {
            queues.send(&queue, body.clone()).await?;
            let got = queues.receive(&queue, Receive::up_to(1)).await?;
            for m in &got {
                queues.ack(&queue, &m.receipt).await?;
            }
            kv.put("soak", &key, value.clone(), Put::default()).await?;
            let entry = kv.get("soak", &key).await?;
            anyhow::ensure!(entry.value == value, "kv read back other bytes");
            let name = format!("o{id}-{}", i % 20);
            objects.put_bytes("soak", &name, object.clone(), PutOptions::default()).await?;
            let (_, read) = objects.get_bytes("soak", &name, GetOptions::default()).await?;
            anyhow::ensure!(read.len() == object.len(), "object read back {} bytes", read.len());
            objects.delete("soak", &name, None).await?;
            Ok(3 + got.len() as u64 + 5)
        }
        .await;
        match round {
            Ok(n) => calls += n,
            Err(err) => {
                failures += 1;
                first.get_or_insert_with(|| err.to_string());
            }
        }
        i += 1;
    }
    (calls, failures, first)
}

pub async fn bench(args: SoakArgs) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let mut proxies = Vec::new();
    for (name, flags, data) in [
        ("eqs", ["--backend", "embedded", "--db"], "eqs.db"),
        ("eos", ["--backend", "fs", "--root"], "objects"),
        ("ekv", ["--backend", "embedded", "--db"], "ekv.db"),
    ] {
        let bin = sibling_bin(&format!("{name}-proxy"))?;
        let proxy = spawn_any_proxy(&bin, &flags, &scratch.path().join(data), &format!("{name}-proxy ready"))
            .await
            .with_context(|| format!("{name}-proxy"))?;
        proxies.push((name, proxy));
    }
    let queues = QueueClient::connect(&proxies[0].1.url)?.with_retry(RetryPolicy::none());
    let objects = ObjectClient::connect(&proxies[1].1.url)?.with_retry(RetryPolicy::none());
    let kv = KvClient::connect(&proxies[2].1.url)?.with_retry(RetryPolicy::none());
    for id in 0..args.concurrency {
        queues.create_queue(&format!("soak-{id}"), QueueOptions::default()).await?;
    }
    objects.create_bucket("soak").await?;
    kv.create_table("soak").await?;

    let started = Instant::now();
    let until = started + Duration::from_secs(args.minutes * 60);
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..args.concurrency {
        tasks.spawn(worker(id, queues.clone(), kv.clone(), objects.clone(), until));
    }
    let sample = |proxies: &[(&str, crate::ProxyProcess)]| -> anyhow::Result<Vec<(u64, usize)>> {
        proxies.iter().map(|(_, p)| Ok((memory_kib(p.pid)?.0, open_fds(p.pid)?))).collect()
    };
    println!(
        "## soak: {} min, {} workers, eqs embedded + eos fs + ekv embedded\n",
        args.minutes, args.concurrency
    );
    println!("| minute | eqs RSS MiB | eqs fds | eos RSS MiB | eos fds | ekv RSS MiB | ekv fds |");
    println!("|---|---|---|---|---|---|---|");
    let mut baseline: Option<Vec<(u64, usize)>> = None;
    let mut last = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(args.sample_seconds.max(1)));
    ticker.tick().await;
    while Instant::now() < until {
        ticker.tick().await;
        let now = sample(&proxies)?;
        let minute = started.elapsed().as_secs_f64() / 60.0;
        println!(
            "| {minute:.1} | {} |",
            now.iter()
                .map(|(rss, fds)| format!("{:.1} | {fds}", *rss as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        if baseline.is_none() && started.elapsed() >= Duration::from_secs(60) {
            baseline = Some(now.clone());
        }
        last = now;
    }
    let (mut calls, mut failures, mut first) = (0, 0, None);
    while let Some(done) = tasks.join_next().await {
        let (c, f, e) = done?;
        calls += c;
        failures += f;
        first = first.or(e);
    }
    let baseline = baseline.context("the soak must run longer than a minute")?;
    println!();
    println!("| proxy | RSS at 1 min MiB | RSS at end MiB | growth | fds at 1 min | fds at end |");
    println!("|---|---|---|---|---|---|");
    let mut grew = Vec::new();
    for (((name, _), (rss0, fd0)), (rss1, fd1)) in proxies.iter().zip(&baseline).zip(&last) {
        let growth = (*rss1 as f64 - *rss0 as f64) / *rss0 as f64;
        println!(
            "| {name} | {:.1} | {:.1} | {:+.1} % | {fd0} | {fd1} |",
            *rss0 as f64 / 1024.0,
            *rss1 as f64 / 1024.0,
            growth * 100.0
        );
        // Each worker may hold a file open mid-call when a sample is taken.
        if growth >= 0.05 || *fd1 > fd0 + args.concurrency {
            grew.push(*name);
        }
    }
    let rate = calls as f64 / started.elapsed().as_secs_f64();
    println!("\n{calls} calls ({rate:.0}/s), {failures} failed rounds");
    for (_, mut proxy) in proxies {
        proxy.child.start_kill()?;
        let _ = proxy.child.wait().await;
    }
    if failures > 0 {
        bail!("{failures} rounds failed; the first: {}", first.unwrap_or_default());
    }
    if !grew.is_empty() {
        bail!("RSS grew 5 % or more, or open descriptors grew, after the first minute: {grew:?}");
    }
    println!("soak: no failed call; RSS within 5 % and descriptors flat after the first minute");
    Ok(())
}
