//! Large messages (claim-check): bodies above the queue backend's own limit go to an object
//! store, and the queue carries a reference in the format of the AWS SQS Extended Client.
//!
//! - **Send.** A message whose body plus attributes exceed the backend's limit is stored as the
//!   object `<prefix><queue>/<uuid v4>` in the configured bucket first; the queue gets the
//!   reference `["software.amazon.payloadoffloading.PayloadS3Pointer",{"s3BucketName":…,
//!   "s3Key":…}]` as its body and the attribute `ExtendedPayloadSize` (the body's size), as the
//!   extended client writes them. A native consumer using that client (Java or Python) reads the
//!   whole body; one without it sees the reference. Smaller messages are sent as they are.
//! - **Receive.** A message carrying `ExtendedPayloadSize` (or the older `SQSLargePayloadSize`)
//!   and a reference (either pointer class) gets its body back from the store; a reference
//!   written by the extended client itself is read the same way. Its receipt then also names
//!   the object. A reference whose object is gone is delivered as it is, marked with
//!   [`crate::model::UNDECODABLE_ATTRIBUTE`], so it never blocks the queue (it reaches the
//!   dead-letter queue like any message nobody acks); a store that cannot be read right now
//!   gives the message back to the queue (visibility 0) rather than deliver it without its body.
//! - **Ack** deletes the message, then its object (only objects in the configured bucket). A
//!   failed object delete is left to the sweeper. On a backend without STALE_RECEIPTS an ack
//!   with a superseded receipt may delete the message, as the contract says, and here its body.
//! - **Sweeper.** Messages also leave by expiry, purge, deletion of their queue, or an ack made
//!   outside the proxy; their objects stay. Every `sweep-every`, objects under the prefix older
//!   than the longest time their message could still exist are deleted: the retention of their
//!   queue plus that of its dead-letter chain (a backend may restart retention when it
//!   dead-letters), plus `sweep-grace` and the request timeout (a send finishes after its object
//!   was written). An object whose queue no longer exists waits for the longest retention the
//!   backend allows plus that of the longest remaining chain, since its message may have moved
//!   to a dead-letter queue that still exists.
//! - **Limits.** Describe reports LARGE_MESSAGES, the configured `max-message-bytes`, and one
//!   attribute fewer than the backend allows (the reference takes one). Topics keep the
//!   backend's limits: one published body shared by several copies would have no single owner to
//!   delete it.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use exo_objects::{
    backend::ObjectStore,
    model::{BucketName, ByteStream, PutMeta, ReadCondition, WriteCondition},
};
use exo_proto::{common::v1::ErrorReason, queue::v1 as pb};
use exo_proxy_core::{ExoError, ExoResult, now_ms};
use futures::StreamExt;

use crate::ops;
use crate::{
    backend::Queue,
    model::{
        Capability, Descriptor, Published, QueueName, UNDECODABLE_ATTRIBUTE, attribute_bytes, message_bytes,
    },
};

/// The attribute that marks a reference, as the extended client writes it.
pub const SIZE_ATTRIBUTE: &str = "ExtendedPayloadSize";
/// The attribute older extended clients write instead.
pub const LEGACY_SIZE_ATTRIBUTE: &str = "SQSLargePayloadSize";
/// The pointer class the extended client writes.
pub const POINTER_CLASS: &str = "software.amazon.payloadoffloading.PayloadS3Pointer";
/// The pointer class older extended clients write.
pub const LEGACY_POINTER_CLASS: &str = "com.amazon.sqs.javamessaging.MessageS3Pointer";
/// Receipts of messages whose body is an object start with this.
const RECEIPT_PREFIX: &str = "exo-cc1:";
/// Longest receipt the contract allows.
const MAX_RECEIPT: usize = 1024;
/// Most body bytes one receive returns (at least one message whatever its size); the rest go
/// back to the queue at once.
const RECEIVE_BUDGET: usize = 32 * 1024 * 1024;
/// Objects read at once for one receive.
const FETCHES_AT_ONCE: usize = 4;

