//! Failover across an ordered chain of queue backends (see the eqs README, "Failover"): writes go to the first
//! member that answers; receives drain every member, so nothing written before a switch is
//! stranded; receipts remember which member they came from; the primary is tried again as soon
//! as its back-off expires (fail back).

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use exo_proto::{common::v1::ErrorReason, queue::v1 as pb};
use exo_proxy_core::{
    ExoError, ExoResult,
    config::ConfigError,
    failover::{Chain, ChainDescription, is_outage},
    registry::BoxFuture,
};

use crate::ops;
use crate::{
    backend::Queue,
    model::{Descriptor, Published, QueueName, ReceiveParams},
    services::{BackendConfig, OpenContext},
};

/// How often a waiting receive polls the members.
const POLL: Duration = Duration::from_millis(100);

/// The settings of a `failover` chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FailoverConfig {
    /// Members in priority order (at least one).
    pub members: Vec<BackendConfig>,
    /// The deadline of one call to one member (a hung member is set aside after it).
    #[serde(default = "exo_proxy_core::failover::default_member_timeout", with = "humantime_serde")]
    pub member_timeout: Duration,
    /// How long a member that failed with an outage is set aside (each member its own, like a
    /// breaker that opens on the first outage); a probe re-admits it sooner once it answers.
    #[serde(default = "exo_proxy_core::failover::default_member_backoff", with = "humantime_serde")]
    pub member_backoff: Duration,
}

impl exo_proxy_core::registry::Backend for FailoverQueue {
    type Opened = Arc<dyn Queue>;
    type Context = OpenContext;
    type Config = FailoverConfig;

    fn settings(_data: Option<std::path::PathBuf>) -> FailoverConfig {
        FailoverConfig {
            members: Vec::new(),
            member_timeout: exo_proxy_core::failover::MEMBER_TIMEOUT,
            member_backoff: exo_proxy_core::failover::BACKOFF,
        }
    }

    fn validate(config: &FailoverConfig) -> Result<(), ConfigError> {
        if config.members.is_empty() {
            return Err(ConfigError::Invalid("backend.members of a failover chain must not be empty".into()));
        }
        exo_proxy_core::failover::validate_member_settings(config.member_timeout, config.member_backoff)?;
        config.members.iter().try_for_each(BackendConfig::validate)
    }

    /// The largest member's: the API checks each message against the member that takes it.
    fn largest_item(config: &FailoverConfig) -> Option<u64> {
        // The chain's limit is its smallest member's, unknown while any member's is (a `remote`).
        config.members.iter().map(BackendConfig::largest_item).collect::<Option<Vec<_>>>()?.into_iter().min()
    }

    fn open<'a>(
        config: &'a FailoverConfig,
        context: &'a OpenContext,
    ) -> BoxFuture<'a, ExoResult<Self::Opened>> {
        Box::pin(async move {
            let mut opened = Vec::with_capacity(config.members.len());
            for member in &config.members {
                opened.push(member.open(context).await?);
            }
            let opened = observe_members(opened, &context.metrics, config.member_timeout);
            let chain: Self::Opened = Arc::new(
                FailoverQueue::new(opened)?
                    .with_member_timeout(config.member_timeout)
                    .with_member_backoff(config.member_backoff)
                    .probing(),
            );
            Ok(chain)
        })
    }
}

/// Puts each member under its own observation, labelled with its place in the chain
/// (`exo_member_calls_total{member="1",…}`); `ready_timeout` bounds each member's readiness.
pub fn observe_members(
    members: Vec<Arc<dyn Queue>>,
    metrics: &Arc<exo_proxy_core::metrics::Metrics>,
    ready_timeout: Duration,
) -> Vec<Arc<dyn Queue>> {
    let observed = members.into_iter().enumerate().map(|(index, member)| {
        let layer = exo_proxy_core::layers::ObserveMember::new(metrics.clone(), index);
        Arc::new(crate::layers::Layered::new(member, layer, ready_timeout)) as Arc<dyn Queue>
    });
    observed.collect()
}

/// A chain of queue backends behaving as one.
pub struct FailoverQueue {
    chain: Arc<Chain<dyn Queue>>,
    descriptor: ChainDescription<Descriptor>,
}

