//! `nats`: queues in NATS JetStream, one work-queue stream per queue.
//!
//! How the contract maps onto JetStream:
//! - **A queue** is the stream `<namespace>_<queue>` (file storage, work-queue retention) holding
//!   the subject `<namespace>.<queue>`, with one durable pull consumer `exo`. The queue's options
//!   live in the stream's description (`exo-queue {json}`), its retention is the stream's
//!   `max_age`. The namespace lets several apps or environments share one server.
//! - **Send** publishes each message and is acknowledged only once JetStream has stored it (the
//!   publish acknowledgement). Each message carries `Nats-Msg-Id` = its message id, so a send
//!   retried within the stream's duplicate window is stored once.
//! - **Receive** pulls from the consumer: at once what is there, or, when nothing is, it waits
//!   for the first message and then takes what else is ready (JetStream itself would wait to
//!   fill the batch). The visibility timeout is the consumer's `AckWait`; a receive that asks for
//!   another visibility, and ChangeVisibility, send `-NAK` with that delay (the message stays
//!   pending, so its receipt still acks it). The dequeue count is JetStream's delivery count.
//! - **Dead-lettering** is the proxy's: a message delivered more than `max_receives` times is
//!   published to the dead-letter queue's stream (with `Nats-Msg-Id` `dl-<stream>-<sequence>`,
//!   so a move repeated after a crash is stored once) and then acked — never returned. (The
//!   server's MaxDeliver only stops deliveries and tells an advisory subscriber, which would lose
//!   the message while no proxy listens.)
//! - **Receipts** are the delivery's ack subject (`$JS.ACK.<stream>.exo.…`), base64url: the
//!   proxy checks a receipt names this queue's stream and consumer before sending anything.
//! - **Attributes** are message headers of the same name. A value NATS headers cannot carry as
//!   it is (a line break, or leading or trailing blanks) travels base64 and is listed in the
//!   header `exo.base64-values`; an attribute named `Nats-…` (the server's namespace) travels as
//!   `exo.attr.<name>`. A foreign producer's headers arrive as attributes (repeated headers joined
//!   with `,`); a message without `exo.message-id` gets its `Nats-Msg-Id`, else its stream
//!   sequence, as its id.
//!
//! - **Topics** (see [`topics`]): the registry is the key-value bucket `<namespace>_exo_topics`
//!   (one key per topic holding its subscriptions, changed by compare-and-set); a publish is
//!   acknowledged once it is stored in the outbox stream `<namespace>_exo_outbox`, then the proxy
//!   puts a copy into each matching subscription's stream and deletes the outbox message. A
//!   proxy that dies in between leaves it to every proxy's outbox drainer.
//!
//! Not declared, by the server's nature:
//! - `DELAY`: JetStream (before 2.12's message scheduling) cannot hold a message back until a
//!   time; holding it in the proxy would count it as ready and spend a delivery on it.
//! - `STALE_RECEIPTS`: JetStream acknowledges by stream sequence, so an ack sent on an earlier
//!   delivery's subject still acknowledges the message.
//!
//! Durable: file storage; the server writes a message before it acknowledges the publish (it
//! fsyncs on its own interval, so acknowledged messages survive a restart of the server
//! process, and of the machine only when the server is configured with `sync_interval: always`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_nats::{
    HeaderMap, HeaderValue,
    jetstream::{
        self, ErrorCode,
        consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
        context::PublishErrorKind,
        stream::{self, RetentionPolicy, StorageType},
    },
};
use async_trait::async_trait;
use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use bytes::Bytes;
use exo_proto::{common::v1::ErrorReason, queue::v1 as pb};
use exo_proxy_core::{ExoError, ExoResult, config::ConfigError, secret::SecretRef, with_causes};
use futures::{StreamExt, TryStreamExt, future::join_all};
use serde::{Deserialize, Serialize};

