//! The one wrapper between the API and any object backend: each operation runs through the
//! proxy's layer stack, which reads the operation's name and kind from [`crate::ops`]. Uploads and copies are not bounded by the per-call
//! timeout (a 2 GiB transfer may rightly take minutes); downloads are timed up to the start of
//! their data. Layers are written once, for every service, in `exo_proxy_core::layers`.

use async_trait::async_trait;
use exo_proto::object::v1 as pb;
use exo_proxy_core::{
    ExoResult,
    layers::{Layer, Named},
};

use crate::{
    backend::ObjectStore,
    listing::Page,
    model::{BucketName, ByteStream, Descriptor, Presigned},
    ops,
};

/// An object backend behind a layer stack.
pub type Layered<L> = exo_proxy_core::layers::Layered<dyn ObjectStore, L>;

impl Named for dyn ObjectStore {
    const SERVICE: &'static str = "object";
    fn backend_name(&self) -> &'static str {
        self.descriptor().backend
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<L: Layer> ObjectStore for Layered<L> {
    fn descriptor(&self) -> &Descriptor {
        self.inner().descriptor()
    }
    fn is_described(&self) -> bool {
        self.inner().is_described()
    }
    fn native_bucket_name(&self, bucket: &BucketName) -> String {
        self.inner().native_bucket_name(bucket)
    }
    async fn ready(&self) -> ExoResult<()> {
        self.probe_ready(self.inner().ready()).await
    }
    async fn create_bucket(&self, op: ops::CreateBucket<'_>) -> ExoResult<bool> {
        self.run(op, |op| self.inner().create_bucket(op)).await
    }
    async fn delete_bucket(&self, op: ops::DeleteBucket<'_>) -> ExoResult<()> {
        self.run(op, |op| self.inner().delete_bucket(op)).await
    }
    async fn list_buckets(&self, op: ops::ListBuckets) -> ExoResult<Vec<String>> {
        self.run(op, |op| self.inner().list_buckets(op)).await
    }
    async fn put(&self, op: ops::Put<'_>, body: ByteStream) -> ExoResult<pb::ObjectInfo> {
        // Run once: the body is consumed by the first try.
        self.run_once(&op.clone(), self.inner().put(op, body)).await
    }
    async fn get(&self, op: ops::Get<'_>) -> ExoResult<(pb::ObjectInfo, (u64, u64), ByteStream)> {
        self.run(op, |op| self.inner().get(op)).await
    }
    async fn head(&self, op: ops::Head<'_>) -> ExoResult<pb::ObjectInfo> {
        self.run(op, |op| self.inner().head(op)).await
    }
    async fn delete(&self, op: ops::Delete<'_>) -> ExoResult<()> {
        self.run(op, |op| self.inner().delete(op)).await
    }
    async fn list(&self, op: ops::List<'_>) -> ExoResult<Page> {
        self.run(op, |op| self.inner().list(op)).await
    }
    async fn copy(&self, op: ops::Copy<'_>) -> ExoResult<pb::ObjectInfo> {
        self.run(op, |op| self.inner().copy(op)).await
    }
    async fn presign(&self, op: ops::Presign<'_>) -> ExoResult<Presigned> {
        self.run(op, |op| self.inner().presign(op)).await
    }
}
