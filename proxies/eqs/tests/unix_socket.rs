//! The real `eqs-proxy` serving a Unix socket beside its TCP port: the SDK over `unix:`, the
//! HTTP/JSON API over the same socket, the bearer token still required, the file's mode, a
//! live socket refused, a stale one (kill -9) replaced, the file removed on a clean stop.

mod binary;

use std::{os::unix::fs::PermissionsExt as _, path::Path, process::Stdio, time::Duration};

use exo_sdk::{Auth, QueueClient, QueueOptions, Reason, Receive};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const TOKEN: &str = "unix-socket-test-token";

async fn spawn_on(socket: &Path) -> (tokio::process::Child, String) {
    binary::spawn_proxy(|command| {
        command
            .args(["--backend", "memory", "--unix-socket"])
            .arg(socket)
            .env("EXO_CONFIG_YAML", "server:\n  auth-token: env:EQS_UNIX_TEST_TOKEN\n")
            .env("EQS_UNIX_TEST_TOKEN", TOKEN);
    })
    .await
}

/// One HTTP/1.1 request over the socket, the whole response as text.
async fn http_over(socket: &Path, request: &str) -> String {
    let mut stream = tokio::net::UnixStream::connect(socket).await.expect("connect to the socket");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .expect("the proxy answers in time")
        .unwrap();
    response
}

#[tokio::test]
async fn the_sdk_and_http_reach_the_proxy_over_its_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("eqs.sock");
    let (mut proxy, _tcp) = spawn_on(&socket).await;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "the default socket mode is the proxy's user and group");

    let url = format!("unix:{}", socket.display());
    let queues = QueueClient::connect(&url).unwrap().with_auth(Auth::bearer(TOKEN).unwrap()).unwrap();
    queues.create_queue("over-uds", QueueOptions::default()).await.unwrap();
    queues.send("over-uds", b"through the socket".to_vec()).await.unwrap();
    let got = queues.receive("over-uds", Receive::up_to(1).wait(Duration::from_secs(1))).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, b"through the socket");
    queues.ack("over-uds", &got[0].receipt).await.unwrap();

    // gRPC's spelling of the same endpoint works too.
    let triple = QueueClient::connect(&format!("unix://{}", socket.display()))
        .unwrap()
        .with_auth(Auth::bearer(TOKEN).unwrap())
        .unwrap();
    assert_eq!(triple.list_queues("").await.unwrap(), ["over-uds"]);

    // The token is still required on the socket: its file mode is not the only gate.
    let anonymous = QueueClient::connect(&url).unwrap().with_auth(Auth::none()).unwrap();
    let err = anonymous.send("over-uds", b"x".to_vec()).await.unwrap_err();
    assert_eq!(err.reason, Reason::Unauthenticated, "{err:?}");

    // HTTP/JSON over the same socket; the probes stay open.
    let health = http_over(&socket, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"), "{health}");
    let describe = http_over(
        &socket,
        &format!("GET /api/v1/describe HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(describe.starts_with("HTTP/1.1 200") && describe.contains("\"memory\""), "{describe}");

    // A second proxy on the same socket is refused, and the first keeps serving.
    let second = tokio::process::Command::new(env!("CARGO_BIN_EXE_eqs-proxy"))
        .args(["--backend", "memory", "--listen", "127.0.0.1:0", "--unix-socket"])
        .arg(&socket)
        .stdout(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another process is serving on this socket"), "{stderr}");
    assert_eq!(queues.list_queues("").await.unwrap().len(), 1);

    // A clean stop removes the socket file.
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(proxy.id().unwrap() as i32, libc::SIGTERM) };
    let status = tokio::time::timeout(Duration::from_secs(10), proxy.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    assert!(!socket.exists(), "a cleanly stopped proxy left its socket file");
}

#[tokio::test]
async fn a_socket_left_by_a_killed_proxy_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("eqs.sock");
    let (mut first, _) = spawn_on(&socket).await;
    first.kill().await.unwrap(); // SIGKILL: no chance to remove the file
    assert!(socket.exists(), "kill -9 leaves the socket file behind");

    let (_second, _) = spawn_on(&socket).await;
    let queues = QueueClient::connect(&format!("unix:{}", socket.display()))
        .unwrap()
        .with_auth(Auth::bearer(TOKEN).unwrap())
        .unwrap();
    queues.create_queue("after-restart", QueueOptions::default()).await.unwrap();
    assert_eq!(queues.list_queues("").await.unwrap().len(), 1);

    // A path that is not a socket is never deleted to make room.
    let file = dir.path().join("precious");
    std::fs::write(&file, b"data").unwrap();
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_eqs-proxy"))
        .args(["--backend", "memory", "--listen", "127.0.0.1:0", "--unix-socket"])
        .arg(&file)
        .stdout(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is not a socket"));
    assert_eq!(std::fs::read(&file).unwrap(), b"data");
}

#[tokio::test]
async fn the_sdk_names_a_missing_socket_and_refuses_a_relative_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nobody.sock");
    let queues = QueueClient::connect(&format!("unix:{}", missing.display()))
        .unwrap()
        .with_retry(exo_sdk::RetryPolicy::none());
    let err = queues.list_queues("").await.unwrap_err();
    assert!(err.retryable, "an absent proxy is worth retrying: {err:?}");
    assert!(err.message.contains("nobody.sock"), "the error names the socket: {err:?}");
    let err = QueueClient::connect("unix:relative.sock").unwrap_err();
    assert_eq!(err.reason, Reason::InvalidArgument, "{err:?}");
}

#[tokio::test]
async fn a_proxy_started_while_another_drains_keeps_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("eqs.sock");
    let (mut old, _) = spawn_on(&socket).await;
    let url = format!("unix:{}", socket.display());
    let queues = QueueClient::connect(&url).unwrap().with_auth(Auth::bearer(TOKEN).unwrap()).unwrap();
    queues.create_queue("draining", QueueOptions::default()).await.unwrap();
    // A long poll keeps the old proxy draining after SIGTERM.
    let polling = tokio::spawn({
        let queues = queues.clone();
        async move { queues.receive("draining", Receive::up_to(1).wait(Duration::from_secs(5))).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(old.id().unwrap() as i32, libc::SIGTERM) };
    let mut gone = false;
    for _ in 0..40 {
        if !socket.exists() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the draining proxy keeps its socket file once it stopped accepting");
    assert!(old.try_wait().unwrap().is_none(), "the old proxy is still draining its long poll");

    let (_new, _) = spawn_on(&socket).await;
    let _ = polling.await;
    let status = tokio::time::timeout(Duration::from_secs(10), old.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    assert!(socket.exists(), "the old proxy removed its successor's socket when it exited");
    let fresh = QueueClient::connect(&url).unwrap().with_auth(Auth::bearer(TOKEN).unwrap()).unwrap();
    fresh.create_queue("after-handover", QueueOptions::default()).await.unwrap();
}
