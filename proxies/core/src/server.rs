//! One listener serving gRPC (HTTP/2) and HTTP/JSON (HTTP/1.1 or 2) side by side, with the
//! standard gRPC health and reflection services, `/healthz`, `/readyz`, `/metrics`, body
//! limits and graceful shutdown.

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use async_trait::async_trait;
use axum::{
    Router,
    extract::{DefaultBodyLimit, State},
    response::{IntoResponse, Response},
    routing::get,
};
use exo_proto::common::v1::ErrorReason;
use http::{HeaderValue, header};
use tokio::{net::TcpListener, sync::watch};
use tonic::server::NamedService;
use tonic_health::ServingStatus;

use crate::{ExoError, ExoResult, config::ServerConfig, metrics::Metrics};

/// Tells whether the backend behind a proxy can serve requests now.
#[async_trait]
pub trait Readiness: Send + Sync + 'static {
    /// `Ok` when the backend answers.
    async fn ready(&self) -> ExoResult<()>;
}

/// Readiness from an async closure (usually a backend's `ready`).
pub struct ReadyFn<F>(pub F);

#[async_trait]
impl<F, Fut> Readiness for ReadyFn<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ExoResult<()>> + Send,
{
    async fn ready(&self) -> ExoResult<()> {
        (self.0)().await
    }
}

/// Failures starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// gRPC reflection could not load the descriptors (a build problem).
    #[error("cannot build gRPC reflection: {0}")]
    Reflection(String),
    /// The Unix socket could not be served.
    #[error(transparent)]
    UnixSocket(#[from] crate::listener::UnixSocketError),
    /// The accept loop failed.
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The sockets a proxy serves on: its TCP port and, when `server.unix-socket` is set, a Unix
/// socket beside it (same requests, same limits, one connection cap for both).
#[derive(Debug)]
pub struct Listeners {
    tcp: TcpListener,
    unix: Option<crate::listener::UnixSocket>,
}

impl Listeners {
    /// Binds `config.listen` and the Unix socket if one is configured.
    pub async fn bind(config: &ServerConfig) -> Result<Self, ServeError> {
        let addr = config.listen;
        let tcp = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
        Self::with_tcp(tcp, config)
    }

    /// An already bound TCP listener, and the Unix socket if one is configured.
    pub fn with_tcp(tcp: TcpListener, config: &ServerConfig) -> Result<Self, ServeError> {
        let unix = match &config.unix_socket {
            Some(path) => Some(crate::listener::UnixSocket::bind(path, config.unix_socket_mode.0)?),
            None => None,
        };
        Ok(Self { tcp, unix })
    }

    /// The TCP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// Everything one proxy serves, assembled by the proxy and run by [`ProxyServer::serve`].
pub struct ProxyServer {
    config: ServerConfig,
    grpc: Router,
    http: Router,
    health_names: Vec<&'static str>,
    metrics: Arc<Metrics>,
    readiness: Arc<dyn Readiness>,
}

impl std::fmt::Debug for ProxyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyServer").field("config", &self.config).finish_non_exhaustive()
    }
}

impl ProxyServer {
    /// A server with no services yet.
    pub fn new(config: ServerConfig, metrics: Arc<Metrics>, readiness: Arc<dyn Readiness>) -> Self {
        Self {
            config,
            grpc: Router::new(),
            http: Router::new(),
            health_names: Vec::new(),
            metrics,
            readiness,
        }
    }

    /// Adds a gRPC service; its health is reported under its full name.
    pub fn grpc_service<S>(mut self, svc: S) -> Self
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: IntoResponse,
        S::Future: Send + 'static,
    {
        self.health_names.push(S::NAME);
        self.grpc = mount_grpc(self.grpc, svc);
        self
    }

    /// Adds HTTP/JSON routes (already under `/api/v1`).
    pub fn http_routes(mut self, routes: Router) -> Self {
        self.http = self.http.merge(routes);
        self
    }

    /// Binds the configured address (and Unix socket).
    pub async fn bind(&self) -> Result<Listeners, ServeError> {
        Listeners::bind(&self.config).await
    }

    /// Serves on `listeners` until `shutdown` resolves, then stops taking new requests and
    /// waits up to `shutdown_grace` for in-flight ones.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        // Both reflection versions: grpcurl and older tools still ask v1alpha.
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(exo_proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|err| ServeError::Reflection(err.to_string()))?;
        let reflection_alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(exo_proto::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|err| ServeError::Reflection(err.to_string()))?;

