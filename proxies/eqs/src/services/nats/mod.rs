//! `nats`: queues in NATS JetStream, one work-queue stream per queue.
//!
//! How the contract maps onto JetStream:
//! - **A queue** is the stream `<namespace>_<queue>` (file storage, work-queue retention) holding
//!   the subject `<namespace>.<queue>`, with one durable pull consumer `exo`. The queue's options
//!   live in the stream's description (`exo-queue {json}`), its retention is the stream's
//!   `max_age`. The namespace lets several apps or environments share one server.
//! - **Send** publishes each message and is acknowledged only once JetStream has stored it (the
//!   publish acknowledgement). Each message carries `Nats-Msg-Id` = its message id, so a send
//!   retried within the stream's duplicate window is stored once.
//! - **Receive** pulls from the consumer: at once what is there, or, when nothing is, it waits
//!   for the first message and then takes what else is ready (JetStream itself would wait to
//!   fill the batch). The visibility timeout is the consumer's `AckWait`; a receive that asks for
//!   another visibility, and ChangeVisibility, send `-NAK` with that delay (the message stays
//!   pending, so its receipt still acks it). The dequeue count is JetStream's delivery count.
//! - **Dead-lettering** is the proxy's: a message delivered more than `max_receives` times is
//!   published to the dead-letter queue's stream (with `Nats-Msg-Id` `dl-<stream>-<sequence>`,
//!   so a move repeated after a crash is stored once) and then acked — never returned. (The
//!   server's MaxDeliver only stops deliveries and tells an advisory subscriber, which would lose
//!   the message while no proxy listens.)
//! - **Receipts** are the delivery's ack subject (`$JS.ACK.<stream>.exo.…`), base64url: the
//!   proxy checks a receipt names this queue's stream and consumer before sending anything.
//! - **Attributes** are message headers of the same name. A value NATS headers cannot carry as
//!   it is (a line break, or leading or trailing blanks) travels base64 and is listed in the
//!   header `exo.base64-values`; an attribute named `Nats-…` (the server's namespace) travels as
//!   `exo.attr.<name>`. A foreign producer's headers arrive as attributes (repeated headers joined
//!   with `,`); a message without `exo.message-id` gets its `Nats-Msg-Id`, else its stream
//!   sequence, as its id.
//!
//! - **Topics** (see [`topics`]): the registry is the key-value bucket `<namespace>_exo_topics`
//!   (one key per topic holding its subscriptions, changed by compare-and-set); a publish is
//!   acknowledged once it is stored in the outbox stream `<namespace>_exo_outbox`, then the proxy
//!   puts a copy into each matching subscription's stream and deletes the outbox message. A
//!   proxy that dies in between leaves it to every proxy's outbox drainer.
//!
//! Not declared, by the server's nature:
//! - `DELAY`: JetStream (before 2.12's message scheduling) cannot hold a message back until a
//!   time; holding it in the proxy would count it as ready and spend a delivery on it.
//! - `STALE_RECEIPTS`: JetStream acknowledges by stream sequence, so an ack sent on an earlier
//!   delivery's subject still acknowledges the message.
//!
//! Durable: file storage; the server writes a message before it acknowledges the publish (it
//! fsyncs on its own interval, so acknowledged messages survive a restart of the server
//! process, and of the machine only when the server is configured with `sync_interval: always`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_nats::{
    HeaderMap, HeaderValue,
    jetstream::{
        self, ErrorCode,
        consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
        context::PublishErrorKind,
        stream::{self, RetentionPolicy, StorageType},
    },
};
use async_trait::async_trait;
use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use bytes::Bytes;
use exo_proto::{common::v1::ErrorReason, queue::v1 as pb};
use exo_proxy_core::{ExoError, ExoResult, config::ConfigError, secret::SecretRef, with_causes};
use futures::{StreamExt, TryStreamExt, future::join_all};
use serde::{Deserialize, Serialize};

use crate::ops;
use crate::{
    backend::Queue,
    config::DEFAULT_MAX_MESSAGE_BYTES,
    model::{Capability, Descriptor, Published, QueueName, local_limits, queue_not_found},
    services::{StoredOptions, already_exists, dead_letter_missing, existing_queue, new_message_id},
};

