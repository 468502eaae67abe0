//! `postgres`: queues in PostgreSQL, two tables in one schema of the configured database
//! (`<schema>.eqs_queues`, `<schema>.eqs_messages`), so several apps or environments share a
//! database by schema and any number of proxies share a queue.
//!
//! Every call is one atomic statement in autocommit. A send inserts all its messages in one
//! statement and is acknowledged once PostgreSQL has committed it. A receive picks visible
//! messages with `FOR UPDATE SKIP LOCKED` and hides them in the same statement, so concurrent
//! receivers — in this proxy or another — never get the same message while it is hidden.
//! Visibility, delay and retention are timestamps (ms since the epoch); a receipt names the
//! message's sequence number and its dequeue count at that receive, so a receipt from an
//! earlier receive is recognisably stale. Messages received `max-receives` times move to the
//! dead-letter queue in one statement. Long polls wait on `LISTEN`: a trigger notifies
//! `<schema>_eqs` with the queue name on every insert — native producers' too — and waiting
//! receivers also re-check on a short tick for messages made visible by the clock.
//!
//! What native clients see and may write (`psql`, psycopg): a message is a row of
//! `eqs_messages` with `queue`, `body bytea`, `attributes jsonb` (string values), `message_id`,
//! `enqueued_at_ms`, `visible_at_ms`, `expires_at_ms`, `dequeue_count`. A native producer inserts
//! `(queue, body)` and, optionally, `attributes`: the rest is filled in from the queue's options
//! (a trigger), and waiting receivers are woken.
//!
//! Topics: `eqs_topics` and `eqs_subscriptions` (topic, name, queue, filter). A publish reads the
//! topic's subscriptions, matches each message against their filters, and stores every copy of
//! every message in one INSERT: all subscriptions that existed when it read them get their copy,
//! or none does. Deleting a queue deletes its subscriptions (a foreign key).

use std::sync::Arc;

use async_trait::async_trait;
use exo_postgres::{Connections, PostgresSettings, map_error};
use exo_proto::queue::v1 as pb;
use exo_proxy_core::{ExoError, ExoResult, config::ConfigError, now_ms, readiness};
use serde::{Deserialize, Serialize};
use tokio_postgres::error::SqlState;

mod schema;

use schema::{Statements, decode_attributes, ms, options_from, schema_sql};

use crate::ops;
use crate::{
    backend::Queue,
    filter::Routes,
    long_poll::Wakeups,
    model::{
        Capability, Descriptor, LocalReceipt, MAX_SUBSCRIPTIONS, Published, QueueName, ReceiveParams,
        local_limits, queue_not_found, stale_receipt, subscription_conflict, subscription_not_found,
        too_many_subscriptions, topic_copy, topic_not_found,
    },
    services::DEFAULT_MAX_MESSAGE_BYTES,
    services::{already_exists, dead_letter_missing, existing_queue, new_message_id},
};

/// The settings of a `postgres` queue backend: the connection, and the largest message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PostgresQueueConfig {
    /// Where the queues live.
    #[serde(flatten)]
    pub connection: PostgresSettings,
    /// Largest message in bytes.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u64,
}

fn default_max_message_bytes() -> u64 {
    DEFAULT_MAX_MESSAGE_BYTES
}

impl Default for PostgresQueueConfig {
    fn default() -> Self {
        Self { connection: PostgresSettings::default(), max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES }
    }
}

impl exo_proxy_core::registry::Backend for PostgresQueue {
    type Opened = Arc<dyn Queue>;
    type Context = crate::services::OpenContext;
    type Config = PostgresQueueConfig;

    fn settings(_data: Option<std::path::PathBuf>) -> PostgresQueueConfig {
        PostgresQueueConfig::default()
    }

    fn validate(config: &PostgresQueueConfig) -> Result<(), ConfigError> {
        config.connection.validate()
    }

    fn largest_item(config: &PostgresQueueConfig) -> Option<u64> {
        Some(config.max_message_bytes)
    }

