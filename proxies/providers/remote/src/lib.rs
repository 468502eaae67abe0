//! What the `remote` backends of eqs, eos and ekv share. A `remote` backend is another ExoFlow
//! proxy of the same service, reached over gRPC (TLS and a client certificate when the URL is
//! `https://`): an edge or app-host proxy forwarding to a standalone proxy on a VM.
//!
//! - [`RemoteConfig`]: the `backend:` settings (URL or DNS SRV name, CA bundle, client
//!   certificate, token);
//! - [`RemoteConfig::connect`]: the gRPC transport: the bearer token on every call, each call to a
//!   target [`targets::Targets`] picks (one URL, or an SRV name's targets by priority and weight,
//!   unreachable or unhealthy ones set aside);
//! - [`from_remote`]: the remote's error as this proxy's, reason, retryability, field and
//!   resource kept, so a caller cannot tell a forwarded refusal from a local one;
//! - [`page_token`]: the page token a proxy issues for "start after this name".

pub mod targets;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use exo_proto::common::v1::ErrorReason;
use exo_proxy_core::{
    ExoError,
    config::ConfigError,
    secret::{ReloadingSecret, SecretRef},
};
use serde::{Deserialize, Serialize};

/// The proxy a `remote` backend forwards to.
///
/// ```yaml
/// backend:
///   kind: remote
///   url: https://queues.internal:7401
///   ca-file: /etc/exoflow/tls/ca.pem            # optional: a private CA that signed the remote's certificate
///   client-cert-file: /etc/exoflow/tls/edge.pem # optional, with client-key-file: for a remote that asks (mTLS)
///   client-key-file: /etc/exoflow/tls/edge.key
///   token: env:EXO_REMOTE_TOKEN                 # optional: the remote's bearer token (a secret reference)
///   connect-timeout: 10s                        # how long a Describe of the remote may take
///   dead-after: 1500ms                          # a target silent this long (no connect, no PING answer) is down
/// ```
///
/// `url` may instead be a DNS SRV name: `srv:_eqs._tcp.queues.service.consul` (TLS to each
/// target, its certificate checked against the target's name) or `srv+http:…` (plaintext), with
/// an optional `nameserver: 127.0.0.1:8600` to ask instead of the system's resolvers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RemoteConfig {
    /// `http://host:port` (loopback or a trusted network only), `https://host:port`, or a DNS
    /// SRV name: `srv:NAME` (TLS) or `srv+http:NAME`.
    pub url: String,
    /// With an SRV name: the DNS server to ask (`ip:port`), instead of the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nameserver: Option<SocketAddr>,
    /// Extra certificate authorities (PEM) for the remote's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM), with `client_key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
    /// The remote proxy's bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretRef>,
    /// How long a Describe of the remote may take (at start, and while it has not answered).
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// A target that does not take a connection, or does not answer a keep-alive PING on a
    /// connection with calls in flight, within this is treated as gone: its calls fail
    /// (BACKEND_UNAVAILABLE, retryable) and it is set aside, where without it a target that
    /// vanished without a reset (powered off, cut off the network) would hang them.
    #[serde(default = "default_dead_after", with = "humantime_serde")]
    pub dead_after: Duration,
}

fn default_dead_after() -> Duration {
    Duration::from_millis(1500)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for RemoteConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:7401".into(),
            nameserver: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            token: None,
            connect_timeout: default_connect_timeout(),
            dead_after: default_dead_after(),
        }
    }
}

/// The largest gRPC message a remote client sends or accepts: above any proxy's own request
/// limit, so the remote's limits, not the client's, decide (tonic's default is 4 MiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The transport under a `remote` backend's gRPC clients: the bearer token on every call, each
/// call to the target [`targets::Targets`] picks.
pub type Transport = tonic::service::interceptor::InterceptedService<targets::RemoteChannel, RemoteToken>;

/// The remote's bearer token on every call, read from its secret reference again every few
/// seconds, so a rotated `file:` secret is sent without a restart (the remote re-reads its own
/// side the same way). A secret that cannot be read any more keeps the last token, with a
/// warning.
#[derive(Clone)]
pub struct RemoteToken(Option<Arc<ReloadingSecret<exo_sdk::Auth>>>);

