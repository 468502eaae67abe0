//! Observation: each call counted in flight, its latency and outcome recorded per service,
//! operation and backend, failures logged, and errors stamped with the backend's name.

use std::{future::Future, sync::Arc, time::Instant};

use tracing::Instrument;

use super::{Call, Layer};
use crate::{
    ExoResult,
    metrics::{MemberLabels, Metrics, OpLabels},
};

/// Records every call in `metrics`.
#[derive(Debug, Clone)]
pub struct Observe {
    metrics: Arc<Metrics>,
}

impl Observe {
    /// Observation into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl Layer for Observe {
    fn wrap<T: Send>(
        &self,
        call: Call,
        next: impl Future<Output = ExoResult<T>> + Send,
    ) -> impl Future<Output = ExoResult<T>> + Send {
        let metrics = &self.metrics;
        let span = crate::traces::backend_span(call.service, call.op, call.backend);
        async move {
            let _in_flight = metrics.start();
            let started = Instant::now();
            let Call { service, op, backend, .. } = call;
            let result = next.await.map_err(|err| err.with_backend(backend));
            let outcome = match &result {
                Ok(_) => "ok",
                Err(err) => {
                    if err.grpc_code() == tonic::Code::Internal || err.retryable {
                        tracing::warn!(service, op, backend, error = %err, "backend call failed");
                    } else {
                        tracing::debug!(service, op, backend, error = %err, "request rejected");
                    }
                    err.reason.as_str_name()
                }
            };
            metrics.observe(&OpLabels { service, op, backend, outcome }, started.elapsed());
            result
        }
        .instrument(span)
    }
}

/// Records every call to one member of a failover chain, labelled with its place in the chain
/// (`exo_member_calls_total`, `exo_member_call_duration_seconds`). The chain's own [`Observe`]
/// records the request as a whole and logs its failures.
#[derive(Debug, Clone)]
pub struct ObserveMember {
    metrics: Arc<Metrics>,
    member: u32,
}

impl ObserveMember {
    /// Observation of member `index` into `metrics`.
    pub fn new(metrics: Arc<Metrics>, index: usize) -> Self {
        Self { metrics, member: u32::try_from(index).unwrap_or(u32::MAX) }
    }
}

impl ObserveMember {
    fn record(&self, call: Call, outcome: &'static str, started: Instant) {
        let Call { service, op, backend, .. } = call;
        let labels = MemberLabels { service, op, backend, member: self.member, outcome };
        self.metrics.observe_member(&labels, started.elapsed());
    }
}

/// Records a member call that was cut before it answered (the chain's member deadline, or the
/// request's own) as a timeout.
struct Unanswered<'a> {
    layer: &'a ObserveMember,
    call: Call,
    started: Instant,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        self.layer.record(self.call, "TIMEOUT", self.started);
    }
}

impl Layer for ObserveMember {
    async fn wrap<T: Send>(
        &self,
        call: Call,
        next: impl Future<Output = ExoResult<T>> + Send,
    ) -> ExoResult<T> {
        let started = Instant::now();
        let pending = Unanswered { layer: self, call, started };
        let result = next.await.map_err(|err| err.with_backend(call.backend));
        std::mem::forget(pending);
        let outcome = match &result {
            Ok(_) => "ok",
            Err(err) => err.reason.as_str_name(),
        };
        self.record(call, outcome, started);
        result
    }
}
