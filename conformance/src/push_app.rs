//! The app end of the push cases: a loopback HTTP endpoint the proxy under test POSTs to, and the
//! topic whose push subscriptions point at it, declared in that proxy's config (a push endpoint
//! comes only from the config, so the suite can run these cases only on a proxy it starts).
//!
//! The topic `<prefix>` has up to three push subscriptions, each taking the messages whose
//! attribute [`ROUTE_ATTRIBUTE`] names it:
//! - `taken` (queue `<prefix>-taken`): the app answers 200;
//! - `flaky` (queue `<prefix>-flaky`): the app answers 500 to the first POST of each publish,
//!   200 after;
//! - `refused` (queue `<prefix>-refused`, dead-lettering into `<prefix>-dlq` after
//!   [`REFUSED_MAX_RECEIVES`] receives; only where the backend declares DEAD_LETTER): 503 always.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    routing::post,
};
use eqs::{
    backend::Queue,
    config::{DeclaredSubscription, DeclaredTopic, PushConfig},
    model::{Capability, QueueName},
};
use exo_proto::queue::v1 as pb;

/// The attribute naming the subscription a published message is for.
pub const ROUTE_ATTRIBUTE: &str = "route";
/// Receives after which a message the app refuses is dead-lettered.
pub const REFUSED_MAX_RECEIVES: u32 = 2;

/// One POST the app received.
#[derive(Debug, Clone)]
pub struct PushCall {
    /// The route (`taken`, `flaky`, `refused`) it was POSTed to.
    pub route: String,
    /// What the proxy sent.
    pub pushed: pb::PushedMessage,
    /// The status the app answered.
    pub answered: u16,
}

impl PushCall {
    /// The publish id the pushed copy carries.
    pub fn publish_id(&self) -> &str {
        self.pushed
            .message
            .as_ref()
            .and_then(|m| m.attributes.get(exo_sdk::PUBLISH_ID_ATTRIBUTE))
            .map(String::as_str)
            .unwrap_or_default()
    }
}

struct Inner {
    topic: String,
    url: String,
    calls: Mutex<Vec<PushCall>>,
    dead_letter: AtomicBool,
}

/// The push endpoint and what it has received.
#[derive(Clone)]
pub struct PushApp {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PushApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushApp").field("topic", &self.inner.topic).field("url", &self.inner.url).finish()
    }
}

async fn pushed(State(app): State<PushApp>, Path(route): Path<String>, body: Bytes) -> StatusCode {
    let Ok(pushed) = exo_sdk::decode_pushed(&body) else { return StatusCode::BAD_REQUEST };
    let Ok(mut calls) = app.inner.calls.lock() else { return StatusCode::INTERNAL_SERVER_ERROR };
    let mut call = PushCall { route: route.clone(), pushed, answered: 200 };
    let seen_before = calls.iter().any(|c| c.route == route && c.publish_id() == call.publish_id());
    let status = match route.as_str() {
        "taken" => StatusCode::OK,
        "flaky" if seen_before => StatusCode::OK,
        "flaky" => StatusCode::INTERNAL_SERVER_ERROR,
        "refused" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::NOT_FOUND,
    };
    call.answered = status.as_u16();
    calls.push(call);
    status
}

impl PushApp {
    /// Starts the endpoint on a free loopback port; `topic` names the topic and its queues.
    pub async fn start(topic: &str) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = Self {
            inner: Arc::new(Inner {
                topic: topic.to_owned(),
                url,
                calls: Mutex::new(Vec::new()),
                dead_letter: AtomicBool::new(false),
            }),
        };
        let router = Router::new().route("/push/{route}", post(pushed)).with_state(app.clone());
        tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, router).await {
                eprintln!("push test endpoint failed: {err}");
            }
        });
        Ok(app)
    }

    /// Makes what the declared topic needs beforehand on `backend` (the refusing subscription's
    /// queue with its dead-letter queue) and returns the topic to declare in the proxy's config.
    pub async fn declare(&self, backend: &dyn Queue) -> anyhow::Result<DeclaredTopic> {
        let subscription = |route: &str, create_queue: bool| DeclaredSubscription {
            name: route.to_owned(),
            queue: self.queue(route),
            filter: format!("{ROUTE_ATTRIBUTE} = '{route}'"),
            create_queue,
            push: Some(PushConfig {
                url: format!("{}/push/{route}", self.inner.url),
                concurrency: 4,
                timeout: Duration::from_secs(5),
            }),
        };
        let mut subscriptions = vec![subscription("taken", true), subscription("flaky", true)];
        let descriptor = backend.descriptor();
        if descriptor.require(Capability::DeadLetter, "dead-letter").is_ok() {
            let dlq = QueueName::parse("queue", &self.dead_letter_queue(), "name")?;
            let refused = QueueName::parse("queue", &self.queue("refused"), "name")?;
            let normalize = |name: &QueueName, options| {
                eqs::api::normalize_options(descriptor, name, options).map_err(|e| anyhow::anyhow!("{e}"))
            };
            backend
                .create_queue(eqs::ops::CreateQueue {
                    queue: &dlq,
                    options: &normalize(&dlq, pb::QueueOptions::default())?,
                })
                .await?;
            let options = pb::QueueOptions {
                max_receives: REFUSED_MAX_RECEIVES,
                dead_letter_queue: dlq.to_string(),
                ..Default::default()
            };
            backend
                .create_queue(eqs::ops::CreateQueue {
                    queue: &refused,
                    options: &normalize(&refused, options)?,
                })
                .await?;
            subscriptions.push(subscription("refused", false));
            self.inner.dead_letter.store(true, Ordering::SeqCst);
        }
        Ok(DeclaredTopic { name: self.inner.topic.clone(), subscriptions })
    }

    /// The declared topic.
    pub fn topic(&self) -> &str {
        &self.inner.topic
    }

    /// The queue of the subscription for `route`.
    pub fn queue(&self, route: &str) -> String {
        format!("{}-{route}", self.inner.topic)
    }

    /// The dead-letter queue of the refusing subscription.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}-dlq", self.inner.topic)
    }

    /// Whether the refusing, dead-lettering subscription is declared.
    pub fn dead_lettering(&self) -> bool {
        self.inner.dead_letter.load(Ordering::SeqCst)
    }

    /// The POSTs received so far for `publish_id`, in order.
    pub fn calls(&self, publish_id: &str) -> Vec<PushCall> {
        self.inner
            .calls
            .lock()
            .map(|calls| calls.iter().filter(|c| c.publish_id() == publish_id).cloned().collect())
            .unwrap_or_default()
    }

    /// The attributes of a message published for `route`.
    pub fn attributes(route: &str) -> HashMap<String, String> {
        HashMap::from([(ROUTE_ATTRIBUTE.to_owned(), route.to_owned())])
    }
}
