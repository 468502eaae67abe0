//! ekv: the ExoFlow key-value proxy.
//!
//! `gRPC | HTTP/JSON` → [`api::KvApi`] (validation, limits, capabilities, paging) →
//! [`layers::Layered`] (the layer stack, reading each operation of [`ops`]) → one [`backend::KeyValue`] from [`services`].

pub mod api;
pub mod backend;
pub mod config;
pub mod grpc;
pub mod http;
pub mod layers;
pub mod model;
pub mod ops;
pub mod services;

use std::{future::Future, sync::Arc};

use exo_proto::kv::v1::kv_service_server::KvServiceServer;
use exo_proxy_core::{
    ExoResult,
    metrics::Metrics,
    server::{Listeners, ProxyServer, ReadyFn},
};

use crate::{
    api::KvApi,
    backend::KeyValue,
    config::{BackendConfig, EkvConfig},
};

pub use exo_proxy_core::ProxyError;

/// Opens the configured backend, without layers. `call_timeout` bounds each call a cloud
/// backend makes to its service.
pub async fn open_backend(
    config: &BackendConfig,
    call_timeout: std::time::Duration,
    metrics: Arc<Metrics>,
) -> ExoResult<Arc<dyn KeyValue>> {
    config.open(&services::OpenContext { call_timeout, metrics }).await
}

/// A configured ekv proxy, ready to serve.
pub struct EkvProxy {
    server: ProxyServer,
    listener: Listeners,
}

impl std::fmt::Debug for EkvProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EkvProxy").finish_non_exhaustive()
    }
}

impl EkvProxy {
    /// Validates `config`, opens its backend and binds its listen address.
    pub async fn bind(config: &EkvConfig) -> Result<Self, ProxyError> {
        exo_proxy_core::cli::ProxyConfig::validate(config)?;
        let metrics = Metrics::shared();
        let backend = open_backend(&config.backend, config.server.request_timeout, metrics.clone()).await?;
        Self::bind_observed(config, backend, metrics).await
    }

    /// Binds the configured address to serve an already opened backend (conformance runs and
    /// benchmarks use this).
    pub async fn bind_with(config: &EkvConfig, backend: Arc<dyn KeyValue>) -> Result<Self, ProxyError> {
        Self::bind_observed(config, backend, Metrics::shared()).await
    }

    async fn bind_observed(
        config: &EkvConfig,
        backend: Arc<dyn KeyValue>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ProxyError> {
        // The layer stack (`exo_proxy_core::layers::for_backend`), composed once.
        let timeout = config.server.request_timeout;
        let stack = exo_proxy_core::layers::for_backend(
            backend.descriptor().backend,
            config.server.stack(),
            metrics.clone(),
        );
        let backend: Arc<dyn KeyValue> = Arc::new(layers::Layered::new(backend, stack, timeout));
        let api = KvApi::new(backend.clone());
        let grpc = KvServiceServer::new(grpc::GrpcKv::new(api.clone()))
            .max_decoding_message_size(config.server.max_request_bytes)
            .max_encoding_message_size(usize::MAX);
        let ready = ReadyFn(move || {
            let backend = backend.clone();
            async move { backend.ready().await }
        });
        let server = ProxyServer::new(config.server.clone(), metrics, Arc::new(ready))
            .grpc_service(grpc)
            .http_routes(http::routes(api));
        let listener = server.bind().await?;
        Ok(Self { server, listener })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ProxyError> {
        Ok(self.server.serve(self.listener, shutdown).await?)
    }
}

impl exo_proxy_core::cli::Proxy for EkvProxy {
    type Config = EkvConfig;
    fn bind(config: &EkvConfig) -> impl Future<Output = Result<Self, ProxyError>> + Send {
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
