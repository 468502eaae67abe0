//! Queue backends, one module each, and the registry that lists them: a backend is its module
//! (with its [`Backend`](exo_proxy_core::registry::Backend) impl) plus one line below.

#[cfg(feature = "azure")]
pub mod azure_queue;
pub mod embedded;
pub mod failover;
pub mod memory;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
pub mod remote;
#[cfg(feature = "aws")]
pub mod sqs;
#[cfg(any(feature = "rabbitmq", feature = "nats"))]
mod topic_registry;

use std::{sync::Arc, time::Duration};

use crate::backend::Queue;

exo_proxy_core::backends! {
    /// Which backend serves the queues, with its settings (`kind:` picks the line).
    pub enum BackendConfig for "queue", opens Arc<dyn Queue>, with OpenContext {
        "memory" in "memory" => Memory(memory::MemoryQueue): "In-process, not durable; for tests and benchmarks.",
        "embedded" in "local" => Embedded(embedded::EmbeddedQueue): "A durable SQLite file on local disk.",
        #[cfg(feature = "aws")]
        "sqs" in "aws" => Sqs(sqs::SqsQueue): "Amazon SQS: region, endpoint override, credentials.",
        #[cfg(feature = "azure")]
        "azure-queue" in "azure" => AzureQueue(azure_queue::AzureQueue): "Azure Storage Queue: account, endpoint, credentials.",
        #[cfg(feature = "postgres")]
        "postgres" in "postgres" => Postgres(postgres::PostgresQueue): "PostgreSQL: two tables in a schema of your database.",
        #[cfg(feature = "nats")]
        "nats" in "nats" => Nats(nats::NatsQueue): "NATS JetStream: a work-queue stream per queue, one durable pull consumer.",
        #[cfg(feature = "rabbitmq")]
        "rabbitmq" in "rabbitmq" => RabbitMq(rabbitmq::RabbitMqQueue): "RabbitMQ: a quorum queue per queue, publisher confirms, visibility held by the proxy.",
        "remote" in "remote" => Remote(remote::RemoteQueue): "Another eqs proxy over gRPC (https: TLS, client certificate): an edge forwarding to a standalone proxy.",
    }
    chain "failover" => Failover(failover::FailoverQueue): "An ordered chain of backends: writes to the first that answers, receives from all.";
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self::Embedded(embedded::EmbeddedConfig::default())
    }
}

/// Default largest message for the local backends (256 KiB, the classic SQS limit).
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 256 * 1024;

/// What every queue backend is opened with.
#[derive(Debug, Clone)]
pub struct OpenContext {
    /// Bounds each call a cloud backend makes to its service.
    pub call_timeout: Duration,
    /// The proxy's metrics (a failover chain's members report into them).
    pub metrics: std::sync::Arc<exo_proxy_core::metrics::Metrics>,
}

use exo_proto::{common::v1::ErrorReason, queue::v1 as pb};
use exo_proxy_core::{ExoError, ExoResult};

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
        format!(
            "queue '{name}' already exists with other options: it has {}; the request asks for {}",
            describe(existing),
            describe(requested)
        ),
    )
    .with_resource(name.as_str())
}

/// Options as a person reads them: `visibility 30 s, retention 345600 s, delay 0 s, no dead-letter queue`.
fn describe(o: &pb::QueueOptions) -> String {
    let dead_letter = if o.dead_letter_queue.is_empty() {
        "no dead-letter queue".to_owned()
    } else {
        format!("dead-letter to '{}' after {} receives", o.dead_letter_queue, o.max_receives)
    };
    format!(
        "visibility {} s, retention {} s, delay {} s, {dead_letter}",
        o.visibility_timeout_seconds.unwrap_or_default(),
        o.retention_seconds,
        o.delay_seconds
    )
}

/// What a create finds already there, for backends that look before they create: `Some` answer
/// (created=false) when the queue exists with the same options, QUEUE_ALREADY_EXISTS with other
/// options, `None` when it does not exist (go on and create it).
#[cfg_attr(
    not(any(feature = "aws", feature = "azure", feature = "postgres", feature = "nats")),
    allow(dead_code)
)]
pub(crate) fn existing_queue(
    looked_up: ExoResult<pb::QueueInfo>,
    name: &QueueName,
    options: &pb::QueueOptions,
) -> ExoResult<Option<(bool, pb::QueueInfo)>> {
    match looked_up {
        Ok(info) => {
            let existing = info.options.clone().unwrap_or_default();
            if existing == *options {
                Ok(Some((false, info)))
            } else {
                Err(already_exists(name, &existing, options))
            }
        }
        Err(err) if err.reason == ErrorReason::QueueNotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// The options of a queue, as a backend keeps them beside a queue whose own settings cannot
/// carry or report them all (NATS: the stream's description; RabbitMQ: the registry stream).
/// Delay is never kept: those backends do not offer it.
#[cfg(any(feature = "nats", feature = "rabbitmq"))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredOptions {
    pub(crate) visibility: u32,
    pub(crate) retention: u32,
    pub(crate) max_receives: u32,
    pub(crate) dead_letter_queue: String,
}

#[cfg(any(feature = "nats", feature = "rabbitmq"))]
impl StoredOptions {
    /// What normalized (defaults filled in) options keep.
    pub(crate) fn from_options(o: &pb::QueueOptions) -> Self {
        Self {
            visibility: o.visibility_timeout_seconds.unwrap_or_default(),
            retention: o.retention_seconds,
            max_receives: o.max_receives,
            dead_letter_queue: o.dead_letter_queue.clone(),
        }
    }

    /// The options as the contract reports them.
    pub(crate) fn options(&self) -> pb::QueueOptions {
        pb::QueueOptions {
            visibility_timeout_seconds: Some(self.visibility),
            retention_seconds: self.retention,
            delay_seconds: 0,
            max_receives: self.max_receives,
            dead_letter_queue: self.dead_letter_queue.clone(),
        }
    }
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
