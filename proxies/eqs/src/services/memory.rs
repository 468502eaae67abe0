//! `memory`: an in-process queue for tests and benchmarks. Complete semantics (visibility,
//! delay, retention, dead-lettering, long poll), no durability: everything is gone when the
//! process stops, so it does not declare `DURABLE`. Topics fan out under the same lock as a send,
//! so a publish reaches every subscription or none.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Mutex, MutexGuard},
};

use async_trait::async_trait;
use exo_proto::queue::v1 as pb;
use exo_proxy_core::{ExoResult, now_ms};

use crate::ops;
use crate::{
    backend::Queue,
    filter::Filter,
    long_poll::Wakeups,
    model::{
        Capability, Descriptor, LocalReceipt, MAX_SUBSCRIPTIONS, Published, QueueName, ReceiveParams,
        local_limits, queue_not_found, stale_receipt, subscription_conflict, subscription_not_found,
        too_many_subscriptions, topic_copy, topic_not_found,
    },
    services::DEFAULT_MAX_MESSAGE_BYTES,
    services::{already_exists, dead_letter_missing, new_message_id},
};

/// The settings of a `memory` backend.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MemoryConfig {
    /// Largest message in bytes.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u64,
}

fn default_max_message_bytes() -> u64 {
    DEFAULT_MAX_MESSAGE_BYTES
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self { max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES }
    }
}

impl exo_proxy_core::registry::Backend for MemoryQueue {
    type Opened = std::sync::Arc<dyn Queue>;
    type Context = crate::services::OpenContext;
    type Config = MemoryConfig;

    fn settings(_data: Option<std::path::PathBuf>) -> MemoryConfig {
        MemoryConfig::default()
    }

    fn largest_item(config: &MemoryConfig) -> Option<u64> {
        Some(config.max_message_bytes)
    }

    fn open<'a>(
        config: &'a MemoryConfig,
        _context: &'a Self::Context,
    ) -> exo_proxy_core::registry::BoxFuture<'a, ExoResult<Self::Opened>> {
        let queue: Self::Opened = std::sync::Arc::new(MemoryQueue::new(config.max_message_bytes));
        Box::pin(async move { Ok(queue) })
    }
}

struct StoredMessage {
    id: String,
    body: Vec<u8>,
    attributes: HashMap<String, String>,
    enqueued_at_ms: u64,
    expires_at_ms: u64,
    visible_at_ms: u64,
    dequeue_count: u32,
}

struct MemoryQueueState {
    options: pb::QueueOptions,
    created_at_ms: u64,
    messages: HashMap<u64, StoredMessage>,
    /// (visible_at_ms, seq) of every message: the receive order index.
    by_visibility: BTreeSet<(u64, u64)>,
}

impl MemoryQueueState {
    fn insert(&mut self, seq: u64, message: StoredMessage) {
        self.by_visibility.insert((message.visible_at_ms, seq));
        self.messages.insert(seq, message);
    }

    fn remove(&mut self, seq: u64) -> Option<StoredMessage> {
        let message = self.messages.remove(&seq)?;
        self.by_visibility.remove(&(message.visible_at_ms, seq));
        Some(message)
    }

    fn set_visible_at(&mut self, seq: u64, visible_at_ms: u64) {
        if let Some(message) = self.messages.get_mut(&seq) {
            self.by_visibility.remove(&(message.visible_at_ms, seq));
            message.visible_at_ms = visible_at_ms;
            self.by_visibility.insert((visible_at_ms, seq));
        }
    }

    fn info(&self, name: &str) -> pb::QueueInfo {
        let now = now_ms();
        let (mut visible, mut in_flight, mut delayed) = (0, 0, 0);
        for message in self.messages.values().filter(|m| m.expires_at_ms > now) {
            if message.visible_at_ms <= now {
                visible += 1;
            } else if message.dequeue_count == 0 {
                delayed += 1;
            } else {
                in_flight += 1;
            }
        }
        pb::QueueInfo {
            name: name.to_owned(),
            options: Some(self.options.clone()),
            visible_messages: visible,
            in_flight_messages: in_flight,
            delayed_messages: delayed,
            created_at_ms: self.created_at_ms,
        }
    }
}