/// Settings of the layer (the `large-messages:` section less the store's own).
#[derive(Debug, Clone)]
pub struct LargeMessageSettings {
    /// The bucket holding the bodies (the layer's own: the sweeper deletes in it).
    pub bucket: BucketName,
    /// Prefix of every key the layer writes.
    pub prefix: String,
    /// The largest message accepted.
    pub max_message_bytes: u64,
    /// Bounds each store call (and reading an object's bytes).
    pub call_timeout: Duration,
    /// Time added to a body's possible life before the sweeper deletes it.
    pub sweep_grace: Duration,
}

/// A queue backend whose large bodies live in an object store.
pub struct LargeMessageQueue {
    inner: Arc<dyn Queue>,
    store: Arc<dyn ObjectStore>,
    settings: LargeMessageSettings,
    /// The bucket's name as the store's service knows it (what references carry).
    native_bucket: String,
    descriptor: Descriptor,
    /// The backend's own limit: larger messages go to the store.
    inline_max: u64,
    bucket_made: AtomicBool,
}

/// The reference a queue carries in place of a large body.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Pointer(String, PointerTarget);

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct PointerTarget {
    #[serde(rename = "s3BucketName")]
    bucket: String,
    #[serde(rename = "s3Key")]
    key: String,
}

impl LargeMessageQueue {
    /// Wraps `inner` (whose limits must be known: not a `remote` still undescribed) with `store`.
    pub fn new(
        inner: Arc<dyn Queue>,
        store: Arc<dyn ObjectStore>,
        settings: LargeMessageSettings,
    ) -> ExoResult<Self> {
        let own = inner.descriptor();
        let inline_max = own.limits.max_message_bytes;
        if settings.max_message_bytes <= inline_max {
            return Err(ExoError::invalid_argument(
                "large-messages.max-message-bytes",
                format!(
                    "large-messages.max-message-bytes ({}) must be above the backend's own limit ({inline_max})",
                    settings.max_message_bytes
                ),
            ));
        }
        let mut descriptor = own.clone();
        descriptor.capabilities.insert(Capability::LargeMessages);
        descriptor.limits.max_message_bytes = settings.max_message_bytes;
        descriptor.limits.max_attributes = own.limits.max_attributes.saturating_sub(1);
        let native_bucket = store.native_bucket_name(&settings.bucket);
        Ok(Self {
            inner,
            store,
            settings,
            native_bucket,
            descriptor,
            inline_max,
            bucket_made: AtomicBool::new(false),
        })
    }

    async fn timed<T>(&self, what: &str, fut: impl Future<Output = ExoResult<T>>) -> ExoResult<T> {
        tokio::time::timeout(self.settings.call_timeout, fut).await.unwrap_or_else(|_| {
            Err(ExoError::new(
                ErrorReason::Timeout,
                format!("large-message store: {what} took longer than {:?}", self.settings.call_timeout),
            )
            .retryable())
        })
    }

    /// Makes the bucket once (it may exist already, made by a template or by hand).
    async fn ensure_bucket(&self) -> ExoResult<()> {
        if self.bucket_made.load(Ordering::Acquire) {
            return Ok(());
        }
        // Look before making: a role allowed to use the bucket (a template made it) may not be
        // allowed to create buckets.
        let bucket = &self.settings.bucket;
        match self
            .timed(
                "list",
                self.store.list(exo_objects::ops::List {
                    bucket,
                    prefix: &self.settings.prefix,
                    delimiter: "",
                    resume: None,
                    limit: 1,
                }),
            )
            .await
        {
            Ok(_) => {}
            Err(err) if err.reason == ErrorReason::BucketNotFound => {
                self.timed(
                    "create bucket",
                    self.store.create_bucket(exo_objects::ops::CreateBucket { bucket }),
                )
                .await
                .map_err(|e| store_error("cannot make the large-message bucket", e))?;
            }
            Err(err) => return Err(store_error("cannot reach the large-message bucket", err)),
        }
        self.bucket_made.store(true, Ordering::Release);
        Ok(())
    }

