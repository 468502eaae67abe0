//! One SQLite file driven by one writer thread, for the embedded (durable, local) backends.
//!
//! Calls queue up as jobs. The thread takes every job waiting at that moment, runs them in one
//! transaction (each under its own savepoint, so a failing job undoes only its own writes),
//! commits once, and only then answers the callers. Concurrent writers therefore share one fsync
//! (group commit), and a write is acknowledged only once it is durable (`synchronous=FULL`).
//!
//! Each store keeps a piece of state `S` on the writer thread (e.g. a name → id cache). It is
//! reset to `S::default()` if a commit fails, so it can never disagree with what is on disk.
//!
//! **A full disk** must not lock consumers out of the data that filled it. Beside the database
//! the store keeps a reserve file ([`RESERVE_BYTES`]). Before each group it looks at the free
//! space: when the file system runs low the reserve is released, and from then on only
//! *draining* jobs ([`SqliteStore::run_adding_nothing`]: receives, acks, deletes, purges) run — on the
//! released space — while writes that add data answer STORAGE_FULL without running. Space freed
//! inside the database (pages of deleted rows) lets writes in again; the reserve comes back once
//! the file system has room for it. Opening writes nothing when the schema is current, so a
//! proxy killed on a full disk starts again.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

use exo_proto::common::v1::ErrorReason;
use exo_proxy_core::{ExoError, ExoResult};
use rusqlite::{Connection, Transaction};
use tokio::sync::oneshot;

pub use rusqlite;

pub mod journal;

/// Most jobs committed together.
const MAX_GROUP: usize = 512;

/// Space kept aside for draining a full disk (receives, acks, deletes need WAL space).
pub const RESERVE_BYTES: u64 = 8 * 1024 * 1024;
/// Below this much free space the reserve is released and only draining jobs run.
const LOW_BYTES: u64 = 1024 * 1024;

type Completion = Box<dyn FnOnce(Option<&ExoError>) + Send>;
/// Runs a job in the group's transaction, or (given `None`) refuses it unrun.
type Work<S> =
    Box<dyn for<'t, 'c> FnOnce(Option<(&'t Transaction<'c>, &'t mut S)>) -> (bool, Completion) + Send>;

/// A unit of work for the writer thread, and whether it may run on a full disk.
struct Job<S> {
    work: Work<S>,
    draining: bool,
}

/// STORAGE_FULL: the disk under the embedded store is full.
pub fn storage_full(what: &str) -> ExoError {
    ExoError::new(
        ErrorReason::StorageFull,
        format!(
            "{what}: the embedded store's disk is full; writes are refused until space is freed \
             (receives, acks and deletes still work)"
        ),
    )
}

/// Maps a SQLite error to the contract: a full disk is STORAGE_FULL, anything else makes the
/// store unavailable (retryable).
pub fn db_error(err: rusqlite::Error) -> ExoError {
    if err.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
        return storage_full("the write did not fit");
    }
    ExoError::unavailable(format!("embedded store error: {err}"))
}

/// Free bytes on the file system holding `dir` (for an unprivileged writer).
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes only into `stat`; `path` is a valid NUL-terminated string.
    unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(path.as_ptr(), &mut stat) == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
    }
}

/// The reserve file beside the database, and whether it is in place.
struct Reserve {
    path: PathBuf,
    dir: PathBuf,
    /// The file is in place (set by the thread that writes it).
    present: Arc<AtomicBool>,
    /// A thread is writing it: writing 8 MiB and syncing is kept off the start-up path and off
    /// the writer thread.
    writing: Arc<AtomicBool>,
}

impl Reserve {
    fn new(db: &Path) -> Self {
        let mut name = db.file_name().unwrap_or_default().to_os_string();
        name.push(".reserve");
        let dir = db.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_owned();
        let present = db.with_file_name(&name).metadata().is_ok_and(|m| m.len() >= RESERVE_BYTES);
        Self {
            path: db.with_file_name(name),
            dir,
            present: Arc::new(AtomicBool::new(present)),
            writing: Arc::new(AtomicBool::new(false)),
        }
    }

    fn present(&self) -> bool {
        self.present.load(Ordering::Acquire)
    }

    /// Starts writing the reserve file in the background if there is room for it and a margin;
    /// never fails the caller. Until it is in place, [`Reserve::admits_writes`] counts its size
    /// as taken.
    fn restore(&mut self) {
        if self.present()
            || self.writing.load(Ordering::Acquire)
            || free_bytes(&self.dir).is_none_or(|free| free < RESERVE_BYTES + 2 * LOW_BYTES)
        {
            return;
        }
        self.writing.store(true, Ordering::Release);
        let (path, present, writing) = (self.path.clone(), self.present.clone(), self.writing.clone());
        let spawned = thread::Builder::new().name("disk-reserve".into()).spawn(move || {
            let written = (|| -> std::io::Result<()> {
                use std::io::Write as _;
                let mut file = std::fs::File::create(&path)?;
                let block = vec![0u8; 1024 * 1024];
                for _ in 0..RESERVE_BYTES / block.len() as u64 {
                    file.write_all(&block)?;
                }
                file.sync_all()
            })();
            match written {
                Ok(()) => {
                    present.store(true, Ordering::Release);
                    tracing::info!(path = %path.display(), "disk space reserve in place");
                }
                Err(err) => {
                    let _ = std::fs::remove_file(&path);
                    tracing::warn!(error = %err, "cannot write the disk space reserve yet");
                }
            }
            writing.store(false, Ordering::Release);
        });
        if spawned.is_err() {
            self.writing.store(false, Ordering::Release);
        }
    }

