//! `sqs`: Amazon SQS (standard queues) through the official SDK.
//!
//! How the contract maps onto SQS:
//! - **Bodies.** SQS carries text. A body that is valid UTF-8 made only of the characters SQS
//!   accepts is sent as it is, so native consumers read plain text unchanged. Any other body
//!   (binary, or containing characters SQS refuses) is sent base64-encoded (standard alphabet,
//!   padded) with the message attribute `exo.encoding` = `base64`; an empty body is sent as
//!   `-` with `exo.encoding` = `empty` (SQS refuses empty bodies). A native consumer checks
//!   `exo.encoding` and decodes; a native producer sending plain text needs no attribute.
//! - **Attributes** are SQS String message attributes; the `exo.` namespace is the proxy's own,
//!   so one of SQS's 10 attributes is kept for `exo.encoding` (the declared limit is 9).
//! - **Size.** SQS allows 1 MiB per message (attributes included) and per batch. The declared
//!   limit (760 KiB) is what still fits once base64 inflates a body by 4/3, so a message the
//!   proxy accepts is never refused by SQS for size.
//! - **Receive** uses SQS long polling (up to 20 s) and loops, 10 at a time, to the requested
//!   count. Dead-lettering is SQS's redrive policy; visibility, delay and retention are native.
//! - **Receipts** are `sqs1:` + queue name + `:` + the SQS receipt handle, so a receipt used on
//!   another queue is refused before it reaches SQS.
//! - **Batches** are cut into SendMessageBatch calls of at most 10 entries and 1 MiB; each entry
//!   gets its own result.
//!
//! - **Topics** are SNS topics with SQS subscriptions (see [`topics`]).
//!
//! Not declared: `STALE_RECEIPTS`. SQS does not report a superseded receipt handle: deleting
//! with it "succeeds" (the message may or may not be deleted), so the proxy cannot refuse it.

mod topics;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::Duration,
};

use async_trait::async_trait;
use aws_sdk_sqs::{
    Client,
    types::{
        MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
    },
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use exo_aws::{AwsSettings, map_error, service_code};
use exo_proto::{common::v1::ErrorReason, queue::v1 as pb};
use exo_proxy_core::{ExoError, ExoResult, readiness};

use crate::ops;
use crate::{
    backend::Queue,
    model::{
        BASE64_ATTRIBUTES, Capability, DEFAULT_RETENTION_SECONDS, DEFAULT_VISIBILITY_SECONDS, Descriptor,
        PUBLISH_ID_ATTRIBUTE, Published, QueueName, TOPIC_ATTRIBUTE, UNDECODABLE_ATTRIBUTE, queue_not_found,
    },
    services::{already_exists, dead_letter_missing, existing_queue},
};

/// The attribute naming how the body was encoded for SQS.
pub const ENCODING_ATTRIBUTE: &str = "exo.encoding";
/// Largest message the proxy accepts: 3/4 of SQS's 1 MiB less room for attribute overhead.
pub const MAX_MESSAGE_BYTES: u64 = 760 * 1024;
/// SQS's own limit for one message and for one batch.
const SQS_MAX_BYTES: usize = 1024 * 1024;
/// Most messages one SQS receive or batch call takes.
const SQS_BATCH: usize = 10;
const RECEIPT_PREFIX: &str = "sqs1:";

/// The SQS limits in the contract's terms.
pub fn sqs_limits() -> pb::Limits {
    pb::Limits {
        max_message_bytes: MAX_MESSAGE_BYTES,
        max_batch_entries: 100,
        max_receive_messages: 32,
        max_wait_seconds: 20,
        max_visibility_timeout_seconds: 12 * 3600,
        max_delay_seconds: 900,
        max_attributes: 9,
        min_retention_seconds: 60,
        max_retention_seconds: 14 * 24 * 3600,
        max_receives_limit: 1000,
    }
}

/// The SQS queue backend.
pub struct SqsQueue {
    descriptor: Descriptor,
    client: Client,
    name_prefix: String,
    /// Queue name → URL, filled on first use, dropped on delete or QUEUE_NOT_FOUND.
    urls: Mutex<HashMap<String, String>>,
    sns: aws_sdk_sns::Client,
    /// Topic name → ARN, filled on first use, dropped on delete or TOPIC_NOT_FOUND.
    topic_arns: Mutex<HashMap<String, String>>,
    /// Topic name → its subscriptions' filters as last seen (for `deliveries`).
    topic_views: Mutex<HashMap<String, topics::TopicView>>,
}

impl std::fmt::Debug for SqsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsQueue").field("name_prefix", &self.name_prefix).finish_non_exhaustive()
    }
}

