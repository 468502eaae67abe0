//! Who the `gcs` backend is to Google: OAuth 2 access tokens (from a service-account key or the
//! metadata server of GCE/GKE, cached until shortly before they expire) and V4 signed URLs.
//!
//! A service-account key signs with RSA-SHA256 through `ring` (already the TLS stack's crypto),
//! so neither tokens nor signed URLs need another crypto library.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use base64::Engine as _;
use exo_proto::common::v1::ErrorReason;
use exo_proxy_core::{ExoError, ExoResult, now_ms, secret::ReloadingSecret};
use ring::{rand::SystemRandom, signature::RsaKeyPair};
use rustls_pki_types::{PrivatePkcs8KeyDer, pem::PemObject as _};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::sync::Mutex;

use super::time::utc_stamp;

/// The scope every token asks for: objects and buckets, read and write.
const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.full_control";
/// Tokens are renewed this long before Google says they expire.
const RENEW_BEFORE: Duration = Duration::from_secs(120);
/// Longest validity of a V4 signed URL (Google's limit: 7 days).
pub const MAX_SIGNED_SECONDS: u64 = 7 * 24 * 3600;

/// A service-account key (the JSON file Google issues), parsed.
pub struct ServiceAccount {
    /// `client_email`: the identity signed URLs and tokens name.
    pub email: String,
    key: RsaKeyPair,
    token_uri: String,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount").field("email", &self.email).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type", default)]
    kind: String,
    client_email: String,
    private_key: String,
    #[serde(default)]
    token_uri: Option<String>,
}

impl ServiceAccount {
    /// Parses a service-account key file; the error says what is wrong with it (never its content).
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let file: KeyFile = serde_json::from_slice(bytes).map_err(|e| {
            format!("not a service-account key file (JSON with client_email and private_key): {e}")
        })?;
        if !file.kind.is_empty() && file.kind != "service_account" {
            return Err(format!("the key file is of type '{}', not 'service_account'", file.kind));
        }
        let der = PrivatePkcs8KeyDer::from_pem_slice(file.private_key.as_bytes())
            .map_err(|e| format!("private_key is not a PEM PKCS#8 key: {e}"))?;
        let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|e| format!("private_key is not an RSA key ring accepts: {e}"))?;
        Ok(Self {
            email: file.client_email,
            key,
            token_uri: file.token_uri.unwrap_or_else(|| "https://oauth2.googleapis.com/token".into()),
        })
    }

    /// RSA-SHA256 (PKCS#1 v1.5) signature of `message`.
    pub fn sign(&self, message: &[u8]) -> ExoResult<Vec<u8>> {
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(&ring::signature::RSA_PKCS1_SHA256, &SystemRandom::new(), message, &mut signature)
            .map_err(|_| ExoError::internal("signing with the service-account key failed"))?;
        Ok(signature)
    }

    /// A signed JWT asking `token_uri` for an access token (RFC 7523).
    fn assertion(&self) -> ExoResult<String> {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = now_ms() / 1000;
        let claims = serde_json::json!({
            "iss": self.email, "scope": SCOPE, "aud": self.token_uri, "iat": now, "exp": now + 3600,
        });
        let unsigned =
            format!("{}.{}", b64(br#"{"alg":"RS256","typ":"JWT"}"#), b64(claims.to_string().as_bytes()));
        let signature = self.sign(unsigned.as_bytes())?;
        Ok(format!("{unsigned}.{}", b64(&signature)))
    }
}

/// Where access tokens come from.
#[derive(Debug)]
pub enum TokenSource {
    /// No token: emulators and public buckets.
    Anonymous,
    /// A service-account key exchanged for tokens at its `token_uri`.
    ServiceAccount,
    /// The metadata server of the VM or pod (GCE, GKE workload identity).
    MetadataServer,
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    #[serde(default)]
    expires_in: u64,
}

/// Access tokens and URL signing for one backend.
pub struct Auth {
    source: TokenSource,
    /// The service-account key, followed on disk when it is a `file:` secret.
    key: Option<ReloadingSecret<ServiceAccount>>,
    /// The token, when it stops being used, and the key generation that got it.
    cached: Mutex<Option<(String, Instant, u64)>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("source", &self.source).finish_non_exhaustive()
    }
}

impl Auth {
    /// Tokens from `source`; the service-account `key` (when given) signs URLs and is the token
    /// source's key. A key rotated on disk signs and gets tokens without a restart
    /// ([`ReloadingSecret`]); a token the old key got is not used once it changed.
    pub fn new(source: TokenSource, key: Option<ReloadingSecret<ServiceAccount>>) -> Self {
        Self { source, key, cached: Mutex::new(None) }
    }

    /// The key that signs URLs, if there is one: the file's current one.
    pub fn signer(&self) -> Option<Arc<ServiceAccount>> {
        self.key.as_ref().map(|key| key.current().0)
    }

    /// The `Authorization` header value, or `None` for anonymous access.
    pub async fn bearer(&self, http: &reqwest_gcs::Client, timeout: Duration) -> ExoResult<Option<String>> {
        if matches!(self.source, TokenSource::Anonymous) {
            return Ok(None);
        }
        let (account, generation) = match &self.key {
            Some(key) => {
                let (account, generation) = key.current();
                (Some(account), generation)
            }
            None => (None, 0),
        };
        let mut cached = self.cached.lock().await;
        if let Some((token, until, of)) = cached.as_ref()
            && Instant::now() < *until
            && *of == generation
        {
            return Ok(Some(format!("Bearer {token}")));
        }
        let reply = self.fetch(account.as_deref(), http, timeout).await?;
        let lifetime = Duration::from_secs(reply.expires_in.max(60)).saturating_sub(RENEW_BEFORE);
        let header = format!("Bearer {}", reply.access_token);
        *cached =
            Some((reply.access_token, Instant::now() + lifetime.max(Duration::from_secs(30)), generation));
        Ok(Some(header))
    }

