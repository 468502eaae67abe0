//! Publish once, every subscribed service gets its copy: one publisher, three subscribers, two
//! pulling and one pushed to.
//!
//! Start the proxies with this app's manifest, then run it:
//!
//! ```text
//! cargo run -p exo -- up --manifest sdk/rust/examples/topics.yaml
//! cargo run -p exo-sdk --example topics
//! ```
//!
//! Billing gets every order; shipping-eu only orders whose `region` attribute is `eu`: each
//! reads its own queue at its own pace and drops duplicates by publish id. Mail is a push
//! subscription (declared in the manifest, since only the proxy's config may name where it
//! sends): the proxy POSTs each order to this app's HTTP endpoint, and a 200 acknowledges it.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use exo_sdk::{Outgoing, PUBLISH_ID_ATTRIBUTE, QueueClient, QueueOptions, Receive, TopicClient};

/// Where the manifest's push subscription sends: the app's port (`EXO_EXAMPLE_LISTEN` when the
/// manifest is given another) and the path `/events/orders`.
const PUSH_LISTEN: &str = "127.0.0.1:7480";

/// The pushed orders, by publish id (a redelivered push has the same id).
type Pushed = Arc<Mutex<HashMap<String, String>>>;

/// The mail service's endpoint: one pushed message per POST.
async fn on_order(State(pushed): State<Pushed>, body: Bytes) -> StatusCode {
    let Ok(push) = exo_sdk::decode_pushed(&body) else { return StatusCode::BAD_REQUEST };
    let Some(message) = push.message else { return StatusCode::BAD_REQUEST };
    let publish_id = message.attributes.get(PUBLISH_ID_ATTRIBUTE).cloned().unwrap_or_default();
    if let Ok(mut pushed) = pushed.lock() {
        pushed.insert(publish_id, String::from_utf8_lossy(&message.body).into_owned());
    }
    // Anything but 2xx (or no answer in time) and the proxy offers it again later.
    StatusCode::OK
}

/// Reads `queue` until it stays empty, acking each message; returns the bodies, first copies only.
async fn consume(queues: &QueueClient, queue: &str) -> anyhow::Result<Vec<String>> {
    let mut seen = HashSet::new();
    let mut bodies = Vec::new();
    loop {
        let batch = queues.receive(queue, Receive::up_to(10).wait(Duration::from_secs(1))).await?;
        if batch.is_empty() {
            return Ok(bodies);
        }
        for message in batch {
            // At least once: a publish retried after a timeout may arrive twice, with one id.
            let publish_id = message.attributes.get(PUBLISH_ID_ATTRIBUTE).cloned().unwrap_or_default();
            if seen.insert(publish_id) {
                bodies.push(String::from_utf8_lossy(&message.body).into_owned());
            }
            queues.ack(queue, &message.receipt).await?;
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let topics = TopicClient::from_env()?;
    let queues = QueueClient::from_env()?;

    // The mail service listens before anything is published (a push it misses is retried).
    let pushed = Pushed::default();
    let listen = std::env::var("EXO_EXAMPLE_LISTEN").unwrap_or_else(|_| PUSH_LISTEN.to_owned());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let app = Router::new().route("/events/orders", post(on_order)).with_state(pushed.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    topics.create_topic("order-events").await?;
    // Each subscription delivers into a queue of its own (made here if missing).
    topics.subscribe("order-events", "billing", "billing-orders", "", Some(QueueOptions::default())).await?;
    topics
        .subscribe(
            "order-events",
            "shipping-eu",
            "shipping-eu-orders",
            "region = 'eu'",
            Some(QueueOptions::default()),
        )
        .await?;

    for (n, region) in [(1, "eu"), (2, "us"), (3, "eu")] {
        let event = Outgoing::new(format!("order {n} created")).attribute("region", region);
        let published = topics.publish("order-events", event).await?;
        println!("published order {n} ({region}) to {} subscription(s)", published.deliveries);
    }

    // The mail service's copies arrive by themselves.
    let mut mail = Vec::new();
    for _ in 0..150 {
        mail = pushed.lock().map(|p| p.values().cloned().collect()).unwrap_or_default();
        if mail.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    mail.sort();
    println!("mail got        {mail:?} (pushed)");
    anyhow::ensure!(
        mail == ["order 1 created", "order 2 created", "order 3 created"],
        "mail should be pushed every order, got {mail:?}; did the proxies start with \
         `exo up --manifest sdk/rust/examples/topics.yaml` (which declares the push subscription)?"
    );

    let billing = consume(&queues, "billing-orders").await?;
    let shipping = consume(&queues, "shipping-eu-orders").await?;
    println!("billing got     {billing:?}");
    println!("shipping-eu got {shipping:?}");
    // What the filters promise (scripts/test runs this example against `exo up`).
    anyhow::ensure!(billing.len() == 3, "billing should get every order, got {billing:?}");
    anyhow::ensure!(
        shipping == ["order 1 created", "order 3 created"]
            || shipping == ["order 3 created", "order 1 created"],
        "shipping-eu should get the eu orders only, got {shipping:?}"
    );
    Ok(())
}
