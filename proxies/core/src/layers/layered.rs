//! The one wrapper between a proxy's API and its backend, for every service: each operation runs
//! through the layer stack ([`super::run`]), and readiness answers at once while a layer refuses
//! calls. A service implements its backend trait for `Layered<dyn ItsTrait, L>`, one line per
//! operation.

use std::{future::Future, sync::Arc, time::Duration};

use super::{Call, Layer, Operation, bounded};
use crate::ExoResult;

/// What the stack needs to know of a service's backend trait object.
pub trait Named {
    /// The service (`queue`, `object`, `kv`), as metrics label it.
    const SERVICE: &'static str;
    /// The backend's name (`embedded`, `sqs`, …) now.
    fn backend_name(&self) -> &'static str;
}

/// A backend behind a layer stack.
pub struct Layered<B: ?Sized, L> {
    inner: Arc<B>,
    layers: L,
    /// Bounds the readiness probe, which is not a request and is not counted.
    ready_timeout: Duration,
}

impl<B: ?Sized + Named + Send + Sync, L: Layer> Layered<B, L> {
    /// Runs every call to `inner` through `layers`.
    pub fn new(inner: Arc<B>, layers: L, ready_timeout: Duration) -> Self {
        Self { inner, layers, ready_timeout }
    }

    /// The backend inside.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// Runs `op` through the stack; `serve` makes the backend's call from it.
    pub async fn run<O: Operation, T: Send, Fut>(
        &self,
        op: O,
        serve: impl Fn(O) -> Fut + Send + Sync,
    ) -> ExoResult<T>
    where
        Fut: Future<Output = ExoResult<T>> + Send,
    {
        super::run(&self.layers, self.inner.backend_name(), op, serve).await
    }

    /// Runs an operation that can be made only once (its body is a stream, say): not repeated,
    /// whatever its kind.
    pub async fn run_once<O: Operation, T: Send>(
        &self,
        op: &O,
        call: impl Future<Output = ExoResult<T>> + Send,
    ) -> ExoResult<T> {
        self.layers.wrap(op.call(self.inner.backend_name()), call).await
    }

    /// The backend's readiness (`probe`), within the readiness bound; an open breaker answers
    /// at once (the backend is known to be down).
    pub async fn probe_ready(&self, probe: impl Future<Output = ExoResult<()>> + Send) -> ExoResult<()> {
        if let Some(refused) = self.layers.refusing(Call::new(B::SERVICE, "ready", self.inner.backend_name()))
        {
            return Err(refused);
        }
        bounded(self.ready_timeout, probe).await
    }
}
