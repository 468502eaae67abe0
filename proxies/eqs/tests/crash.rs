//! Durability: SIGKILL the real `eqs-proxy` binary in the middle of a send load, restart it on
//! the same database, and find every message whose send was acknowledged.

use std::{
    collections::HashSet,
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use exo_sdk::{QueueClient, QueueOptions, Receive, RetryPolicy};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
};

/// Starts the proxy on an ephemeral port and returns it with its URL (read from its JSON log).
async fn spawn_proxy(db: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eqs-proxy"))
        .args(["--backend", "embedded", "--listen", "127.0.0.1:0", "--log-format", "json", "--db"])
        .arg(db)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("eqs-proxy starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            if event["message"] == "eqs-proxy ready" {
                return event["addr"].as_str().unwrap().to_owned();
            }
        }
        panic!("eqs-proxy exited before it was ready");
    })
    .await
    .expect("eqs-proxy ready in time");
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, format!("http://{addr}"))
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
