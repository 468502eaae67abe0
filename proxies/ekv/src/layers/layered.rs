//! The one wrapper between the API and any key-value backend: each operation runs through the
//! proxy's layer stack (composed in [`crate::EkvProxy::bind_with`]), which reads the operation's
//! name and kind from [`crate::ops`]. Layers are written once, for every service, in
//! `exo_proxy_core::layers`.

use async_trait::async_trait;
use exo_proto::kv::v1 as pb;
use exo_proxy_core::{
    ExoResult,
    layers::{Layer, Named},
};

use crate::{backend::KeyValue, model::Descriptor, ops};

/// A key-value backend behind a layer stack.
pub type Layered<L> = exo_proxy_core::layers::Layered<dyn KeyValue, L>;

impl Named for dyn KeyValue {
    const SERVICE: &'static str = "kv";
    fn backend_name(&self) -> &'static str {
        self.descriptor().backend
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<L: Layer> KeyValue for Layered<L> {
    fn descriptor(&self) -> &Descriptor {
        self.inner().descriptor()
    }
    fn is_described(&self) -> bool {
        self.inner().is_described()
    }
    async fn ready(&self) -> ExoResult<()> {
        self.probe_ready(self.inner().ready()).await
    }
    async fn create_table(&self, op: ops::CreateTable<'_>) -> ExoResult<bool> {
        self.run(op, |op| self.inner().create_table(op)).await
    }
    async fn delete_table(&self, op: ops::DeleteTable<'_>) -> ExoResult<()> {
        self.run(op, |op| self.inner().delete_table(op)).await
    }
    async fn list_tables(&self, op: ops::ListTables) -> ExoResult<Vec<String>> {
        self.run(op, |op| self.inner().list_tables(op)).await
    }
    async fn get(&self, op: ops::Get<'_>) -> ExoResult<pb::Entry> {
        self.run(op, |op| self.inner().get(op)).await
    }
    async fn put(&self, op: ops::Put<'_>) -> ExoResult<String> {
        self.run(op, |op| self.inner().put(op)).await
    }
    async fn delete(&self, op: ops::Delete<'_>) -> ExoResult<bool> {
        self.run(op, |op| self.inner().delete(op)).await
    }
    async fn list(&self, op: ops::List<'_>) -> ExoResult<Vec<pb::Entry>> {
        self.run(op, |op| self.inner().list(op)).await
    }
    async fn batch_get(&self, op: ops::BatchGet<'_>) -> ExoResult<Vec<pb::Entry>> {
        self.run(op, |op| self.inner().batch_get(op)).await
    }
    async fn increment(&self, op: ops::Increment<'_>) -> ExoResult<pb::IncrementResponse> {
        self.run(op, |op| self.inner().increment(op)).await
    }
    async fn write_batch(&self, op: ops::WriteBatch<'_>) -> ExoResult<Vec<String>> {
        self.run(op, |op| self.inner().write_batch(op)).await
    }
}
