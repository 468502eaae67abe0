//! The gRPC face of [`QueueApi`]: `QueueService` and `TopicService` on one port.

use exo_proto::queue::v1::{
    self as pb, queue_service_server::QueueService, topic_service_server::TopicService,
};
use tonic::{Request, Response, Status};

use crate::api::QueueApi;

/// Implements `exo.queue.v1.QueueService` by delegating to [`QueueApi`].
#[derive(Debug, Clone)]
pub struct GrpcQueue {
    api: QueueApi,
}

impl GrpcQueue {
    /// Serves `api` over gRPC.
    pub fn new(api: QueueApi) -> Self {
        Self { api }
    }
}

#[tonic::async_trait]
impl QueueService for GrpcQueue {
    async fn describe(
        &self,
        _: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        Ok(Response::new(self.api.describe()?))
    }
    async fn create_queue(
        &self,
        req: Request<pb::CreateQueueRequest>,
    ) -> Result<Response<pb::CreateQueueResponse>, Status> {
        Ok(Response::new(self.api.create_queue(req.into_inner()).await?))
    }
    async fn delete_queue(
        &self,
        req: Request<pb::DeleteQueueRequest>,
    ) -> Result<Response<pb::DeleteQueueResponse>, Status> {
        Ok(Response::new(self.api.delete_queue(req.into_inner()).await?))
    }
    async fn list_queues(
        &self,
        req: Request<pb::ListQueuesRequest>,
    ) -> Result<Response<pb::ListQueuesResponse>, Status> {
        Ok(Response::new(self.api.list_queues(req.into_inner()).await?))
    }
    async fn get_queue_info(
        &self,
        req: Request<pb::GetQueueInfoRequest>,
    ) -> Result<Response<pb::GetQueueInfoResponse>, Status> {
        Ok(Response::new(self.api.get_queue_info(req.into_inner()).await?))
    }
    async fn send(&self, req: Request<pb::SendRequest>) -> Result<Response<pb::SendResponse>, Status> {
        Ok(Response::new(self.api.send(req.into_inner()).await?))
    }
    async fn send_batch(
        &self,
        req: Request<pb::SendBatchRequest>,
    ) -> Result<Response<pb::SendBatchResponse>, Status> {
        Ok(Response::new(self.api.send_batch(req.into_inner()).await?))
    }
    async fn receive(
        &self,
        req: Request<pb::ReceiveRequest>,
    ) -> Result<Response<pb::ReceiveResponse>, Status> {
        Ok(Response::new(self.api.receive(req.into_inner()).await?))
    }
    async fn ack(&self, req: Request<pb::AckRequest>) -> Result<Response<pb::AckResponse>, Status> {
        Ok(Response::new(self.api.ack(req.into_inner()).await?))
    }
    async fn change_visibility(
        &self,
        req: Request<pb::ChangeVisibilityRequest>,
    ) -> Result<Response<pb::ChangeVisibilityResponse>, Status> {
        Ok(Response::new(self.api.change_visibility(req.into_inner()).await?))
    }
    async fn purge(&self, req: Request<pb::PurgeRequest>) -> Result<Response<pb::PurgeResponse>, Status> {
        Ok(Response::new(self.api.purge(req.into_inner()).await?))
    }
}

/// Implements `exo.queue.v1.TopicService` by delegating to [`QueueApi`].
#[derive(Debug, Clone)]
pub struct GrpcTopics {
    api: QueueApi,
}

impl GrpcTopics {
    /// Serves the topic half of `api` over gRPC.
    pub fn new(api: QueueApi) -> Self {
        Self { api }
    }
}

#[tonic::async_trait]
impl TopicService for GrpcTopics {
    async fn create_topic(
        &self,
        req: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        Ok(Response::new(self.api.create_topic(req.into_inner()).await?))
    }
    async fn delete_topic(
        &self,
        req: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        Ok(Response::new(self.api.delete_topic(req.into_inner()).await?))
    }
    async fn list_topics(
        &self,
        req: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        Ok(Response::new(self.api.list_topics(req.into_inner()).await?))
    }
    async fn get_topic_info(
        &self,
        req: Request<pb::GetTopicInfoRequest>,
    ) -> Result<Response<pb::GetTopicInfoResponse>, Status> {
        Ok(Response::new(self.api.get_topic_info(req.into_inner()).await?))
    }
    async fn publish(
        &self,
        req: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        Ok(Response::new(self.api.publish(req.into_inner()).await?))
    }
    async fn publish_batch(
        &self,
        req: Request<pb::PublishBatchRequest>,
    ) -> Result<Response<pb::PublishBatchResponse>, Status> {
        Ok(Response::new(self.api.publish_batch(req.into_inner()).await?))
    }
    async fn create_subscription(
        &self,
        req: Request<pb::CreateSubscriptionRequest>,
    ) -> Result<Response<pb::CreateSubscriptionResponse>, Status> {
        Ok(Response::new(self.api.create_subscription(req.into_inner()).await?))
    }
    async fn delete_subscription(
        &self,
        req: Request<pb::DeleteSubscriptionRequest>,
    ) -> Result<Response<pb::DeleteSubscriptionResponse>, Status> {
        Ok(Response::new(self.api.delete_subscription(req.into_inner()).await?))
    }
}
