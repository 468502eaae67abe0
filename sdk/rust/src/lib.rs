//! `exo-sdk`: typed Rust clients for ExoFlow proxies: [`QueueClient`] and [`TopicClient`] (eqs),
//! [`ObjectClient`] (eos), [`KvClient`] (ekv).
//!
//! App code talks to a sidecar proxy on loopback and never to a cloud SDK, so the same code runs
//! on any backend the proxy is configured with.
//!
//! ```no_run
//! # async fn demo() -> Result<(), exo_sdk::Error> {
//! use std::time::Duration;
//! use exo_sdk::{QueueClient, QueueOptions, Receive};
//!
//! let queues = QueueClient::from_env()?; // $EXO_EQS_ENDPOINT or http://127.0.0.1:7401
//! queues.create_queue("orders", QueueOptions::default()).await?;
//! queues.send("orders", b"order 42".to_vec()).await?;
//! for message in queues.receive("orders", Receive::up_to(10).wait(Duration::from_secs(5))).await? {
//!     // ... handle message.body ...
//!     queues.ack("orders", &message.receipt).await?;
//! }
//! # Ok(()) }
//! ```
//!
//! Errors carry the proxy's stable [`Reason`]; retryable ones are retried per [`RetryPolicy`].

pub mod body;
mod error;
mod kv;
mod object;
mod queue;
mod retry;
mod topic;

pub use error::{Error, Reason, Result};
pub use kv::{
    DEFAULT_EKV_ENDPOINT, EKV_ENDPOINT_ENV, Entry, IncrementResponse, KvBackendDescription, KvCapability,
    KvClient, Precondition, Put, Write,
};
pub use object::{
    ByteRange, DEFAULT_EOS_ENDPOINT, EOS_ENDPOINT_ENV, GetHeader, GetOptions, ObjectBackendDescription,
    ObjectCapability, ObjectClient, ObjectInfo, Presigned, PutOptions, UPLOAD_CHUNK, WriteIf,
};
pub use queue::{
    BackendDescription, DEFAULT_EQS_ENDPOINT, EQS_ENDPOINT_ENV, Message, Outgoing, QueueCapability,
    QueueClient, QueueInfo, QueueOptions, Receive,
};
pub use retry::RetryPolicy;
/// gRPC status codes, as found in [`Error::code`].
pub use tonic::Code;
pub use topic::{
    PUBLISH_ID_ATTRIBUTE, Published, PushedMessage, Subscription, TOPIC_ATTRIBUTE, TopicClient, TopicInfo,
    TopicLimits, decode_pushed,
};

/// Environment variable with the bearer token for proxies that require one (`server.auth-token`).
pub const TOKEN_ENV: &str = "EXO_PROXY_TOKEN";

/// Adds `authorization: Bearer <token>` to every call when a token is set.
#[derive(Debug, Clone, Default)]
pub struct Auth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Auth {
    /// No token.
    pub fn none() -> Self {
        Self(None)
    }

    /// A bearer token.
    pub fn bearer(token: &str) -> Result<Self> {
        format!("Bearer {token}")
            .parse()
            .map(|value| Self(Some(value)))
            .map_err(|_| Error::client(Reason::InvalidArgument, "the token must be printable ASCII", false))
    }

    /// `$EXO_PROXY_TOKEN` if set.
    pub fn from_env() -> Result<Self> {
        match std::env::var(TOKEN_ENV) {
            Ok(token) if !token.is_empty() => Self::bearer(&token),
            _ => Ok(Self::none()),
        }
    }
}

impl tonic::service::Interceptor for Auth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        #[cfg(feature = "opentelemetry")]
        trace_context::inject(request.metadata_mut());
        Ok(request)
    }
}

/// The caller's OpenTelemetry context on every call, as the app's global propagator writes it
/// (`traceparent` with `TraceContextPropagator`), so the proxy's spans continue the app's trace.
#[cfg(feature = "opentelemetry")]
mod trace_context {
    use opentelemetry::propagation::Injector;
    use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

