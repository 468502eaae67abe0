//! `rabbitmq`: queues in RabbitMQ (AMQP 0-9-1), one durable quorum queue per queue.
//!
//! How the contract maps onto RabbitMQ:
//! - **A queue** is the quorum queue `<namespace>.<queue>` (replicated, fsynced: a publish is
//!   confirmed once stored), with `x-message-ttl` = the retention, and — with a dead-letter
//!   queue — `x-delivery-limit`, the default exchange as dead-letter exchange routing to the
//!   dead-letter queue, at-least-once dead-lettering. The options RabbitMQ cannot report back
//!   (AMQP has no way to read a queue's arguments, nor to list queues) are kept in a registry:
//!   the stream `<namespace>._registry`, one JSON record per create and delete, which every proxy
//!   replays at start and follows.
//! - **Send** publishes with publisher confirms and `mandatory`: acknowledged only once the
//!   broker confirmed it; a message no queue took (the queue does not exist) is QUEUE_NOT_FOUND.
//! - **Receive** takes what is ready with `basic.get`; when nothing is and the caller waits, a
//!   consumer with prefetch 1 waits for the first message (native push), then `basic.get` takes
//!   what else is ready.
//! - **Visibility**: RabbitMQ has none, so the proxy holds each delivery unacknowledged on the
//!   queue's channel and gives it back (`basic.nack`, requeue) when its visibility ends;
//!   ChangeVisibility moves that moment, 0 gives it back at once. If the proxy stops, the broker
//!   gives back everything it held at once (the channel closes): redelivered, never lost. The
//!   dequeue count is the quorum queue's `x-delivery-count` + 1.
//! - **Receipts** name this proxy process, the queue's channel and the delivery tag: a receipt
//!   whose delivery was given back (visibility ended, the channel or the proxy restarted) is
//!   RECEIPT_STALE, one already acked acks again harmlessly.
//! - **Attributes** are message headers; the message id is the `message_id` property. Headers
//!   the broker sets (`x-death`, `x-delivery-count`, …) are not attributes; an attribute whose
//!   name the broker reads (`CC`, `BCC`, any `x-…`, in any case) travels as `exo.attr.<name>`.
//!   A foreign message's headers of other types arrive as text: numbers and booleans as
//!   written, a decimal with its point, byte arrays base64 (named in `exo.base64-attributes`),
//!   arrays and tables as JSON. A foreign message without `message_id` gets `rmq-` + a digest
//!   of its content as its id.
//!
//! - **Topics** live in the registry too (records for topics and subscriptions, replayed by every
//!   proxy). A publish is one AMQP publish to the first matching subscription's queue with the
//!   others in the `BCC` header (sender-selected distribution; the broker strips it), so the
//!   broker routes one message to every queue and confirms it once every queue has stored it:
//!   all copies or none. Each copy's `message_id` is the publish id (unique within each queue).
//!   Two proxies making the same subscription name at the same instant: the registry's order
//!   decides, the later record is ignored.
//!
//! Not declared, by the server's nature: `DELAY` (RabbitMQ has no delayed delivery without the
//! delayed-message plugin). What a receive in another proxy holds is counted only there.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use exo_proto::{common::v1::ErrorReason, queue::v1 as pb};
use exo_proxy_core::{ExoError, ExoResult, config::ConfigError, now_ms, secret::SecretRef};
use futures::StreamExt;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
        BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
        QueuePurgeOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
    uri::AMQPUri,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ops;
use crate::{
    backend::Queue,
    config::DEFAULT_MAX_MESSAGE_BYTES,
    filter::Routes,
    model::{
        BASE64_ATTRIBUTES, Capability, DEFAULT_VISIBILITY_SECONDS, Descriptor, Published, QueueName,
        local_limits, queue_not_found, stale_receipt, subscription_not_found, topic_copy, topic_not_found,
    },
    services::{
        StoredOptions, already_exists, dead_letter_missing, new_message_id,
        topic_registry::{StoredSubscription, StoredTopic, names_after},
    },
};

/// Headers RabbitMQ sets itself: never attributes.
const BROKER_HEADERS: [&str; 9] = [
    "x-death",
    "x-delivery-count",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-received-from",
];
/// Prefix of the header carrying an attribute whose name the broker would read (see
/// [`broker_reads`]).
const ESCAPED: &str = "exo.attr.";

/// Whether RabbitMQ (or one of its plugins) gives a message header of this name a meaning:
/// `CC` and `BCC` route the message (and must be arrays: a string closes the channel), and the
/// `x-` names are the broker's (`x-death`, `x-delivery-count`, `x-delay`,
/// `x-stream-filter-value`, …). An attribute with such a name travels as `exo.attr.<name>`.
fn broker_reads(name: &str) -> bool {
    name.eq_ignore_ascii_case("cc")
        || name.eq_ignore_ascii_case("bcc")
        || name.get(..2).is_some_and(|prefix| prefix.eq_ignore_ascii_case("x-"))
}
/// The header with the time the proxy sent the message (ms; AMQP's timestamp is in seconds).
const SENT_AT: &str = "exo.enqueued-at-ms";
/// How often held deliveries are checked for an ended visibility.
const TICK: Duration = Duration::from_millis(50);
/// Acked delivery tags remembered per channel, so a repeated ack succeeds.
const REMEMBERED_ACKS: usize = 4096;

/// The settings of a `rabbitmq` queue backend.
///
/// ```yaml
/// backend:
///   kind: rabbitmq
///   url: amqp://shop@rabbit.internal:5672/prod   # vhost "prod"; no password here
///   password: env:RABBITMQ_PASSWORD
///   namespace: shop                              # queues <namespace>.<queue>
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RabbitMqQueueConfig {
    /// `amqp://user@host:port/vhost` (the vhost percent-encoded: `%2f` is `/`).
    #[serde(default = "default_url")]
    pub url: String,
    /// The password (a secret reference); without it the URL's, else `guest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
    /// Prefix of the queue names: one per app or environment sharing a vhost.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Largest message in bytes.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u64,
    /// With an `amqps://` URL: a PEM file of the certificate authorities that may sign the
    /// server's certificate, in addition to the webpki roots. The certificate and the host name
    /// are always verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
}

fn default_url() -> String {
    "amqp://guest@127.0.0.1:5672/%2f".into()
}

fn default_namespace() -> String {
    "eqs".into()
}

fn default_max_message_bytes() -> u64 {
    DEFAULT_MAX_MESSAGE_BYTES
}

impl Default for RabbitMqQueueConfig {
    fn default() -> Self {
        Self {
            url: default_url(),
            password: None,
            namespace: default_namespace(),
            max_message_bytes: default_max_message_bytes(),
            ca_file: None,
        }
    }
}

impl RabbitMqQueueConfig {
    fn check(&self) -> Result<AMQPUri, ConfigError> {
        let uri: AMQPUri = self
            .url
            .parse()
            .map_err(|e| ConfigError::Invalid(format!("backend.url is not an AMQP URL: {e}")))?;
        let ns = &self.namespace;
        if ns.is_empty()
            || ns.len() > 64
            || !ns.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigError::Invalid(format!(
                "backend.namespace {ns:?} must be 1 to 64 of A-Z a-z 0-9 '-' '_'"
            )));
        }
        if self.max_message_bytes == 0 {
            return Err(ConfigError::Invalid("backend.max-message-bytes must be above 0".into()));
        }
        if let Some(ca) = &self.ca_file {
            if uri.scheme != lapin::uri::AMQPScheme::AMQPS {
                return Err(ConfigError::Invalid(
                    "backend.ca-file is for TLS: the url must be amqps://host:5671/vhost".into(),
                ));
            }
            if !ca.is_file() {
                return Err(ConfigError::Invalid(format!(
                    "backend.ca-file {} is not a readable file",
                    ca.display()
                )));
            }
        }
        Ok(uri)
    }
}

