//! [`KvClient`]: the app's handle on an ekv proxy.

use std::time::Duration;

use exo_proto::kv::v1::{self as pb, kv_service_client::KvServiceClient};
use tonic::transport::Channel;

use crate::{Auth, Result, RetryPolicy, Tls, Transport, channel, retry::unary};

pub use pb::{DescribeResponse as KvBackendDescription, Entry, IncrementResponse, KvCapability};

/// Environment variable naming the ekv endpoint.
pub const EKV_ENDPOINT_ENV: &str = "EXO_EKV_ENDPOINT";
/// Where the ekv sidecar listens unless told otherwise.
pub const DEFAULT_EKV_ENDPOINT: &str = "http://127.0.0.1:7403";

/// A write precondition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Precondition {
    /// Unconditional.
    #[default]
    None,
    /// Only if the key does not exist (create).
    MustNotExist,
    /// Only if the key is at this version (compare-and-set).
    VersionEquals(String),
}

/// Options of a put.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Put {
    /// Precondition.
    pub condition: Precondition,
    /// Time to live, in whole seconds rounded up; `None` keeps the value forever.
    pub ttl: Option<Duration>,
}

impl Put {
    /// Only if absent.
    pub fn create() -> Self {
        Self { condition: Precondition::MustNotExist, ttl: None }
    }

    /// Only at `version`.
    pub fn if_version(version: impl Into<String>) -> Self {
        Self { condition: Precondition::VersionEquals(version.into()), ttl: None }
    }

    /// Expire after `ttl`.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// One write of a [`KvClient::write_batch`]: a put (with its options) or a delete.
#[derive(Debug, Clone, PartialEq)]
pub struct Write(pb::BatchWrite);

impl Write {
    /// Puts `value` under `key`, with a condition and a time to live as [`Put`] gives them.
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>, options: Put) -> Self {
        Self(pb::BatchWrite {
            key: key.into(),
            value: value.into(),
            delete: false,
            condition: condition_of(options.condition),
            ttl_seconds: ttl_seconds(options.ttl),
        })
    }

    /// Deletes `key`.
    pub fn delete(key: impl Into<String>) -> Self {
        Self(pb::BatchWrite { key: key.into(), delete: true, ..Default::default() })
    }

    /// Deletes `key` only at `version`.
    pub fn delete_if_version(key: impl Into<String>, version: impl Into<String>) -> Self {
        let condition = condition_of(Precondition::VersionEquals(version.into()));
        Self(pb::BatchWrite { key: key.into(), delete: true, condition, ..Default::default() })
    }
}

/// A time to live in the whole seconds the contract takes, rounded up: a part of a second still
/// expires (0 would mean never).
fn ttl_seconds(ttl: Option<Duration>) -> u32 {
    ttl.map_or(0, |t| {
        let seconds = t.as_secs().saturating_add(u64::from(t.subsec_nanos() > 0));
        seconds.min(u64::from(u32::MAX)) as u32
    })
}

fn condition_of(condition: Precondition) -> Option<pb::Condition> {
    let kind = match condition {
        Precondition::None => return None,
        Precondition::MustNotExist => pb::condition::Kind::MustNotExist(true),
        Precondition::VersionEquals(v) => pb::condition::Kind::VersionEquals(v),
    };
    Some(pb::Condition { kind: Some(kind) })
}

/// A client of the ekv key-value proxy. Cheap to clone.
#[derive(Debug, Clone)]
pub struct KvClient {
    inner: KvServiceClient<Transport>,
    channel: Channel,
    retry: RetryPolicy,
}

impl KvClient {
    /// A client for the proxy at `url`; connects lazily.
    pub fn connect(url: &str) -> Result<Self> {
        Self::connect_with_tls(url, &Tls::from_env())
    }

