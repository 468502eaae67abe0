//! The member bookkeeping every failover layer shares (eqs, eos, ekv): an ordered chain of
//! backends, each skipped for a back-off after it failed with BACKEND_UNAVAILABLE or TIMEOUT. What
//! each operation does with the chain — first member that answers, every member, fall through on
//! a miss, only the authoritative member — is the layer's choice.
//!
//! - **A hung member is set aside fast**: every call to a member has its own deadline
//!   ([`Chain::with_member_timeout`], default [`MEMBER_TIMEOUT`]), well below the request
//!   timeout; a call that runs out counts as an outage.
//! - **Re-admission by probe**: [`Chain::spawn_probe`] checks members in their back-off every
//!   [`PROBE_INTERVAL`] with the layer's readiness call and re-admits one the moment it answers
//!   (reads see a healed primary at once), or extends its back-off.
//! - **No false "not found"**: a read that misses on every member it could ask, while some member
//!   was out, answers UNAVAILABLE (retryable): the missing member may hold the key.

use std::{
    future::Future,
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use exo_proto::common::v1::ErrorReason;

use crate::{ExoError, ExoResult, now_ms};

/// The backend name a failover chain describes itself with.
pub const CHAIN: &str = "failover";

/// How long a member that failed with BACKEND_UNAVAILABLE or TIMEOUT is skipped (unless a probe
/// re-admits it sooner).
pub const BACKOFF: Duration = Duration::from_secs(5);
/// The default deadline of one call to one member.
pub const MEMBER_TIMEOUT: Duration = Duration::from_secs(3);
/// Checks a chain's member settings: the per-call deadline and the back-off are positive and
/// at most an hour (a back-off of 0 would retry a dead member on every call).
pub fn validate_member_settings(
    member_timeout: Duration,
    member_backoff: Duration,
) -> Result<(), crate::config_error::ConfigError> {
    let hour = Duration::from_secs(3600);
    for (field, value) in [("member-timeout", member_timeout), ("member-backoff", member_backoff)] {
        if value.is_zero() || value > hour {
            return Err(crate::config_error::ConfigError::Invalid(format!(
                "backend.{field} must be above 0 and at most 1h (got {value:?})"
            )));
        }
    }
    Ok(())
}

/// `member-timeout`'s default, for the chains' configs.
pub fn default_member_timeout() -> Duration {
    MEMBER_TIMEOUT
}

/// `member-backoff`'s default, for the chains' configs.
pub fn default_member_backoff() -> Duration {
    BACKOFF
}

/// How often members in their back-off are probed.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// A chain's description (capabilities and limits), combined from its members' when the chain
/// is made. While a member's own is provisional (a `remote` not reached yet) it is combined
/// again, once, when every member has described itself.
pub struct ChainDescription<D> {
    first: D,
    settled: std::sync::OnceLock<D>,
    final_at_start: bool,
}

impl<D> ChainDescription<D> {
    /// `combined` from the members' descriptions, final when every member's was.
    pub fn new(combined: D, every_member_described: bool) -> Self {
        Self { first: combined, settled: std::sync::OnceLock::new(), final_at_start: every_member_described }
    }

    /// The description: combined again by `combine` the first time `every_member_described`
    /// holds, until then the first one.
    pub fn get(
        &self,
        every_member_described: impl FnOnce() -> bool,
        combine: impl FnOnce() -> Option<D>,
    ) -> &D {
        if self.final_at_start {
            return &self.first;
        }
        if let Some(settled) = self.settled.get() {
            return settled;
        }
        if every_member_described()
            && let Some(combined) = combine()
        {
            return self.settled.get_or_init(|| combined);
        }
        &self.first
    }

    /// Whether the description no longer changes.
    pub fn is_final(&self) -> bool {
        self.final_at_start || self.settled.get().is_some()
    }
}

/// An ordered chain of backends of one kind.
pub struct Chain<T: ?Sized> {
    members: Vec<(Arc<T>, AtomicU64)>,
    backoff: Duration,
    member_timeout: Duration,
}

impl<T: ?Sized> Chain<T> {
    /// `members` in priority order (at least one).
    pub fn new(members: Vec<Arc<T>>) -> ExoResult<Self> {
        if members.is_empty() {
            return Err(ExoError::internal("a failover chain needs at least one member"));
        }
        Ok(Self {
            members: members.into_iter().map(|m| (m, AtomicU64::new(0))).collect(),
            backoff: BACKOFF,
            member_timeout: MEMBER_TIMEOUT,
        })
    }

    /// Changes the deadline of one call to one member.
    pub fn with_member_timeout(mut self, timeout: Duration) -> Self {
        self.member_timeout = timeout;
        self
    }

    /// Whether member `index` is out of its back-off.
    pub fn is_available(&self, index: usize) -> bool {
        self.members.get(index).is_some_and(|(_, down)| down.load(Ordering::Relaxed) <= now_ms())
    }

    /// Runs one call on member `index` under the member deadline; an outage (a timeout
    /// included) sets the member aside.
    pub async fn call<F, Fut, R>(&self, index: usize, call: F) -> ExoResult<R>
    where
        F: FnOnce(Arc<T>) -> Fut,
        Fut: Future<Output = ExoResult<R>>,
    {
        let Some((member, _)) = self.members.get(index) else {
            return Err(ExoError::internal(format!("the failover chain has no member {index}")));
        };
        let result = match tokio::time::timeout(self.member_timeout, call(member.clone())).await {
            Ok(result) => result,
            Err(_) => Err(ExoError::new(
                ErrorReason::Timeout,
                format!("failover member {index} did not answer within {:?}", self.member_timeout),
            )),
        };
        if let Err(err) = &result {
            self.note(index, err);
        }
        result
    }

    /// Runs `call` on member `index` only — the member whose state is authoritative for what is
    /// asked (a conditional write, say). While it is out the answer is UNAVAILABLE (retryable):
    /// another member's state would be a guess.
    pub async fn only<F, Fut, R>(&self, index: usize, call: F) -> ExoResult<R>
    where
        F: FnOnce(Arc<T>) -> Fut,
        Fut: Future<Output = ExoResult<R>>,
    {
        if !self.is_available(index) {
            return Err(member_out(index));
        }
        match self.call(index, call).await {
            Err(err) if is_outage(&err) => Err(member_out(index).with_backend(&err.backend)),
            other => other,
        }
    }

    /// Probes the members in their back-off every [`PROBE_INTERVAL`] with `probe` (a readiness
    /// call): one that answers is re-admitted at once, one that does not stays out. Stops when the
    /// chain is dropped; does nothing outside a tokio runtime.
    pub fn spawn_probe<P, Fut>(self: &Arc<Self>, probe: P)
    where
        T: Send + Sync + 'static,
        P: Fn(Arc<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ExoResult<()>> + Send + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let chain: Weak<Self> = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(PROBE_INTERVAL);
            loop {
                tick.tick().await;
                let Some(chain) = chain.upgrade() else { return };
                for index in 0..chain.members.len() {
                    if chain.is_available(index) {
                        continue;
                    }
                    let member = chain.members[index].0.clone();
                    match tokio::time::timeout(chain.member_timeout, probe(member)).await {
                        Ok(Ok(())) => {
                            chain.members[index].1.store(0, Ordering::Relaxed);
                            tracing::info!(member = index, "failover member answers again: re-admitted");
                        }
                        Ok(Err(err)) => chain.note(index, &ExoError::unavailable(err.message)),
                        Err(_) => chain.note(index, &ExoError::new(ErrorReason::Timeout, "probe timed out")),
                    }
                }
            }
        });
    }

    /// Changes how long a failed member is skipped (tests use a short one).
    pub fn with_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// Every member, in order, with its index.
    pub fn all(&self) -> impl Iterator<Item = (usize, &Arc<T>)> {
        self.members.iter().map(|(m, _)| m).enumerate()
    }

    /// The member at `index`.
    pub fn get(&self, index: usize) -> Option<&Arc<T>> {
        self.members.get(index).map(|(m, _)| m)
    }

    /// The members not in their back-off, in order, with their indexes.
    pub fn available(&self) -> impl Iterator<Item = (usize, &Arc<T>)> {
        let now = now_ms();
        self.members
            .iter()
            .enumerate()
            .filter(move |(_, (_, down))| down.load(Ordering::Relaxed) <= now)
            .map(|(i, (m, _))| (i, m))
    }

    /// Records `err` from member `index`: unavailability starts its back-off.
    pub fn note(&self, index: usize, err: &ExoError) {
        if is_outage(err)
            && let Some((_, down)) = self.members.get(index)
        {
            down.store(now_ms() + self.backoff.as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// Runs `call` on the first available member that answers, moving on when one is
    /// unavailable; the last outage if none answers.
    pub async fn first<F, Fut, R>(&self, call: F) -> ExoResult<R>
    where
        F: Fn(Arc<T>) -> Fut,
        Fut: Future<Output = ExoResult<R>>,
    {
        self.first_indexed(call).await.map(|(_, value)| value)
    }

    /// Like [`Chain::first`], also saying which member answered.
    pub async fn first_indexed<F, Fut, R>(&self, call: F) -> ExoResult<(usize, R)>
    where
        F: Fn(Arc<T>) -> Fut,
        Fut: Future<Output = ExoResult<R>>,
    {
        let mut last = None;
        let available: Vec<usize> = self.available().map(|(index, _)| index).collect();
        for index in available {
            match self.call(index, &call).await {
                Ok(value) => return Ok((index, value)),
                Err(err) if is_outage(&err) => last = Some(err),
                Err(err) => return Err(err),
            }
        }
        Err(last.unwrap_or_else(|| ExoError::unavailable("every member of the failover chain is down")))
    }

    /// How many members the chain has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the chain is empty (never: [`Chain::new`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Like [`Chain::first`], but a miss (`missing(err)`) moves on to the next member too: what
    /// was written to a standby during an outage is still found after fail-back. A miss
    /// everywhere it could ask while some member was out is UNAVAILABLE, not a miss: that member
    /// may hold it.
    pub async fn first_found<F, Fut, R>(&self, missing: impl Fn(&ExoError) -> bool, call: F) -> ExoResult<R>
    where
        F: Fn(Arc<T>) -> Fut,
        Fut: Future<Output = ExoResult<R>>,
    {
        let mut miss = None;
        let mut out = None;
        for index in 0..self.members.len() {
            if !self.is_available(index) {
                out.get_or_insert(index);
                continue;
            }
            match self.call(index, &call).await {
                Err(err) if is_outage(&err) => {
                    out.get_or_insert(index);
                }
                Err(err) if missing(&err) => miss = Some(err),
                other => return other,
            }
        }
        match (out, miss) {
            (Some(index), _) => Err(member_out(index)),
            (None, Some(miss)) => Err(miss),
            (None, None) => Err(ExoError::unavailable("every member of the failover chain is down")),
        }
    }

    /// Runs `call` on every member but `except`, in order, for a change that must reach every
    /// copy (a delete): a miss (`missing(index, err)`) counts as done, a member that is out is
    /// skipped. Returns the answers of the members that took it and whether any member was out
    /// (the caller records what the missing members still owe); any other error stops it.
    pub async fn on_every_member_up<F, Fut, R>(
        &self,
        except: Option<usize>,
        missing: impl Fn(usize, &ExoError) -> bool,
        call: F,
    ) -> ExoResult<(Vec<R>, bool)>
    where
        F: Fn(Arc<T>) -> Fut,
        Fut: Future<Output = ExoResult<R>>,
    {
        let mut answers = Vec::with_capacity(self.members.len());
        let mut out = false;
        for index in (0..self.members.len()).filter(|i| Some(*i) != except) {
            if !self.is_available(index) {
                out = true;
                continue;
            }
            match self.call(index, &call).await {
                Ok(answer) => answers.push(answer),
                Err(err) if is_outage(&err) => out = true,
                Err(err) if missing(index, &err) => {}
                Err(err) => return Err(err),
            }
        }
        Ok((answers, out))
    }

    /// Runs `call` on every member in order (a delete of what every member holds): a miss
    /// (`missing(err)`) on a standby is fine — it may never have received the thing — but on the
    /// primary, or any other error, stops it.
    pub async fn remove_from_every_member<F, Fut>(
        &self,
        missing: impl Fn(&ExoError) -> bool,
        call: F,
    ) -> ExoResult<()>
    where
        F: Fn(Arc<T>) -> Fut,
        Fut: Future<Output = ExoResult<()>>,
    {
        for index in 0..self.members.len() {
            match self.call(index, &call).await {
                Ok(()) => {}
                Err(err) if index > 0 && missing(&err) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Runs `call` on every member in order; the first error stops it. No member deadline: this
    /// is for creating queues, buckets and tables, which a service may take a while to finish
    /// (a DynamoDB table becoming ACTIVE); the request timeout still bounds it.
    pub async fn on_every_member<F, Fut, R>(&self, call: F) -> ExoResult<Vec<R>>
    where
        F: Fn(Arc<T>) -> Fut,
        Fut: Future<Output = ExoResult<R>>,
    {
        let mut out = Vec::with_capacity(self.members.len());
        for (index, (member, _)) in self.members.iter().enumerate() {
            match call(member.clone()).await {
                Ok(value) => out.push(value),
                Err(err) => {
                    self.note(index, &err);
                    return Err(err);
                }
            }
        }
        Ok(out)
    }
}

/// UNAVAILABLE (retryable) because member `index` is out.
fn member_out(index: usize) -> ExoError {
    ExoError::unavailable(format!(
        "failover member {index} is unavailable and may hold what was asked; retry once it is back"
    ))
}

/// Whether `err` says the member is out (rather than the request being wrong).
pub fn is_outage(err: &ExoError) -> bool {
    matches!(err.reason, ErrorReason::BackendUnavailable | ErrorReason::Timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn switches_on_outage_falls_through_on_a_miss_and_fails_back() {
        let chain = Chain::new(vec![Arc::new(0usize), Arc::new(1usize)])
            .unwrap()
            .with_backoff(Duration::from_millis(50));
        let down = std::sync::atomic::AtomicBool::new(true);
        let call = |m: Arc<usize>| {
            let primary_down = down.load(Ordering::Relaxed);
            async move { if *m == 0 && primary_down { Err(ExoError::unavailable("down")) } else { Ok(*m) } }
        };
        assert_eq!(chain.first(call).await.unwrap(), 1, "the standby answers while the primary is down");
        assert_eq!(chain.available().count(), 1, "the primary sits out its back-off");
        down.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(chain.first(call).await.unwrap(), 0, "fail back once the back-off ends");
        let missing = |e: &ExoError| e.reason == ErrorReason::KeyNotFound;
        let found = chain
            .first_found(missing, |m: Arc<usize>| async move {
                if *m == 0 { Err(ExoError::new(ErrorReason::KeyNotFound, "no")) } else { Ok(*m) }
            })
            .await;
        assert_eq!(found.unwrap(), 1, "a miss on the primary is looked up on the standby");
        let invalid = chain
            .first_found(missing, |_: Arc<usize>| async {
                Err::<usize, _>(ExoError::invalid_argument("k", "bad"))
            })
            .await;
        assert_eq!(invalid.unwrap_err().reason, ErrorReason::InvalidArgument, "a bad request is not retried");
        let gone_on = |absent: usize| {
            move |m: Arc<usize>| async move {
                if *m == absent { Err(ExoError::new(ErrorReason::KeyNotFound, "no")) } else { Ok(()) }
            }
        };
        assert!(chain.remove_from_every_member(missing, gone_on(1)).await.is_ok(), "a standby may lack it");
        assert!(chain.remove_from_every_member(missing, gone_on(0)).await.is_err(), "the primary may not");
    }
}
