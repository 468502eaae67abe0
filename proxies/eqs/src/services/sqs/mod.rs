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

mod client;
mod messages;
use {client::*, messages::*};
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
