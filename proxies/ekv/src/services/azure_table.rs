//! `azure-table`: Azure Table storage through the `azure_data_tables` crate.
//!
//! Layout (what a native Table client sees), one Azure table per ExoFlow table:
//!
//! | property | type | meaning |
//! |---|---|---|
//! | `PartitionKey` | String | always `"0"`: one partition, so keys list in order |
//! | `RowKey` | String | lowercase hex of the key's UTF-8 bytes (Table forbids `/ \ # ?` and control characters in keys; hex is reversible and keeps byte order) |
//! | `k` | String | the key in clear, for people and native readers |
//! | `v0` … `v3` | Binary | the value, cut into 64 KiB pieces (Table's limit per property); `n` says how many |
//! | `n` | Int32 | number of value pieces |
//! | `exp_ms` | Int64 | expiry in ms since the epoch, `0` = never |
//!
//! Physical table names: Table allows only letters and digits, starting with a letter, so the
//! name `<name-prefix><table>` is written `t` + the name with `z` → `zz` and `-` → `zy`
//! (reversible); a name longer than 63 characters once written so is refused with INVALID_NAME.
//!
//! Versions are the entity's ETag. Conditions use `If-Match` (atomic in the service): create-only
//! is Insert Entity (an expired entity in the way is replaced under its own ETag); version-equals
//! is Update Entity with `If-Match`, after a read that refuses an expired entity. Table has no
//! TTL: the expiry is stored and an expired entity is never returned, listed or batch-read; it
//! stays until overwritten or deleted. Keys are at most 256 bytes (512 hex characters, Table's
//! 1 KiB key limit in UTF-16).

use async_trait::async_trait;
use azure_data_tables::{IfMatchCondition, prelude::*};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use exo_azure::{AzureSettings, Service, map_error, service_code};
use exo_proto::{common::v1::ErrorReason, kv::v1 as pb};
use exo_proxy_core::{ExoError, ExoResult, now_ms, readiness};
use futures::StreamExt as _;
use serde_json::{Map, Value, json};

use crate::ops;
use crate::{
    backend::KeyValue,
    model::{
        Capability, Condition, Descriptor, TableName, expired, key_not_found, portable_limits,
        table_not_found,
    },
};

const PARTITION: &str = "0";
/// Table's limit per binary property.
const PIECE: usize = 64 * 1024;
/// Longest key: 512 hex characters fill Table's 1 KiB (UTF-16) key.
pub const MAX_KEY_BYTES: u32 = 256;

/// The Azure Table backend.
pub struct AzureTableKv {
    descriptor: Descriptor,
    service: TableServiceClient,
    name_prefix: String,
}

impl std::fmt::Debug for AzureTableKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureTableKv").field("name_prefix", &self.name_prefix).finish_non_exhaustive()
    }
}

/// `<prefix><name>` as an Azure table name: `t` + letters and digits, reversibly (`exo deploy`
/// names the tables it creates with this too).
pub fn physical_name(logical: &str) -> String {
    let mut out = String::from("t");
    for c in logical.chars() {
        match c {
            'z' => out.push_str("zz"),
            '-' => out.push_str("zy"),
            c => out.push(c),
        }
    }
    out
}

