//! `gcs`: Google Cloud Storage through its JSON API.
//!
//! Why not a client crate: the official `google-cloud-storage` crate lists, deletes and manages
//! buckets over gRPC (`StorageControl`), which fake-gcs-server does not serve, and brings its own
//! auth stack on aws-lc-rs; `object_store`'s GCS support has no conditional delete and uploads
//! through the XML multipart API; OpenDAL's is as heavy as both. The JSON API is small: this
//! module speaks it with `reqwest` 0.12 — the version the Azure SDK already links, with rustls
//! on ring and the webpki roots — so GCS adds no crate to the build.
//!
//! How the contract maps onto GCS:
//! - **Buckets** are `<name-prefix><bucket>` in `project`. Objects keep their keys, content type
//!   and user metadata (`metadata`).
//! - **ETags are generations**: every write gives an object a new generation, and every
//!   condition is a generation precondition GCS checks atomically with the write —
//!   create-only is `ifGenerationMatch=0`, if-match `ifGenerationMatch=<etag>` on uploads,
//!   rewrites (copy) and deletes. An ETag that is not a generation matches nothing.
//! - **Uploads** are read into one part buffer ([`PART_BYTES`]). A body that ends within it is
//!   one multipart upload; a longer one is a resumable upload session, one part in memory at a
//!   time, cancelled on any failure (nothing is visible until the last part, and the previous
//!   object stays).
//! - **Reads** fetch the object's resource first (conditions, size, generation), then the bytes
//!   pinned to that generation (`ifGenerationMatch`), so an object replaced mid-read fails
//!   (retryable) instead of mixing versions. Read conditions are checked by the proxy against
//!   that generation.
//! - **Listing** is `objects.list` with GCS's delimiter; page tokens wrap GCS's.
//! - **Presign** is a V4 signed URL (`GOOG4-RSA-SHA256`), which needs a service-account key.
//! - **Key escaping**: GCS cannot hold the names `.` and `..`. They are stored as `%2E` and
//!   `%2E%2E`, and a key that is itself such an escape (`%2E`, `%252E`, …) gains one more `%25`,
//!   so keys and names correspond one to one. Escaped keys list in the order of their escaped
//!   names (sorted within a page).

mod client;
mod names;
mod wire;
use {names::*, wire::*};
mod auth;
mod time;

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use exo_proto::{common::v1::ErrorReason, object::v1 as pb};
use exo_proxy_core::{
    ExoError, ExoResult,
    config::ConfigError,
    now_ms, readiness,
    secret::{ReloadingSecret, SecretRef},
    with_causes,
};
use futures::StreamExt as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest_gcs::{RequestBuilder, Response, StatusCode};
use serde::{Deserialize, Serialize};

use self::auth::{Auth, ServiceAccount, SignedRequest, TokenSource, signed_url};
use crate::ops;
use crate::{
    backend::ObjectStore,
    listing::{Page, Resume},
    model::{
        BucketName, ByteStream, Capability, Descriptor, Presigned, PutMeta, WriteCondition, bucket_not_found,
        nothing_to_match, object_not_found,
    },
    upload::{PartReader, stored_info},
};

/// Bytes per resumable-upload request (GCS wants multiples of 256 KiB for all but the last).
pub const PART_BYTES: usize = 8 * 1024 * 1024;
/// GCS's largest object: 5 TiB.
pub const MAX_OBJECT_BYTES: u64 = 5 * 1024 * 1024 * 1024 * 1024;
const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";

/// `backend:` settings of `kind: gcs`.
///
/// ```yaml
/// backend:
///   kind: gcs
///   project: my-project
///   credentials:
///     service-account-key: file:/var/run/secrets/gcs/key.json
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GcsConfig {
    /// The Google Cloud project buckets are created and listed in.
    #[serde(default)]
    pub project: String,
    /// API endpoint; default `https://storage.googleapis.com` (an emulator's URL in tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Prepended to every bucket name (GCS bucket names are global).
    #[serde(default)]
    pub name_prefix: String,
    /// Location of created buckets (GCS's default, `US`, when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// How the proxy authenticates.
    #[serde(default)]
    pub credentials: GcsCredentials,
    /// PEM file of extra certificate authorities for the endpoint (a private gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// `credentials:` of `kind: gcs`. Without a key the proxy asks the metadata server (GCE, GKE
/// workload identity); `anonymous: true` sends no token at all (emulators, public buckets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GcsCredentials {
    /// A service-account key file (JSON) by secret reference: tokens and signed URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_key: Option<SecretRef>,
    /// Send no token (a key, if given, still signs URLs).
    #[serde(default)]
    pub anonymous: bool,
}