    async fn fetch(
        &self,
        account: Option<&ServiceAccount>,
        http: &reqwest_gcs::Client,
        timeout: Duration,
    ) -> ExoResult<TokenReply> {
        let (what, request) = match (&self.source, account) {
            (TokenSource::ServiceAccount, Some(account)) => {
                let assertion = account.assertion()?;
                let body = format!(
                    "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
                );
                let request = http
                    .post(&account.token_uri)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body);
                (format!("token for {} from {}", account.email, account.token_uri), request)
            }
            _ => {
                // GCE_METADATA_HOST is how Google's own libraries let tests move the server.
                let host =
                    std::env::var("GCE_METADATA_HOST").unwrap_or_else(|_| "metadata.google.internal".into());
                let url = format!("http://{host}/computeMetadata/v1/instance/service-accounts/default/token");
                (
                    "token from the metadata server (no service-account key configured)".into(),
                    http.get(url).header("Metadata-Flavor", "Google"),
                )
            }
        };
        let response = request.timeout(timeout).send().await.map_err(|e| {
            ExoError::new(
                ErrorReason::BackendUnavailable,
                format!("gcs: cannot get a {what}: {}", exo_proxy_core::with_causes(&e)),
            )
            .retryable()
        })?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let reason = if status.is_server_error() || status.as_u16() == 429 {
                ErrorReason::BackendUnavailable
            } else {
                ErrorReason::Unauthenticated
            };
            let error = ExoError::new(reason, format!("gcs: {what} refused ({status}): {}", text.trim()));
            return Err(if reason == ErrorReason::BackendUnavailable { error.retryable() } else { error });
        }
        response.json::<TokenReply>().await.map_err(|e| {
            ExoError::new(ErrorReason::Unauthenticated, format!("gcs: the {what} is not a token reply: {e}"))
        })
    }
}

/// What a V4 signed URL covers.
pub struct SignedRequest<'a> {
    /// `GET` or `PUT`.
    pub method: &'a str,
    /// The endpoint, e.g. `https://storage.googleapis.com`.
    pub endpoint: &'a str,
    /// Bucket (its physical name).
    pub bucket: &'a str,
    /// Object name as stored.
    pub object: &'a str,
    /// Validity from now.
    pub seconds: u64,
}

/// Escapes like Google's V4 signing: everything but unreserved characters (and `/` in paths).
fn escape(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && byte == b'/')
        {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A V4 signed URL (`GOOG4-RSA-SHA256`, only the `host` header signed), as `gsutil signurl` makes.
pub fn signed_url(account: &ServiceAccount, request: &SignedRequest<'_>, now_secs: u64) -> ExoResult<String> {
    let (date, stamp) = utc_stamp(now_secs);
    let scope = format!("{date}/auto/storage/goog4_request");
    let (scheme, rest) = request.endpoint.split_once("://").unwrap_or(("https", request.endpoint));
    let host = rest.trim_end_matches('/');
    let path = format!("/{}/{}", escape(request.bucket, false), escape(request.object, true));
    let mut query = [
        ("X-Goog-Algorithm", "GOOG4-RSA-SHA256".to_owned()),
        ("X-Goog-Credential", format!("{}/{scope}", account.email)),
        ("X-Goog-Date", stamp.clone()),
        ("X-Goog-Expires", request.seconds.clamp(1, MAX_SIGNED_SECONDS).to_string()),
        ("X-Goog-SignedHeaders", "host".to_owned()),
    ]
    .map(|(k, v)| format!("{}={}", escape(k, false), escape(&v, false)))
    .to_vec();
    query.sort();
    let query = query.join("&");
    let canonical = format!("{}\n{path}\n{query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD", request.method);
    let to_sign =
        format!("GOOG4-RSA-SHA256\n{stamp}\n{scope}\n{}", hex(&Sha256::digest(canonical.as_bytes())));
    let signature = hex(&account.sign(to_sign.as_bytes())?);
    Ok(format!("{scheme}://{host}{path}?{query}&X-Goog-Signature={signature}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_escapes_as_google_does() {
        assert_eq!(escape("a b/ü~", true), "a%20b/%C3%BC~");
        assert_eq!(escape("a/b", false), "a%2Fb");
        assert_eq!(hex(&[0, 171, 255]), "00abff");
    }

    #[test]
    fn key_files_that_are_not_keys_are_refused_with_the_reason() {
        let err = ServiceAccount::from_json(b"{}").unwrap_err();
        assert!(err.contains("client_email"), "{err}");
        let err =
            ServiceAccount::from_json(br#"{"type":"authorized_user","client_email":"a","private_key":"x"}"#)
                .unwrap_err();
        assert!(err.contains("authorized_user"), "{err}");
        let err = ServiceAccount::from_json(br#"{"client_email":"a","private_key":"not pem"}"#).unwrap_err();
        assert!(err.contains("PEM"), "{err}");
    }
}
