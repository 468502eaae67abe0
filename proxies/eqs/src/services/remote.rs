//! `remote`: another eqs proxy, reached over gRPC (TLS and a client certificate for `https://`).
//! An edge or app-host proxy forwards each call to a standalone proxy on a VM that holds the
//! real backend.
//!
//! Capabilities and limits are the remote's (asked with Describe when the backend opens); its
//! refusals keep their reason, retryability, field and resource; the caller's deadline travels
//! on as `grpc-timeout`. Requests reach this backend validated against the remote's own limits,
//! and the remote validates them again: a check cannot be skipped by going through an edge.
//! Receipts and page positions are the remote's, passed through unchanged.

use std::sync::Arc;

use async_trait::async_trait;
use exo_proto::{
    common::v1::ErrorReason,
    queue::v1::{
        self as pb, queue_service_client::QueueServiceClient, topic_service_client::TopicServiceClient,
    },
};
use exo_proxy_core::{ExoError, ExoResult, config::ConfigError};
use exo_remote::{
    Described, Description, RemoteConfig, Transport, described, from_status, page_token, request,
};

use crate::ops;
use crate::{
    api::MAX_LIST_PAGE,
    backend::Queue,
    model::{Capability, Descriptor, Published},
};

impl exo_proxy_core::registry::Backend for RemoteQueue {
    type Opened = Arc<dyn Queue>;
    type Context = crate::services::OpenContext;
    type Config = RemoteConfig;

    fn settings(_data: Option<std::path::PathBuf>) -> RemoteConfig {
        RemoteConfig::default()
    }

    fn validate(config: &RemoteConfig) -> Result<(), ConfigError> {
        config.validate()
    }

    fn open<'a>(
        config: &'a RemoteConfig,
        _context: &'a Self::Context,
    ) -> exo_proxy_core::registry::BoxFuture<'a, ExoResult<Self::Opened>> {
        Box::pin(async move {
            let queue: Self::Opened = Arc::new(RemoteQueue::connect(config).await?);
            Ok(queue)
        })
    }
}

/// Queues (and topics) served by another eqs proxy.
pub struct RemoteQueue {
    description: Description<Remote>,
    queues: QueueServiceClient<Transport>,
    topics: TopicServiceClient<Transport>,
    remote: exo_remote::Remote,
    config: RemoteConfig,
}

/// What the remote says it is.
#[derive(Clone)]
struct Remote {
    descriptor: Descriptor,
    topic_limits: Option<pb::TopicLimits>,
}

impl Remote {
    fn from_answer(described: pb::DescribeResponse) -> Self {
        let capabilities =
            described.capabilities.iter().filter_map(|c| Capability::try_from(*c).ok()).collect();
        Self {
            descriptor: Descriptor {
                backend: "remote",
                capabilities,
                limits: described.limits.unwrap_or_default(),
            },
            topic_limits: described.topic_limits,
        }
    }

    /// Until the remote answers: every capability, no limit (see [`Description`]).
    fn provisional() -> Self {
        let most = u32::MAX;
        let limits = pb::Limits {
            max_message_bytes: u64::MAX,
            max_batch_entries: most,
            max_receive_messages: most,
            max_wait_seconds: most,
            max_visibility_timeout_seconds: most,
            max_delay_seconds: most,
            max_attributes: most,
            min_retention_seconds: 0,
            max_retention_seconds: most,
            max_receives_limit: most,
        };
        let descriptor =
            Descriptor { backend: "remote", capabilities: Descriptor::every_capability(), limits };
        Self { descriptor, topic_limits: None }
    }
}

/// Asks the remote to describe itself.
async fn describe(mut client: QueueServiceClient<Transport>, config: RemoteConfig) -> ExoResult<Remote> {
    match described(&config, "eqs", client.describe(pb::DescribeRequest {})).await? {
        Described::Answered(answer) => Ok(Remote::from_answer(answer)),
        Described::Unreachable(err) => Err(err),
    }
}

