//! [`QueueClient`]: the app's handle on an eqs proxy.

use std::{collections::HashMap, time::Duration};

use exo_proto::queue::v1::{self as pb, queue_service_client::QueueServiceClient};
use tonic::transport::Channel;

use crate::{Auth, Error, Reason, Result, RetryPolicy, Tls, Transport, channel, retry::unary};

pub use pb::{DescribeResponse as BackendDescription, Message, QueueCapability, QueueInfo, QueueOptions};

/// Environment variable naming the eqs endpoint.
pub const EQS_ENDPOINT_ENV: &str = "EXO_EQS_ENDPOINT";
/// Where the eqs sidecar listens unless told otherwise.
pub const DEFAULT_EQS_ENDPOINT: &str = "http://127.0.0.1:7401";

/// A message to send: body plus optional attributes and delay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outgoing {
    /// Opaque bytes.
    pub body: Vec<u8>,
    /// String attributes.
    pub attributes: HashMap<String, String>,
    /// Overrides the queue's delay.
    pub delay: Option<Duration>,
}

impl Outgoing {
    /// A message with just a body.
    pub fn new(body: impl Into<Vec<u8>>) -> Self {
        Self { body: body.into(), ..Self::default() }
    }

    /// Adds an attribute.
    pub fn attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(name.into(), value.into());
        self
    }

    /// Delays delivery (whole seconds).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    fn into_proto(self) -> pb::OutgoingMessage {
        pb::OutgoingMessage {
            body: self.body,
            attributes: self.attributes,
            delay_seconds: self.delay.map(|d| d.as_secs().min(u64::from(u32::MAX)) as u32),
        }
    }
}

/// How to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receive {
    /// At most this many messages.
    pub max_messages: u32,
    /// Wait up to this long for a first message (whole seconds, at most 20 s).
    pub wait: Duration,
    /// Hide received messages this long instead of the queue's default.
    pub visibility: Option<Duration>,
}

impl Default for Receive {
    fn default() -> Self {
        Self { max_messages: 1, wait: Duration::ZERO, visibility: None }
    }
}

impl Receive {
    /// Up to `n` messages, no wait.
    pub fn up_to(n: u32) -> Self {
        Self { max_messages: n, ..Self::default() }
    }

    /// Long-polls up to `wait`.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Overrides the visibility timeout.
    pub fn visibility(mut self, visibility: Duration) -> Self {
        self.visibility = Some(visibility);
        self
    }
}

/// A client of the eqs queue proxy. Cheap to clone; clones share one connection.
///
/// Calls are retried with backoff when the proxy says a retry can help (see [`RetryPolicy`]).
/// Delivery is at-least-once: a send retried after a timeout may enqueue the message twice,
/// so consumers should be idempotent.
#[derive(Debug, Clone)]
pub struct QueueClient {
    inner: QueueServiceClient<Transport>,
    channel: Channel,
    retry: RetryPolicy,
}

impl QueueClient {
    /// A client for the proxy at `url` (e.g. `http://127.0.0.1:7401`). Connects lazily, so this
    /// never blocks; an unreachable proxy shows up as a retryable error on the first call.
    pub fn connect(url: &str) -> Result<Self> {
        Self::connect_with_tls(url, &Tls::from_env())
    }

    /// [`Self::connect`] with explicit TLS settings for an `https://` endpoint (`connect` reads
    /// them from `$EXO_CA_FILE`, `$EXO_CLIENT_CERT_FILE`, `$EXO_CLIENT_KEY_FILE`).
    pub fn connect_with_tls(url: &str, tls: &Tls) -> Result<Self> {
        let channel = channel(url, tls)?;
        Ok(Self {
            inner: queue_client(channel.clone(), Auth::none()),
            channel,
            retry: RetryPolicy::default(),
        })
    }

    /// A client for `$EXO_EQS_ENDPOINT`, or the sidecar default `http://127.0.0.1:7401`.
    pub fn from_env() -> Result<Self> {
        let client = {
            let url = std::env::var(EQS_ENDPOINT_ENV).unwrap_or_else(|_| DEFAULT_EQS_ENDPOINT.to_owned());
            Self::connect(&url)
        };
        client?.with_auth(Auth::from_env()?)
    }