    struct Metadata<'a>(&'a mut MetadataMap);

    impl Injector for Metadata<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(key), Ok(value)) =
                (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(value))
            {
                self.0.insert(key, value);
            }
        }
    }

    pub(crate) fn inject(metadata: &mut MetadataMap) {
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&opentelemetry::Context::current(), &mut Metadata(metadata));
        });
    }
}

/// The transport under every client: a channel plus the token interceptor.
pub type Transport = tonic::service::interceptor::InterceptedService<ProxyChannel, Auth>;

/// The transport of a client on `channel` sending `auth`.
pub(crate) fn transport(channel: tonic::transport::Channel, auth: Auth) -> Transport {
    tonic::service::interceptor::InterceptedService::new(ProxyChannel::new(channel), auth)
}

/// A channel to a proxy whose requests end their last DATA frame with END_STREAM (see
/// [`body::LookAheadBody`]): a unary call goes out in two writes instead of three, and the
/// proxy, which waits for the end of a unary request before it handles it, sees the end with
/// the message.
#[derive(Clone, Debug)]
pub struct ProxyChannel(tonic::transport::Channel);

impl ProxyChannel {
    /// Wraps `channel`.
    pub fn new(channel: tonic::transport::Channel) -> Self {
        Self(channel)
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for ProxyChannel {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = tonic::transport::channel::ResponseFuture;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.0, cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        tower::Service::call(&mut self.0, body::looked_ahead(request))
    }
}

/// `$EXO_CA_FILE`: extra roots (PEM) for `https://` endpoints.
pub const CA_FILE_ENV: &str = "EXO_CA_FILE";
/// `$EXO_CLIENT_CERT_FILE`: the client certificate (PEM) for proxies that ask for one (mTLS).
pub const CLIENT_CERT_FILE_ENV: &str = "EXO_CLIENT_CERT_FILE";
/// `$EXO_CLIENT_KEY_FILE`: its private key (PEM).
pub const CLIENT_KEY_FILE_ENV: &str = "EXO_CLIENT_KEY_FILE";

/// TLS for `https://` endpoints: the webpki roots plus `ca_file`, and a client certificate when
/// the proxy asks for one. The server's name is checked against the endpoint's host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// Extra certificate authorities (PEM bundle), e.g. a private CA that signed the proxy's.
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate chain (PEM), with `client_key_file`.
    pub client_cert_file: Option<std::path::PathBuf>,
    /// The client certificate's key (PEM).
    pub client_key_file: Option<std::path::PathBuf>,
    /// The name the server's certificate must carry (and the SNI sent) when it is not the
    /// endpoint's host: an endpoint given by the address a name was resolved to.
    pub server_name: Option<String>,
}

impl Tls {
    /// From `$EXO_CA_FILE`, `$EXO_CLIENT_CERT_FILE` and `$EXO_CLIENT_KEY_FILE` (each optional).
    pub fn from_env() -> Self {
        let path =
            |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
        Self {
            ca_file: path(CA_FILE_ENV),
            client_cert_file: path(CLIENT_CERT_FILE_ENV),
            client_key_file: path(CLIENT_KEY_FILE_ENV),
            server_name: None,
        }
    }

    fn client_config(&self) -> Result<tonic::transport::ClientTlsConfig> {
        let read = |what: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|err| {
                Error::client(
                    Reason::InvalidArgument,
                    format!("cannot read the {what} {}: {err}", path.display()),
                    false,
                )
            })
        };
        let mut config = tonic::transport::ClientTlsConfig::new().with_webpki_roots();
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        if let Some(ca) = &self.ca_file {
            config = config.ca_certificate(tonic::transport::Certificate::from_pem(read("CA file", ca)?));
        }
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(key)) => {
                let identity = tonic::transport::Identity::from_pem(
                    read("client certificate", cert)?,
                    read("client key", key)?,
                );
                config = config.identity(identity);
            }
            (None, None) => {}
            _ => {
                return Err(Error::client(
                    Reason::InvalidArgument,
                    "a client certificate needs both its file and its key file",
                    false,
                ));
            }
        }
        Ok(config)
    }
}