impl exo_proxy_core::registry::Backend for RabbitMqQueue {
    type Opened = Arc<dyn Queue>;
    type Context = crate::services::OpenContext;
    type Config = RabbitMqQueueConfig;

    fn settings(_data: Option<std::path::PathBuf>) -> RabbitMqQueueConfig {
        RabbitMqQueueConfig::default()
    }

    fn validate(config: &RabbitMqQueueConfig) -> Result<(), ConfigError> {
        config.check().map(|_| ())
    }

    fn largest_item(config: &RabbitMqQueueConfig) -> Option<u64> {
        Some(config.max_message_bytes)
    }

    fn open<'a>(
        config: &'a RabbitMqQueueConfig,
        context: &'a Self::Context,
    ) -> exo_proxy_core::registry::BoxFuture<'a, ExoResult<Self::Opened>> {
        Box::pin(async move {
            let queue: Self::Opened = Arc::new(RabbitMqQueue::connect(config, context.call_timeout).await?);
            Ok(queue)
        })
    }
}

/// One registry record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
enum Record {
    Create {
        name: String,
        options: StoredOptions,
        created_at_ms: u64,
    },
    Delete {
        name: String,
    },
    /// Published by a proxy at start: seeing it back means the replay has caught up.
    Mark {
        id: String,
    },
    TopicCreate {
        name: String,
        created_at_ms: u64,
    },
    TopicDelete {
        name: String,
    },
    SubscriptionCreate {
        topic: String,
        subscription: StoredSubscription,
    },
    SubscriptionDelete {
        topic: String,
        name: String,
    },
}

/// The queues and topics the registry holds, as replayed.
#[derive(Default)]
struct Registry {
    queues: BTreeMap<String, (StoredOptions, u64)>,
    topics: BTreeMap<String, StoredTopic>,
    marks: HashSet<String>,
}

impl Registry {
    fn apply(&mut self, record: Record) {
        match record {
            Record::Create { name, options, created_at_ms } => {
                self.queues.insert(name, (options, created_at_ms));
            }
            Record::Delete { name } => {
                // A subscription goes with its queue.
                for topic in self.topics.values_mut() {
                    topic.subscriptions.retain(|_, s| s.queue != name);
                }
                self.queues.remove(&name);
            }
            Record::Mark { id } => {
                self.marks.insert(id);
            }
            // The first record of a name wins: a later one for an existing name changes nothing.
            Record::TopicCreate { name, created_at_ms } => {
                self.topics
                    .entry(name)
                    .or_insert(StoredTopic { created_at_ms, subscriptions: BTreeMap::new() });
            }
            Record::TopicDelete { name } => {
                self.topics.remove(&name);
            }
            Record::SubscriptionCreate { topic, subscription } => {
                if let Some(topic) = self.topics.get_mut(&topic) {
                    topic.subscriptions.entry(subscription.name.clone()).or_insert(subscription);
                }
            }
            Record::SubscriptionDelete { topic, name } => {
                if let Some(topic) = self.topics.get_mut(&topic) {
                    topic.subscriptions.remove(&name);
                }
            }
        }
    }
}

/// The deliveries one queue's channel holds for this proxy.
struct Receiver {
    id: u64,
    channel: Channel,
    /// Delivery tag → when its visibility ends.
    held: Mutex<HashMap<u64, Instant>>,
    acked: Mutex<(VecDeque<u64>, HashSet<u64>)>,
}

impl Receiver {
    fn remember_ack(&self, tag: u64) {
        if let Ok(mut acked) = self.acked.lock() {
            let (order, set) = &mut *acked;
            if set.insert(tag) {
                order.push_back(tag);
            }
            while order.len() > REMEMBERED_ACKS {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
    }

    fn was_acked(&self, tag: u64) -> bool {
        self.acked.lock().map(|a| a.1.contains(&tag)).unwrap_or(false)
    }

    fn take(&self, tag: u64) -> bool {
        self.held.lock().map(|mut h| h.remove(&tag).is_some()).unwrap_or(false)
    }
}

/// One connection and the channels on it; replaced as a whole when the connection fails. The
/// publishing channel alone is replaced when the broker closed it (a refused publish closes
/// the channel, not the connection).
struct Link {
    connection: Connection,
    publisher: Mutex<Channel>,
    /// The registry on this connection: followed (its follower task), or down since when and
    /// why. Queues are served either way; what needs the registry says why it cannot.
    registry: Mutex<RegistryLink>,
}

/// The queue registry's state on one connection.
enum RegistryLink {
    /// Replayed and followed by this task.
    Following(tokio::task::JoinHandle<()>),
    /// Could not be declared, followed or replayed: tried again after [`REGISTRY_RETRY`].
    Down(Instant, ExoError),
}

/// How long a registry that could not be followed is left before the next call needing it
/// tries again (meanwhile such calls fail at once with the reason).
const REGISTRY_RETRY: Duration = Duration::from_secs(2);

impl Link {
    /// The publishing channel as it is now (possibly closed: see [`RabbitMqQueue::link`]).
    fn publisher(&self) -> Channel {
        self.publisher.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Ok(RegistryLink::Following(follower)) = self.registry.get_mut().map(|r| &*r) {
            follower.abort();
        }
    }
}

type Receivers = Mutex<HashMap<String, Arc<Receiver>>>;

/// A channel for one call, closed in the background when dropped.
struct AdminChannel(Channel);

impl std::ops::Deref for AdminChannel {
    type Target = Channel;

    fn deref(&self) -> &Channel {
        &self.0
    }
}

impl Drop for AdminChannel {
    fn drop(&mut self) {
        let channel = self.0.clone();
        if channel.status().connected() {
            tokio::spawn(async move {
                let _ = channel.close(200, "done".into()).await;
            });
        }
    }
}

/// Queues in RabbitMQ.
pub struct RabbitMqQueue {
    descriptor: Descriptor,
    /// Without the configured password, which is [`Self::password`]'s current one at each
    /// connect.
    uri: AMQPUri,
    /// A `file:` password is read again (at most every few seconds) when a connection is made,
    /// so a rotated password serves the next reconnect without a restart; the open connection
    /// stays as it is (RabbitMQ keeps it when the user's password changes).
    password: Option<exo_proxy_core::secret::Followed<String>>,
    /// Extra roots for `amqps://` (the webpki roots are always trusted).
    tls: lapin::tcp::OwnedTLSConfig,
    namespace: String,
    call_timeout: Duration,
    /// This process, in receipts: a receipt from an earlier run is stale.
    instance: u64,
    next_receiver: AtomicU64,
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
    registry: Arc<Mutex<Registry>>,
    arrived: Arc<tokio::sync::Notify>,
    receivers: Arc<Receivers>,
    /// Held while a queue's channel is opened, so concurrent receives share one.
    opening: tokio::sync::Mutex<()>,
    /// Held while the registry is followed again (see [`RabbitMqQueue::registry_link`]).
    registry_retry: tokio::sync::Mutex<()>,
    ticker: tokio::task::JoinHandle<()>,
}

impl Drop for RabbitMqQueue {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}

impl std::fmt::Debug for RabbitMqQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqQueue").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

/// The AMQP reply code of a broker error (404 not found, 406 precondition failed, …).
fn amqp_code(err: &lapin::Error) -> Option<u16> {
    match err.kind() {
        ErrorKind::ProtocolError(e) => Some(e.get_id()),
        _ => None,
    }
}

fn map_error(operation: &str, err: &lapin::Error) -> ExoError {
    let message = format!("RabbitMQ {operation}: {err}");
    match amqp_code(err) {
        Some(403) => ExoError::new(ErrorReason::PermissionDenied, message),
        // A quorum queue whose leader is not up yet (a node restarting): the broker recovering.
        Some(404) if recovering(err) => ExoError::new(ErrorReason::BackendUnavailable, message).retryable(),
        // A header the broker refuses (a `CC` that is not an array, say): the message's fault.
        Some(406) if err.to_string().contains("in_header") => {
            ExoError::new(ErrorReason::InvalidAttribute, message)
        }
        Some(404 | 405 | 406 | 530 | 540) => ExoError::internal(message),
        _ => ExoError::new(ErrorReason::BackendUnavailable, message).retryable(),
    }
}

/// Whether the broker refused a call because a queue's home node or leader is down or still
/// starting (`NOT_FOUND - home node … is down or inaccessible`, `… not available`), which passes.
fn recovering(err: &lapin::Error) -> bool {
    recovering_text(&err.to_string())
}

/// [`recovering`] on the broker's error text.
fn recovering_text(text: &str) -> bool {
    ["down or inaccessible", "not available", "timed out", "no leader"].iter().any(|sign| text.contains(sign))
}

/// An attribute's text from a header value, and whether it is base64 of raw bytes. Strings
/// are their UTF-8 text; numbers, booleans and timestamps their decimal text; a decimal its
/// value with the point placed; byte arrays (and strings that are not UTF-8) base64, listed
/// by the caller in `exo.base64-attributes`; arrays, tables and void JSON (see [`json_of`]).
fn attribute_text(value: &AMQPValue) -> (String, bool) {
    match value {
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(text) => (text.to_owned(), false),
            Err(_) => (STANDARD.encode(s.as_bytes()), true),
        },
        AMQPValue::ByteArray(bytes) => (STANDARD.encode(bytes.as_slice()), true),
        AMQPValue::FieldArray(_) | AMQPValue::FieldTable(_) | AMQPValue::Void => {
            (json_of(value).to_string(), false)
        }
        other => match json_of(other) {
            serde_json::Value::String(text) => (text, false),
            scalar => (scalar.to_string(), false),
        },
    }
}

/// A header value as JSON: strings (bytes as base64), numbers, booleans, null for void, arrays
/// and objects; a decimal as its text (`"123.45"`), so no digit is lost.
fn json_of(value: &AMQPValue) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        AMQPValue::Boolean(b) => J::Bool(*b),
        AMQPValue::ShortShortInt(n) => J::from(*n),
        AMQPValue::ShortShortUInt(n) => J::from(*n),
        AMQPValue::ShortInt(n) => J::from(*n),
        AMQPValue::ShortUInt(n) => J::from(*n),
        AMQPValue::LongInt(n) => J::from(*n),
        AMQPValue::LongUInt(n) => J::from(*n),
        AMQPValue::LongLongInt(n) => J::from(*n),
        AMQPValue::Timestamp(n) => J::from(*n),
        AMQPValue::Float(n) => J::from(f64::from(*n)),
        AMQPValue::Double(n) => J::from(*n),
        AMQPValue::DecimalValue(d) => {
            let digits = format!("{:0>width$}", d.value, width = usize::from(d.scale) + 1);
            let (whole, fraction) = digits.split_at(digits.len() - usize::from(d.scale));
            J::String(if fraction.is_empty() { whole.to_owned() } else { format!("{whole}.{fraction}") })
        }
        AMQPValue::ShortString(s) => J::String(s.as_str().to_owned()),
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(text) => J::String(text.to_owned()),
            Err(_) => J::String(STANDARD.encode(s.as_bytes())),
        },
        AMQPValue::ByteArray(bytes) => J::String(STANDARD.encode(bytes.as_slice())),
        AMQPValue::FieldArray(items) => J::Array(items.as_slice().iter().map(json_of).collect()),
        AMQPValue::FieldTable(table) => {
            J::Object(table.inner().iter().map(|(k, v)| (k.as_str().to_owned(), json_of(v))).collect())
        }
        AMQPValue::Void => J::Null,
    }
}

