//! Cross-cutting behaviour written once and wrapped around any backend.

mod failover;
mod layered;

pub use failover::{FailoverConfig, FailoverQueue};
pub use layered::Layered;
