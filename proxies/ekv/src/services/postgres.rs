//! `postgres`: key-value tables in PostgreSQL, two tables in one schema of the configured
//! database (`<schema>.kv_tables`, `<schema>.kv_entries`), so several apps or environments share
//! one database by schema.
//!
//! Every call is one atomic statement (no transaction held across round trips): conditions and
//! counter arithmetic are part of the statement that writes (`ON CONFLICT … DO UPDATE … WHERE`,
//! `UPDATE … WHERE version = $v`), never read-then-write, so concurrent writers through any
//! number of proxies are safe. A counter is its decimal text in `value` (`convert_from(value,
//! 'UTF8')::bigint` reads it). A
//! write is acknowledged once PostgreSQL has committed it. Keys are `bytea`, so their order is the
//! byte order the contract and the other backends use. Expired entries are never returned and are
//! swept once a minute.
//!
//! What native clients see (`psql`):
//!
//! ```sql
//! SELECT convert_from(key, 'UTF8') AS key, value, version, expires_at_ms
//!   FROM exoflow.kv_entries WHERE table_name = 'carts' ORDER BY key;
//! ```
//!
//! A row written by hand is served as long as it follows the layout: `version` any non-empty
//! text, `expires_at_ms` 0 for never.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use exo_postgres::{Connections, PostgresSettings, map_error};
use exo_proto::kv::v1 as pb;
use exo_proxy_core::{ExoError, ExoResult, now_ms, readiness};
use tokio_postgres::{Row, error::SqlState};

use crate::ops;
use crate::{
    backend::KeyValue,
    model::{
        Capability, Change, Condition, Descriptor, counter, expired, key_not_found, new_version,
        portable_limits, table_not_found,
    },
};

/// How often expired entries are deleted (they are never returned in between).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl exo_proxy_core::registry::Backend for PostgresKv {
    type Opened = Arc<dyn KeyValue>;
    type Context = crate::services::OpenContext;
    type Config = PostgresSettings;

    fn settings(_data: Option<std::path::PathBuf>) -> PostgresSettings {
        PostgresSettings::default()
    }

    fn validate(config: &PostgresSettings) -> Result<(), exo_proxy_core::config::ConfigError> {
        config.validate()
    }

    fn open<'a>(
        config: &'a PostgresSettings,
        _context: &'a Self::Context,
    ) -> exo_proxy_core::registry::BoxFuture<'a, ExoResult<Self::Opened>> {
        Box::pin(async move {
            let kv: Self::Opened = Arc::new(PostgresKv::connect(config).await?);
            Ok(kv)
        })
    }
}

/// Key-value tables in one PostgreSQL schema.
pub struct PostgresKv {
    descriptor: Descriptor,
    db: Arc<Connections>,
    sql: Statements,
}

impl std::fmt::Debug for PostgresKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresKv").finish_non_exhaustive()
    }
}

/// The statements, with the schema written in (identifiers cannot be parameters).
struct Statements {
    create_table: String,
    delete_table: String,
    list_tables: String,
    table_exists: String,
    lock_table: String,
    get: String,
    put: String,
    put_if_absent: String,
    put_if_version: String,
    delete: String,
    delete_if_version: String,
    list_after: String,
    list_from: String,
    list_keys_after: String,
    list_keys_from: String,
    batch_get: String,
    increment: String,
    sweep: String,
}

