//! A pull subscriber: receives messages from one queue, acknowledges each, and prints each as
//! one JSON line (`{"body_hex": …, "attributes": {…}, "dequeue_count": …}`) so another program
//! can compare what it received with what was sent, byte for byte.
//!
//! `cargo run -p exo-sdk --example drain -- QUEUE COUNT [SECONDS]` stops after COUNT messages, or
//! fails when SECONDS (default 60) pass first. EXO_EQS_ENDPOINT chooses the proxy.

use std::{
    fmt::Write as _,
    io::Write as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use exo_sdk::{QueueClient, Receive};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: drain QUEUE COUNT [SECONDS]";
    let queue = args.next().context(usage)?;
    let count: usize = args.next().context(usage)?.parse().context("COUNT is a number")?;
    let seconds: u64 = args.next().map_or(Ok(60), |s| s.parse()).context("SECONDS is a number")?;
    let queues = QueueClient::from_env()?;
    let give_up = Instant::now() + Duration::from_secs(seconds);
    let mut out = std::io::stdout().lock();
    let mut received = 0;
    while received < count {
        let left = give_up.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("received {received} of {count} messages from '{queue}' in {seconds} s");
        }
        let wait = left.min(Duration::from_secs(5));
        for message in queues.receive(&queue, Receive::up_to(10).wait(wait)).await? {
            let body_hex = message.body.iter().fold(String::new(), |mut hex, byte| {
                let _ = write!(hex, "{byte:02x}");
                hex
            });
            let line = serde_json::json!({
                "body_hex": body_hex,
                "attributes": message.attributes,
                "dequeue_count": message.dequeue_count,
            });
            writeln!(out, "{line}")?;
            queues.ack(&queue, &message.receipt).await?;
            received += 1;
        }
    }
    out.flush()?;
    Ok(())
}