    /// The message's size as the backend counts it.
    fn size(message: &pb::OutgoingMessage) -> u64 {
        message_bytes(&message.body, &message.attributes)
    }

    /// Stores a large message's body and returns the message carrying its reference; a small
    /// message is returned as it is. `Err` refuses this message only.
    async fn offload(
        &self,
        queue: &QueueName,
        mut message: pb::OutgoingMessage,
    ) -> ExoResult<(pb::OutgoingMessage, Option<String>)> {
        for reserved in [SIZE_ATTRIBUTE, LEGACY_SIZE_ATTRIBUTE] {
            if message.attributes.contains_key(reserved) {
                return Err(ExoError::new(
                    ErrorReason::InvalidAttribute,
                    format!("attribute name {reserved:?} is reserved: it marks a large-message reference"),
                )
                .with_field(format!("message.attributes[{reserved:?}]")));
            }
        }
        if Self::size(&message) <= self.inline_max {
            return Ok((message, None));
        }
        let key = format!("{}{}/{}", self.settings.prefix, queue.as_str(), uuid::Uuid::new_v4());
        let pointer = serde_json::to_string(&Pointer(
            POINTER_CLASS.to_owned(),
            PointerTarget { bucket: self.native_bucket.clone(), key: key.clone() },
        ))
        .map_err(|e| ExoError::internal(format!("cannot write a large-message reference: {e}")))?;
        let size = message.body.len().to_string();
        let inline = pointer.len() as u64
            + (SIZE_ATTRIBUTE.len() + size.len()) as u64
            + attribute_bytes(&message.attributes);
        if inline > self.inline_max {
            return Err(ExoError::new(
                ErrorReason::MessageTooLarge,
                format!(
                    "the message's attributes leave no room for its large-message reference: attributes and \
                     reference take {inline} bytes of the backend's inline limit of {} bytes",
                    self.inline_max
                ),
            )
            .with_field("message.attributes"));
        }
        let body = Bytes::from(std::mem::take(&mut message.body));
        let put = |body: Bytes| {
            let meta = PutMeta {
                content_type: "application/octet-stream".to_owned(),
                // The key names the queue; no metadata (each service has its own rules for names).
                metadata: HashMap::new(),
                condition: WriteCondition::None,
                content_length: Some(body.len() as u64),
                max_bytes: 0,
            };
            let stream: ByteStream = Box::pin(futures::stream::once(async move { Ok(body) }));
            self.timed(
                "put",
                self.store
                    .put(exo_objects::ops::Put { bucket: &self.settings.bucket, key: &key, meta }, stream),
            )
        };
        self.ensure_bucket().await?;
        let stored = match put(body.clone()).await {
            // Deleted by hand since the proxy made it: made again, once.
            Err(err) if err.reason == ErrorReason::BucketNotFound => {
                self.bucket_made.store(false, Ordering::Release);
                self.ensure_bucket().await?;
                put(body).await
            }
            other => other,
        };
        stored.map_err(|e| store_error("cannot store the large message's body", e))?;
        message.body = pointer.into_bytes();
        message.attributes.insert(SIZE_ATTRIBUTE.to_owned(), size);
        Ok((message, Some(key)))
    }

    /// Deletes objects of messages that were certainly not written; failures are left to the
    /// sweeper.
    async fn discard(&self, keys: impl IntoIterator<Item = String>) {
        for key in keys {
            if let Err(err) = self
                .timed(
                    "delete",
                    self.store.delete(exo_objects::ops::Delete {
                        bucket: &self.settings.bucket,
                        key: &key,
                        if_match: None,
                    }),
                )
                .await
            {
                tracing::warn!(%key, error = %err, "cannot delete an unused large-message body; the sweeper will");
            }
        }
    }

    /// The bucket a reference names, when it is this layer's (by either name).
    fn own_bucket(&self, named: &str) -> bool {
        named == self.native_bucket || named == self.settings.bucket.as_str()
    }

