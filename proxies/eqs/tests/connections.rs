//! Connections that misbehave, over real sockets against an in-process eqs proxy: a client that
//! never finishes its request headers is closed after `server.header-read-timeout`, and 2000 idle
//! connections neither lock other clients out nor slow them down, and an HTTP/2 peer that stops
//! answering pings is closed after `server.http2-keepalive-timeout`.

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

/// Reads HTTP/2 frames (9-byte header, then the payload) until the connection ends; the types
/// seen, in order.
async fn frame_types_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut types = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        loop {
            let mut header = [0u8; 9];
            if stream.read_exact(&mut header).await.is_err() {
                return;
            }
            let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let mut payload = vec![0u8; length];
            if stream.read_exact(&mut payload).await.is_err() {
                return;
            }
            types.push(header[3]);
        }
    })
    .await
    .is_ok();
    (types, closed)
}

#[tokio::test]
async fn an_http2_peer_that_does_not_answer_pings_is_closed() {
    const PING: u8 = 6;
    let mut config = EqsConfig::default();
    config.server.http2_keepalive_interval = Duration::from_millis(300);
    config.server.http2_keepalive_timeout = Duration::from_millis(300);
    let (addr, _stop) = common::start(config).await;
    // An HTTP/2 client (preface and empty SETTINGS) that then reads but never answers anything:
    // a peer gone silent behind a NAT or a dead pod, which TCP alone would not notice for hours.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    silent.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    let started = Instant::now();
    let (types, closed) = frame_types_until_closed(&mut silent, Duration::from_secs(10)).await;
    let waited = started.elapsed();
    assert!(closed, "still open after 10 s; frames {types:?}");
    assert!(types.contains(&PING), "the proxy pinged before closing: frames {types:?}");
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );

    // A peer that answers (any HTTP/2 client does) stays connected across several intervals.
    let client = QueueClient::connect(&format!("http://{addr}")).unwrap().with_retry(RetryPolicy::none());
    client.create_queue("alive", QueueOptions::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client.create_queue("still-alive", QueueOptions::default()).await.unwrap();
}