/// The chain's description from its members': capabilities every member has, the smallest of
/// each limit.
fn combined(members: &[Arc<dyn Queue>]) -> ExoResult<Descriptor> {
    let first =
        members.first().ok_or_else(|| ExoError::internal("a failover chain needs at least one member"))?;
    let mut descriptor = first.descriptor().clone();
    descriptor.backend = exo_proxy_core::failover::CHAIN;
    for m in &members[1..] {
        let d = m.descriptor();
        descriptor.capabilities.retain(|c| d.capabilities.contains(c));
        let (l, o) = (&mut descriptor.limits, d.limits);
        l.max_message_bytes = l.max_message_bytes.min(o.max_message_bytes);
        l.max_batch_entries = l.max_batch_entries.min(o.max_batch_entries);
        l.max_receive_messages = l.max_receive_messages.min(o.max_receive_messages);
        l.max_wait_seconds = l.max_wait_seconds.min(o.max_wait_seconds);
        l.max_visibility_timeout_seconds =
            l.max_visibility_timeout_seconds.min(o.max_visibility_timeout_seconds);
        l.max_delay_seconds = l.max_delay_seconds.min(o.max_delay_seconds);
        l.max_attributes = l.max_attributes.min(o.max_attributes);
        l.min_retention_seconds = l.min_retention_seconds.max(o.min_retention_seconds);
        l.max_retention_seconds = l.max_retention_seconds.min(o.max_retention_seconds);
        l.max_receives_limit = l.max_receives_limit.min(o.max_receives_limit);
    }
    Ok(descriptor)
}

impl FailoverQueue {
    /// Chains `members` in priority order. Capabilities are those every member has; limits the
    /// smallest of each, so a request valid here is valid on whichever member takes it.
    pub fn new(members: Vec<Arc<dyn Queue>>) -> ExoResult<Self> {
        let descriptor = ChainDescription::new(combined(&members)?, members.iter().all(|m| m.is_described()));
        Ok(Self { chain: Arc::new(Chain::new(members)?), descriptor })
    }

    /// Changes the chain's settings (before [`FailoverQueue::probing`] shares it).
    fn reconfigure(mut self, change: impl FnOnce(Chain<dyn Queue>) -> Chain<dyn Queue>) -> Self {
        self.chain = match Arc::try_unwrap(self.chain) {
            Ok(chain) => Arc::new(change(chain)),
            Err(shared) => shared,
        };
        self
    }

    /// Changes the deadline of one call to one member.
    pub fn with_member_timeout(self, timeout: Duration) -> Self {
        self.reconfigure(|chain| chain.with_member_timeout(timeout))
    }

    /// Changes how long a member that failed with an outage is set aside.
    pub fn with_member_backoff(self, backoff: Duration) -> Self {
        self.reconfigure(|chain| chain.with_backoff(backoff))
    }

    /// Probes members in their back-off and re-admits one as soon as it answers (rather than
    /// when its back-off runs out).
    pub fn probing(self) -> Self {
        self.chain.spawn_probe(|q: Arc<dyn Queue>| async move { q.ready().await });
        self
    }

    /// Changes how long a failed member is skipped (tests use a short one).
    pub fn with_backoff(self, backoff: Duration) -> Self {
        self.reconfigure(|chain| chain.with_backoff(backoff))
    }

