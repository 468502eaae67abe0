//! Key-value backends, one module each.

pub mod dynamodb;
pub mod embedded;
pub mod memory;
