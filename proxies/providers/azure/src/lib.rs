//! What the ExoFlow Azure Storage backends (eqs `azure-queue`, eos `azure-blob`, ekv
//! `azure-table`) share:
//!
//! - [`AzureSettings`]: the connection part of their `backend:` section (account, endpoint
//!   override, credentials as secret references, name prefix);
//! - [`AzureSettings::location`] and [`AzureSettings::credentials`]: what the 0.21 storage crates
//!   need to build a client, resolved from those settings;
//! - [`map_error`]: any Azure failure in the ExoFlow error vocabulary.
//!
//! Credentials (one of): `account-key` (Shared Key), `sas-token`, or `connection-string` (which
//! may also carry the endpoint). The newer official Azure crates (1.x) accept only Entra ID tokens
//! or a SAS already in the URL, so they could not use an account key at all (nor reach Azurite
//! without the proxy signing SAS tokens itself): the 0.21 crates are used, with rustls.

use std::collections::BTreeMap;

use azure_storage::{CloudLocation, StorageCredentials};
use exo_proto::common::v1::ErrorReason;
use exo_proxy_core::{
    ExoError,
    config::ConfigError,
    secret::{ReloadingSecret, SecretRef},
};
use serde::{Deserialize, Serialize};

/// Credential keys a backend section may hold (exactly one).
pub const CREDENTIAL_KEYS: [&str; 3] = ["account-key", "sas-token", "connection-string"];

/// The connection settings of an Azure Storage backend.
///
/// ```yaml
/// account: shopdata                      # the storage account
/// endpoint: http://127.0.0.1:10001/devstoreaccount1   # only for emulators / private endpoints
/// name-prefix: shop-                     # optional namespace for physical names
/// credentials:
///   account-key: env:AZURE_STORAGE_KEY   # or sas-token: file:/run/secrets/sas
///                                        # or connection-string: env:AZURE_STORAGE_CONNECTION_STRING
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AzureSettings {
    /// The storage account name (optional with a connection string that names it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub account: String,
    /// This service's endpoint, e.g. `https://shopdata.queue.core.windows.net` or an emulator's
    /// `http://127.0.0.1:10001/devstoreaccount1` (default: the public cloud's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Secret references by [`CREDENTIAL_KEYS`] name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub credentials: BTreeMap<String, SecretRef>,
    /// Prepended to every queue, container or table name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name_prefix: String,
    /// The account's Table service endpoint, for a backend of another service that keeps its
    /// own state in a table (eqs: the topic registry and outbox). Needed only when `endpoint` is
    /// set (an emulator, a private endpoint); otherwise the connection string's or the public
    /// cloud's is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_endpoint: Option<String>,
}

/// The storage services, for picking a connection string's endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Queue storage.
    Queue,
    /// Blob storage.
    Blob,
    /// Table storage.
    Table,
}

