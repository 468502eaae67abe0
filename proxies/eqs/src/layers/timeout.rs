//! Bounds every backend call in time; a receive gets its long-poll wait on top.

use std::{future::Future, sync::Arc, time::Duration};

use async_trait::async_trait;
use exo_proto::queue::v1 as pb;
use exo_proxy_core::{ExoResult, layer};

use crate::{
    backend::Queue,
    model::{Descriptor, QueueName, ReceiveParams},
};

/// Fails a call with TIMEOUT (retryable) once it runs longer than the limit. A write that times
/// out may still complete in the backend: queue delivery is at-least-once, so a retry can at
/// worst duplicate, never lose.
pub struct Timeout {
    inner: Arc<dyn Queue>,
    limit: Duration,
}

impl Timeout {
    /// Wraps `inner` with a per-call `limit`.
    pub fn new(inner: Arc<dyn Queue>, limit: Duration) -> Self {
        Self { inner, limit }
    }

    async fn bounded<T>(&self, limit: Duration, call: impl Future<Output = ExoResult<T>>) -> ExoResult<T> {
        layer::bounded(limit, call).await
    }
}

#[async_trait]
impl Queue for Timeout {
    fn descriptor(&self) -> &Descriptor {
        self.inner.descriptor()
    }
    async fn ready(&self) -> ExoResult<()> {
        self.bounded(self.limit, self.inner.ready()).await
    }
    async fn create_queue(
        &self,
        name: &QueueName,
        options: &pb::QueueOptions,
    ) -> ExoResult<(bool, pb::QueueInfo)> {
        self.bounded(self.limit, self.inner.create_queue(name, options)).await
    }
    async fn delete_queue(&self, name: &QueueName) -> ExoResult<()> {
        self.bounded(self.limit, self.inner.delete_queue(name)).await
    }
    async fn list_queues(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> ExoResult<Vec<String>> {
        self.bounded(self.limit, self.inner.list_queues(prefix, start_after, limit)).await
    }
    async fn queue_info(&self, name: &QueueName) -> ExoResult<pb::QueueInfo> {
        self.bounded(self.limit, self.inner.queue_info(name)).await
    }
    async fn send(&self, name: &QueueName, messages: Vec<pb::OutgoingMessage>) -> ExoResult<Vec<String>> {
        self.bounded(self.limit, self.inner.send(name, messages)).await
    }
    async fn receive(&self, name: &QueueName, params: ReceiveParams) -> ExoResult<Vec<pb::Message>> {
        self.bounded(self.limit + params.wait, self.inner.receive(name, params)).await
    }
    async fn ack(&self, name: &QueueName, receipt: &str) -> ExoResult<()> {
        self.bounded(self.limit, self.inner.ack(name, receipt)).await
    }
    async fn change_visibility(&self, name: &QueueName, receipt: &str, seconds: u32) -> ExoResult<()> {
        self.bounded(self.limit, self.inner.change_visibility(name, receipt, seconds)).await
    }
    async fn purge(&self, name: &QueueName) -> ExoResult<()> {
        self.bounded(self.limit, self.inner.purge(name)).await
    }
}
