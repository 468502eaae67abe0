//! `fs`: objects as files on local disk, durable and atomic.
//!
//! Layout under the data root:
//! - `index.db` — SQLite (through [`SqliteStore`]): buckets, and per object its key, attributes
//!   and the name of the file holding its bytes;
//! - `blobs/<xx>/<id>` — one immutable file per stored object version;
//! - `tmp/<id>` — uploads in progress.
//!
//! Keys never become paths, so no key (`..`, absolute, `%2F`, backslashes, unicode, 1024 bytes,
//! or the name of one of these files) can escape the root or collide with the store's own files.
//! A put streams into `tmp/`, fsyncs, renames into `blobs/`, and only then switches the index
//! entry in one transaction that also checks the write condition; readers therefore see the old
//! object or the new one, never a partial one, and a crash leaves at most an orphan file, removed
//! at the next start. Memory stays bounded whatever the object size.

use std::{
    collections::HashSet,
    io::ErrorKind,
    path::{Path, PathBuf},
    sync::Arc,
};

use async_trait::async_trait;
use exo_proto::{common::v1::ErrorReason, object::v1 as pb};
use exo_proxy_core::{ExoError, ExoResult, now_ms};
use exo_sqlite::{
    SqliteStore, db_error,
    rusqlite::{self, OptionalExtension, Transaction, params},
};
use futures::StreamExt as _;
use tokio::io::{AsyncWriteExt as _, BufWriter};

use crate::ops;
use crate::{
    backend::ObjectStore,
    listing::{Page, list_page},
    model::{
        BucketName, ByteStream, Capability, Descriptor, Presigned, PutMeta, READ_CHUNK, WriteCondition,
        bucket_not_found, check_upload_size, local_limits, new_etag, object_not_found,
    },
    presign::LocalPresigner,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT PRIMARY KEY,
    created_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL REFERENCES buckets(name),
    key BLOB NOT NULL,
    blob TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    content_type TEXT NOT NULL,
    metadata TEXT NOT NULL,
    last_modified_ms INTEGER NOT NULL,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
PRAGMA user_version = 1;
";

/// Upload write buffer.
const WRITE_BUFFER: usize = 256 * 1024;

/// Chunks ([`READ_CHUNK`] each) being read while the consumer sends the current one.
const READ_AHEAD: usize = 4;

/// `length` bytes of `file` from `offset`, each chunk read on the blocking pool straight into
/// its own buffer (no intermediate copy) and the next ones already being read while the
/// current one goes out: disk and network overlap, and a blocking thread is held only for the
/// duration of one read, however slowly the client takes the bytes.
fn read_ahead(file: std::fs::File, offset: u64, length: u64) -> ByteStream {
    let file = Arc::new(file);
    let end = offset.saturating_add(length);
    let starts = (offset..end).step_by(READ_CHUNK);
    let chunks = futures::stream::iter(starts).map(move |start| {
        let file = file.clone();
        let want = usize::try_from((end - start).min(READ_CHUNK as u64)).unwrap_or(READ_CHUNK);
        async move {
            match tokio::task::spawn_blocking(move || read_exact_at(&file, start, want)).await {
                Ok(read) => read,
                Err(err) => Err(ExoError::internal(format!("reading an object failed: {err}"))),
            }
        }
    });
    Box::pin(chunks.buffered(READ_AHEAD))
}

/// Exactly `want` bytes at `start`; a file shorter than its index entry says is an error, never
/// a silently short object.
fn read_exact_at(file: &std::fs::File, start: u64, want: usize) -> ExoResult<bytes::Bytes> {
    use std::os::unix::fs::FileExt as _;
    let mut buffer = vec![0u8; want];
    let mut filled = 0;
    while filled < want {
        match file.read_at(&mut buffer[filled..], start + filled as u64) {
            Ok(0) => {
                return Err(ExoError::internal(format!(
                    "object file ends at {} bytes, short of its recorded size",
                    start + filled as u64
                )));
            }
            Ok(n) => filled += n,
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(io_error("read object", err)),
        }
    }
    Ok(bytes::Bytes::from(buffer))
}

/// The settings of an `fs` backend.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FsConfig {
    /// The data root; created if missing.
    #[serde(default = "default_root")]
    pub root: PathBuf,
}

