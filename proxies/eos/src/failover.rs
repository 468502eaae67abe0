//! Failover across an ordered chain of object stores (DESIGN.md §4), without mirroring:
//! writes go to the first member that answers; a read that misses on one member is looked up
//! on the next, so objects written to a standby during an outage are still found after
//! fail-back; buckets are created and deleted on every member. Objects written only to a member
//! that is down are unavailable until it returns (mirroring is not built). A streamed upload
//! cannot be replayed: if its member fails (and then fails its readiness check), the upload fails
//! and the member sits out its back-off, so the client's retry goes to the next one. ETags are a member's own: an if-match
//! from one member fails (safely) on another.

use std::sync::Arc;

use async_trait::async_trait;
use exo_proto::{common::v1::ErrorReason, object::v1 as pb};
use exo_proxy_core::{ExoError, ExoResult, failover::Chain};

use crate::{
    backend::ObjectStore,
    listing::{Page, Resume},
    model::{BucketName, ByteStream, Descriptor, Presigned, PutMeta, Range, ReadCondition, WriteCondition},
};

/// A chain of object stores behaving as one.
pub struct FailoverObjects {
    chain: Chain<dyn ObjectStore>,
    descriptor: Descriptor,
}

fn missing(err: &ExoError) -> bool {
    matches!(err.reason, ErrorReason::ObjectNotFound | ErrorReason::BucketNotFound)
}

impl FailoverObjects {
    /// Chains `members` in priority order: capabilities every member has, each limit the
    /// smallest (a limit of 0, "none", never wins over a real one).
    pub fn new(members: Vec<Arc<dyn ObjectStore>>) -> ExoResult<Self> {
        let mut descriptor = members
            .first()
            .ok_or_else(|| ExoError::internal("a failover chain needs at least one member"))?
            .descriptor()
            .clone();
        descriptor.backend = "failover";
        for m in &members[1..] {
            let d = m.descriptor();
            descriptor.capabilities.retain(|c| d.capabilities.contains(c));
            let (l, o) = (&mut descriptor.limits, d.limits);
            l.max_object_bytes = match (l.max_object_bytes, o.max_object_bytes) {
                (0, other) | (other, 0) => other,
                (a, b) => a.min(b),
            };
            l.max_key_bytes = l.max_key_bytes.min(o.max_key_bytes);
            l.max_metadata_entries = l.max_metadata_entries.min(o.max_metadata_entries);
            l.max_metadata_bytes = l.max_metadata_bytes.min(o.max_metadata_bytes);
            l.max_page_size = l.max_page_size.min(o.max_page_size);
            l.max_presign_seconds = l.max_presign_seconds.min(o.max_presign_seconds);
        }
        Ok(Self { chain: Chain::new(members)?, descriptor })
    }

    /// Changes how long a failed member is skipped (tests use a short one).
    pub fn with_backoff(mut self, backoff: std::time::Duration) -> Self {
        self.chain = self.chain.with_backoff(backoff);
        self
    }
}

#[async_trait]
impl ObjectStore for FailoverObjects {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }
    async fn ready(&self) -> ExoResult<()> {
        self.chain.first(|m| async move { m.ready().await }).await
    }
    async fn create_bucket(&self, bucket: &BucketName) -> ExoResult<bool> {
        let created = self.chain.every(|m| async move { m.create_bucket(bucket).await }).await?;
        Ok(created.first().copied().unwrap_or(false))
    }
    async fn delete_bucket(&self, bucket: &BucketName) -> ExoResult<()> {
        let missing = |e: &ExoError| e.reason == ErrorReason::BucketNotFound;
        self.chain.every_present(missing, |m| async move { m.delete_bucket(bucket).await }).await
    }
    async fn list_buckets(&self) -> ExoResult<Vec<String>> {
        self.chain.first(|m| async move { m.list_buckets().await }).await
    }
    async fn put(
        &self,
        bucket: &BucketName,
        key: &str,
        meta: PutMeta,
        body: ByteStream,
    ) -> ExoResult<pb::ObjectInfo> {
        let Some((index, member)) = self.chain.available().next() else {
            return Err(ExoError::unavailable("every member of the failover chain is down"));
        };
        let result = member.put(bucket, key, meta, body).await;
        // An upload also fails when its client goes away (reported as unavailable too): only a
        // member that then fails its readiness check is set aside.
        if let Err(err) = &result
            && exo_proxy_core::failover::is_outage(err)
            && let Err(down) = member.ready().await
        {
            self.chain.note(index, &down);
        }
        result
    }
    async fn get(
        &self,
        bucket: &BucketName,
        key: &str,
        range: Option<Range>,
        condition: &ReadCondition,
    ) -> ExoResult<(pb::ObjectInfo, (u64, u64), ByteStream)> {
        self.chain.first_found(missing, |m| async move { m.get(bucket, key, range, condition).await }).await
    }
    async fn head(&self, bucket: &BucketName, key: &str) -> ExoResult<pb::ObjectInfo> {
        self.chain.first_found(missing, |m| async move { m.head(bucket, key).await }).await
    }
    async fn delete(&self, bucket: &BucketName, key: &str, if_match: Option<&str>) -> ExoResult<()> {
        self.chain.first(|m| async move { m.delete(bucket, key, if_match).await }).await
    }
    async fn list(
        &self,
        bucket: &BucketName,
        prefix: &str,
        delimiter: &str,
        resume: Option<Resume>,
        limit: usize,
    ) -> ExoResult<Page> {
        self.chain
            .first(|m| {
                let resume = resume.clone();
                async move { m.list(bucket, prefix, delimiter, resume, limit).await }
            })
            .await
    }
    async fn copy(
        &self,
        source_bucket: &BucketName,
        source_key: &str,
        bucket: &BucketName,
        key: &str,
        condition: &WriteCondition,
    ) -> ExoResult<pb::ObjectInfo> {
        self.chain
            .first(|m| async move { m.copy(source_bucket, source_key, bucket, key, condition).await })
            .await
    }
    async fn presign(
        &self,
        bucket: &BucketName,
        key: &str,
        method: pb::PresignMethod,
        expires_at_ms: u64,
    ) -> ExoResult<Presigned> {
        self.chain.first(|m| async move { m.presign(bucket, key, method, expires_at_ms).await }).await
    }
}
