//! A `remote` backend whose remote is not there yet when it opens (the standalone proxy starts
//! after the edge, or is down for now): the backend opens, is not ready, forwards nothing and
//! answers BACKEND_UNAVAILABLE (retryable) until the remote has described itself; a failover
//! chain with such a member serves from its other members meanwhile; once the remote is up,
//! calls go through and the descriptions are the remote's.

use std::{sync::Arc, time::Duration};

use eqs::ops;
use eqs::{
    EqsProxy,
    api::QueueApi,
    backend::Queue,
    config::EqsConfig,
    model::QueueName,
    services::{failover::FailoverQueue, memory::MemoryQueue, remote::RemoteQueue},
};
use exo_proto::{common::v1::ErrorReason, queue::v1 as pb};
use exo_proxy_core::ExoError;
use exo_remote::RemoteConfig;

fn message(body: &str) -> pb::OutgoingMessage {
    pb::OutgoingMessage { body: body.as_bytes().to_vec(), ..Default::default() }
}

fn options() -> pb::QueueOptions {
    pb::QueueOptions { visibility_timeout_seconds: Some(30), retention_seconds: 3600, ..Default::default() }
}

fn assert_unavailable(err: ExoError, what: &str) {
    assert_eq!((err.reason, err.retryable), (ErrorReason::BackendUnavailable, true), "{what}: {err:?}");
}

/// Serves eqs over a memory backend (messages up to `max_message_bytes`) on `port`.
async fn serve_on(port: u16, max_message_bytes: u64) -> tokio::sync::oneshot::Sender<()> {
    let mut config = EqsConfig::default();
    config.server.listen = format!("127.0.0.1:{port}").parse().unwrap();
    let proxy = EqsProxy::bind_with(&config, Arc::new(MemoryQueue::new(max_message_bytes))).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(proxy.serve(async move {
        let _ = stopped.await;
    }));
    stop
}

#[tokio::test]
async fn a_remote_down_at_start_is_waited_for_and_a_chain_with_it_serves_meanwhile() {
    // A port nothing listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = RemoteConfig {
        url: format!("http://127.0.0.1:{port}"),
        connect_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let remote = Arc::new(RemoteQueue::connect(&config).await.expect("opens while its remote is down"));
    // A second one that is never probed for readiness: only its calls can bring it round.
    let unprobed = RemoteQueue::connect(&config).await.unwrap();
    let q = QueueName::parse("queue", "orders", "q").unwrap();

    assert!(!remote.is_described());
    assert_unavailable(remote.ready().await.unwrap_err(), "readiness");
    assert_unavailable(
        remote.create_queue(ops::CreateQueue { queue: &q, options: &options() }).await.unwrap_err(),
        "a call",
    );
    assert_unavailable(QueueApi::new(remote.clone()).describe().unwrap_err(), "Describe");

    // A chain with the unreached remote first serves from its other member, described by it.
    let local = Arc::new(MemoryQueue::new(4096));
    let chain = FailoverQueue::new(vec![remote.clone(), local.clone()]).unwrap();
    assert!(chain.is_described());
    assert_eq!(chain.descriptor().limits, local.descriptor().limits);
    assert_eq!(chain.descriptor().capabilities, local.descriptor().capabilities);
    // (Creating a queue needs every member, so a switch finds it: it exists here already.)
    local.create_queue(ops::CreateQueue { queue: &q, options: &options() }).await.unwrap();
    chain.send(ops::Send { queue: &q, messages: vec![message("meanwhile")] }).await.unwrap();
    assert_eq!(local.queue_info(ops::QueueInfo { queue: &q }).await.unwrap().visible_messages, 1);

    // The remote comes up, with a smaller message limit than the local member.
    let _serving = serve_on(port, 1024).await;
    let mut ready = remote.ready().await;
    for _ in 0..50 {
        if ready.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        ready = remote.ready().await;
    }
    ready.expect("ready once the remote is up");
    assert!(remote.is_described());
    assert_eq!(remote.descriptor().limits.max_message_bytes, 1024, "the remote's own limits");
    assert!(QueueApi::new(remote.clone()).describe().is_ok());
    remote.create_queue(ops::CreateQueue { queue: &q, options: &options() }).await.unwrap();
    remote.send(ops::Send { queue: &q, messages: vec![message("through")] }).await.unwrap();
    assert_eq!(remote.queue_info(ops::QueueInfo { queue: &q }).await.unwrap().visible_messages, 1);
    // The chain's description now takes the remote's smaller limit into account.
    assert_eq!(chain.descriptor().limits.max_message_bytes, 1024);

    // The unprobed one: its first call answers UNAVAILABLE and asks; a retry goes through.
    assert_unavailable(
        unprobed.queue_info(ops::QueueInfo { queue: &q }).await.unwrap_err(),
        "the first call",
    );
    let mut info = unprobed.queue_info(ops::QueueInfo { queue: &q }).await;
    for _ in 0..50 {
        if info.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        info = unprobed.queue_info(ops::QueueInfo { queue: &q }).await;
    }
    assert_eq!(info.expect("a retry goes through").visible_messages, 1);
}

