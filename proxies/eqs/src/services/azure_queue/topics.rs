//! Topics on Azure Storage, which has none: the proxy fans out through a durable outbox.
//!
//! One table of the account, `exotopics<prefix>` (letters and digits of the name prefix), holds
//! the registry and the outbox:
//! - a topic is the row (topic, `!topic`); each subscription the row (topic, its name) with
//!   `queue`, `filter`, `created_ms`;
//! - each published message becomes one outbox row (`~outbox`, its publish id) holding the body,
//!   the copy's attributes and the queues whose subscriptions matched when it was published.
//!
//! A publish is acknowledged once its outbox row is written: from then on every subscription
//! that existed gets the message. The proxy then puts a copy into each queue and deletes the
//! row. A proxy that dies in between leaves the row; every proxy's outbox drainer picks up rows
//! older than [`STALE_AFTER`] (claiming each with its ETag, so one proxy takes it) and puts the
//! copies again — a subscriber may see a copy twice (same `exo.publish-id`), never lose one.
//! Deleting a queue deletes the subscriptions into it; a copy for a queue gone meanwhile is
//! dropped with its subscription.

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
    time::Duration,
};

use azure_data_tables::{IfMatchCondition, prelude::*};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use exo_azure::{AzureSettings, Service, service_code};
use exo_proto::{common::v1::ErrorReason, queue::v1 as pb};
use exo_proxy_core::{ExoError, ExoResult, now_ms};
use futures::StreamExt as _;
use serde_json::{Value, json};

use super::AzureQueue;
use crate::ops;
use crate::{
    backend::Queue,
    filter::Routes,
    model::{
        MAX_SUBSCRIPTIONS, Published, QueueName, TopicName, subscription_conflict, subscription_not_found,
        too_many_subscriptions, topic_copy, topic_not_found,
    },
    services::new_message_id,
};

/// The row key of a topic's own row (subscription names never start with '!').
const TOPIC_ROW: &str = "!topic";
/// The partition of the outbox (topic names never contain '~').
const OUTBOX: &str = "~outbox";
/// An outbox row untouched this long is taken to be left by a proxy that died mid-fan-out.
pub const STALE_AFTER: Duration = Duration::from_secs(10);
/// How often each proxy looks for such rows.
const DRAIN_EVERY: Duration = Duration::from_secs(2);

/// The registry and outbox table of one account and name prefix.
pub(super) struct TopicTable {
    table: TableClient,
}

fn table_error(operation: &str, err: &azure_core::Error) -> ExoError {
    exo_azure::map_error("azure-queue", operation, err)
}

fn is_missing(err: &azure_core::Error) -> bool {
    matches!(service_code(err), Some((404, _)))
}

fn int64(value: u64) -> Value {
    json!(value.to_string())
}

fn subscription_of(row: &Value) -> Option<pb::Subscription> {
    Some(pb::Subscription {
        name: row["RowKey"].as_str()?.to_owned(),
        queue: row["queue"].as_str()?.to_owned(),
        filter: row["filter"].as_str().unwrap_or_default().to_owned(),
        created_at_ms: row["created_ms"].as_str().and_then(|v| v.parse().ok()).unwrap_or_default(),
    })
}

impl TopicTable {
    /// The table for `settings`, or `None` when they do not say where the Table service is.
    pub(super) fn connect(settings: &AzureSettings) -> ExoResult<Option<Self>> {
        let Some(tables) = settings.for_tables() else { return Ok(None) };
        let (location, credentials) = tables.connect(Service::Table)?;
        let service =
            azure_data_tables::clients::TableServiceClientBuilder::with_location(location, credentials)
                .retry(exo_azure::no_retries())
                .build();
        let suffix: String = settings.name_prefix.chars().filter(char::is_ascii_alphanumeric).collect();
        Ok(Some(Self { table: service.table_client(format!("exotopics{}", suffix.to_ascii_lowercase())) }))
    }

    /// Every row passing `filter` (an OData expression); none when the table does not exist yet.
    async fn rows(&self, filter: String) -> ExoResult<Vec<Value>> {
        let mut pages = self.table.query().filter(Filter::new(filter)).into_stream::<Value>();
        let mut rows = Vec::new();
        while let Some(page) = pages.next().await {
            match page {
                Ok(page) => rows.extend(page.entities),
                // No table yet: no topic was ever made.
                Err(err) if is_missing(&err) => return Ok(Vec::new()),
                Err(err) => return Err(table_error("QueryEntities", &err)),
            }
        }
        Ok(rows)
    }

