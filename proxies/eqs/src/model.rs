//! Validated domain values shared by the API layer and every backend: queue names, limits,
//! capabilities, and the receipt format of the local backends.

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use exo_proto::{common::v1::ErrorReason, queue::v1 as pb};
use exo_proxy_core::{ExoError, ExoResult, ResourceName};

pub use pb::QueueCapability as Capability;

/// A queue name that passed the portable rules (see [`ResourceName`]).
pub type QueueName = ResourceName;
/// A topic or subscription name: the same portable rules as queue names.
pub type TopicName = ResourceName;

/// What a backend is and can do (see [`exo_proxy_core::Descriptor`]).
pub type Descriptor = exo_proxy_core::Descriptor<Capability, pb::Limits>;

/// The limits of the local backends (memory, embedded): SQS's where it is the stricter service,
/// so an app tested locally does not break on the cloud.
pub fn local_limits(max_message_bytes: u64) -> pb::Limits {
    pb::Limits {
        max_message_bytes,
        max_batch_entries: 100,
        max_receive_messages: 32,
        max_wait_seconds: 20,
        max_visibility_timeout_seconds: 12 * 3600,
        max_delay_seconds: 900,
        max_attributes: 10,
        min_retention_seconds: 1,
        max_retention_seconds: 14 * 24 * 3600,
        max_receives_limit: 1000,
    }
}

/// A message's size as every limit counts it: the body plus each attribute's name and value.
pub fn message_bytes(body: &[u8], attributes: &std::collections::HashMap<String, String>) -> u64 {
    body.len() as u64 + attribute_bytes(attributes)
}

/// What the attributes' names and values take of a message's size.
pub fn attribute_bytes(attributes: &std::collections::HashMap<String, String>) -> u64 {
    attributes.iter().map(|(name, value)| (name.len() + value.len()) as u64).sum()
}

/// Default visibility timeout when a queue does not set one.
pub const DEFAULT_VISIBILITY_SECONDS: u32 = 30;
/// Default retention when a queue does not set one (4 days, as SQS).
pub const DEFAULT_RETENTION_SECONDS: u32 = 4 * 24 * 3600;

/// Attribute the proxy adds to a received message whose stored form it could not decode (a
/// foreign producer's malformed envelope, say): the body is then the stored text's bytes as they
/// are, and the value says why. Such a message never blocks the others in the queue; a consumer
/// that cannot use it acks it (or lets it reach the dead-letter queue).
pub const UNDECODABLE_ATTRIBUTE: &str = "exo.undecodable";
/// Attribute the proxy adds when a foreign producer set binary attributes (SQS `Binary`): it
/// lists their names, comma-separated and sorted; each such value is delivered base64 (standard
/// alphabet, padded), since contract attributes are text.
pub const BASE64_ATTRIBUTES: &str = "exo.base64-attributes";

/// What a receive asks of the backend, already validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveParams {
    /// 1 ..= max_receive_messages.
    pub max_messages: u32,
    /// Long-poll wait.
    pub wait: Duration,
    /// Overrides the queue's visibility timeout.
    pub visibility_seconds: Option<u32>,
}

/// The receipt of the local backends: which queue, which stored message, and which receive of
/// it (its dequeue count then). A receipt from an earlier receive is therefore recognisably stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReceipt {
    /// The queue the message was received from.
    pub queue: String,
    /// The backend's sequence number of the message.
    pub seq: u64,
    /// The dequeue count at the receive that issued this receipt.
    pub lease: u32,
}

impl LocalReceipt {
    /// Encodes as an opaque URL-safe token.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("1.{}.{}.{}", self.seq, self.lease, self.queue))
    }

    /// Decodes a token and checks it belongs to `queue`.
    pub fn decode(token: &str, queue: &QueueName) -> ExoResult<Self> {
        let invalid = |why: &str| {
            ExoError::new(ErrorReason::InvalidReceipt, format!("receipt is not valid: {why}"))
                .with_field("receipt")
                .with_resource(queue.as_str())
        };
        let raw = URL_SAFE_NO_PAD.decode(token.as_bytes()).map_err(|_| invalid("not a receipt token"))?;
        let text = String::from_utf8(raw).map_err(|_| invalid("not a receipt token"))?;
        let mut parts = text.splitn(4, '.');
        let (Some("1"), Some(seq), Some(lease), Some(owner)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a receipt token"));
        };
        let seq = seq.parse().map_err(|_| invalid("not a receipt token"))?;
        let lease = lease.parse().map_err(|_| invalid("not a receipt token"))?;
        if owner != queue.as_str() {
            return Err(invalid(&format!("it was issued by queue '{owner}', not '{queue}'")));
        }
        Ok(Self { queue: owner.to_owned(), seq, lease })
    }
}

/// RECEIPT_STALE: the message was received again after this receipt was issued.
pub fn stale_receipt(queue: &QueueName) -> ExoError {
    ExoError::new(
        ErrorReason::ReceiptStale,
        "receipt is stale: the message was received again after its visibility timeout ran out",
    )
    .with_field("receipt")
    .with_resource(queue.as_str())
}

/// QUEUE_NOT_FOUND for `queue`.
pub fn queue_not_found(queue: &str) -> ExoError {
    ExoError::new(ErrorReason::QueueNotFound, format!("queue '{queue}' does not exist")).with_resource(queue)
}

