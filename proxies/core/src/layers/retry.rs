//! Retries inside the proxy, for reads only, within a budget.
//!
//! Which calls: those a service runs through [`Layer::wrap_repeatable`] — reads (list, describe,
//! get, head, batch get), which change nothing however often they run — and only after a failure
//! the contract marks retryable. Writes, sends, receives, acks and deletes are never repeated
//! here: one that failed may still have taken effect (a send stored, a receive that hid its
//! messages, a delete whose repeat would answer NOT_FOUND); the SDK, which knows the app's
//! intent, retries those.
//!
//! How much: exponential back-off with full jitter, at most `max-attempts` tries, all within the
//! call's own time (`server.request-timeout`; so a try that timed out is not repeated — a slow
//! backend gets no second helping of the same load), and a **budget** shared by the proxy's calls: each
//! call earns `budget-ratio` of a retry (0.2: at most 20 % extra load on the backend in steady
//! state, as linkerd and Finagle do it), on top of a floor of `min-retries` that refills over a
//! second, so that a backend that is down gets no retry storm and a rare blip still gets its retry.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{Call, Layer};
use crate::{ExoResult, metrics::Metrics};

/// `server.retry:`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RetrySettings {
    /// Tries per call, the first included (1: no retries).
    pub max_attempts: u32,
    /// Back-off before the first retry; doubled for each further one, with full jitter.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// The longest back-off.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Retries earned per call (0.2: at most 20 % extra load).
    pub budget_ratio: f64,
    /// Retries always allowed per second, whatever the ratio.
    pub min_retries: u32,
}

impl Eq for RetrySettings {}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: Duration::from_millis(25),
            max_backoff: Duration::from_secs(1),
            budget_ratio: 0.2,
            min_retries: 10,
        }
    }
}

/// The shared allowance of retries.
#[derive(Debug)]
struct Budget {
    /// (earned retries, floor retries left this second, when the floor refills)
    state: Mutex<(f64, u32, Instant)>,
    ratio: f64,
    floor: u32,
}

impl Budget {
    /// The most earned retries kept: a long quiet spell does not bank a storm.
    const CAP: f64 = 100.0;