    /// The topic's row and its subscriptions, or TOPIC_NOT_FOUND.
    async fn topic(&self, name: &str) -> ExoResult<pb::TopicInfo> {
        let rows = self.rows(format!("PartitionKey eq '{name}'")).await?;
        let head = rows.iter().find(|r| r["RowKey"] == TOPIC_ROW).ok_or_else(|| topic_not_found(name))?;
        let mut subscriptions: Vec<pb::Subscription> =
            rows.iter().filter(|r| r["RowKey"] != TOPIC_ROW).filter_map(subscription_of).collect();
        subscriptions.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(pb::TopicInfo {
            name: name.to_owned(),
            created_at_ms: head["created_ms"].as_str().and_then(|v| v.parse().ok()).unwrap_or_default(),
            subscriptions,
        })
    }

    async fn insert(&self, row: &Value) -> azure_core::Result<()> {
        let builder = self
            .table
            .insert::<_, Value>(row)
            .map_err(|e| azure_core::Error::new(azure_core::error::ErrorKind::DataConversion, e))?;
        builder.return_entity(false).await.map(|_| ())
    }

    async fn delete_row(
        &self,
        partition: &str,
        row: &str,
        if_match: IfMatchCondition,
    ) -> azure_core::Result<()> {
        self.table
            .partition_key_client(partition)
            .entity_client(row)
            .delete()
            .if_match(if_match)
            .await
            .map(|_| ())
    }
}

impl AzureQueue {
    fn topic_table(&self) -> ExoResult<&TopicTable> {
        self.topics.as_ref().ok_or_else(|| {
            ExoError::unsupported(
                "topics on azure-queue keep their registry in a table: set backend.table-endpoint (or use a connection string)",
            )
        })
    }

    pub(super) async fn az_create_topic(&self, name: &TopicName) -> ExoResult<(bool, pb::TopicInfo)> {
        let table = self.topic_table()?;
        let created_at_ms = now_ms();
        let row = json!({
            "PartitionKey": name.as_str(), "RowKey": TOPIC_ROW,
            "created_ms": int64(created_at_ms), "created_ms@odata.type": "Edm.Int64",
        });
        let mut inserted = table.insert(&row).await;
        if inserted.as_ref().is_err_and(|e| matches!(service_code(e), Some((404, "TableNotFound")))) {
            match table.table.create().await {
                Ok(_) => {}
                Err(err) if matches!(service_code(&err), Some((409, _))) => {}
                Err(err) => return Err(table_error("CreateTable", &err)),
            }
            inserted = table.insert(&row).await;
        }
        match inserted {
            Ok(()) => {
                Ok((true, pb::TopicInfo { name: name.to_string(), created_at_ms, subscriptions: Vec::new() }))
            }
            Err(err) if matches!(service_code(&err), Some((409, "EntityAlreadyExists"))) => {
                Ok((false, table.topic(name.as_str()).await?))
            }
            Err(err) => Err(table_error("InsertEntity", &err)),
        }
    }

    pub(super) async fn az_delete_topic(&self, name: &TopicName) -> ExoResult<()> {
        let table = self.topic_table()?;
        let info = table.topic(name.as_str()).await?;
        for subscription in &info.subscriptions {
            match table.delete_row(name.as_str(), &subscription.name, IfMatchCondition::Any).await {
                Ok(()) => {}
                Err(err) if is_missing(&err) => {}
                Err(err) => return Err(table_error("DeleteEntity", &err)),
            }
        }
        match table.delete_row(name.as_str(), TOPIC_ROW, IfMatchCondition::Any).await {
            Ok(()) => Ok(()),
            Err(err) if is_missing(&err) => Err(topic_not_found(name.as_str())),
            Err(err) => Err(table_error("DeleteEntity", &err)),
        }
    }

