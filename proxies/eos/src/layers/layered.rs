//! Cross-cutting behaviour wrapped around any object backend: metrics (with error attribution)
//! and timeouts, with bodies shared through `exo_proxy_core::layer`. Uploads and downloads are
//! timed only up to the start of their data (a 2 GiB transfer may rightly take minutes).

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use exo_proto::object::v1 as pb;
use exo_proxy_core::{ExoResult, layer, metrics::Metrics};

use crate::{
    backend::ObjectStore,
    listing::{Page, Resume},
    model::{BucketName, ByteStream, Descriptor, Presigned, PutMeta, Range, ReadCondition, WriteCondition},
};

/// Metrics, logs and backend attribution, then a per-call timeout.
pub struct Layered {
    inner: Arc<dyn ObjectStore>,
    metrics: Arc<Metrics>,
    timeout: Duration,
}

impl Layered {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>, metrics: Arc<Metrics>, timeout: Duration) -> Self {
        Self { inner, metrics, timeout }
    }

    async fn call<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = ExoResult<T>>,
    ) -> ExoResult<T> {
        layer::observe(
            &self.metrics,
            "object",
            op,
            self.inner.descriptor().backend,
            layer::bounded(self.timeout, fut),
        )
        .await
    }

    async fn untimed<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = ExoResult<T>>,
    ) -> ExoResult<T> {
        layer::observe(&self.metrics, "object", op, self.inner.descriptor().backend, fut).await
    }
}

#[async_trait]
impl ObjectStore for Layered {
    fn descriptor(&self) -> &Descriptor {
        self.inner.descriptor()
    }
    async fn ready(&self) -> ExoResult<()> {
        layer::bounded(self.timeout, self.inner.ready()).await
    }
    async fn create_bucket(&self, bucket: &BucketName) -> ExoResult<bool> {
        self.call("create_bucket", self.inner.create_bucket(bucket)).await
    }
    async fn delete_bucket(&self, bucket: &BucketName) -> ExoResult<()> {
        self.call("delete_bucket", self.inner.delete_bucket(bucket)).await
    }
    async fn list_buckets(&self) -> ExoResult<Vec<String>> {
        self.call("list_buckets", self.inner.list_buckets()).await
    }
    async fn put(
        &self,
        bucket: &BucketName,
        key: &str,
        meta: PutMeta,
        body: ByteStream,
    ) -> ExoResult<pb::ObjectInfo> {
        self.untimed("put", self.inner.put(bucket, key, meta, body)).await
    }
    async fn get(
        &self,
        bucket: &BucketName,
        key: &str,
        range: Option<Range>,
        condition: &ReadCondition,
    ) -> ExoResult<(pb::ObjectInfo, (u64, u64), ByteStream)> {
        self.call("get", self.inner.get(bucket, key, range, condition)).await
    }
    async fn head(&self, bucket: &BucketName, key: &str) -> ExoResult<pb::ObjectInfo> {
        self.call("head", self.inner.head(bucket, key)).await
    }
    async fn delete(&self, bucket: &BucketName, key: &str, if_match: Option<&str>) -> ExoResult<()> {
        self.call("delete", self.inner.delete(bucket, key, if_match)).await
    }
    async fn list(
        &self,
        bucket: &BucketName,
        prefix: &str,
        delimiter: &str,
        resume: Option<Resume>,
        limit: usize,
    ) -> ExoResult<Page> {
        self.call("list", self.inner.list(bucket, prefix, delimiter, resume, limit)).await
    }
    async fn copy(
        &self,
        source_bucket: &BucketName,
        source_key: &str,
        bucket: &BucketName,
        key: &str,
        condition: &WriteCondition,
    ) -> ExoResult<pb::ObjectInfo> {
        self.untimed("copy", self.inner.copy(source_bucket, source_key, bucket, key, condition)).await
    }
    async fn presign(
        &self,
        bucket: &BucketName,
        key: &str,
        method: pb::PresignMethod,
        expires_at_ms: u64,
    ) -> ExoResult<Presigned> {
        self.call("presign", self.inner.presign(bucket, key, method, expires_at_ms)).await
    }
}