impl Statements {
    fn new(s: &str) -> Self {
        let live = "(expires_at_ms = 0 OR expires_at_ms > $N)";
        let list = |cmp: &str, keys_only: bool| {
            format!(
                "SELECT key, {}, version, expires_at_ms FROM {s}.kv_entries
                 WHERE table_name = $1 AND key {cmp} $2 AND ($3::bytea IS NULL OR key < $3)
                   AND {} ORDER BY key LIMIT $5",
                if keys_only { "''::bytea" } else { "value" },
                live.replace("$N", "$4")
            )
        };
        Self {
            create_table: format!(
                "INSERT INTO {s}.kv_tables (name, created_at_ms) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING"
            ),
            delete_table: format!("DELETE FROM {s}.kv_tables WHERE name = $1"),
            list_tables: format!("SELECT name FROM {s}.kv_tables ORDER BY name"),
            table_exists: format!("SELECT 1 FROM {s}.kv_tables WHERE name = $1"),
            // Keeps the table from being deleted while a batch writes to it.
            lock_table: format!("SELECT 1 FROM {s}.kv_tables WHERE name = $1 FOR SHARE"),
            // One row if the table exists; the entry's columns are NULL if the key is absent.
            get: format!(
                "SELECT e.value, e.version, e.expires_at_ms FROM {s}.kv_tables t
                 LEFT JOIN {s}.kv_entries e ON e.table_name = t.name AND e.key = $2 WHERE t.name = $1"
            ),
            put: format!(
                "INSERT INTO {s}.kv_entries (table_name, key, value, version, expires_at_ms) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (table_name, key) DO UPDATE
                 SET value = EXCLUDED.value, version = EXCLUDED.version, expires_at_ms = EXCLUDED.expires_at_ms"
            ),
            // Replaces only an expired row: a live one makes the statement write nothing.
            put_if_absent: format!(
                "INSERT INTO {s}.kv_entries AS e (table_name, key, value, version, expires_at_ms) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (table_name, key) DO UPDATE
                 SET value = EXCLUDED.value, version = EXCLUDED.version, expires_at_ms = EXCLUDED.expires_at_ms
                 WHERE e.expires_at_ms <> 0 AND e.expires_at_ms <= $6"
            ),
            put_if_version: format!(
                "UPDATE {s}.kv_entries SET value = $3, version = $4, expires_at_ms = $5
                 WHERE table_name = $1 AND key = $2 AND version = $6 AND {}",
                live.replace("$N", "$7")
            ),
            delete: format!("DELETE FROM {s}.kv_entries WHERE table_name = $1 AND key = $2 RETURNING expires_at_ms"),
            delete_if_version: format!(
                "DELETE FROM {s}.kv_entries WHERE table_name = $1 AND key = $2 AND version = $3 AND {}",
                live.replace("$N", "$4")
            ),
            list_after: list(">", false),
            list_from: list(">=", false),
            list_keys_after: list(">", true),
            list_keys_from: list(">=", true),
            batch_get: format!(
                "SELECT key, value, version, expires_at_ms FROM {s}.kv_entries
                 WHERE table_name = $1 AND key = ANY($2) AND {}",
                live.replace("$N", "$3")
            ),
            // One statement, atomic under the row's lock: an absent key is inserted at the delta;
            // an expired one starts again at the delta with the new expiry; a live counter gets
            // the delta added and keeps its expiry; a live value that is not a counter (the
            // shortest decimal text of an i64, checked on `encode(…, 'escape')`, where every
            // byte that is not printable ASCII turns into a backslash escape) is left alone and
            // the statement returns no row. Past the i64 range PostgreSQL raises 22003.
            increment: format!(
                "INSERT INTO {s}.kv_entries AS e (table_name, key, value, version, expires_at_ms)
                 VALUES ($1, $2, convert_to($3::bigint::text, 'UTF8'), $4, $5)
                 ON CONFLICT (table_name, key) DO UPDATE SET
                   value = convert_to((CASE WHEN {expired} THEN 0 ELSE encode(e.value, 'escape')::bigint END
                                       + $3::bigint)::text, 'UTF8'),
                   version = EXCLUDED.version,
                   expires_at_ms = CASE WHEN {expired} THEN EXCLUDED.expires_at_ms ELSE e.expires_at_ms END
                 WHERE {expired} OR encode(e.value, 'escape') ~ '^(0|-?[1-9][0-9]{{0,18}})$'
                 RETURNING value",
                expired = "(e.expires_at_ms <> 0 AND e.expires_at_ms <= $6)"
            ),
            sweep: format!("DELETE FROM {s}.kv_entries WHERE expires_at_ms > 0 AND expires_at_ms <= $1"),
        }
    }
}

/// The schema, created if missing. An advisory lock keeps replicas starting together from
/// racing on `CREATE … IF NOT EXISTS` (which is not safe against a concurrent create).
fn schema_sql(s: &str) -> String {
    format!(
        "BEGIN;
         SELECT pg_advisory_xact_lock(hashtext('exoflow-schema-{s}'));
         CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE IF NOT EXISTS {s}.kv_tables (
             name TEXT COLLATE \"C\" PRIMARY KEY,
             created_at_ms BIGINT NOT NULL
         );
         CREATE TABLE IF NOT EXISTS {s}.kv_entries (
             table_name TEXT COLLATE \"C\" NOT NULL REFERENCES {s}.kv_tables (name) ON DELETE CASCADE,
             key BYTEA NOT NULL,
             value BYTEA NOT NULL,
             version TEXT NOT NULL,
             expires_at_ms BIGINT NOT NULL,
             PRIMARY KEY (table_name, key)
         );
         CREATE INDEX IF NOT EXISTS kv_entries_by_expiry ON {s}.kv_entries (expires_at_ms) WHERE expires_at_ms > 0;
         COMMIT;"
    )
}

fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn entry(key: Vec<u8>, value: Vec<u8>, version: String, expires_at_ms: i64) -> pb::Entry {
    pb::Entry {
        // Keys are written from `&str`; a foreign row's non-UTF-8 key is shown, not dropped.
        key: String::from_utf8_lossy(&key).into_owned(),
        value,
        version,
        expires_at_ms: expires_at_ms.max(0) as u64,
    }
}

impl PostgresKv {
    /// Connects, creates the schema and its tables if missing, and starts the expiry sweeper.
    pub async fn connect(settings: &PostgresSettings) -> ExoResult<Self> {
        let db = Arc::new(Connections::open(settings).await?);
        db.create_schema(&schema_sql(&settings.schema)).await?;
        let kv = Self {
            descriptor: Descriptor {
                backend: "postgres",
                capabilities: [
                    Capability::CompareAndSet,
                    Capability::Ttl,
                    Capability::List,
                    Capability::Increment,
                    Capability::AtomicBatch,
                ]
                .into(),
                limits: portable_limits(),
            },
            sql: Statements::new(&settings.schema),
            db: db.clone(),
        };
        db.sweep_every(SWEEP_EVERY, kv.sql.sweep.clone());
        Ok(kv)
    }

    async fn client(&self) -> ExoResult<Arc<tokio_postgres::Client>> {
        self.db.client().await
    }

    /// TABLE_NOT_FOUND unless `table` exists.
    async fn require_table(&self, client: &tokio_postgres::Client, table: &str) -> ExoResult<()> {
        let found =
            client.query_opt(&self.sql.table_exists, &[&table]).await.map_err(|e| map_error("lookup", &e))?;
        found.map(|_| ()).ok_or_else(|| table_not_found(table))
    }

    /// The live version under `key` (None if absent or expired), after checking the table.
    async fn current_version(&self, table: &str, key: &str) -> ExoResult<Option<String>> {
        let client = self.client().await?;
        let row = client
            .query_opt(&self.sql.get, &[&table, &key.as_bytes()])
            .await
            .map_err(|e| map_error("get", &e))?
            .ok_or_else(|| table_not_found(table))?;
        let version: Option<String> = row.get(1);
        let expires: Option<i64> = row.get(2);
        Ok(version.filter(|_| !expired(expires.unwrap_or(0).max(0) as u64, now_ms())))
    }

    /// Why an increment wrote nothing, from the value there now: not a counter, or an overflow.
    async fn not_incremented(&self, table: &str, key: &str, delta: i64) -> ExoError {
        let client = match self.client().await {
            Ok(client) => client,
            Err(err) => return err,
        };
        let value: Option<Vec<u8>> = match client.query_opt(&self.sql.get, &[&table, &key.as_bytes()]).await {
            Ok(row) => row.and_then(|row| row.get(0)),
            Err(err) => return map_error("get", &err),
        };
        match counter::incremented(value.as_deref(), delta, table, key) {
            Err(err) => err,
            // Changed in between; which of the two it was is gone with it.
            Ok(_) => ExoError::new(
                exo_proto::common::v1::ErrorReason::NotACounter,
                format!("key {key:?} held no counter (or {delta} took it past the 64-bit range); nothing was written"),
            )
            .with_resource(format!("{table}/{key}")),
        }
    }

    /// The error for a conditional write that wrote nothing: the table is gone, or the
    /// condition does not hold (as read now).
    async fn refused(&self, table: &str, key: &str, condition: &Condition) -> ExoError {
        match self.current_version(table, key).await {
            Err(err) => err,
            Ok(current) => match condition.check(current.as_deref(), table, key) {
                Err(err) => err,
                // It holds now: another writer changed the key between the two statements.
                Ok(()) => match condition.check(Some(""), table, key) {
                    Err(err) => err,
                    Ok(()) => ExoError::internal("a conditional write wrote nothing"),
                },
            },
        }
    }
}

/// A write's failure: a missing table shows as the foreign key to `kv_tables` failing.
fn write_error(table: &str, err: &tokio_postgres::Error) -> ExoError {
    if err.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) {
        table_not_found(table)
    } else {
        map_error("put", err)
    }
}

fn listed(row: &Row) -> pb::Entry {
    entry(row.get(0), row.get(1), row.get(2), row.get(3))
}

#[async_trait]
impl KeyValue for PostgresKv {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    async fn ready(&self) -> ExoResult<()> {
        readiness(self.db.probe(&self.sql.table_exists).await)
    }

    async fn create_table(&self, op: ops::CreateTable<'_>) -> ExoResult<bool> {
        let ops::CreateTable { table } = op;
        let client = self.client().await?;
        let inserted = client
            .execute(&self.sql.create_table, &[&table.as_str(), &ms(now_ms())])
            .await
            .map_err(|e| map_error("create table", &e))?;
        Ok(inserted == 1)
    }

