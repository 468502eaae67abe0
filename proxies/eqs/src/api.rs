//! The queue API in front of every backend: turns wire requests into validated calls, checks
//! limits and declared capabilities before anything is written, and shapes responses. Both the
//! gRPC service and the HTTP/JSON routes call this, so they behave identically.

use std::{collections::HashSet, sync::Arc, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use exo_proto::{common::v1::ErrorReason, queue::v1 as pb};
use exo_proxy_core::traces::TRACEPARENT;
use exo_proxy_core::{ExoError, ExoResult};

use crate::ops;
use crate::{
    backend::Queue,
    model::{
        Capability, DEFAULT_RETENTION_SECONDS, DEFAULT_VISIBILITY_SECONDS, Descriptor, QueueName,
        ReceiveParams,
    },
};

/// Most queue names in one ListQueues page.
pub const MAX_LIST_PAGE: u32 = 1000;
/// Longest attribute name.
pub const MAX_ATTRIBUTE_NAME: usize = 128;

/// Validating front of a queue backend.
#[derive(Clone)]
pub struct QueueApi {
    backend: Arc<dyn Queue>,
}

impl std::fmt::Debug for QueueApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueApi").field("backend", &self.backend.descriptor().backend).finish()
    }
}

impl QueueApi {
    /// Serves `backend` (usually already wrapped in layers).
    pub fn new(backend: Arc<dyn Queue>) -> Self {
        Self { backend }
    }

    /// The backend (with its layers).
    pub fn backend(&self) -> &Arc<dyn Queue> {
        &self.backend
    }

    fn descriptor(&self) -> &Descriptor {
        self.backend.descriptor()
    }

    pub(crate) fn with_backend_name(&self, err: ExoError) -> ExoError {
        err.with_backend(self.descriptor().backend)
    }

    /// The backend's name, capabilities and limits; BACKEND_UNAVAILABLE (retryable) while it
    /// has not described itself (a `remote` not reached yet).
    pub fn describe(&self) -> ExoResult<pb::DescribeResponse> {
        if !self.backend.is_described() {
            return Err(self.with_backend_name(exo_proxy_core::descriptor::not_described()));
        }
        let d = self.descriptor();
        Ok(pb::DescribeResponse {
            backend: d.backend.to_owned(),
            capabilities: d.capability_codes(),
            limits: Some(d.limits),
            topic_limits: d.supports(Capability::Topics).then(|| self.backend.topic_limits()),
        })
    }

    /// Validates the name and options (filling defaults) and creates the queue; `created` is false when it existed with the same options.
    pub async fn create_queue(&self, req: pb::CreateQueueRequest) -> ExoResult<pb::CreateQueueResponse> {
        let name = QueueName::parse("queue", &req.name, "name").map_err(|e| self.with_backend_name(e))?;
        let options = normalize_options(self.descriptor(), &name, req.options.unwrap_or_default())
            .map_err(|e| self.with_backend_name(e))?;
        let (created, info) =
            self.backend.create_queue(ops::CreateQueue { queue: &name, options: &options }).await?;
        Ok(pb::CreateQueueResponse { created, info: Some(info) })
    }

    /// Deletes a queue and its messages (QUEUE_NOT_FOUND if absent).
    pub async fn delete_queue(&self, req: pb::DeleteQueueRequest) -> ExoResult<pb::DeleteQueueResponse> {
        let name = QueueName::parse("queue", &req.name, "name").map_err(|e| self.with_backend_name(e))?;
        self.backend.delete_queue(ops::DeleteQueue { queue: &name }).await?;
        Ok(pb::DeleteQueueResponse {})
    }

    /// ListQueues. Page tokens are the last name of the previous page, opaquely encoded.
    pub async fn list_queues(&self, req: pb::ListQueuesRequest) -> ExoResult<pb::ListQueuesResponse> {
        let page = Page::parse(req.page_size, &req.prefix, &req.page_token)
            .map_err(|e| self.with_backend_name(e))?;
        let names = self
            .backend
            .list_queues(ops::ListQueues {
                prefix: &req.prefix,
                start_after: page.start_after.as_deref(),
                limit: page.size + 1,
            })
            .await?;
        let (names, next_page_token) = page.finish(names);
        Ok(pb::ListQueuesResponse { names, next_page_token })
    }

