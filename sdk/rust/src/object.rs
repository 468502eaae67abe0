//! [`ObjectClient`]: the app's handle on an eos proxy. Uploads and downloads stream, so objects
//! of any size pass in bounded memory.

use std::{collections::HashMap, path::Path, time::Duration};

use bytes::Bytes;
use exo_proto::object::v1::{self as pb, object_service_client::ObjectServiceClient};
use futures::{Stream, StreamExt as _, TryStreamExt as _, stream};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio_util::io::ReaderStream;
use tonic::transport::Channel;

use crate::{Auth, Error, Reason, Result, RetryPolicy, Tls, Transport, channel, retry::unary};

pub use pb::{DescribeResponse as ObjectBackendDescription, GetHeader, ObjectCapability, ObjectInfo};

/// Environment variable naming the eos endpoint.
pub const EOS_ENDPOINT_ENV: &str = "EXO_EOS_ENDPOINT";
/// Where the eos sidecar listens unless told otherwise.
pub const DEFAULT_EOS_ENDPOINT: &str = "http://127.0.0.1:7402";
/// Bytes per upload message.
pub const UPLOAD_CHUNK: usize = 256 * 1024;

/// A presigned request: send `headers` with it (Azure Blob needs `x-ms-blob-type` on PUT).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presigned {
    /// The backend's signed URL.
    pub url: String,
    /// Headers the request must carry besides the URL; usually empty.
    pub headers: std::collections::BTreeMap<String, String>,
    /// When the URL stops working, in ms since the Unix epoch.
    pub expires_at_ms: u64,
}

/// A write precondition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WriteIf {
    /// Unconditional.
    #[default]
    Always,
    /// Only if no object exists under the key.
    Absent,
    /// Only if the current object's ETag is this.
    Matches(String),
}

/// Options of an upload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// MIME type (default application/octet-stream).
    pub content_type: String,
    /// User metadata.
    pub metadata: HashMap<String, String>,
    /// Precondition.
    pub condition: WriteIf,
    /// Exact size, if known; the proxy refuses the upload if the bytes differ.
    pub content_length: Option<u64>,
}

/// Which bytes to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// From an offset to the end.
    From(u64),
    /// `[start, end)`.
    Span(u64, u64),
    /// The last `n` bytes.
    Suffix(u64),
}

/// Options of a download.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetOptions {
    /// Only these bytes.
    pub range: Option<ByteRange>,
    /// Fail with CONDITION_FAILED unless the ETag matches.
    pub if_match: Option<String>,
    /// Fail with NOT_MODIFIED if the ETag matches.
    pub if_none_match: Option<String>,
}

/// The chunk messages of an upload. A read error must not look like the end of the object (the
/// proxy would store a truncated one): it is reported aside and the stream stalls, so dropping
/// the call cancels the upload and the proxy discards what it received.
struct UploadBody {
    chunks: std::pin::Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>,
    failed: Option<tokio::sync::oneshot::Sender<std::io::Error>>,
    stalled: bool,
    finished: bool,
}

