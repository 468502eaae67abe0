//! A failover chain switches writes to the standby when the primary fails, drains every member
//! so nothing written before the switch is stranded, routes acks by receipt, and fails back.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use eqs::ops;
use eqs::{
    backend::Queue,
    model::{Descriptor, QueueName, ReceiveParams},
    services::{failover::FailoverQueue, memory::MemoryQueue},
};
use exo_proto::queue::v1 as pb;
use exo_proxy_core::{ExoError, ExoResult};

/// A memory queue that can be switched off (every call then fails as unreachable) or made to
/// hang (every call then waits longer than any test).
struct Switchable {
    inner: MemoryQueue,
    down: AtomicBool,
    slow: AtomicBool,
}

impl Switchable {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryQueue::new(1024),
            down: AtomicBool::new(false),
            slow: AtomicBool::new(false),
        })
    }

    async fn check(&self) -> ExoResult<()> {
        if self.slow.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        if self.down.load(Ordering::SeqCst) { Err(ExoError::unavailable("switched off")) } else { Ok(()) }
    }
}

#[async_trait]
impl Queue for Switchable {
    fn descriptor(&self) -> &Descriptor {
        self.inner.descriptor()
    }
    async fn ready(&self) -> ExoResult<()> {
        self.check().await
    }
    async fn create_queue(&self, op: ops::CreateQueue<'_>) -> ExoResult<(bool, pb::QueueInfo)> {
        self.check().await?;
        self.inner.create_queue(op).await
    }
    async fn delete_queue(&self, op: ops::DeleteQueue<'_>) -> ExoResult<()> {
        self.check().await?;
        self.inner.delete_queue(op).await
    }
    async fn list_queues(&self, op: ops::ListQueues<'_>) -> ExoResult<Vec<String>> {
        self.check().await?;
        self.inner.list_queues(op).await
    }
    async fn queue_info(&self, op: ops::QueueInfo<'_>) -> ExoResult<pb::QueueInfo> {
        self.check().await?;
        self.inner.queue_info(op).await
    }
    async fn send(&self, op: ops::Send<'_>) -> ExoResult<Vec<ExoResult<String>>> {
        self.check().await?;
        self.inner.send(op).await
    }
    async fn receive(&self, op: ops::Receive<'_>) -> ExoResult<Vec<pb::Message>> {
        self.check().await?;
        self.inner.receive(op).await
    }
    async fn ack(&self, op: ops::Ack<'_>) -> ExoResult<()> {
        self.check().await?;
        self.inner.ack(op).await
    }
    async fn change_visibility(&self, op: ops::ChangeVisibility<'_>) -> ExoResult<()> {
        self.check().await?;
        self.inner.change_visibility(op).await
    }
    async fn purge(&self, op: ops::Purge<'_>) -> ExoResult<()> {
        self.check().await?;
        self.inner.purge(op).await
    }
}

fn message(body: &str) -> pb::OutgoingMessage {
    pb::OutgoingMessage { body: body.as_bytes().to_vec(), ..Default::default() }
}

async fn drain(chain: &FailoverQueue, q: &QueueName) -> Vec<pb::Message> {
    let params = ReceiveParams { max_messages: 10, wait: Duration::ZERO, visibility_seconds: Some(60) };
    chain.receive(ops::Receive { queue: q, params }).await.unwrap()
}

#[tokio::test]
async fn switch_drain_and_fail_back_lose_nothing() {
    let primary = Switchable::new();
    let standby = Switchable::new();
    let chain = FailoverQueue::new(vec![primary.clone(), standby.clone()])
        .unwrap()
        .with_backoff(Duration::from_millis(200));
    let q = QueueName::parse("queue", "orders", "q").unwrap();
    chain
        .create_queue(ops::CreateQueue {
            queue: &q,
            options: &pb::QueueOptions {
                visibility_timeout_seconds: Some(30),
                retention_seconds: 3600,
                ..Default::default()
            },
        })
        .await
        .unwrap();

    chain.send(ops::Send { queue: &q, messages: vec![message("before")] }).await.unwrap();
    assert_eq!(
        primary.inner.queue_info(ops::QueueInfo { queue: &q }).await.unwrap().visible_messages,
        1,
        "writes go to the primary"
    );

    primary.down.store(true, Ordering::SeqCst);
    chain.send(ops::Send { queue: &q, messages: vec![message("during")] }).await.unwrap();
    assert_eq!(
        standby.inner.queue_info(ops::QueueInfo { queue: &q }).await.unwrap().visible_messages,
        1,
        "writes switch to the standby"
    );
    let during = drain(&chain, &q).await;
    assert_eq!(during.iter().map(|m| m.body.as_slice()).collect::<Vec<_>>(), vec![b"during".as_slice()]);
    chain.ack(ops::Ack { queue: &q, receipt: &during[0].receipt }).await.unwrap();

    // The primary heals; after the back-off, writes fail back to it.
    primary.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(250)).await;
    chain.send(ops::Send { queue: &q, messages: vec![message("after")] }).await.unwrap();
    assert_eq!(
        standby.inner.queue_info(ops::QueueInfo { queue: &q }).await.unwrap().visible_messages,
        0,
        "no write after fail-back went to the standby"
    );

    let rest = drain(&chain, &q).await;
    let bodies: HashSet<&[u8]> = rest.iter().map(|m| m.body.as_slice()).collect();
    assert_eq!(
        bodies,
        HashSet::from([b"before".as_slice(), b"after".as_slice()]),
        "the message written before the switch was stranded"
    );
    for m in &rest {
        chain.ack(ops::Ack { queue: &q, receipt: &m.receipt }).await.unwrap();
    }
    assert!(drain(&chain, &q).await.is_empty());
    let bogus = chain.ack(ops::Ack { queue: &q, receipt: "9~whatever" }).await.unwrap_err();
    assert_eq!(bogus.reason, exo_proto::common::v1::ErrorReason::InvalidReceipt);
}

