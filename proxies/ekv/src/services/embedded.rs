//! `embedded`: a durable key-value store in one SQLite file, through [`SqliteStore`] (group
//! commit; a write is acknowledged only once durable). Keys are stored as bytes so their order
//! is the same byte order the other backends and the contract use. Values are blobs; one a
//! native client wrote as TEXT (`UPDATE kv_entries SET value = '41'`) is read as its UTF-8
//! bytes (`CAST(value AS BLOB)`), so a counter written by hand counts on.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use async_trait::async_trait;
use exo_proto::kv::v1 as pb;
use exo_proxy_core::{ExoResult, now_ms};
use exo_sqlite::{
    SqliteStore, db_error, prefix_successor,
    rusqlite::{OptionalExtension, Transaction, params},
};

use crate::ops;
use crate::{
    backend::KeyValue,
    model::{
        Capability, Change, Descriptor, counter, expired, key_not_found, new_version, portable_limits,
        table_not_found,
    },
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv_tables (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS kv_entries (
    table_id INTEGER NOT NULL REFERENCES kv_tables(id) ON DELETE CASCADE,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    version TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (table_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_entries_by_expiry ON kv_entries(expires_at_ms) WHERE expires_at_ms > 0;
PRAGMA user_version = 1;
";

/// How often expired entries are swept from disk (they are never returned in between).
const SWEEP_EVERY_MS: u64 = 60_000;

/// Table ids by name, and when expired entries were last swept; lives on the writer thread.
#[derive(Default)]
struct Catalog {
    tables: HashMap<String, i64>,
    last_sweep_ms: u64,
}

impl Catalog {
    fn table_id(&mut self, txn: &Transaction<'_>, table: &str) -> ExoResult<i64> {
        if let Some(id) = self.tables.get(table) {
            return Ok(*id);
        }
        let id: i64 = txn
            .query_row("SELECT id FROM kv_tables WHERE name = ?1", [table], |r| r.get(0))
            .optional()
            .map_err(db_error)?
            .ok_or_else(|| table_not_found(table))?;
        self.tables.insert(table.to_owned(), id);
        Ok(id)
    }

    /// Deletes expired entries at most once a minute, piggybacking on a write transaction.
    fn maybe_sweep(&mut self, txn: &Transaction<'_>, now: u64) -> ExoResult<()> {
        if now.saturating_sub(self.last_sweep_ms) < SWEEP_EVERY_MS {
            return Ok(());
        }
        self.last_sweep_ms = now;
        txn.execute("DELETE FROM kv_entries WHERE expires_at_ms > 0 AND expires_at_ms <= ?1", [now as i64])
            .map_err(db_error)?;
        Ok(())
    }
}

/// The settings of an `embedded` backend.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EmbeddedConfig {
    /// The database file; created with its directory if missing.
    #[serde(default = "default_db_path")]
    pub path: PathBuf,
}

fn default_db_path() -> PathBuf {
    PathBuf::from(".exo/ekv.db")
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self { path: default_db_path() }
    }
}

impl exo_proxy_core::registry::Backend for EmbeddedKv {
    type Opened = std::sync::Arc<dyn KeyValue>;
    type Context = crate::services::OpenContext;
    type Config = EmbeddedConfig;

    fn settings(data: Option<PathBuf>) -> EmbeddedConfig {
        EmbeddedConfig { path: data.unwrap_or_else(default_db_path) }
    }

    fn set_data_path(config: &mut EmbeddedConfig, data: PathBuf) {
        config.path = data;
    }

    fn open<'a>(
        config: &'a EmbeddedConfig,
        _context: &'a Self::Context,
    ) -> exo_proxy_core::registry::BoxFuture<'a, ExoResult<Self::Opened>> {
        Box::pin(async move {
            let kv: Self::Opened = std::sync::Arc::new(EmbeddedKv::open(&config.path)?);
            Ok(kv)
        })
    }
}

