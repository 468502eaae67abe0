//! `memory`: an in-process key-value store for tests and benchmarks (not durable).

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard},
};

use async_trait::async_trait;
use exo_proto::kv::v1 as pb;
use exo_proxy_core::{ExoResult, now_ms};

use crate::ops;
use crate::{
    backend::KeyValue,
    model::{
        Capability, Change, Descriptor, TableName, counter, expired, key_not_found, new_version,
        portable_limits, table_not_found,
    },
};

type Table = BTreeMap<String, pb::Entry>;

/// The settings of a `memory` backend: none.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {}

impl exo_proxy_core::registry::Backend for MemoryKv {
    type Opened = std::sync::Arc<dyn KeyValue>;
    type Context = crate::services::OpenContext;
    type Config = MemoryConfig;

    fn settings(_data: Option<std::path::PathBuf>) -> MemoryConfig {
        MemoryConfig::default()
    }

    fn open<'a>(
        _config: &'a MemoryConfig,
        _context: &'a Self::Context,
    ) -> exo_proxy_core::registry::BoxFuture<'a, ExoResult<Self::Opened>> {
        Box::pin(async move {
            let kv: Self::Opened = std::sync::Arc::new(MemoryKv::new());
            Ok(kv)
        })
    }
}

/// The in-memory backend.
pub struct MemoryKv {
    descriptor: Descriptor,
    tables: Mutex<BTreeMap<String, Table>>,
}

impl std::fmt::Debug for MemoryKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryKv").finish_non_exhaustive()
    }
}

impl Default for MemoryKv {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryKv {
    /// An empty store.
    pub fn new() -> Self {
        use Capability::*;
        Self {
            descriptor: Descriptor {
                backend: "memory",
                capabilities: [CompareAndSet, Ttl, List, Increment, AtomicBatch].into(),
                limits: portable_limits(),
            },
            tables: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Table>> {
        // No step between related writes can panic, so a poisoned lock is still consistent.
        self.tables.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn with_table<T>(&self, table: &TableName, f: impl FnOnce(&mut Table) -> ExoResult<T>) -> ExoResult<T> {
        let mut tables = self.lock();
        let entries = tables.get_mut(table.as_str()).ok_or_else(|| table_not_found(table.as_str()))?;
        f(entries)
    }
}

/// The live entry under `key`, dropping it if expired.
fn live<'a>(entries: &'a mut Table, key: &str, now: u64) -> Option<&'a pb::Entry> {
    if entries.get(key).is_some_and(|e| expired(e.expires_at_ms, now)) {
        entries.remove(key);
    }
    entries.get(key)
}

#[async_trait]
impl KeyValue for MemoryKv {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    async fn ready(&self) -> ExoResult<()> {
        Ok(())
    }

    async fn create_table(&self, op: ops::CreateTable<'_>) -> ExoResult<bool> {
        let ops::CreateTable { table } = op;
        let mut tables = self.lock();
        if tables.contains_key(table.as_str()) {
            return Ok(false);
        }
        tables.insert(table.to_string(), Table::new());
        Ok(true)
    }

    async fn delete_table(&self, op: ops::DeleteTable<'_>) -> ExoResult<()> {
        let ops::DeleteTable { table } = op;
        self.lock().remove(table.as_str()).map(|_| ()).ok_or_else(|| table_not_found(table.as_str()))
    }

    async fn list_tables(&self, _op: ops::ListTables) -> ExoResult<Vec<String>> {
        Ok(self.lock().keys().cloned().collect())
    }

    async fn get(&self, op: ops::Get<'_>) -> ExoResult<pb::Entry> {
        let ops::Get { table, key } = op;
        self.with_table(table, |entries| {
            live(entries, key, now_ms()).cloned().ok_or_else(|| key_not_found(table.as_str(), key))
        })
    }

    async fn put(&self, op: ops::Put<'_>) -> ExoResult<String> {
        let ops::Put { table, key, value, condition, expires_at_ms } = op;
        self.with_table(table, |entries| {
            let current = live(entries, key, now_ms()).map(|e| e.version.clone());
            condition.check(current.as_deref(), table.as_str(), key)?;
            let version = new_version();
            entries.insert(
                key.to_owned(),
                pb::Entry { key: key.to_owned(), value, version: version.clone(), expires_at_ms },
            );
            Ok(version)
        })
    }

    async fn delete(&self, op: ops::Delete<'_>) -> ExoResult<bool> {
        let ops::Delete { table, key, condition } = op;
        self.with_table(table, |entries| {
            let current = live(entries, key, now_ms()).map(|e| e.version.clone());
            condition.check(current.as_deref(), table.as_str(), key)?;
            Ok(entries.remove(key).is_some())
        })
    }

    async fn list(&self, op: ops::List<'_>) -> ExoResult<Vec<pb::Entry>> {
        let ops::List { table, prefix, start_after, limit, keys_only } = op;
        let now = now_ms();
        self.with_table(table, |entries| {
            let start = match start_after {
                Some(after) if after >= prefix => std::ops::Bound::Excluded(after.to_owned()),
                _ => std::ops::Bound::Included(prefix.to_owned()),
            };
            Ok(entries
                .range((start, std::ops::Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix))
                .filter(|(_, e)| !expired(e.expires_at_ms, now))
                .take(limit)
                .map(
                    |(_, e)| if keys_only { pb::Entry { value: Vec::new(), ..e.clone() } } else { e.clone() },
                )
                .collect())
        })
    }

    async fn increment(&self, op: ops::Increment<'_>) -> ExoResult<pb::IncrementResponse> {
        let ops::Increment { table, key, delta, expires_at_ms } = op;
        self.with_table(table, |entries| {
            let current = live(entries, key, now_ms());
            let value =
                counter::incremented(current.map(|e| e.value.as_slice()), delta, table.as_str(), key)?;
            let expires_at_ms = current.map_or(expires_at_ms, |e| e.expires_at_ms);
            let version = new_version();
            entries.insert(
                key.to_owned(),
                pb::Entry {
                    key: key.to_owned(),
                    value: counter::text(value),
                    version: version.clone(),
                    expires_at_ms,
                },
            );
            Ok(pb::IncrementResponse { value, version })
        })
    }

    async fn write_batch(&self, op: ops::WriteBatch<'_>) -> ExoResult<Vec<String>> {
        let ops::WriteBatch { table, writes } = op;
        self.with_table(table, |entries| {
            let now = now_ms();
            for (i, write) in writes.iter().enumerate() {
                let current = live(entries, &write.key, now).map(|e| e.version.clone());
                write.check(i, current.as_deref(), table.as_str())?;
            }
            let versions = writes
                .iter()
                .map(|write| match &write.change {
                    Change::Put { value, expires_at_ms } => {
                        let version = new_version();
                        let entry = pb::Entry {
                            key: write.key.clone(),
                            value: value.clone(),
                            version: version.clone(),
                            expires_at_ms: *expires_at_ms,
                        };
                        entries.insert(write.key.clone(), entry);
                        version
                    }
                    Change::Delete => {
                        entries.remove(&write.key);
                        String::new()
                    }
                })
                .collect();
            Ok(versions)
        })
    }

    async fn batch_get(&self, op: ops::BatchGet<'_>) -> ExoResult<Vec<pb::Entry>> {
        let ops::BatchGet { table, keys } = op;
        let now = now_ms();
        self.with_table(table, |entries| {
            Ok(keys.iter().filter_map(|k| live(entries, k, now).cloned()).collect())
        })
    }
}
