//! The one trait every queue backend implements. Requests reach it validated (names, sizes,
//! ranges, capabilities) by [`crate::api`]; layers in [`crate::layers`] wrap it.

use async_trait::async_trait;
use exo_proto::queue::v1 as pb;
use exo_proxy_core::ExoResult;

use crate::model::{Descriptor, QueueName, ReceiveParams};

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
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Name, capabilities and limits.
    fn descriptor(&self) -> &Descriptor;

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
}
