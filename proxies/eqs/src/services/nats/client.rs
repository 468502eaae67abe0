//! The backend's own workings: connecting and watching the connection, streams and consumers
//! per queue, publishing with acknowledgements and pulling deliveries.

use super::*;

/// How often [`watch_connection`] looks at the client's state.
pub(super) const CONNECTION_WATCH_EVERY: Duration = Duration::from_millis(50);

/// Counts each loss of `client`'s connection in `lost`, until nobody watches `lost`.
pub(super) async fn watch_connection(client: async_nats::Client, lost: Arc<tokio::sync::watch::Sender<u64>>) {
    let mut was_connected = true;
    while !lost.is_closed() {
        tokio::time::sleep(CONNECTION_WATCH_EVERY).await;
        let connected = matches!(client.connection_state(), async_nats::connection::State::Connected);
        if was_connected && !connected {
            lost.send_modify(|n| *n += 1);
        }
        was_connected = connected;
    }
}

impl NatsQueue {
    /// Connects to the server and checks that JetStream answers.
    pub async fn connect(config: &NatsQueueConfig, call_timeout: Duration) -> ExoResult<Self> {
        config.check().map_err(|e| ExoError::invalid_argument("backend", e.to_string()))?;
        // Credentials are asked for at every connect, reconnects included: a rotated `file:`
        // password or token serves the next reconnect without a restart (the open connection
        // stays, as NATS keeps it when its account changes).
        let followed = |secret: &SecretRef, what: &'static str| {
            exo_proxy_core::secret::ReloadingSecret::text(secret.clone(), what)
                .map(Arc::new)
                .map_err(|e| ExoError::invalid_argument(what, e.to_string()))
        };
        let password = config.password.as_ref().map(|p| followed(p, "backend.password")).transpose()?;
        let token = config.token.as_ref().map(|t| followed(t, "backend.token")).transpose()?;
        let (lost_tx, lost) = tokio::sync::watch::channel(0u64);
        let lost_tx = Arc::new(lost_tx);
        let mut options = match (password, token) {
            (None, None) => async_nats::ConnectOptions::new(),
            (password, token) => {
                let user = config.user.clone();
                async_nats::ConnectOptions::with_auth_callback(move |_nonce| {
                    let mut auth = async_nats::Auth::new();
                    if let Some(password) = &password {
                        auth.username = user.clone();
                        auth.password = Some(password.current().0.to_string());
                    }
                    if let Some(token) = &token {
                        auth.token = Some(token.current().0.to_string());
                    }
                    async move { Ok(auth) }
                })
            }
        }
        .name("eqs-proxy")
        .connection_timeout(call_timeout)
        .request_timeout(Some(call_timeout));
        if config.tls || config.url.contains("tls://") {
            options = options.require_tls(true);
        }
        if let Some(ca) = &config.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&config.client_cert_file, &config.client_key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let client = options
            .connect(config.url.as_str())
            .await
            .map_err(|e| unavailable(&format!("connect to {}", config.url), with_causes(&e)))?;
        let max_payload = client.server_info().max_payload as u64;
        if config.max_message_bytes + HEADER_ALLOWANCE > max_payload {
            return Err(ExoError::invalid_argument(
                "backend.max-message-bytes",
                format!(
                    "{} bytes plus {HEADER_ALLOWANCE} for headers is above this NATS server's max_payload of \
                     {max_payload} bytes: lower max-message-bytes or raise max_payload on the server",
                    config.max_message_bytes
                ),
            ));
        }
        // The client's state changes as soon as the connection breaks; its Disconnected event
        // came seconds later (after reconnect attempts), so the state is what is watched.
        tokio::spawn(watch_connection(client.clone(), lost_tx));
        let js = jetstream::ContextBuilder::new().timeout(call_timeout).build(client.clone());
        jetstream_enabled(&client).await?;
        use Capability::*;
        Ok(Self {
            descriptor: Descriptor {
                backend: "nats",
                capabilities: [LongPoll, Retention, DeadLetter, ChangeVisibility, Purge, Durable, Topics]
                    .into(),
                limits: local_limits(config.max_message_bytes),
            },
            client,
            js,
            namespace: config.namespace.clone(),
            replicas: config.replicas,
            max_payload,
            handles: Mutex::new(HashMap::new()),
            registry: tokio::sync::OnceCell::new(),
            lost,
        })
    }

    pub(super) fn stream_name(&self, queue: &str) -> String {
        format!("{}_{queue}", self.namespace)
    }

    pub(super) fn subject(&self, queue: &str) -> String {
        format!("{}.{queue}", self.namespace)
    }

    /// Fails at once while the client is reconnecting: a call would otherwise wait out its whole
    /// deadline for a server that is not there (async-nats buffers requests while disconnected).
    pub(super) fn connected(&self) -> ExoResult<()> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(unavailable("connection", format!("{state:?} (the client is reconnecting)"))),
        }
    }

    /// Runs `call` (which waits on the server) while the connection holds: it fails at once,
    /// BACKEND_UNAVAILABLE (retryable), when the connection is down as it starts or is lost
    /// before it answers, instead of waiting out its deadline for an answer that went with the
    /// connection.
    pub(super) async fn while_connected<T>(
        &self,
        operation: &str,
        call: impl Future<Output = ExoResult<T>>,
    ) -> ExoResult<T> {
        let mut lost = self.lost.clone();
        lost.mark_unchanged();
        self.connected()?;
        tokio::select! {
            result = call => result,
            _ = lost.changed() => Err(unavailable(operation, "the connection to the server was lost mid-call")),
        }
    }

    pub(super) fn forget(&self, queue: &str) {
        if let Ok(mut handles) = self.handles.lock() {
            handles.remove(queue);
        }
    }

    /// The stream's configuration and state, or `None` when the queue does not exist.
    pub(super) async fn stream_info(&self, queue: &str) -> ExoResult<Option<stream::Info>> {
        Ok(self.find_stream(self.stream_name(queue)).await?.map(|stream| stream.cached_info().clone()))
    }

    /// The stream `name` with its configuration and state as just read (one request), or `None`
    /// when there is none.
    pub(super) async fn find_stream(&self, name: String) -> ExoResult<Option<stream::Stream>> {
        match self.js.get_stream(name).await {
            Ok(stream) => Ok(Some(stream)),
            Err(err) => match err.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(e) if is_not_found(&e) => Ok(None),
                jetstream::context::GetStreamErrorKind::JetStream(e) => Err(api_error("get stream", &e)),
                _ => Err(unavailable("get stream", err)),
            },
        }
    }

    /// The queue's consumer, created when a stream made by hand does not have it yet.
    pub(super) async fn consumer(&self, queue: &str, visibility: u32) -> ExoResult<PullConsumer> {
        let config = pull::Config {
            durable_name: Some(CONSUMER.into()),
            description: Some("ExoFlow eqs: every proxy receives through this consumer".into()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            // JetStream has no zero ack wait; visibility 0 is a nak right after delivery.
            ack_wait: Duration::from_secs(u64::from(visibility.max(1))),
            max_deliver: -1,
            max_ack_pending: -1,
            max_waiting: 4096,
            ..Default::default()
        };
        self.js.create_consumer_on_stream(config, self.stream_name(queue)).await.map_err(|err| {
            match err.kind() {
                jetstream::stream::ConsumerErrorKind::JetStream(e) if is_not_found(&e) => {
                    queue_not_found(queue)
                }
                jetstream::stream::ConsumerErrorKind::JetStream(e) => api_error("create consumer", &e),
                _ => unavailable("create consumer", err),
            }
        })
    }

    /// The queue's options and consumer, from memory when read recently.
    pub(super) async fn handle(&self, queue: &QueueName) -> ExoResult<Arc<QueueHandle>> {
        if let Some(handle) = self.handles.lock().ok().and_then(|h| h.get(queue.as_str()).cloned())
            && handle.read_at.elapsed() < OPTIONS_TTL
        {
            return Ok(handle);
        }
        let (info, consumer) = self
            .while_connected("look up the queue", async {
                let info =
                    self.stream_info(queue.as_str()).await?.ok_or_else(|| queue_not_found(queue.as_str()))?;
                let consumer = self
                    .consumer(queue.as_str(), StoredOptions::of_stream(&info.config, None).visibility)
                    .await?;
                Ok((info, consumer))
            })
            .await?;
        let options = StoredOptions::of_stream(&info.config, None);
        let handle = Arc::new(QueueHandle { options, consumer, read_at: Instant::now() });
        if let Ok(mut handles) = self.handles.lock() {
            handles.insert(queue.to_string(), handle.clone());
        }
        Ok(handle)
    }

    /// Sends `payload` to an ack subject and waits for the server's confirmation.
    pub(super) async fn ack_request(
        &self,
        queue: &QueueName,
        subject: &str,
        payload: String,
    ) -> ExoResult<()> {
        let answer = self
            .while_connected("acknowledge", async {
                Ok(self.client.request(subject.to_owned(), payload.into()).await)
            })
            .await?;
        match answer {
            Ok(_) => Ok(()),
            Err(err) => match err.kind() {
                // Nobody answers the subject: the consumer (so the queue) is gone.
                async_nats::client::RequestErrorKind::NoResponders => {
                    self.forget(queue.as_str());
                    Err(queue_not_found(queue.as_str()))
                }
                _ => Err(unavailable("acknowledge", err)),
            },
        }
    }

    /// Takes up to `max` messages that are ready now, or (with a wait) the first that arrives.
    ///
    /// Bounded by the wait plus [`PULL_GRACE`] on this side too: a server may count a delivery
    /// it then skips (a redelivery of a message purged meanwhile) towards the request and never
    /// close it. What arrived by then is kept.
    pub(super) async fn pull(
        &self,
        consumer: &PullConsumer,
        max: usize,
        wait: Duration,
    ) -> ExoResult<Vec<jetstream::Message>> {
        self.while_connected("pull", self.pull_now(consumer, max, wait)).await
    }

    /// [`Self::pull`], whatever the connection does meanwhile.
    pub(super) async fn pull_now(
        &self,
        consumer: &PullConsumer,
        max: usize,
        wait: Duration,
    ) -> ExoResult<Vec<jetstream::Message>> {
        let pulled = if wait.is_zero() {
            consumer.fetch().max_messages(max).messages().await
        } else {
            consumer.batch().max_messages(max).expires(wait).messages().await
        };
        let mut stream = pulled.map_err(|e| unavailable("pull", e))?;
        let mut got = Vec::new();
        let bound = tokio::time::sleep(wait + PULL_GRACE);
        tokio::pin!(bound);
        while got.len() < max {
            tokio::select! {
                next = stream.next() => match next {
                    Some(Ok(message)) => got.push(message),
                    Some(Err(err)) if got.is_empty() => return Err(unavailable("pull", err)),
                    Some(Err(_)) | None => break,
                },
                () = &mut bound => break,
            }
        }
        Ok(got)
    }

    /// Moves a message delivered too often to the dead-letter queue. `false` when that queue is
    /// gone: the message then stays where it is rather than be lost.
    pub(super) async fn dead_letter(
        &self,
        message: &jetstream::Message,
        options: &StoredOptions,
        id: &str,
    ) -> ExoResult<bool> {
        let info = message.info().map_err(|e| ExoError::internal(format!("NATS message info: {e}")))?;
        let mut headers = message.headers.clone().unwrap_or_default();
        headers.insert("Nats-Msg-Id", format!("dl-{}-{}", info.stream, info.stream_sequence).as_str());
        headers.insert(MESSAGE_ID, id);
        let target = self.subject(&options.dead_letter_queue);
        let stored = match self.js.publish_with_headers(target, headers, message.payload.clone()).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match stored {
            Ok(_) => {}
            Err(err) if err.kind() == PublishErrorKind::StreamNotFound => return Ok(false),
            Err(err) => return Err(unavailable("dead-letter publish", err)),
        }
        message.double_ack().await.map_err(|e| unavailable("ack dead-lettered message", e))?;
        Ok(true)
    }

    /// Turns pulled deliveries into messages: dead-letters what is due, applies the visibility.
    pub(super) async fn deliver(
        &self,
        handle: &QueueHandle,
        visibility: u32,
        pulled: Vec<jetstream::Message>,
    ) -> ExoResult<Vec<pb::Message>> {
        let mut out = Vec::with_capacity(pulled.len());
        for message in pulled {
            let info = message.info().map_err(|e| ExoError::internal(format!("NATS message info: {e}")))?;
            let dequeue_count = u32::try_from(info.delivered.max(0)).unwrap_or(u32::MAX);
            let sequence = info.stream_sequence;
            let enqueued_at_ms =
                u64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
            let (exo_id, nats_id, attributes) = read_headers(message.headers.as_ref());
            let id = exo_id.or(nats_id).unwrap_or_else(|| sequence.to_string());
            let options = &handle.options;
            if options.max_receives > 0
                && dequeue_count > options.max_receives
                && self.dead_letter(&message, options, &id).await?
            {
                continue;
            }
            if visibility != options.visibility.max(1)
                && let Some(reply) = &message.reply
            {
                self.client
                    .publish(reply.clone(), nak(visibility).into())
                    .await
                    .map_err(|e| unavailable("set visibility", e))?;
            }
            let receipt =
                message.reply.as_ref().map(|r| URL_SAFE_NO_PAD.encode(r.as_bytes())).unwrap_or_default();
            out.push(pb::Message {
                message_id: id,
                receipt,
                body: message.payload.to_vec(),
                attributes,
                dequeue_count,
                enqueued_at_ms,
            });
        }
        Ok(out)
    }

    /// Stores messages in a queue's stream, each under its id (its `Nats-Msg-Id` too, so one
    /// stored again within the duplicate window is stored once); one result per message.
    pub(super) async fn store(
        &self,
        name: &QueueName,
        messages: Vec<(String, Bytes, HashMap<String, String>)>,
    ) -> ExoResult<Vec<ExoResult<String>>> {
        let subject = self.subject(name.as_str());
        let mut ids = Vec::with_capacity(messages.len());
        let mut pending = Vec::with_capacity(messages.len());
        for (id, body, attributes) in messages {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            headers.insert(MESSAGE_ID, id.as_str());
            attribute_headers(&mut headers, attributes);
            // Published one after the other (in order), their acknowledgements awaited together.
            let published = self.js.publish_with_headers(subject.clone(), headers, body).await;
            // Each acknowledgement is awaited only while the connection holds: the ones the
            // server confirmed stay acknowledged when it is lost, the others fail at once.
            let mut lost = self.lost.clone();
            lost.mark_unchanged();
            pending.push(async move {
                let ack = async {
                    match published {
                        Ok(ack) => ack.await,
                        Err(e) => Err(e),
                    }
                };
                tokio::select! {
                    stored = ack => Some(stored),
                    _ = lost.changed() => None,
                }
            });
            ids.push(id);
        }
        self.connected()?;
        let stored = join_all(pending).await;
        if !stored.is_empty()
            && stored
                .iter()
                .all(|r| matches!(r, Some(Err(e)) if e.kind() == PublishErrorKind::StreamNotFound))
        {
            self.forget(name.as_str());
            return Err(queue_not_found(name.as_str()));
        }
        Ok(ids
            .into_iter()
            .zip(stored)
            .map(|(id, stored)| match stored {
                None => {
                    Err(unavailable("publish", "the connection to the server was lost before it confirmed"))
                }
                Some(Ok(_)) => Ok(id),
                Some(Err(err)) => Err(match err.kind() {
                    PublishErrorKind::StreamNotFound => queue_not_found(name.as_str()),
                    PublishErrorKind::MaxPayloadExceeded => ExoError::new(
                        ErrorReason::MessageTooLarge,
                        format!("NATS refused the message as too large: {err}"),
                    ),
                    // A stream made by hand may have a smaller `max_msg_size` than the server's
                    // payload limit; the server then answers JetStream error 10054.
                    _ if exceeds_stream_limit(&err) => ExoError::new(
                        ErrorReason::MessageTooLarge,
                        format!("the queue's stream refused the message as too large: {err}"),
                    ),
                    _ => unavailable("publish", err),
                }),
            })
            .collect())
    }

    /// The ack subject a receipt holds, checked to belong to `queue`.
    pub(super) fn ack_subject(&self, queue: &QueueName, receipt: &str) -> ExoResult<String> {
        let invalid = |why: String| {
            ExoError::new(ErrorReason::InvalidReceipt, format!("receipt is not valid: {why}"))
                .with_field("receipt")
                .with_resource(queue.as_str())
        };
        let subject = URL_SAFE_NO_PAD
            .decode(receipt.as_bytes())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| invalid("not a receipt token".into()))?;
        let (stream, consumer) =
            ack_subject_names(&subject).ok_or_else(|| invalid("not a receipt token".into()))?;
        let expected = self.stream_name(queue.as_str());
        if stream != expected || consumer != CONSUMER {
            return Err(invalid(format!("it was issued for stream '{stream}', not '{expected}'")));
        }
        Ok(subject)
    }
}
