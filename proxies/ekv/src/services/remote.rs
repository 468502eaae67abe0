//! `remote`: another ekv proxy, reached over gRPC (TLS and a client certificate for `https://`).
//! An edge or app-host proxy forwards each call to a standalone proxy on a VM that holds the
//! real table store.
//!
//! Capabilities and limits are the remote's (asked with Describe when the backend opens); its
//! refusals keep their reason (CONDITION_FAILED, KEY_NOT_FOUND, …); the caller's deadline travels
//! on as `grpc-timeout`. Versions and page positions are the remote's, passed through. A TTL is
//! sent as the seconds left until the expiry this proxy computed, so an entry may expire up to a
//! second later than a put made directly on the remote.

use std::sync::Arc;

use async_trait::async_trait;
use exo_proto::kv::v1::{self as pb, kv_service_client::KvServiceClient};
use exo_proxy_core::{ExoResult, config::ConfigError, now_ms};
use exo_remote::{
    Described, Description, RemoteConfig, Transport, described, from_status, page_token, request,
};

use crate::ops;
use crate::{
    backend::KeyValue,
    model::{Capability, Change, Condition, Descriptor},
};

impl exo_proxy_core::registry::Backend for RemoteKv {
    type Opened = Arc<dyn KeyValue>;
    type Context = crate::services::OpenContext;
    type Config = RemoteConfig;

    fn settings(_data: Option<std::path::PathBuf>) -> RemoteConfig {
        RemoteConfig { url: "http://127.0.0.1:7403".into(), ..RemoteConfig::default() }
    }

    fn validate(config: &RemoteConfig) -> Result<(), ConfigError> {
        config.validate()
    }

    fn open<'a>(
        config: &'a RemoteConfig,
        _context: &'a Self::Context,
    ) -> exo_proxy_core::registry::BoxFuture<'a, ExoResult<Self::Opened>> {
        Box::pin(async move {
            let kv: Self::Opened = Arc::new(RemoteKv::connect(config).await?);
            Ok(kv)
        })
    }
}

/// Tables served by another ekv proxy.
pub struct RemoteKv {
    description: Description<Descriptor>,
    client: KvServiceClient<Transport>,
    remote: exo_remote::Remote,
    config: RemoteConfig,
}

/// What the remote says it is.
fn from_answer(described: pb::DescribeResponse) -> Descriptor {
    Descriptor {
        backend: "remote",
        capabilities: described.capabilities.iter().filter_map(|c| Capability::try_from(*c).ok()).collect(),
        limits: described.limits.unwrap_or_default(),
    }
}

/// A condition as the contract sends it.
fn condition_of(condition: &Condition) -> Option<pb::Condition> {
    let kind = match condition {
        Condition::None => return None,
        Condition::MustNotExist => pb::condition::Kind::MustNotExist(true),
        Condition::VersionEquals(version) => pb::condition::Kind::VersionEquals(version.clone()),
    };
    Some(pb::Condition { kind: Some(kind) })
}

/// The time to live that expires at `expires_at_ms` (0: never): whole seconds, rounded up,
/// never 0 for an expiry (0 would mean "no expiry").
fn ttl_seconds(expires_at_ms: u64) -> u32 {
    match expires_at_ms {
        0 => 0,
        at => u32::try_from(at.saturating_sub(now_ms()).div_ceil(1000).max(1)).unwrap_or(u32::MAX),
    }
}

/// Until the remote answers: every capability, no limit (see [`Description`]).
fn provisional() -> Descriptor {
    let most = u32::MAX;
    let limits = pb::Limits {
        max_key_bytes: most,
        max_value_bytes: u64::MAX,
        max_batch_keys: most,
        max_page_size: most,
        max_ttl_seconds: most,
        max_batch_writes: most,
        max_batch_bytes: u64::MAX,
    };
    Descriptor { backend: "remote", capabilities: Descriptor::every_capability(), limits }
}

/// Asks the remote to describe itself.
async fn describe(mut client: KvServiceClient<Transport>, config: RemoteConfig) -> ExoResult<Descriptor> {
    match described(&config, "ekv", client.describe(pb::DescribeRequest {})).await? {
        Described::Answered(answer) => Ok(from_answer(answer)),
        Described::Unreachable(err) => Err(err),
    }
}