        let (stopping_tx, stopping_rx) = watch::channel(false);
        let state = AppState {
            metrics: self.metrics.clone(),
            readiness: self.readiness.clone(),
            stopping: stopping_rx.clone(),
        };

        let grpc_builtin =
            mount_grpc(mount_grpc(mount_grpc(Router::new(), health_service), reflection), reflection_alpha);
        let limit = json_body_limit(self.config.max_request_bytes);
        let probes = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(state);
        let http = self.http.merge(probes).layer(DefaultBodyLimit::max(limit));
        // One fallback for both worlds: unknown gRPC methods (content-type application/grpc)
        // get UNIMPLEMENTED, anything else a problem+json 404.
        let grpc = grpc_builtin.merge(self.grpc).layer(axum::middleware::map_response(normalize_grpc_errors));
        let mut app = grpc
            .merge(http)
            .fallback(not_found)
            .layer(axum::middleware::from_fn(crate::deadline::caller_deadline))
            .layer(axum::middleware::from_fn(crate::traces::request_span))
            .layer(axum::middleware::from_fn_with_state(
                self.config.body_idle_timeout,
                crate::unread::request_bodies,
            ));
        if let Some(secret) = self.config.auth_token.clone() {
            app = app.layer(axum::middleware::from_fn_with_state(
                crate::auth::TokenCheck::new(secret),
                crate::auth::require_token,
            ));
        }

        let names = self.health_names.clone();
        let health_task =
            tokio::spawn(watch_health(reporter, names, self.readiness.clone(), stopping_rx.clone()));

        // SIGHUP reads the TLS files and file: secrets again now (and no longer ends the process).
        crate::reload::on_sighup();
        let grace = self.config.shutdown_grace;
        let Listeners { tcp: listener, unix } = listeners;
        let local = listener.local_addr()?;
        tracing::info!(%local, "listening (gRPC + HTTP/JSON)");
        let mut signalled = stopping_tx.subscribe();
        let open_files = crate::listener::raise_open_files_limit();
        let cap = crate::listener::connection_cap(self.config.max_connections, open_files);
        tracing::info!(max_connections = cap, open_files, "connection cap");
        let slots = crate::listener::Slots::new(cap);
        let stall = self.config.write_stall_timeout;
        let listener = crate::listener::CappedListener::new(listener, slots.clone(), stall);
        let drained = async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight requests");
            let _ = stopping_tx.send(true);
        };
        // Each accept loop stops when the proxy starts stopping.
        let stopped = |mut stopping: watch::Receiver<bool>| async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        };
        let limits = crate::connections::ConnectionLimits {
            header_read_timeout: self.config.header_read_timeout,
            keepalive_interval: self.config.http2_keepalive_interval,
            keepalive_timeout: self.config.http2_keepalive_timeout,
            idle_timeout: self.config.idle_timeout,
        };
        let tcp = async {
            let stop = stopped(stopping_rx.clone());
            match &self.config.tls {
                Some(settings) => {
                    let tls = crate::tls::ServerTls::start(settings)
                        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
                    let client_certs =
                        if settings.client_ca_file.is_some() { "required" } else { "not asked" };
                    tracing::info!(client_certs, "TLS on (ALPN h2, http/1.1)");
                    let listener = crate::tls::TlsListener::new(listener, tls, settings)?;
                    crate::connections::serve(listener, app.clone(), limits, stop).await
                }
                None => crate::connections::serve(listener, app.clone(), limits, stop).await,
            }
        };
        let unix = async {
            let Some(socket) = unix else { return Ok(()) };
            tracing::info!(path = %socket.path().display(), "listening on a Unix socket (gRPC + HTTP/JSON)");
            // Its file goes with it when the loop stops accepting (see `UnixSocket`).
            let listener = crate::listener::CappedListener::new(socket, slots, stall);
            crate::connections::serve(listener, app.clone(), limits, stopped(stopping_rx.clone())).await
        };
        let server = async {
            tokio::try_join!(tcp, unix, async {
                drained.await;
                Ok(())
            })
            .map(|_| ())
        };
        let result = tokio::select! {
            result = server => result.map_err(ServeError::Io),
            () = async {
                let _ = signalled.wait_for(|stopping| *stopping).await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(?grace, "shutdown grace period over; closing remaining connections");
                Ok(())
            }
        };
        health_task.abort();
        result
    }
}

