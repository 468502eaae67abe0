//! Layers: cross-cutting behaviour written once, for every service, each with one job.
//!
//! Every backend call a proxy makes is described by a [`Call`] (service, operation, backend,
//! whether it is safe to repeat, how long it may wait) and run through a [`Layer`] stack. Each
//! service has one wrapper around its backend trait (`Layered` in eqs, eos and ekv) that turns
//! each method into a `Call` and hands the backend's future to the stack; the stack is composed
//! in one visible place per proxy, outermost first, as a tuple: `(Observe::new(…), Timeout::new(…))`.
//! A new layer is a module here; a new backend method needs no change in any layer.
//!
//! Layers are generic over the call's output and compose statically (no boxing, no dynamic
//! dispatch): the stack compiles to the same code as the calls written out by hand.

mod breaker;
mod observe;
mod retry;
mod shed;
mod timeout;

use std::{future::Future, time::Duration};

pub use breaker::{BreakerSettings, CircuitBreaker};
pub use observe::Observe;
pub use retry::{Retry, RetrySettings};
pub use shed::ShedLoad;
pub use timeout::{Timeout, bounded};

use crate::ExoResult;

/// The stack every proxy runs its backend calls through, outermost first: metrics and logs (so
/// they see everything below, fast failures included), load shedding, the circuit breaker (which
/// sees one outcome per call, after its retries, and fails fast before any), retries of reads
/// within a budget, then the per-attempt timeout.
pub type Standard = (Observe, ShedLoad, CircuitBreaker, Retry, Timeout);

/// The [`Standard`] stack for a proxy's `server:` settings.
pub fn standard(
    server: &crate::config::ServerConfig,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> Standard {
    (
        Observe::new(metrics.clone()),
        ShedLoad::new(server.max_in_flight, metrics.clone()),
        CircuitBreaker::new(server.breaker, metrics.clone()),
        Retry::new(server.retry, server.request_timeout, metrics),
        Timeout::new(server.request_timeout),
    )
}

/// One backend call, as layers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// The service (`queue`, `object`, `kv`), as metrics label it.
    pub service: &'static str,
    /// The operation (`send`, `get`, …).
    pub op: &'static str,
    /// The backend's name (`embedded`, `sqs`, …).
    pub backend: &'static str,
    /// Whether running the call twice has the effect of running it once (reads, deletes,
    /// unconditional puts). A retry layer may repeat only these: a send that may have been stored
    /// is not.
    pub idempotent: bool,
    /// Time the call may take beyond the per-call timeout (a long poll's wait).
    pub extra_time: Duration,
    /// Whether the per-call timeout applies at all: not to a streamed upload or copy, whose
    /// length decides its duration (the stream itself is bounded elsewhere).
    pub timed: bool,
}

impl Call {
    /// A call of `service`'s `op` on `backend` that is safe to repeat and timed normally.
    pub const fn new(service: &'static str, op: &'static str, backend: &'static str) -> Self {
        Self { service, op, backend, idempotent: true, extra_time: Duration::ZERO, timed: true }
    }

    /// Marks the call as not safe to repeat (it may have taken effect when it failed).
    pub const fn not_idempotent(mut self) -> Self {
        self.idempotent = false;
        self
    }

    /// Lets the call wait `extra` beyond the per-call timeout.
    pub const fn waiting(mut self, extra: Duration) -> Self {
        self.extra_time = extra;
        self
    }

    /// Exempts the call from the per-call timeout.
    pub const fn untimed(mut self) -> Self {
        self.timed = false;
        self
    }
}

