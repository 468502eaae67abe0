//! Cross-cutting behaviour written once and wrapped around any key-value backend.

mod failover;
mod layered;

pub use failover::{FailoverConfig, FailoverKv};
pub use layered::Layered;
