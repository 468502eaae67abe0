//! Observation: each call counted in flight, its latency and outcome recorded per service,
//! operation and backend, failures logged, and errors stamped with the backend's name.

use std::{future::Future, sync::Arc, time::Instant};

use tracing::Instrument;

use super::{Call, Layer};
use crate::{
    ExoResult,
    metrics::{Metrics, OpLabels},
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
