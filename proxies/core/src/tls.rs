//! TLS on the proxy's one port (`server.tls`): rustls on ring, TLS 1.2 and 1.3, ALPN `h2` and
//! `http/1.1` (gRPC and HTTP/JSON as on a plain port); the certificate and the client CA bundle
//! re-read when their files change, or on `SIGHUP`, without a restart (a handshake uses what is
//! current at that moment, so established connections keep theirs); optionally client
//! certificates (mTLS) from a CA bundle, with an allow-list of client identities.
//!
//! Handshakes run off the accept loop, each bounded by `handshake-timeout`, so a client that
//! opens a connection and never completes the handshake holds one connection slot for that
//! long at most (less when the cap needs its slot: see [`crate::idle`]) and delays nobody else.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use rustls::{
    RootCertStore, ServerConfig as RustlsConfig,
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use crate::{config_error::ConfigError, listener::CountedStream};

/// `server.tls:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsSettings {
    /// PEM file: the server's certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM file: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM file of the CA(s) whose client certificates are accepted; when set, a client without
    /// such a certificate is refused during the handshake (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
    /// With `client-ca-file`: the client identities allowed, each saying what it matches (see
    /// [`ClientIdentity`]): `subject:CN=shop-api`, `dns:shop.internal`, `uri:spiffe://…`. Empty:
    /// any client certificate from the CA.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_clients: Vec<ClientIdentity>,
    /// How often the certificate and key files are checked for changes.
    #[serde(default = "default_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Longest a TLS handshake may take before the connection is closed.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

impl TlsSettings {
    /// Checks the files load (a proxy refuses to start with a certificate it cannot serve).
    pub fn validate(&self) -> Result<(), ConfigError> {
        load_certified_key(&self.cert_file, &self.key_file)?;
        if let Some(ca) = &self.client_ca_file {
            load_roots(ca)?;
        } else if !self.allowed_clients.is_empty() {
            return Err(ConfigError::Invalid(
                "server.tls.allowed-clients needs server.tls.client-ca-file (identities come from client certificates)"
                    .into(),
            ));
        }
        if self.reload_interval.is_zero() || self.handshake_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "server.tls.reload-interval and handshake-timeout must be positive".into(),
            ));
        }
        Ok(())
    }
}

fn invalid(path: &Path, why: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid(format!("{}: {why}", path.display()))
}

fn load_certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, ConfigError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| invalid(cert_file, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(cert_file, e))?;
    if certs.is_empty() {
        return Err(invalid(cert_file, "no PEM certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| invalid(key_file, e))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| invalid(key_file, format!("not a key rustls can sign with: {e}")))?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|e| {
        invalid(key_file, format!("does not belong to the certificate in {}: {e}", cert_file.display()))
    })?;
    Ok(certified)
}

fn load_roots(ca_file: &Path) -> Result<RootCertStore, ConfigError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| invalid(ca_file, e))? {
        roots.add(cert.map_err(|e| invalid(ca_file, e))?).map_err(|e| invalid(ca_file, e))?;
    }
    if roots.is_empty() {
        return Err(invalid(ca_file, "no PEM certificate in it"));
    }
    Ok(roots)
}

/// The server certificate in force, swapped when its files change.
#[derive(Debug)]
struct CurrentCertificate {
    key: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.key.read().ok().map(|key| key.clone())
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The TLS in force on a port: the server certificate, which every handshake asks for, and the
/// acceptor, whose verifier holds the client CA bundle. Each is swapped when its files change
/// (checked every `reload-interval`, and at once on `SIGHUP`, see [`crate::reload`]); a
/// handshake uses what is in force as it starts, so open connections keep theirs.
pub struct ServerTls {
    certificate: Arc<CurrentCertificate>,
    acceptor: RwLock<TlsAcceptor>,
}

impl ServerTls {
    /// Loads the files of `settings` and follows them for as long as the result lives.
    pub fn start(settings: &TlsSettings) -> Result<Arc<Self>, ConfigError> {
        // Stamped before they are read: a file replaced meanwhile is read again at the first
        // check, never taken as already in force.
        let stamps = Stamps::of(settings);
        let certificate = Arc::new(CurrentCertificate {
            key: RwLock::new(Arc::new(load_certified_key(&settings.cert_file, &settings.key_file)?)),
        });
        let acceptor = RwLock::new(acceptor(settings, certificate.clone())?);
        let tls = Arc::new(Self { certificate, acceptor });
        tokio::spawn(follow_files(settings.clone(), stamps, Arc::downgrade(&tls)));
        Ok(tls)
    }

