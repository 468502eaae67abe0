//! What the ExoFlow AWS backends (eqs `sqs`, eos `s3`, ekv `dynamodb`) share:
//!
//! - [`AwsSettings`]: the connection part of their `backend:` config section (region, endpoint
//!   override, credentials as secret references);
//! - [`sdk_config`]: one SDK configuration from those settings, on a rustls + ring HTTP client
//!   (the SDKs are built without default features, so without this they have no client at all);
//! - [`map_error`]: any SDK failure in the ExoFlow error vocabulary, so a throttled or
//!   unreachable AWS is reported the same way whichever service hit it.
//!
//! Credentials, in order: `access-key-id` + `secret-access-key` (+ `session-token`) secret
//! references, re-read whenever the SDK refreshes them so a rotated `file:` secret is picked up
//! without a restart; else the default AWS chain (environment, `AWS_PROFILE` or the `profile`
//! key, web identity, ECS and instance metadata).

use std::{collections::BTreeMap, time::Duration};

use aws_config::{BehaviorVersion, Region, SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};
use aws_credential_types::{
    Credentials,
    provider::{ProvideCredentials, error::CredentialsError, future},
};
use aws_smithy_http_client::{
    Builder,
    tls::{Provider, rustls_provider::CryptoMode},
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use exo_proto::common::v1::ErrorReason;
use exo_proxy_core::{ExoError, config::ConfigError, secret::SecretRef};
use serde::{Deserialize, Serialize};

/// A failed SDK call of any AWS service.
pub type SdkError<E> = aws_smithy_runtime_api::client::result::SdkError<E, HttpResponse>;

/// Credential keys a backend section may hold.
pub const CREDENTIAL_KEYS: [&str; 4] = ["access-key-id", "secret-access-key", "session-token", "profile"];

/// The connection settings of an AWS backend.
///
/// ```yaml
/// region: eu-west-1                 # else AWS_REGION / the profile's region
/// endpoint: http://127.0.0.1:5000   # only for emulators and VPC endpoints
/// name-prefix: shop-prod-           # optional namespace for physical names
/// credentials:                      # optional; without it the default AWS chain is used
///   access-key-id: env:AWS_ACCESS_KEY_ID
///   secret-access-key: file:/run/secrets/aws-secret
///   # profile: env:AWS_PROFILE      # a named profile of the default chain instead
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AwsSettings {
    /// The AWS region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Endpoint override (e.g. an emulator); S3 then uses path-style addressing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Secret references by [`CREDENTIAL_KEYS`] name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub credentials: BTreeMap<String, SecretRef>,
    /// Prepended to every queue, bucket or table name on AWS (an app or environment namespace:
    /// S3 bucket names are global, so real accounts usually need one).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name_prefix: String,
}

impl AwsSettings {
    /// Checks the credential keys and the endpoint.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for key in self.credentials.keys() {
            if !CREDENTIAL_KEYS.contains(&key.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "backend.credentials.{key} is not a known AWS credential (known: {})",
                    CREDENTIAL_KEYS.join(", ")
                )));
            }
        }
        let has = |k: &str| self.credentials.contains_key(k);
        if has("access-key-id") != has("secret-access-key") {
            return Err(ConfigError::Invalid(
                "backend.credentials needs both access-key-id and secret-access-key, or neither".into(),
            ));
        }
        if has("profile") && has("access-key-id") {
            return Err(ConfigError::Invalid(
                "backend.credentials: give either a profile or access keys, not both".into(),
            ));
        }
        exo_proxy_core::config::check_name_prefix(&self.name_prefix, 40)?;
        exo_proxy_core::config::check_endpoint(self.endpoint.as_deref())
    }
}

/// Static keys from secret references, resolved on every refresh (rotation without restart).
#[derive(Debug, Clone)]
struct SecretKeys {
    access_key_id: SecretRef,
    secret_access_key: SecretRef,
    session_token: Option<SecretRef>,
}

/// How long the SDK may cache keys read from secrets. Its identity cache takes keys as expired
/// 10–15 s (buffer plus jitter) before this, so a rotated `file:` key is read again within
/// 5–10 s, like every other `file:` secret the proxies follow.
const SECRET_REFRESH: Duration = Duration::from_secs(20);

