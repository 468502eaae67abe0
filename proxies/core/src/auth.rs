//! Bearer-token authentication for proxies reachable beyond their own process's loopback (a
//! pod's network, a VM's): one shared secret, checked in constant time, re-read every few
//! seconds so a rotated `file:` secret takes effect without a restart.

use std::{
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use exo_proto::common::v1::ErrorReason;

use crate::{ExoError, secret::SecretRef};

/// How long a resolved token is used before the secret is read again.
const REFRESH: Duration = Duration::from_secs(5);

/// Paths that stay open: liveness, readiness, metrics, the gRPC health service, and eos's
/// presigned URLs (their signature is their authorisation: the handler verifies it).
fn is_open(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
        || path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/api/v1/presigned/")
}

/// The credentials of an `Authorization: Bearer …` header; the scheme is case-insensitive
/// (RFC 9110 §11.1).
fn bearer(header: &[u8]) -> Option<&[u8]> {
    let space = header.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = header.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let start = rest.iter().position(|b| *b != b' ')?;
    Some(&rest[start..])
}

/// The expected token, when it was read, and the reload generation then (see [`crate::reload`]).
pub struct TokenCheck {
    secret: SecretRef,
    cached: RwLock<Option<(Instant, u64, Vec<u8>)>>,
}

impl std::fmt::Debug for TokenCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCheck").field("secret", &self.secret).finish_non_exhaustive()
    }
}

impl TokenCheck {
    /// Checks calls against `secret`.
    pub fn new(secret: SecretRef) -> Arc<Self> {
        Arc::new(Self { secret, cached: RwLock::new(None) })
    }

    fn expected(&self) -> Result<Vec<u8>, ExoError> {
        let generation = crate::reload::generation();
        if let Ok(cached) = self.cached.read()
            && let Some((at, read_in, token)) = cached.as_ref()
            && at.elapsed() < REFRESH
            && *read_in == generation
        {
            return Ok(token.clone());
        }
        let token = self.secret.resolve().map_err(|err| {
            tracing::error!(error = %err, "cannot read the proxy's auth token");
            ExoError::new(ErrorReason::Unauthenticated, "the proxy cannot read its auth token")
        })?;
        if let Ok(mut cached) = self.cached.write() {
            *cached = Some((Instant::now(), generation, token.clone()));
        }
        Ok(token)
    }

    fn allows(&self, header: Option<&[u8]>) -> Result<(), ExoError> {
        let denied = || ExoError::new(ErrorReason::Unauthenticated, "missing or wrong bearer token");
        let presented = header.and_then(bearer).ok_or_else(denied)?;
        let expected = self.expected()?;
        if expected.is_empty() || !constant_time_eq(presented, &expected) {
            return Err(denied());
        }
        Ok(())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// axum middleware enforcing the token on everything but the open paths.
pub async fn require_token(State(check): State<Arc<TokenCheck>>, req: Request, next: Next) -> Response {
    if is_open(req.uri().path()) {
        return next.run(req).await;
    }
    match check.allows(req.headers().get(http::header::AUTHORIZATION).map(|v| v.as_bytes())) {
        Ok(()) => next.run(req).await,
        Err(err) => {
            let grpc = req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
            // Refused before its body was read: take in a small body first, or HTTP/2 resets
            // the stream after the answer and some clients (curl) report the reset instead.
            drain_small(req.into_body()).await;
            if grpc { tonic::Status::from(err).into_http() } else { err.into_response() }
        }
    }
}

/// Most of a refused request's body read (and dropped) before the refusal is sent.
const DRAIN_BYTES: usize = 64 * 1024;
/// Longest wait for it.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_millis(500);

/// Reads and drops `body` up to [`DRAIN_BYTES`] within [`DRAIN_TIME`]; a longer or slower body
/// is left as it is (the stream is then reset after the answer, as HTTP/2 allows). Whether the
/// body was read to its end.
pub async fn drain_small(body: axum::body::Body) -> bool {
    use futures::StreamExt as _;
    let mut chunks = body.into_data_stream();
    tokio::time::timeout(DRAIN_TIME, async {
        let mut read = 0;
        while read <= DRAIN_BYTES {
            match chunks.next().await {
                Some(Ok(chunk)) => read += chunk.len(),
                Some(Err(_)) => return false,
                None => return true,
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(is_open("/readyz") && is_open("/grpc.health.v1.Health/Check") && !is_open("/api/v1/queues"));
        assert!(is_open("/api/v1/presigned/b/k") && !is_open("/api/v1/buckets/b/presign"));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for header in [&b"Bearer tok"[..], b"bearer tok", b"BEARER  tok"] {
            assert_eq!(bearer(header), Some(&b"tok"[..]), "{}", String::from_utf8_lossy(header));
        }
        for header in [&b"Basic tok"[..], b"Bearertok", b"Bearer ", b""] {
            assert_eq!(bearer(header), None, "{}", String::from_utf8_lossy(header));
        }
    }
}