fn integer(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        _ => None,
    }
}

/// The headers of an outgoing message: its attributes and the time it was sent.
fn headers_of(attributes: HashMap<String, String>, sent_at_ms: u64) -> FieldTable {
    let mut headers = FieldTable::default();
    for (name, value) in attributes {
        let name = if broker_reads(&name) { format!("{ESCAPED}{name}") } else { name };
        headers.insert(name.into(), AMQPValue::LongString(LongString::from(value)));
    }
    headers.insert(SENT_AT.into(), AMQPValue::LongLongInt(i64::try_from(sent_at_ms).unwrap_or(i64::MAX)));
    headers
}

/// Why a publish was not confirmed, in words.
fn refusal(confirmation: &Confirmation) -> &'static str {
    match confirmation {
        Confirmation::Ack(_) => "no queue took it",
        Confirmation::Nack(_) => {
            "the broker refused it (nack: a full queue with reject-publish, or an internal error)"
        }
        Confirmation::NotRequested => "the channel is not in confirm mode",
    }
}

/// A delivery in the contract's terms (its receipt is filled in by the caller).
fn message_of(delivery: &Delivery) -> pb::Message {
    let mut attributes = HashMap::new();
    let mut binary = Vec::new();
    let mut dequeue_count = if delivery.redelivered { 2 } else { 1 };
    let mut enqueued_at_ms =
        delivery.properties.timestamp().map(|s| s.saturating_mul(1000)).unwrap_or_else(now_ms);
    if let Some(headers) = delivery.properties.headers() {
        for (name, value) in headers.inner() {
            let name = name.as_str();
            if name == "x-delivery-count" {
                if let Some(n) = integer(value) {
                    dequeue_count = u32::try_from(n.max(0)).unwrap_or(u32::MAX).saturating_add(1);
                }
            } else if name == SENT_AT {
                if let Some(n) = integer(value) {
                    enqueued_at_ms = u64::try_from(n).unwrap_or(0);
                }
            } else {
                let name = match name.strip_prefix(ESCAPED) {
                    Some(escaped) => escaped,
                    None if BROKER_HEADERS.contains(&name) || name == BASE64_ATTRIBUTES => continue,
                    None => name,
                };
                let (text, base64) = attribute_text(value);
                if base64 {
                    binary.push(name.to_owned());
                }
                attributes.insert(name.to_owned(), text);
            }
        }
    }
    if !binary.is_empty() {
        binary.sort();
        attributes.insert(BASE64_ATTRIBUTES.to_owned(), binary.join(","));
    }
    let message_id = match delivery.properties.message_id() {
        Some(id) if !id.as_str().is_empty() => id.as_str().to_owned(),
        _ => {
            let mut digest = Sha256::new();
            digest.update(&delivery.data);
            let mut names: Vec<_> = attributes.iter().collect();
            names.sort();
            for (name, value) in names {
                digest.update(name.as_bytes());
                digest.update(value.as_bytes());
            }
            let hash = digest.finalize();
            format!("rmq-{}", hash[..12].iter().map(|b| format!("{b:02x}")).collect::<String>())
        }
    };
    pb::Message {
        message_id,
        receipt: String::new(),
        body: delivery.data.clone(),
        attributes,
        dequeue_count,
        enqueued_at_ms,
    }
}

/// A receipt: this process, the channel, the delivery tag, the queue.
struct Receipt {
    instance: u64,
    receiver: u64,
    tag: u64,
}

impl Receipt {
    fn encode(&self, queue: &str) -> String {
        URL_SAFE_NO_PAD.encode(format!("r1.{:x}.{}.{}.{queue}", self.instance, self.receiver, self.tag))
    }

