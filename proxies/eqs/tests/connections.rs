//! Connections that misbehave, over real sockets against an in-process eqs proxy: a client that
//! never finishes its request headers is closed after `server.header-read-timeout`, and 2000 idle
//! connections neither lock other clients out nor slow them down.

use std::time::{Duration, Instant};

use eqs::config::EqsConfig;
use exo_sdk::{QueueClient, QueueOptions, RetryPolicy};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

mod common;

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_closed() {
    let mut config = EqsConfig::default();
    config.server.header_read_timeout = Duration::from_secs(1);
    let (addr, _stop) = common::start(config).await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: loc").await.unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection was still open after 10 s");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"), "an unfinished request was served");

    let client = QueueClient::connect(&format!("http://{addr}")).unwrap().with_retry(RetryPolicy::none());
    client.create_queue("after", QueueOptions::default()).await.unwrap();
}

#[tokio::test]
async fn two_thousand_idle_connections_do_not_lock_others_out() {
    exo_proxy_core::listener::raise_open_files_limit();
    let (addr, _stop) = common::start(EqsConfig::default()).await;
    let client = QueueClient::connect(&format!("http://{addr}")).unwrap().with_retry(RetryPolicy::none());
    client.create_queue("busy", QueueOptions::default()).await.unwrap();

    let mut idle = Vec::with_capacity(2000);
    for _ in 0..2000 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // A fresh client (a new connection behind 2000 idle ones) is served at once.
    let fresh = QueueClient::connect(&format!("http://{addr}")).unwrap().with_retry(RetryPolicy::none());
    let started = Instant::now();
    fresh.send("busy", "through the crowd").await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "a call behind 2000 idle connections took {took:?}");
    assert_eq!(client.list_queues("").await.unwrap(), ["busy"]);
    drop(idle);
}
