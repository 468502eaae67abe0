//! What the ExoFlow PostgreSQL backends (ekv `postgres`, later eqs `postgres`) share:
//!
//! - [`PostgresSettings`]: the connection part of their `backend:` section (URL without the
//!   password, the password as a secret reference, the schema that holds ExoFlow's tables);
//! - [`Connections`]: a fixed set of connections used round-robin, each replaced by a new one
//!   when the server drops it (a restart, `pg_terminate_backend`), so the proxy heals by itself;
//! - [`map_error`]: any failure in the ExoFlow error vocabulary.
//!
//! Every statement the backends send on those connections is one atomic statement in autocommit,
//! so a shared connection never holds a transaction open across calls and concurrent calls
//! pipeline on it. A write that needs a transaction (a key-value batch) takes a connection of its
//! own for it ([`Connections::exclusive`]), returned for the next such write afterwards. A write is
//! acknowledged once PostgreSQL has committed it, which is durable when the server runs with
//! `fsync` and `synchronous_commit` on ([`Connections::durable`] reads both).

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use exo_proto::common::v1::ErrorReason;
use exo_proxy_core::{ExoError, ExoResult, config::ConfigError, secret::SecretRef};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls, error::SqlState};

/// The connection settings of a PostgreSQL backend.
///
/// ```yaml
/// url: postgres://exo@db.internal:5432/app   # no password here
/// password: env:PGPASSWORD                   # optional secret reference
/// schema: shop_prod                          # ExoFlow's tables live here (created if missing)
/// connections: 4
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PostgresSettings {
    /// `postgres://user@host:port/database` (or the key=value form). `sslmode=require`: TLS,
    /// with the server's certificate and host name always verified (against `ca-file`, else the
    /// built-in roots); `disable` or `prefer` (the default): plain TCP — ExoFlow never uses TLS
    /// it has not verified, so `prefer` does not try it.
    #[serde(default = "default_url")]
    pub url: String,
    /// The password, if the server wants one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
    /// The schema holding ExoFlow's tables: one per app or environment sharing a database.
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Connections kept open (calls pipeline on each).
    #[serde(default = "default_connections")]
    pub connections: usize,
    /// PEM file of the certificate authorities that may sign the server's certificate, for
    /// `sslmode=require` (default: the Mozilla roots built in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
}

fn default_url() -> String {
    "postgres://postgres@127.0.0.1:5432/postgres".into()
}

fn default_schema() -> String {
    "exoflow".into()
}

fn default_connections() -> usize {
    4
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            url: default_url(),
            password: None,
            schema: default_schema(),
            connections: default_connections(),
            ca_file: None,
        }
    }
}

