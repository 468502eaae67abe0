//! The per-call timeout: a call that runs longer than its limit, or than the caller's deadline,
//! fails with TIMEOUT (retryable); a call whose caller's deadline has passed is not started.
//! The backend may still complete a write it was given; delivery is at-least-once, so a retry
//! can at worst duplicate, never lose.

use std::{future::Future, time::Duration};

use exo_proto::common::v1::ErrorReason;

use super::{Call, Layer};
use crate::{ExoError, ExoResult};

/// Bounds each call by a limit (plus the call's own extra time; untimed calls are not bounded).
#[derive(Debug, Clone, Copy)]
pub struct Timeout {
    limit: Duration,
}

impl Timeout {
    /// A timeout of `limit` per call.
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl Layer for Timeout {
    fn wrap<T: Send>(
        &self,
        call: Call,
        next: impl Future<Output = ExoResult<T>> + Send,
    ) -> impl Future<Output = ExoResult<T>> + Send {
        let limit = call.kind.timed().then(|| self.limit + call.kind.extra_time());
        async move {
            // The caller's deadline (see `crate::deadline`): no call starts once it has passed,
            // and a timed call gets no more than what is left of it.
            match (limit, crate::deadline::remaining()) {
                (_, Some(left)) if left.is_zero() => Err(caller_gave_up()),
                (Some(limit), Some(left)) if left < limit => {
                    tokio::time::timeout(left, next).await.unwrap_or_else(|_| Err(caller_gave_up()))
                }
                (Some(limit), _) => bounded(limit, next).await,
                (None, _) => next.await,
            }
        }
    }
}

/// The caller's own deadline passed: TIMEOUT (DEADLINE_EXCEEDED in gRPC, 504 in HTTP).
fn caller_gave_up() -> ExoError {
    ExoError::new(
        ErrorReason::Timeout,
        "the caller's deadline (grpc-timeout or x-exo-timeout-ms) passed before the backend answered",
    )
}

/// Fails `call` with TIMEOUT (retryable) once it runs longer than `limit`.
pub async fn bounded<T>(limit: Duration, call: impl Future<Output = ExoResult<T>>) -> ExoResult<T> {
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(ExoError::new(ErrorReason::Timeout, format!("backend did not answer within {limit:?}")))
    })
}