    /// The queue's options and approximate message counts.
    pub async fn get_queue_info(&self, req: pb::GetQueueInfoRequest) -> ExoResult<pb::GetQueueInfoResponse> {
        let name = QueueName::parse("queue", &req.name, "name").map_err(|e| self.with_backend_name(e))?;
        Ok(pb::GetQueueInfoResponse {
            info: Some(self.backend.queue_info(ops::QueueInfo { queue: &name }).await?),
        })
    }

    /// Sends one message after checking its size, attributes and delay against the limits.
    pub async fn send(&self, req: pb::SendRequest) -> ExoResult<pb::SendResponse> {
        let name = QueueName::parse("queue", &req.queue, "queue").map_err(|e| self.with_backend_name(e))?;
        let message = req
            .message
            .ok_or_else(|| ExoError::invalid_argument("message", "message is required"))
            .and_then(|m| validate_message(self.descriptor(), m, "message"))
            .map(|m| carry_trace(self.descriptor(), m))
            .map_err(|e| self.with_backend_name(e.with_resource(name.as_str())))?;
        let mut results = self.backend.send(ops::Send { queue: &name, messages: vec![message] }).await?;
        let message_id = results
            .pop()
            .ok_or_else(|| ExoError::internal("backend returned no message id"))?
            // The entry's own error is the backend's answer: say which backend gave it.
            .map_err(|e| self.with_backend_name(e))?;
        Ok(pb::SendResponse { message_id })
    }

    /// SendBatch: every entry is validated on its own; the valid ones are sent together.
    pub async fn send_batch(&self, req: pb::SendBatchRequest) -> ExoResult<pb::SendBatchResponse> {
        let name = QueueName::parse("queue", &req.queue, "queue").map_err(|e| self.with_backend_name(e))?;
        let descriptor = self.descriptor();
        let entries = req.entries.into_iter().map(|e| (e.id, e.message));
        let batch = BatchEntries::check(entries, descriptor.limits.max_batch_entries, |m, field| {
            validate_message(descriptor, m, field).map(|m| carry_trace(descriptor, m))
        })
        .map_err(|e| self.with_backend_name(e))?;
        let mut results: Vec<pb::SendBatchResult> = batch
            .ids
            .into_iter()
            .zip(batch.refused)
            .map(|(id, refused)| pb::SendBatchResult { id, outcome: refused.as_ref().map(entry_error) })
            .collect();
        let (valid, valid_at) = (batch.valid, batch.valid_at);
        if !valid.is_empty() {
            match self.backend.send(ops::Send { queue: &name, messages: valid }).await {
                Ok(sent) => {
                    for (slot, sent) in valid_at.iter().zip(sent) {
                        results[*slot].outcome = Some(match sent {
                            Ok(message_id) => pb::send_batch_result::Outcome::MessageId(message_id),
                            Err(err) => entry_error(&err),
                        });
                    }
                }
                // The queue itself is at fault (missing, unreachable): the whole call fails.
                Err(err) => return Err(err),
            }
        }
        Ok(pb::SendBatchResponse { results })
    }

    /// Receives up to `max_messages`, waiting up to `wait_seconds` for a first one.
    pub async fn receive(&self, req: pb::ReceiveRequest) -> ExoResult<pb::ReceiveResponse> {
        let name = QueueName::parse("queue", &req.queue, "queue").map_err(|e| self.with_backend_name(e))?;
        let params = receive_params(self.descriptor(), &req).map_err(|e| self.with_backend_name(e))?;
        let messages = self.backend.receive(ops::Receive { queue: &name, params }).await?;
        if exo_proxy_core::traces::enabled() {
            // The receive leads to each message's send (whoever sent it with a trace context).
            for traceparent in messages.iter().filter_map(|m| m.attributes.get(TRACEPARENT)) {
                exo_proxy_core::traces::link_current(traceparent);
            }
        }
        Ok(pb::ReceiveResponse { messages })
    }

