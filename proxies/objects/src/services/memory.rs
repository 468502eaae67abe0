//! `memory`: objects in process memory, for tests and benchmarks (not durable; objects up to
//! the configured size are buffered whole).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use exo_proto::{common::v1::ErrorReason, object::v1 as pb};
use exo_proxy_core::{ExoError, ExoResult, now_ms};
use futures::StreamExt as _;

use crate::ops;
use crate::{
    backend::ObjectStore,
    listing::{Page, list_page},
    model::{
        BucketName, ByteStream, Capability, Descriptor, Presigned, WriteCondition, bucket_not_found,
        check_upload_size, local_limits, new_etag, object_not_found,
    },
    presign::LocalPresigner,
    services::bytes_stream,
};

#[derive(Clone)]
struct StoredObject {
    info: pb::ObjectInfo,
    data: Bytes,
}

type Bucket = BTreeMap<Vec<u8>, StoredObject>;

/// The settings of a `memory` backend.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MemoryConfig {
    /// Largest object in bytes.
    #[serde(default = "default_max_object_bytes")]
    pub max_object_bytes: u64,
}

fn default_max_object_bytes() -> u64 {
    crate::services::DEFAULT_MEMORY_OBJECT_BYTES
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self { max_object_bytes: default_max_object_bytes() }
    }
}

impl exo_proxy_core::registry::Backend for MemoryObjects {
    type Opened = Arc<dyn ObjectStore>;
    type Context = crate::services::OpenContext;
    type Config = MemoryConfig;

    fn settings(_data: Option<std::path::PathBuf>) -> MemoryConfig {
        MemoryConfig::default()
    }

    fn open<'a>(
        config: &'a MemoryConfig,
        context: &'a Self::Context,
    ) -> exo_proxy_core::registry::BoxFuture<'a, ExoResult<Self::Opened>> {
        let store: Self::Opened =
            Arc::new(MemoryObjects::new(config.max_object_bytes, context.presigner.clone()));
        Box::pin(async move { Ok(store) })
    }
}

/// The in-memory object backend.
pub struct MemoryObjects {
    descriptor: Descriptor,
    buckets: Mutex<BTreeMap<String, Bucket>>,
    presigner: Arc<LocalPresigner>,
}

impl std::fmt::Debug for MemoryObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryObjects").finish_non_exhaustive()
    }
}

