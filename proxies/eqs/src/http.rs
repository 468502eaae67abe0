//! The HTTP/JSON face of [`QueueApi`] under `/api/v1`, described by the OpenAPI document in
//! `exo-proto/openapi.json` (served at `/api/v1/openapi.json`).

use axum::{
    Router,
    extract::{Query, State},
    response::Response,
    routing::{delete, get, post},
};
use exo_proto::queue::v1 as pb;
use exo_proxy_core::{
    ExoResult,
    json::{Json, Path},
};
use serde::Deserialize;

use crate::api::QueueApi;

/// The routes, ready to merge into a proxy server.
pub fn routes(api: QueueApi) -> Router {
    let described = api.clone();
    Router::new()
        .route(
            "/api/v1/openapi.json",
            exo_proxy_core::json::openapi_route(move || Ok(openapi_document(&described.describe()?))),
        )
        .route("/api/v1/describe", get(describe))
        .route("/api/v1/queues", get(list_queues).post(create_queue))
        .route("/api/v1/queues/{queue}", get(get_queue_info).delete(delete_queue))
        .route("/api/v1/queues/{queue}/purge", post(purge))
        .route("/api/v1/queues/{queue}/messages", post(send))
        .route("/api/v1/queues/{queue}/messages/batch", post(send_batch))
        .route("/api/v1/queues/{queue}/messages/receive", post(receive))
        .route("/api/v1/queues/{queue}/messages/ack", post(ack))
        .route("/api/v1/queues/{queue}/messages/visibility", post(change_visibility))
        .route("/api/v1/topics", get(list_topics).post(create_topic))
        .route("/api/v1/topics/{topic}", get(get_topic_info).delete(delete_topic))
        .route("/api/v1/topics/{topic}/publish", post(publish))
        .route("/api/v1/topics/{topic}/publish/batch", post(publish_batch))
        .route("/api/v1/topics/{topic}/subscriptions", post(create_subscription))
        .route("/api/v1/topics/{topic}/subscriptions/{name}", delete(delete_subscription))
        .with_state(api)
}

/// eqs's OpenAPI document with this backend's limits.
fn openapi_document(describe: &pb::DescribeResponse) -> String {
    let l = describe.limits.unwrap_or_default();
    let schema = |name: &str, property: &str, keyword: &str| {
        format!("/components/schemas/{name}/properties/{property}/{keyword}")
    };
    exo_proxy_core::json::openapi_with_limits(
        exo_proto::EQS_OPENAPI,
        &[
            (
                &schema("QueueOptions", "visibilityTimeoutSeconds", "maximum"),
                l.max_visibility_timeout_seconds.into(),
            ),
            (&schema("QueueOptions", "retentionSeconds", "anyOf/1/minimum"), l.min_retention_seconds.into()),
            (&schema("QueueOptions", "retentionSeconds", "anyOf/1/maximum"), l.max_retention_seconds.into()),
            (&schema("QueueOptions", "delaySeconds", "maximum"), l.max_delay_seconds.into()),
            (&schema("QueueOptions", "maxReceives", "maximum"), l.max_receives_limit.into()),
            (&schema("OutgoingMessage", "attributes", "maxProperties"), l.max_attributes.into()),
            (&schema("OutgoingMessage", "delaySeconds", "maximum"), l.max_delay_seconds.into()),
            (&schema("SendBatchRequest", "entries", "maxItems"), l.max_batch_entries.into()),
            (&schema("PublishBatchRequest", "entries", "maxItems"), l.max_batch_entries.into()),
            (
                &schema("PublishedMessage", "attributes", "maxProperties"),
                describe.topic_limits.unwrap_or_default().max_attributes.into(),
            ),
            (&schema("ReceiveRequest", "maxMessages", "maximum"), l.max_receive_messages.into()),
            (&schema("ReceiveRequest", "waitSeconds", "maximum"), l.max_wait_seconds.into()),
            (
                &schema("ReceiveRequest", "visibilityTimeoutSeconds", "maximum"),
                l.max_visibility_timeout_seconds.into(),
            ),
            (
                &schema("ChangeVisibilityRequest", "visibilityTimeoutSeconds", "maximum"),
                l.max_visibility_timeout_seconds.into(),
            ),
        ],
    )
}