use crate::ops;
use crate::{
    backend::Queue,
    model::{Capability, Descriptor, Published, QueueName, local_limits, queue_not_found},
    services::DEFAULT_MAX_MESSAGE_BYTES,
    services::{StoredOptions, already_exists, dead_letter_missing, existing_queue, new_message_id},
};

mod client;
mod error;
mod messages;
use {error::*, messages::*};
mod topics;

/// The durable consumer every proxy receives through.
const CONSUMER: &str = "exo";
/// What the description of a stream the proxy created starts with.
const OPTIONS_TAG: &str = "exo-queue ";
/// How long a pull may outlast its wait before the proxy stops waiting for the server to close it.
const PULL_GRACE: Duration = Duration::from_secs(1);
/// How long a receive that may not wait still waits for a message published just before it.
const SETTLE: Duration = Duration::from_millis(10);
/// How long the options of a queue are taken from memory before they are read again.
const OPTIONS_TTL: Duration = Duration::from_secs(2);

/// The settings of a `nats` queue backend.
///
/// ```yaml
/// backend:
///   kind: nats
///   url: nats://10.0.0.5:4222,nats://10.0.0.6:4222
///   namespace: shop-prod
///   user: shop                 # or token:
///   password: env:NATS_PASSWORD
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NatsQueueConfig {
    /// Server URL(s), comma-separated.
    #[serde(default = "default_url")]
    pub url: String,
    /// Prefix of the streams and subjects: one per app or environment sharing the server.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// User name, with `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The password (a secret reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
    /// An authentication token (a secret reference), instead of user and password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretRef>,
    /// Replicas of each stream (1 on a single server; 3 on a cluster).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// Largest message in bytes (the server's `max_payload` must hold it plus headers).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u64,
    /// Require TLS (implied by a `tls://` URL). The server's certificate and host name are always
    /// verified: against `ca-file`, else the system's roots.
    #[serde(default)]
    pub tls: bool,
    /// PEM file of the certificate authorities that may sign the server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate (PEM), with `client-key-file`, for servers that verify clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<std::path::PathBuf>,
    /// The client certificate's key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<std::path::PathBuf>,
}

fn default_url() -> String {
    "nats://127.0.0.1:4222".into()
}

fn default_namespace() -> String {
    "eqs".into()
}

fn default_replicas() -> usize {
    1
}

fn default_max_message_bytes() -> u64 {
    DEFAULT_MAX_MESSAGE_BYTES
}

impl Default for NatsQueueConfig {
    fn default() -> Self {
        Self {
            url: default_url(),
            namespace: default_namespace(),
            user: None,
            password: None,
            token: None,
            replicas: default_replicas(),
            max_message_bytes: default_max_message_bytes(),
            tls: false,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
        }
    }
}

impl NatsQueueConfig {
    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |why: String| Err(ConfigError::Invalid(why));
        if self.url.trim().is_empty() {
            return invalid("backend.url is empty".into());
        }
        let ns = &self.namespace;
        // A stream name and a subject token at once: no '.', '*', '>' or blanks.
        if ns.is_empty()
            || ns.len() > 32
            || !ns.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return invalid(format!("backend.namespace {ns:?} must be 1 to 32 of A-Z a-z 0-9 '-' '_'"));
        }
        if self.token.is_some() && (self.user.is_some() || self.password.is_some()) {
            return invalid("backend: give either token or user and password, not both".into());
        }
        if self.password.is_some() != self.user.is_some() {
            return invalid("backend: user and password go together".into());
        }
        if !(1..=5).contains(&self.replicas) {
            return invalid(format!("backend.replicas is {}; JetStream allows 1 to 5", self.replicas));
        }
        if self.max_message_bytes == 0 {
            return invalid("backend.max-message-bytes must be above 0".into());
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return invalid("backend: client-cert-file and client-key-file go together".into());
        }
        for (key, path) in [
            ("ca-file", &self.ca_file),
            ("client-cert-file", &self.client_cert_file),
            ("client-key-file", &self.client_key_file),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                return invalid(format!("backend.{key} {} is not a readable file", path.display()));
            }
        }
        Ok(())
    }
}