    /// Deletes a received message by its receipt (already gone is fine; superseded is RECEIPT_STALE).
    pub async fn ack(&self, req: pb::AckRequest) -> ExoResult<pb::AckResponse> {
        let name = QueueName::parse("queue", &req.queue, "queue").map_err(|e| self.with_backend_name(e))?;
        require_receipt(&req.receipt).map_err(|e| self.with_backend_name(e))?;
        self.backend.ack(ops::Ack { queue: &name, receipt: &req.receipt }).await?;
        Ok(pb::AckResponse {})
    }

    /// Sets how long a received message stays hidden, from now.
    pub async fn change_visibility(
        &self,
        req: pb::ChangeVisibilityRequest,
    ) -> ExoResult<pb::ChangeVisibilityResponse> {
        let name = QueueName::parse("queue", &req.queue, "queue").map_err(|e| self.with_backend_name(e))?;
        let descriptor = self.descriptor();
        descriptor.require(Capability::ChangeVisibility, "changing visibility")?;
        require_receipt(&req.receipt).map_err(|e| self.with_backend_name(e))?;
        let max = descriptor.limits.max_visibility_timeout_seconds;
        if req.visibility_timeout_seconds > max {
            return Err(self.with_backend_name(ExoError::invalid_argument(
                "visibility_timeout_seconds",
                format!(
                    "visibility timeout {} s is above the maximum {max} s",
                    req.visibility_timeout_seconds
                ),
            )));
        }
        self.backend
            .change_visibility(ops::ChangeVisibility {
                queue: &name,
                receipt: &req.receipt,
                seconds: req.visibility_timeout_seconds,
            })
            .await?;
        Ok(pb::ChangeVisibilityResponse {})
    }

    /// Deletes every message of a queue (PURGE capability).
    pub async fn purge(&self, req: pb::PurgeRequest) -> ExoResult<pb::PurgeResponse> {
        let name = QueueName::parse("queue", &req.queue, "queue").map_err(|e| self.with_backend_name(e))?;
        self.descriptor().require(Capability::Purge, "purge")?;
        self.backend.purge(ops::Purge { queue: &name }).await?;
        Ok(pb::PurgeResponse {})
    }
}

/// A batch's entries, checked one by one: each entry's id (its own, else its index; unique in
/// the batch), why it was refused (if it was), and the valid messages with their positions.
pub(crate) struct BatchEntries<M> {
    /// One per entry.
    pub(crate) ids: Vec<String>,
    /// One per entry: `Some` for an entry refused on its own.
    pub(crate) refused: Vec<Option<ExoError>>,
    /// The messages that passed, in order.
    pub(crate) valid: Vec<M>,
    /// Each valid message's entry index.
    pub(crate) valid_at: Vec<usize>,
}

impl<M> BatchEntries<M> {
    /// Checks the batch's size (1 ..= `max`) and ids, then each message with `check`; an empty
    /// or oversized batch, or a repeated id, refuses the whole call.
    pub(crate) fn check(
        entries: impl ExactSizeIterator<Item = (String, Option<M>)>,
        max: u32,
        check: impl Fn(M, &str) -> ExoResult<M>,
    ) -> ExoResult<Self> {
        let count = entries.len();
        if count == 0 {
            return Err(ExoError::invalid_argument("entries", "a batch needs at least one entry"));
        }
        if count > max as usize {
            return Err(ExoError::invalid_argument(
                "entries",
                format!("{count} entries is above the maximum {max}"),
            ));
        }
        let mut batch = Self {
            ids: Vec::with_capacity(count),
            refused: Vec::with_capacity(count),
            valid: Vec::new(),
            valid_at: Vec::new(),
        };
        let mut seen = HashSet::with_capacity(count);
        for (index, (id, message)) in entries.enumerate() {
            let id = if id.is_empty() { index.to_string() } else { id };
            if !seen.insert(id.clone()) {
                return Err(ExoError::invalid_argument(
                    format!("entries[{index}].id"),
                    format!("entry id {id:?} appears twice in the batch"),
                ));
            }
            let field = format!("entries[{index}].message");
            let checked = message
                .ok_or_else(|| ExoError::invalid_argument(&field, "message is required"))
                .and_then(|m| check(m, &field));
            match checked {
                Ok(message) => {
                    batch.valid_at.push(index);
                    batch.valid.push(message);
                    batch.refused.push(None);
                }
                Err(err) => batch.refused.push(Some(err)),
            }
            batch.ids.push(id);
        }
        Ok(batch)
    }
}

