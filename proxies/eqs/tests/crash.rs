//! Durability: SIGKILL the real `eqs-proxy` binary in the middle of a send load, restart it on
//! the same database, and find every message whose send was acknowledged — and every copy of
//! every acknowledged publish, at each subscription.

use std::{
    collections::HashSet,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use exo_sdk::{Outgoing, QueueClient, QueueOptions, Receive, RetryPolicy, TopicClient};
use tokio::process::Child;

mod binary;

/// Starts the proxy on the embedded database `db`.
async fn spawn_proxy(db: &Path) -> (Child, String) {
    binary::spawn_proxy(|command| {
        command.args(["--backend", "embedded", "--db"]).arg(db);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_send_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("eqs.db");
    let (mut proxy, url) = spawn_proxy(&db).await;
    let client = QueueClient::connect(&url).unwrap().with_retry(RetryPolicy::none());
    client.create_queue("durable", QueueOptions::default()).await.unwrap();

    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    let mut senders = Vec::new();
    for worker in 0..8 {
        let client = client.clone();
        let acknowledged = acknowledged.clone();
        senders.push(tokio::spawn(async move {
            for n in 0.. {
                let body = format!("w{worker}-{n}");
                match client.send("durable", body.clone()).await {
                    Ok(_) => {
                        acknowledged.lock().unwrap().insert(body);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Let the load run, then kill the proxy without warning.
    tokio::time::sleep(Duration::from_millis(700)).await;
    proxy.start_kill().unwrap();
    let _ = proxy.wait().await;
    for sender in senders {
        tokio::time::timeout(Duration::from_secs(20), sender).await.expect("senders stop").unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 50,
        "load too light to prove anything: {} sends acknowledged",
        acknowledged.len()
    );

    let (mut proxy, url) = spawn_proxy(&db).await;
    let client = QueueClient::connect(&url).unwrap().with_retry(RetryPolicy::none());
    let mut found = HashSet::new();
    loop {
        let batch =
            client.receive("durable", Receive::up_to(32).visibility(Duration::from_secs(300))).await.unwrap();
        if batch.is_empty() {
            break;
        }
        found.extend(batch.into_iter().map(|m| String::from_utf8(m.body).unwrap()));
    }
    let lost: Vec<_> = acknowledged.difference(&found).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages lost, e.g. {:?}",
        lost.len(),
        acknowledged.len(),
        &lost[..lost.len().min(5)]
    );
    // At-least-once: anything extra was in flight at the kill, sent but not yet acknowledged.
    assert!(found.len() <= acknowledged.len() + 8, "more messages than sends in flight: {}", found.len());
    proxy.start_kill().unwrap();
    let _ = proxy.wait().await;
}

/// Every body in `queue`, read until it is empty.
async fn drain_bodies(client: &QueueClient, queue: &str) -> Vec<String> {
    let mut found = Vec::new();
    loop {
        let batch =
            client.receive(queue, Receive::up_to(32).visibility(Duration::from_secs(300))).await.unwrap();
        if batch.is_empty() {
            return found;
        }
        found.extend(batch.into_iter().map(|m| String::from_utf8(m.body).unwrap()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_publish_reaches_every_subscription_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("eqs.db");
    let (mut proxy, url) = spawn_proxy(&db).await;
    let topics = TopicClient::connect(&url).unwrap().with_retry(RetryPolicy::none());
    topics.create_topic("orders").await.unwrap();
    for (name, filter) in [("billing", ""), ("shipping", ""), ("even-only", "parity = 'even'")] {
        topics.subscribe("orders", name, name, filter, Some(QueueOptions::default())).await.unwrap();
    }

    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    let mut publishers = Vec::new();
    for worker in 0..8 {
        let topics = topics.clone();
        let acknowledged = acknowledged.clone();
        publishers.push(tokio::spawn(async move {
            for n in 0u32.. {
                let body = format!("w{worker}-{n}");
                let parity = if n % 2 == 0 { "even" } else { "odd" };
                match topics.publish("orders", Outgoing::new(body.clone()).attribute("parity", parity)).await
                {
                    Ok(_) => {
                        acknowledged.lock().unwrap().insert((body, n % 2 == 0));
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    proxy.start_kill().unwrap();
    let _ = proxy.wait().await;
    for publisher in publishers {
        tokio::time::timeout(Duration::from_secs(20), publisher).await.expect("publishers stop").unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 50,
        "load too light to prove anything: {} publishes acknowledged",
        acknowledged.len()
    );

    let (mut proxy, url) = spawn_proxy(&db).await;
    let queues_after = QueueClient::connect(&url).unwrap().with_retry(RetryPolicy::none());
    let billing: HashSet<String> = drain_bodies(&queues_after, "billing").await.into_iter().collect();
    let shipping: HashSet<String> = drain_bodies(&queues_after, "shipping").await.into_iter().collect();
    let even: HashSet<String> = drain_bodies(&queues_after, "even-only").await.into_iter().collect();
    for (name, found, wanted) in [
        ("billing", &billing, acknowledged.iter().map(|(b, _)| b.clone()).collect::<HashSet<_>>()),
        ("shipping", &shipping, acknowledged.iter().map(|(b, _)| b.clone()).collect()),
        ("even-only", &even, acknowledged.iter().filter(|(_, e)| *e).map(|(b, _)| b.clone()).collect()),
    ] {
        let lost: Vec<_> = wanted.difference(found).collect();
        assert!(
            lost.is_empty(),
            "{name}: {} of {} acknowledged publishes lost, e.g. {:?}",
            lost.len(),
            wanted.len(),
            &lost[..lost.len().min(5)]
        );
    }
    // A publish is one transaction: one the kill caught before its commit reached no one, so the
    // unfiltered subscriptions hold exactly the same messages.
    assert_eq!(billing, shipping, "a publish reached one subscription and not another");
    assert!(
        even.iter().all(|b| billing.contains(b)),
        "the filtered subscription has a message the others lack"
    );
    proxy.start_kill().unwrap();
    let _ = proxy.wait().await;
}