    /// Sends `auth` (e.g. [`Auth::bearer`]) with every call; `from_env` reads `$EXO_PROXY_TOKEN`.
    pub fn with_auth(mut self, auth: Auth) -> Result<Self> {
        self.inner = queue_client(self.channel.clone(), auth);
        Ok(self)
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The generated gRPC client, for calls this wrapper does not cover.
    pub fn raw(&self) -> QueueServiceClient<Transport> {
        self.inner.clone()
    }

    /// The backend's name, capabilities and limits.
    pub async fn describe(&self) -> Result<BackendDescription> {
        unary(&self.retry, &self.inner, pb::DescribeRequest {}, |mut c, r| async move { c.describe(r).await })
            .await
    }

    /// Creates a queue (idempotent for identical options). Returns whether it was created.
    pub async fn create_queue(&self, name: &str, options: QueueOptions) -> Result<(bool, QueueInfo)> {
        let req = pb::CreateQueueRequest { name: name.to_owned(), options: Some(options) };
        let response =
            unary(&self.retry, &self.inner, req, |mut c, r| async move { c.create_queue(r).await }).await?;
        Ok((response.created, response.info.unwrap_or_default()))
    }

    /// Deletes a queue and its messages.
    pub async fn delete_queue(&self, name: &str) -> Result<()> {
        let req = pb::DeleteQueueRequest { name: name.to_owned() };
        unary(&self.retry, &self.inner, req, |mut c, r| async move { c.delete_queue(r).await })
            .await
            .map(|_| ())
    }

    /// One page of queue names.
    pub async fn list_queues_page(
        &self,
        prefix: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<String>, String)> {
        let req =
            pb::ListQueuesRequest { prefix: prefix.to_owned(), page_size, page_token: page_token.to_owned() };
        let response =
            unary(&self.retry, &self.inner, req, |mut c, r| async move { c.list_queues(r).await }).await?;
        Ok((response.names, response.next_page_token))
    }

    /// Every queue name with `prefix`, following pages.
    pub async fn list_queues(&self, prefix: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut token = String::new();
        loop {
            let (page, next) = self.list_queues_page(prefix, 0, &token).await?;
            names.extend(page);
            if next.is_empty() {
                return Ok(names);
            }
            token = next;
        }
    }

    /// A queue's options and approximate counts.
    pub async fn queue_info(&self, name: &str) -> Result<QueueInfo> {
        let req = pb::GetQueueInfoRequest { name: name.to_owned() };
        let response =
            unary(&self.retry, &self.inner, req, |mut c, r| async move { c.get_queue_info(r).await }).await?;
        response.info.ok_or_else(|| Error::client(Reason::Internal, "proxy returned no queue info", false))
    }

    /// Sends a body; returns the message id.
    pub async fn send(&self, queue: &str, body: impl Into<Vec<u8>>) -> Result<String> {
        self.send_message(queue, Outgoing::new(body)).await
    }

    /// Sends a message with attributes or delay; returns the message id.
    pub async fn send_message(&self, queue: &str, message: Outgoing) -> Result<String> {
        let req = pb::SendRequest { queue: queue.to_owned(), message: Some(message.into_proto()) };
        unary(&self.retry, &self.inner, req, |mut c, r| async move { c.send(r).await })
            .await
            .map(|r| r.message_id)
    }

    /// Sends many messages; one result per message, in order. Entries fail on their own.
    pub async fn send_batch(&self, queue: &str, messages: Vec<Outgoing>) -> Result<Vec<Result<String>>> {
        let entries = messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| pb::SendBatchEntry { id: i.to_string(), message: Some(m.into_proto()) })
            .collect();
        let req = pb::SendBatchRequest { queue: queue.to_owned(), entries };
        let response =
            unary(&self.retry, &self.inner, req, |mut c, r| async move { c.send_batch(r).await }).await?;
        Ok(response
            .results
            .into_iter()
            .map(|result| match result.outcome {
                Some(pb::send_batch_result::Outcome::MessageId(id)) => Ok(id),
                Some(pb::send_batch_result::Outcome::Error(err)) => Err(Error {
                    reason: Reason::from_str_name(&err.reason).unwrap_or(Reason::Internal),
                    message: err.message,
                    backend: String::new(),
                    retryable: err.retryable,
                    field: String::new(),
                    resource: queue.to_owned(),
                    code: tonic::Code::Unknown,
                    retry_after: None,
                }),
                None => Err(Error::client(Reason::Internal, "proxy returned an empty batch result", false)),
            })
            .collect())
    }

    /// Receives messages; each stays hidden until acked or its visibility timeout runs out.
    pub async fn receive(&self, queue: &str, options: Receive) -> Result<Vec<Message>> {
        let req = pb::ReceiveRequest {
            queue: queue.to_owned(),
            max_messages: options.max_messages,
            wait_seconds: options.wait.as_secs().min(u64::from(u32::MAX)) as u32,
            visibility_timeout_seconds: options
                .visibility
                .map(|v| v.as_secs().min(u64::from(u32::MAX)) as u32),
        };
        let response =
            unary(&self.retry, &self.inner, req, |mut c, r| async move { c.receive(r).await }).await?;
        Ok(response.messages)
    }

    /// Acknowledges (deletes) a received message.
    pub async fn ack(&self, queue: &str, receipt: &str) -> Result<()> {
        let req = pb::AckRequest { queue: queue.to_owned(), receipt: receipt.to_owned() };
        unary(&self.retry, &self.inner, req, |mut c, r| async move { c.ack(r).await }).await.map(|_| ())
    }

    /// Sets a received message's remaining visibility (zero releases it now).
    pub async fn change_visibility(&self, queue: &str, receipt: &str, visibility: Duration) -> Result<()> {
        let req = pb::ChangeVisibilityRequest {
            queue: queue.to_owned(),
            receipt: receipt.to_owned(),
            visibility_timeout_seconds: visibility.as_secs().min(u64::from(u32::MAX)) as u32,
        };
        unary(&self.retry, &self.inner, req, |mut c, r| async move { c.change_visibility(r).await })
            .await
            .map(|_| ())
    }

    /// Deletes every message in a queue.
    pub async fn purge(&self, queue: &str) -> Result<()> {
        let req = pb::PurgeRequest { queue: queue.to_owned() };
        unary(&self.retry, &self.inner, req, |mut c, r| async move { c.purge(r).await }).await.map(|_| ())
    }
}

/// The generated client with no cap on what it decodes: a receive of large messages (the
/// LARGE_MESSAGES capability) may carry up to `max_receive_messages` × `max_message_bytes`,
/// and the proxy already bounds what it sends.
fn queue_client(channel: tonic::transport::Channel, auth: Auth) -> QueueServiceClient<Transport> {
    QueueServiceClient::new(crate::transport(channel, auth)).max_decoding_message_size(usize::MAX)
}