/// A validated request for one page of names (queues or topics).
pub(crate) struct Page {
    /// Names on the page.
    pub(crate) size: usize,
    /// The last name of the previous page.
    pub(crate) start_after: Option<String>,
}

impl Page {
    /// Checks the page size and prefix and decodes the page token.
    pub(crate) fn parse(page_size: u32, prefix: &str, page_token: &str) -> ExoResult<Self> {
        let size = match page_size {
            0 => MAX_LIST_PAGE,
            n if n <= MAX_LIST_PAGE => n,
            n => {
                return Err(ExoError::invalid_argument(
                    "page_size",
                    format!("page_size {n} is above the maximum {MAX_LIST_PAGE}"),
                ));
            }
        };
        exo_proxy_core::ResourceName::check_prefix(prefix, "prefix")?;
        let start_after = if page_token.is_empty() {
            None
        } else {
            let raw = exo_proxy_core::json::page_token_bytes(page_token)?;
            Some(String::from_utf8_lossy(&raw).into_owned())
        };
        Ok(Self { size: size as usize, start_after })
    }

    /// Cuts `names` (fetched with one more than the page size) to the page and makes the next
    /// page's token (empty on the last page).
    pub(crate) fn finish(&self, mut names: Vec<String>) -> (Vec<String>, String) {
        if names.len() > self.size {
            names.truncate(self.size);
            let token = names.last().map(|last| URL_SAFE_NO_PAD.encode(last)).unwrap_or_default();
            (names, token)
        } else {
            (names, String::new())
        }
    }
}

fn require_receipt(receipt: &str) -> ExoResult<()> {
    if receipt.is_empty() || receipt.len() > 1024 {
        return Err(ExoError::new(ErrorReason::InvalidReceipt, "receipt must be 1 to 1024 characters")
            .with_field("receipt"));
    }
    Ok(())
}

pub(crate) fn entry_error(err: &ExoError) -> pb::send_batch_result::Outcome {
    pb::send_batch_result::Outcome::Error(pb::EntryError {
        reason: err.reason.as_str_name().to_owned(),
        message: err.message.clone(),
        retryable: err.retryable,
    })
}