impl GcsConfig {
    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |why: String| Err(ConfigError::Invalid(why));
        if self.project.trim().is_empty() {
            return invalid("backend.project is required for gcs (the project buckets live in)".into());
        }
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return invalid(format!("backend.endpoint {endpoint:?} must be an http:// or https:// URL"));
        }
        if let Some(path) = &self.ca_file
            && !path.is_file()
        {
            return invalid(format!("backend.ca-file {} is not a readable file", path.display()));
        }
        Ok(())
    }
}

/// The GCS object backend.
pub struct GcsObjects {
    descriptor: Descriptor,
    http: reqwest_gcs::Client,
    auth: Auth,
    endpoint: String,
    presign_endpoint: String,
    project: String,
    location: Option<String>,
    name_prefix: String,
    call_timeout: Duration,
}

impl std::fmt::Debug for GcsObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsObjects")
            .field("endpoint", &self.endpoint)
            .field("name_prefix", &self.name_prefix)
            .finish_non_exhaustive()
    }
}

impl exo_proxy_core::registry::Backend for GcsObjects {
    type Opened = Arc<dyn ObjectStore>;
    type Context = crate::services::OpenContext;
    type Config = GcsConfig;

    fn settings(_data: Option<PathBuf>) -> GcsConfig {
        GcsConfig::default()
    }

    fn validate(config: &GcsConfig) -> Result<(), ConfigError> {
        config.check()
    }

    fn open<'a>(
        config: &'a GcsConfig,
        context: &'a Self::Context,
    ) -> exo_proxy_core::registry::BoxFuture<'a, ExoResult<Self::Opened>> {
        Box::pin(async move {
            let store: Self::Opened =
                Arc::new(GcsObjects::connect(config, context.presign_base.as_deref(), context.call_timeout)?);
            Ok(store)
        })
    }
}