impl RemoteToken {
    /// No token.
    pub fn none() -> Self {
        Self(None)
    }

    /// The token `secret` holds, read now (an unreadable or malformed one is an error here).
    pub fn from_secret(secret: SecretRef) -> Result<Self, ExoError> {
        ReloadingSecret::new(secret, "remote token", token)
            .map(|followed| Self(Some(Arc::new(followed))))
            .map_err(|e| ExoError::new(ErrorReason::InvalidArgument, e.to_string()))
    }

    /// The token to send now.
    fn current(&self) -> exo_sdk::Auth {
        match &self.0 {
            Some(followed) => followed.current().0.as_ref().clone(),
            None => exo_sdk::Auth::none(),
        }
    }
}

/// The bearer token in a secret's bytes.
fn token(bytes: &[u8]) -> Result<exo_sdk::Auth, String> {
    let token = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
    exo_sdk::Auth::bearer(token.trim()).map_err(|e| e.message)
}

impl tonic::service::Interceptor for RemoteToken {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        self.current().call(request)
    }
}

/// A connected remote: the transport for its clients, and its targets.
pub struct Remote {
    /// What the generated clients are built on.
    pub transport: Transport,
    targets: Arc<targets::Targets>,
    auth: RemoteToken,
}

impl Remote {
    /// Ready when a target's gRPC health says `service` (e.g. `exo.queue.v1.QueueService`) is
    /// SERVING — only while that remote's own backend is ready, so an edge is ready exactly
    /// when calls through it can succeed. Targets that are not are set aside.
    pub async fn ready(&self, service: &str) -> Result<(), ExoError> {
        self.targets.check_health(service, &self.auth).await
    }
}

impl RemoteConfig {
    /// Checks the settings hang together, before anything is opened.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |why: String| Err(ConfigError::Invalid(format!("backend (remote): {why}")));
        let address = targets::Address::parse(&self.url);
        match &address {
            targets::Address::Url(url) => {
                let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
                if !scheme_ok || url.parse::<tonic::transport::Uri>().is_err() {
                    return invalid(format!(
                        "url {url:?} is not an http:// or https:// URL, nor srv:NAME / srv+http:NAME"
                    ));
                }
                if self.nameserver.is_some() {
                    return invalid("nameserver goes with an SRV name (url: srv:NAME)".into());
                }
            }
            targets::Address::Srv { name, .. } => {
                if name.is_empty() || name.contains('/') || name.contains(':') {
                    return invalid(format!("{name:?} is not a DNS name"));
                }
            }
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return invalid("client-cert-file and client-key-file go together".into());
        }
        let tls_files = self.ca_file.is_some() || self.client_cert_file.is_some();
        if tls_files && !address.is_tls() {
            return invalid(format!("TLS files are set but url {:?} is not https:// (or srv:)", self.url));
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect-timeout must be positive".into());
        }
        if self.dead_after < Duration::from_millis(100) {
            return invalid(format!("dead-after must be at least 100ms (got {:?})", self.dead_after));
        }
        Ok(())
    }

    /// The connection settings `dead-after` stands for: connect within it, PING every half of
    /// it while calls are in flight, each PING answered within the other half.
    fn liveness(&self) -> exo_sdk::Liveness {
        let half = self.dead_after / 2;
        exo_sdk::Liveness { connect_timeout: self.dead_after, keep_alive: Some((half, half)) }
    }

    /// Connects (lazily; an SRV name is looked up first) with the token on every call.
    pub async fn connect(&self) -> Result<Remote, ExoError> {
        let tls = exo_sdk::Tls {
            ca_file: self.ca_file.clone(),
            client_cert_file: self.client_cert_file.clone(),
            client_key_file: self.client_key_file.clone(),
            server_name: None,
        };
        let auth = match &self.token {
            Some(secret) => RemoteToken::from_secret(secret.clone())?,
            None => RemoteToken::none(),
        };
        let targets = Arc::new(targets::Targets::new(
            targets::Address::parse(&self.url),
            tls,
            self.nameserver,
            self.liveness(),
        )?);
        // A name that does not resolve yet (the service not registered, the DNS server not up)
        // is an unreachable remote, not a broken config: calls look it up again.
        match tokio::time::timeout(self.connect_timeout, targets.refresh(true)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(url = %self.url, error = %err, "remote: no targets yet"),
            Err(_) => tracing::warn!(
                url = %self.url,
                "remote: the DNS lookup took longer than {:?}; looking again on the next call",
                self.connect_timeout
            ),
        }
        let transport = tonic::service::interceptor::InterceptedService::new(
            targets::RemoteChannel::new(targets.clone()),
            auth.clone(),
        );
        Ok(Remote { transport, targets, auth })
    }
}