mod topics;

/// The durable consumer every proxy receives through.
const CONSUMER: &str = "exo";
/// The header holding the contract's message id.
const MESSAGE_ID: &str = "exo.message-id";
/// The header listing attributes whose values travel base64.
const BASE64_VALUES: &str = "exo.base64-values";
/// Prefix of the header carrying an attribute whose name is in the server's `Nats-` namespace.
const ESCAPED: &str = "exo.attr.";
/// What the description of a stream the proxy created starts with.
const OPTIONS_TAG: &str = "exo-queue ";
/// Room left in the server's max_payload for the headers (names, values, framing).
const HEADER_ALLOWANCE: u64 = 4096;
/// How long a pull may outlast its wait before the proxy stops waiting for the server to close it.
const PULL_GRACE: Duration = Duration::from_secs(1);
/// How long a receive that may not wait still waits for a message published just before it.
const SETTLE: Duration = Duration::from_millis(10);
/// How long the options of a queue are taken from memory before they are read again.
const OPTIONS_TTL: Duration = Duration::from_secs(2);

/// The settings of a `nats` queue backend.
///
/// ```yaml
/// backend:
///   kind: nats
///   url: nats://10.0.0.5:4222,nats://10.0.0.6:4222
///   namespace: shop-prod
///   user: shop                 # or token:
///   password: env:NATS_PASSWORD
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NatsQueueConfig {
    /// Server URL(s), comma-separated.
    #[serde(default = "default_url")]
    pub url: String,
    /// Prefix of the streams and subjects: one per app or environment sharing the server.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// User name, with `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The password (a secret reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
    /// An authentication token (a secret reference), instead of user and password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretRef>,
    /// Replicas of each stream (1 on a single server; 3 on a cluster).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// Largest message in bytes (the server's `max_payload` must hold it plus headers).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u64,
    /// Require TLS (implied by a `tls://` URL). The server's certificate and host name are always
    /// verified: against `ca-file`, else the system's roots.
    #[serde(default)]
    pub tls: bool,
    /// PEM file of the certificate authorities that may sign the server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate (PEM), with `client-key-file`, for servers that verify clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<std::path::PathBuf>,
    /// The client certificate's key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<std::path::PathBuf>,
}

fn default_url() -> String {
    "nats://127.0.0.1:4222".into()
}

fn default_namespace() -> String {
    "eqs".into()
}

fn default_replicas() -> usize {
    1
}

fn default_max_message_bytes() -> u64 {
    DEFAULT_MAX_MESSAGE_BYTES
}

impl Default for NatsQueueConfig {
    fn default() -> Self {
        Self {
            url: default_url(),
            namespace: default_namespace(),
            user: None,
            password: None,
            token: None,
            replicas: default_replicas(),
            max_message_bytes: default_max_message_bytes(),
            tls: false,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
        }
    }
}

impl NatsQueueConfig {
    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |why: String| Err(ConfigError::Invalid(why));
        if self.url.trim().is_empty() {
            return invalid("backend.url is empty".into());
        }
        let ns = &self.namespace;
        // A stream name and a subject token at once: no '.', '*', '>' or blanks.
        if ns.is_empty()
            || ns.len() > 32
            || !ns.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return invalid(format!("backend.namespace {ns:?} must be 1 to 32 of A-Z a-z 0-9 '-' '_'"));
        }
        if self.token.is_some() && (self.user.is_some() || self.password.is_some()) {
            return invalid("backend: give either token or user and password, not both".into());
        }
        if self.password.is_some() != self.user.is_some() {
            return invalid("backend: user and password go together".into());
        }
        if !(1..=5).contains(&self.replicas) {
            return invalid(format!("backend.replicas is {}; JetStream allows 1 to 5", self.replicas));
        }
        if self.max_message_bytes == 0 {
            return invalid("backend.max-message-bytes must be above 0".into());
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return invalid("backend: client-cert-file and client-key-file go together".into());
        }
        for (key, path) in [
            ("ca-file", &self.ca_file),
            ("client-cert-file", &self.client_cert_file),
            ("client-key-file", &self.client_key_file),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                return invalid(format!("backend.{key} {} is not a readable file", path.display()));
            }
        }
        Ok(())
    }
}

