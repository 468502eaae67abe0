//! The bodies of the cross-cutting layers, shared by every service's layer types: each service
//! wraps its own backend trait, and every method delegates here, so the behaviour is written once.

use std::{future::Future, time::Duration, time::Instant};

use exo_proto::common::v1::ErrorReason;

use crate::{
    ExoError, ExoResult,
    metrics::{Metrics, OpLabels},
};

/// Runs one backend call: counts it in flight, records latency and outcome, logs failures, and
/// stamps errors with the backend's name.
pub async fn observe<T>(
    metrics: &Metrics,
    service: &'static str,
    op: &'static str,
    backend: &'static str,
    call: impl Future<Output = ExoResult<T>>,
) -> ExoResult<T> {
    let _in_flight = metrics.start();
    let started = Instant::now();
    let result = call.await.map_err(|err| err.with_backend(backend));
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

/// Fails a call with TIMEOUT (retryable) once it runs longer than `limit`.
pub async fn bounded<T>(limit: Duration, call: impl Future<Output = ExoResult<T>>) -> ExoResult<T> {
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(ExoError::new(ErrorReason::Timeout, format!("backend did not answer within {limit:?}")))
    })
}
