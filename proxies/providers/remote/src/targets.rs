//! Where a `remote` backend sends each call: one URL, or the targets a DNS SRV name lists.
//!
//! With `url: srv:_eqs._tcp.queues.service.consul` (TLS; `srv+http:` for plaintext) the targets
//! come from the SRV records, looked up through hickory-resolver (the system's resolvers, or
//! `nameserver:` such as Consul's DNS on port 8600, which then also resolves the targets' own
//! names). Each call goes to a target of the lowest priority that is not set aside, chosen by
//! weight within that priority (RFC 2782). A target whose connection fails is set aside for 1 s,
//! doubling up to 30 s, and the next call goes to the next target; so is one whose gRPC health
//! says it is not serving (checked by readiness). The records are looked up again when their TTL
//! runs out (at least 1 s, at most 5 min apart); a lookup that fails keeps the last targets.
//!
//! The choice is made per call inside the gRPC client's transport ([`RemoteChannel`], a tower
//! service), so the generated clients are used unchanged.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use exo_proto::common::v1::ErrorReason;
use exo_proxy_core::ExoError;
use hickory_resolver::{
    TokioResolver,
    config::{NameServerConfig, ResolverConfig},
    net::runtime::TokioRuntimeProvider,
    proto::rr::RData,
};
use tonic::{body::Body, transport::Channel};
use tower::ServiceExt as _;

/// Shortest and longest time a target is set aside after a failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest a target's health check may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Bounds on how long SRV records are kept (their TTL, within these).
const MIN_TTL: Duration = Duration::from_secs(1);
const MAX_TTL: Duration = Duration::from_secs(300);

/// The boxed error of the transport.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How the remote is addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A URL (`http://host:port`, `https://host:port`).
    Url(String),
    /// A DNS SRV name, with the scheme its targets are reached by.
    Srv {
        /// The SRV name, e.g. `_eqs._tcp.queues.service.consul`.
        name: String,
        /// `https` (`srv:`) or `http` (`srv+http:`).
        scheme: &'static str,
    },
}

impl Address {
    /// Reads a `url:` setting.
    pub fn parse(url: &str) -> Address {
        if let Some(name) = url.strip_prefix("srv+http:") {
            Address::Srv { name: name.to_owned(), scheme: "http" }
        } else if let Some(name) = url.strip_prefix("srv:") {
            Address::Srv { name: name.to_owned(), scheme: "https" }
        } else {
            Address::Url(url.to_owned())
        }
    }

    /// Whether calls go over TLS.
    pub fn is_tls(&self) -> bool {
        match self {
            Address::Url(url) => url.starts_with("https://"),
            Address::Srv { scheme, .. } => *scheme == "https",
        }
    }
}

/// One place calls can go.
struct Target {
    /// `host:port` as the records name it (the identity kept across lookups).
    key: String,
    priority: u16,
    weight: u16,
    channel: Channel,
    set_aside_until: Option<Instant>,
    failures: u32,
}

struct State {
    targets: Vec<Target>,
    /// When the SRV records are looked up again (`None`: never, a fixed URL).
    refresh_at: Option<Instant>,
}

/// The targets of one remote, and which are set aside.
pub struct Targets {
    address: Address,
    tls: exo_sdk::Tls,
    resolver: Option<TokioResolver>,
    /// Whether target names are resolved by `resolver` too (a configured nameserver).
    resolve_hosts: bool,
    /// How each target's connection notices a target gone silent.
    liveness: exo_sdk::Liveness,
    state: Mutex<State>,
    /// One lookup at a time.
    refreshing: tokio::sync::Mutex<()>,
}

fn unavailable(message: String) -> ExoError {
    ExoError::new(ErrorReason::BackendUnavailable, message).retryable()
}