fn queue_error<E>(queue: &str, operation: &str, err: exo_aws::SdkError<E>) -> ExoError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match service_code(&err).map(|(code, _)| code) {
        Some("AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist") => queue_not_found(queue),
        Some("ReceiptHandleIsInvalid" | "InvalidReceiptHandle") => {
            ExoError::new(ErrorReason::InvalidReceipt, "receipt is not valid: SQS does not know it")
                .with_field("receipt")
                .with_resource(queue)
        }
        Some("MessageNotInflight" | "AWS.SimpleQueueService.MessageNotInflight") => ExoError::new(
            ErrorReason::ReceiptStale,
            "receipt is stale: the message is no longer in flight under this receipt",
        )
        .with_field("receipt")
        .with_resource(queue),
        Some("AWS.SimpleQueueService.PurgeQueueInProgress" | "PurgeQueueInProgress") => {
            ExoError::new(ErrorReason::Throttled, "SQS allows one purge per queue every 60 s; retry later")
                .with_resource(queue)
                .retryable()
        }
        _ => map_error("sqs", operation, err).with_resource(queue),
    }
}

/// `body` as SQS text and the encoding attribute it needs, if any.
fn encode_body(body: &[u8]) -> (String, Option<&'static str>) {
    if body.is_empty() {
        return ("-".to_owned(), Some("empty"));
    }
    match std::str::from_utf8(body) {
        Ok(text) if text.chars().all(sqs_text_char) => (text.to_owned(), None),
        _ => (STANDARD.encode(body), Some("base64")),
    }
}

/// Characters SQS accepts in a body (#x9 #xA #xD #x20–#xD7FF #xE000–#xFFFD #x10000–#x10FFFF).
fn sqs_text_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// A received SQS body back to the bytes that were sent; `Err` says why it cannot be (a foreign
/// producer's message marked with an encoding it does not follow).
fn decode_body(body: &str, encoding: Option<&str>) -> Result<Vec<u8>, String> {
    match encoding {
        None => Ok(body.as_bytes().to_vec()),
        Some("empty") if body == "-" => Ok(Vec::new()),
        // A foreign producer's body must not vanish behind a marker it did not mean.
        Some("empty") => {
            Err(format!("marked {ENCODING_ATTRIBUTE}=empty but the body is not the placeholder '-'"))
        }
        Some("base64") => STANDARD.decode(body).map_err(|e| {
            format!("marked {ENCODING_ATTRIBUTE}=base64 but the body is not standard base64 ({e})")
        }),
        Some(other) => Err(format!(
            "marked with an unknown {ENCODING_ATTRIBUTE} '{}'",
            other.chars().take(64).collect::<String>()
        )),
    }
}

fn encode_receipt(queue: &QueueName, handle: &str) -> String {
    format!("{RECEIPT_PREFIX}{queue}:{handle}")
}

fn decode_receipt<'a>(receipt: &'a str, queue: &QueueName) -> ExoResult<&'a str> {
    let invalid = |why: String| {
        ExoError::new(ErrorReason::InvalidReceipt, format!("receipt is not valid: {why}"))
            .with_field("receipt")
            .with_resource(queue.as_str())
    };
    let rest = receipt.strip_prefix(RECEIPT_PREFIX).ok_or_else(|| invalid("not a receipt token".into()))?;
    let (owner, handle) = rest.split_once(':').ok_or_else(|| invalid("not a receipt token".into()))?;
    if owner != queue.as_str() {
        return Err(invalid(format!("it was issued by queue '{owner}', not '{queue}'")));
    }
    if handle.is_empty() {
        return Err(invalid("not a receipt token".into()));
    }
    Ok(handle)
}

impl exo_proxy_core::registry::Backend for SqsQueue {
    type Opened = std::sync::Arc<dyn Queue>;
    type Context = crate::services::OpenContext;
    type Config = AwsSettings;

    fn settings(_data: Option<std::path::PathBuf>) -> AwsSettings {
        AwsSettings::default()
    }

    fn validate(config: &AwsSettings) -> Result<(), exo_proxy_core::config::ConfigError> {
        config.validate()
    }