/// Fills in defaults and checks ranges and capabilities of queue options.
pub fn normalize_options(
    descriptor: &Descriptor,
    name: &QueueName,
    mut options: pb::QueueOptions,
) -> ExoResult<pb::QueueOptions> {
    let limits = &descriptor.limits;
    let visibility = options.visibility_timeout_seconds.unwrap_or(DEFAULT_VISIBILITY_SECONDS);
    if visibility > limits.max_visibility_timeout_seconds {
        return Err(ExoError::invalid_argument(
            "options.visibility_timeout_seconds",
            format!(
                "visibility timeout {visibility} s is above the maximum {} s",
                limits.max_visibility_timeout_seconds
            ),
        ));
    }
    options.visibility_timeout_seconds = Some(visibility);
    if options.retention_seconds == 0 {
        options.retention_seconds =
            DEFAULT_RETENTION_SECONDS.clamp(limits.min_retention_seconds, limits.max_retention_seconds);
    } else {
        descriptor.require(Capability::Retention, "message retention")?;
        if !(limits.min_retention_seconds..=limits.max_retention_seconds).contains(&options.retention_seconds)
        {
            return Err(ExoError::invalid_argument(
                "options.retention_seconds",
                format!(
                    "retention {} s is outside {} ..= {} s",
                    options.retention_seconds, limits.min_retention_seconds, limits.max_retention_seconds
                ),
            ));
        }
    }
    if options.delay_seconds > 0 {
        descriptor.require(Capability::Delay, "delayed delivery")?;
        if options.delay_seconds > limits.max_delay_seconds {
            return Err(ExoError::invalid_argument(
                "options.delay_seconds",
                format!(
                    "delay {} s is above the maximum {} s",
                    options.delay_seconds, limits.max_delay_seconds
                ),
            ));
        }
    }
    match (options.max_receives, options.dead_letter_queue.is_empty()) {
        (0, true) => {}
        (0, false) | (_, true) => {
            return Err(ExoError::invalid_argument(
                "options.max_receives",
                "max_receives and dead_letter_queue must be set together",
            ));
        }
        (n, false) => {
            descriptor.require(Capability::DeadLetter, "dead-lettering")?;
            if n > limits.max_receives_limit {
                return Err(ExoError::invalid_argument(
                    "options.max_receives",
                    format!("max_receives {n} is above the maximum {}", limits.max_receives_limit),
                ));
            }
            QueueName::parse("queue", &options.dead_letter_queue, "options.dead_letter_queue")?;
            if options.dead_letter_queue == name.as_str() {
                // The dead-letter queue must be another queue that exists: this one does not yet.
                return Err(ExoError::new(
                    ErrorReason::QueueNotFound,
                    format!(
                        "dead-letter queue '{name}' must be another existing queue (a queue cannot be its own)"
                    ),
                )
                .with_field("options.dead_letter_queue")
                .with_resource(name.as_str()));
            }
        }
    }
    Ok(options)
}

/// With traces on, a message sent without a `traceparent` attribute gets the send's, so its
/// consumers' receives link to the send (and a consumer can continue the trace). Only where it
/// fits: a message already at the attribute or size limit goes without.
fn carry_trace(descriptor: &Descriptor, mut message: pb::OutgoingMessage) -> pb::OutgoingMessage {
    let limits = &descriptor.limits;
    add_traceparent(&message.body, &mut message.attributes, limits.max_attributes, limits.max_message_bytes);
    message
}

/// Adds the current span's `traceparent` to a message's attributes when traces are on, the
/// message has none of its own, and it fits within `max_attributes` and `max_bytes`.
pub(crate) fn add_traceparent(
    body: &[u8],
    attributes: &mut std::collections::HashMap<String, String>,
    max_attributes: u32,
    max_bytes: u64,
) {
    let Some(traceparent) = exo_proxy_core::traces::current_traceparent() else { return };
    let size = crate::model::message_bytes(body, attributes) + (TRACEPARENT.len() + traceparent.len()) as u64;
    if !attributes.contains_key(TRACEPARENT)
        && attributes.len() < max_attributes as usize
        && size <= max_bytes
    {
        attributes.insert(TRACEPARENT.to_owned(), traceparent);
    }
}

/// Checks one outgoing message against the limits and the attribute rules.
pub fn validate_message(
    descriptor: &Descriptor,
    message: pb::OutgoingMessage,
    field: &str,
) -> ExoResult<pb::OutgoingMessage> {
    let limits = &descriptor.limits;
    check_contents(
        limits.max_message_bytes,
        limits.max_attributes,
        &message.body,
        &message.attributes,
        field,
    )?;
    if let Some(delay) = message.delay_seconds.filter(|d| *d > 0) {
        descriptor.require(Capability::Delay, "delayed delivery")?;
        if delay > limits.max_delay_seconds {
            return Err(ExoError::invalid_argument(
                format!("{field}.delay_seconds"),
                format!("delay {delay} s is above the maximum {} s", limits.max_delay_seconds),
            ));
        }
    }
    Ok(message)
}

