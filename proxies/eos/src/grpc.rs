//! The gRPC face of [`ObjectApi`], with streamed uploads and downloads.

use std::pin::Pin;

use bytes::Bytes;
use exo_proto::{
    common::v1::ErrorReason,
    object::v1::{self as pb, object_service_server::ObjectService, put_request::Part},
};
use exo_proxy_core::ExoError;
use futures::{Stream, StreamExt as _, stream};
use tonic::{Request, Response, Status, Streaming};

use crate::{api::ObjectApi, model::ByteStream};

/// Implements `exo.object.v1.ObjectService` by delegating to [`ObjectApi`].
#[derive(Debug, Clone)]
pub struct GrpcObjects {
    api: ObjectApi,
}

impl GrpcObjects {
    /// Serves `api` over gRPC.
    pub fn new(api: ObjectApi) -> Self {
        Self { api }
    }
}

/// The chunks after the header. The upload is complete only at a message with `finish`; a
/// stream that ends without one (a cancelled client looks exactly like that to a tonic server),
/// breaks, or carries a second header ends with an error, so the backend discards everything.
fn upload_body(messages: Streaming<pb::PutRequest>, finished: bool) -> ByteStream {
    let chunks = stream::unfold((messages, finished), |(mut messages, finished)| async move {
        if finished {
            // Anything after the finish message is a protocol error; otherwise this is the end.
            return match messages.message().await {
                Ok(None) | Err(_) => None,
                Ok(Some(_)) => {
                    let err = ExoError::invalid_argument("finish", "messages after the finish message");
                    Some((Err(err), (messages, true)))
                }
            };
        }
        let (item, finished) = match messages.message().await {
            Ok(Some(pb::PutRequest { part: Some(Part::Chunk(chunk)), finish })) => (Ok(chunk), finish),
            Ok(Some(pb::PutRequest { part: None, finish: true })) => (Ok(Bytes::new()), true),
            Ok(Some(pb::PutRequest { part: None, finish: false })) => (
                Err(ExoError::invalid_argument("chunk", "an upload message carried neither data nor finish")),
                true,
            ),
            Ok(Some(pb::PutRequest { part: Some(Part::Header(_)), .. })) => (
                Err(ExoError::invalid_argument(
                    "header",
                    "only the first message of an upload may carry the header",
                )),
                true,
            ),
            // None of these can succeed if sent again as they are: not retryable.
            Ok(None) => (
                Err(ExoError::new(
                    ErrorReason::MalformedRequest,
                    "upload not finished: the stream ended without its finish message (cancelled?); \
                     nothing was stored",
                )
                .with_field("finish")),
                true,
            ),
            Err(status) => {
                let reason =
                    exo_proxy_core::server::tonic_rejection(&status).unwrap_or(ErrorReason::MalformedRequest);
                let why = status.message().chars().take(200).collect::<String>();
                (Err(ExoError::new(reason, format!("upload refused: {why}; nothing was stored"))), true)
            }
        };
        Some((item, (messages, finished)))
    });
    Box::pin(chunks)
}

#[tonic::async_trait]
impl ObjectService for GrpcObjects {
    type GetStream = Pin<Box<dyn Stream<Item = Result<pb::GetResponse, Status>> + Send>>;

    async fn describe(
        &self,
        _: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        Ok(Response::new(self.api.describe()?))
    }
    async fn create_bucket(
        &self,
        req: Request<pb::CreateBucketRequest>,
    ) -> Result<Response<pb::CreateBucketResponse>, Status> {
        Ok(Response::new(self.api.create_bucket(req.into_inner()).await?))
    }
    async fn delete_bucket(
        &self,
        req: Request<pb::DeleteBucketRequest>,
    ) -> Result<Response<pb::DeleteBucketResponse>, Status> {
        Ok(Response::new(self.api.delete_bucket(req.into_inner()).await?))
    }
    async fn list_buckets(
        &self,
        _: Request<pb::ListBucketsRequest>,
    ) -> Result<Response<pb::ListBucketsResponse>, Status> {
        Ok(Response::new(self.api.list_buckets().await?))
    }
    async fn put(
        &self,
        req: Request<Streaming<pb::PutRequest>>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let mut messages = req.into_inner();
        let (header, finished) = match messages.message().await? {
            Some(pb::PutRequest { part: Some(Part::Header(header)), finish }) => (header, finish),
            _ => {
                return Err(ExoError::invalid_argument(
                    "header",
                    "the first message of an upload must carry the header",
                )
                .into());
            }
        };
        Ok(Response::new(self.api.put(header, upload_body(messages, finished)).await?))
    }
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<Self::GetStream>, Status> {
        let download = self.api.get(req.into_inner()).await?;
        let header = pb::GetResponse { part: Some(pb::get_response::Part::Header(download.header)) };
        let chunks = download.body.map(|chunk| {
            chunk
                .map(|bytes| pb::GetResponse { part: Some(pb::get_response::Part::Chunk(bytes)) })
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream::once(async { Ok(header) }).chain(chunks))))
    }
    async fn head(&self, req: Request<pb::HeadRequest>) -> Result<Response<pb::HeadResponse>, Status> {
        Ok(Response::new(self.api.head(req.into_inner()).await?))
    }
    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        Ok(Response::new(self.api.delete(req.into_inner()).await?))
    }
    async fn delete_batch(
        &self,
        req: Request<pb::DeleteBatchRequest>,
    ) -> Result<Response<pb::DeleteBatchResponse>, Status> {
        Ok(Response::new(self.api.delete_batch(req.into_inner()).await?))
    }
    async fn list(&self, req: Request<pb::ListRequest>) -> Result<Response<pb::ListResponse>, Status> {
        Ok(Response::new(self.api.list(req.into_inner()).await?))
    }
    async fn copy(&self, req: Request<pb::CopyRequest>) -> Result<Response<pb::CopyResponse>, Status> {
        Ok(Response::new(self.api.copy(req.into_inner()).await?))
    }
    async fn presign(
        &self,
        req: Request<pb::PresignRequest>,
    ) -> Result<Response<pb::PresignResponse>, Status> {
        Ok(Response::new(self.api.presign(req.into_inner()).await?))
    }
}
