//! The backend's own workings: queue URLs, attributes and dead-letter policies, errors in the
//! contract's vocabulary, and the long poll's wait under a caller's deadline.

use super::*;

pub(super) fn queue_error<E>(queue: &str, operation: &str, err: exo_aws::SdkError<E>) -> ExoError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match service_code(&err).map(|(code, _)| code) {
        Some("AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist") => queue_not_found(queue),
        Some("ReceiptHandleIsInvalid" | "InvalidReceiptHandle") => {
            ExoError::new(ErrorReason::InvalidReceipt, "receipt is not valid: SQS does not know it")
                .with_field("receipt")
                .with_resource(queue)
        }
        Some("MessageNotInflight" | "AWS.SimpleQueueService.MessageNotInflight") => ExoError::new(
            ErrorReason::ReceiptStale,
            "receipt is stale: the message is no longer in flight under this receipt",
        )
        .with_field("receipt")
        .with_resource(queue),
        Some("AWS.SimpleQueueService.PurgeQueueInProgress" | "PurgeQueueInProgress") => {
            ExoError::new(ErrorReason::Throttled, "SQS allows one purge per queue every 60 s; retry later")
                .with_resource(queue)
                .retryable()
        }
        _ => map_error("sqs", operation, err).with_resource(queue),
    }
}

impl SqsQueue {
    /// Connects with `settings`; `operation_timeout` bounds each SQS call (long polls included).
    pub async fn connect(settings: &AwsSettings, operation_timeout: Duration) -> ExoResult<Self> {
        let config = exo_aws::sdk_config(settings, operation_timeout).await?;
        use Capability::*;
        Ok(Self {
            descriptor: Descriptor {
                backend: "sqs",
                capabilities: [
                    LongPoll,
                    Delay,
                    Retention,
                    DeadLetter,
                    ChangeVisibility,
                    Purge,
                    Durable,
                    Topics,
                ]
                .into(),
                limits: sqs_limits(),
            },
            client: Client::new(&config),
            name_prefix: settings.name_prefix.clone(),
            urls: Mutex::new(HashMap::new()),
            sns: aws_sdk_sns::Client::new(&config),
            topic_arns: Mutex::new(HashMap::new()),
            topic_views: Mutex::new(HashMap::new()),
        })
    }

    pub(super) fn physical(&self, name: &str) -> String {
        format!("{}{name}", self.name_prefix)
    }

