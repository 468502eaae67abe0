//! `azure-queue`: Azure Storage Queue through the `azure_storage_queues` crate, with the proxy
//! supplying what the service lacks (the eqs README, "Azure Storage Queue").
//!
//! - **Messages** are one text per message: `exo1.` + base64url(body), then `.a` + base64url(name),
//!   `=`, base64url(value) per attribute, and `.i` + the original message id when the message
//!   was dead-lettered. Only base64url characters and `.`, so no XML or JSON escaping changes its
//!   size; a message text not starting with `exo1.` (a native producer's) is delivered as its
//!   UTF-8 bytes with no attributes.
//! - **Size**: Azure takes 64 KiB per message. The declared limit (48 000 bytes of body and
//!   attributes) is what still fits once encoded; the encoded size is checked again before
//!   anything is written.
//! - **Queue options** are the queue's metadata (`exovisibility`, `exoretention`, `exodelay`,
//!   `exomaxreceives`, `exodeadletter`, `exocreated`).
//! - **Long poll** is emulated: polls with backoff (50 ms doubling to 1 s) until a message or
//!   the wait is over. **Receive** asks for up to 32 (Azure's maximum per call).
//! - **Visibility**: Azure needs at least 1 s on receive, so a 0 s receive is followed by an
//!   Update Message releasing the message at once. Change visibility is Update Message without
//!   a body (the text stays). Azure cannot tell a delayed message from one in flight: both count
//!   as in flight in GetQueueInfo.
//! - **Receipts** are `az1:` + queue + `:` + message id + `:` + pop receipt. Azure issues a new pop
//!   receipt on every visibility change; the proxy remembers the newest for each receipt it
//!   issued, so receipts stay valid after a change (until the proxy restarts: then the next ack
//!   with such a receipt reports RECEIPT_STALE and the message reappears after its timeout).
//! - **Dead-lettering**: a received message whose dequeue count exceeds `max_receives` is put
//!   into the dead-letter queue (same text, original id kept) and then deleted with its pop
//!   receipt, before it could be returned: it is never delivered from the source again. Azure
//!   has no transaction across queues, so a proxy dying between the put and the delete moves it
//!   again (twice in the dead-letter queue, same original id); it is never lost.
//! - **Delay** is the initial visibility of Put Message; **retention** its message TTL.
//! - **Topics**: the proxy fans out through a durable outbox in a table (see [`topics`]).

mod topics;

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use azure_core::{Context, Method, headers::Headers, prelude::Metadata};
use azure_storage::{CloudLocation, StorageCredentials, clients::ServiceType};
use azure_storage_queues::{QueueClient, QueueServiceClient, prelude::*};
use base64::{
    Engine as _,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig, general_purpose::URL_SAFE_NO_PAD},
};
use exo_azure::{AzureSettings, Service, map_error, service_code};
use exo_proto::{common::v1::ErrorReason, queue::v1 as pb};
use exo_proxy_core::{ExoError, ExoResult, now_ms, readiness};
use futures::StreamExt as _;

use crate::ops;
use crate::{
    backend::Queue,
    model::{
        Capability, DEFAULT_RETENTION_SECONDS, DEFAULT_VISIBILITY_SECONDS, Descriptor, Published, QueueName,
        UNDECODABLE_ATTRIBUTE, queue_not_found, stale_receipt,
    },
    services::{already_exists, dead_letter_missing, existing_queue},
};

/// Largest body plus attributes the proxy accepts (fits Azure's 64 KiB once encoded).
pub const MAX_MESSAGE_BYTES: u64 = 48_000;
/// Azure's limit on one message's text.
const AZURE_MAX_TEXT: usize = 64 * 1024;
/// Most messages one Get Messages call returns.
const AZURE_BATCH: u32 = 32;
const ENVELOPE: &str = "exo1.";
const RECEIPT_PREFIX: &str = "az1:";
/// How long the proxy remembers a receipt's newest pop receipt (the longest visibility).
const RECEIPT_MEMORY: Duration = Duration::from_secs(12 * 3600);

/// A message as the proxy stores it in Azure.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Envelope {
    body: Vec<u8>,
    attributes: HashMap<String, String>,
    /// The id the message had before it was dead-lettered.
    original_id: Option<String>,
}

impl Envelope {
    fn encode(&self) -> String {
        let mut text = String::from(ENVELOPE);
        text.push_str(&URL_SAFE_NO_PAD.encode(&self.body));
        let mut attributes: Vec<_> = self.attributes.iter().collect();
        attributes.sort();
        for (name, value) in attributes {
            text.push_str(".a");
            text.push_str(&URL_SAFE_NO_PAD.encode(name));
            text.push('=');
            text.push_str(&URL_SAFE_NO_PAD.encode(value));
        }
        if let Some(id) = &self.original_id {
            text.push_str(".i");
            text.push_str(&URL_SAFE_NO_PAD.encode(id));
        }
        text
    }

