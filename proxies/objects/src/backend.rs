//! The one trait every object backend implements: one method per operation of [`crate::ops`],
//! taking the operation as a value. Requests arrive validated by [`crate::api`];
//! layers in [`crate::layers`] wrap it.

use async_trait::async_trait;
use exo_proto::object::v1 as pb;
use exo_proxy_core::ExoResult;

use crate::{
    listing::Page,
    model::{BucketName, ByteStream, Descriptor, Presigned},
    ops,
};

/// An object backend.
///
/// Contract for implementors: a put consumes `body` and makes the object visible atomically
/// only after the last byte is stored (a failed or cancelled body leaves nothing and keeps the
/// previous object); conditions are checked atomically with the write they guard; memory stays
/// bounded whatever the object size (the memory backend aside).
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Name, capabilities and limits.
    fn descriptor(&self) -> &Descriptor;

    /// Whether [`Self::descriptor`] is the backend's own. Only a backend that learns it from
    /// elsewhere (a `remote` not reached yet) is ever `false`; it serves nothing until `true`.
    fn is_described(&self) -> bool {
        true
    }
    /// `Ok` when the backend can serve requests.
    async fn ready(&self) -> ExoResult<()>;
    /// The name the backend's own service knows `bucket` by (S3 adds `name-prefix`): what a
    /// native client names it, e.g. in a large-message reference.
    fn native_bucket_name(&self, bucket: &BucketName) -> String {
        bucket.as_str().to_owned()
    }
    /// Creates a bucket; false if it existed.
    async fn create_bucket(&self, op: ops::CreateBucket<'_>) -> ExoResult<bool>;
    /// Deletes an empty bucket.
    async fn delete_bucket(&self, op: ops::DeleteBucket<'_>) -> ExoResult<()>;
    /// Every bucket name in lexical order.
    async fn list_buckets(&self, op: ops::ListBuckets) -> ExoResult<Vec<String>>;
    /// Stores `body` under the op's key.
    async fn put(&self, op: ops::Put<'_>, body: ByteStream) -> ExoResult<pb::ObjectInfo>;
    /// Opens an object (or a range of it): its attributes, the `(offset, length)` served, and the bytes.
    async fn get(&self, op: ops::Get<'_>) -> ExoResult<(pb::ObjectInfo, (u64, u64), ByteStream)>;
    /// An object's attributes.
    async fn head(&self, op: ops::Head<'_>) -> ExoResult<pb::ObjectInfo>;
    /// Deletes an object; a missing key succeeds unless `if_match` is given.
    async fn delete(&self, op: ops::Delete<'_>) -> ExoResult<()>;
    /// One page of a listing.
    async fn list(&self, op: ops::List<'_>) -> ExoResult<Page>;
    /// Copies an object; the copy's attributes are its own.
    async fn copy(&self, op: ops::Copy<'_>) -> ExoResult<pb::ObjectInfo>;
    /// A URL (and any headers it needs) allowing `method` on the object until `expires_at_ms`.
    async fn presign(&self, op: ops::Presign<'_>) -> ExoResult<Presigned>;
}
