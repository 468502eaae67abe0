//! The one error type every proxy and backend returns, and its two wire forms: a gRPC status
//! carrying an `ErrorDetail`, and an RFC 9457 problem+json body.

use std::fmt;

use axum::response::{IntoResponse, Response};
use exo_proto::common::v1::{ErrorDetail, ErrorReason};
use http::{HeaderValue, StatusCode, header};
use prost::Message as _;

/// A failed call: a stable [`ErrorReason`], a message for humans, and what a client needs to
/// decide whether to retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ExoError {
    /// Why the call failed.
    pub reason: ErrorReason,
    /// What went wrong, for a human; never contains secrets.
    pub message: String,
    /// The backend that answered, empty if the proxy rejected the call itself.
    pub backend: String,
    /// Whether retrying the same call later may succeed.
    pub retryable: bool,
    /// The request field at fault, if any.
    pub field: String,
    /// The queue, bucket, table or key the error is about, if any.
    pub resource: String,
    /// How long the caller should wait before trying again, when the proxy knows (an open
    /// breaker's remaining rest, shed load).
    pub retry_after: Option<std::time::Duration>,
}

impl fmt::Display for ExoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.as_str_name(), self.message)
    }
}

/// Result alias used across the proxies.
pub type ExoResult<T> = Result<T, ExoError>;

/// Longest message an error carries: it may quote client input (a 100 KB name), and gRPC
/// clients refuse trailers over 8–16 KiB.
const MAX_MESSAGE_CHARS: usize = 512;
/// Longest resource or field an error names.
const MAX_NAME_CHARS: usize = 160;

/// `text` cut to `max` characters, marked with `…` where it was cut.
fn bounded(mut text: String, max: usize) -> String {
    if let Some((at, _)) = text.char_indices().nth(max) {
        text.truncate(at);
        text.push('…');
    }
    text
}

impl ExoError {
    /// An error with `reason`; retryability follows the reason's default.
    pub fn new(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: bounded(message.into(), MAX_MESSAGE_CHARS),
            backend: String::new(),
            retryable: default_retryable(reason),
            field: String::new(),
            resource: String::new(),
            retry_after: None,
        }
    }

    /// INVALID_ARGUMENT about `field`.
    pub fn invalid_argument(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorReason::InvalidArgument, message).with_field(field)
    }

    /// UNSUPPORTED: the backend lacks a capability.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorReason::Unsupported, message)
    }

    /// INTERNAL: a bug or an unexpected backend answer.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorReason::Internal, message)
    }

    /// BACKEND_UNAVAILABLE (retryable).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorReason::BackendUnavailable, message)
    }

    /// Marks the error retryable whatever its reason's default (a condition that lost a race,
    /// a throttle with a known wait).
    pub fn retryable(self) -> Self {
        self.with_retryable(true)
    }

    /// Says whether the error is retryable, whatever its reason's default (as a backend or a
    /// remote proxy reported it).
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Tells the caller to wait `wait` before trying again (sent as `retry_after_ms` in the
    /// error detail, `retryAfterMs` in a problem document, and `Retry-After` over HTTP). A zero
    /// wait is no hint.
    pub fn with_retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait).filter(|w| !w.is_zero());
        self
    }

    /// Sets the field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = bounded(field.into(), MAX_NAME_CHARS);
        self
    }

    /// Sets the resource the error is about.
    pub fn with_resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = bounded(resource.into(), MAX_NAME_CHARS);
        self
    }

    /// Sets the backend that answered, unless one is already recorded.
    pub fn with_backend(mut self, backend: &str) -> Self {
        if self.backend.is_empty() {
            self.backend = backend.to_owned();
        }
        self
    }

    /// The gRPC status code for this error.
    pub fn grpc_code(&self) -> tonic::Code {
        grpc_code(self.reason)
    }

    /// The HTTP status for this error.
    pub fn http_status(&self) -> StatusCode {
        http_status(self.reason)
    }

    /// The wire detail sent to clients.
    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            reason: self.reason as i32,
            backend: self.backend.clone(),
            retryable: self.retryable,
            retry_after_ms: self.retry_after_ms(),
            field: self.field.clone(),
            resource: self.resource.clone(),
        }
    }

    /// The retry hint in whole milliseconds, rounded up (0: none).
    fn retry_after_ms(&self) -> u64 {
        self.retry_after.map_or(0, |wait| wait.as_micros().div_ceil(1000) as u64)
    }

    /// The RFC 9457 problem document for this error.
    pub fn problem(&self) -> serde_json::Value {
        let status = self.http_status();
        let mut problem = serde_json::json!({
            "type": format!("urn:exoflow:error:{}", self.reason.as_str_name()),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": self.message,
            "reason": self.reason.as_str_name(),
            "backend": self.backend,
            "retryable": self.retryable,
            "field": self.field,
            "resource": self.resource,
        });
        if self.retry_after.is_some() {
            problem["retryAfterMs"] = self.retry_after_ms().into();
        }
        problem
    }
}

