//! Failover across an ordered chain of object stores (see the eos README, "Failover"). Writes go to the first
//! member that answers; buckets are created and deleted on every member. What keeps every
//! acknowledged upload and delete once the primary returns is the **journal** (`journal` in the
//! config, a local SQLite file, as in ekv): an upload or delete taken while a member before it is
//! out is recorded, durably, before it is acknowledged, with where the object's newest state is.
//! While an object is in the journal, reads and conditional writes of it go to the member that
//! holds it; a background task streams it onto the primary (or applies the delete on every
//! member) as soon as the primary answers its probe, and only then does the primary serve it
//! again. Without an entry, a read falls through on a miss, and a miss while some member is out is
//! UNAVAILABLE (that member may hold the object), never a false "not found".
//!
//! With the primary out: unconditional uploads and deletes are accepted (by the standby,
//! journaled) and win after fail-back; create-only and if-match writes and deletes are evaluated
//! by the member holding the object's newest state — the primary for an object the journal does
//! not hold, so they answer UNAVAILABLE rather than succeed on a guess; listings answer
//! UNAVAILABLE (they would be partial) until every member answers and the journal is replayed. A
//! streamed upload cannot be replayed on another member: if its member fails mid-stream the
//! upload fails and the client retries. ETags are a member's own. Presigned URLs name one member's
//! own service and bypass the journal: an upload through one during an outage is not replayed.
//! Replicas of a deployment each journal what they took (see ekv's failover for the guarantee).

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use exo_proto::{common::v1::ErrorReason, object::v1 as pb};
use exo_proxy_core::{
    ExoError, ExoResult,
    config::ConfigError,
    failover::{Chain, ChainDescription, PROBE_INTERVAL, is_outage},
    registry::BoxFuture,
};
use exo_sqlite::journal::{FailoverJournal, Holder};

use crate::ops;
use crate::{
    backend::ObjectStore,
    listing::Page,
    model::{
        BucketName, ByteStream, Descriptor, Presigned, PutMeta, ReadCondition, WriteCondition,
        nothing_to_match, object_not_found,
    },
    services::{BackendConfig, OpenContext},
};

/// The settings of a `failover` chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FailoverConfig {
    /// Members in priority order (at least one).
    pub members: Vec<BackendConfig>,
    /// The journal of uploads and deletes a standby takes while the primary is out (local,
    /// durable; replayed onto the primary before it serves those objects again).
    #[serde(default = "default_journal_path")]
    pub journal: std::path::PathBuf,
    /// The deadline of one call to one member (not a streamed upload's body).
    #[serde(default = "exo_proxy_core::failover::default_member_timeout", with = "humantime_serde")]
    pub member_timeout: Duration,
    /// How long a member that failed with an outage is set aside (each member its own, like a
    /// breaker that opens on the first outage); a probe re-admits it sooner once it answers.
    #[serde(default = "exo_proxy_core::failover::default_member_backoff", with = "humantime_serde")]
    pub member_backoff: Duration,
}

fn default_journal_path() -> std::path::PathBuf {
    std::path::PathBuf::from(".exo/eos-failover.db")
}

impl exo_proxy_core::registry::Backend for FailoverObjects {
    type Opened = Arc<dyn ObjectStore>;
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
                let member: Arc<dyn ObjectStore> =
                    Arc::new(crate::layers::Layered::new(member, observed, config.member_timeout));
                opened.push(member);
            }
            let journal = FailoverJournal::open(&config.journal).await?;
            let chain: Self::Opened = Arc::new(FailoverObjects::new(
                opened,
                journal,
                config.member_timeout,
                config.member_backoff,
            )?);
            Ok(chain)
        })
    }
}

/// A chain of object stores behaving as one.
pub struct FailoverObjects {
    chain: Arc<Chain<dyn ObjectStore>>,
    journal: Arc<FailoverJournal>,
    descriptor: ChainDescription<Descriptor>,
}

fn missing(err: &ExoError) -> bool {
    matches!(err.reason, ErrorReason::ObjectNotFound | ErrorReason::BucketNotFound)
}