impl Targets {
    /// The targets of `address`: a URL's one target at once; an SRV name's after the first
    /// lookup (made by [`Targets::refresh`]).
    pub fn new(
        address: Address,
        tls: exo_sdk::Tls,
        nameserver: Option<SocketAddr>,
        liveness: exo_sdk::Liveness,
    ) -> Result<Self, ExoError> {
        let (targets, resolver, refresh_at) = match &address {
            Address::Url(url) => {
                let channel = exo_sdk::channel_with(url, &tls, &liveness).map_err(crate::from_remote)?;
                let target = Target {
                    key: url.clone(),
                    priority: 0,
                    weight: 0,
                    channel,
                    set_aside_until: None,
                    failures: 0,
                };
                (vec![target], None, None)
            }
            Address::Srv { .. } => {
                let builder = match nameserver {
                    Some(server) => {
                        let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
                        for connection in &mut name_server.connections {
                            connection.port = server.port();
                        }
                        TokioResolver::builder_with_config(
                            ResolverConfig::from_name_servers(vec![name_server]),
                            TokioRuntimeProvider::default(),
                        )
                    }
                    None => TokioResolver::builder_tokio()
                        .map_err(|e| unavailable(format!("cannot read the system's DNS settings: {e}")))?,
                };
                let resolver =
                    builder.build().map_err(|e| unavailable(format!("cannot make a DNS resolver: {e}")))?;
                (Vec::new(), Some(resolver), Some(Instant::now()))
            }
        };
        Ok(Self {
            address,
            tls,
            resolver,
            resolve_hosts: nameserver.is_some(),
            liveness,
            state: Mutex::new(State { targets, refresh_at }),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves consistent data (plain field writes).
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Looks the SRV records up again if their time has come (or `force`); a fixed URL never.
    pub async fn refresh(&self, force: bool) -> Result<(), ExoError> {
        let (Address::Srv { name, scheme }, Some(resolver)) = (&self.address, &self.resolver) else {
            return Ok(());
        };
        let due = || self.lock().refresh_at.is_some_and(|at| at <= Instant::now());
        if !due() && !force {
            return Ok(()); // the common case: no lock taken
        }
        let _one = self.refreshing.lock().await;
        if !due() && !force {
            return Ok(()); // another call looked them up meanwhile
        }
        let looked_up = match resolver.srv_lookup(name.as_str()).await {
            Ok(lookup) => lookup,
            Err(err) => {
                // Keep what we have; look again soon.
                self.lock().refresh_at = Some(Instant::now() + MIN_TTL);
                return Err(unavailable(format!("DNS SRV lookup of {name}: {err}")));
            }
        };
        let ttl = looked_up.valid_until().saturating_duration_since(Instant::now()).clamp(MIN_TTL, MAX_TTL);
        let found = srv_targets(looked_up.answers().iter().map(|record| &record.data));
        if found.is_empty() {
            self.lock().refresh_at = Some(Instant::now() + MIN_TTL);
            return Err(unavailable(format!("DNS SRV name {name} has no targets")));
        }
        // The new list is built aside and swapped in whole: calls meanwhile see the old one.
        let mut fresh = Vec::with_capacity(found.len());
        for (key, host, port, priority, weight) in found {
            // A target already known keeps its connection and its standing.
            let known = self
                .lock()
                .targets
                .iter()
                .find(|t| t.key == key)
                .map(|t| (t.channel.clone(), t.set_aside_until, t.failures));
            let (channel, set_aside_until, failures) = match known {
                Some(known) => known,
                None => (self.channel_to(scheme, &host, port).await?, None, 0),
            };
            fresh.push(Target { key, priority, weight, channel, set_aside_until, failures });
        }
        let mut state = self.lock();
        let listed = |targets: &[Target]| {
            let mut list: Vec<(String, u16, u16)> =
                targets.iter().map(|t| (t.key.clone(), t.priority, t.weight)).collect();
            list.sort();
            list
        };
        let now_listed = listed(&fresh);
        if now_listed != listed(&state.targets) {
            tracing::info!(name, targets = ?now_listed, ?ttl, "remote: SRV targets");
        }
        state.targets = fresh;
        state.refresh_at = Some(Instant::now() + ttl);
        Ok(())
    }

    /// A channel to `host:port`; with a configured nameserver the host is resolved by it and the
    /// certificate is still checked against the host's name.
    async fn channel_to(&self, scheme: &str, host: &str, port: u16) -> Result<Channel, ExoError> {
        let mut tls = self.tls.clone();
        let authority = match (&self.resolver, self.resolve_hosts) {
            (Some(resolver), true) if host.parse::<std::net::IpAddr>().is_err() => {
                let ips = resolver
                    .lookup_ip(host)
                    .await
                    .map_err(|e| unavailable(format!("DNS lookup of {host}: {e}")))?;
                let ip = ips
                    .iter()
                    .next()
                    .ok_or_else(|| unavailable(format!("DNS name {host} has no address")))?;
                tls.server_name.get_or_insert_with(|| host.to_owned());
                SocketAddr::new(ip, port).to_string()
            }
            _ => format!("{host}:{port}"),
        };
        exo_sdk::channel_with(&format!("{scheme}://{authority}"), &tls, &self.liveness)
            .map_err(crate::from_remote)
    }

    /// The target the next call goes to: lowest priority not set aside, by weight within it;
    /// when every one is set aside, the one whose time is nearest up.
    fn pick(&self) -> Option<(String, Channel)> {
        let now = Instant::now();
        let state = self.lock();
        // Every call comes here: no allocation, and no random roll for a lone target.
        let up = |t: &&Target| t.set_aside_until.is_none_or(|until| until <= now);
        let chosen = match state.targets.iter().filter(up).map(|t| t.priority).min() {
            None => state.targets.iter().min_by_key(|t| t.set_aside_until),
            Some(best) => {
                let group = || state.targets.iter().filter(up).filter(move |t| t.priority == best);
                // RFC 2782: a weight-0 target has a small chance when others weigh more.
                let share = |t: &Target| u64::from(t.weight) * 100 + 1;
                let total: u64 = group().map(share).sum();
                let mut roll =
                    if group().nth(1).is_some() { rand::random::<u64>() % total.max(1) } else { 0 };
                group().find(|t| {
                    if roll < share(t) {
                        true
                    } else {
                        roll -= share(t);
                        false
                    }
                })
            }
        };
        chosen.map(|t| (t.key.clone(), t.channel.clone()))
    }

    /// Records a call's outcome on `key`: a failed connection sets the target aside.
    fn observe(&self, key: &str, reached: bool) {
        let mut state = self.lock();
        let several = state.targets.len() > 1;
        let Some(target) = state.targets.iter_mut().find(|t| t.key == key) else { return };
        if reached {
            target.failures = 0;
            target.set_aside_until = None;
        } else {
            target.failures = target.failures.saturating_add(1);
            let backoff = FIRST_BACKOFF
                .saturating_mul(1u32.checked_shl(target.failures - 1).unwrap_or(u32::MAX))
                .min(MAX_BACKOFF);
            target.set_aside_until = Some(Instant::now() + backoff);
            if several {
                tracing::warn!(target = key, ?backoff, "remote: target unreachable; set aside");
            }
        }
    }

    /// Checks every target's gRPC health for `service`: a target not SERVING (or not reachable)
    /// is set aside, a serving one taken back. Ok when one serves.
    pub async fn check_health(&self, service: &str, auth: &crate::RemoteToken) -> Result<(), ExoError> {
        self.refresh(false)
            .await
            .or_else(|err| if self.lock().targets.is_empty() { Err(err) } else { Ok(()) })?;
        let targets: Vec<(String, Channel)> =
            self.lock().targets.iter().map(|t| (t.key.clone(), t.channel.clone())).collect();
        let mut last = None;
        let mut serving = false;
        for (key, channel) in targets {
            let transport = tonic::service::interceptor::InterceptedService::new(channel, auth.clone());
            // A target that does not answer in time (blackholed) counts as not serving.
            let checked =
                tokio::time::timeout(HEALTH_TIMEOUT, crate::health(transport, service)).await.unwrap_or_else(
                    |_| Err(unavailable(format!("{key} did not answer its health check in time"))),
                );
            match checked {
                Ok(()) => {
                    self.observe(&key, true);
                    serving = true;
                }
                Err(err) => {
                    self.observe(&key, false);
                    last = Some(err);
                }
            }
        }
        match (serving, last) {
            (true, _) => Ok(()),
            (false, Some(err)) => Err(err),
            (false, None) => Err(unavailable("the remote has no targets".into())),
        }
    }
}

/// The usable targets of SRV answers, as (key, host, port, priority, weight). A target of "."
/// (RFC 2782: "the service is decidedly not available at this domain") and port 0 are not
/// targets, and other record types are skipped.
fn srv_targets<'a>(answers: impl Iterator<Item = &'a RData>) -> Vec<(String, String, u16, u16, u16)> {
    answers
        .filter_map(|data| {
            let RData::SRV(srv) = data else { return None };
            let host = srv.target.to_utf8().trim_end_matches('.').to_owned();
            (!host.is_empty() && srv.port != 0)
                .then(|| (format!("{host}:{}", srv.port), host, srv.port, srv.priority, srv.weight))
        })
        .collect()
}

/// The transport under a `remote` backend's gRPC clients: each call goes to the target
/// [`Targets`] picks, and a connection failure sets that target aside.
#[derive(Clone)]
pub struct RemoteChannel {
    targets: Arc<Targets>,
}

impl RemoteChannel {
    /// The transport over `targets`.
    pub fn new(targets: Arc<Targets>) -> Self {
        Self { targets }
    }
}

impl tower::Service<http::Request<Body>> for RemoteChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is the chosen target's, awaited in `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let targets = self.targets.clone();
        Box::pin(async move {
            if let Err(err) = targets.refresh(false).await {
                tracing::warn!(error = %err, "remote: keeping the last targets");
            }
            let Some((key, channel)) = targets.pick() else {
                return Err(NoTarget(format!("{:?}", targets.address)).into());
            };
            // END_STREAM on the request's last DATA frame, not an empty frame after it: one
            // write and one wake-up fewer per forwarded call (see `LookAheadBody`).
            let answer = channel.oneshot(exo_sdk::body::looked_ahead(request)).await;
            targets.observe(&key, answer.is_ok());
            answer.map_err(Into::into)
        })
    }
}

