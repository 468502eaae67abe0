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
    ObjectCapability, ObjectClient, ObjectInfo, PutOptions, UPLOAD_CHUNK, WriteIf,
};
pub use queue::{
    BackendDescription, DEFAULT_EQS_ENDPOINT, EQS_ENDPOINT_ENV, Message, Outgoing, QueueCapability,
    QueueClient, QueueInfo, QueueOptions, Receive,
};
pub use retry::RetryPolicy;
/// gRPC status codes, as found in [`Error::code`].
pub use tonic::Code;

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
