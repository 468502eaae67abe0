//! eos: the ExoFlow object-store proxy.
//!
//! `gRPC | HTTP` → [`api::ObjectApi`] (validation, limits, capabilities, paging) →
//! [`layers::Layered`] (the layer stack, reading each operation of [`ops`]) → one [`backend::ObjectStore`] from [`services`].
//! Bodies stream end to end in bounded memory.

pub mod api;
pub mod config;
pub mod grpc;
pub mod http;

// The object store itself (trait, operations, model, backends) is the exo-objects library.
pub use exo_objects::{backend, layers, listing, model, ops, presign, services, upload};

use std::{future::Future, sync::Arc};

use exo_proto::object::v1::object_service_server::ObjectServiceServer;
use exo_proxy_core::{
    ExoResult,
    metrics::Metrics,
    server::{Listeners, ProxyServer, ReadyFn, ServeError},
};

use crate::{api::ObjectApi, backend::ObjectStore, config::EosConfig, presign::LocalPresigner};

pub use exo_proxy_core::ProxyError;

/// The presigner for a configuration whose URLs point at `base_url`.
pub fn presigner(
    config: &EosConfig,
    base_url: &str,
) -> Result<Arc<LocalPresigner>, exo_proxy_core::config::ConfigError> {
    let secret = config.presign.secret.as_ref().map(|s| s.resolve()).transpose()?;
    let base = config.presign.base_url.clone().unwrap_or_else(|| base_url.to_owned());
    Ok(Arc::new(LocalPresigner::new(&base, secret)))
}

/// Opens the configured backend, without layers. `call_timeout` bounds each call a cloud
/// backend makes to its service.
pub async fn open_backend(
    config: &EosConfig,
    presigner: Arc<LocalPresigner>,
    call_timeout: std::time::Duration,
    metrics: Arc<Metrics>,
) -> ExoResult<Arc<dyn ObjectStore>> {
    let context = services::OpenContext {
        presigner,
        presign_base: config.presign.base_url.clone(),
        call_timeout,
        metrics,
    };
    config.backend.open(&context).await
}

/// A configured eos proxy, ready to serve.
pub struct EosProxy {
    server: ProxyServer,
    listener: Listeners,
}

impl std::fmt::Debug for EosProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EosProxy").finish_non_exhaustive()
    }
}

impl EosProxy {
    /// Validates `config`, binds its listen address (presigned URLs need the real port), and
    /// opens its backend.
    pub async fn bind(config: &EosConfig) -> Result<Self, ProxyError> {
        exo_proxy_core::cli::ProxyConfig::validate(config)?;
        let listener = Listeners::bind(&config.server).await?;
        let base = format!("http://{}", listener.local_addr().map_err(ServeError::Io)?);
        let presigner = presigner(config, &base)?;
        let metrics = Metrics::shared();
        let backend =
            open_backend(config, presigner.clone(), config.server.request_timeout, metrics.clone()).await?;
        Ok(Self::serve_observed(config, backend, presigner, listener, metrics))
    }

    /// Serves an already opened backend on `listener`.
    pub fn with_backend(
        config: &EosConfig,
        backend: Arc<dyn ObjectStore>,
        presigner: Arc<LocalPresigner>,
        listener: Listeners,
    ) -> Self {
        Self::serve_observed(config, backend, presigner, listener, Metrics::shared())
    }

    fn serve_observed(
        config: &EosConfig,
        backend: Arc<dyn ObjectStore>,
        presigner: Arc<LocalPresigner>,
        listener: Listeners,
        metrics: Arc<Metrics>,
    ) -> Self {
        // The layer stack (`exo_proxy_core::layers::for_backend`), composed once.
        let timeout = config.server.request_timeout;
        let stack = exo_proxy_core::layers::for_backend(
            backend.descriptor().backend,
            config.server.stack(),
            metrics.clone(),
        );
        let backend: Arc<dyn ObjectStore> = Arc::new(layers::Layered::new(backend, stack, timeout));
        let api = ObjectApi::new(backend.clone());
        let grpc = ObjectServiceServer::new(grpc::GrpcObjects::new(api.clone()))
            .max_decoding_message_size(config.server.max_request_bytes)
            .max_encoding_message_size(usize::MAX);
        let ready = ReadyFn(move || {
            let backend = backend.clone();
            async move { backend.ready().await }
        });
        let server = ProxyServer::new(config.server.clone(), metrics, Arc::new(ready))
            .grpc_service(grpc)
            .http_routes(http::routes(api, presigner));
        Self { server, listener }
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

impl exo_proxy_core::cli::Proxy for EosProxy {
    type Config = EosConfig;
    fn bind(config: &EosConfig) -> impl Future<Output = Result<Self, ProxyError>> + Send {
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
