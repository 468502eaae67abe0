//! The one wrapper between the API and any object backend: each method becomes a
//! [`Call`](exo_proxy_core::layers::Call) run through the proxy's layer stack (composed in
//! [`crate::EosProxy::with_backend`]). Uploads and copies are not bounded by the per-call
//! timeout (a 2 GiB transfer may rightly take minutes); downloads are timed up to the start of
//! their data. Layers are written once, for every service, in `exo_proxy_core::layers`.

use std::{future::Future, sync::Arc, time::Duration};

use async_trait::async_trait;
use exo_proto::object::v1 as pb;
use exo_proxy_core::{
    ExoResult,
    layers::{Call, Layer, bounded},
};

use crate::{
    backend::ObjectStore,
    listing::{Page, Resume},
    model::{BucketName, ByteStream, Descriptor, Presigned, PutMeta, Range, ReadCondition, WriteCondition},
};

/// A object backend behind a layer stack.
pub struct Layered<L> {
    inner: Arc<dyn ObjectStore>,
    layers: L,
    /// Bounds the readiness probe, which is not a request and is not counted.
    ready_timeout: Duration,
}

impl<L: Layer> Layered<L> {
    /// Runs every call to `inner` through `layers`.
    pub fn new(inner: Arc<dyn ObjectStore>, layers: L, ready_timeout: Duration) -> Self {
        Self { inner, layers, ready_timeout }
    }

    fn call(&self, op: &'static str) -> Call {
        Call::new("object", op, self.inner.descriptor().backend)
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
impl<L: Layer> ObjectStore for Layered<L> {
    fn descriptor(&self) -> &Descriptor {
        self.inner.descriptor()
    }
    fn is_described(&self) -> bool {
        self.inner.is_described()
    }
    fn native_bucket_name(&self, bucket: &BucketName) -> String {
        self.inner.native_bucket_name(bucket)
    }
    async fn ready(&self) -> ExoResult<()> {
        // An open breaker answers at once: the backend is known to be down.
        if let Some(refused) = self.layers.refusing(self.call("ready")) {
            return Err(refused);
        }
        bounded(self.ready_timeout, self.inner.ready()).await
    }
    async fn create_bucket(&self, bucket: &BucketName) -> ExoResult<bool> {
        self.run(self.call("create_bucket"), self.inner.create_bucket(bucket)).await
    }
    async fn delete_bucket(&self, bucket: &BucketName) -> ExoResult<()> {
        self.run(self.call("delete_bucket"), self.inner.delete_bucket(bucket)).await
    }
    async fn list_buckets(&self) -> ExoResult<Vec<String>> {
        self.read("list_buckets", || self.inner.list_buckets()).await
    }
    async fn put(
        &self,
        bucket: &BucketName,
        key: &str,
        meta: PutMeta,
        body: ByteStream,
    ) -> ExoResult<pb::ObjectInfo> {
        // Not repeatable whatever its condition: the body stream is consumed by the first try.
        self.run(self.call("put").not_idempotent().untimed(), self.inner.put(bucket, key, meta, body)).await
    }
    async fn get(
        &self,
        bucket: &BucketName,
        key: &str,
        range: Option<Range>,
        condition: &ReadCondition,
    ) -> ExoResult<(pb::ObjectInfo, (u64, u64), ByteStream)> {
        self.read("get", || self.inner.get(bucket, key, range, condition)).await
    }
    async fn head(&self, bucket: &BucketName, key: &str) -> ExoResult<pb::ObjectInfo> {
        self.read("head", || self.inner.head(bucket, key)).await
    }
    async fn delete(&self, bucket: &BucketName, key: &str, if_match: Option<&str>) -> ExoResult<()> {
        let call = self.call("delete");
        let call = if if_match.is_some() { call.not_idempotent() } else { call };
        self.run(call, self.inner.delete(bucket, key, if_match)).await
    }
    async fn list(
        &self,
        bucket: &BucketName,
        prefix: &str,
        delimiter: &str,
        resume: Option<Resume>,
        limit: usize,
    ) -> ExoResult<Page> {
        self.read("list", || self.inner.list(bucket, prefix, delimiter, resume.clone(), limit)).await
    }
    async fn copy(
        &self,
        source_bucket: &BucketName,
        source_key: &str,
        bucket: &BucketName,
        key: &str,
        condition: &WriteCondition,
    ) -> ExoResult<pb::ObjectInfo> {
        let call = self.call("copy").untimed();
        let call = if *condition == WriteCondition::None { call } else { call.not_idempotent() };
        self.run(call, self.inner.copy(source_bucket, source_key, bucket, key, condition)).await
    }
    async fn presign(
        &self,
        bucket: &BucketName,
        key: &str,
        method: pb::PresignMethod,
        expires_at_ms: u64,
    ) -> ExoResult<Presigned> {
        self.run(self.call("presign"), self.inner.presign(bucket, key, method, expires_at_ms)).await
    }
}