/// The largest HTTP/JSON body for a `max-request-bytes` limit: what a gRPC message of that size
/// becomes in JSON, where bytes travel base64 (4 characters for 3 bytes), plus room for the
/// rest of the document — so whatever fits in a gRPC message (the largest message Describe
/// allows included) fits in its JSON form.
pub fn json_body_limit(max_request_bytes: usize) -> usize {
    max_request_bytes.saturating_add(max_request_bytes.div_ceil(3)).saturating_add(64 * 1024)
}

/// Mounts a tonic service under `/<package.Service>/*` the way tonic's own router does, but
/// without its catch-all fallback, so gRPC and HTTP routes can share one router.
fn mount_grpc<S>(router: Router, svc: S) -> Router
where
    S: tower::Service<http::Request<tonic::body::Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
{
    use tower::ServiceExt as _;
    router.route_service(
        &format!("/{}/{{*rest}}", S::NAME),
        svc.map_request(|req: http::Request<axum::body::Body>| req.map(tonic::body::Body::new)),
    )
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    readiness: Arc<dyn Readiness>,
    stopping: watch::Receiver<bool>,
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    if *state.stopping.borrow() {
        return ExoError::new(ErrorReason::ShuttingDown, "proxy is shutting down").into_response();
    }
    match state.readiness.ready().await {
        Ok(()) => "ready\n".into_response(),
        Err(err) => err.into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

async fn not_found(req: http::Request<axum::body::Body>) -> Response {
    let is_grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if is_grpc {
        return grpc_unimplemented().await;
    }
    ExoError::new(ErrorReason::RouteNotFound, format!("no route for {} {}", req.method(), req.uri().path()))
        .into_response()
}

/// tonic answers some bad requests itself, before any ExoFlow code runs: an undecodable
/// protobuf body becomes INTERNAL, an oversize message OUT_OF_RANGE, both without an error
/// detail. Give them the contract's status and reason so every rejection looks the same.
async fn normalize_grpc_errors(response: Response) -> Response {
    let Some(status) = response.extensions().get::<tonic::Status>() else { return response };
    if !status.details().is_empty() {
        return response;
    }
    let Some(reason) = tonic_rejection(status) else { return response };
    tonic::Status::from(ExoError::new(reason, status.message())).into_http()
}

/// The contract's reason for a status tonic made itself from a bad request (an oversize or
/// undecodable message), for unary calls and for each message of a client stream alike.
pub fn tonic_rejection(status: &tonic::Status) -> Option<ErrorReason> {
    let message = status.message();
    match status.code() {
        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted if message.contains("too large") => {
            Some(ErrorReason::RequestTooLarge)
        }
        tonic::Code::Internal if message.contains("decode") => Some(ErrorReason::MalformedRequest),
        _ => None,
    }
}

async fn grpc_unimplemented() -> Response {
    tonic::Status::unimplemented("unknown gRPC method").into_http()
}

/// Keeps the gRPC health service in step with the backend: SERVING while it answers,
/// NOT_SERVING when it does not or the proxy is stopping.
async fn watch_health(
    reporter: tonic_health::server::HealthReporter,
    names: Vec<&'static str>,
    readiness: Arc<dyn Readiness>,
    stopping: watch::Receiver<bool>,
) {
    let mut last = None;
    loop {
        let status = if *stopping.borrow() {
            ServingStatus::NotServing
        } else {
            match readiness.ready().await {
                Ok(()) => ServingStatus::Serving,
                Err(err) => {
                    tracing::warn!(error = %err, "backend not ready");
                    ServingStatus::NotServing
                }
            }
        };
        if last != Some(status) {
            reporter.set_service_status("", status).await;
            for name in &names {
                reporter.set_service_status(*name, status).await;
            }
            last = Some(status);
        }
        // Not serving yet: look again soon, so gRPC health agrees with /readyz within a moment
        // of the backend (and the declared resources) becoming ready.
        let every = if status == ServingStatus::Serving { 2000 } else { 200 };
        tokio::time::sleep(Duration::from_millis(every)).await;
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