    /// The acceptor for the next handshake.
    fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// The files' modification times: (certificate, key) and the client CA bundle's.
struct Stamps {
    key: (Option<SystemTime>, Option<SystemTime>),
    ca: Option<Option<SystemTime>>,
}

impl Stamps {
    fn of(settings: &TlsSettings) -> Self {
        Self {
            key: (modified(&settings.cert_file), modified(&settings.key_file)),
            ca: settings.client_ca_file.as_deref().map(modified),
        }
    }
}

/// Re-reads the certificate and key when either file changed since `seen`, and the client CA
/// bundle when it did: every `reload-interval`, and regardless of modification times when a
/// reload is asked for (`SIGHUP`). Files that do not load (a rotation half done) keep the
/// previous ones in force, with a warning, and are tried again. Ends when `tls` is dropped.
async fn follow_files(settings: TlsSettings, seen: Stamps, tls: std::sync::Weak<ServerTls>) {
    let Stamps { key: mut seen_key, ca: mut seen_ca } = seen;
    let period = settings.reload_interval;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut asked = crate::reload::changed();
    loop {
        let forced = tokio::select! {
            _ = ticks.tick() => false,
            Ok(()) = asked.changed() => true,
        };
        let Some(tls) = tls.upgrade() else { return };
        let Stamps { key: now, ca: now_ca } = Stamps::of(&settings);
        if forced || now != seen_key {
            match load_certified_key(&settings.cert_file, &settings.key_file) {
                Ok(key) => {
                    if let Ok(mut slot) = tls.certificate.key.write() {
                        *slot = Arc::new(key);
                    }
                    seen_key = now;
                    tracing::info!(cert = %settings.cert_file.display(), "TLS certificate reloaded");
                }
                Err(err) => {
                    tracing::warn!(error = %err, "TLS certificate changed but does not load; keeping the previous one")
                }
            }
        }
        if now_ca.is_some() && (forced || now_ca != seen_ca) {
            match acceptor(&settings, tls.certificate.clone()) {
                Ok(acceptor) => {
                    *tls.acceptor.write().unwrap_or_else(std::sync::PoisonError::into_inner) = acceptor;
                    seen_ca = now_ca;
                    tracing::info!(client_ca = ?settings.client_ca_file, "client CA bundle reloaded; new connections are checked against it");
                }
                Err(err) => {
                    tracing::warn!(error = %err, "client CA bundle changed but does not load; keeping the previous one")
                }
            }
        }
    }
}

/// One identity a client certificate carries, typed by where it sits in the certificate: an
/// allow-list entry matches only an identity of its own kind, so a certificate whose DNS or URI
/// alternative name reads `CN=app` is not the subject `CN=app`.
///
/// Written `subject:<RFC 4514 DN>`, `dns:<name>` or `uri:<URI>`. Without a prefix an entry is
/// read as what it looks like: with `://` a URI, with `=` a subject, otherwise a DNS name; any
/// other `kind:` prefix is refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ClientIdentity {
    /// The certificate's subject, as RFC 4514 text (`CN=shop-api,O=Example`).
    Subject(String),
    /// A DNS subject alternative name.
    Dns(String),
    /// A URI subject alternative name (a SPIFFE ID, say).
    Uri(String),
}

impl std::str::FromStr for ClientIdentity {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let typed = |value: &str, make: fn(String) -> Self| {
            if value.is_empty() || value.trim() != value {
                Err(format!("client identity {text:?}: the value after the prefix is empty or padded"))
            } else {
                Ok(make(value.to_owned()))
            }
        };
        if let Some(dn) = text.strip_prefix("subject:") {
            typed(dn, Self::Subject)
        } else if let Some(name) = text.strip_prefix("dns:") {
            typed(name, Self::Dns)
        } else if let Some(uri) = text.strip_prefix("uri:") {
            typed(uri, Self::Uri)
        } else if text.contains("://") {
            typed(text, Self::Uri)
        } else if text.contains('=') {
            typed(text, Self::Subject)
        } else if text.contains(':') {
            Err(format!(
                "client identity {text:?}: unknown kind; write subject:<DN>, dns:<name> or uri:<URI>"
            ))
        } else {
            typed(text, Self::Dns)
        }
    }
}