/// Attribute every delivered copy of a published message carries: the topic's name.
pub const TOPIC_ATTRIBUTE: &str = "exo.topic";
/// Attribute every delivered copy carries: the publish id, the same on every copy of one publish.
pub const PUBLISH_ID_ATTRIBUTE: &str = "exo.publish-id";
/// What the two delivered-copy attributes may take of a queue's message size: their names, a
/// topic name of at most 63 bytes and a 36-byte publish id (122 bytes), rounded up.
pub const TOPIC_ENVELOPE_BYTES: u64 = 128;
/// Most subscriptions on one topic, on every backend.
pub const MAX_SUBSCRIPTIONS: u32 = 100;

/// The limits of topic requests, derived from the queue limits so that every delivered copy is
/// a message its subscription's queue accepts.
pub fn topic_limits(queue: &pb::Limits) -> pb::TopicLimits {
    pb::TopicLimits {
        max_message_bytes: queue.max_message_bytes.saturating_sub(TOPIC_ENVELOPE_BYTES),
        max_attributes: queue.max_attributes.saturating_sub(2),
        max_batch_entries: queue.max_batch_entries,
        max_subscriptions: MAX_SUBSCRIPTIONS,
        max_filter_bytes: crate::filter::MAX_FILTER_BYTES as u32,
    }
}

/// One published message's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The id every copy carries in [`PUBLISH_ID_ATTRIBUTE`].
    pub publish_id: String,
    /// How many subscriptions got a copy.
    pub deliveries: u32,
}

/// The attributes of the copy of a published message that a subscription's queue receives:
/// the published ones unchanged plus the topic and the publish id.
pub fn topic_copy(
    topic: &str,
    publish_id: &str,
    attributes: &std::collections::HashMap<String, String>,
) -> std::collections::HashMap<String, String> {
    let mut copy = attributes.clone();
    copy.insert(TOPIC_ATTRIBUTE.to_owned(), topic.to_owned());
    copy.insert(PUBLISH_ID_ATTRIBUTE.to_owned(), publish_id.to_owned());
    copy
}

/// TOPIC_NOT_FOUND for `topic`.
pub fn topic_not_found(topic: &str) -> ExoError {
    ExoError::new(ErrorReason::TopicNotFound, format!("topic '{topic}' does not exist")).with_resource(topic)
}

/// SUBSCRIPTION_NOT_FOUND for `name` of `topic`.
pub fn subscription_not_found(topic: &str, name: &str) -> ExoError {
    ExoError::new(ErrorReason::SubscriptionNotFound, format!("topic '{topic}' has no subscription '{name}'"))
        .with_resource(name)
}

/// Whether two subscriptions of one name ask for the same: the same queue, and filters that
/// mean the same (compared in canonical form, so a filter stored in an older spelling — an `in`
/// list in another order — is still the same filter).
pub fn same_subscription(a: &pb::Subscription, b: &pb::Subscription) -> bool {
    let canonical = |text: &str| crate::filter::Filter::parse(text).map(|f| f.canonical()).ok();
    a.queue == b.queue
        && (a.filter == b.filter || canonical(&a.filter).is_some_and(|f| Some(f) == canonical(&b.filter)))
}

/// SUBSCRIPTION_ALREADY_EXISTS: `name` exists on `topic` with other settings.
pub fn subscription_conflict(
    topic: &str,
    existing: &pb::Subscription,
    requested: &pb::Subscription,
) -> ExoError {
    let show = |s: &pb::Subscription| {
        if s.filter.is_empty() {
            format!("queue '{}', no filter", s.queue)
        } else {
            format!("queue '{}', filter {:?}", s.queue, s.filter)
        }
    };
    ExoError::new(
        ErrorReason::SubscriptionAlreadyExists,
        format!(
            "topic '{topic}' already has a subscription '{}' with other settings: it has {}; the request asks for {}",
            existing.name,
            show(existing),
            show(requested)
        ),
    )
    .with_resource(existing.name.as_str())
}

/// TOO_MANY_SUBSCRIPTIONS for `topic`.
pub fn too_many_subscriptions(topic: &str) -> ExoError {
    ExoError::new(
        ErrorReason::TooManySubscriptions,
        format!("topic '{topic}' already has {MAX_SUBSCRIPTIONS} subscriptions, the most a topic may have"),
    )
    .with_resource(topic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_round_trip_and_are_bound_to_their_queue() {
        let orders = QueueName::parse("queue", "orders", "q").unwrap();
        let other = QueueName::parse("queue", "other", "q").unwrap();
        let receipt = LocalReceipt { queue: "orders".into(), seq: 42, lease: 3 };
        let token = receipt.encode();
        assert_eq!(LocalReceipt::decode(&token, &orders).unwrap(), receipt);
        assert_eq!(LocalReceipt::decode(&token, &other).unwrap_err().reason, ErrorReason::InvalidReceipt);
        for junk in ["", "???", "MS4y", "bm9wZQ"] {
            assert_eq!(LocalReceipt::decode(junk, &orders).unwrap_err().reason, ErrorReason::InvalidReceipt);
        }
    }
}
