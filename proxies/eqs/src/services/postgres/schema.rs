//! The `postgres` queue backend's SQL: the schema (tables, indexes and the triggers that fill
//! in a native producer's row and wake long polls) and every statement, with the schema name
//! written in; and the conversions of rows into the contract's types.

use std::collections::HashMap;

use exo_proto::queue::v1 as pb;
use tokio_postgres::Row;

/// The statements, with the schema written in (identifiers cannot be parameters).
pub(super) struct Statements {
    pub(super) create_queue: String,
    pub(super) queue_options: String,
    pub(super) queue_info: String,
    pub(super) delete_queue: String,
    pub(super) list_queues: String,
    pub(super) send: String,
    pub(super) dead_letter: String,
    pub(super) receive: String,
    pub(super) ack: String,
    pub(super) lease: String,
    pub(super) change_visibility: String,
    pub(super) purge: String,
    pub(super) queue_exists: String,
    pub(super) sweep: String,
    pub(super) create_topic: String,
    pub(super) delete_topic: String,
    pub(super) list_topics: String,
    pub(super) subscriptions: String,
    pub(super) create_subscription: String,
    pub(super) delete_subscription: String,
    pub(super) publish: String,
}

impl Statements {
    pub(super) fn new(s: &str) -> Self {
        Self {
            create_queue: format!(
                "INSERT INTO {s}.eqs_queues (name, visibility_s, retention_s, delay_s, max_receives, dead_letter_queue, created_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING"
            ),
            queue_options: format!(
                "SELECT visibility_s, retention_s, delay_s, max_receives, dead_letter_queue, created_at_ms
                 FROM {s}.eqs_queues WHERE name = $1"
            ),
            queue_info: format!(
                "SELECT q.visibility_s, q.retention_s, q.delay_s, q.max_receives, q.dead_letter_queue, q.created_at_ms,
                        c.visible, c.delayed, c.in_flight
                 FROM {s}.eqs_queues q, LATERAL (
                     SELECT count(*) FILTER (WHERE visible_at_ms <= $2) AS visible,
                            count(*) FILTER (WHERE visible_at_ms > $2 AND dequeue_count = 0) AS delayed,
                            count(*) FILTER (WHERE visible_at_ms > $2 AND dequeue_count > 0) AS in_flight
                     FROM {s}.eqs_messages WHERE queue = q.name AND expires_at_ms > $2) c
                 WHERE q.name = $1"
            ),
            delete_queue: format!("DELETE FROM {s}.eqs_queues WHERE name = $1"),
            list_queues: format!(
                "SELECT name FROM {s}.eqs_queues WHERE name >= $1 AND name < $2 AND name > $3 ORDER BY name LIMIT $4"
            ),
            // All messages of one send in one statement: all are stored, or none. A delay of -1
            // takes the queue's.
            send: format!(
                "INSERT INTO {s}.eqs_messages
                     (queue, message_id, body, attributes, enqueued_at_ms, visible_at_ms, expires_at_ms, dequeue_count)
                 SELECT q.name, m.id, m.body, m.attributes::jsonb, $2::bigint,
                        $2::bigint + 1000 * (CASE WHEN m.delay_s < 0 THEN q.delay_s ELSE m.delay_s END)::bigint,
                        $2::bigint + 1000 * q.retention_s::bigint, 0
                 FROM {s}.eqs_queues q,
                      unnest($3::text[], $4::bytea[], $5::text[], $6::int[]) WITH ORDINALITY AS m(id, body, attributes, delay_s, n)
                 WHERE q.name = $1 ORDER BY m.n"
            ),
            // Visible messages received max-receives times move to the dead-letter queue, each
            // exactly once (the delete and the insert are one statement).
            dead_letter: format!(
                "WITH moved AS (
                     DELETE FROM {s}.eqs_messages WHERE seq IN (
                         SELECT seq FROM {s}.eqs_messages
                         WHERE queue = $1 AND visible_at_ms <= $2 AND expires_at_ms > $2 AND dequeue_count >= $3
                         ORDER BY seq FOR UPDATE SKIP LOCKED)
                     RETURNING message_id, body, attributes, enqueued_at_ms, seq)
                 INSERT INTO {s}.eqs_messages
                     (queue, message_id, body, attributes, enqueued_at_ms, visible_at_ms, expires_at_ms, dequeue_count)
                 SELECT $4, message_id, body, attributes, enqueued_at_ms, $2, enqueued_at_ms + $5, 0
                 FROM moved ORDER BY seq"
            ),
            receive: format!(
                "WITH picked AS (
                     SELECT seq FROM {s}.eqs_messages
                     WHERE queue = $1 AND visible_at_ms <= $2 AND expires_at_ms > $2 AND ($5 = 0 OR dequeue_count < $5)
                     ORDER BY visible_at_ms, seq LIMIT $3 FOR UPDATE SKIP LOCKED)
                 UPDATE {s}.eqs_messages m SET visible_at_ms = $4, dequeue_count = m.dequeue_count + 1
                 FROM picked WHERE m.seq = picked.seq
                 RETURNING m.seq, m.message_id, m.body, m.attributes::text, m.enqueued_at_ms, m.dequeue_count"
            ),
            ack: format!("DELETE FROM {s}.eqs_messages WHERE seq = $1 AND queue = $2 AND dequeue_count = $3"),
            // Whether the queue exists, and the message's dequeue count if it is still there.
            lease: format!(
                "SELECT q.name, m.dequeue_count FROM {s}.eqs_queues q
                 LEFT JOIN {s}.eqs_messages m ON m.queue = q.name AND m.seq = $1 WHERE q.name = $2"
            ),
            change_visibility: format!(
                "UPDATE {s}.eqs_messages SET visible_at_ms = $4 WHERE seq = $1 AND queue = $2 AND dequeue_count = $3"
            ),
            purge: format!("DELETE FROM {s}.eqs_messages WHERE queue = $1"),
            queue_exists: format!("SELECT 1 FROM {s}.eqs_queues WHERE name = $1"),
            sweep: format!("DELETE FROM {s}.eqs_messages WHERE expires_at_ms <= $1"),
            create_topic: format!(
                "INSERT INTO {s}.eqs_topics (name, created_at_ms) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING"
            ),
            delete_topic: format!("DELETE FROM {s}.eqs_topics WHERE name = $1"),
            list_topics: format!(
                "SELECT name FROM {s}.eqs_topics WHERE name >= $1 AND name < $2 AND name > $3 ORDER BY name LIMIT $4"
            ),
            // The topic (one row with NULL subscription columns when it has none) and its subscriptions.
            subscriptions: format!(
                "SELECT t.created_at_ms, s.name, s.queue, s.filter, s.created_at_ms
                 FROM {s}.eqs_topics t LEFT JOIN {s}.eqs_subscriptions s ON s.topic = t.name
                 WHERE t.name = $1 ORDER BY s.name"
            ),
            // Only while the topic has room; a name already taken inserts nothing.
            create_subscription: format!(
                "INSERT INTO {s}.eqs_subscriptions (topic, name, queue, filter, created_at_ms)
                 SELECT $1, $2, $3, $4, $5
                 WHERE (SELECT count(*) FROM {s}.eqs_subscriptions WHERE topic = $1) < $6
                 ON CONFLICT (topic, name) DO NOTHING"
            ),
            delete_subscription: format!("DELETE FROM {s}.eqs_subscriptions WHERE topic = $1 AND name = $2"),
            // Every copy of every message in one statement. A queue deleted since the
            // subscriptions were read took its subscription with it: its copies are skipped.
            publish: format!(
                "INSERT INTO {s}.eqs_messages
                     (queue, message_id, body, attributes, enqueued_at_ms, visible_at_ms, expires_at_ms, dequeue_count)
                 SELECT q.name, m.id, m.body, m.attributes::jsonb, $1::bigint,
                        $1::bigint + 1000 * q.delay_s::bigint, $1::bigint + 1000 * q.retention_s::bigint, 0
                 FROM unnest($2::text[], $3::text[], $4::bytea[], $5::text[]) WITH ORDINALITY AS m(queue, id, body, attributes, n)
                 JOIN {s}.eqs_queues q ON q.name = m.queue
                 ORDER BY m.n"
            ),
        }
    }
}

