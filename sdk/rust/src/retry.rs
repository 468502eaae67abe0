//! Retries with capped exponential backoff and full jitter, for retryable errors only.

use std::{future::Future, time::Duration};

use rand::Rng as _;

use crate::Error;

/// How a client retries failed calls. Only errors marked retryable by the proxy (or transport
/// failures) are retried; a rejected request is never resent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = never retry).
    pub max_attempts: u32,
    /// Backoff before the first retry; doubles each time.
    pub initial_backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// The longest wait a proxy's retry hint can impose on one retry.
const MAX_HINTED_WAIT: Duration = Duration::from_secs(30);

impl RetryPolicy {
    /// Never retry.
    pub fn none() -> Self {
        Self { max_attempts: 1, ..Self::default() }
    }

    /// Runs `call` until it succeeds, fails with a non-retryable error, or attempts run out.
    pub async fn run<T, F, Fut>(&self, mut call: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut attempt = 1;
        let mut ceiling = self.initial_backoff;
        loop {
            match call().await {
                Err(err) if err.retryable && attempt < self.max_attempts => {
                    // Full jitter: spread retries of many clients over the whole window; never
                    // sooner than the proxy asked (bounded, so a wrong hint cannot stall us).
                    let pause = rand::rng()
                        .random_range(Duration::ZERO..=ceiling)
                        .max(err.retry_after.unwrap_or_default().min(MAX_HINTED_WAIT));
                    tracing::debug!(attempt, error = %err, ?pause, "retrying");
                    tokio::time::sleep(pause).await;
                    ceiling = (ceiling * 2).min(self.max_backoff);
                    attempt += 1;
                }
                result => return result,
            }
        }
    }
}

/// One unary call with retries: clones the client and request for each attempt and decodes
/// failures into [`Error`].
pub(crate) async fn unary<C, Req, Resp, F, Fut>(
    retry: &RetryPolicy,
    client: &C,
    req: Req,
    call: F,
) -> Result<Resp, Error>
where
    C: Clone,
    Req: Clone,
    F: Fn(C, Req) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
{
    retry
        .run(|| {
            let attempt = call(client.clone(), req.clone());
            async move { attempt.await.map(tonic::Response::into_inner).map_err(Error::from) }
        })
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::error::Reason;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
        }
    }

    #[tokio::test]
    async fn retries_retryable_errors_until_attempts_run_out() {
        let calls = AtomicU32::new(0);
        let result: Result<(), Error> = policy()
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Error::client(Reason::BackendUnavailable, "down", true))
            })
            .await;
        assert_eq!(result.unwrap_err().reason, Reason::BackendUnavailable);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn never_retries_a_rejected_request() {
        let calls = AtomicU32::new(0);
        let result: Result<(), Error> = policy()
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Error::client(Reason::InvalidName, "bad", false))
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn waits_at_least_as_long_as_the_proxy_asked() {
        let calls = AtomicU32::new(0);
        let started = std::time::Instant::now();
        let result = policy()
            .run(|| async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n == 0 {
                    let mut err = Error::client(Reason::BackendUnavailable, "circuit open", true);
                    err.retry_after = Some(Duration::from_millis(200));
                    Err(err)
                } else {
                    Ok(n)
                }
            })
            .await;
        assert_eq!(result.unwrap(), 1);
        // The policy's own back-off is at most 2 ms: the wait is the hint's.
        assert!(started.elapsed() >= Duration::from_millis(200), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn stops_at_first_success() {
        let calls = AtomicU32::new(0);
        let result = policy()
            .run(|| async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n == 0 { Err(Error::client(Reason::Timeout, "slow", true)) } else { Ok(n) }
            })
            .await;
        assert_eq!(result.unwrap(), 1);
    }
}