fn default_root() -> PathBuf {
    PathBuf::from(".exo/objects")
}

impl Default for FsConfig {
    fn default() -> Self {
        Self { root: default_root() }
    }
}

impl exo_proxy_core::registry::Backend for FsObjects {
    type Opened = Arc<dyn ObjectStore>;
    type Context = crate::services::OpenContext;
    type Config = FsConfig;

    fn settings(data: Option<PathBuf>) -> FsConfig {
        FsConfig { root: data.unwrap_or_else(default_root) }
    }

    fn set_data_path(config: &mut FsConfig, data: PathBuf) {
        config.root = data;
    }

    fn open<'a>(
        config: &'a FsConfig,
        context: &'a Self::Context,
    ) -> exo_proxy_core::registry::BoxFuture<'a, ExoResult<Self::Opened>> {
        Box::pin(async move {
            let store: Self::Opened = Arc::new(FsObjects::open(&config.root, context.presigner.clone())?);
            Ok(store)
        })
    }
}

/// The filesystem object backend.
pub struct FsObjects {
    descriptor: Descriptor,
    root: PathBuf,
    store: SqliteStore<()>,
    presigner: Arc<LocalPresigner>,
}

impl std::fmt::Debug for FsObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsObjects").field("root", &self.root).finish_non_exhaustive()
    }
}

fn io_error(context: &str, err: std::io::Error) -> ExoError {
    if err.kind() == std::io::ErrorKind::StorageFull {
        return exo_sqlite::storage_full(&format!("filesystem ({context})"));
    }
    ExoError::unavailable(format!("filesystem error ({context}): {err}"))
}

struct Row {
    info: pb::ObjectInfo,
    blob: String,
}

fn read_row(txn: &Transaction<'_>, bucket: &str, key: &str) -> ExoResult<Option<Row>> {
    txn.query_row(
        "SELECT blob, size, etag, content_type, metadata, last_modified_ms FROM objects WHERE bucket = ?1 AND key = ?2",
        params![bucket, key.as_bytes()],
        |r| {
            let metadata: String = r.get(4)?;
            Ok(Row {
                blob: r.get(0)?,
                info: pb::ObjectInfo {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    size: r.get::<_, i64>(1)? as u64,
                    etag: r.get(2)?,
                    content_type: r.get(3)?,
                    metadata: serde_json::from_str(&metadata).unwrap_or_default(),
                    last_modified_ms: r.get::<_, i64>(5)? as u64,
                },
            })
        },
    )
    .optional()
    .map_err(db_error)
}

fn require_bucket(txn: &Transaction<'_>, bucket: &str) -> ExoResult<()> {
    let found: Option<i64> = txn
        .query_row("SELECT 1 FROM buckets WHERE name = ?1", [bucket], |r| r.get(0))
        .optional()
        .map_err(db_error)?;
    found.map(|_| ()).ok_or_else(|| bucket_not_found(bucket))
}

