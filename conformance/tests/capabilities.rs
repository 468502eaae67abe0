//! The suite cannot be fooled by a declaration: a hidden capability is reported `unsupported`
//! (never `pass`), and a declared capability that does not work is a `fail`.

use std::sync::Arc;

use async_trait::async_trait;
use eqs::ops;
use eqs::{
    backend::Queue,
    model::{Capability, Descriptor},
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
    async fn create_queue(&self, op: ops::CreateQueue<'_>) -> ExoResult<(bool, pb::QueueInfo)> {
        let mut options = op.options.clone();
        if self.ignore_dead_letter {
            options.max_receives = 0;
            options.dead_letter_queue.clear();
        }
        self.inner.create_queue(ops::CreateQueue { options: &options, ..op }).await
    }
    async fn delete_queue(&self, op: ops::DeleteQueue<'_>) -> ExoResult<()> {
        self.inner.delete_queue(op).await
    }
    async fn list_queues(&self, op: ops::ListQueues<'_>) -> ExoResult<Vec<String>> {
        self.inner.list_queues(op).await
    }
    async fn queue_info(&self, op: ops::QueueInfo<'_>) -> ExoResult<pb::QueueInfo> {
        self.inner.queue_info(op).await
    }
    async fn send(&self, op: ops::Send<'_>) -> ExoResult<Vec<ExoResult<String>>> {
        self.inner.send(op).await
    }
    async fn receive(&self, op: ops::Receive<'_>) -> ExoResult<Vec<pb::Message>> {
        self.inner.receive(op).await
    }
    async fn ack(&self, op: ops::Ack<'_>) -> ExoResult<()> {
        self.inner.ack(op).await
    }
    async fn change_visibility(&self, op: ops::ChangeVisibility<'_>) -> ExoResult<()> {
        self.inner.change_visibility(op).await
    }
    async fn purge(&self, op: ops::Purge<'_>) -> ExoResult<()> {
        self.inner.purge(op).await
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