impl PostgresSettings {
    /// Checks the settings before anything connects.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| ConfigError::Invalid(format!("backend.url is not a PostgreSQL URL: {e}")))?;
        let schema_ok = !self.schema.is_empty()
            && self.schema.len() <= 63
            && self.schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && self.schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !schema_ok {
            return Err(ConfigError::Invalid(format!(
                "backend.schema must be 1-63 of a-z, 0-9 and _, starting with a letter or _ (got {:?})",
                self.schema
            )));
        }
        if !(1..=64).contains(&self.connections) {
            return Err(ConfigError::Invalid("backend.connections must be 1 ..= 64".into()));
        }
        if let Some(path) = &self.ca_file
            && !path.is_file()
        {
            return Err(ConfigError::Invalid(format!(
                "backend.ca-file {} is not a readable file",
                path.display()
            )));
        }
        Ok(())
    }

    /// The TLS a connection uses: verified rustls when the URL says `sslmode=require`, else none.
    fn tls(&self, config: &mut tokio_postgres::Config) -> ExoResult<Tls> {
        if config.get_ssl_mode() != tokio_postgres::config::SslMode::Require {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            return Ok(Tls::Plain);
        }
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                use rustls_pki_types::{CertificateDer, pem::PemObject};
                let invalid = |why: String| ExoError::invalid_argument("backend.ca-file", why);
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
                for cert in certs {
                    let cert = cert
                        .map_err(|e| invalid(format!("{} is not PEM certificates: {e}", path.display())))?;
                    roots.add(cert).map_err(|e| {
                        invalid(format!("a certificate in {} is unusable: {e}", path.display()))
                    })?;
                }
                if roots.is_empty() {
                    return Err(invalid(format!("{} holds no certificate", path.display())));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ExoError::internal(format!("TLS setup: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls::Verified(tokio_postgres_rustls::MakeRustlsConnect::new(tls)))
    }

    fn config(&self) -> ExoResult<(tokio_postgres::Config, Tls)> {
        let mut config: tokio_postgres::Config = self
            .url
            .parse()
            .map_err(|e| ExoError::invalid_argument("backend.url", format!("not a PostgreSQL URL: {e}")))?;
        if config.get_application_name().is_none() {
            config.application_name("exoflow");
        }
        let tls = self.tls(&mut config)?;
        Ok((config, tls))
    }
}

/// How connections are made: plain TCP, or TLS verified by rustls.
#[derive(Clone)]
enum Tls {
    Plain,
    Verified(tokio_postgres_rustls::MakeRustlsConnect),
}

/// Connects with `config` over `tls`; the connection's task is spawned.
async fn connect(config: &tokio_postgres::Config, tls: &Tls) -> Result<Client, tokio_postgres::Error> {
    let (client, task) = match tls {
        Tls::Plain => {
            let (client, connection) = config.connect(NoTls).await?;
            (client, tokio::spawn(connection))
        }
        Tls::Verified(tls) => {
            let (client, connection) = config.connect(tls.clone()).await?;
            (client, tokio::spawn(connection))
        }
    };
    tokio::spawn(async move {
        if let Ok(Err(err)) = task.await {
            tracing::warn!(error = %err, "PostgreSQL connection closed");
        }
    });
    Ok(client)
}

/// Issues `LISTEN channel` on `client` and hands each notification to `heard` until the
/// connection ends (it must be driven for LISTEN to complete: both are polled).
async fn listen_on<S, T>(
    client: Client,
    mut connection: tokio_postgres::Connection<S, T>,
    channel: &str,
    heard: &(impl Fn(&str) + Send + Sync),
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures::StreamExt as _;
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    let statement = format!("LISTEN \"{channel}\"");
    let listening = client.batch_execute(&statement);
    let mut listening = std::pin::pin!(listening);
    let mut subscribed = false;
    loop {
        tokio::select! {
            done = &mut listening, if !subscribed => {
                if let Err(err) = done {
                    tracing::warn!(error = %err, "PostgreSQL LISTEN failed");
                    return;
                }
                subscribed = true;
            }
            message = messages.next() => match message {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => heard(n.payload()),
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "PostgreSQL notification connection lost");
                    return;
                }
                None => return,
            },
        }
    }
}

/// A `file:` password is read again (at most every few seconds) when a connection is made, so
/// a rotated password is used by the next new connection without a restart; connections open
/// already stay as they are (PostgreSQL keeps a session when its role's password changes).
type Password = Option<Arc<exo_proxy_core::secret::ReloadingSecret<Vec<u8>>>>;

/// The settings with the current password.
fn with_password(config: &tokio_postgres::Config, password: &Password) -> tokio_postgres::Config {
    let mut config = config.clone();
    if let Some(password) = password {
        config.password(password.current().0.as_slice());
    }
    config
}

/// A fixed set of connections, used round-robin; a dropped one is replaced on its next use.
pub struct Connections {
    /// Without the password, which is [`Self::password`]'s current one at each connect.
    config: tokio_postgres::Config,
    password: Password,
    tls: Tls,
    slots: Vec<Mutex<Option<Arc<Client>>>>,
    next: AtomicUsize,
    /// Idle connections for transactions, kept for reuse (at most as many as `slots`).
    idle_exclusive: Arc<std::sync::Mutex<Vec<Client>>>,
    /// At most as many transactions at once as there are shared connections: a flood of
    /// batches waits here instead of opening connections until the server refuses everyone's.
    exclusive_permits: Arc<tokio::sync::Semaphore>,
}