impl MemoryObjects {
    /// A store holding objects up to `max_object_bytes` each.
    pub fn new(max_object_bytes: u64, presigner: Arc<LocalPresigner>) -> Self {
        use Capability::*;
        Self {
            descriptor: Descriptor {
                backend: "memory",
                capabilities: [
                    ConditionalCreate,
                    ConditionalReplace,
                    Presign,
                    Copy,
                    RangeRead,
                    IdempotentDelete,
                ]
                .into(),
                limits: local_limits(max_object_bytes),
            },
            buckets: Mutex::new(BTreeMap::new()),
            presigner,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Bucket>> {
        // No step between related writes can panic, so a poisoned lock is still consistent.
        self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn with_bucket<T>(
        &self,
        bucket: &BucketName,
        f: impl FnOnce(&mut Bucket) -> ExoResult<T>,
    ) -> ExoResult<T> {
        let mut buckets = self.lock();
        f(buckets.get_mut(bucket.as_str()).ok_or_else(|| bucket_not_found(bucket.as_str()))?)
    }

    fn store(
        &self,
        bucket: &BucketName,
        key: &str,
        condition: &WriteCondition,
        mut info: pb::ObjectInfo,
        data: Bytes,
    ) -> ExoResult<pb::ObjectInfo> {
        self.with_bucket(bucket, |objects| {
            let current = objects.get(key.as_bytes()).map(|o| o.info.etag.as_str());
            condition.check(current, bucket.as_str(), key)?;
            info.etag = new_etag();
            info.last_modified_ms = now_ms();
            objects.insert(key.as_bytes().to_vec(), StoredObject { info: info.clone(), data });
            Ok(info)
        })
    }
}

#[async_trait]
impl ObjectStore for MemoryObjects {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    async fn ready(&self) -> ExoResult<()> {
        Ok(())
    }

    async fn create_bucket(&self, op: ops::CreateBucket<'_>) -> ExoResult<bool> {
        let ops::CreateBucket { bucket } = op;
        let mut buckets = self.lock();
        if buckets.contains_key(bucket.as_str()) {
            return Ok(false);
        }
        buckets.insert(bucket.to_string(), Bucket::new());
        Ok(true)
    }

    async fn delete_bucket(&self, op: ops::DeleteBucket<'_>) -> ExoResult<()> {
        let ops::DeleteBucket { bucket } = op;
        let mut buckets = self.lock();
        match buckets.get(bucket.as_str()) {
            None => Err(bucket_not_found(bucket.as_str())),
            Some(objects) if !objects.is_empty() => Err(ExoError::new(
                ErrorReason::NotEmpty,
                format!("bucket '{bucket}' still holds {} objects", objects.len()),
            )
            .with_resource(bucket.as_str())),
            Some(_) => {
                buckets.remove(bucket.as_str());
                Ok(())
            }
        }
    }

    async fn list_buckets(&self, _op: ops::ListBuckets) -> ExoResult<Vec<String>> {
        Ok(self.lock().keys().cloned().collect())
    }

    async fn put(&self, op: ops::Put<'_>, mut body: ByteStream) -> ExoResult<pb::ObjectInfo> {
        let ops::Put { bucket, key, meta } = op;
        // Fail before taking any bytes when the bucket is missing or create-only cannot hold.
        self.with_bucket(bucket, |objects| {
            let current = objects.get(key.as_bytes()).map(|o| o.info.etag.as_str());
            match meta.condition {
                WriteCondition::CreateOnly => meta.condition.check(current, bucket.as_str(), key),
                _ => Ok(()),
            }
        })?;
        let mut data = BytesMut::new();
        while let Some(chunk) = body.next().await {
            data.extend_from_slice(&chunk?);
            check_upload_size(data.len() as u64, &meta, false)?;
        }
        check_upload_size(data.len() as u64, &meta, true)?;
        let info = pb::ObjectInfo {
            bucket: bucket.to_string(),
            key: key.to_owned(),
            size: data.len() as u64,
            content_type: meta.content_type,
            metadata: meta.metadata,
            ..Default::default()
        };
        self.store(bucket, key, &meta.condition, info, data.freeze())
    }

    async fn get(&self, op: ops::Get<'_>) -> ExoResult<(pb::ObjectInfo, (u64, u64), ByteStream)> {
        let ops::Get { bucket, key, range, condition } = op;
        let object = self.with_bucket(bucket, |objects| {
            objects.get(key.as_bytes()).cloned().ok_or_else(|| object_not_found(bucket.as_str(), key))
        })?;
        condition.check(&object.info.etag, bucket.as_str(), key)?;
        let (offset, length) = match range {
            Some(range) => range.resolve(object.info.size)?,
            None => (0, object.info.size),
        };
        Ok((object.info, (offset, length), bytes_stream(object.data, offset, length)))
    }

    async fn head(&self, op: ops::Head<'_>) -> ExoResult<pb::ObjectInfo> {
        let ops::Head { bucket, key } = op;
        self.with_bucket(bucket, |objects| {
            objects
                .get(key.as_bytes())
                .map(|o| o.info.clone())
                .ok_or_else(|| object_not_found(bucket.as_str(), key))
        })
    }

    async fn delete(&self, op: ops::Delete<'_>) -> ExoResult<()> {
        let ops::Delete { bucket, key, if_match } = op;
        self.with_bucket(bucket, |objects| {
            if let Some(want) = if_match {
                let current = objects.get(key.as_bytes()).map(|o| o.info.etag.as_str());
                WriteCondition::IfMatch(want.to_owned()).check(current, bucket.as_str(), key)?;
            }
            objects.remove(key.as_bytes());
            Ok(())
        })
    }

    async fn list(&self, op: ops::List<'_>) -> ExoResult<Page> {
        let ops::List { bucket, prefix, delimiter, resume, limit } = op;
        self.with_bucket(bucket, |objects| {
            list_page(prefix, delimiter, resume, limit, |lower, inclusive, upper, n| {
                Ok(objects
                    .range(lower.to_vec()..)
                    .filter(|(k, _)| inclusive || k.as_slice() != lower)
                    .take_while(|(k, _)| upper.is_none_or(|u| k.as_slice() < u))
                    .take(n)
                    .map(|(_, o)| o.info.clone())
                    .collect())
            })
        })
    }

    async fn copy(&self, op: ops::Copy<'_>) -> ExoResult<pb::ObjectInfo> {
        let ops::Copy { source_bucket, source_key, bucket, key, condition } = op;
        let source = self.with_bucket(source_bucket, |objects| {
            objects
                .get(source_key.as_bytes())
                .cloned()
                .ok_or_else(|| object_not_found(source_bucket.as_str(), source_key))
        })?;
        // The copy gets its own attributes (a clone, never a shared reference).
        let info = pb::ObjectInfo {
            bucket: bucket.to_string(),
            key: key.to_owned(),
            metadata: HashMap::clone(&source.info.metadata),
            ..source.info
        };
        self.store(bucket, key, condition, info, source.data)
    }

    async fn presign(&self, op: ops::Presign<'_>) -> ExoResult<Presigned> {
        let ops::Presign { bucket, key, method, expires_at_ms } = op;
        self.with_bucket(bucket, |_| Ok(()))?;
        Ok(self.presigner.url(bucket.as_str(), key, method, expires_at_ms).into())
    }
}