impl AzureSettings {
    /// Checks the settings hang together (without reading secrets).
    pub fn validate(&self) -> Result<(), ConfigError> {
        for key in self.credentials.keys() {
            if !CREDENTIAL_KEYS.contains(&key.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "backend.credentials.{key} is not a known Azure credential (known: {})",
                    CREDENTIAL_KEYS.join(", ")
                )));
            }
        }
        if self.credentials.len() != 1 {
            return Err(ConfigError::Invalid(format!(
                "backend.credentials needs exactly one of {}",
                CREDENTIAL_KEYS.join(", ")
            )));
        }
        if self.account.is_empty() && !self.credentials.contains_key("connection-string") {
            return Err(ConfigError::Invalid("backend.account is required".into()));
        }
        exo_proxy_core::config::check_endpoint(self.endpoint.as_deref())?;
        exo_proxy_core::config::check_endpoint(self.table_endpoint.as_deref())?;
        exo_proxy_core::config::check_name_prefix(&self.name_prefix, 20)
    }

    fn secret(&self, key: &str) -> Result<Option<String>, ExoError> {
        self.credentials
            .get(key)
            .map(|secret| {
                secret
                    .resolve()
                    .map_err(|e| ExoError::new(ErrorReason::InvalidArgument, e.to_string()))
                    .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
            })
            .transpose()
    }

    /// These settings pointed at the account's Table service, for a backend of another service
    /// that keeps state in tables: `table-endpoint` when set; else, with no `endpoint` at all,
    /// the connection string's or the public cloud's. `None` when neither says where it is.
    pub fn for_tables(&self) -> Option<AzureSettings> {
        match (&self.table_endpoint, &self.endpoint) {
            (Some(table), _) => {
                Some(Self { endpoint: Some(table.clone()), table_endpoint: None, ..self.clone() })
            }
            (None, None) => Some(Self { table_endpoint: None, ..self.clone() }),
            (None, Some(_)) => None,
        }
    }

    /// The credential in use (the first set of `connection-string`, `account-key`,
    /// `sas-token`) and its current text.
    fn credential(&self) -> Result<(&'static str, String), ExoError> {
        for key in ["connection-string", "account-key", "sas-token"] {
            if let Some(text) = self.secret(key)? {
                return Ok((key, text));
            }
        }
        Err(ExoError::new(ErrorReason::InvalidArgument, "backend.credentials is empty"))
    }

    /// The account, endpoint and credentials for `service` that credential `key` with `text`
    /// gives.
    fn resolve(
        &self,
        service: Service,
        key: &str,
        text: &str,
    ) -> Result<(String, Option<String>, StorageCredentials), ExoError> {
        let invalid = |e: azure_core::Error| {
            ExoError::new(ErrorReason::InvalidArgument, format!("backend.credentials.{key}: {e}"))
        };
        Ok(match key {
            "connection-string" => {
                let parsed = azure_storage::ConnectionString::new(text).map_err(invalid)?;
                let credentials = parsed.storage_credentials().map_err(invalid)?;
                let endpoint = match service {
                    Service::Queue => parsed.queue_endpoint,
                    Service::Blob => parsed.blob_endpoint,
                    Service::Table => parsed.table_endpoint,
                };
                let account = if self.account.is_empty() {
                    parsed.account_name.unwrap_or_default().to_owned()
                } else {
                    self.account.clone()
                };
                (account, self.endpoint.clone().or(endpoint.map(str::to_owned)), credentials)
            }
            "account-key" => {
                // A key that is not base64 (half written, pasted wrong) would sign every request
                // wrongly; refuse it here so that a rotation keeps the last good key.
                azure_core::base64::decode(text).map_err(|_| {
                    ExoError::new(
                        ErrorReason::InvalidArgument,
                        format!("backend.credentials.{key}: not base64 (an account key is the base64 text the portal shows)"),
                    )
                })?;
                (
                    self.account.clone(),
                    self.endpoint.clone(),
                    StorageCredentials::access_key(self.account.clone(), text.to_owned()),
                )
            }
            _ => {
                let credentials =
                    StorageCredentials::sas_token(text.trim_start_matches('?')).map_err(invalid)?;
                (self.account.clone(), self.endpoint.clone(), credentials)
            }
        })
    }

    /// Where the `service` lives and the credentials to use there, resolved from the secrets.
    ///
    /// A credential given as a `file:` secret is read again every
    /// [`REREAD_EVERY`](exo_proxy_core::secret::REREAD_EVERY) while the returned credentials are
    /// in use (when called within a tokio runtime): a rotated key, SAS or connection string is
    /// used by new requests without a restart. Only the credential follows the file; the
    /// account and endpoint stay those read at start.
    pub fn connect(&self, service: Service) -> Result<(CloudLocation, StorageCredentials), ExoError> {
        self.validate().map_err(|e| ExoError::new(ErrorReason::InvalidArgument, e.to_string()))?;
        let (key, text) = self.credential()?;
        let (account, endpoint, credentials) = self.resolve(service, key, &text)?;
        if account.is_empty() {
            return Err(ExoError::new(ErrorReason::InvalidArgument, "no storage account name"));
        }
        let location = match endpoint {
            Some(uri) => CloudLocation::Custom { account, uri: uri.trim_end_matches('/').to_owned() },
            None => CloudLocation::Public { account },
        };
        if let Some(secret) = self.credentials.get(key).filter(|secret| secret.is_file())
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let settings = self.clone();
            let followed =
                ReloadingSecret::new(secret.clone(), "azure: backend.credentials", move |bytes: &[u8]| {
                    let text = String::from_utf8_lossy(bytes).trim().to_owned();
                    settings.resolve(service, key, &text).map(|(.., fresh)| fresh).map_err(|e| e.message)
                })
                .map_err(|e| ExoError::new(ErrorReason::InvalidArgument, e.to_string()))?;
            runtime.spawn(follow_rotation(followed, &credentials));
        }
        Ok((location, credentials))
    }
}

