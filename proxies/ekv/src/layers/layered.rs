//! The one wrapper between the API and any key-value backend: each method becomes a
//! [`Call`](exo_proxy_core::layers::Call) run through the proxy's layer stack (composed in
//! [`crate::EkvProxy::with_backend`]). Conditional writes are marked not safe to repeat (a repeat of one
//! that took effect would fail its own condition). Layers are written once, for every service,
//! in `exo_proxy_core::layers`.

use std::{future::Future, sync::Arc, time::Duration};

use async_trait::async_trait;
use exo_proto::kv::v1 as pb;
use exo_proxy_core::{
    ExoResult,
    layers::{Call, Layer, bounded},
};

use crate::{
    backend::KeyValue,
    model::{Condition, Descriptor, TableName},
};

/// A key-value backend behind a layer stack.
pub struct Layered<L> {
    inner: Arc<dyn KeyValue>,
    layers: L,
    /// Bounds the readiness probe, which is not a request and is not counted.
    ready_timeout: Duration,
}

impl<L: Layer> Layered<L> {
    /// Runs every call to `inner` through `layers`.
    pub fn new(inner: Arc<dyn KeyValue>, layers: L, ready_timeout: Duration) -> Self {
        Self { inner, layers, ready_timeout }
    }

    fn call(&self, op: &'static str) -> Call {
        Call::new("kv", op, self.inner.descriptor().backend)
    }

    async fn run<T: Send>(&self, call: Call, fut: impl Future<Output = ExoResult<T>> + Send) -> ExoResult<T> {
        self.layers.wrap(call, fut).await
    }

    /// A read: safe to repeat, so the stack may retry it after a retryable failure.
    async fn read<T: Send, F, Fut>(&self, op: &'static str, attempt: F) -> ExoResult<T>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = ExoResult<T>> + Send,
    {
        self.layers.wrap_repeatable(self.call(op), attempt).await
    }
}

#[async_trait]
impl<L: Layer> KeyValue for Layered<L> {
    fn descriptor(&self) -> &Descriptor {
        self.inner.descriptor()
    }
    fn is_described(&self) -> bool {
        self.inner.is_described()
    }
    async fn ready(&self) -> ExoResult<()> {
        // An open breaker answers at once: the backend is known to be down.
        if let Some(refused) = self.layers.refusing(self.call("ready")) {
            return Err(refused);
        }
        bounded(self.ready_timeout, self.inner.ready()).await
    }
    async fn create_table(&self, table: &TableName) -> ExoResult<bool> {
        self.run(self.call("create_table"), self.inner.create_table(table)).await
    }
    async fn delete_table(&self, table: &TableName) -> ExoResult<()> {
        self.run(self.call("delete_table"), self.inner.delete_table(table)).await
    }
    async fn list_tables(&self) -> ExoResult<Vec<String>> {
        self.read("list_tables", || self.inner.list_tables()).await
    }
    async fn get(&self, table: &TableName, key: &str) -> ExoResult<pb::Entry> {
        self.read("get", || self.inner.get(table, key)).await
    }
    async fn put(
        &self,
        table: &TableName,
        key: &str,
        value: Vec<u8>,
        condition: &Condition,
        expires_at_ms: u64,
    ) -> ExoResult<String> {
        let call = self.call("put");
        let call = if *condition == Condition::None { call } else { call.not_idempotent() };
        self.run(call, self.inner.put(table, key, value, condition, expires_at_ms)).await
    }
    async fn delete(&self, table: &TableName, key: &str, condition: &Condition) -> ExoResult<bool> {
        let call = self.call("delete");
        let call = if *condition == Condition::None { call } else { call.not_idempotent() };
        self.run(call, self.inner.delete(table, key, condition)).await
    }
    async fn list(
        &self,
        table: &TableName,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        keys_only: bool,
    ) -> ExoResult<Vec<pb::Entry>> {
        self.read("list", || self.inner.list(table, prefix, start_after, limit, keys_only)).await
    }
    async fn batch_get(&self, table: &TableName, keys: &[String]) -> ExoResult<Vec<pb::Entry>> {
        self.read("batch_get", || self.inner.batch_get(table, keys)).await
    }
}