    async fn delete_table(&self, op: ops::DeleteTable<'_>) -> ExoResult<()> {
        let ops::DeleteTable { table } = op;
        let client = self.client().await?;
        let deleted = client
            .execute(&self.sql.delete_table, &[&table.as_str()])
            .await
            .map_err(|e| map_error("delete table", &e))?;
        if deleted == 0 { Err(table_not_found(table.as_str())) } else { Ok(()) }
    }

    async fn list_tables(&self, _op: ops::ListTables) -> ExoResult<Vec<String>> {
        let client = self.client().await?;
        let rows =
            client.query(&self.sql.list_tables, &[]).await.map_err(|e| map_error("list tables", &e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn get(&self, op: ops::Get<'_>) -> ExoResult<pb::Entry> {
        let ops::Get { table, key } = op;
        let client = self.client().await?;
        let row = client
            .query_opt(&self.sql.get, &[&table.as_str(), &key.as_bytes()])
            .await
            .map_err(|e| map_error("get", &e))?
            .ok_or_else(|| table_not_found(table.as_str()))?;
        let (value, version, expires): (Option<Vec<u8>>, Option<String>, Option<i64>) =
            (row.get(0), row.get(1), row.get(2));
        match (value, version, expires) {
            (Some(value), Some(version), Some(expires)) if !expired(expires.max(0) as u64, now_ms()) => {
                Ok(entry(key.as_bytes().to_vec(), value, version, expires))
            }
            _ => Err(key_not_found(table.as_str(), key)),
        }
    }

    async fn put(&self, op: ops::Put<'_>) -> ExoResult<String> {
        let ops::Put { table, key, value, condition, expires_at_ms } = op;
        let client = self.client().await?;
        let version = new_version();
        let (t, k, expires, now) = (table.as_str(), key.as_bytes(), ms(expires_at_ms), ms(now_ms()));
        let written = match condition {
            Condition::None => client.execute(&self.sql.put, &[&t, &k, &value, &version, &expires]).await,
            Condition::MustNotExist => {
                client.execute(&self.sql.put_if_absent, &[&t, &k, &value, &version, &expires, &now]).await
            }
            Condition::VersionEquals(want) => {
                client
                    .execute(&self.sql.put_if_version, &[&t, &k, &value, &version, &expires, want, &now])
                    .await
            }
        }
        .map_err(|e| write_error(t, &e))?;
        if written == 1 { Ok(version) } else { Err(self.refused(t, key, condition).await) }
    }

    async fn increment(&self, op: ops::Increment<'_>) -> ExoResult<pb::IncrementResponse> {
        let ops::Increment { table, key, delta, expires_at_ms } = op;
        let client = self.client().await?;
        let version = new_version();
        let (t, k, expires, now) = (table.as_str(), key.as_bytes(), ms(expires_at_ms), ms(now_ms()));
        let row =
            match client.query_opt(&self.sql.increment, &[&t, &k, &delta, &version, &expires, &now]).await {
                Ok(row) => row,
                Err(err) if err.code() == Some(&SqlState::NUMERIC_VALUE_OUT_OF_RANGE) => {
                    return Err(self.not_incremented(t, key, delta).await);
                }
                Err(err) => return Err(write_error(t, &err)),
            };
        match row {
            Some(row) => {
                let value = counter::parse(&row.get::<_, Vec<u8>>(0), t, key)?;
                Ok(pb::IncrementResponse { value, version })
            }
            None => Err(self.not_incremented(t, key, delta).await),
        }
    }

    async fn write_batch(&self, op: ops::WriteBatch<'_>) -> ExoResult<Vec<String>> {
        let ops::WriteBatch { table, writes } = op;
        let t = table.as_str();
        let mut connection = self.db.exclusive().await?;
        let txn = connection.transaction().await.map_err(|e| map_error("begin", &e))?;
        txn.query_opt(&self.sql.lock_table, &[&t])
            .await
            .map_err(|e| map_error("write batch", &e))?
            .ok_or_else(|| table_not_found(t))?;
        // Each write is the single-key statement that checks its own condition as it writes
        // (holding the row until the commit); one that writes nothing rolls the whole batch back.
        let now = ms(now_ms());
        let mut versions = Vec::with_capacity(writes.len());
        for (i, write) in writes.iter().enumerate() {
            let k = write.key.as_bytes();
            let written = match (&write.change, &write.condition) {
                (Change::Put { value, expires_at_ms }, condition) => {
                    let (version, expires) = (new_version(), ms(*expires_at_ms));
                    let written = match condition {
                        Condition::None => {
                            txn.execute(&self.sql.put, &[&t, &k, value, &version, &expires]).await
                        }
                        Condition::MustNotExist => {
                            txn.execute(&self.sql.put_if_absent, &[&t, &k, value, &version, &expires, &now])
                                .await
                        }
                        Condition::VersionEquals(want) => {
                            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] =
                                [&t, &k, value, &version, &expires, want, &now];
                            txn.execute(&self.sql.put_if_version, &params).await
                        }
                    };
                    versions.push(version);
                    written
                }
                (Change::Delete, Condition::VersionEquals(want)) => {
                    versions.push(String::new());
                    txn.execute(&self.sql.delete_if_version, &[&t, &k, want, &now]).await
                }
                (Change::Delete, _) => {
                    versions.push(String::new());
                    txn.execute(&self.sql.delete, &[&t, &k]).await.map(|_| 1)
                }
            }
            .map_err(|e| write_error(t, &e))?;
            if written != 1 {
                drop(txn);
                return Err(self
                    .refused(t, &write.key, &write.condition)
                    .await
                    .with_field(format!("writes[{i}]")));
            }
        }
        txn.commit().await.map_err(|e| map_error("commit", &e))?;
        Ok(versions)
    }

    async fn delete(&self, op: ops::Delete<'_>) -> ExoResult<bool> {
        let ops::Delete { table, key, condition } = op;
        let client = self.client().await?;
        let (t, k, now) = (table.as_str(), key.as_bytes(), ms(now_ms()));
        match condition {
            Condition::None => {
                let row = client
                    .query_opt(&self.sql.delete, &[&t, &k])
                    .await
                    .map_err(|e| map_error("delete", &e))?;
                match row {
                    Some(row) => Ok(!expired(row.get::<_, i64>(0).max(0) as u64, now_ms())),
                    None => self.require_table(&client, t).await.map(|()| false),
                }
            }
            Condition::VersionEquals(want) => {
                let deleted = client
                    .execute(&self.sql.delete_if_version, &[&t, &k, want, &now])
                    .await
                    .map_err(|e| map_error("delete", &e))?;
                if deleted == 1 { Ok(true) } else { Err(self.refused(t, key, condition).await) }
            }
            Condition::MustNotExist => {
                // Nothing to delete when it holds; when a live key is there, it fails.
                let current = self.current_version(t, key).await?;
                condition.check(current.as_deref(), t, key).map(|()| false)
            }
        }
    }

    async fn list(&self, op: ops::List<'_>) -> ExoResult<Vec<pb::Entry>> {
        let ops::List { table, prefix, start_after, limit, keys_only } = op;
        let client = self.client().await?;
        let prefix = prefix.as_bytes().to_vec();
        // Resume strictly after the last key of the previous page, or start at the prefix.
        let (lower, after) = match start_after.map(|s| s.as_bytes().to_vec()) {
            Some(after) if after >= prefix => (after, true),
            _ => (prefix.clone(), false),
        };
        let upper: Option<Vec<u8>> = exo_sqlite::prefix_successor(&prefix);
        let sql = match (after, keys_only) {
            (true, false) => &self.sql.list_after,
            (false, false) => &self.sql.list_from,
            (true, true) => &self.sql.list_keys_after,
            (false, true) => &self.sql.list_keys_from,
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // The table check and the listing pipeline on the one connection.
        let (exists, rows) = futures::future::join(
            self.require_table(&client, table.as_str()),
            client.query(sql, &[&table.as_str(), &lower, &upper, &ms(now_ms()), &limit]),
        )
        .await;
        exists?;
        Ok(rows.map_err(|e| map_error("list", &e))?.iter().map(listed).collect())
    }

    async fn batch_get(&self, op: ops::BatchGet<'_>) -> ExoResult<Vec<pb::Entry>> {
        let ops::BatchGet { table, keys } = op;
        let client = self.client().await?;
        let wanted: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let (exists, rows) = futures::future::join(
            self.require_table(&client, table.as_str()),
            client.query(&self.sql.batch_get, &[&table.as_str(), &wanted, &ms(now_ms())]),
        )
        .await;
        exists?;
        let found: HashMap<Vec<u8>, pb::Entry> = rows
            .map_err(|e| map_error("batch get", &e))?
            .iter()
            .map(|row| (row.get::<_, Vec<u8>>(0), listed(row)))
            .collect();
        // The live entries found, in the order asked.
        Ok(keys.iter().filter_map(|k| found.get(k.as_bytes()).cloned()).collect())
    }
}
