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
use eqs::{
    backend::Queue,
    layers::FailoverQueue,
    model::{Descriptor, QueueName, ReceiveParams},
    services::memory::MemoryQueue,
};
use exo_proto::queue::v1 as pb;
use exo_proxy_core::{ExoError, ExoResult};

/// A memory queue that can be switched off (every call then fails as unreachable).
struct Switchable {
    inner: MemoryQueue,
    down: AtomicBool,
}

impl Switchable {
    fn check(&self) -> ExoResult<()> {
        if self.down.load(Ordering::SeqCst) { Err(ExoError::unavailable("switched off")) } else { Ok(()) }
    }
}

#[async_trait]
impl Queue for Switchable {
    fn descriptor(&self) -> &Descriptor {
        self.inner.descriptor()
    }
    async fn ready(&self) -> ExoResult<()> {
        self.check()
    }
    async fn create_queue(
        &self,
        name: &QueueName,
        options: &pb::QueueOptions,
    ) -> ExoResult<(bool, pb::QueueInfo)> {
        self.check()?;
        self.inner.create_queue(name, options).await
    }
    async fn delete_queue(&self, name: &QueueName) -> ExoResult<()> {
        self.check()?;
        self.inner.delete_queue(name).await
    }
    async fn list_queues(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> ExoResult<Vec<String>> {
        self.check()?;
        self.inner.list_queues(prefix, start_after, limit).await
    }
    async fn queue_info(&self, name: &QueueName) -> ExoResult<pb::QueueInfo> {
        self.check()?;
        self.inner.queue_info(name).await
    }
    async fn send(
        &self,
        name: &QueueName,
        messages: Vec<pb::OutgoingMessage>,
    ) -> ExoResult<Vec<ExoResult<String>>> {
        self.check()?;
        self.inner.send(name, messages).await
    }
    async fn receive(&self, name: &QueueName, params: ReceiveParams) -> ExoResult<Vec<pb::Message>> {
        self.check()?;
        self.inner.receive(name, params).await
    }
    async fn ack(&self, name: &QueueName, receipt: &str) -> ExoResult<()> {
        self.check()?;
        self.inner.ack(name, receipt).await
    }
    async fn change_visibility(&self, name: &QueueName, receipt: &str, seconds: u32) -> ExoResult<()> {
        self.check()?;
        self.inner.change_visibility(name, receipt, seconds).await
    }
    async fn purge(&self, name: &QueueName) -> ExoResult<()> {
        self.check()?;
        self.inner.purge(name).await
    }
}

fn message(body: &str) -> pb::OutgoingMessage {
    pb::OutgoingMessage { body: body.as_bytes().to_vec(), ..Default::default() }
}

async fn drain(chain: &FailoverQueue, q: &QueueName) -> Vec<pb::Message> {
    let params = ReceiveParams { max_messages: 10, wait: Duration::ZERO, visibility_seconds: Some(60) };
    chain.receive(q, params).await.unwrap()
}

#[tokio::test]
async fn switch_drain_and_fail_back_lose_nothing() {
    let primary = Arc::new(Switchable { inner: MemoryQueue::new(1024), down: AtomicBool::new(false) });
    let standby = Arc::new(Switchable { inner: MemoryQueue::new(1024), down: AtomicBool::new(false) });
    let chain = FailoverQueue::new(vec![primary.clone(), standby.clone()])
        .unwrap()
        .with_backoff(Duration::from_millis(200));
    let q = QueueName::parse("queue", "orders", "q").unwrap();
    chain
        .create_queue(
            &q,
            &pb::QueueOptions {
                visibility_timeout_seconds: Some(30),
                retention_seconds: 3600,
                ..Default::default()
            },
        )
        .await
        .unwrap();

    chain.send(&q, vec![message("before")]).await.unwrap();
    assert_eq!(primary.inner.queue_info(&q).await.unwrap().visible_messages, 1, "writes go to the primary");

    primary.down.store(true, Ordering::SeqCst);
    chain.send(&q, vec![message("during")]).await.unwrap();
    assert_eq!(
        standby.inner.queue_info(&q).await.unwrap().visible_messages,
        1,
        "writes switch to the standby"
    );
    let during = drain(&chain, &q).await;
    assert_eq!(during.iter().map(|m| m.body.as_slice()).collect::<Vec<_>>(), vec![b"during".as_slice()]);
    chain.ack(&q, &during[0].receipt).await.unwrap();

    // The primary heals; after the back-off, writes fail back to it.
    primary.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(250)).await;
    chain.send(&q, vec![message("after")]).await.unwrap();
    assert_eq!(
        standby.inner.queue_info(&q).await.unwrap().visible_messages,
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
        chain.ack(&q, &m.receipt).await.unwrap();
    }
    assert!(drain(&chain, &q).await.is_empty());
    let bogus = chain.ack(&q, "9~whatever").await.unwrap_err();
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