fn logical_name(physical: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = physical.strip_prefix('t')?.chars();
    while let Some(c) = chars.next() {
        match c {
            'z' => match chars.next()? {
                'z' => out.push('z'),
                'y' => out.push('-'),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

fn row_key(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

fn table_error(table: &str, operation: &str, err: &azure_core::Error) -> ExoError {
    match service_code(err) {
        Some((404, "TableNotFound")) => table_not_found(table),
        Some((409, "TableBeingDeleted")) => ExoError::new(
            ErrorReason::BackendUnavailable,
            format!("table '{table}' is being deleted by Azure; retry shortly"),
        )
        .with_resource(table)
        .retryable(),
        _ => map_error("azure-table", operation, err).with_resource(table),
    }
}

fn condition_failed(table: &str, key: &str, why: &str) -> ExoError {
    ExoError::new(ErrorReason::ConditionFailed, format!("condition failed for key {key:?}: {why}"))
        .with_resource(format!("{table}/{key}"))
}

/// The entity for `key` = `value` expiring at `expires_at_ms`.
fn entity(key: &str, value: &[u8], expires_at_ms: u64) -> Value {
    let mut map = Map::new();
    map.insert("PartitionKey".into(), json!(PARTITION));
    map.insert("RowKey".into(), json!(row_key(key)));
    map.insert("k".into(), json!(key));
    let pieces: Vec<&[u8]> = if value.is_empty() { Vec::new() } else { value.chunks(PIECE).collect() };
    map.insert("n".into(), json!(pieces.len()));
    for (i, piece) in pieces.iter().enumerate() {
        map.insert(format!("v{i}"), json!(STANDARD.encode(piece)));
        map.insert(format!("v{i}@odata.type"), json!("Edm.Binary"));
    }
    map.insert("exp_ms".into(), json!(expires_at_ms.to_string()));
    map.insert("exp_ms@odata.type".into(), json!("Edm.Int64"));
    Value::Object(map)
}

/// A stored entity as an entry, unless expired; `etag` is its version.
fn entry_of(entity: &Value, etag: &str, now: u64, keys_only: bool) -> Option<pb::Entry> {
    let expires_at_ms = match &entity["exp_ms"] {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    };
    if expired(expires_at_ms, now) {
        return None;
    }
    let mut value = Vec::new();
    if !keys_only {
        let pieces = entity["n"].as_u64().unwrap_or(0);
        for i in 0..pieces {
            let piece = entity[format!("v{i}")].as_str().unwrap_or_default();
            value.extend(STANDARD.decode(piece).ok()?);
        }
    }
    Some(pb::Entry { key: entity["k"].as_str()?.to_owned(), value, version: etag.to_owned(), expires_at_ms })
}

impl exo_proxy_core::registry::Backend for AzureTableKv {
    type Opened = std::sync::Arc<dyn KeyValue>;
    type Context = crate::services::OpenContext;
    type Config = AzureSettings;

    fn settings(_data: Option<std::path::PathBuf>) -> AzureSettings {
        AzureSettings::default()
    }

    fn validate(config: &Self::Config) -> Result<(), exo_proxy_core::config::ConfigError> {
        config.validate()
    }

    fn open<'a>(
        config: &'a AzureSettings,
        _context: &'a Self::Context,
    ) -> exo_proxy_core::registry::BoxFuture<'a, ExoResult<Self::Opened>> {
        Box::pin(async move {
            let kv: Self::Opened = std::sync::Arc::new(AzureTableKv::connect(config)?);
            Ok(kv)
        })
    }
}

impl AzureTableKv {
    /// Connects with `settings` (nothing is sent until the first call).
    pub fn connect(settings: &AzureSettings) -> ExoResult<Self> {
        let (location, credentials) = settings.connect(Service::Table)?;
        let service =
            azure_data_tables::clients::TableServiceClientBuilder::with_location(location, credentials)
                .retry(exo_azure::no_retries())
                .build();
        use Capability::*;
        Ok(Self {
            descriptor: Descriptor {
                backend: "azure-table",
                capabilities: [CompareAndSet, Ttl, List, Increment].into(),
                limits: pb::Limits { max_key_bytes: MAX_KEY_BYTES, ..portable_limits() },
            },
            service,
            name_prefix: settings.name_prefix.clone(),
        })
    }

    fn table(&self, table: &TableName) -> ExoResult<TableClient> {
        let physical = physical_name(&format!("{}{table}", self.name_prefix));
        if physical.len() > 63 {
            return Err(ExoError::new(
                ErrorReason::InvalidName,
                format!(
                    "table name {table:?} is {} characters once written as an Azure table name (at most 63)",
                    physical.len()
                ),
            )
            .with_resource(table.as_str()));
        }
        Ok(self.service.table_client(physical))
    }

    fn entity_client(&self, table: &TableName, key: &str) -> ExoResult<EntityClient> {
        Ok(self.table(table)?.partition_key_client(PARTITION).entity_client(row_key(key)))
    }

    /// The live entity and its ETag, if any.
    async fn read(&self, table: &TableName, key: &str) -> ExoResult<Option<(Value, String)>> {
        match self.entity_client(table, key)?.get::<Value>().await {
            Ok(out) => Ok(Some((out.entity, out.etag.to_string()))),
            Err(err) if matches!(service_code(&err), Some((404, "ResourceNotFound"))) => Ok(None),
            Err(err) => Err(table_error(table.as_str(), "GetEntity", &err)),
        }
    }

    async fn live(&self, table: &TableName, key: &str) -> ExoResult<Option<(pb::Entry, String)>> {
        Ok(self
            .read(table, key)
            .await?
            .and_then(|(entity, etag)| entry_of(&entity, &etag, now_ms(), true).map(|e| (e, etag))))
    }
}

#[async_trait]
impl KeyValue for AzureTableKv {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    async fn ready(&self) -> ExoResult<()> {
        let mut pages = self.service.list().into_stream();
        match pages.next().await {
            Some(Err(err)) => readiness(Err(map_error("azure-table", "QueryTables", &err))),
            _ => Ok(()),
        }
    }

    async fn create_table(&self, op: ops::CreateTable<'_>) -> ExoResult<bool> {
        let ops::CreateTable { table } = op;
        match self.table(table)?.create().await {
            Ok(_) => Ok(true),
            Err(err) if matches!(service_code(&err), Some((409, "TableAlreadyExists"))) => Ok(false),
            Err(err) => Err(table_error(table.as_str(), "CreateTable", &err)),
        }
    }

    async fn delete_table(&self, op: ops::DeleteTable<'_>) -> ExoResult<()> {
        let ops::DeleteTable { table } = op;
        match self.table(table)?.delete().await {
            Ok(_) => Ok(()),
            Err(err) if matches!(service_code(&err), Some((404, _))) => Err(table_not_found(table.as_str())),
            Err(err) => Err(table_error(table.as_str(), "DeleteTable", &err)),
        }
    }

    async fn list_tables(&self, _op: ops::ListTables) -> ExoResult<Vec<String>> {
        let mut names = Vec::new();
        let mut pages = self.service.list().into_stream();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_error("azure-table", "QueryTables", &e))?;
            for t in page.tables {
                if let Some(name) = logical_name(&t.name)
                    .and_then(|n| n.strip_prefix(self.name_prefix.as_str()).map(str::to_owned))
                    && TableName::parse("table", &name, "name").is_ok()
                {
                    names.push(name);
                }
            }
        }
        names.sort();
        Ok(names)
    }

    async fn get(&self, op: ops::Get<'_>) -> ExoResult<pb::Entry> {
        let ops::Get { table, key } = op;
        self.read(table, key)
            .await?
            .and_then(|(entity, etag)| entry_of(&entity, &etag, now_ms(), false))
            .ok_or_else(|| key_not_found(table.as_str(), key))
    }

    async fn put(&self, op: ops::Put<'_>) -> ExoResult<String> {
        let ops::Put { table, key, value, condition, expires_at_ms } = op;
        let body = entity(key, &value, expires_at_ms);
        let client = self.entity_client(table, key)?;
        let updated = match condition {
            Condition::None => client
                .insert_or_replace(&body)
                .map_err(|e| ExoError::internal(e.to_string()))?
                .await
                .map(|out| out.etag.to_string()),
            Condition::MustNotExist => {
                let inserted = self
                    .table(table)?
                    .insert::<_, Value>(&body)
                    .map_err(|e| ExoError::internal(e.to_string()))?
                    .return_entity(false)
                    .await;
                match inserted {
                    Ok(out) => Ok(out.etag.to_string()),
                    Err(err) if matches!(service_code(&err), Some((409, "EntityAlreadyExists"))) => {
                        // Something is in the way: only an expired entity may be replaced, and
                        // only under its own ETag (another writer may be doing the same).
                        match self.read(table, key).await? {
                            Some((old, etag)) if entry_of(&old, &etag, now_ms(), true).is_none() => client
                                .update(&body, IfMatchCondition::Etag(etag.into()))
                                .map_err(|e| ExoError::internal(e.to_string()))?
                                .await
                                .map(|out| out.etag.to_string()),
                            _ => return Err(condition_failed(table.as_str(), key, "the key already exists")),
                        }
                    }
                    Err(err) => Err(err),
                }
            }
            Condition::VersionEquals(version) => {
                match self.live(table, key).await? {
                    Some((_, etag)) if etag == *version => {}
                    Some(_) => {
                        return Err(condition_failed(table.as_str(), key, "the version does not match"));
                    }
                    None => return Err(condition_failed(table.as_str(), key, "the key does not exist")),
                }
                client
                    .update(&body, IfMatchCondition::Etag(version.clone().into()))
                    .map_err(|e| ExoError::internal(e.to_string()))?
                    .await
                    .map(|out| out.etag.to_string())
            }
        };
        match updated {
            Ok(etag) => Ok(etag),
            Err(err) if matches!(service_code(&err), Some((412, _)) | Some((404, "ResourceNotFound"))) => {
                Err(condition_failed(table.as_str(), key, "it was changed concurrently"))
            }
            Err(err) => Err(table_error(table.as_str(), "UpsertEntity", &err)),
        }
    }

    async fn delete(&self, op: ops::Delete<'_>) -> ExoResult<bool> {
        let ops::Delete { table, key, condition } = op;
        let current = self.live(table, key).await?;
        let if_match = match (condition, &current) {
            (Condition::VersionEquals(version), Some((_, etag))) if etag == version => {
                IfMatchCondition::Etag(version.clone().into())
            }
            (Condition::VersionEquals(_), Some(_)) => {
                return Err(condition_failed(table.as_str(), key, "the version does not match"));
            }
            (Condition::VersionEquals(_), None) => {
                return Err(condition_failed(table.as_str(), key, "the key does not exist"));
            }
            _ => IfMatchCondition::Any,
        };
        match self.entity_client(table, key)?.delete().if_match(if_match).await {
            Ok(_) => Ok(current.is_some()),
            Err(err) if matches!(service_code(&err), Some((404, "ResourceNotFound"))) => {
                if matches!(condition, Condition::VersionEquals(_)) {
                    Err(condition_failed(table.as_str(), key, "it was deleted concurrently"))
                } else {
                    Ok(false)
                }
            }
            Err(err) if matches!(service_code(&err), Some((412, _))) => {
                Err(condition_failed(table.as_str(), key, "it was changed concurrently"))
            }
            Err(err) => Err(table_error(table.as_str(), "DeleteEntity", &err)),
        }
    }

    async fn list(&self, op: ops::List<'_>) -> ExoResult<Vec<pb::Entry>> {
        let ops::List { table, prefix, start_after, limit, keys_only } = op;
        let now = now_ms();
        let lower = row_key(prefix);
        let mut filter = format!("PartitionKey eq '{PARTITION}' and RowKey ge '{lower}'");
        if !prefix.is_empty() {
            // Hex digits sort below 'g': every row key starting with the prefix's hex is below this.
            filter.push_str(&format!(" and RowKey lt '{lower}g'"));
        }
        if let Some(after) = start_after.filter(|after| *after >= prefix) {
            filter.push_str(&format!(" and RowKey gt '{}'", row_key(after)));
        }
        let mut pages = self
            .table(table)?
            .query()
            .filter(Filter::new(filter))
            .top(Top::new(limit.clamp(1, 1000) as u32))
            .into_stream::<Value>();
        let mut entries = Vec::new();
        while entries.len() < limit {
            let Some(page) = pages.next().await else { break };
            let page = page.map_err(|e| table_error(table.as_str(), "QueryEntities", &e))?;
            for entity in page.entities {
                let etag = entity["odata.etag"].as_str().unwrap_or_default().to_owned();
                if let Some(entry) = entry_of(&entity, &etag, now, keys_only) {
                    entries.push(entry);
                }
            }
        }
        entries.truncate(limit);
        Ok(entries)
    }

    async fn batch_get(&self, op: ops::BatchGet<'_>) -> ExoResult<Vec<pb::Entry>> {
        let ops::BatchGet { table, keys } = op;
        // Table has no batch read across row keys: read up to 8 at a time.
        let mut found = Vec::with_capacity(keys.len());
        for group in keys.chunks(8) {
            let reads =
                futures::future::join_all(group.iter().map(|key| self.get(ops::Get { table, key }))).await;
            for read in reads {
                match read {
                    Ok(entry) => found.push(entry),
                    Err(err) if err.reason == ErrorReason::KeyNotFound => {}
                    Err(err) => return Err(err),
                }
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_round_trip_and_are_alphanumeric() {
        for name in ["orders", "a-b-c", "zz-top", "9lives", "shop-zone-1"] {
            let physical = physical_name(name);
            assert!(physical.chars().all(|c| c.is_ascii_alphanumeric()) && physical.starts_with('t'));
            assert_eq!(logical_name(&physical).as_deref(), Some(name));
        }
        assert_ne!(physical_name("ab"), physical_name("a-b"));
    }

    #[test]
    fn row_keys_keep_byte_order_and_prefixes() {
        let mut keys = ["b", "a/b", "a", "a#", "ü", "a\u{1}"];
        let mut encoded: Vec<String> = keys.iter().map(|k| row_key(k)).collect();
        keys.sort();
        encoded.sort();
        assert_eq!(encoded, keys.iter().map(|k| row_key(k)).collect::<Vec<_>>());
        assert!(row_key("a/b?c").starts_with(&row_key("a/")));
        assert!(row_key(&"k".repeat(MAX_KEY_BYTES as usize)).len() <= 512);
    }

    #[test]
    fn values_split_into_pieces_and_come_back() {
        let value: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
        let stored = entity("key/1", &value, 0);
        assert_eq!(stored["n"], json!(4));
        let entry = entry_of(&stored, "W/\"etag\"", 1, false).unwrap();
        assert_eq!(entry.value, value);
        assert_eq!(entry.key, "key/1");
        let empty = entity("e", b"", 0);
        assert!(entry_of(&empty, "x", 1, false).unwrap().value.is_empty());
        assert!(entry_of(&entity("old", b"v", 5), "x", 5, false).is_none(), "expired");
    }
}
