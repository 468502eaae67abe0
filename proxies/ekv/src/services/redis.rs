//! `redis`: key-value tables in Redis under a **namespace** (a key prefix), so several apps share
//! one Redis.
//!
//! Layout (`<ns>` is the namespace): `<ns>:tables` is a sorted set of table names (score 0, so
//! lexical order); each entry is a hash `<ns>:e:<table>:<key>` with fields `v` (the value), `ver`
//! (its version) and `exp` (expiry in ms since the epoch, `0` for never), expired natively by
//! Redis (`PEXPIREAT`); a counter's `v` is its decimal text, which the increment script adds
//! to with `HINCRBY` (`HGET <ns>:e:<table>:<key> v` reads it); `<ns>:i:<table>` is a sorted set
//! of the table's keys (score 0: ordered by bytes), the index prefix listing pages through (`ZRANGEBYLEX`; SCAN is unordered). Every
//! call is one Lua script, so a condition and the write it guards are atomic. An entry whose
//! expiry has passed by the proxy's clock is treated as absent even before Redis removes it.
//!
//! Durability is the server's: a Redis without AOF (`appendonly no`) keeps acknowledged writes
//! only in memory and loses them on a restart, and with `appendfsync everysec` (Redis's default)
//! or `no` a crash loses up to the last second or more of them. The proxy reads both settings
//! at start and warns unless they are `yes` and `always`.

use std::sync::Arc;

use async_trait::async_trait;
use exo_proto::{common::v1::ErrorReason, kv::v1 as pb};
use exo_proxy_core::{ExoError, ExoResult, config::ConfigError, now_ms, readiness, secret::SecretRef};
use redis::{Script, Value, aio::ConnectionManager};
use serde::{Deserialize, Serialize};

use crate::ops;
use crate::{
    backend::KeyValue,
    model::{
        Capability, Change, Condition, Descriptor, counter, key_not_found, new_version, portable_limits,
        table_not_found,
    },
};

/// The settings of a `redis` backend.
///
/// ```yaml
/// url: redis://cache.internal:6379/0   # no password here
/// password: env:REDIS_PASSWORD          # optional secret reference
/// namespace: shop-prod                  # every key this proxy writes starts with `shop-prod:`
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RedisConfig {
    /// `redis://host:port/db`, or `rediss://…` for TLS (the server's certificate and host name
    /// always verified: against `ca-file`, else the system's roots).
    #[serde(default = "default_url")]
    pub url: String,
    /// The password, if the server wants one (ACL user: put it in the URL as `redis://user@…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
    /// The prefix of every key: one per app or environment sharing the server.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// PEM file of the certificate authorities that may sign the server's certificate (`rediss://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
}

fn default_url() -> String {
    "redis://127.0.0.1:6379/0".into()
}

fn default_namespace() -> String {
    "exoflow".into()
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { url: default_url(), password: None, namespace: default_namespace(), ca_file: None }
    }
}

impl exo_proxy_core::registry::Backend for RedisKv {
    type Opened = Arc<dyn KeyValue>;
    type Context = crate::services::OpenContext;
    type Config = RedisConfig;

    fn settings(_data: Option<std::path::PathBuf>) -> RedisConfig {
        RedisConfig::default()
    }

    fn validate(config: &RedisConfig) -> Result<(), ConfigError> {
        redis::Client::open(config.url.as_str())
            .map_err(|e| ConfigError::Invalid(format!("backend.url is not a Redis URL: {e}")))?;
        let ok = !config.namespace.is_empty()
            && config.namespace.len() <= 64
            && config.namespace.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            return Err(ConfigError::Invalid(format!(
                "backend.namespace must be 1-64 of a-z, A-Z, 0-9, '-', '_' and '.' (got {:?})",
                config.namespace
            )));
        }
        Ok(())
    }

    fn open<'a>(
        config: &'a RedisConfig,
        _context: &'a Self::Context,
    ) -> exo_proxy_core::registry::BoxFuture<'a, ExoResult<Self::Opened>> {
        Box::pin(async move {
            let kv: Self::Opened = Arc::new(RedisKv::connect(config).await?);
            Ok(kv)
        })
    }
}

