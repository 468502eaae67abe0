//! `s3`: Amazon S3 through the official SDK.
//!
//! How the contract maps onto S3:
//! - **Uploads** are read into one part buffer ([`PART_BYTES`]). A body that ends within it is
//!   one PutObject; a longer one becomes a multipart upload, one part in memory at a time, aborted
//!   on any failure (a broken, cancelled or mis-sized stream leaves nothing behind and keeps the
//!   previous object). Memory per upload is bounded by one part whatever the object size.
//! - **Conditions** are S3's own, checked atomically by S3: create-only is `If-None-Match: *`
//!   and if-match is `If-Match` on PutObject / CompleteMultipartUpload; delete if-match is
//!   DeleteObject `If-Match`. A conditional copy streams the source through a conditional put
//!   (CopyObject has no destination condition); an unconditional copy is CopyObject.
//! - **ETags** are S3's, without quotes. S3 derives them from content (MD5, or per-part MD5 for
//!   multipart uploads): rewriting identical bytes keeps the ETag.
//! - **Keys and metadata** are native: user metadata are `x-amz-meta-*` (names lowercase).
//!   Listings carry size, ETag and time; S3 listings have no content type or metadata.
//! - **Listing** is ListObjectsV2 with S3's delimiter; page tokens wrap S3's continuation token.
//! - **Presign** returns S3's own SigV4 presigned URL. The config's `presign.base-url`, when
//!   set, is the S3 endpoint the URLs name (for clients that reach S3 by another address than
//!   the proxy does).

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use aws_sdk_s3::{
    Client,
    presigning::PresigningConfig,
    primitives::ByteStream as S3Bytes,
    types::{CompletedMultipartUpload, CompletedPart, MetadataDirective},
};
use bytes::Bytes;
use exo_aws::{AwsSettings, map_error, service_code};
use exo_proto::{common::v1::ErrorReason, object::v1 as pb};
use exo_proxy_core::{ExoError, ExoResult, now_ms, readiness};

use crate::ops;
use crate::{
    backend::ObjectStore,
    listing::{Page, Resume},
    model::{
        BucketName, ByteStream, Capability, Descriptor, Presigned, PutMeta, Range, ReadCondition,
        WriteCondition, bare_etag, bucket_not_found, nothing_to_match, object_not_found, quoted_etag,
    },
    upload::{PartReader, stored_info},
};

/// Bytes per multipart part (S3 needs at least 5 MiB for every part but the last).
pub const PART_BYTES: usize = 8 * 1024 * 1024;
/// S3 allows 10 000 parts, so with [`PART_BYTES`] parts an object may be this large.
pub const MAX_OBJECT_BYTES: u64 = PART_BYTES as u64 * 10_000;

/// The S3 object backend.
pub struct S3Objects {
    descriptor: Descriptor,
    client: Client,
    presign_client: Client,
    name_prefix: String,
    region: String,
}

impl std::fmt::Debug for S3Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Objects").field("name_prefix", &self.name_prefix).finish_non_exhaustive()
    }
}

/// Maps an S3 failure on `bucket`/`key` to the vocabulary.
fn object_error<E>(bucket: &str, key: Option<&str>, operation: &str, err: exo_aws::SdkError<E>) -> ExoError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let resource = key.map_or_else(|| bucket.to_owned(), |k| format!("{bucket}/{k}"));
    match service_code(&err) {
        Some(("NoSuchBucket", _)) => bucket_not_found(bucket),
        // The portable name passed; with the name prefix it is too long or otherwise not S3's.
        Some(("InvalidBucketName", _)) => ExoError::new(
            ErrorReason::InvalidName,
            format!("S3 refuses the bucket name for '{bucket}' (name-prefix + name must be a valid S3 name, at most 63 characters)"),
        )
        .with_resource(bucket),
        Some(("NoSuchKey", _)) => object_not_found(bucket, key.unwrap_or_default()),
        Some((_, 412)) | Some(("PreconditionFailed", _)) => ExoError::new(
            ErrorReason::ConditionFailed,
            format!("condition failed for {resource}: the object's ETag or existence does not match"),
        )
        .with_resource(resource),
        // A racing conditional write on the same key: S3 asks to retry.
        Some(("ConditionalRequestConflict", _)) => {
            ExoError::new(
                ErrorReason::ConditionFailed,
                format!("a concurrent write to {resource} won; read it again and retry"),
            )
            .with_resource(resource)
            .retryable()
        }
        Some((_, 304)) => ExoError::new(ErrorReason::NotModified, format!("{resource} is not modified"))
            .with_resource(resource),
        Some(("BucketNotEmpty", _)) => {
            ExoError::new(ErrorReason::NotEmpty, format!("bucket '{bucket}' is not empty"))
                .with_resource(bucket)
        }
        Some(("EntityTooLarge", _)) => {
            ExoError::new(ErrorReason::ValueTooLarge, format!("S3 refused {resource} as too large"))
                .with_resource(resource)
        }
        _ => map_error("s3", operation, err).with_resource(resource),
    }
}