/// Objects replayed per round.
const REPLAY_BATCH: usize = 64;
/// Uploads of at most this many bytes (by their announced length) are read whole first, so they
/// have the member deadline and move to the next member when one does not answer; larger ones
/// stream to one member.
const RETRYABLE_UPLOAD: u64 = 1024 * 1024;

/// Reads a small upload whole (its length is announced and at most [`RETRYABLE_UPLOAD`]).
async fn buffered(mut body: ByteStream, announced: u64) -> ExoResult<bytes::Bytes> {
    use futures::StreamExt as _;
    let mut buffer = bytes::BytesMut::with_capacity(announced as usize);
    while let Some(chunk) = body.next().await {
        buffer.extend_from_slice(&chunk?);
        if buffer.len() as u64 > announced {
            break; // the member's own length check reports it
        }
    }
    Ok(buffer.freeze())
}

fn once(bytes: bytes::Bytes) -> ByteStream {
    Box::pin(futures::stream::once(async move { Ok(bytes) }))
}

/// The chain's description from its members': capabilities every member has, the smallest of
/// each limit.
fn combined(members: &[Arc<dyn ObjectStore>]) -> ExoResult<Descriptor> {
    let first =
        members.first().ok_or_else(|| ExoError::internal("a failover chain needs at least one member"))?;
    let mut descriptor = first.descriptor().clone();
    descriptor.backend = exo_proxy_core::failover::CHAIN;
    for m in &members[1..] {
        let d = m.descriptor();
        descriptor.capabilities.retain(|c| d.capabilities.contains(c));
        let (l, o) = (&mut descriptor.limits, d.limits);
        l.max_object_bytes = match (l.max_object_bytes, o.max_object_bytes) {
            (0, other) | (other, 0) => other,
            (a, b) => a.min(b),
        };
        l.max_key_bytes = l.max_key_bytes.min(o.max_key_bytes);
        l.max_metadata_entries = l.max_metadata_entries.min(o.max_metadata_entries);
        l.max_metadata_bytes = l.max_metadata_bytes.min(o.max_metadata_bytes);
        l.max_page_size = l.max_page_size.min(o.max_page_size);
        l.max_presign_seconds = l.max_presign_seconds.min(o.max_presign_seconds);
    }
    Ok(descriptor)
}

impl FailoverObjects {
    /// Chains `members` in priority order (capabilities every member has, each limit the
    /// smallest; a limit of 0, "none", never wins over a real one) with its journal;
    /// `member_timeout` bounds each call to one member (not a streamed upload's body).
    pub fn new(
        members: Vec<Arc<dyn ObjectStore>>,
        journal: FailoverJournal,
        member_timeout: Duration,
        backoff: Duration,
    ) -> ExoResult<Self> {
        let descriptor = ChainDescription::new(combined(&members)?, members.iter().all(|m| m.is_described()));
        let chain = Arc::new(Chain::new(members)?.with_member_timeout(member_timeout).with_backoff(backoff));
        chain.spawn_probe(|m: Arc<dyn ObjectStore>| async move { m.ready().await });
        let objects = Self { chain, journal: Arc::new(journal), descriptor };
        objects.spawn_replay();
        Ok(objects)
    }

    /// Streams the journal onto the primary whenever the primary answers and something is
    /// pending; stops when the layer is dropped.
    fn spawn_replay(&self) {
        let max_bytes = self.descriptor().limits.max_object_bytes;
        self.journal.spawn_replayer(
            Arc::downgrade(&self.chain),
            PROBE_INTERVAL,
            move |chain, journal| async move {
                if !chain.is_available(0) {
                    return Ok(0);
                }
                replay(&chain, &journal, max_bytes).await
            },
        );
    }

    /// The member whose state is authoritative for `key`: the journal's holder, else the primary.
    fn authority(&self, bucket: &BucketName, key: &str) -> Option<Holder> {
        self.journal.lookup(bucket.as_str(), key).map(|(holder, _)| holder)
    }

