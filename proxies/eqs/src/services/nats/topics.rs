//! Topics on NATS JetStream, through a durable outbox.
//!
//! JetStream cannot route one publish into several work-queue streams (no two streams may
//! hold overlapping subjects), so the proxy fans out itself:
//! - **The registry** is the key-value bucket `<namespace>_exo_topics`: one key per topic whose
//!   value (JSON) holds when it was made and its subscriptions. Every change is a
//!   compare-and-set on the key's revision, so two proxies changing one topic at once both land.
//! - **A publish** is stored first as one message in the work-queue stream
//!   `<namespace>_exo_outbox` (subject `<namespace>.exo_outbox`), carrying the body, the copy's
//!   attributes and, in the header `exo.outbox-queues`, the queues whose subscriptions matched at
//!   that moment. It is acknowledged once JetStream has stored that message: from then on every
//!   one of those subscriptions gets it. The proxy then stores a copy in each queue's stream
//!   (with `Nats-Msg-Id` = the publish id, so a copy stored twice within the queue's duplicate
//!   window is kept once) and deletes the outbox message.
//! - **A proxy that dies in between** leaves the outbox message. Every proxy runs a drainer
//!   that takes messages older than [`STALE_AFTER`] through the durable consumer `exo-drainer`
//!   (the consumer hands each to one proxy; one that dies while finishing it has it handed on
//!   after the ack wait) and stores the copies again: a subscriber may see a copy twice (same
//!   `exo.publish-id`), never lose one.
//!
//! A subscription's queue deleted meanwhile drops its copies, with its subscription.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Weak,
    time::Duration,
};

use async_nats::{
    HeaderMap,
    jetstream::{
        self, AckKind,
        consumer::{AckPolicy, DeliverPolicy, pull},
        context::PublishErrorKind,
        kv,
        stream::{self, RetentionPolicy, StorageType},
    },
};
use bytes::Bytes;
use exo_proto::{common::v1::ErrorReason, queue::v1 as pb};
use exo_proxy_core::{ExoError, ExoResult, now_ms};
use futures::{TryStreamExt, future::join_all};

use super::{HEADER_ALLOWANCE, NatsQueue, api_error, attribute_headers, read_headers, unavailable};
use crate::{
    filter::Routes,
    model::{
        MAX_SUBSCRIPTIONS, PUBLISH_ID_ATTRIBUTE, Published, QueueName, TopicName, subscription_not_found,
        topic_copy, topic_limits, topic_not_found,
    },
    services::{
        new_message_id,
        topic_registry::{StoredSubscription, StoredTopic, names_after},
    },
};

/// The registry bucket's name after the namespace.
const REGISTRY: &str = "exo_topics";
/// The outbox stream's name (and subject token) after the namespace; never a queue name, which
/// has no '_'.
const OUTBOX: &str = "exo_outbox";
/// The durable consumer the drainers share.
const DRAINER: &str = "exo-drainer";
/// The outbox header listing the queues a message goes to.
const QUEUES_HEADER: &str = "exo.outbox-queues";
/// An outbox message this old is taken to be left by a proxy that died mid-fan-out.
pub const STALE_AFTER: Duration = Duration::from_secs(10);
/// How often each proxy looks for such messages.
const DRAIN_EVERY: Duration = Duration::from_secs(2);
/// Most outbox messages one drain takes.
const DRAIN_BATCH: usize = 64;
/// How long a drainer holds an outbox message before another proxy may take it.
const DRAIN_ACK_WAIT: Duration = Duration::from_secs(60);
/// How long a message the drainer cannot finish (a queue unreachable, a malformed message
/// written by hand) waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// Room the outbox header of queue names may take: every subscription's queue name (at most 63
/// bytes) and a comma.
const QUEUES_ALLOWANCE: u64 = MAX_SUBSCRIPTIONS as u64 * 64;
/// How often a compare-and-set on a topic is tried against concurrent changes.
const CAS_ATTEMPTS: usize = 32;

