//! Queue backends, one module each.

pub mod embedded;
pub mod memory;

use exo_proto::{common::v1::ErrorReason, queue::v1 as pb};
use exo_proxy_core::ExoError;

use crate::model::QueueName;

/// A new, time-ordered, globally unique message id.
pub(crate) fn new_message_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// QUEUE_ALREADY_EXISTS for a create whose options differ from the existing queue's.
pub(crate) fn already_exists(
    name: &QueueName,
    existing: &pb::QueueOptions,
    requested: &pb::QueueOptions,
) -> ExoError {
    ExoError::new(
        ErrorReason::QueueAlreadyExists,
        format!("queue '{name}' already exists with other options (existing {existing:?}, requested {requested:?})"),
    )
    .with_resource(name.as_str())
}

/// The error for a dead-letter queue that does not exist at create time.
pub(crate) fn dead_letter_missing(name: &str) -> ExoError {
    ExoError::new(
        ErrorReason::QueueNotFound,
        format!("dead-letter queue '{name}' does not exist; create it first"),
    )
    .with_field("options.dead_letter_queue")
    .with_resource(name)
}