impl exo_proxy_core::registry::Backend for NatsQueue {
    type Opened = Arc<dyn Queue>;
    type Context = crate::services::OpenContext;
    type Config = NatsQueueConfig;

    fn settings(_data: Option<std::path::PathBuf>) -> NatsQueueConfig {
        NatsQueueConfig::default()
    }

    fn validate(config: &NatsQueueConfig) -> Result<(), ConfigError> {
        config.check()
    }

    fn largest_item(config: &NatsQueueConfig) -> Option<u64> {
        Some(config.max_message_bytes)
    }

    fn open<'a>(
        config: &'a NatsQueueConfig,
        context: &'a Self::Context,
    ) -> exo_proxy_core::registry::BoxFuture<'a, ExoResult<Self::Opened>> {
        Box::pin(async move {
            let queue = Arc::new(NatsQueue::connect(config, context.call_timeout).await?);
            topics::spawn_drainer(Arc::downgrade(&queue));
            let queue: Self::Opened = queue;
            Ok(queue)
        })
    }
}

impl StoredOptions {
    /// The options of a stream: the proxy's own from the description, or, for a stream made by
    /// hand, what its configuration says (its consumer's ack wait is read when it exists).
    fn of_stream(config: &stream::Config, ack_wait: Option<Duration>) -> Self {
        if let Some(stored) = config
            .description
            .as_deref()
            .and_then(|d| d.strip_prefix(OPTIONS_TAG))
            .and_then(|json| serde_json::from_str::<StoredOptions>(json).ok())
        {
            return stored;
        }
        Self {
            visibility: ack_wait
                .map(|d| d.as_secs() as u32)
                .unwrap_or(crate::model::DEFAULT_VISIBILITY_SECONDS),
            retention: u32::try_from(config.max_age.as_secs()).unwrap_or(u32::MAX),
            max_receives: 0,
            dead_letter_queue: String::new(),
        }
    }
}

/// What a receive needs of a queue, kept for [`OPTIONS_TTL`].
struct QueueHandle {
    options: StoredOptions,
    consumer: PullConsumer,
    read_at: Instant,
}

/// Queues in NATS JetStream.
pub struct NatsQueue {
    descriptor: Descriptor,
    client: async_nats::Client,
    js: jetstream::Context,
    namespace: String,
    replicas: usize,
    max_payload: u64,
    handles: Mutex<HashMap<String, Arc<QueueHandle>>>,
    /// The topic registry, once it exists.
    registry: tokio::sync::OnceCell<jetstream::kv::Store>,
    /// How many times the connection has been lost: a call in flight when it changes has lost
    /// its answer with the connection.
    lost: tokio::sync::watch::Receiver<u64>,
}

impl std::fmt::Debug for NatsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsQueue").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

#[async_trait]
impl Queue for NatsQueue {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    async fn ready(&self) -> ExoResult<()> {
        self.connected()
    }