impl exo_proxy_core::registry::Backend for NatsQueue {
    type Opened = Arc<dyn Queue>;
    type Context = crate::services::OpenContext;
    type Config = NatsQueueConfig;

    fn settings(_data: Option<std::path::PathBuf>) -> NatsQueueConfig {
        NatsQueueConfig::default()
    }

    fn validate(config: &NatsQueueConfig) -> Result<(), ConfigError> {
        config.check()
    }

    fn largest_item(config: &NatsQueueConfig) -> Option<u64> {
        Some(config.max_message_bytes)
    }

    fn open<'a>(
        config: &'a NatsQueueConfig,
        context: &'a Self::Context,
    ) -> exo_proxy_core::registry::BoxFuture<'a, ExoResult<Self::Opened>> {
        Box::pin(async move {
            let queue = Arc::new(NatsQueue::connect(config, context.call_timeout).await?);
            topics::spawn_drainer(Arc::downgrade(&queue));
            let queue: Self::Opened = queue;
            Ok(queue)
        })
    }
}

impl StoredOptions {
    /// The options of a stream: the proxy's own from the description, or, for a stream made by
    /// hand, what its configuration says (its consumer's ack wait is read when it exists).
    fn of_stream(config: &stream::Config, ack_wait: Option<Duration>) -> Self {
        if let Some(stored) = config
            .description
            .as_deref()
            .and_then(|d| d.strip_prefix(OPTIONS_TAG))
            .and_then(|json| serde_json::from_str::<StoredOptions>(json).ok())
        {
            return stored;
        }
        Self {
            visibility: ack_wait
                .map(|d| d.as_secs() as u32)
                .unwrap_or(crate::model::DEFAULT_VISIBILITY_SECONDS),
            retention: u32::try_from(config.max_age.as_secs()).unwrap_or(u32::MAX),
            max_receives: 0,
            dead_letter_queue: String::new(),
        }
    }
}

/// What a receive needs of a queue, kept for [`OPTIONS_TTL`].
struct QueueHandle {
    options: StoredOptions,
    consumer: PullConsumer,
    read_at: Instant,
}

/// Queues in NATS JetStream.
pub struct NatsQueue {
    descriptor: Descriptor,
    client: async_nats::Client,
    js: jetstream::Context,
    namespace: String,
    replicas: usize,
    max_payload: u64,
    handles: Mutex<HashMap<String, Arc<QueueHandle>>>,
    /// The topic registry, once it exists.
    registry: tokio::sync::OnceCell<jetstream::kv::Store>,
    /// How many times the connection has been lost: a call in flight when it changes has lost
    /// its answer with the connection.
    lost: tokio::sync::watch::Receiver<u64>,
}

impl std::fmt::Debug for NatsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsQueue").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

/// A transport failure (no answer, a dropped connection): retryable.
fn unavailable(operation: &str, err: impl std::fmt::Display) -> ExoError {
    ExoError::new(ErrorReason::BackendUnavailable, format!("NATS {operation}: {err}")).retryable()
}

/// An error JetStream answered with.
fn api_error(operation: &str, err: &jetstream::Error) -> ExoError {
    let message = format!("NATS {operation}: {err}");
    match err.error_code() {
        ErrorCode::STORAGE_RESOURCES_EXCEEDED
        | ErrorCode::INSUFFICIENT_RESOURCES
        | ErrorCode::ACCOUNT_RESOURCES_EXCEEDED
        | ErrorCode::MAXIMUM_STREAMS_LIMIT => ExoError::new(ErrorReason::StorageFull, message),
        ErrorCode::CLUSTER_NOT_AVAILABLE
        | ErrorCode::CLUSTER_NO_PEERS
        | ErrorCode::CLUSTER_INCOMPLETE
        | ErrorCode::CLUSTER_NOT_LEADER
        | ErrorCode::JETSTREAM_NOT_ENABLED
        | ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT => {
            ExoError::new(ErrorReason::BackendUnavailable, message).retryable()
        }
        _ => ExoError::internal(message),
    }
}