    fn largest_item(_config: &AwsSettings) -> Option<u64> {
        Some(MAX_MESSAGE_BYTES)
    }

    fn open<'a>(
        config: &'a AwsSettings,
        context: &'a Self::Context,
    ) -> exo_proxy_core::registry::BoxFuture<'a, ExoResult<Self::Opened>> {
        Box::pin(async move {
            let queue: Self::Opened =
                std::sync::Arc::new(SqsQueue::connect(config, context.call_timeout).await?);
            Ok(queue)
        })
    }
}

impl SqsQueue {
    /// Connects with `settings`; `operation_timeout` bounds each SQS call (long polls included).
    pub async fn connect(settings: &AwsSettings, operation_timeout: Duration) -> ExoResult<Self> {
        let config = exo_aws::sdk_config(settings, operation_timeout).await?;
        use Capability::*;
        Ok(Self {
            descriptor: Descriptor {
                backend: "sqs",
                capabilities: [
                    LongPoll,
                    Delay,
                    Retention,
                    DeadLetter,
                    ChangeVisibility,
                    Purge,
                    Durable,
                    Topics,
                ]
                .into(),
                limits: sqs_limits(),
            },
            client: Client::new(&config),
            name_prefix: settings.name_prefix.clone(),
            urls: Mutex::new(HashMap::new()),
            sns: aws_sdk_sns::Client::new(&config),
            topic_arns: Mutex::new(HashMap::new()),
            topic_views: Mutex::new(HashMap::new()),
        })
    }

    fn physical(&self, name: &str) -> String {
        format!("{}{name}", self.name_prefix)
    }

