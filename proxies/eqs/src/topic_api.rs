//! The topic half of [`QueueApi`]: validates topic requests (names, filters, limits, the TOPICS
//! capability) before anything is written, exactly as the queue half does for queues. Both the
//! gRPC `TopicService` and the `/api/v1/topics` routes call this.

use exo_proto::{common::v1::ErrorReason, queue::v1 as pb};
use exo_proxy_core::{ExoError, ExoResult};

use crate::ops;
use crate::{
    api::{BatchEntries, Page, QueueApi, check_contents, normalize_options},
    filter::Filter,
    model::{Capability, Published, QueueName, TopicName, subscription_conflict, too_many_subscriptions},
};

impl QueueApi {
    fn topics_offered(&self) -> ExoResult<pb::TopicLimits> {
        let descriptor = self.backend().descriptor();
        descriptor.require(Capability::Topics, "topics")?;
        Ok(self.backend().topic_limits())
    }

    fn topic_name(&self, name: &str, field: &str) -> ExoResult<TopicName> {
        TopicName::parse("topic", name, field).map_err(|e| self.with_backend_name(e))
    }

    fn subscription_name(&self, name: &str, field: &str) -> ExoResult<TopicName> {
        TopicName::parse("subscription", name, field).map_err(|e| self.with_backend_name(e))
    }

    /// Creates a topic (idempotent).
    pub async fn create_topic(&self, req: pb::CreateTopicRequest) -> ExoResult<pb::CreateTopicResponse> {
        let name = self.topic_name(&req.name, "name")?;
        self.topics_offered()?;
        let (created, info) = self.backend().create_topic(ops::CreateTopic { topic: &name }).await?;
        Ok(pb::CreateTopicResponse { created, info: Some(info) })
    }

    /// Deletes a topic and its subscriptions; their queues stay.
    pub async fn delete_topic(&self, req: pb::DeleteTopicRequest) -> ExoResult<pb::DeleteTopicResponse> {
        let name = self.topic_name(&req.name, "name")?;
        self.topics_offered()?;
        self.backend().delete_topic(ops::DeleteTopic { topic: &name }).await?;
        Ok(pb::DeleteTopicResponse {})
    }

    /// One page of topic names.
    pub async fn list_topics(&self, req: pb::ListTopicsRequest) -> ExoResult<pb::ListTopicsResponse> {
        let page = Page::parse(req.page_size, &req.prefix, &req.page_token)
            .map_err(|e| self.with_backend_name(e))?;
        self.topics_offered()?;
        let names = self
            .backend()
            .list_topics(ops::ListTopics {
                prefix: &req.prefix,
                start_after: page.start_after.as_deref(),
                limit: page.size + 1,
            })
            .await?;
        let (names, next_page_token) = page.finish(names);
        Ok(pb::ListTopicsResponse { names, next_page_token })
    }

    /// A topic and its subscriptions.
    pub async fn get_topic_info(&self, req: pb::GetTopicInfoRequest) -> ExoResult<pb::GetTopicInfoResponse> {
        let name = self.topic_name(&req.name, "name")?;
        self.topics_offered()?;
        Ok(pb::GetTopicInfoResponse {
            info: Some(self.backend().topic_info(ops::TopicInfo { topic: &name }).await?),
        })
    }

    /// Subscribes a queue (created first when `create_queue` options are given). Everything is
    /// checked before the queue is created, so a refused request creates nothing.
    pub async fn create_subscription(
        &self,
        req: pb::CreateSubscriptionRequest,
    ) -> ExoResult<pb::CreateSubscriptionResponse> {
        let topic = self.topic_name(&req.topic, "topic")?;
        let name = self.subscription_name(&req.name, "name")?;
        let queue = QueueName::parse("queue", &req.queue, "queue").map_err(|e| self.with_backend_name(e))?;
        let filter =
            Filter::parse(&req.filter).map_err(|e| self.with_backend_name(e.with_resource(name.as_str())))?;
        self.topics_offered()?;
        let subscription = pb::Subscription {
            name: name.to_string(),
            queue: queue.to_string(),
            filter: filter.canonical(),
            created_at_ms: 0,
        };
        if let Some(options) = req.create_queue {
            let options = normalize_options(self.backend().descriptor(), &queue, options)
                .map_err(|e| self.with_backend_name(e.with_resource(queue.as_str())))?;
            // Refusals that do not depend on the queue come first: no queue is made for a
            // subscription that cannot be.
            let info = self.backend().topic_info(ops::TopicInfo { topic: &topic }).await?;
            if let Some(existing) = info.subscriptions.iter().find(|s| s.name == subscription.name)
                && !crate::model::same_subscription(existing, &subscription)
            {
                return Err(subscription_conflict(topic.as_str(), existing, &subscription));
            }
            let new = !info.subscriptions.iter().any(|s| s.name == subscription.name);
            if new && info.subscriptions.len() >= self.backend().topic_limits().max_subscriptions as usize {
                return Err(too_many_subscriptions(topic.as_str()));
            }
            self.backend().create_queue(ops::CreateQueue { queue: &queue, options: &options }).await?;
        }
        let (created, subscription) = self
            .backend()
            .create_subscription(ops::CreateSubscription { topic: &topic, subscription: &subscription })
            .await?;
        Ok(pb::CreateSubscriptionResponse { created, subscription: Some(subscription) })
    }