/// One published message on its way to its subscriptions' queues.
struct OutboxEntry {
    publish_id: String,
    body: Bytes,
    attributes: HashMap<String, String>,
    queues: Vec<String>,
}

impl OutboxEntry {
    /// The entry an outbox message holds, or why it is not one.
    fn read(message: &jetstream::Message) -> Result<Self, String> {
        let (_, nats_id, mut attributes) = read_headers(message.headers.as_ref());
        let queues: Vec<String> = attributes
            .remove(QUEUES_HEADER)
            .ok_or_else(|| format!("no {QUEUES_HEADER} header"))?
            .split(',')
            .map(str::to_owned)
            .collect();
        // A name no queue can have (a subscription written by hand) is not checked here:
        // `fan_out` drops its copies with a warning, so the entry still reaches the others.
        let publish_id = attributes
            .get(PUBLISH_ID_ATTRIBUTE)
            .cloned()
            .or(nats_id)
            .ok_or_else(|| format!("no {PUBLISH_ID_ATTRIBUTE} header"))?;
        Ok(Self { publish_id, body: message.payload.clone(), attributes, queues })
    }
}

impl OutboxEntry {
    /// The headers of its outbox message, deduplicated by the server under `message_id`.
    fn headers(&self, message_id: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", message_id);
        headers.insert(QUEUES_HEADER, self.queues.join(",").as_str());
        attribute_headers(&mut headers, self.attributes.clone());
        headers
    }
}

fn registry_error(operation: &str, err: impl std::fmt::Display) -> ExoError {
    unavailable(&format!("topic registry {operation}"), err)
}

impl NatsQueue {
    fn registry_bucket(&self) -> String {
        format!("{}_{REGISTRY}", self.namespace)
    }

    fn outbox_stream(&self) -> String {
        format!("{}_{OUTBOX}", self.namespace)
    }

    fn outbox_subject(&self) -> String {
        format!("{}.{OUTBOX}", self.namespace)
    }

    /// The queue limits less the copy's attributes, and small enough that the outbox message
    /// (body, attributes and the list of queues) fits the server's max_payload.
    pub(super) fn nats_topic_limits(&self) -> pb::TopicLimits {
        let mut limits = topic_limits(&self.descriptor.limits);
        let room = self.max_payload.saturating_sub(HEADER_ALLOWANCE + QUEUES_ALLOWANCE);
        limits.max_message_bytes = limits.max_message_bytes.min(room);
        limits
    }

    /// The registry bucket: made when `create` and missing, else `None` while there is none.
    async fn registry(&self, create: bool) -> ExoResult<Option<&kv::Store>> {
        if let Some(store) = self.registry.get() {
            return Ok(Some(store));
        }
        let bucket = self.registry_bucket();
        let exists = self.find_stream(format!("KV_{bucket}")).await?.is_some();
        if !exists && !create {
            return Ok(None);
        }
        if !exists {
            // The bucket's stream as the key-value protocol (ADR-8) lays it out, made directly:
            // the client's own bucket creation first reads the account info in a shape older
            // servers (2.9) do not answer with.
            let config = stream::Config {
                name: format!("KV_{bucket}"),
                description: Some("ExoFlow eqs: topics and their subscriptions".into()),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: 1,
                storage: StorageType::File,
                num_replicas: self.replicas,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: stream::DiscardPolicy::New,
                ..Default::default()
            };
            if let Err(err) = self.js.create_stream(config).await {
                match err.kind() {
                    // Another proxy made it meanwhile.
                    jetstream::context::CreateStreamErrorKind::JetStream(e)
                        if e.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST => {}
                    jetstream::context::CreateStreamErrorKind::JetStream(e) => {
                        return Err(api_error("create bucket", &e));
                    }
                    _ => return Err(registry_error("create", err)),
                }
            }
        }
        let store = self.js.get_key_value(bucket).await.map_err(|e| registry_error("open", e))?;
        let _ = self.registry.set(store);
        Ok(self.registry.get())
    }

