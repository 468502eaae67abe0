//! `azure-blob`: Azure Blob Storage (block blobs) through the `azure_storage_blobs` crate.
//!
//! How the contract maps onto Blob storage:
//! - **Buckets** are containers `<name-prefix><bucket>`; objects are block blobs, keys are blob
//!   names unchanged, content type and metadata are the blob's own (`x-ms-meta-*`).
//! - **Uploads** are read into one block buffer ([`BLOCK_BYTES`]). A body that ends within it is
//!   one Put Blob; a longer one is staged block by block (one block in memory at a time) and
//!   committed with Put Block List. Staged blocks that are never committed are discarded by Azure
//!   (after a week), are invisible meanwhile, and leave the previous blob untouched.
//! - **Conditions** are Azure's: create-only is `If-None-Match: *`, if-match `If-Match`, on Put
//!   Blob / Put Block List and Delete Blob, checked atomically by the service.
//! - **Reads** first read the properties (conditions, size, ETag), then stream the blob in 16 MiB
//!   ranges pinned to that ETag, so a blob replaced mid-read fails instead of mixing versions.
//! - **Copy** streams the source through a put (the copy honours the destination condition, and
//!   no SAS or copy polling is needed).
//! - **Listing** is List Blobs with Azure's delimiter; page tokens wrap Azure's marker.
//! - **Presign** returns a service SAS URL (read or create+write), which needs `account-key`
//!   credentials.
//! - ETags are Azure's, without quotes.
//! - **Key escaping.** Blob names travel in URL paths, where `\` turns into `/`, `.` and `..`
//!   segments are folded away and empty segments are trimmed. A key segment Blob storage cannot
//!   hold is stored escaped (`%` → `%25`, `\` → `%5C`, a segment `.` → `%2E`, `..` → `%2E%2E`, an
//!   empty segment → `%0`); so is a segment that would otherwise read back as another key (one
//!   that is itself such an escape). Every other segment — `file%20name.pdf` included — is
//!   stored as it is. Keys and storable names correspond one to one: every listed key reads,
//!   writes and deletes its own blob, native or not. Escaped keys list in the order of their
//!   escaped names (sorted within a page); a listing prefix is sent up to its first `%` or `\`
//!   and the rest filtered by the proxy.

use std::collections::HashMap;

use async_trait::async_trait;
use azure_core::{prelude::*, request_options::Metadata};
use azure_storage_blobs::{
    blob::{BlobBlockType, BlockList},
    container::operations::BlobItem,
    prelude::*,
};
use bytes::Bytes;
use exo_azure::{AzureSettings, Service, map_error, service_code};
use exo_proto::{common::v1::ErrorReason, object::v1 as pb};
use exo_proxy_core::{ExoError, ExoResult, readiness};
use futures::StreamExt as _;

use crate::ops;
use crate::{
    backend::ObjectStore,
    listing::{Page, Resume},
    model::{
        BucketName, ByteStream, Capability, Descriptor, Presigned, PutMeta, ReadCondition, WriteCondition,
        bare_etag, bucket_not_found, nothing_to_match, object_not_found, quoted_etag,
    },
    upload::{PartReader, stored_info},
};

/// Bytes per staged block.
pub const BLOCK_BYTES: usize = 8 * 1024 * 1024;
/// Azure allows 50 000 blocks per blob.
pub const MAX_OBJECT_BYTES: u64 = BLOCK_BYTES as u64 * 50_000;
/// Bytes per ranged read.
const READ_RANGE: u64 = 16 * 1024 * 1024;

/// The Azure Blob backend.
pub struct AzureBlobs {
    descriptor: Descriptor,
    service: BlobServiceClient,
    /// The same account on a client that retries, for steps safe to repeat.
    staging: BlobServiceClient,
    name_prefix: String,
}

impl std::fmt::Debug for AzureBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureBlobs").field("name_prefix", &self.name_prefix).finish_non_exhaustive()
    }
}

