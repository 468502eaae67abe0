//! The one trait every queue backend implements: one method per operation of [`crate::ops`],
//! taking the operation as a value. Requests reach it validated (names, sizes,
//! ranges, capabilities) by [`crate::api`]; layers in [`crate::layers`] wrap it.

use async_trait::async_trait;
use exo_proto::queue::v1 as pb;
use exo_proxy_core::ExoResult;

use crate::{
    model::{Descriptor, Published, TopicName},
    ops,
};

/// A queue backend.
///
/// Contract for implementors:
/// - `send` is acknowledged only once the messages are as durable as the backend promises
///   (`DURABLE` capability). It either fails as a whole, having written nothing, or returns one
///   result per message in order (a message id, or why that message was not written). Local
///   backends write all or none; cloud backends that send in chunks report each entry.
/// - `receive` hides each returned message for the visibility timeout, increments its dequeue
///   count, moves messages received `max_receives` times to the dead-letter queue instead of
///   returning them, drops messages past retention, and waits up to `params.wait` for a first
///   message.
/// - `ack` of a message already gone succeeds; of a message received again since, fails with
///   RECEIPT_STALE.
/// - Topics (only with the `TOPICS` capability; the defaults answer UNSUPPORTED): `publish`
///   delivers each message to every subscription of the topic whose filter matches, as a copy
///   carrying [`crate::model::topic_copy`]'s attributes, and answers only once every copy is
///   as durable as a send. Deleting a queue deletes the subscriptions that deliver into it.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Name, capabilities and limits.
    fn descriptor(&self) -> &Descriptor;

    /// Whether [`Self::descriptor`] is the backend's own. Only a backend that learns it from
    /// elsewhere (a `remote` not reached yet) is ever `false`; it serves nothing until `true`.
    fn is_described(&self) -> bool {
        true
    }

    /// `Ok` when the backend can serve requests.
    async fn ready(&self) -> ExoResult<()>;

    /// Creates a queue (see [`ops::CreateQueue`]).
    async fn create_queue(&self, op: ops::CreateQueue<'_>) -> ExoResult<(bool, pb::QueueInfo)>;

    /// Deletes a queue and its messages.
    async fn delete_queue(&self, op: ops::DeleteQueue<'_>) -> ExoResult<()>;

    /// A page of queue names (see [`ops::ListQueues`]).
    async fn list_queues(&self, op: ops::ListQueues<'_>) -> ExoResult<Vec<String>>;

    /// Options and approximate counts.
    async fn queue_info(&self, op: ops::QueueInfo<'_>) -> ExoResult<pb::QueueInfo>;

    /// Sends validated messages; one result (message id or error) per message, in order.
    async fn send(&self, op: ops::Send<'_>) -> ExoResult<Vec<ExoResult<String>>>;

    /// Receives up to `params.max_messages` messages.
    async fn receive(&self, op: ops::Receive<'_>) -> ExoResult<Vec<pb::Message>>;

    /// Deletes a received message.
    async fn ack(&self, op: ops::Ack<'_>) -> ExoResult<()>;

    /// Sets a received message's remaining visibility.
    async fn change_visibility(&self, op: ops::ChangeVisibility<'_>) -> ExoResult<()>;

    /// Deletes every message.
    async fn purge(&self, op: ops::Purge<'_>) -> ExoResult<()>;

    /// The limits of topic requests (meaningful with `TOPICS`): by default the queue limits less
    /// what each delivered copy's own attributes take; a backend whose topics have limits of
    /// their own (SNS) states them.
    fn topic_limits(&self) -> pb::TopicLimits {
        crate::model::topic_limits(&self.descriptor().limits)
    }

    /// Creates a topic; false when it existed.
    async fn create_topic(&self, op: ops::CreateTopic<'_>) -> ExoResult<(bool, pb::TopicInfo)> {
        Err(no_topics(self.descriptor(), op.topic))
    }

    /// Deletes a topic and its subscriptions (their queues stay).
    async fn delete_topic(&self, op: ops::DeleteTopic<'_>) -> ExoResult<()> {
        Err(no_topics(self.descriptor(), op.topic))
    }

    /// A page of topic names (see [`ops::ListTopics`]).
    async fn list_topics(&self, _op: ops::ListTopics<'_>) -> ExoResult<Vec<String>> {
        Err(unsupported_topics(self.descriptor()))
    }

    /// A topic and its subscriptions (sorted by name).
    async fn topic_info(&self, op: ops::TopicInfo<'_>) -> ExoResult<pb::TopicInfo> {
        Err(no_topics(self.descriptor(), op.topic))
    }

    /// Adds a validated subscription (see [`ops::CreateSubscription`]).
    async fn create_subscription(
        &self,
        op: ops::CreateSubscription<'_>,
    ) -> ExoResult<(bool, pb::Subscription)> {
        Err(no_topics(self.descriptor(), op.topic))
    }

    /// Deletes a subscription (SUBSCRIPTION_NOT_FOUND if absent).
    async fn delete_subscription(&self, op: ops::DeleteSubscription<'_>) -> ExoResult<()> {
        Err(no_topics(self.descriptor(), op.topic))
    }

    /// Publishes validated messages; one result per message, in order.
    async fn publish(&self, op: ops::Publish<'_>) -> ExoResult<Vec<ExoResult<Published>>> {
        Err(no_topics(self.descriptor(), op.topic))
    }
}

/// UNSUPPORTED for a topic request to a backend without topics.
fn no_topics(descriptor: &Descriptor, topic: &TopicName) -> exo_proxy_core::ExoError {
    unsupported_topics(descriptor).with_resource(topic.as_str())
}

fn unsupported_topics(descriptor: &Descriptor) -> exo_proxy_core::ExoError {
    descriptor.require(crate::model::Capability::Topics, "topics").err().unwrap_or_else(|| {
        exo_proxy_core::ExoError::internal("backend declares TOPICS but does not implement it")
    })
}
