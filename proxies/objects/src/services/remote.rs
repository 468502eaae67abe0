//! `remote`: another eos proxy, reached over gRPC (TLS and a client certificate for `https://`).
//! An edge or app-host proxy forwards each call to a standalone proxy on a VM that holds the
//! real object store.
//!
//! Capabilities and limits are the remote's (asked with Describe when the backend opens); its
//! refusals keep their reason; the caller's deadline travels on as `grpc-timeout` (not for
//! uploads and downloads, whose length decides their duration). Uploads and downloads stream
//! through chunk by chunk: memory stays bounded whatever the size. An upload that fails on this
//! side (the client stalls or disconnects) cancels the remote call before its finish message,
//! so the remote stores nothing. ETags and page positions are the remote's.
//!
//! Presigned URLs are this proxy's own (signed by its presigner, served on its
//! `/api/v1/presigned/…` routes, read and written through the remote): the clients that ask
//! for them reach this proxy, while the remote may sit behind mTLS they have no certificate for.

use std::sync::Arc;

use async_trait::async_trait;
use exo_proto::object::v1::{self as pb, object_service_client::ObjectServiceClient};
use exo_proxy_core::{ExoError, ExoResult, config::ConfigError};
use exo_remote::{Described, Description, RemoteConfig, Transport, described, from_status, request};
use futures::{StreamExt, TryStreamExt, stream};

use crate::ops;
use crate::{
    backend::ObjectStore,
    listing::{Page, Resume},
    model::{ByteStream, Capability, Descriptor, Presigned, Range, WriteCondition},
    presign::LocalPresigner,
};

impl exo_proxy_core::registry::Backend for RemoteObjects {
    type Opened = Arc<dyn ObjectStore>;
    type Context = crate::services::OpenContext;
    type Config = RemoteConfig;

    fn settings(_data: Option<std::path::PathBuf>) -> RemoteConfig {
        RemoteConfig { url: "http://127.0.0.1:7402".into(), ..RemoteConfig::default() }
    }

    fn validate(config: &RemoteConfig) -> Result<(), ConfigError> {
        config.validate()
    }

    fn open<'a>(
        config: &'a RemoteConfig,
        context: &'a Self::Context,
    ) -> exo_proxy_core::registry::BoxFuture<'a, ExoResult<Self::Opened>> {
        Box::pin(async move {
            let objects: Self::Opened =
                Arc::new(RemoteObjects::connect(config, context.presigner.clone()).await?);
            Ok(objects)
        })
    }
}

/// Buckets served by another eos proxy.
pub struct RemoteObjects {
    description: Description<Descriptor>,
    client: ObjectServiceClient<Transport>,
    presigner: Arc<LocalPresigner>,
    remote: exo_remote::Remote,
    config: RemoteConfig,
}

/// What the remote says it is.
fn from_answer(described: pb::DescribeResponse) -> Descriptor {
    let mut capabilities: std::collections::HashSet<Capability> =
        described.capabilities.iter().filter_map(|c| Capability::try_from(*c).ok()).collect();
    let mut limits = described.limits.unwrap_or_default();
    // This proxy signs its own URLs, whatever the remote can do.
    capabilities.insert(Capability::Presign);
    if limits.max_presign_seconds == 0 {
        limits.max_presign_seconds = crate::model::local_limits(0).max_presign_seconds;
    }
    Descriptor { backend: "remote", capabilities, limits }
}

/// Until the remote answers: every capability, no limit (see [`Description`]).
fn provisional() -> Descriptor {
    let most = u32::MAX;
    let limits = pb::Limits {
        max_object_bytes: 0, // no limit
        max_key_bytes: most,
        max_metadata_entries: most,
        max_metadata_bytes: most,
        max_page_size: most,
        max_presign_seconds: most,
    };
    Descriptor { backend: "remote", capabilities: Descriptor::every_capability(), limits }
}

/// Asks the remote to describe itself.
async fn describe(mut client: ObjectServiceClient<Transport>, config: RemoteConfig) -> ExoResult<Descriptor> {
    match described(&config, "eos", client.describe(pb::DescribeRequest {})).await? {
        Described::Answered(answer) => Ok(from_answer(answer)),
        Described::Unreachable(err) => Err(err),
    }
}

fn write_condition(condition: &WriteCondition) -> Option<pb::Condition> {
    let kind = match condition {
        WriteCondition::None => return None,
        WriteCondition::CreateOnly => pb::condition::Kind::CreateOnly(true),
        WriteCondition::IfMatch(etag) => pb::condition::Kind::IfMatch(etag.clone()),
    };
    Some(pb::Condition { kind: Some(kind) })
}