    fn decode(token: &str, queue: &QueueName) -> ExoResult<Self> {
        let invalid = |why: &str| {
            ExoError::new(ErrorReason::InvalidReceipt, format!("receipt is not valid: {why}"))
                .with_field("receipt")
                .with_resource(queue.as_str())
        };
        let raw = URL_SAFE_NO_PAD.decode(token.as_bytes()).map_err(|_| invalid("not a receipt token"))?;
        let text = String::from_utf8(raw).map_err(|_| invalid("not a receipt token"))?;
        let mut parts = text.splitn(5, '.');
        let (Some("r1"), Some(instance), Some(receiver), Some(tag), Some(owner)) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a receipt token"));
        };
        let parsed = (u64::from_str_radix(instance, 16), receiver.parse(), tag.parse());
        let (Ok(instance), Ok(receiver), Ok(tag)) = parsed else {
            return Err(invalid("not a receipt token"));
        };
        if owner != queue.as_str() {
            return Err(invalid(&format!("it was issued by queue '{owner}', not '{queue}'")));
        }
        Ok(Self { instance, receiver, tag })
    }
}

/// Gives back every held delivery whose visibility has ended, until the backend is dropped.
async fn give_back_expired(receivers: Weak<Receivers>) {
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        let Some(receivers) = receivers.upgrade() else { return };
        let all: Vec<Arc<Receiver>> =
            receivers.lock().map(|r| r.values().cloned().collect()).unwrap_or_default();
        drop(receivers);
        let now = Instant::now();
        for receiver in all {
            let due: Vec<u64> = receiver
                .held
                .lock()
                .map(|mut held| {
                    let due: Vec<u64> =
                        held.iter().filter(|(_, at)| **at <= now).map(|(tag, _)| *tag).collect();
                    for tag in &due {
                        held.remove(tag);
                    }
                    due
                })
                .unwrap_or_default();
            for tag in due {
                let options = BasicNackOptions { requeue: true, multiple: false };
                if let Err(err) = receiver.channel.basic_nack(tag, options).await {
                    // The channel is gone, and with it the delivery: the broker has requeued it.
                    tracing::debug!(error = %err, "rabbitmq: give back after visibility");
                }
            }
        }
    }
}

/// Replays the registry stream from its start and follows it.
async fn follow_registry(
    channel: Channel,
    stream: String,
    registry: Arc<Mutex<Registry>>,
    arrived: Arc<tokio::sync::Notify>,
) {
    let mut arguments = FieldTable::default();
    arguments.insert("x-stream-offset".into(), AMQPValue::LongString("first".into()));
    let consumer = channel
        .basic_consume(
            stream.as_str().into(),
            "exo-registry".into(),
            BasicConsumeOptions::default(),
            arguments,
        )
        .await;
    let mut consumer = match consumer {
        Ok(consumer) => consumer,
        Err(err) => {
            tracing::warn!(error = %err, "rabbitmq: cannot follow the queue registry");
            return;
        }
    };
    if let Ok(mut registry) = registry.lock() {
        registry.queues.clear();
    }
    while let Some(delivery) = consumer.next().await {
        let Ok(delivery) = delivery else { break };
        match serde_json::from_slice::<Record>(&delivery.data) {
            Ok(record) => {
                if let Ok(mut registry) = registry.lock() {
                    registry.apply(record);
                }
                arrived.notify_waiters();
            }
            Err(err) => tracing::warn!(error = %err, "rabbitmq: skipping a registry record it cannot read"),
        }
        if let Err(err) = delivery.acker.ack(BasicAckOptions::default()).await {
            tracing::debug!(error = %err, "rabbitmq: registry ack");
            break;
        }
    }
}