    fn open<'a>(
        config: &'a PostgresQueueConfig,
        _context: &'a Self::Context,
    ) -> exo_proxy_core::registry::BoxFuture<'a, ExoResult<Self::Opened>> {
        Box::pin(async move {
            let queue: Self::Opened = Arc::new(PostgresQueue::connect(config).await?);
            Ok(queue)
        })
    }
}

/// Queues in one PostgreSQL schema.
pub struct PostgresQueue {
    descriptor: Descriptor,
    db: Arc<Connections>,
    arrivals: Arc<Wakeups>,
    listener: tokio::task::JoinHandle<()>,
    sql: Statements,
}

impl Drop for PostgresQueue {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl std::fmt::Debug for PostgresQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresQueue").finish_non_exhaustive()
    }
}

impl PostgresQueue {
    /// Connects, creates the schema, its tables and triggers if missing, starts listening for
    /// arrivals and the retention sweeper.
    pub async fn connect(config: &PostgresQueueConfig) -> ExoResult<Self> {
        let settings = &config.connection;
        let db = Arc::new(Connections::open(settings).await?);
        db.create_schema(&schema_sql(&settings.schema)).await?;
        let arrivals = Arc::new(Wakeups::default());
        let heard = arrivals.clone();
        let listener = db.listen(format!("{}_eqs", settings.schema), move |queue| heard.announce(queue));
        use Capability::*;
        let mut capabilities: std::collections::BTreeSet<Capability> =
            [LongPoll, Delay, Retention, DeadLetter, ChangeVisibility, Purge, StaleReceipts, Topics].into();
        if db.durable().await? {
            capabilities.insert(Durable);
        }
        let sql = Statements::new(&settings.schema);
        db.sweep_every(std::time::Duration::from_secs(60), sql.sweep.clone());
        Ok(Self {
            descriptor: Descriptor {
                backend: "postgres",
                capabilities: capabilities.into_iter().collect(),
                limits: local_limits(config.max_message_bytes),
            },
            db,
            arrivals,
            listener,
            sql,
        })
    }

    async fn client(&self) -> ExoResult<Arc<tokio_postgres::Client>> {
        self.db.client().await
    }

    async fn options(&self, name: &QueueName) -> ExoResult<(pb::QueueOptions, u64)> {
        let row = self
            .client()
            .await?
            .query_opt(&self.sql.queue_options, &[&name.as_str()])
            .await
            .map_err(|e| map_error("get queue", &e))?
            .ok_or_else(|| queue_not_found(name.as_str()))?;
        Ok((options_from(&row), row.get::<_, i64>(5).max(0) as u64))
    }

    /// QUEUE_NOT_FOUND unless `name` exists.
    async fn require_queue(&self, name: &QueueName) -> ExoResult<()> {
        let found = self
            .client()
            .await?
            .query_opt(&self.sql.queue_exists, &[&name.as_str()])
            .await
            .map_err(|e| map_error("get queue", &e))?;
        found.map(|_| ()).ok_or_else(|| queue_not_found(name.as_str()))
    }

    /// Whether the message a receipt names is still there with that receipt's dequeue count:
    /// `None` if it is gone; RECEIPT_STALE if it was received again; QUEUE_NOT_FOUND.
    async fn lease(&self, name: &QueueName, receipt: &LocalReceipt) -> ExoResult<Option<()>> {
        let row = self
            .client()
            .await?
            .query_opt(&self.sql.lease, &[&(receipt.seq as i64), &name.as_str()])
            .await
            .map_err(|e| map_error("get message", &e))?
            .ok_or_else(|| queue_not_found(name.as_str()))?;
        match row.get::<_, Option<i32>>(1) {
            None => Ok(None),
            Some(count) if count.max(0) as u32 != receipt.lease => Err(stale_receipt(name)),
            Some(_) => Ok(Some(())),
        }
    }