    pub(super) async fn az_list_topics(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> ExoResult<Vec<String>> {
        let table = self.topic_table()?;
        let mut filter =
            format!("RowKey eq '{TOPIC_ROW}' and PartitionKey ge '{prefix}' and PartitionKey lt '{prefix}~'");
        if let Some(after) = start_after {
            filter.push_str(&format!(" and PartitionKey gt '{after}'"));
        }
        let mut names: Vec<String> = table
            .rows(filter)
            .await?
            .iter()
            .filter_map(|r| r["PartitionKey"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names.truncate(limit);
        Ok(names)
    }

    pub(super) async fn az_topic_info(&self, name: &TopicName) -> ExoResult<pb::TopicInfo> {
        self.topic_table()?.topic(name.as_str()).await
    }

    pub(super) async fn az_create_subscription(
        &self,
        topic: &TopicName,
        subscription: &pb::Subscription,
    ) -> ExoResult<(bool, pb::Subscription)> {
        let table = self.topic_table()?;
        let queue = QueueName::parse("queue", &subscription.queue, "queue")?;
        self.options(&queue).await.map_err(|e| e.with_field("queue"))?;
        let info = table.topic(topic.as_str()).await?;
        if let Some(found) = info.subscriptions.iter().find(|s| s.name == subscription.name) {
            if crate::model::same_subscription(found, subscription) {
                return Ok((false, found.clone()));
            }
            return Err(subscription_conflict(topic.as_str(), found, subscription));
        }
        if info.subscriptions.len() >= MAX_SUBSCRIPTIONS as usize {
            return Err(too_many_subscriptions(topic.as_str()));
        }
        let stored = pb::Subscription { created_at_ms: now_ms(), ..subscription.clone() };
        let row = json!({
            "PartitionKey": topic.as_str(), "RowKey": stored.name, "queue": stored.queue, "filter": stored.filter,
            "created_ms": int64(stored.created_at_ms), "created_ms@odata.type": "Edm.Int64",
        });
        match table.insert(&row).await {
            Ok(()) => Ok((true, stored)),
            // Another proxy made it meanwhile: compare with theirs.
            Err(err) if matches!(service_code(&err), Some((409, "EntityAlreadyExists"))) => {
                let now = table.topic(topic.as_str()).await?;
                match now.subscriptions.into_iter().find(|s| s.name == stored.name) {
                    Some(found) if crate::model::same_subscription(&found, &stored) => Ok((false, found)),
                    Some(found) => Err(subscription_conflict(topic.as_str(), &found, &stored)),
                    None => Err(table_error("InsertEntity", &err)),
                }
            }
            Err(err) => Err(table_error("InsertEntity", &err)),
        }
    }

    pub(super) async fn az_delete_subscription(&self, topic: &TopicName, name: &TopicName) -> ExoResult<()> {
        let table = self.topic_table()?;
        table.topic(topic.as_str()).await?;
        match table.delete_row(topic.as_str(), name.as_str(), IfMatchCondition::Any).await {
            Ok(()) => Ok(()),
            Err(err) if is_missing(&err) => Err(subscription_not_found(topic.as_str(), name.as_str())),
            Err(err) => Err(table_error("DeleteEntity", &err)),
        }
    }

    /// Deletes the subscriptions delivering into `queue` (being deleted).
    pub(super) async fn az_forget_queue(&self, queue: &QueueName) -> ExoResult<()> {
        let Some(table) = self.topics.as_ref() else { return Ok(()) };
        let rows = table.rows(format!("queue eq '{queue}' and PartitionKey ne '{OUTBOX}'")).await?;
        for row in rows {
            let (Some(topic), Some(name)) = (row["PartitionKey"].as_str(), row["RowKey"].as_str()) else {
                continue;
            };
            match table.delete_row(topic, name, IfMatchCondition::Any).await {
                Ok(()) => {}
                Err(err) if is_missing(&err) => {}
                Err(err) => return Err(table_error("DeleteEntity", &err)),
            }
        }
        Ok(())
    }

    pub(super) async fn az_publish(
        &self,
        topic: &TopicName,
        messages: Vec<pb::PublishedMessage>,
    ) -> ExoResult<Vec<ExoResult<Published>>> {
        let table = self.topic_table()?;
        let info = table.topic(topic.as_str()).await?;
        let routes = Routes::new(info.subscriptions.iter().map(|s| (&*s.name, &*s.queue, &*s.filter)));
        let mut results = Vec::with_capacity(messages.len());
        let mut written = Vec::new();
        for message in messages {
            let publish_id = new_message_id();
            let queues = routes.queues(&message.attributes);
            let deliveries = queues.len() as u32;
            if queues.is_empty() {
                results.push(Ok(Published { publish_id, deliveries }));
                continue;
            }
            let attributes = topic_copy(topic.as_str(), &publish_id, &message.attributes);
            let row = json!({
                "PartitionKey": OUTBOX, "RowKey": publish_id, "topic": topic.as_str(),
                "body": STANDARD.encode(&message.body), "body@odata.type": "Edm.Binary",
                "attributes": serde_json::to_string(&attributes).unwrap_or_default(),
                "queues": serde_json::to_string(&queues).unwrap_or_default(),
                "at_ms": int64(now_ms()), "at_ms@odata.type": "Edm.Int64",
            });
            // Acknowledged from here on: the row is durable, the drainer finishes what we do not.
            match table.insert(&row).await {
                Ok(()) => {
                    written.push(row);
                    results.push(Ok(Published { publish_id, deliveries }));
                }
                Err(err) => {
                    results.push(Err(table_error("InsertEntity", &err).with_resource(topic.as_str())))
                }
            }
        }
        for row in written {
            if let Err(err) = self.deliver(&row, IfMatchCondition::Any).await {
                tracing::warn!(topic = %topic, error = %err, "fan-out left to the outbox drainer");
            }
        }
        Ok(results)
    }

    /// Puts an outbox row's copies into its queues, then deletes the row under `if_match`.
    async fn deliver(&self, row: &Value, if_match: IfMatchCondition) -> ExoResult<()> {
        let table = self.topic_table()?;
        let corrupt = |what: &str| ExoError::internal(format!("outbox row {}: {what}", row["RowKey"]));
        let body = STANDARD.decode(row["body"].as_str().unwrap_or_default()).map_err(|_| corrupt("body"))?;
        let attributes: HashMap<String, String> =
            serde_json::from_str(row["attributes"].as_str().unwrap_or("{}"))
                .map_err(|_| corrupt("attributes"))?;
        let queues: Vec<String> =
            serde_json::from_str(row["queues"].as_str().unwrap_or("[]")).map_err(|_| corrupt("queues"))?;
        let sends = queues.iter().map(|queue| {
            let message = pb::OutgoingMessage {
                body: body.clone(),
                attributes: attributes.clone(),
                delay_seconds: None,
            };
            async move {
                let Ok(name) = QueueName::parse("queue", queue, "queue") else { return Ok(()) };
                match self.send(ops::Send { queue: &name, messages: vec![message] }).await {
                    Ok(mut sent) => sent.pop().unwrap_or(Ok(String::new())).map(|_| ()),
                    // Deleted since: its subscription went with it.
                    Err(err) if err.reason == ErrorReason::QueueNotFound => Ok(()),
                    Err(err) => Err(err),
                }
            }
        });
        for result in futures::future::join_all(sends).await {
            result?;
        }
        let id = row["RowKey"].as_str().unwrap_or_default();
        match table.delete_row(OUTBOX, id, if_match).await {
            Ok(()) => Ok(()),
            Err(err) if is_missing(&err) || matches!(service_code(&err), Some((412, _))) => Ok(()),
            Err(err) => Err(table_error("DeleteEntity", &err)),
        }
    }

    /// Finishes outbox rows left by a proxy that died mid-fan-out: claims each stale row by
    /// rewriting it under its ETag (one proxy wins), then delivers it.
    async fn drain_outbox(&self) -> ExoResult<usize> {
        let table = self.topic_table()?;
        let stale = now_ms().saturating_sub(STALE_AFTER.as_millis() as u64);
        let rows = table.rows(format!("PartitionKey eq '{OUTBOX}' and at_ms lt {stale}L")).await?;
        let mut finished = 0;
        for row in rows {
            // One row that cannot be finished now (a queue unreachable, a row written by hand
            // that is not an outbox row) must not hold up the others: it is tried again later.
            let id = row["RowKey"].as_str().unwrap_or_default().to_owned();
            match self.finish_row(table, row).await {
                Ok(true) => finished += 1,
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(row = %id, error = %err, "outbox row not finished; tried again later")
                }
            }
        }
        Ok(finished)
    }

    /// Claims one stale outbox row by rewriting it under its ETag, then delivers it; false when
    /// another proxy claimed or finished it first.
    async fn finish_row(&self, table: &TopicTable, mut row: Value) -> ExoResult<bool> {
        let Some(etag) = row["odata.etag"].as_str().map(str::to_owned) else { return Ok(false) };
        let Some(id) = row["RowKey"].as_str().map(str::to_owned) else { return Ok(false) };
        row["at_ms"] = int64(now_ms());
        row["at_ms@odata.type"] = json!("Edm.Int64");
        if let Some(map) = row.as_object_mut() {
            map.retain(|k, _| !k.starts_with("odata.") && k != "Timestamp");
        }
        let claimed = table
            .table
            .partition_key_client(OUTBOX)
            .entity_client(&id)
            .update(&row, IfMatchCondition::Etag(etag.into()))
            .map_err(|e| ExoError::internal(e.to_string()))?
            .await;
        let etag = match claimed {
            Ok(out) => out.etag.to_string(),
            // Another proxy claimed or finished it.
            Err(err) if is_missing(&err) || matches!(service_code(&err), Some((412, _))) => {
                return Ok(false);
            }
            Err(err) => return Err(table_error("UpdateEntity", &err)),
        };
        self.deliver(&row, IfMatchCondition::Etag(etag.into())).await?;
        Ok(true)
    }
}

/// Runs the outbox drainer of `queue` until the backend is dropped.
pub(super) fn spawn_drainer(queue: Weak<AzureQueue>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(DRAIN_EVERY).await;
            let Some(queue) = queue.upgrade() else { return };
            match queue.drain_outbox().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "finished outbox rows left by an earlier fan-out"),
                Err(err) => tracing::warn!(error = %err, "outbox drain failed; retrying"),
            }
            drop(queue);
        }
    });
}

/// Opens the backend and, when it has topics, starts its drainer.
pub(super) fn open(settings: &AzureSettings) -> ExoResult<Arc<AzureQueue>> {
    let queue = Arc::new(AzureQueue::connect(settings)?);
    if queue.topics.is_some() {
        spawn_drainer(Arc::downgrade(&queue));
    }
    Ok(queue)
}