    /// The outbox stream, made when missing.
    async fn ensure_outbox(&self) -> ExoResult<jetstream::stream::Stream> {
        let config = stream::Config {
            name: self.outbox_stream(),
            description: Some("ExoFlow eqs: topic publishes not yet copied to every subscription".into()),
            subjects: vec![self.outbox_subject()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            num_replicas: self.replicas,
            max_message_size: i32::try_from(self.max_payload).unwrap_or(i32::MAX),
            ..Default::default()
        };
        self.js.get_or_create_stream(config).await.map_err(|err| match err.kind() {
            jetstream::context::CreateStreamErrorKind::JetStream(e) => api_error("create outbox stream", &e),
            _ => unavailable("create outbox stream", err),
        })
    }

    /// A topic as stored, with the revision a change must name.
    pub(super) async fn read_topic(&self, name: &str) -> ExoResult<(StoredTopic, u64)> {
        let store = self.registry(false).await?.ok_or_else(|| topic_not_found(name))?;
        let entry = store.entry(name).await.map_err(|e| registry_error("read", e))?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let topic = serde_json::from_slice(&entry.value).map_err(|err| {
                    ExoError::internal(format!("topic registry entry '{name}' is not a topic: {err}"))
                })?;
                Ok((topic, entry.revision))
            }
            _ => Err(topic_not_found(name)),
        }
    }

    /// Applies `change` to a topic by compare-and-set, again on a concurrent change; `change`
    /// answers whether to write, and what to return.
    async fn change_topic<T>(
        &self,
        name: &str,
        mut change: impl FnMut(&mut StoredTopic) -> ExoResult<(bool, T)>,
    ) -> ExoResult<T> {
        let store = self.registry(false).await?.ok_or_else(|| topic_not_found(name))?;
        for _ in 0..CAS_ATTEMPTS {
            let (mut topic, revision) = self.read_topic(name).await?;
            let (write, out) = change(&mut topic)?;
            if !write {
                return Ok(out);
            }
            let value = serde_json::to_vec(&topic).map_err(|e| ExoError::internal(format!("topic: {e}")))?;
            match store.update(name, value.into(), revision).await {
                Ok(_) => return Ok(out),
                Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(err) => return Err(registry_error("update", err)),
            }
        }
        Err(registry_error("update", format!("topic '{name}' kept changing under {CAS_ATTEMPTS} attempts")))
    }

    pub(super) async fn nats_create_topic(&self, name: &TopicName) -> ExoResult<(bool, pb::TopicInfo)> {
        self.ensure_outbox().await?;
        let store = self.registry(true).await?.ok_or_else(|| ExoError::internal("no topic registry"))?;
        let topic = StoredTopic { created_at_ms: now_ms(), subscriptions: BTreeMap::new() };
        let value = serde_json::to_vec(&topic).map_err(|e| ExoError::internal(format!("topic: {e}")))?;
        match store.create(name.as_str(), value.into()).await {
            Ok(_) => Ok((true, topic.info(name.as_str()))),
            Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => {
                Ok((false, self.read_topic(name.as_str()).await?.0.info(name.as_str())))
            }
            Err(err) => Err(registry_error("create", err)),
        }
    }

    pub(super) async fn nats_delete_topic(&self, name: &TopicName) -> ExoResult<()> {
        // There (else TOPIC_NOT_FOUND); a change racing the delete is deleted with it.
        self.read_topic(name.as_str()).await?;
        let store = self.registry(false).await?.ok_or_else(|| topic_not_found(name.as_str()))?;
        store.delete(name.as_str()).await.map_err(|e| registry_error("delete", e))
    }

    async fn topic_names(&self) -> ExoResult<Vec<String>> {
        let Some(store) = self.registry(false).await? else { return Ok(Vec::new()) };
        let keys = store.keys().await.map_err(|e| registry_error("list", e))?;
        let mut names: Vec<String> = keys.try_collect().await.map_err(|e| registry_error("list", e))?;
        names.retain(|n| TopicName::parse("topic", n, "name").is_ok());
        names.sort();
        Ok(names)
    }

    pub(super) async fn nats_list_topics(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> ExoResult<Vec<String>> {
        Ok(names_after(self.topic_names().await?.iter(), prefix, start_after, limit))
    }

    pub(super) async fn nats_create_subscription(
        &self,
        topic: &TopicName,
        subscription: &pb::Subscription,
    ) -> ExoResult<(bool, pb::Subscription)> {
        if self.stream_info(&subscription.queue).await?.is_none() {
            return Err(crate::model::queue_not_found(&subscription.queue).with_field("queue"));
        }
        self.change_topic(topic.as_str(), |stored| {
            if let Some(found) = stored.admit(topic.as_str(), subscription)? {
                return Ok((false, (false, found)));
            }
            let new = StoredSubscription::new(subscription);
            let contract = new.contract();
            stored.subscriptions.insert(new.name.clone(), new);
            Ok((true, (true, contract)))
        })
        .await
    }

    pub(super) async fn nats_delete_subscription(
        &self,
        topic: &TopicName,
        name: &TopicName,
    ) -> ExoResult<()> {
        self.change_topic(topic.as_str(), |stored| match stored.subscriptions.remove(name.as_str()) {
            Some(_) => Ok((true, ())),
            None => Err(subscription_not_found(topic.as_str(), name.as_str())),
        })
        .await
    }

    /// Deletes the subscriptions delivering into `queue` (deleted).
    pub(super) async fn forget_subscriptions_into(&self, queue: &QueueName) -> ExoResult<()> {
        for topic in self.topic_names().await? {
            let forgotten = self
                .change_topic(&topic, |stored| {
                    let before = stored.subscriptions.len();
                    stored.subscriptions.retain(|_, s| s.queue != queue.as_str());
                    Ok((stored.subscriptions.len() != before, ()))
                })
                .await;
            match forgotten {
                Ok(()) => {}
                Err(err) if err.reason == ErrorReason::TopicNotFound => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    pub(super) async fn nats_publish(
        &self,
        topic: &TopicName,
        messages: Vec<pb::PublishedMessage>,
    ) -> ExoResult<Vec<ExoResult<Published>>> {
        let (stored, _) = self.read_topic(topic.as_str()).await?;
        let routes = Routes::new(stored.subscriptions.values().map(|s| (&*s.name, &*s.queue, &*s.filter)));
        let subject = self.outbox_subject();
        let mut pending = Vec::with_capacity(messages.len());
        for message in messages {
            let publish_id = new_message_id();
            let queues: Vec<String> =
                routes.queues(&message.attributes).into_iter().map(str::to_owned).collect();
            let published = Published { publish_id: publish_id.clone(), deliveries: queues.len() as u32 };
            if queues.is_empty() {
                pending.push((published, None));
                continue;
            }
            let entry = OutboxEntry {
                attributes: topic_copy(topic.as_str(), &publish_id, &message.attributes),
                publish_id,
                body: Bytes::from(message.body),
                queues,
            };
            // Published one after the other (in order), their acknowledgements awaited together.
            let headers = entry.headers(&entry.publish_id);
            let sent = self.js.publish_with_headers(subject.clone(), headers, entry.body.clone()).await;
            pending.push((published, Some((entry, sent))));
        }
        let mut results = Vec::with_capacity(pending.len());
        let mut stored_entries = Vec::new();
        for (published, sent) in pending {
            let Some((entry, sent)) = sent else {
                results.push(Ok(published));
                continue;
            };
            let acked = match sent {
                Ok(ack) => ack.await,
                Err(err) => Err(err),
            };
            match acked {
                // Acknowledged from here on: the outbox holds it, the drainer finishes what we do not.
                Ok(ack) => {
                    stored_entries.push((ack.sequence, entry));
                    results.push(Ok(published));
                }
                Err(err) => results.push(Err(match err.kind() {
                    PublishErrorKind::StreamNotFound => {
                        // Deleted by hand: made again for the next try (the entries before this
                        // one are acknowledged, so the batch goes on either way).
                        match self.ensure_outbox().await {
                            Ok(_) => unavailable(
                                "publish",
                                "the topic outbox stream was missing and has been made again; publish again",
                            ),
                            Err(err) => err,
                        }
                    }
                    PublishErrorKind::MaxPayloadExceeded => ExoError::new(
                        ErrorReason::MessageTooLarge,
                        format!("NATS refused the message as too large: {err}"),
                    ),
                    _ => unavailable("publish to the topic outbox", err),
                }
                .with_resource(topic.as_str()))),
            }
        }
        if !stored_entries.is_empty() {
            let (sequences, entries): (Vec<u64>, Vec<OutboxEntry>) = stored_entries.into_iter().unzip();
            let owed = self.fan_out(&entries).await;
            // An entry still owed somewhere stays for the drainer.
            let deletes = sequences
                .iter()
                .zip(owed)
                .filter(|(_, owed)| owed.is_empty())
                .map(|(seq, _)| self.forget_outbox(*seq));
            for deleted in join_all(deletes).await {
                if let Err(err) = deleted {
                    tracing::warn!(topic = %topic, error = %err, "nats: outbox message left to the drainer");
                }
            }
        }
        Ok(results)
    }

    /// Stores each entry's copies in its queues (each queue's copies in publish order, the
    /// queues at once); per entry, the queues it is still owed (none: done). A queue that is gone,
    /// or that no queue can be (a subscription written by hand with a bad name), is owed nothing.
    async fn fan_out(&self, entries: &[OutboxEntry]) -> Vec<Vec<String>> {
        let mut by_queue: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (at, entry) in entries.iter().enumerate() {
            for queue in &entry.queues {
                by_queue.entry(queue.as_str()).or_default().push(at);
            }
        }
        let stores = by_queue.into_iter().map(|(queue, at)| async move {
            let Ok(name) = QueueName::parse("queue", queue, "queue") else {
                tracing::warn!(queue, "nats: a subscription names no valid queue; its copies are dropped");
                return (queue, at, Ok(Vec::new()));
            };
            let copies = at
                .iter()
                .map(|&i| {
                    (entries[i].publish_id.clone(), entries[i].body.clone(), entries[i].attributes.clone())
                })
                .collect();
            (queue, at, self.store(&name, copies).await)
        });
        let mut owed = vec![Vec::new(); entries.len()];
        for (queue, at, stored) in join_all(stores).await {
            let results = match stored {
                Ok(results) => results,
                // Deleted since: its subscription went with it.
                Err(err) if err.reason == ErrorReason::QueueNotFound => continue,
                Err(err) => {
                    tracing::warn!(queue, error = %err, "nats: topic copies not stored; left to the drainer");
                    at.iter().for_each(|&i| owed[i].push(queue.to_owned()));
                    continue;
                }
            };
            for (&i, result) in at.iter().zip(results) {
                match result {
                    Ok(_) => {}
                    Err(err) if err.reason == ErrorReason::QueueNotFound => {}
                    Err(err) => {
                        tracing::warn!(queue, error = %err, "nats: topic copy not stored; left to the drainer");
                        owed[i].push(queue.to_owned());
                    }
                }
            }
        }
        owed
    }

    /// Deletes a finished message from the outbox (without erasing it on disk: it is copied).
    async fn forget_outbox(&self, sequence: u64) -> ExoResult<()> {
        let answer: serde_json::Value = self
            .js
            .request(
                format!("STREAM.MSG.DELETE.{}", self.outbox_stream()),
                &serde_json::json!({ "seq": sequence, "no_erase": true }),
            )
            .await
            .map_err(|e| unavailable("outbox delete", e))?;
        match answer.get("error") {
            // Gone already: a drainer finished it.
            Some(error) if error["err_code"] == 10057 => Ok(()),
            Some(error) => Err(unavailable("outbox delete", error)),
            None => Ok(()),
        }
    }

    /// Delivers a stale outbox entry: `None` when nothing is owed any more (the message may
    /// go), else when to try again. An entry delivered to some of its queues only is narrowed
    /// to the others (a new outbox message, then this one goes), so a queue that keeps failing
    /// does not make the drainer copy it to the healthy ones again and again.
    async fn finish(&self, entry: OutboxEntry, message: &jetstream::Message) -> Option<Duration> {
        let owed = self.fan_out(std::slice::from_ref(&entry)).await.pop().unwrap_or_default();
        if owed.is_empty() {
            return None;
        }
        tracing::warn!(publish = %entry.publish_id, queues = ?owed, "nats: outbox message not finished; tried again later");
        if owed.len() == entry.queues.len() {
            return Some(RETRY_AFTER);
        }
        // A message id of its own: under the publish id the server would drop it as a duplicate.
        let sequence = message.info().map(|i| i.stream_sequence).unwrap_or_default();
        let narrowed = OutboxEntry { queues: owed, ..entry };
        let headers = narrowed.headers(&format!("{}.{sequence}", narrowed.publish_id));
        let stored =
            match self.js.publish_with_headers(self.outbox_subject(), headers, narrowed.body.clone()).await {
                Ok(ack) => ack.await.map(|_| ()),
                Err(err) => Err(err),
            };
        match stored {
            Ok(()) => None,
            Err(err) => {
                tracing::warn!(error = %err, "nats: could not narrow an outbox message; it is tried again whole");
                Some(RETRY_AFTER)
            }
        }
    }

    /// Finishes outbox messages left by a proxy that died mid-fan-out; how many it finished.
    async fn drain_outbox(&self) -> ExoResult<usize> {
        if self.connected().is_err() {
            return Ok(0);
        }
        let Some(stream) = self.find_stream(self.outbox_stream()).await? else { return Ok(0) };
        // Most of the time the outbox is empty or holds only publishes being fanned out now.
        let state = &stream.cached_info().state;
        let oldest = time_since(state.first_timestamp);
        if state.messages == 0 || oldest < STALE_AFTER {
            return Ok(0);
        }
        let config = pull::Config {
            durable_name: Some(DRAINER.into()),
            description: Some(
                "ExoFlow eqs: the proxies' outbox drainers take left-over publishes here".into(),
            ),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: DRAIN_ACK_WAIT,
            max_deliver: -1,
            ..Default::default()
        };
        let consumer =
            stream.get_or_create_consumer(DRAINER, config).await.map_err(|err| match err.kind() {
                jetstream::stream::ConsumerErrorKind::JetStream(e) => api_error("outbox consumer", &e),
                _ => unavailable("outbox consumer", err),
            })?;
        let mut finished = 0;
        for message in self.pull(&consumer, DRAIN_BATCH, Duration::ZERO).await? {
            let age = message.info().map(|i| time_since(i.published)).unwrap_or(STALE_AFTER);
            let outcome = if age < STALE_AFTER {
                // Its publishing proxy is still on it: look again once it would be stale.
                Some(STALE_AFTER - age)
            } else {
                match OutboxEntry::read(&message) {
                    Ok(entry) => self.finish(entry, &message).await,
                    Err(why) => {
                        tracing::warn!(why, "nats: outbox holds a message that is not a publish; left there");
                        Some(RETRY_AFTER)
                    }
                }
            };
            let acked = match outcome {
                None => message.double_ack().await.map(|()| finished += 1),
                Some(delay) => message.ack_with(AckKind::Nak(Some(delay))).await,
            };
            if let Err(err) = acked {
                tracing::debug!(error = %err, "nats: outbox ack");
            }
        }
        Ok(finished)
    }
}

/// How long ago a server timestamp was (zero for one ahead of this clock).
fn time_since(at: async_nats::datetime::DateTime) -> Duration {
    let ms = u64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    Duration::from_millis(now_ms().saturating_sub(ms))
}

/// Runs the outbox drainer of `queue` until the backend is dropped.
pub(super) fn spawn_drainer(queue: Weak<NatsQueue>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(DRAIN_EVERY).await;
            let Some(queue) = queue.upgrade() else { return };
            match queue.drain_outbox().await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(messages = n, "nats: finished outbox messages left by an earlier fan-out")
                }
                Err(err) => tracing::warn!(error = %err, "nats: outbox drain failed; retrying"),
            }
            drop(queue);
        }
    });
}