/// The SQLite-backed durable key-value store.
pub struct EmbeddedKv {
    descriptor: Descriptor,
    store: SqliteStore<Catalog>,
}

impl std::fmt::Debug for EmbeddedKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedKv").finish_non_exhaustive()
    }
}

impl EmbeddedKv {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> ExoResult<Self> {
        use Capability::*;
        Ok(Self {
            descriptor: Descriptor {
                backend: "embedded",
                capabilities: [CompareAndSet, Ttl, List, Increment, AtomicBatch].into(),
                limits: portable_limits(),
            },
            store: SqliteStore::open(path, SCHEMA, "ekv-embedded-writer")?,
        })
    }
}

fn entry_from_row(key: Vec<u8>, value: Vec<u8>, version: String, expires_at_ms: i64) -> pb::Entry {
    // Keys were written from `&str`, so they are UTF-8.
    pb::Entry {
        key: String::from_utf8_lossy(&key).into_owned(),
        value,
        version,
        expires_at_ms: expires_at_ms as u64,
    }
}

/// The live version under `key` (None if absent or expired).
fn current_version(txn: &Transaction<'_>, table_id: i64, key: &str, now: u64) -> ExoResult<Option<String>> {
    let row: Option<(String, i64)> = txn
        .query_row(
            "SELECT version, expires_at_ms FROM kv_entries WHERE table_id = ?1 AND key = ?2",
            params![table_id, key.as_bytes()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(db_error)?;
    Ok(row.filter(|(_, expires)| !expired(*expires as u64, now)).map(|(version, _)| version))
}

#[async_trait]
impl KeyValue for EmbeddedKv {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    async fn ready(&self) -> ExoResult<()> {
        self.store
            .run_adding_nothing(|txn, _| txn.query_row("SELECT 1", [], |_| Ok(())).map_err(db_error))
            .await
    }

    async fn create_table(&self, op: ops::CreateTable<'_>) -> ExoResult<bool> {
        let ops::CreateTable { table } = op;
        let table = table.to_string();
        self.store
            .run(move |txn, _| {
                let inserted = txn
                    .execute(
                        "INSERT INTO kv_tables (name, created_at_ms) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
                        params![table, now_ms() as i64],
                    )
                    .map_err(db_error)?;
                Ok(inserted == 1)
            })
            .await
    }

    async fn delete_table(&self, op: ops::DeleteTable<'_>) -> ExoResult<()> {
        let ops::DeleteTable { table } = op;
        let table = table.to_string();
        self.store
            .run_adding_nothing(move |txn, catalog| {
                catalog.tables.remove(&table);
                let deleted =
                    txn.execute("DELETE FROM kv_tables WHERE name = ?1", [&table]).map_err(db_error)?;
                if deleted == 0 { Err(table_not_found(&table)) } else { Ok(()) }
            })
            .await
    }

    async fn list_tables(&self, _op: ops::ListTables) -> ExoResult<Vec<String>> {
        self.store
            .run_adding_nothing(|txn, _| {
                let mut stmt =
                    txn.prepare_cached("SELECT name FROM kv_tables ORDER BY name").map_err(db_error)?;
                let names = stmt.query_map([], |r| r.get(0)).map_err(db_error)?;
                names.collect::<Result<Vec<String>, _>>().map_err(db_error)
            })
            .await
    }

    async fn get(&self, op: ops::Get<'_>) -> ExoResult<pb::Entry> {
        let ops::Get { table, key } = op;
        let (table, key) = (table.to_string(), key.to_owned());
        self.store
            .run_adding_nothing(move |txn, catalog| {
                let id = catalog.table_id(txn, &table)?;
                let row = txn
                    .query_row(
                        "SELECT CAST(value AS BLOB), version, expires_at_ms FROM kv_entries WHERE table_id = ?1 AND key = ?2",
                        params![id, key.as_bytes()],
                        |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)),
                    )
                    .optional()
                    .map_err(db_error)?;
                match row {
                    Some((value, version, expires)) if !expired(expires as u64, now_ms()) => {
                        Ok(entry_from_row(key.clone().into_bytes(), value, version, expires))
                    }
                    _ => Err(key_not_found(&table, &key)),
                }
            })
            .await
    }

    async fn put(&self, op: ops::Put<'_>) -> ExoResult<String> {
        let ops::Put { table, key, value, condition, expires_at_ms } = op;
        let (table, key, condition) = (table.to_string(), key.to_owned(), condition.clone());
        self.store
            .run(move |txn, catalog| {
                let now = now_ms();
                let id = catalog.table_id(txn, &table)?;
                // Condition and write in one transaction on the single writer: no other write
                // can slip between them.
                let current = current_version(txn, id, &key, now)?;
                condition.check(current.as_deref(), &table, &key)?;
                let version = new_version();
                txn.execute(
                    "INSERT INTO kv_entries (table_id, key, value, version, expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(table_id, key) DO UPDATE SET value = excluded.value, version = excluded.version,
                         expires_at_ms = excluded.expires_at_ms",
                    params![id, key.as_bytes(), value, version, expires_at_ms as i64],
                )
                .map_err(db_error)?;
                catalog.maybe_sweep(txn, now)?;
                Ok(version)
            })
            .await
    }

    async fn increment(&self, op: ops::Increment<'_>) -> ExoResult<pb::IncrementResponse> {
        let ops::Increment { table, key, delta, expires_at_ms } = op;
        let (table, key) = (table.to_string(), key.to_owned());
        self.store
            .run(move |txn, catalog| {
                let now = now_ms();
                let id = catalog.table_id(txn, &table)?;
                // Read and write in one transaction on the single writer: atomic.
                let current: Option<(Vec<u8>, i64)> = txn
                    .query_row(
                        "SELECT CAST(value AS BLOB), expires_at_ms FROM kv_entries
                         WHERE table_id = ?1 AND key = ?2 AND (expires_at_ms = 0 OR expires_at_ms > ?3)",
                        params![id, key.as_bytes(), now as i64],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )
                    .optional()
                    .map_err(db_error)?;
                let value = counter::incremented(current.as_ref().map(|(v, _)| v.as_slice()), delta, &table, &key)?;
                let expires_at_ms = current.map_or(expires_at_ms as i64, |(_, expiry)| expiry);
                let version = new_version();
                txn.execute(
                    "INSERT INTO kv_entries (table_id, key, value, version, expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(table_id, key) DO UPDATE SET value = excluded.value, version = excluded.version,
                         expires_at_ms = excluded.expires_at_ms",
                    params![id, key.as_bytes(), counter::text(value), version, expires_at_ms],
                )
                .map_err(db_error)?;
                catalog.maybe_sweep(txn, now)?;
                Ok(pb::IncrementResponse { value, version })
            })
            .await
    }

    async fn write_batch(&self, op: ops::WriteBatch<'_>) -> ExoResult<Vec<String>> {
        let ops::WriteBatch { table, writes } = op;
        let (table, writes) = (table.to_string(), writes.to_vec());
        self.store
            .run(move |txn, catalog| {
                let now = now_ms();
                let id = catalog.table_id(txn, &table)?;
                // Every condition, then every write, in one transaction on the single writer; a
                // failure rolls the job back whole.
                for (i, write) in writes.iter().enumerate() {
                    write.check(i, current_version(txn, id, &write.key, now)?.as_deref(), &table)?;
                }
                let mut versions = Vec::with_capacity(writes.len());
                for write in &writes {
                    match &write.change {
                        Change::Put { value, expires_at_ms } => {
                            let version = new_version();
                            txn.execute(
                                "INSERT INTO kv_entries (table_id, key, value, version, expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                                 ON CONFLICT(table_id, key) DO UPDATE SET value = excluded.value, version = excluded.version,
                                     expires_at_ms = excluded.expires_at_ms",
                                params![id, write.key.as_bytes(), value, version, *expires_at_ms as i64],
                            )
                            .map_err(db_error)?;
                            versions.push(version);
                        }
                        Change::Delete => {
                            txn.execute(
                                "DELETE FROM kv_entries WHERE table_id = ?1 AND key = ?2",
                                params![id, write.key.as_bytes()],
                            )
                            .map_err(db_error)?;
                            versions.push(String::new());
                        }
                    }
                }
                catalog.maybe_sweep(txn, now)?;
                Ok(versions)
            })
            .await
    }

    async fn delete(&self, op: ops::Delete<'_>) -> ExoResult<bool> {
        let ops::Delete { table, key, condition } = op;
        let (table, key, condition) = (table.to_string(), key.to_owned(), condition.clone());
        self.store
            .run_adding_nothing(move |txn, catalog| {
                let now = now_ms();
                let id = catalog.table_id(txn, &table)?;
                let current = current_version(txn, id, &key, now)?;
                condition.check(current.as_deref(), &table, &key)?;
                txn.execute(
                    "DELETE FROM kv_entries WHERE table_id = ?1 AND key = ?2",
                    params![id, key.as_bytes()],
                )
                .map_err(db_error)?;
                Ok(current.is_some())
            })
            .await
    }

    async fn list(&self, op: ops::List<'_>) -> ExoResult<Vec<pb::Entry>> {
        let ops::List { table, prefix, start_after, limit, keys_only } = op;
        let (table, prefix) = (table.to_string(), prefix.as_bytes().to_vec());
        let after = start_after.map(|s| s.as_bytes().to_vec());
        self.store
            .run_adding_nothing(move |txn, catalog| {
                let id = catalog.table_id(txn, &table)?;
                let now = now_ms() as i64;
                // Resume strictly after the last key of the previous page, or start at the prefix.
                let (lower, inclusive) = match after {
                    Some(after) if after >= prefix => (after, false),
                    _ => (prefix.clone(), true),
                };
                let upper = prefix_successor(&prefix);
                let sql = format!(
                    "SELECT key, {}, version, expires_at_ms FROM kv_entries
                     WHERE table_id = ?1 AND key {} ?2 AND (?3 IS NULL OR key < ?3)
                       AND (expires_at_ms = 0 OR expires_at_ms > ?4)
                     ORDER BY key LIMIT ?5",
                    if keys_only { "X''" } else { "CAST(value AS BLOB)" },
                    if inclusive { ">=" } else { ">" }
                );
                let mut stmt = txn.prepare_cached(&sql).map_err(db_error)?;
                let rows = stmt
                    .query_map(params![id, lower, upper, now, limit as i64], |r| {
                        Ok(entry_from_row(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .map_err(db_error)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
            })
            .await
    }

    async fn batch_get(&self, op: ops::BatchGet<'_>) -> ExoResult<Vec<pb::Entry>> {
        let ops::BatchGet { table, keys } = op;
        let (table, keys) = (table.to_string(), keys.to_vec());
        self.store
            .run_adding_nothing(move |txn, catalog| {
                let id = catalog.table_id(txn, &table)?;
                let now = now_ms();
                let mut stmt = txn
                    .prepare_cached(
                        "SELECT CAST(value AS BLOB), version, expires_at_ms FROM kv_entries WHERE table_id = ?1 AND key = ?2",
                    )
                    .map_err(db_error)?;
                let mut found = Vec::new();
                for key in keys {
                    let row = stmt
                        .query_row(params![id, key.as_bytes()], |r| {
                            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
                        })
                        .optional()
                        .map_err(db_error)?;
                    if let Some((value, version, expires)) = row.filter(|(_, _, e)| !expired(*e as u64, now)) {
                        found.push(entry_from_row(key.into_bytes(), value, version, expires));
                    }
                }
                Ok(found)
            })
            .await
    }
}
