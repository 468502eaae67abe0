//! Cross-cutting behaviour written once and wrapped around any object backend.

mod layered;

pub use layered::Layered;
