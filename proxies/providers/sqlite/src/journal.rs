//! The failover journal: which keys a standby took writes or deletes for while a member before
//! it was out, durable on local disk, so the failover layer can replay them onto the primary
//! before the primary serves those keys again — also after a proxy restart mid-outage.
//!
//! Lookups are served from memory (the journal is empty in normal operation: a read costs one
//! hash lookup); every change is committed before it is acknowledged.

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use exo_proxy_core::ExoResult;

use crate::{SqliteStore, db_error};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS journal (
    resource TEXT NOT NULL,
    key      TEXT NOT NULL,
    holder   INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    PRIMARY KEY (resource, key)
);
PRAGMA user_version = 1;
";

/// Where the newest state of a journaled key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// On this member of the chain.
    Member(u32),
    /// Deleted (the delete must reach the primary).
    Deleted,
}

impl Holder {
    fn to_sql(self) -> i64 {
        match self {
            Holder::Member(m) => i64::from(m),
            Holder::Deleted => -1,
        }
    }

    fn from_sql(value: i64) -> Self {
        u32::try_from(value).map(Holder::Member).unwrap_or(Holder::Deleted)
    }
}

/// A journaled key: its resource (table, bucket), key, holder and change number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The table or bucket.
    pub resource: String,
    /// The key.
    pub key: String,
    /// Where its newest state is.
    pub holder: Holder,
    /// Changes with every record of the key: a replay settles only what it copied.
    pub seq: u64,
}

/// The durable journal of one failover chain.
pub struct FailoverJournal {
    store: SqliteStore<()>,
    pending: Mutex<HashMap<(String, String), (Holder, u64)>>,
    next_seq: AtomicU64,
    exclusive: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for FailoverJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailoverJournal").field("pending", &self.len()).finish_non_exhaustive()
    }
}