impl Stream for UploadBody {
    type Item = pb::PutRequest;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = self.get_mut();
        if this.stalled {
            return Poll::Pending;
        }
        match this.chunks.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(bytes))) => Poll::Ready(Some(pb::PutRequest {
                part: Some(pb::put_request::Part::Chunk(bytes)),
                finish: false,
            })),
            Poll::Ready(Some(Err(err))) => {
                if let Some(tx) = this.failed.take() {
                    let _ = tx.send(err);
                }
                this.stalled = true;
                Poll::Pending
            }
            // The source is exhausted: say so explicitly, then end.
            Poll::Ready(None) if !this.finished => {
                this.finished = true;
                Poll::Ready(Some(pb::PutRequest { part: None, finish: true }))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A client of the eos object proxy. Cheap to clone. Uploads and downloads are never retried
/// (their bodies are streams); every other call follows the [`RetryPolicy`].
#[derive(Debug, Clone)]
pub struct ObjectClient {
    inner: ObjectServiceClient<Transport>,
    channel: Channel,
    retry: RetryPolicy,
}

fn condition(condition: WriteIf) -> Option<pb::Condition> {
    let kind = match condition {
        WriteIf::Always => return None,
        WriteIf::Absent => pb::condition::Kind::CreateOnly(true),
        WriteIf::Matches(etag) => pb::condition::Kind::IfMatch(etag),
    };
    Some(pb::Condition { kind: Some(kind) })
}

impl ObjectClient {
    /// A client for the proxy at `url`; connects lazily.
    pub fn connect(url: &str) -> Result<Self> {
        Self::connect_with_tls(url, &Tls::from_env())
    }

    /// [`Self::connect`] with explicit TLS settings for an `https://` endpoint (`connect` reads
    /// them from `$EXO_CA_FILE`, `$EXO_CLIENT_CERT_FILE`, `$EXO_CLIENT_KEY_FILE`).
    pub fn connect_with_tls(url: &str, tls: &Tls) -> Result<Self> {
        let channel = channel(url, tls)?;
        Ok(Self {
            inner: ObjectServiceClient::new(crate::transport(channel.clone(), Auth::none()))
                .max_decoding_message_size(16 * 1024 * 1024),
            channel,
            retry: RetryPolicy::default(),
        })
    }

    /// A client for `$EXO_EOS_ENDPOINT`, or the sidecar default `http://127.0.0.1:7402`.
    pub fn from_env() -> Result<Self> {
        let client = {
            Self::connect(
                &std::env::var(EOS_ENDPOINT_ENV).unwrap_or_else(|_| DEFAULT_EOS_ENDPOINT.to_owned()),
            )
        };
        client?.with_auth(Auth::from_env()?)
    }

    /// Sends `auth` (e.g. [`Auth::bearer`]) with every call; `from_env` reads `$EXO_PROXY_TOKEN`.
    pub fn with_auth(mut self, auth: Auth) -> Result<Self> {
        self.inner = ObjectServiceClient::new(crate::transport(self.channel.clone(), auth))
            .max_decoding_message_size(16 * 1024 * 1024);
        Ok(self)
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The generated gRPC client.
    pub fn raw(&self) -> ObjectServiceClient<Transport> {
        self.inner.clone()
    }

    /// The backend's name, capabilities and limits.
    pub async fn describe(&self) -> Result<ObjectBackendDescription> {
        unary(&self.retry, &self.inner, pb::DescribeRequest {}, |mut c, r| async move { c.describe(r).await })
            .await
    }

    /// Creates a bucket; returns whether it was created.
    pub async fn create_bucket(&self, name: &str) -> Result<bool> {
        let req = pb::CreateBucketRequest { name: name.to_owned() };
        Ok(unary(&self.retry, &self.inner, req, |mut c, r| async move { c.create_bucket(r).await })
            .await?
            .created)
    }

    /// Deletes an empty bucket.
    pub async fn delete_bucket(&self, name: &str) -> Result<()> {
        let req = pb::DeleteBucketRequest { name: name.to_owned() };
        unary(&self.retry, &self.inner, req, |mut c, r| async move { c.delete_bucket(r).await })
            .await
            .map(|_| ())
    }

    /// Every bucket name.
    pub async fn list_buckets(&self) -> Result<Vec<String>> {
        let req = pb::ListBucketsRequest {};
        Ok(unary(&self.retry, &self.inner, req, |mut c, r| async move { c.list_buckets(r).await })
            .await?
            .names)
    }

    /// Uploads everything `reader` yields. If reading fails midway the upload is cancelled and
    /// nothing is stored.
    pub async fn put(
        &self,
        bucket: &str,
        key: &str,
        reader: impl AsyncRead + Send + 'static,
        options: PutOptions,
    ) -> Result<ObjectInfo> {
        let chunks = ReaderStream::with_capacity(reader, UPLOAD_CHUNK);
        self.put_stream(bucket, key, chunks, options).await
    }

    /// Uploads a stream of chunks; an `Err` chunk cancels the upload and nothing is stored.
    pub async fn put_stream(
        &self,
        bucket: &str,
        key: &str,
        chunks: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
        options: PutOptions,
    ) -> Result<ObjectInfo> {
        let header = pb::PutHeader {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            content_type: options.content_type,
            metadata: options.metadata,
            condition: condition(options.condition),
            content_length: options.content_length,
        };
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<std::io::Error>();
        let body =
            UploadBody { chunks: chunks.boxed(), failed: Some(failed_tx), stalled: false, finished: false };
        let messages = stream::once(async {
            pb::PutRequest { part: Some(pb::put_request::Part::Header(header)), finish: false }
        })
        .chain(body);
        let mut client = self.inner.clone();
        tokio::select! {
            response = client.put(messages) => Ok(response.map_err(Error::from)?.into_inner().info.unwrap_or_default()),
            Ok(err) = failed_rx => Err(Error::client(
                Reason::InvalidArgument,
                format!("upload cancelled, nothing stored: reading the source failed: {err}"),
                false,
            )),
        }
    }

    /// Uploads a byte buffer.
    pub async fn put_bytes(
        &self,
        bucket: &str,
        key: &str,
        data: impl Into<Bytes>,
        mut options: PutOptions,
    ) -> Result<ObjectInfo> {
        let data: Bytes = data.into();
        options.content_length.get_or_insert(data.len() as u64);
        let chunks: Vec<std::io::Result<Bytes>> = (0..data.len())
            .step_by(UPLOAD_CHUNK)
            .map(|at| Ok(data.slice(at..(at + UPLOAD_CHUNK).min(data.len()))))
            .collect();
        self.put_stream(bucket, key, stream::iter(chunks), options).await
    }

    /// Uploads a file (its size is announced, so a file that changes size midway is refused).
    pub async fn put_file(
        &self,
        bucket: &str,
        key: &str,
        path: impl AsRef<Path>,
        mut options: PutOptions,
    ) -> Result<ObjectInfo> {
        let file = tokio::fs::File::open(path.as_ref()).await.map_err(|e| {
            Error::client(
                Reason::InvalidArgument,
                format!("cannot open {}: {e}", path.as_ref().display()),
                false,
            )
        })?;
        if let Ok(meta) = file.metadata().await {
            options.content_length.get_or_insert(meta.len());
        }
        self.put(bucket, key, file, options).await
    }

    /// Opens a download: its header and a stream of its bytes.
    pub async fn get(
        &self,
        bucket: &str,
        key: &str,
        options: GetOptions,
    ) -> Result<(GetHeader, impl Stream<Item = Result<Bytes>> + Send + 'static)> {
        let range = options.range.map(|r| pb::ByteRange {
            kind: Some(match r {
                ByteRange::From(start) => pb::byte_range::Kind::From(start),
                ByteRange::Span(start, end) => pb::byte_range::Kind::Span(pb::Span { start, end }),
                ByteRange::Suffix(n) => pb::byte_range::Kind::Suffix(n),
            }),
        });
        let req = pb::GetRequest {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            range,
            if_match: options.if_match.unwrap_or_default(),
            if_none_match: options.if_none_match.unwrap_or_default(),
        };
        let mut messages = self.inner.clone().get(req).await.map_err(Error::from)?.into_inner();
        let header = match messages.message().await.map_err(Error::from)? {
            Some(pb::GetResponse { part: Some(pb::get_response::Part::Header(header)) }) => header,
            _ => return Err(Error::client(Reason::Internal, "download did not start with a header", false)),
        };
        let body = messages.map_err(Error::from).try_filter_map(|m| async move {
            match m.part {
                Some(pb::get_response::Part::Chunk(bytes)) => Ok(Some(bytes)),
                _ => Err(Error::client(Reason::Internal, "a second header arrived in a download", false)),
            }
        });
        Ok((header, body))
    }

    /// Downloads into `writer`; returns the header. Fails if fewer bytes arrive than announced.
    pub async fn get_to(
        &self,
        bucket: &str,
        key: &str,
        options: GetOptions,
        writer: &mut (impl AsyncWrite + Unpin),
    ) -> Result<GetHeader> {
        let (header, body) = self.get(bucket, key, options).await?;
        let mut body = std::pin::pin!(body);
        let mut received = 0u64;
        let io =
            |e: std::io::Error| Error::client(Reason::Internal, format!("cannot write download: {e}"), false);
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            received += chunk.len() as u64;
            writer.write_all(&chunk).await.map_err(io)?;
        }
        writer.flush().await.map_err(io)?;
        if received != header.length {
            return Err(Error::client(
                Reason::BackendUnavailable,
                format!("download ended after {received} of {} bytes", header.length),
                true,
            ));
        }
        Ok(header)
    }

    /// Downloads into memory.
    pub async fn get_bytes(
        &self,
        bucket: &str,
        key: &str,
        options: GetOptions,
    ) -> Result<(GetHeader, Vec<u8>)> {
        let mut out = Vec::new();
        let header = self.get_to(bucket, key, options, &mut out).await?;
        Ok((header, out))
    }

    /// Downloads into a file (written completely or left incomplete with an error).
    pub async fn get_to_file(
        &self,
        bucket: &str,
        key: &str,
        options: GetOptions,
        path: impl AsRef<Path>,
    ) -> Result<GetHeader> {
        let mut file = tokio::fs::File::create(path.as_ref()).await.map_err(|e| {
            Error::client(
                Reason::InvalidArgument,
                format!("cannot create {}: {e}", path.as_ref().display()),
                false,
            )
        })?;
        self.get_to(bucket, key, options, &mut file).await
    }

    /// An object's attributes.
    pub async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo> {
        let req = pb::HeadRequest { bucket: bucket.to_owned(), key: key.to_owned() };
        Ok(unary(&self.retry, &self.inner, req, |mut c, r| async move { c.head(r).await })
            .await?
            .info
            .unwrap_or_default())
    }

    /// Deletes an object, optionally only if its ETag matches.
    pub async fn delete(&self, bucket: &str, key: &str, if_match: Option<&str>) -> Result<()> {
        let req = pb::DeleteRequest {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            if_match: if_match.unwrap_or_default().to_owned(),
        };
        unary(&self.retry, &self.inner, req, |mut c, r| async move { c.delete(r).await }).await.map(|_| ())
    }

    /// Deletes many keys; one result per key (`None` on success, else the reason).
    pub async fn delete_batch(&self, bucket: &str, keys: &[&str]) -> Result<Vec<(String, Option<Reason>)>> {
        let req = pb::DeleteBatchRequest {
            bucket: bucket.to_owned(),
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        };
        let response =
            unary(&self.retry, &self.inner, req, |mut c, r| async move { c.delete_batch(r).await }).await?;
        Ok(response
            .results
            .into_iter()
            .map(|r| {
                let reason = (!r.error_reason.is_empty())
                    .then(|| Reason::from_str_name(&r.error_reason).unwrap_or(Reason::Internal));
                (r.key, reason)
            })
            .collect())
    }

    /// One page of a listing: objects, common prefixes, next page token.
    pub async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<ObjectInfo>, Vec<String>, String)> {
        let req = pb::ListRequest {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            delimiter: delimiter.to_owned(),
            page_size,
            page_token: page_token.to_owned(),
        };
        let r = unary(&self.retry, &self.inner, req, |mut c, r| async move { c.list(r).await }).await?;
        Ok((r.objects, r.common_prefixes, r.next_page_token))
    }

    /// Every object and common prefix, following pages.
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: &str,
    ) -> Result<(Vec<ObjectInfo>, Vec<String>)> {
        let (mut objects, mut prefixes, mut token) = (Vec::new(), Vec::new(), String::new());
        loop {
            let (o, p, next) = self.list_page(bucket, prefix, delimiter, 0, &token).await?;
            objects.extend(o);
            prefixes.extend(p);
            if next.is_empty() {
                return Ok((objects, prefixes));
            }
            token = next;
        }
    }

    /// Copies an object server-side.
    pub async fn copy(
        &self,
        source_bucket: &str,
        source_key: &str,
        bucket: &str,
        key: &str,
        when: WriteIf,
    ) -> Result<ObjectInfo> {
        let req = pb::CopyRequest {
            source_bucket: source_bucket.to_owned(),
            source_key: source_key.to_owned(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            condition: condition(when),
        };
        Ok(unary(&self.retry, &self.inner, req, |mut c, r| async move { c.copy(r).await })
            .await?
            .info
            .unwrap_or_default())
    }

    /// A URL allowing a GET (`put = false`) or PUT of one object for `expires_in`.
    pub async fn presign(
        &self,
        bucket: &str,
        key: &str,
        put: bool,
        expires_in: Duration,
    ) -> Result<Presigned> {
        let req = pb::PresignRequest {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            method: if put { pb::PresignMethod::Put } else { pb::PresignMethod::Get } as i32,
            expires_in_seconds: expires_in.as_secs().min(u64::from(u32::MAX)) as u32,
        };
        let out = unary(&self.retry, &self.inner, req, |mut c, r| async move { c.presign(r).await }).await?;
        Ok(Presigned {
            url: out.url,
            headers: out.headers.into_iter().collect(),
            expires_at_ms: out.expires_at_ms,
        })
    }
}
