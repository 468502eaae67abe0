//! The HTTP face of [`ObjectApi`] under `/api/v1/buckets`: raw object bodies with the usual HTTP
//! headers (Content-Type, Range, If-Match, If-None-Match, ETag, `x-exo-meta-*`), JSON for the
//! rest, and `/api/v1/presigned/...` for URLs from the local presigner.

use std::sync::Arc;

use axum::{
    Router,
    body::Body,
    extract::{Query, State, rejection::QueryRejection},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use exo_proto::{common::v1::ErrorReason, object::v1 as pb};
use exo_proxy_core::{
    ExoError, ExoResult,
    json::{Json, Path},
};
use futures::TryStreamExt as _;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;

use crate::{api::ObjectApi, model::ByteStream, presign::LocalPresigner};

/// Prefix of user-metadata headers.
pub const META_PREFIX: &str = "x-exo-meta-";

#[derive(Clone)]
struct AppState {
    api: ObjectApi,
    presigner: Arc<LocalPresigner>,
}

/// eos's OpenAPI document with this backend's limits.
fn openapi_document(describe: &pb::DescribeResponse) -> String {
    let l = describe.limits.unwrap_or_default();
    exo_proxy_core::json::openapi_with_limits(
        exo_proto::EOS_OPENAPI,
        &[
            (
                "/components/schemas/PresignRequest/properties/expiresInSeconds/maximum",
                l.max_presign_seconds.into(),
            ),
            (
                "/paths/~1api~1v1~1buckets~1{bucket}~1objects/get/parameters/3/schema/maximum",
                l.max_page_size.into(),
            ),
        ],
    )
}

/// The routes, ready to merge into a proxy server.
pub fn routes(api: ObjectApi, presigner: Arc<LocalPresigner>) -> Router {
    let described = api.clone();
    Router::new()
        .route(
            "/api/v1/openapi.json",
            exo_proxy_core::json::openapi_route(move || Ok(openapi_document(&described.describe()?))),
        )
        .route("/api/v1/describe", get(describe))
        .route("/api/v1/buckets", get(list_buckets).post(create_bucket))
        .route("/api/v1/buckets/{bucket}", axum::routing::delete(delete_bucket))
        .route("/api/v1/buckets/{bucket}/objects", get(list))
        .route(
            "/api/v1/buckets/{bucket}/objects/{*key}",
            get(get_object).head(head_object).put(put_object).delete(delete_object),
        )
        .route("/api/v1/buckets/{bucket}/copy", post(copy))
        .route("/api/v1/buckets/{bucket}/presign", post(presign))
        .route("/api/v1/buckets/{bucket}/delete", post(delete_batch))
        .route("/api/v1/presigned/{bucket}/{*key}", get(presigned_get).put(presigned_put))
        .with_state(AppState { api, presigner })
}

async fn describe(State(s): State<AppState>) -> ExoResult<Json<pb::DescribeResponse>> {
    Ok(Json(s.api.describe()?))
}

async fn list_buckets(State(s): State<AppState>) -> ExoResult<Json<pb::ListBucketsResponse>> {
    Ok(Json(s.api.list_buckets().await?))
}

async fn create_bucket(
    State(s): State<AppState>,
    Json(req): Json<pb::CreateBucketRequest>,
) -> ExoResult<Response> {
    let response = s.api.create_bucket(req).await?;
    Ok(exo_proxy_core::json::created(response.created, response))
}

async fn delete_bucket(
    State(s): State<AppState>,
    Path(bucket): Path<String>,
) -> ExoResult<Json<pb::DeleteBucketResponse>> {
    Ok(Json(s.api.delete_bucket(pb::DeleteBucketRequest { name: bucket }).await?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    delimiter: String,
    #[serde(default)]
    page_size: u32,
    #[serde(default)]
    page_token: String,
}

async fn list(
    State(s): State<AppState>,
    Path(bucket): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ExoResult<Json<pb::ListResponse>> {
    let q = exo_proxy_core::json::parse_query(q)?;
    let req = pb::ListRequest {
        bucket,
        prefix: q.prefix,
        delimiter: q.delimiter,
        page_size: q.page_size,
        page_token: q.page_token,
    };
    Ok(Json(s.api.list(req).await?))
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> ExoResult<Option<&'a str>> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(ExoError::invalid_argument(name, format!("header {name} is given more than once")));
    }
    let text = value
        .to_str()
        .map_err(|_| ExoError::invalid_argument(name, format!("header {name} is not printable ASCII")))?;
    // An empty header says nothing: the same as no header.
    Ok(Some(text).filter(|t| !t.trim().is_empty()))
}

fn unquote(etag: &str) -> String {
    etag.trim().trim_start_matches("W/").trim_matches('"').to_owned()
}

/// Parses a single-range `Range: bytes=...` header (HTTP ends are inclusive). Anything else —
/// another unit, several ranges, an inverted range, no range at all — is ignored, as RFC 9110
/// §14.2 lets a server do: the answer is the whole object.
fn parse_range(value: &str) -> Option<pb::ByteRange> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let number = |s: &str| s.trim().parse::<u64>().ok();
    let kind = match (start.trim().is_empty(), end.trim().is_empty()) {
        (false, true) => pb::byte_range::Kind::From(number(start)?),
        (true, false) => pb::byte_range::Kind::Suffix(number(end)?),
        (false, false) => {
            let (start, end) = (number(start)?, number(end)?);
            if end < start {
                return None;
            }
            pb::byte_range::Kind::Span(pb::Span { start, end: end.checked_add(1)? })
        }
        (true, true) => return None,
    };
    Some(pb::ByteRange { kind: Some(kind) })
}

fn info_headers(info: &pb::ObjectInfo, headers: &mut HeaderMap) {
    let mut set = |name: &str, value: String| {
        if let (Ok(name), Ok(value)) = (header::HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.insert(name, value);
        }
    };
    set("etag", format!("\"{}\"", info.etag));
    set("content-type", info.content_type.clone());
    set("accept-ranges", "bytes".to_owned());
    let modified = std::time::UNIX_EPOCH + std::time::Duration::from_millis(info.last_modified_ms);
    set("last-modified", httpdate::fmt_http_date(modified));
    for (name, value) in &info.metadata {
        set(&format!("{META_PREFIX}{name}"), value.clone());
    }
}

fn download_response(download: crate::api::Download, range: Option<&pb::ByteRange>) -> Response {
    let info = download.header.info.clone().unwrap_or_default();
    let (offset, length) = (download.header.offset, download.header.length);
    let mut ranged = range.is_some();
    if ranged && length == 0 {
        // RFC 9110 §14.1.1: an int-range is satisfiable only if it starts before the end, a
        // suffix only if it is not empty (the contract's empty ranges are for gRPC). A suffix of an
        // empty object is the whole (empty) object.
        let empty_suffix = matches!(
            range.and_then(|r| r.kind.as_ref()),
            Some(pb::byte_range::Kind::Suffix(n)) if *n > 0
        );
        if !(empty_suffix && info.size == 0) {
            let mut response = ExoError::new(
                ErrorReason::RangeNotSatisfiable,
                format!("the range selects no byte of the object's {} bytes", info.size),
            )
            .with_field("range")
            .into_response();
            if let Ok(value) = HeaderValue::try_from(format!("bytes */{}", info.size)) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return response;
        }
        ranged = false;
    }
    let mut response = Response::new(Body::from_stream(download.body.map_err(std::io::Error::other)));
    info_headers(&info, response.headers_mut());
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::try_from(length.to_string()) {
        headers.insert(header::CONTENT_LENGTH, value);
    }
    if ranged {
        let range = format!("bytes {offset}-{}/{}", offset + length - 1, info.size);
        if let Ok(value) = HeaderValue::try_from(range) {
            headers.insert(header::CONTENT_RANGE, value);
        }
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    response
}

/// A 304 carries no body (RFC 9110), unlike every other error.
fn not_modified_or(err: ExoError) -> Response {
    if err.reason == ErrorReason::NotModified {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    err.into_response()
}

async fn get_object(
    State(s): State<AppState>,
    Path((bucket, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let range = header_text(&headers, "range")?.and_then(parse_range);
        let req = pb::GetRequest {
            bucket,
            key,
            range,
            if_match: header_text(&headers, "if-match")?.map(unquote).unwrap_or_default(),
            if_none_match: header_text(&headers, "if-none-match")?.map(unquote).unwrap_or_default(),
        };
        Ok::<_, ExoError>((s.api.get(req).await?, range))
    }
    .await;
    match result {
        Ok((download, range)) => download_response(download, range.as_ref()),
        Err(err) => not_modified_or(err),
    }
}

async fn head_object(
    State(s): State<AppState>,
    Path((bucket, key)): Path<(String, String)>,
) -> ExoResult<Response> {
    let info = s.api.head(pb::HeadRequest { bucket, key }).await?.info.unwrap_or_default();
    let mut response = Response::new(Body::empty());
    info_headers(&info, response.headers_mut());
    if let Ok(value) = HeaderValue::try_from(info.size.to_string()) {
        response.headers_mut().insert(header::CONTENT_LENGTH, value);
    }
    Ok(response)
}

fn body_stream(body: Body) -> ByteStream {
    Box::pin(body.into_data_stream().map_err(|err| {
        exo_proxy_core::stalls::body_error(&err, |why| {
            ExoError::new(ErrorReason::BackendUnavailable, format!("upload interrupted: {why}"))
        })
    }))
}

/// The put header from HTTP headers, and whether its conditions contradict each other (If-Match
/// with If-None-Match: *, which never both hold: a 412 once the rest is known to be valid).
fn put_header(bucket: String, key: String, headers: &HeaderMap) -> ExoResult<(pb::PutHeader, bool)> {
    let mut metadata = std::collections::HashMap::new();
    for name in headers.keys() {
        if let Some(meta) = name.as_str().strip_prefix(META_PREFIX) {
            let value = header_text(headers, name.as_str())?.unwrap_or_default();
            metadata.insert(meta.to_owned(), value.to_owned());
        }
    }
    let mut contradictory = false;
    let condition = match (header_text(headers, "if-none-match")?, header_text(headers, "if-match")?) {
        // "Must not exist" and "must exist at this ETag" never both hold (RFC 9110 evaluates
        // both): a failed precondition, nothing written.
        (Some("*"), Some(etag)) => {
            contradictory = true;
            Some(pb::condition::Kind::IfMatch(unquote(etag)))
        }
        (Some("*"), None) => Some(pb::condition::Kind::CreateOnly(true)),
        (Some(_), _) => {
            return Err(ExoError::invalid_argument("if-none-match", "writes accept only If-None-Match: *"));
        }
        (None, Some(etag)) => Some(pb::condition::Kind::IfMatch(unquote(etag))),
        (None, None) => None,
    };
    let content_length = header_text(headers, "content-length")?
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| ExoError::invalid_argument("content-length", "Content-Length is not a number"))
        })
        .transpose()?;
    let header = pb::PutHeader {
        bucket,
        key,
        content_type: header_text(headers, "content-type")?.unwrap_or_default().to_owned(),
        metadata,
        condition: condition.map(|kind| pb::Condition { kind: Some(kind) }),
        content_length,
    };
    Ok((header, contradictory))
}

/// The 412 for contradictory conditions, once everything else about the put is valid.
fn contradiction(api: &crate::api::ObjectApi, header: pb::PutHeader) -> ExoError {
    let resource = format!("{}/{}", header.bucket, header.key);
    match api.check_put(header) {
        Err(err) => err,
        Ok(()) => ExoError::new(
            ErrorReason::ConditionFailed,
            "If-Match and If-None-Match: * cannot both hold; nothing was written",
        )
        .with_resource(resource),
    }
}

async fn put_object(
    State(s): State<AppState>,
    Path((bucket, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ExoResult<Response> {
    let (header, contradictory) = put_header(bucket, key, &headers)?;
    if contradictory {
        return Err(contradiction(&s.api, header));
    }
    let info = s.api.put(header, body_stream(body)).await?.info.unwrap_or_default();
    let mut response = Json(pb::PutResponse { info: Some(info.clone()) }).into_response();
    if let Ok(value) = HeaderValue::try_from(format!("\"{}\"", info.etag)) {
        response.headers_mut().insert(header::ETAG, value);
    }
    Ok(response)
}

async fn delete_object(
    State(s): State<AppState>,
    Path((bucket, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> ExoResult<Json<pb::DeleteResponse>> {
    let if_match = header_text(&headers, "if-match")?.map(unquote).unwrap_or_default();
    Ok(Json(s.api.delete(pb::DeleteRequest { bucket, key, if_match }).await?))
}

async fn copy(
    State(s): State<AppState>,
    Path(bucket): Path<String>,
    Json(mut req): Json<pb::CopyRequest>,
) -> ExoResult<Json<pb::CopyResponse>> {
    req.bucket = bucket;
    Ok(Json(s.api.copy(req).await?))
}

async fn presign(
    State(s): State<AppState>,
    Path(bucket): Path<String>,
    Json(mut req): Json<pb::PresignRequest>,
) -> ExoResult<Json<pb::PresignResponse>> {
    req.bucket = bucket;
    Ok(Json(s.api.presign(req).await?))
}

async fn delete_batch(
    State(s): State<AppState>,
    Path(bucket): Path<String>,
    Json(mut req): Json<pb::DeleteBatchRequest>,
) -> ExoResult<Json<pb::DeleteBatchResponse>> {
    req.bucket = bucket;
    Ok(Json(s.api.delete_batch(req).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Presigned {
    method: String,
    expires: u64,
    signature: String,
}

fn verify_presigned(
    s: &AppState,
    bucket: &str,
    key: &str,
    q: Result<Query<Presigned>, QueryRejection>,
    method: pb::PresignMethod,
) -> ExoResult<()> {
    let q = exo_proxy_core::json::parse_query(q).map_err(|_| {
        ExoError::new(
            ErrorReason::PermissionDenied,
            "presigned URL rejected: missing or malformed signature parameters",
        )
    })?;
    if pb::PresignMethod::from_str_name(&q.method) != Some(method) {
        return Err(ExoError::new(
            ErrorReason::PermissionDenied,
            format!("presigned URL rejected: it allows {}, not this method", q.method),
        ));
    }
    s.presigner.verify(bucket, key, method, q.expires, &q.signature)
}

async fn presigned_get(
    State(s): State<AppState>,
    Path((bucket, key)): Path<(String, String)>,
    q: Result<Query<Presigned>, QueryRejection>,
) -> Response {
    if let Err(err) = verify_presigned(&s, &bucket, &key, q, pb::PresignMethod::Get) {
        return err.into_response();
    }
    match s.api.get(pb::GetRequest { bucket, key, ..Default::default() }).await {
        Ok(download) => download_response(download, None),
        Err(err) => err.into_response(),
    }
}

async fn presigned_put(
    State(s): State<AppState>,
    Path((bucket, key)): Path<(String, String)>,
    q: Result<Query<Presigned>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> ExoResult<Json<pb::PutResponse>> {
    verify_presigned(&s, &bucket, &key, q, pb::PresignMethod::Put)?;
    let (mut header, _) = put_header(bucket, key, &headers)?;
    // A presigned PUT replaces unconditionally, as S3's and Azure's do.
    header.condition = None;
    Ok(Json(s.api.put(header, body_stream(body)).await?))
}