impl ClientIdentity {
    /// Whether a certificate's `identity` is this one: the same kind and value (DNS names
    /// compared without regard to ASCII case, as DNS does).
    pub fn matches(&self, identity: &ClientIdentity) -> bool {
        match (self, identity) {
            (Self::Subject(a), Self::Subject(b)) | (Self::Uri(a), Self::Uri(b)) => a == b,
            (Self::Dns(a), Self::Dns(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        }
    }
}

impl TryFrom<String> for ClientIdentity {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<ClientIdentity> for String {
    fn from(identity: ClientIdentity) -> Self {
        identity.to_string()
    }
}

impl std::fmt::Display for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Subject(dn) => write!(f, "subject:{dn}"),
            Self::Dns(name) => write!(f, "dns:{name}"),
            Self::Uri(uri) => write!(f, "uri:{uri}"),
        }
    }
}

/// The identities a client certificate carries: its subject (RFC 4514) and its DNS / URI
/// alternative names, each typed.
pub fn client_identities(cert: &CertificateDer<'_>) -> Vec<ClientIdentity> {
    use x509_cert::der::{Decode as _, oid::AssociatedOid as _};
    let Ok(parsed) = x509_cert::Certificate::from_der(cert.as_ref()) else { return Vec::new() };
    let mut names = vec![ClientIdentity::Subject(parsed.tbs_certificate.subject.to_string())];
    for ext in parsed.tbs_certificate.extensions.iter().flatten() {
        if ext.extn_id != x509_cert::ext::pkix::SubjectAltName::OID {
            continue;
        }
        let Ok(san) = x509_cert::ext::pkix::SubjectAltName::from_der(ext.extn_value.as_bytes()) else {
            continue;
        };
        for name in san.0 {
            match name {
                x509_cert::ext::pkix::name::GeneralName::DnsName(dns) => {
                    names.push(ClientIdentity::Dns(dns.to_string()))
                }
                x509_cert::ext::pkix::name::GeneralName::UniformResourceIdentifier(uri) => {
                    names.push(ClientIdentity::Uri(uri.to_string()))
                }
                _ => {}
            }
        }
    }
    names
}