/// S3 quotes ETags; the contract's are bare.
fn bare(etag: Option<&str>) -> String {
    bare_etag(etag.unwrap_or_default())
}

fn millis(time: Option<&aws_smithy_types::DateTime>) -> u64 {
    time.and_then(|t| t.to_millis().ok()).map(|ms| ms.max(0) as u64).unwrap_or_default()
}

/// The `Range` header for a range, or `None` where S3 cannot express it (an empty range).
fn range_header(range: Range) -> Option<String> {
    match range {
        Range::From(start) => Some(format!("bytes={start}-")),
        Range::Span(start, end) if end > start => Some(format!("bytes={start}-{}", end - 1)),
        Range::Suffix(n) if n > 0 => Some(format!("bytes=-{n}")),
        _ => None,
    }
}

/// `(offset, length)` from a `Content-Range: bytes a-b/size` header.
fn served_range(content_range: Option<&str>, length: u64) -> (u64, u64) {
    content_range
        .and_then(|r| r.strip_prefix("bytes "))
        .and_then(|r| r.split('-').next())
        .and_then(|start| start.parse().ok())
        .map_or((0, length), |start| (start, length))
}

fn body_stream(body: S3Bytes, bucket: String, key: String) -> ByteStream {
    Box::pin(futures::stream::unfold(Some(body), move |state| {
        let (bucket, key) = (bucket.clone(), key.clone());
        async move {
            let mut body = state?;
            match body.next().await {
                Some(Ok(chunk)) => Some((Ok(chunk), Some(body))),
                Some(Err(err)) => Some((
                    Err(ExoError::unavailable(format!("reading {bucket}/{key} from S3 failed: {err}"))),
                    None,
                )),
                None => None,
            }
        }
    }))
}

fn empty_stream() -> ByteStream {
    Box::pin(futures::stream::empty())
}

impl exo_proxy_core::registry::Backend for S3Objects {
    type Opened = std::sync::Arc<dyn ObjectStore>;
    type Context = crate::services::OpenContext;
    type Config = AwsSettings;

    fn settings(_data: Option<std::path::PathBuf>) -> AwsSettings {
        AwsSettings::default()
    }

    fn validate(config: &AwsSettings) -> Result<(), exo_proxy_core::config::ConfigError> {
        config.validate()
    }

    fn open<'a>(
        config: &'a AwsSettings,
        context: &'a Self::Context,
    ) -> exo_proxy_core::registry::BoxFuture<'a, ExoResult<Self::Opened>> {
        Box::pin(async move {
            let store =
                S3Objects::connect(config, context.presign_base.as_deref(), context.call_timeout).await?;
            let store: Self::Opened = std::sync::Arc::new(store);
            Ok(store)
        })
    }
}