    async fn create_queue(&self, op: ops::CreateQueue<'_>) -> ExoResult<(bool, pb::QueueInfo)> {
        let ops::CreateQueue { queue: name, options } = op;
        self.connected()?;
        if let Some(found) =
            existing_queue(self.queue_info(ops::QueueInfo { queue: name }).await, name, options)?
        {
            return Ok(found);
        }
        if !options.dead_letter_queue.is_empty()
            && self.stream_info(&options.dead_letter_queue).await?.is_none()
        {
            return Err(dead_letter_missing(&options.dead_letter_queue));
        }
        let stored = StoredOptions::from_options(options);
        let json = serde_json::to_string(&stored).map_err(|e| ExoError::internal(format!("options: {e}")))?;
        let max_age = Duration::from_secs(u64::from(options.retention_seconds));
        let config = stream::Config {
            name: self.stream_name(name.as_str()),
            description: Some(format!("{OPTIONS_TAG}{json}")),
            subjects: vec![self.subject(name.as_str())],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            num_replicas: self.replicas,
            max_age,
            // The server wants the duplicate window within max_age.
            duplicate_window: max_age.min(Duration::from_secs(120)),
            max_message_size: i32::try_from(self.max_payload).unwrap_or(i32::MAX),
            ..Default::default()
        };
        match self.js.create_stream(config).await {
            Ok(_) => {}
            Err(err) => match err.kind() {
                // Another proxy created it in between: compare with theirs.
                jetstream::context::CreateStreamErrorKind::JetStream(e)
                    if e.error_code() == ErrorCode::STREAM_NAME_EXIST =>
                {
                    let info = self.queue_info(ops::QueueInfo { queue: name }).await?;
                    let existing = info.options.clone().unwrap_or_default();
                    if existing != *options {
                        return Err(already_exists(name, &existing, options));
                    }
                    return Ok((false, info));
                }
                jetstream::context::CreateStreamErrorKind::JetStream(e) => {
                    return Err(api_error("create stream", &e));
                }
                _ => return Err(unavailable("create stream", err)),
            },
        }
        self.forget(name.as_str());
        self.consumer(name.as_str(), stored.visibility).await?;
        Ok((true, self.queue_info(ops::QueueInfo { queue: name }).await?))
    }

    async fn delete_queue(&self, op: ops::DeleteQueue<'_>) -> ExoResult<()> {
        let ops::DeleteQueue { queue: name } = op;
        self.connected()?;
        self.forget(name.as_str());
        match self.js.delete_stream(self.stream_name(name.as_str())).await {
            Ok(_) => {
                // Its subscriptions go with it; a publish meanwhile skips a queue that is gone.
                if let Err(err) = self.forget_subscriptions_into(name).await {
                    tracing::warn!(queue = %name, error = %err, "nats: subscriptions into a deleted queue remain");
                }
                Ok(())
            }
            Err(err) => match err.kind() {
                jetstream::context::DeleteStreamErrorKind::JetStream(e) if is_not_found(&e) => {
                    Err(queue_not_found(name.as_str()))
                }
                jetstream::context::DeleteStreamErrorKind::JetStream(e) => {
                    Err(api_error("delete stream", &e))
                }
                _ => Err(unavailable("delete stream", err)),
            },
        }
    }

    async fn list_queues(&self, op: ops::ListQueues<'_>) -> ExoResult<Vec<String>> {
        let ops::ListQueues { prefix, start_after, limit } = op;
        self.connected()?;
        let own = format!("{}_", self.namespace);
        let names: Vec<String> =
            self.js.stream_names().try_collect().await.map_err(|e| unavailable("list streams", e))?;
        let mut queues: Vec<String> = names
            .into_iter()
            .filter_map(|n| n.strip_prefix(&own).map(str::to_owned))
            .filter(|q| QueueName::parse("queue", q, "name").is_ok())
            .filter(|q| q.starts_with(prefix) && start_after.is_none_or(|after| q.as_str() > after))
            .collect();
        queues.sort();
        queues.truncate(limit);
        Ok(queues)
    }

