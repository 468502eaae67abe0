//! Presigned URLs for the local backends: the proxy itself serves them at
//! `/api/v1/presigned/{bucket}/{key}`, authorised by an HMAC-SHA256 over method, bucket, key and
//! expiry. Anyone holding the URL may use it until it expires, without other credentials; any
//! change to it invalidates the signature. Cloud backends return their own signed URLs instead.

use exo_proto::{common::v1::ErrorReason, object::v1 as pb};
use exo_proxy_core::{ExoError, ExoResult, now_ms};
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rand::Rng as _;
use sha2::Sha256;

/// Characters left as they are in the key part of a URL path (unreserved and '/').
const KEY_SET: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');

/// Signs and verifies presigned URLs.
#[derive(Clone)]
pub struct LocalPresigner {
    base_url: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for LocalPresigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("LocalPresigner").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

/// `key` as a URL path: percent-encoded, and a `.` or `..` segment spelled `%2E` / `%2E%2E`, which
/// clients (curl, browsers, HTTP libraries) would otherwise remove before sending; the object
/// routes decode them back.
fn url_key(key: &str) -> String {
    let segments = key.split('/').map(|segment| match segment {
        "." => "%2E".to_owned(),
        ".." => "%2E%2E".to_owned(),
        other => utf8_percent_encode(other, KEY_SET).to_string(),
    });
    segments.collect::<Vec<_>>().join("/")
}

impl LocalPresigner {
    /// A signer for URLs under `base_url` (e.g. `http://127.0.0.1:7402`) with `secret`; a random
    /// secret when `None` (URLs then stop working when the proxy restarts).
    pub fn new(base_url: &str, secret: Option<Vec<u8>>) -> Self {
        let secret = secret.unwrap_or_else(|| {
            let mut bytes = vec![0u8; 32];
            rand::rng().fill(bytes.as_mut_slice());
            bytes
        });
        Self { base_url: base_url.trim_end_matches('/').to_owned(), secret }
    }

    fn signature(&self, method: pb::PresignMethod, bucket: &str, key: &str, expires_at_ms: u64) -> Vec<u8> {
        // new_from_slice accepts keys of any length for HMAC.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable_hmac());
        mac.update(format!("{}\n{bucket}\n{key}\n{expires_at_ms}", method.as_str_name()).as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// The URL allowing `method` on `bucket`/`key` until `expires_at_ms`.
    pub fn url(&self, bucket: &str, key: &str, method: pb::PresignMethod, expires_at_ms: u64) -> String {
        let signature = hex(&self.signature(method, bucket, key, expires_at_ms));
        format!(
            "{}/api/v1/presigned/{bucket}/{}?method={}&expires={expires_at_ms}&signature={signature}",
            self.base_url,
            url_key(key),
            method.as_str_name()
        )
    }

    /// Checks a presented URL's parts; PERMISSION_DENIED if altered or expired.
    pub fn verify(
        &self,
        bucket: &str,
        key: &str,
        method: pb::PresignMethod,
        expires_at_ms: u64,
        signature: &str,
    ) -> ExoResult<()> {
        let denied = |why: &str| {
            ExoError::new(ErrorReason::PermissionDenied, format!("presigned URL rejected: {why}"))
        };
        let presented = unhex(signature).ok_or_else(|| denied("malformed signature"))?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable_hmac());
        mac.update(format!("{}\n{bucket}\n{key}\n{expires_at_ms}", method.as_str_name()).as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&presented).map_err(|_| denied("signature does not match"))?;
        if now_ms() >= expires_at_ms {
            return Err(denied("expired"));
        }
        Ok(())
    }
}

fn unreachable_hmac() -> Hmac<Sha256> {
    // HMAC takes keys of any length; this is never reached. Keyed with a fresh random value so a
    // bug here could never produce a predictable signature.
    let mut key = [0u8; 32];
    rand::rng().fill(&mut key);
    match Hmac::<Sha256>::new_from_slice(&key) {
        Ok(mac) => mac,
        Err(_) => std::process::abort(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_survive_clients_that_normalise_paths() {
        let signer = LocalPresigner::new("http://127.0.0.1:7402", None);
        let url = signer.url("photos", "a/../b/./c..d/..", pb::PresignMethod::Get, 1);
        assert!(url.contains("/presigned/photos/a/%2E%2E/b/%2E/c..d/%2E%2E?"), "{url}");
    }

    #[test]
    fn signed_urls_verify_and_reject_tampering() {
        let signer = LocalPresigner::new("http://127.0.0.1:7402/", None);
        let expires = now_ms() + 60_000;
        let url = signer.url("photos", "a b/ü.jpg", pb::PresignMethod::Get, expires);
        assert!(
            url.starts_with(
                "http://127.0.0.1:7402/api/v1/presigned/photos/a%20b/%C3%BC.jpg?method=GET&expires="
            ),
            "{url}"
        );
        let signature = url.rsplit_once("signature=").unwrap().1;
        signer.verify("photos", "a b/ü.jpg", pb::PresignMethod::Get, expires, signature).unwrap();
        assert!(signer.verify("photos", "a b/ü.jpeg", pb::PresignMethod::Get, expires, signature).is_err());
        assert!(signer.verify("photos", "a b/ü.jpg", pb::PresignMethod::Put, expires, signature).is_err());
        assert!(
            signer.verify("photos", "a b/ü.jpg", pb::PresignMethod::Get, expires + 1, signature).is_err()
        );
        assert!(signer.verify("photos", "a b/ü.jpg", pb::PresignMethod::Get, expires, "zz").is_err());
        let past = now_ms() - 1;
        let old = signer.url("photos", "k", pb::PresignMethod::Get, past);
        let old_signature = old.rsplit_once("signature=").unwrap().1;
        let err = signer.verify("photos", "k", pb::PresignMethod::Get, past, old_signature).unwrap_err();
        assert!(err.message.contains("expired"));
    }
}
