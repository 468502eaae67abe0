//! Connections that misbehave, over real sockets against an in-process eqs proxy: a client that
//! never finishes its request headers, or sends nothing at all (or only the HTTP/2 preface), is
//! closed after `server.header-read-timeout`; a connection idle for `server.idle-timeout` is
//! closed; 2000 idle connections neither lock other clients out nor slow them down, nor do
//! silent connections filling the whole connection cap; and an HTTP/2 peer that stops
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
async fn a_request_body_that_stops_arriving_is_a_retryable_timeout_and_sends_nothing() {
    let mut config = EqsConfig::default();
    config.server.body_idle_timeout = Duration::from_secs(1);
    let (addr, _stop) = common::start(config).await;
    let client = QueueClient::connect(&format!("http://{addr}")).unwrap().with_retry(RetryPolicy::none());
    client.create_queue("stalled", QueueOptions::default()).await.unwrap();
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    let body = r#"{"message": {"body": "eA=="}}"#;
    let head = format!(
        "POST /api/v1/queues/stalled/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len() + 100
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(body.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(answer.contains(r#""reason":"TIMEOUT""#) && answer.contains(r#""retryable":true"#), "{answer}");
    assert!(answer.contains("body-idle-timeout"), "{answer}");
    let info = client.queue_info("stalled").await.unwrap();
    assert_eq!(info.visible_messages, 0, "a stalled send stored a message");
}

#[tokio::test]
async fn a_request_refused_for_its_token_is_answered_after_its_small_body_without_a_reset() {
    const DATA: u8 = 0;
    const HEADERS: u8 = 1;
    const RST_STREAM: u8 = 3;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "the-token\n").unwrap();
    let mut config = EqsConfig::default();
    config.server.auth_token = Some(exo_proxy_core::secret::SecretRef::File(token));
    let (addr, _stop) = common::start(config).await;
    // HTTP/2 (prior knowledge): a POST without the token, its body sent a moment after its
    // headers, as a client does when the body is not ready with them.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut start = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec();
    let block = [
        &[0x83, 0x86, 0x04, 14][..],
        b"/api/v1/queues",
        &[0x01, 9],
        b"localhost",
        &[0x0f, 0x10, 16],
        b"application/json",
    ]
    .concat();
    start.extend_from_slice(&[0, 0, block.len() as u8, HEADERS, 0x04, 0, 0, 0, 1]);
    start.extend_from_slice(&block);
    stream.write_all(&start).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let body = br#"{"name": "refused"}"#;
    let mut data = vec![0, 0, body.len() as u8, DATA, 0x01, 0, 0, 0, 1];
    data.extend_from_slice(body);
    // The server may have answered already (that is the defect): ignore a write error.
    let _ = stream.write_all(&data).await;
    let mut types = Vec::new();
    let mut status = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let mut header = [0u8; 9];
            if stream.read_exact(&mut header).await.is_err() {
                return;
            }
            let mut payload = vec![0u8; u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize];
            if stream.read_exact(&mut payload).await.is_err() {
                return;
            }
            if header[3] == HEADERS {
                status = payload.clone();
            }
            types.push(header[3]);
        }
    })
    .await;
    // :status 401 is not in HPACK's static table: a literal with name index 8 (":status"),
    // its value Huffman-coded ("401" is 0x68 0x01).
    assert!(
        status.starts_with(&[0x48, 0x82, 0x68, 0x01]),
        "no 401 answer: frames {types:?}, headers {status:?}"
    );
    assert!(!types.contains(&RST_STREAM), "the stream was reset after the answer: frames {types:?}");
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

/// Whether the server closes `stream` within `limit` (reads until EOF or an error), and how
/// long after `since`.
async fn closed_within(stream: &mut TcpStream, since: Instant, limit: Duration) -> Option<Duration> {
    let mut sink = Vec::new();
    match tokio::time::timeout(limit, stream.read_to_end(&mut sink)).await {
        Ok(_) => Some(since.elapsed()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn connections_that_send_nothing_or_only_the_preface_are_closed_and_idle_ones_too() {
    let mut config = EqsConfig::default();
    config.server.header_read_timeout = Duration::from_secs(1);
    config.server.idle_timeout = Duration::from_secs(2);
    let (addr, _stop) = common::start(config).await;
    let opened = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut preface = TcpStream::connect(addr).await.unwrap();
    preface.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    for (what, stream) in [("no byte", &mut silent), ("only the HTTP/2 preface", &mut preface)] {
        let closed = closed_within(stream, opened, Duration::from_secs(10)).await;
        let closed = closed.unwrap_or_else(|| panic!("a connection that sent {what} was open after 10 s"));
        assert!(
            closed >= Duration::from_millis(800) && closed < Duration::from_secs(4),
            "{what}: closed after {closed:?}"
        );
    }
    // An HTTP/2 connection that made one request, then went quiet (HTTP/1.1 keep-alive ones are
    // closed after header-read-timeout already): a GOAWAY after idle-timeout, then closed.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    let mut request = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec();
    // HEADERS (END_STREAM | END_HEADERS) on stream 1, HPACK without Huffman: GET, http,
    // :path /healthz, :authority localhost.
    let block = [&[0x82, 0x86, 0x04, 8][..], b"/healthz", &[0x01, 9], b"localhost"].concat();
    request.extend_from_slice(&[0, 0, block.len() as u8, 1, 0x05, 0, 0, 0, 1]);
    request.extend_from_slice(&block);
    kept.write_all(&request).await.unwrap();
    let sent = Instant::now();
    const HEADERS: u8 = 1;
    const GOAWAY: u8 = 7;
    let mut types = Vec::new();
    let mut goaway_after = None;
    while goaway_after.is_none() {
        let mut header = [0u8; 9];
        let read = tokio::time::timeout(Duration::from_secs(10), kept.read_exact(&mut header)).await;
        assert!(matches!(read, Ok(Ok(_))), "no GOAWAY for an idle HTTP/2 connection; frames {types:?}");
        let mut payload = vec![0u8; u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize];
        kept.read_exact(&mut payload).await.unwrap();
        types.push(header[3]);
        if header[3] == GOAWAY {
            goaway_after = Some(sent.elapsed());
        }
    }
    let waited = goaway_after.unwrap_or_default();
    assert!(types.contains(&HEADERS), "the request was answered before: frames {types:?}");
    assert!(
        waited >= Duration::from_millis(1800) && waited < Duration::from_secs(5),
        "GOAWAY after {waited:?}"
    );
    // A peer that takes no notice (answers no PING) is cut after the close grace.
    assert!(
        closed_within(&mut kept, sent, Duration::from_secs(10)).await.is_some(),
        "still open after the GOAWAY"
    );
}

#[tokio::test]
async fn silent_connections_filling_the_cap_do_not_keep_a_client_out() {
    exo_proxy_core::listener::raise_open_files_limit();
    let mut config = EqsConfig::default();
    config.server.max_connections = 64;
    let (addr, _stop) = common::start(config).await;
    let client = QueueClient::connect(&format!("http://{addr}")).unwrap().with_retry(RetryPolicy::none());
    client.create_queue("fair", QueueOptions::default()).await.unwrap();
    // Three times the cap in silent connections (some only say the HTTP/2 preface), and new
    // ones keep coming while a normal client calls on fresh connections.
    let mut silent = Vec::new();
    for i in 0..192 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        if i % 3 == 0 {
            let _ = stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        }
        silent.push(stream);
    }
    for round in 0..10 {
        for _ in 0..32 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        let fresh = QueueClient::connect(&format!("http://{addr}")).unwrap().with_retry(RetryPolicy::none());
        let started = Instant::now();
        fresh.send("fair", "past the silent ones").await.unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "round {round}: a call at the cap took {took:?}");
    }
    // The client that connected first and stays busy-ish keeps being served too.
    assert_eq!(client.list_queues("").await.unwrap(), ["fair"]);
    drop(silent);
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