/// Checks a message's body and attributes: at most `max_attributes` attributes, each by the
/// attribute rules, and at most `max_bytes` of body plus attribute names and values.
pub(crate) fn check_contents(
    max_bytes: u64,
    max_attributes: u32,
    body: &[u8],
    attributes: &std::collections::HashMap<String, String>,
    field: &str,
) -> ExoResult<()> {
    if attributes.len() > max_attributes as usize {
        return Err(ExoError::new(
            ErrorReason::InvalidAttribute,
            format!("{} attributes is above the maximum {max_attributes}", attributes.len()),
        )
        .with_field(format!("{field}.attributes")));
    }
    for (name, value) in attributes {
        check_attribute(name, value)
            .map_err(|err| err.with_field(format!("{field}.attributes[{name:?}]")))?;
    }
    let size = crate::model::message_bytes(body, attributes);
    if size > max_bytes {
        return Err(ExoError::new(
            ErrorReason::MessageTooLarge,
            format!(
                "message is {size} bytes (body plus attributes), above this backend's limit of {max_bytes} bytes; \
                 store large payloads in an object store and send a reference"
            ),
        )
        .with_field(format!("{field}.body")));
    }
    Ok(())
}

/// Attribute names: 1..=128 of `A-Z a-z 0-9 _ - .`, not starting or ending with '.', no "..",
/// not in the reserved `exo.`/`aws.`/`amazon.` namespaces. Values: non-empty, no control
/// characters other than tab, CR and LF (what SQS accepts).
fn check_attribute(name: &str, value: &str) -> ExoResult<()> {
    let bad_name =
        |why: &str| ExoError::new(ErrorReason::InvalidAttribute, format!("attribute name {name:?} {why}"));
    if name.is_empty() || name.len() > MAX_ATTRIBUTE_NAME {
        return Err(bad_name("must be 1 to 128 characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) {
        return Err(bad_name("may contain only letters, digits, '_', '-' and '.'"));
    }
    if name.starts_with('.') || name.ends_with('.') || name.contains("..") {
        return Err(bad_name("must not start or end with '.' or contain \"..\""));
    }
    let lower = name.to_ascii_lowercase();
    if ["exo.", "aws.", "amazon."].iter().any(|reserved| lower.starts_with(reserved)) {
        return Err(bad_name("uses a reserved prefix (exo., aws., amazon.)"));
    }
    if value.is_empty() {
        return Err(ExoError::new(
            ErrorReason::InvalidAttribute,
            format!("attribute {name:?} has an empty value"),
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
        return Err(ExoError::new(
            ErrorReason::InvalidAttribute,
            format!("attribute {name:?} contains the control character U+{:04X}", c as u32),
        ));
    }
    Ok(())
}

fn receive_params(descriptor: &Descriptor, req: &pb::ReceiveRequest) -> ExoResult<ReceiveParams> {
    let limits = &descriptor.limits;
    let max_messages = req.max_messages.max(1);
    if max_messages > limits.max_receive_messages {
        return Err(ExoError::invalid_argument(
            "max_messages",
            format!("max_messages {} is above the maximum {}", req.max_messages, limits.max_receive_messages),
        ));
    }
    if req.wait_seconds > 0 {
        descriptor.require(Capability::LongPoll, "long polling")?;
        if req.wait_seconds > limits.max_wait_seconds {
            return Err(ExoError::invalid_argument(
                "wait_seconds",
                format!("wait {} s is above the maximum {} s", req.wait_seconds, limits.max_wait_seconds),
            ));
        }
    }
    if let Some(visibility) = req.visibility_timeout_seconds
        && visibility > limits.max_visibility_timeout_seconds
    {
        return Err(ExoError::invalid_argument(
            "visibility_timeout_seconds",
            format!(
                "visibility timeout {visibility} s is above the maximum {} s",
                limits.max_visibility_timeout_seconds
            ),
        ));
    }
    Ok(ReceiveParams {
        max_messages,
        // A caller that will not wait that long gets an (empty) answer before it gives up.
        wait: exo_proxy_core::deadline::clamp_wait(
            Duration::from_secs(u64::from(req.wait_seconds)),
            Duration::from_millis(250),
        ),
        visibility_seconds: req.visibility_timeout_seconds,
    })
}
