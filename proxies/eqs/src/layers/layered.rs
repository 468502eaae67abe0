//! The one wrapper between the API and any queue backend: each method becomes a
//! [`Call`](exo_proxy_core::layers::Call) run through the proxy's layer stack (metrics and logs
//! around a per-call timeout, composed in [`crate::layered`]). A receive may wait its long poll on
//! top of the timeout. Layers are written once, for every service, in `exo_proxy_core::layers`.

use std::{future::Future, sync::Arc, time::Duration};

use async_trait::async_trait;
use exo_proto::queue::v1 as pb;
use exo_proxy_core::{
    ExoResult,
    layers::{Call, Layer, bounded},
};

use crate::{
    backend::Queue,
    model::{Descriptor, Published, QueueName, ReceiveParams, TopicName},
};

/// A queue backend behind a layer stack.
pub struct Layered<L> {
    inner: Arc<dyn Queue>,
    layers: L,
    /// Bounds the readiness probe, which is not a request and is not counted.
    ready_timeout: Duration,
}

impl<L: Layer> Layered<L> {
    /// Runs every call to `inner` through `layers`.
    pub fn new(inner: Arc<dyn Queue>, layers: L, ready_timeout: Duration) -> Self {
        Self { inner, layers, ready_timeout }
    }

    fn call(&self, op: &'static str) -> Call {
        Call::new("queue", op, self.inner.descriptor().backend)
    }

    async fn run<T: Send>(&self, call: Call, fut: impl Future<Output = ExoResult<T>> + Send) -> ExoResult<T> {
        self.layers.wrap(call, fut).await
    }

