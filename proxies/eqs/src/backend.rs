//! The one trait every queue backend implements. Requests reach it validated (names, sizes,
//! ranges, capabilities) by [`crate::api`]; layers in [`crate::layers`] wrap it.

use async_trait::async_trait;
use exo_proto::queue::v1 as pb;
use exo_proxy_core::ExoResult;

use crate::model::{Descriptor, Published, QueueName, ReceiveParams, TopicName};

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

    /// Creates a queue with normalized options (defaults filled in). Returns whether it was
    /// created (false: it existed with the same options) and its info.
    async fn create_queue(
        &self,
        name: &QueueName,
        options: &pb::QueueOptions,
    ) -> ExoResult<(bool, pb::QueueInfo)>;

    /// Deletes a queue and its messages.
    async fn delete_queue(&self, name: &QueueName) -> ExoResult<()>;

    /// Up to `limit` queue names with `prefix`, in lexical order, strictly after `start_after`.
    async fn list_queues(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> ExoResult<Vec<String>>;

    /// Options and approximate counts.
    async fn queue_info(&self, name: &QueueName) -> ExoResult<pb::QueueInfo>;

    /// Sends validated messages; one result (message id or error) per message, in order.
    async fn send(
        &self,
        name: &QueueName,
        messages: Vec<pb::OutgoingMessage>,
    ) -> ExoResult<Vec<ExoResult<String>>>;

    /// Receives up to `params.max_messages` messages.
    async fn receive(&self, name: &QueueName, params: ReceiveParams) -> ExoResult<Vec<pb::Message>>;

    /// Deletes a received message.
    async fn ack(&self, name: &QueueName, receipt: &str) -> ExoResult<()>;

    /// Sets a received message's remaining visibility.
    async fn change_visibility(&self, name: &QueueName, receipt: &str, seconds: u32) -> ExoResult<()>;

    /// Deletes every message.
    async fn purge(&self, name: &QueueName) -> ExoResult<()>;

    /// The limits of topic requests (meaningful with `TOPICS`): by default the queue limits less
    /// what each delivered copy's own attributes take; a backend whose topics have limits of
    /// their own (SNS) states them.
    fn topic_limits(&self) -> pb::TopicLimits {
        crate::model::topic_limits(&self.descriptor().limits)
    }

    /// Creates a topic; false when it existed.
    async fn create_topic(&self, name: &TopicName) -> ExoResult<(bool, pb::TopicInfo)> {
        Err(self.no_topics(name))
    }

    /// Deletes a topic and its subscriptions (their queues stay).
    async fn delete_topic(&self, name: &TopicName) -> ExoResult<()> {
        Err(self.no_topics(name))
    }

    /// Up to `limit` topic names with `prefix`, in lexical order, strictly after `start_after`.
    async fn list_topics(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> ExoResult<Vec<String>> {
        let _ = (prefix, start_after, limit);
        Err(unsupported_topics(self.descriptor()))
    }

    /// A topic and its subscriptions (sorted by name).
    async fn topic_info(&self, name: &TopicName) -> ExoResult<pb::TopicInfo> {
        Err(self.no_topics(name))
    }

    /// Adds a validated subscription (its queue exists, its filter parses); false when an
    /// identical one existed, SUBSCRIPTION_ALREADY_EXISTS when a different one does.
    async fn create_subscription(
        &self,
        topic: &TopicName,
        subscription: &pb::Subscription,
    ) -> ExoResult<(bool, pb::Subscription)> {
        let _ = subscription;
        Err(self.no_topics(topic))
    }

    /// Deletes a subscription (SUBSCRIPTION_NOT_FOUND if absent).
    async fn delete_subscription(&self, topic: &TopicName, name: &TopicName) -> ExoResult<()> {
        let _ = name;
        Err(self.no_topics(topic))
    }

    /// Publishes validated messages; one result per message, in order.
    async fn publish(
        &self,
        topic: &TopicName,
        messages: Vec<pb::PublishedMessage>,
    ) -> ExoResult<Vec<ExoResult<Published>>> {
        let _ = messages;
        Err(self.no_topics(topic))
    }

    #[doc(hidden)]
    fn no_topics(&self, topic: &TopicName) -> exo_proxy_core::ExoError {
        unsupported_topics(self.descriptor()).with_resource(topic.as_str())
    }
}

fn unsupported_topics(descriptor: &Descriptor) -> exo_proxy_core::ExoError {
    descriptor.require(crate::model::Capability::Topics, "topics").err().unwrap_or_else(|| {
        exo_proxy_core::ExoError::internal("backend declares TOPICS but does not implement it")
    })
}