/// Writes the index entry of a stored blob if `condition` holds; returns the info and the blob
/// it replaced.
fn publish(
    txn: &Transaction<'_>,
    mut info: pb::ObjectInfo,
    blob: &str,
    condition: &WriteCondition,
) -> ExoResult<(pb::ObjectInfo, Option<String>)> {
    require_bucket(txn, &info.bucket)?;
    let current = read_row(txn, &info.bucket, &info.key)?;
    condition.check(current.as_ref().map(|r| r.info.etag.as_str()), &info.bucket, &info.key)?;
    info.etag = new_etag();
    info.last_modified_ms = now_ms();
    let metadata = serde_json::to_string(&info.metadata)
        .map_err(|e| ExoError::internal(format!("cannot encode metadata: {e}")))?;
    txn.execute(
        "INSERT INTO objects (bucket, key, blob, size, etag, content_type, metadata, last_modified_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT(bucket, key) DO UPDATE SET blob = excluded.blob, size = excluded.size, etag = excluded.etag,
             content_type = excluded.content_type, metadata = excluded.metadata, last_modified_ms = excluded.last_modified_ms",
        params![
            info.bucket,
            info.key.as_bytes(),
            blob,
            info.size as i64,
            info.etag,
            info.content_type,
            metadata,
            info.last_modified_ms as i64
        ],
    )
    .map_err(db_error)?;
    Ok((info, current.map(|r| r.blob)))
}

impl FsObjects {
    /// Opens (creating if needed) a store under `root`, clearing unfinished uploads and files
    /// no index entry refers to (left by a crash).
    pub fn open(root: &Path, presigner: Arc<LocalPresigner>) -> ExoResult<Self> {
        for dir in ["blobs", "tmp"] {
            std::fs::create_dir_all(root.join(dir)).map_err(|e| io_error("create data directories", e))?;
        }
        let index = root.join("index.db");
        collect_garbage(root, &index)?;
        use Capability::*;
        Ok(Self {
            descriptor: Descriptor {
                backend: "fs",
                capabilities: [
                    ConditionalCreate,
                    ConditionalReplace,
                    Presign,
                    Copy,
                    RangeRead,
                    IdempotentDelete,
                ]
                .into(),
                limits: local_limits(0),
            },
            root: root.to_owned(),
            store: SqliteStore::open(&index, SCHEMA, "eos-fs-index")?,
            presigner,
        })
    }

    fn blob_path(&self, blob: &str) -> PathBuf {
        self.root.join("blobs").join(blob)
    }

    /// A new blob name, spread over 256 directories by its random tail.
    fn new_blob() -> String {
        let id = uuid::Uuid::now_v7().simple().to_string();
        format!("{}/{id}", &id[id.len() - 2..])
    }

    /// Moves a finished file into `blobs/` durably.
    async fn install(&self, from: &Path, blob: &str) -> ExoResult<()> {
        let to = self.blob_path(blob);
        let dir = to.parent().map(Path::to_owned).unwrap_or_else(|| self.root.join("blobs"));
        tokio::fs::create_dir_all(&dir).await.map_err(|e| io_error("create blob directory", e))?;
        tokio::fs::rename(from, &to).await.map_err(|e| io_error("publish blob", e))?;
        // The rename is durable only once its directory is synced.
        let dir = tokio::fs::File::open(&dir).await.map_err(|e| io_error("open blob directory", e))?;
        dir.sync_all().await.map_err(|e| io_error("sync blob directory", e))
    }

    async fn discard(&self, blob: &str) {
        if let Err(err) = tokio::fs::remove_file(self.blob_path(blob)).await
            && err.kind() != ErrorKind::NotFound
        {
            tracing::warn!(blob, error = %err, "cannot remove replaced blob; it will be collected at the next start");
        }
    }

    async fn lookup(&self, bucket: &BucketName, key: &str) -> ExoResult<Row> {
        let (b, k) = (bucket.to_string(), key.to_owned());
        self.store
            .run_adding_nothing(move |txn, _| {
                require_bucket(txn, &b)?;
                read_row(txn, &b, &k)?.ok_or_else(|| object_not_found(&b, &k))
            })
            .await
    }