impl RabbitMqQueue {
    /// Connects, declares the registry stream and replays it.
    pub async fn connect(config: &RabbitMqQueueConfig, call_timeout: Duration) -> ExoResult<Self> {
        let uri = config.check().map_err(|e| ExoError::invalid_argument("backend", e.to_string()))?;
        let password = match &config.password {
            Some(secret) => Some(
                exo_proxy_core::secret::Followed::text(secret.clone(), "backend.password")
                    .map_err(|e| ExoError::invalid_argument("backend.password", e.to_string()))?,
            ),
            None => None,
        };
        let mut tls = lapin::tcp::OwnedTLSConfig::default();
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read_to_string(path).map_err(|e| {
                ExoError::invalid_argument("backend.ca-file", format!("{}: {e}", path.display()))
            })?;
            tls.cert_chain = Some(pem);
        }
        let receivers: Arc<Receivers> = Arc::default();
        let ticker = tokio::spawn(give_back_expired(Arc::downgrade(&receivers)));
        use Capability::*;
        let queue = Self {
            descriptor: Descriptor {
                backend: "rabbitmq",
                capabilities: [
                    LongPoll,
                    Retention,
                    DeadLetter,
                    ChangeVisibility,
                    Purge,
                    Durable,
                    StaleReceipts,
                    Topics,
                ]
                .into(),
                limits: local_limits(config.max_message_bytes),
            },
            uri,
            password,
            tls,
            namespace: config.namespace.clone(),
            call_timeout,
            // The random bits of a v7 id.
            instance: (uuid::Uuid::now_v7().as_u128() as u64) & 0x3fff_ffff_ffff_ffff,
            next_receiver: AtomicU64::new(1),
            link: tokio::sync::Mutex::new(None),
            registry: Arc::default(),
            arrived: Arc::default(),
            receivers,
            opening: tokio::sync::Mutex::new(()),
            registry_retry: tokio::sync::Mutex::new(()),
            ticker,
        };
        queue.link().await?;
        Ok(queue)
    }

    fn queue_name(&self, queue: &str) -> String {
        format!("{}.{queue}", self.namespace)
    }

    fn registry_name(&self) -> String {
        // '_' is no queue name's character, so no queue can take this name.
        format!("{}._registry", self.namespace)
    }

    /// The broker's answer to `call`, or BACKEND_UNAVAILABLE (retryable) when none comes within
    /// the call timeout; the caller reads the answer (a 404 may mean "no such queue").
    async fn answered<T>(
        &self,
        what: &str,
        call: impl Future<Output = lapin::Result<T>>,
    ) -> ExoResult<lapin::Result<T>> {
        tokio::time::timeout(self.call_timeout, call).await.map_err(|_| {
            ExoError::new(
                ErrorReason::BackendUnavailable,
                format!("RabbitMQ {what}: no answer within {:?}", self.call_timeout),
            )
            .retryable()
        })
    }

    /// [`Self::answered`], with any broker error mapped.
    async fn bounded<T>(&self, what: &str, call: impl Future<Output = lapin::Result<T>>) -> ExoResult<T> {
        self.answered(what, call).await?.map_err(|e| map_error(what, &e))
    }

    /// A new publishing channel in confirm mode on `connection`.
    async fn open_publisher(&self, connection: &Connection) -> ExoResult<Channel> {
        let publisher = self.bounded("open channel", connection.create_channel()).await?;
        self.bounded("confirm mode", publisher.confirm_select(ConfirmSelectOptions::default())).await?;
        Ok(publisher)
    }

    /// The live connection, reconnected (and the registry replayed) when it was lost; its
    /// publishing channel opened again when the broker had closed it.
    async fn link(&self) -> ExoResult<Arc<Link>> {
        let mut current = self.link.lock().await;
        if let Some(link) = current.as_ref()
            && link.connection.status().connected()
        {
            if !link.publisher().status().connected() {
                tracing::warn!("RabbitMQ closed the publishing channel; opening another");
                let publisher = self.open_publisher(&link.connection).await?;
                *link.publisher.lock().unwrap_or_else(|e| e.into_inner()) = publisher;
            }
            return Ok(link.clone());
        }
        // Deliveries held on the old connection went back to their queues when it closed.
        if let Ok(mut receivers) = self.receivers.lock() {
            receivers.clear();
        }
        let runtime = lapin::runtime::default_runtime().map_err(|e| map_error("connect", &e))?;
        let mut uri = self.uri.clone();
        if let Some(password) = &self.password {
            uri.authority.userinfo.password = password.current().0.to_string();
        }
        let connect = Connection::connect_uri_with_config(
            uri,
            ConnectionProperties::default(),
            self.tls.clone(),
            runtime,
        );
        let connection = self.bounded("connect", connect).await?;
        let publisher = Mutex::new(self.open_publisher(&connection).await?);
        let link = Arc::new(Link {
            connection,
            publisher,
            registry: Mutex::new(RegistryLink::Down(
                Instant::now(),
                ExoError::unavailable("not followed yet"),
            )),
        });
        // The registry is followed as well, but queues are served without it: a registry stream
        // that is down (its node restarting, say) fails only what needs it (listing, options,
        // topics), with the reason.
        self.follow_registry(&link).await;
        *current = Some(link.clone());
        Ok(link)
    }

    /// Declares, replays and follows the registry stream on `link`, and records how that went.
    async fn follow_registry(&self, link: &Link) {
        let state = match self.replay_registry(link).await {
            Ok(follower) => RegistryLink::Following(follower),
            Err(err) => {
                tracing::warn!(error = %err, "rabbitmq: the queue registry stream cannot be followed now; queues are served, listing, options and topics wait for it");
                RegistryLink::Down(Instant::now(), err)
            }
        };
        if let Ok(mut slot) = link.registry.lock() {
            if let RegistryLink::Following(old) = &*slot {
                old.abort();
            }
            *slot = state;
        }
    }

    /// Declares the registry stream, follows it from its start and waits until it has replayed
    /// up to now (a mark published now comes back); the follower task.
    async fn replay_registry(&self, link: &Link) -> ExoResult<tokio::task::JoinHandle<()>> {
        let registry_channel = self.bounded("open channel", link.connection.create_channel()).await?;
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), AMQPValue::LongString("stream".into()));
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        self.bounded(
            "declare the registry stream",
            registry_channel.queue_declare(self.registry_name().as_str().into(), durable, arguments),
        )
        .await?;
        // Stream consumers must ack, and need a prefetch.
        self.bounded("qos", registry_channel.basic_qos(1000, BasicQosOptions::default())).await?;
        let follower = tokio::spawn(follow_registry(
            registry_channel,
            self.registry_name(),
            self.registry.clone(),
            self.arrived.clone(),
        ));
        let mark = new_message_id();
        let waiting = self.arrived.notified();
        tokio::pin!(waiting);
        waiting.as_mut().enable();
        if let Err(err) = self.append(link, &Record::Mark { id: mark.clone() }).await {
            follower.abort();
            return Err(err);
        }
        let deadline = Instant::now() + self.call_timeout;
        loop {
            if self.registry.lock().map(|r| r.marks.contains(&mark)).unwrap_or(false) {
                return Ok(follower);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || follower.is_finished() {
                follower.abort();
                return Err(ExoError::new(
                    ErrorReason::BackendUnavailable,
                    "RabbitMQ: the queue registry stream did not replay in time",
                )
                .retryable());
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), waiting.as_mut()).await;
            waiting.set(self.arrived.notified());
            waiting.as_mut().enable();
        }
    }

    /// The live connection with its registry followed: followed again when its follower ended
    /// (the stream's node went away), at most every [`REGISTRY_RETRY`] while it cannot be; until
    /// then BACKEND_UNAVAILABLE (retryable) with the reason.
    async fn registry_link(&self) -> ExoResult<Arc<Link>> {
        let link = self.link().await?;
        let retry = match &*link.registry.lock().unwrap_or_else(|e| e.into_inner()) {
            RegistryLink::Following(follower) => follower.is_finished(),
            RegistryLink::Down(since, _) => since.elapsed() >= REGISTRY_RETRY,
        };
        if retry {
            // One retry at a time: the calls arriving meanwhile wait for its outcome instead of
            // each replaying the stream (and aborting each other's follower).
            let _retrying = self.registry_retry.lock().await;
            let still = match &*link.registry.lock().unwrap_or_else(|e| e.into_inner()) {
                RegistryLink::Following(follower) => follower.is_finished(),
                RegistryLink::Down(since, _) => since.elapsed() >= REGISTRY_RETRY,
            };
            if still {
                self.follow_registry(&link).await;
            }
        }
        let down = match &*link.registry.lock().unwrap_or_else(|e| e.into_inner()) {
            RegistryLink::Following(_) => None,
            RegistryLink::Down(_, why) => Some(why.message.clone()),
        };
        match down {
            None => Ok(link),
            Some(why) => Err(ExoError::new(
                ErrorReason::BackendUnavailable,
                format!("RabbitMQ: the queue registry stream (queue options, listing, topics) is not available: {why}"),
            )
            .retryable()),
        }
    }

    /// Appends `record` to the registry and applies it here at once (the follower applies it
    /// again when it comes back: records are idempotent).
    async fn record(&self, record: Record) -> ExoResult<()> {
        let link = self.registry_link().await?;
        self.append(&link, &record).await?;
        if let Ok(mut registry) = self.registry.lock() {
            registry.apply(record);
        }
        Ok(())
    }

    /// The topic as the registry holds it, or TOPIC_NOT_FOUND.
    async fn stored_topic(&self, name: &str) -> ExoResult<StoredTopic> {
        self.registry_link().await?;
        let registry = self.registry.lock().map_err(|_| ExoError::internal("registry lock poisoned"))?;
        registry.topics.get(name).cloned().ok_or_else(|| topic_not_found(name))
    }

    /// Appends a record to the registry stream, confirmed.
    async fn append(&self, link: &Link, record: &Record) -> ExoResult<()> {
        let body =
            serde_json::to_vec(record).map_err(|e| ExoError::internal(format!("registry record: {e}")))?;
        let properties = BasicProperties::default().with_delivery_mode(2);
        let confirm = self
            .bounded(
                "publish to the registry",
                link.publisher().basic_publish(
                    "".into(),
                    self.registry_name().as_str().into(),
                    BasicPublishOptions { mandatory: true, ..Default::default() },
                    &body,
                    properties,
                ),
            )
            .await?;
        match self.bounded("registry confirm", confirm).await? {
            Confirmation::Ack(None) => Ok(()),
            other => Err(ExoError::new(
                ErrorReason::BackendUnavailable,
                format!("RabbitMQ did not store a registry record: {}", refusal(&other)),
            )
            .retryable()),
        }
    }

    /// A channel of its own for one call that the broker may answer by closing the channel (a
    /// missing queue, other arguments): such a call never takes a neighbour's call down with it.
    /// Closed when dropped.
    async fn admin(&self) -> ExoResult<AdminChannel> {
        let link = self.link().await?;
        let channel = self.bounded("open channel", link.connection.create_channel()).await?;
        Ok(AdminChannel(channel))
    }

    /// The ready message count of a queue, or `None` when it does not exist.
    async fn ready_count(&self, queue: &str) -> ExoResult<Option<u32>> {
        let channel = self.admin().await?;
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let declared = self
            .answered(
                "look up queue",
                channel.queue_declare(self.queue_name(queue).as_str().into(), passive, FieldTable::default()),
            )
            .await?;
        match declared {
            Ok(q) => Ok(Some(q.message_count())),
            Err(err) if amqp_code(&err) == Some(404) => Ok(None),
            Err(err) => Err(map_error("look up queue", &err)),
        }
    }

    fn stored_options(&self, queue: &str) -> Option<(StoredOptions, u64)> {
        self.registry.lock().ok().and_then(|r| r.queues.get(queue).cloned())
    }

    /// The channel holding this queue's deliveries, opened when there is none (or it closed).
    async fn receiver(&self, queue: &str) -> ExoResult<Arc<Receiver>> {
        let open = |this: &Self| {
            this.receivers
                .lock()
                .ok()
                .and_then(|r| r.get(queue).cloned())
                .filter(|receiver| receiver.channel.status().connected())
        };
        if let Some(receiver) = open(self) {
            return Ok(receiver);
        }
        let _opening = self.opening.lock().await;
        if let Some(receiver) = open(self) {
            return Ok(receiver);
        }
        let link = self.link().await?;
        let channel = self.bounded("open channel", link.connection.create_channel()).await?;
        // Each waiting consumer takes one message at most; basic.get is not limited by it.
        self.bounded("qos", channel.basic_qos(1, BasicQosOptions::default())).await?;
        let receiver = Arc::new(Receiver {
            id: self.next_receiver.fetch_add(1, Ordering::Relaxed),
            channel,
            held: Mutex::default(),
            acked: Mutex::default(),
        });
        if let Ok(mut receivers) = self.receivers.lock() {
            receivers.insert(queue.to_owned(), receiver.clone());
        }
        Ok(receiver)
    }

    fn forget_receiver(&self, queue: &str) -> Option<Arc<Receiver>> {
        self.receivers.lock().ok().and_then(|mut r| r.remove(queue))
    }

    /// Takes up to `max` ready messages with basic.get.
    async fn get_ready(
        &self,
        receiver: &Receiver,
        queue: &QueueName,
        max: usize,
        out: &mut Vec<Delivery>,
    ) -> ExoResult<()> {
        let name = self.queue_name(queue.as_str());
        while out.len() < max {
            let got = self
                .answered(
                    "receive",
                    receiver.channel.basic_get(name.as_str().into(), BasicGetOptions { no_ack: false }),
                )
                .await?;
            match got {
                Ok(Some(message)) => out.push(message.delivery),
                Ok(None) => break,
                Err(err) if amqp_code(&err) == Some(404) => {
                    self.forget_receiver(queue.as_str());
                    return Err(queue_not_found(queue.as_str()));
                }
                Err(err) => return Err(map_error("receive", &err)),
            }
        }
        Ok(())
    }

    /// Waits up to `wait` for one message with a consumer (the broker pushes it).
    async fn wait_for_one(
        &self,
        receiver: &Receiver,
        queue: &QueueName,
        wait: Duration,
        out: &mut Vec<Delivery>,
    ) -> ExoResult<()> {
        let tag = format!("exo-wait-{}", new_message_id());
        let consumed = self
            .bounded(
                "receive",
                receiver.channel.basic_consume(
                    self.queue_name(queue.as_str()).as_str().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await;
        let mut consumer = match consumed {
            Ok(consumer) => consumer,
            Err(_) if !receiver.channel.status().connected() => {
                // A missing queue closes the channel with 404.
                self.forget_receiver(queue.as_str());
                return match self.ready_count(queue.as_str()).await? {
                    None => Err(queue_not_found(queue.as_str())),
                    Some(_) => Err(ExoError::new(
                        ErrorReason::BackendUnavailable,
                        "RabbitMQ receive: channel closed",
                    )
                    .retryable()),
                };
            }
            Err(err) => return Err(err),
        };
        if let Ok(Some(Ok(delivery))) = tokio::time::timeout(wait, consumer.next()).await {
            out.push(delivery);
        }
        let short: ShortString = tag.as_str().into();
        self.bounded("receive", receiver.channel.basic_cancel(short, BasicCancelOptions::default())).await?;
        // A delivery pushed before the cancel took effect is this receive's too.
        while let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_millis(1), consumer.next()).await
        {
            out.push(delivery);
        }
        Ok(())
    }

    /// Acks `tag` if this receipt still holds it; RECEIPT_STALE (or QUEUE_NOT_FOUND) otherwise.
    async fn settle(&self, queue: &QueueName, receipt: &str, visibility: Option<u32>) -> ExoResult<()> {
        let receipt = Receipt::decode(receipt, queue)?;
        let receiver = self.receivers.lock().ok().and_then(|r| r.get(queue.as_str()).cloned());
        let holder = receiver.filter(|r| receipt.instance == self.instance && r.id == receipt.receiver);
        if let Some(receiver) = holder {
            match visibility {
                None if receiver.take(receipt.tag) => {
                    let acked = receiver.channel.basic_ack(receipt.tag, BasicAckOptions::default());
                    self.bounded("ack", acked).await?;
                    receiver.remember_ack(receipt.tag);
                    return Ok(());
                }
                None if receiver.was_acked(receipt.tag) => return Ok(()),
                Some(0) if receiver.take(receipt.tag) => {
                    let options = BasicNackOptions { requeue: true, multiple: false };
                    self.bounded("change visibility", receiver.channel.basic_nack(receipt.tag, options))
                        .await?;
                    return Ok(());
                }
                Some(seconds) => {
                    let until = Instant::now() + Duration::from_secs(u64::from(seconds));
                    let moved = receiver
                        .held
                        .lock()
                        .map(|mut held| held.get_mut(&receipt.tag).map(|at| *at = until).is_some())
                        .unwrap_or(false);
                    if moved {
                        return Ok(());
                    }
                }
                None => {}
            }
        }
        // The delivery was given back (visibility ended, or the channel or this proxy restarted).
        match self.ready_count(queue.as_str()).await? {
            None => Err(queue_not_found(queue.as_str())),
            Some(_) => Err(stale_receipt(queue)),
        }
    }

    fn arguments(&self, options: &pb::QueueOptions) -> FieldTable {
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        arguments.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(i64::from(options.retention_seconds) * 1000),
        );
        if !options.dead_letter_queue.is_empty() {
            // A message given back more than max_receives - 1 times has been received
            // max_receives times: the broker dead-letters it instead of delivering it again.
            arguments.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongInt(i32::try_from(options.max_receives.saturating_sub(1)).unwrap_or(i32::MAX)),
            );
            arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
            arguments.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(self.queue_name(&options.dead_letter_queue).into()),
            );
            arguments.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
            arguments.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
        }
        arguments
    }
}

