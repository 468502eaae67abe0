//! Object backends, one module each, and the registry that lists them: a backend is its module
//! (with its [`Backend`](exo_proxy_core::registry::Backend) impl) plus one line below.

#[cfg(feature = "azure")]
pub mod azure_blob;
pub mod failover;
pub mod fs;
#[cfg(feature = "gcp")]
pub mod gcs;
pub mod memory;
pub mod remote;
#[cfg(feature = "aws")]
pub mod s3;

use std::{sync::Arc, time::Duration};

use crate::{backend::ObjectStore, presign::LocalPresigner};

exo_proxy_core::backends! {
    /// Which backend stores the objects, with its settings (`kind:` picks the line).
    pub enum BackendConfig for "object", opens Arc<dyn ObjectStore>, with OpenContext {
        "memory" in "memory" => Memory(memory::MemoryObjects): "In-process, not durable; for tests and benchmarks.",
        "fs" in "local" => Fs(fs::FsObjects): "Files under a data root on local disk.",
        #[cfg(feature = "aws")]
        "s3" in "aws" => S3(s3::S3Objects): "Amazon S3: region, endpoint override, credentials.",
        #[cfg(feature = "azure")]
        "azure-blob" in "azure" => AzureBlob(azure_blob::AzureBlobs): "Azure Blob Storage: account, endpoint, credentials.",
        #[cfg(feature = "gcp")]
        "gcs" in "gcp" => Gcs(gcs::GcsObjects): "Google Cloud Storage: project, endpoint, service-account key.",
        "remote" in "remote" => Remote(remote::RemoteObjects): "Another eos proxy over gRPC (https: TLS, client certificate): an edge forwarding to a standalone proxy.",
    }
    chain "failover" => Failover(failover::FailoverObjects): "An ordered chain of backends: writes to the first that answers, reads fall through.";
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self::Fs(fs::FsConfig::default())
    }
}

/// Largest object the memory backend holds by default.
pub const DEFAULT_MEMORY_OBJECT_BYTES: u64 = 256 * 1024 * 1024;

/// What every object backend is opened with.
#[derive(Debug, Clone)]
pub struct OpenContext {
    /// Signs the URLs the local backends serve.
    pub presigner: Arc<LocalPresigner>,
    /// `presign.base-url`: for `s3`, the S3 endpoint presigned URLs name.
    pub presign_base: Option<String>,
    /// Bounds each call a cloud backend makes to its service.
    pub call_timeout: Duration,
    /// The proxy's metrics (a failover chain's members report into them).
    pub metrics: std::sync::Arc<exo_proxy_core::metrics::Metrics>,
}

use bytes::Bytes;
use futures::stream;

use crate::model::{ByteStream, READ_CHUNK};

/// Serves `data[offset..offset + length]` as a stream of chunks.
pub(crate) fn bytes_stream(data: Bytes, offset: u64, length: u64) -> ByteStream {
    let slice = data.slice(offset as usize..(offset + length) as usize);
    let chunks: Vec<_> = (0..slice.len())
        .step_by(READ_CHUNK)
        .map(|start| Ok(slice.slice(start..(start + READ_CHUNK).min(slice.len()))))
        .collect();
    Box::pin(stream::iter(chunks))
}
