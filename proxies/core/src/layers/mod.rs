//! Layers: cross-cutting behaviour written once, for every service, each with one job.
//!
//! Every backend call a proxy makes is an [`Operation`]: a value whose type states the call's
//! name and [`OpKind`] (read, write, conditional write, long wait, streamed) once. [`run`] turns
//! it into a [`Call`] and runs the backend's future through a [`Layer`] stack. Each service has
//! one wrapper around its backend trait (`Layered` in eqs, eos and ekv) whose methods are one
//! line each: `run(&self.layers, backend, op, |op| self.inner.method(op))`. The stack is
//! composed in one visible place per proxy, outermost first, as a tuple ([`Standard`]: observe,
//! shed load, circuit breaker, retry, timeout). A new layer is a module here; a new backend
//! operation needs no change in any layer.
//!
//! Layers are generic over the call's output and compose statically (no boxing, no dynamic
//! dispatch): the stack compiles to the same code as the calls written out by hand.

mod breaker;
mod layered;
mod observe;
mod retry;
mod shed;
mod timeout;

use std::{future::Future, time::Duration};

pub use breaker::{BreakerSettings, CircuitBreaker};
pub use layered::{Layered, Named};
pub use observe::{Observe, ObserveMember};
pub use retry::{Retry, RetrySettings};
pub use shed::ShedLoad;
pub use timeout::{Timeout, bounded};

use crate::ExoResult;

/// The stack every proxy runs its backend calls through, outermost first: metrics and logs (so
/// they see everything below, fast failures included), load shedding, the circuit breaker (which
/// sees one outcome per call, after its retries, and fails fast before any), retries of reads
/// within a budget, then the per-attempt timeout.
pub type Standard = (Observe, ShedLoad, CircuitBreaker, Retry, Timeout);

/// What the [`Standard`] stack is made from: a proxy's `server:` settings give it
/// (`ServerConfig::stack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackSettings {
    /// Backend calls running at once before more are shed (0: no limit).
    pub max_in_flight: usize,
    /// When the circuit breaker opens.
    pub breaker: BreakerSettings,
    /// How reads are retried.
    pub retry: RetrySettings,
    /// The per-call timeout.
    pub request_timeout: Duration,
}

/// The [`Standard`] stack made from `server`.
pub fn standard(server: StackSettings, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Standard {
    (
        Observe::new(metrics.clone()),
        ShedLoad::new(server.max_in_flight, metrics.clone()),
        CircuitBreaker::new(server.breaker, metrics.clone()),
        Retry::new(server.retry, server.request_timeout, metrics),
        Timeout::new(server.request_timeout),
    )
}

/// What an operation does, as far as layers care. Each operation states its kind once (see
/// [`Operation`]); the layers read it from the [`Call`]: the retry layer repeats only what
/// [`OpKind::repeatable`] allows, the timeout bounds each kind as it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// Changes nothing: safe to repeat after a retryable failure.
    Read,
    /// Changes state. Not repeated by the proxy: a failure may come after it took effect, and
    /// whether a repeat is harmless is the caller's to judge (the SDKs repeat idempotent ones).
    Write,
    /// A write guarded by a condition: a repeat of one that took effect would fail its own
    /// condition, so it is never repeated.
    ConditionalWrite,
    /// Waits up to the given time for something to arrive (a long poll) on top of the per-call
    /// timeout; it changes state when it answers (a receive hides messages), so it is not
    /// repeated.
    LongWait(Duration),
    /// A transfer whose length decides its duration (an object upload or copy): not under the
    /// per-call timeout (the stream is bounded elsewhere) and not repeated.
    Streamed,
}

impl OpKind {
    /// Whether the proxy may run the operation again after a retryable failure: the one place
    /// that decides it.
    pub const fn repeatable(self) -> bool {
        matches!(self, OpKind::Read)
    }

    /// Time the call may take beyond the per-call timeout.
    pub const fn extra_time(self) -> Duration {
        match self {
            OpKind::LongWait(wait) => wait,
            _ => Duration::ZERO,
        }
    }

    /// Whether the per-call timeout applies.
    pub const fn timed(self) -> bool {
        !matches!(self, OpKind::Streamed)
    }
}

/// One operation of a service's backend trait, as a value: its arguments are the fields of the
/// type, its static facts are stated here once (the name metrics, traces and logs use; its
/// kind). A service's `ops` module defines one type per trait method.
pub trait Operation: Clone + Send + Sync {
    /// The service (`queue`, `object`, `kv`), as metrics label it.
    const SERVICE: &'static str;
    /// The operation's name (`send`, `get`, …), as metrics label it.
    const NAME: &'static str;