/// A Redis failure in the ExoFlow vocabulary: a lost or refused connection, a timeout or a
/// server busy loading is retryable; anything else is INTERNAL with the server's message.
fn map_error(operation: &str, err: &redis::RedisError) -> ExoError {
    let message = format!("Redis {operation}: {err}");
    if err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
        || matches!(err.kind(), redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading))
    {
        ExoError::new(ErrorReason::BackendUnavailable, message).retryable()
    } else if matches!(err.kind(), redis::ErrorKind::AuthenticationFailed) {
        ExoError::new(ErrorReason::Unauthenticated, message)
    } else {
        ExoError::internal(message)
    }
}

// Script answers: a status string first ("ok", "table" for a missing table, "cond" followed by
// the current version or "" when absent), then data.
const LIVE: &str = "
local function live(key, now)
  local e = redis.call('HMGET', key, 'v', 'ver', 'exp')
  if not e[2] then return nil end
  local exp = tonumber(e[3] or '0') or 0
  if exp > 0 and exp <= now then return nil end
  return e
end
";

const PUT: &str = "
-- KEYS: tables, entry, index. ARGV: table, key, value, version, exp, cond, want, now
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {'table'} end
local cur = live(KEYS[2], tonumber(ARGV[8]))
local have = cur and cur[2] or ''
if ARGV[6] == 'absent' and cur then return {'cond', have} end
if ARGV[6] == 'version' and (not cur or have ~= ARGV[7]) then return {'cond', have} end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'v', ARGV[3], 'ver', ARGV[4], 'exp', ARGV[5])
if tonumber(ARGV[5]) > 0 then redis.call('PEXPIREAT', KEYS[2], ARGV[5]) end
redis.call('ZADD', KEYS[3], 0, ARGV[2])
return {'ok'}
";

