//! eqs: the ExoFlow queue proxy.
//!
//! A request flows `gRPC | HTTP/JSON` → [`api::QueueApi`] (validation, limits, capabilities; its
//! topic half in [`topic_api`]) →
//! [`layers`] (the layer stack, reading each operation of [`ops`]; the large-message layer) → one
//! [`backend::Queue`] implementation from [`services`] (a failover chain among them).
//! [`EqsProxy`] assembles the chain from an [`config::EqsConfig`] and serves it.

pub mod api;
pub mod backend;
pub mod config;
pub mod filter;
pub mod grpc;
pub mod http;
pub mod layers;
pub mod long_poll;
pub mod model;
pub mod ops;
pub mod push;
pub mod services;
pub mod topic_api;

use std::{future::Future, sync::Arc, time::Duration};

use exo_proto::queue::v1::{
    queue_service_server::QueueServiceServer, topic_service_server::TopicServiceServer,
};
use exo_proxy_core::{
    ExoResult,
    metrics::Metrics,
    server::{Listeners, ProxyServer, ReadyFn},
};

use crate::{
    api::QueueApi,
    backend::Queue,
    config::{BackendConfig, EqsConfig},
};

pub use exo_proxy_core::ProxyError;

/// Opens the configured backend, without layers. `call_timeout` bounds each call a cloud
/// backend makes to its service; a failover chain's members report into `metrics`.
pub async fn open_backend(
    config: &BackendConfig,
    call_timeout: Duration,
    metrics: Arc<Metrics>,
) -> ExoResult<Arc<dyn Queue>> {
    config.open(&services::OpenContext { call_timeout, metrics }).await
}

/// Wraps a backend in the proxy's layer stack ([`exo_proxy_core::layers::for_backend`]: metrics
/// and logs, load shedding, the circuit breaker — a failover chain's members have their own —,
/// retries of reads, the per-call timeout).
pub fn layered(backend: Arc<dyn Queue>, metrics: Arc<Metrics>, config: &EqsConfig) -> Arc<dyn Queue> {
    let stack =
        exo_proxy_core::layers::for_backend(backend.descriptor().backend, config.server.stack(), metrics);
    Arc::new(layers::Layered::new(backend, stack, config.server.request_timeout))
}

/// Puts the large-message layer (claim-check) around `backend` when the config has
/// `large-messages:`; its store is layered like any backend (metrics labelled `object`).
pub async fn with_large_messages(
    backend: Arc<dyn Queue>,
    metrics: Arc<Metrics>,
    config: &EqsConfig,
) -> ExoResult<(Arc<dyn Queue>, Option<Arc<layers::LargeMessageQueue>>)> {
    let Some(large) = &config.large_messages else { return Ok((backend, None)) };
    let timeout = config.server.request_timeout;
    let context = exo_objects::services::OpenContext {
        // The store's own presigned URLs are never handed out.
        presigner: Arc::new(exo_objects::presign::LocalPresigner::new("http://127.0.0.1", None)),
        presign_base: None,
        call_timeout: timeout,
        metrics: metrics.clone(),
    };
    let store = large.store.open(&context).await?;
    let stack = exo_proxy_core::layers::standard(config.server.stack(), metrics);
    let store: Arc<dyn exo_objects::backend::ObjectStore> =
        Arc::new(exo_objects::layers::Layered::new(store, stack, timeout));
    let settings = layers::LargeMessageSettings {
        bucket: exo_objects::model::BucketName::parse("bucket", &large.bucket, "large-messages.bucket")?,
        prefix: large.prefix.clone(),
        max_message_bytes: large.max_message_bytes,
        call_timeout: timeout,
        sweep_grace: large.sweep_grace,
    };
    let layer = Arc::new(layers::LargeMessageQueue::new(backend, store, settings)?);
    Ok((layer.clone(), Some(layer)))
}

/// A configured eqs proxy, ready to serve.
pub struct EqsProxy {
    server: ProxyServer,
    listener: Listeners,
    depth: QueueDepth,
    declared: DeclaredTopics,
    /// The large-message layer and how often its sweeper runs.
    sweeper: Option<(Arc<layers::LargeMessageQueue>, Duration)>,
}