fn blob_error(bucket: &str, key: Option<&str>, operation: &str, err: &azure_core::Error) -> ExoError {
    let resource = key.map_or_else(|| bucket.to_owned(), |k| format!("{bucket}/{k}"));
    match service_code(err) {
        Some((404, "ContainerNotFound")) => bucket_not_found(bucket),
        Some((404, "BlobNotFound")) => object_not_found(bucket, key.unwrap_or_default()),
        Some((412, _)) | Some((409, "BlobAlreadyExists")) => ExoError::new(
            ErrorReason::ConditionFailed,
            format!("condition failed for {resource}: the blob's ETag or existence does not match"),
        )
        .with_resource(resource),
        Some((304, _)) => ExoError::new(ErrorReason::NotModified, format!("{resource} is not modified"))
            .with_resource(resource),
        Some((409, "ContainerBeingDeleted")) => ExoError::new(
            ErrorReason::BackendUnavailable,
            format!("container '{bucket}' is being deleted by Azure; retry shortly"),
        )
        .with_resource(bucket)
        .retryable(),
        Some((413, _)) | Some((_, "RequestBodyTooLarge")) => {
            ExoError::new(ErrorReason::ValueTooLarge, format!("Azure refused {resource} as too large"))
                .with_resource(resource)
        }
        _ => map_error("azure-blob", operation, err).with_resource(resource),
    }
}

fn millis(time: time::OffsetDateTime) -> u64 {
    (time.unix_timestamp_nanos() / 1_000_000).max(0) as u64
}

fn write_condition(condition: &WriteCondition) -> Option<IfMatchCondition> {
    match condition {
        WriteCondition::None => None,
        WriteCondition::CreateOnly => Some(IfMatchCondition::NotMatch("*".to_owned())),
        WriteCondition::IfMatch(etag) => Some(IfMatchCondition::Match(quoted_etag(etag))),
    }
}

fn metadata_of(map: &HashMap<String, String>) -> Metadata {
    let mut metadata = Metadata::new();
    for (name, value) in map {
        metadata.insert(name.clone(), value.clone());
    }
    metadata
}

/// A key segment Blob storage cannot hold as it is: URL paths turn `\\` into `/`, fold `.` and
/// `..` away and trim empty segments.
fn unstorable(segment: &str) -> bool {
    matches!(segment, "" | "." | "..") || segment.contains('\\')
}

/// The raw escape of one segment (every `%` and `\\` escaped, whole-segment markers).
fn encode_segment(segment: &str) -> String {
    match segment {
        "" => "%0".to_owned(),
        "." => "%2E".to_owned(),
        ".." => "%2E%2E".to_owned(),
        _ => segment.replace('%', "%25").replace('\\', "%5C"),
    }
}

/// The raw inverse of [`encode_segment`]; any other `%` stays as it is.
fn decode_segment(name: &str) -> String {
    match name {
        "%0" => String::new(),
        "%2E" => ".".to_owned(),
        "%2E%2E" => "..".to_owned(),
        _ => {
            let mut out = String::with_capacity(name.len());
            let mut rest = name;
            while let Some(at) = rest.find('%') {
                out.push_str(&rest[..at]);
                let tail = &rest[at..];
                if let Some(after) = tail.strip_prefix("%25") {
                    out.push('%');
                    rest = after;
                } else if let Some(after) = tail.strip_prefix("%5C") {
                    out.push('\\');
                    rest = after;
                } else {
                    out.push('%');
                    rest = &tail[1..];
                }
            }
            out.push_str(rest);
            out
        }
    }
}

/// The name a key segment is stored under: itself, unless Blob storage cannot hold it or it
/// would be read back as another key; then its escape.
fn segment_name(segment: &str) -> String {
    if unstorable(segment) || segment_key(segment) != segment {
        encode_segment(segment)
    } else {
        segment.to_owned()
    }
}

/// The key segment a stored name holds: its decoding if that is exactly how the key would be
/// stored, else the name itself. With [`segment_name`] this is a bijection between every key
/// and every name Blob storage can hold, so a native `file%20name.pdf` is the key
/// `file%20name.pdf` and every listed key reads its own blob. (The mutual recursion ends: a
/// decoding that changes a name shortens it.)
fn segment_key(name: &str) -> String {
    let decoded = decode_segment(name);
    if decoded != name && segment_name(&decoded) == name { decoded } else { name.to_owned() }
}

/// The blob name a key is stored under (see the module docs).
fn blob_name(key: &str) -> String {
    key.split('/').map(segment_name).collect::<Vec<_>>().join("/")
}