    fn member_of<'a>(&self, receipt: &'a str) -> ExoResult<(usize, &'a str)> {
        let invalid = || {
            ExoError::new(
                ErrorReason::InvalidReceipt,
                "receipt is not valid: not issued by this failover chain",
            )
            .with_field("receipt")
        };
        let (index, inner) = receipt.split_once('~').ok_or_else(invalid)?;
        let index: usize = index.parse().map_err(|_| invalid())?;
        self.chain.get(index).ok_or_else(invalid)?;
        Ok((index, inner))
    }

    /// Offers `batch` (messages to send or publish) to the available members in order; the first
    /// that answers other than with an outage takes it. A backend consumes the batch even when it
    /// fails, so a copy is kept only while another member could still take it (never for the
    /// last one). A member that timed out may still have stored it: the next gets it too (at
    /// least once; a message may arrive twice, never not at all).
    async fn first_to_take<B, R, F, Fut>(&self, batch: B, offer: F) -> ExoResult<R>
    where
        B: Clone,
        F: Fn(Arc<dyn Queue>, B) -> Fut,
        Fut: std::future::Future<Output = ExoResult<R>>,
    {
        let candidates: Vec<usize> = self.chain.available().map(|(index, _)| index).collect();
        let mut pending = Some(batch);
        let mut last = None;
        for (i, index) in candidates.iter().enumerate() {
            let Some(batch) = pending.take() else { break };
            if i + 1 < candidates.len() {
                pending = Some(batch.clone());
            }
            match self.chain.call(*index, |member| offer(member, batch)).await {
                Err(err) if is_outage(&err) => last = Some(err),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| ExoError::unavailable("every member of the failover chain is down")))
    }

    async fn receive_once(
        &self,
        name: &QueueName,
        max: u32,
        visibility: Option<u32>,
    ) -> ExoResult<Vec<pb::Message>> {
        let mut got = Vec::new();
        let mut reached = false;
        let mut last = None;
        let available: Vec<usize> = self.chain.available().map(|(index, _)| index).collect();
        for index in available {
            let want = max - got.len() as u32;
            if want == 0 {
                break;
            }
            let params =
                ReceiveParams { max_messages: want, wait: Duration::ZERO, visibility_seconds: visibility };
            match self
                .chain
                .call(
                    index,
                    |member| async move { member.receive(ops::Receive { queue: name, params }).await },
                )
                .await
            {
                Ok(messages) => {
                    reached = true;
                    got.extend(messages.into_iter().map(|mut m| {
                        m.receipt = format!("{index}~{}", m.receipt);
                        m
                    }));
                }
                Err(err) => last = Some(err),
            }
        }
        match (reached, last) {
            (false, Some(err)) => Err(err),
            _ => Ok(got),
        }
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Queue for FailoverQueue {
    fn descriptor(&self) -> &Descriptor {
        let members = || self.chain.all().map(|(_, m)| m.clone()).collect::<Vec<_>>();
        self.descriptor.get(|| self.chain.all().all(|(_, m)| m.is_described()), || combined(&members()).ok())
    }
    fn is_described(&self) -> bool {
        // The chain serves (and describes itself) as soon as one member can.
        self.descriptor.is_final() || self.chain.all().any(|(_, m)| m.is_described())
    }
    async fn ready(&self) -> ExoResult<()> {
        self.chain.first(|q| async move { q.ready().await }).await
    }
    async fn create_queue(&self, op: ops::CreateQueue<'_>) -> ExoResult<(bool, pb::QueueInfo)> {
        // Every member gets the queue, so a switch finds it; the primary's answer is the answer.
        let mut results = self.chain.on_every_member(|q| async move { q.create_queue(op).await }).await?;
        Ok(results.swap_remove(0))
    }
    async fn delete_queue(&self, op: ops::DeleteQueue<'_>) -> ExoResult<()> {
        let missing = |e: &ExoError| e.reason == ErrorReason::QueueNotFound;
        self.chain.remove_from_every_member(missing, |q| async move { q.delete_queue(op).await }).await
    }
    async fn list_queues(&self, op: ops::ListQueues<'_>) -> ExoResult<Vec<String>> {
        self.chain.first(|q| async move { q.list_queues(op).await }).await
    }
    async fn queue_info(&self, op: ops::QueueInfo<'_>) -> ExoResult<pb::QueueInfo> {
        // Counts are the sum over every reachable member: messages may sit on any of them.
        let mut info: Option<pb::QueueInfo> = None;
        let mut last = None;
        let available: Vec<usize> = self.chain.available().map(|(index, _)| index).collect();
        for index in available {
            match self.chain.call(index, |member| async move { member.queue_info(op).await }).await {
                Ok(i) => match info.as_mut() {
                    None => info = Some(i),
                    Some(sum) => {
                        sum.visible_messages += i.visible_messages;
                        sum.in_flight_messages += i.in_flight_messages;
                        sum.delayed_messages += i.delayed_messages;
                    }
                },
                Err(err) => last = Some(err),
            }
        }
        info.ok_or_else(|| {
            last.unwrap_or_else(|| ExoError::unavailable("every member of the failover chain is down"))
        })
    }
    async fn send(&self, op: ops::Send<'_>) -> ExoResult<Vec<ExoResult<String>>> {
        let ops::Send { queue: name, messages } = op;
        self.first_to_take(messages, |member, batch| async move {
            member.send(ops::Send { queue: name, messages: batch }).await
        })
        .await
    }
    async fn receive(&self, op: ops::Receive<'_>) -> ExoResult<Vec<pb::Message>> {
        let ops::Receive { queue: name, params } = op;
        let deadline = tokio::time::Instant::now() + params.wait;
        loop {
            let got = self.receive_once(name, params.max_messages, params.visibility_seconds).await?;
            if !got.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(got);
            }
            tokio::time::sleep(POLL.min(deadline - tokio::time::Instant::now())).await;
        }
    }
    async fn ack(&self, op: ops::Ack<'_>) -> ExoResult<()> {
        // Only the member that holds the message can settle it; while it is set aside the
        // answer is UNAVAILABLE at once (retryable), not a wait on its deadline.
        let (index, receipt) = self.member_of(op.receipt)?;
        self.chain.only(index, |member| async move { member.ack(ops::Ack { receipt, ..op }).await }).await
    }
    async fn change_visibility(&self, op: ops::ChangeVisibility<'_>) -> ExoResult<()> {
        let (index, receipt) = self.member_of(op.receipt)?;
        let change = |member: Arc<dyn Queue>| async move {
            member.change_visibility(ops::ChangeVisibility { receipt, ..op }).await
        };
        self.chain.only(index, change).await
    }
    async fn purge(&self, op: ops::Purge<'_>) -> ExoResult<()> {
        self.chain.on_every_member(|q| async move { q.purge(op).await }).await.map(|_| ())
    }
    // Topics and subscriptions exist on every member, so a publish after a switch reaches every
    // subscriber on the member that takes it; the subscribers' receives drain every member.
    fn topic_limits(&self) -> pb::TopicLimits {
        // The smallest of each, so a publish valid here is valid on whichever member takes it.
        let mut members = self.chain.all().map(|(_, m)| m.topic_limits());
        let mut limits = members.next().unwrap_or_default();
        for l in members {
            limits.max_message_bytes = limits.max_message_bytes.min(l.max_message_bytes);
            limits.max_attributes = limits.max_attributes.min(l.max_attributes);
            limits.max_batch_entries = limits.max_batch_entries.min(l.max_batch_entries);
            limits.max_subscriptions = limits.max_subscriptions.min(l.max_subscriptions);
            limits.max_filter_bytes = limits.max_filter_bytes.min(l.max_filter_bytes);
        }
        limits
    }
    async fn create_topic(&self, op: ops::CreateTopic<'_>) -> ExoResult<(bool, pb::TopicInfo)> {
        let mut results = self.chain.on_every_member(|q| async move { q.create_topic(op).await }).await?;
        Ok(results.swap_remove(0))
    }
    async fn delete_topic(&self, op: ops::DeleteTopic<'_>) -> ExoResult<()> {
        let missing = |e: &ExoError| e.reason == ErrorReason::TopicNotFound;
        self.chain.remove_from_every_member(missing, |q| async move { q.delete_topic(op).await }).await
    }
    async fn list_topics(&self, op: ops::ListTopics<'_>) -> ExoResult<Vec<String>> {
        self.chain.first(|q| async move { q.list_topics(op).await }).await
    }
    async fn topic_info(&self, op: ops::TopicInfo<'_>) -> ExoResult<pb::TopicInfo> {
        self.chain.first(|q| async move { q.topic_info(op).await }).await
    }
    async fn create_subscription(
        &self,
        op: ops::CreateSubscription<'_>,
    ) -> ExoResult<(bool, pb::Subscription)> {
        let mut results =
            self.chain.on_every_member(|q| async move { q.create_subscription(op).await }).await?;
        Ok(results.swap_remove(0))
    }
    async fn delete_subscription(&self, op: ops::DeleteSubscription<'_>) -> ExoResult<()> {
        let missing =
            |e: &ExoError| matches!(e.reason, ErrorReason::SubscriptionNotFound | ErrorReason::TopicNotFound);
        self.chain.remove_from_every_member(missing, |q| async move { q.delete_subscription(op).await }).await
    }
    async fn publish(&self, op: ops::Publish<'_>) -> ExoResult<Vec<ExoResult<Published>>> {
        let ops::Publish { topic, messages } = op;
        self.first_to_take(messages, |member, batch| async move {
            member.publish(ops::Publish { topic, messages: batch }).await
        })
        .await
    }
}
