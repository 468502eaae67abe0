//! Key-value backends, one module each.

pub mod azure_table;
pub mod dynamodb;
pub mod embedded;
pub mod memory;