    fn cached_url(&self, name: &str) -> Option<String> {
        self.urls.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    fn forget(&self, name: &str) {
        self.urls.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
    }

    /// The queue's URL; QUEUE_NOT_FOUND if it does not exist.
    async fn url(&self, name: &str) -> ExoResult<String> {
        if let Some(url) = self.cached_url(name) {
            return Ok(url);
        }
        let out = self
            .client
            .get_queue_url()
            .queue_name(self.physical(name))
            .send()
            .await
            .map_err(|e| queue_error(name, "GetQueueUrl", e))?;
        let url = out.queue_url.ok_or_else(|| ExoError::internal("SQS returned no queue URL"))?;
        self.urls.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), url.clone());
        Ok(url)
    }

    /// Runs `call` with the queue's URL; a cached URL of a queue deleted behind the proxy's back
    /// is forgotten so the next call looks it up again.
    async fn with_url<T, F, Fut>(&self, name: &QueueName, call: F) -> ExoResult<T>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = ExoResult<T>>,
    {
        let url = self.url(name.as_str()).await?;
        let result = call(url).await;
        if result.as_ref().is_err_and(|e| e.reason == ErrorReason::QueueNotFound) {
            self.forget(name.as_str());
        }
        result
    }

    async fn attributes(&self, name: &str, url: &str) -> ExoResult<HashMap<QueueAttributeName, String>> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .map_err(|e| queue_error(name, "GetQueueAttributes", e))?;
        Ok(out.attributes.unwrap_or_default())
    }

    fn options_of(&self, attributes: &HashMap<QueueAttributeName, String>) -> pb::QueueOptions {
        // SQS reports every attribute; a missing one is the contract's default, never zero.
        let number = |key: QueueAttributeName, default: u32| {
            attributes.get(&key).and_then(|v| v.parse::<u32>().ok()).unwrap_or(default)
        };
        let (max_receives, dead_letter_queue) = attributes
            .get(&QueueAttributeName::RedrivePolicy)
            .and_then(|policy| serde_json::from_str::<serde_json::Value>(policy).ok())
            .map(|policy| {
                let max = match &policy["maxReceiveCount"] {
                    serde_json::Value::Number(n) => n.as_u64().unwrap_or_default() as u32,
                    serde_json::Value::String(s) => s.parse().unwrap_or_default(),
                    _ => 0,
                };
                let arn = policy["deadLetterTargetArn"].as_str().unwrap_or_default();
                let physical = arn.rsplit(':').next().unwrap_or_default();
                let logical = physical.strip_prefix(self.name_prefix.as_str()).unwrap_or(physical);
                (max, logical.to_owned())
            })
            .unwrap_or_default();
        pb::QueueOptions {
            visibility_timeout_seconds: Some(number(
                QueueAttributeName::VisibilityTimeout,
                DEFAULT_VISIBILITY_SECONDS,
            )),
            retention_seconds: number(QueueAttributeName::MessageRetentionPeriod, DEFAULT_RETENTION_SECONDS),
            delay_seconds: number(QueueAttributeName::DelaySeconds, 0),
            max_receives,
            dead_letter_queue,
        }
    }

    fn info_of(
        name: &str,
        options: pb::QueueOptions,
        attributes: &HashMap<QueueAttributeName, String>,
    ) -> pb::QueueInfo {
        let count = |key: QueueAttributeName| {
            attributes.get(&key).and_then(|v| v.parse::<u64>().ok()).unwrap_or_default()
        };
        pb::QueueInfo {
            name: name.to_owned(),
            options: Some(options),
            visible_messages: count(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight_messages: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed_messages: count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
            created_at_ms: count(QueueAttributeName::CreatedTimestamp) * 1000,
        }
    }

    async fn info(&self, name: &QueueName) -> ExoResult<pb::QueueInfo> {
        self.with_url(name, |url| async move {
            let attributes = self.attributes(name.as_str(), &url).await?;
            Ok(Self::info_of(name.as_str(), self.options_of(&attributes), &attributes))
        })
        .await
    }

    /// One SendMessageBatch call; results in `entries` order.
    async fn send_chunk(
        &self,
        name: &QueueName,
        url: &str,
        entries: Vec<SendMessageBatchRequestEntry>,
    ) -> ExoResult<Vec<ExoResult<String>>> {
        let count = entries.len();
        let out = self
            .client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| queue_error(name.as_str(), "SendMessageBatch", e))?;
        let mut results: Vec<ExoResult<String>> =
            (0..count).map(|_| Err(ExoError::internal("SQS did not report this entry"))).collect();
        for ok in out.successful {
            if let Ok(index) = ok.id.parse::<usize>()
                && index < count
            {
                results[index] = Ok(ok.message_id);
            }
        }
        for failed in out.failed {
            if let Ok(index) = failed.id.parse::<usize>()
                && index < count
            {
                let why = failed.message.unwrap_or_default();
                let mut err = ExoError::new(
                    if failed.sender_fault {
                        ErrorReason::InvalidArgument
                    } else {
                        ErrorReason::BackendUnavailable
                    },
                    format!("SQS refused the entry: {}: {why}", failed.code),
                )
                .with_resource(name.as_str());
                err.retryable = !failed.sender_fault;
                results[index] = Err(err);
            }
        }
        Ok(results)
    }

    async fn receive_once(
        &self,
        name: &QueueName,
        url: &str,
        count: usize,
        wait: Duration,
        visibility: Option<u32>,
    ) -> ExoResult<Vec<pb::Message>> {
        let out = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(count.min(SQS_BATCH) as i32)
            .wait_time_seconds(wait_seconds(wait, exo_proxy_core::deadline::remaining()))
            .set_visibility_timeout(visibility.map(|v| v as i32))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| queue_error(name.as_str(), "ReceiveMessage", e))?;
        let mut messages = Vec::new();
        for m in out.messages.unwrap_or_default() {
            let system = m.attributes.unwrap_or_default();
            let number = |key: MessageSystemAttributeName| {
                system.get(&key).and_then(|v| v.parse::<u64>().ok()).unwrap_or_default()
            };
            let mut attributes = HashMap::new();
            let mut encoding = None;
            let mut binary = Vec::new();
            for (key, value) in m.message_attributes.unwrap_or_default() {
                // A native producer's Binary attribute has no string value: carried as base64
                // and named in BASE64_ATTRIBUTES, never as an empty string.
                let text = match (value.string_value, value.binary_value) {
                    (Some(text), _) => text,
                    (None, Some(blob)) if !key.starts_with("exo.") => {
                        binary.push(key.clone());
                        STANDARD.encode(blob.as_ref())
                    }
                    _ => continue,
                };
                if key == ENCODING_ATTRIBUTE {
                    encoding = Some(text);
                } else if !key.starts_with("exo.") || key == TOPIC_ATTRIBUTE || key == PUBLISH_ID_ATTRIBUTE {
                    // The proxy's own namespace reaches consumers only as a topic copy's marks.
                    attributes.insert(key, text);
                }
            }
            if !binary.is_empty() {
                binary.sort();
                attributes.insert(BASE64_ATTRIBUTES.to_owned(), binary.join(","));
            }
            let raw = m.body.as_deref().unwrap_or("");
            // A body the proxy cannot decode is delivered as it is, marked, so one foreign
            // message never blocks the queue (nor hides the good messages received with it).
            let body = decode_body(raw, encoding.as_deref()).unwrap_or_else(|why| {
                attributes.insert(UNDECODABLE_ATTRIBUTE.to_owned(), why);
                raw.as_bytes().to_vec()
            });
            let handle = m.receipt_handle.unwrap_or_default();
            messages.push(pb::Message {
                message_id: m.message_id.unwrap_or_default(),
                receipt: encode_receipt(name, &handle),
                body,
                attributes,
                dequeue_count: number(MessageSystemAttributeName::ApproximateReceiveCount) as u32,
                enqueued_at_ms: number(MessageSystemAttributeName::SentTimestamp),
            });
        }
        Ok(messages)
    }
}