async fn describe(State(api): State<QueueApi>) -> ExoResult<Json<pb::DescribeResponse>> {
    Ok(Json(api.describe()?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    page_size: u32,
    #[serde(default)]
    page_token: String,
}

async fn list_queues(
    State(api): State<QueueApi>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ExoResult<Json<pb::ListQueuesResponse>> {
    let query = exo_proxy_core::json::parse_query(query)?;
    let req = pb::ListQueuesRequest {
        prefix: query.prefix,
        page_size: query.page_size,
        page_token: query.page_token,
    };
    Ok(Json(api.list_queues(req).await?))
}

async fn create_queue(
    State(api): State<QueueApi>,
    Json(req): Json<pb::CreateQueueRequest>,
) -> ExoResult<Response> {
    let response = api.create_queue(req).await?;
    Ok(exo_proxy_core::json::created(response.created, response))
}

async fn get_queue_info(
    State(api): State<QueueApi>,
    Path(queue): Path<String>,
) -> ExoResult<Json<pb::GetQueueInfoResponse>> {
    Ok(Json(api.get_queue_info(pb::GetQueueInfoRequest { name: queue }).await?))
}

async fn delete_queue(
    State(api): State<QueueApi>,
    Path(queue): Path<String>,
) -> ExoResult<Json<pb::DeleteQueueResponse>> {
    Ok(Json(api.delete_queue(pb::DeleteQueueRequest { name: queue }).await?))
}

async fn purge(State(api): State<QueueApi>, Path(queue): Path<String>) -> ExoResult<Json<pb::PurgeResponse>> {
    Ok(Json(api.purge(pb::PurgeRequest { queue }).await?))
}

async fn send(
    State(api): State<QueueApi>,
    Path(queue): Path<String>,
    Json(mut req): Json<pb::SendRequest>,
) -> ExoResult<Json<pb::SendResponse>> {
    req.queue = queue;
    Ok(Json(api.send(req).await?))
}

async fn send_batch(
    State(api): State<QueueApi>,
    Path(queue): Path<String>,
    Json(mut req): Json<pb::SendBatchRequest>,
) -> ExoResult<Json<pb::SendBatchResponse>> {
    req.queue = queue;
    Ok(Json(api.send_batch(req).await?))
}

async fn receive(
    State(api): State<QueueApi>,
    Path(queue): Path<String>,
    Json(mut req): Json<pb::ReceiveRequest>,
) -> ExoResult<Json<pb::ReceiveResponse>> {
    req.queue = queue;
    Ok(Json(api.receive(req).await?))
}

async fn ack(
    State(api): State<QueueApi>,
    Path(queue): Path<String>,
    Json(mut req): Json<pb::AckRequest>,
) -> ExoResult<Json<pb::AckResponse>> {
    req.queue = queue;
    Ok(Json(api.ack(req).await?))
}

async fn change_visibility(
    State(api): State<QueueApi>,
    Path(queue): Path<String>,
    Json(mut req): Json<pb::ChangeVisibilityRequest>,
) -> ExoResult<Json<pb::ChangeVisibilityResponse>> {
    req.queue = queue;
    Ok(Json(api.change_visibility(req).await?))
}

async fn list_topics(
    State(api): State<QueueApi>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ExoResult<Json<pb::ListTopicsResponse>> {
    let query = exo_proxy_core::json::parse_query(query)?;
    let req = pb::ListTopicsRequest {
        prefix: query.prefix,
        page_size: query.page_size,
        page_token: query.page_token,
    };
    Ok(Json(api.list_topics(req).await?))
}

async fn create_topic(
    State(api): State<QueueApi>,
    Json(req): Json<pb::CreateTopicRequest>,
) -> ExoResult<Response> {
    let response = api.create_topic(req).await?;
    Ok(exo_proxy_core::json::created(response.created, response))
}

async fn get_topic_info(
    State(api): State<QueueApi>,
    Path(topic): Path<String>,
) -> ExoResult<Json<pb::GetTopicInfoResponse>> {
    Ok(Json(api.get_topic_info(pb::GetTopicInfoRequest { name: topic }).await?))
}

async fn delete_topic(
    State(api): State<QueueApi>,
    Path(topic): Path<String>,
) -> ExoResult<Json<pb::DeleteTopicResponse>> {
    Ok(Json(api.delete_topic(pb::DeleteTopicRequest { name: topic }).await?))
}

async fn publish(
    State(api): State<QueueApi>,
    Path(topic): Path<String>,
    Json(mut req): Json<pb::PublishRequest>,
) -> ExoResult<Json<pb::PublishResponse>> {
    req.topic = topic;
    Ok(Json(api.publish(req).await?))
}

async fn publish_batch(
    State(api): State<QueueApi>,
    Path(topic): Path<String>,
    Json(mut req): Json<pb::PublishBatchRequest>,
) -> ExoResult<Json<pb::PublishBatchResponse>> {
    req.topic = topic;
    Ok(Json(api.publish_batch(req).await?))
}

async fn create_subscription(
    State(api): State<QueueApi>,
    Path(topic): Path<String>,
    Json(mut req): Json<pb::CreateSubscriptionRequest>,
) -> ExoResult<Response> {
    req.topic = topic;
    let response = api.create_subscription(req).await?;
    Ok(exo_proxy_core::json::created(response.created, response))
}

async fn delete_subscription(
    State(api): State<QueueApi>,
    Path((topic, name)): Path<(String, String)>,
) -> ExoResult<Json<pb::DeleteSubscriptionResponse>> {
    Ok(Json(api.delete_subscription(pb::DeleteSubscriptionRequest { topic, name }).await?))
}
