//! What each open connection is doing, so that connections which do nothing cannot keep
//! others out: a connection must start its first request within `server.header-read-timeout`
//! and is closed after `server.idle-timeout` with no request in flight, and when every slot
//! of the connection cap is taken a new client is let in by closing the connection that has
//! been idle longest — one that never sent a request first. Only connections with a request
//! in flight make a new client wait.
//!
//! [`Activity`] is shared by a connection's stream (which fails its reads and writes once the
//! connection is evicted, whatever stage it is in: TLS handshake, protocol choice, or between
//! requests), the connection loop (which counts requests and closes idle connections
//! gracefully) and the listener's [`Registry`] (which picks whom to evict).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    task::Context,
    time::{Duration, Instant},
};

use futures::task::AtomicWaker;

/// A monotonic clock in milliseconds, in one atomic: an hour plus the time since this process
/// first asked (the hour keeps "a second ago" from saturating at zero).
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    3_600_000 + EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// One connection's activity.
#[derive(Debug)]
pub struct Activity {
    /// When it was accepted, or handed to the connection loop (ms, see [`now_ms`]).
    opened: AtomicU64,
    /// Requests started so far.
    requests: AtomicU64,
    /// Requests whose response has not been sent in full, and [`EVICTED`]: one word, so an
    /// eviction happens only while nothing is in flight (a compare-and-swap from zero).
    in_flight: AtomicU32,
    /// When the last request in flight finished (ms); `opened` until then.
    idle_since: AtomicU64,
    waker: AtomicWaker,
}

/// The bit of [`Activity::in_flight`] that marks an evicted connection.
const EVICTED: u32 = 1 << 31;

/// How long a connection that has served requests must have been idle to be evicted for a new
/// client: one between two calls of a busy client is left alone.
const EVICT_SERVED_AFTER: u64 = 1000;

impl Activity {
    fn new() -> Self {
        let now = now_ms();
        Self {
            opened: AtomicU64::new(now),
            requests: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(now),
            waker: AtomicWaker::new(),
        }
    }

    /// Starts the first-request time again (the connection loop calls it as it takes the
    /// connection, so a TLS handshake's time is not counted).
    pub fn restart_clock(&self) {
        let now = now_ms();
        self.opened.store(now, Ordering::Relaxed);
        if self.requests.load(Ordering::Relaxed) == 0 {
            self.idle_since.store(now, Ordering::Relaxed);
        }
    }

    /// Whether a request is in flight.
    pub fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) & !EVICTED > 0
    }

    /// A request has started on the connection; it is in flight until the guard is dropped
    /// (with the response body, once it has been sent).
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// When the connection has to be closed unless a request comes first, or `None` while a
    /// request is in flight: `first_request` after it opened if none has started yet, else
    /// `idle` after its last request finished.
    fn closes_at(&self, first_request: Duration, idle: Duration) -> Option<u64> {
        if self.busy() {
            return None;
        }
        if self.requests.load(Ordering::Relaxed) == 0 {
            return Some(self.opened.load(Ordering::Relaxed) + first_request.as_millis() as u64);
        }
        Some(self.idle_since.load(Ordering::Relaxed) + idle.as_millis() as u64)
    }

    /// Resolves when the connection has sent no request for too long: none within
    /// `first_request` of opening, or none in flight for `idle`. The connection loop then
    /// closes it gracefully.
    pub async fn idle_out(&self, first_request: Duration, idle: Duration) -> IdleReason {
        loop {
            let now = now_ms();
            let wake = match self.closes_at(first_request, idle) {
                Some(at) if at <= now => {
                    return if self.requests.load(Ordering::Relaxed) == 0 {
                        IdleReason::NoRequest
                    } else {
                        IdleReason::Idle
                    };
                }
                Some(at) => at - now,
                // Busy: look again after a full idle period (a request ending meanwhile sets a
                // later close time, so no look is ever late).
                None => idle.as_millis() as u64,
            };
            tokio::time::sleep(Duration::from_millis(wake.max(1))).await;
        }
    }

    /// Closes the connection from under whoever is using it — its reads and writes fail from
    /// now — if nothing is in flight on it; whether it did.
    fn evict(&self) -> bool {
        let evicted =
            self.in_flight.compare_exchange(0, EVICTED, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if evicted {
            self.waker.wake();
        }
        evicted
    }

    /// Whether the connection was evicted; otherwise `cx` is woken when it is.
    pub(crate) fn evicted(&self, cx: &Context<'_>) -> bool {
        if self.is_evicted() {
            return true;
        }
        self.waker.register(cx.waker());
        self.is_evicted()
    }

    /// Whether the connection was evicted (no wake-up asked).
    pub(crate) fn is_evicted(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) & EVICTED != 0
    }
}

