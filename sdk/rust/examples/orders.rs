//! A tiny order-processing app on ExoFlow queues.
//!
//! Start the proxies (`cargo run -p exo -- up`), then: `cargo run -p exo-sdk --example orders`.
//! Set EXO_EQS_ENDPOINT to use another proxy.

use std::time::Duration;

use exo_sdk::{Outgoing, QueueClient, QueueOptions, Receive};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let queues = QueueClient::from_env()?;
    let backend = queues.describe().await?;
    println!("connected to eqs backed by '{}'", backend.backend);

    queues.create_queue("orders-dead", QueueOptions::default()).await?;
    let options =
        QueueOptions { max_receives: 5, dead_letter_queue: "orders-dead".into(), ..Default::default() };
    queues.create_queue("orders", options).await?;

    for n in 1..=3 {
        let order = Outgoing::new(format!("order {n}")).attribute("customer", format!("c{n}"));
        let id = queues.send_message("orders", order).await?;
        println!("sent order {n} as {id}");
    }

    let mut handled = 0;
    while handled < 3 {
        let batch = queues.receive("orders", Receive::up_to(10).wait(Duration::from_secs(2))).await?;
        if batch.is_empty() {
            break;
        }
        for message in batch {
            println!(
                "handling {:?} for {} (delivery #{})",
                String::from_utf8_lossy(&message.body),
                message.attributes.get("customer").map_or("?", String::as_str),
                message.dequeue_count
            );
            queues.ack("orders", &message.receipt).await?;
            handled += 1;
        }
    }
    println!("handled {handled} orders");
    Ok(())
}
