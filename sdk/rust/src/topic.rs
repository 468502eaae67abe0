//! [`TopicClient`]: publish once, every subscription gets its own copy (eqs's `TopicService`).
//!
//! A subscription delivers into an ordinary queue, read with [`crate::QueueClient::receive`] and
//! acked as any other; each delivered copy carries the published body and attributes plus
//! [`TOPIC_ATTRIBUTE`] and [`PUBLISH_ID_ATTRIBUTE`] (the same on every copy of one publish, so a
//! consumer can drop duplicates).

use exo_proto::queue::v1::{self as pb, topic_service_client::TopicServiceClient};
use tonic::transport::Channel;

use crate::{
    Auth, DEFAULT_EQS_ENDPOINT, EQS_ENDPOINT_ENV, Error, Outgoing, QueueOptions, Reason, Result, RetryPolicy,
    Tls, Transport, channel, retry::unary,
};

pub use pb::{PushedMessage, Subscription, TopicInfo, TopicLimits};

/// Decodes what push delivery POSTs to the app's endpoint (a push subscription in the eqs
/// config). Answer 2xx once it is handled; anything else has it delivered again later.
///
/// ```no_run
/// # fn handle(request_body: &[u8]) -> Result<(), exo_sdk::Error> {
/// let pushed = exo_sdk::decode_pushed(request_body)?;
/// let message = pushed.message.unwrap_or_default();
/// println!("{} from topic {}: {} bytes", message.message_id, pushed.topic, message.body.len());
/// # Ok(()) }
/// ```
pub fn decode_pushed(body: &[u8]) -> Result<PushedMessage> {
    serde_json::from_slice(body)
        .map_err(|err| Error::client(Reason::MalformedRequest, format!("not a pushed message: {err}"), false))
}

/// Attribute of every delivered copy: the topic's name.
pub const TOPIC_ATTRIBUTE: &str = "exo.topic";
/// Attribute of every delivered copy: the publish id (the same on every copy of one publish).
pub const PUBLISH_ID_ATTRIBUTE: &str = "exo.publish-id";

/// One published message's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The id each copy carries in [`PUBLISH_ID_ATTRIBUTE`].
    pub publish_id: String,
    /// How many subscriptions got a copy (those whose filter matched).
    pub deliveries: u32,
}

/// A client of eqs's topics. Cheap to clone; clones share one connection (and may share it with
/// a [`crate::QueueClient`] of the same proxy).
///
/// A publish retried after a timeout may be delivered twice; copies of one publish share a
/// publish id, so consumers can tell.
#[derive(Debug, Clone)]
pub struct TopicClient {
    inner: TopicServiceClient<Transport>,
    channel: Channel,
    retry: RetryPolicy,
}

impl TopicClient {
    /// A client for the eqs proxy at `url`; connects lazily.
    pub fn connect(url: &str) -> Result<Self> {
        Self::connect_with_tls(url, &Tls::from_env())
    }

    /// [`Self::connect`] with explicit TLS settings for an `https://` endpoint.
    pub fn connect_with_tls(url: &str, tls: &Tls) -> Result<Self> {
        let channel = channel(url, tls)?;
        Ok(Self {
            inner: TopicServiceClient::new(crate::transport(channel.clone(), Auth::none())),
            channel,
            retry: RetryPolicy::default(),
        })
    }

    /// A client for `$EXO_EQS_ENDPOINT`, or the sidecar default `http://127.0.0.1:7401`, with
    /// the token in `$EXO_PROXY_TOKEN` if set.
    pub fn from_env() -> Result<Self> {
        let url = std::env::var(EQS_ENDPOINT_ENV).unwrap_or_else(|_| DEFAULT_EQS_ENDPOINT.to_owned());
        Self::connect(&url)?.with_auth(Auth::from_env()?)
    }

    /// Sends `auth` with every call.
    pub fn with_auth(mut self, auth: Auth) -> Result<Self> {
        self.inner = TopicServiceClient::new(crate::transport(self.channel.clone(), auth));
        Ok(self)
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The generated gRPC client, for calls this wrapper does not cover.
    pub fn raw(&self) -> TopicServiceClient<Transport> {
        self.inner.clone()
    }

    /// Creates a topic (idempotent). Returns whether it was created.
    pub async fn create_topic(&self, name: &str) -> Result<bool> {
        let req = pb::CreateTopicRequest { name: name.to_owned() };
        unary(&self.retry, &self.inner, req, |mut c, r| async move { c.create_topic(r).await })
            .await
            .map(|r| r.created)
    }

    /// Deletes a topic and its subscriptions; their queues and messages stay.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let req = pb::DeleteTopicRequest { name: name.to_owned() };
        unary(&self.retry, &self.inner, req, |mut c, r| async move { c.delete_topic(r).await })
            .await
            .map(|_| ())
    }