    fn release(&mut self) {
        if self.writing.load(Ordering::Acquire) {
            return; // still being written: counted as taken meanwhile, released next time
        }
        if std::fs::remove_file(&self.path).is_ok() || !self.path.exists() {
            self.present.store(false, Ordering::Release);
            tracing::warn!(path = %self.path.display(), "disk almost full: reserve released; only receives, acks and deletes run until space is freed");
        }
    }

    /// Whether writes that add data may run now: the free space, not counting what the
    /// released reserve gave back for draining, plus the database's own free pages.
    fn admits_writes(&mut self, conn: &Connection) -> bool {
        let Some(mut free) = free_bytes(&self.dir) else { return true };
        if self.present() && free < LOW_BYTES {
            self.release();
            free = free_bytes(&self.dir).unwrap_or(free);
        }
        if !self.present() {
            self.restore();
        }
        // A reserve not in place (released, or still being written) counts as taken.
        let spare = if self.present() { free } else { free.saturating_sub(RESERVE_BYTES) };
        if spare > LOW_BYTES {
            // The usual case: one statvfs per group commit, nothing asked of SQLite.
            return true;
        }
        let pragma = |name: &str, default: i64| {
            conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0)).unwrap_or(default).max(0)
                as u64
        };
        // Low on disk: pages freed inside the database (by draining) can still take writes.
        spare + pragma("freelist_count", 0) * pragma("page_size", 4096) > LOW_BYTES
    }
}

/// The `user_version` a schema script sets (`PRAGMA user_version = N;`), if any.
fn schema_version(schema: &str) -> Option<i64> {
    let at = schema.find("user_version")?;
    let rest = schema[at + "user_version".len()..].trim_start().strip_prefix('=')?;
    rest.trim_start().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
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
        // A current schema is not applied again: opening must write nothing (a full disk).
        let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(db_error)?;
        if schema_version(schema).is_none_or(|wanted| current < wanted) {
            conn.execute_batch(schema).map_err(db_error)?;
        }
        let mut reserve = Reserve::new(path);
        reserve.restore();
        let (jobs, inbox) = mpsc::channel::<Job<S>>();
        thread::Builder::new()
            .name(thread_name.to_owned())
            .spawn(move || writer_loop(conn, inbox, reserve))
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
        self.submit(work, false).await
    }

    /// Like [`Self::run`], for work that adds no data (a receive, an ack, a delete, a purge, a
    /// read): it runs on a full disk too, so consumers can drain what filled it.
    pub async fn run_adding_nothing<T, F>(&self, work: F) -> ExoResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, &mut S) -> ExoResult<T> + Send + 'static,
    {
        self.submit(work, true).await
    }

    async fn submit<T, F>(&self, work: F, draining: bool) -> ExoResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, &mut S) -> ExoResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let work: Work<S> = Box::new(move |running| {
            let result = match running {
                // The caller gave up (a deadline, a closed connection) before the job's turn:
                // it does nothing, so a receive nobody waits for hides no messages.
                _ if reply.is_closed() => Err(ExoError::unavailable("the caller went away before its turn")),
                Some((txn, state)) => work(txn, state),
                None => Err(storage_full("the write was refused")),
            };
            let succeeded = result.is_ok();
            let completion: Completion = Box::new(move |commit_error: Option<&ExoError>| {
                let _ = reply.send(match commit_error {
                    None => result,
                    Some(err) => Err(err.clone()),
                });
            });
            (succeeded, completion)
        });
        self.jobs
            .send(Job { work, draining })
            .map_err(|_| ExoError::unavailable("embedded store writer has stopped"))?;
        answer.await.map_err(|_| ExoError::unavailable("embedded store writer has stopped"))?
    }
}

fn writer_loop<S: Default>(mut conn: Connection, inbox: mpsc::Receiver<Job<S>>, mut reserve: Reserve) {
    let mut state = S::default();
    while let Ok(first) = inbox.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match inbox.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        if !reserve.admits_writes(&conn) {
            let (draining, refused): (Vec<_>, Vec<_>) = jobs.into_iter().partition(|job| job.draining);
            for job in refused {
                let (_, complete) = (job.work)(None);
                complete(None);
            }
            jobs = draining;
            if jobs.is_empty() {
                continue;
            }
        }
        let mut completions = Vec::with_capacity(jobs.len());
        // Jobs never started (an error before their turn) are dropped; their callers see the
        // store as unavailable and nothing of theirs was written.
        let outcome = (|| -> ExoResult<()> {
            let txn = conn.transaction().map_err(db_error)?;
            for job in jobs {
                txn.execute_batch("SAVEPOINT job").map_err(db_error)?;
                let (succeeded, completion) = (job.work)(Some((&txn, &mut state)));
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
    async fn a_job_whose_caller_left_before_its_turn_does_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store: SqliteStore<()> =
            SqliteStore::open(&dir.path().join("t.db"), "CREATE TABLE t (v INTEGER);", "test-writer")
                .unwrap();
        // Hold the writer busy, then give up on an insert queued behind it.
        let busy = store.run(|_, _| {
            std::thread::sleep(Duration::from_millis(400));
            Ok(())
        });
        let abandoned = tokio::time::timeout(
            Duration::from_millis(100),
            store.run(|txn, _| txn.execute("INSERT INTO t VALUES (1)", []).map(drop).map_err(db_error)),
        );
        let (busy, abandoned) = tokio::join!(busy, abandoned);
        busy.unwrap();
        assert!(abandoned.is_err(), "the insert should still have been queued at 100 ms");
        let count: i64 = store
            .run(|txn, _| txn.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).map_err(db_error))
            .await
            .unwrap();
        assert_eq!(count, 0, "an insert nobody waited for was written");
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
