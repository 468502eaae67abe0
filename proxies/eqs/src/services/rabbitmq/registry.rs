//! The registry stream: what AMQP cannot report (queue options, topics, subscriptions), one
//! record per change, replayed by every proxy at start and followed.

use super::*;

/// One registry record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub(super) enum Record {
    Create {
        name: String,
        options: StoredOptions,
        created_at_ms: u64,
    },
    Delete {
        name: String,
    },
    /// Published by a proxy at start: seeing it back means the replay has caught up.
    Mark {
        id: String,
    },
    TopicCreate {
        name: String,
        created_at_ms: u64,
    },
    TopicDelete {
        name: String,
    },
    SubscriptionCreate {
        topic: String,
        subscription: StoredSubscription,
    },
    SubscriptionDelete {
        topic: String,
        name: String,
    },
}

/// The queues and topics the registry holds, as replayed.
#[derive(Default)]
pub(super) struct Registry {
    pub(super) queues: BTreeMap<String, (StoredOptions, u64)>,
    pub(super) topics: BTreeMap<String, StoredTopic>,
    pub(super) marks: HashSet<String>,
}

impl Registry {
    pub(super) fn apply(&mut self, record: Record) {
        match record {
            Record::Create { name, options, created_at_ms } => {
                self.queues.insert(name, (options, created_at_ms));
            }
            Record::Delete { name } => {
                // A subscription goes with its queue.
                for topic in self.topics.values_mut() {
                    topic.subscriptions.retain(|_, s| s.queue != name);
                }
                self.queues.remove(&name);
            }
            Record::Mark { id } => {
                self.marks.insert(id);
            }
            // The first record of a name wins: a later one for an existing name changes nothing.
            Record::TopicCreate { name, created_at_ms } => {
                self.topics
                    .entry(name)
                    .or_insert(StoredTopic { created_at_ms, subscriptions: BTreeMap::new() });
            }
            Record::TopicDelete { name } => {
                self.topics.remove(&name);
            }
            Record::SubscriptionCreate { topic, subscription } => {
                if let Some(topic) = self.topics.get_mut(&topic) {
                    topic.subscriptions.entry(subscription.name.clone()).or_insert(subscription);
                }
            }
            Record::SubscriptionDelete { topic, name } => {
                if let Some(topic) = self.topics.get_mut(&topic) {
                    topic.subscriptions.remove(&name);
                }
            }
        }
    }
}

/// One connection and the channels on it; replaced as a whole when the connection fails. The
/// publishing channel alone is replaced when the broker closed it (a refused publish closes
/// the channel, not the connection).
pub(super) struct Link {
    pub(super) connection: Connection,
    pub(super) publisher: Mutex<Channel>,
    /// The registry on this connection: followed (its follower task), or down since when and
    /// why. Queues are served either way; what needs the registry says why it cannot.
    pub(super) registry: Mutex<RegistryLink>,
}

/// The queue registry's state on one connection.
pub(super) enum RegistryLink {
    /// Replayed and followed by this task.
    Following(tokio::task::JoinHandle<()>),
    /// Could not be declared, followed or replayed: tried again after [`REGISTRY_RETRY`].
    Down(Instant, ExoError),
}

/// How long a registry that could not be followed is left before the next call needing it
/// tries again (meanwhile such calls fail at once with the reason).
pub(super) const REGISTRY_RETRY: Duration = Duration::from_secs(2);

impl Link {
    /// The publishing channel as it is now (possibly closed: see [`RabbitMqQueue::link`]).
    pub(super) fn publisher(&self) -> Channel {
        self.publisher.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Ok(RegistryLink::Following(follower)) = self.registry.get_mut().map(|r| &*r) {
            follower.abort();
        }
    }
}

/// Replays the registry stream from its start and follows it.
pub(super) async fn follow_registry(
    channel: Channel,
    stream: String,
    registry: Arc<Mutex<Registry>>,
    arrived: Arc<tokio::sync::Notify>,
) {
    let mut arguments = FieldTable::default();
    arguments.insert("x-stream-offset".into(), AMQPValue::LongString("first".into()));
    let consumer = channel
        .basic_consume(
            stream.as_str().into(),
            "exo-registry".into(),
            BasicConsumeOptions::default(),
            arguments,
        )
        .await;
    let mut consumer = match consumer {
        Ok(consumer) => consumer,
        Err(err) => {
            tracing::warn!(error = %err, "rabbitmq: cannot follow the queue registry");
            return;
        }
    };
    if let Ok(mut registry) = registry.lock() {
        registry.queues.clear();
    }
    while let Some(delivery) = consumer.next().await {
        let Ok(delivery) = delivery else { break };
        match serde_json::from_slice::<Record>(&delivery.data) {
            Ok(record) => {
                if let Ok(mut registry) = registry.lock() {
                    registry.apply(record);
                }
                arrived.notify_waiters();
            }
            Err(err) => tracing::warn!(error = %err, "rabbitmq: skipping a registry record it cannot read"),
        }
        if let Err(err) = delivery.acker.ack(BasicAckOptions::default()).await {
            tracing::debug!(error = %err, "rabbitmq: registry ack");
            break;
        }
    }
}