/// One job wrapped around every backend call.
pub trait Layer: Send + Sync + 'static {
    /// Runs `next` (the rest of the stack and the backend call) for `call`.
    fn wrap<T: Send>(
        &self,
        call: Call,
        next: impl Future<Output = ExoResult<T>> + Send,
    ) -> impl Future<Output = ExoResult<T>> + Send;

    /// The error a call would fail with at once, without reaching the backend, if one were
    /// made now (an open circuit breaker); `None` when calls go through. Readiness asks this
    /// first, so a probe answers at once while the breaker is open instead of waiting on a
    /// backend known to be down. Changes nothing.
    fn refusing(&self, _call: Call) -> Option<crate::ExoError> {
        None
    }

    /// Runs a call that can be made again: `attempt` makes a fresh one each time. Layers that do
    /// not repeat calls run it once through [`Layer::wrap`].
    fn wrap_repeatable<T: Send, F, Fut>(
        &self,
        call: Call,
        attempt: F,
    ) -> impl Future<Output = ExoResult<T>> + Send
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = ExoResult<T>> + Send,
    {
        self.wrap(call, attempt())
    }
}

/// The empty stack: runs the call as it is.
impl Layer for () {
    fn wrap<T: Send>(
        &self,
        _call: Call,
        next: impl Future<Output = ExoResult<T>> + Send,
    ) -> impl Future<Output = ExoResult<T>> + Send {
        next
    }
}

/// Two layers: the first wraps the second.
impl<Outer: Layer, Inner: Layer> Layer for (Outer, Inner) {
    fn wrap<T: Send>(
        &self,
        call: Call,
        next: impl Future<Output = ExoResult<T>> + Send,
    ) -> impl Future<Output = ExoResult<T>> + Send {
        self.0.wrap(call, self.1.wrap(call, next))
    }

    fn refusing(&self, call: Call) -> Option<crate::ExoError> {
        self.0.refusing(call).or_else(|| self.1.refusing(call))
    }

    async fn wrap_repeatable<T: Send, F, Fut>(&self, call: Call, attempt: F) -> ExoResult<T>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = ExoResult<T>> + Send,
    {
        let (inner, attempt) = (&self.1, &attempt);
        self.0.wrap_repeatable(call, move || inner.wrap_repeatable(call, attempt)).await
    }
}

/// Three layers, outermost first.
impl<A: Layer, B: Layer, C: Layer> Layer for (A, B, C) {
    fn wrap<T: Send>(
        &self,
        call: Call,
        next: impl Future<Output = ExoResult<T>> + Send,
    ) -> impl Future<Output = ExoResult<T>> + Send {
        self.0.wrap(call, self.1.wrap(call, self.2.wrap(call, next)))
    }

    fn refusing(&self, call: Call) -> Option<crate::ExoError> {
        self.0.refusing(call).or_else(|| self.1.refusing(call)).or_else(|| self.2.refusing(call))
    }

    async fn wrap_repeatable<T: Send, F, Fut>(&self, call: Call, attempt: F) -> ExoResult<T>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = ExoResult<T>> + Send,
    {
        let (b, c, attempt) = (&self.1, &self.2, &attempt);
        self.0
            .wrap_repeatable(call, move || b.wrap_repeatable(call, move || c.wrap_repeatable(call, attempt)))
            .await
    }
}

/// Four layers, outermost first.
impl<A: Layer, B: Layer, C: Layer, D: Layer> Layer for (A, B, C, D) {
    fn wrap<T: Send>(
        &self,
        call: Call,
        next: impl Future<Output = ExoResult<T>> + Send,
    ) -> impl Future<Output = ExoResult<T>> + Send {
        self.0.wrap(call, self.1.wrap(call, self.2.wrap(call, self.3.wrap(call, next))))
    }

    fn refusing(&self, call: Call) -> Option<crate::ExoError> {
        [self.0.refusing(call), self.1.refusing(call), self.2.refusing(call), self.3.refusing(call)]
            .into_iter()
            .flatten()
            .next()
    }

    async fn wrap_repeatable<T: Send, F, Fut>(&self, call: Call, attempt: F) -> ExoResult<T>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = ExoResult<T>> + Send,
    {
        let (b, c, d, attempt) = (&self.1, &self.2, &self.3, &attempt);
        let inner = move || {
            b.wrap_repeatable(call, move || c.wrap_repeatable(call, move || d.wrap_repeatable(call, attempt)))
        };
        self.0.wrap_repeatable(call, inner).await
    }
}

