//! HTTP/JSON request and response bodies with the proto3 JSON mapping, whose every rejection is
//! a problem+json error instead of axum's plain-text default.

use axum::{
    body::Bytes,
    extract::{FromRequest, Query, Request, rejection::QueryRejection},
    response::{IntoResponse, Response},
};
use exo_proto::common::v1::ErrorReason;
use http::{HeaderValue, header};
use serde::{Serialize, de::DeserializeOwned};

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
                ExoError::new(ErrorReason::MalformedRequest, format!("cannot read request body: {rejection}"))
            }
        })?;
        // An empty body stands for an empty object, so body-less POSTs work.
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        serde_json::from_slice(bytes)
            .map(Json)
            .map_err(|err| ExoError::new(ErrorReason::MalformedRequest, format!("invalid JSON body: {err}")))
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

/// Serves the contract's OpenAPI document (`/api/v1/openapi.json` on every proxy).
pub async fn openapi_document() -> Response {
    let mut response = exo_proto::QUEUE_OPENAPI.into_response();
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