    async fn queue_info(&self, op: ops::QueueInfo<'_>) -> ExoResult<pb::QueueInfo> {
        let ops::QueueInfo { queue: name } = op;
        self.connected()?;
        let info = self.stream_info(name.as_str()).await?.ok_or_else(|| queue_not_found(name.as_str()))?;
        let stream = self.stream_name(name.as_str());
        let consumer = match self.js.get_consumer_from_stream::<pull::Config, _, _>(CONSUMER, &stream).await {
            Ok(mut consumer) => {
                Some(consumer.info().await.map_err(|e| unavailable("consumer info", e))?.clone())
            }
            // No consumer yet (a stream made by hand): nothing has been received.
            Err(_) => None,
        };
        let options = StoredOptions::of_stream(&info.config, consumer.as_ref().map(|c| c.config.ack_wait));
        let (visible, in_flight) = match &consumer {
            Some(c) => (c.num_pending, c.num_ack_pending as u64),
            None => (info.state.messages, 0),
        };
        Ok(pb::QueueInfo {
            name: name.to_string(),
            options: Some(options.options()),
            created_at_ms: u64::try_from(info.created.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
            visible_messages: visible,
            in_flight_messages: in_flight,
            delayed_messages: 0,
        })
    }

    async fn send(&self, op: ops::Send<'_>) -> ExoResult<Vec<ExoResult<String>>> {
        let ops::Send { queue: name, messages } = op;
        self.connected()?;
        let messages =
            messages.into_iter().map(|m| (new_message_id(), Bytes::from(m.body), m.attributes)).collect();
        self.store(name, messages).await
    }

    async fn receive(&self, op: ops::Receive<'_>) -> ExoResult<Vec<pb::Message>> {
        let ops::Receive { queue: name, params } = op;
        self.connected()?;
        let deadline = Instant::now() + params.wait;
        let max = params.max_messages as usize;
        loop {
            let handle = self.handle(name).await?;
            let visibility = params.visibility_seconds.unwrap_or(handle.options.visibility);
            let mut pulled = self.pull(&handle.consumer, max, Duration::ZERO).await;
            if matches!(&pulled, Ok(p) if p.is_empty()) {
                // Nothing ready: wait for one message (JetStream would wait to fill the whole
                // batch), then take what else is ready. Even without a wait, a moment: JetStream
                // acknowledges a publish before the consumer has counted it, so a receive right
                // after a send could otherwise miss it.
                let left = deadline.saturating_duration_since(Instant::now()).max(SETTLE);
                pulled = self.pull(&handle.consumer, 1, left).await;
                if let Ok(first) = &mut pulled
                    && !first.is_empty()
                    && max > 1
                {
                    first.extend(self.pull(&handle.consumer, max - 1, Duration::ZERO).await?);
                }
            }
            let pulled = match pulled {
                Ok(pulled) => pulled,
                Err(err) => {
                    // The stream or consumer may have gone: look again before saying so.
                    self.forget(name.as_str());
                    self.handle(name).await?;
                    return Err(err);
                }
            };
            let got_any = !pulled.is_empty();
            let messages = self.deliver(&handle, visibility, pulled).await?;
            // Everything pulled was dead-lettered: keep waiting for the rest of the wait.
            if !messages.is_empty() || !got_any || Instant::now() >= deadline {
                return Ok(messages);
            }
        }
    }

    async fn ack(&self, op: ops::Ack<'_>) -> ExoResult<()> {
        let ops::Ack { queue: name, receipt } = op;
        let subject = self.ack_subject(name, receipt)?;
        self.connected()?;
        self.ack_request(name, &subject, "+ACK".into()).await
    }

    async fn change_visibility(&self, op: ops::ChangeVisibility<'_>) -> ExoResult<()> {
        let ops::ChangeVisibility { queue: name, receipt, seconds } = op;
        let subject = self.ack_subject(name, receipt)?;
        self.connected()?;
        self.ack_request(name, &subject, nak(seconds)).await
    }

    fn topic_limits(&self) -> pb::TopicLimits {
        self.nats_topic_limits()
    }

    async fn create_topic(&self, op: ops::CreateTopic<'_>) -> ExoResult<(bool, pb::TopicInfo)> {
        let ops::CreateTopic { topic: name } = op;
        self.connected()?;
        self.nats_create_topic(name).await
    }

    async fn delete_topic(&self, op: ops::DeleteTopic<'_>) -> ExoResult<()> {
        let ops::DeleteTopic { topic: name } = op;
        self.connected()?;
        self.nats_delete_topic(name).await
    }

    async fn list_topics(&self, op: ops::ListTopics<'_>) -> ExoResult<Vec<String>> {
        let ops::ListTopics { prefix, start_after, limit } = op;
        self.connected()?;
        self.nats_list_topics(prefix, start_after, limit).await
    }

    async fn topic_info(&self, op: ops::TopicInfo<'_>) -> ExoResult<pb::TopicInfo> {
        let ops::TopicInfo { topic: name } = op;
        self.connected()?;
        Ok(self.read_topic(name.as_str()).await?.0.info(name.as_str()))
    }

    async fn create_subscription(
        &self,
        op: ops::CreateSubscription<'_>,
    ) -> ExoResult<(bool, pb::Subscription)> {
        let ops::CreateSubscription { topic, subscription } = op;
        self.connected()?;
        self.nats_create_subscription(topic, subscription).await
    }

    async fn delete_subscription(&self, op: ops::DeleteSubscription<'_>) -> ExoResult<()> {
        let ops::DeleteSubscription { topic, subscription: name } = op;
        self.connected()?;
        self.nats_delete_subscription(topic, name).await
    }

    async fn publish(&self, op: ops::Publish<'_>) -> ExoResult<Vec<ExoResult<Published>>> {
        let ops::Publish { topic, messages } = op;
        self.connected()?;
        self.nats_publish(topic, messages).await
    }

    async fn purge(&self, op: ops::Purge<'_>) -> ExoResult<()> {
        let ops::Purge { queue: name } = op;
        self.connected()?;
        let stream = self
            .find_stream(self.stream_name(name.as_str()))
            .await?
            .ok_or_else(|| queue_not_found(name.as_str()))?;
        let options = StoredOptions::of_stream(&stream.cached_info().config, None);
        // The consumer goes first and comes back after: its pending deliveries of purged messages
        // would otherwise be "redelivered" as nothing and stall the pulls that count them.
        self.forget(name.as_str());
        if let Err(err) = stream.delete_consumer(CONSUMER).await {
            tracing::debug!(queue = %name, error = %err, "purge: no consumer to delete");
        }
        let purged = stream.purge().await.map_err(|e| unavailable("purge", e));
        self.consumer(name.as_str(), options.visibility).await?;
        purged.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_subjects_name_their_stream_and_consumer() {
        assert_eq!(
            ack_subject_names("$JS.ACK.eqs_orders.exo.1.5.5.1700000000000000000.0"),
            Some(("eqs_orders", "exo"))
        );
        assert_eq!(
            ack_subject_names("$JS.ACK.hub.ACCHASH.eqs_orders.exo.2.7.9.1700000000000000000.3.tok"),
            Some(("eqs_orders", "exo"))
        );
        for bad in [
            "",
            "$JS.API.STREAM.DELETE.eqs_orders",
            "$JS.ACK.eqs_orders.exo.1.5.5.170000",
            "$JS.ACK.eqs_orders.exo.x.5.5.1700000000000000000.0",
            "$JS.ACK.eqs orders.exo.1.5.5.1700000000000000000.0",
            "$JS.ACK.eqs_orders.exo.1.5.5.17000*.0",
        ] {
            assert_eq!(ack_subject_names(bad), None, "{bad}");
        }
    }

    #[test]
    fn attributes_survive_the_trip_through_headers() {
        let attributes = HashMap::from([
            ("kind".to_owned(), "order".to_owned()),
            ("Nats-Expected-Stream".to_owned(), "not the server's".to_owned()),
            ("lines".to_owned(), "two\r\nlines".to_owned()),
            ("padded".to_owned(), " x ".to_owned()),
        ]);
        let mut headers = HeaderMap::new();
        headers.insert(MESSAGE_ID, "id-1");
        attribute_headers(&mut headers, attributes.clone());
        assert!(headers.get("Nats-Expected-Stream").is_none());
        let (id, nats_id, back) = read_headers(Some(&headers));
        assert_eq!(id.as_deref(), Some("id-1"));
        assert_eq!(nats_id, None);
        assert_eq!(back, attributes);
    }

    #[test]
    fn settings_are_checked() {
        assert!(NatsQueueConfig::default().check().is_ok());
        for bad in [
            NatsQueueConfig { namespace: "a.b".into(), ..Default::default() },
            NatsQueueConfig { namespace: String::new(), ..Default::default() },
            NatsQueueConfig { replicas: 0, ..Default::default() },
            NatsQueueConfig { user: Some("u".into()), ..Default::default() },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