/// The name prefix to list for a key prefix: both a key and its escape start with the key up to
/// its first `%` or `\\` (or unstorable whole segment); the listing filters the rest.
fn blob_prefix(prefix: &str) -> &str {
    let mut end = prefix.find(['%', '\\']).unwrap_or(prefix.len());
    let mut at = 0;
    for segment in prefix[..end].split('/') {
        let whole = at + segment.len() < prefix.len() && prefix.as_bytes()[at + segment.len()] == b'/';
        if whole && unstorable(segment) {
            end = end.min(at);
            break;
        }
        at += segment.len() + 1;
    }
    &prefix[..end]
}

/// The key a blob name stores.
fn key_of(name: &str) -> String {
    name.split('/').map(segment_key).collect::<Vec<_>>().join("/")
}

/// Block ids must all have the same length: a zero-padded counter, base64-encoded by the crate.
fn block_id(index: usize) -> BlockId {
    BlockId::new(format!("exo-{index:08}"))
}

fn info_of(bucket: &BucketName, key: &str, blob: &Blob) -> pb::ObjectInfo {
    pb::ObjectInfo {
        bucket: bucket.to_string(),
        key: key.to_owned(),
        size: blob.properties.content_length,
        etag: bare_etag(blob.properties.etag.as_ref()),
        content_type: blob.properties.content_type.clone(),
        metadata: blob
            .metadata
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
        last_modified_ms: millis(blob.properties.last_modified),
    }
}

impl exo_proxy_core::registry::Backend for AzureBlobs {
    type Opened = std::sync::Arc<dyn ObjectStore>;
    type Context = crate::services::OpenContext;
    type Config = AzureSettings;

    fn settings(_data: Option<std::path::PathBuf>) -> AzureSettings {
        AzureSettings::default()
    }

    fn validate(config: &AzureSettings) -> Result<(), exo_proxy_core::config::ConfigError> {
        config.validate()
    }

    fn open<'a>(
        config: &'a AzureSettings,
        _context: &'a Self::Context,
    ) -> exo_proxy_core::registry::BoxFuture<'a, ExoResult<Self::Opened>> {
        Box::pin(async move {
            let store: Self::Opened = std::sync::Arc::new(AzureBlobs::connect(config)?);
            Ok(store)
        })
    }
}

impl AzureBlobs {
    /// Connects with `settings` (nothing is sent until the first call).
    pub fn connect(settings: &AzureSettings) -> ExoResult<Self> {
        let (location, credentials) = settings.connect(Service::Blob)?;
        let service = ClientBuilder::with_location(location.clone(), credentials.clone())
            .retry(exo_azure::no_retries())
            .blob_service_client();
        let staging = ClientBuilder::with_location(location, credentials)
            .retry(exo_azure::step_retries())
            .blob_service_client();
        use Capability::*;
        Ok(Self {
            descriptor: Descriptor {
                backend: "azure-blob",
                capabilities: [
                    ConditionalCreate,
                    ConditionalReplace,
                    Presign,
                    Copy,
                    RangeRead,
                    IdempotentDelete,
                ]
                .into(),
                limits: pb::Limits {
                    max_object_bytes: MAX_OBJECT_BYTES,
                    max_key_bytes: 1024,
                    max_metadata_entries: 32,
                    max_metadata_bytes: 2048,
                    max_page_size: 1000,
                    max_presign_seconds: 7 * 24 * 3600,
                },
            },
            service,
            staging,
            name_prefix: settings.name_prefix.clone(),
        })
    }

    fn container(&self, bucket: &str) -> ContainerClient {
        self.service.container_client(format!("{}{bucket}", self.name_prefix))
    }

    fn blob(&self, bucket: &str, key: &str) -> BlobClient {
        self.container(bucket).blob_client(blob_name(key))
    }

    /// The blob, on the client that retries (for staging blocks: each is safe to send again).
    fn staged_blob(&self, bucket: &str, key: &str) -> BlobClient {
        self.staging.container_client(format!("{}{bucket}", self.name_prefix)).blob_client(blob_name(key))
    }