    /// A received message with its body restored. An error (retryable): the store cannot be
    /// read now, give the message back.
    async fn restore(&self, mut message: pb::Message) -> ExoResult<pb::Message> {
        if !marks_reference(&message.attributes) {
            return Ok(message);
        }
        let pointer = match serde_json::from_slice::<Pointer>(&message.body) {
            Ok(p) if p.0 == POINTER_CLASS || p.0 == LEGACY_POINTER_CLASS => p.1,
            // The attribute without a reference: a producer's own attribute, delivered as sent.
            _ => return Ok(message),
        };
        let undecodable = |message: &mut pb::Message, why: String| {
            message.attributes.insert(UNDECODABLE_ATTRIBUTE.to_owned(), why);
        };
        if !self.own_bucket(&pointer.bucket) {
            undecodable(
                &mut message,
                format!(
                    "its body is a reference to bucket '{}', not this proxy's large-message bucket '{}'",
                    pointer.bucket, self.native_bucket
                ),
            );
            return Ok(message);
        }
        let read = async {
            let (_, _, mut stream) = self
                .store
                .get(exo_objects::ops::Get {
                    bucket: &self.settings.bucket,
                    key: &pointer.key,
                    range: None,
                    condition: &ReadCondition::default(),
                })
                .await?;
            let mut body = Vec::new();
            while let Some(chunk) = stream.next().await {
                body.extend_from_slice(&chunk?);
            }
            Ok(body)
        };
        match self.timed("get", read).await {
            Ok(body) => {
                message.body = body;
                message.attributes.remove(SIZE_ATTRIBUTE);
                message.attributes.remove(LEGACY_SIZE_ATTRIBUTE);
                let target = format!("{}/{}", self.settings.bucket.as_str(), pointer.key);
                let wrapped =
                    format!("{RECEIPT_PREFIX}{}:{}", URL_SAFE_NO_PAD.encode(target), message.receipt);
                if wrapped.len() <= MAX_RECEIPT {
                    message.receipt = wrapped;
                } else {
                    // Too long to name the object: acking leaves it to the sweeper.
                    tracing::debug!(key = %pointer.key, "large-message receipt too long to name its object");
                }
                Ok(message)
            }
            Err(err)
                if err.reason == ErrorReason::ObjectNotFound || err.reason == ErrorReason::BucketNotFound =>
            {
                undecodable(
                    &mut message,
                    format!("its body was stored as object '{}', which is gone", pointer.key),
                );
                Ok(message)
            }
            // The store is out for now: the message waits in the queue rather than go without.
            Err(err) if err.retryable || err.reason == ErrorReason::BackendUnavailable => {
                tracing::warn!(key = %pointer.key, error = %err, "cannot read a large message's body now; giving the message back");
                Err(ExoError::new(
                    ErrorReason::BackendUnavailable,
                    format!(
                        "a received message's body is in the large-message store, which cannot be read now \
                         (the message goes back to the queue): {}",
                        err.message
                    ),
                )
                .retryable())
            }
            // A reference the store refuses outright (a foreign producer's malformed key, a
            // permission missing): given back it would come back forever, so it is delivered.
            Err(err) => {
                undecodable(
                    &mut message,
                    format!(
                        "its body is a reference to object '{}' that cannot be read: {}",
                        pointer.key, err.message
                    ),
                );
                Ok(message)
            }
        }
    }

