//! Failover across an ordered chain of key-value backends (see the ekv README, "Failover"). Writes go to the first
//! member that answers; tables are created and deleted on every member. What keeps every
//! acknowledged write once the primary returns is the **journal** (`journal` in the config, a
//! local SQLite file): a write or delete taken while a member before it is out is recorded
//! (durably, before it is acknowledged) with where its newest state is. While a key is in the
//! journal, reads and conditional writes of it go to the member holding it; a background task
//! replays the journal onto the primary as soon as the primary answers its probe (a value is
//! copied, a delete applied on every member), and only then does the primary serve that key
//! again. Without an entry, a read falls through on a miss, and a miss while some member is out
//! is UNAVAILABLE (that member may hold the key), never a false "not found".
//!
//! Guarantees, per operation, with the primary out: unconditional puts and deletes are
//! accepted (by the standby, journaled) and win after fail-back; conditional writes and deletes
//! are evaluated by the member holding the key's newest state — the primary for a key the journal
//! does not hold, so they answer UNAVAILABLE (retryable) rather than succeed on a guess; listings
//! answer UNAVAILABLE (they would be partial) until every member answers and the journal is
//! replayed; a delete whose key's existence cannot be known answers `deleted: true`. Replicas of a
//! deployment each journal what they took: until a replica's replay ends (seconds after the
//! primary returns) another replica may read the primary's older copy of a key it did not write.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use exo_proto::{common::v1::ErrorReason, kv::v1 as pb};
use exo_proxy_core::{
    ExoError, ExoResult,
    config::ConfigError,
    failover::{Chain, ChainDescription, PROBE_INTERVAL, is_outage},
    registry::BoxFuture,
};
use exo_sqlite::journal::{FailoverJournal, Holder};

use crate::ops;
use crate::{
    backend::KeyValue,
    model::{Change, Condition, Descriptor, TableName, counter, key_not_found},
    services::{BackendConfig, OpenContext},
};

/// The settings of a `failover` chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FailoverConfig {
    /// Members in priority order (at least one).
    pub members: Vec<BackendConfig>,
    /// The journal of writes a standby takes while the primary is out (local, durable;
    /// replayed onto the primary before it serves those keys again).
    #[serde(default = "default_journal_path")]
    pub journal: std::path::PathBuf,
    /// The deadline of one call to one member (a hung member is set aside after it).
    #[serde(default = "exo_proxy_core::failover::default_member_timeout", with = "humantime_serde")]
    pub member_timeout: Duration,
    /// How long a member that failed with an outage is set aside (each member its own, like a
    /// breaker that opens on the first outage); a probe re-admits it sooner once it answers.
    #[serde(default = "exo_proxy_core::failover::default_member_backoff", with = "humantime_serde")]
    pub member_backoff: Duration,
}

fn default_journal_path() -> std::path::PathBuf {
    std::path::PathBuf::from(".exo/ekv-failover.db")
}

impl exo_proxy_core::registry::Backend for FailoverKv {
    type Opened = Arc<dyn KeyValue>;
    type Context = OpenContext;
    type Config = FailoverConfig;

    fn settings(_data: Option<std::path::PathBuf>) -> FailoverConfig {
        FailoverConfig {
            members: Vec::new(),
            journal: default_journal_path(),
            member_timeout: exo_proxy_core::failover::MEMBER_TIMEOUT,
            member_backoff: exo_proxy_core::failover::BACKOFF,
        }
    }

    fn validate(config: &FailoverConfig) -> Result<(), ConfigError> {
        if config.members.is_empty() {
            return Err(ConfigError::Invalid("backend.members of a failover chain must not be empty".into()));
        }
        exo_proxy_core::failover::validate_member_settings(config.member_timeout, config.member_backoff)?;
        config.members.iter().try_for_each(BackendConfig::validate)
    }

    fn open<'a>(
        config: &'a FailoverConfig,
        context: &'a OpenContext,
    ) -> BoxFuture<'a, ExoResult<Self::Opened>> {
        Box::pin(async move {
            let mut opened = Vec::with_capacity(config.members.len());
            for (index, member) in config.members.iter().enumerate() {
                // Each member runs under its own observation, labelled with its place.
                let observed = exo_proxy_core::layers::ObserveMember::new(context.metrics.clone(), index);
                let member = member.open(context).await?;
                let member: Arc<dyn KeyValue> =
                    Arc::new(crate::layers::Layered::new(member, observed, config.member_timeout));
                opened.push(member);
            }
            let journal = FailoverJournal::open(&config.journal).await?;
            let chain: Self::Opened =
                Arc::new(FailoverKv::new(opened, journal, config.member_timeout, config.member_backoff)?);
            Ok(chain)
        })
    }
}

