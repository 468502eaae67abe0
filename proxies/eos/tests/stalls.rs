//! Clients that stop halfway, against the eos-proxy binary (fs backend) over raw sockets: an
//! upload whose body stops coming is cut after `server.body-idle-timeout` and stores nothing (the
//! previous version stays); a download whose client stops reading is cut after
//! `server.write-stall-timeout`; the proxy serves everyone else throughout.

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

mod common;

const SETTINGS: &str = "server:\n  body-idle-timeout: 1s\n  write-stall-timeout: 1s\n";

async fn spawn(root: &std::path::Path) -> (tokio::process::Child, String) {
    common::spawn_proxy(
        &[
            "--backend".as_ref(),
            "fs".as_ref(),
            "--root".as_ref(),
            root.as_os_str(),
            "--config-yaml".as_ref(),
            SETTINGS.as_ref(),
        ],
        &[],
    )
    .await
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn an_upload_that_stops_sending_is_cut_and_stores_nothing() {
    let root = tempfile::tempdir().unwrap();
    let (_proxy, url) = spawn(root.path()).await;
    let http = reqwest::Client::new();
    let create = http.post(format!("{url}/api/v1/buckets")).json(&serde_json::json!({"name": "stall"}));
    assert!(create.send().await.unwrap().status().is_success());
    let object = format!("{url}/api/v1/buckets/stall/objects/report.bin");
    assert!(http.put(&object).body("previous").send().await.unwrap().status().is_success());

    // Announce 1 MiB, send 1 KiB, then nothing (the socket stays open).
    let mut stalled = TcpStream::connect(host_port(&url)).await.unwrap();
    let head = format!(
        "PUT /api/v1/buckets/stall/objects/report.bin HTTP/1.1\r\nhost: x\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n",
        1024 * 1024
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(&[7u8; 1024]).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), stalled.read_to_end(&mut answer)).await;
    let waited = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(waited < Duration::from_secs(10), "the stalled upload held on for {waited:?}");
    assert!(!answer.starts_with("HTTP/1.1 2"), "a stalled upload was acknowledged: {answer}");

    // Nothing of it was stored: the previous version is whole, and the proxy serves on.
    let body = http.get(&object).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(&body[..], b"previous");
}

#[tokio::test]
async fn a_download_whose_client_stops_reading_is_cut() {
    let root = tempfile::tempdir().unwrap();
    let (_proxy, url) = spawn(root.path()).await;
    let http = reqwest::Client::new();
    let create = http.post(format!("{url}/api/v1/buckets")).json(&serde_json::json!({"name": "big"}));
    assert!(create.send().await.unwrap().status().is_success());
    let size = 64 * 1024 * 1024;
    let put =
        http.put(format!("{url}/api/v1/buckets/big/objects/large.bin")).body(vec![1u8; size]).send().await;
    assert!(put.unwrap().status().is_success());

    let mut reader = TcpStream::connect(host_port(&url)).await.unwrap();
    reader.write_all(b"GET /api/v1/buckets/big/objects/large.bin HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut first = vec![0u8; 64 * 1024];
    let n = reader.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    // Stop reading well past the stall limit: the proxy's writes wait on a full socket, then give up.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), reader.read_to_end(&mut rest)).await;
    assert!(
        (n + rest.len()) < size,
        "the whole object arrived ({} bytes) although the client stalled past write-stall-timeout",
        n + rest.len()
    );
    // The proxy serves on.
    let status = http.get(format!("{url}/healthz")).send().await.unwrap().status();
    assert!(status.is_success());
}

/// Reads one HTTP/1.1 answer (head and a Content-Length body) off `socket`: status, head text.
async fn answer(socket: &mut TcpStream) -> (u16, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "the connection closed before an answer: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                let status = head[9..12].parse().unwrap();
                return (status, head);
            }
        }
    }
}

/// An upload refused before its body is read (a missing bucket) leaves the connection usable
/// when the body is small (the rest is read and dropped), and otherwise says `Connection: close`
/// instead of closing it under the client's next request.
#[tokio::test]
async fn an_upload_refused_up_front_leaves_the_connection_usable_or_says_it_closes() {
    let root = tempfile::tempdir().unwrap();
    let (_proxy, url) = spawn(root.path()).await;
    let mut socket = TcpStream::connect(host_port(&url)).await.unwrap();
    let put = |size: usize| {
        let mut request =
            format!("PUT /api/v1/buckets/no-such-bucket/objects/k HTTP/1.1\r\nhost: x\r\ncontent-length: {size}\r\n\r\n")
                .into_bytes();
        request.extend(std::iter::repeat_n(b'x', size));
        request
    };
    socket.write_all(&put(100)).await.unwrap();
    let (status, head) = answer(&mut socket).await;
    assert_eq!(status, 404, "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    socket.write_all(b"GET /api/v1/buckets HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    assert_eq!(answer(&mut socket).await.0, 200, "the same connection serves the next request");

    // A client waiting for 100 Continue is answered without being asked for its body.
    let mut socket = TcpStream::connect(host_port(&url)).await.unwrap();
    socket
        .write_all(
            b"PUT /api/v1/buckets/no-such-bucket/objects/k HTTP/1.1\r\nhost: x\r\ncontent-length: 500000\r\nexpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let (status, head) = answer(&mut socket).await;
    assert_eq!(status, 404, "answered before the body, not 100 Continue: {head}");

    // A body past what is drained: the answer says the connection closes.
    let mut socket = TcpStream::connect(host_port(&url)).await.unwrap();
    socket.write_all(&put(200_000)).await.unwrap();
    let (status, head) = answer(&mut socket).await;
    assert_eq!(status, 404, "{head}");
    assert!(head.contains("connection: close"), "{head}");
}
