//! Cross-cutting behaviour written once and wrapped around any backend.

mod failover;
mod instrumented;
mod timeout;

pub use failover::FailoverQueue;
pub use instrumented::Instrumented;
pub use timeout::Timeout;