/// The remote's error as this proxy's own: the remote's reason, retryability, field and
/// resource, its message prefixed with where it came from. A transport failure (the remote not
/// reachable, a TLS refusal) is BACKEND_UNAVAILABLE, retryable, with its cause.
pub fn from_remote(err: exo_sdk::Error) -> ExoError {
    let origin =
        if err.backend.is_empty() { "remote proxy".to_owned() } else { format!("remote {}", err.backend) };
    ExoError {
        reason: err.reason,
        message: format!("{origin}: {}", err.message),
        backend: String::new(),
        retryable: err.retryable,
        field: err.field,
        resource: err.resource,
        retry_after: err.retry_after,
    }
}

/// A `tonic::Status` from a call to the remote, as [`from_remote`] maps it. A status that no
/// ExoFlow handler made (it carries no error detail) and that says the call did not get
/// through — refused or reset connections, TLS refusals, a remote gone mid-stream — is
/// BACKEND_UNAVAILABLE, retryable, with its cause: the remote is this proxy's backend.
pub fn from_status(status: tonic::Status) -> ExoError {
    use tonic::Code;
    let transport = status.details().is_empty()
        && matches!(status.code(), Code::Unknown | Code::Internal | Code::Unavailable | Code::Cancelled);
    let mut err = from_remote(exo_sdk::Error::from(status));
    if transport {
        err = ExoError { reason: ErrorReason::BackendUnavailable, ..err }.retryable();
    }
    err
}

/// A request to the remote carrying what is left of this request's caller's deadline (see
/// `exo_proxy_core::deadline`) as its `grpc-timeout`, so the remote stops when the caller does.
pub fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(left) = exo_proxy_core::deadline::remaining() {
        request.set_timeout(left);
    }
    request
}

/// What asking a remote to describe itself came to.
pub enum Described<T> {
    /// The remote answered.
    Answered(T),
    /// The remote could not be reached at all — nothing listens there, the route or the DNS
    /// name is not there yet, or no answer within `connect-timeout` — as when the remote starts
    /// after this proxy. Not a refusal: a TLS, token or identity refusal is an error.
    Unreachable(ExoError),
}

/// Asks the remote to describe itself with `describe`, waiting at most the config's
/// `connect-timeout`. A remote that answers with a refusal, or that refuses the connection
/// itself (TLS, a plaintext/TLS mismatch), is an error; one that cannot be reached is
/// [`Described::Unreachable`].
pub async fn described<T>(
    config: &RemoteConfig,
    service: &str,
    describe: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<Described<T>, ExoError> {
    match tokio::time::timeout(config.connect_timeout, describe).await {
        Err(_) => Ok(Described::Unreachable(ExoError::unavailable(format!(
            "remote {service} at {} did not answer Describe within {:?}",
            config.url, config.connect_timeout
        )))),
        Ok(Ok(answer)) => Ok(Described::Answered(answer.into_inner())),
        Ok(Err(status)) if unreachable(&status) => Ok(Described::Unreachable(from_status(status))),
        Ok(Err(status)) => Err(from_status(status)),
    }
}

/// Whether a call's failure says only that the remote could not be reached: the connection
/// was refused, timed out or had no route, or there was no target to call yet. A failure after
/// the connection was made (a TLS alert, a protocol mismatch, a refusal) is not.
fn unreachable(status: &tonic::Status) -> bool {
    use std::io::ErrorKind;
    if !status.details().is_empty() {
        return false; // an ExoFlow handler answered
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<targets::NoTarget>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::TimedOut
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
                    | ErrorKind::AddrNotAvailable
            );
        }
        source = err.source();
    }
    false
}