/// A readiness probe's verdict from a cheap listing call: answered, or refused only for lack
/// of permission (an app role or SAS need not be allowed to list) means reachable and
/// authenticated; anything else, a wrong key or signature included, means not ready.
pub fn readiness(probe: ExoResult<()>) -> ExoResult<()> {
    match probe {
        Err(err) if err.reason == ErrorReason::PermissionDenied => Ok(()),
        other => other,
    }
}

/// An error and its causes (`connect: TLS handshake: invalid peer certificate: UnknownIssuer`),
/// for client libraries whose top-level message leaves out why.
pub fn with_causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        // Wrappers that already print their cause (many do) would otherwise say it twice.
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// Whether a reason is worth retrying by default.
pub fn default_retryable(reason: ErrorReason) -> bool {
    matches!(
        reason,
        ErrorReason::BackendUnavailable
            | ErrorReason::Timeout
            | ErrorReason::Throttled
            | ErrorReason::ShuttingDown
    )
}

/// The gRPC code each reason maps to (as each group of reasons in `exo.common.v1.ErrorReason`
/// states it).
pub fn grpc_code(reason: ErrorReason) -> tonic::Code {
    use ErrorReason as R;
    use tonic::Code;
    match reason {
        R::InvalidArgument
        | R::InvalidName
        | R::InvalidAttribute
        | R::InvalidReceipt
        | R::MalformedRequest
        | R::InvalidFilter => Code::InvalidArgument,
        R::QueueNotFound
        | R::BucketNotFound
        | R::ObjectNotFound
        | R::KeyNotFound
        | R::TableNotFound
        | R::RouteNotFound
        | R::TopicNotFound
        | R::SubscriptionNotFound => Code::NotFound,
        R::QueueAlreadyExists | R::BucketAlreadyExists | R::SubscriptionAlreadyExists => Code::AlreadyExists,
        R::NotEmpty | R::ConditionFailed | R::ReceiptStale | R::NotModified | R::NotACounter => {
            Code::FailedPrecondition
        }
        R::RangeNotSatisfiable | R::CounterOverflow => Code::OutOfRange,
        R::MessageTooLarge
        | R::ValueTooLarge
        | R::RequestTooLarge
        | R::Throttled
        | R::StorageFull
        | R::TooManySubscriptions => Code::ResourceExhausted,
        R::Unsupported => Code::Unimplemented,
        R::BackendUnavailable | R::ShuttingDown => Code::Unavailable,
        R::Timeout => Code::DeadlineExceeded,
        R::Unauthenticated => Code::Unauthenticated,
        R::PermissionDenied => Code::PermissionDenied,
        R::Internal | R::Unspecified => Code::Internal,
    }
}