impl SecretKeys {
    fn read(&self) -> Result<Credentials, CredentialsError> {
        let text = |secret: &SecretRef| {
            secret
                .resolve()
                .map_err(CredentialsError::invalid_configuration)
                .and_then(|bytes| String::from_utf8(bytes).map_err(CredentialsError::invalid_configuration))
        };
        let token = self.session_token.as_ref().map(text).transpose()?;
        Ok(Credentials::new(
            text(&self.access_key_id)?,
            text(&self.secret_access_key)?,
            token,
            Some(std::time::SystemTime::now() + SECRET_REFRESH),
            "exoflow-secret-refs",
        ))
    }
}

impl ProvideCredentials for SecretKeys {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(self.read())
    }
}

/// Retries for a step that is safe to repeat inside one proxy call (an upload's part: the same
/// part number and bytes again), where failing the whole call would throw away the parts
/// already sent: three tries with the SDK's standard back-off.
pub fn step_retries() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(3)
}

/// The HTTP client every AWS backend uses: hyper on rustls with ring, which also speaks plain
/// http for emulators.
pub fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https()
}

/// Builds the SDK configuration for `settings`: region, endpoint, credentials, HTTP client,
/// and connect/operation timeouts (`operation_timeout` bounds each call including retries).
pub async fn sdk_config(settings: &AwsSettings, operation_timeout: Duration) -> Result<SdkConfig, ExoError> {
    settings.validate().map_err(|e| ExoError::new(ErrorReason::InvalidArgument, e.to_string()))?;
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_timeout(operation_timeout)
                .build(),
        )
        // The SDK would repeat any call, a send that may have been stored included, outside the
        // proxy's retry budget: the proxy's retry layer decides (reads only, within the budget)
        // and the app's SDK retries the rest. Idempotent steps inside one call ask for
        // [`step_retries`] themselves.
        .retry_config(RetryConfig::disabled());
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &settings.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let (Some(id), Some(secret)) =
        (settings.credentials.get("access-key-id"), settings.credentials.get("secret-access-key"))
    {
        let keys = SecretKeys {
            access_key_id: id.clone(),
            secret_access_key: secret.clone(),
            session_token: settings.credentials.get("session-token").cloned(),
        };
        // Fail at start-up, not on the first request, when a secret is missing.
        keys.read().map_err(|e| ExoError::new(ErrorReason::InvalidArgument, chain_text(&e)))?;
        loader = loader.credentials_provider(keys);
    } else if let Some(profile) = settings.credentials.get("profile") {
        let name =
            profile.resolve().map_err(|e| ExoError::new(ErrorReason::InvalidArgument, e.to_string()))?;
        loader = loader.profile_name(String::from_utf8_lossy(&name).trim());
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err(ExoError::new(
            ErrorReason::InvalidArgument,
            "no AWS region: set backend.region, AWS_REGION, or a region in the AWS profile",
        ));
    }
    Ok(config)
}

/// The service's error code and HTTP status of a failed call, when the service answered.
pub fn service_code<E>(err: &SdkError<E>) -> Option<(&str, u16)>
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata,
{
    match err {
        SdkError::ServiceError(service) => {
            Some((service.err().code().unwrap_or(""), service.raw().status().as_u16()))
        }
        _ => None,
    }
}

/// Error codes AWS services use for throttling.
const THROTTLING_CODES: [&str; 8] = [
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "SlowDown",
];

