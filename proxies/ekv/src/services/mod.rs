//! Key-value backends, one module each, and the registry that lists them: a backend is its
//! module (with its [`Backend`](exo_proxy_core::registry::Backend) impl) plus one line below.

#[cfg(feature = "azure")]
pub mod azure_table;
#[cfg(feature = "aws")]
pub mod dynamodb;
pub mod embedded;
pub mod failover;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
pub mod remote;

use std::{sync::Arc, time::Duration};

use crate::backend::KeyValue;

exo_proxy_core::backends! {
    /// Which backend serves the tables, with its settings (`kind:` picks the line).
    pub enum BackendConfig for "kv", opens Arc<dyn KeyValue>, with OpenContext {
        "memory" in "memory" => Memory(memory::MemoryKv): "In-process, not durable; for tests and benchmarks.",
        "embedded" in "local" => Embedded(embedded::EmbeddedKv): "A durable SQLite file on local disk.",
        #[cfg(feature = "aws")]
        "dynamodb" in "aws" => Dynamodb(dynamodb::DynamoKv): "Amazon DynamoDB: region, endpoint override, credentials.",
        #[cfg(feature = "azure")]
        "azure-table" in "azure" => AzureTable(azure_table::AzureTableKv): "Azure Table storage: account, endpoint, credentials.",
        #[cfg(feature = "postgres")]
        "postgres" in "postgres" => Postgres(postgres::PostgresKv): "PostgreSQL: two tables in a schema of your database.",
        #[cfg(feature = "redis")]
        "redis" in "redis" => Redis(redis::RedisKv): "Redis: hashes and sorted-set indexes under a namespace (key prefix).",
        "remote" in "remote" => Remote(remote::RemoteKv): "Another ekv proxy over gRPC (https: TLS, client certificate): an edge forwarding to a standalone proxy.",
    }
    chain "failover" => Failover(failover::FailoverKv): "An ordered chain of backends: writes to the first that answers, reads fall through.";
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self::Embedded(embedded::EmbeddedConfig::default())
    }
}

/// What every key-value backend is opened with.
#[derive(Debug, Clone)]
pub struct OpenContext {
    /// Bounds each call a cloud backend makes to its service.
    pub call_timeout: Duration,
    /// The proxy's metrics (a failover chain's members report into them).
    pub metrics: std::sync::Arc<exo_proxy_core::metrics::Metrics>,
}
