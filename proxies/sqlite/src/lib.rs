//! One SQLite file driven by one writer thread, for the embedded (durable, local) backends.
//!
//! Calls queue up as jobs. The thread takes every job waiting at that moment, runs them in one
//! transaction (each under its own savepoint, so a failing job undoes only its own writes),
//! commits once, and only then answers the callers. Concurrent writers therefore share one fsync
//! (group commit), and a write is acknowledged only once it is durable (`synchronous=FULL`).
//!
//! Each store keeps a piece of state `S` on the writer thread (e.g. a name → id cache). It is
//! reset to `S::default()` if a commit fails, so it can never disagree with what is on disk.

use std::{path::Path, sync::mpsc, thread, time::Duration};

use exo_proxy_core::{ExoError, ExoResult};
use rusqlite::{Connection, Transaction};
use tokio::sync::oneshot;

pub use rusqlite;

/// Most jobs committed together.
const MAX_GROUP: usize = 512;

type Completion = Box<dyn FnOnce(Option<&ExoError>) + Send>;
type Job<S> = Box<dyn FnOnce(&Transaction<'_>, &mut S) -> (bool, Completion) + Send>;

/// Maps a SQLite error to the contract: the store is unavailable (retryable).
pub fn db_error(err: rusqlite::Error) -> ExoError {
    ExoError::unavailable(format!("embedded store error: {err}"))
}

/// A handle on the writer thread of one database file. Dropping every handle stops the thread.
pub struct SqliteStore<S> {
    jobs: mpsc::Sender<Job<S>>,
}

impl<S> Clone for SqliteStore<S> {
    fn clone(&self) -> Self {
        Self { jobs: self.jobs.clone() }
    }
}

impl<S> std::fmt::Debug for SqliteStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl<S: Default + Send + 'static> SqliteStore<S> {
    /// Opens (creating if needed) the database at `path` with WAL and full fsync, applies
    /// `schema`, and starts the writer thread named `thread_name`.
    pub fn open(path: &Path, schema: &str, thread_name: &str) -> ExoResult<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|err| {
                ExoError::unavailable(format!("cannot create data directory {}: {err}", parent.display()))
            })?;
        }
        let conn = Connection::open(path)
            .map_err(|err| ExoError::unavailable(format!("cannot open {}: {err}", path.display())))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db_error)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(db_error)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db_error)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(db_error)?;
        conn.execute_batch(schema).map_err(db_error)?;
        let (jobs, inbox) = mpsc::channel::<Job<S>>();
        thread::Builder::new()
            .name(thread_name.to_owned())
            .spawn(move || writer_loop(conn, inbox))
            .map_err(|err| ExoError::internal(format!("cannot start writer thread: {err}")))?;
        Ok(Self { jobs })
    }

    /// Runs `work` in the writer thread's next transaction and answers after the commit.
    /// If `work` fails, its writes are rolled back and its error returned; if the commit fails,
    /// every job of the group gets the commit error and nothing of theirs is kept.
    pub async fn run<T, F>(&self, work: F) -> ExoResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, &mut S) -> ExoResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job<S> = Box::new(move |txn, state| {
            let result = work(txn, state);
            let succeeded = result.is_ok();
            let completion: Completion = Box::new(move |commit_error: Option<&ExoError>| {
                let _ = reply.send(match commit_error {
                    None => result,
                    Some(err) => Err(err.clone()),
                });
            });
            (succeeded, completion)
        });
        self.jobs.send(job).map_err(|_| ExoError::unavailable("embedded store writer has stopped"))?;
        answer.await.map_err(|_| ExoError::unavailable("embedded store writer has stopped"))?
    }
}

fn writer_loop<S: Default>(mut conn: Connection, inbox: mpsc::Receiver<Job<S>>) {
    let mut state = S::default();
    while let Ok(first) = inbox.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match inbox.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut completions = Vec::with_capacity(jobs.len());
        // Jobs never started (an error before their turn) are dropped; their callers see the
        // store as unavailable and nothing of theirs was written.
        let outcome = (|| -> ExoResult<()> {
            let txn = conn.transaction().map_err(db_error)?;
            for job in jobs {
                txn.execute_batch("SAVEPOINT job").map_err(db_error)?;
                let (succeeded, completion) = job(&txn, &mut state);
                completions.push(completion);
                let end = if succeeded { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
                txn.execute_batch(end).map_err(db_error)?;
            }
            txn.commit().map_err(db_error)
        })();
        match outcome {
            Ok(()) => completions.into_iter().for_each(|complete| complete(None)),
            Err(err) => {
                tracing::error!(error = %err, "embedded store transaction failed; nothing in it was kept");
                state = S::default();
                completions.into_iter().for_each(|complete| complete(Some(&err)));
            }
        }
    }
}

/// The smallest byte string greater than every string starting with `prefix`, for range scans
/// (`prefix <= key < successor`); `None` when no such bound exists (empty or all 0xFF).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut bound = prefix.to_vec();
    while let Some(last) = bound.pop() {
        if last < 0xFF {
            bound.push(last + 1);
            return Some(bound);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor_bounds_every_extension() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"\xff\xff"), None);
        assert_eq!(prefix_successor(b""), None);
    }

    #[tokio::test]
    async fn a_failing_job_undoes_only_its_own_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store: SqliteStore<()> =
            SqliteStore::open(&dir.path().join("t.db"), "CREATE TABLE t (v INTEGER);", "test-writer")
                .unwrap();
        let ok = store.run(|txn, _| {
            txn.execute("INSERT INTO t VALUES (1)", []).map_err(db_error)?;
            Ok(())
        });
        let bad = store.run(|txn, _| {
            txn.execute("INSERT INTO t VALUES (2)", []).map_err(db_error)?;
            Err::<(), _>(ExoError::internal("refused"))
        });
        let (ok, bad) = tokio::join!(ok, bad);
        ok.unwrap();
        assert!(bad.is_err());
        let values: Vec<i64> = store
            .run(|txn, _| {
                let mut stmt = txn.prepare("SELECT v FROM t ORDER BY v").map_err(db_error)?;
                let rows = stmt.query_map([], |r| r.get(0)).map_err(db_error)?;
                rows.collect::<Result<_, _>>().map_err(db_error)
            })
            .await
            .unwrap();
        assert_eq!(values, vec![1]);
    }
}