#[async_trait]
impl ObjectStore for GcsObjects {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    async fn ready(&self) -> ExoResult<()> {
        let request = self
            .http
            .get(format!("{}/storage/v1/b", self.endpoint))
            .query(&[("project", self.project.as_str()), ("maxResults", "1")]);
        let probe = match self.send(request, true, "buckets.list").await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(f)) => Err(self.refused("buckets.list", &self.project, f)),
            Err(err) => Err(err),
        };
        readiness(probe)
    }

    async fn create_bucket(&self, op: ops::CreateBucket<'_>) -> ExoResult<bool> {
        let ops::CreateBucket { bucket } = op;
        if self.bucket_exists(bucket.as_str()).await? {
            return Ok(false);
        }
        let mut resource = serde_json::json!({ "name": self.physical(bucket.as_str()) });
        if let Some(location) = &self.location {
            resource["location"] = location.clone().into();
        }
        let request = self
            .http
            .post(format!("{}/storage/v1/b", self.endpoint))
            .query(&[("project", self.project.as_str())])
            .json(&resource);
        match self.send(request, true, "buckets.insert").await? {
            Ok(_) => Ok(true),
            Err(f) if f.status == StatusCode::CONFLICT => {
                if self.bucket_exists(bucket.as_str()).await? {
                    Ok(false)
                } else {
                    Err(ExoError::new(
                        ErrorReason::BucketAlreadyExists,
                        format!(
                            "GCS bucket '{}' belongs to someone else (GCS names are global; set backend.name-prefix)",
                            self.physical(bucket.as_str())
                        ),
                    )
                    .with_resource(bucket.as_str()))
                }
            }
            Err(f) if f.status == StatusCode::BAD_REQUEST => Err(ExoError::new(
                ErrorReason::InvalidName,
                format!("GCS refuses the bucket name for '{bucket}' (name-prefix + name must be a valid GCS name): {}", f.message),
            )
            .with_resource(bucket.as_str())),
            Err(f) => Err(self.refused("buckets.insert", bucket.as_str(), f)),
        }
    }

    async fn delete_bucket(&self, op: ops::DeleteBucket<'_>) -> ExoResult<()> {
        let ops::DeleteBucket { bucket } = op;
        match self.send(self.http.delete(self.bucket_url(bucket.as_str())), true, "buckets.delete").await? {
            Ok(_) => Ok(()),
            Err(f) if f.status == StatusCode::NOT_FOUND => Err(bucket_not_found(bucket.as_str())),
            // GCS answers 409; fake-gcs-server 412.
            Err(f) if matches!(f.status.as_u16(), 409 | 412) => {
                Err(ExoError::new(ErrorReason::NotEmpty, format!("bucket '{bucket}' is not empty"))
                    .with_resource(bucket.as_str()))
            }
            Err(f) => Err(self.refused("buckets.delete", bucket.as_str(), f)),
        }
    }

    async fn list_buckets(&self, _op: ops::ListBuckets) -> ExoResult<Vec<String>> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("project", self.project.clone()), ("maxResults", "1000".into())];
            if !self.name_prefix.is_empty() {
                query.push(("prefix", self.name_prefix.clone()));
            }
            if let Some(token) = &token {
                query.push(("pageToken", token.clone()));
            }
            let request = self.http.get(format!("{}/storage/v1/b", self.endpoint)).query(&query);
            let page: BucketList = match self.send(request, true, "buckets.list").await? {
                Ok(response) => Self::json(response, "buckets.list").await?,
                Err(f) => return Err(self.refused("buckets.list", &self.project, f)),
            };
            for bucket in page.items {
                if let Some(name) = bucket.name.strip_prefix(self.name_prefix.as_str())
                    && BucketName::parse("bucket", name, "name").is_ok()
                {
                    names.push(name.to_owned());
                }
            }
            token = page.next_page_token.filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }
        names.sort();
        Ok(names)
    }

    async fn put(&self, op: ops::Put<'_>, body: ByteStream) -> ExoResult<pb::ObjectInfo> {
        let ops::Put { bucket, key, meta } = op;
        let Ok(generation) = generation_match(&meta.condition) else {
            // Not a generation: it cannot match; say which way without writing.
            return Err(self.mismatch(bucket, key).await);
        };
        let mut parts = PartReader::new(body, &meta, PART_BYTES);
        let first = parts.next_part().await?.unwrap_or_default();
        let stored = if parts.done() {
            self.put_single(bucket, key, &meta, first, generation.as_deref()).await?
        } else {
            self.put_resumable(bucket, key, &meta, first, &mut parts, generation.as_deref()).await?
        };
        let size = parts.received();
        let mut info = stored_info(bucket, key, size, stored.generation.clone().unwrap_or_default(), meta);
        if let Some(ms) = stored.updated.as_deref().and_then(time::rfc3339_ms) {
            info.last_modified_ms = ms;
        }
        Ok(info)
    }

    async fn get(&self, op: ops::Get<'_>) -> ExoResult<(pb::ObjectInfo, (u64, u64), ByteStream)> {
        let ops::Get { bucket, key, range, condition } = op;
        let info = self.info(bucket, key).await?;
        condition.check(&info.etag, bucket.as_str(), key)?;
        let (offset, length) = range.map_or(Ok((0, info.size)), |r| r.resolve(info.size))?;
        if length == 0 {
            return Ok((info, (offset, 0), Box::pin(futures::stream::empty())));
        }
        let request = self
            .http
            .get(self.object_url(bucket.as_str(), key))
            .query(&[("alt", "media"), ("ifGenerationMatch", info.etag.as_str())])
            .header("range", format!("bytes={offset}-{}", offset + length - 1));
        let response = match self.send(request, false, "objects.get (media)").await? {
            Ok(response) => response,
            Err(f) if matches!(f.status.as_u16(), 404 | 412) => {
                return Err(ExoError::unavailable(format!(
                    "{bucket}/{key} was replaced or deleted while it was being read; read it again"
                ))
                .with_resource(format!("{bucket}/{key}")));
            }
            Err(f) => return Err(self.refused("objects.get", &format!("{bucket}/{key}"), f)),
        };
        let resource = format!("{bucket}/{key}");
        let body = response.bytes_stream().map(move |chunk| {
            chunk.map_err(|e| {
                ExoError::unavailable(format!("reading {resource} from GCS failed: {}", with_causes(&e)))
            })
        });
        Ok((info, (offset, length), Box::pin(body)))
    }

    async fn head(&self, op: ops::Head<'_>) -> ExoResult<pb::ObjectInfo> {
        let ops::Head { bucket, key } = op;
        self.info(bucket, key).await
    }

    async fn delete(&self, op: ops::Delete<'_>) -> ExoResult<()> {
        let ops::Delete { bucket, key, if_match } = op;
        let mut request = self.http.delete(self.object_url(bucket.as_str(), key));
        if let Some(etag) = if_match {
            if etag.parse::<u64>().is_err() {
                return Err(self.mismatch(bucket, key).await);
            }
            request = request.query(&[("ifGenerationMatch", etag)]);
        }
        match self.send(request, true, "objects.delete").await? {
            Ok(_) => Ok(()),
            Err(f) if f.status == StatusCode::NOT_FOUND => {
                if !self.bucket_exists(bucket.as_str()).await? {
                    Err(bucket_not_found(bucket.as_str()))
                } else if if_match.is_some() {
                    Err(nothing_to_match(bucket.as_str(), key))
                } else {
                    Ok(())
                }
            }
            Err(f) if f.status == StatusCode::PRECONDITION_FAILED => {
                Err(condition_failed(bucket.as_str(), key, "the object's ETag does not match"))
            }
            Err(f) => Err(self.refused("objects.delete", &format!("{bucket}/{key}"), f)),
        }
    }

    async fn list(&self, op: ops::List<'_>) -> ExoResult<Page> {
        let ops::List { bucket, prefix, delimiter, resume, limit } = op;
        let mut query = vec![("maxResults", limit.clamp(1, 1000).to_string())];
        // An escaped name may not share the key's prefix: ask from before the first '%'.
        let sent_prefix = prefix.split('%').next().unwrap_or_default();
        if !sent_prefix.is_empty() {
            query.push(("prefix", sent_prefix.to_owned()));
        }
        if !delimiter.is_empty() {
            query.push(("delimiter", delimiter.to_owned()));
        }
        let first_page = resume.is_none();
        if let Some(resume) = resume {
            query.push(("pageToken", resume.continuation_token()?));
        }
        let request = self.http.get(format!("{}/o", self.bucket_url(bucket.as_str()))).query(&query);
        let list: ObjectList = match self.send(request, true, "objects.list").await? {
            Ok(response) => Self::json(response, "objects.list").await?,
            Err(f) if f.status == StatusCode::NOT_FOUND => return Err(bucket_not_found(bucket.as_str())),
            Err(f) => return Err(self.refused("objects.list", bucket.as_str(), f)),
        };
        let mut objects: Vec<pb::ObjectInfo> = list
            .items
            .iter()
            .map(|o| o.info(bucket.as_str()))
            .filter(|o| o.key.starts_with(prefix))
            .collect();
        if first_page && !sent_prefix.is_empty() && ".".starts_with(sent_prefix) {
            // `.` and `..` are stored as `%2E…`, outside a listing under "." (see the module docs).
            objects.extend(self.escaped_dots(bucket, prefix, delimiter).await?);
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        let mut common_prefixes: Vec<String> =
            list.prefixes.iter().map(|p| key_of(p)).filter(|p| p.starts_with(prefix)).collect();
        common_prefixes.sort();
        let next = list.next_page_token.filter(|t| !t.is_empty()).map(|t| Resume::continuation(&t));
        Ok(Page { objects, common_prefixes, next })
    }

    async fn copy(&self, op: ops::Copy<'_>) -> ExoResult<pb::ObjectInfo> {
        let ops::Copy { source_bucket, source_key, bucket, key, condition } = op;
        let source = self.info(source_bucket, source_key).await?;
        if !self.bucket_exists(bucket.as_str()).await? {
            return Err(bucket_not_found(bucket.as_str()));
        }
        let Ok(generation) = generation_match(condition) else {
            return Err(self.mismatch(bucket, key).await);
        };
        let url = format!(
            "{}/rewriteTo/b/{}/o/{}",
            self.object_url(source_bucket.as_str(), source_key),
            segment(&self.physical(bucket.as_str())),
            segment(&stored_name(key))
        );
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("ifSourceGenerationMatch", source.etag.clone())];
            if let Some(g) = &generation {
                query.push(("ifGenerationMatch", g.clone()));
            }
            if let Some(t) = &token {
                query.push(("rewriteToken", t.clone()));
            }
            let request = self.http.post(&url).query(&query).json(&serde_json::json!({}));
            let reply: RewriteReply = match self.send(request, true, "objects.rewrite").await? {
                Ok(response) => Self::json(response, "objects.rewrite").await?,
                Err(f) => return Err(self.write_refused(bucket, key, condition, "objects.rewrite", f).await),
            };
            if reply.done {
                let resource = reply.resource.ok_or_else(|| {
                    ExoError::unavailable("gcs: a finished rewrite came without its object")
                })?;
                return Ok(pb::ObjectInfo { key: key.to_owned(), ..resource.info(bucket.as_str()) });
            }
            token = reply.rewrite_token;
            if token.is_none() {
                return Err(ExoError::unavailable("gcs: an unfinished rewrite came without its token"));
            }
        }
    }

    async fn presign(&self, op: ops::Presign<'_>) -> ExoResult<Presigned> {
        let ops::Presign { bucket, key, method, expires_at_ms } = op;
        let Some(account) = self.auth.signer() else {
            return Err(ExoError::unsupported("gcs: signed URLs need credentials.service-account-key"));
        };
        let now = now_ms();
        let request = SignedRequest {
            method: if method == pb::PresignMethod::Put { "PUT" } else { "GET" },
            endpoint: &self.presign_endpoint,
            bucket: &self.physical(bucket.as_str()),
            object: &stored_name(key),
            seconds: expires_at_ms.saturating_sub(now).div_ceil(1000).max(1),
        };
        Ok(signed_url(&account, &request, now / 1000)?.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_keys_are_escaped_one_to_one() {
        for key in [".", "..", "%2E", "%2E%2E", "%252E", "a/.", "%2Ex", "%25", "plain"] {
            assert_eq!(key_of(&stored_name(key)), key, "{key}");
        }
        assert_eq!(stored_name("."), "%2E");
        assert_eq!(stored_name("%2E"), "%25%2E");
        assert_eq!(stored_name("a/.."), "a/..");
        assert_ne!(stored_name("."), stored_name("%2E"));
    }

    #[test]
    fn conditions_become_generation_preconditions() {
        assert_eq!(generation_match(&WriteCondition::None), Ok(None));
        assert_eq!(generation_match(&WriteCondition::CreateOnly), Ok(Some("0".into())));
        assert_eq!(
            generation_match(&WriteCondition::IfMatch("1796073746".into())),
            Ok(Some("1796073746".into()))
        );
        assert_eq!(generation_match(&WriteCondition::IfMatch("abc".into())), Err(()));
        assert_eq!(generation_match(&WriteCondition::IfMatch("0".into())), Err(()));
    }

    #[test]
    fn related_bodies_never_contain_their_boundary_inside_the_data() {
        let (boundary, body) = related_body(&serde_json::json!({"name": "k"}), "text/plain", b"data");
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.ends_with(&format!("\r\n--{boundary}--\r\n")));
        assert_eq!(text.matches(&boundary).count(), 3);
    }

    #[test]
    fn settings_are_checked() {
        assert!(GcsConfig::default().check().is_err(), "a project is required");
        let ok = GcsConfig { project: "p".into(), ..Default::default() };
        assert!(ok.check().is_ok());
        let bad = GcsConfig { endpoint: Some("storage.googleapis.com".into()), ..ok };
        assert!(bad.check().is_err());
    }
}
