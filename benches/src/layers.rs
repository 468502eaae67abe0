//! `exo-bench layers`: what each layer of the standard stack costs per call when nothing goes
//! wrong (the backend answers at once), against the same call with no layer, on one thread.

use std::{future::Future, sync::Arc, time::Instant};

use exo_proxy_core::{
    ExoResult,
    config::ServerConfig,
    layers::{Call, CircuitBreaker, Layer, Observe, Retry, ShedLoad, Timeout},
    metrics::Metrics,
};

/// Arguments of `exo-bench layers`.
#[derive(Debug, Clone, clap::Args)]
pub struct LayersArgs {
    /// Calls per measurement.
    #[arg(long, default_value_t = 1_000_000)]
    calls: u64,
    /// Measurements per layer; the median is reported.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
}

/// Nanoseconds per call of a read through `layer` (reads take the retry layer's repeatable path).
async fn per_call<L: Layer>(layer: &L, calls: u64) -> f64 {
    let call = Call::new("queue", "receive", "bench");
    let started = Instant::now();
    for n in 0..calls {
        let out: ExoResult<u64> = layer.wrap_repeatable(call, || std::future::ready(Ok(n))).await;
        std::hint::black_box(out.ok());
    }
    started.elapsed().as_nanos() as f64 / calls as f64
}

async fn median<F, Fut>(rounds: usize, mut measure: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = f64>,
{
    let mut all = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        all.push(measure().await);
    }
    all.sort_by(f64::total_cmp);
    all[all.len() / 2]
}

/// Runs the measurements and prints a table (ns per call, and above the bare call).
pub async fn bench(args: LayersArgs) -> anyhow::Result<()> {
    let server = ServerConfig::default();
    let metrics = Arc::new(Metrics::new());
    let observe = Observe::new(metrics.clone());
    let shed = ShedLoad::new(server.max_in_flight, metrics.clone());
    let breaker = CircuitBreaker::new(server.breaker, metrics.clone());
    let retry = Retry::new(server.retry, server.request_timeout, metrics.clone());
    let timeout = Timeout::new(server.request_timeout);
    let together = (
        ShedLoad::new(server.max_in_flight, metrics.clone()),
        CircuitBreaker::new(server.breaker, metrics.clone()),
        Retry::new(server.retry, server.request_timeout, metrics.clone()),
    );
    let standard = exo_proxy_core::layers::standard(server.stack(), metrics.clone());
    let (calls, rounds) = (args.calls, args.rounds);

    let bare = median(rounds, || per_call(&(), calls)).await;
    let rows = [
        ("Observe (metrics, logs)", median(rounds, || per_call(&observe, calls)).await),
        ("ShedLoad (limit)", median(rounds, || per_call(&shed, calls)).await),
        ("CircuitBreaker", median(rounds, || per_call(&breaker, calls)).await),
        ("Retry (budget)", median(rounds, || per_call(&retry, calls)).await),
        ("Timeout", median(rounds, || per_call(&timeout, calls)).await),
        ("limit + breaker + budget", median(rounds, || per_call(&together, calls)).await),
        ("the standard stack (all five)", median(rounds, || per_call(&standard, calls)).await),
    ];
    println!("layers: {calls} reads per measurement, median of {rounds}, one thread");
    println!("| layer | ns per call | above the bare call, ns |");
    println!("|---|---|---|");
    println!("| none (the bare call) | {bare:.1} | – |");
    for (name, ns) in rows {
        println!("| {name} | {ns:.1} | {:.1} |", ns - bare);
    }
    Ok(())
}