    /// Every topic name with `prefix`, following pages.
    pub async fn list_topics(&self, prefix: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut page_token = String::new();
        loop {
            let req = pb::ListTopicsRequest { prefix: prefix.to_owned(), page_size: 0, page_token };
            let page = unary(&self.retry, &self.inner, req, |mut c, r| async move { c.list_topics(r).await })
                .await?;
            names.extend(page.names);
            if page.next_page_token.is_empty() {
                return Ok(names);
            }
            page_token = page.next_page_token;
        }
    }

    /// A topic and its subscriptions.
    pub async fn topic_info(&self, name: &str) -> Result<TopicInfo> {
        let req = pb::GetTopicInfoRequest { name: name.to_owned() };
        let response =
            unary(&self.retry, &self.inner, req, |mut c, r| async move { c.get_topic_info(r).await }).await?;
        response.info.ok_or_else(|| Error::client(Reason::Internal, "proxy returned no topic info", false))
    }

    /// Subscribes `queue` to `topic` as `name`, with a filter (empty: every message; see
    /// [`Subscription::filter`] for the language). With `create_queue`, the queue is created
    /// with those options if missing. Idempotent for identical settings.
    pub async fn subscribe(
        &self,
        topic: &str,
        name: &str,
        queue: &str,
        filter: &str,
        create_queue: Option<QueueOptions>,
    ) -> Result<(bool, Subscription)> {
        let req = pb::CreateSubscriptionRequest {
            topic: topic.to_owned(),
            name: name.to_owned(),
            queue: queue.to_owned(),
            filter: filter.to_owned(),
            create_queue,
        };
        let response =
            unary(&self.retry, &self.inner, req, |mut c, r| async move { c.create_subscription(r).await })
                .await?;
        let subscription = response
            .subscription
            .ok_or_else(|| Error::client(Reason::Internal, "proxy returned no subscription", false))?;
        Ok((response.created, subscription))
    }

    /// Deletes a subscription; its queue stays.
    pub async fn unsubscribe(&self, topic: &str, name: &str) -> Result<()> {
        let req = pb::DeleteSubscriptionRequest { topic: topic.to_owned(), name: name.to_owned() };
        unary(&self.retry, &self.inner, req, |mut c, r| async move { c.delete_subscription(r).await })
            .await
            .map(|_| ())
    }

    /// Publishes a message (body and attributes; a published message takes no delay).
    pub async fn publish(&self, topic: &str, message: Outgoing) -> Result<Published> {
        let req = pb::PublishRequest { topic: topic.to_owned(), message: Some(published(message)?) };
        let response =
            unary(&self.retry, &self.inner, req, |mut c, r| async move { c.publish(r).await }).await?;
        Ok(Published { publish_id: response.publish_id, deliveries: response.deliveries })
    }

    /// Publishes many messages; one result per message, in order. Entries fail on their own.
    pub async fn publish_batch(
        &self,
        topic: &str,
        messages: Vec<Outgoing>,
    ) -> Result<Vec<Result<Published>>> {
        let entries = messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| Ok(pb::PublishBatchEntry { id: i.to_string(), message: Some(published(m)?) }))
            .collect::<Result<Vec<_>>>()?;
        let req = pb::PublishBatchRequest { topic: topic.to_owned(), entries };
        let response =
            unary(&self.retry, &self.inner, req, |mut c, r| async move { c.publish_batch(r).await }).await?;
        Ok(response
            .results
            .into_iter()
            .map(|result| match result.outcome {
                Some(pb::publish_batch_result::Outcome::PublishId(publish_id)) => {
                    Ok(Published { publish_id, deliveries: result.deliveries })
                }
                Some(pb::publish_batch_result::Outcome::Error(err)) => Err(Error {
                    reason: Reason::from_str_name(&err.reason).unwrap_or(Reason::Internal),
                    message: err.message,
                    backend: String::new(),
                    retryable: err.retryable,
                    field: String::new(),
                    resource: topic.to_owned(),
                    code: tonic::Code::Unknown,
                    retry_after: None,
                }),
                None => Err(Error::client(Reason::Internal, "proxy returned an empty batch result", false)),
            })
            .collect())
    }
}

fn published(message: Outgoing) -> Result<pb::PublishedMessage> {
    if message.delay.is_some() {
        return Err(Error::client(
            Reason::InvalidArgument,
            "a published message takes no delay: give the subscription's queue a delay instead",
            false,
        ));
    }
    Ok(pb::PublishedMessage { body: message.body, attributes: message.attributes })
}
