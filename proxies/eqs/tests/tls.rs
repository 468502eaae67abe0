//! The proxy's port with TLS (`server.tls`), over real sockets, with certificate authorities and
//! certificates made by the test: the SDK over `https://` (gRPC on h2) and HTTP/1.1 on the same
//! port; a client that does not trust the CA, a plaintext client, a client without a
//! certificate (mTLS), one whose identity is not allowed; a certificate and a client CA bundle
//! rotated on disk in force for new connections without a restart; `SIGHUP` on the real binary;
//! garbage, a stalled handshake and a TLS client on a plaintext port closed, changing nothing.

use std::{path::Path, sync::Arc, time::Duration};

use eqs::config::EqsConfig;
use exo_proxy_core::tls::TlsSettings;
use exo_sdk::{QueueClient, QueueOptions, RetryPolicy, Tls};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

mod binary;
mod common;

/// A CA, and leaf certificates it signs, written as PEM files under `dir`.
struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
    ca_file: std::path::PathBuf,
}

impl Authority {
    fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, issuer.pem()).unwrap();
        Self { issuer, ca_file }
    }

    /// A certificate for `common_name` (also its DNS name), as (cert file, key file).
    fn issue(&self, dir: &Path, common_name: &str, file: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        self.issue_with(dir, common_name, file, |_| {})
    }

    /// As [`Authority::issue`], with `adjust` applied to the certificate's parameters.
    fn issue_with(
        &self,
        dir: &Path,
        common_name: &str,
        file: &str,
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![common_name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        adjust(&mut params);
        let cert = params.signed_by(&key, &*self.issuer).unwrap();
        let (cert_file, key_file) = (dir.join(format!("{file}.pem")), dir.join(format!("{file}.key")));
        // The key first: a reload that sees the new certificate finds its key already there.
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        std::fs::write(&cert_file, cert.pem()).unwrap();
        (cert_file, key_file)
    }
}

async fn start(tls: TlsSettings) -> (String, tokio::sync::oneshot::Sender<()>) {
    let mut config = EqsConfig::default();
    config.server.tls = Some(tls);
    let (addr, stop) = common::start(config).await;
    (format!("https://localhost:{}", addr.port()), stop)
}

fn settings(cert: &Path, key: &Path) -> TlsSettings {
    TlsSettings {
        cert_file: cert.to_owned(),
        key_file: key.to_owned(),
        client_ca_file: None,
        allowed_clients: Vec::new(),
        reload_interval: Duration::from_millis(100),
        handshake_timeout: Duration::from_secs(2),
    }
}

fn client(url: &str, tls: &Tls) -> QueueClient {
    QueueClient::connect_with_tls(url, tls).unwrap().with_retry(RetryPolicy::none())
}

/// A TLS connection to `port` trusting only `ca_file`, offering `alpn`.
async fn connect(
    port: u16,
    ca_file: &Path,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), stream)
        .await
        .unwrap()
}

/// The certificate a fresh TLS connection to `port` is served.
async fn served_certificate(port: u16, ca_file: &Path) -> rustls_pki_types::CertificateDer<'static> {
    connect(port, ca_file, &[]).await.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// A proxy serving a certificate for `localhost` from a fresh CA, and a client trusting that CA
/// (the proxy stops when `_stop` is dropped: bind it).
struct Served {
    ca: Authority,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    url: String,
    port: u16,
    queues: QueueClient,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn served(dir: &Path) -> Served {
    let ca = Authority::new(dir, "server");
    let (cert, key) = ca.issue(dir, "localhost", "server");
    let (url, _stop) = start(settings(&cert, &key)).await;
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let queues = client(&url, &Tls { ca_file: Some(ca.ca_file.clone()), ..Default::default() });
    Served { ca, cert, key, url, port, queues, _stop }
}

#[tokio::test]
async fn grpc_and_http_share_the_tls_port_and_untrusted_or_plaintext_clients_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Served { ca, url, port, queues, _stop, .. } = served(dir.path()).await;
    queues.create_queue("secure", QueueOptions::default()).await.unwrap();
    queues.send("secure", "over tls").await.unwrap();

    // Without the CA the SDK refuses the server's certificate and says why.
    let err = client(&url, &Tls::default()).list_queues("").await.unwrap_err();
    assert!(err.message.contains("UnknownIssuer"), "the error names the cause: {err}");

