//! Metrics, logs and error attribution for every backend call.

use std::{future::Future, sync::Arc};

use async_trait::async_trait;
use exo_proto::queue::v1 as pb;
use exo_proxy_core::{ExoResult, layer, metrics::Metrics};

use crate::{
    backend::Queue,
    model::{Descriptor, QueueName, ReceiveParams},
};

/// Records each call's latency and outcome in [`Metrics`], logs failures, and stamps errors
/// with the backend's name.
pub struct Instrumented {
    inner: Arc<dyn Queue>,
    metrics: Arc<Metrics>,
}

impl Instrumented {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Queue>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    async fn observe<T>(&self, op: &'static str, call: impl Future<Output = ExoResult<T>>) -> ExoResult<T> {
        layer::observe(&self.metrics, "queue", op, self.inner.descriptor().backend, call).await
    }
}

#[async_trait]
impl Queue for Instrumented {
    fn descriptor(&self) -> &Descriptor {
        self.inner.descriptor()
    }
    async fn ready(&self) -> ExoResult<()> {
        self.inner.ready().await
    }
    async fn create_queue(
        &self,
        name: &QueueName,
        options: &pb::QueueOptions,
    ) -> ExoResult<(bool, pb::QueueInfo)> {
        self.observe("create_queue", self.inner.create_queue(name, options)).await
    }
    async fn delete_queue(&self, name: &QueueName) -> ExoResult<()> {
        self.observe("delete_queue", self.inner.delete_queue(name)).await
    }
    async fn list_queues(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> ExoResult<Vec<String>> {
        self.observe("list_queues", self.inner.list_queues(prefix, start_after, limit)).await
    }
    async fn queue_info(&self, name: &QueueName) -> ExoResult<pb::QueueInfo> {
        self.observe("get_queue_info", self.inner.queue_info(name)).await
    }
    async fn send(&self, name: &QueueName, messages: Vec<pb::OutgoingMessage>) -> ExoResult<Vec<String>> {
        let op = if messages.len() == 1 { "send" } else { "send_batch" };
        self.observe(op, self.inner.send(name, messages)).await
    }
    async fn receive(&self, name: &QueueName, params: ReceiveParams) -> ExoResult<Vec<pb::Message>> {
        self.observe("receive", self.inner.receive(name, params)).await
    }
    async fn ack(&self, name: &QueueName, receipt: &str) -> ExoResult<()> {
        self.observe("ack", self.inner.ack(name, receipt)).await
    }
    async fn change_visibility(&self, name: &QueueName, receipt: &str, seconds: u32) -> ExoResult<()> {
        self.observe("change_visibility", self.inner.change_visibility(name, receipt, seconds)).await
    }
    async fn purge(&self, name: &QueueName) -> ExoResult<()> {
        self.observe("purge", self.inner.purge(name)).await
    }
}