/// Fails unless the server answers JetStream's account info without an error (the raw JSON:
/// its shape differs between server versions).
async fn jetstream_enabled(client: &async_nats::Client) -> ExoResult<()> {
    let answer = client
        .request("$JS.API.INFO", "".into())
        .await
        .map_err(|e| unavailable("JetStream account info (is JetStream enabled on the server?)", e))?;
    let body: serde_json::Value = serde_json::from_slice(&answer.payload).unwrap_or_default();
    match body.get("error") {
        None => Ok(()),
        Some(error) => Err(ExoError::new(
            ErrorReason::BackendUnavailable,
            format!("NATS JetStream is not available to this account: {error}"),
        )),
    }
}

/// Whether an API error says the stream (or its consumer) is not there.
fn is_not_found(err: &jetstream::Error) -> bool {
    matches!(err.error_code(), ErrorCode::STREAM_NOT_FOUND | ErrorCode::CONSUMER_NOT_FOUND)
}

/// Whether a publish was refused because the message is over the stream's `max_msg_size`.
fn exceeds_stream_limit(err: &jetstream::context::PublishError) -> bool {
    std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .is_some_and(|e| e.error_code() == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM)
}

/// The two forms of a JetStream ack subject (ADR-15): the stream is token 2 of 9, or token 4 of
/// 11 and more (with domain and account hash).
fn ack_subject_names(subject: &str) -> Option<(&str, &str)> {
    let tokens: Vec<&str> = subject.split('.').collect();
    if tokens.len() < 9 || tokens[0] != "$JS" || tokens[1] != "ACK" {
        return None;
    }
    let at = if tokens.len() == 9 {
        2
    } else if tokens.len() >= 11 {
        4
    } else {
        return None;
    };
    let name_ok =
        |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let numbers_ok =
        tokens[at + 2..at + 7].iter().all(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()));
    (tokens[2..].iter().all(|t| name_ok(t)) && numbers_ok).then(|| (tokens[at], tokens[at + 1]))
}

/// The ack-subject payload that makes a delivered message visible again after `seconds` (at
/// once for 0) while it stays pending, so its receipt still acks it.
fn nak(seconds: u32) -> String {
    if seconds == 0 {
        "-NAK".to_owned()
    } else {
        format!("-NAK {{\"delay\": {}}}", u64::from(seconds) * 1_000_000_000)
    }
}

/// Writes attributes as headers (see the module documentation).
fn attribute_headers(headers: &mut HeaderMap, attributes: HashMap<String, String>) {
    let mut encoded = Vec::new();
    for (name, value) in attributes {
        let header = if name.len() >= 5 && name[..5].eq_ignore_ascii_case("nats-") {
            format!("{ESCAPED}{name}")
        } else {
            name.clone()
        };
        let plain = value.trim() == value && !value.contains(['\r', '\n']);
        let value = if plain {
            value
        } else {
            encoded.push(name);
            STANDARD.encode(value.as_bytes())
        };
        headers.insert(header.as_str(), value.as_str());
    }
    if !encoded.is_empty() {
        encoded.sort();
        headers.insert(BASE64_VALUES, encoded.join(",").as_str());
    }
}

/// Reads headers back into the message id (if the proxy set one) and attributes.
fn read_headers(headers: Option<&HeaderMap>) -> (Option<String>, Option<String>, HashMap<String, String>) {
    let mut attributes = HashMap::new();
    let (mut message_id, mut nats_id) = (None, None);
    let Some(headers) = headers else { return (None, None, attributes) };
    let joined = |values: &Vec<HeaderValue>| values.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(",");
    let mut encoded: Vec<String> = Vec::new();
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        if name == MESSAGE_ID {
            message_id = Some(joined(values));
        } else if name == BASE64_VALUES {
            encoded = joined(values).split(',').map(str::to_owned).collect();
        } else if name.eq_ignore_ascii_case("Nats-Msg-Id") {
            nats_id = Some(joined(values));
        } else if let Some(escaped) = name.strip_prefix(ESCAPED) {
            attributes.insert(escaped.to_owned(), joined(values));
        } else if !(name.len() >= 5 && name[..5].eq_ignore_ascii_case("nats-")) {
            attributes.insert(name.to_owned(), joined(values));
        }
    }
    for name in encoded {
        if let Some(value) = attributes.get_mut(&name)
            && let Some(text) = STANDARD.decode(value.as_bytes()).ok().and_then(|b| String::from_utf8(b).ok())
        {
            *value = text;
        }
    }
    (message_id, nats_id, attributes)
}