#[async_trait]
impl Queue for RabbitMqQueue {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    async fn ready(&self) -> ExoResult<()> {
        self.link().await.map(|_| ())
    }

    async fn create_queue(&self, op: ops::CreateQueue<'_>) -> ExoResult<(bool, pb::QueueInfo)> {
        let ops::CreateQueue { queue: name, options } = op;
        // The queue's options go into the registry: none is made while it cannot take them.
        self.registry_link().await?;
        let exists = self.ready_count(name.as_str()).await?.is_some();
        if exists && let Some((stored, _)) = self.stored_options(name.as_str()) {
            let existing = stored.options();
            if existing != *options {
                return Err(already_exists(name, &existing, options));
            }
            return Ok((false, self.queue_info(ops::QueueInfo { queue: name }).await?));
        }
        if !options.dead_letter_queue.is_empty()
            && self.ready_count(&options.dead_letter_queue).await?.is_none()
        {
            return Err(dead_letter_missing(&options.dead_letter_queue));
        }
        let channel = self.admin().await?;
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        let declared = self
            .answered(
                "create queue",
                channel.queue_declare(
                    self.queue_name(name.as_str()).as_str().into(),
                    durable,
                    self.arguments(options),
                ),
            )
            .await?;
        match declared {
            Ok(_) => {}
            Err(err) if amqp_code(&err) == Some(406) => {
                return Err(ExoError::new(
                    ErrorReason::QueueAlreadyExists,
                    format!("queue '{name}' already exists in RabbitMQ with other arguments: {err}"),
                )
                .with_resource(name.as_str()));
            }
            Err(err) => return Err(map_error("create queue", &err)),
        }
        let created_at_ms = now_ms();
        let record = Record::Create {
            name: name.to_string(),
            options: StoredOptions::from_options(options),
            created_at_ms,
        };
        let link = self.registry_link().await?;
        self.append(&link, &record).await?;
        if let Ok(mut registry) = self.registry.lock() {
            registry.apply(record);
        }
        let info = pb::QueueInfo {
            name: name.to_string(),
            options: Some(options.clone()),
            created_at_ms,
            ..Default::default()
        };
        Ok((!exists, info))
    }