/// A call with no target to go to: the address has not resolved to any yet.
#[derive(Debug)]
pub struct NoTarget(pub(crate) String);

impl std::fmt::Display for NoTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no target to call: {} resolved to none yet", self.0)
    }
}

impl std::error::Error for NoTarget {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_address_forms() {
        assert_eq!(
            Address::parse("srv:_eqs._tcp.q.consul"),
            Address::Srv { name: "_eqs._tcp.q.consul".into(), scheme: "https" }
        );
        assert_eq!(
            Address::parse("srv+http:_eqs._tcp.q"),
            Address::Srv { name: "_eqs._tcp.q".into(), scheme: "http" }
        );
        assert!(Address::parse("https://q:7401").is_tls());
        assert!(!Address::parse("srv+http:_eqs._tcp.q").is_tls());
    }

    fn targets(list: &[(&str, u16, u16)]) -> Targets {
        let targets = Targets::new(
            Address::Url("http://127.0.0.1:1".into()),
            exo_sdk::Tls::default(),
            None,
            exo_sdk::Liveness::default(),
        )
        .expect("targets");
        let channel = targets.lock().targets[0].channel.clone();
        targets.lock().targets = list
            .iter()
            .map(|(key, priority, weight)| Target {
                key: (*key).into(),
                priority: *priority,
                weight: *weight,
                channel: channel.clone(),
                set_aside_until: None,
                failures: 0,
            })
            .collect();
        targets
    }

