//! HTTP/JSON request and response bodies with the proto3 JSON mapping, whose every rejection is
//! a problem+json error instead of axum's plain-text default.

use axum::{
    body::Bytes,
    extract::{FromRequest, Query, Request, rejection::QueryRejection},
    response::{IntoResponse, Response},
    routing::MethodRouter,
};
use exo_proto::common::v1::ErrorReason;
use http::{HeaderValue, header};
use serde::{Serialize, de::DeserializeOwned};

use std::sync::Arc;

use crate::ExoError;

/// A JSON body (request or response) in the canonical proto3 JSON mapping.
#[derive(Debug, Clone, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ExoError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                ExoError::new(ErrorReason::RequestTooLarge, "request body exceeds server.max-request-bytes")
            } else {
                crate::stalls::body_error(&rejection, |why| {
                    ExoError::new(ErrorReason::MalformedRequest, format!("cannot read request body: {why}"))
                })
            }
        })?;
        // An empty body stands for an empty object, so body-less POSTs work.
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        let malformed = |err: serde_json::Error| {
            ExoError::new(ErrorReason::MalformedRequest, format!("invalid JSON body: {err}"))
        };
        match serde_json::from_slice(bytes) {
            Ok(value) => Ok(Json(value)),
            Err(first) => {
                // Two readings the generated proto3 mapping gets wrong, fixed only on this slow
                // path: JSON has one number type (`3.0` is the integer 3, as JSON Schema agrees),
                // and null means "unset" for every field (the mapping refuses it in some places,
                // e.g. beside another member of a oneof).
                let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
                    return Err(malformed(first));
                };
                if !normalize(&mut value) {
                    return Err(malformed(first));
                }
                serde_json::from_value(value).map(Json).map_err(malformed)
            }
        }
    }
}

/// Rewrites every float with no fractional part (`3.0`, `1e3`) as an integer and drops every
/// object member that is null; whether anything changed.
fn normalize(value: &mut serde_json::Value) -> bool {
    match value {
        serde_json::Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 && f.abs() < 9.0e15 {
                *value = if f < 0.0 { serde_json::json!(f as i64) } else { serde_json::json!(f as u64) };
                true
            } else {
                false
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().fold(false, |any, v| normalize(v) | any),
        serde_json::Value::Object(map) => {
            let before = map.len();
            map.retain(|_, v| !v.is_null());
            let dropped = map.len() != before;
            map.values_mut().fold(dropped, |any, v| normalize(v) | any)
        }
        _ => false,
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => {
                let mut response = body.into_response();
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
            Err(err) => ExoError::internal(format!("cannot encode response: {err}")).into_response(),
        }
    }
}

/// A query string parsed into `T`, or MALFORMED_REQUEST (problem+json) naming what is wrong.
pub fn parse_query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ExoError> {
    query
        .map(|Query(q)| q)
        .map_err(|err| ExoError::new(ErrorReason::MalformedRequest, format!("invalid query string: {err}")))
}

/// The position a page token holds: base64url (no padding) of bytes the server chose. Any
/// token of that shape is a position — one the server did not issue just resumes there — so a
/// token is refused only when it is not base64url at all.
pub fn page_token_bytes(token: &str) -> Result<Vec<u8>, ExoError> {
    use base64::{
        Engine as _,
        engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    };
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    LENIENT.decode(token.as_bytes()).map_err(|_| {
        ExoError::invalid_argument("page_token", "page_token is not a token this server issues (base64url)")
    })
}

/// A proxy's OpenAPI document with its backend's limits written in: each `(JSON pointer,
/// value)` replaces what the generator wrote for the local backends, so the document states
/// exactly what this proxy enforces. A pointer that names nothing is a bug in the caller and
/// panics in debug builds (tests catch it); release builds skip it.
pub fn openapi_with_limits(document: &str, limits: &[(&str, serde_json::Value)]) -> String {
    let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(document) else {
        return document.to_owned();
    };
    for (pointer, value) in limits {
        match doc.pointer_mut(pointer) {
            Some(slot) => *slot = value.clone(),
            None => debug_assert!(false, "the OpenAPI document has no {pointer}"),
        }
    }
    doc.to_string()
}

/// A create's answer: 201 Created when it made the resource, 200 OK when it was already there
/// (with the same options); the response body either way.
pub fn created<T: Serialize>(created: bool, body: T) -> Response {
    let status = if created { http::StatusCode::CREATED } else { http::StatusCode::OK };
    (status, Json(body)).into_response()
}

/// The route serving a proxy's OpenAPI document, made by `make` with the backend's limits on
/// the first request once the backend has described itself (a `remote` not reached yet has
/// not: 503 until then), and kept.
pub fn openapi_route<S>(
    make: impl Fn() -> crate::ExoResult<String> + Send + Sync + 'static,
) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let made = Arc::new(std::sync::OnceLock::<String>::new());
    let make = Arc::new(make);
    axum::routing::get(move || {
        let (made, make) = (made.clone(), make.clone());
        async move {
            if let Some(document) = made.get() {
                return openapi_document(document.clone());
            }
            match make() {
                Ok(document) => openapi_document(made.get_or_init(|| document).clone()),
                Err(err) => err.into_response(),
            }
        }
    })
}

/// Serves a proxy's own OpenAPI document (`/api/v1/openapi.json`).
pub fn openapi_document(document: String) -> Response {
    let mut response = document.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Path parameters whose rejection (e.g. invalid percent-encoding) is problem+json, like every
/// other error, instead of axum's plain-text default.
#[derive(Debug, Clone)]
pub struct Path<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ExoError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|err| ExoError::new(ErrorReason::MalformedRequest, format!("invalid path: {err}")))
    }
}