fn entry(index: usize, message: pb::OutgoingMessage) -> ExoResult<(SendMessageBatchRequestEntry, usize)> {
    let (body, encoding) = encode_body(&message.body);
    let mut size = body.len();
    let mut builder = SendMessageBatchRequestEntry::builder()
        .id(index.to_string())
        .message_body(body)
        .set_delay_seconds(message.delay_seconds.map(|d| d as i32));
    let string = |value: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .map_err(|e| ExoError::internal(format!("cannot build an SQS attribute: {e}")))
    };
    // BTreeMap: a stable attribute order keeps requests reproducible.
    for (key, value) in message.attributes.into_iter().collect::<BTreeMap<_, _>>() {
        size += key.len() + value.len() + "String".len();
        builder = builder.message_attributes(&key, string(&value)?);
    }
    if let Some(encoding) = encoding {
        size += ENCODING_ATTRIBUTE.len() + encoding.len() + "String".len();
        builder = builder.message_attributes(ENCODING_ATTRIBUTE, string(encoding)?);
    }
    let entry = builder.build().map_err(|e| ExoError::internal(format!("cannot build an SQS entry: {e}")))?;
    Ok((entry, size))
}

#[async_trait]
impl Queue for SqsQueue {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    async fn ready(&self) -> ExoResult<()> {
        let probe = self.client.list_queues().max_results(1).send().await;
        readiness(probe.map(|_| ()).map_err(|err| map_error("sqs", "ListQueues", err)))
    }