/// A remote backend's description of its remote (capabilities and limits; `D` is the service's
/// own descriptor type). A remote that could not be reached when the backend opened — it starts
/// later, or is down for now — leaves it *provisional* (claiming every capability, limiting
/// nothing, so a failover chain's description is its other members') until the remote answers.
/// No call is forwarded while it is provisional: a request validated against a guess could
/// reach the remote shaped by the guess. The calls answer BACKEND_UNAVAILABLE (retryable)
/// instead, and the first of them — or a readiness check — asks the remote again.
pub struct Description<D> {
    known: Arc<std::sync::OnceLock<D>>,
    provisional: D,
    asking: Arc<std::sync::atomic::AtomicBool>,
    url: String,
}

impl<D: Clone + Send + Sync + 'static> Description<D> {
    /// What the remote at `url` answered.
    pub fn answered(described: D, url: &str) -> Self {
        let this = Self::provisional(described.clone(), url);
        let _ = this.known.set(described);
        this
    }

    /// Not known yet: `provisional` until the remote at `url` answers.
    pub fn provisional(provisional: D, url: &str) -> Self {
        Self {
            known: Arc::new(std::sync::OnceLock::new()),
            provisional,
            asking: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            url: url.to_owned(),
        }
    }

    /// The remote's description, or the provisional one.
    pub fn get(&self) -> &D {
        self.known.get().unwrap_or(&self.provisional)
    }

    /// Whether the remote has described itself.
    pub fn is_known(&self) -> bool {
        self.known.get().is_some()
    }

    /// `Ok` once the remote has described itself. Until then BACKEND_UNAVAILABLE (retryable),
    /// having started `ask` in the background (one ask at a time) so that a retry finds it known.
    pub fn require<F>(&self, ask: impl FnOnce() -> F) -> Result<(), ExoError>
    where
        F: std::future::Future<Output = Result<D, ExoError>> + Send + 'static,
    {
        use std::sync::atomic::Ordering;
        if self.is_known() {
            return Ok(());
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current()
            && !self.asking.swap(true, Ordering::AcqRel)
        {
            let (known, asking, asked) = (self.known.clone(), self.asking.clone(), ask());
            runtime.spawn(async move {
                if let Ok(described) = asked.await {
                    let _ = known.set(described);
                }
                asking.store(false, Ordering::Release);
            });
        }
        Err(self.not_yet())
    }

    /// Asks the remote now (a readiness check) unless it has described itself already.
    pub async fn settle(
        &self,
        ask: impl std::future::Future<Output = Result<D, ExoError>>,
    ) -> Result<(), ExoError> {
        if !self.is_known() {
            let described = ask.await?;
            if self.known.set(described).is_ok() {
                tracing::info!(url = %self.url, "the remote described itself; forwarding calls");
            }
        }
        Ok(())
    }

    fn not_yet(&self) -> ExoError {
        ExoError::unavailable(format!(
            "the remote proxy at {} has not been reached yet, so nothing is forwarded to it",
            self.url
        ))
        .retryable()
    }
}

/// The gRPC health of `service` on one target.
async fn health(
    transport: tonic::service::interceptor::InterceptedService<tonic::transport::Channel, RemoteToken>,
    service: &str,
) -> Result<(), ExoError> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let answer = HealthClient::new(transport)
        .check(request(HealthCheckRequest { service: service.to_owned() }))
        .await
        .map_err(from_status)?
        .into_inner();
    if answer.status == ServingStatus::Serving as i32 {
        Ok(())
    } else {
        Err(ExoError::unavailable(format!("the remote proxy is not ready ({service} is not SERVING)"))
            .retryable())
    }
}

