//! The backend's own workings: connecting, the admin and publisher channels, the registry
//! link, declaring queues, publishing with confirms and taking deliveries.

use super::*;

impl RabbitMqQueue {
    /// Connects, declares the registry stream and replays it.
    pub async fn connect(config: &RabbitMqQueueConfig, call_timeout: Duration) -> ExoResult<Self> {
        let uri = config.check().map_err(|e| ExoError::invalid_argument("backend", e.to_string()))?;
        let password = match &config.password {
            Some(secret) => Some(
                exo_proxy_core::secret::ReloadingSecret::text(secret.clone(), "backend.password")
                    .map_err(|e| ExoError::invalid_argument("backend.password", e.to_string()))?,
            ),
            None => None,
        };
        let mut tls = lapin::tcp::OwnedTLSConfig::default();
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read_to_string(path).map_err(|e| {
                ExoError::invalid_argument("backend.ca-file", format!("{}: {e}", path.display()))
            })?;
            tls.cert_chain = Some(pem);
        }
        let receivers: Arc<Receivers> = Arc::default();
        let ticker = tokio::spawn(give_back_expired(Arc::downgrade(&receivers)));
        use Capability::*;
        let queue = Self {
            descriptor: Descriptor {
                backend: "rabbitmq",
                capabilities: [
                    LongPoll,
                    Retention,
                    DeadLetter,
                    ChangeVisibility,
                    Purge,
                    Durable,
                    StaleReceipts,
                    Topics,
                ]
                .into(),
                limits: local_limits(config.max_message_bytes),
            },
            uri,
            password,
            tls,
            namespace: config.namespace.clone(),
            call_timeout,
            // The random bits of a v7 id.
            instance: (uuid::Uuid::now_v7().as_u128() as u64) & 0x3fff_ffff_ffff_ffff,
            next_receiver: AtomicU64::new(1),
            link: tokio::sync::Mutex::new(None),
            registry: Arc::default(),
            arrived: Arc::default(),
            receivers,
            opening: tokio::sync::Mutex::new(()),
            registry_retry: tokio::sync::Mutex::new(()),
            ticker,
        };
        queue.link().await?;
        Ok(queue)
    }

    pub(super) fn queue_name(&self, queue: &str) -> String {
        format!("{}.{queue}", self.namespace)
    }

    pub(super) fn registry_name(&self) -> String {
        // '_' is no queue name's character, so no queue can take this name.
        format!("{}._registry", self.namespace)
    }

    /// The broker's answer to `call`, or BACKEND_UNAVAILABLE (retryable) when none comes within
    /// the call timeout; the caller reads the answer (a 404 may mean "no such queue").
    pub(super) async fn within_call_timeout<T>(
        &self,
        what: &str,
        call: impl Future<Output = lapin::Result<T>>,
    ) -> ExoResult<lapin::Result<T>> {
        tokio::time::timeout(self.call_timeout, call).await.map_err(|_| {
            ExoError::new(
                ErrorReason::BackendUnavailable,
                format!("RabbitMQ {what}: no answer within {:?}", self.call_timeout),
            )
            .retryable()
        })
    }

    /// [`Self::within_call_timeout`], with any broker error mapped.
    pub(super) async fn bounded<T>(
        &self,
        what: &str,
        call: impl Future<Output = lapin::Result<T>>,
    ) -> ExoResult<T> {
        self.within_call_timeout(what, call).await?.map_err(|e| map_error(what, &e))
    }

    /// A new publishing channel in confirm mode on `connection`.
    pub(super) async fn open_publisher(&self, connection: &Connection) -> ExoResult<Channel> {
        let publisher = self.bounded("open channel", connection.create_channel()).await?;
        self.bounded("confirm mode", publisher.confirm_select(ConfirmSelectOptions::default())).await?;
        Ok(publisher)
    }

    /// The live connection, reconnected (and the registry replayed) when it was lost; its
    /// publishing channel opened again when the broker had closed it.
    pub(super) async fn link(&self) -> ExoResult<Arc<Link>> {
        let mut current = self.link.lock().await;
        if let Some(link) = current.as_ref()
            && link.connection.status().connected()
        {
            if !link.publisher().status().connected() {
                tracing::warn!("RabbitMQ closed the publishing channel; opening another");
                let publisher = self.open_publisher(&link.connection).await?;
                *link.publisher.lock().unwrap_or_else(|e| e.into_inner()) = publisher;
            }
            return Ok(link.clone());
        }
        // Deliveries held on the old connection went back to their queues when it closed.
        if let Ok(mut receivers) = self.receivers.lock() {
            receivers.clear();
        }
        let runtime = lapin::runtime::default_runtime().map_err(|e| map_error("connect", &e))?;
        let mut uri = self.uri.clone();
        if let Some(password) = &self.password {
            uri.authority.userinfo.password = password.current().0.to_string();
        }
        let connect = Connection::connect_uri_with_config(
            uri,
            ConnectionProperties::default(),
            self.tls.clone(),
            runtime,
        );
        let connection = self.bounded("connect", connect).await?;
        let publisher = Mutex::new(self.open_publisher(&connection).await?);
        let link = Arc::new(Link {
            connection,
            publisher,
            registry: Mutex::new(RegistryLink::Down(
                Instant::now(),
                ExoError::unavailable("not followed yet"),
            )),
        });
        // The registry is followed as well, but queues are served without it: a registry stream
        // that is down (its node restarting, say) fails only what needs it (listing, options,
        // topics), with the reason.
        self.follow_registry(&link).await;
        *current = Some(link.clone());
        Ok(link)
    }

    /// Declares, replays and follows the registry stream on `link`, and records how that went.
    pub(super) async fn follow_registry(&self, link: &Link) {
        let state = match self.replay_registry(link).await {
            Ok(follower) => RegistryLink::Following(follower),
            Err(err) => {
                tracing::warn!(error = %err, "rabbitmq: the queue registry stream cannot be followed now; queues are served, listing, options and topics wait for it");
                RegistryLink::Down(Instant::now(), err)
            }
        };
        if let Ok(mut slot) = link.registry.lock() {
            if let RegistryLink::Following(old) = &*slot {
                old.abort();
            }
            *slot = state;
        }
    }

    /// Declares the registry stream, follows it from its start and waits until it has replayed
    /// up to now (a mark published now comes back); the follower task.
    pub(super) async fn replay_registry(&self, link: &Link) -> ExoResult<tokio::task::JoinHandle<()>> {
        let registry_channel = self.bounded("open channel", link.connection.create_channel()).await?;
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), AMQPValue::LongString("stream".into()));
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        self.bounded(
            "declare the registry stream",
            registry_channel.queue_declare(self.registry_name().as_str().into(), durable, arguments),
        )
        .await?;
        // Stream consumers must ack, and need a prefetch.
        self.bounded("qos", registry_channel.basic_qos(1000, BasicQosOptions::default())).await?;
        let follower = tokio::spawn(follow_registry(
            registry_channel,
            self.registry_name(),
            self.registry.clone(),
            self.arrived.clone(),
        ));
        let mark = new_message_id();
        let waiting = self.arrived.notified();
        tokio::pin!(waiting);
        waiting.as_mut().enable();
        if let Err(err) = self.append(link, &Record::Mark { id: mark.clone() }).await {
            follower.abort();
            return Err(err);
        }
        let deadline = Instant::now() + self.call_timeout;
        loop {
            if self.registry.lock().map(|r| r.marks.contains(&mark)).unwrap_or(false) {
                return Ok(follower);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || follower.is_finished() {
                follower.abort();
                return Err(ExoError::new(
                    ErrorReason::BackendUnavailable,
                    "RabbitMQ: the queue registry stream did not replay in time",
                )
                .retryable());
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), waiting.as_mut()).await;
            waiting.set(self.arrived.notified());
            waiting.as_mut().enable();
        }
    }

    /// The live connection with its registry followed: followed again when its follower ended
    /// (the stream's node went away), at most every [`REGISTRY_RETRY`] while it cannot be; until
    /// then BACKEND_UNAVAILABLE (retryable) with the reason.
    pub(super) async fn registry_link(&self) -> ExoResult<Arc<Link>> {
        let link = self.link().await?;
        let retry = match &*link.registry.lock().unwrap_or_else(|e| e.into_inner()) {
            RegistryLink::Following(follower) => follower.is_finished(),
            RegistryLink::Down(since, _) => since.elapsed() >= REGISTRY_RETRY,
        };
        if retry {
            // One retry at a time: the calls arriving meanwhile wait for its outcome instead of
            // each replaying the stream (and aborting each other's follower).
            let _retrying = self.registry_retry.lock().await;
            let still = match &*link.registry.lock().unwrap_or_else(|e| e.into_inner()) {
                RegistryLink::Following(follower) => follower.is_finished(),
                RegistryLink::Down(since, _) => since.elapsed() >= REGISTRY_RETRY,
            };
            if still {
                self.follow_registry(&link).await;
            }
        }
        let down = match &*link.registry.lock().unwrap_or_else(|e| e.into_inner()) {
            RegistryLink::Following(_) => None,
            RegistryLink::Down(_, why) => Some(why.message.clone()),
        };
        match down {
            None => Ok(link),
            Some(why) => Err(ExoError::new(
                ErrorReason::BackendUnavailable,
                format!("RabbitMQ: the queue registry stream (queue options, listing, topics) is not available: {why}"),
            )
            .retryable()),
        }
    }

    /// Appends `record` to the registry and applies it here at once (the follower applies it
    /// again when it comes back: records are idempotent).
    pub(super) async fn record(&self, record: Record) -> ExoResult<()> {
        let link = self.registry_link().await?;
        self.append(&link, &record).await?;
        if let Ok(mut registry) = self.registry.lock() {
            registry.apply(record);
        }
        Ok(())
    }

    /// The topic as the registry holds it, or TOPIC_NOT_FOUND.
    pub(super) async fn stored_topic(&self, name: &str) -> ExoResult<StoredTopic> {
        self.registry_link().await?;
        let registry = self.registry.lock().map_err(|_| ExoError::internal("registry lock poisoned"))?;
        registry.topics.get(name).cloned().ok_or_else(|| topic_not_found(name))
    }

    /// Appends a record to the registry stream, confirmed.
    pub(super) async fn append(&self, link: &Link, record: &Record) -> ExoResult<()> {
        let body =
            serde_json::to_vec(record).map_err(|e| ExoError::internal(format!("registry record: {e}")))?;
        let properties = BasicProperties::default().with_delivery_mode(2);
        let confirm = self
            .bounded(
                "publish to the registry",
                link.publisher().basic_publish(
                    "".into(),
                    self.registry_name().as_str().into(),
                    BasicPublishOptions { mandatory: true, ..Default::default() },
                    &body,
                    properties,
                ),
            )
            .await?;
        match self.bounded("registry confirm", confirm).await? {
            Confirmation::Ack(None) => Ok(()),
            other => Err(ExoError::new(
                ErrorReason::BackendUnavailable,
                format!("RabbitMQ did not store a registry record: {}", refusal(&other)),
            )
            .retryable()),
        }
    }

    /// A channel of its own for one call that the broker may answer by closing the channel (a
    /// missing queue, other arguments): such a call never takes a neighbour's call down with it.
    /// Closed when dropped.
    pub(super) async fn admin(&self) -> ExoResult<AdminChannel> {
        let link = self.link().await?;
        let channel = self.bounded("open channel", link.connection.create_channel()).await?;
        Ok(AdminChannel(channel))
    }

    /// The ready message count of a queue, or `None` when it does not exist.
    pub(super) async fn ready_count(&self, queue: &str) -> ExoResult<Option<u32>> {
        let channel = self.admin().await?;
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let declared = self
            .within_call_timeout(
                "look up queue",
                channel.queue_declare(self.queue_name(queue).as_str().into(), passive, FieldTable::default()),
            )
            .await?;
        match declared {
            Ok(q) => Ok(Some(q.message_count())),
            Err(err) if amqp_code(&err) == Some(404) => Ok(None),
            Err(err) => Err(map_error("look up queue", &err)),
        }
    }

    pub(super) fn stored_options(&self, queue: &str) -> Option<(StoredOptions, u64)> {
        self.registry.lock().ok().and_then(|r| r.queues.get(queue).cloned())
    }

    /// The channel holding this queue's deliveries, opened when there is none (or it closed).
    pub(super) async fn receiver(&self, queue: &str) -> ExoResult<Arc<Receiver>> {
        let open = |this: &Self| {
            this.receivers
                .lock()
                .ok()
                .and_then(|r| r.get(queue).cloned())
                .filter(|receiver| receiver.channel.status().connected())
        };
        if let Some(receiver) = open(self) {
            return Ok(receiver);
        }
        let _opening = self.opening.lock().await;
        if let Some(receiver) = open(self) {
            return Ok(receiver);
        }
        let link = self.link().await?;
        let channel = self.bounded("open channel", link.connection.create_channel()).await?;
        // Each waiting consumer takes one message at most; basic.get is not limited by it.
        self.bounded("qos", channel.basic_qos(1, BasicQosOptions::default())).await?;
        let receiver = Arc::new(Receiver {
            id: self.next_receiver.fetch_add(1, Ordering::Relaxed),
            channel,
            held: Mutex::default(),
            acked: Mutex::default(),
        });
        if let Ok(mut receivers) = self.receivers.lock() {
            receivers.insert(queue.to_owned(), receiver.clone());
        }
        Ok(receiver)
    }

    pub(super) fn forget_receiver(&self, queue: &str) -> Option<Arc<Receiver>> {
        self.receivers.lock().ok().and_then(|mut r| r.remove(queue))
    }

    /// Takes up to `max` ready messages with basic.get.
    pub(super) async fn get_ready(
        &self,
        receiver: &Receiver,
        queue: &QueueName,
        max: usize,
        out: &mut Vec<Delivery>,
    ) -> ExoResult<()> {
        let name = self.queue_name(queue.as_str());
        while out.len() < max {
            let got = self
                .within_call_timeout(
                    "receive",
                    receiver.channel.basic_get(name.as_str().into(), BasicGetOptions { no_ack: false }),
                )
                .await?;
            match got {
                Ok(Some(message)) => out.push(message.delivery),
                Ok(None) => break,
                Err(err) if amqp_code(&err) == Some(404) => {
                    self.forget_receiver(queue.as_str());
                    return Err(queue_not_found(queue.as_str()));
                }
                Err(err) => return Err(map_error("receive", &err)),
            }
        }
        Ok(())
    }

    /// Waits up to `wait` for one message with a consumer (the broker pushes it).
    pub(super) async fn wait_for_one(
        &self,
        receiver: &Receiver,
        queue: &QueueName,
        wait: Duration,
        out: &mut Vec<Delivery>,
    ) -> ExoResult<()> {
        let tag = format!("exo-wait-{}", new_message_id());
        let consumed = self
            .bounded(
                "receive",
                receiver.channel.basic_consume(
                    self.queue_name(queue.as_str()).as_str().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await;
        let mut consumer = match consumed {
            Ok(consumer) => consumer,
            Err(_) if !receiver.channel.status().connected() => {
                // A missing queue closes the channel with 404.
                self.forget_receiver(queue.as_str());
                return match self.ready_count(queue.as_str()).await? {
                    None => Err(queue_not_found(queue.as_str())),
                    Some(_) => Err(ExoError::new(
                        ErrorReason::BackendUnavailable,
                        "RabbitMQ receive: channel closed",
                    )
                    .retryable()),
                };
            }
            Err(err) => return Err(err),
        };
        if let Ok(Some(Ok(delivery))) = tokio::time::timeout(wait, consumer.next()).await {
            out.push(delivery);
        }
        let short: ShortString = tag.as_str().into();
        self.bounded("receive", receiver.channel.basic_cancel(short, BasicCancelOptions::default())).await?;
        // A delivery pushed before the cancel took effect is this receive's too.
        while let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_millis(1), consumer.next()).await
        {
            out.push(delivery);
        }
        Ok(())
    }

    /// Acks `tag` if this receipt still holds it; RECEIPT_STALE (or QUEUE_NOT_FOUND) otherwise.
    pub(super) async fn settle(
        &self,
        queue: &QueueName,
        receipt: &str,
        visibility: Option<u32>,
    ) -> ExoResult<()> {
        let receipt = Receipt::decode(receipt, queue)?;
        let receiver = self.receivers.lock().ok().and_then(|r| r.get(queue.as_str()).cloned());
        let holder = receiver.filter(|r| receipt.instance == self.instance && r.id == receipt.receiver);
        if let Some(receiver) = holder {
            match visibility {
                None if receiver.take(receipt.tag) => {
                    let acked = receiver.channel.basic_ack(receipt.tag, BasicAckOptions::default());
                    self.bounded("ack", acked).await?;
                    receiver.remember_ack(receipt.tag);
                    return Ok(());
                }
                None if receiver.was_acked(receipt.tag) => return Ok(()),
                Some(0) if receiver.take(receipt.tag) => {
                    let options = BasicNackOptions { requeue: true, multiple: false };
                    self.bounded("change visibility", receiver.channel.basic_nack(receipt.tag, options))
                        .await?;
                    return Ok(());
                }
                Some(seconds) => {
                    let until = Instant::now() + Duration::from_secs(u64::from(seconds));
                    let moved = receiver
                        .held
                        .lock()
                        .map(|mut held| held.get_mut(&receipt.tag).map(|at| *at = until).is_some())
                        .unwrap_or(false);
                    if moved {
                        return Ok(());
                    }
                }
                None => {}
            }
        }
        // The delivery was given back (visibility ended, or the channel or this proxy restarted).
        match self.ready_count(queue.as_str()).await? {
            None => Err(queue_not_found(queue.as_str())),
            Some(_) => Err(stale_receipt(queue)),
        }
    }

    pub(super) fn arguments(&self, options: &pb::QueueOptions) -> FieldTable {
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        arguments.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(i64::from(options.retention_seconds) * 1000),
        );
        if !options.dead_letter_queue.is_empty() {
            // A message given back more than max_receives - 1 times has been received
            // max_receives times: the broker dead-letters it instead of delivering it again.
            arguments.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongInt(i32::try_from(options.max_receives.saturating_sub(1)).unwrap_or(i32::MAX)),
            );
            arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
            arguments.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(self.queue_name(&options.dead_letter_queue).into()),
            );
            arguments.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
            arguments.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
        }
        arguments
    }
}