    /// Receives an upload into `tmp/`, fsynced; returns its path and size. Removes it on failure.
    async fn receive(&self, meta: &PutMeta, mut body: ByteStream) -> ExoResult<(PathBuf, u64)> {
        let tmp = self.root.join("tmp").join(uuid::Uuid::now_v7().simple().to_string());
        let written = async {
            let file = tokio::fs::File::create(&tmp).await.map_err(|e| io_error("create upload file", e))?;
            let mut writer = BufWriter::with_capacity(WRITE_BUFFER, file);
            let mut received = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                received += chunk.len() as u64;
                check_upload_size(received, meta, false)?;
                writer.write_all(&chunk).await.map_err(|e| io_error("write upload", e))?;
            }
            check_upload_size(received, meta, true)?;
            writer.flush().await.map_err(|e| io_error("write upload", e))?;
            writer.into_inner().sync_all().await.map_err(|e| io_error("sync upload", e))?;
            Ok(received)
        }
        .await;
        match written {
            Ok(size) => Ok((tmp, size)),
            Err(err) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(err)
            }
        }
    }
}

/// Removes unfinished uploads and blobs no index entry refers to.
fn collect_garbage(root: &Path, index: &Path) -> ExoResult<()> {
    if let Ok(entries) = std::fs::read_dir(root.join("tmp")) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if !index.exists() {
        return Ok(());
    }
    let conn = rusqlite::Connection::open(index).map_err(db_error)?;
    let has_table: bool = conn
        .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'objects'", [], |r| r.get::<_, i64>(0))
        .map_err(db_error)?
        > 0;
    if !has_table {
        return Ok(());
    }
    let mut stmt = conn.prepare("SELECT blob FROM objects").map_err(db_error)?;
    let live: HashSet<String> =
        stmt.query_map([], |r| r.get(0)).map_err(db_error)?.collect::<Result<_, _>>().map_err(db_error)?;
    let blobs = root.join("blobs");
    for dir in std::fs::read_dir(&blobs).map_err(|e| io_error("scan blobs", e))?.flatten() {
        let Ok(files) = std::fs::read_dir(dir.path()) else { continue };
        for file in files.flatten() {
            let name =
                format!("{}/{}", dir.file_name().to_string_lossy(), file.file_name().to_string_lossy());
            if !live.contains(&name) {
                tracing::info!(blob = %name, "removing orphan blob");
                let _ = std::fs::remove_file(file.path());
            }
        }
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for FsObjects {
    fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    async fn ready(&self) -> ExoResult<()> {
        self.store
            .run_adding_nothing(|txn, _| txn.query_row("SELECT 1", [], |_| Ok(())).map_err(db_error))
            .await
    }

    async fn create_bucket(&self, op: ops::CreateBucket<'_>) -> ExoResult<bool> {
        let ops::CreateBucket { bucket } = op;
        let b = bucket.to_string();
        self.store
            .run(move |txn, _| {
                let n = txn
                    .execute(
                        "INSERT INTO buckets (name, created_at_ms) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
                        params![b, now_ms() as i64],
                    )
                    .map_err(db_error)?;
                Ok(n == 1)
            })
            .await
    }

    async fn delete_bucket(&self, op: ops::DeleteBucket<'_>) -> ExoResult<()> {
        let ops::DeleteBucket { bucket } = op;
        let b = bucket.to_string();
        self.store
            .run_adding_nothing(move |txn, _| {
                require_bucket(txn, &b)?;
                let objects: i64 = txn
                    .query_row("SELECT count(*) FROM objects WHERE bucket = ?1", [&b], |r| r.get(0))
                    .map_err(db_error)?;
                if objects > 0 {
                    return Err(ExoError::new(
                        ErrorReason::NotEmpty,
                        format!("bucket '{b}' still holds {objects} objects"),
                    )
                    .with_resource(b.as_str()));
                }
                txn.execute("DELETE FROM buckets WHERE name = ?1", [&b]).map_err(db_error)?;
                Ok(())
            })
            .await
    }

    async fn list_buckets(&self, _op: ops::ListBuckets) -> ExoResult<Vec<String>> {
        self.store
            .run_adding_nothing(|txn, _| {
                let mut stmt =
                    txn.prepare_cached("SELECT name FROM buckets ORDER BY name").map_err(db_error)?;
                let names = stmt.query_map([], |r| r.get(0)).map_err(db_error)?;
                names.collect::<Result<Vec<String>, _>>().map_err(db_error)
            })
            .await
    }

    async fn put(&self, op: ops::Put<'_>, body: ByteStream) -> ExoResult<pb::ObjectInfo> {
        let ops::Put { bucket, key, meta } = op;
        // Fail before taking any bytes when the bucket is missing or create-only cannot hold;
        // the decisive check is repeated atomically at publish time.
        let (b, k, create_only) =
            (bucket.to_string(), key.to_owned(), meta.condition == WriteCondition::CreateOnly);
        self.store
            .run(move |txn, _| {
                require_bucket(txn, &b)?;
                if create_only {
                    let current = read_row(txn, &b, &k)?;
                    WriteCondition::CreateOnly.check(
                        current.as_ref().map(|r| r.info.etag.as_str()),
                        &b,
                        &k,
                    )?;
                }
                Ok(())
            })
            .await?;
        let (tmp, size) = self.receive(&meta, body).await?;
        let blob = Self::new_blob();
        if let Err(err) = self.install(&tmp, &blob).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(err);
        }
        let info = pb::ObjectInfo {
            bucket: bucket.to_string(),
            key: key.to_owned(),
            size,
            content_type: meta.content_type,
            metadata: meta.metadata,
            ..Default::default()
        };
        let (condition, new_blob) = (meta.condition, blob.clone());
        match self.store.run(move |txn, _| publish(txn, info, &new_blob, &condition)).await {
            Ok((info, replaced)) => {
                if let Some(old) = replaced {
                    self.discard(&old).await;
                }
                Ok(info)
            }
            Err(err) => {
                self.discard(&blob).await;
                Err(err)
            }
        }
    }

    async fn get(&self, op: ops::Get<'_>) -> ExoResult<(pb::ObjectInfo, (u64, u64), ByteStream)> {
        let ops::Get { bucket, key, range, condition } = op;
        // A concurrent overwrite may remove the file between the lookup and the open; the new
        // version is then found on the next lookup. An open file stays readable after removal.
        for _ in 0..3 {
            let row = self.lookup(bucket, key).await?;
            condition.check(&row.info.etag, bucket.as_str(), key)?;
            let (offset, length) = match range {
                Some(range) => range.resolve(row.info.size)?,
                None => (0, row.info.size),
            };
            let path = self.blob_path(&row.blob);
            let file = match tokio::task::spawn_blocking(move || std::fs::File::open(path)).await {
                Ok(Ok(file)) => file,
                Ok(Err(err)) if err.kind() == ErrorKind::NotFound => continue,
                Ok(Err(err)) => return Err(io_error("open object", err)),
                Err(err) => return Err(ExoError::internal(format!("opening an object failed: {err}"))),
            };
            return Ok((row.info, (offset, length), read_ahead(file, offset, length)));
        }
        Err(ExoError::unavailable(format!("{bucket}/{key} kept changing while being opened; retry")))
    }

    async fn head(&self, op: ops::Head<'_>) -> ExoResult<pb::ObjectInfo> {
        let ops::Head { bucket, key } = op;
        Ok(self.lookup(bucket, key).await?.info)
    }

    async fn delete(&self, op: ops::Delete<'_>) -> ExoResult<()> {
        let ops::Delete { bucket, key, if_match } = op;
        let (b, k, if_match) = (bucket.to_string(), key.to_owned(), if_match.map(str::to_owned));
        let removed = self
            .store
            .run_adding_nothing(move |txn, _| {
                require_bucket(txn, &b)?;
                let current = read_row(txn, &b, &k)?;
                if let Some(want) = if_match {
                    WriteCondition::IfMatch(want).check(
                        current.as_ref().map(|r| r.info.etag.as_str()),
                        &b,
                        &k,
                    )?;
                }
                txn.execute("DELETE FROM objects WHERE bucket = ?1 AND key = ?2", params![b, k.as_bytes()])
                    .map_err(db_error)?;
                Ok(current.map(|r| r.blob))
            })
            .await?;
        if let Some(blob) = removed {
            self.discard(&blob).await;
        }
        Ok(())
    }

    async fn list(&self, op: ops::List<'_>) -> ExoResult<Page> {
        let ops::List { bucket, prefix, delimiter, resume, limit } = op;
        let (b, prefix, delimiter) = (bucket.to_string(), prefix.to_owned(), delimiter.to_owned());
        self.store
            .run_adding_nothing(move |txn, _| {
                require_bucket(txn, &b)?;
                let mut stmt = txn
                    .prepare_cached(
                        "SELECT key, size, etag, content_type, metadata, last_modified_ms FROM objects
                         WHERE bucket = ?1 AND (key > ?2 OR (?3 AND key = ?2)) AND (?4 IS NULL OR key < ?4)
                         ORDER BY key LIMIT ?5",
                    )
                    .map_err(db_error)?;
                list_page(&prefix, &delimiter, resume, limit, |lower, inclusive, upper, n| {
                    let rows = stmt
                        .query_map(params![b, lower, inclusive, upper, n as i64], |r| {
                            let key: Vec<u8> = r.get(0)?;
                            let metadata: String = r.get(4)?;
                            Ok(pb::ObjectInfo {
                                bucket: b.clone(),
                                key: String::from_utf8_lossy(&key).into_owned(),
                                size: r.get::<_, i64>(1)? as u64,
                                etag: r.get(2)?,
                                content_type: r.get(3)?,
                                metadata: serde_json::from_str(&metadata).unwrap_or_default(),
                                last_modified_ms: r.get::<_, i64>(5)? as u64,
                            })
                        })
                        .map_err(db_error)?;
                    rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
                })
            })
            .await
    }

    async fn copy(&self, op: ops::Copy<'_>) -> ExoResult<pb::ObjectInfo> {
        let ops::Copy { source_bucket, source_key, bucket, key, condition } = op;
        for _ in 0..3 {
            let source = self.lookup(source_bucket, source_key).await?;
            // Blobs are immutable, so the copy can share the bytes through a hard link; its
            // attributes are its own row.
            let blob = Self::new_blob();
            let target = self.blob_path(&blob);
            if let Some(dir) = target.parent() {
                tokio::fs::create_dir_all(dir).await.map_err(|e| io_error("create blob directory", e))?;
            }
            match tokio::fs::hard_link(self.blob_path(&source.blob), &target).await {
                Ok(()) => {}
                Err(err) if err.kind() == ErrorKind::NotFound => continue,
                Err(_) => {
                    tokio::fs::copy(self.blob_path(&source.blob), &target)
                        .await
                        .map_err(|e| io_error("copy object", e))?;
                }
            }
            let info = pb::ObjectInfo { bucket: bucket.to_string(), key: key.to_owned(), ..source.info };
            let (condition, new_blob) = (condition.clone(), blob.clone());
            return match self.store.run(move |txn, _| publish(txn, info, &new_blob, &condition)).await {
                Ok((info, replaced)) => {
                    if let Some(old) = replaced {
                        self.discard(&old).await;
                    }
                    Ok(info)
                }
                Err(err) => {
                    self.discard(&blob).await;
                    Err(err)
                }
            };
        }
        Err(ExoError::unavailable(format!(
            "{source_bucket}/{source_key} kept changing while being copied; retry"
        )))
    }

    async fn presign(&self, op: ops::Presign<'_>) -> ExoResult<Presigned> {
        let ops::Presign { bucket, key, method, expires_at_ms } = op;
        let b = bucket.to_string();
        self.store.run_adding_nothing(move |txn, _| require_bucket(txn, &b)).await?;
        Ok(self.presigner.url(bucket.as_str(), key, method, expires_at_ms).into())
    }
}
