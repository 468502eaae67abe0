//! Topics on AWS: Amazon SNS topics with SQS subscriptions, the native fan-out.
//!
//! - A topic is the SNS topic `<name-prefix><name>`, tagged `exo-created-at-ms` when the proxy
//!   makes it. A publish is acknowledged once SNS has accepted it; SNS then delivers to every
//!   subscribed queue, retrying on its own (SNS is the durable outbox).
//! - A subscription is an SNS `sqs` subscription with raw message delivery, so the queue receives
//!   the published body (encoded as a send is: see `exo.encoding`) and attributes unchanged, plus
//!   `exo.topic` and `exo.publish-id`. Its filter is an SNS filter policy (message attributes);
//!   its name is kept on the queue as the tag `exo-subscription:<topic>` = `<name> <created ms>`
//!   (a subscription made outside the proxy is named after its queue). The proxy adds a statement
//!   to the queue's access policy letting the topic send to it (what CloudFormation renders too).
//! - SNS delivers to one queue once per topic, so a queue holds at most one subscription of a
//!   topic. A subscription whose queue was deleted is not listed, and deleting a queue through the
//!   proxy unsubscribes it.
//! - Limits are SNS's: 256 KiB per publish (attributes included, body base64 when binary) and 10
//!   attributes, three of them the proxy's.
//! - `deliveries` in a publish result is the proxy's view of the subscriptions and their filters
//!   (refreshed every few seconds and on its own changes): SNS does not report it.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
use aws_sdk_sqs::types::QueueAttributeName;
use exo_aws::{map_error, service_code};
use exo_proto::{common::v1::ErrorReason, queue::v1 as pb};
use exo_proxy_core::{ExoError, ExoResult, now_ms};

use super::{ENCODING_ATTRIBUTE, SqsQueue, encode_body};
use crate::{
    filter::Filter,
    model::{
        MAX_SUBSCRIPTIONS, PUBLISH_ID_ATTRIBUTE, Published, QueueName, TOPIC_ATTRIBUTE, TopicName,
        subscription_conflict, subscription_not_found, too_many_subscriptions, topic_not_found,
    },
    services::new_message_id,
};

/// SNS's limit for one publish and for one batch (attributes included).
const SNS_MAX_BYTES: usize = 256 * 1024;
/// Largest published message: 3/4 of SNS's limit (base64) less room for the attributes.
pub const MAX_PUBLISH_BYTES: u64 = 190 * 1024;
/// Most entries in one SNS PublishBatch.
const SNS_BATCH: usize = 10;
/// How long the proxy trusts its view of a topic's subscriptions for `deliveries`.
const VIEW_TTL: Duration = Duration::from_secs(5);
const CREATED_TAG: &str = "exo-created-at-ms";

/// The topic limits on SNS.
pub fn sns_topic_limits() -> pb::TopicLimits {
    pb::TopicLimits {
        max_message_bytes: MAX_PUBLISH_BYTES,
        // SNS's 10 less exo.encoding, exo.topic and exo.publish-id.
        max_attributes: 7,
        max_batch_entries: 100,
        max_subscriptions: MAX_SUBSCRIPTIONS,
        max_filter_bytes: crate::filter::MAX_FILTER_BYTES as u32,
    }
}

/// The queue tag naming a subscription of `topic`.
fn subscription_tag(topic: &str) -> String {
    format!("exo-subscription:{topic}")
}

/// One SNS subscription as the contract sees it, with what the proxy needs to manage it.
#[derive(Debug, Clone)]
pub(super) struct NativeSubscription {
    pub(super) info: pb::Subscription,
    arn: String,
    queue_url: String,
}

/// What the proxy knows of a topic's subscriptions, for `deliveries`.
pub(super) struct TopicView {
    seen: Instant,
    filters: Vec<Option<Filter>>,
}

