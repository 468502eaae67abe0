//! `dynamodb`: Amazon DynamoDB through the official SDK.
//!
//! Item layout (what a native DynamoDB client sees), one DynamoDB table per ExoFlow table:
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `p` | S, partition key | always `"0"`: one item collection, so keys list in order |
//! | `k` | S, sort key | the ExoFlow key, unchanged (DynamoDB takes any UTF-8, no encoding needed) |
//! | `v` | B | the value bytes |
//! | `ver` | S | the version (a fresh UUIDv7 per write; a native writer must change it too) |
//! | `exp` | N | expiry in Unix seconds, DynamoDB's TTL attribute (absent: never) |
//! | `exp_ms` | N | expiry in milliseconds; `0` = never |
//!
//! Conditions are DynamoDB condition expressions, checked atomically with the write: versions
//! compare `ver`; an expired item counts as absent. DynamoDB deletes expired items lazily (up to
//! days later), so every read, list and batch read drops items whose `exp_ms` has passed.
//! Reads are strongly consistent.
//!
//! Limit worth knowing: one partition-key value carries the whole table, so a table takes at
//! most about 1000 writes/s and 3000 strongly consistent reads/s (DynamoDB's per-partition
//! ceiling). Ordered prefix listing is what this buys.

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::{
    Client,
    primitives::Blob,
    types::{
        AttributeDefinition, AttributeValue, BillingMode, Delete as DeleteInTransaction, KeySchemaElement,
        KeyType, KeysAndAttributes, Put as PutInTransaction, ReturnValue, ScalarAttributeType, TableStatus,
        TimeToLiveSpecification, TransactWriteItem,
    },
};
use exo_aws::{AwsSettings, map_error, service_code};
use exo_proto::{common::v1::ErrorReason, kv::v1 as pb};
use exo_proxy_core::{ExoError, ExoResult, now_ms, readiness};

use crate::ops;
use crate::{
    backend::KeyValue,
    model::{
        Capability, Change, Condition, Descriptor, TableName, expired, key_not_found, new_version,
        portable_limits, table_not_found,
    },
};

/// The partition key attribute (every item has the same value, [`PARTITION`]).
pub const PARTITION_KEY: &str = "p";
/// The sort key attribute: the ExoFlow key.
pub const SORT_KEY: &str = "k";
/// DynamoDB's TTL attribute (Unix seconds).
pub const TTL_ATTRIBUTE: &str = "exp";
/// The partition every item lives in.
const PARTITION: &str = "0";
/// How long a new table may take to become ACTIVE.
const CREATE_WAIT: Duration = Duration::from_secs(60);

/// The DynamoDB key-value backend.
pub struct DynamoKv {
    descriptor: Descriptor,
    client: Client,
    name_prefix: String,
}

impl std::fmt::Debug for DynamoKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoKv").field("name_prefix", &self.name_prefix).finish_non_exhaustive()
    }
}

fn table_error<E>(table: &str, operation: &str, err: exo_aws::SdkError<E>) -> ExoError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match service_code(&err).map(|(code, _)| code) {
        Some("ResourceNotFoundException") => table_not_found(table),
        Some("ItemCollectionSizeLimitExceededException") => ExoError::new(
            ErrorReason::ValueTooLarge,
            format!("table '{table}' reached DynamoDB's item collection size limit"),
        )
        .with_resource(table),
        _ => map_error("dynamodb", operation, err).with_resource(table),
    }
}

fn condition_failed(table: &str, key: &str, condition: &Condition) -> ExoError {
    let why = match condition {
        Condition::MustNotExist => "the key already exists",
        Condition::VersionEquals(_) => "the key does not exist at that version",
        Condition::None => "",
    };
    ExoError::new(ErrorReason::ConditionFailed, format!("condition failed for key {key:?}: {why}"))
        .with_resource(format!("{table}/{key}"))
}

fn s(text: &str) -> AttributeValue {
    AttributeValue::S(text.to_owned())
}

fn n(number: u64) -> AttributeValue {
    AttributeValue::N(number.to_string())
}

fn item_key(key: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([("p".to_owned(), s(PARTITION)), ("k".to_owned(), s(key))])
}

