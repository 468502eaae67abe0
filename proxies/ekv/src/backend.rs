//! The one trait every key-value backend implements. Requests arrive validated by
//! [`crate::api`]; layers in [`crate::layers`] wrap it.

use async_trait::async_trait;
use exo_proto::kv::v1 as pb;
use exo_proxy_core::ExoResult;

use crate::model::{Condition, Descriptor, TableName};

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
    async fn create_table(&self, table: &TableName) -> ExoResult<bool>;
    /// Deletes a table and its keys.
    async fn delete_table(&self, table: &TableName) -> ExoResult<()>;
    /// Every table name in lexical order.
    async fn list_tables(&self) -> ExoResult<Vec<String>>;
    /// Reads a key (KEY_NOT_FOUND if absent or expired).
    async fn get(&self, table: &TableName, key: &str) -> ExoResult<pb::Entry>;
    /// Writes a key if `condition` holds; `expires_at_ms` 0 means never. Returns the new version.
    async fn put(
        &self,
        table: &TableName,
        key: &str,
        value: Vec<u8>,
        condition: &Condition,
        expires_at_ms: u64,
    ) -> ExoResult<String>;
    /// Deletes a key if `condition` holds; returns whether it existed.
    async fn delete(&self, table: &TableName, key: &str, condition: &Condition) -> ExoResult<bool>;
    /// Up to `limit` live entries with `prefix`, in key order, strictly after `start_after`.
    async fn list(
        &self,
        table: &TableName,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        keys_only: bool,
    ) -> ExoResult<Vec<pb::Entry>>;
    /// Reads many keys: the live entries found, in the order asked.
    async fn batch_get(&self, table: &TableName, keys: &[String]) -> ExoResult<Vec<pb::Entry>>;
}
