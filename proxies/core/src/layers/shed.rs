//! Load shedding: a bound on the backend calls running at once.

use std::{future::Future, sync::Arc};

use exo_proto::common::v1::ErrorReason;
use tokio::sync::Semaphore;

use super::{Call, Layer};
use crate::{ExoError, ExoResult, metrics::Metrics};

/// Refuses a call at once (THROTTLED, retryable) when `max_in_flight` calls are already running,
/// so a slow backend cannot pile up unbounded work (memory, connections, sockets) in the proxy:
/// the app backs off and retries instead. Long polls (calls that may wait) are not counted: they
/// hold no backend resource while they wait, and counting them would let idle consumers starve
/// the producers.
#[derive(Debug, Clone)]
pub struct ShedLoad {
    permits: Arc<Semaphore>,
    limit: usize,
    metrics: Arc<Metrics>,
}

impl ShedLoad {
    /// At most `max_in_flight` calls at once (0: no limit).
    pub fn new(max_in_flight: usize, metrics: Arc<Metrics>) -> Self {
        let limit = if max_in_flight == 0 { Semaphore::MAX_PERMITS } else { max_in_flight };
        Self { permits: Arc::new(Semaphore::new(limit)), limit, metrics }
    }
}

impl Layer for ShedLoad {
    fn wrap<T: Send>(
        &self,
        call: Call,
        next: impl Future<Output = ExoResult<T>> + Send,
    ) -> impl Future<Output = ExoResult<T>> + Send {
        let permit = if call.kind.extra_time().is_zero() {
            Some(self.permits.clone().try_acquire_owned())
        } else {
            None
        };
        async move {
            let _permit = match permit {
                Some(Ok(permit)) => Some(permit),
                Some(Err(_)) => {
                    self.metrics.shed(call.backend);
                    return Err(ExoError::new(
                        ErrorReason::Throttled,
                        format!(
                            "{} backend calls are running, the most this proxy takes at once: retry after a short back-off",
                            self.limit
                        ),
                    )
                    .retryable()
                    .with_backend(call.backend)
                    .with_retry_after(super::breaker::SHORT_WAIT));
                }
                None => None,
            };
            next.await
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn calls_beyond_the_limit_are_throttled_and_long_polls_are_not_counted() {
        let metrics = Arc::new(Metrics::new());
        let shed = ShedLoad::new(2, metrics.clone());
        let call = Call::new("kv", "get", "redis");
        let (release, held) = tokio::sync::watch::channel(false);
        let slow = |mut held: tokio::sync::watch::Receiver<bool>| async move {
            let _ = held.wait_for(|r| *r).await;
            Ok::<u32, ExoError>(1)
        };
        let a = tokio::spawn({
            let (shed, held) = (shed.clone(), held.clone());
            async move { shed.wrap(call, slow(held)).await }
        });
        let b = tokio::spawn({
            let (shed, held) = (shed.clone(), held.clone());
            async move { shed.wrap(call, slow(held)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let err = shed.wrap(call, async { Ok::<u32, ExoError>(1) }).await.unwrap_err();
        assert_eq!(err.reason, ErrorReason::Throttled);
        assert!(err.retryable);
        assert_eq!(err.retry_after, Some(Duration::from_millis(100)), "a retry hint");
        let poll = Call::new("queue", "receive", "redis")
            .of_kind(crate::layers::OpKind::LongWait(Duration::from_secs(20)));
        assert_eq!(shed.wrap(poll, async { Ok::<u32, ExoError>(2) }).await.unwrap(), 2, "long polls pass");
        release.send(true).unwrap();
        assert_eq!(a.await.unwrap().unwrap() + b.await.unwrap().unwrap(), 2);
        assert_eq!(shed.wrap(call, async { Ok::<u32, ExoError>(3) }).await.unwrap(), 3, "room again");
        assert!(metrics.render().contains(r#"exo_shed_total{backend="redis"} 1"#));
    }
}