    #[tokio::test]
    async fn the_lowest_priority_first_by_weight_and_a_failed_one_set_aside() {
        let t = targets(&[("a", 10, 1), ("b", 10, 3), ("c", 20, 100)]);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..4000 {
            *counts.entry(t.pick().expect("a target").0).or_insert(0) += 1;
        }
        assert_eq!(counts.get("c"), None, "a higher priority is not used while a lower one is up");
        let (a, b) = (counts["a"] as f64, counts["b"] as f64);
        assert!((2.3..4.0).contains(&(b / a)), "weights 1:3 gave {a}:{b}");
        // Both of priority 10 fail: calls move to priority 20.
        t.observe("a", false);
        t.observe("b", false);
        assert_eq!(t.pick().expect("c").0, "c");
        // All set aside: the one back soonest is tried.
        t.observe("c", false);
        t.observe("c", false);
        let soonest = t.pick().expect("one").0;
        assert!(soonest == "a" || soonest == "b", "{soonest}");
        // A success takes a target back at once.
        t.observe("a", true);
        assert_eq!(t.pick().expect("a").0, "a");
    }

    #[test]
    fn a_dot_target_and_port_0_are_not_targets() {
        use hickory_resolver::proto::rr::{Name, rdata::SRV};
        let srv =
            |target: &str, port| RData::SRV(SRV::new(10, 5, port, Name::from_ascii(target).expect("name")));
        let answers = [srv(".", 7401), srv("q1.exo.test.", 0), srv("q2.exo.test.", 7401)];
        let found = srv_targets(answers.iter());
        assert_eq!(found, vec![("q2.exo.test:7401".to_owned(), "q2.exo.test".to_owned(), 7401, 10, 5)]);
    }

    #[tokio::test]
    async fn set_aside_doubles_up_to_its_cap() {
        let t = targets(&[("a", 0, 0)]);
        for _ in 0..10 {
            t.observe("a", false);
        }
        let until = t.lock().targets[0].set_aside_until.expect("set aside");
        let left = until.saturating_duration_since(Instant::now());
        assert!(left <= MAX_BACKOFF && left > MAX_BACKOFF - Duration::from_secs(1), "{left:?}");
    }
}
