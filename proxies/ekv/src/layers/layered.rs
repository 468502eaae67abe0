//! Cross-cutting behaviour wrapped around any key-value backend: metrics (with error
//! attribution) and timeouts. The bodies are shared with every service in `exo_proxy_core::layer`.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use exo_proto::kv::v1 as pb;
use exo_proxy_core::{ExoResult, layer, metrics::Metrics};

use crate::{
    backend::KeyValue,
    model::{Condition, Descriptor, TableName},
};

/// Metrics, logs and backend attribution, then a per-call timeout.
pub struct Layered {
    inner: Arc<dyn KeyValue>,
    metrics: Arc<Metrics>,
    timeout: Duration,
}

impl Layered {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn KeyValue>, metrics: Arc<Metrics>, timeout: Duration) -> Self {
        Self { inner, metrics, timeout }
    }

    async fn call<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = ExoResult<T>>,
    ) -> ExoResult<T> {
        let backend = self.inner.descriptor().backend;
        layer::observe(&self.metrics, "kv", op, backend, layer::bounded(self.timeout, fut)).await
    }
}

#[async_trait]
impl KeyValue for Layered {
    fn descriptor(&self) -> &Descriptor {
        self.inner.descriptor()
    }
    async fn ready(&self) -> ExoResult<()> {
        layer::bounded(self.timeout, self.inner.ready()).await
    }
    async fn create_table(&self, table: &TableName) -> ExoResult<bool> {
        self.call("create_table", self.inner.create_table(table)).await
    }
    async fn delete_table(&self, table: &TableName) -> ExoResult<()> {
        self.call("delete_table", self.inner.delete_table(table)).await
    }
    async fn list_tables(&self) -> ExoResult<Vec<String>> {
        self.call("list_tables", self.inner.list_tables()).await
    }
    async fn get(&self, table: &TableName, key: &str) -> ExoResult<pb::Entry> {
        self.call("get", self.inner.get(table, key)).await
    }
    async fn put(
        &self,
        table: &TableName,
        key: &str,
        value: Vec<u8>,
        condition: &Condition,
        expires_at_ms: u64,
    ) -> ExoResult<String> {
        self.call("put", self.inner.put(table, key, value, condition, expires_at_ms)).await
    }
    async fn delete(&self, table: &TableName, key: &str, condition: &Condition) -> ExoResult<bool> {
        self.call("delete", self.inner.delete(table, key, condition)).await
    }
    async fn list(
        &self,
        table: &TableName,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        keys_only: bool,
    ) -> ExoResult<Vec<pb::Entry>> {
        self.call("list", self.inner.list(table, prefix, start_after, limit, keys_only)).await
    }
    async fn batch_get(&self, table: &TableName, keys: &[String]) -> ExoResult<Vec<pb::Entry>> {
        self.call("batch_get", self.inner.batch_get(table, keys)).await
    }
}
