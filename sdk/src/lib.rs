//! `exo-sdk`: typed Rust clients for ExoFlow proxies: [`QueueClient`] (eqs), [`ObjectClient`] (eos), [`KvClient`] (ekv).
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

mod error;
mod kv;
mod object;
mod queue;
mod retry;

pub use error::{Error, Reason, Result};
pub use kv::{
    DEFAULT_EKV_ENDPOINT, EKV_ENDPOINT_ENV, Entry, KvBackendDescription, KvCapability, KvClient,
    Precondition, Put,
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
        Ok(request)
    }
}

/// The transport under every client: a channel plus the token interceptor.
pub type Transport = tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Auth>;

/// A lazily connecting channel to `url`.
fn channel(url: &str) -> Result<tonic::transport::Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|err| {
            Error::client(Reason::InvalidArgument, format!("invalid endpoint {url:?}: {err}"), false)
        })?
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true);
    Ok(endpoint.connect_lazy())
}

/// The generated wire types, for advanced use.
pub use exo_proto as proto;