#[tokio::test]
async fn the_chain_declares_only_what_every_member_can_do() {
    let small = Arc::new(MemoryQueue::new(1000));
    let large = Arc::new(MemoryQueue::new(5000));
    let chain = FailoverQueue::new(vec![large, small]).unwrap();
    assert_eq!(chain.descriptor().limits.max_message_bytes, 1000, "the smallest inline limit in the chain");
    assert_eq!(chain.descriptor().backend, "failover");
}

/// A standby that hangs (messages it holds cannot be acknowledged) sets only itself aside: its
/// failures do not open a breaker for the whole chain, so the primary keeps serving sends,
/// receives and acks; each member's calls are counted under its own label.
#[tokio::test]
async fn a_slow_standby_never_stops_the_primary_and_each_member_is_measured() {
    let (primary, standby) = (Switchable::new(), Switchable::new());
    let metrics = exo_proxy_core::metrics::Metrics::shared();
    let member_timeout = Duration::from_millis(200);
    let members = eqs::services::failover::observe_members(
        vec![primary.clone(), standby.clone()],
        &metrics,
        member_timeout,
    );
    let chain = FailoverQueue::new(members)
        .unwrap()
        .with_member_timeout(member_timeout)
        .with_member_backoff(Duration::from_secs(60));
    // The proxy's own stack, default settings: a breaker that opens after 5 outages in a row.
    let config = eqs::config::EqsConfig::default();
    assert_eq!(config.server.breaker.failures, 5);
    let queue = eqs::layered(Arc::new(chain), metrics.clone(), &config);
    let q = QueueName::parse("queue", "orders", "q").unwrap();
    let options = pb::QueueOptions {
        visibility_timeout_seconds: Some(30),
        retention_seconds: 3600,
        ..Default::default()
    };
    queue.create_queue(ops::CreateQueue { queue: &q, options: &options }).await.unwrap();
    // Messages the standby took while the primary was out, waiting to be drained.
    let taken: Vec<_> = (0..8).map(|i| message(&format!("taken {i}"))).collect();
    standby.inner.send(ops::Send { queue: &q, messages: taken }).await.unwrap();
    let params = ReceiveParams { max_messages: 10, wait: Duration::ZERO, visibility_seconds: Some(60) };
    let drained = queue.receive(ops::Receive { queue: &q, params }).await.unwrap();
    assert_eq!(drained.len(), 8);

    // The standby hangs: every ack of its messages fails, the first on the member's deadline,
    // the others at once while it is set aside.
    standby.slow.store(true, Ordering::SeqCst);
    let clock = std::time::Instant::now();
    for message in &drained {
        let err = queue.ack(ops::Ack { queue: &q, receipt: &message.receipt }).await.unwrap_err();
        assert!(err.retryable, "{err:?}");
    }
    assert!(clock.elapsed() < member_timeout * 3, "acks waited on a member set aside: {:?}", clock.elapsed());
    // More outages than the breaker's threshold, and the primary still serves everything.
    let sent = queue.send(ops::Send { queue: &q, messages: vec![message("after")] }).await.unwrap();
    assert!(sent[0].is_ok(), "{sent:?}");
    let got = queue.receive(ops::Receive { queue: &q, params }).await.unwrap();
    assert_eq!(got.iter().map(|m| m.body.as_slice()).collect::<Vec<_>>(), [b"after".as_slice()]);
    queue.ack(ops::Ack { queue: &q, receipt: &got[0].receipt }).await.unwrap();

    let text = metrics.render();
    assert!(!text.contains("exo_breaker_rejected_total{"), "no call was refused by a breaker: {text}");
    for sample in [
        r#"exo_member_calls_total{service="queue",op="ack",backend="memory",member="1",outcome="TIMEOUT"} 1"#,
        r#"exo_member_calls_total{service="queue",op="send",backend="memory",member="0",outcome="ok"} 1"#,
        r#"exo_member_calls_total{service="queue",op="ack",backend="memory",member="0",outcome="ok"} 1"#,
    ] {
        assert!(text.contains(sample), "{sample} missing from {text}");
    }
}