struct MemoryTopic {
    created_at_ms: u64,
    /// By name, each with its parsed filter.
    subscriptions: BTreeMap<String, (pb::Subscription, Filter)>,
}

impl MemoryTopic {
    fn info(&self, name: &str) -> pb::TopicInfo {
        pb::TopicInfo {
            name: name.to_owned(),
            created_at_ms: self.created_at_ms,
            subscriptions: self.subscriptions.values().map(|(s, _)| s.clone()).collect(),
        }
    }
}

#[derive(Default)]
struct State {
    queues: BTreeMap<String, MemoryQueueState>,
    topics: BTreeMap<String, MemoryTopic>,
    next_seq: u64,
}

impl State {
    /// Stores `message` in `queue` (which must exist) as a fresh message.
    fn enqueue(&mut self, queue: &str, id: String, body: Vec<u8>, attributes: HashMap<String, String>) {
        let seq = self.next_seq;
        let Some(target) = self.queues.get_mut(queue) else { return };
        self.next_seq += 1;
        let now = now_ms();
        let retention_ms = u64::from(target.options.retention_seconds) * 1000;
        let delay_ms = u64::from(target.options.delay_seconds) * 1000;
        target.insert(
            seq,
            StoredMessage {
                id,
                body,
                attributes,
                enqueued_at_ms: now,
                expires_at_ms: now + retention_ms,
                visible_at_ms: now + delay_ms,
                dequeue_count: 0,
            },
        );
    }
}

fn sorted_names<V>(
    map: &BTreeMap<String, V>,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
) -> Vec<String> {
    map.range::<str, _>((
        start_after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
        std::ops::Bound::Unbounded,
    ))
    .map(|(name, _)| name)
    .skip_while(|name| name.as_str() < prefix)
    .take_while(|name| name.starts_with(prefix))
    .take(limit)
    .cloned()
    .collect()
}

/// The in-memory queue backend.
pub struct MemoryQueue {
    descriptor: Descriptor,
    state: Mutex<State>,
    arrivals: Wakeups,
}

