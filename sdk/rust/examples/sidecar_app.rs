//! An app to run in a container beside its proxy sidecars (the rendered compose file's `app`):
//! it calls each proxy through the SDK at the endpoints the rendered file gives it
//! (`EXO_EQS_ENDPOINT`, `EXO_EOS_ENDPOINT`, `EXO_EKV_ENDPOINT`), reads how many requests each
//! proxy counted from its `/metrics`, and serves that as JSON on `EXO_APP_LISTEN` (default
//! `0.0.0.0:9000`) until stopped. `scripts/test` builds it into an image and brings the rendered
//! compose file up around it.
//!
//! The sidecars start after the app (they join its network namespace), so every call is retried
//! until they answer.

use std::time::{Duration, Instant};

use axum::{Json, Router, routing::get};
use exo_sdk::{
    GetOptions, KvClient, ObjectClient, Outgoing, Put, PutOptions, QueueClient, QueueOptions, Receive,
};
use serde_json::{Value, json};

/// Calls each proxy once; the error of the first call that fails.
async fn exercise() -> anyhow::Result<()> {
    let queues = QueueClient::from_env()?;
    queues.create_queue("sidecar-check", QueueOptions::default()).await?;
    queues.send_message("sidecar-check", Outgoing::new("through the sidecar")).await?;
    let got = queues.receive("sidecar-check", Receive::up_to(1).wait(Duration::from_secs(5))).await?;
    let message = got.first().ok_or_else(|| anyhow::anyhow!("eqs: the message sent was not received"))?;
    anyhow::ensure!(message.body == b"through the sidecar", "eqs: body changed");
    queues.ack("sidecar-check", &message.receipt).await?;

    let objects = ObjectClient::from_env()?;
    objects.create_bucket("sidecar-check").await?;
    objects
        .put_bytes("sidecar-check", "hello.txt", &b"object through the sidecar"[..], PutOptions::default())
        .await?;
    let (_, body) = objects.get_bytes("sidecar-check", "hello.txt", GetOptions::default()).await?;
    anyhow::ensure!(body == b"object through the sidecar", "eos: body changed");

    let kv = KvClient::from_env()?;
    kv.create_table("sidecar-check").await?;
    kv.put("sidecar-check", "greeting", "kv through the sidecar", Put::default()).await?;
    let entry = kv.get("sidecar-check", "greeting").await?;
    anyhow::ensure!(entry.value == b"kv through the sidecar", "ekv: value changed");
    Ok(())
}

/// The requests a proxy counted (`exo_requests_total`, summed), read from its `/metrics` beside
/// the gRPC endpoint `endpoint`.
async fn counted(endpoint: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("{}/metrics", endpoint.trim_end_matches('/'))).await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("exo_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut outcome = exercise().await;
    while let Err(err) = &outcome {
        if started.elapsed() > Duration::from_secs(60) {
            break;
        }
        eprintln!("not yet: {err}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        outcome = exercise().await;
    }
    let mut metrics = serde_json::Map::new();
    for (proxy, variable) in
        [("eqs", "EXO_EQS_ENDPOINT"), ("eos", "EXO_EOS_ENDPOINT"), ("ekv", "EXO_EKV_ENDPOINT")]
    {
        let endpoint = std::env::var(variable).unwrap_or_default();
        let requests =
            counted(&endpoint).await.map(Value::from).unwrap_or_else(|e| Value::from(e.to_string()));
        metrics.insert(proxy.to_owned(), requests);
    }
    let report = json!({
        "ok": outcome.is_ok(),
        "error": outcome.err().map(|e| e.to_string()),
        "requests": metrics,
    });
    println!("{report}");
    let listen = std::env::var("EXO_APP_LISTEN").unwrap_or_else(|_| "0.0.0.0:9000".to_owned());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let app = Router::new().route("/", get(move || async move { Json(report.clone()) }));
    axum::serve(listener, app).await?;
    Ok(())
}
