//! Cross-cutting behaviour written once and wrapped around any object backend.

mod failover;
mod layered;

pub use failover::{FailoverConfig, FailoverObjects};
pub use layered::Layered;
