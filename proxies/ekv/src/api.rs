//! The key-value API in front of every backend: validation, limits, capabilities and paging,
//! shared by the gRPC service and the HTTP/JSON routes.

use std::{collections::HashSet, sync::Arc};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use exo_proto::{common::v1::ErrorReason, kv::v1 as pb};
use exo_proxy_core::{ExoError, ExoResult, now_ms};

use crate::ops;
use crate::{
    backend::KeyValue,
    model::{Capability, Change, Condition, Descriptor, TableName, Write},
};

/// Validating front of a key-value backend.
#[derive(Clone)]
pub struct KvApi {
    backend: Arc<dyn KeyValue>,
}

impl std::fmt::Debug for KvApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvApi").field("backend", &self.backend.descriptor().backend).finish()
    }
}

impl KvApi {
    /// Serves `backend` (usually already wrapped in layers).
    pub fn new(backend: Arc<dyn KeyValue>) -> Self {
        Self { backend }
    }

    fn descriptor(&self) -> &Descriptor {
        self.backend.descriptor()
    }

    fn with_backend_name(&self, err: ExoError) -> ExoError {
        err.with_backend(self.descriptor().backend)
    }

    fn table(&self, name: &str, field: &str) -> ExoResult<TableName> {
        TableName::parse("table", name, field).map_err(|e| self.with_backend_name(e))
    }

    fn key(&self, key: &str, field: &str) -> ExoResult<()> {
        let max = self.descriptor().limits.max_key_bytes as usize;
        if key.is_empty() || key.len() > max {
            return Err(self.with_backend_name(ExoError::invalid_argument(
                field,
                format!("keys must be 1 to {max} bytes of UTF-8, got {}", key.len()),
            )));
        }
        Ok(())
    }

    /// The backend's name, capabilities and limits; BACKEND_UNAVAILABLE (retryable) while it
    /// has not described itself (a `remote` not reached yet).
    pub fn describe(&self) -> ExoResult<pb::DescribeResponse> {
        if !self.backend.is_described() {
            return Err(self.with_backend_name(exo_proxy_core::descriptor::not_described()));
        }
        let d = self.descriptor();
        Ok(pb::DescribeResponse {
            backend: d.backend.to_owned(),
            capabilities: d.capability_codes(),
            limits: Some(d.limits),
        })
    }

    /// Validates the name and creates the table; `created` is false when it existed.
    pub async fn create_table(&self, req: pb::CreateTableRequest) -> ExoResult<pb::CreateTableResponse> {
        let table = self.table(&req.name, "name")?;
        Ok(pb::CreateTableResponse {
            created: self.backend.create_table(ops::CreateTable { table: &table }).await?,
        })
    }

    /// Deletes a table and every entry in it.
    pub async fn delete_table(&self, req: pb::DeleteTableRequest) -> ExoResult<pb::DeleteTableResponse> {
        let table = self.table(&req.name, "name")?;
        self.backend.delete_table(ops::DeleteTable { table: &table }).await?;
        Ok(pb::DeleteTableResponse {})
    }

    /// Every table name in lexical order.
    pub async fn list_tables(&self, _req: pb::ListTablesRequest) -> ExoResult<pb::ListTablesResponse> {
        Ok(pb::ListTablesResponse { names: self.backend.list_tables(ops::ListTables).await? })
    }

    /// Reads one live entry (KEY_NOT_FOUND when absent or expired).
    pub async fn get(&self, req: pb::GetRequest) -> ExoResult<pb::GetResponse> {
        let table = self.table(&req.table, "table")?;
        self.key(&req.key, "key")?;
        Ok(pb::GetResponse {
            entry: Some(self.backend.get(ops::Get { table: &table, key: &req.key }).await?),
        })
    }

    /// Writes one entry after checking key, value, TTL and condition; returns the new version.
    pub async fn put(&self, req: pb::PutRequest) -> ExoResult<pb::PutResponse> {
        let table = self.table(&req.table, "table")?;
        self.key(&req.key, "key")?;
        let limits = self.descriptor().limits;
        if req.value.len() as u64 > limits.max_value_bytes {
            return Err(self.with_backend_name(
                ExoError::new(
                    ErrorReason::ValueTooLarge,
                    format!(
                        "value is {} bytes, above the limit of {} bytes",
                        req.value.len(),
                        limits.max_value_bytes
                    ),
                )
                .with_field("value"),
            ));
        }
        let condition = self.condition(req.condition)?;
        let expires_at_ms = self.expiry(req.ttl_seconds)?;
        let version = self
            .backend
            .put(ops::Put {
                table: &table,
                key: &req.key,
                value: req.value,
                condition: &condition,
                expires_at_ms,
            })
            .await?;
        Ok(pb::PutResponse { version })
    }

