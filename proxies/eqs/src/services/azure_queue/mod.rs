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

mod client;
mod messages;
mod metadata;
use {client::*, messages::*, metadata::*};
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
/// How long the proxy remembers a receipt's newest pop receipt (the longest visibility).
const RECEIPT_MEMORY: Duration = Duration::from_secs(12 * 3600);

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
