//! Long polling for backends without it natively: wake waiting receivers when a message
//! arrives in their queue, and re-check on a short tick for messages that become visible by
//! the clock (delay or visibility timeout running out).

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use exo_proto::queue::v1 as pb;
use exo_proxy_core::ExoResult;
use tokio::{sync::Notify, time::Instant};

/// How often a waiting receive re-checks for messages made visible by the clock.
pub const CLOCK_TICK: Duration = Duration::from_millis(100);

/// Per-queue wake-ups for waiting receivers.
#[derive(Debug, Default)]
pub struct Wakeups {
    queues: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Wakeups {
    fn notify_handle(&self, queue: &str) -> Arc<Notify> {
        let mut queues = self.queues.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        queues.entry(queue.to_owned()).or_default().clone()
    }

    /// Wakes every receive waiting on `queue`.
    pub fn announce(&self, queue: &str) {
        let handle = {
            let queues = self.queues.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            queues.get(queue).cloned()
        };
        if let Some(handle) = handle {
            handle.notify_waiters();
        }
    }

    /// Runs `attempt` until it returns messages or `wait` has passed, sleeping between attempts
    /// until a message is announced or the clock tick passes; no attempt starts after the wait
    /// has run out unannounced.
    pub async fn wait_for<F, Fut>(
        &self,
        queue: &str,
        wait: Duration,
        mut attempt: F,
    ) -> ExoResult<Vec<pb::Message>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ExoResult<Vec<pb::Message>>>,
    {
        if wait.is_zero() {
            return attempt().await;
        }
        let deadline = Instant::now() + wait;
        let notify = self.notify_handle(queue);
        loop {
            // Register interest before looking, so an arrival between the look and the sleep
            // still wakes us.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let messages = attempt().await?;
            let now = Instant::now();
            if !messages.is_empty() || now >= deadline {
                return Ok(messages);
            }
            let nap = (deadline - now).min(CLOCK_TICK);
            let announced = tokio::time::timeout(nap, notified).await.is_ok();
            // The wait ran out with nothing announced: answer now rather than after one more
            // look, which on a busy store could carry the answer past the caller's deadline.
            // A message made visible by the clock in that last tick goes to the next receive.
            if !announced && Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }
}
