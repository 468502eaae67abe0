//! eqs: the ExoFlow queue proxy.
//!
//! A request flows `gRPC | HTTP/JSON` → [`api::QueueApi`] (validation, limits, capabilities) →
//! [`layers`] (timeout, metrics) → one [`backend::Queue`] implementation from [`services`].
//! [`EqsProxy`] assembles the chain from an [`config::EqsConfig`] and serves it.

pub mod api;
pub mod backend;
pub mod config;
pub mod grpc;
pub mod http;
pub mod layers;
pub mod long_poll;
pub mod model;
pub mod services;

use std::{future::Future, sync::Arc};

use exo_proto::queue::v1::queue_service_server::QueueServiceServer;
use exo_proxy_core::{
    ExoResult,
    metrics::Metrics,
    server::{ProxyServer, ReadyFn},
};
use tokio::net::TcpListener;

use crate::{
    api::QueueApi,
    backend::Queue,
    config::{BackendConfig, EqsConfig},
    services::{embedded::EmbeddedQueue, memory::MemoryQueue},
};

pub use exo_proxy_core::ProxyError;

/// Opens the configured backend, without layers.
pub fn open_backend(config: &BackendConfig) -> ExoResult<Arc<dyn Queue>> {
    Ok(match config {
        BackendConfig::Memory { max_message_bytes } => Arc::new(MemoryQueue::new(*max_message_bytes)),
        BackendConfig::Embedded { path, max_message_bytes } => {
            Arc::new(EmbeddedQueue::open(path, *max_message_bytes)?)
        }
    })
}

/// Wraps a backend in the standard layers: timeout outermost, so metrics see timeouts as their
/// own outcome.
pub fn layered(backend: Arc<dyn Queue>, metrics: Arc<Metrics>, config: &EqsConfig) -> Arc<dyn Queue> {
    let instrumented: Arc<dyn Queue> = Arc::new(layers::Instrumented::new(backend, metrics));
    Arc::new(layers::Timeout::new(instrumented, config.server.request_timeout))
}

/// A configured eqs proxy, ready to serve.
pub struct EqsProxy {
    server: ProxyServer,
    api: QueueApi,
}

impl std::fmt::Debug for EqsProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EqsProxy").field("api", &self.api).finish_non_exhaustive()
    }
}

impl EqsProxy {
    /// Validates `config` and opens its backend.
    pub fn new(config: &EqsConfig) -> Result<Self, ProxyError> {
        config.validate()?;
        Ok(Self::with_backend(config, open_backend(&config.backend)?))
    }

    /// Serves an already opened backend (conformance runs and benchmarks use this).
    pub fn with_backend(config: &EqsConfig, backend: Arc<dyn Queue>) -> Self {
        let metrics = Metrics::shared();
        let backend = layered(backend, metrics.clone(), config);
        let api = QueueApi::new(backend.clone());
        let limit = config.server.max_request_bytes;
        let grpc = QueueServiceServer::new(grpc::GrpcQueue::new(api.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(usize::MAX);
        let server = ProxyServer::new(
            config.server.clone(),
            metrics,
            Arc::new(ReadyFn(move || {
                let backend = backend.clone();
                async move { backend.ready().await }
            })),
        )
        .grpc_service(grpc)
        .http_routes(http::routes(api.clone()));
        Self { server, api }
    }

    /// The validating API (for in-process use).
    pub fn api(&self) -> &QueueApi {
        &self.api
    }

    /// Binds the configured address.
    pub async fn bind(&self) -> Result<TcpListener, ProxyError> {
        Ok(self.server.bind().await?)
    }

    /// Serves on `listener` until `shutdown` resolves, then drains.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ProxyError> {
        Ok(self.server.serve(listener, shutdown).await?)
    }
}