    async fn delete_queue(&self, op: ops::DeleteQueue<'_>) -> ExoResult<()> {
        let ops::DeleteQueue { queue: name } = op;
        if let Some(receiver) = self.forget_receiver(name.as_str()) {
            let _ = receiver.channel.close(200, "queue deleted".into()).await;
        }
        if self.ready_count(name.as_str()).await?.is_none() {
            return Err(queue_not_found(name.as_str()));
        }
        let channel = self.admin().await?;
        self.bounded(
            "delete queue",
            channel
                .queue_delete(self.queue_name(name.as_str()).as_str().into(), QueueDeleteOptions::default()),
        )
        .await?;
        self.record(Record::Delete { name: name.to_string() }).await
    }

    async fn list_queues(&self, op: ops::ListQueues<'_>) -> ExoResult<Vec<String>> {
        let ops::ListQueues { prefix, start_after, limit } = op;
        self.registry_link().await?;
        let registry = self.registry.lock().map_err(|_| ExoError::internal("registry lock poisoned"))?;
        Ok(names_after(registry.queues.keys(), prefix, start_after, limit))
    }

    async fn queue_info(&self, op: ops::QueueInfo<'_>) -> ExoResult<pb::QueueInfo> {
        let ops::QueueInfo { queue: name } = op;
        let ready = self.ready_count(name.as_str()).await?.ok_or_else(|| queue_not_found(name.as_str()))?;
        let (options, created_at_ms) = self.stored_options(name.as_str()).unwrap_or_else(|| {
            // Made by hand: its arguments cannot be read over AMQP.
            let defaults = StoredOptions {
                visibility: DEFAULT_VISIBILITY_SECONDS,
                retention: crate::model::DEFAULT_RETENTION_SECONDS,
                max_receives: 0,
                dead_letter_queue: String::new(),
            };
            (defaults, 0)
        });
        let in_flight = self
            .receivers
            .lock()
            .ok()
            .and_then(|r| r.get(name.as_str()).map(|r| r.held.lock().map(|h| h.len()).unwrap_or(0)))
            .unwrap_or(0);
        Ok(pb::QueueInfo {
            name: name.to_string(),
            options: Some(options.options()),
            created_at_ms,
            visible_messages: u64::from(ready),
            in_flight_messages: in_flight as u64,
            delayed_messages: 0,
        })
    }

    async fn send(&self, op: ops::Send<'_>) -> ExoResult<Vec<ExoResult<String>>> {
        let ops::Send { queue: name, messages } = op;
        let publisher = self.link().await?.publisher();
        let routing_key = self.queue_name(name.as_str());
        let mut ids = Vec::with_capacity(messages.len());
        let mut confirms = Vec::with_capacity(messages.len());
        let sent_at = now_ms();
        for message in messages {
            let id = new_message_id();
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(id.as_str().into())
                .with_timestamp(sent_at / 1000)
                .with_headers(headers_of(message.attributes, sent_at));
            let published = publisher
                .basic_publish(
                    "".into(),
                    routing_key.as_str().into(),
                    BasicPublishOptions { mandatory: true, ..Default::default() },
                    &message.body,
                    properties,
                )
                .await;
            confirms.push(published);
            ids.push(id);
        }
        let mut results = Vec::with_capacity(ids.len());
        let mut returned = 0;
        for (id, published) in ids.into_iter().zip(confirms) {
            let confirmed = match published {
                Ok(confirm) => self.bounded("send confirm", confirm).await,
                Err(err) => Err(map_error("send", &err)),
            };
            results.push(match confirmed {
                Ok(Confirmation::Ack(None)) => Ok(id),
                Ok(Confirmation::Ack(Some(_))) => {
                    returned += 1;
                    Err(queue_not_found(name.as_str()))
                }
                Ok(other) => Err(ExoError::new(
                    ErrorReason::BackendUnavailable,
                    format!("RabbitMQ did not store the message: {}", refusal(&other)),
                )
                .retryable()),
                Err(err) => Err(err),
            });
        }
        if returned > 0 && returned == results.len() {
            return Err(queue_not_found(name.as_str()));
        }
        Ok(results)
    }