/// A chain of key-value backends behaving as one.
pub struct FailoverKv {
    chain: Arc<Chain<dyn KeyValue>>,
    journal: Arc<FailoverJournal>,
    descriptor: ChainDescription<Descriptor>,
}

fn missing(err: &ExoError) -> bool {
    matches!(err.reason, ErrorReason::KeyNotFound)
}

/// CONDITION_FAILED for a condition evaluated against a key known to be absent.
fn absent_fails(condition: &Condition, table: &TableName, key: &str) -> ExoError {
    match condition.check(None, table.as_str(), key) {
        Err(err) => err,
        Ok(()) => ExoError::internal(format!("a condition {condition:?} held for an absent key")),
    }
}

/// Keys replayed per round.
const REPLAY_BATCH: usize = 256;

/// The chain's description from its members': capabilities every member has, the smallest of
/// each limit.
fn combined(members: &[Arc<dyn KeyValue>]) -> ExoResult<Descriptor> {
    let first =
        members.first().ok_or_else(|| ExoError::internal("a failover chain needs at least one member"))?;
    let mut descriptor = first.descriptor().clone();
    descriptor.backend = exo_proxy_core::failover::CHAIN;
    for m in &members[1..] {
        let d = m.descriptor();
        descriptor.capabilities.retain(|c| d.capabilities.contains(c));
        let (l, o) = (&mut descriptor.limits, d.limits);
        l.max_key_bytes = l.max_key_bytes.min(o.max_key_bytes);
        l.max_value_bytes = l.max_value_bytes.min(o.max_value_bytes);
        l.max_batch_keys = l.max_batch_keys.min(o.max_batch_keys);
        l.max_page_size = l.max_page_size.min(o.max_page_size);
        l.max_ttl_seconds = l.max_ttl_seconds.min(o.max_ttl_seconds);
        l.max_batch_writes = l.max_batch_writes.min(o.max_batch_writes);
        l.max_batch_bytes = l.max_batch_bytes.min(o.max_batch_bytes);
    }
    Ok(descriptor)
}

impl FailoverKv {
    /// Chains `members` in priority order (capabilities every member has, each limit the
    /// smallest) with its journal; `member_timeout` bounds each call to one member; `backoff` is
    /// how long a failed member sits out unless its probe re-admits it first.
    pub fn new(
        members: Vec<Arc<dyn KeyValue>>,
        journal: FailoverJournal,
        member_timeout: Duration,
        backoff: Duration,
    ) -> ExoResult<Self> {
        let descriptor = ChainDescription::new(combined(&members)?, members.iter().all(|m| m.is_described()));
        let chain = Arc::new(Chain::new(members)?.with_member_timeout(member_timeout).with_backoff(backoff));
        chain.spawn_probe(|m: Arc<dyn KeyValue>| async move { m.ready().await });
        let kv = Self { chain, journal: Arc::new(journal), descriptor };
        kv.spawn_replay();
        Ok(kv)
    }

    /// Replays the journal onto the primary whenever the primary answers and something is
    /// pending; stops when the layer is dropped.
    fn spawn_replay(&self) {
        self.journal.spawn_replayer(
            Arc::downgrade(&self.chain),
            PROBE_INTERVAL,
            |chain, journal| async move {
                if !chain.is_available(0) {
                    return Ok(0);
                }
                replay(&chain, &journal).await
            },
        );
    }

    /// Deletes `key` on every member but `except` (after a delete the authoritative member
    /// answered, or everywhere): a copy left on a member that is out is recorded as deleted, so
    /// it can never come back. Whether any member had it, and whether one was out.
    async fn delete_everywhere(
        &self,
        table: &TableName,
        key: &str,
        except: Option<usize>,
    ) -> ExoResult<(bool, bool)> {
        let (answers, out) = self
            .chain
            .on_every_member_up(
                except,
                |_, err| missing(err),
                |m| async move { m.delete(ops::Delete { table, key, condition: &Condition::None }).await },
            )
            .await?;
        if out {
            self.journal.record(table.as_str(), key, Holder::Deleted).await?;
        } else if let Some((_, seq)) = self.journal.lookup(table.as_str(), key) {
            self.journal.settle(table.as_str(), key, seq).await?;
        }
        Ok((answers.into_iter().any(|deleted| deleted), out))
    }
}