    async fn create_queue(&self, op: ops::CreateQueue<'_>) -> ExoResult<(bool, pb::QueueInfo)> {
        let ops::CreateQueue { queue: name, options } = op;
        if let Some(existing) = existing_queue(self.info(name).await, name, options)? {
            return Ok(existing);
        }
        let mut attributes = HashMap::from([
            (
                QueueAttributeName::VisibilityTimeout,
                options.visibility_timeout_seconds.unwrap_or(30).to_string(),
            ),
            (QueueAttributeName::MessageRetentionPeriod, options.retention_seconds.to_string()),
            (QueueAttributeName::DelaySeconds, options.delay_seconds.to_string()),
            (QueueAttributeName::MaximumMessageSize, SQS_MAX_BYTES.to_string()),
        ]);
        if !options.dead_letter_queue.is_empty() {
            let dlq_url = match self.url(&options.dead_letter_queue).await {
                Err(err) if err.reason == ErrorReason::QueueNotFound => {
                    return Err(dead_letter_missing(&options.dead_letter_queue));
                }
                other => other?,
            };
            let dlq = self.attributes(&options.dead_letter_queue, &dlq_url).await?;
            let arn = dlq
                .get(&QueueAttributeName::QueueArn)
                .ok_or_else(|| ExoError::internal("SQS returned no ARN for the dead-letter queue"))?;
            attributes.insert(
                QueueAttributeName::RedrivePolicy,
                serde_json::json!({ "deadLetterTargetArn": arn, "maxReceiveCount": options.max_receives })
                    .to_string(),
            );
        }
        let created = self
            .client
            .create_queue()
            .queue_name(self.physical(name.as_str()))
            .set_attributes(Some(attributes))
            .send()
            .await;
        match created {
            Ok(out) => {
                if let Some(url) = out.queue_url {
                    self.urls.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), url);
                }
            }
            // Another client created it with other options between our look and our create.
            Err(err)
                if service_code(&err).is_some_and(|(code, _)| {
                    code.contains("QueueAlreadyExists") || code == "QueueNameExists"
                }) =>
            {
                let existing = self.info(name).await?.options.unwrap_or_default();
                return Err(already_exists(name, &existing, options));
            }
            Err(err) => return Err(queue_error(name.as_str(), "CreateQueue", err)),
        }
        Ok((true, self.info(name).await?))
    }

    async fn delete_queue(&self, op: ops::DeleteQueue<'_>) -> ExoResult<()> {
        let ops::DeleteQueue { queue: name } = op;
        let result = self
            .with_url(name, |url| async move {
                // A subscription goes with its queue (SNS would keep it, delivering nowhere).
                self.unsubscribe_queue(name, &url).await?;
                self.client
                    .delete_queue()
                    .queue_url(url)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| queue_error(name.as_str(), "DeleteQueue", e))
            })
            .await;
        self.forget(name.as_str());
        result
    }

    async fn list_queues(&self, op: ops::ListQueues<'_>) -> ExoResult<Vec<String>> {
        let ops::ListQueues { prefix, start_after, limit } = op;
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_queues()
                .queue_name_prefix(self.physical(prefix))
                .max_results(1000)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| map_error("sqs", "ListQueues", e))?;
            for url in out.queue_urls.unwrap_or_default() {
                let physical = url.rsplit('/').next().unwrap_or_default();
                let Some(name) = physical.strip_prefix(self.name_prefix.as_str()) else { continue };
                // Queues in the account that are not portable names are not ExoFlow's.
                if QueueName::parse("queue", name, "name").is_ok()
                    && name.starts_with(prefix)
                    && start_after.is_none_or(|after| name > after)
                {
                    names.push(name.to_owned());
                }
            }
            token = out.next_token;
            if token.is_none() {
                break;
            }
        }
        names.sort();
        names.dedup();
        names.truncate(limit);
        Ok(names)
    }

    async fn queue_info(&self, op: ops::QueueInfo<'_>) -> ExoResult<pb::QueueInfo> {
        let ops::QueueInfo { queue: name } = op;
        self.info(name).await
    }

    async fn send(&self, op: ops::Send<'_>) -> ExoResult<Vec<ExoResult<String>>> {
        let ops::Send { queue: name, messages } = op;
        // Every entry is built before anything is sent, so a bad one fails the call untouched.
        let entries = messages.into_iter().map(|m| entry(0, m)).collect::<ExoResult<Vec<_>>>()?;
        let chunks = chunked(entries);
        self.with_url(name, |url| async move {
            let mut results = Vec::new();
            for chunk in chunks {
                let count = chunk.len();
                match self.send_chunk(name, &url, renumber(chunk)).await {
                    Ok(sent) => results.extend(sent),
                    // Nothing sent yet: the call fails as a whole.
                    Err(err) if results.is_empty() => return Err(err),
                    // Earlier chunks are in SQS: report this chunk's entries as failed.
                    Err(err) => results.extend((0..count).map(|_| Err(err.clone()))),
                }
            }
            Ok(results)
        })
        .await
    }

    async fn receive(&self, op: ops::Receive<'_>) -> ExoResult<Vec<pb::Message>> {
        let ops::Receive { queue: name, params } = op;
        self.with_url(name, |url| async move {
            let wanted = params.max_messages as usize;
            let mut messages =
                self.receive_once(name, &url, wanted, params.wait, params.visibility_seconds).await?;
            // SQS hands out at most 10 per call: keep taking what is there, without waiting again
            // (after an empty long poll there is nothing to take).
            while !messages.is_empty() && messages.len() < wanted {
                let more = self
                    .receive_once(
                        name,
                        &url,
                        wanted - messages.len(),
                        Duration::ZERO,
                        params.visibility_seconds,
                    )
                    .await?;
                if more.is_empty() {
                    break;
                }
                messages.extend(more);
            }
            Ok(messages)
        })
        .await
    }

    async fn ack(&self, op: ops::Ack<'_>) -> ExoResult<()> {
        let ops::Ack { queue: name, receipt } = op;
        let handle = decode_receipt(receipt, name)?;
        self.with_url(name, |url| async move {
            self.client
                .delete_message()
                .queue_url(url)
                .receipt_handle(handle)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| queue_error(name.as_str(), "DeleteMessage", e))
        })
        .await
    }

    async fn change_visibility(&self, op: ops::ChangeVisibility<'_>) -> ExoResult<()> {
        let ops::ChangeVisibility { queue: name, receipt, seconds } = op;
        let handle = decode_receipt(receipt, name)?;
        self.with_url(name, |url| async move {
            self.client
                .change_message_visibility()
                .queue_url(url)
                .receipt_handle(handle)
                .visibility_timeout(seconds as i32)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| queue_error(name.as_str(), "ChangeMessageVisibility", e))
        })
        .await
    }

    async fn purge(&self, op: ops::Purge<'_>) -> ExoResult<()> {
        let ops::Purge { queue: name } = op;
        self.with_url(name, |url| async move {
            self.client
                .purge_queue()
                .queue_url(url)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| queue_error(name.as_str(), "PurgeQueue", e))
        })
        .await
    }
    fn topic_limits(&self) -> pb::TopicLimits {
        topics::sns_topic_limits()
    }

    async fn create_topic(&self, op: ops::CreateTopic<'_>) -> ExoResult<(bool, pb::TopicInfo)> {
        let ops::CreateTopic { topic: name } = op;
        self.sns_create_topic(name).await
    }

    async fn delete_topic(&self, op: ops::DeleteTopic<'_>) -> ExoResult<()> {
        let ops::DeleteTopic { topic: name } = op;
        self.sns_delete_topic(name).await
    }

    async fn list_topics(&self, op: ops::ListTopics<'_>) -> ExoResult<Vec<String>> {
        let ops::ListTopics { prefix, start_after, limit } = op;
        let names = self.topic_names().await?;
        Ok(names
            .into_iter()
            .filter(|n| n.starts_with(prefix) && start_after.is_none_or(|after| n.as_str() > after))
            .take(limit)
            .collect())
    }

    async fn topic_info(&self, op: ops::TopicInfo<'_>) -> ExoResult<pb::TopicInfo> {
        let ops::TopicInfo { topic: name } = op;
        self.sns_topic_info(name).await
    }

    async fn create_subscription(
        &self,
        op: ops::CreateSubscription<'_>,
    ) -> ExoResult<(bool, pb::Subscription)> {
        let ops::CreateSubscription { topic, subscription } = op;
        self.sns_create_subscription(topic, subscription).await
    }

    async fn delete_subscription(&self, op: ops::DeleteSubscription<'_>) -> ExoResult<()> {
        let ops::DeleteSubscription { topic, subscription: name } = op;
        self.sns_delete_subscription(topic, name).await
    }

    async fn publish(&self, op: ops::Publish<'_>) -> ExoResult<Vec<ExoResult<Published>>> {
        let ops::Publish { topic, messages } = op;
        self.sns_publish(topic, messages).await
    }
}