const INCREMENT: &str = "
-- KEYS: tables, entry, index. ARGV: table, key, delta, version, exp (of a new counter), now
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {'table'} end
local cur = live(KEYS[2], tonumber(ARGV[6]))
if cur then
  local v = cur[1]
  if not (v == '0' or (#v <= 20 and string.match(v, '^%-?[1-9]%d*$'))) then return {'refused', v} end
  local n = redis.pcall('HINCRBY', KEYS[2], 'v', ARGV[3])
  if type(n) == 'table' and n.err then return {'refused', v} end
  redis.call('HSET', KEYS[2], 'ver', ARGV[4])
else
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 'v', ARGV[3], 'ver', ARGV[4], 'exp', ARGV[5])
  if tonumber(ARGV[5]) > 0 then redis.call('PEXPIREAT', KEYS[2], ARGV[5]) end
  redis.call('ZADD', KEYS[3], 0, ARGV[2])
end
-- As text: a Lua number would round values past 2^53.
return {'ok', redis.call('HGET', KEYS[2], 'v')}
";

const WRITE_BATCH: &str = "
-- KEYS: tables, index, then one entry per write. ARGV: table, now, then per write: key, kind
-- ('put' or 'delete'), value, version, exp, cond, want.
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {'table'} end
local now = tonumber(ARGV[2])
local n = (#ARGV - 2) / 7
for i = 0, n - 1 do
  local b = 2 + i * 7
  local cur = live(KEYS[3 + i], now)
  local have = cur and cur[2] or ''
  if (ARGV[b + 6] == 'absent' and cur) or (ARGV[b + 6] == 'version' and (not cur or have ~= ARGV[b + 7])) then
    return {'cond', tostring(i), have}
  end
end
for i = 0, n - 1 do
  local b = 2 + i * 7
  redis.call('DEL', KEYS[3 + i])
  if ARGV[b + 2] == 'put' then
    redis.call('HSET', KEYS[3 + i], 'v', ARGV[b + 3], 'ver', ARGV[b + 4], 'exp', ARGV[b + 5])
    if tonumber(ARGV[b + 5]) > 0 then redis.call('PEXPIREAT', KEYS[3 + i], ARGV[b + 5]) end
    redis.call('ZADD', KEYS[2], 0, ARGV[b + 1])
  else
    redis.call('ZREM', KEYS[2], ARGV[b + 1])
  end
end
return {'ok'}
";

const DELETE: &str = "
-- KEYS: tables, entry, index. ARGV: table, key, cond, want, now
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {'table'} end
local cur = live(KEYS[2], tonumber(ARGV[5]))
local have = cur and cur[2] or ''
if ARGV[3] == 'absent' and cur then return {'cond', have} end
if ARGV[3] == 'version' and (not cur or have ~= ARGV[4]) then return {'cond', have} end
if ARGV[3] == 'absent' then return {'ok', 0} end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[2])
if cur then return {'ok', 1} end
return {'ok', 0}
";

const GET: &str = "
-- KEYS: tables. ARGV: table, entry prefix, now, keys...
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {'table'} end
local out = {'ok'}
for i = 4, #ARGV do
  local e = live(ARGV[2] .. ARGV[i], tonumber(ARGV[3]))
  if e then
    table.insert(out, ARGV[i]); table.insert(out, e[1]); table.insert(out, e[2]); table.insert(out, e[3] or '0')
  end
end
return out
";

const LIST: &str = "
-- KEYS: tables, index. ARGV: table, entry prefix, now, min, max, limit, keys_only
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {'table'} end
local out, found, min, limit = {'ok'}, 0, ARGV[4], tonumber(ARGV[6])
while found < limit do
  local keys = redis.call('ZRANGEBYLEX', KEYS[2], min, ARGV[5], 'LIMIT', 0, limit)
  for _, k in ipairs(keys) do
    local e = live(ARGV[2] .. k, tonumber(ARGV[3]))
    if e then
      table.insert(out, k)
      if ARGV[7] == '1' then table.insert(out, '') else table.insert(out, e[1]) end
      table.insert(out, e[2]); table.insert(out, e[3] or '0')
      found = found + 1
      if found == limit then break end
    elseif redis.call('EXISTS', ARGV[2] .. k) == 0 then
      redis.call('ZREM', KEYS[2], k) -- expired and removed by Redis: drop it from the index
    end
  end
  if #keys < limit then break end
  min = '(' .. keys[#keys]
end
return out
";

const DELETE_TABLE: &str = "
-- KEYS: tables, index. ARGV: table, entry prefix
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return {'table'} end
for _, k in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do redis.call('DEL', ARGV[2] .. k) end
redis.call('DEL', KEYS[2])
return {'ok'}
";

/// Key-value tables in Redis under one namespace.
pub struct RedisKv {
    descriptor: Descriptor,
    connection: Connection,
    namespace: String,
    put: Script,
    increment: Script,
    write_batch: Script,
    delete: Script,
    get: Script,
    list: Script,
    delete_table: Script,
}

impl std::fmt::Debug for RedisKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisKv").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

fn script(body: &str) -> Script {
    Script::new(&format!("{LIVE}{body}"))
}

/// The status and data of a script's answer.
fn answer(value: Value) -> ExoResult<(String, Vec<Vec<u8>>)> {
    let Value::Array(items) = value else {
        return Err(ExoError::internal(format!("unexpected Redis script answer: {value:?}")));
    };
    let mut bytes = items.into_iter().map(|item| match item {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.into_bytes(),
        Value::Int(i) => i.to_string().into_bytes(),
        _ => Vec::new(),
    });
    let status = String::from_utf8_lossy(&bytes.next().unwrap_or_default()).into_owned();
    Ok((status, bytes.collect()))
}

fn entries(data: Vec<Vec<u8>>) -> Vec<pb::Entry> {
    data.chunks_exact(4)
        .map(|e| pb::Entry {
            key: String::from_utf8_lossy(&e[0]).into_owned(),
            value: e[1].clone(),
            version: String::from_utf8_lossy(&e[2]).into_owned(),
            expires_at_ms: String::from_utf8_lossy(&e[3]).parse().unwrap_or(0),
        })
        .collect()
}

fn condition_args(condition: &Condition) -> (&'static str, &str) {
    match condition {
        Condition::None => ("none", ""),
        Condition::MustNotExist => ("absent", ""),
        Condition::VersionEquals(want) => ("version", want.as_str()),
    }
}

/// The connection manager, replaced by a fresh one (connecting on first use) when its
/// reconnect failed authentication: redis-rs keeps a failed reconnect's error and tries again
/// only after I/O errors, so a password that was wrong for a moment (a rotation in progress, an
/// ACL edited by hand) would otherwise fail every call until a restart.
struct Connection {
    client: redis::Client,
    settings: redis::aio::ConnectionManagerConfig,
    /// The manager, and when it was made.
    current: std::sync::Mutex<(ConnectionManager, std::time::Instant)>,
}

/// Reconnect attempts a call may wait for after the first fails, and the longest pause
/// between them: a call finds out within about a second that the server is down.
const RECONNECT_RETRIES: usize = 1;
const RECONNECT_MAX_DELAY: std::time::Duration = std::time::Duration::from_millis(200);

/// The shortest time between two replacements of the connection manager.
const REPLACE_AT_MOST_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl Connection {
    fn get(&self) -> ConnectionManager {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    /// `err` as the contract's error, after replacing the manager if authentication failed.
    fn failed(&self, operation: &str, err: &redis::RedisError) -> ExoError {
        if matches!(err.kind(), redis::ErrorKind::AuthenticationFailed) {
            let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
            if current.1.elapsed() >= REPLACE_AT_MOST_EVERY {
                let fresh =
                    ConnectionManager::new_lazy_with_config(self.client.clone(), self.settings.clone());
                match fresh {
                    Ok(manager) => *current = (manager, std::time::Instant::now()),
                    Err(e) => tracing::warn!(error = %e, "redis: cannot make a new connection manager"),
                }
            }
        }
        map_error(operation, err)
    }
}

/// The configured password as Redis's client asks for credentials: the current one when a
/// connection is made, then each change (the connection sends AUTH again).
struct RotatingPassword {
    username: String,
    password: Arc<exo_proxy_core::secret::ReloadingSecret<String>>,
}

impl redis::StreamingCredentialsProvider for RotatingPassword {
    fn subscribe(
        &self,
    ) -> std::pin::Pin<Box<dyn futures::Stream<Item = redis::RedisResult<redis::BasicAuth>> + Send + 'static>>
    {
        let (username, password) = (self.username.clone(), self.password.clone());
        let credentials = move |value: &str| redis::BasicAuth::new(username.clone(), value.to_owned());
        Box::pin(futures::stream::unfold(None, move |seen: Option<u64>| {
            let (password, credentials) = (password.clone(), credentials.clone());
            async move {
                if seen.is_some() {
                    // Wait for a change; a connection lives as long as it is open.
                    loop {
                        tokio::time::sleep(exo_proxy_core::secret::REREAD_EVERY).await;
                        if Some(password.current().1) != seen {
                            break;
                        }
                    }
                }
                let (value, generation) = password.current();
                Some((Ok(credentials(&value)), Some(generation)))
            }
        }))
    }
}

impl RedisKv {
    /// Connects (a connection manager that reconnects by itself) and checks the server answers.
    pub async fn connect(config: &RedisConfig) -> ExoResult<Self> {
        let info = redis::IntoConnectionInfo::into_connection_info(config.url.as_str())
            .map_err(|e| ExoError::invalid_argument("backend.url", format!("not a Redis URL: {e}")))?;
        // The password comes from a provider every connection asks when it is made and follows
        // afterwards: a rotated `file:` password is used by the next reconnect, and open
        // connections authenticate again with it (AUTH), all without a restart.
        let credentials = match &config.password {
            Some(secret) => {
                let password =
                    exo_proxy_core::secret::ReloadingSecret::text(secret.clone(), "backend.password")
                        .map_err(|e| ExoError::invalid_argument("backend.password", e.to_string()))?;
                let username = info.redis_settings().username().unwrap_or("default").to_owned();
                Some(RotatingPassword { username, password: Arc::new(password) })
            }
            None => None,
        };
        let client = match &config.ca_file {
            Some(path) => {
                let root_cert = std::fs::read(path).map_err(|e| {
                    ExoError::invalid_argument(
                        "backend.ca-file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let certificates = redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert) };
                redis::Client::build_with_tls(info, certificates)
            }
            None => redis::Client::open(info),
        }
        .map_err(|e| map_error("connect", &e))?;
        // While the server is down a call fails fast (BACKEND_UNAVAILABLE, retryable) instead of
        // waiting on the manager's reconnect, whose default six retries with back-off held every
        // call 5–11 s; the next call tries to reconnect again.
        let mut settings = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_max_delay(RECONNECT_MAX_DELAY);
        if let Some(credentials) = credentials {
            settings = settings.set_credentials_provider(credentials);
        }
        let manager = ConnectionManager::new_with_config(client.clone(), settings.clone())
            .await
            .map_err(|e| map_error("connect", &e))?;
        let connection = Connection {
            client,
            settings,
            current: std::sync::Mutex::new((manager, std::time::Instant::now())),
        };
        let mut manager = connection.get();
        let mut setting = async |name: &str| {
            let answer: redis::RedisResult<Vec<String>> =
                redis::cmd("CONFIG").arg("GET").arg(name).query_async(&mut manager).await;
            match answer.as_deref() {
                Ok([_, value]) => Some(value.to_owned()),
                _ => None,
            }
        };
        let appendonly = setting("appendonly").await;
        let appendfsync = setting("appendfsync").await;
        if let Some(warning) = durability_warning(appendonly.as_deref(), appendfsync.as_deref()) {
            tracing::warn!("{warning}");
        }
        Ok(Self {
            descriptor: Descriptor {
                backend: "redis",
                capabilities: [
                    Capability::CompareAndSet,
                    Capability::Ttl,
                    Capability::List,
                    Capability::Increment,
                    Capability::AtomicBatch,
                ]
                .into(),
                limits: portable_limits(),
            },
            connection,
            namespace: config.namespace.clone(),
            put: script(PUT),
            increment: script(INCREMENT),
            write_batch: script(WRITE_BATCH),
            delete: script(DELETE),
            get: script(GET),
            list: script(LIST),
            delete_table: script(DELETE_TABLE),
        })
    }

    fn tables(&self) -> String {
        format!("{}:tables", self.namespace)
    }

    fn index(&self, table: &str) -> String {
        format!("{}:i:{table}", self.namespace)
    }

    fn entry_prefix(&self, table: &str) -> String {
        format!("{}:e:{table}:", self.namespace)
    }

    async fn run(
        &self,
        operation: &str,
        invocation: redis::ScriptInvocation<'_>,
    ) -> ExoResult<(String, Vec<Vec<u8>>)> {
        let mut connection = self.connection.get();
        let value: Value = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|e| self.connection.failed(operation, &e))?;
        answer(value)
    }

    fn refused(table: &str, key: &str, condition: &Condition, have: &[Vec<u8>]) -> ExoError {
        let current = have.first().filter(|v| !v.is_empty()).map(|v| String::from_utf8_lossy(v).into_owned());
        condition
            .check(current.as_deref(), table, key)
            .err()
            .unwrap_or_else(|| ExoError::internal("a conditional write wrote nothing"))
    }
}

#[async_trait]
impl KeyValue for RedisKv {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    async fn ready(&self) -> ExoResult<()> {
        let mut connection = self.connection.get();
        let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut connection).await;
        readiness(pong.map(|_| ()).map_err(|e| self.connection.failed("ready", &e)))
    }

    async fn create_table(&self, op: ops::CreateTable<'_>) -> ExoResult<bool> {
        let ops::CreateTable { table } = op;
        let mut connection = self.connection.get();
        let added: i64 = redis::cmd("ZADD")
            .arg(self.tables())
            .arg("NX")
            .arg(0)
            .arg(table.as_str())
            .query_async(&mut connection)
            .await
            .map_err(|e| self.connection.failed("create table", &e))?;
        Ok(added == 1)
    }

    async fn delete_table(&self, op: ops::DeleteTable<'_>) -> ExoResult<()> {
        let ops::DeleteTable { table } = op;
        let t = table.as_str();
        let mut invocation = self.delete_table.prepare_invoke();
        invocation.key(self.tables()).key(self.index(t)).arg(t).arg(self.entry_prefix(t));
        match self.run("delete table", invocation).await?.0.as_str() {
            "ok" => Ok(()),
            _ => Err(table_not_found(t)),
        }
    }

    async fn list_tables(&self, _op: ops::ListTables) -> ExoResult<Vec<String>> {
        let mut connection = self.connection.get();
        redis::cmd("ZRANGE")
            .arg(self.tables())
            .arg(0)
            .arg(-1)
            .query_async(&mut connection)
            .await
            .map_err(|e| self.connection.failed("list tables", &e))
    }

    async fn get(&self, op: ops::Get<'_>) -> ExoResult<pb::Entry> {
        let ops::Get { table, key } = op;
        let found = self.batch_get(ops::BatchGet { table, keys: &[key.to_owned()] }).await?;
        found.into_iter().next().ok_or_else(|| key_not_found(table.as_str(), key))
    }

    async fn put(&self, op: ops::Put<'_>) -> ExoResult<String> {
        let ops::Put { table, key, value, condition, expires_at_ms } = op;
        let t = table.as_str();
        let version = new_version();
        let (kind, want) = condition_args(condition);
        let mut invocation = self.put.prepare_invoke();
        invocation
            .key(self.tables())
            .key(format!("{}{key}", self.entry_prefix(t)))
            .key(self.index(t))
            .arg(t)
            .arg(key)
            .arg(value)
            .arg(&version)
            .arg(expires_at_ms)
            .arg(kind)
            .arg(want)
            .arg(now_ms());
        let (status, data) = self.run("put", invocation).await?;
        match status.as_str() {
            "ok" => Ok(version),
            "table" => Err(table_not_found(t)),
            _ => Err(Self::refused(t, key, condition, &data)),
        }
    }

    async fn increment(&self, op: ops::Increment<'_>) -> ExoResult<pb::IncrementResponse> {
        let ops::Increment { table, key, delta, expires_at_ms } = op;
        let t = table.as_str();
        let version = new_version();
        let mut invocation = self.increment.prepare_invoke();
        invocation
            .key(self.tables())
            .key(format!("{}{key}", self.entry_prefix(t)))
            .key(self.index(t))
            .arg(t)
            .arg(key)
            .arg(delta)
            .arg(&version)
            .arg(expires_at_ms)
            .arg(now_ms());
        let (status, data) = self.run("increment", invocation).await?;
        let value = data.into_iter().next().unwrap_or_default();
        match status.as_str() {
            "ok" => Ok(pb::IncrementResponse { value: counter::parse(&value, t, key)?, version }),
            "table" => Err(table_not_found(t)),
            // Not a counter, or past the range: the same rule, applied here, says which.
            _ => Err(counter::incremented(Some(&value), delta, t, key)
                .err()
                .unwrap_or_else(|| counter::overflow(0, delta, t, key))),
        }
    }

    async fn write_batch(&self, op: ops::WriteBatch<'_>) -> ExoResult<Vec<String>> {
        let ops::WriteBatch { table, writes } = op;
        let t = table.as_str();
        let mut invocation = self.write_batch.prepare_invoke();
        invocation.key(self.tables()).key(self.index(t)).arg(t).arg(now_ms());
        let mut versions = Vec::with_capacity(writes.len());
        for write in writes {
            let (kind, want) = condition_args(&write.condition);
            invocation.key(format!("{}{}", self.entry_prefix(t), write.key)).arg(&write.key);
            match &write.change {
                Change::Put { value, expires_at_ms } => {
                    let version = new_version();
                    invocation.arg("put").arg(value.as_slice()).arg(&version).arg(*expires_at_ms);
                    versions.push(version);
                }
                Change::Delete => {
                    invocation.arg("delete").arg("").arg("").arg(0);
                    versions.push(String::new());
                }
            }
            invocation.arg(kind).arg(want);
        }
        let (status, data) = self.run("write batch", invocation).await?;
        match status.as_str() {
            "ok" => Ok(versions),
            "table" => Err(table_not_found(t)),
            _ => {
                let index: usize =
                    data.first().and_then(|i| String::from_utf8_lossy(i).parse().ok()).unwrap_or_default();
                let write =
                    writes.get(index).ok_or_else(|| ExoError::internal("a batch refused no write"))?;
                Err(Self::refused(t, &write.key, &write.condition, data.get(1..).unwrap_or(&[]))
                    .with_field(format!("writes[{index}]")))
            }
        }
    }

    async fn delete(&self, op: ops::Delete<'_>) -> ExoResult<bool> {
        let ops::Delete { table, key, condition } = op;
        let t = table.as_str();
        let (kind, want) = condition_args(condition);
        let mut invocation = self.delete.prepare_invoke();
        invocation
            .key(self.tables())
            .key(format!("{}{key}", self.entry_prefix(t)))
            .key(self.index(t))
            .arg(t)
            .arg(key)
            .arg(kind)
            .arg(want)
            .arg(now_ms());
        let (status, data) = self.run("delete", invocation).await?;
        match status.as_str() {
            "ok" => Ok(data.first().is_some_and(|d| d.as_slice() == b"1")),
            "table" => Err(table_not_found(t)),
            _ => Err(Self::refused(t, key, condition, &data)),
        }
    }

    async fn list(&self, op: ops::List<'_>) -> ExoResult<Vec<pb::Entry>> {
        let ops::List { table, prefix, start_after, limit, keys_only } = op;
        let t = table.as_str();
        // ZRANGEBYLEX bounds: `[x` inclusive, `(x` exclusive, `+` the end.
        let mut min = b"[".to_vec();
        match start_after.filter(|after| *after >= prefix) {
            Some(after) => {
                min = b"(".to_vec();
                min.extend_from_slice(after.as_bytes());
            }
            None => min.extend_from_slice(prefix.as_bytes()),
        }
        let max = match exo_sqlite::prefix_successor(prefix.as_bytes()) {
            Some(upper) => [b"(".as_slice(), &upper].concat(),
            None => b"+".to_vec(),
        };
        let mut invocation = self.list.prepare_invoke();
        invocation
            .key(self.tables())
            .key(self.index(t))
            .arg(t)
            .arg(self.entry_prefix(t))
            .arg(now_ms())
            .arg(min)
            .arg(max)
            .arg(limit.max(1))
            .arg(if keys_only { "1" } else { "0" });
        let (status, data) = self.run("list", invocation).await?;
        if status != "ok" {
            return Err(table_not_found(t));
        }
        Ok(entries(data))
    }

    async fn batch_get(&self, op: ops::BatchGet<'_>) -> ExoResult<Vec<pb::Entry>> {
        let ops::BatchGet { table, keys } = op;
        let t = table.as_str();
        let mut invocation = self.get.prepare_invoke();
        invocation.key(self.tables()).arg(t).arg(self.entry_prefix(t)).arg(now_ms());
        for key in keys {
            invocation.arg(key.as_str());
        }
        let (status, data) = self.run("get", invocation).await?;
        if status != "ok" {
            return Err(table_not_found(t));
        }
        Ok(entries(data))
    }
}

/// What to warn about Redis's persistence settings (`CONFIG GET appendonly`, `appendfsync`;
/// `None` where it refused to say), or nothing when every acknowledged write survives a crash.
fn durability_warning(appendonly: Option<&str>, appendfsync: Option<&str>) -> Option<String> {
    match (appendonly, appendfsync) {
        (Some("yes"), Some("always")) => None,
        (Some("yes"), Some(fsync)) => Some(format!(
            "Redis writes its AOF with appendfsync {fsync}: a crash of the server loses the writes \
             acknowledged since its last fsync (up to about a second with everysec); set appendfsync always \
             for every acknowledged write to survive"
        )),
        (Some(value), _) if value != "yes" => Some(
            "Redis runs without AOF (appendonly no): acknowledged writes live only in its memory and are lost \
             when it restarts"
                .to_owned(),
        ),
        _ => Some("cannot read Redis's appendonly/appendfsync settings (CONFIG GET refused): durability unknown".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn warns_unless_every_acknowledged_write_is_fsynced() {
        use super::durability_warning as warning;
        assert_eq!(warning(Some("yes"), Some("always")), None);
        assert!(warning(Some("yes"), Some("everysec")).is_some_and(|w| w.contains("appendfsync everysec")));
        assert!(warning(Some("yes"), Some("no")).is_some_and(|w| w.contains("appendfsync always")));
        assert!(warning(Some("no"), Some("always")).is_some_and(|w| w.contains("without AOF")));
        assert!(warning(None, None).is_some_and(|w| w.contains("unknown")));
    }
}