    pub(super) fn cached_url(&self, name: &str) -> Option<String> {
        self.urls.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    pub(super) fn forget(&self, name: &str) {
        self.urls.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
    }

    /// The queue's URL; QUEUE_NOT_FOUND if it does not exist.
    pub(super) async fn url(&self, name: &str) -> ExoResult<String> {
        if let Some(url) = self.cached_url(name) {
            return Ok(url);
        }
        let out = self
            .client
            .get_queue_url()
            .queue_name(self.physical(name))
            .send()
            .await
            .map_err(|e| queue_error(name, "GetQueueUrl", e))?;
        let url = out.queue_url.ok_or_else(|| ExoError::internal("SQS returned no queue URL"))?;
        self.urls.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), url.clone());
        Ok(url)
    }

    /// Runs `call` with the queue's URL; a cached URL of a queue deleted behind the proxy's back
    /// is forgotten so the next call looks it up again.
    pub(super) async fn with_url<T, F, Fut>(&self, name: &QueueName, call: F) -> ExoResult<T>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = ExoResult<T>>,
    {
        let url = self.url(name.as_str()).await?;
        let result = call(url).await;
        if result.as_ref().is_err_and(|e| e.reason == ErrorReason::QueueNotFound) {
            self.forget(name.as_str());
        }
        result
    }

    pub(super) async fn attributes(
        &self,
        name: &str,
        url: &str,
    ) -> ExoResult<HashMap<QueueAttributeName, String>> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .map_err(|e| queue_error(name, "GetQueueAttributes", e))?;
        Ok(out.attributes.unwrap_or_default())
    }

    pub(super) fn options_of(&self, attributes: &HashMap<QueueAttributeName, String>) -> pb::QueueOptions {
        // SQS reports every attribute; a missing one is the contract's default, never zero.
        let number = |key: QueueAttributeName, default: u32| {
            attributes.get(&key).and_then(|v| v.parse::<u32>().ok()).unwrap_or(default)
        };
        let (max_receives, dead_letter_queue) = attributes
            .get(&QueueAttributeName::RedrivePolicy)
            .and_then(|policy| serde_json::from_str::<serde_json::Value>(policy).ok())
            .map(|policy| {
                let max = match &policy["maxReceiveCount"] {
                    serde_json::Value::Number(n) => n.as_u64().unwrap_or_default() as u32,
                    serde_json::Value::String(s) => s.parse().unwrap_or_default(),
                    _ => 0,
                };
                let arn = policy["deadLetterTargetArn"].as_str().unwrap_or_default();
                let physical = arn.rsplit(':').next().unwrap_or_default();
                let logical = physical.strip_prefix(self.name_prefix.as_str()).unwrap_or(physical);
                (max, logical.to_owned())
            })
            .unwrap_or_default();
        pb::QueueOptions {
            visibility_timeout_seconds: Some(number(
                QueueAttributeName::VisibilityTimeout,
                DEFAULT_VISIBILITY_SECONDS,
            )),
            retention_seconds: number(QueueAttributeName::MessageRetentionPeriod, DEFAULT_RETENTION_SECONDS),
            delay_seconds: number(QueueAttributeName::DelaySeconds, 0),
            max_receives,
            dead_letter_queue,
        }
    }

    pub(super) fn info_of(
        name: &str,
        options: pb::QueueOptions,
        attributes: &HashMap<QueueAttributeName, String>,
    ) -> pb::QueueInfo {
        let count = |key: QueueAttributeName| {
            attributes.get(&key).and_then(|v| v.parse::<u64>().ok()).unwrap_or_default()
        };
        pb::QueueInfo {
            name: name.to_owned(),
            options: Some(options),
            visible_messages: count(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight_messages: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed_messages: count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
            created_at_ms: count(QueueAttributeName::CreatedTimestamp) * 1000,
        }
    }

    pub(super) async fn info(&self, name: &QueueName) -> ExoResult<pb::QueueInfo> {
        self.with_url(name, |url| async move {
            let attributes = self.attributes(name.as_str(), &url).await?;
            Ok(Self::info_of(name.as_str(), self.options_of(&attributes), &attributes))
        })
        .await
    }

    /// One SendMessageBatch call; results in `entries` order.
    pub(super) async fn send_chunk(
        &self,
        name: &QueueName,
        url: &str,
        entries: Vec<SendMessageBatchRequestEntry>,
    ) -> ExoResult<Vec<ExoResult<String>>> {
        let count = entries.len();
        let out = self
            .client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| queue_error(name.as_str(), "SendMessageBatch", e))?;
        let mut results: Vec<ExoResult<String>> =
            (0..count).map(|_| Err(ExoError::internal("SQS did not report this entry"))).collect();
        for ok in out.successful {
            if let Ok(index) = ok.id.parse::<usize>()
                && index < count
            {
                results[index] = Ok(ok.message_id);
            }
        }
        for failed in out.failed {
            if let Ok(index) = failed.id.parse::<usize>()
                && index < count
            {
                let why = failed.message.unwrap_or_default();
                let err = ExoError::new(
                    if failed.sender_fault {
                        ErrorReason::InvalidArgument
                    } else {
                        ErrorReason::BackendUnavailable
                    },
                    format!("SQS refused the entry: {}: {why}", failed.code),
                )
                .with_resource(name.as_str())
                .with_retryable(!failed.sender_fault);
                results[index] = Err(err);
            }
        }
        Ok(results)
    }

    pub(super) async fn receive_once(
        &self,
        name: &QueueName,
        url: &str,
        count: usize,
        wait: Duration,
        visibility: Option<u32>,
    ) -> ExoResult<Vec<pb::Message>> {
        let out = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(count.min(SQS_BATCH) as i32)
            .wait_time_seconds(wait_seconds(wait, exo_proxy_core::deadline::remaining()))
            .set_visibility_timeout(visibility.map(|v| v as i32))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| queue_error(name.as_str(), "ReceiveMessage", e))?;
        let mut messages = Vec::new();
        for m in out.messages.unwrap_or_default() {
            let system = m.attributes.unwrap_or_default();
            let number = |key: MessageSystemAttributeName| {
                system.get(&key).and_then(|v| v.parse::<u64>().ok()).unwrap_or_default()
            };
            let mut attributes = HashMap::new();
            let mut encoding = None;
            let mut binary = Vec::new();
            for (key, value) in m.message_attributes.unwrap_or_default() {
                // A native producer's Binary attribute has no string value: carried as base64
                // and named in BASE64_ATTRIBUTES, never as an empty string.
                let text = match (value.string_value, value.binary_value) {
                    (Some(text), _) => text,
                    (None, Some(blob)) if !key.starts_with("exo.") => {
                        binary.push(key.clone());
                        STANDARD.encode(blob.as_ref())
                    }
                    _ => continue,
                };
                if key == ENCODING_ATTRIBUTE {
                    encoding = Some(text);
                } else if !key.starts_with("exo.") || key == TOPIC_ATTRIBUTE || key == PUBLISH_ID_ATTRIBUTE {
                    // The proxy's own namespace reaches consumers only as a topic copy's marks.
                    attributes.insert(key, text);
                }
            }
            if !binary.is_empty() {
                binary.sort();
                attributes.insert(BASE64_ATTRIBUTES.to_owned(), binary.join(","));
            }
            let raw = m.body.as_deref().unwrap_or("");
            // A body the proxy cannot decode is delivered as it is, marked, so one foreign
            // message never blocks the queue (nor hides the good messages received with it).
            let body = decode_body(raw, encoding.as_deref()).unwrap_or_else(|why| {
                attributes.insert(UNDECODABLE_ATTRIBUTE.to_owned(), why);
                raw.as_bytes().to_vec()
            });
            let handle = m.receipt_handle.unwrap_or_default();
            messages.push(pb::Message {
                message_id: m.message_id.unwrap_or_default(),
                receipt: encode_receipt(name, &handle),
                body,
                attributes,
                dequeue_count: number(MessageSystemAttributeName::ApproximateReceiveCount) as u32,
                enqueued_at_ms: number(MessageSystemAttributeName::SentTimestamp),
            });
        }
        Ok(messages)
    }
}

/// The long-poll wait to ask SQS for: whole seconds, rounded down, and with a caller's deadline
/// (`left` of it) leaving [`SQS_ANSWER_ALLOWANCE`] for SQS to answer — a poll that ran up to the
/// deadline would outlive it by the request's own time, and the caller would get a timeout
/// instead of an empty answer.
pub(super) fn wait_seconds(wait: Duration, left: Option<Duration>) -> i32 {
    let wait = match left {
        Some(left) => wait.min(left.saturating_sub(SQS_ANSWER_ALLOWANCE)),
        None => wait,
    };
    i32::try_from(wait.as_secs()).unwrap_or(i32::MAX)
}

/// What a ReceiveMessage call takes beyond its wait, at most, as allowed for under a deadline.
pub(super) const SQS_ANSWER_ALLOWANCE: Duration = Duration::from_millis(500);