    /// A read: safe to repeat, so the stack may retry it after a retryable failure.
    async fn read<T: Send, F, Fut>(&self, op: &'static str, attempt: F) -> ExoResult<T>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = ExoResult<T>> + Send,
    {
        self.layers.wrap_repeatable(self.call(op), attempt).await
    }
}

#[async_trait]
impl<L: Layer> Queue for Layered<L> {
    fn descriptor(&self) -> &Descriptor {
        self.inner.descriptor()
    }
    fn is_described(&self) -> bool {
        self.inner.is_described()
    }
    async fn ready(&self) -> ExoResult<()> {
        // An open breaker answers at once: the backend is known to be down.
        if let Some(refused) = self.layers.refusing(self.call("ready")) {
            return Err(refused);
        }
        bounded(self.ready_timeout, self.inner.ready()).await
    }
    async fn create_queue(
        &self,
        name: &QueueName,
        options: &pb::QueueOptions,
    ) -> ExoResult<(bool, pb::QueueInfo)> {
        self.run(self.call("create_queue"), self.inner.create_queue(name, options)).await
    }
    async fn delete_queue(&self, name: &QueueName) -> ExoResult<()> {
        self.run(self.call("delete_queue"), self.inner.delete_queue(name)).await
    }
    async fn list_queues(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> ExoResult<Vec<String>> {
        self.read("list_queues", || self.inner.list_queues(prefix, start_after, limit)).await
    }
    async fn queue_info(&self, name: &QueueName) -> ExoResult<pb::QueueInfo> {
        self.read("get_queue_info", || self.inner.queue_info(name)).await
    }
    async fn send(
        &self,
        name: &QueueName,
        messages: Vec<pb::OutgoingMessage>,
    ) -> ExoResult<Vec<ExoResult<String>>> {
        let op = if messages.len() == 1 { "send" } else { "send_batch" };
        self.run(self.call(op).not_idempotent(), self.inner.send(name, messages)).await
    }
    async fn receive(&self, name: &QueueName, params: ReceiveParams) -> ExoResult<Vec<pb::Message>> {
        // Not idempotent: a receive that answered late has hidden its messages for a visibility.
        let call = self.call("receive").not_idempotent().waiting(params.wait);
        self.run(call, self.inner.receive(name, params)).await
    }
    async fn ack(&self, name: &QueueName, receipt: &str) -> ExoResult<()> {
        self.run(self.call("ack"), self.inner.ack(name, receipt)).await
    }
    async fn change_visibility(&self, name: &QueueName, receipt: &str, seconds: u32) -> ExoResult<()> {
        self.run(self.call("change_visibility"), self.inner.change_visibility(name, receipt, seconds)).await
    }
    async fn purge(&self, name: &QueueName) -> ExoResult<()> {
        self.run(self.call("purge"), self.inner.purge(name)).await
    }
    fn topic_limits(&self) -> pb::TopicLimits {
        self.inner.topic_limits()
    }
    async fn create_topic(&self, name: &TopicName) -> ExoResult<(bool, pb::TopicInfo)> {
        self.run(self.call("create_topic"), self.inner.create_topic(name)).await
    }
    async fn delete_topic(&self, name: &TopicName) -> ExoResult<()> {
        self.run(self.call("delete_topic"), self.inner.delete_topic(name)).await
    }
    async fn list_topics(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> ExoResult<Vec<String>> {
        self.read("list_topics", || self.inner.list_topics(prefix, start_after, limit)).await
    }
    async fn topic_info(&self, name: &TopicName) -> ExoResult<pb::TopicInfo> {
        self.read("get_topic_info", || self.inner.topic_info(name)).await
    }
    async fn create_subscription(
        &self,
        topic: &TopicName,
        subscription: &pb::Subscription,
    ) -> ExoResult<(bool, pb::Subscription)> {
        self.run(self.call("create_subscription"), self.inner.create_subscription(topic, subscription)).await
    }
    async fn delete_subscription(&self, topic: &TopicName, name: &TopicName) -> ExoResult<()> {
        self.run(self.call("delete_subscription"), self.inner.delete_subscription(topic, name)).await
    }
    async fn publish(
        &self,
        topic: &TopicName,
        messages: Vec<pb::PublishedMessage>,
    ) -> ExoResult<Vec<ExoResult<Published>>> {
        let op = if messages.len() == 1 { "publish" } else { "publish_batch" };
        self.run(self.call(op).not_idempotent(), self.inner.publish(topic, messages)).await
    }
}

#[cfg(test)]
mod tests {
    use exo_proxy_core::metrics::Metrics;

    use super::*;
    use crate::services::memory::MemoryQueue;

    /// A backend whose receive never answers.
    struct Stuck(MemoryQueue);

    #[async_trait]
    impl Queue for Stuck {
        fn descriptor(&self) -> &Descriptor {
            self.0.descriptor()
        }
        async fn ready(&self) -> ExoResult<()> {
            Ok(())
        }
        async fn create_queue(
            &self,
            n: &QueueName,
            o: &pb::QueueOptions,
        ) -> ExoResult<(bool, pb::QueueInfo)> {
            self.0.create_queue(n, o).await
        }
        async fn delete_queue(&self, n: &QueueName) -> ExoResult<()> {
            self.0.delete_queue(n).await
        }
        async fn list_queues(&self, p: &str, s: Option<&str>, l: usize) -> ExoResult<Vec<String>> {
            self.0.list_queues(p, s, l).await
        }
        async fn queue_info(&self, n: &QueueName) -> ExoResult<pb::QueueInfo> {
            self.0.queue_info(n).await
        }
        async fn send(
            &self,
            n: &QueueName,
            m: Vec<pb::OutgoingMessage>,
        ) -> ExoResult<Vec<ExoResult<String>>> {
            self.0.send(n, m).await
        }
        async fn receive(&self, _: &QueueName, _: ReceiveParams) -> ExoResult<Vec<pb::Message>> {
            std::future::pending().await
        }
        async fn ack(&self, n: &QueueName, r: &str) -> ExoResult<()> {
            self.0.ack(n, r).await
        }
        async fn change_visibility(&self, n: &QueueName, r: &str, s: u32) -> ExoResult<()> {
            self.0.change_visibility(n, r, s).await
        }
        async fn purge(&self, n: &QueueName) -> ExoResult<()> {
            self.0.purge(n).await
        }
    }

    #[tokio::test]
    async fn a_timed_out_call_is_counted_as_timeout() {
        let metrics = Arc::new(Metrics::new());
        let timeout = Duration::from_millis(20);
        let layered = Layered::new(
            Arc::new(Stuck(MemoryQueue::new(1024))),
            (
                exo_proxy_core::layers::Observe::new(metrics.clone()),
                exo_proxy_core::layers::Timeout::new(timeout),
            ),
            timeout,
        );
        let q = QueueName::parse("queue", "stuck", "q").unwrap();
        let params = ReceiveParams { max_messages: 1, wait: Duration::ZERO, visibility_seconds: None };
        let err = layered.receive(&q, params).await.unwrap_err();
        assert_eq!(err.reason, exo_proto::common::v1::ErrorReason::Timeout);
        assert!(err.retryable);
        let text = metrics.render();
        assert!(
            text.contains(
                r#"exo_requests_total{service="queue",op="receive",backend="memory",outcome="TIMEOUT"} 1"#
            ),
            "{text}"
        );
    }
}
