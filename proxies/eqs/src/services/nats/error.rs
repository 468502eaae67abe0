//! JetStream's errors in the contract's vocabulary.

use super::*;

/// A transport failure (no answer, a dropped connection): retryable.
pub(super) fn unavailable(operation: &str, err: impl std::fmt::Display) -> ExoError {
    ExoError::new(ErrorReason::BackendUnavailable, format!("NATS {operation}: {err}")).retryable()
}

/// An error JetStream answered with.
pub(super) fn api_error(operation: &str, err: &jetstream::Error) -> ExoError {
    let message = format!("NATS {operation}: {err}");
    match err.error_code() {
        ErrorCode::STORAGE_RESOURCES_EXCEEDED
        | ErrorCode::INSUFFICIENT_RESOURCES
        | ErrorCode::ACCOUNT_RESOURCES_EXCEEDED
        | ErrorCode::MAXIMUM_STREAMS_LIMIT => ExoError::new(ErrorReason::StorageFull, message),
        ErrorCode::CLUSTER_NOT_AVAILABLE
        | ErrorCode::CLUSTER_NO_PEERS
        | ErrorCode::CLUSTER_INCOMPLETE
        | ErrorCode::CLUSTER_NOT_LEADER
        | ErrorCode::JETSTREAM_NOT_ENABLED
        | ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT => {
            ExoError::new(ErrorReason::BackendUnavailable, message).retryable()
        }
        _ => ExoError::internal(message),
    }
}

/// Fails unless the server answers JetStream's account info without an error (the raw JSON:
/// its shape differs between server versions).
pub(super) async fn jetstream_enabled(client: &async_nats::Client) -> ExoResult<()> {
    let answer = client
        .request("$JS.API.INFO", "".into())
        .await
        .map_err(|e| unavailable("JetStream account info (is JetStream enabled on the server?)", e))?;
    let body: serde_json::Value = serde_json::from_slice(&answer.payload).unwrap_or_default();
    match body.get("error") {
        None => Ok(()),
        Some(error) => Err(ExoError::new(
            ErrorReason::BackendUnavailable,
            format!("NATS JetStream is not available to this account: {error}"),
        )),
    }
}

/// Whether an API error says the stream (or its consumer) is not there.
pub(super) fn is_not_found(err: &jetstream::Error) -> bool {
    matches!(err.error_code(), ErrorCode::STREAM_NOT_FOUND | ErrorCode::CONSUMER_NOT_FOUND)
}

/// Whether a publish was refused because the message is over the stream's `max_msg_size`.
pub(super) fn exceeds_stream_limit(err: &jetstream::context::PublishError) -> bool {
    std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .is_some_and(|e| e.error_code() == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM)
}
