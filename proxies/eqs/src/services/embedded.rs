//! `embedded`: a durable queue in one SQLite file (WAL journal, `synchronous=FULL`).
//!
//! Writes go through [`SqliteStore`]: group commit, and a send is acknowledged only once durable.
//! A publish writes every subscription's copy in the one transaction that commits it.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use async_trait::async_trait;
use exo_proto::queue::v1 as pb;
use exo_proxy_core::{ExoError, ExoResult, now_ms};
use exo_sqlite::{
    SqliteStore, db_error,
    rusqlite::{OptionalExtension, Transaction, params},
};

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

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queues (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    visibility_s INTEGER NOT NULL,
    retention_s INTEGER NOT NULL,
    delay_s INTEGER NOT NULL,
    max_receives INTEGER NOT NULL,
    dead_letter_queue TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
-- AUTOINCREMENT: a sequence number is never reused, so an old receipt can never match a new message.
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue_id INTEGER NOT NULL REFERENCES queues(id) ON DELETE CASCADE,
    message_id TEXT NOT NULL,
    body BLOB NOT NULL,
    attributes TEXT NOT NULL,
    enqueued_at_ms INTEGER NOT NULL,
    visible_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    dequeue_count INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_visibility ON messages(queue_id, visible_at_ms);
CREATE INDEX IF NOT EXISTS messages_by_expiry ON messages(queue_id, expires_at_ms);
CREATE TABLE IF NOT EXISTS topics (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL
);
-- A subscription goes with its topic and with its queue (deleting either deletes it).
CREATE TABLE IF NOT EXISTS subscriptions (
    topic_id INTEGER NOT NULL REFERENCES topics(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    queue_id INTEGER NOT NULL REFERENCES queues(id) ON DELETE CASCADE,
    filter TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (topic_id, name)
);
CREATE INDEX IF NOT EXISTS subscriptions_by_queue ON subscriptions(queue_id);
PRAGMA user_version = 2;
";

#[derive(Clone)]
struct QueueRow {
    id: i64,
    options: pb::QueueOptions,
    created_at_ms: u64,
}

/// Queue rows by name, owned by the writer thread. Entries are only ever removed outside
/// lookups, so a rolled-back job can never leave a wrong entry behind.
#[derive(Default)]
struct Catalog {
    queues: HashMap<String, QueueRow>,
}

impl Catalog {
    fn lookup(&mut self, txn: &Transaction<'_>, name: &str) -> ExoResult<QueueRow> {
        if let Some(row) = self.queues.get(name) {
            return Ok(row.clone());
        }
        let row = txn
            .query_row(
                "SELECT id, visibility_s, retention_s, delay_s, max_receives, dead_letter_queue, created_at_ms
                 FROM queues WHERE name = ?1",
                [name],
                |r| {
                    Ok(QueueRow {
                        id: r.get(0)?,
                        options: pb::QueueOptions {
                            visibility_timeout_seconds: Some(r.get(1)?),
                            retention_seconds: r.get(2)?,
                            delay_seconds: r.get(3)?,
                            max_receives: r.get(4)?,
                            dead_letter_queue: r.get(5)?,
                        },
                        created_at_ms: r.get::<_, i64>(6)? as u64,
                    })
                },
            )
            .optional()
            .map_err(db_error)?
            .ok_or_else(|| queue_not_found(name))?;
        self.queues.insert(name.to_owned(), row.clone());
        Ok(row)
    }
}

/// The settings of an `embedded` backend.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EmbeddedConfig {
    /// The database file; created with its directory if missing.
    #[serde(default = "default_db_path")]
    pub path: PathBuf,
    /// Largest message in bytes.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u64,
}

fn default_db_path() -> PathBuf {
    PathBuf::from(".exo/eqs.db")
}

fn default_max_message_bytes() -> u64 {
    DEFAULT_MAX_MESSAGE_BYTES
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self { path: default_db_path(), max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES }
    }
}

impl exo_proxy_core::registry::Backend for EmbeddedQueue {
    type Opened = std::sync::Arc<dyn Queue>;
    type Context = crate::services::OpenContext;
    type Config = EmbeddedConfig;

