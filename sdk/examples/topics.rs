//! Publish once, every subscribed service gets its copy: one publisher, two subscribers.
//!
//! Start the proxies (`cargo run -p exo -- up`), then: `cargo run -p exo-sdk --example topics`.
//! Billing gets every order; shipping-eu only orders whose `region` attribute is `eu`. Each
//! subscriber reads its own queue at its own pace and drops duplicates by publish id.

use std::{collections::HashSet, time::Duration};

use exo_sdk::{Outgoing, PUBLISH_ID_ATTRIBUTE, QueueClient, QueueOptions, Receive, TopicClient};

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