#[tokio::test]
async fn a_rotated_token_file_is_sent_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "first-token\n").unwrap();
    let secret =
        exo_proxy_core::secret::SecretRef::try_from(format!("file:{}", token_file.display())).unwrap();
    // The remote reads the same file for the token it expects.
    let mut server = EqsConfig::default();
    server.server.auth_token = Some(secret.clone());
    let (addr, _stop) = serve(server).await;
    let config = RemoteConfig { url: format!("http://{addr}"), token: Some(secret), ..Default::default() };
    let remote = RemoteQueue::connect(&config).await.unwrap();
    let q = QueueName::parse("queue", "rotated", "q").unwrap();
    remote
        .create_queue(ops::CreateQueue { queue: &q, options: &options() })
        .await
        .expect("the first token gets in");

    std::fs::write(&token_file, "second-token\n").unwrap();
    // Wait until the remote expects the new token: a client still sending the old one is refused.
    let old = RemoteConfig {
        token: Some(
            exo_proxy_core::secret::SecretRef::try_from("env:EXO_TEST_OLD_TOKEN".to_owned()).unwrap(),
        ),
        ..config.clone()
    };
    // SAFETY: no other thread of this test process reads or writes this variable.
    unsafe { std::env::set_var("EXO_TEST_OLD_TOKEN", "first-token") };
    let started = std::time::Instant::now();
    loop {
        match RemoteQueue::connect(&old).await {
            Err(refused) => {
                assert_eq!(refused.reason, ErrorReason::Unauthenticated, "{refused:?}");
                break;
            }
            Ok(_) if started.elapsed() < Duration::from_secs(15) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Ok(_) => panic!("the remote still takes the old token after 15 s"),
        }
    }
    // The edge, never restarted, reads the new token from the file too.
    let started = std::time::Instant::now();
    let mut sent = remote.send(ops::Send { queue: &q, messages: vec![message("after")] }).await;
    while sent.is_err() && started.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        sent = remote.send(ops::Send { queue: &q, messages: vec![message("after")] }).await;
    }
    sent.expect("the edge sends the rotated token");
}

/// Serves `config` over a memory backend on an ephemeral loopback port.
async fn serve(mut config: EqsConfig) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    let proxy = EqsProxy::bind_with(&config, Arc::new(MemoryQueue::new(1024))).await.unwrap();
    let addr = proxy.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(proxy.serve(async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

#[tokio::test]
async fn an_srv_name_that_does_not_resolve_yet_opens_not_ready() {
    // A DNS server that is not there (nothing on that UDP/TCP port): the service is not
    // registered yet, as when Consul has not caught up.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = RemoteConfig {
        url: "srv:_eqs._tcp.not-yet.exo.test".into(),
        nameserver: Some(silent),
        connect_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let remote = RemoteQueue::connect(&config).await.expect("opens while its name does not resolve");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by connect-timeout: {:?}",
        started.elapsed()
    );
    assert!(!remote.is_described());
    assert_unavailable(remote.ready().await.unwrap_err(), "readiness");
    let q = QueueName::parse("queue", "orders", "q").unwrap();
    let err = remote.send(ops::Send { queue: &q, messages: vec![message("x")] }).await.unwrap_err();
    assert!(err.message.contains("not been reached yet"), "{err:?}");
    assert_unavailable(err, "a call");
}