    /// A stored text back into a message. A native producer's plain text is its own body; a text
    /// that starts like an envelope but is not one is delivered as its bytes, marked
    /// [`UNDECODABLE_ATTRIBUTE`], so it never blocks the queue. Base64url is accepted with or
    /// without padding (Python's `urlsafe_b64encode` pads).
    fn decode(text: &str) -> Self {
        let Some(rest) = text.strip_prefix(ENVELOPE) else {
            return Envelope {
                body: text.as_bytes().to_vec(),
                attributes: HashMap::new(),
                original_id: None,
            };
        };
        Self::decode_envelope(rest).unwrap_or_else(|why| Envelope {
            body: text.as_bytes().to_vec(),
            attributes: [(
                UNDECODABLE_ATTRIBUTE.to_owned(),
                format!("the text starts with '{ENVELOPE}' but is not an ExoFlow envelope: {why}"),
            )]
            .into(),
            original_id: None,
        })
    }

    fn decode_envelope(rest: &str) -> Result<Self, String> {
        let bytes = |part: &str, what: &str| {
            BASE64URL_ANY_PADDING.decode(part).map_err(|e| format!("{what} is not base64url ({e})"))
        };
        let text = |part: &str, what: &str| {
            String::from_utf8(bytes(part, what)?).map_err(|_| format!("{what} is not UTF-8"))
        };
        let mut parts = rest.split('.');
        let body = bytes(parts.next().unwrap_or_default(), "the body")?;
        let mut envelope = Envelope { body, attributes: HashMap::new(), original_id: None };
        for part in parts {
            if let Some(pair) = part.strip_prefix('a') {
                // With padded base64 the separator is the '=' after the name's padding: take the
                // first split at which both sides decode.
                let (name, value) = pair
                    .match_indices('=')
                    .find_map(|(at, _)| Some((text(&pair[..at], "").ok()?, text(&pair[at + 1..], "").ok()?)))
                    .ok_or("an attribute is not base64url name '=' base64url value")?;
                envelope.attributes.insert(name, value);
            } else if let Some(id) = part.strip_prefix('i') {
                envelope.original_id = Some(text(id, "the original id")?);
            } else {
                return Err(format!("unknown part '{}'", part.chars().take(16).collect::<String>()));
            }
        }
        Ok(envelope)
    }
}

/// Base64url that decodes with or without `=` padding (the proxy writes none).
const BASE64URL_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Queue options as Azure metadata.
fn options_metadata(options: &pb::QueueOptions, created_at_ms: u64) -> Metadata {
    let mut metadata = Metadata::new();
    metadata.insert("exovisibility", options.visibility_timeout_seconds.unwrap_or(30).to_string());
    metadata.insert("exoretention", options.retention_seconds.to_string());
    metadata.insert("exodelay", options.delay_seconds.to_string());
    metadata.insert("exomaxreceives", options.max_receives.to_string());
    // Azure metadata values cannot be empty: "-" means none.
    let dead_letter = if options.dead_letter_queue.is_empty() { "-" } else { &options.dead_letter_queue };
    metadata.insert("exodeadletter", dead_letter.to_owned());
    metadata.insert("exocreated", created_at_ms.to_string());
    metadata
}

/// A queue's options and creation time from its metadata. A queue made outside ExoFlow (by an
/// ARM template, `az storage queue create`, a native SDK) has none of it: each missing key is the
/// contract's default, never zero (a zero retention would give every message a 1 s life).
fn options_of(metadata: &Metadata) -> QueueMetadata {
    let text = |key: &str| metadata.get(key).map(|v| String::from_utf8_lossy(&v).into_owned());
    let number = |key: &str, default: u32| text(key).and_then(|v| v.parse::<u32>().ok()).unwrap_or(default);
    let dead_letter = text("exodeadletter").unwrap_or_default();
    QueueMetadata {
        options: pb::QueueOptions {
            visibility_timeout_seconds: Some(number("exovisibility", DEFAULT_VISIBILITY_SECONDS)),
            retention_seconds: number("exoretention", DEFAULT_RETENTION_SECONDS),
            delay_seconds: number("exodelay", 0),
            max_receives: number("exomaxreceives", 0),
            dead_letter_queue: if dead_letter == "-" { String::new() } else { dead_letter },
        },
        created_at_ms: text("exocreated").and_then(|v| v.parse().ok()).unwrap_or_default(),
        foreign: text("exovisibility").is_none(),
        total: 0,
    }
}

/// What Get Queue Metadata tells about a queue.
struct QueueMetadata {
    options: pb::QueueOptions,
    created_at_ms: u64,
    /// Made outside ExoFlow: no options in its metadata (the defaults apply).
    foreign: bool,
    /// Azure's approximate message count (visible and invisible).
    total: usize,
}

fn queue_error(queue: &str, operation: &str, err: &azure_core::Error) -> ExoError {
    match service_code(err) {
        Some((404, "QueueNotFound")) => queue_not_found(queue),
        Some((409, "QueueBeingDeleted")) => ExoError::new(
            ErrorReason::BackendUnavailable,
            format!("queue '{queue}' is being deleted by Azure; retry in a few seconds"),
        )
        .with_resource(queue)
        .retryable(),
        _ => map_error("azure-queue", operation, err).with_resource(queue),
    }
}

fn encode_receipt(queue: &QueueName, message_id: &str, pop_receipt: &str) -> String {
    format!("{RECEIPT_PREFIX}{queue}:{message_id}:{pop_receipt}")
}

