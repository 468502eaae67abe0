//! The per-call timeout: a call that runs longer than its limit fails with TIMEOUT (retryable).
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
        let limit = call.timed.then(|| self.limit + call.extra_time);
        async move {
            match limit {
                Some(limit) => bounded(limit, next).await,
                None => next.await,
            }
        }
    }
}

/// Fails `call` with TIMEOUT (retryable) once it runs longer than `limit`.
pub async fn bounded<T>(limit: Duration, call: impl Future<Output = ExoResult<T>>) -> ExoResult<T> {
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(ExoError::new(ErrorReason::Timeout, format!("backend did not answer within {limit:?}")))
    })
}
