//! The gRPC face of [`KvApi`].

use exo_proto::kv::v1::{self as pb, kv_service_server::KvService};
use tonic::{Request, Response, Status};

use crate::api::KvApi;

/// Implements `exo.kv.v1.KvService` by delegating to [`KvApi`].
#[derive(Debug, Clone)]
pub struct GrpcKv {
    api: KvApi,
}

impl GrpcKv {
    /// Serves `api` over gRPC.
    pub fn new(api: KvApi) -> Self {
        Self { api }
    }
}

#[tonic::async_trait]
impl KvService for GrpcKv {
    async fn describe(
        &self,
        _: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        Ok(Response::new(self.api.describe()?))
    }
    async fn create_table(
        &self,
        req: Request<pb::CreateTableRequest>,
    ) -> Result<Response<pb::CreateTableResponse>, Status> {
        Ok(Response::new(self.api.create_table(req.into_inner()).await?))
    }
    async fn delete_table(
        &self,
        req: Request<pb::DeleteTableRequest>,
    ) -> Result<Response<pb::DeleteTableResponse>, Status> {
        Ok(Response::new(self.api.delete_table(req.into_inner()).await?))
    }
    async fn list_tables(
        &self,
        req: Request<pb::ListTablesRequest>,
    ) -> Result<Response<pb::ListTablesResponse>, Status> {
        Ok(Response::new(self.api.list_tables(req.into_inner()).await?))
    }
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        Ok(Response::new(self.api.get(req.into_inner()).await?))
    }
    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        Ok(Response::new(self.api.put(req.into_inner()).await?))
    }
    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        Ok(Response::new(self.api.delete(req.into_inner()).await?))
    }
    async fn list(&self, req: Request<pb::ListRequest>) -> Result<Response<pb::ListResponse>, Status> {
        Ok(Response::new(self.api.list(req.into_inner()).await?))
    }
    async fn batch_get(
        &self,
        req: Request<pb::BatchGetRequest>,
    ) -> Result<Response<pb::BatchGetResponse>, Status> {
        Ok(Response::new(self.api.batch_get(req.into_inner()).await?))
    }
    async fn increment(
        &self,
        req: Request<pb::IncrementRequest>,
    ) -> Result<Response<pb::IncrementResponse>, Status> {
        Ok(Response::new(self.api.increment(req.into_inner()).await?))
    }
    async fn write_batch(
        &self,
        req: Request<pb::WriteBatchRequest>,
    ) -> Result<Response<pb::WriteBatchResponse>, Status> {
        Ok(Response::new(self.api.write_batch(req.into_inner()).await?))
    }
}