fn decode_receipt<'a>(receipt: &'a str, queue: &QueueName) -> ExoResult<(&'a str, &'a str)> {
    let invalid = |why: String| {
        ExoError::new(ErrorReason::InvalidReceipt, format!("receipt is not valid: {why}"))
            .with_field("receipt")
            .with_resource(queue.as_str())
    };
    let rest = receipt.strip_prefix(RECEIPT_PREFIX).ok_or_else(|| invalid("not a receipt token".into()))?;
    let mut parts = rest.splitn(3, ':');
    let (Some(owner), Some(id), Some(pop)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid("not a receipt token".into()));
    };
    if owner != queue.as_str() {
        return Err(invalid(format!("it was issued by queue '{owner}', not '{queue}'")));
    }
    if id.is_empty() || pop.is_empty() {
        return Err(invalid("not a receipt token".into()));
    }
    Ok((id, pop))
}

/// One message of a Get Messages answer, its text exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReceivedText {
    message_id: String,
    pop_receipt: String,
    inserted_at_ms: u64,
    dequeue_count: u32,
    text: String,
}

/// Reads a `QueueMessagesList` keeping every character of `MessageText` (whitespace included).
fn parse_messages(xml: &[u8]) -> azure_core::Result<Vec<ReceivedText>> {
    use quick_xml::events::Event;
    let invalid = |why: String| {
        azure_core::Error::message(
            azure_core::error::ErrorKind::DataConversion,
            format!("Get Messages answered XML the proxy cannot read: {why}"),
        )
    };
    let xml = std::str::from_utf8(xml.strip_prefix(b"\xEF\xBB\xBF".as_slice()).unwrap_or(xml))
        .map_err(|_| invalid("not UTF-8".into()))?;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut messages = Vec::new();
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut element: Option<String> = None;
    loop {
        match reader.read_event().map_err(|e| invalid(e.to_string()))? {
            Event::Start(start) => {
                let tag = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                if tag == "QueueMessage" {
                    fields.clear();
                }
                element = Some(tag);
            }
            Event::Text(text) => {
                if let Some(tag) = &element {
                    let text = text.unescape().map_err(|e| invalid(e.to_string()))?;
                    fields.entry(tag.clone()).or_default().push_str(&text);
                }
            }
            Event::CData(data) => {
                if let Some(tag) = &element {
                    let text = String::from_utf8(data.into_inner().into_owned())
                        .map_err(|_| invalid("CDATA is not UTF-8".into()))?;
                    fields.entry(tag.clone()).or_default().push_str(&text);
                }
            }
            Event::End(end) => {
                element = None;
                if end.local_name().as_ref() == b"QueueMessage" {
                    let mut take = |key: &str| fields.remove(key).unwrap_or_default();
                    let inserted = take("InsertionTime");
                    let message = ReceivedText {
                        message_id: take("MessageId"),
                        pop_receipt: take("PopReceipt"),
                        inserted_at_ms: azure_core::date::parse_rfc1123(inserted.trim())
                            .map(|t| (t.unix_timestamp_nanos() / 1_000_000).max(0) as u64)
                            .unwrap_or_default(),
                        dequeue_count: take("DequeueCount").trim().parse().unwrap_or_default(),
                        text: take("MessageText"),
                    };
                    if message.message_id.is_empty() || message.pop_receipt.is_empty() {
                        return Err(invalid("a message without id or pop receipt".into()));
                    }
                    messages.push(message);
                }
            }
            Event::Eof => return Ok(messages),
            _ => {}
        }
    }
}

/// The Azure Storage Queue backend.
pub struct AzureQueue {
    descriptor: Descriptor,
    service: QueueServiceClient,
    /// For Update Message without a body, which the crate cannot send.
    pipeline: azure_core::Pipeline,
    name_prefix: String,
    /// Issued pop receipt → (newest pop receipt, when it was issued).
    pops: Mutex<HashMap<String, (String, Instant)>>,
    /// Queue options by queue, read from metadata at most every [`OPTIONS_TTL`]: a send or
    /// receive then costs one Azure call, not two. Options never change while a queue exists.
    options: Mutex<HashMap<String, (pb::QueueOptions, Instant)>>,
    /// The topic registry and outbox, when the settings say where the Table service is.
    topics: Option<topics::TopicTable>,
}

/// How long a queue's options are reused before they are read again (a queue deleted and made
/// again with other options elsewhere is noticed within this).
const OPTIONS_TTL: Duration = Duration::from_secs(10);

impl std::fmt::Debug for AzureQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureQueue").field("name_prefix", &self.name_prefix).finish_non_exhaustive()
    }
}

impl exo_proxy_core::registry::Backend for AzureQueue {
    type Opened = std::sync::Arc<dyn Queue>;
    type Context = crate::services::OpenContext;
    type Config = AzureSettings;

    fn settings(_data: Option<std::path::PathBuf>) -> AzureSettings {
        AzureSettings::default()
    }

    fn validate(config: &AzureSettings) -> Result<(), exo_proxy_core::config::ConfigError> {
        config.validate()
    }