/// The upload's messages after the header: the chunks, then `finish`. A failed chunk is handed to
/// `failed` and the stream stalls (it never finishes), so the caller can drop the call.
fn upload_messages(
    body: ByteStream,
    failed: tokio::sync::oneshot::Sender<ExoError>,
) -> impl futures::Stream<Item = pb::PutRequest> + Send {
    stream::unfold((body, Some(failed), false), |(mut body, mut failed, finished)| async move {
        if finished {
            return None;
        }
        match body.next().await {
            Some(Ok(bytes)) => Some((
                pb::PutRequest { part: Some(pb::put_request::Part::Chunk(bytes)), finish: false },
                (body, failed, false),
            )),
            Some(Err(err)) => {
                if let Some(failed) = failed.take() {
                    let _ = failed.send(err);
                }
                std::future::pending().await
            }
            None => Some((pb::PutRequest { part: None, finish: true }, (body, failed, true))),
        }
    })
}

impl RemoteObjects {
    /// Connects and asks the remote what it is. A remote that cannot be reached yet leaves the
    /// backend open but not ready (see [`Description`]); one that refuses this proxy (TLS,
    /// token, identity) fails the open.
    pub async fn connect(config: &RemoteConfig, presigner: Arc<LocalPresigner>) -> ExoResult<Self> {
        let remote = config.connect().await?;
        let transport = remote.transport.clone();
        let mut client = ObjectServiceClient::new(transport.clone())
            .max_decoding_message_size(exo_remote::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(exo_remote::MAX_MESSAGE_BYTES);
        let description = match described(config, "eos", client.describe(pb::DescribeRequest {})).await? {
            Described::Answered(answer) => {
                tracing::info!(url = %config.url, remote_backend = %answer.backend, "remote eos described itself");
                Description::answered(from_answer(answer), &config.url)
            }
            Described::Unreachable(err) => {
                tracing::warn!(url = %config.url, error = %err.message, "remote eos not reachable yet; not ready until it is");
                Description::provisional(provisional(), &config.url)
            }
        };
        Ok(Self { description, client, presigner, remote, config: config.clone() })
    }

    /// Nothing is forwarded before the remote has described itself.
    fn client(&self) -> ExoResult<ObjectServiceClient<Transport>> {
        self.description.require(|| describe(self.client.clone(), self.config.clone()))?;
        Ok(self.client.clone())
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ObjectStore for RemoteObjects {
    fn descriptor(&self) -> &Descriptor {
        self.description.get()
    }

    fn is_described(&self) -> bool {
        self.description.is_known()
    }

    fn native_bucket_name(&self, bucket: &crate::model::BucketName) -> String {
        // The remote proxy's own backend names it; the contract does not say how.
        bucket.as_str().to_owned()
    }

    async fn ready(&self) -> ExoResult<()> {
        self.description.settle(describe(self.client.clone(), self.config.clone())).await?;
        self.remote.ready("exo.object.v1.ObjectService").await
    }

    async fn create_bucket(&self, op: ops::CreateBucket<'_>) -> ExoResult<bool> {
        let ops::CreateBucket { bucket } = op;
        let answer = self
            .client()?
            .create_bucket(request(pb::CreateBucketRequest { name: bucket.to_string() }))
            .await
            .map_err(from_status)?;
        Ok(answer.into_inner().created)
    }

    async fn delete_bucket(&self, op: ops::DeleteBucket<'_>) -> ExoResult<()> {
        let ops::DeleteBucket { bucket } = op;
        self.client()?
            .delete_bucket(request(pb::DeleteBucketRequest { name: bucket.to_string() }))
            .await
            .map_err(from_status)?;
        Ok(())
    }

    async fn list_buckets(&self, _op: ops::ListBuckets) -> ExoResult<Vec<String>> {
        let answer =
            self.client()?.list_buckets(request(pb::ListBucketsRequest {})).await.map_err(from_status)?;
        Ok(answer.into_inner().names)
    }

    async fn put(&self, op: ops::Put<'_>, body: ByteStream) -> ExoResult<pb::ObjectInfo> {
        let ops::Put { bucket, key, meta } = op;
        let header = pb::PutHeader {
            bucket: bucket.to_string(),
            key: key.to_owned(),
            content_type: meta.content_type,
            metadata: meta.metadata,
            condition: write_condition(&meta.condition),
            content_length: meta.content_length,
        };
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel();
        let messages = stream::once(async move {
            pb::PutRequest { part: Some(pb::put_request::Part::Header(header)), finish: false }
        })
        .chain(upload_messages(body, failed_tx));
        let mut client = self.client()?;
        tokio::select! {
            answer = client.put(messages) => Ok(answer.map_err(from_status)?.into_inner().info.unwrap_or_default()),
            // Dropping the call here resets the stream before its finish: the remote stores nothing.
            Ok(err) = failed_rx => Err(err),
        }
    }

    async fn get(&self, op: ops::Get<'_>) -> ExoResult<(pb::ObjectInfo, (u64, u64), ByteStream)> {
        let ops::Get { bucket, key, range, condition } = op;
        let range = range.map(|range| pb::ByteRange {
            kind: Some(match range {
                Range::From(start) => pb::byte_range::Kind::From(start),
                Range::Span(start, end) => pb::byte_range::Kind::Span(pb::Span { start, end }),
                Range::Suffix(n) => pb::byte_range::Kind::Suffix(n),
            }),
        });
        let mut messages = self
            .client()?
            .get(pb::GetRequest {
                bucket: bucket.to_string(),
                key: key.to_owned(),
                range,
                if_match: condition.if_match.clone().unwrap_or_default(),
                if_none_match: condition.if_none_match.clone().unwrap_or_default(),
            })
            .await
            .map_err(from_status)?
            .into_inner();
        let header = match messages.message().await.map_err(from_status)? {
            Some(pb::GetResponse { part: Some(pb::get_response::Part::Header(header)) }) => header,
            _ => return Err(ExoError::internal("the remote's download did not start with a header")),
        };
        let body = messages.map_err(from_status).and_then(|message| async move {
            match message.part {
                Some(pb::get_response::Part::Chunk(chunk)) => Ok(chunk),
                _ => Err(ExoError::internal("the remote sent a second header in a download")),
            }
        });
        Ok((header.info.unwrap_or_default(), (header.offset, header.length), Box::pin(body)))
    }

    async fn head(&self, op: ops::Head<'_>) -> ExoResult<pb::ObjectInfo> {
        let ops::Head { bucket, key } = op;
        let answer = self
            .client()?
            .head(request(pb::HeadRequest { bucket: bucket.to_string(), key: key.to_owned() }))
            .await
            .map_err(from_status)?;
        Ok(answer.into_inner().info.unwrap_or_default())
    }

    async fn delete(&self, op: ops::Delete<'_>) -> ExoResult<()> {
        let ops::Delete { bucket, key, if_match } = op;
        self.client()?
            .delete(request(pb::DeleteRequest {
                bucket: bucket.to_string(),
                key: key.to_owned(),
                if_match: if_match.unwrap_or_default().to_owned(),
            }))
            .await
            .map_err(from_status)?;
        Ok(())
    }

    async fn list(&self, op: ops::List<'_>) -> ExoResult<Page> {
        let ops::List { bucket, prefix, delimiter, resume, limit } = op;
        // The remote's page token, carried inside this proxy's (see `Resume::continuation`).
        let page_token = resume.map(|r| r.continuation_token()).transpose()?.unwrap_or_default();
        let answer = self
            .client()?
            .list(request(pb::ListRequest {
                bucket: bucket.to_string(),
                prefix: prefix.to_owned(),
                delimiter: delimiter.to_owned(),
                page_size: u32::try_from(limit).unwrap_or(u32::MAX),
                page_token,
            }))
            .await
            .map_err(from_status)?
            .into_inner();
        let next =
            (!answer.next_page_token.is_empty()).then(|| Resume::continuation(&answer.next_page_token));
        Ok(Page { objects: answer.objects, common_prefixes: answer.common_prefixes, next })
    }

    async fn copy(&self, op: ops::Copy<'_>) -> ExoResult<pb::ObjectInfo> {
        let ops::Copy { source_bucket, source_key, bucket, key, condition } = op;
        let answer = self
            .client()?
            .copy(request(pb::CopyRequest {
                source_bucket: source_bucket.to_string(),
                source_key: source_key.to_owned(),
                bucket: bucket.to_string(),
                key: key.to_owned(),
                condition: write_condition(condition),
            }))
            .await
            .map_err(from_status)?;
        Ok(answer.into_inner().info.unwrap_or_default())
    }

    async fn presign(&self, op: ops::Presign<'_>) -> ExoResult<Presigned> {
        let ops::Presign { bucket, key, method, expires_at_ms } = op;
        // The bucket must exist, as for every backend's presign (a one-entry listing asks).
        self.client()?
            .list(request(pb::ListRequest { bucket: bucket.to_string(), page_size: 1, ..Default::default() }))
            .await
            .map_err(from_status)?;
        Ok(self.presigner.url(bucket.as_str(), key, method, expires_at_ms).into())
    }
}
