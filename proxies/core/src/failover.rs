//! The member bookkeeping every failover layer shares (eqs, eos, ekv): an ordered chain of
//! backends, each skipped for a back-off after it failed with BACKEND_UNAVAILABLE or TIMEOUT and
//! tried again when it expires (fail back). What each operation does with the chain — first
//! member that answers, every member, fall through on a miss — is the layer's choice.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use exo_proto::common::v1::ErrorReason;

use crate::{ExoError, ExoResult, now_ms};

/// How long a member that failed with BACKEND_UNAVAILABLE or TIMEOUT is skipped.
pub const BACKOFF: Duration = Duration::from_secs(5);

/// An ordered chain of backends of one kind.
pub struct Chain<T: ?Sized> {
    members: Vec<(Arc<T>, AtomicU64)>,
    backoff: Duration,
}

impl<T: ?Sized> Chain<T> {
    /// `members` in priority order (at least one).
    pub fn new(members: Vec<Arc<T>>) -> ExoResult<Self> {
        if members.is_empty() {
            return Err(ExoError::internal("a failover chain needs at least one member"));
        }
        Ok(Self { members: members.into_iter().map(|m| (m, AtomicU64::new(0))).collect(), backoff: BACKOFF })
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
        let mut last = None;
        for (index, member) in self.available() {
            match call(member.clone()).await {
                Err(err) if is_outage(&err) => {
                    self.note(index, &err);
                    last = Some(err);
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| ExoError::unavailable("every member of the failover chain is down")))
    }

    /// Like [`Chain::first`], but a miss (`missing(err)`) moves on to the next member too: what
    /// was written to a standby during an outage is still found after fail-back.
    pub async fn first_found<F, Fut, R>(&self, missing: impl Fn(&ExoError) -> bool, call: F) -> ExoResult<R>
    where
        F: Fn(Arc<T>) -> Fut,
        Fut: Future<Output = ExoResult<R>>,
    {
        let mut last = None;
        for (index, member) in self.available() {
            match call(member.clone()).await {
                Err(err) if is_outage(&err) => {
                    self.note(index, &err);
                    last = Some(err);
                }
                Err(err) if missing(&err) => last = Some(err),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| ExoError::unavailable("every member of the failover chain is down")))
    }

    /// Runs `call` on every member in order (a delete of what every member holds): a miss
    /// (`missing(err)`) on a standby is fine — it may never have received the thing — but on the
    /// primary, or any other error, stops it.
    pub async fn every_present<F, Fut>(&self, missing: impl Fn(&ExoError) -> bool, call: F) -> ExoResult<()>
    where
        F: Fn(Arc<T>) -> Fut,
        Fut: Future<Output = ExoResult<()>>,
    {
        for (index, (member, _)) in self.members.iter().enumerate() {
            match call(member.clone()).await {
                Ok(()) => {}
                Err(err) if index > 0 && missing(&err) => {}
                Err(err) => {
                    self.note(index, &err);
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    /// Runs `call` on every member in order; the first error stops it.
    pub async fn every<F, Fut, R>(&self, call: F) -> ExoResult<Vec<R>>
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
        assert!(chain.every_present(missing, gone_on(1)).await.is_ok(), "a standby may lack it");
        assert!(chain.every_present(missing, gone_on(0)).await.is_err(), "the primary may not");
    }
}