    fn settings(data: Option<PathBuf>) -> EmbeddedConfig {
        EmbeddedConfig { path: data.unwrap_or_else(default_db_path), ..EmbeddedConfig::default() }
    }

    fn set_data_path(config: &mut EmbeddedConfig, data: PathBuf) {
        config.path = data;
    }

    fn largest_item(config: &EmbeddedConfig) -> Option<u64> {
        Some(config.max_message_bytes)
    }

    fn open<'a>(
        config: &'a EmbeddedConfig,
        _context: &'a Self::Context,
    ) -> exo_proxy_core::registry::BoxFuture<'a, ExoResult<Self::Opened>> {
        Box::pin(async move {
            let queue: Self::Opened =
                std::sync::Arc::new(EmbeddedQueue::open(&config.path, config.max_message_bytes)?);
            Ok(queue)
        })
    }
}

/// The SQLite-backed durable queue.
pub struct EmbeddedQueue {
    descriptor: Descriptor,
    store: SqliteStore<Catalog>,
    arrivals: Wakeups,
    path: PathBuf,
}

impl std::fmt::Debug for EmbeddedQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedQueue").field("path", &self.path).finish_non_exhaustive()
    }
}

impl EmbeddedQueue {
    /// Opens (creating if needed) the queue database at `path`.
    pub fn open(path: &Path, max_message_bytes: u64) -> ExoResult<Self> {
        let store = SqliteStore::open(path, SCHEMA, "eqs-embedded-writer")?;
        use Capability::*;
        Ok(Self {
            descriptor: Descriptor {
                backend: "embedded",
                capabilities: [
                    LongPoll,
                    Delay,
                    Retention,
                    DeadLetter,
                    ChangeVisibility,
                    Purge,
                    StaleReceipts,
                    Durable,
                    Topics,
                ]
                .into(),
                limits: local_limits(max_message_bytes),
            },
            store,
            arrivals: Wakeups::default(),
            path: path.to_owned(),
        })
    }

    /// Runs `work` in the writer thread's next transaction; answers after the commit.
    async fn run<T, F>(&self, work: F) -> ExoResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, &mut Catalog) -> ExoResult<T> + Send + 'static,
    {
        self.store.run(work).await
    }

    /// Like [`Self::run`] for work that adds no data: it still runs on a full disk (see
    /// [`SqliteStore::run_adding_nothing`]), so consumers can drain the queue that filled it.
    async fn run_adding_nothing<T, F>(&self, work: F) -> ExoResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, &mut Catalog) -> ExoResult<T> + Send + 'static,
    {
        self.store.run_adding_nothing(work).await
    }

    fn try_receive_job(
        name: QueueName,
        params: ReceiveParams,
    ) -> impl FnOnce(&Transaction<'_>, &mut Catalog) -> ExoResult<(Vec<pb::Message>, Option<String>)>
    + Send
    + 'static {
        move |txn, catalog| {
            let now = now_ms() as i64;
            let queue = catalog.lookup(txn, name.as_str())?;
            txn.execute(
                "DELETE FROM messages WHERE queue_id = ?1 AND expires_at_ms <= ?2",
                params![queue.id, now],
            )
            .map_err(db_error)?;
            let mut announce = None;
            if queue.options.max_receives > 0 {
                let moved = dead_letter(txn, catalog, &queue, now)?;
                if moved {
                    announce = Some(queue.options.dead_letter_queue.clone());
                }
            }
            let visibility =
                params.visibility_seconds.unwrap_or(queue.options.visibility_timeout_seconds.unwrap_or(0));
            let hidden_until = now + i64::from(visibility) * 1000;
            let mut statement = txn
                .prepare_cached(
                    "UPDATE messages SET visible_at_ms = ?1, dequeue_count = dequeue_count + 1
                     WHERE seq IN (SELECT seq FROM messages WHERE queue_id = ?2 AND visible_at_ms <= ?3
                                   ORDER BY visible_at_ms LIMIT ?4)
                     RETURNING seq, message_id, body, attributes, enqueued_at_ms, dequeue_count",
                )
                .map_err(db_error)?;
            let rows = statement
                .query_map(params![hidden_until, queue.id, now, params.max_messages], |r| {
                    let seq: i64 = r.get(0)?;
                    let dequeue_count: u32 = r.get(5)?;
                    let attributes: String = r.get(3)?;
                    Ok((
                        seq,
                        dequeue_count,
                        attributes,
                        r.get::<_, String>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, i64>(4)?,
                    ))
                })
                .map_err(db_error)?;
            let mut messages = Vec::new();
            for row in rows {
                let (seq, dequeue_count, attributes, message_id, body, enqueued_at_ms) =
                    row.map_err(db_error)?;
                messages.push(pb::Message {
                    message_id,
                    receipt: LocalReceipt { queue: name.to_string(), seq: seq as u64, lease: dequeue_count }
                        .encode(),
                    body,
                    attributes: decode_attributes(&attributes)?,
                    dequeue_count,
                    enqueued_at_ms: enqueued_at_ms as u64,
                });
            }
            Ok((messages, announce))
        }
    }
}