    /// The name of this call: [`Self::NAME`] unless the arguments refine it (a send of several
    /// messages is `send_batch`).
    fn name(&self) -> &'static str {
        Self::NAME
    }

    /// What the call does, for the layers; may depend on the arguments (a put with a condition is
    /// a [`OpKind::ConditionalWrite`]).
    fn kind(&self) -> OpKind;

    /// The call the layers see when `backend` serves this operation.
    fn call(&self, backend: &'static str) -> Call {
        Call { service: Self::SERVICE, op: self.name(), backend, kind: self.kind() }
    }
}

/// Declares a service's list of operations: an enum with one variant per operation type, its
/// names in order ([`Operation::NAME`]), e.g. for metrics descriptions and checks that names are
/// unique.
///
/// ```ignore
/// exo_proxy_core::operations!(pub enum KvOp { Get => Get<'static>, Put => Put<'static> });
/// ```
#[macro_export]
macro_rules! operations {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($variant:ident => $ty:ty),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $(#[doc = concat!("[`", stringify!($variant), "`]")] $variant),+
        }

        impl $name {
            /// Every operation, in the order of the backend trait.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The operation's name, as metrics and traces label it.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => <$ty as $crate::layers::Operation>::NAME),+
                }
            }
        }
    };
}

/// Runs `op` on a backend through `layers`: `serve` makes the backend's call from the operation.
/// A repeatable operation ([`OpKind::repeatable`]) is handed to the stack as one that can be made
/// again (each try gets a copy of the arguments); any other runs once.
pub async fn run<L, O, T, F, Fut>(layers: &L, backend: &'static str, op: O, serve: F) -> ExoResult<T>
where
    L: Layer,
    O: Operation,
    T: Send,
    F: Fn(O) -> Fut + Send + Sync,
    Fut: Future<Output = ExoResult<T>> + Send,
{
    let call = op.call(backend);
    if call.kind.repeatable() {
        layers.wrap_repeatable(call, || serve(op.clone())).await
    } else {
        layers.wrap(call, serve(op)).await
    }
}

/// The stack around a failover chain: [`Standard`] without a circuit breaker. Each member has
/// its own (the chain sets a member that fails aside for its back-off and probes it back), so a
/// slow or dead member never stops calls the others can serve; the chain answers at once when
/// every member is set aside.
pub fn around_chain(server: StackSettings, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Standard {
    let no_breaker = BreakerSettings { failures: 0, ..server.breaker };
    (
        Observe::new(metrics.clone()),
        ShedLoad::new(server.max_in_flight, metrics.clone()),
        CircuitBreaker::new(no_breaker, metrics.clone()),
        Retry::new(server.retry, server.request_timeout, metrics),
        Timeout::new(server.request_timeout),
    )
}

/// The stack for `backend`: [`around_chain`] for a failover chain (named
/// [`crate::failover::CHAIN`]), [`standard`] for any other.
pub fn for_backend(
    backend: &'static str,
    server: StackSettings,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> Standard {
    if backend == crate::failover::CHAIN { around_chain(server, metrics) } else { standard(server, metrics) }
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
    /// What the operation does: whether it may be repeated, how long it may take.
    pub kind: OpKind,
}

impl Call {
    /// A read (`service`'s `op` on `backend`): readiness probes and tests make these.
    pub const fn new(service: &'static str, op: &'static str, backend: &'static str) -> Self {
        Self { service, op, backend, kind: OpKind::Read }
    }

    /// The same call, of `kind`.
    pub const fn of_kind(mut self, kind: OpKind) -> Self {
        self.kind = kind;
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

    /// The default settings with `request_timeout`.
    fn settings(request_timeout: Duration) -> StackSettings {
        StackSettings {
            max_in_flight: 1024,
            breaker: BreakerSettings::default(),
            retry: RetrySettings::default(),
            request_timeout,
        }
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
        let waiting =
            Call::new("queue", "receive", "memory").of_kind(OpKind::LongWait(Duration::from_millis(500)));
        assert_eq!(stack(&metrics).wrap(waiting, sleep_then_ok(60)).await.unwrap(), 7);
        let untimed = Call::new("object", "put", "fs").of_kind(OpKind::Streamed);
        assert!(!untimed.kind.repeatable());
        assert_eq!(stack(&metrics).wrap(untimed, sleep_then_ok(60)).await.unwrap(), 7);
        let text = metrics.render();
        assert!(text.contains(r#"op="put",backend="fs",outcome="ok"} 1"#), "{text}");
    }

    #[tokio::test]
    async fn the_standard_stack_retries_a_read_inside_one_observed_call_but_not_a_timed_out_one() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let metrics = Arc::new(Metrics::new());
        let stack = standard(settings(Duration::from_millis(200)), metrics.clone());
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
        let stack = standard(settings(Duration::from_secs(5)), metrics.clone());
        // A deadline already passed: the call is not started at all (a send stores nothing).
        let started = AtomicU32::new(0);
        let send = Call::new("queue", "send", "memory").of_kind(OpKind::Write);
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
