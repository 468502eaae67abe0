//! Cross-cutting behaviour written once and wrapped around any backend.

mod failover;
mod large_messages;
mod layered;

pub use failover::{FailoverConfig, FailoverQueue, observe_members};
pub use large_messages::{LargeMessageQueue, LargeMessageSettings};
pub use layered::Layered;
