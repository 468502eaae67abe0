//! The suite cannot be fooled by a declaration: a hidden capability is reported `unsupported`
//! (never `pass`), and a declared capability that does not work is a `fail`.

use std::sync::Arc;

use async_trait::async_trait;
use eqs::{
    backend::Queue,
    model::{Capability, Descriptor, QueueName, ReceiveParams},
    services::memory::MemoryQueue,
};
use exo_conformance::{Outcome, Target, run_suite};
use exo_proto::queue::v1 as pb;
use exo_proxy_core::ExoResult;

/// A memory queue whose declaration or behaviour is altered.
struct Altered {
    inner: MemoryQueue,
    descriptor: Descriptor,
    /// Silently ignores dead-letter settings while still declaring DEAD_LETTER.
    ignore_dead_letter: bool,
}

#[async_trait]
impl Queue for Altered {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }
    async fn ready(&self) -> ExoResult<()> {
        self.inner.ready().await
    }
    async fn create_queue(
        &self,
        name: &QueueName,
        options: &pb::QueueOptions,
    ) -> ExoResult<(bool, pb::QueueInfo)> {
        let mut options = options.clone();
        if self.ignore_dead_letter {
            options.max_receives = 0;
            options.dead_letter_queue.clear();
        }
        self.inner.create_queue(name, &options).await
    }
    async fn delete_queue(&self, name: &QueueName) -> ExoResult<()> {
        self.inner.delete_queue(name).await
    }
    async fn list_queues(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> ExoResult<Vec<String>> {
        self.inner.list_queues(prefix, start_after, limit).await
    }
    async fn queue_info(&self, name: &QueueName) -> ExoResult<pb::QueueInfo> {
        self.inner.queue_info(name).await
    }
    async fn send(
        &self,
        name: &QueueName,
        messages: Vec<pb::OutgoingMessage>,
    ) -> ExoResult<Vec<ExoResult<String>>> {
        self.inner.send(name, messages).await
    }
    async fn receive(&self, name: &QueueName, params: ReceiveParams) -> ExoResult<Vec<pb::Message>> {
        self.inner.receive(name, params).await
    }
    async fn ack(&self, name: &QueueName, receipt: &str) -> ExoResult<()> {
        self.inner.ack(name, receipt).await
    }
    async fn change_visibility(&self, name: &QueueName, receipt: &str, seconds: u32) -> ExoResult<()> {
        self.inner.change_visibility(name, receipt, seconds).await
    }
    async fn purge(&self, name: &QueueName) -> ExoResult<()> {
        self.inner.purge(name).await
    }
}

fn altered(hide: &[Capability], ignore_dead_letter: bool) -> Arc<dyn Queue> {
    let inner = MemoryQueue::new(64 * 1024);
    let mut descriptor = inner.descriptor().clone();
    for capability in hide {
        descriptor.capabilities.remove(capability);
    }
    Arc::new(Altered { inner, descriptor, ignore_dead_letter })
}

fn outcome_of<'a>(results: &'a [exo_conformance::CaseResult], name: &str) -> &'a Outcome {
    &results.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("no case {name}")).outcome
}

#[tokio::test]
async fn hidden_capabilities_are_reported_unsupported_not_passed() {
    let backend = altered(
        &[Capability::Purge, Capability::DeadLetter, Capability::LongPoll, Capability::Topics],
        false,
    );
    let (_, results) = run_suite(Target::Queue(Box::default(), Some(backend)), "", 8).await.unwrap();
    for name in [
        "purge.empties",
        "dead_letter.after_max_receives",
        "dead_letter.target_must_exist",
        "long_poll.early_return",
        "fanout.every_subscription",
        "filter.invalid",
    ] {
        assert!(
            matches!(outcome_of(&results, name), Outcome::Unsupported(_)),
            "{name}: {:?}",
            outcome_of(&results, name)
        );
    }
    let failures: Vec<_> = results.iter().filter(|r| matches!(r.outcome, Outcome::Fail(_))).collect();
    assert!(failures.is_empty(), "unexpected failures: {failures:?}");
}

#[tokio::test]
async fn a_declared_capability_that_does_not_work_fails() {
    let backend = altered(&[], true);
    let (_, results) =
        run_suite(Target::Queue(Box::default(), Some(backend)), "dead_letter.after", 4).await.unwrap();
    assert!(
        matches!(outcome_of(&results, "dead_letter.after_max_receives"), Outcome::Fail(_)),
        "{results:?}"
    );
}

#[tokio::test]
async fn a_declared_topics_capability_without_topics_fails() {
    // Altered forwards no topic call: TOPICS stays declared, the trait's defaults answer.
    let backend = altered(&[], false);
    let (_, results) =
        run_suite(Target::Queue(Box::default(), Some(backend)), "fanout.every", 4).await.unwrap();
    assert!(matches!(outcome_of(&results, "fanout.every_subscription"), Outcome::Fail(_)), "{results:?}");
}
