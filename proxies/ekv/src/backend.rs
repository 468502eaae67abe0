//! The one trait every key-value backend implements: one method per operation of
//! [`crate::ops`], taking the operation as a value. Requests arrive validated by [`crate::api`];
//! layers in [`crate::layers`] wrap it.

use async_trait::async_trait;
use exo_proto::{common::v1::ErrorReason, kv::v1 as pb};
use exo_proxy_core::{ExoError, ExoResult};

use crate::{
    model::{Condition, Descriptor, counter},
    ops,
};

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
    /// Adds to a counter atomically (see [`ops::Increment`] and [`crate::model::counter`]);
    /// NOT_A_COUNTER or COUNTER_OVERFLOW change nothing.
    ///
    /// The default is [`increment_by_compare_and_set`], for a store whose conditional put is
    /// its only atomic read-modify-write.
    async fn increment(&self, op: ops::Increment<'_>) -> ExoResult<pb::IncrementResponse> {
        increment_by_compare_and_set(self, op).await
    }
    /// Writes a batch all or none (see [`ops::WriteBatch`]); only a backend that declares
    /// ATOMIC_BATCH is asked. The default answers UNSUPPORTED.
    async fn write_batch(&self, op: ops::WriteBatch<'_>) -> ExoResult<Vec<String>> {
        let _ = op;
        Err(ExoError::new(
            ErrorReason::Unsupported,
            format!("the {} backend cannot apply a batch all or none", self.descriptor().backend),
        ))
    }
}

/// How many times [`increment_by_compare_and_set`] reads and tries again after another writer
/// changed the key in between, before answering THROTTLED.
pub const INCREMENT_ATTEMPTS: u32 = 64;

/// How long [`increment_by_compare_and_set`] keeps trying before answering THROTTLED: well
/// inside a failover member's deadline (3 s by default), so a hot counter is never mistaken
/// for a member that stopped answering (which would set the member aside for every caller).
pub const INCREMENT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// An increment as a read and a put conditional on the version read (or on the key being
/// absent), repeated while other writers win the race: atomic on any backend whose conditional
/// put is. Under heavy contention on one key it answers THROTTLED (retryable; nothing written)
/// after [`INCREMENT_ATTEMPTS`] lost races or [`INCREMENT_PATIENCE`], whichever comes first.
pub async fn increment_by_compare_and_set<K: KeyValue + ?Sized>(
    kv: &K,
    op: ops::Increment<'_>,
) -> ExoResult<pb::IncrementResponse> {
    let ops::Increment { table, key, delta, expires_at_ms } = op;
    let started = std::time::Instant::now();
    for attempt in 0..INCREMENT_ATTEMPTS {
        if attempt > 0 && started.elapsed() >= INCREMENT_PATIENCE {
            break;
        }
        let current = match kv.get(ops::Get { table, key }).await {
            Ok(entry) => Some(entry),
            Err(err) if err.reason == ErrorReason::KeyNotFound => None,
            Err(err) => return Err(err),
        };
        let value =
            counter::incremented(current.as_ref().map(|e| e.value.as_slice()), delta, table.as_str(), key)?;
        let (condition, expires_at_ms) = match current {
            Some(entry) => (Condition::VersionEquals(entry.version), entry.expires_at_ms),
            None => (Condition::MustNotExist, expires_at_ms),
        };
        let put = ops::Put { table, key, value: counter::text(value), condition: &condition, expires_at_ms };
        match kv.put(put).await {
            Ok(version) => return Ok(pb::IncrementResponse { value, version }),
            Err(err) if err.reason == ErrorReason::ConditionFailed => {
                // Another writer won; back off a little, more each time, so contenders spread.
                let pause = rand::random_range(0..=(1u64 << attempt.min(6)));
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            Err(err) => return Err(err),
        }
    }
    Err(ExoError::new(
        ErrorReason::Throttled,
        format!(
            "the counter {key:?} kept changing under this increment (other writers won every race); nothing was written"
        ),
    )
    .with_resource(format!("{table}/{key}"))
    .retryable())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::{model::TableName, services::memory::MemoryKv};

    /// A store where another writer wins every compare-and-set, each race taking 30 ms.
    struct AlwaysRaced(MemoryKv);

    #[async_trait]
    impl KeyValue for AlwaysRaced {
        fn descriptor(&self) -> &Descriptor {
            self.0.descriptor()
        }
        async fn ready(&self) -> ExoResult<()> {
            Ok(())
        }
        async fn create_table(&self, op: ops::CreateTable<'_>) -> ExoResult<bool> {
            self.0.create_table(op).await
        }
        async fn delete_table(&self, op: ops::DeleteTable<'_>) -> ExoResult<()> {
            self.0.delete_table(op).await
        }
        async fn list_tables(&self, op: ops::ListTables) -> ExoResult<Vec<String>> {
            self.0.list_tables(op).await
        }
        async fn get(&self, op: ops::Get<'_>) -> ExoResult<pb::Entry> {
            self.0.get(op).await
        }
        async fn put(&self, op: ops::Put<'_>) -> ExoResult<String> {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Err(ExoError::new(ErrorReason::ConditionFailed, format!("{} changed", op.key)))
        }
        async fn delete(&self, op: ops::Delete<'_>) -> ExoResult<bool> {
            self.0.delete(op).await
        }
        async fn list(&self, op: ops::List<'_>) -> ExoResult<Vec<pb::Entry>> {
            self.0.list(op).await
        }
        async fn batch_get(&self, op: ops::BatchGet<'_>) -> ExoResult<Vec<pb::Entry>> {
            self.0.batch_get(op).await
        }
    }

    #[tokio::test]
    async fn a_counter_that_keeps_changing_answers_throttled_within_its_patience() {
        let kv = AlwaysRaced(MemoryKv::new());
        let table = TableName::parse("table", "hot", "t").unwrap();
        kv.create_table(ops::CreateTable { table: &table }).await.unwrap();
        let started = Instant::now();
        let op = ops::Increment { table: &table, key: "k", delta: 1, expires_at_ms: 0 };
        let err = kv.increment(op).await.unwrap_err();
        assert_eq!(err.reason, ErrorReason::Throttled);
        assert!(err.retryable);
        // 64 races of 30 ms and their pauses would take several seconds; the patience ends it.
        let took = started.elapsed();
        assert!(took >= INCREMENT_PATIENCE && took < INCREMENT_PATIENCE * 2, "took {took:?}");
    }
}
