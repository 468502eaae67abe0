//! Failover across an ordered chain of key-value backends (DESIGN.md §4), without mirroring:
//! writes go to the first member that answers; a read that misses on one member is looked up on
//! the next, so keys written to a standby during an outage are still found after fail-back;
//! tables are created and deleted on every member. Keys written only to a member that is down are
//! unavailable until it returns (mirroring is not built). Versions are a member's own: a
//! compare-and-set with a version from one member fails (safely) on another.

use std::sync::Arc;

use async_trait::async_trait;
use exo_proto::{common::v1::ErrorReason, kv::v1 as pb};
use exo_proxy_core::{ExoError, ExoResult, failover::Chain};

use crate::{
    backend::KeyValue,
    model::{Condition, Descriptor, TableName},
};

/// A chain of key-value backends behaving as one.
pub struct FailoverKv {
    chain: Chain<dyn KeyValue>,
    descriptor: Descriptor,
}

fn missing(err: &ExoError) -> bool {
    matches!(err.reason, ErrorReason::KeyNotFound)
}

impl FailoverKv {
    /// Chains `members` in priority order: capabilities every member has, each limit the smallest.
    pub fn new(members: Vec<Arc<dyn KeyValue>>) -> ExoResult<Self> {
        let mut descriptor = members
            .first()
            .ok_or_else(|| ExoError::internal("a failover chain needs at least one member"))?
            .descriptor()
            .clone();
        descriptor.backend = "failover";
        for m in &members[1..] {
            let d = m.descriptor();
            descriptor.capabilities.retain(|c| d.capabilities.contains(c));
            let (l, o) = (&mut descriptor.limits, d.limits);
            l.max_key_bytes = l.max_key_bytes.min(o.max_key_bytes);
            l.max_value_bytes = l.max_value_bytes.min(o.max_value_bytes);
            l.max_batch_keys = l.max_batch_keys.min(o.max_batch_keys);
            l.max_page_size = l.max_page_size.min(o.max_page_size);
            l.max_ttl_seconds = l.max_ttl_seconds.min(o.max_ttl_seconds);
        }
        Ok(Self { chain: Chain::new(members)?, descriptor })
    }

    /// Changes how long a failed member is skipped (tests use a short one).
    pub fn with_backoff(mut self, backoff: std::time::Duration) -> Self {
        self.chain = self.chain.with_backoff(backoff);
        self
    }
}