/// Moves visible messages of `queue` received `max_receives` times into its dead-letter queue,
/// in the same transaction as the receive that found them: each moves exactly once.
fn dead_letter(txn: &Transaction<'_>, catalog: &mut Catalog, queue: &QueueRow, now: i64) -> ExoResult<bool> {
    let target = match catalog.lookup(txn, &queue.options.dead_letter_queue) {
        Ok(target) => target,
        Err(err) if err.reason == exo_proto::common::v1::ErrorReason::QueueNotFound => {
            // Deleted after this queue was created: keep the messages rather than lose them.
            return Ok(false);
        }
        Err(err) => return Err(err),
    };
    let retention_ms = i64::from(target.options.retention_seconds) * 1000;
    let moved = txn
        .execute(
            "INSERT INTO messages (queue_id, message_id, body, attributes, enqueued_at_ms, visible_at_ms, expires_at_ms, dequeue_count)
             SELECT ?1, message_id, body, attributes, enqueued_at_ms, ?2, enqueued_at_ms + ?3, 0
             FROM messages WHERE queue_id = ?4 AND visible_at_ms <= ?2 AND dequeue_count >= ?5
             ORDER BY seq",
            params![target.id, now, retention_ms, queue.id, queue.options.max_receives],
        )
        .map_err(db_error)?;
    if moved > 0 {
        txn.execute(
            "DELETE FROM messages WHERE queue_id = ?1 AND visible_at_ms <= ?2 AND dequeue_count >= ?3",
            params![queue.id, now, queue.options.max_receives],
        )
        .map_err(db_error)?;
    }
    Ok(moved > 0)
}

fn decode_attributes(text: &str) -> ExoResult<HashMap<String, String>> {
    serde_json::from_str(text)
        .map_err(|err| ExoError::internal(format!("corrupt attributes in store: {err}")))
}

fn write_queue(
    txn: &Transaction<'_>,
    name: &QueueName,
    options: &pb::QueueOptions,
    created_at_ms: u64,
) -> ExoResult<()> {
    txn.execute(
        "INSERT INTO queues (name, visibility_s, retention_s, delay_s, max_receives, dead_letter_queue, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            name.as_str(),
            options.visibility_timeout_seconds.unwrap_or(0),
            options.retention_seconds,
            options.delay_seconds,
            options.max_receives,
            options.dead_letter_queue,
            created_at_ms as i64
        ],
    )
    .map_err(db_error)?;
    Ok(())
}

fn queue_info(txn: &Transaction<'_>, name: &str, row: &QueueRow) -> ExoResult<pb::QueueInfo> {
    let now = now_ms() as i64;
    let (visible, delayed, in_flight) = txn
        .query_row(
            "SELECT
                COALESCE(SUM(visible_at_ms <= ?2), 0),
                COALESCE(SUM(visible_at_ms > ?2 AND dequeue_count = 0), 0),
                COALESCE(SUM(visible_at_ms > ?2 AND dequeue_count > 0), 0)
             FROM messages WHERE queue_id = ?1 AND expires_at_ms > ?2",
            params![row.id, now],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)),
        )
        .map_err(db_error)?;
    Ok(pb::QueueInfo {
        name: name.to_owned(),
        options: Some(row.options.clone()),
        visible_messages: visible as u64,
        in_flight_messages: in_flight as u64,
        delayed_messages: delayed as u64,
        created_at_ms: row.created_at_ms,
    })
}