impl S3Objects {
    /// Connects with `settings`; presigned URLs name `presign_endpoint` if given;
    /// `operation_timeout` bounds each S3 call (one part, not a whole upload).
    pub async fn connect(
        settings: &AwsSettings,
        presign_endpoint: Option<&str>,
        operation_timeout: Duration,
    ) -> ExoResult<Self> {
        let config = exo_aws::sdk_config(settings, operation_timeout).await?;
        // Emulators and custom endpoints serve buckets as paths, not host names.
        let path_style = settings.endpoint.is_some();
        let client = Client::from_conf(
            aws_sdk_s3::config::Builder::from(&config).force_path_style(path_style).build(),
        );
        let presign_client = match presign_endpoint {
            Some(endpoint) => Client::from_conf(
                aws_sdk_s3::config::Builder::from(&config)
                    .endpoint_url(endpoint)
                    .force_path_style(true)
                    .build(),
            ),
            None => client.clone(),
        };
        use Capability::*;
        Ok(Self {
            descriptor: Descriptor {
                backend: "s3",
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
                    // S3 allows 2 KiB of user metadata in total.
                    max_metadata_bytes: 2048,
                    max_page_size: 1000,
                    max_presign_seconds: 7 * 24 * 3600,
                },
            },
            region: config.region().map(|r| r.to_string()).unwrap_or_default(),
            client,
            presign_client,
            name_prefix: settings.name_prefix.clone(),
        })
    }

    fn physical(&self, bucket: &str) -> String {
        format!("{}{bucket}", self.name_prefix)
    }

    async fn bucket_exists(&self, bucket: &str) -> ExoResult<bool> {
        match self.client.head_bucket().bucket(self.physical(bucket)).send().await {
            Ok(_) => Ok(true),
            Err(err) if service_code(&err).is_some_and(|(_, status)| status == 404) => Ok(false),
            Err(err) => Err(object_error(bucket, None, "HeadBucket", err)),
        }
    }

    /// A missing object, or its missing bucket: HEAD answers 404 for both, without a code.
    async fn not_found(&self, bucket: &str, key: &str) -> ExoError {
        match self.bucket_exists(bucket).await {
            Ok(false) => bucket_not_found(bucket),
            Ok(true) => object_not_found(bucket, key),
            Err(err) => err,
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
            .client
            .put_object()
            .bucket(self.physical(bucket.as_str()))
            .key(key)
            .content_type(&meta.content_type)
            .set_metadata(Some(meta.metadata.clone()))
            .content_length(data.len() as i64)
            .body(S3Bytes::from(data));
        match &meta.condition {
            WriteCondition::None => {}
            WriteCondition::CreateOnly => put = put.if_none_match("*"),
            WriteCondition::IfMatch(etag) => put = put.if_match(quoted_etag(etag)),
        }
        let out =
            put.send().await.map_err(|e| self.put_error(bucket, key, &meta.condition, "PutObject", e))?;
        Ok(bare(out.e_tag()))
    }

    /// If-Match on a missing key is a failed condition, not a missing object.
    fn put_error<E>(
        &self,
        bucket: &BucketName,
        key: &str,
        condition: &WriteCondition,
        operation: &str,
        err: exo_aws::SdkError<E>,
    ) -> ExoError
    where
        E: aws_smithy_types::error::metadata::ProvideErrorMetadata
            + std::error::Error
            + Send
            + Sync
            + 'static,
    {
        let mapped = object_error(bucket.as_str(), Some(key), operation, err);
        if mapped.reason == ErrorReason::ObjectNotFound && matches!(condition, WriteCondition::IfMatch(_)) {
            return nothing_to_match(bucket.as_str(), key);
        }
        mapped
    }

    /// Streams an upload as parts (`first` already read), then completes it under the condition.
    async fn put_multipart(
        &self,
        bucket: &BucketName,
        key: &str,
        meta: &PutMeta,
        first: Bytes,
        parts: &mut PartReader<'_>,
    ) -> ExoResult<String> {
        let physical = self.physical(bucket.as_str());
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&physical)
            .key(key)
            .content_type(&meta.content_type)
            .set_metadata(Some(meta.metadata.clone()))
            .send()
            .await
            .map_err(|e| object_error(bucket.as_str(), Some(key), "CreateMultipartUpload", e))?;
        let upload_id = upload.upload_id().unwrap_or_default().to_owned();
        let result = async {
            let mut completed = Vec::new();
            let mut next = Some(first);
            while let Some(part) = next {
                let number = completed.len() as i32 + 1;
                let out = self
                    .client
                    .upload_part()
                    .bucket(&physical)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .content_length(part.len() as i64)
                    .body(S3Bytes::from(part))
                    .customize()
                    .config_override(aws_sdk_s3::config::Builder::new().retry_config(exo_aws::step_retries()))
                    .send()
                    .await
                    .map_err(|e| object_error(bucket.as_str(), Some(key), "UploadPart", e))?;
                completed.push(CompletedPart::builder().part_number(number).set_e_tag(out.e_tag).build());
                next = parts.next_part().await?;
            }
            let mut complete = self
                .client
                .complete_multipart_upload()
                .bucket(&physical)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build());
            match &meta.condition {
                WriteCondition::None => {}
                WriteCondition::CreateOnly => complete = complete.if_none_match("*"),
                WriteCondition::IfMatch(etag) => complete = complete.if_match(quoted_etag(etag)),
            }
            let out = complete
                .send()
                .await
                .map_err(|e| self.put_error(bucket, key, &meta.condition, "CompleteMultipartUpload", e))?;
            Ok(bare(out.e_tag()))
        }
        .await;
        if result.is_err() {
            // Leave no invisible parts behind (S3 bills them until aborted).
            if let Err(err) = self
                .client
                .abort_multipart_upload()
                .bucket(&physical)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await
            {
                tracing::warn!(bucket = %bucket, upload_id, error = %err, "cannot abort a failed multipart upload");
            }
        }
        result
    }

    async fn info(&self, bucket: &BucketName, key: &str) -> ExoResult<pb::ObjectInfo> {
        match self.client.head_object().bucket(self.physical(bucket.as_str())).key(key).send().await {
            Ok(out) => Ok(pb::ObjectInfo {
                bucket: bucket.to_string(),
                key: key.to_owned(),
                size: out.content_length().unwrap_or_default().max(0) as u64,
                etag: bare(out.e_tag()),
                content_type: out.content_type().unwrap_or_default().to_owned(),
                metadata: out.metadata().cloned().unwrap_or_default(),
                last_modified_ms: millis(out.last_modified()),
            }),
            Err(err) if service_code(&err).is_some_and(|(_, status)| status == 404) => {
                Err(self.not_found(bucket.as_str(), key).await)
            }
            Err(err) => Err(object_error(bucket.as_str(), Some(key), "HeadObject", err)),
        }
    }
}

