//! Metrics (with error attribution) and timeouts around any queue backend, in the same order as
//! every other service: the timeout runs inside the observation, so a call that times out is
//! counted with outcome TIMEOUT. A receive gets its long-poll wait on top of the limit. The
//! bodies are shared with every service in `exo_proxy_core::layer`.

use std::{future::Future, sync::Arc, time::Duration};

use async_trait::async_trait;
use exo_proto::queue::v1 as pb;
use exo_proxy_core::{ExoResult, layer, metrics::Metrics};

use crate::{
    backend::Queue,
    model::{Descriptor, QueueName, ReceiveParams},
};

/// Observes and bounds every call to `inner`. A write that times out may still complete in the
/// backend: delivery is at-least-once, so a retry can at worst duplicate, never lose.
pub struct Layered {
    inner: Arc<dyn Queue>,
    metrics: Arc<Metrics>,
    timeout: Duration,
}

impl Layered {
    /// Wraps `inner` with a per-call `timeout`.
    pub fn new(inner: Arc<dyn Queue>, metrics: Arc<Metrics>, timeout: Duration) -> Self {
        Self { inner, metrics, timeout }
    }

    async fn call<T>(
        &self,
        op: &'static str,
        limit: Duration,
        fut: impl Future<Output = ExoResult<T>>,
    ) -> ExoResult<T> {
        layer::observe(
            &self.metrics,
            "queue",
            op,
            self.inner.descriptor().backend,
            layer::bounded(limit, fut),
        )
        .await
    }
}

#[async_trait]
impl Queue for Layered {
    fn descriptor(&self) -> &Descriptor {
        self.inner.descriptor()
    }
    async fn ready(&self) -> ExoResult<()> {
        layer::bounded(self.timeout, self.inner.ready()).await
    }
    async fn create_queue(
        &self,
        name: &QueueName,
        options: &pb::QueueOptions,
    ) -> ExoResult<(bool, pb::QueueInfo)> {
        self.call("create_queue", self.timeout, self.inner.create_queue(name, options)).await
    }
    async fn delete_queue(&self, name: &QueueName) -> ExoResult<()> {
        self.call("delete_queue", self.timeout, self.inner.delete_queue(name)).await
    }
    async fn list_queues(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> ExoResult<Vec<String>> {
        self.call("list_queues", self.timeout, self.inner.list_queues(prefix, start_after, limit)).await
    }
    async fn queue_info(&self, name: &QueueName) -> ExoResult<pb::QueueInfo> {
        self.call("get_queue_info", self.timeout, self.inner.queue_info(name)).await
    }
    async fn send(
        &self,
        name: &QueueName,
        messages: Vec<pb::OutgoingMessage>,
    ) -> ExoResult<Vec<ExoResult<String>>> {
        let op = if messages.len() == 1 { "send" } else { "send_batch" };
        self.call(op, self.timeout, self.inner.send(name, messages)).await
    }
    async fn receive(&self, name: &QueueName, params: ReceiveParams) -> ExoResult<Vec<pb::Message>> {
        self.call("receive", self.timeout + params.wait, self.inner.receive(name, params)).await
    }
    async fn ack(&self, name: &QueueName, receipt: &str) -> ExoResult<()> {
        self.call("ack", self.timeout, self.inner.ack(name, receipt)).await
    }
    async fn change_visibility(&self, name: &QueueName, receipt: &str, seconds: u32) -> ExoResult<()> {
        self.call("change_visibility", self.timeout, self.inner.change_visibility(name, receipt, seconds))
            .await
    }
    async fn purge(&self, name: &QueueName) -> ExoResult<()> {
        self.call("purge", self.timeout, self.inner.purge(name)).await
    }
}

#[cfg(test)]
mod tests {
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
        let layered =
            Layered::new(Arc::new(Stuck(MemoryQueue::new(1024))), metrics.clone(), Duration::from_millis(20));
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
