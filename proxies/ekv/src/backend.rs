//! The one trait every key-value backend implements: one method per operation of
//! [`crate::ops`], taking the operation as a value. Requests arrive validated by [`crate::api`];
//! layers in [`crate::layers`] wrap it.

use async_trait::async_trait;
use exo_proto::kv::v1 as pb;
use exo_proxy_core::ExoResult;

use crate::{model::Descriptor, ops};

/// A key-value backend.
///
/// Contract for implementors: conditions are checked atomically with the write they guard
/// (never read-then-write); an expired entry behaves exactly like a missing one everywhere; every
/// successful write returns a version never returned before for that key.
#[async_trait]
pub trait KeyValue: Send + Sync + 'static {
    /// Name, capabilities and limits.
    fn descriptor(&self) -> &Descriptor;

    /// Whether [`Self::descriptor`] is the backend's own. Only a backend that learns it from
    /// elsewhere (a `remote` not reached yet) is ever `false`; it serves nothing until `true`.
    fn is_described(&self) -> bool {
        true
    }
    /// `Ok` when the backend can serve requests.
    async fn ready(&self) -> ExoResult<()>;
    /// Creates a table; false if it existed.
    async fn create_table(&self, op: ops::CreateTable<'_>) -> ExoResult<bool>;
    /// Deletes a table and its keys.
    async fn delete_table(&self, op: ops::DeleteTable<'_>) -> ExoResult<()>;
    /// Every table name in lexical order.
    async fn list_tables(&self, op: ops::ListTables) -> ExoResult<Vec<String>>;
    /// Reads a key (KEY_NOT_FOUND if absent or expired).
    async fn get(&self, op: ops::Get<'_>) -> ExoResult<pb::Entry>;
    /// Writes a key if its condition holds. Returns the new version.
    async fn put(&self, op: ops::Put<'_>) -> ExoResult<String>;
    /// Deletes a key if its condition holds; returns whether it existed.
    async fn delete(&self, op: ops::Delete<'_>) -> ExoResult<bool>;
    /// Live entries with a prefix, in key order (see [`ops::List`]).
    async fn list(&self, op: ops::List<'_>) -> ExoResult<Vec<pb::Entry>>;
    /// Reads many keys: the live entries found, in the order asked.
    async fn batch_get(&self, op: ops::BatchGet<'_>) -> ExoResult<Vec<pb::Entry>>;
}