    // HTTP/1.1 on the same port (ALPN http/1.1), through the same TLS.
    let mut tls = connect(port, &ca.ca_file, &[b"http/1.1"]).await;
    tls.write_all(b"GET /api/v1/queues HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("secure"), "{answer}");

    // A plaintext request to the TLS port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"), "plaintext was served");

    // The proxy is unaffected by all of it.
    assert_eq!(queues.list_queues("").await.unwrap(), ["secure"]);
}

#[tokio::test]
async fn a_certificate_rotated_on_disk_is_served_to_new_connections_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let Served { ca, cert, key, port, queues, _stop, .. } = served(dir.path()).await;
    queues.create_queue("before", QueueOptions::default()).await.unwrap();
    let first = served_certificate(port, &ca.ca_file).await;

    // A new certificate (same name, new key) replaces the files in place.
    let rotated = ca.issue(dir.path(), "localhost", "rotated");
    std::fs::copy(&rotated.1, &key).unwrap();
    std::fs::copy(&rotated.0, &cert).unwrap();
    let new_der: rustls_pki_types::CertificateDer<'static> =
        rustls_pki_types::pem::PemObject::from_pem_file(&cert).unwrap();
    let (ca_file, expected) = (&ca.ca_file, &new_der);
    let served_new = within_5s(|| async move { served_certificate(port, ca_file).await == *expected }).await;
    assert!(served_new, "the rotated certificate was not served within 5 s");
    {
        use exo_proxy_core::tls::ClientIdentity::{Dns, Subject};
        assert_eq!(
            exo_proxy_core::tls::client_identities(&first),
            [Subject("CN=localhost".into()), Dns("localhost".into())]
        );
    }
    assert_ne!(first, new_der);
    // The client made before the rotation still works (its connection, or a new one).
    assert_eq!(queues.list_queues("").await.unwrap(), ["before"]);
}

#[tokio::test]
async fn with_client_certificates_only_allowed_clients_of_the_ca_get_in() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Authority::new(dir.path(), "server");
    let client_ca = Authority::new(dir.path(), "clients");
    let stranger_ca = Authority::new(dir.path(), "stranger");
    let (cert, key) = server_ca.issue(dir.path(), "localhost", "server");
    let mut tls = settings(&cert, &key);
    tls.client_ca_file = Some(client_ca.ca_file.clone());
    tls.allowed_clients = ["CN=shop-api", "spiffe://example/shop-api", "dns:billing.internal"]
        .map(|entry| entry.parse().unwrap())
        .to_vec();
    let (url, _stop) = start(tls).await;

    let with_cert = |cert: (std::path::PathBuf, std::path::PathBuf)| Tls {
        ca_file: Some(server_ca.ca_file.clone()),
        client_cert_file: Some(cert.0),
        client_key_file: Some(cert.1),
        ..Default::default()
    };
    let allowed = client(&url, &with_cert(client_ca.issue(dir.path(), "shop-api", "shop-api")));
    allowed.create_queue("orders", QueueOptions::default()).await.unwrap();

    let no_cert = Tls { ca_file: Some(server_ca.ca_file.clone()), ..Default::default() };
    assert!(client(&url, &no_cert).list_queues("").await.is_err(), "a client without a certificate got in");
    let stranger = with_cert(stranger_ca.issue(dir.path(), "shop-api", "stranger"));
    assert!(client(&url, &stranger).list_queues("").await.is_err(), "a certificate of another CA got in");
    let not_listed = with_cert(client_ca.issue(dir.path(), "billing", "billing"));
    assert!(client(&url, &not_listed).list_queues("").await.is_err(), "an identity not allowed got in");
    // A certificate of the client CA whose subject is its own but whose alternative names spell
    // the allowed entries: an entry matches only an identity of its kind.
    let intruder = with_cert(client_ca.issue_with(dir.path(), "intruder", "intruder", |params| {
        use rcgen::{SanType, string::Ia5String};
        let ia5 = |text: &str| Ia5String::try_from(text.to_owned()).unwrap();
        params.subject_alt_names = vec![
            SanType::DnsName(ia5("CN=shop-api")),
            SanType::URI(ia5("CN=shop-api")),
            SanType::DnsName(ia5("spiffe://example/shop-api")),
            SanType::URI(ia5("billing.internal")),
        ];
    }));
    assert!(
        client(&url, &intruder).list_queues("").await.is_err(),
        "a certificate got in by naming an allowed subject in its alternative names"
    );
    // Each kind does let in the certificate that carries it where it belongs.
    let by_uri = with_cert(client_ca.issue_with(dir.path(), "workload", "workload", |params| {
        let uri = rcgen::string::Ia5String::try_from("spiffe://example/shop-api".to_owned()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
    }));
    assert_eq!(client(&url, &by_uri).list_queues("").await.unwrap(), ["orders"]);
    let by_dns = with_cert(client_ca.issue(dir.path(), "billing.internal", "billing-dns"));
    assert_eq!(client(&url, &by_dns).list_queues("").await.unwrap(), ["orders"]);

    assert_eq!(allowed.list_queues("").await.unwrap(), ["orders"]);
}