/// Asks `followed` (the credential's file) again every few seconds and, when it made a new
/// credential, puts it in place of the old in `credentials` (shared by every client built on
/// them); ends when those credentials are dropped.
fn follow_rotation(
    followed: ReloadingSecret<StorageCredentials>,
    credentials: &StorageCredentials,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let shared = std::sync::Arc::downgrade(&credentials.0);
    async move {
        let mut taken = 0;
        loop {
            tokio::time::sleep(exo_proxy_core::secret::REREAD_EVERY).await;
            let Some(inner) = shared.upgrade() else { return };
            let (fresh, generation) = followed.current();
            if generation != taken {
                match StorageCredentials(inner).replace(fresh.as_ref().clone()).await {
                    Ok(()) => taken = generation,
                    Err(err) => tracing::warn!(error = %err, "azure: cannot take the rotated credential"),
                }
            }
        }
    }
}

/// The retry policy of every Azure client the backends build: none. The crates would otherwise
/// repeat any call for up to a minute, a send that may have been stored included, outside the
/// proxy's retry budget; the proxy's retry layer decides (reads only, within the budget) and the
/// app's SDK retries the rest. Idempotent steps inside one call use [`step_retries`].
pub fn no_retries() -> azure_core::RetryOptions {
    azure_core::RetryOptions::none()
}

/// Retries for a step that is safe to repeat inside one proxy call (staging a block of an upload:
/// the same block id and bytes again), where failing the whole call would throw away the blocks
/// already sent: two more tries, exponential back-off, within 10 s.
pub fn step_retries() -> azure_core::RetryOptions {
    azure_core::RetryOptions::exponential(
        azure_core::ExponentialRetryOptions::default()
            .max_retries(2u32)
            .max_total_elapsed(std::time::Duration::from_secs(10)),
    )
}

/// The HTTP status and Azure error code of a failed call, when the service answered.
pub fn service_code(err: &azure_core::Error) -> Option<(u16, &str)> {
    err.as_http_error().map(|http| (u16::from(http.status()), http.error_code().unwrap_or("")))
}

/// Whether Azure's message says the request's signature or key was refused (as opposed to an
/// authenticated caller lacking a permission).
fn authentication_failed(err: &azure_core::Error) -> bool {
    // Table errors carry the message in an OData body the crate does not read: its text does.
    let says = |text: &str| text.contains("failed to authenticate");
    err.as_http_error().is_some_and(|http| http.error_message().is_some_and(says) || says(&http.to_string()))
}

