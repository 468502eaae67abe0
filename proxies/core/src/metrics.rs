//! Prometheus metrics shared by every proxy: one counter and one latency histogram per
//! (service, operation, backend, outcome), where outcome is `ok` or an error reason.

use std::{fmt::Write as _, sync::Arc, time::Duration};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Labels of one operation sample.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// `queue`, `object` or `kv`.
    pub service: &'static str,
    /// The operation, e.g. `send`.
    pub op: &'static str,
    /// The backend's name.
    pub backend: &'static str,
    /// `ok` or the error reason, e.g. `QUEUE_NOT_FOUND`.
    pub outcome: &'static str,
}

/// Labels of one call to one member of a failover chain.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberLabels {
    /// `queue`, `object` or `kv`.
    pub service: &'static str,
    /// The operation, e.g. `send`.
    pub op: &'static str,
    /// The member's own backend, e.g. `sqs`.
    pub backend: &'static str,
    /// The member's place in the chain: `0` is the primary.
    pub member: u32,
    /// `ok` or the error reason.
    pub outcome: &'static str,
}

/// Labels of a per-backend sample (breaker, shedding).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// The backend's name.
    pub backend: &'static str,
}

/// Latency buckets from 25 µs to 30 s: a local backend answers in microseconds, a long poll in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0, 21.0, 30.0,
];

/// The metrics of one proxy process.
pub struct Metrics {
    /// Behind a lock so families can be added to shared metrics (rarely: at start).
    registry: std::sync::Mutex<Registry>,
    requests: Family<OpLabels, Counter>,
    latency: Family<OpLabels, Histogram>,
    in_flight: Gauge,
    breaker_open: Family<BackendLabels, Gauge>,
    breaker_rejected: Family<BackendLabels, Counter>,
    shed: Family<BackendLabels, Counter>,
    retries: Family<BackendLabels, Counter>,
    retry_budget_exhausted: Family<BackendLabels, Counter>,
    member_calls: Family<MemberLabels, Counter>,
    member_latency: Family<MemberLabels, Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with the ExoFlow metric families.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("exo");
        let requests = Family::<OpLabels, Counter>::default();
        let latency = Family::<OpLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(LATENCY_BUCKETS.iter().copied())) as fn() -> Histogram,
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests",
            "Backend operations by service, op, backend and outcome",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Backend operation latency by service, op, backend and outcome",
            latency.clone(),
        );
        registry.register("in_flight_requests", "Backend operations currently running", in_flight.clone());
        let breaker_open = Family::<BackendLabels, Gauge>::default();
        registry.register(
            "breaker_open",
            "1 while the backend's circuit breaker is open or probing, 0 when closed",
            breaker_open.clone(),
        );
        let breaker_rejected = Family::<BackendLabels, Counter>::default();
        registry.register(
            "breaker_rejected",
            "Calls failed fast by an open circuit breaker",
            breaker_rejected.clone(),
        );
        let shed = Family::<BackendLabels, Counter>::default();
        registry.register(
            "shed",
            "Calls refused (THROTTLED) because max-in-flight calls were running",
            shed.clone(),
        );
        let retries = Family::<BackendLabels, Counter>::default();
        registry.register(
            "retries",
            "Backend calls repeated after a retryable failure (reads only)",
            retries.clone(),
        );
        let retry_budget_exhausted = Family::<BackendLabels, Counter>::default();
        registry.register(
            "retry_budget_exhausted",
            "Retryable failures not retried because the retry budget was spent",
            retry_budget_exhausted.clone(),
        );
        let member_calls = Family::<MemberLabels, Counter>::default();
        registry.register(
            "member_calls",
            "Calls to each member of a failover chain by service, op, backend, member and outcome",
            member_calls.clone(),
        );
        let member_latency = Family::<MemberLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(LATENCY_BUCKETS.iter().copied())) as fn() -> Histogram,
        );
        registry.register(
            "member_call_duration_seconds",
            "Latency of calls to each member of a failover chain",
            member_latency.clone(),
        );
        Self {
            registry: std::sync::Mutex::new(registry),
            member_calls,
            member_latency,
            requests,
            latency,
            in_flight,
            breaker_open,
            breaker_rejected,
            shed,
            retries,
            retry_budget_exhausted,
        }
    }

    /// Registers a gauge family (e.g. a backend's own state, sampled periodically). Its name gets
    /// the `exo_` prefix.
    pub fn gauge_family(&self, name: &str, help: &str) -> Family<Vec<(String, String)>, Gauge> {
        let family = Family::<Vec<(String, String)>, Gauge>::default();
        self.registry.lock().unwrap_or_else(|e| e.into_inner()).register(name, help, family.clone());
        family
    }

    /// Shared handle.
    pub fn shared() -> Arc<Self> {
        Arc::new(Self::new())
    }

    /// Records one finished operation.
    pub fn observe(&self, labels: &OpLabels, elapsed: Duration) {
        self.requests.get_or_create(labels).inc();
        self.latency.get_or_create(labels).observe(elapsed.as_secs_f64());
    }

    /// Records one finished call to a failover chain's member.
    pub fn observe_member(&self, labels: &MemberLabels, elapsed: Duration) {
        self.member_calls.get_or_create(labels).inc();
        self.member_latency.get_or_create(labels).observe(elapsed.as_secs_f64());
    }

    /// Marks an operation as started; the guard marks it finished when dropped.
    pub fn start(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Records the state a backend's circuit breaker moved to (`closed`, `open`, `half-open`).
    pub fn breaker_state(&self, backend: &'static str, state: &str) {
        self.breaker_open.get_or_create(&BackendLabels { backend }).set(i64::from(state != "closed"));
    }

    /// Counts a call an open breaker failed fast.
    pub fn breaker_rejected(&self, backend: &'static str) {
        self.breaker_rejected.get_or_create(&BackendLabels { backend }).inc();
    }

    /// Counts a call shed for load.
    pub fn shed(&self, backend: &'static str) {
        self.shed.get_or_create(&BackendLabels { backend }).inc();
    }

    /// Counts a retry.
    pub fn retried(&self, backend: &'static str) {
        self.retries.get_or_create(&BackendLabels { backend }).inc();
    }

    /// Counts a retryable failure the budget did not allow to retry.
    pub fn retry_budget_exhausted(&self, backend: &'static str) {
        self.retry_budget_exhausted.get_or_create(&BackendLabels { backend }).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        if encode(&mut out, &self.registry.lock().unwrap_or_else(|e| e.into_inner())).is_err() {
            let _ = writeln!(out, "# metrics encoding failed");
        }
        out
    }
}

/// Decrements the in-flight gauge on drop (also when the request future is cancelled).
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observed_operations_appear_in_exposition() {
        let metrics = Metrics::new();
        let labels = OpLabels { service: "queue", op: "send", backend: "memory", outcome: "ok" };
        metrics.observe(&labels, Duration::from_micros(40));
        metrics.observe(&labels, Duration::from_micros(60));
        let text = metrics.render();
        assert!(
            text.contains(r#"exo_requests_total{service="queue",op="send",backend="memory",outcome="ok"} 2"#),
            "{text}"
        );
        assert!(text.contains("exo_request_duration_seconds_bucket"), "{text}");
    }
}