impl RemoteQueue {
    /// Connects and asks the remote what it is. A remote that cannot be reached yet leaves the
    /// backend open but not ready (see [`Description`]); one that refuses this proxy (TLS,
    /// token, identity) fails the open.
    pub async fn connect(config: &RemoteConfig) -> ExoResult<Self> {
        let remote = config.connect().await?;
        let transport = remote.transport.clone();
        let mut queues = QueueServiceClient::new(transport.clone())
            .max_decoding_message_size(exo_remote::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(exo_remote::MAX_MESSAGE_BYTES);
        let description = match described(config, "eqs", queues.describe(pb::DescribeRequest {})).await? {
            Described::Answered(answer) => {
                tracing::info!(url = %config.url, remote_backend = %answer.backend, "remote eqs described itself");
                Description::answered(Remote::from_answer(answer), &config.url)
            }
            Described::Unreachable(err) => {
                tracing::warn!(url = %config.url, error = %err.message, "remote eqs not reachable yet; not ready until it is");
                Description::provisional(Remote::provisional(), &config.url)
            }
        };
        Ok(Self {
            description,
            queues,
            topics: TopicServiceClient::new(transport.clone())
                .max_decoding_message_size(exo_remote::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(exo_remote::MAX_MESSAGE_BYTES),
            remote,
            config: config.clone(),
        })
    }

    /// Nothing is forwarded before the remote has described itself.
    fn described(&self) -> ExoResult<()> {
        self.description.require(|| describe(self.queues.clone(), self.config.clone()))
    }

    fn queues(&self) -> ExoResult<QueueServiceClient<Transport>> {
        self.described()?;
        Ok(self.queues.clone())
    }

    fn topics(&self) -> ExoResult<TopicServiceClient<Transport>> {
        self.described()?;
        Ok(self.topics.clone())
    }
}

/// Pages through a remote list until `limit` names (or the end), from `start_after`.
async fn list_all<F, Fut>(start_after: Option<&str>, limit: usize, mut page: F) -> ExoResult<Vec<String>>
where
    F: FnMut(String, u32) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<String>, String), tonic::Status>>,
{
    let mut names = Vec::new();
    let mut token = page_token(start_after);
    while names.len() < limit {
        let want = u32::try_from(limit - names.len()).unwrap_or(MAX_LIST_PAGE).min(MAX_LIST_PAGE);
        let (mut got, next) = page(token, want).await.map_err(from_status)?;
        got.truncate(limit - names.len());
        names.append(&mut got);
        if next.is_empty() {
            break;
        }
        token = next;
    }
    Ok(names)
}

/// One entry's error of a batch answer.
fn entry_error(error: Option<pb::EntryError>) -> ExoError {
    let error = error.unwrap_or_default();
    let reason = ErrorReason::from_str_name(&error.reason).unwrap_or(ErrorReason::Internal);
    ExoError::new(reason, format!("remote: {}", error.message)).with_retryable(error.retryable)
}

/// A batch answer that does not hold one result per entry, in order.
fn mismatched(what: &str, sent: usize, got: usize) -> ExoError {
    ExoError::internal(format!("the remote answered {got} results for a {what} of {sent}"))
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Queue for RemoteQueue {
    fn descriptor(&self) -> &Descriptor {
        &self.description.get().descriptor
    }

    fn is_described(&self) -> bool {
        self.description.is_known()
    }

    async fn ready(&self) -> ExoResult<()> {
        self.description.settle(describe(self.queues.clone(), self.config.clone())).await?;
        self.remote.ready("exo.queue.v1.QueueService").await
    }

    async fn create_queue(&self, op: ops::CreateQueue<'_>) -> ExoResult<(bool, pb::QueueInfo)> {
        let ops::CreateQueue { queue: name, options } = op;
        let answer = self
            .queues()?
            .create_queue(request(pb::CreateQueueRequest {
                name: name.to_string(),
                options: Some(options.clone()),
            }))
            .await
            .map_err(from_status)?
            .into_inner();
        Ok((answer.created, answer.info.unwrap_or_default()))
    }

    async fn delete_queue(&self, op: ops::DeleteQueue<'_>) -> ExoResult<()> {
        let ops::DeleteQueue { queue: name } = op;
        self.queues()?
            .delete_queue(request(pb::DeleteQueueRequest { name: name.to_string() }))
            .await
            .map_err(from_status)?;
        Ok(())
    }

    async fn list_queues(&self, op: ops::ListQueues<'_>) -> ExoResult<Vec<String>> {
        let ops::ListQueues { prefix, start_after, limit } = op;
        let client = self.queues()?;
        list_all(start_after, limit, |page_token, page_size| {
            let mut client = client.clone();
            let prefix = prefix.to_owned();
            async move {
                let answer = client
                    .list_queues(request(pb::ListQueuesRequest { prefix, page_size, page_token }))
                    .await?
                    .into_inner();
                Ok((answer.names, answer.next_page_token))
            }
        })
        .await
    }

    async fn queue_info(&self, op: ops::QueueInfo<'_>) -> ExoResult<pb::QueueInfo> {
        let ops::QueueInfo { queue: name } = op;
        let answer = self
            .queues()?
            .get_queue_info(request(pb::GetQueueInfoRequest { name: name.to_string() }))
            .await
            .map_err(from_status)?
            .into_inner();
        Ok(answer.info.unwrap_or_default())
    }

    async fn send(&self, op: ops::Send<'_>) -> ExoResult<Vec<ExoResult<String>>> {
        let ops::Send { queue: name, messages } = op;
        let sent = messages.len();
        if sent == 1 {
            // One message: Send, so the remote's answer is exactly a single send's.
            let message = messages.into_iter().next();
            let answer = self
                .queues()?
                .send(request(pb::SendRequest { queue: name.to_string(), message }))
                .await
                .map_err(from_status)?
                .into_inner();
            return Ok(vec![Ok(answer.message_id)]);
        }
        let entries = messages
            .into_iter()
            .enumerate()
            .map(|(i, message)| pb::SendBatchEntry { id: i.to_string(), message: Some(message) })
            .collect();
        let answer = self
            .queues()?
            .send_batch(request(pb::SendBatchRequest { queue: name.to_string(), entries }))
            .await
            .map_err(from_status)?
            .into_inner();
        if answer.results.len() != sent {
            return Err(mismatched("batch", sent, answer.results.len()));
        }
        Ok(answer
            .results
            .into_iter()
            .map(|result| match result.outcome {
                Some(pb::send_batch_result::Outcome::MessageId(id)) => Ok(id),
                Some(pb::send_batch_result::Outcome::Error(error)) => Err(entry_error(Some(error))),
                None => Err(entry_error(None)),
            })
            .collect())
    }

    async fn receive(&self, op: ops::Receive<'_>) -> ExoResult<Vec<pb::Message>> {
        let ops::Receive { queue: name, params } = op;
        // The wait in whole seconds, as the contract has it (a wait shortened to fit the
        // caller's deadline rounds down).
        let wait_seconds = u32::try_from(params.wait.as_secs()).unwrap_or(u32::MAX);
        let answer = self
            .queues()?
            .receive(request(pb::ReceiveRequest {
                queue: name.to_string(),
                max_messages: params.max_messages,
                wait_seconds,
                visibility_timeout_seconds: params.visibility_seconds,
            }))
            .await
            .map_err(from_status)?
            .into_inner();
        Ok(answer.messages)
    }

    async fn ack(&self, op: ops::Ack<'_>) -> ExoResult<()> {
        let ops::Ack { queue: name, receipt } = op;
        self.queues()?
            .ack(request(pb::AckRequest { queue: name.to_string(), receipt: receipt.to_owned() }))
            .await
            .map_err(from_status)?;
        Ok(())
    }

    async fn change_visibility(&self, op: ops::ChangeVisibility<'_>) -> ExoResult<()> {
        let ops::ChangeVisibility { queue: name, receipt, seconds } = op;
        self.queues()?
            .change_visibility(request(pb::ChangeVisibilityRequest {
                queue: name.to_string(),
                receipt: receipt.to_owned(),
                visibility_timeout_seconds: seconds,
            }))
            .await
            .map_err(from_status)?;
        Ok(())
    }

    async fn purge(&self, op: ops::Purge<'_>) -> ExoResult<()> {
        let ops::Purge { queue: name } = op;
        self.queues()?
            .purge(request(pb::PurgeRequest { queue: name.to_string() }))
            .await
            .map_err(from_status)?;
        Ok(())
    }

    fn topic_limits(&self) -> pb::TopicLimits {
        let remote = self.description.get();
        remote.topic_limits.unwrap_or_else(|| crate::model::topic_limits(&remote.descriptor.limits))
    }

    async fn create_topic(&self, op: ops::CreateTopic<'_>) -> ExoResult<(bool, pb::TopicInfo)> {
        let ops::CreateTopic { topic: name } = op;
        let answer = self
            .topics()?
            .create_topic(request(pb::CreateTopicRequest { name: name.to_string() }))
            .await
            .map_err(from_status)?
            .into_inner();
        Ok((answer.created, answer.info.unwrap_or_default()))
    }

    async fn delete_topic(&self, op: ops::DeleteTopic<'_>) -> ExoResult<()> {
        let ops::DeleteTopic { topic: name } = op;
        self.topics()?
            .delete_topic(request(pb::DeleteTopicRequest { name: name.to_string() }))
            .await
            .map_err(from_status)?;
        Ok(())
    }

    async fn list_topics(&self, op: ops::ListTopics<'_>) -> ExoResult<Vec<String>> {
        let ops::ListTopics { prefix, start_after, limit } = op;
        let client = self.topics()?;
        list_all(start_after, limit, |page_token, page_size| {
            let mut client = client.clone();
            let prefix = prefix.to_owned();
            async move {
                let answer = client
                    .list_topics(request(pb::ListTopicsRequest { prefix, page_size, page_token }))
                    .await?
                    .into_inner();
                Ok((answer.names, answer.next_page_token))
            }
        })
        .await
    }

    async fn topic_info(&self, op: ops::TopicInfo<'_>) -> ExoResult<pb::TopicInfo> {
        let ops::TopicInfo { topic: name } = op;
        let answer = self
            .topics()?
            .get_topic_info(request(pb::GetTopicInfoRequest { name: name.to_string() }))
            .await
            .map_err(from_status)?
            .into_inner();
        Ok(answer.info.unwrap_or_default())
    }

    async fn create_subscription(
        &self,
        op: ops::CreateSubscription<'_>,
    ) -> ExoResult<(bool, pb::Subscription)> {
        let ops::CreateSubscription { topic, subscription } = op;
        // The queue exists already (the API layer made it when asked to): no create_queue here.
        let answer = self
            .topics()?
            .create_subscription(request(pb::CreateSubscriptionRequest {
                topic: topic.to_string(),
                name: subscription.name.clone(),
                queue: subscription.queue.clone(),
                filter: subscription.filter.clone(),
                create_queue: None,
            }))
            .await
            .map_err(from_status)?
            .into_inner();
        Ok((answer.created, answer.subscription.unwrap_or_default()))
    }

    async fn delete_subscription(&self, op: ops::DeleteSubscription<'_>) -> ExoResult<()> {
        let ops::DeleteSubscription { topic, subscription: name } = op;
        self.topics()?
            .delete_subscription(request(pb::DeleteSubscriptionRequest {
                topic: topic.to_string(),
                name: name.to_string(),
            }))
            .await
            .map_err(from_status)?;
        Ok(())
    }

    async fn publish(&self, op: ops::Publish<'_>) -> ExoResult<Vec<ExoResult<Published>>> {
        let ops::Publish { topic, messages } = op;
        let sent = messages.len();
        if sent == 1 {
            let message = messages.into_iter().next();
            let answer = self
                .topics()?
                .publish(request(pb::PublishRequest { topic: topic.to_string(), message }))
                .await
                .map_err(from_status)?
                .into_inner();
            return Ok(vec![Ok(Published { publish_id: answer.publish_id, deliveries: answer.deliveries })]);
        }
        let entries = messages
            .into_iter()
            .enumerate()
            .map(|(i, message)| pb::PublishBatchEntry { id: i.to_string(), message: Some(message) })
            .collect();
        let answer = self
            .topics()?
            .publish_batch(request(pb::PublishBatchRequest { topic: topic.to_string(), entries }))
            .await
            .map_err(from_status)?
            .into_inner();
        if answer.results.len() != sent {
            return Err(mismatched("publish batch", sent, answer.results.len()));
        }
        Ok(answer
            .results
            .into_iter()
            .map(|result| match result.outcome {
                Some(pb::publish_batch_result::Outcome::PublishId(publish_id)) => {
                    Ok(Published { publish_id, deliveries: result.deliveries })
                }
                Some(pb::publish_batch_result::Outcome::Error(error)) => Err(entry_error(Some(error))),
                None => Err(entry_error(None)),
            })
            .collect())
    }
}