    async fn properties(&self, bucket: &BucketName, key: &str) -> ExoResult<Blob> {
        match self.blob(bucket.as_str(), key).get_properties().await {
            Ok(out) => Ok(out.blob),
            Err(err) if matches!(service_code(&err), Some((404, _))) => {
                // HEAD carries no error code: tell a missing blob from a missing container.
                Err(match self.container(bucket.as_str()).exists().await {
                    Ok(false) => bucket_not_found(bucket.as_str()),
                    Ok(true) => object_not_found(bucket.as_str(), key),
                    Err(err) => blob_error(bucket.as_str(), None, "GetContainerProperties", &err),
                })
            }
            Err(err) => Err(blob_error(bucket.as_str(), Some(key), "GetBlobProperties", &err)),
        }
    }

    async fn put_single(
        &self,
        bucket: &BucketName,
        key: &str,
        meta: &PutMeta,
        data: Bytes,
    ) -> ExoResult<String> {
        let mut put = self
            .blob(bucket.as_str(), key)
            .put_block_blob(data)
            .content_type(meta.content_type.clone())
            .metadata(metadata_of(&meta.metadata));
        if let Some(condition) = write_condition(&meta.condition) {
            put = put.if_match(condition);
        }
        let out = put.await.map_err(|e| self.put_error(bucket, key, &meta.condition, "PutBlob", &e))?;
        Ok(bare_etag(&out.etag))
    }

    /// If-Match on a missing blob is a failed condition, not a missing object.
    fn put_error(
        &self,
        bucket: &BucketName,
        key: &str,
        condition: &WriteCondition,
        operation: &str,
        err: &azure_core::Error,
    ) -> ExoError {
        let mapped = blob_error(bucket.as_str(), Some(key), operation, err);
        if mapped.reason == ErrorReason::ObjectNotFound && matches!(condition, WriteCondition::IfMatch(_)) {
            return nothing_to_match(bucket.as_str(), key);
        }
        mapped
    }

    /// Stages an upload block by block (`first` already read), then commits the list under the
    /// condition.
    async fn put_blocks(
        &self,
        bucket: &BucketName,
        key: &str,
        meta: &PutMeta,
        first: Bytes,
        parts: &mut PartReader<'_>,
    ) -> ExoResult<String> {
        let client = self.blob(bucket.as_str(), key);
        let staging = self.staged_blob(bucket.as_str(), key);
        let mut blocks = Vec::new();
        let mut next = Some(first);
        while let Some(block) = next {
            let id = block_id(blocks.len());
            staging
                .put_block(id.clone(), block)
                .await
                .map_err(|e| blob_error(bucket.as_str(), Some(key), "PutBlock", &e))?;
            blocks.push(BlobBlockType::new_uncommitted(id));
            next = parts.next_part().await?;
        }
        let mut commit = client
            .put_block_list(BlockList { blocks })
            .content_type(meta.content_type.clone())
            .metadata(metadata_of(&meta.metadata));
        if let Some(condition) = write_condition(&meta.condition) {
            commit = commit.if_match(condition);
        }
        let out =
            commit.await.map_err(|e| self.put_error(bucket, key, &meta.condition, "PutBlockList", &e))?;
        Ok(bare_etag(&out.etag))
    }
}

#[async_trait]
impl ObjectStore for AzureBlobs {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    async fn ready(&self) -> ExoResult<()> {
        let mut pages = self.service.list_containers().max_results(std::num::NonZeroU32::MIN).into_stream();
        match pages.next().await {
            Some(Err(err)) => readiness(Err(map_error("azure-blob", "ListContainers", &err))),
            _ => Ok(()),
        }
    }

    async fn create_bucket(&self, op: ops::CreateBucket<'_>) -> ExoResult<bool> {
        let ops::CreateBucket { bucket } = op;
        match self.container(bucket.as_str()).create().await {
            Ok(_) => Ok(true),
            Err(err) if matches!(service_code(&err), Some((409, "ContainerAlreadyExists"))) => Ok(false),
            Err(err) => Err(blob_error(bucket.as_str(), None, "CreateContainer", &err)),
        }
    }

