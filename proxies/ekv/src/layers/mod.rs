//! Cross-cutting behaviour written once and wrapped around any key-value backend.

mod layered;

pub use layered::Layered;
