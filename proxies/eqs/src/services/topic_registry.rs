//! The topic registry of the backends that keep one themselves (RabbitMQ in its registry
//! stream, NATS in a key-value bucket): a topic with its subscriptions, as stored.

use std::collections::BTreeMap;

use exo_proto::queue::v1 as pb;
use exo_proxy_core::ExoResult;
use serde::{Deserialize, Serialize};

use crate::model::{MAX_SUBSCRIPTIONS, subscription_conflict, too_many_subscriptions};

/// A subscription as a registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredSubscription {
    pub(crate) name: String,
    pub(crate) queue: String,
    pub(crate) filter: String,
    pub(crate) created_at_ms: u64,
}

impl StoredSubscription {
    /// A new subscription, made now.
    pub(crate) fn new(subscription: &pb::Subscription) -> Self {
        Self {
            name: subscription.name.clone(),
            queue: subscription.queue.clone(),
            filter: subscription.filter.clone(),
            created_at_ms: exo_proxy_core::now_ms(),
        }
    }

    /// The subscription in the contract's terms.
    pub(crate) fn contract(&self) -> pb::Subscription {
        pb::Subscription {
            name: self.name.clone(),
            queue: self.queue.clone(),
            filter: self.filter.clone(),
            created_at_ms: self.created_at_ms,
        }
    }
}

/// A topic as a registry keeps it: when it was made, its subscriptions by name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct StoredTopic {
    pub(crate) created_at_ms: u64,
    #[serde(default)]
    pub(crate) subscriptions: BTreeMap<String, StoredSubscription>,
}

impl StoredTopic {
    /// The topic in the contract's terms.
    pub(crate) fn info(&self, name: &str) -> pb::TopicInfo {
        pb::TopicInfo {
            name: name.to_owned(),
            created_at_ms: self.created_at_ms,
            subscriptions: self.subscriptions.values().map(StoredSubscription::contract).collect(),
        }
    }

    /// Whether `requested` may be added to topic `topic`: `Some(existing)` when an identical
    /// subscription is there already, an error when one of its name differs or the topic is
    /// full, `None` to go ahead.
    pub(crate) fn admit(
        &self,
        topic: &str,
        requested: &pb::Subscription,
    ) -> ExoResult<Option<pb::Subscription>> {
        if let Some(found) = self.subscriptions.get(&requested.name) {
            if crate::model::same_subscription(&found.contract(), requested) {
                return Ok(Some(found.contract()));
            }
            return Err(subscription_conflict(topic, &found.contract(), requested));
        }
        if self.subscriptions.len() >= MAX_SUBSCRIPTIONS as usize {
            return Err(too_many_subscriptions(topic));
        }
        Ok(None)
    }
}

/// Up to `limit` of `names` (in order) that start with `prefix` and sort after `start_after`.
pub(crate) fn names_after<'a>(
    names: impl Iterator<Item = &'a String>,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
) -> Vec<String> {
    names
        .filter(|n| n.starts_with(prefix) && start_after.is_none_or(|after| n.as_str() > after))
        .take(limit)
        .cloned()
        .collect()
}
