//! The one wrapper between the API and any queue backend: each operation runs through the
//! proxy's layer stack (composed in [`crate::layered`]), which reads the operation's name and
//! kind from [`crate::ops`] (a receive may wait its long poll on top of the timeout). Layers are
//! written once, for every service, in `exo_proxy_core::layers`.

use async_trait::async_trait;
use exo_proto::queue::v1 as pb;
use exo_proxy_core::{
    ExoResult,
    layers::{Layer, Named},
};

use crate::{
    backend::Queue,
    model::{Descriptor, Published},
    ops,
};

/// A queue backend behind a layer stack.
pub type Layered<L> = exo_proxy_core::layers::Layered<dyn Queue, L>;

impl Named for dyn Queue {
    const SERVICE: &'static str = "queue";
    fn backend_name(&self) -> &'static str {
        self.descriptor().backend
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<L: Layer> Queue for Layered<L> {
    fn descriptor(&self) -> &Descriptor {
        self.inner().descriptor()
    }
    fn is_described(&self) -> bool {
        self.inner().is_described()
    }
    async fn ready(&self) -> ExoResult<()> {
        self.probe_ready(self.inner().ready()).await
    }
    async fn create_queue(&self, op: ops::CreateQueue<'_>) -> ExoResult<(bool, pb::QueueInfo)> {
        self.run(op, |op| self.inner().create_queue(op)).await
    }
    async fn delete_queue(&self, op: ops::DeleteQueue<'_>) -> ExoResult<()> {
        self.run(op, |op| self.inner().delete_queue(op)).await
    }
    async fn list_queues(&self, op: ops::ListQueues<'_>) -> ExoResult<Vec<String>> {
        self.run(op, |op| self.inner().list_queues(op)).await
    }
    async fn queue_info(&self, op: ops::QueueInfo<'_>) -> ExoResult<pb::QueueInfo> {
        self.run(op, |op| self.inner().queue_info(op)).await
    }
    async fn send(&self, op: ops::Send<'_>) -> ExoResult<Vec<ExoResult<String>>> {
        self.run(op, |op| self.inner().send(op)).await
    }
    async fn receive(&self, op: ops::Receive<'_>) -> ExoResult<Vec<pb::Message>> {
        self.run(op, |op| self.inner().receive(op)).await
    }
    async fn ack(&self, op: ops::Ack<'_>) -> ExoResult<()> {
        self.run(op, |op| self.inner().ack(op)).await
    }
    async fn change_visibility(&self, op: ops::ChangeVisibility<'_>) -> ExoResult<()> {
        self.run(op, |op| self.inner().change_visibility(op)).await
    }
    async fn purge(&self, op: ops::Purge<'_>) -> ExoResult<()> {
        self.run(op, |op| self.inner().purge(op)).await
    }
    fn topic_limits(&self) -> pb::TopicLimits {
        self.inner().topic_limits()
    }
    async fn create_topic(&self, op: ops::CreateTopic<'_>) -> ExoResult<(bool, pb::TopicInfo)> {
        self.run(op, |op| self.inner().create_topic(op)).await
    }
    async fn delete_topic(&self, op: ops::DeleteTopic<'_>) -> ExoResult<()> {
        self.run(op, |op| self.inner().delete_topic(op)).await
    }
    async fn list_topics(&self, op: ops::ListTopics<'_>) -> ExoResult<Vec<String>> {
        self.run(op, |op| self.inner().list_topics(op)).await
    }
    async fn topic_info(&self, op: ops::TopicInfo<'_>) -> ExoResult<pb::TopicInfo> {
        self.run(op, |op| self.inner().topic_info(op)).await
    }
    async fn create_subscription(
        &self,
        op: ops::CreateSubscription<'_>,
    ) -> ExoResult<(bool, pb::Subscription)> {
        self.run(op, |op| self.inner().create_subscription(op)).await
    }
    async fn delete_subscription(&self, op: ops::DeleteSubscription<'_>) -> ExoResult<()> {
        self.run(op, |op| self.inner().delete_subscription(op)).await
    }
    async fn publish(&self, op: ops::Publish<'_>) -> ExoResult<Vec<ExoResult<Published>>> {
        self.run(op, |op| self.inner().publish(op)).await
    }
}

#[cfg(test)]
mod tests {
    use exo_proxy_core::metrics::Metrics;

    use std::{sync::Arc, time::Duration};

    use super::*;
    use crate::{
        model::{QueueName, ReceiveParams},
        services::memory::MemoryQueue,
    };

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
        async fn create_queue(&self, op: ops::CreateQueue<'_>) -> ExoResult<(bool, pb::QueueInfo)> {
            self.0.create_queue(op).await
        }
        async fn delete_queue(&self, op: ops::DeleteQueue<'_>) -> ExoResult<()> {
            self.0.delete_queue(op).await
        }
        async fn list_queues(&self, op: ops::ListQueues<'_>) -> ExoResult<Vec<String>> {
            self.0.list_queues(op).await
        }
        async fn queue_info(&self, op: ops::QueueInfo<'_>) -> ExoResult<pb::QueueInfo> {
            self.0.queue_info(op).await
        }
        async fn send(&self, op: ops::Send<'_>) -> ExoResult<Vec<ExoResult<String>>> {
            self.0.send(op).await
        }
        async fn receive(&self, _op: ops::Receive<'_>) -> ExoResult<Vec<pb::Message>> {
            std::future::pending().await
        }
        async fn ack(&self, op: ops::Ack<'_>) -> ExoResult<()> {
            self.0.ack(op).await
        }
        async fn change_visibility(&self, op: ops::ChangeVisibility<'_>) -> ExoResult<()> {
            self.0.change_visibility(op).await
        }
        async fn purge(&self, op: ops::Purge<'_>) -> ExoResult<()> {
            self.0.purge(op).await
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
        let err = layered.receive(ops::Receive { queue: &q, params }).await.unwrap_err();
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
