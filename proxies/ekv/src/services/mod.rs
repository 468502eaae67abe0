//! Key-value backends, one module each.

pub mod embedded;
pub mod memory;