fn sns_error<E>(topic: &str, operation: &str, err: exo_aws::SdkError<E>) -> ExoError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match service_code(&err).map(|(code, _)| code) {
        Some("NotFound" | "NotFoundException") => topic_not_found(topic),
        _ => map_error("sns", operation, err).with_resource(topic),
    }
}

impl SqsQueue {
    /// Every topic ARN of the account (SNS lists 100 a page).
    async fn all_topic_arns(&self, for_topic: &str) -> ExoResult<Vec<String>> {
        let mut arns = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .sns
                .list_topics()
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| sns_error(for_topic, "ListTopics", e))?;
            arns.extend(page.topics().iter().filter_map(|t| t.topic_arn()).map(str::to_owned));
            token = page.next_token;
            if token.is_none() {
                return Ok(arns);
            }
        }
    }

    /// The topic's ARN, or TOPIC_NOT_FOUND (cached; SNS has no lookup by name, so a miss lists).
    pub(super) async fn topic_arn(&self, name: &str) -> ExoResult<String> {
        if let Some(arn) = self.topic_arns.lock().unwrap_or_else(|p| p.into_inner()).get(name) {
            return Ok(arn.clone());
        }
        let suffix = format!(":{}", self.physical(name));
        let arn = self
            .all_topic_arns(name)
            .await?
            .into_iter()
            .find(|a| a.ends_with(&suffix))
            .ok_or_else(|| topic_not_found(name))?;
        self.topic_arns.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), arn.clone());
        Ok(arn)
    }

    pub(super) fn forget_topic(&self, name: &str) {
        self.topic_arns.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
        self.topic_views.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
    }

    /// Every topic name (logical) in the namespace, sorted.
    pub(super) async fn topic_names(&self) -> ExoResult<Vec<String>> {
        let mut names: Vec<String> = self
            .all_topic_arns("")
            .await?
            .iter()
            .filter_map(|arn| {
                arn.rsplit(':').next()?.strip_prefix(self.name_prefix.as_str()).map(str::to_owned)
            })
            .filter(|name| TopicName::parse("topic", name, "name").is_ok())
            .collect();
        names.sort();
        Ok(names)
    }

    pub(super) async fn sns_create_topic(&self, name: &TopicName) -> ExoResult<(bool, pb::TopicInfo)> {
        match self.sns_topic_info(name).await {
            Ok(info) => return Ok((false, info)),
            Err(err) if err.reason == ErrorReason::TopicNotFound => {}
            Err(err) => return Err(err),
        }
        let created_at_ms = now_ms();
        let tag = aws_sdk_sns::types::Tag::builder()
            .key(CREATED_TAG)
            .value(created_at_ms.to_string())
            .build()
            .map_err(|e| ExoError::internal(format!("SNS tag: {e}")))?;
        let out = self
            .sns
            .create_topic()
            .name(self.physical(name.as_str()))
            .tags(tag)
            .send()
            .await
            .map_err(|e| sns_error(name.as_str(), "CreateTopic", e))?;
        if let Some(arn) = out.topic_arn {
            self.topic_arns.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), arn);
        }
        Ok((true, pb::TopicInfo { name: name.to_string(), created_at_ms, subscriptions: Vec::new() }))
    }

    pub(super) async fn sns_delete_topic(&self, name: &TopicName) -> ExoResult<()> {
        let arn = self.topic_arn(name.as_str()).await?;
        // SNS deletes a topic's subscriptions with it; the names kept on the queues go too.
        for subscription in self.native_subscriptions(name.as_str(), &arn).await? {
            self.untag(&subscription.queue_url, name.as_str()).await;
        }
        self.sns
            .delete_topic()
            .topic_arn(&arn)
            .send()
            .await
            .map_err(|e| sns_error(name.as_str(), "DeleteTopic", e))?;
        self.forget_topic(name.as_str());
        Ok(())
    }

    pub(super) async fn sns_topic_info(&self, name: &TopicName) -> ExoResult<pb::TopicInfo> {
        let arn = self.topic_arn(name.as_str()).await?;
        let tags = self.sns.list_tags_for_resource().resource_arn(&arn).send().await;
        let created_at_ms = match tags {
            Ok(out) => out
                .tags()
                .iter()
                .find(|t| t.key() == CREATED_TAG)
                .and_then(|t| t.value().parse().ok())
                .unwrap_or_default(),
            Err(err) => {
                let err = sns_error(name.as_str(), "ListTagsForResource", err);
                if err.reason == ErrorReason::TopicNotFound {
                    self.forget_topic(name.as_str());
                }
                return Err(err);
            }
        };
        let subscriptions = self.native_subscriptions(name.as_str(), &arn).await?;
        self.remember_view(name.as_str(), &subscriptions);
        let mut subscriptions: Vec<pb::Subscription> = subscriptions.into_iter().map(|s| s.info).collect();
        subscriptions.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(pb::TopicInfo { name: name.to_string(), created_at_ms, subscriptions })
    }

    fn remember_view(&self, topic: &str, subscriptions: &[NativeSubscription]) {
        let filters = subscriptions.iter().map(|s| Filter::parse(&s.info.filter).ok()).collect();
        self.topic_views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.to_owned(), TopicView { seen: Instant::now(), filters });
    }

    /// The topic's subscriptions into queues of this namespace that still exist.
    async fn native_subscriptions(&self, topic: &str, arn: &str) -> ExoResult<Vec<NativeSubscription>> {
        let mut found = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .sns
                .list_subscriptions_by_topic()
                .topic_arn(arn)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| sns_error(topic, "ListSubscriptionsByTopic", e))?;
            for sub in page.subscriptions() {
                let (Some(sub_arn), Some("sqs"), Some(endpoint)) =
                    (sub.subscription_arn(), sub.protocol(), sub.endpoint())
                else {
                    continue;
                };
                let physical = endpoint.rsplit(':').next().unwrap_or_default();
                let Some(queue) = physical.strip_prefix(self.name_prefix.as_str()) else { continue };
                let Ok(queue) = QueueName::parse("queue", queue, "queue") else { continue };
                // Pending confirmation (another account's queue): not a subscription yet.
                if !sub_arn.starts_with("arn:") {
                    continue;
                }
                let queue_url = match self.url(queue.as_str()).await {
                    Ok(url) => url,
                    // Deleted behind SNS's back: SNS keeps the subscription, the contract does not.
                    Err(err) if err.reason == ErrorReason::QueueNotFound => continue,
                    Err(err) => return Err(err),
                };
                let attributes = self
                    .sns
                    .get_subscription_attributes()
                    .subscription_arn(sub_arn)
                    .send()
                    .await
                    .map_err(|e| sns_error(topic, "GetSubscriptionAttributes", e))?;
                let policy =
                    attributes.attributes().and_then(|a| a.get("FilterPolicy")).filter(|p| !p.is_empty());
                let filter = match policy {
                    None => String::new(),
                    Some(text) => serde_json::from_str(text)
                        .ok()
                        .and_then(|json| Filter::from_sns_policy(&json))
                        .map(|f| f.canonical())
                        // A policy this language cannot say is shown as it is.
                        .unwrap_or_else(|| format!("sns-policy {text}")),
                };
                let tags = self
                    .client
                    .list_queue_tags()
                    .queue_url(&queue_url)
                    .send()
                    .await
                    .map_err(|e| super::queue_error(queue.as_str(), "ListQueueTags", e))?;
                let tagged = tags.tags().and_then(|t| t.get(&subscription_tag(topic))).cloned();
                let (name, created_at_ms) = match tagged.as_deref().and_then(|v| v.split_once(' ')) {
                    Some((name, ms)) => (name.to_owned(), ms.parse().unwrap_or_default()),
                    None => (queue.to_string(), 0),
                };
                found.push(NativeSubscription {
                    info: pb::Subscription { name, queue: queue.to_string(), filter, created_at_ms },
                    arn: sub_arn.to_owned(),
                    queue_url,
                });
            }
            token = page.next_token;
            if token.is_none() {
                return Ok(found);
            }
        }
    }

    async fn untag(&self, queue_url: &str, topic: &str) {
        if let Err(err) =
            self.client.untag_queue().queue_url(queue_url).tag_keys(subscription_tag(topic)).send().await
        {
            tracing::warn!(queue_url, topic, error = %map_error("sqs", "UntagQueue", err), "could not remove a subscription's name tag");
        }
    }

    pub(super) async fn sns_create_subscription(
        &self,
        topic: &TopicName,
        subscription: &pb::Subscription,
    ) -> ExoResult<(bool, pb::Subscription)> {
        let queue = QueueName::parse("queue", &subscription.queue, "queue")?;
        let queue_url = self.url(queue.as_str()).await.map_err(|e| e.with_field("queue"))?;
        let arn = self.topic_arn(topic.as_str()).await?;
        let existing = self.native_subscriptions(topic.as_str(), &arn).await?;
        if let Some(found) = existing.iter().find(|s| s.info.name == subscription.name) {
            if crate::model::same_subscription(&found.info, subscription) {
                return Ok((false, found.info.clone()));
            }
            return Err(subscription_conflict(topic.as_str(), &found.info, subscription));
        }
        if let Some(found) = existing.iter().find(|s| s.info.queue == subscription.queue) {
            return Err(ExoError::new(
                ErrorReason::SubscriptionAlreadyExists,
                format!(
                    "queue '{}' is already subscribed to topic '{topic}' as '{}': SNS delivers to a queue once per topic",
                    subscription.queue, found.info.name
                ),
            )
            .with_resource(subscription.name.as_str()));
        }
        if existing.len() >= MAX_SUBSCRIPTIONS as usize {
            return Err(too_many_subscriptions(topic.as_str()));
        }
        let queue_arn = self
            .attributes(queue.as_str(), &queue_url)
            .await?
            .remove(&QueueAttributeName::QueueArn)
            .ok_or_else(|| ExoError::internal("SQS returned no queue ARN"))?;
        self.allow_topic(queue.as_str(), &queue_url, &queue_arn, &arn).await?;
        let created_at_ms = now_ms();
        self.client
            .tag_queue()
            .queue_url(&queue_url)
            .tags(subscription_tag(topic.as_str()), format!("{} {created_at_ms}", subscription.name))
            .send()
            .await
            .map_err(|e| super::queue_error(queue.as_str(), "TagQueue", e))?;
        let mut subscribe = self
            .sns
            .subscribe()
            .topic_arn(&arn)
            .protocol("sqs")
            .endpoint(&queue_arn)
            .return_subscription_arn(true)
            .attributes("RawMessageDelivery", "true");
        if let Some(policy) = Filter::parse(&subscription.filter)?.sns_policy() {
            subscribe = subscribe.attributes("FilterPolicy", policy.to_string());
        }
        subscribe.send().await.map_err(|e| sns_error(topic.as_str(), "Subscribe", e))?;
        self.topic_views.lock().unwrap_or_else(|p| p.into_inner()).remove(topic.as_str());
        Ok((true, pb::Subscription { created_at_ms, ..subscription.clone() }))
    }

    /// Adds to the queue's access policy a statement letting `topic_arn` send to it (kept if
    /// already there; other statements are left alone).
    async fn allow_topic(
        &self,
        queue: &str,
        queue_url: &str,
        queue_arn: &str,
        topic_arn: &str,
    ) -> ExoResult<()> {
        let current = self.attributes(queue, queue_url).await?.remove(&QueueAttributeName::Policy);
        let mut policy: serde_json::Value = current
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_else(|| serde_json::json!({ "Version": "2012-10-17", "Statement": [] }));
        let sid = format!("exo-topic-{}", topic_arn.rsplit(':').next().unwrap_or_default());
        let statements = match policy.get_mut("Statement") {
            Some(serde_json::Value::Array(list)) => list,
            _ => {
                policy["Statement"] = serde_json::json!([]);
                policy["Statement"]
                    .as_array_mut()
                    .ok_or_else(|| ExoError::internal("policy statement list"))?
            }
        };
        if statements.iter().any(|s| s["Sid"] == sid.as_str()) {
            return Ok(());
        }
        statements.push(serde_json::json!({
            "Sid": sid,
            "Effect": "Allow",
            "Principal": { "Service": "sns.amazonaws.com" },
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": { "ArnEquals": { "aws:SourceArn": topic_arn } },
        }));
        self.client
            .set_queue_attributes()
            .queue_url(queue_url)
            .attributes(QueueAttributeName::Policy, policy.to_string())
            .send()
            .await
            .map_err(|e| super::queue_error(queue, "SetQueueAttributes", e))?;
        Ok(())
    }

    pub(super) async fn sns_delete_subscription(&self, topic: &TopicName, name: &TopicName) -> ExoResult<()> {
        let arn = self.topic_arn(topic.as_str()).await?;
        let existing = self.native_subscriptions(topic.as_str(), &arn).await?;
        let found = existing
            .into_iter()
            .find(|s| s.info.name == name.as_str())
            .ok_or_else(|| subscription_not_found(topic.as_str(), name.as_str()))?;
        self.sns
            .unsubscribe()
            .subscription_arn(&found.arn)
            .send()
            .await
            .map_err(|e| sns_error(topic.as_str(), "Unsubscribe", e))?;
        self.untag(&found.queue_url, topic.as_str()).await;
        self.topic_views.lock().unwrap_or_else(|p| p.into_inner()).remove(topic.as_str());
        Ok(())
    }

    /// Unsubscribes `queue` (about to be deleted) from every topic its tags name.
    pub(super) async fn unsubscribe_queue(&self, queue: &QueueName, queue_url: &str) -> ExoResult<()> {
        let tags = self
            .client
            .list_queue_tags()
            .queue_url(queue_url)
            .send()
            .await
            .map_err(|e| super::queue_error(queue.as_str(), "ListQueueTags", e))?;
        let topics: Vec<String> = tags
            .tags()
            .into_iter()
            .flat_map(|t| t.keys())
            .filter_map(|k| k.strip_prefix("exo-subscription:").map(str::to_owned))
            .collect();
        for topic in topics {
            let arn = match self.topic_arn(&topic).await {
                Ok(arn) => arn,
                Err(err) if err.reason == ErrorReason::TopicNotFound => continue,
                Err(err) => return Err(err),
            };
            for sub in self.native_subscriptions(&topic, &arn).await? {
                if sub.info.queue == queue.as_str() {
                    self.sns
                        .unsubscribe()
                        .subscription_arn(&sub.arn)
                        .send()
                        .await
                        .map_err(|e| sns_error(&topic, "Unsubscribe", e))?;
                }
            }
            self.topic_views.lock().unwrap_or_else(|p| p.into_inner()).remove(&topic);
        }
        Ok(())
    }

    /// How many subscriptions `attributes` reach, by the proxy's recent view of the topic.
    async fn deliveries(&self, topic: &TopicName, attributes: &HashMap<String, String>) -> ExoResult<u32> {
        let fresh = self
            .topic_views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic.as_str())
            .filter(|v| v.seen.elapsed() < VIEW_TTL)
            .map(|v| v.filters.iter().filter(|f| f.as_ref().is_none_or(|f| f.matches(attributes))).count());
        match fresh {
            Some(count) => Ok(count as u32),
            None => {
                self.sns_topic_info(topic).await?;
                Ok(self
                    .topic_views
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(topic.as_str())
                    .map(|v| {
                        v.filters.iter().filter(|f| f.as_ref().is_none_or(|f| f.matches(attributes))).count()
                    })
                    .unwrap_or_default() as u32)
            }
        }
    }

    pub(super) async fn sns_publish(
        &self,
        topic: &TopicName,
        messages: Vec<pb::PublishedMessage>,
    ) -> ExoResult<Vec<ExoResult<Published>>> {
        let arn = self.topic_arn(topic.as_str()).await?;
        let mut results: Vec<Option<ExoResult<Published>>> = Vec::with_capacity(messages.len());
        let mut entries = Vec::with_capacity(messages.len());
        for (index, message) in messages.into_iter().enumerate() {
            let publish_id = new_message_id();
            let deliveries = self.deliveries(topic, &message.attributes).await?;
            let (body, encoding) = encode_body(&message.body);
            let mut size = body.len();
            let mut attributes = HashMap::new();
            let mut add = |name: &str, value: &str| -> ExoResult<()> {
                size += name.len() + value.len() + "String".len();
                let value = MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(value)
                    .build()
                    .map_err(|e| ExoError::internal(format!("SNS attribute: {e}")))?;
                attributes.insert(name.to_owned(), value);
                Ok(())
            };
            for (name, value) in &message.attributes {
                add(name, value)?;
            }
            add(TOPIC_ATTRIBUTE, topic.as_str())?;
            add(PUBLISH_ID_ATTRIBUTE, &publish_id)?;
            if let Some(encoding) = encoding {
                add(ENCODING_ATTRIBUTE, encoding)?;
            }
            let entry = PublishBatchRequestEntry::builder()
                .id(index.to_string())
                .message(body)
                .set_message_attributes(Some(attributes))
                .build()
                .map_err(|e| ExoError::internal(format!("SNS batch entry: {e}")))?;
            entries.push((entry, size));
            results.push(Some(Ok(Published { publish_id, deliveries })));
        }
        for chunk in chunk_entries(entries) {
            let out = self
                .sns
                .publish_batch()
                .topic_arn(&arn)
                .set_publish_batch_request_entries(Some(chunk))
                .send()
                .await;
            let out = match out {
                Ok(out) => out,
                Err(err) => {
                    let err = sns_error(topic.as_str(), "PublishBatch", err);
                    if err.reason == ErrorReason::TopicNotFound {
                        self.forget_topic(topic.as_str());
                    }
                    return Err(err);
                }
            };
            for failed in out.failed() {
                let Some(slot) = failed.id().parse::<usize>().ok().and_then(|i| results.get_mut(i)) else {
                    continue;
                };
                let reason = if failed.sender_fault() {
                    ErrorReason::InvalidArgument
                } else {
                    ErrorReason::BackendUnavailable
                };
                let mut err = ExoError::new(
                    reason,
                    format!(
                        "SNS refused the message: {} ({})",
                        failed.message().unwrap_or(""),
                        failed.code()
                    ),
                );
                if !failed.sender_fault() {
                    err = err.retryable();
                }
                *slot = Some(Err(err.with_resource(topic.as_str())));
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(ExoError::internal("publish result missing"))))
            .collect())
    }
}

/// Cuts entries into PublishBatch calls of at most 10 entries and 256 KiB.
fn chunk_entries(entries: Vec<(PublishBatchRequestEntry, usize)>) -> Vec<Vec<PublishBatchRequestEntry>> {
    super::chunk_by(entries, SNS_BATCH, SNS_MAX_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declared_publish_limit_fits_sns_after_base64() {
        let limits = sns_topic_limits();
        // Body and attributes at the limit, all base64, plus the three attributes of the copy.
        let encoded = (limits.max_message_bytes as usize).div_ceil(3) * 4;
        assert!(encoded + 3 * (64 + 64) < SNS_MAX_BYTES, "{encoded}");
        assert_eq!(limits.max_attributes + 3, 10, "SNS carries 10 attributes");
    }
}
