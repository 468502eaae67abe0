//! The object API in front of every backend: validation, limits, capabilities and paging,
//! shared by the gRPC service and the HTTP routes.

use std::sync::Arc;

use exo_proto::object::v1 as pb;
use exo_proxy_core::{ExoError, ExoResult, now_ms};

use crate::ops;
use crate::{
    backend::ObjectStore,
    listing::Resume,
    model::{
        BucketName, ByteStream, Capability, Descriptor, PutMeta, Range, ReadCondition, WriteCondition,
        check_key, normalize_metadata,
    },
};

/// Most keys in one DeleteBatch.
pub const MAX_DELETE_BATCH: usize = 1000;

/// Validating front of an object backend.
#[derive(Clone)]
pub struct ObjectApi {
    backend: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for ObjectApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectApi").field("backend", &self.backend.descriptor().backend).finish()
    }
}

/// A download: its header and its bytes.
pub struct Download {
    /// Attributes and the range served.
    pub header: pb::GetHeader,
    /// The bytes.
    pub body: ByteStream,
}

impl ObjectApi {
    /// Serves `backend` (usually already wrapped in layers).
    pub fn new(backend: Arc<dyn ObjectStore>) -> Self {
        Self { backend }
    }

    fn descriptor(&self) -> &Descriptor {
        self.backend.descriptor()
    }

    fn with_backend_name(&self, err: ExoError) -> ExoError {
        err.with_backend(self.descriptor().backend)
    }

    fn bucket(&self, name: &str, field: &str) -> ExoResult<BucketName> {
        BucketName::parse("bucket", name, field).map_err(|e| self.with_backend_name(e))
    }

    fn key(&self, key: &str, field: &str) -> ExoResult<()> {
        check_key(key, self.descriptor().limits.max_key_bytes, field).map_err(|e| self.with_backend_name(e))
    }

    fn write_condition(&self, condition: Option<pb::Condition>) -> ExoResult<WriteCondition> {
        let d = self.descriptor();
        match condition.and_then(|c| c.kind) {
            None => Ok(WriteCondition::None),
            Some(pb::condition::Kind::CreateOnly(true)) => {
                d.require(Capability::ConditionalCreate, "create-only writes")?;
                Ok(WriteCondition::CreateOnly)
            }
            Some(pb::condition::Kind::CreateOnly(false)) => {
                Err(self.with_backend_name(ExoError::invalid_argument(
                    "condition.create_only",
                    "create_only must be true when set; leave the condition unset for an unconditional write",
                )))
            }
            Some(pb::condition::Kind::IfMatch(etag)) => {
                d.require(Capability::ConditionalReplace, "if-match writes")?;
                Ok(WriteCondition::IfMatch(self.etag(etag, "condition.if_match")?))
            }
        }
    }