/// The schema, its tables and triggers, created if missing (an advisory lock keeps replicas
/// starting together from racing on `CREATE … IF NOT EXISTS`).
pub(super) fn schema_sql(s: &str) -> String {
    format!(
        "BEGIN;
         SELECT pg_advisory_xact_lock(hashtext('exoflow-schema-{s}'));
         CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE IF NOT EXISTS {s}.eqs_queues (
             name TEXT COLLATE \"C\" PRIMARY KEY,
             visibility_s INT NOT NULL,
             retention_s INT NOT NULL,
             delay_s INT NOT NULL,
             max_receives INT NOT NULL,
             dead_letter_queue TEXT NOT NULL,
             created_at_ms BIGINT NOT NULL
         );
         -- An identity is never reused, so an old receipt can never match a new message.
         CREATE TABLE IF NOT EXISTS {s}.eqs_messages (
             seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             queue TEXT COLLATE \"C\" NOT NULL REFERENCES {s}.eqs_queues (name) ON DELETE CASCADE,
             message_id TEXT NOT NULL DEFAULT gen_random_uuid()::text,
             body BYTEA NOT NULL,
             attributes JSONB NOT NULL DEFAULT '{{}}',
             enqueued_at_ms BIGINT NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
             visible_at_ms BIGINT,
             expires_at_ms BIGINT,
             dequeue_count INT NOT NULL DEFAULT 0
         );
         CREATE INDEX IF NOT EXISTS eqs_messages_by_visibility ON {s}.eqs_messages (queue, visible_at_ms, seq);
         CREATE INDEX IF NOT EXISTS eqs_messages_by_expiry ON {s}.eqs_messages (expires_at_ms);
         -- A native producer may insert just (queue, body): delay and retention come from the queue.
         CREATE OR REPLACE FUNCTION {s}.eqs_fill() RETURNS trigger LANGUAGE plpgsql AS $$
         DECLARE q RECORD;
         BEGIN
             IF NEW.visible_at_ms IS NULL OR NEW.expires_at_ms IS NULL THEN
                 SELECT delay_s, retention_s INTO q FROM {s}.eqs_queues WHERE name = NEW.queue;
                 NEW.visible_at_ms := COALESCE(NEW.visible_at_ms, NEW.enqueued_at_ms + 1000 * COALESCE(q.delay_s, 0));
                 NEW.expires_at_ms := COALESCE(NEW.expires_at_ms, NEW.enqueued_at_ms + 1000 * COALESCE(q.retention_s, 345600)::bigint);
             END IF;
             RETURN NEW;
         END $$;
         CREATE OR REPLACE TRIGGER eqs_fill BEFORE INSERT ON {s}.eqs_messages
             FOR EACH ROW EXECUTE FUNCTION {s}.eqs_fill();
         -- Wakes long polls (in every proxy) when messages arrive, whoever inserted them.
         CREATE OR REPLACE FUNCTION {s}.eqs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             PERFORM pg_notify('{s}_eqs', queue) FROM (SELECT DISTINCT queue FROM arrived) a;
             RETURN NULL;
         END $$;
         CREATE OR REPLACE TRIGGER eqs_notify AFTER INSERT ON {s}.eqs_messages
             REFERENCING NEW TABLE AS arrived FOR EACH STATEMENT EXECUTE FUNCTION {s}.eqs_notify();
         CREATE TABLE IF NOT EXISTS {s}.eqs_topics (
             name TEXT COLLATE \"C\" PRIMARY KEY,
             created_at_ms BIGINT NOT NULL
         );
         -- A subscription goes with its topic and with its queue.
         CREATE TABLE IF NOT EXISTS {s}.eqs_subscriptions (
             topic TEXT COLLATE \"C\" NOT NULL REFERENCES {s}.eqs_topics (name) ON DELETE CASCADE,
             name TEXT COLLATE \"C\" NOT NULL,
             queue TEXT COLLATE \"C\" NOT NULL REFERENCES {s}.eqs_queues (name) ON DELETE CASCADE,
             filter TEXT NOT NULL,
             created_at_ms BIGINT NOT NULL,
             PRIMARY KEY (topic, name)
         );
         CREATE INDEX IF NOT EXISTS eqs_subscriptions_by_queue ON {s}.eqs_subscriptions (queue);
         COMMIT;"
    )
}

pub(super) fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(super) fn options_from(row: &Row) -> pb::QueueOptions {
    pb::QueueOptions {
        visibility_timeout_seconds: Some(row.get::<_, i32>(0).max(0) as u32),
        retention_seconds: row.get::<_, i32>(1).max(0) as u32,
        delay_seconds: row.get::<_, i32>(2).max(0) as u32,
        max_receives: row.get::<_, i32>(3).max(0) as u32,
        dead_letter_queue: row.get(4),
    }
}

/// Attributes as stored (a JSON object of strings). A foreign producer's other JSON values are
/// delivered as their JSON text, and attributes that are not an object at all arrive whole under
/// `exo.attributes`: a malformed row is delivered marked, never fails the receive that picked it
/// (which would hide every message of that receive and fail every later one).
pub(super) fn decode_attributes(text: &str) -> HashMap<String, String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect(),
        _ => HashMap::from([("exo.attributes".to_owned(), text.to_owned())]),
    }
}
