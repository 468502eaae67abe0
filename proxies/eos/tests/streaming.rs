//! The eos-proxy binary under load: objects far larger than its memory stream through it, a
//! crash in the middle of an upload leaves the previous version intact, and a gRPC upload that
//! ends without its finish message (what a cancelled client looks like) stores nothing.
//!
//! The large-object size defaults to 256 MiB; `EXO_TEST_OBJECT_MIB=2048 cargo test --release -p
//! eos --test streaming` runs the 2 GiB version (about a minute on the project machine).

use std::{
    path::Path,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use exo_sdk::{GetOptions, ObjectClient, PutOptions, Reason, RetryPolicy};
use futures::StreamExt as _;
use tokio::{
    io::{AsyncRead, ReadBuf},
    process::Child,
};

mod common;

/// Starts eos-proxy (fs backend under `root`) on an ephemeral port; returns it and its URL.
async fn spawn_proxy(root: &Path) -> (Child, String) {
    common::spawn_proxy(&["--backend".as_ref(), "fs".as_ref(), "--root".as_ref(), root.as_os_str()], &[])
        .await
}

fn byte_at(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// `len` bytes of a known pattern, produced on the fly (never held in memory), optionally slowly.
struct PatternReader {
    offset: u64,
    len: u64,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    slow: bool,
}

impl PatternReader {
    fn new(len: u64, slow: bool) -> Self {
        Self { offset: 0, len, pause: None, slow }
    }
}

impl AsyncRead for PatternReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.slow {
            if let Some(pause) = self.pause.as_mut()
                && pause.as_mut().poll(cx).is_pending()
            {
                return Poll::Pending;
            }
            self.pause = Some(Box::pin(tokio::time::sleep(Duration::from_millis(5))));
        }
        let n = (buf.remaining() as u64).min(self.len - self.offset).min(64 * 1024) as usize;
        let start = self.offset;
        let chunk: Vec<u8> = (0..n as u64).map(|i| byte_at(start + i)).collect();
        buf.put_slice(&chunk);
        self.offset += n as u64;
        Poll::Ready(Ok(()))
    }
}

use std::future::Future as _;

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_stream_through_in_bounded_memory() {
    let mib: u64 = std::env::var("EXO_TEST_OBJECT_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let size = mib * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let (mut proxy, url) = spawn_proxy(dir.path()).await;
    let pid = proxy.id().unwrap();
    let client = ObjectClient::connect(&url).unwrap().with_retry(RetryPolicy::none());
    client.create_bucket("big").await.unwrap();

    let options = PutOptions { content_length: Some(size), ..Default::default() };
    let info = client.put("big", "blob", PatternReader::new(size, false), options).await.unwrap();
    assert_eq!(info.size, size);

    let (header, body) = client.get("big", "blob", GetOptions::default()).await.unwrap();
    assert_eq!(header.length, size);
    let mut body = std::pin::pin!(body);
    let mut offset = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        for (i, byte) in chunk.iter().enumerate() {
            assert_eq!(*byte, byte_at(offset + i as u64), "byte {} differs", offset + i as u64);
        }
        offset += chunk.len() as u64;
    }
    assert_eq!(offset, size, "download length");

    let peak = peak_rss_kib(pid);
    assert!(peak < 64 * 1024, "proxy peak RSS {} MiB for a {mib} MiB object (limit 64 MiB)", peak / 1024);
    eprintln!("{mib} MiB up and down through eos-proxy; proxy peak RSS {:.1} MiB", peak as f64 / 1024.0);
    proxy.start_kill().unwrap();
    let _ = proxy.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_upload_keeps_the_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let (mut proxy, url) = spawn_proxy(dir.path()).await;
    let client = ObjectClient::connect(&url).unwrap().with_retry(RetryPolicy::none());
    client.create_bucket("crash").await.unwrap();
    let previous = client.put_bytes("crash", "doc", "version 1", PutOptions::default()).await.unwrap();

    // A slow 200 MiB replacement, killed after a few MiB have reached the proxy.
    let upload = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .put("crash", "doc", PatternReader::new(200 * 1024 * 1024, true), PutOptions::default())
                .await
        })
    };
    let tmp = dir.path().join("tmp");
    let started = std::time::Instant::now();
    loop {
        let in_progress: u64 =
            std::fs::read_dir(&tmp).unwrap().flatten().map(|e| e.metadata().unwrap().len()).sum();
        if in_progress > 2 * 1024 * 1024 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "upload never reached the proxy's disk");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.start_kill().unwrap();
    let _ = proxy.wait().await;
    assert!(upload.await.unwrap().is_err(), "an upload cut by a crash reported success");

    let (mut proxy, url) = spawn_proxy(dir.path()).await;
    let client = ObjectClient::connect(&url).unwrap().with_retry(RetryPolicy::none());
    let (header, bytes) = client.get_bytes("crash", "doc", GetOptions::default()).await.unwrap();
    assert_eq!(bytes, b"version 1");
    assert_eq!(header.info.unwrap().etag, previous.etag);
    let (objects, _) = client.list("crash", "", "").await.unwrap();
    assert_eq!(objects.len(), 1);
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "the partial upload was not cleaned up");
    let blobs: usize = std::fs::read_dir(dir.path().join("blobs"))
        .unwrap()
        .flatten()
        .map(|d| std::fs::read_dir(d.path()).unwrap().count())
        .sum();
    assert_eq!(blobs, 1, "orphan blobs remain");
    proxy.start_kill().unwrap();
    let _ = proxy.wait().await;
}

#[tokio::test]
async fn a_grpc_upload_without_finish_stores_nothing() {
    use exo_proto::object::v1::{self as pb, put_request::Part};
    let dir = tempfile::tempdir().unwrap();
    let (mut proxy, url) = spawn_proxy(dir.path()).await;
    let client = ObjectClient::connect(&url).unwrap().with_retry(RetryPolicy::none());
    client.create_bucket("unfinished").await.unwrap();
    let header = pb::PutHeader { bucket: "unfinished".into(), key: "k".into(), ..Default::default() };
    let messages = vec![
        pb::PutRequest { part: Some(Part::Header(header)), finish: false },
        pb::PutRequest { part: Some(Part::Chunk(bytes::Bytes::from_static(b"partial"))), finish: false },
    ];
    let result = client.raw().put(futures::stream::iter(messages)).await;
    let err = exo_sdk::Error::from(result.unwrap_err());
    assert!(err.message.contains("finish"), "{err}");
    let missing = client.head("unfinished", "k").await.unwrap_err();
    assert_eq!(missing.reason, Reason::ObjectNotFound);
    proxy.start_kill().unwrap();
    let _ = proxy.wait().await;
}