#[async_trait]
impl ObjectStore for S3Objects {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    fn native_bucket_name(&self, bucket: &BucketName) -> String {
        self.physical(bucket.as_str())
    }

    async fn ready(&self) -> ExoResult<()> {
        let probe = self.client.list_buckets().max_buckets(1).send().await;
        readiness(probe.map(|_| ()).map_err(|err| map_error("s3", "ListBuckets", err)))
    }

    async fn create_bucket(&self, op: ops::CreateBucket<'_>) -> ExoResult<bool> {
        let ops::CreateBucket { bucket } = op;
        if self.bucket_exists(bucket.as_str()).await? {
            return Ok(false);
        }
        let mut create = self.client.create_bucket().bucket(self.physical(bucket.as_str()));
        if self.region != "us-east-1" {
            create = create.create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                        self.region.as_str(),
                    ))
                    .build(),
            );
        }
        match create.send().await {
            Ok(_) => Ok(true),
            Err(err) if service_code(&err).is_some_and(|(code, _)| code == "BucketAlreadyOwnedByYou") => Ok(false),
            Err(err) if service_code(&err).is_some_and(|(code, _)| code == "BucketAlreadyExists") => Err(ExoError::new(
                ErrorReason::BucketAlreadyExists,
                format!(
                    "S3 bucket '{}' belongs to another account (S3 names are global; set backend.name-prefix)",
                    self.physical(bucket.as_str())
                ),
            )
            .with_resource(bucket.as_str())),
            Err(err) => Err(object_error(bucket.as_str(), None, "CreateBucket", err)),
        }
    }

    async fn delete_bucket(&self, op: ops::DeleteBucket<'_>) -> ExoResult<()> {
        let ops::DeleteBucket { bucket } = op;
        self.client
            .delete_bucket()
            .bucket(self.physical(bucket.as_str()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| object_error(bucket.as_str(), None, "DeleteBucket", e))
    }

    async fn list_buckets(&self, _op: ops::ListBuckets) -> ExoResult<Vec<String>> {
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_buckets()
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| map_error("s3", "ListBuckets", e))?;
            for bucket in out.buckets() {
                let Some(name) = bucket.name().and_then(|n| n.strip_prefix(self.name_prefix.as_str())) else {
                    continue;
                };
                if BucketName::parse("bucket", name, "name").is_ok() {
                    names.push(name.to_owned());
                }
            }
            token = out.continuation_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        names.sort();
        Ok(names)
    }

    async fn put(&self, op: ops::Put<'_>, body: ByteStream) -> ExoResult<pb::ObjectInfo> {
        let ops::Put { bucket, key, meta } = op;
        let mut parts = PartReader::new(body, &meta, PART_BYTES);
        let first = parts.next_part().await?.unwrap_or_default();
        let etag = if parts.done() {
            self.put_single(bucket, key, &meta, first).await?
        } else {
            self.put_multipart(bucket, key, &meta, first, &mut parts).await?
        };
        let size = parts.received();
        Ok(stored_info(bucket, key, size, etag, meta))
    }

    async fn get(&self, op: ops::Get<'_>) -> ExoResult<(pb::ObjectInfo, (u64, u64), ByteStream)> {
        let ops::Get { bucket, key, range, condition } = op;
        let header = range.and_then(range_header);
        if range.is_some() && header.is_none() {
            // An empty range: nothing to fetch, but the object and conditions still count.
            let info = self.info(bucket, key).await?;
            condition.check(&info.etag, bucket.as_str(), key)?;
            let (offset, length) = range.map_or(Ok((0, info.size)), |r| r.resolve(info.size))?;
            return Ok((info, (offset, length), empty_stream()));
        }
        let out = self
            .client
            .get_object()
            .bucket(self.physical(bucket.as_str()))
            .key(key)
            .set_range(header)
            .set_if_match(condition.if_match.as_deref().map(quoted_etag))
            .set_if_none_match(condition.if_none_match.as_deref().map(quoted_etag))
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(err) if service_code(&err).is_some_and(|(_, status)| status == 416) => {
                // S3 refuses a range starting at the end; the contract serves it empty.
                let info = self.info(bucket, key).await?;
                let (offset, length) = range.map_or(Ok((0, info.size)), |r| r.resolve(info.size))?;
                return Ok((info, (offset, length), empty_stream()));
            }
            Err(err) => return Err(object_error(bucket.as_str(), Some(key), "GetObject", err)),
        };
        let length = out.content_length().unwrap_or_default().max(0) as u64;
        let served = served_range(out.content_range(), length);
        let size = out
            .content_range()
            .and_then(|r| r.rsplit('/').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(length);
        let info = pb::ObjectInfo {
            bucket: bucket.to_string(),
            key: key.to_owned(),
            size,
            etag: bare(out.e_tag()),
            content_type: out.content_type().unwrap_or_default().to_owned(),
            metadata: out.metadata().cloned().unwrap_or_default(),
            last_modified_ms: millis(out.last_modified()),
        };
        Ok((info, served, body_stream(out.body, bucket.to_string(), key.to_owned())))
    }

    async fn head(&self, op: ops::Head<'_>) -> ExoResult<pb::ObjectInfo> {
        let ops::Head { bucket, key } = op;
        self.info(bucket, key).await
    }

    async fn delete(&self, op: ops::Delete<'_>) -> ExoResult<()> {
        let ops::Delete { bucket, key, if_match } = op;
        let result = self
            .client
            .delete_object()
            .bucket(self.physical(bucket.as_str()))
            .key(key)
            .set_if_match(if_match.map(quoted_etag))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) => {
                let mapped = object_error(bucket.as_str(), Some(key), "DeleteObject", err);
                if mapped.reason == ErrorReason::ObjectNotFound && if_match.is_some() {
                    return Err(nothing_to_match(bucket.as_str(), key));
                }
                Err(mapped)
            }
        }
    }

    async fn list(&self, op: ops::List<'_>) -> ExoResult<Page> {
        let ops::List { bucket, prefix, delimiter, resume, limit } = op;
        let mut request = self
            .client
            .list_objects_v2()
            .bucket(self.physical(bucket.as_str()))
            .prefix(prefix)
            .max_keys(limit.clamp(1, 1000) as i32);
        if !delimiter.is_empty() {
            request = request.delimiter(delimiter);
        }
        if let Some(resume) = resume {
            request = request.continuation_token(resume.continuation_token()?);
        }
        let out =
            request.send().await.map_err(|e| object_error(bucket.as_str(), None, "ListObjectsV2", e))?;
        let objects = out
            .contents()
            .iter()
            .map(|o| pb::ObjectInfo {
                bucket: bucket.to_string(),
                key: o.key().unwrap_or_default().to_owned(),
                size: o.size().unwrap_or_default().max(0) as u64,
                etag: bare(o.e_tag()),
                content_type: String::new(),
                metadata: HashMap::new(),
                last_modified_ms: millis(o.last_modified()),
            })
            .collect();
        let common_prefixes =
            out.common_prefixes().iter().filter_map(|p| p.prefix().map(str::to_owned)).collect();
        let next = match (out.is_truncated(), out.next_continuation_token()) {
            (Some(true), Some(token)) => Some(Resume::continuation(token)),
            _ => None,
        };
        Ok(Page { objects, common_prefixes, next })
    }

    async fn copy(&self, op: ops::Copy<'_>) -> ExoResult<pb::ObjectInfo> {
        let ops::Copy { source_bucket, source_key, bucket, key, condition } = op;
        let source = self.info(source_bucket, source_key).await?;
        if *condition != WriteCondition::None || source.size > 5 * 1024 * 1024 * 1024 {
            // S3 CopyObject has no condition on the destination (and stops at 5 GiB): stream
            // the source through a put, which S3 checks atomically.
            let (info, _, body) = self
                .get(ops::Get {
                    bucket: source_bucket,
                    key: source_key,
                    range: None,
                    condition: &ReadCondition { if_match: Some(source.etag.clone()), if_none_match: None },
                })
                .await?;
            let meta = PutMeta::copy_of(info, condition.clone(), MAX_OBJECT_BYTES);
            return self.put(ops::Put { bucket, key, meta }, body).await;
        }
        let copy_source = format!(
            "{}/{}",
            self.physical(source_bucket.as_str()),
            percent_encoding::utf8_percent_encode(source_key, COPY_SOURCE)
        );
        let out = self
            .client
            .copy_object()
            .bucket(self.physical(bucket.as_str()))
            .key(key)
            .copy_source(copy_source)
            .copy_source_if_match(quoted_etag(&source.etag))
            .metadata_directive(MetadataDirective::Copy)
            .send()
            .await
            .map_err(|e| object_error(bucket.as_str(), Some(key), "CopyObject", e))?;
        let result = out.copy_object_result();
        Ok(pb::ObjectInfo {
            bucket: bucket.to_string(),
            key: key.to_owned(),
            etag: bare(result.and_then(|r| r.e_tag())),
            last_modified_ms: millis(result.and_then(|r| r.last_modified())),
            ..source
        })
    }

    async fn presign(&self, op: ops::Presign<'_>) -> ExoResult<Presigned> {
        let ops::Presign { bucket, key, method, expires_at_ms } = op;
        let seconds = expires_at_ms.saturating_sub(now_ms()).div_ceil(1000).max(1);
        let config = PresigningConfig::expires_in(Duration::from_secs(seconds))
            .map_err(|e| ExoError::invalid_argument("expires_in_seconds", e.to_string()))?;
        let physical = self.physical(bucket.as_str());
        let request = match method {
            pb::PresignMethod::Put => self
                .presign_client
                .put_object()
                .bucket(physical)
                .key(key)
                .presigned(config)
                .await
                .map_err(|e| object_error(bucket.as_str(), Some(key), "Presign", e))?,
            _ => self
                .presign_client
                .get_object()
                .bucket(physical)
                .key(key)
                .presigned(config)
                .await
                .map_err(|e| object_error(bucket.as_str(), Some(key), "Presign", e))?,
        };
        Ok(request.uri().to_owned().into())
    }
}

/// What the `x-amz-copy-source` path escapes: everything but unreserved characters and `/`.
const COPY_SOURCE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_map_to_s3_headers() {
        assert_eq!(range_header(Range::From(3)).as_deref(), Some("bytes=3-"));
        assert_eq!(range_header(Range::Span(2, 5)).as_deref(), Some("bytes=2-4"));
        assert_eq!(range_header(Range::Span(4, 4)), None);
        assert_eq!(range_header(Range::Suffix(3)).as_deref(), Some("bytes=-3"));
        assert_eq!(range_header(Range::Suffix(0)), None);
        assert_eq!(served_range(Some("bytes 2-4/10"), 3), (2, 3));
        assert_eq!(served_range(None, 10), (0, 10));
    }

    #[test]
    fn etags_lose_and_regain_their_quotes() {
        assert_eq!(bare(Some("\"abc-2\"")), "abc-2");
        assert_eq!(quoted_etag("abc"), "\"abc\"");
        assert_eq!(quoted_etag("*"), "*");
        let resume = Resume::continuation("1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
        assert_eq!(
            Resume::from_token(&resume.token()).unwrap().continuation_token().unwrap(),
            "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM="
        );
    }
}