    /// [`Self::connect`] with explicit TLS settings for an `https://` endpoint (`connect` reads
    /// them from `$EXO_CA_FILE`, `$EXO_CLIENT_CERT_FILE`, `$EXO_CLIENT_KEY_FILE`).
    pub fn connect_with_tls(url: &str, tls: &Tls) -> Result<Self> {
        let channel = channel(url, tls)?;
        Ok(Self {
            inner: KvServiceClient::new(crate::transport(channel.clone(), Auth::none())),
            channel,
            retry: RetryPolicy::default(),
        })
    }

    /// A client for `$EXO_EKV_ENDPOINT`, or the sidecar default `http://127.0.0.1:7403`.
    pub fn from_env() -> Result<Self> {
        let client = {
            Self::connect(
                &std::env::var(EKV_ENDPOINT_ENV).unwrap_or_else(|_| DEFAULT_EKV_ENDPOINT.to_owned()),
            )
        };
        client?.with_auth(Auth::from_env()?)
    }

    /// Sends `auth` (e.g. [`Auth::bearer`]) with every call; `from_env` reads `$EXO_PROXY_TOKEN`.
    pub fn with_auth(mut self, auth: Auth) -> Result<Self> {
        self.inner = KvServiceClient::new(crate::transport(self.channel.clone(), auth));
        Ok(self)
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The generated gRPC client.
    pub fn raw(&self) -> KvServiceClient<Transport> {
        self.inner.clone()
    }

    /// The backend's name, capabilities and limits.
    pub async fn describe(&self) -> Result<KvBackendDescription> {
        unary(&self.retry, &self.inner, pb::DescribeRequest {}, |mut c, r| async move { c.describe(r).await })
            .await
    }

    /// Creates a table; returns whether it was created.
    pub async fn create_table(&self, name: &str) -> Result<bool> {
        let req = pb::CreateTableRequest { name: name.to_owned() };
        Ok(unary(&self.retry, &self.inner, req, |mut c, r| async move { c.create_table(r).await })
            .await?
            .created)
    }

    /// Deletes a table and its keys.
    pub async fn delete_table(&self, name: &str) -> Result<()> {
        let req = pb::DeleteTableRequest { name: name.to_owned() };
        unary(&self.retry, &self.inner, req, |mut c, r| async move { c.delete_table(r).await })
            .await
            .map(|_| ())
    }

    /// Every table name.
    pub async fn list_tables(&self) -> Result<Vec<String>> {
        let req = pb::ListTablesRequest {};
        Ok(unary(&self.retry, &self.inner, req, |mut c, r| async move { c.list_tables(r).await })
            .await?
            .names)
    }

    /// Reads a key (an error with reason KEY_NOT_FOUND if absent).
    pub async fn get(&self, table: &str, key: &str) -> Result<Entry> {
        let req = pb::GetRequest { table: table.to_owned(), key: key.to_owned() };
        let response = unary(&self.retry, &self.inner, req, |mut c, r| async move { c.get(r).await }).await?;
        Ok(response.entry.unwrap_or_default())
    }

    /// Writes a key; returns the new version.
    pub async fn put(
        &self,
        table: &str,
        key: &str,
        value: impl Into<Vec<u8>>,
        options: Put,
    ) -> Result<String> {
        let req = pb::PutRequest {
            table: table.to_owned(),
            key: key.to_owned(),
            value: value.into(),
            condition: condition_of(options.condition),
            ttl_seconds: ttl_seconds(options.ttl),
        };
        Ok(unary(&self.retry, &self.inner, req, |mut c, r| async move { c.put(r).await }).await?.version)
    }

    /// Deletes a key, optionally only at `version`; returns whether it existed.
    pub async fn delete(&self, table: &str, key: &str, version: Option<&str>) -> Result<bool> {
        let req = pb::DeleteRequest {
            table: table.to_owned(),
            key: key.to_owned(),
            version_equals: version.unwrap_or_default().to_owned(),
        };
        Ok(unary(&self.retry, &self.inner, req, |mut c, r| async move { c.delete(r).await }).await?.deleted)
    }

    /// One page of entries with `prefix`.
    pub async fn list_page(
        &self,
        table: &str,
        prefix: &str,
        page_size: u32,
        page_token: &str,
        keys_only: bool,
    ) -> Result<(Vec<Entry>, String)> {
        let req = pb::ListRequest {
            table: table.to_owned(),
            prefix: prefix.to_owned(),
            page_size,
            page_token: page_token.to_owned(),
            keys_only,
        };
        let response =
            unary(&self.retry, &self.inner, req, |mut c, r| async move { c.list(r).await }).await?;
        Ok((response.entries, response.next_page_token))
    }

    /// Every entry with `prefix`, following pages.
    pub async fn list(&self, table: &str, prefix: &str) -> Result<Vec<Entry>> {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let (page, next) = self.list_page(table, prefix, 0, &token, false).await?;
            all.extend(page);
            if next.is_empty() {
                return Ok(all);
            }
            token = next;
        }
    }