/// How often [`watch_connection`] looks at the client's state.
const CONNECTION_WATCH_EVERY: Duration = Duration::from_millis(50);

/// Counts each loss of `client`'s connection in `lost`, until nobody watches `lost`.
async fn watch_connection(client: async_nats::Client, lost: Arc<tokio::sync::watch::Sender<u64>>) {
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
            exo_proxy_core::secret::Followed::text(secret.clone(), what)
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

    fn stream_name(&self, queue: &str) -> String {
        format!("{}_{queue}", self.namespace)
    }

    fn subject(&self, queue: &str) -> String {
        format!("{}.{queue}", self.namespace)
    }

    /// Fails at once while the client is reconnecting: a call would otherwise wait out its whole
    /// deadline for a server that is not there (async-nats buffers requests while disconnected).
    fn connected(&self) -> ExoResult<()> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(unavailable("connection", format!("{state:?} (the client is reconnecting)"))),
        }
    }

    /// Runs `call` (which waits on the server) while the connection holds: it fails at once,
    /// BACKEND_UNAVAILABLE (retryable), when the connection is down as it starts or is lost
    /// before it answers, instead of waiting out its deadline for an answer that went with the
    /// connection.
    async fn while_connected<T>(
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

    fn forget(&self, queue: &str) {
        if let Ok(mut handles) = self.handles.lock() {
            handles.remove(queue);
        }
    }

    /// The stream's configuration and state, or `None` when the queue does not exist.
    async fn stream_info(&self, queue: &str) -> ExoResult<Option<stream::Info>> {
        Ok(self.find_stream(self.stream_name(queue)).await?.map(|stream| stream.cached_info().clone()))
    }

    /// The stream `name` with its configuration and state as just read (one request), or `None`
    /// when there is none.
    async fn find_stream(&self, name: String) -> ExoResult<Option<stream::Stream>> {
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
    async fn consumer(&self, queue: &str, visibility: u32) -> ExoResult<PullConsumer> {
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
    async fn handle(&self, queue: &QueueName) -> ExoResult<Arc<QueueHandle>> {
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
    async fn ack_request(&self, queue: &QueueName, subject: &str, payload: String) -> ExoResult<()> {
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
    async fn pull(
        &self,
        consumer: &PullConsumer,
        max: usize,
        wait: Duration,
    ) -> ExoResult<Vec<jetstream::Message>> {
        self.while_connected("pull", self.pull_now(consumer, max, wait)).await
    }

    /// [`Self::pull`], whatever the connection does meanwhile.
    async fn pull_now(
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
    async fn dead_letter(
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
    async fn deliver(
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
    async fn store(
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
    fn ack_subject(&self, queue: &QueueName, receipt: &str) -> ExoResult<String> {
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

#[async_trait]
impl Queue for NatsQueue {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    async fn ready(&self) -> ExoResult<()> {
        self.connected()
    }

    async fn create_queue(&self, op: ops::CreateQueue<'_>) -> ExoResult<(bool, pb::QueueInfo)> {
        let ops::CreateQueue { queue: name, options } = op;
        self.connected()?;
        if let Some(found) =
            existing_queue(self.queue_info(ops::QueueInfo { queue: name }).await, name, options)?
        {
            return Ok(found);
        }
        if !options.dead_letter_queue.is_empty()
            && self.stream_info(&options.dead_letter_queue).await?.is_none()
        {
            return Err(dead_letter_missing(&options.dead_letter_queue));
        }
        let stored = StoredOptions::from_options(options);
        let json = serde_json::to_string(&stored).map_err(|e| ExoError::internal(format!("options: {e}")))?;
        let max_age = Duration::from_secs(u64::from(options.retention_seconds));
        let config = stream::Config {
            name: self.stream_name(name.as_str()),
            description: Some(format!("{OPTIONS_TAG}{json}")),
            subjects: vec![self.subject(name.as_str())],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            num_replicas: self.replicas,
            max_age,
            // The server wants the duplicate window within max_age.
            duplicate_window: max_age.min(Duration::from_secs(120)),
            max_message_size: i32::try_from(self.max_payload).unwrap_or(i32::MAX),
            ..Default::default()
        };
        match self.js.create_stream(config).await {
            Ok(_) => {}
            Err(err) => match err.kind() {
                // Another proxy created it in between: compare with theirs.
                jetstream::context::CreateStreamErrorKind::JetStream(e)
                    if e.error_code() == ErrorCode::STREAM_NAME_EXIST =>
                {
                    let info = self.queue_info(ops::QueueInfo { queue: name }).await?;
                    let existing = info.options.clone().unwrap_or_default();
                    if existing != *options {
                        return Err(already_exists(name, &existing, options));
                    }
                    return Ok((false, info));
                }
                jetstream::context::CreateStreamErrorKind::JetStream(e) => {
                    return Err(api_error("create stream", &e));
                }
                _ => return Err(unavailable("create stream", err)),
            },
        }
        self.forget(name.as_str());
        self.consumer(name.as_str(), stored.visibility).await?;
        Ok((true, self.queue_info(ops::QueueInfo { queue: name }).await?))
    }

    async fn delete_queue(&self, op: ops::DeleteQueue<'_>) -> ExoResult<()> {
        let ops::DeleteQueue { queue: name } = op;
        self.connected()?;
        self.forget(name.as_str());
        match self.js.delete_stream(self.stream_name(name.as_str())).await {
            Ok(_) => {
                // Its subscriptions go with it; a publish meanwhile skips a queue that is gone.
                if let Err(err) = self.forget_subscriptions_into(name).await {
                    tracing::warn!(queue = %name, error = %err, "nats: subscriptions into a deleted queue remain");
                }
                Ok(())
            }
            Err(err) => match err.kind() {
                jetstream::context::DeleteStreamErrorKind::JetStream(e) if is_not_found(&e) => {
                    Err(queue_not_found(name.as_str()))
                }
                jetstream::context::DeleteStreamErrorKind::JetStream(e) => {
                    Err(api_error("delete stream", &e))
                }
                _ => Err(unavailable("delete stream", err)),
            },
        }
    }

    async fn list_queues(&self, op: ops::ListQueues<'_>) -> ExoResult<Vec<String>> {
        let ops::ListQueues { prefix, start_after, limit } = op;
        self.connected()?;
        let own = format!("{}_", self.namespace);
        let names: Vec<String> =
            self.js.stream_names().try_collect().await.map_err(|e| unavailable("list streams", e))?;
        let mut queues: Vec<String> = names
            .into_iter()
            .filter_map(|n| n.strip_prefix(&own).map(str::to_owned))
            .filter(|q| QueueName::parse("queue", q, "name").is_ok())
            .filter(|q| q.starts_with(prefix) && start_after.is_none_or(|after| q.as_str() > after))
            .collect();
        queues.sort();
        queues.truncate(limit);
        Ok(queues)
    }

    async fn queue_info(&self, op: ops::QueueInfo<'_>) -> ExoResult<pb::QueueInfo> {
        let ops::QueueInfo { queue: name } = op;
        self.connected()?;
        let info = self.stream_info(name.as_str()).await?.ok_or_else(|| queue_not_found(name.as_str()))?;
        let stream = self.stream_name(name.as_str());
        let consumer = match self.js.get_consumer_from_stream::<pull::Config, _, _>(CONSUMER, &stream).await {
            Ok(mut consumer) => {
                Some(consumer.info().await.map_err(|e| unavailable("consumer info", e))?.clone())
            }
            // No consumer yet (a stream made by hand): nothing has been received.
            Err(_) => None,
        };
        let options = StoredOptions::of_stream(&info.config, consumer.as_ref().map(|c| c.config.ack_wait));
        let (visible, in_flight) = match &consumer {
            Some(c) => (c.num_pending, c.num_ack_pending as u64),
            None => (info.state.messages, 0),
        };
        Ok(pb::QueueInfo {
            name: name.to_string(),
            options: Some(options.options()),
            created_at_ms: u64::try_from(info.created.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
            visible_messages: visible,
            in_flight_messages: in_flight,
            delayed_messages: 0,
        })
    }

    async fn send(&self, op: ops::Send<'_>) -> ExoResult<Vec<ExoResult<String>>> {
        let ops::Send { queue: name, messages } = op;
        self.connected()?;
        let messages =
            messages.into_iter().map(|m| (new_message_id(), Bytes::from(m.body), m.attributes)).collect();
        self.store(name, messages).await
    }

    async fn receive(&self, op: ops::Receive<'_>) -> ExoResult<Vec<pb::Message>> {
        let ops::Receive { queue: name, params } = op;
        self.connected()?;
        let deadline = Instant::now() + params.wait;
        let max = params.max_messages as usize;
        loop {
            let handle = self.handle(name).await?;
            let visibility = params.visibility_seconds.unwrap_or(handle.options.visibility);
            let mut pulled = self.pull(&handle.consumer, max, Duration::ZERO).await;
            if matches!(&pulled, Ok(p) if p.is_empty()) {
                // Nothing ready: wait for one message (JetStream would wait to fill the whole
                // batch), then take what else is ready. Even without a wait, a moment: JetStream
                // acknowledges a publish before the consumer has counted it, so a receive right
                // after a send could otherwise miss it.
                let left = deadline.saturating_duration_since(Instant::now()).max(SETTLE);
                pulled = self.pull(&handle.consumer, 1, left).await;
                if let Ok(first) = &mut pulled
                    && !first.is_empty()
                    && max > 1
                {
                    first.extend(self.pull(&handle.consumer, max - 1, Duration::ZERO).await?);
                }
            }
            let pulled = match pulled {
                Ok(pulled) => pulled,
                Err(err) => {
                    // The stream or consumer may have gone: look again before saying so.
                    self.forget(name.as_str());
                    self.handle(name).await?;
                    return Err(err);
                }
            };
            let got_any = !pulled.is_empty();
            let messages = self.deliver(&handle, visibility, pulled).await?;
            // Everything pulled was dead-lettered: keep waiting for the rest of the wait.
            if !messages.is_empty() || !got_any || Instant::now() >= deadline {
                return Ok(messages);
            }
        }
    }

    async fn ack(&self, op: ops::Ack<'_>) -> ExoResult<()> {
        let ops::Ack { queue: name, receipt } = op;
        let subject = self.ack_subject(name, receipt)?;
        self.connected()?;
        self.ack_request(name, &subject, "+ACK".into()).await
    }

    async fn change_visibility(&self, op: ops::ChangeVisibility<'_>) -> ExoResult<()> {
        let ops::ChangeVisibility { queue: name, receipt, seconds } = op;
        let subject = self.ack_subject(name, receipt)?;
        self.connected()?;
        self.ack_request(name, &subject, nak(seconds)).await
    }

    fn topic_limits(&self) -> pb::TopicLimits {
        self.nats_topic_limits()
    }

    async fn create_topic(&self, op: ops::CreateTopic<'_>) -> ExoResult<(bool, pb::TopicInfo)> {
        let ops::CreateTopic { topic: name } = op;
        self.connected()?;
        self.nats_create_topic(name).await
    }

    async fn delete_topic(&self, op: ops::DeleteTopic<'_>) -> ExoResult<()> {
        let ops::DeleteTopic { topic: name } = op;
        self.connected()?;
        self.nats_delete_topic(name).await
    }

    async fn list_topics(&self, op: ops::ListTopics<'_>) -> ExoResult<Vec<String>> {
        let ops::ListTopics { prefix, start_after, limit } = op;
        self.connected()?;
        self.nats_list_topics(prefix, start_after, limit).await
    }

    async fn topic_info(&self, op: ops::TopicInfo<'_>) -> ExoResult<pb::TopicInfo> {
        let ops::TopicInfo { topic: name } = op;
        self.connected()?;
        Ok(self.read_topic(name.as_str()).await?.0.info(name.as_str()))
    }

    async fn create_subscription(
        &self,
        op: ops::CreateSubscription<'_>,
    ) -> ExoResult<(bool, pb::Subscription)> {
        let ops::CreateSubscription { topic, subscription } = op;
        self.connected()?;
        self.nats_create_subscription(topic, subscription).await
    }

    async fn delete_subscription(&self, op: ops::DeleteSubscription<'_>) -> ExoResult<()> {
        let ops::DeleteSubscription { topic, subscription: name } = op;
        self.connected()?;
        self.nats_delete_subscription(topic, name).await
    }

    async fn publish(&self, op: ops::Publish<'_>) -> ExoResult<Vec<ExoResult<Published>>> {
        let ops::Publish { topic, messages } = op;
        self.connected()?;
        self.nats_publish(topic, messages).await
    }

    async fn purge(&self, op: ops::Purge<'_>) -> ExoResult<()> {
        let ops::Purge { queue: name } = op;
        self.connected()?;
        let stream = self
            .find_stream(self.stream_name(name.as_str()))
            .await?
            .ok_or_else(|| queue_not_found(name.as_str()))?;
        let options = StoredOptions::of_stream(&stream.cached_info().config, None);
        // The consumer goes first and comes back after: its pending deliveries of purged messages
        // would otherwise be "redelivered" as nothing and stall the pulls that count them.
        self.forget(name.as_str());
        if let Err(err) = stream.delete_consumer(CONSUMER).await {
            tracing::debug!(queue = %name, error = %err, "purge: no consumer to delete");
        }
        let purged = stream.purge().await.map_err(|e| unavailable("purge", e));
        self.consumer(name.as_str(), options.visibility).await?;
        purged.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_subjects_name_their_stream_and_consumer() {
        assert_eq!(
            ack_subject_names("$JS.ACK.eqs_orders.exo.1.5.5.1700000000000000000.0"),
            Some(("eqs_orders", "exo"))
        );
        assert_eq!(
            ack_subject_names("$JS.ACK.hub.ACCHASH.eqs_orders.exo.2.7.9.1700000000000000000.3.tok"),
            Some(("eqs_orders", "exo"))
        );
        for bad in [
            "",
            "$JS.API.STREAM.DELETE.eqs_orders",
            "$JS.ACK.eqs_orders.exo.1.5.5.170000",
            "$JS.ACK.eqs_orders.exo.x.5.5.1700000000000000000.0",
            "$JS.ACK.eqs orders.exo.1.5.5.1700000000000000000.0",
            "$JS.ACK.eqs_orders.exo.1.5.5.17000*.0",
        ] {
            assert_eq!(ack_subject_names(bad), None, "{bad}");
        }
    }

    #[test]
    fn attributes_survive_the_trip_through_headers() {
        let attributes = HashMap::from([
            ("kind".to_owned(), "order".to_owned()),
            ("Nats-Expected-Stream".to_owned(), "not the server's".to_owned()),
            ("lines".to_owned(), "two\r\nlines".to_owned()),
            ("padded".to_owned(), " x ".to_owned()),
        ]);
        let mut headers = HeaderMap::new();
        headers.insert(MESSAGE_ID, "id-1");
        attribute_headers(&mut headers, attributes.clone());
        assert!(headers.get("Nats-Expected-Stream").is_none());
        let (id, nats_id, back) = read_headers(Some(&headers));
        assert_eq!(id.as_deref(), Some("id-1"));
        assert_eq!(nats_id, None);
        assert_eq!(back, attributes);
    }

    #[test]
    fn settings_are_checked() {
        assert!(NatsQueueConfig::default().check().is_ok());
        for bad in [
            NatsQueueConfig { namespace: "a.b".into(), ..Default::default() },
            NatsQueueConfig { namespace: String::new(), ..Default::default() },
            NatsQueueConfig { replicas: 0, ..Default::default() },
            NatsQueueConfig { user: Some("u".into()), ..Default::default() },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
