//! The backend's own workings: requests to the JSON API with their credentials, resumable
//! uploads in parts, rewrites and listings.

use super::*;

impl GcsObjects {
    /// A backend for `config`; presigned URLs name `presign_endpoint` if given; `call_timeout`
    /// bounds each request (one part of an upload, not the whole upload).
    pub fn connect(
        config: &GcsConfig,
        presign_endpoint: Option<&str>,
        call_timeout: Duration,
    ) -> ExoResult<Self> {
        config.check().map_err(|e| ExoError::invalid_argument("backend", e.to_string()))?;
        let key = match &config.credentials.service_account_key {
            Some(secret) => Some(
                ReloadingSecret::new(
                    secret.clone(),
                    "gcs: credentials.service-account-key",
                    ServiceAccount::from_json,
                )
                .map_err(|e| ExoError::new(ErrorReason::Unauthenticated, e.to_string()))?,
            ),
            None => None,
        };
        let source = match (&key, config.credentials.anonymous) {
            (_, true) => TokenSource::Anonymous,
            (Some(_), false) => TokenSource::ServiceAccount,
            (None, false) => TokenSource::MetadataServer,
        };
        let mut builder = reqwest_gcs::Client::builder()
            .connect_timeout(call_timeout)
            // Bounds every wait for bytes (a stalled download), not a whole long download.
            .read_timeout(call_timeout)
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                ExoError::invalid_argument("backend.ca-file", format!("{}: {e}", path.display()))
            })?;
            for cert in reqwest_gcs::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ExoError::invalid_argument("backend.ca-file", format!("{}: {e}", path.display()))
            })? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| ExoError::internal(format!("gcs: HTTP client: {e}")))?;
        let endpoint = config
            .endpoint
            .clone()
            .unwrap_or_else(|| DEFAULT_ENDPOINT.into())
            .trim_end_matches('/')
            .to_owned();
        use Capability::*;
        let mut capabilities: std::collections::BTreeSet<Capability> =
            [ConditionalCreate, ConditionalReplace, Copy, RangeRead, IdempotentDelete].into();
        if key.is_some() {
            capabilities.insert(Presign);
        }
        Ok(Self {
            descriptor: Descriptor {
                backend: "gcs",
                capabilities: capabilities.into_iter().collect(),
                limits: pb::Limits {
                    max_object_bytes: MAX_OBJECT_BYTES,
                    max_key_bytes: 1024,
                    // GCS allows 8 KiB of custom metadata; the contract's portable limit is lower.
                    max_metadata_entries: 32,
                    max_metadata_bytes: 2048,
                    max_page_size: 1000,
                    max_presign_seconds: auth::MAX_SIGNED_SECONDS as u32,
                },
            },
            presign_endpoint: presign_endpoint
                .map_or_else(|| endpoint.clone(), |p| p.trim_end_matches('/').to_owned()),
            http,
            auth: Auth::new(source, key),
            endpoint,
            project: config.project.clone(),
            location: config.location.clone(),
            name_prefix: config.name_prefix.clone(),
            call_timeout,
        })
    }

    pub(super) fn physical(&self, bucket: &str) -> String {
        format!("{}{bucket}", self.name_prefix)
    }

    pub(super) fn bucket_url(&self, bucket: &str) -> String {
        format!("{}/storage/v1/b/{}", self.endpoint, segment(&self.physical(bucket)))
    }

    pub(super) fn object_url(&self, bucket: &str, key: &str) -> String {
        format!("{}/o/{}", self.bucket_url(bucket), segment(&stored_name(key)))
    }

    pub(super) fn upload_url(&self, bucket: &str) -> String {
        format!("{}/upload/storage/v1/b/{}/o", self.endpoint, segment(&self.physical(bucket)))
    }

    /// Sends a request with the token; `Err` carries a transport failure as an error already
    /// mapped, or GCS's refusal as a [`Failure`] for the caller to name.
    pub(super) async fn send(
        &self,
        request: RequestBuilder,
        timeout: bool,
        operation: &str,
    ) -> ExoResult<Result<Response, Failure>> {
        let mut request = request;
        if let Some(bearer) = self.auth.bearer(&self.http, self.call_timeout).await? {
            request = request.header("authorization", bearer);
        }
        if timeout {
            request = request.timeout(self.call_timeout);
        }
        let response = request.send().await.map_err(|e| {
            let reason = if e.is_timeout() { ErrorReason::Timeout } else { ErrorReason::BackendUnavailable };
            ExoError::new(reason, format!("gcs {operation}: {}", with_causes(&e))).retryable()
        })?;
        let status = response.status();
        if status.is_success() || status == StatusCode::PERMANENT_REDIRECT {
            return Ok(Ok(response));
        }
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or(text);
        Ok(Err(Failure { status, message }))
    }

    /// Maps a refusal GCS gave `operation` on `resource` that the caller did not handle.
    pub(super) fn refused(&self, operation: &str, resource: &str, failure: Failure) -> ExoError {
        let Failure { status, message } = failure;
        let text = format!("gcs {operation} {resource}: {status}: {message}");
        let error = match status.as_u16() {
            401 => ExoError::new(ErrorReason::Unauthenticated, text),
            403 => ExoError::new(ErrorReason::PermissionDenied, text),
            400 => ExoError::new(ErrorReason::InvalidArgument, text),
            404 => ExoError::new(ErrorReason::BucketNotFound, text),
            412 => ExoError::new(ErrorReason::ConditionFailed, text),
            429 => ExoError::new(ErrorReason::Throttled, text).retryable(),
            408 | 500..=599 => ExoError::new(ErrorReason::BackendUnavailable, text).retryable(),
            _ => ExoError::new(ErrorReason::Internal, text),
        };
        error.with_resource(resource).with_backend("gcs")
    }

    pub(super) async fn json<T: serde::de::DeserializeOwned>(
        response: Response,
        operation: &str,
    ) -> ExoResult<T> {
        response.json::<T>().await.map_err(|e| {
            ExoError::unavailable(format!("gcs {operation}: unreadable reply: {}", with_causes(&e)))
        })
    }

    pub(super) async fn bucket_exists(&self, bucket: &str) -> ExoResult<bool> {
        match self.send(self.http.get(self.bucket_url(bucket)), true, "buckets.get").await? {
            Ok(_) => Ok(true),
            Err(f) if f.status == StatusCode::NOT_FOUND => Ok(false),
            Err(f) => Err(self.refused("buckets.get", bucket, f)),
        }
    }

    /// A 404 on an object: its bucket or the object is missing.
    pub(super) async fn not_found(&self, bucket: &str, key: &str) -> ExoError {
        match self.bucket_exists(bucket).await {
            Ok(false) => bucket_not_found(bucket),
            Ok(true) => object_not_found(bucket, key),
            Err(err) => err,
        }
    }

    pub(super) async fn resource(&self, bucket: &BucketName, key: &str) -> ExoResult<Option<ObjectResource>> {
        match self.send(self.http.get(self.object_url(bucket.as_str(), key)), true, "objects.get").await? {
            Ok(response) => Ok(Some(Self::json(response, "objects.get").await?)),
            Err(f) if f.status == StatusCode::NOT_FOUND => {
                if self.bucket_exists(bucket.as_str()).await? {
                    Ok(None)
                } else {
                    Err(bucket_not_found(bucket.as_str()))
                }
            }
            Err(f) => Err(self.refused("objects.get", &format!("{bucket}/{key}"), f)),
        }
    }

    pub(super) async fn info(&self, bucket: &BucketName, key: &str) -> ExoResult<pb::ObjectInfo> {
        self.resource(bucket, key)
            .await?
            .map(|r| r.info(bucket.as_str()))
            .ok_or_else(|| object_not_found(bucket.as_str(), key))
    }

    /// An if-match that failed or cannot hold: no object to match, or another ETag.
    pub(super) async fn mismatch(&self, bucket: &BucketName, key: &str) -> ExoError {
        match self.resource(bucket, key).await {
            Ok(None) => nothing_to_match(bucket.as_str(), key),
            Ok(Some(_)) => condition_failed(bucket.as_str(), key, "the object's ETag does not match"),
            Err(err) => err,
        }
    }

    /// A write refused by GCS: a failed precondition says which, a missing bucket says so.
    pub(super) async fn write_refused(
        &self,
        bucket: &BucketName,
        key: &str,
        condition: &WriteCondition,
        operation: &str,
        failure: Failure,
    ) -> ExoError {
        match failure.status.as_u16() {
            412 => match condition {
                WriteCondition::CreateOnly => {
                    condition_failed(bucket.as_str(), key, "an object already exists under the key")
                }
                _ => self.mismatch(bucket, key).await,
            },
            404 => self.not_found(bucket.as_str(), key).await,
            _ => self.refused(operation, &format!("{bucket}/{key}"), failure),
        }
    }

    /// The request that starts an upload of `upload_type`, under the generation precondition.
    pub(super) fn upload(
        &self,
        bucket: &BucketName,
        upload_type: &str,
        generation: Option<&str>,
    ) -> RequestBuilder {
        let mut query = vec![("uploadType", upload_type)];
        if let Some(g) = generation {
            query.push(("ifGenerationMatch", g));
        }
        self.http.post(self.upload_url(bucket.as_str())).query(&query)
    }

    /// The resource JSON an upload starts with.
    pub(super) fn upload_resource(key: &str, meta: &PutMeta) -> serde_json::Value {
        serde_json::json!({
            "name": stored_name(key),
            "contentType": meta.content_type,
            "metadata": meta.metadata,
        })
    }

    pub(super) async fn put_single(
        &self,
        bucket: &BucketName,
        key: &str,
        meta: &PutMeta,
        data: Bytes,
        generation: Option<&str>,
    ) -> ExoResult<ObjectResource> {
        let (boundary, body) = related_body(&Self::upload_resource(key, meta), &meta.content_type, &data);
        let request = self
            .upload(bucket, "multipart", generation)
            .header("content-type", format!("multipart/related; boundary={boundary}"))
            .body(body);
        match self.send(request, true, "objects.insert").await? {
            Ok(response) => Self::json(response, "objects.insert").await,
            Err(f) => Err(self.write_refused(bucket, key, &meta.condition, "objects.insert", f).await),
        }
    }

    /// A resumable upload: a session, then the parts in order; cancelled on any failure.
    pub(super) async fn put_resumable(
        &self,
        bucket: &BucketName,
        key: &str,
        meta: &PutMeta,
        first: Bytes,
        parts: &mut PartReader<'_>,
        generation: Option<&str>,
    ) -> ExoResult<ObjectResource> {
        let request = self
            .upload(bucket, "resumable", generation)
            .header("x-upload-content-type", meta.content_type.clone())
            .json(&Self::upload_resource(key, meta));
        let session = match self.send(request, true, "objects.insert (resumable)").await? {
            Ok(response) => response
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| {
                    ExoError::unavailable("gcs: a resumable upload session came without its Location")
                })?,
            Err(f) => {
                return Err(self.write_refused(bucket, key, &meta.condition, "objects.insert", f).await);
            }
        };
        let result = async {
            let mut offset = 0u64;
            let mut next = Some(first);
            while let Some(part) = next {
                let last = parts.done();
                let end = offset + part.len() as u64;
                let range = match (last, part.is_empty()) {
                    (true, true) => format!("bytes */{end}"),
                    (true, false) => format!("bytes {offset}-{}/{end}", end - 1),
                    (false, _) => format!("bytes {offset}-{}/*", end - 1),
                };
                let request = self.http.put(&session).header("content-range", range).body(part);
                match self.send(request, true, "resumable upload").await? {
                    Ok(response) if last => {
                        return Self::json::<ObjectResource>(response, "resumable upload").await;
                    }
                    Ok(response) if response.status() == StatusCode::PERMANENT_REDIRECT => {}
                    Ok(response) => {
                        return Err(ExoError::unavailable(format!(
                            "gcs: resumable upload answered {} before its last part",
                            response.status()
                        )));
                    }
                    Err(f) => {
                        return Err(self
                            .write_refused(bucket, key, &meta.condition, "resumable upload", f)
                            .await);
                    }
                }
                offset = end;
                next = if last { None } else { parts.next_part().await? };
            }
            Err(ExoError::internal("gcs: an upload ended without its last part"))
        }
        .await;
        if result.is_err() {
            // Nothing was committed; cancel so the session's bytes are dropped now.
            if let Ok(Err(f)) = self.send(self.http.delete(&session), true, "cancel upload").await
                && f.status.as_u16() != 499
            {
                tracing::warn!(bucket = %bucket, status = %f.status, "cannot cancel a failed resumable upload");
            }
        }
        result
    }

    /// Objects `.` and `..` (stored escaped) that a listing under `prefix` must also show.
    pub(super) async fn escaped_dots(
        &self,
        bucket: &BucketName,
        prefix: &str,
        delimiter: &str,
    ) -> ExoResult<Vec<pb::ObjectInfo>> {
        let mut found = Vec::new();
        for key in [".", ".."] {
            let below = &key[prefix.len().min(key.len())..];
            if !key.starts_with(prefix) || (!delimiter.is_empty() && below.contains(delimiter)) {
                continue;
            }
            if let Some(resource) = self.resource(bucket, key).await? {
                found.push(resource.info(bucket.as_str()));
            }
        }
        Ok(found)
    }
}