/// Looks up the message a receipt names: `None` if it is gone, stale error if re-received.
fn leased_message(
    txn: &Transaction<'_>,
    queue: &QueueRow,
    name: &QueueName,
    receipt: &LocalReceipt,
) -> ExoResult<Option<()>> {
    let count: Option<u32> = txn
        .query_row(
            "SELECT dequeue_count FROM messages WHERE seq = ?1 AND queue_id = ?2",
            params![receipt.seq as i64, queue.id],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_error)?;
    match count {
        None => Ok(None),
        Some(count) if count != receipt.lease => Err(stale_receipt(name)),
        Some(_) => Ok(Some(())),
    }
}

/// Up to `limit` names of `table` (queues or topics) with `prefix`, after `start_after`, in order.
fn list_names(
    txn: &Transaction<'_>,
    table: &'static str,
    prefix: &str,
    start_after: &str,
    limit: usize,
) -> ExoResult<Vec<String>> {
    // Names are [a-z0-9-], so a prefix range needs no LIKE escaping: prefix <= name < prefix + '~'.
    let upper = format!("{prefix}~");
    let mut statement = txn
        .prepare_cached(&format!(
            "SELECT name FROM {table} WHERE name >= ?1 AND name < ?2 AND name > ?3 ORDER BY name LIMIT ?4"
        ))
        .map_err(db_error)?;
    let names = statement
        .query_map(params![prefix, upper, start_after, limit as i64], |r| r.get(0))
        .map_err(db_error)?
        .collect::<Result<Vec<String>, _>>()
        .map_err(db_error)?;
    Ok(names)
}

/// The id and creation time of a topic, or TOPIC_NOT_FOUND.
fn topic_row(txn: &Transaction<'_>, name: &str) -> ExoResult<(i64, u64)> {
    txn.query_row("SELECT id, created_at_ms FROM topics WHERE name = ?1", [name], |r| {
        Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
    })
    .optional()
    .map_err(db_error)?
    .ok_or_else(|| topic_not_found(name))
}

/// A topic's subscriptions by name, with each one's queue id.
fn subscriptions(txn: &Transaction<'_>, topic_id: i64) -> ExoResult<Vec<(pb::Subscription, i64)>> {
    let mut statement = txn
        .prepare_cached(
            "SELECT s.name, q.name, s.filter, s.created_at_ms, s.queue_id
             FROM subscriptions s JOIN queues q ON q.id = s.queue_id
             WHERE s.topic_id = ?1 ORDER BY s.name",
        )
        .map_err(db_error)?;
    let rows = statement
        .query_map([topic_id], |r| {
            Ok((
                pb::Subscription {
                    name: r.get(0)?,
                    queue: r.get(1)?,
                    filter: r.get(2)?,
                    created_at_ms: r.get::<_, i64>(3)? as u64,
                },
                r.get(4)?,
            ))
        })
        .map_err(db_error)?;
    rows.collect::<Result<_, _>>().map_err(db_error)
}

fn topic_info(txn: &Transaction<'_>, name: &str) -> ExoResult<pb::TopicInfo> {
    let (id, created_at_ms) = topic_row(txn, name)?;
    let subscriptions = subscriptions(txn, id)?.into_iter().map(|(s, _)| s).collect();
    Ok(pb::TopicInfo { name: name.to_owned(), created_at_ms, subscriptions })
}

#[async_trait]
impl Queue for EmbeddedQueue {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    async fn ready(&self) -> ExoResult<()> {
        self.run_adding_nothing(|txn, _| txn.query_row("SELECT 1", [], |_| Ok(())).map_err(db_error)).await
    }