/// The item that stores `value` under `key` at `version`.
fn item_of(key: &str, value: Vec<u8>, version: &str, expires_at_ms: u64) -> HashMap<String, AttributeValue> {
    let mut item = item_key(key);
    item.insert("v".into(), AttributeValue::B(Blob::new(value)));
    item.insert("ver".into(), s(version));
    item.insert("exp_ms".into(), n(expires_at_ms));
    if expires_at_ms > 0 {
        item.insert("exp".into(), n(expires_at_ms.div_ceil(1000)));
    }
    item
}

/// The condition expression (with its names and values) for `condition` at time `now`.
fn condition_expression(
    condition: &Condition,
    now: u64,
) -> Option<(String, HashMap<String, AttributeValue>)> {
    // exp_ms = 0 means never; an item past its expiry counts as absent.
    match condition {
        Condition::None => None,
        Condition::MustNotExist => Some((
            "attribute_not_exists(k) OR (exp_ms > :zero AND exp_ms <= :now)".to_owned(),
            HashMap::from([(":zero".to_owned(), n(0)), (":now".to_owned(), n(now))]),
        )),
        Condition::VersionEquals(version) => Some((
            "ver = :ver AND (exp_ms = :zero OR exp_ms > :now)".to_owned(),
            HashMap::from([
                (":ver".to_owned(), s(version)),
                (":zero".to_owned(), n(0)),
                (":now".to_owned(), n(now)),
            ]),
        )),
    }
}

/// A stored item as an entry, unless it has expired.
fn entry_of(item: &HashMap<String, AttributeValue>, now: u64, keys_only: bool) -> Option<pb::Entry> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
    let expires_at_ms =
        item.get("exp_ms").and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    if expired(expires_at_ms, now) {
        return None;
    }
    let value = if keys_only {
        Vec::new()
    } else {
        item.get("v").and_then(|v| v.as_b().ok()).map(|b| b.as_ref().to_vec()).unwrap_or_default()
    };
    Some(pb::Entry { key: text("k"), value, version: text("ver"), expires_at_ms })
}

impl exo_proxy_core::registry::Backend for DynamoKv {
    type Opened = std::sync::Arc<dyn KeyValue>;
    type Context = crate::services::OpenContext;
    type Config = AwsSettings;

    fn settings(_data: Option<std::path::PathBuf>) -> AwsSettings {
        AwsSettings::default()
    }

    fn validate(config: &Self::Config) -> Result<(), exo_proxy_core::config::ConfigError> {
        config.validate()
    }

    fn open<'a>(
        config: &'a AwsSettings,
        context: &'a Self::Context,
    ) -> exo_proxy_core::registry::BoxFuture<'a, ExoResult<Self::Opened>> {
        Box::pin(async move {
            let kv: Self::Opened =
                std::sync::Arc::new(DynamoKv::connect(config, context.call_timeout).await?);
            Ok(kv)
        })
    }
}

impl DynamoKv {
    /// Connects with `settings`; `operation_timeout` bounds each DynamoDB call.
    pub async fn connect(settings: &AwsSettings, operation_timeout: Duration) -> ExoResult<Self> {
        let config = exo_aws::sdk_config(settings, operation_timeout).await?;
        use Capability::*;
        Ok(Self {
            descriptor: Descriptor {
                backend: "dynamodb",
                capabilities: [CompareAndSet, Ttl, List, Increment, AtomicBatch].into(),
                limits: portable_limits(),
            },
            client: Client::new(&config),
            name_prefix: settings.name_prefix.clone(),
        })
    }

    fn physical(&self, table: &str) -> String {
        format!("{}{table}", self.name_prefix)
    }