/// Why [`Activity::idle_out`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleReason {
    /// No request started within the first-request time.
    NoRequest,
    /// No request in flight for the idle timeout.
    Idle,
}

/// A request in flight on a connection (see [`Activity::request`]).
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        // The time first: a look between the two sees either "busy" or the new idle start.
        self.0.idle_since.store(now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The open connections of one proxy (its TCP port and Unix socket together).
#[derive(Debug, Default)]
pub struct Registry {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
}

impl Registry {
    /// Records a new connection; it leaves the registry when the registration is dropped.
    pub fn open(self: &Arc<Self>) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new());
        self.open.lock().unwrap_or_else(|e| e.into_inner()).insert(id, activity.clone());
        Registration { id, activity, registry: self.clone() }
    }

    /// Evicts the connection idle the longest — one that never started a request before any
    /// that did, and one that did only after [`EVICT_SERVED_AFTER`] idle — and says whether
    /// there was one. A connection with a request in flight is never evicted.
    pub fn evict_idlest(&self) -> bool {
        let now = now_ms();
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mut candidates: Vec<&Arc<Activity>> = open
            .values()
            .filter(|a| {
                let served = a.requests.load(Ordering::Relaxed) > 0;
                a.in_flight.load(Ordering::Acquire) == 0
                    && (!served
                        || now.saturating_sub(a.idle_since.load(Ordering::Relaxed)) >= EVICT_SERVED_AFTER)
            })
            .collect();
        candidates
            .sort_by_key(|a| (a.requests.load(Ordering::Relaxed) > 0, a.idle_since.load(Ordering::Relaxed)));
        // One that started a request meanwhile is passed over.
        candidates.into_iter().any(|activity| activity.evict())
    }
}

/// A connection's place in the [`Registry`], held by its stream.
#[derive(Debug)]
pub struct Registration {
    id: u64,
    activity: Arc<Activity>,
    registry: Arc<Registry>,
}

impl Registration {
    /// The connection's activity.
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

/// A stream whose connection's [`Activity`] the connection loop can reach.
pub trait Tracked {
    /// The connection's activity.
    fn activity(&self) -> &Arc<Activity>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idlest_connection_is_evicted_and_never_one_in_flight() {
        let registry = Arc::new(Registry::default());
        let served = registry.open();
        drop(served.activity().request());
        // Served, but idle only a moment: left alone.
        let fresh = registry.open();
        drop(fresh.activity().request());
        served.activity().idle_since.store(now_ms().saturating_sub(EVICT_SERVED_AFTER), Ordering::Relaxed);
        let busy = registry.open();
        let _in_flight = busy.activity().request();
        let silent = registry.open();
        // The one that never sent a request goes first, though it opened last.
        assert!(registry.evict_idlest());
        assert!(silent.activity().is_evicted() && !served.activity().is_evicted());
        assert!(registry.evict_idlest());
        assert!(served.activity().is_evicted());
        // Only the busy one and the one idle a moment are left: nobody to evict.
        assert!(!registry.evict_idlest());
        assert!(!busy.activity().is_evicted() && !fresh.activity().is_evicted());
        // A request in flight blocks an eviction, and an evicted connection's request fails.
        assert!(!busy.activity().evict());
        drop((served, silent, fresh));
        assert_eq!(registry.open.lock().unwrap().len(), 1, "closed connections leave the registry");
    }

    #[tokio::test]
    async fn a_silent_connection_idles_out_after_the_first_request_time_a_served_one_after_idle() {
        let registry = Arc::new(Registry::default());
        let silent = registry.open();
        let started = Instant::now();
        let why = silent.activity().idle_out(Duration::from_millis(50), Duration::from_secs(60)).await;
        assert_eq!(why, IdleReason::NoRequest);
        assert!(started.elapsed() >= Duration::from_millis(45), "{:?}", started.elapsed());

        let served = registry.open();
        let request = served.activity().request();
        let activity = served.activity().clone();
        let watch = tokio::spawn(async move {
            activity.idle_out(Duration::from_millis(10), Duration::from_millis(80)).await
        });
        // In flight for longer than both times: not closed.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!watch.is_finished(), "a connection with a request in flight idled out");
        let finished = Instant::now();
        drop(request);
        assert_eq!(watch.await.unwrap(), IdleReason::Idle);
        assert!(finished.elapsed() >= Duration::from_millis(75), "{:?}", finished.elapsed());
    }
}