    async fn create_queue(&self, op: ops::CreateQueue<'_>) -> ExoResult<(bool, pb::QueueInfo)> {
        let ops::CreateQueue { queue: name, options } = op;
        let (name, options) = (name.clone(), options.clone());
        self.run(move |txn, catalog| match catalog.lookup(txn, name.as_str()) {
            Ok(existing) if existing.options == options => {
                Ok((false, queue_info(txn, name.as_str(), &existing)?))
            }
            Ok(existing) => Err(already_exists(&name, &existing.options, &options)),
            Err(err) if err.reason == exo_proto::common::v1::ErrorReason::QueueNotFound => {
                if !options.dead_letter_queue.is_empty() {
                    catalog
                        .lookup(txn, &options.dead_letter_queue)
                        .map_err(|_| dead_letter_missing(&options.dead_letter_queue))?;
                }
                let created_at_ms = now_ms();
                write_queue(txn, &name, &options, created_at_ms)?;
                let info = pb::QueueInfo {
                    name: name.to_string(),
                    options: Some(options),
                    created_at_ms,
                    ..Default::default()
                };
                Ok((true, info))
            }
            Err(err) => Err(err),
        })
        .await
    }

    async fn delete_queue(&self, op: ops::DeleteQueue<'_>) -> ExoResult<()> {
        let ops::DeleteQueue { queue: name } = op;
        let name = name.clone();
        self.run_adding_nothing(move |txn, catalog| {
            catalog.queues.remove(name.as_str());
            let deleted =
                txn.execute("DELETE FROM queues WHERE name = ?1", [name.as_str()]).map_err(db_error)?;
            if deleted == 0 { Err(queue_not_found(name.as_str())) } else { Ok(()) }
        })
        .await
    }

    async fn list_queues(&self, op: ops::ListQueues<'_>) -> ExoResult<Vec<String>> {
        let ops::ListQueues { prefix, start_after, limit } = op;
        let (prefix, start_after) = (prefix.to_owned(), start_after.unwrap_or("").to_owned());
        self.run_adding_nothing(move |txn, _| list_names(txn, "queues", &prefix, &start_after, limit)).await
    }

    async fn queue_info(&self, op: ops::QueueInfo<'_>) -> ExoResult<pb::QueueInfo> {
        let ops::QueueInfo { queue: name } = op;
        let name = name.clone();
        self.run_adding_nothing(move |txn, catalog| {
            let row = catalog.lookup(txn, name.as_str())?;
            queue_info(txn, name.as_str(), &row)
        })
        .await
    }

    async fn send(&self, op: ops::Send<'_>) -> ExoResult<Vec<ExoResult<String>>> {
        let ops::Send { queue: name, messages } = op;
        let owned = name.clone();
        let ids = self
            .run(move |txn, catalog| {
                let queue = catalog.lookup(txn, owned.as_str())?;
                let now = now_ms() as i64;
                let expires = now + i64::from(queue.options.retention_seconds) * 1000;
                let mut statement = txn
                    .prepare_cached(
                        "INSERT INTO messages (queue_id, message_id, body, attributes, enqueued_at_ms, visible_at_ms, expires_at_ms, dequeue_count)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0)",
                    )
                    .map_err(db_error)?;
                let mut ids = Vec::with_capacity(messages.len());
                for message in messages {
                    let delay = message.delay_seconds.unwrap_or(queue.options.delay_seconds);
                    let attributes = serde_json::to_string(&message.attributes)
                        .map_err(|err| ExoError::internal(format!("cannot encode attributes: {err}")))?;
                    let id = new_message_id();
                    statement
                        .execute(params![queue.id, id, message.body, attributes, now, now + i64::from(delay) * 1000, expires])
                        .map_err(db_error)?;
                    ids.push(id);
                }
                Ok(ids)
            })
            .await?;
        self.arrivals.announce(name.as_str());
        Ok(ids.into_iter().map(Ok).collect())
    }

    async fn receive(&self, op: ops::Receive<'_>) -> ExoResult<Vec<pb::Message>> {
        let ops::Receive { queue: name, params } = op;
        self.arrivals
            .wait_for(name.as_str(), params.wait, || async {
                let (messages, dead_letter_queue) =
                    self.run_adding_nothing(Self::try_receive_job(name.clone(), params)).await?;
                if let Some(target) = dead_letter_queue {
                    self.arrivals.announce(&target);
                }
                Ok(messages)
            })
            .await
    }

