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
    filter::Routes,
    model::{
        BASE64_ATTRIBUTES, Capability, DEFAULT_VISIBILITY_SECONDS, Descriptor, Published, QueueName,
        local_limits, queue_not_found, stale_receipt, subscription_not_found, topic_copy, topic_not_found,
    },
    services::DEFAULT_MAX_MESSAGE_BYTES,
    services::{
        StoredOptions, already_exists, dead_letter_missing, new_message_id,
        topic_registry::{StoredSubscription, StoredTopic, names_after},
    },
};

mod client;
mod error;
mod headers;
mod receipts;
mod registry;
use {error::*, headers::*, receipts::*, registry::*};

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
    password: Option<exo_proxy_core::secret::ReloadingSecret<String>>,
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
            .within_call_timeout(
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
            .within_call_timeout(
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
mod tests;