impl MemoryQueue {
    /// A backend whose messages may be up to `max_message_bytes` long.
    pub fn new(max_message_bytes: u64) -> Self {
        use Capability::*;
        Self {
            descriptor: Descriptor {
                backend: "memory",
                capabilities: [
                    LongPoll,
                    Delay,
                    Retention,
                    DeadLetter,
                    ChangeVisibility,
                    Purge,
                    StaleReceipts,
                    Topics,
                ]
                .into(),
                limits: local_limits(max_message_bytes),
            },
            state: Mutex::new(State::default()),
            arrivals: Wakeups::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied change (no await points,
        // no fallible steps between related writes), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn try_receive(&self, name: &QueueName, params: ReceiveParams) -> ExoResult<Vec<pb::Message>> {
        let now = now_ms();
        let mut state = self.lock();
        let queue = state.queues.get_mut(name.as_str()).ok_or_else(|| queue_not_found(name.as_str()))?;
        let visibility =
            params.visibility_seconds.unwrap_or(queue.options.visibility_timeout_seconds.unwrap_or(0));
        let hidden_until = now + u64::from(visibility) * 1000;
        let max_receives = queue.options.max_receives;
        let mut delivered = Vec::new();
        let mut dead = Vec::new();
        let mut seen = Vec::new();
        while delivered.len() < params.max_messages as usize {
            let Some(&(visible_at, seq)) = queue.by_visibility.range(..=(now, u64::MAX)).next() else {
                break;
            };
            queue.by_visibility.remove(&(visible_at, seq));
            let Some(message) = queue.messages.get_mut(&seq) else { continue };
            if message.expires_at_ms <= now {
                queue.messages.remove(&seq);
                continue;
            }
            if max_receives > 0 && message.dequeue_count >= max_receives {
                if let Some(message) = queue.messages.remove(&seq) {
                    dead.push(message);
                }
                continue;
            }
            message.dequeue_count += 1;
            message.visible_at_ms = hidden_until;
            seen.push((hidden_until, seq));
            delivered.push(pb::Message {
                message_id: message.id.clone(),
                receipt: LocalReceipt { queue: name.to_string(), seq, lease: message.dequeue_count }.encode(),
                body: message.body.clone(),
                attributes: message.attributes.clone(),
                dequeue_count: message.dequeue_count,
                enqueued_at_ms: message.enqueued_at_ms,
            });
        }
        // Re-index after the scan so a zero visibility timeout cannot deliver a message twice
        // in one receive.
        queue.by_visibility.extend(seen);
        if !dead.is_empty() {
            let target = queue.options.dead_letter_queue.clone();
            self.dead_letter(&mut state, name, &target, dead);
        }
        Ok(delivered)
    }

    fn dead_letter(&self, state: &mut State, source: &QueueName, target: &str, messages: Vec<StoredMessage>) {
        let now = now_ms();
        let first_seq = state.next_seq;
        state.next_seq += messages.len() as u64;
        match state.queues.get_mut(target) {
            Some(dlq) => {
                let retention_ms = u64::from(dlq.options.retention_seconds) * 1000;
                for (offset, mut message) in messages.into_iter().enumerate() {
                    message.visible_at_ms = now;
                    message.dequeue_count = 0;
                    message.expires_at_ms = message.enqueued_at_ms + retention_ms;
                    dlq.insert(first_seq + offset as u64, message);
                }
                self.arrivals.announce(target);
            }
            None => {
                // The dead-letter queue was deleted after this queue was created: keep the
                // messages where they are rather than lose them.
                tracing::warn!(queue = %source, dead_letter_queue = target, "dead-letter queue missing; keeping messages");
                if let Some(queue) = state.queues.get_mut(source.as_str()) {
                    for (offset, message) in messages.into_iter().enumerate() {
                        queue.insert(first_seq + offset as u64, message);
                    }
                }
            }
        }
    }

    fn with_queue<T>(
        &self,
        name: &QueueName,
        f: impl FnOnce(&mut MemoryQueueState) -> ExoResult<T>,
    ) -> ExoResult<T> {
        let mut state = self.lock();
        let queue = state.queues.get_mut(name.as_str()).ok_or_else(|| queue_not_found(name.as_str()))?;
        f(queue)
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    async fn ready(&self) -> ExoResult<()> {
        Ok(())
    }

    async fn create_queue(&self, op: ops::CreateQueue<'_>) -> ExoResult<(bool, pb::QueueInfo)> {
        let ops::CreateQueue { queue: name, options } = op;
        let mut state = self.lock();
        if let Some(existing) = state.queues.get(name.as_str()) {
            if existing.options == *options {
                return Ok((false, existing.info(name.as_str())));
            }
            return Err(already_exists(name, &existing.options, options));
        }
        if !options.dead_letter_queue.is_empty() && !state.queues.contains_key(&options.dead_letter_queue) {
            return Err(dead_letter_missing(&options.dead_letter_queue));
        }
        let queue = MemoryQueueState {
            options: options.clone(),
            created_at_ms: now_ms(),
            messages: HashMap::new(),
            by_visibility: BTreeSet::new(),
        };
        let info = queue.info(name.as_str());
        state.queues.insert(name.to_string(), queue);
        Ok((true, info))
    }

    async fn delete_queue(&self, op: ops::DeleteQueue<'_>) -> ExoResult<()> {
        let ops::DeleteQueue { queue: name } = op;
        let mut state = self.lock();
        state.queues.remove(name.as_str()).ok_or_else(|| queue_not_found(name.as_str()))?;
        for topic in state.topics.values_mut() {
            topic.subscriptions.retain(|_, (s, _)| s.queue != name.as_str());
        }
        Ok(())
    }

    async fn list_queues(&self, op: ops::ListQueues<'_>) -> ExoResult<Vec<String>> {
        let ops::ListQueues { prefix, start_after, limit } = op;
        Ok(sorted_names(&self.lock().queues, prefix, start_after, limit))
    }

    async fn queue_info(&self, op: ops::QueueInfo<'_>) -> ExoResult<pb::QueueInfo> {
        let ops::QueueInfo { queue: name } = op;
        self.with_queue(name, |queue| Ok(queue.info(name.as_str())))
    }

    async fn send(&self, op: ops::Send<'_>) -> ExoResult<Vec<ExoResult<String>>> {
        let ops::Send { queue: name, messages } = op;
        let now = now_ms();
        let mut state = self.lock();
        let first_seq = state.next_seq;
        let queue = state.queues.get_mut(name.as_str()).ok_or_else(|| queue_not_found(name.as_str()))?;
        let retention_ms = u64::from(queue.options.retention_seconds) * 1000;
        let mut ids = Vec::with_capacity(messages.len());
        let count = messages.len() as u64;
        for (offset, message) in messages.into_iter().enumerate() {
            let delay = message.delay_seconds.unwrap_or(queue.options.delay_seconds);
            let id = new_message_id();
            ids.push(id.clone());
            queue.insert(
                first_seq + offset as u64,
                StoredMessage {
                    id,
                    body: message.body,
                    attributes: message.attributes,
                    enqueued_at_ms: now,
                    expires_at_ms: now + retention_ms,
                    visible_at_ms: now + u64::from(delay) * 1000,
                    dequeue_count: 0,
                },
            );
        }
        state.next_seq += count;
        drop(state);
        self.arrivals.announce(name.as_str());
        Ok(ids.into_iter().map(Ok).collect())
    }

    async fn receive(&self, op: ops::Receive<'_>) -> ExoResult<Vec<pb::Message>> {
        let ops::Receive { queue: name, params } = op;
        self.arrivals.wait_for(name.as_str(), params.wait, || async { self.try_receive(name, params) }).await
    }

    async fn ack(&self, op: ops::Ack<'_>) -> ExoResult<()> {
        let ops::Ack { queue: name, receipt } = op;
        let receipt = LocalReceipt::decode(receipt, name)?;
        self.with_queue(name, |queue| match queue.messages.get(&receipt.seq) {
            None => Ok(()),
            Some(message) if message.dequeue_count != receipt.lease => Err(stale_receipt(name)),
            Some(_) => {
                queue.remove(receipt.seq);
                Ok(())
            }
        })
    }

    async fn change_visibility(&self, op: ops::ChangeVisibility<'_>) -> ExoResult<()> {
        let ops::ChangeVisibility { queue: name, receipt, seconds } = op;
        let receipt = LocalReceipt::decode(receipt, name)?;
        let released = self.with_queue(name, |queue| match queue.messages.get(&receipt.seq) {
            Some(message) if message.dequeue_count == receipt.lease => {
                queue.set_visible_at(receipt.seq, now_ms() + u64::from(seconds) * 1000);
                Ok(seconds == 0)
            }
            _ => Err(stale_receipt(name)),
        })?;
        if released {
            self.arrivals.announce(name.as_str());
        }
        Ok(())
    }

    async fn purge(&self, op: ops::Purge<'_>) -> ExoResult<()> {
        let ops::Purge { queue: name } = op;
        self.with_queue(name, |queue| {
            queue.messages.clear();
            queue.by_visibility.clear();
            Ok(())
        })
    }

    async fn create_topic(&self, op: ops::CreateTopic<'_>) -> ExoResult<(bool, pb::TopicInfo)> {
        let ops::CreateTopic { topic: name } = op;
        let mut state = self.lock();
        if let Some(topic) = state.topics.get(name.as_str()) {
            return Ok((false, topic.info(name.as_str())));
        }
        let topic = MemoryTopic { created_at_ms: now_ms(), subscriptions: BTreeMap::new() };
        let info = topic.info(name.as_str());
        state.topics.insert(name.to_string(), topic);
        Ok((true, info))
    }

    async fn delete_topic(&self, op: ops::DeleteTopic<'_>) -> ExoResult<()> {
        let ops::DeleteTopic { topic: name } = op;
        self.lock().topics.remove(name.as_str()).map(|_| ()).ok_or_else(|| topic_not_found(name.as_str()))
    }

    async fn list_topics(&self, op: ops::ListTopics<'_>) -> ExoResult<Vec<String>> {
        let ops::ListTopics { prefix, start_after, limit } = op;
        Ok(sorted_names(&self.lock().topics, prefix, start_after, limit))
    }

    async fn topic_info(&self, op: ops::TopicInfo<'_>) -> ExoResult<pb::TopicInfo> {
        let ops::TopicInfo { topic: name } = op;
        let state = self.lock();
        let topic = state.topics.get(name.as_str()).ok_or_else(|| topic_not_found(name.as_str()))?;
        Ok(topic.info(name.as_str()))
    }

    async fn create_subscription(
        &self,
        op: ops::CreateSubscription<'_>,
    ) -> ExoResult<(bool, pb::Subscription)> {
        let ops::CreateSubscription { topic, subscription } = op;
        let filter = Filter::parse(&subscription.filter)?;
        let mut state = self.lock();
        if !state.queues.contains_key(&subscription.queue) {
            return Err(queue_not_found(&subscription.queue).with_field("queue"));
        }
        let entry = state.topics.get_mut(topic.as_str()).ok_or_else(|| topic_not_found(topic.as_str()))?;
        if let Some((existing, _)) = entry.subscriptions.get(&subscription.name) {
            if crate::model::same_subscription(existing, subscription) {
                return Ok((false, existing.clone()));
            }
            return Err(subscription_conflict(topic.as_str(), existing, subscription));
        }
        if entry.subscriptions.len() >= MAX_SUBSCRIPTIONS as usize {
            return Err(too_many_subscriptions(topic.as_str()));
        }
        let stored = pb::Subscription { created_at_ms: now_ms(), ..subscription.clone() };
        entry.subscriptions.insert(stored.name.clone(), (stored.clone(), filter));
        Ok((true, stored))
    }

    async fn delete_subscription(&self, op: ops::DeleteSubscription<'_>) -> ExoResult<()> {
        let ops::DeleteSubscription { topic, subscription: name } = op;
        let mut state = self.lock();
        let entry = state.topics.get_mut(topic.as_str()).ok_or_else(|| topic_not_found(topic.as_str()))?;
        entry
            .subscriptions
            .remove(name.as_str())
            .map(|_| ())
            .ok_or_else(|| subscription_not_found(topic.as_str(), name.as_str()))
    }

    async fn publish(&self, op: ops::Publish<'_>) -> ExoResult<Vec<ExoResult<Published>>> {
        let ops::Publish { topic, messages } = op;
        let mut state = self.lock();
        let entry = state.topics.get(topic.as_str()).ok_or_else(|| topic_not_found(topic.as_str()))?;
        // Under one lock: every subscription present now gets its copy, or none does.
        let subscriptions: Vec<(String, Filter)> =
            entry.subscriptions.values().map(|(s, f)| (s.queue.clone(), f.clone())).collect();
        let mut results = Vec::with_capacity(messages.len());
        let mut touched = Vec::new();
        for message in messages {
            let publish_id = new_message_id();
            let attributes = topic_copy(topic.as_str(), &publish_id, &message.attributes);
            let mut deliveries = 0;
            for (queue, filter) in &subscriptions {
                if filter.matches(&message.attributes) {
                    state.enqueue(queue, new_message_id(), message.body.clone(), attributes.clone());
                    deliveries += 1;
                    touched.push(queue.clone());
                }
            }
            results.push(Ok(Published { publish_id, deliveries }));
        }
        drop(state);
        touched.sort_unstable();
        touched.dedup();
        for queue in touched {
            self.arrivals.announce(&queue);
        }
        Ok(results)
    }
}

impl std::fmt::Debug for MemoryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryQueue").finish_non_exhaustive()
    }
}
