//! Cross-cutting behaviour written once and wrapped around any backend.

mod large_messages;
mod layered;

pub use large_messages::{LargeMessageQueue, LargeMessageSettings};
pub use layered::Layered;