    /// The expiry a time to live sets (0: none), after checking the backend has TTLs and the
    /// limit.
    fn expiry(&self, ttl_seconds: u32) -> ExoResult<u64> {
        if ttl_seconds == 0 {
            return Ok(0);
        }
        self.descriptor().require(Capability::Ttl, "time to live")?;
        let max = self.descriptor().limits.max_ttl_seconds;
        if ttl_seconds > max {
            return Err(self.with_backend_name(ExoError::invalid_argument(
                "ttl_seconds",
                format!("ttl {ttl_seconds} s is above the maximum {max} s"),
            )));
        }
        Ok(now_ms() + u64::from(ttl_seconds) * 1000)
    }

    /// Adds `delta` to a counter atomically; answers its new value and version.
    pub async fn increment(&self, req: pb::IncrementRequest) -> ExoResult<pb::IncrementResponse> {
        let table = self.table(&req.table, "table")?;
        self.key(&req.key, "key")?;
        self.descriptor().require(Capability::Increment, "counters")?;
        let expires_at_ms = self.expiry(req.ttl_seconds)?;
        self.backend
            .increment(ops::Increment { table: &table, key: &req.key, delta: req.delta, expires_at_ms })
            .await
    }

    /// Checks every write (keys distinct, sizes and counts within the limits, conditions a
    /// batch allows), then writes them all or none.
    pub async fn write_batch(&self, req: pb::WriteBatchRequest) -> ExoResult<pb::WriteBatchResponse> {
        let table = self.table(&req.table, "table")?;
        self.descriptor().require(Capability::AtomicBatch, "batch writes")?;
        let limits = self.descriptor().limits;
        let max = limits.max_batch_writes as usize;
        if req.writes.is_empty() || req.writes.len() > max {
            return Err(self.with_backend_name(ExoError::invalid_argument(
                "writes",
                format!("a batch needs 1 to {max} writes, got {}", req.writes.len()),
            )));
        }
        let total: u64 = req.writes.iter().map(|w| w.value.len() as u64).sum();
        if total > limits.max_batch_bytes {
            return Err(self.with_backend_name(
                ExoError::new(
                    ErrorReason::ValueTooLarge,
                    format!(
                        "the batch's values total {total} bytes, above the limit of {} bytes",
                        limits.max_batch_bytes
                    ),
                )
                .with_field("writes"),
            ));
        }
        let mut seen = HashSet::with_capacity(req.writes.len());
        let mut writes = Vec::with_capacity(req.writes.len());
        for (i, w) in req.writes.into_iter().enumerate() {
            let field = |name: &str| format!("writes[{i}].{name}");
            self.key(&w.key, &field("key"))?;
            if !seen.insert(w.key.clone()) {
                return Err(self.with_backend_name(ExoError::invalid_argument(
                    field("key"),
                    format!("key {:?} appears twice in the batch", w.key),
                )));
            }
            let condition =
                self.condition(w.condition).map_err(|e| e.with_field(format!("writes[{i}].condition")))?;
            let change = if w.delete {
                let misplaced = if condition == Condition::MustNotExist {
                    Some(("condition", "a delete takes only version_equals"))
                } else if !w.value.is_empty() {
                    Some(("value", "a delete carries no value"))
                } else if w.ttl_seconds != 0 {
                    Some(("ttl_seconds", "a delete has no time to live"))
                } else {
                    None
                };
                if let Some((name, why)) = misplaced {
                    return Err(self.with_backend_name(ExoError::invalid_argument(field(name), why)));
                }
                Change::Delete
            } else {
                if w.value.len() as u64 > limits.max_value_bytes {
                    return Err(self.with_backend_name(
                        ExoError::new(
                            ErrorReason::ValueTooLarge,
                            format!(
                                "value is {} bytes, above the limit of {} bytes",
                                w.value.len(),
                                limits.max_value_bytes
                            ),
                        )
                        .with_field(field("value")),
                    ));
                }
                let expires_at_ms =
                    self.expiry(w.ttl_seconds).map_err(|e| e.with_field(field("ttl_seconds")))?;
                Change::Put { value: w.value, expires_at_ms }
            };
            writes.push(Write { key: w.key, change, condition });
        }
        let versions = self.backend.write_batch(ops::WriteBatch { table: &table, writes: &writes }).await?;
        Ok(pb::WriteBatchResponse { versions })
    }