    fn largest_item(_config: &AzureSettings) -> Option<u64> {
        Some(MAX_MESSAGE_BYTES)
    }

    fn open<'a>(
        config: &'a AzureSettings,
        _context: &'a Self::Context,
    ) -> exo_proxy_core::registry::BoxFuture<'a, ExoResult<Self::Opened>> {
        Box::pin(async move {
            let queue: Self::Opened = topics::open(config)?;
            Ok(queue)
        })
    }
}

impl AzureQueue {
    /// Connects with `settings` (nothing is sent until the first call).
    pub fn connect(settings: &AzureSettings) -> ExoResult<Self> {
        let (location, credentials): (CloudLocation, StorageCredentials) =
            settings.connect(Service::Queue)?;
        let service =
            azure_storage_queues::QueueServiceClientBuilder::with_location(location, credentials.clone())
                .retry(exo_azure::no_retries())
                .build();
        let pipeline = azure_storage::clients::new_pipeline_from_options(
            azure_core::ClientOptions::default().retry(exo_azure::no_retries()),
            credentials,
        );
        use Capability::*;
        let topics = topics::TopicTable::connect(settings)?;
        let mut capabilities: std::collections::HashSet<Capability> =
            [LongPoll, Delay, Retention, DeadLetter, ChangeVisibility, Purge, Durable, StaleReceipts].into();
        if topics.is_some() {
            capabilities.insert(Topics);
        }
        Ok(Self {
            descriptor: Descriptor {
                backend: "azure-queue",
                capabilities,
                limits: pb::Limits {
                    max_message_bytes: MAX_MESSAGE_BYTES,
                    max_batch_entries: 100,
                    max_receive_messages: AZURE_BATCH,
                    max_wait_seconds: 20,
                    max_visibility_timeout_seconds: 12 * 3600,
                    max_delay_seconds: 900,
                    max_attributes: 10,
                    min_retention_seconds: 1,
                    max_retention_seconds: 14 * 24 * 3600,
                    max_receives_limit: 1000,
                },
            },
            service,
            pipeline,
            name_prefix: settings.name_prefix.clone(),
            pops: Mutex::new(HashMap::new()),
            options: Mutex::new(HashMap::new()),
            topics,
        })
    }

    fn client(&self, name: &str) -> QueueClient {
        self.service.queue_client(format!("{}{name}", self.name_prefix))
    }

    /// The queue's options, from the cache when fresh.
    async fn options(&self, name: &QueueName) -> ExoResult<pb::QueueOptions> {
        {
            let cache = self.options.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((options, at)) = cache.get(name.as_str())
                && at.elapsed() < OPTIONS_TTL
            {
                return Ok(options.clone());
            }
        }
        Ok(self.metadata(name).await?.options)
    }

    fn forget_options(&self, name: &QueueName) {
        self.options.lock().unwrap_or_else(|p| p.into_inner()).remove(name.as_str());
    }

    /// Drops the cached options of a queue Azure says is gone.
    fn noting_missing<T>(&self, name: &QueueName, result: ExoResult<T>) -> ExoResult<T> {
        if result.as_ref().is_err_and(|e| e.reason == ErrorReason::QueueNotFound) {
            self.forget_options(name);
        }
        result
    }