    fn deposit(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.0 = (state.0 + self.ratio).min(Self::CAP);
        }
    }

    fn withdraw(&self) -> bool {
        let Ok(mut state) = self.state.lock() else { return false };
        let now = Instant::now();
        if now >= state.2 {
            state.1 = self.floor;
            state.2 = now + Duration::from_secs(1);
        }
        if state.1 > 0 {
            state.1 -= 1;
            true
        } else if state.0 >= 1.0 {
            state.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Retries repeatable calls after retryable failures, within a budget.
#[derive(Debug)]
pub struct Retry {
    settings: RetrySettings,
    /// All tries of one call end within this (the per-call timeout).
    within: Duration,
    budget: Budget,
    metrics: std::sync::Arc<Metrics>,
}

impl Retry {
    /// A retry layer with `settings`, every call's tries bounded by `within`.
    pub fn new(settings: RetrySettings, within: Duration, metrics: std::sync::Arc<Metrics>) -> Self {
        let budget = Budget {
            state: Mutex::new((0.0, settings.min_retries, Instant::now() + Duration::from_secs(1))),
            ratio: settings.budget_ratio.clamp(0.0, 1.0),
            floor: settings.min_retries,
        };
        Self { settings, within, budget, metrics }
    }

    /// The back-off before retry number `retry` (1-based): full jitter over an exponential cap.
    fn backoff(&self, retry: u32) -> Duration {
        let cap = self
            .settings
            .backoff
            .saturating_mul(1u32.checked_shl(retry.saturating_sub(1)).unwrap_or(u32::MAX))
            .min(self.settings.max_backoff);
        cap.mul_f64(rand::random::<f64>())
    }
}

impl Layer for Retry {
    fn wrap<T: Send>(
        &self,
        _call: Call,
        next: impl Future<Output = ExoResult<T>> + Send,
    ) -> impl Future<Output = ExoResult<T>> + Send {
        // A one-shot future cannot be made again.
        next
    }

    async fn wrap_repeatable<T: Send, F, Fut>(&self, call: Call, attempt: F) -> ExoResult<T>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = ExoResult<T>> + Send,
    {
        self.budget.deposit();
        let own = Instant::now() + self.within + call.kind.extra_time();
        // No retry that the caller would not wait for.
        let deadline = crate::deadline::caller().map_or(own, |caller| caller.min(own));
        let mut tries = 1;
        loop {
            let result = attempt().await;
            let Err(err) = &result else { return result };
            if !call.kind.repeatable() || !err.retryable || tries >= self.settings.max_attempts {
                return result;
            }
            let pause = self.backoff(tries);
            if Instant::now() + pause >= deadline {
                return result;
            }
            if !self.budget.withdraw() {
                self.metrics.retry_budget_exhausted(call.backend);
                return result;
            }
            tracing::debug!(op = call.op, backend = call.backend, tries, error = %err, "retrying a read");
            self.metrics.retried(call.backend);
            tokio::time::sleep(pause).await;
            tries += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    };

    use exo_proto::common::v1::ErrorReason;

    use super::*;
    use crate::ExoError;

    fn retry(settings: RetrySettings) -> (Retry, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        (Retry::new(settings, Duration::from_secs(5), metrics.clone()), metrics)
    }

    /// A call failing retryably `failures` times, then answering; counts its tries.
    fn flaky(
        failures: u32,
        tries: &AtomicU32,
    ) -> impl Fn() -> std::future::Ready<ExoResult<u32>> + Send + Sync + '_ {
        move || {
            let n = tries.fetch_add(1, Ordering::SeqCst);
            std::future::ready(if n < failures {
                Err(ExoError::new(ErrorReason::BackendUnavailable, "blip").retryable())
            } else {
                Ok(n)
            })
        }
    }

    #[tokio::test]
    async fn a_read_that_blips_is_retried_and_a_write_is_not() {
        let (layer, metrics) = retry(RetrySettings::default());
        let tries = AtomicU32::new(0);
        let read = Call::new("kv", "get", "test");
        assert_eq!(layer.wrap_repeatable(read, flaky(2, &tries)).await.unwrap(), 2);
        assert_eq!(tries.load(Ordering::SeqCst), 3);
        assert!(metrics.render().contains(r#"exo_retries_total{backend="test"} 2"#), "{}", metrics.render());

        let tries = AtomicU32::new(0);
        let write = Call::new("kv", "put", "test").of_kind(crate::layers::OpKind::ConditionalWrite);
        assert!(layer.wrap_repeatable(write, flaky(1, &tries)).await.is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 1, "a call not safe to repeat ran twice");

        let tries = AtomicU32::new(0);
        let refused = || {
            tries.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Err::<u32, _>(ExoError::new(ErrorReason::KeyNotFound, "no")))
        };
        assert!(layer.wrap_repeatable(read, refused).await.is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 1, "a failure that is not retryable was retried");
    }

    #[tokio::test]
    async fn attempts_are_capped_and_the_budget_runs_out() {
        let (layer, metrics) =
            retry(RetrySettings { min_retries: 3, budget_ratio: 0.0, ..Default::default() });
        let read = Call::new("object", "head", "test");
        let tries = AtomicU32::new(0);
        assert!(layer.wrap_repeatable(read, flaky(100, &tries)).await.is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 3, "max-attempts is 3");
        // Two retries spent, one left this second: the next call gets one retry, then none.
        let tries = AtomicU32::new(0);
        assert!(layer.wrap_repeatable(read, flaky(100, &tries)).await.is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 2);
        let tries = AtomicU32::new(0);
        assert!(layer.wrap_repeatable(read, flaky(100, &tries)).await.is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 1, "retried with the budget spent");
        assert!(
            metrics.render().contains(r#"exo_retry_budget_exhausted_total{backend="test"} 2"#),
            "{}",
            metrics.render()
        );
    }

    #[tokio::test]
    async fn the_one_shot_path_runs_once() {
        let (layer, _) = retry(RetrySettings::default());
        let err = layer
            .wrap(Call::new("queue", "list_queues", "test"), async {
                Err::<u32, _>(ExoError::new(ErrorReason::BackendUnavailable, "down").retryable())
            })
            .await
            .unwrap_err();
        assert_eq!(err.reason, ErrorReason::BackendUnavailable);
    }
}
