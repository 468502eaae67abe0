//! The circuit breaker: a backend that keeps failing is given a rest instead of more calls.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use exo_proto::common::v1::ErrorReason;
use serde::{Deserialize, Serialize};

use super::{Call, Layer};
use crate::{ExoError, ExoResult, metrics::Metrics};

/// When the breaker opens and for how long (`server.breaker` in a proxy's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BreakerSettings {
    /// Consecutive failures (BACKEND_UNAVAILABLE or TIMEOUT) that open it; 0 turns it off.
    #[serde(default = "default_failures")]
    pub failures: u32,
    /// How long it stays open before one probe call may try the backend again.
    #[serde(default = "default_open_for", with = "humantime_serde")]
    pub open_for: Duration,
}

fn default_failures() -> u32 {
    5
}

fn default_open_for() -> Duration {
    Duration::from_secs(2)
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self { failures: default_failures(), open_for: default_open_for() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Calls pass; `failures` in a row so far.
    Closed { failures: u32 },
    /// Calls fail fast until `until`.
    Open { until: Instant },
    /// One probe is out; the others fail fast until it answers.
    HalfOpen,
}

/// Fails calls fast (BACKEND_UNAVAILABLE, retryable, with the time to wait) once the backend
/// has failed `failures` calls in a row, for `open_for`; then lets one probe through, and
/// closes again when it succeeds. Only failures of the backend itself count (BACKEND_UNAVAILABLE,
/// TIMEOUT within the proxy's own limit): a missing queue or a failed condition is the backend
/// working, and a call its caller's deadline cut counts neither way. An open breaker makes
/// an app's retries and a failover chain move on at once instead of waiting on a dead backend.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    settings: BreakerSettings,
    state: Arc<Mutex<State>>,
    metrics: Arc<Metrics>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(settings: BreakerSettings, metrics: Arc<Metrics>) -> Self {
        Self { settings, state: Arc::new(Mutex::new(State::Closed { failures: 0 })), metrics }
    }

    /// Whether `call` may go to the backend now; the error to fail it with if not.
    fn admit(&self, call: Call) -> Result<bool, ExoError> {
        if self.settings.failures == 0 {
            return Ok(false);
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match *state {
            State::Closed { .. } => Ok(false),
            State::Open { until } if Instant::now() >= until => {
                *state = State::HalfOpen;
                self.metrics.breaker_state(call.backend, "half-open");
                Ok(true)
            }
            State::Open { until } => Err(self.fast_fail(call, Some(until))),
            State::HalfOpen => Err(self.fast_fail(call, None)),
        }
    }

    fn fast_fail(&self, call: Call, until: Option<Instant>) -> ExoError {
        self.metrics.breaker_rejected(call.backend);
        self.open_error(call, until)
    }

    /// The error of a call refused while the breaker rests until `until` (or a probe is out).
    fn open_error(&self, call: Call, until: Option<Instant>) -> ExoError {
        let wait = until.map_or(Duration::ZERO, |u| u.saturating_duration_since(Instant::now()));
        ExoError::new(
            ErrorReason::BackendUnavailable,
            format!(
                "circuit open: backend '{}' failed {} calls in a row; it is tried again in {} ms",
                call.backend,
                self.settings.failures,
                wait.as_millis()
            ),
        )
        .retryable()
        .with_backend(call.backend)
        // Half-open: the probe is out; its answer comes within a call's time, so a short wait.
        .with_retry_after(if until.is_some() { wait } else { SHORT_WAIT })
    }

    fn record(&self, call: Call, probe: bool, failed: Option<bool>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(failed) = failed else {
            // The outcome says nothing about the backend: the count stays; a probe's turn passes
            // to the next call.
            if probe && *state == State::HalfOpen {
                *state = State::Open { until: Instant::now() };
            }
            return;
        };
        let next = match (*state, failed) {
            (_, false) => State::Closed { failures: 0 },
            (State::Closed { failures }, true) if failures + 1 < self.settings.failures => {
                State::Closed { failures: failures + 1 }
            }
            // The threshold reached, or the probe failed: rest again.
            (State::Closed { .. }, true) | (State::HalfOpen, true) => {
                State::Open { until: Instant::now() + self.settings.open_for }
            }
            // A call admitted before the breaker opened fails late: it is open already.
            (open @ State::Open { .. }, true) => open,
        };
        if probe || std::mem::discriminant(&next) != std::mem::discriminant(&*state) {
            let name = match next {
                State::Closed { .. } => "closed",
                State::Open { .. } => "open",
                State::HalfOpen => "half-open",
            };
            self.metrics.breaker_state(call.backend, name);
        }
        *state = next;
    }
}

/// A probe in flight (`Some` until it is answered): dropped unanswered, it lets the next call
/// probe.
struct ProbeOut<'a>(Option<&'a CircuitBreaker>);