    async fn metadata(&self, name: &QueueName) -> ExoResult<QueueMetadata> {
        let out = self
            .client(name.as_str())
            .get_metadata()
            .await
            .map_err(|e| queue_error(name.as_str(), "GetQueueMetadata", &e))?;
        let mut metadata = options_of(&out.metadata);
        metadata.total = out.approximate_messages_count;
        self.options
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), (metadata.options.clone(), Instant::now()));
        Ok(metadata)
    }

    async fn info(&self, name: &QueueName) -> ExoResult<pb::QueueInfo> {
        let QueueMetadata { options, created_at_ms, total, .. } = self.metadata(name).await?;
        // Azure counts only the total; peeking (up to 32) sees the visible ones.
        let peeked = self
            .client(name.as_str())
            .peek_messages()
            .number_of_messages(AZURE_BATCH as u8)
            .await
            .map_err(|e| queue_error(name.as_str(), "PeekMessages", &e))?
            .messages
            .len();
        let visible = if peeked < AZURE_BATCH as usize { peeked } else { total.max(peeked) };
        Ok(pb::QueueInfo {
            name: name.to_string(),
            options: Some(options),
            visible_messages: visible as u64,
            in_flight_messages: total.saturating_sub(visible) as u64,
            delayed_messages: 0,
            created_at_ms,
        })
    }

    fn newest_pop(&self, issued: &str) -> String {
        let pops = self.pops.lock().unwrap_or_else(|p| p.into_inner());
        pops.get(issued).map(|(newest, _)| newest.clone()).unwrap_or_else(|| issued.to_owned())
    }

    fn remember_pop(&self, issued: &str, newest: String) {
        let mut pops = self.pops.lock().unwrap_or_else(|p| p.into_inner());
        pops.retain(|_, (_, at)| at.elapsed() < RECEIPT_MEMORY);
        pops.insert(issued.to_owned(), (newest, Instant::now()));
    }

    fn forget_pop(&self, issued: &str) {
        self.pops.lock().unwrap_or_else(|p| p.into_inner()).remove(issued);
    }

    /// Maps a failed call with a receipt: a pop receipt that no longer matches is stale; a
    /// message that is gone is gone.
    fn receipt_error(name: &QueueName, operation: &str, err: &azure_core::Error) -> Option<ExoError> {
        match service_code(err) {
            Some((400, "PopReceiptMismatch")) => Some(stale_receipt(name)),
            Some((404, "MessageNotFound")) => None,
            _ => Some(queue_error(name.as_str(), operation, err)),
        }
    }

    /// Update Message with no body: only the visibility changes; returns the new pop receipt.
    async fn set_visibility(
        &self,
        name: &QueueName,
        id: &str,
        pop: &str,
        seconds: u32,
    ) -> azure_core::Result<String> {
        let mut url = self.client(name.as_str()).url()?;
        url.path_segments_mut()
            .map_err(|_| {
                azure_core::Error::message(azure_core::error::ErrorKind::Other, "queue URL cannot be a base")
            })?
            .push("messages")
            .push(id);
        url.query_pairs_mut()
            .append_pair("popreceipt", pop)
            .append_pair("visibilitytimeout", &seconds.to_string());
        let mut request = azure_storage::clients::finalize_request(url, Method::Put, Headers::new(), None)?;
        let mut context = Context::new();
        let response = self.pipeline.send(context.insert(ServiceType::Queue), &mut request).await?;
        response
            .headers()
            .get_optional_string(&azure_core::headers::HeaderName::from_static("x-ms-popreceipt"))
            .ok_or_else(|| {
                azure_core::Error::message(azure_core::error::ErrorKind::DataConversion, "no x-ms-popreceipt")
            })
    }

    /// Get Messages, sent and parsed here: the crate's XML reading trims the message text, and
    /// bodies must arrive byte-exact (a native `'  indented\n'` included).
    async fn get_messages(
        &self,
        name: &QueueName,
        count: u32,
        visibility: u32,
    ) -> azure_core::Result<Vec<ReceivedText>> {
        let mut url = self.client(name.as_str()).url()?;
        url.path_segments_mut()
            .map_err(|_| {
                azure_core::Error::message(azure_core::error::ErrorKind::Other, "queue URL cannot be a base")
            })?
            .push("messages");
        url.query_pairs_mut()
            .append_pair("numofmessages", &count.to_string())
            .append_pair("visibilitytimeout", &visibility.to_string());
        let mut request = azure_storage::clients::finalize_request(url, Method::Get, Headers::new(), None)?;
        let mut context = Context::new();
        let response = self.pipeline.send(context.insert(ServiceType::Queue), &mut request).await?;
        let body = response.into_body().collect().await?;
        parse_messages(&body)
    }

    async fn receive_once(
        &self,
        name: &QueueName,
        options: &pb::QueueOptions,
        max: u32,
        visibility: u32,
    ) -> ExoResult<Vec<pb::Message>> {
        let client = self.client(name.as_str());
        let messages = self
            .get_messages(name, max.min(AZURE_BATCH), visibility.max(1))
            .await
            .map_err(|e| queue_error(name.as_str(), "GetMessages", &e))?;
        let mut delivered = Vec::with_capacity(messages.len());
        for m in messages {
            let dequeue_count = m.dequeue_count;
            if options.max_receives > 0 && dequeue_count > options.max_receives {
                self.dead_letter(name, options, &client, m).await?;
                continue;
            }
            let envelope = Envelope::decode(&m.text);
            // Azure hides a received message for at least 1 s: release it at once for a 0 s
            // visibility (the release issues the pop receipt the caller must use).
            let pop_receipt = if visibility == 0 {
                self.set_visibility(name, &m.message_id, &m.pop_receipt, 0)
                    .await
                    .map_err(|e| queue_error(name.as_str(), "UpdateMessage", &e))?
            } else {
                m.pop_receipt.clone()
            };
            delivered.push(pb::Message {
                message_id: envelope.original_id.unwrap_or_else(|| m.message_id.clone()),
                receipt: encode_receipt(name, &m.message_id, &pop_receipt),
                body: envelope.body,
                attributes: envelope.attributes,
                dequeue_count,
                enqueued_at_ms: m.inserted_at_ms,
            });
        }
        Ok(delivered)
    }

    /// Moves a message received too often into the dead-letter queue, keeping its id.
    async fn dead_letter(
        &self,
        name: &QueueName,
        options: &pb::QueueOptions,
        source: &QueueClient,
        m: ReceivedText,
    ) -> ExoResult<()> {
        let target = &options.dead_letter_queue;
        // A text that is not a valid envelope moves unchanged (it is evidence); others keep
        // their original id.
        let text = match m.text.strip_prefix(ENVELOPE).map(Envelope::decode_envelope) {
            Some(Err(_)) => m.text.clone(),
            _ => {
                let mut envelope = Envelope::decode(&m.text);
                envelope.original_id.get_or_insert_with(|| m.message_id.clone());
                envelope.encode()
            }
        };
        let dlq = self.client(target);
        let retention = match QueueName::parse("queue", target, "dead_letter_queue") {
            Ok(target_name) => self.options(&target_name).await.map(|o| o.retention_seconds),
            Err(err) => Err(err),
        };
        let retention = match retention {
            Ok(seconds) => seconds,
            Err(err) if err.reason == ErrorReason::QueueNotFound => {
                // The dead-letter queue was deleted after this queue was created: keep the
                // message where it is rather than lose it.
                tracing::warn!(queue = %name, dead_letter_queue = %target, "dead-letter queue missing; keeping the message");
                return Ok(());
            }
            Err(err) => return Err(err),
        };
        dlq.put_message(text)
            .ttl(Duration::from_secs(u64::from(retention.max(1))))
            .await
            .map_err(|e| queue_error(target, "PutMessage", &e))?;
        // Moved: now remove it from the source. If this fails, the message reappears after its
        // visibility timeout and is moved again (at least once, never lost).
        source
            .pop_receipt_client(PopReceipt::new(m.message_id, m.pop_receipt))
            .delete()
            .await
            .map(|_| ())
            .or_else(|e| match Self::receipt_error(name, "DeleteMessage", &e) {
                None => Ok(()),
                Some(err) => Err(err),
            })
    }
}