    fn condition(&self, condition: Option<pb::Condition>) -> ExoResult<Condition> {
        let condition = match condition.and_then(|c| c.kind) {
            None => return Ok(Condition::None),
            Some(pb::condition::Kind::MustNotExist(true)) => Condition::MustNotExist,
            Some(pb::condition::Kind::MustNotExist(false)) => {
                return Err(self.with_backend_name(ExoError::invalid_argument(
                    "condition.must_not_exist",
                    "must_not_exist must be true when set; leave the condition unset for an unconditional write",
                )));
            }
            Some(pb::condition::Kind::VersionEquals(version)) => {
                self.version(version, "condition.version_equals")?
            }
        };
        self.descriptor().require(Capability::CompareAndSet, "conditional writes")?;
        Ok(condition)
    }

    fn version(&self, version: String, field: &str) -> ExoResult<Condition> {
        if version.is_empty() || version.len() > 256 {
            return Err(self.with_backend_name(ExoError::invalid_argument(
                field,
                "a version must be 1 to 256 characters",
            )));
        }
        Ok(Condition::VersionEquals(version))
    }

    /// Deletes one entry if its condition holds; `deleted` says whether it existed.
    pub async fn delete(&self, req: pb::DeleteRequest) -> ExoResult<pb::DeleteResponse> {
        let table = self.table(&req.table, "table")?;
        self.key(&req.key, "key")?;
        let condition = if req.version_equals.is_empty() {
            Condition::None
        } else {
            let condition = self.version(req.version_equals, "version_equals")?;
            self.descriptor().require(Capability::CompareAndSet, "conditional deletes")?;
            condition
        };
        Ok(pb::DeleteResponse {
            deleted: self
                .backend
                .delete(ops::Delete { table: &table, key: &req.key, condition: &condition })
                .await?,
        })
    }

    /// List. Page tokens are the last key of the previous page, opaquely encoded.
    pub async fn list(&self, req: pb::ListRequest) -> ExoResult<pb::ListResponse> {
        let table = self.table(&req.table, "table")?;
        self.descriptor().require(Capability::List, "listing")?;
        let max = self.descriptor().limits.max_page_size;
        let page_size = match req.page_size {
            0 => max,
            n if n <= max => n,
            n => {
                return Err(self.with_backend_name(ExoError::invalid_argument(
                    "page_size",
                    format!("page_size {n} is above the maximum {max}"),
                )));
            }
        };
        if req.prefix.len() > self.descriptor().limits.max_key_bytes as usize {
            return Err(self.with_backend_name(ExoError::invalid_argument(
                "prefix",
                "prefix is longer than the longest key",
            )));
        }
        let start_after = if req.page_token.is_empty() {
            None
        } else {
            let raw = exo_proxy_core::json::page_token_bytes(&req.page_token)
                .map_err(|e| self.with_backend_name(e))?;
            Some(String::from_utf8_lossy(&raw).into_owned())
        };
        let mut entries = self
            .backend
            .list(ops::List {
                table: &table,
                prefix: &req.prefix,
                start_after: start_after.as_deref(),
                limit: page_size as usize + 1,
                keys_only: req.keys_only,
            })
            .await?;
        let next_page_token = if entries.len() > page_size as usize {
            entries.truncate(page_size as usize);
            entries.last().map(|e| URL_SAFE_NO_PAD.encode(&e.key)).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListResponse { entries, next_page_token })
    }

    /// Reads up to the batch limit of keys at once; absent keys are left out.
    pub async fn batch_get(&self, req: pb::BatchGetRequest) -> ExoResult<pb::BatchGetResponse> {
        let table = self.table(&req.table, "table")?;
        let max = self.descriptor().limits.max_batch_keys as usize;
        if req.keys.is_empty() || req.keys.len() > max {
            return Err(self.with_backend_name(ExoError::invalid_argument(
                "keys",
                format!("a batch needs 1 to {max} keys, got {}", req.keys.len()),
            )));
        }
        let mut seen = HashSet::with_capacity(req.keys.len());
        for (i, key) in req.keys.iter().enumerate() {
            self.key(key, &format!("keys[{i}]"))?;
            if !seen.insert(key.as_str()) {
                return Err(self.with_backend_name(ExoError::invalid_argument(
                    format!("keys[{i}]"),
                    format!("key {key:?} appears twice"),
                )));
            }
        }
        let entries = self.backend.batch_get(ops::BatchGet { table: &table, keys: &req.keys }).await?;
        let found: HashSet<&str> = entries.iter().map(|e| e.key.as_str()).collect();
        let missing = req.keys.iter().filter(|k| !found.contains(k.as_str())).cloned().collect();
        Ok(pb::BatchGetResponse { entries, missing })
    }
}
