//! RabbitMQ's errors in the contract's vocabulary, and which of them a reconnect heals.

use super::*;

/// The AMQP reply code of a broker error (404 not found, 406 precondition failed, …).
pub(super) fn amqp_code(err: &lapin::Error) -> Option<u16> {
    match err.kind() {
        ErrorKind::ProtocolError(e) => Some(e.get_id()),
        _ => None,
    }
}

pub(super) fn map_error(operation: &str, err: &lapin::Error) -> ExoError {
    let message = format!("RabbitMQ {operation}: {err}");
    match amqp_code(err) {
        Some(403) => ExoError::new(ErrorReason::PermissionDenied, message),
        // A quorum queue whose leader is not up yet (a node restarting): the broker recovering.
        Some(404) if recovering(err) => ExoError::new(ErrorReason::BackendUnavailable, message).retryable(),
        // A header the broker refuses (a `CC` that is not an array, say): the message's fault.
        Some(406) if err.to_string().contains("in_header") => {
            ExoError::new(ErrorReason::InvalidAttribute, message)
        }
        Some(404 | 405 | 406 | 530 | 540) => ExoError::internal(message),
        _ => ExoError::new(ErrorReason::BackendUnavailable, message).retryable(),
    }
}

/// Whether the broker refused a call because a queue's home node or leader is down or still
/// starting (`NOT_FOUND - home node … is down or inaccessible`, `… not available`), which passes.
pub(super) fn recovering(err: &lapin::Error) -> bool {
    recovering_text(&err.to_string())
}

/// [`recovering`] on the broker's error text.
pub(super) fn recovering_text(text: &str) -> bool {
    ["down or inaccessible", "not available", "timed out", "no leader"].iter().any(|sign| text.contains(sign))
}

/// Why a publish was not confirmed, in words.
pub(super) fn refusal(confirmation: &Confirmation) -> &'static str {
    match confirmation {
        Confirmation::Ack(_) => "no queue took it",
        Confirmation::Nack(_) => {
            "the broker refused it (nack: a full queue with reject-publish, or an internal error)"
        }
        Confirmation::NotRequested => "the channel is not in confirm mode",
    }
}