/// A connection no other call uses until it is dropped (when it goes back for reuse, unless
/// the server closed it): a transaction on it holds nobody else's statements.
pub struct Exclusive {
    client: Option<Client>,
    home: Arc<std::sync::Mutex<Vec<Client>>>,
    keep: usize,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl std::ops::Deref for Exclusive {
    type Target = Client;
    fn deref(&self) -> &Client {
        // Present from creation until drop.
        self.client.as_ref().unwrap_or_else(|| unreachable!("an exclusive connection is held until dropped"))
    }
}

impl std::ops::DerefMut for Exclusive {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().unwrap_or_else(|| unreachable!("an exclusive connection is held until dropped"))
    }
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        if let Some(client) = self.client.take().filter(|c| !c.is_closed()) {
            let mut idle = self.home.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < self.keep {
                idle.push(client);
            }
        }
    }
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections").field("slots", &self.slots.len()).finish_non_exhaustive()
    }
}

impl Connections {
    /// Opens the first connection now (so a wrong URL or password fails at start, clearly);
    /// the others as they are first used.
    pub async fn open(settings: &PostgresSettings) -> ExoResult<Self> {
        let (config, tls) = settings.config()?;
        let password = match &settings.password {
            Some(secret) => Some(Arc::new(
                exo_proxy_core::secret::ReloadingSecret::new(secret.clone(), "backend.password", |bytes| {
                    Ok(bytes.to_vec())
                })
                .map_err(|e| ExoError::invalid_argument("backend.password", e.to_string()))?,
            )),
            None => None,
        };
        let connections = Self {
            config,
            password,
            tls,
            slots: (0..settings.connections.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            idle_exclusive: Arc::default(),
            exclusive_permits: Arc::new(tokio::sync::Semaphore::new(settings.connections.max(1))),
        };
        connections.client().await?;
        Ok(connections)
    }

    /// A live connection (a new one in place of one the server dropped).
    pub async fn client(&self) -> ExoResult<Arc<Client>> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[index].lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let config = with_password(&self.config, &self.password);
        let client = Arc::new(connect(&config, &self.tls).await.map_err(|e| map_error("connect", &e))?);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// A connection of its own for a transaction: an idle one, else a new one, once fewer than
    /// `connections` transactions hold one (the caller's deadline bounds the wait). Dropped, it is
    /// kept for the next (a transaction left open is rolled back by `tokio_postgres` first).
    pub async fn exclusive(&self) -> ExoResult<Exclusive> {
        let permit = self
            .exclusive_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ExoError::unavailable("the PostgreSQL connections are closing"))?;
        let idle = self.idle_exclusive.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let client = match idle.filter(|c| !c.is_closed()) {
            Some(client) => client,
            None => {
                let config = with_password(&self.config, &self.password);
                connect(&config, &self.tls).await.map_err(|e| map_error("connect", &e))?
            }
        };
        Ok(Exclusive {
            client: Some(client),
            home: self.idle_exclusive.clone(),
            keep: self.slots.len(),
            _permit: permit,
        })
    }

    /// Runs the statements of `sql` (a schema's `CREATE … IF NOT EXISTS`, in one transaction) on
    /// one connection.
    pub async fn create_schema(&self, sql: &str) -> ExoResult<()> {
        self.client().await?.batch_execute(sql).await.map_err(|e| map_error("create schema", &e))
    }

    /// Readiness: `probe` (a cheap query on the backend's own tables, with no parameters but an
    /// empty text) answers, so a reachable server whose schema was dropped is not ready.
    pub async fn probe(&self, probe: &str) -> ExoResult<()> {
        let client = self.client().await?;
        client.query_opt(probe, &[&""]).await.map(|_| ()).map_err(|e| map_error("ready", &e))
    }

