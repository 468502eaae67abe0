//! The SDK's error: the proxy's error vocabulary, decoded from the gRPC status.

use std::fmt;

use exo_proto::common::v1::ErrorDetail;
use prost::Message as _;

pub use exo_proto::common::v1::ErrorReason as Reason;

/// A failed call, in the same vocabulary whatever the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Why; branch on this, never on the message.
    pub reason: Reason,
    /// Human-readable explanation from the proxy (or the transport).
    pub message: String,
    /// The backend that answered, empty if the proxy itself rejected the call.
    pub backend: String,
    /// Whether the same call may succeed later.
    pub retryable: bool,
    /// The request field at fault, if any.
    pub field: String,
    /// The queue, bucket, table or key concerned, if any.
    pub resource: String,
    /// The raw gRPC status code.
    pub code: tonic::Code,
    /// How long the proxy asked the caller to wait before trying again (an open circuit
    /// breaker, shed load); the retry policy waits at least this long.
    pub retry_after: Option<std::time::Duration>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.as_str_name(), self.message)?;
        if !self.backend.is_empty() {
            write!(f, " (backend {})", self.backend)?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl Error {
    /// An error made on the client side (bad endpoint, transport failure).
    pub fn client(reason: Reason, message: impl Into<String>, retryable: bool) -> Self {
        Self {
            reason,
            message: message.into(),
            backend: String::new(),
            retryable,
            field: String::new(),
            resource: String::new(),
            code: tonic::Code::Unknown,
            retry_after: None,
        }
    }

    /// Whether this is a not-found error of any kind.
    pub fn is_not_found(&self) -> bool {
        self.code == tonic::Code::NotFound
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        let code = status.code();
        let detail = exo_proto::rpc::Status::decode(status.details()).ok().and_then(|envelope| {
            envelope
                .details
                .into_iter()
                .find(|any| any.type_url == exo_proto::ERROR_DETAIL_TYPE_URL)
                .and_then(|any| ErrorDetail::decode(any.value.as_slice()).ok())
        });
        match detail {
            Some(detail) => Self {
                reason: detail.reason(),
                message: status.message().to_owned(),
                backend: detail.backend,
                retryable: detail.retryable,
                field: detail.field,
                resource: detail.resource,
                code,
                retry_after: Some(std::time::Duration::from_millis(detail.retry_after_ms))
                    .filter(|wait| !wait.is_zero()),
            },
            // Not from an ExoFlow handler: the transport, tonic itself, or another server.
            None => {
                let (reason, retryable) = reason_for_code(code);
                // A transport failure says why only in its causes (an unknown CA, an expired or
                // misnamed certificate, a refused connection): keep them in the message.
                let mut message = status.message().to_owned();
                let mut cause = std::error::Error::source(&status);
                while let Some(err) = cause {
                    let text = err.to_string();
                    if !message.contains(&text) {
                        message = format!("{message}: {text}");
                    }
                    cause = err.source();
                }
                Self {
                    reason,
                    message,
                    backend: String::new(),
                    retryable,
                    field: String::new(),
                    resource: String::new(),
                    code,
                    retry_after: None,
                }
            }
        }
    }
}

fn reason_for_code(code: tonic::Code) -> (Reason, bool) {
    use tonic::Code;
    match code {
        Code::InvalidArgument => (Reason::MalformedRequest, false),
        Code::Unimplemented => (Reason::Unsupported, false),
        Code::Unavailable => (Reason::BackendUnavailable, true),
        Code::DeadlineExceeded => (Reason::Timeout, true),
        Code::ResourceExhausted => (Reason::RequestTooLarge, false),
        Code::Unauthenticated => (Reason::Unauthenticated, false),
        Code::PermissionDenied => (Reason::PermissionDenied, false),
        Code::Cancelled | Code::Aborted => (Reason::BackendUnavailable, true),
        _ => (Reason::Internal, false),
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
