//! The HTTP/JSON face of [`KvApi`] under `/api/v1/tables` (documented in
//! `exo-proto/openapi.json`). Keys go in the path, percent-encoded; `/` may stay literal.

use axum::{
    Router,
    extract::{Query, State, rejection::QueryRejection},
    response::Response,
    routing::{get, post},
};
use exo_proto::kv::v1 as pb;
use exo_proxy_core::{
    ExoResult,
    json::{Json, Path},
};
use serde::Deserialize;

use crate::api::KvApi;

/// ekv's OpenAPI document with this backend's limits.
fn openapi_document(describe: &pb::DescribeResponse) -> String {
    let l = describe.limits.unwrap_or_default();
    let key = serde_json::Value::from(l.max_key_bytes);
    exo_proxy_core::json::openapi_with_limits(
        exo_proto::EKV_OPENAPI,
        &[
            ("/components/schemas/PutRequest/properties/ttlSeconds/maximum", l.max_ttl_seconds.into()),
            ("/components/schemas/IncrementRequest/properties/ttlSeconds/maximum", l.max_ttl_seconds.into()),
            ("/components/schemas/IncrementRequest/properties/key/maxLength", key.clone()),
            ("/components/schemas/WriteBatchRequest/properties/writes/maxItems", l.max_batch_writes.into()),
            ("/components/schemas/BatchWrite/properties/key/maxLength", key.clone()),
            ("/components/schemas/BatchWrite/properties/ttlSeconds/maximum", l.max_ttl_seconds.into()),
            ("/components/schemas/BatchGetRequest/properties/keys/maxItems", l.max_batch_keys.into()),
            ("/components/schemas/BatchGetRequest/properties/keys/items/maxLength", key.clone()),
            ("/paths/~1api~1v1~1tables~1{table}~1entries/get/parameters/1/schema/maxLength", key.clone()),
            (
                "/paths/~1api~1v1~1tables~1{table}~1entries/get/parameters/2/schema/maximum",
                l.max_page_size.into(),
            ),
            (
                "/paths/~1api~1v1~1tables~1{table}~1entries~1{key}/get/parameters/1/schema/maxLength",
                key.clone(),
            ),
            (
                "/paths/~1api~1v1~1tables~1{table}~1entries~1{key}/put/parameters/1/schema/maxLength",
                key.clone(),
            ),
            ("/paths/~1api~1v1~1tables~1{table}~1entries~1{key}/delete/parameters/1/schema/maxLength", key),
        ],
    )
}

/// The routes, ready to merge into a proxy server.
pub fn routes(api: KvApi) -> Router {
    let described = api.clone();
    Router::new()
        .route(
            "/api/v1/openapi.json",
            exo_proxy_core::json::openapi_route(move || Ok(openapi_document(&described.describe()?))),
        )
        .route("/api/v1/describe", get(describe))
        .route("/api/v1/tables", get(list_tables).post(create_table))
        .route("/api/v1/tables/{table}", axum::routing::delete(delete_table))
        .route("/api/v1/tables/{table}/entries", get(list))
        .route("/api/v1/tables/{table}/batch-get", post(batch_get))
        .route("/api/v1/tables/{table}/increment", post(increment))
        .route("/api/v1/tables/{table}/write-batch", post(write_batch))
        .route("/api/v1/tables/{table}/entries/{*key}", get(get_entry).put(put_entry).delete(delete_entry))
        .with_state(api)
}

async fn describe(State(api): State<KvApi>) -> ExoResult<Json<pb::DescribeResponse>> {
    Ok(Json(api.describe()?))
}

async fn list_tables(State(api): State<KvApi>) -> ExoResult<Json<pb::ListTablesResponse>> {
    Ok(Json(api.list_tables(pb::ListTablesRequest {}).await?))
}

async fn create_table(
    State(api): State<KvApi>,
    Json(req): Json<pb::CreateTableRequest>,
) -> ExoResult<Response> {
    let response = api.create_table(req).await?;
    Ok(exo_proxy_core::json::created(response.created, response))
}

async fn delete_table(
    State(api): State<KvApi>,
    Path(table): Path<String>,
) -> ExoResult<Json<pb::DeleteTableResponse>> {
    Ok(Json(api.delete_table(pb::DeleteTableRequest { name: table }).await?))
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
    #[serde(default)]
    keys_only: bool,
}

async fn list(
    State(api): State<KvApi>,
    Path(table): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ExoResult<Json<pb::ListResponse>> {
    let q = exo_proxy_core::json::parse_query(q)?;
    let req = pb::ListRequest {
        table,
        prefix: q.prefix,
        page_size: q.page_size,
        page_token: q.page_token,
        keys_only: q.keys_only,
    };
    Ok(Json(api.list(req).await?))
}

async fn batch_get(
    State(api): State<KvApi>,
    Path(table): Path<String>,
    Json(mut req): Json<pb::BatchGetRequest>,
) -> ExoResult<Json<pb::BatchGetResponse>> {
    req.table = table;
    Ok(Json(api.batch_get(req).await?))
}

async fn increment(
    State(api): State<KvApi>,
    Path(table): Path<String>,
    Json(mut req): Json<pb::IncrementRequest>,
) -> ExoResult<Json<pb::IncrementResponse>> {
    req.table = table;
    Ok(Json(api.increment(req).await?))
}

async fn write_batch(
    State(api): State<KvApi>,
    Path(table): Path<String>,
    Json(mut req): Json<pb::WriteBatchRequest>,
) -> ExoResult<Json<pb::WriteBatchResponse>> {
    req.table = table;
    Ok(Json(api.write_batch(req).await?))
}

async fn get_entry(
    State(api): State<KvApi>,
    Path((table, key)): Path<(String, String)>,
) -> ExoResult<Json<pb::GetResponse>> {
    Ok(Json(api.get(pb::GetRequest { table, key }).await?))
}

async fn put_entry(
    State(api): State<KvApi>,
    Path((table, key)): Path<(String, String)>,
    Json(mut req): Json<pb::PutRequest>,
) -> ExoResult<Json<pb::PutResponse>> {
    req.table = table;
    req.key = key;
    Ok(Json(api.put(req).await?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeleteQuery {
    #[serde(default)]
    version_equals: String,
}

async fn delete_entry(
    State(api): State<KvApi>,
    Path((table, key)): Path<(String, String)>,
    q: Result<Query<DeleteQuery>, QueryRejection>,
) -> ExoResult<Json<pb::DeleteResponse>> {
    let q = exo_proxy_core::json::parse_query(q)?;
    Ok(Json(api.delete(pb::DeleteRequest { table, key, version_equals: q.version_equals }).await?))
}