/// Maps a failed SDK call to the error vocabulary. Callers handle their service's own codes
/// (QUEUE_NOT_FOUND, CONDITION_FAILED, ...) first and pass the rest here; `backend` names the
/// service in the message.
pub fn map_error<E>(backend: &str, operation: &str, err: SdkError<E>) -> ExoError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let failed = |reason: ErrorReason, retryable: bool, why: String| {
        ExoError::new(reason, format!("{backend} {operation} failed: {why}")).with_retryable(retryable)
    };
    match &err {
        SdkError::TimeoutError(_) => failed(ErrorReason::Timeout, true, "timed out".into()),
        SdkError::DispatchFailure(dispatch) => {
            let why = if dispatch.is_timeout() { "timed out" } else { "cannot reach the service" };
            failed(ErrorReason::BackendUnavailable, true, format!("{why}: {}", chain_text(&err)))
        }
        SdkError::ResponseError(_) => failed(
            ErrorReason::BackendUnavailable,
            true,
            format!("unreadable response: {}", chain_text(&err)),
        ),
        SdkError::ConstructionFailure(_) => {
            failed(ErrorReason::Internal, false, format!("request not built: {}", chain_text(&err)))
        }
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("").to_owned();
            let message = service.err().message().unwrap_or("").to_owned();
            let status = service.raw().status().as_u16();
            let why = if message.is_empty() { code.clone() } else { format!("{code}: {message}") };
            if THROTTLING_CODES.contains(&code.as_str()) || status == 429 || status == 503 {
                failed(ErrorReason::Throttled, true, why)
            } else if matches!(
                code.as_str(),
                "InvalidClientTokenId"
                    | "UnrecognizedClientException"
                    | "SignatureDoesNotMatch"
                    | "IncompleteSignature"
                    | "ExpiredToken"
                    | "ExpiredTokenException"
                    | "InvalidAccessKeyId"
                    | "MissingAuthenticationToken"
            ) {
                failed(ErrorReason::Unauthenticated, false, why)
            } else if code.contains("AccessDenied") || status == 403 {
                failed(ErrorReason::PermissionDenied, false, why)
            } else if status >= 500 {
                failed(ErrorReason::BackendUnavailable, true, why)
            } else {
                // A request the proxy should have refused before sending: report it as the
                // proxy's own failure, with the service's words.
                failed(ErrorReason::Internal, false, format!("unexpected answer {status}: {why}"))
            }
        }
        _ => failed(ErrorReason::Internal, false, chain_text(&err)),
    }
}

fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_reject_unknown_or_half_credentials() {
        let ok: AwsSettings = serde_yaml_ng::from_str(
            "region: eu-west-1\nendpoint: http://127.0.0.1:5000\ncredentials:\n  access-key-id: env:A\n  secret-access-key: file:/s\n",
        )
        .unwrap();
        ok.validate().unwrap();
        assert_eq!(ok.region.as_deref(), Some("eu-west-1"));
        let unknown: AwsSettings = serde_yaml_ng::from_str("credentials:\n  password: env:P\n").unwrap();
        assert!(unknown.validate().unwrap_err().to_string().contains("password"));
        let half: AwsSettings = serde_yaml_ng::from_str("credentials:\n  access-key-id: env:A\n").unwrap();
        assert!(half.validate().is_err());
        let both: AwsSettings = serde_yaml_ng::from_str(
            "credentials:\n  profile: env:P\n  access-key-id: env:A\n  secret-access-key: env:B\n",
        )
        .unwrap();
        assert!(both.validate().is_err());
        assert!(serde_yaml_ng::from_str::<AwsSettings>("credentials:\n  access-key-id: AKIAXXXX\n").is_err());
        let bad_endpoint = AwsSettings { endpoint: Some("127.0.0.1:5000".into()), ..Default::default() };
        assert!(bad_endpoint.validate().is_err());
    }

    #[tokio::test]
    async fn secret_keys_are_read_on_every_refresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "first\n").unwrap();
        let keys = SecretKeys {
            access_key_id: SecretRef::try_from(format!("file:{}", path.display())).unwrap(),
            secret_access_key: SecretRef::try_from(format!("file:{}", path.display())).unwrap(),
            session_token: None,
        };
        assert_eq!(keys.provide_credentials().await.unwrap().access_key_id(), "first");
        std::fs::write(&path, "second").unwrap();
        assert_eq!(keys.provide_credentials().await.unwrap().secret_access_key(), "second");
        std::fs::remove_file(&path).unwrap();
        let err = keys.provide_credentials().await.unwrap_err();
        assert!(chain_text(&err).contains("cannot read secret"), "{}", chain_text(&err));
        // The value never shows in Debug output.
        assert!(!format!("{keys:?}").contains("second"));
    }

    #[tokio::test]
    async fn a_missing_secret_fails_at_start_up() {
        let settings = AwsSettings {
            region: Some("us-east-1".into()),
            credentials: [
                ("access-key-id".to_owned(), SecretRef::Env("EXO_TEST_SURELY_UNSET_A".into())),
                ("secret-access-key".to_owned(), SecretRef::Env("EXO_TEST_SURELY_UNSET_B".into())),
            ]
            .into(),
            ..Default::default()
        };
        let err = sdk_config(&settings, Duration::from_secs(5)).await.unwrap_err();
        assert!(err.message.contains("EXO_TEST_SURELY_UNSET_A"), "{}", err.message);
    }
}