    /// Adds `delta` to the counter under `key` atomically and returns its new value (an absent
    /// key counts from 0). A counter is the decimal text of an `i64`, so [`Self::get`] reads it
    /// as text. Fails with NOT_A_COUNTER when the key holds something else and COUNTER_OVERFLOW
    /// past the `i64` range, changing nothing.
    ///
    /// Repeating an increment that took effect would count it twice, so only a THROTTLED
    /// answer (the proxy wrote nothing) is retried; any other failure is returned as it is.
    pub async fn increment(&self, table: &str, key: &str, delta: i64) -> Result<i64> {
        Ok(self.increment_with(table, key, delta, None).await?.value)
    }

    /// [`Self::increment`] with a time to live for a counter the increment creates (an existing
    /// counter keeps its expiry: a fixed window); returns the new value and version.
    pub async fn increment_with(
        &self,
        table: &str,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<IncrementResponse> {
        let req = pb::IncrementRequest {
            table: table.to_owned(),
            key: key.to_owned(),
            delta,
            ttl_seconds: ttl_seconds(ttl),
        };
        self.retry
            .run(|| {
                let (mut client, req) = (self.inner.clone(), req.clone());
                async move {
                    client.increment(req).await.map(tonic::Response::into_inner).map_err(|status| {
                        let mut err = crate::Error::from(status);
                        err.retryable &= err.reason == crate::Reason::Throttled;
                        err
                    })
                }
            })
            .await
    }

    /// Writes several keys of `table` all or none, where the backend declares ATOMIC_BATCH:
    /// a failed condition fails the call with CONDITION_FAILED naming the write (`field` is
    /// `writes[i]`) and changes nothing. Returns, per write in order, the new version of a put
    /// and "" for a delete.
    pub async fn write_batch(&self, table: &str, writes: Vec<Write>) -> Result<Vec<String>> {
        let req = pb::WriteBatchRequest {
            table: table.to_owned(),
            writes: writes.into_iter().map(|w| w.0).collect(),
        };
        let response =
            unary(&self.retry, &self.inner, req, |mut c, r| async move { c.write_batch(r).await }).await?;
        Ok(response.versions)
    }

    /// Reads many keys: (found entries in request order, missing keys).
    pub async fn batch_get(&self, table: &str, keys: &[&str]) -> Result<(Vec<Entry>, Vec<String>)> {
        let req = pb::BatchGetRequest {
            table: table.to_owned(),
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        };
        let response =
            unary(&self.retry, &self.inner, req, |mut c, r| async move { c.batch_get(r).await }).await?;
        Ok((response.entries, response.missing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_to_live_under_a_second_still_expires() {
        assert_eq!(ttl_seconds(None), 0);
        assert_eq!(ttl_seconds(Some(Duration::from_millis(500))), 1);
        assert_eq!(ttl_seconds(Some(Duration::from_secs(2))), 2);
        assert_eq!(ttl_seconds(Some(Duration::from_millis(2001))), 3);
        assert_eq!(ttl_seconds(Some(Duration::MAX)), u32::MAX);
    }
}