    /// Deletes `key` on every member but `except`; a member that is out gets a tombstone. A
    /// missing bucket is the caller's error on the primary; a standby may lack it.
    async fn delete_everywhere(
        &self,
        bucket: &BucketName,
        key: &str,
        except: Option<usize>,
    ) -> ExoResult<()> {
        let gone = |index: usize, err: &ExoError| {
            err.reason == ErrorReason::ObjectNotFound
                || (index > 0 && err.reason == ErrorReason::BucketNotFound)
        };
        let (_, out) = self
            .chain
            .on_every_member_up(except, gone, |m| async move {
                m.delete(ops::Delete { bucket, key, if_match: None }).await
            })
            .await?;
        if out {
            self.journal.record(bucket.as_str(), key, Holder::Deleted).await?;
        } else if let Some((_, seq)) = self.journal.lookup(bucket.as_str(), key) {
            self.journal.settle(bucket.as_str(), key, seq).await?;
        }
        Ok(())
    }

    fn healthy(&self) -> bool {
        (0..self.chain.len()).all(|i| self.chain.is_available(i))
    }
}

/// Streams what the journal holds onto the primary; the number of objects settled. An outage
/// ends the round; an object whose bucket is gone is settled (nothing is left to copy); any other
/// failure leaves that object pending without holding up the others.
async fn replay(
    chain: &Chain<dyn ObjectStore>,
    journal: &FailoverJournal,
    max_bytes: u64,
) -> ExoResult<usize> {
    let mut settled = 0;
    for pending in journal.pending(REPLAY_BATCH) {
        let _exclusive = journal.exclusive().await;
        let Some((holder, seq)) = journal.lookup(&pending.resource, &pending.key) else { continue };
        match replay_object(chain, &pending.resource, &pending.key, holder, max_bytes).await {
            Ok(()) => {}
            Err(err) if is_outage(&err) => return Err(err),
            Err(err) if err.reason == ErrorReason::BucketNotFound => {
                tracing::warn!(bucket = %pending.resource, "failover journal: the bucket is gone; nothing to replay");
            }
            Err(err) => {
                tracing::warn!(bucket = %pending.resource, error = %err, "failover journal: object left pending");
                continue;
            }
        }
        if journal.settle(&pending.resource, &pending.key, seq).await? {
            settled += 1;
        }
    }
    Ok(settled)
}