#[async_trait]
impl Queue for AzureQueue {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    async fn ready(&self) -> ExoResult<()> {
        let mut pages = self.service.list_queues().max_results(std::num::NonZeroU32::MIN).into_stream();
        match pages.next().await {
            Some(Err(err)) => readiness(Err(map_error("azure-queue", "ListQueues", &err))),
            _ => Ok(()),
        }
    }

    async fn create_queue(&self, op: ops::CreateQueue<'_>) -> ExoResult<(bool, pb::QueueInfo)> {
        let ops::CreateQueue { queue: name, options } = op;
        if !options.dead_letter_queue.is_empty() {
            let target = QueueName::parse("queue", &options.dead_letter_queue, "options.dead_letter_queue")?;
            match self.metadata(&target).await {
                Err(err) if err.reason == ErrorReason::QueueNotFound => {
                    return Err(dead_letter_missing(&options.dead_letter_queue));
                }
                other => other.map(|_| ())?,
            }
        }
        // A queue made outside ExoFlow (an ARM template, the portal, a native SDK) is adopted:
        // the requested options become its metadata, its messages stay.
        match self.metadata(name).await {
            Ok(found) if found.foreign => {
                self.client(name.as_str())
                    .set_metadata(options_metadata(options, now_ms()))
                    .await
                    .map_err(|e| queue_error(name.as_str(), "SetQueueMetadata", &e))?;
                self.forget_options(name);
                tracing::info!(queue = %name, "adopted a queue made outside ExoFlow");
                return Ok((false, self.info(name).await?));
            }
            Err(err) if err.reason != ErrorReason::QueueNotFound => return Err(err),
            _ => {}
        }
        if let Some(existing) = existing_queue(self.info(name).await, name, options)? {
            return Ok(existing);
        }
        let result = self.client(name.as_str()).create().metadata(options_metadata(options, now_ms())).await;
        if let Err(err) = result {
            // Azure answers 409 when the queue exists with other metadata (a racing creator).
            if matches!(service_code(&err), Some((409, "QueueAlreadyExists"))) {
                let existing = self.info(name).await?.options.unwrap_or_default();
                return Err(already_exists(name, &existing, options));
            }
            return Err(queue_error(name.as_str(), "CreateQueue", &err));
        }
        Ok((true, self.info(name).await?))
    }

    async fn delete_queue(&self, op: ops::DeleteQueue<'_>) -> ExoResult<()> {
        let ops::DeleteQueue { queue: name } = op;
        self.forget_options(name);
        self.client(name.as_str())
            .delete()
            .await
            .map(|_| ())
            .map_err(|e| queue_error(name.as_str(), "DeleteQueue", &e))?;
        // A subscription goes with its queue.
        self.az_forget_queue(name).await
    }

