//! Push delivery (Dapr-style): for a subscription with `push:` in the config, the proxy reads
//! the subscription's queue and POSTs each message to the app's endpoint as an
//! `exo.queue.v1.PushedMessage` (JSON). A 2xx answer acknowledges the message; any other answer,
//! or none within the timeout, leaves it for redelivery after a back-off (its dequeue count
//! grows, and the queue's dead-letter settings apply as for any consumer). At most
//! `concurrency` POSTs are in flight per subscription.
//!
//! The endpoint comes only from the proxy's own config (loopback, checked when it loads), never
//! from a caller: no request can make the proxy send anywhere.

use std::{sync::Arc, time::Duration};

use exo_proto::queue::v1 as pb;
use tokio::sync::Semaphore;

use crate::{
    api::QueueApi,
    config::PushConfig,
    model::{Capability, PUBLISH_ID_ATTRIBUTE},
};

/// Longest wait of one receive for messages to push.
const POLL_WAIT: u32 = 20;
/// Longest back-off before a refused message is offered again.
const MAX_BACKOFF_SECONDS: u32 = 60;

/// One push subscription's delivery loop.
pub struct PushDelivery {
    api: QueueApi,
    topic: String,
    subscription: String,
    queue: String,
    settings: PushConfig,
    http: reqwest::Client,
}

impl PushDelivery {
    /// A loop pushing `queue`'s messages (of `topic`'s `subscription`) per `settings`.
    pub fn new(api: QueueApi, topic: &str, subscription: &str, queue: &str, settings: PushConfig) -> Self {
        // Loopback only: no proxy settings from the environment may redirect it.
        let http = reqwest::Client::builder().no_proxy().build().unwrap_or_default();
        Self {
            api,
            topic: topic.to_owned(),
            subscription: subscription.to_owned(),
            queue: queue.to_owned(),
            settings,
            http,
        }
    }

    /// Runs until the task is dropped.
    pub async fn run(self) {
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(this.settings.concurrency as usize));
        // Hidden while being pushed: the app's time plus a margin for the ack.
        let visibility = (this.settings.timeout.as_secs() as u32).saturating_add(5);
        let most = this.api.backend().descriptor().limits.max_receive_messages.max(1);
        let long_poll = this.supports(Capability::LongPoll);
        let mut backoff = Duration::from_millis(200);
        loop {
            let Ok(first) = slots.clone().acquire_owned().await else { return };
            let free = 1 + slots.available_permits() as u32;
            let request = pb::ReceiveRequest {
                queue: this.queue.clone(),
                max_messages: free.min(most),
                wait_seconds: if long_poll { POLL_WAIT } else { 0 },
                visibility_timeout_seconds: Some(visibility),
            };
            let messages = match this.api.receive(request).await {
                Ok(response) => {
                    backoff = Duration::from_millis(200);
                    response.messages
                }
                Err(err) => {
                    tracing::warn!(subscription = %this.subscription, queue = %this.queue, error = %err, "push: cannot receive; retrying");
                    drop(first);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            if messages.is_empty() {
                drop(first);
                if !long_poll {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                continue;
            }
            let mut permit = Some(first);
            for message in messages {
                let permit = match permit.take() {
                    Some(p) => p,
                    None => match slots.clone().acquire_owned().await {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                };
                let this = this.clone();
                tokio::spawn(async move {
                    this.deliver(message).await;
                    drop(permit);
                });
            }
        }
    }

    fn supports(&self, capability: Capability) -> bool {
        self.api.backend().descriptor().supports(capability)
    }

    /// POSTs one message; acks it on 2xx, otherwise offers it again after a back-off.
    async fn deliver(&self, mut message: pb::Message) {
        let receipt = std::mem::take(&mut message.receipt);
        let dequeue_count = message.dequeue_count;
        let publish_id = message.attributes.get(PUBLISH_ID_ATTRIBUTE).cloned().unwrap_or_default();
        let envelope = pb::PushedMessage {
            topic: self.topic.clone(),
            subscription: self.subscription.clone(),
            queue: self.queue.clone(),
            message: Some(message),
        };
        let answer = self
            .http
            .post(&self.settings.url)
            .timeout(self.settings.timeout)
            .header("x-exo-publish-id", publish_id)
            .json(&envelope)
            .send()
            .await;
        let refused = match answer {
            Ok(response) if response.status().is_success() => None,
            Ok(response) => Some(format!("the app answered {}", response.status())),
            Err(err) if err.is_timeout() => Some(format!("no answer within {:?}", self.settings.timeout)),
            Err(err) => Some(format!("cannot reach the app: {err}")),
        };
        match refused {
            None => {
                let ack = pb::AckRequest { queue: self.queue.clone(), receipt };
                if let Err(err) = self.api.ack(ack).await {
                    // Delivered; it comes back after its visibility and is pushed again (at least once).
                    tracing::warn!(subscription = %self.subscription, error = %err, "push: delivered but not acked");
                }
            }
            Some(why) => {
                tracing::info!(subscription = %self.subscription, dequeue_count, reason = %why, "push refused; offered again later");
                if self.supports(Capability::ChangeVisibility) {
                    let seconds = 2u32.saturating_pow(dequeue_count.min(6)).min(MAX_BACKOFF_SECONDS);
                    let change = pb::ChangeVisibilityRequest {
                        queue: self.queue.clone(),
                        receipt,
                        visibility_timeout_seconds: seconds,
                    };
                    if let Err(err) = self.api.change_visibility(change).await {
                        tracing::warn!(subscription = %self.subscription, error = %err, "push: cannot schedule the retry; it returns after its visibility");
                    }
                }
            }
        }
    }
}
