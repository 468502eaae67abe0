//! The backend's own workings: requests to the queue service, options cached per queue, and
//! errors in the contract's vocabulary.

use super::*;

pub(super) fn queue_error(queue: &str, operation: &str, err: &azure_core::Error) -> ExoError {
    match service_code(err) {
        Some((404, "QueueNotFound")) => queue_not_found(queue),
        Some((409, "QueueBeingDeleted")) => ExoError::new(
            ErrorReason::BackendUnavailable,
            format!("queue '{queue}' is being deleted by Azure; retry in a few seconds"),
        )
        .with_resource(queue)
        .retryable(),
        _ => map_error("azure-queue", operation, err).with_resource(queue),
    }
}

impl AzureQueue {
    /// Connects with `settings` (nothing is sent until the first call).
    pub fn connect(settings: &AzureSettings) -> ExoResult<Self> {
        let (location, credentials): (CloudLocation, StorageCredentials) =
            settings.connect(Service::Queue)?;
        let service =
            azure_storage_queues::QueueServiceClientBuilder::with_location(location, credentials.clone())
                .retry(exo_azure::no_retries())
                .build();
        let pipeline = azure_storage::clients::new_pipeline_from_options(
            azure_core::ClientOptions::default().retry(exo_azure::no_retries()),
            credentials,
        );
        use Capability::*;
        let topics = topics::TopicTable::connect(settings)?;
        let mut capabilities: std::collections::HashSet<Capability> =
            [LongPoll, Delay, Retention, DeadLetter, ChangeVisibility, Purge, Durable, StaleReceipts].into();
        if topics.is_some() {
            capabilities.insert(Topics);
        }
        Ok(Self {
            descriptor: Descriptor {
                backend: "azure-queue",
                capabilities,
                limits: pb::Limits {
                    max_message_bytes: MAX_MESSAGE_BYTES,
                    max_batch_entries: 100,
                    max_receive_messages: AZURE_BATCH,
                    max_wait_seconds: 20,
                    max_visibility_timeout_seconds: 12 * 3600,
                    max_delay_seconds: 900,
                    max_attributes: 10,
                    min_retention_seconds: 1,
                    max_retention_seconds: 14 * 24 * 3600,
                    max_receives_limit: 1000,
                },
            },
            service,
            pipeline,
            name_prefix: settings.name_prefix.clone(),
            pops: Mutex::new(HashMap::new()),
            options: Mutex::new(HashMap::new()),
            topics,
        })
    }

    pub(super) fn client(&self, name: &str) -> QueueClient {
        self.service.queue_client(format!("{}{name}", self.name_prefix))
    }

    /// The queue's options, from the cache when fresh.
    pub(super) async fn options(&self, name: &QueueName) -> ExoResult<pb::QueueOptions> {
        {
            let cache = self.options.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((options, at)) = cache.get(name.as_str())
                && at.elapsed() < OPTIONS_TTL
            {
                return Ok(options.clone());
            }
        }
        Ok(self.metadata(name).await?.options)
    }

    pub(super) fn forget_options(&self, name: &QueueName) {
        self.options.lock().unwrap_or_else(|p| p.into_inner()).remove(name.as_str());
    }

    /// Drops the cached options of a queue Azure says is gone.
    pub(super) fn noting_missing<T>(&self, name: &QueueName, result: ExoResult<T>) -> ExoResult<T> {
        if result.as_ref().is_err_and(|e| e.reason == ErrorReason::QueueNotFound) {
            self.forget_options(name);
        }
        result
    }