    async fn delete_bucket(&self, op: ops::DeleteBucket<'_>) -> ExoResult<()> {
        let ops::DeleteBucket { bucket } = op;
        // Azure deletes a container with its blobs: refuse unless it is empty, as the contract says.
        let container = self.container(bucket.as_str());
        let mut pages = container.list_blobs().max_results(std::num::NonZeroU32::MIN).into_stream();
        match pages.next().await {
            Some(Ok(page)) if !page.blobs.items.is_empty() => {
                return Err(ExoError::new(ErrorReason::NotEmpty, format!("bucket '{bucket}' is not empty"))
                    .with_resource(bucket.as_str()));
            }
            Some(Err(err)) => return Err(blob_error(bucket.as_str(), None, "ListBlobs", &err)),
            _ => {}
        }
        container
            .delete()
            .await
            .map(|_| ())
            .map_err(|e| blob_error(bucket.as_str(), None, "DeleteContainer", &e))
    }

    async fn list_buckets(&self, _op: ops::ListBuckets) -> ExoResult<Vec<String>> {
        let mut names = Vec::new();
        let mut pages = self.service.list_containers().prefix(self.name_prefix.clone()).into_stream();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_error("azure-blob", "ListContainers", &e))?;
            for container in page.containers {
                if let Some(name) = container.name.strip_prefix(self.name_prefix.as_str())
                    && BucketName::parse("bucket", name, "name").is_ok()
                {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    async fn put(&self, op: ops::Put<'_>, body: ByteStream) -> ExoResult<pb::ObjectInfo> {
        let ops::Put { bucket, key, meta } = op;
        let mut parts = PartReader::new(body, &meta, BLOCK_BYTES);
        let first = parts.next_part().await?.unwrap_or_default();
        let etag = if parts.done() {
            self.put_single(bucket, key, &meta, first).await?
        } else {
            self.put_blocks(bucket, key, &meta, first, &mut parts).await?
        };
        let size = parts.received();
        Ok(stored_info(bucket, key, size, etag, meta))
    }

    async fn get(&self, op: ops::Get<'_>) -> ExoResult<(pb::ObjectInfo, (u64, u64), ByteStream)> {
        let ops::Get { bucket, key, range, condition } = op;
        // Properties, then the bytes pinned to that ETag. A write landing between the two makes
        // the first read fail with 412: start over (the caller asked for no condition on that).
        let mut attempts = 0;
        loop {
            attempts += 1;
            let blob = self.properties(bucket, key).await?;
            let info = info_of(bucket, key, &blob);
            condition.check(&info.etag, bucket.as_str(), key)?;
            let (offset, length) = match range {
                Some(range) => range.resolve(info.size)?,
                None => (0, info.size),
            };
            if length == 0 {
                return Ok((info, (offset, 0), Box::pin(futures::stream::empty())));
            }
            let mut pages = self
                .blob(bucket.as_str(), key)
                .get()
                .range(offset..offset + length)
                .chunk_size(READ_RANGE)
                .if_match(IfMatchCondition::Match(quoted_etag(&info.etag)))
                .into_stream();
            let first = match pages.next().await {
                Some(Ok(page)) => page,
                Some(Err(err)) if matches!(service_code(&err), Some((412, _))) && attempts < 5 => continue,
                Some(Err(err)) => return Err(blob_error(bucket.as_str(), Some(key), "GetBlob", &err)),
                None => return Ok((info, (offset, 0), Box::pin(futures::stream::empty()))),
            };
            let (bucket_name, key_name) = (bucket.to_string(), key.to_owned());
            let body = |data: azure_core::ResponseBody| {
                data.map(|chunk| {
                    chunk.map_err(|e| ExoError::unavailable(format!("reading a blob from Azure failed: {e}")))
                })
            };
            // Each page is one ranged GET whose body streams: memory stays at one buffer.
            let rest = pages
                .map(move |page| match page {
                    Ok(page) => body(page.data).boxed(),
                    Err(err) => {
                        let mut failed = blob_error(&bucket_name, Some(&key_name), "GetBlob", &err);
                        if failed.reason == ErrorReason::ConditionFailed {
                            failed = ExoError::unavailable(format!(
                                "{bucket_name}/{key_name} was replaced while it was being read; read it again"
                            ));
                        }
                        futures::stream::once(async move { Err(failed) }).boxed()
                    }
                })
                .flatten();
            let stream = body(first.data).chain(rest);
            return Ok((info, (offset, length), Box::pin(stream)));
        }
    }

    async fn head(&self, op: ops::Head<'_>) -> ExoResult<pb::ObjectInfo> {
        let ops::Head { bucket, key } = op;
        Ok(info_of(bucket, key, &self.properties(bucket, key).await?))
    }

    async fn delete(&self, op: ops::Delete<'_>) -> ExoResult<()> {
        let ops::Delete { bucket, key, if_match } = op;
        let mut delete = self.blob(bucket.as_str(), key).delete();
        if let Some(etag) = if_match {
            delete = delete.if_match(IfMatchCondition::Match(quoted_etag(etag)));
        }
        match delete.await {
            Ok(_) => Ok(()),
            Err(err) => {
                let mapped = blob_error(bucket.as_str(), Some(key), "DeleteBlob", &err);
                match (mapped.reason, if_match) {
                    // Deleting a missing key succeeds, unless a version was required.
                    (ErrorReason::ObjectNotFound, None) => Ok(()),
                    (ErrorReason::ObjectNotFound, Some(_)) => Err(nothing_to_match(bucket.as_str(), key)),
                    _ => Err(mapped),
                }
            }
        }
    }

    async fn list(&self, op: ops::List<'_>) -> ExoResult<Page> {
        let ops::List { bucket, prefix, delimiter, resume, limit } = op;
        let mut request = self.container(bucket.as_str()).list_blobs().include_metadata(false).max_results(
            std::num::NonZeroU32::new(limit.clamp(1, 5000) as u32).unwrap_or(std::num::NonZeroU32::MIN),
        );
        let name_prefix = blob_prefix(prefix);
        if !name_prefix.is_empty() {
            request = request.prefix(name_prefix.to_owned());
        }
        if !delimiter.is_empty() {
            request = request.delimiter(Delimiter::new(delimiter.to_owned()));
        }
        if let Some(resume) = resume {
            request = request.marker(NextMarker::new(resume.continuation_token()?));
        }
        let page = match request.into_stream().next().await {
            Some(page) => page.map_err(|e| blob_error(bucket.as_str(), None, "ListBlobs", &e))?,
            None => return Ok(Page::default()),
        };
        let mut out = Page::default();
        for item in page.blobs.items {
            match item {
                BlobItem::Blob(blob) => {
                    let key = key_of(&blob.name);
                    if key.starts_with(prefix) {
                        out.objects.push(info_of(bucket, &key, &blob));
                    }
                }
                BlobItem::BlobPrefix(p) => {
                    let key = key_of(&p.name);
                    if key.starts_with(prefix) {
                        out.common_prefixes.push(key);
                    }
                }
            }
        }
        // Escaped names sort differently from their keys; within the page, order by key.
        out.objects.sort_by(|a, b| a.key.cmp(&b.key));
        out.common_prefixes.sort();
        out.next = page.next_marker.map(|marker| Resume::continuation(marker.as_str()));
        Ok(out)
    }

    async fn copy(&self, op: ops::Copy<'_>) -> ExoResult<pb::ObjectInfo> {
        let ops::Copy { source_bucket, source_key, bucket, key, condition } = op;
        // Streamed through the proxy: the destination condition holds atomically (Copy Blob
        // would need a SAS for its source and polling for its completion).
        let (info, _, body) = self
            .get(ops::Get {
                bucket: source_bucket,
                key: source_key,
                range: None,
                condition: &ReadCondition::default(),
            })
            .await?;
        let meta = PutMeta::copy_of(info, condition.clone(), MAX_OBJECT_BYTES);
        self.put(ops::Put { bucket, key, meta }, body).await
    }

    async fn presign(&self, op: ops::Presign<'_>) -> ExoResult<Presigned> {
        let ops::Presign { bucket, key, method, expires_at_ms } = op;
        let client = self.blob(bucket.as_str(), key);
        let permissions = match method {
            pb::PresignMethod::Put => {
                azure_storage::shared_access_signature::service_sas::BlobSasPermissions {
                    create: true,
                    write: true,
                    ..Default::default()
                }
            }
            _ => azure_storage::shared_access_signature::service_sas::BlobSasPermissions {
                read: true,
                ..Default::default()
            },
        };
        let expiry = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(expires_at_ms) * 1_000_000)
            .map_err(|e| ExoError::invalid_argument("expires_in_seconds", e.to_string()))?;
        let signature = client.shared_access_signature(permissions, expiry).await.map_err(|e| {
            ExoError::unsupported(format!("presigning needs account-key credentials for azure-blob: {e}"))
        })?;
        let url = client
            .generate_signed_blob_url(&signature)
            .map_err(|e| ExoError::internal(format!("cannot build a SAS URL: {e}")))?;
        let mut presigned = Presigned::from(url.to_string());
        if method == pb::PresignMethod::Put {
            // Put Blob needs the blob type; a SAS URL cannot carry it.
            presigned.headers.insert("x-ms-blob-type".into(), "BlockBlob".into());
        }
        Ok(presigned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_escape_reversibly_into_url_safe_blob_names() {
        for key in [
            "plain/key.txt",
            ".",
            "..",
            "a/../b",
            "../../etc/passwd",
            "/absolute",
            "trailing/",
            "a//b",
            "back\\slash\\..\\",
            "%2F..%2F",
            "%0",
            "%2E",
            "100%",
            "ünï/☃",
        ] {
            let name = blob_name(key);
            assert!(!name.contains('\\'), "{name}");
            assert!(!name.starts_with('/') && !name.ends_with('/'), "{name}");
            assert!(name.split('/').all(|s| !s.is_empty() && s != "." && s != ".."), "{name}");
            assert_eq!(key_of(&name), key, "{name}");
        }
        assert_eq!(blob_name("plain/key.txt"), "plain/key.txt", "ordinary keys are stored as they are");
        assert_eq!(blob_name("inbox/file%20name.pdf"), "inbox/file%20name.pdf", "so are most keys with '%'");
        assert_eq!(key_of("inbox/file%20name.pdf"), "inbox/file%20name.pdf");
        // The README's rule, case by case: a '%' is escaped only in a segment that holds a '\'
        // or spells an escape.
        for (key, name) in [
            ("a\\b%", "a%5Cb%25"),
            ("%2E", "%252E"),
            ("x/a%5Cb", "x/a%255Cb"),
            ("./..", "%2E/%2E%2E"),
            ("a//b", "a/%0/b"),
            ("100%", "100%"),
        ] {
            assert_eq!(blob_name(key), name, "{key}");
            assert_eq!(key_of(name), key, "{name}");
        }
        for (prefix, key) in [
            ("photos/20", "photos/2026/a.jpg"),
            ("photos/", "photos/x"),
            ("a%2", "a%25/b"),
            ("x/./", "x/./y"),
        ] {
            assert!(blob_name(key).starts_with(blob_prefix(prefix)), "{prefix} {key}");
        }
    }

    /// Every key round-trips, and every name Blob storage can hold is some key's name (so every
    /// listed key is readable under that key): exhaustively over short strings of the
    /// characters the escape is made of.
    #[test]
    fn keys_and_storable_names_are_in_one_to_one_correspondence() {
        let alphabet = ['%', '2', '5', 'C', '0', 'E', '\\', '.', 'x'];
        let mut strings = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..5 {
            last = last.iter().flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}"))).collect();
            strings.extend(last.iter().cloned());
        }
        for s in &strings {
            assert_eq!(segment_key(&segment_name(s)), *s, "key {s:?}");
            assert!(!unstorable(&segment_name(s)), "key {s:?} stored as {:?}", segment_name(s));
            if !unstorable(s) {
                assert_eq!(segment_name(&segment_key(s)), *s, "name {s:?}");
            }
        }
    }

    #[test]
    fn block_ids_have_one_length() {
        assert_eq!(block_id(0).as_ref().len(), block_id(49_999).as_ref().len());
    }

    #[test]
    fn conditions_map_to_azure_headers() {
        assert_eq!(write_condition(&WriteCondition::None), None);
        assert_eq!(
            write_condition(&WriteCondition::CreateOnly),
            Some(IfMatchCondition::NotMatch("*".into()))
        );
        assert_eq!(
            write_condition(&WriteCondition::IfMatch("0x8D".into())),
            Some(IfMatchCondition::Match("\"0x8D\"".into()))
        );
    }
}