/// The page token a proxy issues for the page after `name` (base64url of the name).
pub fn page_token(start_after: Option<&str>) -> String {
    start_after.map(|name| URL_SAFE_NO_PAD.encode(name)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let ok = RemoteConfig { url: "https://q.internal:7401".into(), ..Default::default() };
        assert!(ok.validate().is_ok());
        let bad_url = RemoteConfig { url: "q.internal:7401".into(), ..Default::default() };
        assert!(bad_url.validate().unwrap_err().to_string().contains("not an http:// or https:// URL"));
        let srv = RemoteConfig {
            url: "srv:_eqs._tcp.q.consul".into(),
            nameserver: Some("127.0.0.1:8600".parse().unwrap()),
            ca_file: Some("ca.pem".into()),
            ..Default::default()
        };
        assert!(srv.validate().is_ok());
        let plain_srv_tls = RemoteConfig { url: "srv+http:_eqs._tcp.q".into(), ..srv.clone() };
        assert!(plain_srv_tls.validate().unwrap_err().to_string().contains("not https://"));
        let stray = RemoteConfig { nameserver: srv.nameserver, ..ok.clone() };
        assert!(stray.validate().unwrap_err().to_string().contains("goes with an SRV name"));
        let half = RemoteConfig { client_cert_file: Some("c.pem".into()), ..ok.clone() };
        assert!(half.validate().unwrap_err().to_string().contains("go together"));
        let hasty = RemoteConfig { dead_after: Duration::from_millis(10), ..ok.clone() };
        assert!(hasty.validate().unwrap_err().to_string().contains("dead-after must be at least 100ms"));
        let plain_tls = RemoteConfig { ca_file: Some("ca.pem".into()), ..Default::default() };
        assert!(plain_tls.validate().unwrap_err().to_string().contains("not https://"));
    }

    #[test]
    fn a_remote_refusal_keeps_its_reason_and_says_where_it_came_from() {
        let status = ExoError::new(ErrorReason::QueueNotFound, "queue 'a' does not exist")
            .with_resource("a")
            .with_backend("sqs");
        let status: tonic::Status = status.into();
        let err = from_status(status);
        assert_eq!(
            (err.reason, err.resource.as_str(), err.retryable),
            (ErrorReason::QueueNotFound, "a", false)
        );
        assert_eq!(err.message, "remote sqs: queue 'a' does not exist");
        let unreachable = from_status(tonic::Status::unavailable("connection refused"));
        assert_eq!(unreachable.reason, ErrorReason::BackendUnavailable);
        assert!(unreachable.retryable);
        let refused_tls =
            from_status(tonic::Status::unknown("transport error: received fatal alert: UnknownCA"));
        assert_eq!((refused_tls.reason, refused_tls.retryable), (ErrorReason::BackendUnavailable, true));
        assert!(refused_tls.message.contains("UnknownCA"), "{}", refused_tls.message);
        // An ExoFlow INTERNAL stays INTERNAL.
        let internal: tonic::Status = ExoError::internal("bug").into();
        assert_eq!(from_status(internal).reason, ErrorReason::Internal);
    }

    #[test]
    fn only_a_remote_not_reached_is_unreachable() {
        use std::io::{Error, ErrorKind};
        let io = |kind: ErrorKind| tonic::Status::from_error(Box::new(Error::from(kind)));
        assert!(unreachable(&io(ErrorKind::ConnectionRefused)));
        assert!(unreachable(&io(ErrorKind::TimedOut)));
        assert!(unreachable(&tonic::Status::from_error(Box::new(targets::NoTarget("srv:x".into())))));
        // The connection was made and then refused or broken (a TLS refusal looks like this).
        assert!(!unreachable(&io(ErrorKind::ConnectionReset)));
        assert!(!unreachable(&io(ErrorKind::BrokenPipe)));
        assert!(!unreachable(&tonic::Status::unavailable("no source")));
        let refusal: tonic::Status = ExoError::new(ErrorReason::Unauthenticated, "wrong token").into();
        assert!(!unreachable(&refusal));
    }

    #[test]
    fn page_tokens_are_what_a_proxy_issues() {
        assert_eq!(page_token(None), "");
        assert_eq!(page_token(Some("orders")), "b3JkZXJz");
    }
}