    /// Splits a receipt into the object it names (if any) and the backend's receipt.
    fn unwrap_receipt<'r>(
        &self,
        queue: &QueueName,
        receipt: &'r str,
    ) -> ExoResult<(Option<String>, &'r str)> {
        let Some(rest) = receipt.strip_prefix(RECEIPT_PREFIX) else {
            return Ok((None, receipt));
        };
        let invalid = || {
            ExoError::new(ErrorReason::InvalidReceipt, "receipt is not valid: not a large-message receipt")
                .with_field("receipt")
                .with_resource(queue.as_str())
        };
        let (target, inner) = rest.split_once(':').ok_or_else(invalid)?;
        let target = URL_SAFE_NO_PAD
            .decode(target)
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .ok_or_else(invalid)?;
        let (bucket, key) = target.split_once('/').ok_or_else(invalid)?;
        // Only this layer's bucket: a receipt is the client's word, and the bucket is ours.
        let key = (bucket == self.settings.bucket.as_str() && !key.is_empty()).then(|| key.to_owned());
        Ok((key, inner))
    }

    /// Deletes objects under the prefix that no message can still reference; returns how many.
    pub async fn sweep(&self) -> ExoResult<usize> {
        let lives = self.queue_lives().await?;
        let longest = lives.values().copied().max().unwrap_or_default();
        let orphan_life =
            Duration::from_secs(u64::from(self.inner.descriptor().limits.max_retention_seconds)) + longest;
        let margin = self.settings.sweep_grace + self.settings.call_timeout;
        let now = now_ms();
        let mut deleted = 0;
        let mut resume = None;
        loop {
            let page = self
                .timed(
                    "list",
                    self.store.list(exo_objects::ops::List {
                        bucket: &self.settings.bucket,
                        prefix: &self.settings.prefix,
                        delimiter: "",
                        resume: resume.take(),
                        limit: 1000,
                    }),
                )
                .await?;
            for object in &page.objects {
                let rest = object.key.strip_prefix(self.settings.prefix.as_str()).unwrap_or(&object.key);
                let life = rest
                    .split_once('/')
                    .and_then(|(queue, _)| lives.get(queue).copied())
                    .unwrap_or(orphan_life);
                let age = Duration::from_millis(now.saturating_sub(object.last_modified_ms));
                if age > life + margin {
                    self.timed(
                        "delete",
                        self.store.delete(exo_objects::ops::Delete {
                            bucket: &self.settings.bucket,
                            key: &object.key,
                            if_match: None,
                        }),
                    )
                    .await?;
                    deleted += 1;
                }
            }
            match page.next {
                Some(next) => resume = Some(next),
                None => break,
            }
        }
        Ok(deleted)
    }

    /// Per queue, the longest a message in it may still exist: its retention plus that of its
    /// dead-letter chain.
    async fn queue_lives(&self) -> ExoResult<HashMap<String, Duration>> {
        let mut options = HashMap::new();
        let mut after: Option<String> = None;
        loop {
            let names = self
                .inner
                .list_queues(ops::ListQueues { prefix: "", start_after: after.as_deref(), limit: 1000 })
                .await?;
            let Some(last) = names.last().cloned() else { break };
            for name in names {
                let Ok(queue) = QueueName::parse("queue", &name, "queue") else { continue };
                match self.inner.queue_info(ops::QueueInfo { queue: &queue }).await {
                    Ok(info) => {
                        let o = info.options.unwrap_or_default();
                        options.insert(name, (o.retention_seconds, o.dead_letter_queue));
                    }
                    // Deleted since it was listed: its objects are orphans.
                    Err(err) if err.reason == ErrorReason::QueueNotFound => {}
                    Err(err) => return Err(err),
                }
            }
            after = Some(last);
        }
        let life = |start: &str| {
            let (mut total, mut at, mut seen) = (0u64, start.to_owned(), HashSet::new());
            while let Some((retention, next)) = options.get(&at) {
                if !seen.insert(at.clone()) {
                    break;
                }
                total += u64::from(*retention);
                at = next.clone();
            }
            Duration::from_secs(total)
        };
        Ok(options.keys().map(|name| (name.clone(), life(name))).collect())
    }

    /// Sweeps every `every` until the task is dropped.
    pub async fn run_sweeper(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            match self.sweep().await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(deleted = n, "large-message sweeper deleted bodies no message references")
                }
                Err(err) => tracing::warn!(error = %err, "large-message sweep failed; trying again later"),
            }
        }
    }
}

/// Whether attributes carry a reference's mark (either extended-client name).
fn marks_reference(attributes: &HashMap<String, String>) -> bool {
    attributes.contains_key(SIZE_ATTRIBUTE) || attributes.contains_key(LEGACY_SIZE_ATTRIBUTE)
}

