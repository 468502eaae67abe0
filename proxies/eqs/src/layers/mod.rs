//! Cross-cutting behaviour written once and wrapped around any backend.

mod instrumented;
mod timeout;

pub use instrumented::Instrumented;
pub use timeout::Timeout;