    async fn receive(&self, op: ops::Receive<'_>) -> ExoResult<Vec<pb::Message>> {
        let ops::Receive { queue: name, params } = op;
        let visibility = match params.visibility_seconds {
            Some(seconds) => seconds,
            None => self
                .stored_options(name.as_str())
                .map(|(o, _)| o.visibility)
                .unwrap_or(DEFAULT_VISIBILITY_SECONDS),
        };
        let receiver = self.receiver(name.as_str()).await?;
        let max = params.max_messages as usize;
        let mut deliveries = Vec::new();
        self.get_ready(&receiver, name, max, &mut deliveries).await?;
        if deliveries.is_empty() && !params.wait.is_zero() {
            self.wait_for_one(&receiver, name, params.wait, &mut deliveries).await?;
            if !deliveries.is_empty() {
                self.get_ready(&receiver, name, max, &mut deliveries).await?;
            }
        }
        let until = Instant::now() + Duration::from_secs(u64::from(visibility));
        let mut out = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let tag = delivery.delivery_tag;
            let mut message = message_of(&delivery);
            message.receipt =
                Receipt { instance: self.instance, receiver: receiver.id, tag }.encode(name.as_str());
            if visibility == 0 {
                let options = BasicNackOptions { requeue: true, multiple: false };
                self.bounded("give back", receiver.channel.basic_nack(tag, options)).await?;
            } else if let Ok(mut held) = receiver.held.lock() {
                held.insert(tag, until);
            }
            out.push(message);
        }
        Ok(out)
    }

    async fn ack(&self, op: ops::Ack<'_>) -> ExoResult<()> {
        let ops::Ack { queue: name, receipt } = op;
        self.settle(name, receipt, None).await
    }

    async fn change_visibility(&self, op: ops::ChangeVisibility<'_>) -> ExoResult<()> {
        let ops::ChangeVisibility { queue: name, receipt, seconds } = op;
        self.settle(name, receipt, Some(seconds)).await
    }

    async fn purge(&self, op: ops::Purge<'_>) -> ExoResult<()> {
        let ops::Purge { queue: name } = op;
        let channel = self.admin().await?;
        let purged = self
            .answered(
                "purge",
                channel.queue_purge(
                    self.queue_name(name.as_str()).as_str().into(),
                    QueuePurgeOptions::default(),
                ),
            )
            .await?;
        match purged {
            Ok(_) => {}
            Err(err) if amqp_code(&err) == Some(404) => return Err(queue_not_found(name.as_str())),
            Err(err) => return Err(map_error("purge", &err)),
        }
        // A purge leaves unacknowledged messages alone; those this proxy holds go too.
        if let Some(receiver) = self.receivers.lock().ok().and_then(|r| r.get(name.as_str()).cloned()) {
            let held: Vec<u64> =
                receiver.held.lock().map(|mut h| h.drain().map(|(tag, _)| tag).collect()).unwrap_or_default();
            for tag in held {
                self.bounded("purge held", receiver.channel.basic_ack(tag, BasicAckOptions::default()))
                    .await?;
                receiver.remember_ack(tag);
            }
        }
        Ok(())
    }
    async fn create_topic(&self, op: ops::CreateTopic<'_>) -> ExoResult<(bool, pb::TopicInfo)> {
        let ops::CreateTopic { topic: name } = op;
        if let Ok(existing) = self.stored_topic(name.as_str()).await {
            return Ok((false, existing.info(name.as_str())));
        }
        let created_at_ms = now_ms();
        self.record(Record::TopicCreate { name: name.to_string(), created_at_ms }).await?;
        let stored = self.stored_topic(name.as_str()).await?;
        Ok((stored.created_at_ms == created_at_ms, stored.info(name.as_str())))
    }

    async fn delete_topic(&self, op: ops::DeleteTopic<'_>) -> ExoResult<()> {
        let ops::DeleteTopic { topic: name } = op;
        self.stored_topic(name.as_str()).await?;
        self.record(Record::TopicDelete { name: name.to_string() }).await
    }

    async fn list_topics(&self, op: ops::ListTopics<'_>) -> ExoResult<Vec<String>> {
        let ops::ListTopics { prefix, start_after, limit } = op;
        self.registry_link().await?;
        let registry = self.registry.lock().map_err(|_| ExoError::internal("registry lock poisoned"))?;
        Ok(names_after(registry.topics.keys(), prefix, start_after, limit))
    }

    async fn topic_info(&self, op: ops::TopicInfo<'_>) -> ExoResult<pb::TopicInfo> {
        let ops::TopicInfo { topic: name } = op;
        Ok(self.stored_topic(name.as_str()).await?.info(name.as_str()))
    }

    async fn create_subscription(
        &self,
        op: ops::CreateSubscription<'_>,
    ) -> ExoResult<(bool, pb::Subscription)> {
        let ops::CreateSubscription { topic, subscription } = op;
        if self.ready_count(&subscription.queue).await?.is_none() {
            return Err(queue_not_found(&subscription.queue).with_field("queue"));
        }
        let stored = self.stored_topic(topic.as_str()).await?;
        if let Some(found) = stored.admit(topic.as_str(), subscription)? {
            return Ok((false, found));
        }
        let new = StoredSubscription::new(subscription);
        self.record(Record::SubscriptionCreate { topic: topic.to_string(), subscription: new.clone() })
            .await?;
        Ok((true, new.contract()))
    }

    async fn delete_subscription(&self, op: ops::DeleteSubscription<'_>) -> ExoResult<()> {
        let ops::DeleteSubscription { topic, subscription: name } = op;
        let stored = self.stored_topic(topic.as_str()).await?;
        if !stored.subscriptions.contains_key(name.as_str()) {
            return Err(subscription_not_found(topic.as_str(), name.as_str()));
        }
        self.record(Record::SubscriptionDelete { topic: topic.to_string(), name: name.to_string() }).await
    }

    async fn publish(&self, op: ops::Publish<'_>) -> ExoResult<Vec<ExoResult<Published>>> {
        let ops::Publish { topic, messages } = op;
        let stored = self.stored_topic(topic.as_str()).await?;
        let routes = Routes::new(stored.subscriptions.values().map(|s| (&*s.name, &*s.queue, &*s.filter)));
        let publisher = self.link().await?.publisher();
        let sent_at = now_ms();
        let mut pending = Vec::with_capacity(messages.len());
        for message in messages {
            let publish_id = new_message_id();
            let queues: Vec<String> =
                routes.queues(&message.attributes).into_iter().map(|q| self.queue_name(q)).collect();
            let deliveries = queues.len() as u32;
            let Some((first, others)) = queues.split_first() else {
                pending.push((Published { publish_id, deliveries }, None));
                continue;
            };
            // One publish routed to every subscription's queue (sender-selected distribution:
            // the broker strips BCC), confirmed once every queue has stored it: all copies or none.
            let mut headers =
                headers_of(topic_copy(topic.as_str(), &publish_id, &message.attributes), sent_at);
            if !others.is_empty() {
                let bcc: Vec<AMQPValue> =
                    others.iter().map(|q| AMQPValue::LongString(LongString::from(q.as_str()))).collect();
                headers.insert("BCC".into(), AMQPValue::FieldArray(bcc.into()));
            }
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                // The same in every queue, as the publish id: unique within each queue.
                .with_message_id(publish_id.as_str().into())
                .with_timestamp(sent_at / 1000)
                .with_headers(headers);
            let published = publisher
                .basic_publish(
                    "".into(),
                    first.as_str().into(),
                    BasicPublishOptions { mandatory: true, ..Default::default() },
                    &message.body,
                    properties,
                )
                .await;
            pending.push((Published { publish_id, deliveries }, Some(published)));
        }
        let mut results = Vec::with_capacity(pending.len());
        for (published, sent) in pending {
            let Some(sent) = sent else {
                results.push(Ok(published));
                continue;
            };
            let confirmed = match sent {
                Ok(confirm) => self.bounded("publish confirm", confirm).await,
                Err(err) => Err(map_error("publish", &err)),
            };
            results.push(match confirmed {
                // Acked, or returned because every subscription's queue is gone (with it, the
                // subscription): nobody was left to deliver to.
                Ok(Confirmation::Ack(_)) => Ok(published),
                Ok(other) => Err(ExoError::new(
                    ErrorReason::BackendUnavailable,
                    format!("RabbitMQ did not store the message: {}", refusal(&other)),
                )
                .retryable()),
                Err(err) => Err(err),
            });
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_queue_whose_home_node_is_down_is_the_broker_recovering() {
        // As RabbitMQ answers for 0.1-0.5 s after a killed node is back.
        assert!(super::recovering_text(
            "protocol error: AMQP soft error: NOT-FOUND: NOT_FOUND - home node 'rabbit@host' of durable queue \
             'ci._registry' in vhost 'v' is down or inaccessible"
        ));
        assert!(!super::recovering_text("NOT_FOUND - no queue 'ci.orders' in vhost 'v'"));
    }

    use super::*;

    #[test]
    fn receipts_round_trip_and_are_bound_to_their_queue() {
        let orders = QueueName::parse("queue", "orders", "q").unwrap();
        let other = QueueName::parse("queue", "other", "q").unwrap();
        let token = Receipt { instance: 0xabc, receiver: 7, tag: 42 }.encode("orders");
        let back = Receipt::decode(&token, &orders).unwrap();
        assert_eq!((back.instance, back.receiver, back.tag), (0xabc, 7, 42));
        assert_eq!(
            Receipt::decode(&token, &other).err().map(|e| e.reason),
            Some(ErrorReason::InvalidReceipt)
        );
        for junk in ["", "???", "cjEuMS4y"] {
            assert_eq!(
                Receipt::decode(junk, &orders).err().map(|e| e.reason),
                Some(ErrorReason::InvalidReceipt)
            );
        }
    }

    #[test]
    fn broker_headers_are_not_attributes_and_attributes_of_their_names_survive() {
        let attributes = HashMap::from([
            ("kind".to_owned(), "order".to_owned()),
            ("x-death".to_owned(), "not the broker's".to_owned()),
        ]);
        let mut headers = headers_of(attributes.clone(), 1234);
        headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(2));
        headers.insert("x-first-death-queue".into(), AMQPValue::LongString("eqs.src".into()));
        let mut delivery = Delivery::mock(1, "".into(), "eqs.q".into(), false, b"body".to_vec());
        delivery.properties = BasicProperties::default().with_headers(headers).with_message_id("id-1".into());
        let message = message_of(&delivery);
        assert_eq!(message.attributes, attributes);
        assert_eq!(message.dequeue_count, 3);
        assert_eq!(message.enqueued_at_ms, 1234);
        assert_eq!(message.message_id, "id-1");
    }

    #[test]
    fn settings_are_checked() {
        assert!(RabbitMqQueueConfig::default().check().is_ok());
        for bad in [
            RabbitMqQueueConfig { url: "http://x".into(), ..Default::default() },
            RabbitMqQueueConfig { namespace: "a.b".into(), ..Default::default() },
            RabbitMqQueueConfig { max_message_bytes: 0, ..Default::default() },
            // A CA file on a plain amqp:// URL, and a CA file that is not there.
            RabbitMqQueueConfig { ca_file: Some(std::env::current_exe().unwrap()), ..Default::default() },
            RabbitMqQueueConfig {
                url: "amqps://guest@localhost:5671/%2f".into(),
                ca_file: Some("/nonexistent/ca.pem".into()),
                ..Default::default()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
        let amqps = RabbitMqQueueConfig {
            url: "amqps://guest@localhost:5671/%2f".into(),
            ca_file: Some(std::env::current_exe().unwrap()),
            ..Default::default()
        };
        assert!(amqps.check().is_ok());
    }
}