/// Cuts `(entry, size)` pairs into SendMessageBatch calls of at most 10 entries and 1 MiB.
fn chunked<E>(entries: Vec<(E, usize)>) -> Vec<Vec<E>> {
    chunk_by(entries, SQS_BATCH, SQS_MAX_BYTES)
}

/// Cuts `(entry, bytes)` into calls of at most `max_entries` entries and `max_bytes` bytes, in
/// order (an entry larger than `max_bytes` goes alone).
fn chunk_by<E>(entries: Vec<(E, usize)>, max_entries: usize, max_bytes: usize) -> Vec<Vec<E>> {
    let mut chunks: Vec<Vec<E>> = Vec::new();
    let mut chunk_bytes = 0;
    for (entry, size) in entries {
        match chunks.last_mut() {
            Some(chunk) if chunk.len() < max_entries && chunk_bytes + size <= max_bytes => chunk.push(entry),
            _ => {
                chunk_bytes = 0;
                chunks.push(vec![entry]);
            }
        }
        chunk_bytes += size;
    }
    chunks
}

/// Entry ids are their index within the SQS call, so results map back by position.
fn renumber(entries: Vec<SendMessageBatchRequestEntry>) -> Vec<SendMessageBatchRequestEntry> {
    entries
        .into_iter()
        .enumerate()
        .map(|(index, mut entry)| {
            entry.id = index.to_string();
            entry
        })
        .collect()
}