    pub(super) async fn metadata(&self, name: &QueueName) -> ExoResult<QueueMetadata> {
        let out = self
            .client(name.as_str())
            .get_metadata()
            .await
            .map_err(|e| queue_error(name.as_str(), "GetQueueMetadata", &e))?;
        let mut metadata = options_of(&out.metadata);
        metadata.total = out.approximate_messages_count;
        self.options
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), (metadata.options.clone(), Instant::now()));
        Ok(metadata)
    }

    pub(super) async fn info(&self, name: &QueueName) -> ExoResult<pb::QueueInfo> {
        let QueueMetadata { options, created_at_ms, total, .. } = self.metadata(name).await?;
        // Azure counts only the total; peeking (up to 32) sees the visible ones.
        let peeked = self
            .client(name.as_str())
            .peek_messages()
            .number_of_messages(AZURE_BATCH as u8)
            .await
            .map_err(|e| queue_error(name.as_str(), "PeekMessages", &e))?
            .messages
            .len();
        let visible = if peeked < AZURE_BATCH as usize { peeked } else { total.max(peeked) };
        Ok(pb::QueueInfo {
            name: name.to_string(),
            options: Some(options),
            visible_messages: visible as u64,
            in_flight_messages: total.saturating_sub(visible) as u64,
            delayed_messages: 0,
            created_at_ms,
        })
    }

    pub(super) fn newest_pop(&self, issued: &str) -> String {
        let pops = self.pops.lock().unwrap_or_else(|p| p.into_inner());
        pops.get(issued).map(|(newest, _)| newest.clone()).unwrap_or_else(|| issued.to_owned())
    }

    pub(super) fn remember_pop(&self, issued: &str, newest: String) {
        let mut pops = self.pops.lock().unwrap_or_else(|p| p.into_inner());
        pops.retain(|_, (_, at)| at.elapsed() < RECEIPT_MEMORY);
        pops.insert(issued.to_owned(), (newest, Instant::now()));
    }

    pub(super) fn forget_pop(&self, issued: &str) {
        self.pops.lock().unwrap_or_else(|p| p.into_inner()).remove(issued);
    }

    /// Maps a failed call with a receipt: a pop receipt that no longer matches is stale; a
    /// message that is gone is gone.
    pub(super) fn receipt_error(
        name: &QueueName,
        operation: &str,
        err: &azure_core::Error,
    ) -> Option<ExoError> {
        match service_code(err) {
            Some((400, "PopReceiptMismatch")) => Some(stale_receipt(name)),
            Some((404, "MessageNotFound")) => None,
            _ => Some(queue_error(name.as_str(), operation, err)),
        }
    }

    /// Update Message with no body: only the visibility changes; returns the new pop receipt.
    pub(super) async fn set_visibility(
        &self,
        name: &QueueName,
        id: &str,
        pop: &str,
        seconds: u32,
    ) -> azure_core::Result<String> {
        let mut url = self.client(name.as_str()).url()?;
        url.path_segments_mut()
            .map_err(|_| {
                azure_core::Error::message(azure_core::error::ErrorKind::Other, "queue URL cannot be a base")
            })?
            .push("messages")
            .push(id);
        url.query_pairs_mut()
            .append_pair("popreceipt", pop)
            .append_pair("visibilitytimeout", &seconds.to_string());
        let mut request = azure_storage::clients::finalize_request(url, Method::Put, Headers::new(), None)?;
        let mut context = Context::new();
        let response = self.pipeline.send(context.insert(ServiceType::Queue), &mut request).await?;
        response
            .headers()
            .get_optional_string(&azure_core::headers::HeaderName::from_static("x-ms-popreceipt"))
            .ok_or_else(|| {
                azure_core::Error::message(azure_core::error::ErrorKind::DataConversion, "no x-ms-popreceipt")
            })
    }

    /// Get Messages, sent and parsed here: the crate's XML reading trims the message text, and
    /// bodies must arrive byte-exact (a native `'  indented\n'` included).
    pub(super) async fn get_messages(
        &self,
        name: &QueueName,
        count: u32,
        visibility: u32,
    ) -> azure_core::Result<Vec<ReceivedText>> {
        let mut url = self.client(name.as_str()).url()?;
        url.path_segments_mut()
            .map_err(|_| {
                azure_core::Error::message(azure_core::error::ErrorKind::Other, "queue URL cannot be a base")
            })?
            .push("messages");
        url.query_pairs_mut()
            .append_pair("numofmessages", &count.to_string())
            .append_pair("visibilitytimeout", &visibility.to_string());
        let mut request = azure_storage::clients::finalize_request(url, Method::Get, Headers::new(), None)?;
        let mut context = Context::new();
        let response = self.pipeline.send(context.insert(ServiceType::Queue), &mut request).await?;
        let body = response.into_body().collect().await?;
        parse_messages(&body)
    }

    pub(super) async fn receive_once(
        &self,
        name: &QueueName,
        options: &pb::QueueOptions,
        max: u32,
        visibility: u32,
    ) -> ExoResult<Vec<pb::Message>> {
        let client = self.client(name.as_str());
        let messages = self
            .get_messages(name, max.min(AZURE_BATCH), visibility.max(1))
            .await
            .map_err(|e| queue_error(name.as_str(), "GetMessages", &e))?;
        let mut delivered = Vec::with_capacity(messages.len());
        for m in messages {
            let dequeue_count = m.dequeue_count;
            if options.max_receives > 0 && dequeue_count > options.max_receives {
                self.dead_letter(name, options, &client, m).await?;
                continue;
            }
            let envelope = Envelope::decode(&m.text);
            // Azure hides a received message for at least 1 s: release it at once for a 0 s
            // visibility (the release issues the pop receipt the caller must use).
            let pop_receipt = if visibility == 0 {
                self.set_visibility(name, &m.message_id, &m.pop_receipt, 0)
                    .await
                    .map_err(|e| queue_error(name.as_str(), "UpdateMessage", &e))?
            } else {
                m.pop_receipt.clone()
            };
            delivered.push(pb::Message {
                message_id: envelope.original_id.unwrap_or_else(|| m.message_id.clone()),
                receipt: encode_receipt(name, &m.message_id, &pop_receipt),
                body: envelope.body,
                attributes: envelope.attributes,
                dequeue_count,
                enqueued_at_ms: m.inserted_at_ms,
            });
        }
        Ok(delivered)
    }

    /// Moves a message received too often into the dead-letter queue, keeping its id.
    pub(super) async fn dead_letter(
        &self,
        name: &QueueName,
        options: &pb::QueueOptions,
        source: &QueueClient,
        m: ReceivedText,
    ) -> ExoResult<()> {
        let target = &options.dead_letter_queue;
        // A text that is not a valid envelope moves unchanged (it is evidence); others keep
        // their original id.
        let text = match m.text.strip_prefix(ENVELOPE).map(Envelope::decode_envelope) {
            Some(Err(_)) => m.text.clone(),
            _ => {
                let mut envelope = Envelope::decode(&m.text);
                envelope.original_id.get_or_insert_with(|| m.message_id.clone());
                envelope.encode()
            }
        };
        let dlq = self.client(target);
        let retention = match QueueName::parse("queue", target, "dead_letter_queue") {
            Ok(target_name) => self.options(&target_name).await.map(|o| o.retention_seconds),
            Err(err) => Err(err),
        };
        let retention = match retention {
            Ok(seconds) => seconds,
            Err(err) if err.reason == ErrorReason::QueueNotFound => {
                // The dead-letter queue was deleted after this queue was created: keep the
                // message where it is rather than lose it.
                tracing::warn!(queue = %name, dead_letter_queue = %target, "dead-letter queue missing; keeping the message");
                return Ok(());
            }
            Err(err) => return Err(err),
        };
        dlq.put_message(text)
            .ttl(Duration::from_secs(u64::from(retention.max(1))))
            .await
            .map_err(|e| queue_error(target, "PutMessage", &e))?;
        // Moved: now remove it from the source. If this fails, the message reappears after its
        // visibility timeout and is moved again (at least once, never lost).
        source
            .pop_receipt_client(PopReceipt::new(m.message_id, m.pop_receipt))
            .delete()
            .await
            .map(|_| ())
            .or_else(|e| match Self::receipt_error(name, "DeleteMessage", &e) {
                None => Ok(()),
                Some(err) => Err(err),
            })
    }
}