/// Maps a failed Azure call to the vocabulary. Callers handle their service's own codes first
/// (QueueNotFound, ConditionNotMet, ...) and pass the rest here; `backend` names the service.
pub fn map_error(backend: &str, operation: &str, err: &azure_core::Error) -> ExoError {
    let failed = |reason: ErrorReason, retryable: bool, why: String| {
        ExoError::new(reason, format!("{backend} {operation} failed: {why}")).with_retryable(retryable)
    };
    match service_code(err) {
        Some((status, code)) => {
            let why =
                if code.is_empty() { format!("HTTP {status}") } else { format!("{code} (HTTP {status})") };
            match (status, code) {
                (503, _) | (429, _) | (_, "ServerBusy") => failed(ErrorReason::Throttled, true, why),
                (500 | 502 | 504, _) | (_, "InternalError" | "OperationTimedOut") => {
                    failed(ErrorReason::BackendUnavailable, true, why)
                }
                (401, _) | (_, "AuthenticationFailed" | "InvalidAuthenticationInfo") => {
                    failed(ErrorReason::Unauthenticated, false, why)
                }
                // A wrong key or signature, where the code does not say so (Azurite's Blob and
                // Table answer AuthorizationFailure): the message does.
                (403, _) if authentication_failed(err) => failed(ErrorReason::Unauthenticated, false, why),
                (403, _) => failed(ErrorReason::PermissionDenied, false, why),
                _ => failed(ErrorReason::Internal, false, format!("unexpected answer: {why}")),
            }
        }
        None => match err.kind() {
            azure_core::error::ErrorKind::Io => {
                failed(ErrorReason::BackendUnavailable, true, format!("cannot reach the service: {err}"))
            }
            azure_core::error::ErrorKind::Credential => {
                failed(ErrorReason::Unauthenticated, false, err.to_string())
            }
            _ => failed(ErrorReason::Internal, false, err.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_need_exactly_one_known_credential() {
        let ok: AzureSettings =
            serde_yaml_ng::from_str("account: shopdata\ncredentials:\n  account-key: env:KEY\n").unwrap();
        ok.validate().unwrap();
        let none: AzureSettings = serde_yaml_ng::from_str("account: shopdata\n").unwrap();
        assert!(none.validate().is_err());
        let two: AzureSettings =
            serde_yaml_ng::from_str("account: a\ncredentials:\n  account-key: env:K\n  sas-token: env:S\n")
                .unwrap();
        assert!(two.validate().is_err());
        let unknown: AzureSettings =
            serde_yaml_ng::from_str("account: a\ncredentials:\n  client-secret: env:S\n").unwrap();
        assert!(unknown.validate().unwrap_err().to_string().contains("client-secret"));
        let inline =
            serde_yaml_ng::from_str::<AzureSettings>("account: a\ncredentials:\n  account-key: abc\n");
        assert!(inline.is_err(), "credentials must be references");
    }

    #[test]
    fn an_account_key_that_is_not_base64_is_refused_with_the_reason() {
        let name = "EXO_AZURE_TEST_HALF_WRITTEN_KEY";
        // SAFETY: this test owns this variable name; no other test reads or writes it.
        unsafe { std::env::set_var(name, "Eby8vdM02xNOcqFl qUwJ") };
        let settings = AzureSettings {
            account: "devstoreaccount1".into(),
            credentials: [("account-key".to_owned(), SecretRef::Env(name.into()))].into(),
            ..Default::default()
        };
        let err = settings.connect(Service::Queue).unwrap_err();
        assert!(err.message.contains("account-key: not base64"), "{err:?}");
    }

    #[test]
    fn a_connection_string_gives_account_and_endpoint() {
        let name = "EXO_AZURE_TEST_CONNECTION_STRING";
        // SAFETY: this test owns this variable name; no other test reads or writes it.
        unsafe {
            std::env::set_var(
                name,
                "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;",
            )
        };
        let settings = AzureSettings {
            credentials: [("connection-string".to_owned(), SecretRef::Env(name.into()))].into(),
            ..Default::default()
        };
        let (location, _) = settings.connect(Service::Queue).unwrap();
        assert_eq!(location.account(), "devstoreaccount1");
        assert!(
            matches!(location, CloudLocation::Custom { ref uri, .. } if uri == "http://127.0.0.1:10001/devstoreaccount1")
        );
        // No blob endpoint in the string: the public cloud's.
        let (blob, _) = settings.connect(Service::Blob).unwrap();
        assert!(matches!(blob, CloudLocation::Public { .. }));
    }
}