    /// Up to `limit` names (of queues or topics: `statement`) with `prefix`, after `start_after`.
    async fn list_names(
        &self,
        statement: &str,
        operation: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> ExoResult<Vec<String>> {
        // Names are [a-z0-9-], so a prefix range needs no LIKE escaping: prefix <= name < prefix + '~'.
        let upper = format!("{prefix}~");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client()
            .await?
            .query(statement, &[&prefix, &upper, &start_after.unwrap_or(""), &limit])
            .await
            .map_err(|e| map_error(operation, &e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// A topic and its subscriptions, or TOPIC_NOT_FOUND.
    async fn load_topic(&self, name: &str) -> ExoResult<pb::TopicInfo> {
        let rows = self
            .client()
            .await?
            .query(&self.sql.subscriptions, &[&name])
            .await
            .map_err(|e| map_error("get topic", &e))?;
        let first = rows.first().ok_or_else(|| topic_not_found(name))?;
        let mut info = pb::TopicInfo {
            name: name.to_owned(),
            created_at_ms: first.get::<_, i64>(0).max(0) as u64,
            subscriptions: Vec::new(),
        };
        for row in &rows {
            if let Some(sub) = row.get::<_, Option<String>>(1) {
                info.subscriptions.push(pb::Subscription {
                    name: sub,
                    queue: row.get(2),
                    filter: row.get(3),
                    created_at_ms: row.get::<_, i64>(4).max(0) as u64,
                });
            }
        }
        Ok(info)
    }

    /// One receive attempt: dead-letters what is due, then picks and hides up to `max` messages.
    async fn try_receive(&self, name: &QueueName, params: ReceiveParams) -> ExoResult<Vec<pb::Message>> {
        let (options, _) = self.options(name).await?;
        let client = self.client().await?;
        let now = ms(now_ms());
        if options.max_receives > 0 {
            self.dead_letter(&client, name, &options, now).await?;
        }
        let visibility = params.visibility_seconds.unwrap_or(options.visibility_timeout_seconds.unwrap_or(0));
        let hidden_until = now + i64::from(visibility) * 1000;
        let rows = client
            .query(
                &self.sql.receive,
                &[
                    &name.as_str(),
                    &now,
                    &i64::from(params.max_messages),
                    &hidden_until,
                    &(options.max_receives as i32),
                ],
            )
            .await
            .map_err(|e| map_error("receive", &e))?;
        let mut messages = Vec::with_capacity(rows.len());
        for row in rows {
            let seq: i64 = row.get(0);
            let dequeue_count = row.get::<_, i32>(5).max(0) as u32;
            messages.push((
                seq,
                pb::Message {
                    message_id: row.get(1),
                    receipt: LocalReceipt { queue: name.to_string(), seq: seq as u64, lease: dequeue_count }
                        .encode(),
                    body: row.get(2),
                    attributes: decode_attributes(row.get(3)),
                    dequeue_count,
                    enqueued_at_ms: row.get::<_, i64>(4).max(0) as u64,
                },
            ));
        }
        // RETURNING has no order: deliver in the order the messages were stored.
        messages.sort_by_key(|(seq, _)| *seq);
        Ok(messages.into_iter().map(|(_, m)| m).collect())
    }

    async fn dead_letter(
        &self,
        client: &tokio_postgres::Client,
        name: &QueueName,
        options: &pb::QueueOptions,
        now: i64,
    ) -> ExoResult<()> {
        let target = &options.dead_letter_queue;
        let retention: i64 = match client.query_opt(&self.sql.queue_options, &[target]).await {
            Ok(Some(row)) => i64::from(row.get::<_, i32>(1)) * 1000,
            // Deleted after this queue was created: keep the messages rather than lose them.
            Ok(None) => return Ok(()),
            Err(e) => return Err(map_error("get dead-letter queue", &e)),
        };
        let moved = client
            .execute(
                &self.sql.dead_letter,
                &[&name.as_str(), &now, &(options.max_receives as i32), target, &retention],
            )
            .await;
        match moved {
            Ok(_) => Ok(()),
            // The dead-letter queue went away in between: nothing moved, nothing lost.
            Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => Ok(()),
            Err(e) => Err(map_error("dead-letter", &e)),
        }
    }
}

#[async_trait]
impl Queue for PostgresQueue {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    async fn ready(&self) -> ExoResult<()> {
        readiness(self.db.probe(&self.sql.queue_exists).await)
    }

    async fn create_queue(&self, op: ops::CreateQueue<'_>) -> ExoResult<(bool, pb::QueueInfo)> {
        let ops::CreateQueue { queue: name, options } = op;
        if let Some(found) =
            existing_queue(self.queue_info(ops::QueueInfo { queue: name }).await, name, options)?
        {
            return Ok(found);
        }
        if !options.dead_letter_queue.is_empty() {
            let target = QueueName::parse("queue", &options.dead_letter_queue, "options.dead_letter_queue")?;
            self.require_queue(&target).await.map_err(|_| dead_letter_missing(&options.dead_letter_queue))?;
        }
        let created_at_ms = now_ms();
        let inserted = self
            .client()
            .await?
            .execute(
                &self.sql.create_queue,
                &[
                    &name.as_str(),
                    &(options.visibility_timeout_seconds.unwrap_or(0) as i32),
                    &(options.retention_seconds as i32),
                    &(options.delay_seconds as i32),
                    &(options.max_receives as i32),
                    &options.dead_letter_queue,
                    &ms(created_at_ms),
                ],
            )
            .await
            .map_err(|e| map_error("create queue", &e))?;
        if inserted == 0 {
            // Another proxy created it between the look and the insert: compare with theirs.
            let (existing, _) = self.options(name).await?;
            if existing != *options {
                return Err(already_exists(name, &existing, options));
            }
            return Ok((false, self.queue_info(ops::QueueInfo { queue: name }).await?));
        }
        let info = pb::QueueInfo {
            name: name.to_string(),
            options: Some(options.clone()),
            created_at_ms,
            ..Default::default()
        };
        Ok((true, info))
    }

    async fn delete_queue(&self, op: ops::DeleteQueue<'_>) -> ExoResult<()> {
        let ops::DeleteQueue { queue: name } = op;
        let deleted = self
            .client()
            .await?
            .execute(&self.sql.delete_queue, &[&name.as_str()])
            .await
            .map_err(|e| map_error("delete queue", &e))?;
        if deleted == 0 { Err(queue_not_found(name.as_str())) } else { Ok(()) }
    }

    async fn list_queues(&self, op: ops::ListQueues<'_>) -> ExoResult<Vec<String>> {
        let ops::ListQueues { prefix, start_after, limit } = op;
        self.list_names(&self.sql.list_queues, "list queues", prefix, start_after, limit).await
    }

    async fn queue_info(&self, op: ops::QueueInfo<'_>) -> ExoResult<pb::QueueInfo> {
        let ops::QueueInfo { queue: name } = op;
        let row = self
            .client()
            .await?
            .query_opt(&self.sql.queue_info, &[&name.as_str(), &ms(now_ms())])
            .await
            .map_err(|e| map_error("get queue", &e))?
            .ok_or_else(|| queue_not_found(name.as_str()))?;
        Ok(pb::QueueInfo {
            name: name.to_string(),
            options: Some(options_from(&row)),
            created_at_ms: row.get::<_, i64>(5).max(0) as u64,
            visible_messages: row.get::<_, i64>(6).max(0) as u64,
            delayed_messages: row.get::<_, i64>(7).max(0) as u64,
            in_flight_messages: row.get::<_, i64>(8).max(0) as u64,
        })
    }

    async fn send(&self, op: ops::Send<'_>) -> ExoResult<Vec<ExoResult<String>>> {
        let ops::Send { queue: name, messages } = op;
        let count = messages.len();
        let mut ids = Vec::with_capacity(count);
        let mut bodies = Vec::with_capacity(count);
        let mut attributes = Vec::with_capacity(count);
        let mut delays = Vec::with_capacity(count);
        for message in messages {
            ids.push(new_message_id());
            attributes.push(
                serde_json::to_string(&message.attributes)
                    .map_err(|err| ExoError::internal(format!("cannot encode attributes: {err}")))?,
            );
            delays.push(message.delay_seconds.map(|d| d as i32).unwrap_or(-1));
            bodies.push(message.body);
        }
        let inserted = self
            .client()
            .await?
            .execute(&self.sql.send, &[&name.as_str(), &ms(now_ms()), &ids, &bodies, &attributes, &delays])
            .await
            .map_err(|e| map_error("send", &e))?;
        if inserted == 0 {
            return Err(queue_not_found(name.as_str()));
        }
        if inserted as usize != count {
            return Err(ExoError::internal(format!("a send of {count} messages stored {inserted}")));
        }
        Ok(ids.into_iter().map(Ok).collect())
    }

    async fn receive(&self, op: ops::Receive<'_>) -> ExoResult<Vec<pb::Message>> {
        let ops::Receive { queue: name, params } = op;
        self.arrivals.wait_for(name.as_str(), params.wait, || self.try_receive(name, params)).await
    }

    async fn ack(&self, op: ops::Ack<'_>) -> ExoResult<()> {
        let ops::Ack { queue: name, receipt } = op;
        let receipt = LocalReceipt::decode(receipt, name)?;
        let deleted = self
            .client()
            .await?
            .execute(&self.sql.ack, &[&(receipt.seq as i64), &name.as_str(), &(receipt.lease as i32)])
            .await
            .map_err(|e| map_error("ack", &e))?;
        if deleted == 1 {
            return Ok(());
        }
        // Nothing deleted: gone already (fine), received again (stale) or no such queue.
        self.lease(name, &receipt).await.map(|_| ())
    }

    async fn change_visibility(&self, op: ops::ChangeVisibility<'_>) -> ExoResult<()> {
        let ops::ChangeVisibility { queue: name, receipt, seconds } = op;
        let receipt = LocalReceipt::decode(receipt, name)?;
        let visible_at = ms(now_ms()) + i64::from(seconds) * 1000;
        let changed = self
            .client()
            .await?
            .execute(
                &self.sql.change_visibility,
                &[&(receipt.seq as i64), &name.as_str(), &(receipt.lease as i32), &visible_at],
            )
            .await
            .map_err(|e| map_error("change visibility", &e))?;
        if changed == 0 {
            // Gone or received again: either way this receipt no longer holds the message
            // (the lookup tells a missing queue apart).
            self.lease(name, &receipt).await?;
            return Err(stale_receipt(name));
        }
        if seconds == 0 {
            self.arrivals.announce(name.as_str());
        }
        Ok(())
    }

    async fn purge(&self, op: ops::Purge<'_>) -> ExoResult<()> {
        let ops::Purge { queue: name } = op;
        let client = self.client().await?;
        client.execute(&self.sql.purge, &[&name.as_str()]).await.map_err(|e| map_error("purge", &e))?;
        self.require_queue(name).await
    }

    async fn create_topic(&self, op: ops::CreateTopic<'_>) -> ExoResult<(bool, pb::TopicInfo)> {
        let ops::CreateTopic { topic: name } = op;
        let created_at_ms = now_ms();
        let inserted = self
            .client()
            .await?
            .execute(&self.sql.create_topic, &[&name.as_str(), &ms(created_at_ms)])
            .await
            .map_err(|e| map_error("create topic", &e))?;
        if inserted == 0 {
            return Ok((false, self.load_topic(name.as_str()).await?));
        }
        Ok((true, pb::TopicInfo { name: name.to_string(), created_at_ms, subscriptions: Vec::new() }))
    }

    async fn delete_topic(&self, op: ops::DeleteTopic<'_>) -> ExoResult<()> {
        let ops::DeleteTopic { topic: name } = op;
        let deleted = self
            .client()
            .await?
            .execute(&self.sql.delete_topic, &[&name.as_str()])
            .await
            .map_err(|e| map_error("delete topic", &e))?;
        if deleted == 0 { Err(topic_not_found(name.as_str())) } else { Ok(()) }
    }

    async fn list_topics(&self, op: ops::ListTopics<'_>) -> ExoResult<Vec<String>> {
        let ops::ListTopics { prefix, start_after, limit } = op;
        self.list_names(&self.sql.list_topics, "list topics", prefix, start_after, limit).await
    }

    async fn topic_info(&self, op: ops::TopicInfo<'_>) -> ExoResult<pb::TopicInfo> {
        let ops::TopicInfo { topic: name } = op;
        self.load_topic(name.as_str()).await
    }

    async fn create_subscription(
        &self,
        op: ops::CreateSubscription<'_>,
    ) -> ExoResult<(bool, pb::Subscription)> {
        let ops::CreateSubscription { topic, subscription } = op;
        let queue = QueueName::parse("queue", &subscription.queue, "queue")?;
        self.require_queue(&queue).await.map_err(|e| e.with_field("queue"))?;
        let existing = self.load_topic(topic.as_str()).await?;
        if let Some(found) = existing.subscriptions.iter().find(|s| s.name == subscription.name) {
            if crate::model::same_subscription(found, subscription) {
                return Ok((false, found.clone()));
            }
            return Err(subscription_conflict(topic.as_str(), found, subscription));
        }
        let stored = pb::Subscription { created_at_ms: now_ms(), ..subscription.clone() };
        let inserted = self
            .client()
            .await?
            .execute(
                &self.sql.create_subscription,
                &[
                    &topic.as_str(),
                    &stored.name,
                    &stored.queue,
                    &stored.filter,
                    &ms(stored.created_at_ms),
                    &i64::from(MAX_SUBSCRIPTIONS),
                ],
            )
            .await;
        match inserted {
            Ok(1) => Ok((true, stored)),
            // Taken meanwhile by another proxy, or the topic is full: the row tells which.
            Ok(_) => {
                let now = self.load_topic(topic.as_str()).await?;
                match now.subscriptions.into_iter().find(|s| s.name == stored.name) {
                    Some(found) if crate::model::same_subscription(&found, &stored) => Ok((false, found)),
                    Some(found) => Err(subscription_conflict(topic.as_str(), &found, &stored)),
                    None => Err(too_many_subscriptions(topic.as_str())),
                }
            }
            // The topic or the queue was deleted after the checks above.
            Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => {
                self.load_topic(topic.as_str()).await?;
                Err(queue_not_found(&stored.queue).with_field("queue"))
            }
            Err(e) => Err(map_error("create subscription", &e)),
        }
    }

    async fn delete_subscription(&self, op: ops::DeleteSubscription<'_>) -> ExoResult<()> {
        let ops::DeleteSubscription { topic, subscription: name } = op;
        let deleted = self
            .client()
            .await?
            .execute(&self.sql.delete_subscription, &[&topic.as_str(), &name.as_str()])
            .await
            .map_err(|e| map_error("delete subscription", &e))?;
        if deleted == 1 {
            return Ok(());
        }
        self.load_topic(topic.as_str()).await?;
        Err(subscription_not_found(topic.as_str(), name.as_str()))
    }

    async fn publish(&self, op: ops::Publish<'_>) -> ExoResult<Vec<ExoResult<Published>>> {
        let ops::Publish { topic, messages } = op;
        let info = self.load_topic(topic.as_str()).await?;
        let routes = Routes::new(info.subscriptions.iter().map(|s| (&*s.name, &*s.queue, &*s.filter)));
        let (mut queues, mut ids, mut bodies, mut attributes) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut results = Vec::with_capacity(messages.len());
        for message in messages {
            let publish_id = new_message_id();
            let copy = serde_json::to_string(&topic_copy(topic.as_str(), &publish_id, &message.attributes))
                .map_err(|err| ExoError::internal(format!("cannot encode attributes: {err}")))?;
            let mut deliveries = 0;
            for queue in routes.queues(&message.attributes) {
                queues.push(queue.to_owned());
                ids.push(new_message_id());
                bodies.push(message.body.clone());
                attributes.push(copy.clone());
                deliveries += 1;
            }
            results.push(Ok(Published { publish_id, deliveries }));
        }
        if !queues.is_empty() {
            self.client()
                .await?
                .execute(&self.sql.publish, &[&ms(now_ms()), &queues, &ids, &bodies, &attributes])
                .await
                .map_err(|e| map_error("publish", &e))?;
        }
        Ok(results)
    }
}