#[tokio::test]
async fn the_tls_port_stops_accepting_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let Served { port, queues, _stop, .. } = served(dir.path()).await;
    queues.create_queue("shutdown", QueueOptions::default()).await.unwrap();
    drop(queues);
    drop(_stop);
    let mut refused = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "the TLS port still accepted connections 5 s after shutdown");
}

/// Whether `check` comes true within 5 s (asked every 100 ms).
async fn within_5s<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) -> bool {
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if check().await {
            return true;
        }
    }
    false
}

/// Whether a fresh client with `tls` gets a call through to `url`.
async fn gets_in(url: &str, tls: &Tls) -> bool {
    client(url, tls).list_queues("").await.is_ok()
}

#[tokio::test]
async fn a_client_ca_bundle_rotated_on_disk_is_in_force_for_new_connections_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Authority::new(dir.path(), "server");
    let (old_ca, new_ca) = (Authority::new(dir.path(), "old"), Authority::new(dir.path(), "new"));
    let (cert, key) = server_ca.issue(dir.path(), "localhost", "server");
    let bundle = dir.path().join("clients.pem");
    std::fs::copy(&old_ca.ca_file, &bundle).unwrap();
    let mut tls = settings(&cert, &key);
    tls.client_ca_file = Some(bundle.clone());
    let (url, _stop) = start(tls).await;
    let with_cert = |(cert, key): (std::path::PathBuf, std::path::PathBuf)| Tls {
        ca_file: Some(server_ca.ca_file.clone()),
        client_cert_file: Some(cert),
        client_key_file: Some(key),
        ..Default::default()
    };
    let old_client = with_cert(old_ca.issue(dir.path(), "app", "old-app"));
    let new_client = with_cert(new_ca.issue(dir.path(), "app", "new-app"));
    assert!(gets_in(&url, &old_client).await);
    assert!(!gets_in(&url, &new_client).await, "a certificate of a CA not in the bundle got in");

    // The rotation's first step: both CAs in the bundle.
    let both = [std::fs::read(&old_ca.ca_file).unwrap(), std::fs::read(&new_ca.ca_file).unwrap()].concat();
    std::fs::write(&bundle, both).unwrap();
    let (url, new_client, old_client) = (&url, &new_client, &old_client);
    let taken = within_5s(|| gets_in(url, new_client)).await;
    assert!(taken, "the new CA was not in force within 5 s");
    assert!(gets_in(url, old_client).await, "both CAs are in the bundle");

    // A bundle that does not load (half written) keeps the last one in force.
    std::fs::write(&bundle, "-----BEGIN CERTIFICATE-----\ntruncated").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(gets_in(url, new_client).await && gets_in(url, old_client).await);

    // The last step: the old CA gone; its clients are refused on their next connection.
    std::fs::copy(&new_ca.ca_file, &bundle).unwrap();
    let refused = within_5s(|| async move { !gets_in(url, old_client).await }).await;
    assert!(refused, "the old CA was still in force 5 s after it left the bundle");
    assert!(gets_in(url, new_client).await);
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_serves_a_rotated_certificate_at_once_and_the_proxy_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new(dir.path(), "server");
    let (cert, key) = ca.issue(dir.path(), "localhost", "server");
    // Checked only hourly: what brings the new certificate in is the signal.
    let config = dir.path().join("eqs.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  tls:\n    cert-file: {}\n    key-file: {}\n    reload-interval: 1h\nbackend:\n  kind: memory\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let (mut proxy, url) = binary::spawn_proxy(|command| {
        command.arg("--config").arg(&config);
    })
    .await;
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let first = served_certificate(port, &ca.ca_file).await;

    let rotated = ca.issue(dir.path(), "localhost", "rotated");
    std::fs::copy(&rotated.1, &key).unwrap();
    std::fs::copy(&rotated.0, &cert).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(served_certificate(port, &ca.ca_file).await, first, "no signal yet: the old one");

    let pid = proxy.id().expect("running") as libc::pid_t;
    // SAFETY: kill(2) on a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let new_der: rustls_pki_types::CertificateDer<'static> =
        rustls_pki_types::pem::PemObject::from_pem_file(&cert).unwrap();
    let (ca_file, expected) = (&ca.ca_file, &new_der);
    let served_new = within_5s(|| async move { served_certificate(port, ca_file).await == *expected }).await;
    assert!(served_new, "the rotated certificate was not served within 5 s of SIGHUP");
    assert!(proxy.try_wait().unwrap().is_none(), "SIGHUP ended the proxy");
    let queues = client(
        &format!("https://localhost:{port}"),
        &Tls { ca_file: Some(ca.ca_file.clone()), ..Default::default() },
    );
    queues.create_queue("after-sighup", QueueOptions::default()).await.unwrap();
}