    async fn list_queues(&self, op: ops::ListQueues<'_>) -> ExoResult<Vec<String>> {
        let ops::ListQueues { prefix, start_after, limit } = op;
        let mut names = Vec::new();
        let mut pages =
            self.service.list_queues().prefix(format!("{}{prefix}", self.name_prefix)).into_stream();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_error("azure-queue", "ListQueues", &e))?;
            for queue in page.queues {
                let Some(name) = queue.name.strip_prefix(self.name_prefix.as_str()) else { continue };
                if QueueName::parse("queue", name, "name").is_ok()
                    && start_after.is_none_or(|after| name > after)
                {
                    names.push(name.to_owned());
                }
            }
            // Azure lists in name order: stop once a page has given enough.
            if names.len() >= limit {
                break;
            }
        }
        names.sort();
        names.truncate(limit);
        Ok(names)
    }

    async fn queue_info(&self, op: ops::QueueInfo<'_>) -> ExoResult<pb::QueueInfo> {
        let ops::QueueInfo { queue: name } = op;
        self.info(name).await
    }

    async fn send(&self, op: ops::Send<'_>) -> ExoResult<Vec<ExoResult<String>>> {
        let ops::Send { queue: name, messages } = op;
        let options = self.options(name).await?;
        let client = self.client(name.as_str());
        let mut results = Vec::with_capacity(messages.len());
        for message in messages {
            let delay = message.delay_seconds.unwrap_or(options.delay_seconds);
            let text =
                Envelope { body: message.body, attributes: message.attributes, original_id: None }.encode();
            if text.len() > AZURE_MAX_TEXT {
                results.push(Err(ExoError::new(
                    ErrorReason::MessageTooLarge,
                    format!("message encodes to {} bytes, above Azure's {AZURE_MAX_TEXT}", text.len()),
                )
                .with_resource(name.as_str())));
                continue;
            }
            let sent = client
                .put_message(text)
                .visibility_timeout(Duration::from_secs(u64::from(delay)))
                .ttl(Duration::from_secs(u64::from(options.retention_seconds.max(1))))
                .await;
            results.push(match sent {
                Ok(out) => Ok(out.queue_message.message_id),
                // The queue itself is gone: the whole call fails.
                Err(err)
                    if matches!(service_code(&err), Some((404, "QueueNotFound"))) && results.is_empty() =>
                {
                    self.forget_options(name);
                    return Err(queue_not_found(name.as_str()));
                }
                Err(err) => Err(queue_error(name.as_str(), "PutMessage", &err)),
            });
        }
        Ok(results)
    }

    async fn receive(&self, op: ops::Receive<'_>) -> ExoResult<Vec<pb::Message>> {
        let ops::Receive { queue: name, params } = op;
        let options = self.options(name).await?;
        let visibility =
            params.visibility_seconds.unwrap_or(options.visibility_timeout_seconds.unwrap_or(30));
        let deadline = tokio::time::Instant::now() + params.wait;
        let mut pause = Duration::from_millis(50);
        loop {
            let messages = self.noting_missing(
                name,
                self.receive_once(name, &options, params.max_messages, visibility).await,
            )?;
            let now = tokio::time::Instant::now();
            if !messages.is_empty() || now >= deadline {
                return Ok(messages);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    async fn ack(&self, op: ops::Ack<'_>) -> ExoResult<()> {
        let ops::Ack { queue: name, receipt } = op;
        let (id, issued) = decode_receipt(receipt, name)?;
        let pop = self.newest_pop(issued);
        let result = self.client(name.as_str()).pop_receipt_client(PopReceipt::new(id, pop)).delete().await;
        match result {
            Ok(_) => {
                self.forget_pop(issued);
                Ok(())
            }
            Err(err) => match Self::receipt_error(name, "DeleteMessage", &err) {
                // Already deleted: acking twice is harmless.
                None => {
                    self.forget_pop(issued);
                    Ok(())
                }
                Some(err) => Err(err),
            },
        }
    }

    async fn change_visibility(&self, op: ops::ChangeVisibility<'_>) -> ExoResult<()> {
        let ops::ChangeVisibility { queue: name, receipt, seconds } = op;
        let (id, issued) = decode_receipt(receipt, name)?;
        let pop = self.newest_pop(issued);
        match self.set_visibility(name, id, &pop, seconds).await {
            Ok(newest) => {
                self.remember_pop(issued, newest);
                Ok(())
            }
            Err(err) => {
                Err(Self::receipt_error(name, "UpdateMessage", &err).unwrap_or_else(|| stale_receipt(name)))
            }
        }
    }

    async fn purge(&self, op: ops::Purge<'_>) -> ExoResult<()> {
        let ops::Purge { queue: name } = op;
        self.client(name.as_str())
            .clear_messages()
            .await
            .map(|_| ())
            .map_err(|e| queue_error(name.as_str(), "ClearMessages", &e))
    }
    async fn create_topic(&self, op: ops::CreateTopic<'_>) -> ExoResult<(bool, pb::TopicInfo)> {
        let ops::CreateTopic { topic: name } = op;
        self.az_create_topic(name).await
    }

    async fn delete_topic(&self, op: ops::DeleteTopic<'_>) -> ExoResult<()> {
        let ops::DeleteTopic { topic: name } = op;
        self.az_delete_topic(name).await
    }

    async fn list_topics(&self, op: ops::ListTopics<'_>) -> ExoResult<Vec<String>> {
        let ops::ListTopics { prefix, start_after, limit } = op;
        self.az_list_topics(prefix, start_after, limit).await
    }

    async fn topic_info(&self, op: ops::TopicInfo<'_>) -> ExoResult<pb::TopicInfo> {
        let ops::TopicInfo { topic: name } = op;
        self.az_topic_info(name).await
    }

    async fn create_subscription(
        &self,
        op: ops::CreateSubscription<'_>,
    ) -> ExoResult<(bool, pb::Subscription)> {
        let ops::CreateSubscription { topic, subscription } = op;
        self.az_create_subscription(topic, subscription).await
    }

    async fn delete_subscription(&self, op: ops::DeleteSubscription<'_>) -> ExoResult<()> {
        let ops::DeleteSubscription { topic, subscription: name } = op;
        self.az_delete_subscription(topic, name).await
    }

    async fn publish(&self, op: ops::Publish<'_>) -> ExoResult<Vec<ExoResult<Published>>> {
        let ops::Publish { topic, messages } = op;
        self.az_publish(topic, messages).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_plain_text_is_its_own_body() {
        let every_byte: Vec<u8> = (0..=255u8).collect();
        let envelope = Envelope {
            body: every_byte,
            attributes: [("k".to_owned(), "välue=.x".to_owned())].into(),
            original_id: Some("abc-123".into()),
        };
        let text = envelope.encode();
        assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.=".contains(&b)), "{text}");
        assert_eq!(Envelope::decode(&text), envelope);
        let empty = Envelope { body: Vec::new(), attributes: HashMap::new(), original_id: None };
        assert_eq!(Envelope::decode(&empty.encode()), empty);
        let native = Envelope::decode("hello from a native producer");
        assert_eq!(native.body, b"hello from a native producer");
        assert!(native.attributes.is_empty());
    }

    #[test]
    fn padded_envelopes_decode_and_broken_ones_are_marked_not_dropped() {
        // Python's urlsafe_b64encode pads: "hi" → "aGk=".
        let padded = Envelope::decode("exo1.aGk=.aaw===dg==");
        assert_eq!(padded.body, b"hi");
        assert_eq!(padded.attributes, [("k".to_owned(), "v".to_owned())].into());
        for broken in ["exo1.!!!", "exo1.aGk.zzz", "exo1.aGk.anoequals"] {
            let got = Envelope::decode(broken);
            assert_eq!(got.body, broken.as_bytes(), "{broken}: delivered as stored");
            assert!(got.attributes[UNDECODABLE_ATTRIBUTE].contains("not an ExoFlow envelope"), "{broken}");
        }
    }

    #[test]
    fn message_text_keeps_its_whitespace() {
        let xml = "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><QueueMessagesList>\
            <QueueMessage><MessageId>m1</MessageId><InsertionTime>Mon, 27 Jun 2022 13:38:48 GMT</InsertionTime>\
            <ExpirationTime>Mon, 04 Jul 2022 13:38:48 GMT</ExpirationTime><PopReceipt>p1</PopReceipt>\
            <TimeNextVisible>Mon, 27 Jun 2022 13:38:53 GMT</TimeNextVisible><DequeueCount>2</DequeueCount>\
            <MessageText>  {&quot;a&quot;: 1}&#xD;\n</MessageText></QueueMessage>\
            <QueueMessage><MessageId>m2</MessageId><PopReceipt>p2</PopReceipt><DequeueCount>1</DequeueCount>\
            <MessageText></MessageText></QueueMessage></QueueMessagesList>";
        let messages = parse_messages(xml.as_bytes()).unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].text, "  {\"a\": 1}\r\n");
        assert_eq!((messages[0].message_id.as_str(), messages[0].pop_receipt.as_str()), ("m1", "p1"));
        assert_eq!(messages[0].dequeue_count, 2);
        assert_eq!(messages[0].inserted_at_ms, 1_656_337_128_000);
        assert_eq!(messages[1].text, "");
        assert!(parse_messages(b"<QueueMessagesList><QueueMessage><MessageText>x</MessageText></QueueMessage></QueueMessagesList>").is_err());
    }

    #[test]
    fn a_queue_without_exoflow_metadata_has_the_contract_defaults() {
        let found = options_of(&Metadata::new());
        assert!(found.foreign);
        assert_eq!(found.options.visibility_timeout_seconds, Some(DEFAULT_VISIBILITY_SECONDS));
        assert_eq!(found.options.retention_seconds, DEFAULT_RETENTION_SECONDS);
        let ours = options_of(&options_metadata(
            &pb::QueueOptions {
                visibility_timeout_seconds: Some(5),
                retention_seconds: 60,
                ..Default::default()
            },
            7,
        ));
        assert!(!ours.foreign);
        assert_eq!((ours.options.visibility_timeout_seconds, ours.options.retention_seconds), (Some(5), 60));
        assert_eq!(ours.created_at_ms, 7);
    }

    #[test]
    fn the_declared_limit_fits_azure_after_encoding() {
        let body = vec![0xffu8; MAX_MESSAGE_BYTES as usize - 10 * 2];
        let attributes = (0..10).map(|i| (format!("{i}"), "v".to_owned())).collect();
        let text =
            Envelope { body, attributes, original_id: Some(uuid::Uuid::now_v7().to_string()) }.encode();
        assert!(text.len() <= AZURE_MAX_TEXT, "{}", text.len());
    }

    #[test]
    fn receipts_are_bound_to_their_queue() {
        let orders = QueueName::parse("queue", "orders", "q").unwrap();
        let other = QueueName::parse("queue", "other", "q").unwrap();
        let receipt = encode_receipt(&orders, "id-1", "AgAAAA+/==");
        assert_eq!(decode_receipt(&receipt, &orders).unwrap(), ("id-1", "AgAAAA+/=="));
        assert_eq!(decode_receipt(&receipt, &other).unwrap_err().reason, ErrorReason::InvalidReceipt);
        for junk in ["", "AAAA", "az1:orders:id", "az1:orders::pop"] {
            assert_eq!(decode_receipt(junk, &orders).unwrap_err().reason, ErrorReason::InvalidReceipt);
        }
    }
}