impl Drop for ProbeOut<'_> {
    fn drop(&mut self) {
        if let Some(breaker) = self.0 {
            let mut state = breaker.state.lock().unwrap_or_else(|e| e.into_inner());
            if *state == State::HalfOpen {
                *state = State::Open { until: Instant::now() };
            }
        }
    }
}

/// The retry hint while a probe is out, or when load is shed: a moment, not a rest.
pub(crate) const SHORT_WAIT: Duration = Duration::from_millis(100);

/// Whether a call's outcome tells the backend failed (`Some(true)`), answered (`Some(false)`),
/// or nothing about it (`None`): a call cut by its caller's own deadline (`grpc-timeout`,
/// `x-exo-timeout-ms`) ended because one caller would not wait, which must not open the breaker
/// for every other caller; the proxy's own `request-timeout` does count.
fn outcome<T>(result: &ExoResult<T>) -> Option<bool> {
    match result {
        Ok(_) => Some(false),
        Err(err) if err.reason == ErrorReason::Timeout && crate::deadline::passed() => None,
        Err(err) => Some(matches!(err.reason, ErrorReason::BackendUnavailable | ErrorReason::Timeout)),
    }
}

impl Layer for CircuitBreaker {
    fn refusing(&self, call: Call) -> Option<ExoError> {
        if self.settings.failures == 0 {
            return None;
        }
        match *self.state.lock().unwrap_or_else(|e| e.into_inner()) {
            State::Open { until } if Instant::now() < until => Some(self.open_error(call, Some(until))),
            _ => None,
        }
    }