/// An acceptor for `settings` (its client CA bundle read now) serving `certificate`.
fn acceptor(
    settings: &TlsSettings,
    certificate: Arc<CurrentCertificate>,
) -> Result<TlsAcceptor, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = RustlsConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Invalid(format!("TLS: {e}")))?;
    let builder = match &settings.client_ca_file {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(ca)?), provider)
                .build()
                .map_err(|e| invalid(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The runtime TLS handshakes run on: a thread of their own, so a flood of handshakes (each a
/// millisecond or so of CPU) queues behind itself, not in front of the requests of connections
/// already served — with one worker thread those waited seconds behind thousands of handshakes.
/// Made once per process, on first use; the sockets stay with the proxy's runtime.
fn handshake_runtime() -> io::Result<tokio::runtime::Handle> {
    static HANDSHAKES: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();
    if let Some(handle) = HANDSHAKES.get() {
        return Ok(handle.clone());
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new().name("exo-tls-handshakes".into()).spawn(move || {
        runtime.block_on(std::future::pending::<()>());
    })?;
    Ok(HANDSHAKES.get_or_init(|| handle).clone())
}

/// A listener handing out connections whose TLS handshake completed (and whose client, with
/// mTLS and an allow-list, is allowed); handshakes run concurrently, each bounded.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<CountedStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Wraps `inner` (the capped TCP listener) with `tls`.
    pub fn new(
        mut inner: crate::listener::CappedListener,
        tls: Arc<ServerTls>,
        settings: &TlsSettings,
    ) -> io::Result<Self> {
        use axum::serve::Listener as _;
        let local = inner.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let timeout = settings.handshake_timeout;
        let allowed: Arc<Vec<ClientIdentity>> = Arc::new(settings.allowed_clients.clone());
        let handshakes = handshake_runtime()?;
        tokio::spawn(async move {
            loop {
                // Stop accepting once the server has dropped this listener (shutdown).
                let (stream, peer) = tokio::select! {
                    accepted = inner.accept() => accepted,
                    () = tx.closed() => break,
                };
                let (acceptor, tx, allowed) = (tls.acceptor(), tx.clone(), allowed.clone());
                handshakes.spawn(async move {
                    let tls = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(err)) => {
                            tracing::info!(%peer, error = %err, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(%peer, ?timeout, "TLS handshake did not complete in time");
                            return;
                        }
                    };
                    if let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                        let identities = client_identities(cert);
                        if !allowed.is_empty()
                            && !allowed.iter().any(|a| identities.iter().any(|id| a.matches(id)))
                        {
                            tracing::warn!(%peer, ?identities, "client certificate not in server.tls.allowed-clients: connection closed");
                            return;
                        }
                        tracing::debug!(%peer, ?identities, "client certificate accepted");
                    }
                    let _ = tx.send((tls, peer)).await;
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl crate::idle::Tracked for TlsStream<CountedStream> {
    fn activity(&self) -> &Arc<crate::idle::Activity> {
        self.get_ref().0.activity()
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<CountedStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(next) => next,
            // The accept task never ends while the listener lives; park if it ever does.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::ClientIdentity::{self, Dns, Subject, Uri};

    fn parse(text: &str) -> Result<ClientIdentity, String> {
        text.parse()
    }

    #[test]
    fn allow_list_entries_are_typed_by_prefix_or_by_what_they_look_like() {
        assert_eq!(parse("subject:CN=app"), Ok(Subject("CN=app".into())));
        assert_eq!(parse("dns:CN=app"), Ok(Dns("CN=app".into())));
        assert_eq!(parse("uri:CN=app"), Ok(Uri("CN=app".into())));
        assert_eq!(parse("CN=app,O=Example"), Ok(Subject("CN=app,O=Example".into())));
        assert_eq!(parse("spiffe://example/app"), Ok(Uri("spiffe://example/app".into())));
        assert_eq!(parse("app.internal"), Ok(Dns("app.internal".into())));
        for bad in ["email:a@example", "subject:", "dns: app", "", "ip:10.0.0.1"] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        // Written back with its kind, so a rendered config says what it matches.
        assert_eq!(String::from(parse("CN=app").unwrap()), "subject:CN=app");
    }

    #[test]
    fn an_entry_matches_only_an_identity_of_its_own_kind() {
        let allowed = [parse("CN=app").unwrap(), parse("spiffe://example/app").unwrap()];
        // The intruder's subject is its own; its SANs spell the allowed entries.
        let intruder = [
            Subject("CN=intruder".into()),
            Dns("CN=app".into()),
            Uri("CN=app".into()),
            Dns("spiffe://example/app".into()),
        ];
        assert!(!allowed.iter().any(|a| intruder.iter().any(|id| a.matches(id))));
        assert!(allowed[0].matches(&Subject("CN=app".into())));
        assert!(allowed[1].matches(&Uri("spiffe://example/app".into())));
        assert!(parse("dns:App.Internal").unwrap().matches(&Dns("app.internal".into())));
        assert!(!parse("CN=App").unwrap().matches(&Subject("CN=app".into())));
    }
}