/// The config's `topics:`, made when the proxy starts (retried with back-off while the backend
/// refuses); the proxy is ready once they exist.
#[derive(Clone)]
struct DeclaredTopics {
    api: QueueApi,
    topics: Arc<Vec<config::DeclaredTopic>>,
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl DeclaredTopics {
    fn new(api: QueueApi, topics: Vec<config::DeclaredTopic>) -> Self {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(topics.is_empty()));
        Self { api, topics: Arc::new(topics), done }
    }

    fn ready(&self) -> ExoResult<()> {
        if self.done.load(std::sync::atomic::Ordering::Acquire) {
            Ok(())
        } else {
            Err(exo_proxy_core::ExoError::unavailable("the topics declared in the config are not made yet"))
        }
    }

    async fn make(&self) -> ExoResult<()> {
        use exo_proto::queue::v1 as pb;
        for topic in self.topics.iter() {
            self.api.create_topic(pb::CreateTopicRequest { name: topic.name.clone() }).await?;
            for sub in &topic.subscriptions {
                // An existing queue is used as it is; a missing one made with defaults if asked.
                let exists = match self
                    .api
                    .get_queue_info(pb::GetQueueInfoRequest { name: sub.queue.clone() })
                    .await
                {
                    Ok(_) => true,
                    Err(err) if err.reason == exo_proto::common::v1::ErrorReason::QueueNotFound => false,
                    Err(err) => return Err(err),
                };
                let request = pb::CreateSubscriptionRequest {
                    topic: topic.name.clone(),
                    name: sub.name.clone(),
                    queue: sub.queue.clone(),
                    filter: sub.filter.clone(),
                    create_queue: (!exists && sub.create_queue).then(pb::QueueOptions::default),
                };
                self.api.create_subscription(request).await?;
            }
        }
        Ok(())
    }