/// The long-poll wait to ask SQS for: whole seconds, rounded down, and with a caller's deadline
/// (`left` of it) leaving [`SQS_ANSWER_ALLOWANCE`] for SQS to answer — a poll that ran up to the
/// deadline would outlive it by the request's own time, and the caller would get a timeout
/// instead of an empty answer.
fn wait_seconds(wait: Duration, left: Option<Duration>) -> i32 {
    let wait = match left {
        Some(left) => wait.min(left.saturating_sub(SQS_ANSWER_ALLOWANCE)),
        None => wait,
    };
    i32::try_from(wait.as_secs()).unwrap_or(i32::MAX)
}

/// What a ReceiveMessage call takes beyond its wait, at most, as allowed for under a deadline.
const SQS_ANSWER_ALLOWANCE: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    #[test]
    fn long_poll_waits_round_down_and_leave_room_under_a_deadline() {
        use std::time::Duration as D;
        assert_eq!(super::wait_seconds(D::from_millis(20_000), None), 20);
        assert_eq!(super::wait_seconds(D::from_millis(2_900), None), 2, "rounded down, never up");
        assert_eq!(super::wait_seconds(D::from_millis(2_400), Some(D::from_millis(2_500))), 2);
        assert_eq!(super::wait_seconds(D::from_millis(1_100), Some(D::from_millis(1_200))), 0);
    }

    use super::*;

    #[test]
    fn bodies_round_trip_through_sqs_text() {
        let every_byte: Vec<u8> = (0..=255u8).collect();
        for body in [
            &b""[..],
            b"plain text\n",
            "na\u{ef}ve \u{1F600}".as_bytes(),
            &[0xff, 0x00],
            &every_byte,
            b"a\x01b",
        ] {
            let (text, encoding) = encode_body(body);
            assert!(!text.is_empty(), "SQS refuses empty bodies");
            assert!(text.chars().all(sqs_text_char));
            assert_eq!(decode_body(&text, encoding).unwrap(), body);
        }
        assert_eq!(encode_body(b"plain").1, None, "text stays readable for native consumers");
        assert_eq!(encode_body(b"a\x01b").1, Some("base64"), "control characters are not SQS text");
        assert!(decode_body("not base64!", Some("base64")).unwrap_err().contains("not standard base64"));
        assert!(decode_body("x", Some("rot13")).unwrap_err().contains("unknown exo.encoding"));
        assert!(decode_body("hello", Some("empty")).unwrap_err().contains("placeholder"));
    }

    #[test]
    fn batches_are_cut_by_count_and_by_bytes() {
        let sizes = |chunks: Vec<Vec<usize>>| chunks.iter().map(Vec::len).collect::<Vec<_>>();
        let small: Vec<(usize, usize)> = (0..25).map(|i| (i, 100)).collect();
        assert_eq!(sizes(chunked(small)), [10, 10, 5]);
        let big: Vec<(usize, usize)> = (0..4).map(|i| (i, 400 * 1024)).collect();
        assert_eq!(sizes(chunked(big)), [2, 2], "two 400 KiB entries fill a 1 MiB call");
        let order: Vec<usize> = chunked((0..12).map(|i| (i, 1)).collect()).concat();
        assert_eq!(order, (0..12).collect::<Vec<_>>(), "entries keep their order");
    }

    #[test]
    fn the_declared_limit_fits_sqs_after_base64() {
        let body = vec![0u8; MAX_MESSAGE_BYTES as usize];
        let (text, _) = encode_body(&body);
        let attributes = 9 * (128 + 1) + ENCODING_ATTRIBUTE.len() + 10 * "String".len();
        assert!(text.len() + attributes <= SQS_MAX_BYTES, "{} + {attributes}", text.len());
    }

    #[test]
    fn receipts_are_bound_to_their_queue() {
        let orders = QueueName::parse("queue", "orders", "q").unwrap();
        let other = QueueName::parse("queue", "other", "q").unwrap();
        let receipt = encode_receipt(&orders, "AQEB+handle/==");
        assert_eq!(decode_receipt(&receipt, &orders).unwrap(), "AQEB+handle/==");
        assert_eq!(decode_receipt(&receipt, &other).unwrap_err().reason, ErrorReason::InvalidReceipt);
        for junk in ["", "AAAA", "sqs1:orders:", "sqs1:orders"] {
            assert_eq!(decode_receipt(junk, &orders).unwrap_err().reason, ErrorReason::InvalidReceipt);
        }
    }
}