    fn wrap<T: Send>(
        &self,
        call: Call,
        next: impl Future<Output = ExoResult<T>> + Send,
    ) -> impl Future<Output = ExoResult<T>> + Send {
        let admitted = self.admit(call);
        async move {
            let probe = admitted?;
            // A probe whose caller goes away (its future dropped) passes the turn on; without
            // this the breaker would stay half-open, refusing every call, for good.
            let mut out = ProbeOut(probe.then_some(self));
            let result = next.await;
            out.0 = None;
            if self.settings.failures > 0 {
                self.record(call, probe, outcome(&result));
            }
            result
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32, open_for_ms: u64) -> (CircuitBreaker, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let settings = BreakerSettings { failures, open_for: Duration::from_millis(open_for_ms) };
        (CircuitBreaker::new(settings, metrics.clone()), metrics)
    }

    const CALL: Call = Call::new("queue", "send", "sqs");

    async fn down() -> ExoResult<u32> {
        Err(ExoError::new(ErrorReason::BackendUnavailable, "connection refused").retryable())
    }

    async fn missing() -> ExoResult<u32> {
        Err(ExoError::new(ErrorReason::QueueNotFound, "no such queue"))
    }

    async fn up() -> ExoResult<u32> {
        Ok(1)
    }

    #[tokio::test]
    async fn opens_after_consecutive_failures_fails_fast_then_probes_and_closes() {
        let (b, metrics) = breaker(3, 100);
        for _ in 0..3 {
            assert_eq!(b.wrap(CALL, down()).await.unwrap_err().message, "connection refused");
        }
        // Open: the backend is not called at all.
        let called = std::sync::atomic::AtomicBool::new(false);
        let err = b
            .wrap(CALL, async {
                called.store(true, std::sync::atomic::Ordering::SeqCst);
                up().await
            })
            .await
            .unwrap_err();
        assert!(!called.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(err.reason, ErrorReason::BackendUnavailable);
        assert!(err.retryable && err.message.contains("circuit open"), "{err:?}");
        let hint = err.retry_after.expect("an open breaker says when to come back");
        assert!(hint > Duration::from_millis(50) && hint <= Duration::from_millis(100), "{hint:?}");
        tokio::time::sleep(Duration::from_millis(120)).await;
        // Half-open: one probe goes through; it succeeds and the breaker closes.
        assert_eq!(b.wrap(CALL, up()).await.unwrap(), 1);
        assert_eq!(b.wrap(CALL, up()).await.unwrap(), 1);
        let text = metrics.render();
        assert!(text.contains(r#"exo_breaker_rejected_total{backend="sqs"} 1"#), "{text}");
        assert!(text.contains(r#"exo_breaker_open{backend="sqs"} 0"#), "{text}");
    }

    #[tokio::test]
    async fn a_failed_probe_opens_it_again_and_answers_are_not_failures() {
        let (b, _) = breaker(2, 50);
        // The backend answering "no such queue" is the backend working.
        for _ in 0..5 {
            assert_eq!(b.wrap(CALL, missing()).await.unwrap_err().reason, ErrorReason::QueueNotFound);
        }
        assert!(b.wrap(CALL, down()).await.is_err());
        assert_eq!(b.wrap(CALL, up()).await.unwrap(), 1, "a success resets the count");
        assert!(b.wrap(CALL, down()).await.is_err());
        assert!(b.wrap(CALL, down()).await.is_err());
        assert!(b.wrap(CALL, up()).await.unwrap_err().message.contains("circuit open"));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(b.wrap(CALL, down()).await.unwrap_err().message, "connection refused", "the probe");
        assert!(b.wrap(CALL, up()).await.unwrap_err().message.contains("circuit open"), "open again");
    }

    #[tokio::test]
    async fn calls_cut_by_their_callers_deadline_do_not_count() {
        use crate::{deadline::with_timeout, layers::Timeout};
        let (b, _) = breaker(2, 10_000);
        let stack = (b.clone(), Timeout::new(Duration::from_secs(5)));
        let slow = || async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok::<u32, ExoError>(1)
        };
        // Callers that will not wait (a deadline passed already, or shorter than the backend's
        // latency): each is answered TIMEOUT, and the healthy backend stays in service.
        for _ in 0..5 {
            let err = with_timeout(Duration::ZERO, stack.wrap(CALL, slow())).await.unwrap_err();
            assert_eq!(err.reason, ErrorReason::Timeout);
            let err = with_timeout(Duration::from_millis(20), stack.wrap(CALL, slow())).await.unwrap_err();
            assert_eq!(err.reason, ErrorReason::Timeout);
        }
        assert_eq!(stack.wrap(CALL, up()).await.unwrap(), 1, "a caller's deadline opened the breaker");
        // The proxy's own timeout does count: the backend did not answer in the time it has.
        let own = (b.clone(), Timeout::new(Duration::from_millis(20)));
        for _ in 0..2 {
            assert_eq!(own.wrap(CALL, slow()).await.unwrap_err().reason, ErrorReason::Timeout);
        }
        assert!(own.wrap(CALL, up()).await.unwrap_err().message.contains("circuit open"));
    }

    #[tokio::test]
    async fn a_probe_cut_by_its_caller_passes_the_turn_on() {
        use crate::deadline::with_timeout;
        let (b, _) = breaker(1, 30);
        assert!(b.wrap(CALL, down()).await.is_err());
        tokio::time::sleep(Duration::from_millis(40)).await;
        let cut = with_timeout(
            Duration::ZERO,
            b.wrap(CALL, async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Err::<u32, _>(ExoError::new(ErrorReason::Timeout, "the caller's deadline passed"))
            }),
        )
        .await;
        assert!(cut.is_err());
        // Neither closed by it nor stuck half-open: the next call is the probe.
        assert_eq!(b.wrap(CALL, up()).await.unwrap(), 1);
        assert_eq!(b.wrap(CALL, up()).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn an_open_breaker_says_so_without_a_call() {
        let (b, metrics) = breaker(1, 100);
        assert!(b.refusing(CALL).is_none());
        assert!(b.wrap(CALL, down()).await.is_err());
        let err = b.refusing(CALL).expect("open: calls are refused");
        assert_eq!(err.reason, ErrorReason::BackendUnavailable);
        assert!(err.retryable && err.message.contains("circuit open"), "{err:?}");
        assert!(
            !metrics.render().contains(r#"exo_breaker_rejected_total{backend="sqs"} 1"#),
            "asking is no refusal"
        );
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(b.refusing(CALL).is_none(), "its rest over, a probe may go");
    }

    #[tokio::test]
    async fn a_probe_whose_caller_goes_away_passes_the_turn_on() {
        let (b, _) = breaker(1, 30);
        assert!(b.wrap(CALL, down()).await.is_err());
        tokio::time::sleep(Duration::from_millis(40)).await;
        // The probe's caller disconnects: its future is dropped before the backend answers.
        let probe = b.wrap(CALL, async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            up().await
        });
        assert!(tokio::time::timeout(Duration::from_millis(20), probe).await.is_err());
        assert_eq!(b.wrap(CALL, up()).await.unwrap(), 1, "the breaker stayed half-open");
    }

    #[tokio::test]
    async fn zero_failures_turns_it_off() {
        let (b, _) = breaker(0, 50);
        for _ in 0..10 {
            assert_eq!(b.wrap(CALL, down()).await.unwrap_err().message, "connection refused");
        }
        assert_eq!(b.wrap(CALL, up()).await.unwrap(), 1);
    }
}