    async fn ack(&self, op: ops::Ack<'_>) -> ExoResult<()> {
        let ops::Ack { queue: name, receipt } = op;
        let receipt = LocalReceipt::decode(receipt, name)?;
        let name = name.clone();
        self.run_adding_nothing(move |txn, catalog| {
            let queue = catalog.lookup(txn, name.as_str())?;
            if leased_message(txn, &queue, &name, &receipt)?.is_some() {
                txn.execute("DELETE FROM messages WHERE seq = ?1", [receipt.seq as i64]).map_err(db_error)?;
            }
            Ok(())
        })
        .await
    }

    async fn change_visibility(&self, op: ops::ChangeVisibility<'_>) -> ExoResult<()> {
        let ops::ChangeVisibility { queue: name, receipt, seconds } = op;
        let receipt = LocalReceipt::decode(receipt, name)?;
        let owned = name.clone();
        self.run_adding_nothing(move |txn, catalog| {
            let queue = catalog.lookup(txn, owned.as_str())?;
            leased_message(txn, &queue, &owned, &receipt)?.ok_or_else(|| stale_receipt(&owned))?;
            let visible_at = now_ms() as i64 + i64::from(seconds) * 1000;
            txn.execute(
                "UPDATE messages SET visible_at_ms = ?1 WHERE seq = ?2",
                params![visible_at, receipt.seq as i64],
            )
            .map_err(db_error)?;
            Ok(())
        })
        .await?;
        if seconds == 0 {
            self.arrivals.announce(name.as_str());
        }
        Ok(())
    }