    fn etag(&self, etag: String, field: &str) -> ExoResult<String> {
        if etag.is_empty() || etag.len() > 256 || !etag.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(self.with_backend_name(ExoError::invalid_argument(
                field,
                "an ETag must be 1 to 256 printable ASCII characters",
            )));
        }
        Ok(etag)
    }

    /// The backend's name, capabilities and limits; BACKEND_UNAVAILABLE (retryable) while it
    /// has not described itself (a `remote` not reached yet).
    pub fn describe(&self) -> ExoResult<pb::DescribeResponse> {
        if !self.backend.is_described() {
            return Err(self.with_backend_name(exo_proxy_core::descriptor::not_described()));
        }
        let d = self.descriptor();
        Ok(pb::DescribeResponse {
            backend: d.backend.to_owned(),
            capabilities: d.capability_codes(),
            limits: Some(d.limits),
        })
    }

    /// Validates the name and creates the bucket; `created` is false when it existed.
    pub async fn create_bucket(&self, req: pb::CreateBucketRequest) -> ExoResult<pb::CreateBucketResponse> {
        let bucket = self.bucket(&req.name, "name")?;
        Ok(pb::CreateBucketResponse {
            created: self.backend.create_bucket(ops::CreateBucket { bucket: &bucket }).await?,
        })
    }

    /// Deletes an empty bucket (NOT_EMPTY otherwise).
    pub async fn delete_bucket(&self, req: pb::DeleteBucketRequest) -> ExoResult<pb::DeleteBucketResponse> {
        let bucket = self.bucket(&req.name, "name")?;
        self.backend.delete_bucket(ops::DeleteBucket { bucket: &bucket }).await?;
        Ok(pb::DeleteBucketResponse {})
    }

    /// Every bucket name in lexical order.
    pub async fn list_buckets(&self) -> ExoResult<pb::ListBucketsResponse> {
        Ok(pb::ListBucketsResponse { names: self.backend.list_buckets(ops::ListBuckets).await? })
    }

    /// Put: validates the header, then streams `body` to the backend.
    pub async fn put(&self, header: pb::PutHeader, body: ByteStream) -> ExoResult<pb::PutResponse> {
        let (bucket, key, meta) = self.put_meta(header)?;
        Ok(pb::PutResponse {
            info: Some(self.backend.put(ops::Put { bucket: &bucket, key: &key, meta }, body).await?),
        })
    }

    /// Checks a put's header as [`ObjectApi::put`] would, without writing anything.
    pub fn check_put(&self, header: pb::PutHeader) -> ExoResult<()> {
        self.put_meta(header).map(|_| ())
    }

    fn put_meta(&self, header: pb::PutHeader) -> ExoResult<(BucketName, String, PutMeta)> {
        let bucket = self.bucket(&header.bucket, "header.bucket")?;
        self.key(&header.key, "header.key")?;
        let content_type = if header.content_type.is_empty() {
            "application/octet-stream".to_owned()
        } else if header.content_type.len() <= 255
            && header.content_type.bytes().all(|b| (0x20..0x7f).contains(&b))
        {
            header.content_type
        } else {
            return Err(self.with_backend_name(ExoError::invalid_argument(
                "header.content_type",
                "content type must be at most 255 printable ASCII characters",
            )));
        };
        let limits = self.descriptor().limits;
        let metadata = normalize_metadata(header.metadata, &limits).map_err(|e| self.with_backend_name(e))?;
        let condition = self.write_condition(header.condition)?;
        if let Some(length) = header.content_length
            && limits.max_object_bytes > 0
            && length > limits.max_object_bytes
        {
            return Err(self.with_backend_name(
                ExoError::new(
                    exo_proto::common::v1::ErrorReason::ValueTooLarge,
                    format!(
                        "object of {length} bytes exceeds the limit of {} bytes",
                        limits.max_object_bytes
                    ),
                )
                .with_field("header.content_length"),
            ));
        }
        let meta = PutMeta {
            content_type,
            metadata,
            condition,
            content_length: header.content_length,
            max_bytes: limits.max_object_bytes,
        };
        Ok((bucket, header.key, meta))
    }

    /// Reads an object's metadata and body stream, a range of it, or NOT_MODIFIED under a read condition.
    pub async fn get(&self, req: pb::GetRequest) -> ExoResult<Download> {
        let bucket = self.bucket(&req.bucket, "bucket")?;
        self.key(&req.key, "key")?;
        let range = match req.range.and_then(|r| r.kind) {
            None => None,
            Some(kind) => {
                self.descriptor().require(Capability::RangeRead, "byte ranges")?;
                Some(match kind {
                    pb::byte_range::Kind::From(start) => Range::From(start),
                    pb::byte_range::Kind::Span(span) if span.start <= span.end => {
                        Range::Span(span.start, span.end)
                    }
                    pb::byte_range::Kind::Span(span) => {
                        return Err(self.with_backend_name(ExoError::invalid_argument(
                            "range.span",
                            format!("range end {} is before its start {}", span.end, span.start),
                        )));
                    }
                    pb::byte_range::Kind::Suffix(n) => Range::Suffix(n),
                })
            }
        };
        let condition = ReadCondition {
            if_match: (!req.if_match.is_empty()).then(|| self.etag(req.if_match, "if_match")).transpose()?,
            if_none_match: (!req.if_none_match.is_empty())
                .then(|| self.etag(req.if_none_match, "if_none_match"))
                .transpose()?,
        };
        let (info, (offset, length), body) = self
            .backend
            .get(ops::Get { bucket: &bucket, key: &req.key, range, condition: &condition })
            .await?;
        Ok(Download { header: pb::GetHeader { info: Some(info), offset, length }, body })
    }

    /// An object's metadata without its body.
    pub async fn head(&self, req: pb::HeadRequest) -> ExoResult<pb::HeadResponse> {
        let bucket = self.bucket(&req.bucket, "bucket")?;
        self.key(&req.key, "key")?;
        Ok(pb::HeadResponse {
            info: Some(self.backend.head(ops::Head { bucket: &bucket, key: &req.key }).await?),
        })
    }

    /// Deletes an object, if its ETag matches when `if_match` is given (deleting nothing is fine).
    pub async fn delete(&self, req: pb::DeleteRequest) -> ExoResult<pb::DeleteResponse> {
        let bucket = self.bucket(&req.bucket, "bucket")?;
        self.key(&req.key, "key")?;
        let if_match = if req.if_match.is_empty() {
            None
        } else {
            self.descriptor().require(Capability::ConditionalReplace, "conditional deletes")?;
            Some(self.etag(req.if_match, "if_match")?)
        };
        self.backend
            .delete(ops::Delete { bucket: &bucket, key: &req.key, if_match: if_match.as_deref() })
            .await?;
        Ok(pb::DeleteResponse {})
    }

    /// DeleteBatch: every key on its own; a bad key is reported, the others still deleted.
    pub async fn delete_batch(&self, req: pb::DeleteBatchRequest) -> ExoResult<pb::DeleteBatchResponse> {
        let bucket = self.bucket(&req.bucket, "bucket")?;
        if req.keys.is_empty() || req.keys.len() > MAX_DELETE_BATCH {
            return Err(self.with_backend_name(ExoError::invalid_argument(
                "keys",
                format!("a batch needs 1 to {MAX_DELETE_BATCH} keys, got {}", req.keys.len()),
            )));
        }
        let mut results = Vec::with_capacity(req.keys.len());
        for (i, key) in req.keys.into_iter().enumerate() {
            let outcome = match self.key(&key, &format!("keys[{i}]")) {
                Ok(()) => {
                    self.backend.delete(ops::Delete { bucket: &bucket, key: &key, if_match: None }).await
                }
                Err(err) => Err(err),
            };
            results.push(match outcome {
                Ok(()) => pb::DeleteResult { key, error_reason: String::new(), error_message: String::new() },
                // A missing bucket fails every key the same way: fail the call.
                Err(err) if err.reason == exo_proto::common::v1::ErrorReason::BucketNotFound => {
                    return Err(err);
                }
                Err(err) => pb::DeleteResult {
                    key,
                    error_reason: err.reason.as_str_name().to_owned(),
                    error_message: err.message,
                },
            });
        }
        Ok(pb::DeleteBatchResponse { results })
    }

    /// Keys (and, with a delimiter, common prefixes) in key order, one page at a time.
    pub async fn list(&self, req: pb::ListRequest) -> ExoResult<pb::ListResponse> {
        let bucket = self.bucket(&req.bucket, "bucket")?;
        let limits = self.descriptor().limits;
        let page_size = match req.page_size {
            0 => limits.max_page_size,
            n if n <= limits.max_page_size => n,
            n => {
                return Err(self.with_backend_name(ExoError::invalid_argument(
                    "page_size",
                    format!("page_size {n} is above the maximum {}", limits.max_page_size),
                )));
            }
        };
        if req.prefix.len() > limits.max_key_bytes as usize || req.delimiter.chars().count() > 16 {
            return Err(self
                .with_backend_name(ExoError::invalid_argument("prefix", "prefix or delimiter is too long")));
        }
        let resume = if req.page_token.is_empty() {
            None
        } else {
            Some(Resume::from_token(&req.page_token).map_err(|e| self.with_backend_name(e))?)
        };
        let page = self
            .backend
            .list(ops::List {
                bucket: &bucket,
                prefix: &req.prefix,
                delimiter: &req.delimiter,
                resume,
                limit: page_size as usize,
            })
            .await?;
        Ok(pb::ListResponse {
            objects: page.objects,
            common_prefixes: page.common_prefixes,
            next_page_token: page.next.map(|r| r.token()).unwrap_or_default(),
        })
    }

    /// Copies an object server-side under its write condition.
    pub async fn copy(&self, req: pb::CopyRequest) -> ExoResult<pb::CopyResponse> {
        self.descriptor().require(Capability::Copy, "server-side copy")?;
        let source_bucket = self.bucket(&req.source_bucket, "source_bucket")?;
        self.key(&req.source_key, "source_key")?;
        let bucket = self.bucket(&req.bucket, "bucket")?;
        self.key(&req.key, "key")?;
        let condition = self.write_condition(req.condition)?;
        let info = self
            .backend
            .copy(ops::Copy {
                source_bucket: &source_bucket,
                source_key: &req.source_key,
                bucket: &bucket,
                key: &req.key,
                condition: &condition,
            })
            .await?;
        Ok(pb::CopyResponse { info: Some(info) })
    }

    /// A URL that lets its holder read or write one object until it expires.
    pub async fn presign(&self, req: pb::PresignRequest) -> ExoResult<pb::PresignResponse> {
        self.descriptor().require(Capability::Presign, "presigned URLs")?;
        let bucket = self.bucket(&req.bucket, "bucket")?;
        self.key(&req.key, "key")?;
        let method = match req.method() {
            pb::PresignMethod::Unspecified => {
                return Err(
                    self.with_backend_name(ExoError::invalid_argument("method", "method must be GET or PUT"))
                );
            }
            method => method,
        };
        let max = self.descriptor().limits.max_presign_seconds;
        if req.expires_in_seconds == 0 || req.expires_in_seconds > max {
            return Err(self.with_backend_name(ExoError::invalid_argument(
                "expires_in_seconds",
                format!("expiry must be 1 to {max} seconds, got {}", req.expires_in_seconds),
            )));
        }
        let expires_at_ms = now_ms() + u64::from(req.expires_in_seconds) * 1000;
        let presigned = self
            .backend
            .presign(ops::Presign { bucket: &bucket, key: &req.key, method, expires_at_ms })
            .await?;
        Ok(pb::PresignResponse { url: presigned.url, expires_at_ms, headers: presigned.headers })
    }
}