impl RemoteKv {
    /// Connects and asks the remote what it is. A remote that cannot be reached yet leaves the
    /// backend open but not ready (see [`Description`]); one that refuses this proxy (TLS,
    /// token, identity) fails the open.
    pub async fn connect(config: &RemoteConfig) -> ExoResult<Self> {
        let remote = config.connect().await?;
        let transport = remote.transport.clone();
        let mut client = KvServiceClient::new(transport.clone())
            .max_decoding_message_size(exo_remote::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(exo_remote::MAX_MESSAGE_BYTES);
        let description = match described(config, "ekv", client.describe(pb::DescribeRequest {})).await? {
            Described::Answered(answer) => {
                tracing::info!(url = %config.url, remote_backend = %answer.backend, "remote ekv described itself");
                Description::answered(from_answer(answer), &config.url)
            }
            Described::Unreachable(err) => {
                tracing::warn!(url = %config.url, error = %err.message, "remote ekv not reachable yet; not ready until it is");
                Description::provisional(provisional(), &config.url)
            }
        };
        Ok(Self { description, client, remote, config: config.clone() })
    }

    /// Nothing is forwarded before the remote has described itself.
    fn client(&self) -> ExoResult<KvServiceClient<Transport>> {
        self.description.require(|| describe(self.client.clone(), self.config.clone()))?;
        Ok(self.client.clone())
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl KeyValue for RemoteKv {
    fn descriptor(&self) -> &Descriptor {
        self.description.get()
    }

    fn is_described(&self) -> bool {
        self.description.is_known()
    }

    async fn ready(&self) -> ExoResult<()> {
        self.description.settle(describe(self.client.clone(), self.config.clone())).await?;
        self.remote.ready("exo.kv.v1.KvService").await
    }

    async fn create_table(&self, op: ops::CreateTable<'_>) -> ExoResult<bool> {
        let ops::CreateTable { table } = op;
        let answer = self
            .client()?
            .create_table(request(pb::CreateTableRequest { name: table.to_string() }))
            .await
            .map_err(from_status)?;
        Ok(answer.into_inner().created)
    }

    async fn delete_table(&self, op: ops::DeleteTable<'_>) -> ExoResult<()> {
        let ops::DeleteTable { table } = op;
        self.client()?
            .delete_table(request(pb::DeleteTableRequest { name: table.to_string() }))
            .await
            .map_err(from_status)?;
        Ok(())
    }

    async fn list_tables(&self, _op: ops::ListTables) -> ExoResult<Vec<String>> {
        let answer =
            self.client()?.list_tables(request(pb::ListTablesRequest {})).await.map_err(from_status)?;
        Ok(answer.into_inner().names)
    }

    async fn get(&self, op: ops::Get<'_>) -> ExoResult<pb::Entry> {
        let ops::Get { table, key } = op;
        let answer = self
            .client()?
            .get(request(pb::GetRequest { table: table.to_string(), key: key.to_owned() }))
            .await
            .map_err(from_status)?;
        Ok(answer.into_inner().entry.unwrap_or_default())
    }

    async fn put(&self, op: ops::Put<'_>) -> ExoResult<String> {
        let ops::Put { table, key, value, condition, expires_at_ms } = op;
        let ttl_seconds = ttl_seconds(expires_at_ms);
        let answer = self
            .client()?
            .put(request(pb::PutRequest {
                table: table.to_string(),
                key: key.to_owned(),
                value,
                condition: condition_of(condition),
                ttl_seconds,
            }))
            .await
            .map_err(from_status)?;
        Ok(answer.into_inner().version)
    }

    async fn delete(&self, op: ops::Delete<'_>) -> ExoResult<bool> {
        let ops::Delete { table, key, condition } = op;
        let version_equals = match condition {
            Condition::VersionEquals(version) => version.clone(),
            Condition::None | Condition::MustNotExist => String::new(),
        };
        let answer = self
            .client()?
            .delete(request(pb::DeleteRequest {
                table: table.to_string(),
                key: key.to_owned(),
                version_equals,
            }))
            .await
            .map_err(from_status)?;
        Ok(answer.into_inner().deleted)
    }

    async fn list(&self, op: ops::List<'_>) -> ExoResult<Vec<pb::Entry>> {
        let ops::List { table, prefix, start_after, limit, keys_only } = op;
        let mut entries = Vec::new();
        let mut page_token = page_token(start_after);
        let max_page = self.descriptor().limits.max_page_size.max(1);
        while entries.len() < limit {
            let page_size = u32::try_from(limit - entries.len()).unwrap_or(max_page).min(max_page);
            let answer = self
                .client()?
                .list(request(pb::ListRequest {
                    table: table.to_string(),
                    prefix: prefix.to_owned(),
                    page_size,
                    page_token,
                    keys_only,
                }))
                .await
                .map_err(from_status)?
                .into_inner();
            entries.extend(answer.entries.into_iter().take(limit - entries.len()));
            if answer.next_page_token.is_empty() {
                break;
            }
            page_token = answer.next_page_token;
        }
        Ok(entries)
    }

    async fn increment(&self, op: ops::Increment<'_>) -> ExoResult<pb::IncrementResponse> {
        let ops::Increment { table, key, delta, expires_at_ms } = op;
        let answer = self
            .client()?
            .increment(request(pb::IncrementRequest {
                table: table.to_string(),
                key: key.to_owned(),
                delta,
                ttl_seconds: ttl_seconds(expires_at_ms),
            }))
            .await
            .map_err(from_status)?;
        Ok(answer.into_inner())
    }

    async fn write_batch(&self, op: ops::WriteBatch<'_>) -> ExoResult<Vec<String>> {
        let ops::WriteBatch { table, writes } = op;
        let writes = writes
            .iter()
            .map(|write| {
                let (value, delete, ttl_seconds) = match &write.change {
                    Change::Put { value, expires_at_ms } => {
                        (value.clone(), false, ttl_seconds(*expires_at_ms))
                    }
                    Change::Delete => (Vec::new(), true, 0),
                };
                pb::BatchWrite {
                    key: write.key.clone(),
                    value,
                    delete,
                    condition: condition_of(&write.condition),
                    ttl_seconds,
                }
            })
            .collect();
        let answer = self
            .client()?
            .write_batch(request(pb::WriteBatchRequest { table: table.to_string(), writes }))
            .await
            .map_err(from_status)?;
        Ok(answer.into_inner().versions)
    }

    async fn batch_get(&self, op: ops::BatchGet<'_>) -> ExoResult<Vec<pb::Entry>> {
        let ops::BatchGet { table, keys } = op;
        let answer = self
            .client()?
            .batch_get(request(pb::BatchGetRequest { table: table.to_string(), keys: keys.to_vec() }))
            .await
            .map_err(from_status)?;
        Ok(answer.into_inner().entries)
    }
}