impl FailoverJournal {
    /// Opens (creating if needed) the journal at `path` and loads what is pending.
    pub async fn open(path: &Path) -> ExoResult<Self> {
        let store: SqliteStore<()> = SqliteStore::open(path, SCHEMA, "failover-journal")?;
        let loaded = store
            .run_adding_nothing(|txn, _| {
                let mut stmt =
                    txn.prepare("SELECT resource, key, holder, seq FROM journal").map_err(db_error)?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                        ))
                    })
                    .map_err(db_error)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
            })
            .await?;
        let next = loaded.iter().map(|(_, _, _, seq)| *seq).max().unwrap_or(0).max(0) as u64 + 1;
        let pending = loaded
            .into_iter()
            .map(|(resource, key, holder, seq)| {
                ((resource, key), (Holder::from_sql(holder), seq.max(0) as u64))
            })
            .collect();
        Ok(Self {
            store,
            pending: Mutex::new(pending),
            next_seq: AtomicU64::new(next),
            exclusive: tokio::sync::Mutex::new(()),
        })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), (Holder, u64)>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the newest state of `key` is, if the journal holds it.
    pub fn lookup(&self, resource: &str, key: &str) -> Option<(Holder, u64)> {
        let map = self.map();
        if map.is_empty() {
            return None;
        }
        map.get(&(resource.to_owned(), key.to_owned())).copied()
    }

    /// Whether anything of `resource` is pending.
    pub fn holds_any_of(&self, resource: &str) -> bool {
        self.map().keys().any(|(r, _)| r == resource)
    }

    /// How many keys are pending.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }

    /// Up to `limit` pending keys.
    pub fn pending(&self, limit: usize) -> Vec<Pending> {
        self.map()
            .iter()
            .take(limit)
            .map(|((resource, key), (holder, seq))| Pending {
                resource: resource.clone(),
                key: key.clone(),
                holder: *holder,
                seq: *seq,
            })
            .collect()
    }

    /// Records that the newest state of `key` is at `holder`; durable when it returns.
    pub async fn record(&self, resource: &str, key: &str, holder: Holder) -> ExoResult<u64> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let (r, k) = (resource.to_owned(), key.to_owned());
        self.store
            .run(move |txn, _| {
                txn.execute(
                    "INSERT INTO journal (resource, key, holder, seq) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (resource, key) DO UPDATE SET holder = excluded.holder, seq = excluded.seq",
                    rusqlite::params![r, k, holder.to_sql(), seq as i64],
                )
                .map_err(db_error)
            })
            .await?;
        self.map().insert((resource.to_owned(), key.to_owned()), (holder, seq));
        Ok(seq)
    }

    /// Removes `key` if it is still at change `seq` (nothing newer was recorded meanwhile).
    pub async fn settle(&self, resource: &str, key: &str, seq: u64) -> ExoResult<bool> {
        if self.lookup(resource, key).is_none_or(|(_, now)| now != seq) {
            return Ok(false);
        }
        let (r, k) = (resource.to_owned(), key.to_owned());
        let removed = self
            .store
            .run_adding_nothing(move |txn, _| {
                txn.execute(
                    "DELETE FROM journal WHERE resource = ?1 AND key = ?2 AND seq = ?3",
                    rusqlite::params![r, k, seq as i64],
                )
                .map_err(db_error)
            })
            .await?;
        if removed > 0 {
            let mut map = self.map();
            if map.get(&(resource.to_owned(), key.to_owned())).is_some_and(|(_, now)| *now == seq) {
                map.remove(&(resource.to_owned(), key.to_owned()));
            }
        }
        Ok(removed > 0)
    }

    /// Records where `key`'s newest state is after a write member `index` of the chain took:
    /// nothing for the primary with nothing pending, settled when the primary now holds the
    /// newest, else journaled at that member.
    pub async fn after_write(&self, resource: &str, key: &str, index: usize) -> ExoResult<()> {
        match (index, self.lookup(resource, key)) {
            (0, None) => Ok(()),
            (0, Some((_, seq))) => self.settle(resource, key, seq).await.map(|_| ()),
            (member, _) => self.record(resource, key, Holder::Member(member as u32)).await.map(|_| ()),
        }
    }

    /// Runs `replay` every `interval` while something is pending and `primary_up()` says the
    /// primary answers, until `owner` is dropped (the failover layer that owns the journal).
    /// Does nothing outside a tokio runtime.
    pub fn spawn_replayer<O, F, Fut>(
        self: &std::sync::Arc<Self>,
        owner: std::sync::Weak<O>,
        interval: std::time::Duration,
        replay: F,
    ) where
        O: Send + Sync + 'static,
        F: Fn(std::sync::Arc<O>, std::sync::Arc<Self>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ExoResult<usize>> + Send,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let journal = std::sync::Arc::downgrade(self);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                let (Some(owner), Some(journal)) = (owner.upgrade(), journal.upgrade()) else { return };
                if journal.is_empty() {
                    continue;
                }
                match replay(owner, journal.clone()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        keys = n,
                        left = journal.len(),
                        "failover journal replayed onto the primary"
                    ),
                    Err(err) => tracing::warn!(error = %err, "failover journal replay paused"),
                }
            }
        });
    }

    /// Serialises changes to journaled keys with their replay (held briefly, only while the
    /// journal is not empty).
    pub async fn exclusive(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.exclusive.lock().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_survive_a_reopen_and_settle_only_what_was_copied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        {
            let journal = FailoverJournal::open(&path).await.unwrap();
            assert!(journal.is_empty() && journal.lookup("t", "k").is_none());
            let first = journal.record("t", "k", Holder::Member(1)).await.unwrap();
            let newer = journal.record("t", "k", Holder::Member(1)).await.unwrap();
            journal.record("t", "gone", Holder::Deleted).await.unwrap();
            assert!(!journal.settle("t", "k", first).await.unwrap(), "a newer change stays pending");
            assert_eq!(journal.lookup("t", "k"), Some((Holder::Member(1), newer)));
        }
        let journal = FailoverJournal::open(&path).await.unwrap();
        assert_eq!(journal.len(), 2, "pending keys survive a restart");
        assert_eq!(journal.lookup("t", "gone").map(|(h, _)| h), Some(Holder::Deleted));
        let (_, seq) = journal.lookup("t", "k").unwrap();
        assert!(journal.settle("t", "k", seq).await.unwrap());
        assert!(journal.lookup("t", "k").is_none() && journal.holds_any_of("t"));
        let later = journal.record("u", "k", Holder::Member(2)).await.unwrap();
        assert!(later > seq, "change numbers keep growing across restarts");
    }
}
