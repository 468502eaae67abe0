//! `exo-bench topic`: publish throughput and publish → receive latency with 1, 3 and 10
//! subscriptions, through a real `eqs-proxy` process and directly on the same kind of backend, in
//! one run (fresh proxy and backend per subscription count).

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use eqs::{
    backend::Queue,
    config::BackendConfig,
    model::{QueueName, ReceiveParams, TopicName},
};
use exo_proto::queue::v1 as pb;
use exo_sdk::{Outgoing, QueueClient, QueueOptions, Receive, RetryPolicy, TopicClient};

use crate::{Samples, backend_args, memory_kib, process_cpu, sibling_bin, spawn_any_proxy, us};

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TopicArgs {
    /// Backend: memory or embedded (cloud backends: see --config).
    #[arg(long, default_value = "embedded")]
    backend: String,
    /// Subscription counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,3,10")]
    subscriptions: Vec<usize>,
    /// Publishes per throughput phase.
    #[arg(long, default_value_t = 3000)]
    publishes: usize,
    /// Publishes in flight in the throughput phase.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Publish → receive samples in the latency phase.
    #[arg(long, default_value_t = 300)]
    samples: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// The eqs-proxy binary (default: next to this executable).
    #[arg(long)]
    proxy_bin: Option<PathBuf>,
    /// A proxy config file (cloud backends): the proxy runs with it and the direct backend is
    /// opened from its `backend:` section.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// One side's figures for one subscription count.
struct Figures {
    publishes_per_sec: f64,
    latency: Samples,
}

/// Publishes `total` messages, `concurrency` in flight, through `publish`.
async fn throughput<F, Fut>(total: usize, concurrency: usize, publish: F) -> anyhow::Result<f64>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let per_task = total / concurrency.max(1);
    for _ in 0..concurrency.max(1) {
        let publish = publish.clone();
        tasks.spawn(async move {
            for _ in 0..per_task {
                publish().await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok((per_task * concurrency.max(1)) as f64 / started.elapsed().as_secs_f64())
}

async fn via_proxy(
    url: &str,
    subscriptions: usize,
    args: &TopicArgs,
    body: &[u8],
) -> anyhow::Result<Figures> {
    let topics = TopicClient::connect(url)?.with_retry(RetryPolicy::none());
    let queues = QueueClient::connect(url)?.with_retry(RetryPolicy::none());
    topics.create_topic("bench").await?;
    for s in 0..subscriptions {
        let name = format!("sub-{s}");
        topics.subscribe("bench", &name, &name, "", Some(QueueOptions::default())).await?;
    }
    // Latency: a subscriber long-polls the first queue, the publisher publishes one message.
    let mut latency = Samples::default();
    for _ in 0..args.samples {
        let waiting = {
            let queues = queues.clone();
            tokio::spawn(async move {
                queues.receive("sub-0", Receive::up_to(1).wait(Duration::from_secs(5))).await
            })
        };
        tokio::task::yield_now().await;
        let started = Instant::now();
        topics.publish("bench", Outgoing::new(body.to_vec())).await?;
        let got = waiting.await??;
        latency.0.push(started.elapsed());
        let Some(message) = got.into_iter().next() else { bail!("the subscriber got nothing") };
        queues.ack("sub-0", &message.receipt).await?;
    }
    let publish = {
        let (topics, body) = (topics.clone(), body.to_vec());
        move || {
            let (topics, body) = (topics.clone(), body.clone());
            async move {
                topics.publish("bench", Outgoing::new(body)).await?;
                Ok(())
            }
        }
    };
    let publishes_per_sec = throughput(args.publishes, args.concurrency, publish).await?;
    Ok(Figures { publishes_per_sec, latency })
}

async fn direct(
    backend: Arc<dyn Queue>,
    subscriptions: usize,
    args: &TopicArgs,
    body: &[u8],
) -> anyhow::Result<Figures> {
    let topic = TopicName::parse("topic", "bench", "topic")?;
    backend.create_topic(eqs::ops::CreateTopic { topic: &topic }).await?;
    let options = pb::QueueOptions {
        visibility_timeout_seconds: Some(30),
        retention_seconds: 345_600,
        ..Default::default()
    };
    for s in 0..subscriptions {
        let name = format!("sub-{s}");
        backend
            .create_queue(eqs::ops::CreateQueue {
                queue: &QueueName::parse("queue", &name, "queue")?,
                options: &options,
            })
            .await?;
        let subscription =
            pb::Subscription { name: name.clone(), queue: name, filter: String::new(), created_at_ms: 0 };
        backend
            .create_subscription(eqs::ops::CreateSubscription { topic: &topic, subscription: &subscription })
            .await?;
    }
    let first = QueueName::parse("queue", "sub-0", "queue")?;
    let message = || pb::PublishedMessage { body: body.to_vec(), attributes: Default::default() };
    let mut latency = Samples::default();
    for _ in 0..args.samples {
        let waiting = {
            let (backend, first) = (backend.clone(), first.clone());
            tokio::spawn(async move {
                let params =
                    ReceiveParams { max_messages: 1, wait: Duration::from_secs(5), visibility_seconds: None };
                backend.receive(eqs::ops::Receive { queue: &first, params }).await
            })
        };
        tokio::task::yield_now().await;
        let started = Instant::now();
        backend.publish(eqs::ops::Publish { topic: &topic, messages: vec![message()] }).await?;
        let got = waiting.await??;
        latency.0.push(started.elapsed());
        let Some(received) = got.into_iter().next() else { bail!("the subscriber got nothing") };
        backend.ack(eqs::ops::Ack { queue: &first, receipt: &received.receipt }).await?;
    }
    let publish = {
        let (backend, topic, body) = (backend.clone(), topic.clone(), body.to_vec());
        move || {
            let (backend, topic, body) = (backend.clone(), topic.clone(), body.clone());
            async move {
                let results = backend
                    .publish(eqs::ops::Publish {
                        topic: &topic,
                        messages: vec![pb::PublishedMessage { body, attributes: Default::default() }],
                    })
                    .await?;
                for result in results {
                    result?;
                }
                Ok(())
            }
        }
    };
    let publishes_per_sec = throughput(args.publishes, args.concurrency, publish).await?;
    Ok(Figures { publishes_per_sec, latency })
}

pub(crate) async fn bench(args: TopicArgs) -> anyhow::Result<()> {
    let bin = match &args.proxy_bin {
        Some(bin) => bin.clone(),
        None => sibling_bin("eqs-proxy")?,
    };
    let body = vec![b'x'; args.body_bytes];
    println!(
        "## eqs topics: publish throughput ({} in flight) and publish → receive latency, backend `{}`, {} B bodies\n",
        args.concurrency,
        args.config.as_ref().map_or(args.backend.clone(), |c| c.display().to_string()),
        args.body_bytes
    );
    println!(
        "| subscriptions | direct publishes/s | via proxy publishes/s | ratio | direct p50 µs | via proxy p50 µs | direct p99 µs | via proxy p99 µs | proxy CPU µs per publish | proxy peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &n in &args.subscriptions {
        let scratch = tempfile::tempdir()?;
        let flags = backend_args(&args.backend, args.config.as_deref(), "--db");
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut proxy =
            spawn_any_proxy(&bin, &flags, &scratch.path().join("proxy.db"), "eqs-proxy ready").await?;
        let cpu_before = process_cpu(proxy.pid)?;
        let via = via_proxy(&proxy.url, n, &args, &body).await.context("via proxy")?;
        let publishes = (args.samples + args.publishes) as u32;
        let proxy_cpu = (process_cpu(proxy.pid)? - cpu_before) / publishes.max(1);
        let (_, peak) = memory_kib(proxy.pid)?;
        proxy.child.start_kill()?;
        let _ = proxy.child.wait().await;

        let config = match &args.config {
            Some(file) => exo_proxy_core::config::load_yaml::<eqs::config::EqsConfig>(file)?.backend,
            None => BackendConfig::named(&args.backend, Some(scratch.path().join("direct.db")))?,
        };
        let backend =
            eqs::open_backend(&config, Duration::from_secs(60), exo_proxy_core::metrics::Metrics::shared())
                .await?;
        let direct = direct(backend, n, &args, &body).await.context("direct")?;
        println!(
            "| {n} | {:.0} | {:.0} | {:.3} | {} | {} | {} | {} | {} | {:.1} |",
            direct.publishes_per_sec,
            via.publishes_per_sec,
            via.publishes_per_sec / direct.publishes_per_sec,
            us(direct.latency.percentile(50.0)),
            us(via.latency.percentile(50.0)),
            us(direct.latency.percentile(99.0)),
            us(via.latency.percentile(99.0)),
            us(proxy_cpu),
            peak as f64 / 1024.0,
        );
    }
    Ok(())
}