    /// Deletes a subscription; its queue stays.
    pub async fn delete_subscription(
        &self,
        req: pb::DeleteSubscriptionRequest,
    ) -> ExoResult<pb::DeleteSubscriptionResponse> {
        let topic = self.topic_name(&req.topic, "topic")?;
        let name = self.subscription_name(&req.name, "name")?;
        self.topics_offered()?;
        self.backend()
            .delete_subscription(ops::DeleteSubscription { topic: &topic, subscription: &name })
            .await?;
        Ok(pb::DeleteSubscriptionResponse {})
    }

    /// Publishes one message.
    pub async fn publish(&self, req: pb::PublishRequest) -> ExoResult<pb::PublishResponse> {
        let topic = self.topic_name(&req.topic, "topic")?;
        let limits = self.topics_offered()?;
        let message = req
            .message
            .ok_or_else(|| ExoError::invalid_argument("message", "message is required"))
            .and_then(|m| check_published(&limits, m, "message"))
            .map_err(|e| self.with_backend_name(e.with_resource(topic.as_str())))?;
        let mut results =
            self.backend().publish(ops::Publish { topic: &topic, messages: vec![message] }).await?;
        let Published { publish_id, deliveries } = results
            .pop()
            .ok_or_else(|| ExoError::internal("backend returned no publish result"))?
            .map_err(|e| self.with_backend_name(e))?;
        Ok(pb::PublishResponse { publish_id, deliveries })
    }

    /// Publishes a batch: every entry is validated on its own; the valid ones are published together.
    pub async fn publish_batch(&self, req: pb::PublishBatchRequest) -> ExoResult<pb::PublishBatchResponse> {
        let topic = self.topic_name(&req.topic, "topic")?;
        let limits = self.topics_offered()?;
        let entries = req.entries.into_iter().map(|e| (e.id, e.message));
        let batch = BatchEntries::check(entries, limits.max_batch_entries, |m, field| {
            check_published(&limits, m, field)
        })
        .map_err(|e| self.with_backend_name(e))?;
        let mut results: Vec<pb::PublishBatchResult> = batch
            .ids
            .into_iter()
            .zip(batch.refused)
            .map(|(id, refused)| pb::PublishBatchResult {
                id,
                outcome: refused.as_ref().map(entry_error),
                deliveries: 0,
            })
            .collect();
        let (valid, valid_at) = (batch.valid, batch.valid_at);
        if !valid.is_empty() {
            // The topic itself at fault (missing, unreachable) fails the whole call.
            let published = self.backend().publish(ops::Publish { topic: &topic, messages: valid }).await?;
            for (slot, outcome) in valid_at.iter().zip(published) {
                let result = &mut results[*slot];
                match outcome {
                    Ok(Published { publish_id, deliveries }) => {
                        result.outcome = Some(pb::publish_batch_result::Outcome::PublishId(publish_id));
                        result.deliveries = deliveries;
                    }
                    Err(err) => result.outcome = Some(entry_error(&err)),
                }
            }
        }
        Ok(pb::PublishBatchResponse { results })
    }
}

fn entry_error(err: &ExoError) -> pb::publish_batch_result::Outcome {
    pb::publish_batch_result::Outcome::Error(pb::EntryError {
        reason: err.reason.as_str_name().to_owned(),
        message: err.message.clone(),
        retryable: err.retryable,
    })
}

/// A published message against the topic limits (which leave room for the copy's own attributes),
/// carrying the publish's trace context where it fits (as a send does), so each subscriber's
/// receive links to the publish.
fn check_published(
    limits: &pb::TopicLimits,
    message: pb::PublishedMessage,
    field: &str,
) -> ExoResult<pb::PublishedMessage> {
    let mut message = check_published_contents(limits, message, field)?;
    crate::api::add_traceparent(
        &message.body,
        &mut message.attributes,
        limits.max_attributes,
        limits.max_message_bytes,
    );
    Ok(message)
}

fn check_published_contents(
    limits: &pb::TopicLimits,
    message: pb::PublishedMessage,
    field: &str,
) -> ExoResult<pb::PublishedMessage> {
    check_contents(limits.max_message_bytes, limits.max_attributes, &message.body, &message.attributes, field)
        .map_err(|err| {
            if err.reason == ErrorReason::MessageTooLarge {
                ExoError::new(
                    ErrorReason::MessageTooLarge,
                    format!(
                        "{} (a published message leaves {} bytes of the queues' limit to the attributes each copy gets)",
                        err.message,
                        crate::model::TOPIC_ENVELOPE_BYTES
                    ),
                )
                .with_field(err.field.clone())
            } else {
                err
            }
        })?;
    Ok(message)
}