/// The HTTP status each reason maps to (as each group of reasons in `exo.common.v1.ErrorReason`
/// states it).
pub fn http_status(reason: ErrorReason) -> StatusCode {
    use ErrorReason as R;
    match reason {
        R::InvalidArgument
        | R::InvalidName
        | R::InvalidAttribute
        | R::InvalidReceipt
        | R::MalformedRequest
        | R::InvalidFilter => StatusCode::BAD_REQUEST,
        R::QueueNotFound
        | R::BucketNotFound
        | R::ObjectNotFound
        | R::KeyNotFound
        | R::TableNotFound
        | R::RouteNotFound
        | R::TopicNotFound
        | R::SubscriptionNotFound => StatusCode::NOT_FOUND,
        R::QueueAlreadyExists
        | R::BucketAlreadyExists
        | R::NotEmpty
        | R::SubscriptionAlreadyExists
        | R::TooManySubscriptions
        | R::NotACounter
        | R::CounterOverflow => StatusCode::CONFLICT,
        R::ConditionFailed | R::ReceiptStale => StatusCode::PRECONDITION_FAILED,
        R::NotModified => StatusCode::NOT_MODIFIED,
        R::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
        R::MessageTooLarge | R::ValueTooLarge | R::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        R::Throttled => StatusCode::TOO_MANY_REQUESTS,
        R::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
        R::Unsupported => StatusCode::NOT_IMPLEMENTED,
        R::BackendUnavailable | R::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        R::Timeout => StatusCode::GATEWAY_TIMEOUT,
        R::Unauthenticated => StatusCode::UNAUTHORIZED,
        R::PermissionDenied => StatusCode::FORBIDDEN,
        R::Internal | R::Unspecified => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<ExoError> for tonic::Status {
    fn from(err: ExoError) -> Self {
        let code = err.grpc_code();
        let envelope = exo_proto::rpc::Status {
            code: code as i32,
            message: err.message.clone(),
            details: vec![prost_types::Any {
                type_url: exo_proto::ERROR_DETAIL_TYPE_URL.to_owned(),
                value: err.detail().encode_to_vec(),
            }],
        };
        tonic::Status::with_details(code, err.message, envelope.encode_to_vec().into())
    }
}

impl IntoResponse for ExoError {
    fn into_response(self) -> Response {
        let status = self.http_status();
        let body = self.problem().to_string();
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(wait) = self.retry_after {
            // Whole seconds (RFC 9110), rounded up so no client comes back too early.
            let seconds = wait.as_millis().div_ceil(1000).max(1);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds as u64));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_said_once() {
        #[derive(Debug)]
        struct Layer(&'static str, Option<Box<Layer>>);
        impl std::fmt::Display for Layer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Layer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|l| l as _)
            }
        }
        let root = Layer("connection reset", None);
        let repeating = Layer("reading a body: connection reset", Some(Box::new(root)));
        let top = Layer("upload", Some(Box::new(repeating)));
        assert_eq!(with_causes(&top), "upload: reading a body: connection reset");
        let plain = Layer(
            "connect",
            Some(Box::new(Layer("TLS handshake", Some(Box::new(Layer("UnknownIssuer", None)))))),
        );
        assert_eq!(with_causes(&plain), "connect: TLS handshake: UnknownIssuer");
    }

    #[test]
    fn errors_quote_client_input_within_bounds() {
        let name = "q".repeat(100_000);
        let err = ExoError::new(ErrorReason::InvalidName, format!("queue name '{name}' is too long"))
            .with_resource(name.clone())
            .with_field(name);
        assert!(err.message.chars().count() <= MAX_MESSAGE_CHARS + 1 && err.message.ends_with('…'));
        assert!(err.resource.chars().count() <= MAX_NAME_CHARS + 1);
        assert!(err.field.chars().count() <= MAX_NAME_CHARS + 1);
        assert!(err.problem().to_string().len() < 2048);
        let status = tonic::Status::from(err);
        assert!(status.message().len() + status.details().len() < 4096);
        assert_eq!(bounded("ünï".into(), 2), "ün…", "cut at a character boundary");
    }

    #[test]
    fn grpc_status_carries_detail_envelope() {
        let err = ExoError::new(ErrorReason::QueueNotFound, "no queue 'a'")
            .with_backend("memory")
            .with_resource("a");
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::NotFound);
        let envelope = exo_proto::rpc::Status::decode(status.details()).expect("envelope");
        assert_eq!(envelope.details.len(), 1);
        assert_eq!(envelope.details[0].type_url, exo_proto::ERROR_DETAIL_TYPE_URL);
        let detail = ErrorDetail::decode(envelope.details[0].value.as_slice()).expect("detail");
        assert_eq!(detail.reason(), ErrorReason::QueueNotFound);
        assert_eq!(detail.backend, "memory");
        assert_eq!(detail.resource, "a");
        assert!(!detail.retryable);
    }

    #[test]
    fn every_reason_has_consistent_http_and_grpc_mapping() {
        for value in 0..=100 {
            let Ok(reason) = ErrorReason::try_from(value) else { continue };
            let http = http_status(reason);
            let grpc = grpc_code(reason);
            // 4xx ⇔ a client-side gRPC code, 5xx ⇔ a server-side one (304 aside, and a full
            // disk: HTTP 507, gRPC RESOURCE_EXHAUSTED, which gRPC documents for "the entire file
            // system is out of space").
            if !matches!(reason, ErrorReason::NotModified | ErrorReason::StorageFull) {
                let server_side = matches!(
                    grpc,
                    tonic::Code::Internal
                        | tonic::Code::Unavailable
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Unimplemented
                );
                assert_eq!(http.is_server_error(), server_side, "{reason:?}");
            }
        }
    }

    #[test]
    fn problem_json_is_rfc9457_shaped() {
        let err = ExoError::new(ErrorReason::MessageTooLarge, "body is 300000 bytes, limit 262144");
        let problem = err.problem();
        assert_eq!(problem["status"], 413);
        assert_eq!(problem["reason"], "MESSAGE_TOO_LARGE");
        assert_eq!(problem["type"], "urn:exoflow:error:MESSAGE_TOO_LARGE");
        assert_eq!(problem["detail"], "body is 300000 bytes, limit 262144");
        assert_eq!(problem["retryable"], false);
        assert!(problem.get("retryAfterMs").is_none(), "no hint, no field");
    }

    #[test]
    fn a_retry_hint_reaches_the_detail_the_problem_and_retry_after() {
        let err = ExoError::unavailable("circuit open")
            .with_retry_after(std::time::Duration::from_micros(1_200_500));
        assert_eq!(err.detail().retry_after_ms, 1201, "rounded up");
        assert_eq!(err.problem()["retryAfterMs"], 1201);
        let response = err.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "2", "whole seconds, rounded up");
        let none = ExoError::unavailable("down").with_retry_after(std::time::Duration::ZERO);
        assert_eq!(none.detail().retry_after_ms, 0);
        assert!(!none.into_response().headers().contains_key(header::RETRY_AFTER));
    }
}
