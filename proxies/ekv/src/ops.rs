//! The key-value operations as values: one type per [`crate::backend::KeyValue`] method, holding
//! its arguments, with its name and kind stated once (metrics, traces and the retry layer read
//! them from here). A backend destructures what it needs; wrappers pass the value on untouched.

use exo_proxy_core::layers::{OpKind, Operation};

use crate::model::{Condition, TableName, Write};

macro_rules! kv_op {
    ($op:ident $(<$a:lifetime>)?, $name:literal, $kind:expr) => {
        impl$(<$a>)? Operation for $op$(<$a>)? {
            const SERVICE: &'static str = "kv";
            const NAME: &'static str = $name;
            fn kind(&self) -> OpKind {
                #[allow(clippy::redundant_closure_call)]
                ($kind)(self)
            }
        }
    };
}

/// Whether a write guarded by `condition` may be repeated.
fn write_kind(condition: &Condition) -> OpKind {
    if *condition == Condition::None { OpKind::Write } else { OpKind::ConditionalWrite }
}

/// Creates a table; answers false if it existed.
#[derive(Debug, Clone, Copy)]
pub struct CreateTable<'a> {
    pub table: &'a TableName,
}
kv_op!(CreateTable<'a>, "create_table", |_| OpKind::Write);

/// Deletes a table and its keys.
#[derive(Debug, Clone, Copy)]
pub struct DeleteTable<'a> {
    pub table: &'a TableName,
}
kv_op!(DeleteTable<'a>, "delete_table", |_| OpKind::Write);

/// Every table name in lexical order.
#[derive(Debug, Clone, Copy)]
pub struct ListTables;
kv_op!(ListTables, "list_tables", |_| OpKind::Read);

/// Reads a key (KEY_NOT_FOUND if absent or expired).
#[derive(Debug, Clone, Copy)]
pub struct Get<'a> {
    pub table: &'a TableName,
    pub key: &'a str,
}
kv_op!(Get<'a>, "get", |_| OpKind::Read);

/// Writes a key if `condition` holds; `expires_at_ms` 0 means never. Answers the new version.
#[derive(Debug, Clone)]
pub struct Put<'a> {
    pub table: &'a TableName,
    pub key: &'a str,
    pub value: Vec<u8>,
    pub condition: &'a Condition,
    pub expires_at_ms: u64,
}
kv_op!(Put<'a>, "put", |op: &Put<'_>| write_kind(op.condition));

/// Deletes a key if `condition` holds; answers whether it existed.
#[derive(Debug, Clone, Copy)]
pub struct Delete<'a> {
    pub table: &'a TableName,
    pub key: &'a str,
    pub condition: &'a Condition,
}
kv_op!(Delete<'a>, "delete", |op: &Delete<'_>| write_kind(op.condition));

/// Up to `limit` live entries with `prefix`, in key order, strictly after `start_after`.
#[derive(Debug, Clone, Copy)]
pub struct List<'a> {
    pub table: &'a TableName,
    pub prefix: &'a str,
    pub start_after: Option<&'a str>,
    pub limit: usize,
    pub keys_only: bool,
}
kv_op!(List<'a>, "list", |_| OpKind::Read);

/// Reads many keys: the live entries found, in the order asked.
#[derive(Debug, Clone)]
pub struct BatchGet<'a> {
    pub table: &'a TableName,
    pub keys: &'a [String],
}
kv_op!(BatchGet<'a>, "batch_get", |_| OpKind::Read);

/// Adds `delta` to the counter under `key` atomically (an absent or expired key counts from 0
/// and is created with expiry `expires_at_ms`, 0 for never; an existing counter keeps its
/// expiry). Answers the new value and version.
#[derive(Debug, Clone, Copy)]
pub struct Increment<'a> {
    pub table: &'a TableName,
    pub key: &'a str,
    pub delta: i64,
    pub expires_at_ms: u64,
}
kv_op!(Increment<'a>, "increment", |_| OpKind::Write);

/// Writes several keys of one table, all or none: every condition is checked before any write
/// applies; the first that fails (naming its write) leaves the table as it was. Answers, per
/// write in order, the new version of a put and "" for a delete.
#[derive(Debug, Clone, Copy)]
pub struct WriteBatch<'a> {
    pub table: &'a TableName,
    pub writes: &'a [Write],
}
kv_op!(WriteBatch<'a>, "write_batch", |op: &WriteBatch<'_>| {
    if op.writes.iter().all(|w| w.condition == Condition::None) {
        OpKind::Write
    } else {
        OpKind::ConditionalWrite
    }
});

exo_proxy_core::operations!(
    /// Every key-value operation.
    pub enum KvOp {
    CreateTable => CreateTable<'static>,
    DeleteTable => DeleteTable<'static>,
    ListTables => ListTables,
    Get => Get<'static>,
    Put => Put<'static>,
    Delete => Delete<'static>,
    List => List<'static>,
    BatchGet => BatchGet<'static>,
    Increment => Increment<'static>,
    WriteBatch => WriteBatch<'static>,
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_a_name_of_its_own() {
        let names: std::collections::HashSet<_> = KvOp::ALL.iter().map(|op| op.name()).collect();
        assert_eq!(names.len(), KvOp::ALL.len(), "{names:?}");
        assert!(names.iter().all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')), "{names:?}");
    }
}