/// Five layers, outermost first.
impl<A: Layer, B: Layer, C: Layer, D: Layer, E: Layer> Layer for (A, B, C, D, E) {
    fn wrap<T: Send>(
        &self,
        call: Call,
        next: impl Future<Output = ExoResult<T>> + Send,
    ) -> impl Future<Output = ExoResult<T>> + Send {
        self.0.wrap(call, self.1.wrap(call, self.2.wrap(call, self.3.wrap(call, self.4.wrap(call, next)))))
    }

    fn refusing(&self, call: Call) -> Option<crate::ExoError> {
        [
            self.0.refusing(call),
            self.1.refusing(call),
            self.2.refusing(call),
            self.3.refusing(call),
            self.4.refusing(call),
        ]
        .into_iter()
        .flatten()
        .next()
    }

    async fn wrap_repeatable<T: Send, F, Fut>(&self, call: Call, attempt: F) -> ExoResult<T>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = ExoResult<T>> + Send,
    {
        let (b, c, d, e, attempt) = (&self.1, &self.2, &self.3, &self.4, &attempt);
        let inner = move || {
            b.wrap_repeatable(call, move || {
                c.wrap_repeatable(call, move || {
                    d.wrap_repeatable(call, move || e.wrap_repeatable(call, attempt))
                })
            })
        };
        self.0.wrap_repeatable(call, inner).await
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use exo_proto::common::v1::ErrorReason;

    use super::*;
    use crate::{ExoError, metrics::Metrics};

    fn stack(metrics: &Arc<Metrics>) -> (Observe, Timeout) {
        (Observe::new(metrics.clone()), Timeout::new(Duration::from_millis(30)))
    }

    async fn sleep_then_ok(ms: u64) -> ExoResult<u32> {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(7)
    }

    #[tokio::test]
    async fn the_timeout_inside_the_observation_is_counted_as_timeout() {
        let metrics = Arc::new(Metrics::new());
        let call = Call::new("queue", "receive", "memory");
        let err = stack(&metrics).wrap(call, sleep_then_ok(500)).await.unwrap_err();
        assert_eq!(err.reason, ErrorReason::Timeout);
        assert!(err.retryable);
        assert_eq!(err.backend, "memory", "errors are stamped with the backend");
        let text = metrics.render();
        assert!(
            text.contains(
                r#"exo_requests_total{service="queue",op="receive",backend="memory",outcome="TIMEOUT"} 1"#
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn extra_time_and_untimed_calls_outlast_the_limit() {
        let metrics = Arc::new(Metrics::new());
        let waiting = Call::new("queue", "receive", "memory").waiting(Duration::from_millis(500));
        assert_eq!(stack(&metrics).wrap(waiting, sleep_then_ok(60)).await.unwrap(), 7);
        let untimed = Call::new("object", "put", "fs").untimed().not_idempotent();
        assert!(!untimed.idempotent);
        assert_eq!(stack(&metrics).wrap(untimed, sleep_then_ok(60)).await.unwrap(), 7);
        let text = metrics.render();
        assert!(text.contains(r#"op="put",backend="fs",outcome="ok"} 1"#), "{text}");
    }

    #[tokio::test]
    async fn the_standard_stack_retries_a_read_inside_one_observed_call_but_not_a_timed_out_one() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let metrics = Arc::new(Metrics::new());
        let server =
            crate::config::ServerConfig { request_timeout: Duration::from_millis(200), ..Default::default() };
        let stack = standard(&server, metrics.clone());
        let call = Call::new("kv", "get", "flaky");
        // A fast retryable failure, then an answer: one call observed, one retry counted.
        let tries = AtomicU32::new(0);
        let blip = || {
            let n = tries.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err(ExoError::new(ErrorReason::BackendUnavailable, "reset").retryable())
                } else {
                    Ok(n)
                }
            }
        };
        assert_eq!(stack.wrap_repeatable(call, blip).await.unwrap(), 1);
        let text = metrics.render();
        assert!(text.contains(r#"op="get",backend="flaky",outcome="ok"} 1"#), "one call observed: {text}");
        assert!(text.contains(r#"exo_retries_total{backend="flaky"} 1"#), "{text}");
        // A try that outlives the per-call timeout is cut, and not repeated: its time is spent.
        let tries = AtomicU32::new(0);
        let hang = || {
            tries.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<u32, ExoError>(0)
            }
        };
        let err = stack.wrap_repeatable(call, hang).await.unwrap_err();
        assert_eq!((err.reason, tries.load(Ordering::SeqCst)), (ErrorReason::Timeout, 1));
    }

    #[tokio::test]
    async fn the_callers_deadline_bounds_calls_and_retries() {
        use std::sync::atomic::{AtomicU32, Ordering};

        use crate::deadline::with_timeout;
        let metrics = Arc::new(Metrics::new());
        let server =
            crate::config::ServerConfig { request_timeout: Duration::from_secs(5), ..Default::default() };
        let stack = standard(&server, metrics.clone());
        // A deadline already passed: the call is not started at all (a send stores nothing).
        let started = AtomicU32::new(0);
        let send = Call::new("queue", "send", "memory").not_idempotent();
        let err = with_timeout(
            Duration::ZERO,
            stack.wrap(send, async {
                started.fetch_add(1, Ordering::SeqCst);
                Ok(1)
            }),
        )
        .await
        .unwrap_err();
        assert_eq!((err.reason, started.load(Ordering::SeqCst)), (ErrorReason::Timeout, 0));
        assert!(err.message.contains("caller's deadline"), "{}", err.message);
        // A slow call is cut at the caller's 100 ms, not the proxy's 5 s.
        let clock = std::time::Instant::now();
        let err = with_timeout(
            Duration::from_millis(100),
            stack.wrap(Call::new("kv", "get", "slow"), sleep_then_ok(3000)),
        )
        .await
        .unwrap_err();
        assert_eq!(err.reason, ErrorReason::Timeout);
        assert!(clock.elapsed() < Duration::from_millis(1000), "{:?}", clock.elapsed());
        // A read failing retryably is retried while the caller waits, and no longer.
        let tries = AtomicU32::new(0);
        // Each try takes 20 ms: the first ends at 20 ms, a second (if its back-off fits) is cut
        // at the deadline, and no third starts. With only the proxy's own 5 s, all 3 would run.
        let failing = || {
            tries.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Err::<u32, _>(ExoError::new(ErrorReason::BackendUnavailable, "reset").retryable())
            }
        };
        let clock = std::time::Instant::now();
        let err = with_timeout(
            Duration::from_millis(30),
            stack.wrap_repeatable(Call::new("kv", "get", "down"), failing),
        )
        .await
        .unwrap_err();
        assert!(err.retryable);
        assert!(clock.elapsed() < Duration::from_millis(500), "{:?}", clock.elapsed());
        assert!(tries.load(Ordering::SeqCst) <= 2, "{} tries", tries.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_rejection_keeps_its_reason_and_the_empty_stack_changes_nothing() {
        let metrics = Arc::new(Metrics::new());
        let call = Call::new("kv", "get", "embedded");
        let missing = || async { Err::<u32, _>(ExoError::new(ErrorReason::KeyNotFound, "no such key")) };
        let err = stack(&metrics).wrap(call, missing()).await.unwrap_err();
        assert_eq!(err.reason, ErrorReason::KeyNotFound);
        assert!(metrics.render().contains(r#"outcome="KEY_NOT_FOUND"} 1"#));
        assert_eq!(().wrap(call, sleep_then_ok(0)).await.unwrap(), 7);
    }
}