/// A lazily connecting channel to `url` (`https://` with `tls`): what every client of this crate
/// is built on, for callers that use the generated clients directly (a proxy forwarding to
/// another).
pub fn channel(url: &str, tls: &Tls) -> Result<tonic::transport::Channel> {
    channel_with(url, tls, &Liveness::default())
}

/// How a channel notices a peer that went silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// The longest wait for a connection (5 s by default).
    pub connect_timeout: std::time::Duration,
    /// `(interval, timeout)`: a connection with calls in flight is PINGed every `interval` and
    /// closed when an answer takes longer than `timeout`, so a peer that vanished without a
    /// reset (powered off, cut off the network) fails its calls in about interval + timeout
    /// instead of leaving them hanging. Off by default.
    pub keep_alive: Option<(std::time::Duration, std::time::Duration)>,
}

impl Default for Liveness {
    fn default() -> Self {
        Self { connect_timeout: std::time::Duration::from_secs(5), keep_alive: None }
    }
}

/// The socket path of a `unix:` endpoint: `unix:/run/exo/eqs.sock` or `unix:///run/exo/eqs.sock`
/// (gRPC's own spelling, so one value serves clients in every language).
fn unix_socket_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("unix:")?;
    let path = rest.strip_prefix("//").unwrap_or(rest);
    Some(std::path::PathBuf::from(path))
}

/// [`channel`] with its own [`Liveness`]. `url` is `http://host:port`, `https://host:port`, or
/// `unix:/path/to/proxy.sock` for a proxy in the same pod or on the same host (no TCP stack in
/// between: the cheapest transport there is).
pub fn channel_with(url: &str, tls: &Tls, liveness: &Liveness) -> Result<tonic::transport::Channel> {
    if let Some(path) = unix_socket_path(url) {
        if path.as_os_str().is_empty() || path.is_relative() {
            return Err(Error::client(
                Reason::InvalidArgument,
                format!(
                    "invalid endpoint {url:?}: a unix: endpoint needs an absolute path, e.g. unix:/run/exo/eqs.sock"
                ),
                false,
            ));
        }
        // The authority is only what HTTP/2 puts in `:authority`; the connector ignores it.
        let mut endpoint = tonic::transport::Endpoint::from_static("http://localhost")
            .connect_timeout(liveness.connect_timeout);
        if let Some((interval, timeout)) = liveness.keep_alive {
            endpoint = endpoint.http2_keep_alive_interval(interval).keep_alive_timeout(timeout);
        }
        let path = std::sync::Arc::new(path);
        let connector = tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(&*path).await.map_err(|err| {
                    std::io::Error::new(err.kind(), format!("cannot connect to {}: {err}", path.display()))
                })?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        return Ok(endpoint.connect_with_connector_lazy(connector));
    }
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|err| {
            Error::client(Reason::InvalidArgument, format!("invalid endpoint {url:?}: {err}"), false)
        })?
        .connect_timeout(liveness.connect_timeout)
        .tcp_nodelay(true);
    if let Some((interval, timeout)) = liveness.keep_alive {
        endpoint = endpoint.http2_keep_alive_interval(interval).keep_alive_timeout(timeout);
    }
    if url.starts_with("https://") {
        endpoint = endpoint.tls_config(tls.client_config()?).map_err(|err| {
            Error::client(Reason::InvalidArgument, format!("TLS settings for {url:?}: {err}"), false)
        })?;
    }
    Ok(endpoint.connect_lazy())
}

/// The generated wire types, for advanced use.
pub use exo_proto as proto;