    /// Runs `statement` with the time in ms since the epoch as `$1` every `every`, until these
    /// connections are dropped (a retention or expiry sweep; failures are logged and retried).
    pub fn sweep_every(self: &Arc<Self>, every: std::time::Duration, statement: String) {
        let connections = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(connections) = connections.upgrade() else { return };
                let now = i64::try_from(exo_proxy_core::now_ms()).unwrap_or(i64::MAX);
                if let Ok(client) = connections.client().await
                    && let Err(err) = client.execute(&statement, &[&now]).await
                {
                    tracing::warn!(error = %err, "a PostgreSQL sweep failed");
                }
            }
        });
    }

    /// Calls `heard` with the payload of every notification on `channel` (`LISTEN`), on a
    /// connection of its own that is re-opened whenever it drops, until the returned task is
    /// aborted.
    /// Notifications missed while reconnecting are not replayed: listeners must also poll.
    pub fn listen(
        &self,
        channel: String,
        heard: impl Fn(&str) + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let (config, password) = (self.config.clone(), self.password.clone());
        let tls = self.tls.clone();
        tokio::spawn(async move {
            loop {
                let config = with_password(&config, &password);
                let failed = match &tls {
                    Tls::Plain => match config.connect(NoTls).await {
                        Ok((client, connection)) => {
                            listen_on(client, connection, &channel, &heard).await;
                            None
                        }
                        Err(err) => Some(err),
                    },
                    Tls::Verified(tls) => match config.connect(tls.clone()).await {
                        Ok((client, connection)) => {
                            listen_on(client, connection, &channel, &heard).await;
                            None
                        }
                        Err(err) => Some(err),
                    },
                };
                if let Some(err) = failed {
                    tracing::warn!(error = %err, "cannot open the PostgreSQL notification connection")
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        })
    }

    /// Whether an acknowledged commit survives a server crash: `fsync` and `synchronous_commit`
    /// both on (PostgreSQL's defaults; a server tuned for speed may turn them off).
    pub async fn durable(&self) -> ExoResult<bool> {
        let client = self.client().await?;
        let setting = |name: &'static str| {
            let client = client.clone();
            async move {
                let row = client
                    .query_one(&format!("SHOW {name}"), &[])
                    .await
                    .map_err(|e| map_error("SHOW", &e))?;
                Ok::<_, ExoError>(row.get::<_, String>(0))
            }
        };
        let (fsync, commit) =
            futures::future::try_join(setting("fsync"), setting("synchronous_commit")).await?;
        Ok(fsync == "on" && commit != "off")
    }
}

/// A PostgreSQL failure in the ExoFlow vocabulary: a lost or refused connection, a server
/// shutting down, a serialization conflict or an out-of-resources state is retryable; a full
/// disk is STORAGE_FULL; anything else is INTERNAL with the server's message.
pub fn map_error(operation: &str, err: &tokio_postgres::Error) -> ExoError {
    let Some(db) = err.as_db_error() else {
        // No server answer: the connection is gone or was never made. The causes say why (a
        // refused connection, a certificate that did not verify).
        let message = format!("PostgreSQL {operation}: {}", exo_proxy_core::with_causes(err));
        return ExoError::new(ErrorReason::BackendUnavailable, message).retryable();
    };
    let code = db.code();
    let message = format!("PostgreSQL {operation}: {} ({})", db.message(), code.code());
    if *code == SqlState::DISK_FULL {
        ExoError::new(ErrorReason::StorageFull, message)
    } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || *code == SqlState::TOO_MANY_CONNECTIONS
        || code.code().starts_with("08")
        || code.code().starts_with("53")
    {
        ExoError::new(ErrorReason::BackendUnavailable, message).retryable()
    } else if *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
        ExoError::new(ErrorReason::Unauthenticated, message)
    } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        ExoError::new(ErrorReason::PermissionDenied, message)
    } else {
        ExoError::internal(message)
    }
}

/// The SQL state of a failure, if the server answered.
pub fn sql_state(err: &tokio_postgres::Error) -> Option<&SqlState> {
    err.code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let mut settings = PostgresSettings::default();
        settings.validate().unwrap();
        settings.schema = "Shop-Prod".into();
        assert!(settings.validate().is_err());
        settings.schema = "shop_prod".into();
        settings.url = "mysql://nope".into();
        assert!(settings.validate().is_err());
    }
}