/// Puts the newest state of one journaled object on the primary (a delete on every member).
async fn replay_object(
    chain: &Chain<dyn ObjectStore>,
    resource: &str,
    key: &str,
    holder: Holder,
    max_bytes: u64,
) -> ExoResult<()> {
    let bucket = &BucketName::parse("bucket", resource, "bucket")?;
    let deleted = match holder {
        Holder::Member(0) => false,
        Holder::Member(member) => {
            let source = chain
                .call(member as usize, |m| async move {
                    m.get(ops::Get { bucket, key, range: None, condition: &ReadCondition::default() }).await
                })
                .await;
            match source {
                Ok((info, _, body)) => {
                    // The copy streams: no member deadline on the body.
                    let primary =
                        chain.get(0).ok_or_else(|| ExoError::internal("a chain has a first member"))?;
                    let meta = PutMeta::copy_of(info, WriteCondition::None, max_bytes);
                    if let Err(err) = primary.put(ops::Put { bucket, key, meta }, body).await {
                        chain.note(0, &err);
                        return Err(err);
                    }
                    false
                }
                Err(err) if err.reason == ErrorReason::ObjectNotFound => true,
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
                |_, err| err.reason == ErrorReason::ObjectNotFound,
                |m| async move { m.delete(ops::Delete { bucket, key, if_match: None }).await },
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
impl ObjectStore for FailoverObjects {
    fn descriptor(&self) -> &Descriptor {
        let members = || self.chain.all().map(|(_, m)| m.clone()).collect::<Vec<_>>();
        self.descriptor.get(|| self.chain.all().all(|(_, m)| m.is_described()), || combined(&members()).ok())
    }
    fn is_described(&self) -> bool {
        // The chain serves (and describes itself) as soon as one member can.
        self.descriptor.is_final() || self.chain.all().any(|(_, m)| m.is_described())
    }
    fn native_bucket_name(&self, bucket: &BucketName) -> String {
        // The primary's: where an object's newest state normally is.
        match self.chain.get(0) {
            Some(primary) => primary.native_bucket_name(bucket),
            None => bucket.as_str().to_owned(),
        }
    }
    async fn ready(&self) -> ExoResult<()> {
        self.chain.first(|m| async move { m.ready().await }).await
    }
    async fn create_bucket(&self, op: ops::CreateBucket<'_>) -> ExoResult<bool> {
        let created = self.chain.on_every_member(|m| async move { m.create_bucket(op).await }).await?;
        Ok(created.first().copied().unwrap_or(false))
    }
    async fn delete_bucket(&self, op: ops::DeleteBucket<'_>) -> ExoResult<()> {
        let missing = |e: &ExoError| e.reason == ErrorReason::BucketNotFound;
        self.chain.remove_from_every_member(missing, |m| async move { m.delete_bucket(op).await }).await
    }
    async fn list_buckets(&self, _op: ops::ListBuckets) -> ExoResult<Vec<String>> {
        self.chain.first(|m| async move { m.list_buckets(ops::ListBuckets).await }).await
    }
    async fn put(&self, op: ops::Put<'_>, body: ByteStream) -> ExoResult<pb::ObjectInfo> {
        let ops::Put { bucket, key, meta } = op;
        // While anything is pending, changes serialise with the replay.
        let _exclusive = if self.journal.is_empty() { None } else { Some(self.journal.exclusive().await) };
        let holder = self.authority(bucket, key);
        let index = match (&meta.condition, holder) {
            (WriteCondition::IfMatch(_), Some(Holder::Deleted)) => {
                return Err(nothing_to_match(bucket.as_str(), key));
            }
            (WriteCondition::None, _) | (WriteCondition::CreateOnly, Some(Holder::Deleted)) => {
                match self.chain.available().next() {
                    Some((index, _)) => index,
                    None => return Err(ExoError::unavailable("every member of the failover chain is down")),
                }
            }
            // Evaluated where the object's newest state is.
            (_, Some(Holder::Member(member))) => member as usize,
            (_, _) => 0,
        };
        if !self.chain.is_available(index) {
            return Err(ExoError::unavailable(format!(
                "failover member {index} holds this object's newest state and is unavailable; retry once it is back"
            )));
        }
        let mut meta = meta;
        if matches!(holder, Some(Holder::Deleted)) && meta.condition == WriteCondition::CreateOnly {
            meta.condition = WriteCondition::None;
        }
        if let Some(announced) = meta.content_length.filter(|n| *n <= RETRYABLE_UPLOAD) {
            let bytes = buffered(body, announced).await?;
            let upload = |m: Arc<dyn ObjectStore>| {
                let (meta, bytes) = (meta.clone(), bytes.clone());
                async move { m.put(ops::Put { bucket, key, meta }, once(bytes)).await }
            };
            let (index, info) = if meta.condition == WriteCondition::None {
                self.chain.first_indexed(upload).await?
            } else {
                (index, self.chain.only(index, upload).await?)
            };
            self.journal.after_write(bucket.as_str(), key, index).await?;
            return Ok(info);
        }
        let member = self.chain.get(index).ok_or_else(|| ExoError::internal("no such member"))?.clone();
        let result = member.put(ops::Put { bucket, key, meta }, body).await;
        // An upload also fails when its client goes away (reported as unavailable too): only a
        // member that then fails its readiness check is set aside.
        if let Err(err) = &result
            && is_outage(err)
            && let Err(down) = member.ready().await
        {
            self.chain.note(index, &down);
        }
        let info = result?;
        self.journal.after_write(bucket.as_str(), key, index).await?;
        Ok(info)
    }
    async fn get(&self, op: ops::Get<'_>) -> ExoResult<(pb::ObjectInfo, (u64, u64), ByteStream)> {
        let ops::Get { bucket, key, range, condition } = op;
        match self.authority(bucket, key) {
            Some(Holder::Member(member)) => {
                self.chain
                    .only(member as usize, |m| async move {
                        m.get(ops::Get { bucket, key, range, condition }).await
                    })
                    .await
            }
            Some(Holder::Deleted) => Err(object_not_found(bucket.as_str(), key)),
            None => {
                self.chain
                    .first_found(missing, |m| async move {
                        m.get(ops::Get { bucket, key, range, condition }).await
                    })
                    .await
            }
        }
    }
    async fn head(&self, op: ops::Head<'_>) -> ExoResult<pb::ObjectInfo> {
        let ops::Head { bucket, key } = op;
        match self.authority(bucket, key) {
            Some(Holder::Member(member)) => {
                self.chain
                    .only(member as usize, |m| async move { m.head(ops::Head { bucket, key }).await })
                    .await
            }
            Some(Holder::Deleted) => Err(object_not_found(bucket.as_str(), key)),
            None => {
                self.chain
                    .first_found(missing, |m| async move { m.head(ops::Head { bucket, key }).await })
                    .await
            }
        }
    }
    async fn delete(&self, op: ops::Delete<'_>) -> ExoResult<()> {
        let ops::Delete { bucket, key, if_match } = op;
        let _exclusive = if self.journal.is_empty() { None } else { Some(self.journal.exclusive().await) };
        match (self.authority(bucket, key), if_match) {
            (Some(Holder::Deleted), None) => Ok(()),
            (Some(Holder::Deleted), Some(_)) => Err(nothing_to_match(bucket.as_str(), key)),
            (_, None) => self.delete_everywhere(bucket, key, None).await,
            (holder, Some(etag)) => {
                let index = match holder {
                    Some(Holder::Member(member)) => member as usize,
                    _ => 0,
                };
                self.chain
                    .only(index, |m| async move {
                        m.delete(ops::Delete { bucket, key, if_match: Some(etag) }).await
                    })
                    .await?;
                self.delete_everywhere(bucket, key, Some(index)).await
            }
        }
    }
    async fn list(&self, op: ops::List<'_>) -> ExoResult<Page> {
        let ops::List { bucket, prefix, delimiter, resume, limit } = op;
        if let Some(out) = (0..self.chain.len()).find(|i| !self.chain.is_available(*i)) {
            return Err(ExoError::unavailable(format!(
                "failover member {out} is unavailable: a listing now would be partial; retry once it is back"
            )));
        }
        if self.journal.holds_any_of(bucket.as_str()) {
            return Err(ExoError::unavailable(
                "uploads taken during an outage are being replayed onto the primary; retry the listing in a moment",
            ));
        }
        self.chain
            .only(0, |m| async move { m.list(ops::List { bucket, prefix, delimiter, resume, limit }).await })
            .await
    }
    async fn copy(&self, op: ops::Copy<'_>) -> ExoResult<pb::ObjectInfo> {
        let ops::Copy { source_bucket, source_key, bucket, key, condition } = op;
        if self.healthy() && self.journal.is_empty() {
            // A copy of a large object takes as long as it takes: no member deadline.
            let primary = self.chain.get(0).ok_or_else(|| ExoError::internal("no primary"))?;
            let copied = primary.copy(op).await;
            if let Err(err) = &copied {
                self.chain.note(0, err);
            }
            return copied;
        }
        // During an outage or a replay: read where the source's newest state is, write as an
        // upload (journaled like any other).
        let (info, _, body) = self
            .get(ops::Get {
                bucket: source_bucket,
                key: source_key,
                range: None,
                condition: &ReadCondition::default(),
            })
            .await?;
        let meta = PutMeta::copy_of(info, condition.clone(), self.descriptor().limits.max_object_bytes);
        self.put(ops::Put { bucket, key, meta }, body).await
    }
    async fn presign(&self, op: ops::Presign<'_>) -> ExoResult<Presigned> {
        self.chain.first(|m| async move { m.presign(op).await }).await
    }
}