#[tokio::test]
async fn the_sdk_names_the_certificate_problem_wrong_name_or_expired() {
    let dir = tempfile::tempdir().unwrap();
    let Served { ca, port, _stop, .. } = served(dir.path()).await;
    let trusting = Tls { ca_file: Some(ca.ca_file.clone()), ..Default::default() };
    // The certificate names localhost, not the address dialled.
    let err = client(&format!("https://127.0.0.1:{port}"), &trusting).list_queues("").await.unwrap_err();
    assert!(err.message.contains("not valid for name \"127.0.0.1\""), "the error names the cause: {err}");
    // Unless the name to check is given (SNI and verification both use it).
    let named = Tls { server_name: Some("localhost".into()), ..trusting.clone() };
    client(&format!("https://127.0.0.1:{port}"), &named).list_queues("").await.unwrap();

    let expired = ca.issue_with(dir.path(), "localhost", "expired", |params| {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let (url, _stop_expired) = start(settings(&expired.0, &expired.1)).await;
    let err = client(&url, &trusting).list_queues("").await.unwrap_err();
    assert!(err.message.contains("expired"), "the error names the cause: {err}");
}

/// Reads until the peer closes (or `within` passes: `None`); what it sent before closing.
async fn until_closed(socket: &mut tokio::net::TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .map(|()| got)
}

#[tokio::test]
async fn garbage_a_stalled_handshake_and_tls_to_a_plaintext_port_are_closed_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Served { port, queues, _stop, .. } = served(dir.path()).await;
    queues.create_queue("untouched", QueueOptions::default()).await.unwrap();

    // Garbage where a ClientHello belongs: closed, no HTTP answer.
    let mut garbage = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    garbage.write_all(&[0xab; 4096]).await.unwrap();
    let answer = until_closed(&mut garbage, Duration::from_secs(5)).await.expect("closed");
    assert!(!String::from_utf8_lossy(&answer).contains("HTTP/"), "garbage got an HTTP answer");

    // A client that connects and never finishes its handshake: closed after handshake-timeout (2 s).
    let started = std::time::Instant::now();
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await.unwrap(); // a record header, then nothing
    until_closed(&mut stalled, Duration::from_secs(6)).await.expect("a stalled handshake is closed");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );

    // A TLS client on a plaintext port: a clear error, and that proxy unaffected too.
    let (plain, _plain_stop) = common::start(EqsConfig::default()).await;
    let err = client(&format!("https://localhost:{}", plain.port()), &Tls::default())
        .list_queues("")
        .await
        .unwrap_err();
    // rustls reads the plaintext HTTP answer to its ClientHello as a corrupt TLS record.
    assert!(err.message.contains("corrupt message of type InvalidContentType"), "the error says why: {err}");
    let plain_client =
        QueueClient::connect(&format!("http://{plain}")).unwrap().with_retry(RetryPolicy::none());
    assert!(plain_client.list_queues("").await.unwrap().is_empty());

    // Nothing written, the TLS proxy serves on.
    assert_eq!(queues.list_queues("").await.unwrap(), ["untouched"]);
}