fn store_error(what: &str, err: ExoError) -> ExoError {
    let retryable = err.retryable || err.reason == ErrorReason::BackendUnavailable;
    let out = ExoError::new(
        if retryable { ErrorReason::BackendUnavailable } else { err.reason },
        format!("{what}: {}", err.message),
    )
    .with_retryable(retryable);
    match err.retry_after {
        Some(wait) => out.with_retry_after(wait),
        None => out,
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Queue for LargeMessageQueue {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }
    fn is_described(&self) -> bool {
        self.inner.is_described()
    }
    async fn ready(&self) -> ExoResult<()> {
        self.inner.ready().await?;
        self.ensure_bucket().await
    }
    async fn create_queue(&self, op: ops::CreateQueue<'_>) -> ExoResult<(bool, pb::QueueInfo)> {
        self.inner.create_queue(op).await
    }
    async fn delete_queue(&self, op: ops::DeleteQueue<'_>) -> ExoResult<()> {
        self.inner.delete_queue(op).await
    }
    async fn list_queues(&self, op: ops::ListQueues<'_>) -> ExoResult<Vec<String>> {
        self.inner.list_queues(op).await
    }
    async fn queue_info(&self, op: ops::QueueInfo<'_>) -> ExoResult<pb::QueueInfo> {
        self.inner.queue_info(op).await
    }

    async fn send(&self, op: ops::Send<'_>) -> ExoResult<Vec<ExoResult<String>>> {
        let ops::Send { queue: name, messages } = op;
        if messages.iter().all(|m| Self::size(m) <= self.inline_max)
            && !messages.iter().any(|m| marks_reference(&m.attributes))
        {
            return self.inner.send(ops::Send { queue: name, messages }).await;
        }
        let count = messages.len();
        let offloaded: Vec<_> = futures::stream::iter(messages.into_iter().map(|m| self.offload(name, m)))
            .buffered(FETCHES_AT_ONCE)
            .collect()
            .await;
        let mut results: Vec<Option<ExoResult<String>>> = vec![None; count];
        let (mut ready, mut at, mut keys) = (Vec::new(), Vec::new(), Vec::new());
        for (index, outcome) in offloaded.into_iter().enumerate() {
            match outcome {
                Ok((message, key)) => {
                    ready.push(message);
                    at.push(index);
                    keys.push(key);
                }
                Err(err) => results[index] = Some(Err(err)),
            }
        }
        if !ready.is_empty() {
            match self.inner.send(ops::Send { queue: name, messages: ready }).await {
                Ok(sent) => {
                    let mut unused = Vec::new();
                    for ((index, key), outcome) in at.into_iter().zip(keys).zip(sent) {
                        // Only a refusal certainly wrote nothing; an unavailable backend may have.
                        if let (Err(err), Some(key)) = (&outcome, key)
                            && !err.retryable
                        {
                            unused.push(key);
                        }
                        results[index] = Some(outcome);
                    }
                    self.discard(unused).await;
                }
                Err(err) => {
                    if !err.retryable {
                        self.discard(keys.into_iter().flatten()).await;
                    }
                    return Err(err);
                }
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(ExoError::internal("backend returned too few results"))))
            .collect())
    }

    async fn receive(&self, op: ops::Receive<'_>) -> ExoResult<Vec<pb::Message>> {
        let name = op.queue;
        let messages = self.inner.receive(op).await?;
        // Most receives carry no reference: they pass as they are.
        if !messages.iter().any(|m| marks_reference(&m.attributes)) {
            return Ok(messages);
        }
        let restored: Vec<_> = futures::stream::iter(messages.into_iter().map(|m| {
            let receipt = m.receipt.clone();
            async move { (receipt, self.restore(m).await) }
        }))
        .buffered(FETCHES_AT_ONCE)
        .collect()
        .await;
        let mut out = Vec::with_capacity(restored.len());
        let mut bytes = 0;
        let mut outage = None;
        for (receipt, outcome) in restored {
            if let Err(err) = &outcome {
                outage.get_or_insert_with(|| err.clone());
            }
            match outcome {
                // Bounded memory per receive: past the budget, messages go back to the queue.
                Ok(message) if out.is_empty() || bytes + message.body.len() <= RECEIVE_BUDGET => {
                    bytes += message.body.len();
                    out.push(message);
                }
                Ok(_) | Err(_) => {
                    // Back to the queue at once where the backend can; else after its visibility.
                    if self.inner.descriptor().supports(Capability::ChangeVisibility)
                        && let Err(err) = self
                            .inner
                            .change_visibility(ops::ChangeVisibility {
                                queue: name,
                                receipt: &receipt,
                                seconds: 0,
                            })
                            .await
                    {
                        tracing::warn!(queue = %name, error = %err, "cannot give a large message back; it returns after its visibility timeout");
                    }
                }
            }
        }
        // Nothing deliverable because the store is out: say so (retryable) rather than answer
        // an empty receive at once, which would set consumers polling in a tight loop.
        match outage {
            Some(err) if out.is_empty() => Err(err),
            _ => Ok(out),
        }
    }

    async fn ack(&self, op: ops::Ack<'_>) -> ExoResult<()> {
        let ops::Ack { queue: name, receipt } = op;
        let (key, inner) = self.unwrap_receipt(name, receipt)?;
        self.inner.ack(ops::Ack { queue: name, receipt: inner }).await?;
        if let Some(key) = key {
            self.discard([key]).await;
        }
        Ok(())
    }
    async fn change_visibility(&self, op: ops::ChangeVisibility<'_>) -> ExoResult<()> {
        let ops::ChangeVisibility { queue: name, receipt, seconds } = op;
        let (_, inner) = self.unwrap_receipt(name, receipt)?;
        self.inner.change_visibility(ops::ChangeVisibility { queue: name, receipt: inner, seconds }).await
    }
    async fn purge(&self, op: ops::Purge<'_>) -> ExoResult<()> {
        self.inner.purge(op).await
    }

    fn topic_limits(&self) -> pb::TopicLimits {
        // The backend's, with room on every copy for the queue's reference attribute.
        let mut limits = self.inner.topic_limits();
        limits.max_attributes =
            limits.max_attributes.min(crate::model::topic_limits(&self.descriptor.limits).max_attributes);
        limits
    }
    async fn create_topic(&self, op: ops::CreateTopic<'_>) -> ExoResult<(bool, pb::TopicInfo)> {
        self.inner.create_topic(op).await
    }
    async fn delete_topic(&self, op: ops::DeleteTopic<'_>) -> ExoResult<()> {
        self.inner.delete_topic(op).await
    }
    async fn list_topics(&self, op: ops::ListTopics<'_>) -> ExoResult<Vec<String>> {
        self.inner.list_topics(op).await
    }
    async fn topic_info(&self, op: ops::TopicInfo<'_>) -> ExoResult<pb::TopicInfo> {
        self.inner.topic_info(op).await
    }
    async fn create_subscription(
        &self,
        op: ops::CreateSubscription<'_>,
    ) -> ExoResult<(bool, pb::Subscription)> {
        self.inner.create_subscription(op).await
    }
    async fn delete_subscription(&self, op: ops::DeleteSubscription<'_>) -> ExoResult<()> {
        self.inner.delete_subscription(op).await
    }
    async fn publish(&self, op: ops::Publish<'_>) -> ExoResult<Vec<ExoResult<Published>>> {
        self.inner.publish(op).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_the_extended_clients() {
        let text = serde_json::to_string(&Pointer(
            POINTER_CLASS.to_owned(),
            PointerTarget { bucket: "b".into(), key: "k/1".into() },
        ))
        .unwrap();
        assert_eq!(
            text,
            r#"["software.amazon.payloadoffloading.PayloadS3Pointer",{"s3BucketName":"b","s3Key":"k/1"}]"#
        );
        // As the Python extended client writes it (json.dumps: spaces after separators).
        let python =
            r#"["com.amazon.sqs.javamessaging.MessageS3Pointer", {"s3BucketName": "b", "s3Key": "x"}]"#;
        let parsed: Pointer = serde_json::from_str(python).unwrap();
        assert_eq!(parsed.0, LEGACY_POINTER_CLASS);
        assert_eq!(parsed.1.key, "x");
    }
}