    /// Makes the declared topics, then runs their push subscriptions' deliveries until aborted.
    async fn run(self) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.make().await {
                Ok(()) => {
                    self.done.store(true, std::sync::atomic::Ordering::Release);
                    if !self.topics.is_empty() {
                        tracing::info!(topics = self.topics.len(), "declared topics and subscriptions exist");
                    }
                    let mut pushes = tokio::task::JoinSet::new();
                    for topic in self.topics.iter() {
                        for sub in &topic.subscriptions {
                            if let Some(settings) = &sub.push {
                                let delivery = push::PushDelivery::new(
                                    self.api.clone(),
                                    &topic.name,
                                    &sub.name,
                                    &sub.queue,
                                    settings.clone(),
                                );
                                tracing::info!(subscription = %sub.name, url = %settings.url, "pushing to the app");
                                pushes.spawn(delivery.run());
                            }
                        }
                    }
                    while pushes.join_next().await.is_some() {}
                    return;
                }
                Err(err) => {
                    tracing::warn!(error = %err, retry_in = ?backoff, "cannot make the declared topics yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// Samples every queue's depth into gauges, for autoscalers (the HPA `exo deploy` renders scales
/// on `exo_queue_visible_messages{queue}`). Reads the backend directly, so sampling does not
/// show up in the request metrics.
struct QueueDepth {
    visible: prometheus_client::metrics::family::Family<
        Vec<(String, String)>,
        prometheus_client::metrics::gauge::Gauge,
    >,
    in_flight: prometheus_client::metrics::family::Family<
        Vec<(String, String)>,
        prometheus_client::metrics::gauge::Gauge,
    >,
    backend: Arc<dyn Queue>,
}

/// How often queue depths are sampled.
pub const DEPTH_SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

impl QueueDepth {
    async fn sample(&self) {
        let Ok(names) =
            self.backend.list_queues(ops::ListQueues { prefix: "", start_after: None, limit: 1000 }).await
        else {
            return;
        };
        self.visible.clear();
        self.in_flight.clear();
        for name in names {
            let Ok(queue) = model::QueueName::parse("queue", &name, "queue") else { continue };
            if let Ok(info) = self.backend.queue_info(ops::QueueInfo { queue: &queue }).await {
                let labels = vec![("queue".to_owned(), name)];
                self.visible.get_or_create(&labels).set(info.visible_messages as i64);
                self.in_flight.get_or_create(&labels).set(info.in_flight_messages as i64);
            }
        }
    }

    async fn run(self) {
        loop {
            self.sample().await;
            tokio::time::sleep(DEPTH_SAMPLE_INTERVAL).await;
        }
    }
}

impl std::fmt::Debug for EqsProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EqsProxy").field("listener", &self.listener).finish_non_exhaustive()
    }
}

impl EqsProxy {
    /// Validates `config`, opens its backend and binds its listen address.
    pub async fn bind(config: &EqsConfig) -> Result<Self, ProxyError> {
        exo_proxy_core::cli::ProxyConfig::validate(config)?;
        let metrics = Metrics::shared();
        let backend = open_backend(&config.backend, config.server.request_timeout, metrics.clone()).await?;
        Self::bind_observed(config, backend, metrics).await
    }

    /// Binds the configured address to serve an already opened backend (conformance runs and
    /// benchmarks use this).
    pub async fn bind_with(config: &EqsConfig, backend: Arc<dyn Queue>) -> Result<Self, ProxyError> {
        Self::bind_observed(config, backend, Metrics::shared()).await
    }

    async fn bind_observed(
        config: &EqsConfig,
        backend: Arc<dyn Queue>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ProxyError> {
        let depth = QueueDepth {
            visible: metrics
                .gauge_family("queue_visible_messages", "Messages receivable now, by queue (sampled)"),
            in_flight: metrics.gauge_family(
                "queue_in_flight_messages",
                "Messages received and not yet acknowledged, by queue (sampled)",
            ),
            backend: backend.clone(),
        };
        let backend = layered(backend, metrics.clone(), config);
        let (backend, large) = with_large_messages(backend, metrics.clone(), config).await?;
        let sweeper = large.zip(config.large_messages.as_ref().map(|l| l.sweep_every));
        let api = QueueApi::new(backend.clone());
        if !config.topics.is_empty() {
            backend.descriptor().require(model::Capability::Topics, "the topics declared in the config")?;
        }
        let declared = DeclaredTopics::new(api.clone(), config.topics.clone());
        let limit = config.server.max_request_bytes;
        let grpc = QueueServiceServer::new(grpc::GrpcQueue::new(api.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(usize::MAX);
        let topics = TopicServiceServer::new(grpc::GrpcTopics::new(api.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(usize::MAX);
        let server = ProxyServer::new(
            config.server.clone(),
            metrics,
            Arc::new(ReadyFn({
                let declared = declared.clone();
                move || {
                    let (backend, declared) = (backend.clone(), declared.clone());
                    async move {
                        backend.ready().await?;
                        declared.ready()
                    }
                }
            })),
        )
        .grpc_service(grpc)
        .grpc_service(topics)
        .http_routes(http::routes(api));
        let listener = server.bind().await?;
        Ok(Self { server, listener, depth, declared, sweeper })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ProxyError> {
        let sampler = tokio::spawn(self.depth.run());
        let declared = tokio::spawn(self.declared.run());
        let sweeper = self.sweeper.map(|(layer, every)| tokio::spawn(layer.run_sweeper(every)));
        let result = self.server.serve(self.listener, shutdown).await;
        sampler.abort();
        declared.abort();
        if let Some(sweeper) = sweeper {
            sweeper.abort();
        }
        Ok(result?)
    }
}

impl exo_proxy_core::cli::Proxy for EqsProxy {
    type Config = EqsConfig;
    fn bind(config: &EqsConfig) -> impl Future<Output = Result<Self, ProxyError>> + Send {
        Self::bind(config)
    }
    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        Self::local_addr(self)
    }
    fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = Result<(), ProxyError>> + Send {
        Self::serve(self, shutdown)
    }
}