/// Copies what the journal holds onto the primary; the number of keys settled. An outage ends
/// the round; a key whose table is gone is settled (nothing is left to copy); any other failure
/// leaves that key pending without holding up the others.
async fn replay(chain: &Chain<dyn KeyValue>, journal: &FailoverJournal) -> ExoResult<usize> {
    let mut settled = 0;
    for pending in journal.pending(REPLAY_BATCH) {
        let _exclusive = journal.exclusive().await;
        let Some((holder, seq)) = journal.lookup(&pending.resource, &pending.key) else { continue };
        match replay_key(chain, &pending.resource, &pending.key, holder).await {
            Ok(()) => {}
            Err(err) if is_outage(&err) => return Err(err),
            Err(err) if err.reason == ErrorReason::TableNotFound => {
                tracing::warn!(table = %pending.resource, "failover journal: the table is gone; nothing to replay");
            }
            Err(err) => {
                tracing::warn!(table = %pending.resource, error = %err, "failover journal: key left pending");
                continue;
            }
        }
        if journal.settle(&pending.resource, &pending.key, seq).await? {
            settled += 1;
        }
    }
    Ok(settled)
}

/// Puts the newest state of one journaled key on the primary (a delete on every member).
async fn replay_key(chain: &Chain<dyn KeyValue>, resource: &str, key: &str, holder: Holder) -> ExoResult<()> {
    let table = &TableName::parse("table", resource, "table")?;
    let deleted = match holder {
        Holder::Member(0) => false,
        Holder::Member(member) => {
            match chain.call(member as usize, |m| async move { m.get(ops::Get { table, key }).await }).await {
                Ok(entry) => {
                    let copy = |m: Arc<dyn KeyValue>| {
                        let value = entry.value.clone();
                        async move {
                            m.put(ops::Put {
                                table,
                                key,
                                value,
                                condition: &Condition::None,
                                expires_at_ms: entry.expires_at_ms,
                            })
                            .await
                        }
                    };
                    chain.call(0, copy).await?;
                    false
                }
                // Expired or deleted there since: deleted everywhere.
                Err(err) if missing(&err) => true,
                Err(err) => return Err(err),
            }
        }
        Holder::Deleted => true,
    };
    if deleted {
        // Every member must drop it, or a later miss on the primary would find a stale copy.
        let (_, out) = chain
            .on_every_member_up(
                None,
                |_, err| missing(err),
                |m| async move { m.delete(ops::Delete { table, key, condition: &Condition::None }).await },
            )
            .await?;
        if out {
            return Err(ExoError::unavailable("a member is out: the delete cannot reach every copy yet"));
        }
    }
    Ok(())
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl KeyValue for FailoverKv {
    fn descriptor(&self) -> &Descriptor {
        let members = || self.chain.all().map(|(_, m)| m.clone()).collect::<Vec<_>>();
        self.descriptor.get(|| self.chain.all().all(|(_, m)| m.is_described()), || combined(&members()).ok())
    }
    fn is_described(&self) -> bool {
        // The chain serves (and describes itself) as soon as one member can.
        self.descriptor.is_final() || self.chain.all().any(|(_, m)| m.is_described())
    }
    async fn ready(&self) -> ExoResult<()> {
        self.chain.first(|m| async move { m.ready().await }).await
    }
    async fn create_table(&self, op: ops::CreateTable<'_>) -> ExoResult<bool> {
        let created = self.chain.on_every_member(|m| async move { m.create_table(op).await }).await?;
        Ok(created.first().copied().unwrap_or(false))
    }
    async fn delete_table(&self, op: ops::DeleteTable<'_>) -> ExoResult<()> {
        let missing = |e: &ExoError| e.reason == ErrorReason::TableNotFound;
        self.chain.remove_from_every_member(missing, |m| async move { m.delete_table(op).await }).await
    }
    async fn list_tables(&self, _op: ops::ListTables) -> ExoResult<Vec<String>> {
        self.chain.first(|m| async move { m.list_tables(ops::ListTables).await }).await
    }
    async fn get(&self, op: ops::Get<'_>) -> ExoResult<pb::Entry> {
        let ops::Get { table, key } = op;
        match self.journal.lookup(table.as_str(), key) {
            Some((Holder::Member(member), _)) => {
                self.chain
                    .only(member as usize, |m| async move { m.get(ops::Get { table, key }).await })
                    .await
            }
            Some((Holder::Deleted, _)) => Err(key_not_found(table.as_str(), key)),
            None => {
                self.chain.first_found(missing, |m| async move { m.get(ops::Get { table, key }).await }).await
            }
        }
    }
    async fn put(&self, op: ops::Put<'_>) -> ExoResult<String> {
        let ops::Put { table, key, value, condition, expires_at_ms } = op;
        // While anything is pending, changes serialise with the replay (which copies one key at a
        // time): a write can then never be overwritten by an older copy being replayed.
        let _exclusive = if self.journal.is_empty() { None } else { Some(self.journal.exclusive().await) };
        let holder = self.journal.lookup(table.as_str(), key).map(|(holder, _)| holder);
        let (index, version) = match (holder, condition) {
            (_, Condition::None) => {
                self.chain
                    .first_indexed(|m| {
                        let value = value.clone();
                        async move { m.put(ops::Put { table, key, value, condition, expires_at_ms }).await }
                    })
                    .await?
            }
            // Deleted while the primary was out: the key is absent, whatever the primary holds.
            (Some(Holder::Deleted), Condition::VersionEquals(_)) => {
                return Err(absent_fails(condition, table, key));
            }
            (Some(Holder::Deleted), Condition::MustNotExist) => {
                self.chain
                    .first_indexed(|m| {
                        let value = value.clone();
                        async move {
                            m.put(ops::Put { table, key, value, condition: &Condition::None, expires_at_ms })
                                .await
                        }
                    })
                    .await?
            }
            // Evaluated where the key's newest state is: the journal's holder, else the primary.
            (holder, condition) => {
                let index = match holder {
                    Some(Holder::Member(member)) => member as usize,
                    _ => 0,
                };
                let version = self
                    .chain
                    .only(index, |m| async move {
                        m.put(ops::Put { table, key, value, condition, expires_at_ms }).await
                    })
                    .await?;
                (index, version)
            }
        };
        self.journal.after_write(table.as_str(), key, index).await?;
        Ok(version)
    }
    async fn delete(&self, op: ops::Delete<'_>) -> ExoResult<bool> {
        let ops::Delete { table, key, condition } = op;
        // While anything is pending, changes serialise with the replay (which copies one key at a
        // time): a write can then never be overwritten by an older copy being replayed.
        let _exclusive = if self.journal.is_empty() { None } else { Some(self.journal.exclusive().await) };
        match (self.journal.lookup(table.as_str(), key).map(|(holder, _)| holder), condition) {
            (Some(Holder::Deleted), Condition::None) => Ok(false),
            (Some(Holder::Deleted), condition) => Err(absent_fails(condition, table, key)),
            (_, Condition::None) => {
                // Everywhere: the answer is whether any member had it; with a member out it
                // cannot be known there, and the tombstone makes it deleted: "deleted".
                let (deleted, out) = self.delete_everywhere(table, key, None).await?;
                Ok(deleted || out)
            }
            (holder, condition) => {
                let index = match holder {
                    Some(Holder::Member(member)) => member as usize,
                    _ => 0,
                };
                let deleted = self
                    .chain
                    .only(index, |m| async move { m.delete(ops::Delete { table, key, condition }).await })
                    .await?;
                if deleted {
                    self.delete_everywhere(table, key, Some(index)).await?;
                }
                Ok(deleted)
            }
        }
    }
    async fn increment(&self, op: ops::Increment<'_>) -> ExoResult<pb::IncrementResponse> {
        let ops::Increment { table, key, delta, expires_at_ms } = op;
        let _exclusive = if self.journal.is_empty() { None } else { Some(self.journal.exclusive().await) };
        let (index, answer) = match self.journal.lookup(table.as_str(), key).map(|(holder, _)| holder) {
            // Deleted while the primary was out: the counter starts again, on the first member up.
            Some(Holder::Deleted) => {
                let (index, version) = self
                    .chain
                    .first_indexed(|m| async move {
                        let value = counter::text(delta);
                        m.put(ops::Put { table, key, value, condition: &Condition::None, expires_at_ms })
                            .await
                    })
                    .await?;
                (index, pb::IncrementResponse { value: delta, version })
            }
            // Added where the key's newest state is (the journal's holder, else the primary),
            // never to an older copy elsewhere: UNAVAILABLE while that member is out.
            holder => {
                let index = match holder {
                    Some(Holder::Member(member)) => member as usize,
                    _ => 0,
                };
                (index, self.chain.only(index, |m| async move { m.increment(op).await }).await?)
            }
        };
        self.journal.after_write(table.as_str(), key, index).await?;
        Ok(answer)
    }
    async fn write_batch(&self, op: ops::WriteBatch<'_>) -> ExoResult<Vec<String>> {
        let ops::WriteBatch { table, writes } = op;
        let _exclusive = if self.journal.is_empty() { None } else { Some(self.journal.exclusive().await) };
        // All or none needs one member to hold every key's newest state: the primary, with none
        // of the keys waiting in the journal. Otherwise UNAVAILABLE (retryable), like a
        // conditional write that cannot be evaluated where the state is.
        if writes.iter().any(|w| self.journal.lookup(table.as_str(), &w.key).is_some()) {
            return Err(ExoError::unavailable(
                "keys of this batch were written during an outage and are being replayed onto the primary; retry in a moment",
            ));
        }
        let versions = self.chain.only(0, |m| async move { m.write_batch(op).await }).await?;
        // A copy of a deleted key elsewhere must go too, or a miss on the primary would find it.
        for write in writes.iter().filter(|w| w.change == Change::Delete) {
            self.delete_everywhere(table, &write.key, Some(0)).await?;
        }
        Ok(versions)
    }
    async fn list(&self, op: ops::List<'_>) -> ExoResult<Vec<pb::Entry>> {
        let ops::List { table, prefix, start_after, limit, keys_only } = op;
        if let Some(out) = (0..self.chain.len()).find(|i| !self.chain.is_available(*i)) {
            return Err(ExoError::unavailable(format!(
                "failover member {out} is unavailable: a listing now would be partial; retry once it is back"
            )));
        }
        if self.journal.holds_any_of(table.as_str()) {
            return Err(ExoError::unavailable(
                "writes taken during an outage are being replayed onto the primary; retry the listing in a moment",
            ));
        }
        self.chain
            .only(
                0,
                |m| async move { m.list(ops::List { table, prefix, start_after, limit, keys_only }).await },
            )
            .await
    }
    async fn batch_get(&self, op: ops::BatchGet<'_>) -> ExoResult<Vec<pb::Entry>> {
        let ops::BatchGet { table, keys } = op;
        let healthy = (0..self.chain.len()).all(|i| self.chain.is_available(i));
        if healthy && !self.journal.holds_any_of(table.as_str()) {
            return self
                .chain
                .only(0, |m| async move { m.batch_get(ops::BatchGet { table, keys }).await })
                .await;
        }
        // Key by key, each answered where its newest state is.
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            match self.get(ops::Get { table, key }).await {
                Ok(entry) => found.push(entry),
                Err(err) if missing(&err) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(found)
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
        /// Accepts calls and never answers (a blackholed backend).
        hung: std::sync::atomic::AtomicBool,
    }

    impl Switchable {
        async fn check_async(&self) -> ExoResult<()> {
            if self.hung.load(std::sync::atomic::Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
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
            self.check_async().await
        }
        async fn create_table(&self, op: ops::CreateTable<'_>) -> ExoResult<bool> {
            self.check_async().await?;
            self.inner.create_table(op).await
        }
        async fn delete_table(&self, op: ops::DeleteTable<'_>) -> ExoResult<()> {
            self.check_async().await?;
            self.inner.delete_table(op).await
        }
        async fn list_tables(&self, _op: ops::ListTables) -> ExoResult<Vec<String>> {
            self.check_async().await?;
            self.inner.list_tables(ops::ListTables).await
        }
        async fn get(&self, op: ops::Get<'_>) -> ExoResult<pb::Entry> {
            self.check_async().await?;
            self.inner.get(op).await
        }
        async fn put(&self, op: ops::Put<'_>) -> ExoResult<String> {
            self.check_async().await?;
            self.inner.put(op).await
        }
        async fn delete(&self, op: ops::Delete<'_>) -> ExoResult<bool> {
            self.check_async().await?;
            self.inner.delete(op).await
        }
        async fn list(&self, op: ops::List<'_>) -> ExoResult<Vec<pb::Entry>> {
            self.check_async().await?;
            self.inner.list(op).await
        }
        async fn batch_get(&self, op: ops::BatchGet<'_>) -> ExoResult<Vec<pb::Entry>> {
            self.check_async().await?;
            self.inner.batch_get(op).await
        }
        async fn increment(&self, op: ops::Increment<'_>) -> ExoResult<pb::IncrementResponse> {
            self.check_async().await?;
            self.inner.increment(op).await
        }
        async fn write_batch(&self, op: ops::WriteBatch<'_>) -> ExoResult<Vec<String>> {
            self.check_async().await?;
            self.inner.write_batch(op).await
        }
    }

    fn member() -> Arc<Switchable> {
        Arc::new(Switchable { inner: MemoryKv::new(), down: false.into(), hung: false.into() })
    }

    async fn chain_of(
        primary: &Arc<Switchable>,
        standby: &Arc<Switchable>,
        journal: &std::path::Path,
    ) -> FailoverKv {
        let journal = FailoverJournal::open(journal).await.unwrap();
        FailoverKv::new(
            vec![primary.clone(), standby.clone()],
            journal,
            Duration::from_millis(200),
            Duration::from_millis(50),
        )
        .unwrap()
    }

    fn set(flag: &std::sync::atomic::AtomicBool, value: bool) {
        flag.store(value, std::sync::atomic::Ordering::Relaxed);
    }

    /// Waits until the journal is replayed (the probe re-admits the primary, the replay copies).
    async fn replayed(chain: &FailoverKv) {
        for _ in 0..100 {
            if chain.journal.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the journal was not replayed: {} keys left", chain.journal.len());
    }

    #[tokio::test]
    async fn nothing_acknowledged_during_an_outage_is_undone_at_fail_back() {
        let dir = tempfile::tempdir().unwrap();
        let (primary, standby) = (member(), member());
        let chain = chain_of(&primary, &standby, &dir.path().join("journal.db")).await;
        let t = TableName::parse("table", "carts", "t").unwrap();
        assert!(chain.create_table(ops::CreateTable { table: &t }).await.unwrap());
        for key in ["kept", "overwritten", "deleted", "guarded"] {
            chain
                .put(ops::Put {
                    table: &t,
                    key,
                    value: b"before".to_vec(),
                    condition: &Condition::None,
                    expires_at_ms: 0,
                })
                .await
                .unwrap();
        }

        set(&primary.down, true);
        // An outage says so: no false "not found" for what only the primary holds.
        assert_eq!(
            chain.get(ops::Get { table: &t, key: "kept" }).await.unwrap_err().reason,
            ErrorReason::BackendUnavailable
        );
        chain
            .put(ops::Put {
                table: &t,
                key: "overwritten",
                value: b"during".to_vec(),
                condition: &Condition::None,
                expires_at_ms: 0,
            })
            .await
            .unwrap();
        chain
            .put(ops::Put {
                table: &t,
                key: "new",
                value: b"during".to_vec(),
                condition: &Condition::None,
                expires_at_ms: 0,
            })
            .await
            .unwrap();
        assert!(
            chain
                .delete(ops::Delete { table: &t, key: "deleted", condition: &Condition::None })
                .await
                .unwrap(),
            "deletes are accepted"
        );
        assert_eq!(
            chain.get(ops::Get { table: &t, key: "overwritten" }).await.unwrap().value,
            b"during",
            "read where it was written"
        );
        assert_eq!(
            chain.get(ops::Get { table: &t, key: "deleted" }).await.unwrap_err().reason,
            ErrorReason::KeyNotFound
        );
        // Conditions are never evaluated on a guess.
        for condition in [Condition::MustNotExist, Condition::VersionEquals("v".into())] {
            let err = chain
                .put(ops::Put {
                    table: &t,
                    key: "guarded",
                    value: b"x".to_vec(),
                    condition: &condition,
                    expires_at_ms: 0,
                })
                .await
                .unwrap_err();
            assert_eq!(err.reason, ErrorReason::BackendUnavailable, "{condition:?}");
        }
        assert_eq!(
            chain
                .list(ops::List { table: &t, prefix: "", start_after: None, limit: 100, keys_only: true })
                .await
                .unwrap_err()
                .reason,
            ErrorReason::BackendUnavailable,
            "a listing would be partial"
        );

        set(&primary.down, false);
        replayed(&chain).await;
        for (key, value) in
            [("kept", "before"), ("overwritten", "during"), ("new", "during"), ("guarded", "before")]
        {
            assert_eq!(
                primary.inner.get(ops::Get { table: &t, key }).await.unwrap().value,
                value.as_bytes(),
                "{key} on the primary"
            );
            assert_eq!(
                chain.get(ops::Get { table: &t, key }).await.unwrap().value,
                value.as_bytes(),
                "{key} through the chain"
            );
        }
        for holder in [&primary, &standby] {
            assert_eq!(
                holder.inner.get(ops::Get { table: &t, key: "deleted" }).await.unwrap_err().reason,
                ErrorReason::KeyNotFound
            );
        }
        let keys: Vec<String> = chain
            .list(ops::List { table: &t, prefix: "", start_after: None, limit: 100, keys_only: true })
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, ["guarded", "kept", "new", "overwritten"]);
    }

    #[tokio::test]
    async fn a_counter_is_incremented_only_where_its_newest_state_is() {
        let dir = tempfile::tempdir().unwrap();
        let (primary, standby) = (member(), member());
        let chain = chain_of(&primary, &standby, &dir.path().join("journal.db")).await;
        let t = TableName::parse("table", "counters", "t").unwrap();
        chain.create_table(ops::CreateTable { table: &t }).await.unwrap();
        let add = |key, delta| ops::Increment { table: &t, key, delta, expires_at_ms: 0 };
        assert_eq!(chain.increment(add("views", 5)).await.unwrap().value, 5);

        set(&primary.down, true);
        // Only the primary holds "views": adding to the standby's (absent) copy would restart it.
        assert_eq!(
            chain.increment(add("views", 1)).await.unwrap_err().reason,
            ErrorReason::BackendUnavailable
        );
        // A key the standby took during the outage counts on where it is.
        chain
            .put(ops::Put {
                table: &t,
                key: "fresh",
                value: b"10".to_vec(),
                condition: &Condition::None,
                expires_at_ms: 0,
            })
            .await
            .unwrap();
        assert_eq!(chain.increment(add("fresh", 2)).await.unwrap().value, 12);

        set(&primary.down, false);
        replayed(&chain).await;
        assert_eq!(chain.increment(add("views", 1)).await.unwrap().value, 6);
        assert_eq!(chain.increment(add("fresh", 1)).await.unwrap().value, 13);
        let on_primary = primary.inner.get(ops::Get { table: &t, key: "fresh" }).await.unwrap();
        assert_eq!(on_primary.value, b"13", "the increment after fail-back went to the primary");
    }

    #[tokio::test]
    async fn a_batch_applies_on_the_primary_alone_and_never_beside_the_journal() {
        use crate::model::{Change, Write};
        let dir = tempfile::tempdir().unwrap();
        let (primary, standby) = (member(), member());
        let chain = chain_of(&primary, &standby, &dir.path().join("journal.db")).await;
        let t = TableName::parse("table", "carts", "t").unwrap();
        chain.create_table(ops::CreateTable { table: &t }).await.unwrap();
        let put = |key: &str| Write {
            key: key.to_owned(),
            change: Change::Put { value: b"v".to_vec(), expires_at_ms: 0 },
            condition: Condition::None,
        };
        let delete =
            |key: &str| Write { key: key.to_owned(), change: Change::Delete, condition: Condition::None };
        // A stale copy on the standby (written there directly) must not outlive a batch delete.
        standby
            .inner
            .put(ops::Put {
                table: &t,
                key: "old",
                value: b"stale".to_vec(),
                condition: &Condition::None,
                expires_at_ms: 0,
            })
            .await
            .unwrap();
        let writes = [put("a"), delete("old")];
        chain.write_batch(ops::WriteBatch { table: &t, writes: &writes }).await.unwrap();
        assert!(primary.inner.get(ops::Get { table: &t, key: "a" }).await.is_ok());
        assert_eq!(
            chain.get(ops::Get { table: &t, key: "old" }).await.unwrap_err().reason,
            ErrorReason::KeyNotFound,
            "the standby's copy of a key the batch deleted came back"
        );

        set(&primary.down, true);
        let writes = [put("b")];
        let refused = chain.write_batch(ops::WriteBatch { table: &t, writes: &writes }).await.unwrap_err();
        assert_eq!(refused.reason, ErrorReason::BackendUnavailable);
        // A key the standby took stays out of batches until it is replayed.
        chain
            .put(ops::Put {
                table: &t,
                key: "c",
                value: b"outage".to_vec(),
                condition: &Condition::None,
                expires_at_ms: 0,
            })
            .await
            .unwrap();
        set(&primary.down, false);
        let writes = [put("c")];
        let during = chain.write_batch(ops::WriteBatch { table: &t, writes: &writes }).await;
        if let Err(err) = during {
            assert_eq!(err.reason, ErrorReason::BackendUnavailable, "{err}");
        }
        replayed(&chain).await;
        chain.write_batch(ops::WriteBatch { table: &t, writes: &writes }).await.unwrap();
        assert_eq!(primary.inner.get(ops::Get { table: &t, key: "c" }).await.unwrap().value, b"v");
    }

    #[tokio::test]
    async fn the_journal_survives_a_proxy_restart_during_the_outage() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal.db");
        let (primary, standby) = (member(), member());
        let t = TableName::parse("table", "carts", "t").unwrap();
        {
            let chain = chain_of(&primary, &standby, &journal).await;
            chain.create_table(ops::CreateTable { table: &t }).await.unwrap();
            chain
                .put(ops::Put {
                    table: &t,
                    key: "k",
                    value: b"old".to_vec(),
                    condition: &Condition::None,
                    expires_at_ms: 0,
                })
                .await
                .unwrap();
            set(&primary.down, true);
            chain
                .put(ops::Put {
                    table: &t,
                    key: "k",
                    value: b"new".to_vec(),
                    condition: &Condition::None,
                    expires_at_ms: 0,
                })
                .await
                .unwrap();
        }
        // A new proxy on the same journal, with the primary back: it replays what the old took.
        set(&primary.down, false);
        let chain = chain_of(&primary, &standby, &journal).await;
        assert_eq!(
            chain.get(ops::Get { table: &t, key: "k" }).await.unwrap().value,
            b"new",
            "read from the standby until replayed"
        );
        replayed(&chain).await;
        assert_eq!(primary.inner.get(ops::Get { table: &t, key: "k" }).await.unwrap().value, b"new");
    }

    #[tokio::test]
    async fn a_journaled_key_whose_table_is_gone_does_not_hold_up_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let (primary, standby) = (member(), member());
        let chain = chain_of(&primary, &standby, &dir.path().join("journal.db")).await;
        let (gone, kept) = (
            TableName::parse("table", "gone", "t").unwrap(),
            TableName::parse("table", "kept", "t").unwrap(),
        );
        for t in [&gone, &kept] {
            chain.create_table(ops::CreateTable { table: t }).await.unwrap();
        }
        set(&primary.down, true);
        for t in [&gone, &kept] {
            chain
                .put(ops::Put {
                    table: t,
                    key: "k",
                    value: b"during".to_vec(),
                    condition: &Condition::None,
                    expires_at_ms: 0,
                })
                .await
                .unwrap();
        }
        // Dropped on the standby by hand before the primary returns.
        standby.inner.delete_table(ops::DeleteTable { table: &gone }).await.unwrap();
        set(&primary.down, false);
        replayed(&chain).await;
        assert_eq!(primary.inner.get(ops::Get { table: &kept, key: "k" }).await.unwrap().value, b"during");
    }

    #[tokio::test]
    async fn a_hung_primary_is_set_aside_within_the_member_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let (primary, standby) = (member(), member());
        let chain = chain_of(&primary, &standby, &dir.path().join("journal.db")).await;
        let t = TableName::parse("table", "carts", "t").unwrap();
        chain.create_table(ops::CreateTable { table: &t }).await.unwrap();
        set(&primary.hung, true);
        let started = std::time::Instant::now();
        chain
            .put(ops::Put {
                table: &t,
                key: "k",
                value: b"v".to_vec(),
                condition: &Condition::None,
                expires_at_ms: 0,
            })
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_millis(400), "took {:?}", started.elapsed());
        let started = std::time::Instant::now();
        assert_eq!(chain.get(ops::Get { table: &t, key: "k" }).await.unwrap().value, b"v");
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "the hung member is skipped: {:?}",
            started.elapsed()
        );
        set(&primary.hung, false);
        replayed(&chain).await;
        assert_eq!(primary.inner.get(ops::Get { table: &t, key: "k" }).await.unwrap().value, b"v");
    }
}