    async fn wait_active(&self, table: &TableName) -> ExoResult<()> {
        let deadline = tokio::time::Instant::now() + CREATE_WAIT;
        loop {
            let out = self
                .client
                .describe_table()
                .table_name(self.physical(table.as_str()))
                .send()
                .await
                .map_err(|e| table_error(table.as_str(), "DescribeTable", e))?;
            if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ExoError::unavailable(format!(
                    "DynamoDB table '{table}' did not become ACTIVE within {CREATE_WAIT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[async_trait]
impl KeyValue for DynamoKv {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    async fn ready(&self) -> ExoResult<()> {
        let probe = self.client.list_tables().limit(1).send().await;
        readiness(probe.map(|_| ()).map_err(|err| map_error("dynamodb", "ListTables", err)))
    }

    async fn create_table(&self, op: ops::CreateTable<'_>) -> ExoResult<bool> {
        let ops::CreateTable { table } = op;
        // A table made beforehand (CloudFormation) is used as it is: the proxy's role need not
        // be allowed to create tables, only to describe them.
        match self.client.describe_table().table_name(self.physical(table.as_str())).send().await {
            Ok(out) => {
                let keys: Vec<(&str, &KeyType)> = out
                    .table()
                    .map(|t| t.key_schema().iter().map(|k| (k.attribute_name(), k.key_type())).collect())
                    .unwrap_or_default();
                if keys != [(PARTITION_KEY, &KeyType::Hash), (SORT_KEY, &KeyType::Range)] {
                    return Err(ExoError::new(
                        ErrorReason::InvalidArgument,
                        format!(
                            "DynamoDB table '{}' exists with key schema {keys:?}; ekv needs {PARTITION_KEY} (HASH) and {SORT_KEY} (RANGE)",
                            self.physical(table.as_str())
                        ),
                    )
                    .with_resource(table.as_str()));
                }
                self.wait_active(table).await?;
                return Ok(false);
            }
            Err(err) if service_code(&err).is_some_and(|(code, _)| code == "ResourceNotFoundException") => {}
            Err(err) => return Err(table_error(table.as_str(), "DescribeTable", err)),
        }
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(|e| ExoError::internal(format!("cannot build a key schema: {e}")))
        };
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| ExoError::internal(format!("cannot build an attribute: {e}")))
        };
        let created = self
            .client
            .create_table()
            .table_name(self.physical(table.as_str()))
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key(PARTITION_KEY, KeyType::Hash)?)
            .key_schema(key(SORT_KEY, KeyType::Range)?)
            .attribute_definitions(attribute(PARTITION_KEY)?)
            .attribute_definitions(attribute(SORT_KEY)?)
            .send()
            .await;
        let fresh = match created {
            Ok(_) => true,
            Err(err) if service_code(&err).is_some_and(|(code, _)| code == "ResourceInUseException") => false,
            Err(err) => return Err(table_error(table.as_str(), "CreateTable", err)),
        };
        self.wait_active(table).await?;
        if fresh {
            let ttl = TimeToLiveSpecification::builder()
                .attribute_name(TTL_ATTRIBUTE)
                .enabled(true)
                .build()
                .map_err(|e| ExoError::internal(format!("cannot build a TTL specification: {e}")))?;
            self.client
                .update_time_to_live()
                .table_name(self.physical(table.as_str()))
                .time_to_live_specification(ttl)
                .send()
                .await
                .map_err(|e| table_error(table.as_str(), "UpdateTimeToLive", e))?;
        }
        Ok(fresh)
    }

    async fn delete_table(&self, op: ops::DeleteTable<'_>) -> ExoResult<()> {
        let ops::DeleteTable { table } = op;
        self.client
            .delete_table()
            .table_name(self.physical(table.as_str()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| table_error(table.as_str(), "DeleteTable", e))
    }

    async fn list_tables(&self, _op: ops::ListTables) -> ExoResult<Vec<String>> {
        let mut names = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .list_tables()
                .set_exclusive_start_table_name(start)
                .send()
                .await
                .map_err(|e| map_error("dynamodb", "ListTables", e))?;
            for physical in out.table_names() {
                if let Some(name) = physical.strip_prefix(self.name_prefix.as_str())
                    && TableName::parse("table", name, "name").is_ok()
                {
                    names.push(name.to_owned());
                }
            }
            start = out.last_evaluated_table_name().map(str::to_owned);
            if start.is_none() {
                break;
            }
        }
        names.sort();
        Ok(names)
    }

    async fn get(&self, op: ops::Get<'_>) -> ExoResult<pb::Entry> {
        let ops::Get { table, key } = op;
        let out = self
            .client
            .get_item()
            .table_name(self.physical(table.as_str()))
            .set_key(Some(item_key(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| table_error(table.as_str(), "GetItem", e))?;
        out.item()
            .and_then(|item| entry_of(item, now_ms(), false))
            .ok_or_else(|| key_not_found(table.as_str(), key))
    }

    async fn put(&self, op: ops::Put<'_>) -> ExoResult<String> {
        let ops::Put { table, key, value, condition, expires_at_ms } = op;
        let version = new_version();
        let item = item_of(key, value, &version, expires_at_ms);
        let (expression, values) = condition_expression(condition, now_ms()).unzip();
        let result = self
            .client
            .put_item()
            .table_name(self.physical(table.as_str()))
            .set_item(Some(item))
            .set_condition_expression(expression)
            .set_expression_attribute_values(values)
            .send()
            .await;
        match result {
            Ok(_) => Ok(version),
            Err(err)
                if service_code(&err).is_some_and(|(code, _)| code == "ConditionalCheckFailedException") =>
            {
                Err(condition_failed(table.as_str(), key, condition))
            }
            Err(err) => Err(table_error(table.as_str(), "PutItem", err)),
        }
    }

    async fn write_batch(&self, op: ops::WriteBatch<'_>) -> ExoResult<Vec<String>> {
        let ops::WriteBatch { table, writes } = op;
        let (physical, now) = (self.physical(table.as_str()), now_ms());
        let built = |err: aws_smithy_types::error::operation::BuildError| ExoError::internal(err.to_string());
        let mut items = Vec::with_capacity(writes.len());
        let mut versions = Vec::with_capacity(writes.len());
        for write in writes {
            let (expression, values) = condition_expression(&write.condition, now).unzip();
            let item = match &write.change {
                Change::Put { value, expires_at_ms } => {
                    let version = new_version();
                    let put = PutInTransaction::builder()
                        .table_name(&physical)
                        .set_item(Some(item_of(&write.key, value.clone(), &version, *expires_at_ms)))
                        .set_condition_expression(expression)
                        .set_expression_attribute_values(values)
                        .build()
                        .map_err(built)?;
                    versions.push(version);
                    TransactWriteItem::builder().put(put).build()
                }
                Change::Delete => {
                    let delete = DeleteInTransaction::builder()
                        .table_name(&physical)
                        .set_key(Some(item_key(&write.key)))
                        .set_condition_expression(expression)
                        .set_expression_attribute_values(values)
                        .build()
                        .map_err(built)?;
                    versions.push(String::new());
                    TransactWriteItem::builder().delete(delete).build()
                }
            };
            items.push(item);
        }
        // TransactWriteItems: every condition holds and every write applies, or none does.
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(versions),
            Err(err) => {
                let refused = err.as_service_error().and_then(|e| match e {
                    TransactWriteItemsError::TransactionCanceledException(canceled) => canceled
                        .cancellation_reasons()
                        .iter()
                        .position(|reason| reason.code() == Some("ConditionalCheckFailed")),
                    _ => None,
                });
                match refused.and_then(|i| writes.get(i).map(|w| (i, w))) {
                    Some((i, write)) => Err(condition_failed(table.as_str(), &write.key, &write.condition)
                        .with_field(format!("writes[{i}]"))),
                    None => Err(table_error(table.as_str(), "TransactWriteItems", err)),
                }
            }
        }
    }

    async fn delete(&self, op: ops::Delete<'_>) -> ExoResult<bool> {
        let ops::Delete { table, key, condition } = op;
        let now = now_ms();
        let (expression, values) = condition_expression(condition, now).unzip();
        let result = self
            .client
            .delete_item()
            .table_name(self.physical(table.as_str()))
            .set_key(Some(item_key(key)))
            .set_condition_expression(expression)
            .set_expression_attribute_values(values)
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match result {
            // An expired item that DynamoDB had not yet removed did not exist for the contract.
            Ok(out) => Ok(out.attributes().and_then(|old| entry_of(old, now, true)).is_some()),
            Err(err)
                if service_code(&err).is_some_and(|(code, _)| code == "ConditionalCheckFailedException") =>
            {
                Err(condition_failed(table.as_str(), key, condition))
            }
            Err(err) => Err(table_error(table.as_str(), "DeleteItem", err)),
        }
    }

    async fn list(&self, op: ops::List<'_>) -> ExoResult<Vec<pb::Entry>> {
        let ops::List { table, prefix, start_after, limit, keys_only } = op;
        let now = now_ms();
        let mut entries = Vec::new();
        // A resume point before the prefix starts at the prefix itself.
        let mut start = start_after.filter(|after| *after >= prefix).map(item_key);
        let (condition, values) = if prefix.is_empty() {
            ("p = :p".to_owned(), HashMap::from([(":p".to_owned(), s(PARTITION))]))
        } else {
            (
                "p = :p AND begins_with(k, :prefix)".to_owned(),
                HashMap::from([(":p".to_owned(), s(PARTITION)), (":prefix".to_owned(), s(prefix))]),
            )
        };
        while entries.len() < limit {
            let mut query = self
                .client
                .query()
                .table_name(self.physical(table.as_str()))
                .key_condition_expression(&condition)
                .set_expression_attribute_values(Some(values.clone()))
                .set_exclusive_start_key(start.take())
                .consistent_read(true)
                // Expired items are dropped after the read; the loop fetches more if needed.
                .limit((limit - entries.len()).clamp(1, 1000) as i32);
            if keys_only {
                query = query.projection_expression("k, ver, exp_ms");
            }
            let out = query.send().await.map_err(|e| table_error(table.as_str(), "Query", e))?;
            entries.extend(out.items().iter().filter_map(|item| entry_of(item, now, keys_only)));
            match out.last_evaluated_key() {
                Some(last) if !last.is_empty() => start = Some(last.clone()),
                _ => break,
            }
        }
        entries.truncate(limit);
        Ok(entries)
    }

    async fn batch_get(&self, op: ops::BatchGet<'_>) -> ExoResult<Vec<pb::Entry>> {
        let ops::BatchGet { table, keys } = op;
        let now = now_ms();
        let physical = self.physical(table.as_str());
        let mut found: HashMap<String, pb::Entry> = HashMap::with_capacity(keys.len());
        let mut pending: Vec<HashMap<String, AttributeValue>> = keys.iter().map(|k| item_key(k)).collect();
        let mut backoff = Duration::from_millis(20);
        while !pending.is_empty() {
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .consistent_read(true)
                .build()
                .map_err(|e| ExoError::internal(format!("cannot build a batch read: {e}")))?;
            let out = self
                .client
                .batch_get_item()
                .request_items(&physical, request)
                .send()
                .await
                .map_err(|e| table_error(table.as_str(), "BatchGetItem", e))?;
            for item in out.responses().and_then(|r| r.get(&physical)).into_iter().flatten() {
                if let Some(entry) = entry_of(item, now, false) {
                    found.insert(entry.key.clone(), entry);
                }
            }
            // DynamoDB may leave keys unprocessed under load: read them again after a pause.
            if let Some(left) = out.unprocessed_keys().and_then(|u| u.get(&physical)) {
                pending = left.keys().to_vec();
                if !pending.is_empty() {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
        Ok(keys.iter().filter_map(|k| found.remove(k)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_items_are_absent_and_keys_only_drops_values() {
        let mut item = item_key("a/b#c?");
        item.insert("v".into(), AttributeValue::B(Blob::new(vec![0, 255])));
        item.insert("ver".into(), s("v1"));
        item.insert("exp_ms".into(), n(0));
        let entry = entry_of(&item, 10, false).unwrap();
        assert_eq!(
            (entry.key.as_str(), entry.value.as_slice(), entry.version.as_str()),
            ("a/b#c?", &[0, 255][..], "v1")
        );
        assert!(entry_of(&item, 10, true).unwrap().value.is_empty());
        item.insert("exp_ms".into(), n(10));
        assert!(entry_of(&item, 10, false).is_none());
        assert!(entry_of(&item, 9, false).is_some());
    }

    #[test]
    fn conditions_treat_expired_items_as_absent() {
        assert!(condition_expression(&Condition::None, 1).is_none());
        let (create, _) = condition_expression(&Condition::MustNotExist, 1).unwrap();
        assert!(create.contains("attribute_not_exists(k)") && create.contains("exp_ms <= :now"));
        let (cas, values) = condition_expression(&Condition::VersionEquals("v9".into()), 1).unwrap();
        assert!(cas.contains("ver = :ver") && cas.contains("exp_ms > :now"));
        assert_eq!(values.get(":ver"), Some(&s("v9")));
    }
}