    async fn purge(&self, op: ops::Purge<'_>) -> ExoResult<()> {
        let ops::Purge { queue: name } = op;
        let name = name.clone();
        self.run_adding_nothing(move |txn, catalog| {
            let queue = catalog.lookup(txn, name.as_str())?;
            txn.execute("DELETE FROM messages WHERE queue_id = ?1", [queue.id]).map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn create_topic(&self, op: ops::CreateTopic<'_>) -> ExoResult<(bool, pb::TopicInfo)> {
        let ops::CreateTopic { topic: name } = op;
        let name = name.clone();
        self.run(move |txn, _| match topic_info(txn, name.as_str()) {
            Ok(info) => Ok((false, info)),
            Err(err) if err.reason == exo_proto::common::v1::ErrorReason::TopicNotFound => {
                let created_at_ms = now_ms();
                txn.execute(
                    "INSERT INTO topics (name, created_at_ms) VALUES (?1, ?2)",
                    params![name.as_str(), created_at_ms as i64],
                )
                .map_err(db_error)?;
                Ok((true, pb::TopicInfo { name: name.to_string(), created_at_ms, subscriptions: Vec::new() }))
            }
            Err(err) => Err(err),
        })
        .await
    }

    async fn delete_topic(&self, op: ops::DeleteTopic<'_>) -> ExoResult<()> {
        let ops::DeleteTopic { topic: name } = op;
        let name = name.clone();
        self.run_adding_nothing(move |txn, _| {
            let deleted =
                txn.execute("DELETE FROM topics WHERE name = ?1", [name.as_str()]).map_err(db_error)?;
            if deleted == 0 { Err(topic_not_found(name.as_str())) } else { Ok(()) }
        })
        .await
    }

    async fn list_topics(&self, op: ops::ListTopics<'_>) -> ExoResult<Vec<String>> {
        let ops::ListTopics { prefix, start_after, limit } = op;
        let (prefix, start_after) = (prefix.to_owned(), start_after.unwrap_or("").to_owned());
        self.run_adding_nothing(move |txn, _| list_names(txn, "topics", &prefix, &start_after, limit)).await
    }

    async fn topic_info(&self, op: ops::TopicInfo<'_>) -> ExoResult<pb::TopicInfo> {
        let ops::TopicInfo { topic: name } = op;
        let name = name.clone();
        self.run_adding_nothing(move |txn, _| topic_info(txn, name.as_str())).await
    }

    async fn create_subscription(
        &self,
        op: ops::CreateSubscription<'_>,
    ) -> ExoResult<(bool, pb::Subscription)> {
        let ops::CreateSubscription { topic, subscription } = op;
        Filter::parse(&subscription.filter)?;
        let (topic, requested) = (topic.clone(), subscription.clone());
        self.run(move |txn, catalog| {
            let queue = catalog
                .lookup(txn, &requested.queue)
                .map_err(|err| err.with_field("queue"))?;
            let (topic_id, _) = topic_row(txn, topic.as_str())?;
            let existing = subscriptions(txn, topic_id)?;
            if let Some((found, _)) = existing.iter().find(|(s, _)| s.name == requested.name) {
                if crate::model::same_subscription(found, &requested) {
                    return Ok((false, found.clone()));
                }
                return Err(subscription_conflict(topic.as_str(), found, &requested));
            }
            if existing.len() >= MAX_SUBSCRIPTIONS as usize {
                return Err(too_many_subscriptions(topic.as_str()));
            }
            let stored = pb::Subscription { created_at_ms: now_ms(), ..requested };
            txn.execute(
                "INSERT INTO subscriptions (topic_id, name, queue_id, filter, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![topic_id, stored.name, queue.id, stored.filter, stored.created_at_ms as i64],
            )
            .map_err(db_error)?;
            Ok((true, stored))
        })
        .await
    }

    async fn delete_subscription(&self, op: ops::DeleteSubscription<'_>) -> ExoResult<()> {
        let ops::DeleteSubscription { topic, subscription: name } = op;
        let (topic, name) = (topic.clone(), name.clone());
        self.run_adding_nothing(move |txn, _| {
            let (topic_id, _) = topic_row(txn, topic.as_str())?;
            let deleted = txn
                .execute(
                    "DELETE FROM subscriptions WHERE topic_id = ?1 AND name = ?2",
                    params![topic_id, name.as_str()],
                )
                .map_err(db_error)?;
            if deleted == 0 { Err(subscription_not_found(topic.as_str(), name.as_str())) } else { Ok(()) }
        })
        .await
    }

    async fn publish(&self, op: ops::Publish<'_>) -> ExoResult<Vec<ExoResult<Published>>> {
        let ops::Publish { topic, messages } = op;
        let owned = topic.clone();
        let (results, touched) = self
            .run(move |txn, catalog| {
                let (topic_id, _) = topic_row(txn, owned.as_str())?;
                let mut targets = Vec::new();
                for (subscription, _) in subscriptions(txn, topic_id)? {
                    let queue = catalog.lookup(txn, &subscription.queue)?;
                    let filter = Filter::parse(&subscription.filter).map_err(|err| {
                        ExoError::internal(format!("stored filter of subscription '{}' is corrupt: {err}", subscription.name))
                    })?;
                    targets.push((subscription.queue, queue, filter));
                }
                let now = now_ms() as i64;
                let mut statement = txn
                    .prepare_cached(
                        "INSERT INTO messages (queue_id, message_id, body, attributes, enqueued_at_ms, visible_at_ms, expires_at_ms, dequeue_count)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0)",
                    )
                    .map_err(db_error)?;
                let mut results = Vec::with_capacity(messages.len());
                let mut touched = Vec::new();
                for message in messages {
                    let publish_id = new_message_id();
                    let attributes = serde_json::to_string(&topic_copy(owned.as_str(), &publish_id, &message.attributes))
                        .map_err(|err| ExoError::internal(format!("cannot encode attributes: {err}")))?;
                    let mut deliveries = 0;
                    for (name, queue, filter) in &targets {
                        if !filter.matches(&message.attributes) {
                            continue;
                        }
                        let visible = now + i64::from(queue.options.delay_seconds) * 1000;
                        let expires = now + i64::from(queue.options.retention_seconds) * 1000;
                        statement
                            .execute(params![queue.id, new_message_id(), message.body, attributes, now, visible, expires])
                            .map_err(db_error)?;
                        deliveries += 1;
                        touched.push(name.clone());
                    }
                    results.push(Ok(Published { publish_id, deliveries }));
                }
                touched.sort_unstable();
                touched.dedup();
                Ok((results, touched))
            })
            .await?;
        for queue in touched {
            self.arrivals.announce(&queue);
        }
        Ok(results)
    }
}