#[async_trait]
impl KeyValue for FailoverKv {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }
    async fn ready(&self) -> ExoResult<()> {
        self.chain.first(|m| async move { m.ready().await }).await
    }
    async fn create_table(&self, table: &TableName) -> ExoResult<bool> {
        let created = self.chain.every(|m| async move { m.create_table(table).await }).await?;
        Ok(created.first().copied().unwrap_or(false))
    }
    async fn delete_table(&self, table: &TableName) -> ExoResult<()> {
        let missing = |e: &ExoError| e.reason == ErrorReason::TableNotFound;
        self.chain.every_present(missing, |m| async move { m.delete_table(table).await }).await
    }
    async fn list_tables(&self) -> ExoResult<Vec<String>> {
        self.chain.first(|m| async move { m.list_tables().await }).await
    }
    async fn get(&self, table: &TableName, key: &str) -> ExoResult<pb::Entry> {
        self.chain.first_found(missing, |m| async move { m.get(table, key).await }).await
    }
    async fn put(
        &self,
        table: &TableName,
        key: &str,
        value: Vec<u8>,
        condition: &Condition,
        expires_at_ms: u64,
    ) -> ExoResult<String> {
        self.chain
            .first(|m| {
                let value = value.clone();
                async move { m.put(table, key, value, condition, expires_at_ms).await }
            })
            .await
    }
    async fn delete(&self, table: &TableName, key: &str, condition: &Condition) -> ExoResult<bool> {
        self.chain.first(|m| async move { m.delete(table, key, condition).await }).await
    }
    async fn list(
        &self,
        table: &TableName,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        keys_only: bool,
    ) -> ExoResult<Vec<pb::Entry>> {
        self.chain.first(|m| async move { m.list(table, prefix, start_after, limit, keys_only).await }).await
    }
    async fn batch_get(&self, table: &TableName, keys: &[String]) -> ExoResult<Vec<pb::Entry>> {
        self.chain.first(|m| async move { m.batch_get(table, keys).await }).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::services::memory::MemoryKv;

    /// A member that can be switched off.
    struct Switchable {
        inner: MemoryKv,
        down: std::sync::atomic::AtomicBool,
    }

    impl Switchable {
        fn check(&self) -> ExoResult<()> {
            if self.down.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(ExoError::unavailable("switched off"));
            }
            Ok(())
        }
    }

    #[async_trait]
    impl KeyValue for Switchable {
        fn descriptor(&self) -> &Descriptor {
            self.inner.descriptor()
        }
        async fn ready(&self) -> ExoResult<()> {
            self.check()
        }
        async fn create_table(&self, table: &TableName) -> ExoResult<bool> {
            self.check()?;
            self.inner.create_table(table).await
        }
        async fn delete_table(&self, table: &TableName) -> ExoResult<()> {
            self.check()?;
            self.inner.delete_table(table).await
        }
        async fn list_tables(&self) -> ExoResult<Vec<String>> {
            self.check()?;
            self.inner.list_tables().await
        }
        async fn get(&self, table: &TableName, key: &str) -> ExoResult<pb::Entry> {
            self.check()?;
            self.inner.get(table, key).await
        }
        async fn put(&self, t: &TableName, k: &str, v: Vec<u8>, c: &Condition, e: u64) -> ExoResult<String> {
            self.check()?;
            self.inner.put(t, k, v, c, e).await
        }
        async fn delete(&self, table: &TableName, key: &str, condition: &Condition) -> ExoResult<bool> {
            self.check()?;
            self.inner.delete(table, key, condition).await
        }
        async fn list(
            &self,
            t: &TableName,
            p: &str,
            s: Option<&str>,
            l: usize,
            k: bool,
        ) -> ExoResult<Vec<pb::Entry>> {
            self.check()?;
            self.inner.list(t, p, s, l, k).await
        }
        async fn batch_get(&self, table: &TableName, keys: &[String]) -> ExoResult<Vec<pb::Entry>> {
            self.check()?;
            self.inner.batch_get(table, keys).await
        }
    }

    #[tokio::test]
    async fn writes_switch_to_the_standby_and_reads_find_them_after_fail_back() {
        let primary = Arc::new(Switchable { inner: MemoryKv::new(), down: false.into() });
        let standby = Arc::new(Switchable { inner: MemoryKv::new(), down: false.into() });
        let chain = FailoverKv::new(vec![primary.clone(), standby.clone()])
            .unwrap()
            .with_backoff(Duration::from_millis(50));
        let t = TableName::parse("table", "carts", "t").unwrap();
        assert!(chain.create_table(&t).await.unwrap());
        chain.put(&t, "before", b"1".to_vec(), &Condition::None, 0).await.unwrap();

        primary.down.store(true, std::sync::atomic::Ordering::Relaxed);
        chain.put(&t, "during", b"2".to_vec(), &Condition::None, 0).await.unwrap();
        assert_eq!(standby.inner.get(&t, "during").await.unwrap().value, b"2", "written to the standby");
        // Not mirrored: what only the primary holds is unavailable while it is down.
        assert_eq!(chain.get(&t, "before").await.unwrap_err().reason, ErrorReason::KeyNotFound);

        primary.down.store(false, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(
            chain.get(&t, "during").await.unwrap().value,
            b"2",
            "found on the standby after fail-back"
        );
        assert_eq!(chain.get(&t, "before").await.unwrap().value, b"1");
        chain.put(&t, "after", b"3".to_vec(), &Condition::None, 0).await.unwrap();
        assert_eq!(
            primary.inner.get(&t, "after").await.unwrap().value,
            b"3",
            "writes fail back to the primary"
        );
    }
}
