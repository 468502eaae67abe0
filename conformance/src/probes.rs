//! The probes of a rendered Kubernetes workload, tried the way the kubelet tries them.
//!
//! `podman kube play` runs a rendered Deployment but does not act on readiness or gRPC probes,
//! so a probe pointing at the wrong port, path or gRPC service would go unnoticed until a real
//! cluster keeps the pod out of its Service. `conformance probes FILE` reads the containers'
//! `startupProbe`, `readinessProbe` and `livenessProbe` and tries each against a running pod
//! whose ports are reachable on one host (host network): `httpGet` succeeds on a status in
//! 200..400, `tcpSocket` on a connect, `grpc` on `grpc.health.v1` SERVING for its service.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

/// A probe that did not succeed, or a file that holds none.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The file is not YAML, or holds no workload with containers.
    #[error("{0}")]
    Manifest(String),
    /// Probes that never succeeded within their thresholds.
    #[error("{failed} of {tried} probes failed")]
    Failed {
        /// How many failed.
        failed: usize,
        /// How many were tried.
        tried: usize,
    },
}

/// One probe of one container.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// The container's name.
    pub container: String,
    /// `startupProbe`, `readinessProbe` or `livenessProbe`.
    pub kind: &'static str,
    /// What is tried.
    pub action: Action,
    /// How long the kubelet would keep trying before it gives up (initial delay + threshold ×
    /// period).
    pub patience: Duration,
}

/// What a probe does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `GET scheme://host:port/path`.
    Http {
        /// `http` or `https` (https is reported as not tried: this tool has no TLS client).
        scheme: String,
        /// The port, named ports resolved.
        port: u16,
        /// The path.
        path: String,
    },
    /// A TCP connect.
    Tcp {
        /// The port.
        port: u16,
    },
    /// `grpc.health.v1.Health/Check` for `service`.
    Grpc {
        /// The port.
        port: u16,
        /// The service asked about ("" for the server as a whole).
        service: String,
    },
    /// A command in the container: not something this tool can run from outside.
    Exec,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Http { scheme, port, path } => write!(f, "httpGet {scheme}://:{port}{path}"),
            Action::Tcp { port } => write!(f, "tcpSocket :{port}"),
            Action::Grpc { port, service } => write!(f, "grpc :{port} service {service:?}"),
            Action::Exec => write!(f, "exec"),
        }
    }
}

const KINDS: [&str; 3] = ["startupProbe", "readinessProbe", "livenessProbe"];

/// The probes of every container (init containers included) of every workload in `yaml`, a
/// file of one or more documents: Deployments, StatefulSets, DaemonSets, Jobs, Pods.
pub fn read_probes(yaml: &str) -> Result<Vec<Probe>, ProbeError> {
    let mut probes = Vec::new();
    let mut containers_seen = 0;
    for document in serde_yaml_ng::Deserializer::from_str(yaml) {
        let doc = Value::deserialize(document).map_err(|e| ProbeError::Manifest(format!("not YAML: {e}")))?;
        let spec = if doc.get("kind").and_then(Value::as_str) == Some("Pod") {
            doc.get("spec")
        } else {
            doc.pointer("/spec/template/spec")
        };
        let Some(spec) = spec else { continue };
        for list in ["initContainers", "containers"] {
            for container in spec.get(list).and_then(Value::as_array).into_iter().flatten() {
                containers_seen += 1;
                let name = container.get("name").and_then(Value::as_str).unwrap_or("?").to_owned();
                for kind in KINDS {
                    if let Some(probe) = container.get(kind) {
                        probes.push(read_probe(&name, kind, probe, container)?);
                    }
                }
            }
        }
    }
    if containers_seen == 0 {
        return Err(ProbeError::Manifest("no workload with containers in the file".into()));
    }
    Ok(probes)
}

fn read_probe(container: &str, kind: &'static str, probe: &Value, spec: &Value) -> Result<Probe, ProbeError> {
    let bad = |why: String| ProbeError::Manifest(format!("container {container}: {kind}: {why}"));
    let port = |handler: &Value| -> Result<u16, ProbeError> {
        match handler.get("port") {
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| bad(format!("port {n} is not a port"))),
            // A named port is one of the container's ports.
            Some(Value::String(named)) => spec
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(named.as_str()))
                .and_then(|p| p.get("containerPort")?.as_u64())
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| bad(format!("no container port is named {named:?}"))),
            _ => Err(bad("no port".into())),
        }
    };
    let action = if let Some(http) = probe.get("httpGet") {
        Action::Http {
            scheme: http.get("scheme").and_then(Value::as_str).unwrap_or("HTTP").to_ascii_lowercase(),
            port: port(http)?,
            path: http.get("path").and_then(Value::as_str).unwrap_or("/").to_owned(),
        }
    } else if let Some(tcp) = probe.get("tcpSocket") {
        Action::Tcp { port: port(tcp)? }
    } else if let Some(grpc) = probe.get("grpc") {
        Action::Grpc {
            port: port(grpc)?,
            service: grpc.get("service").and_then(Value::as_str).unwrap_or("").to_owned(),
        }
    } else if probe.get("exec").is_some() {
        Action::Exec
    } else {
        return Err(bad("no httpGet, tcpSocket, grpc or exec handler".into()));
    };
    // The kubelet's defaults: period 10 s, failure threshold 3.
    let seconds = |field: &str, default: u64| probe.get(field).and_then(Value::as_u64).unwrap_or(default);
    let patience =
        seconds("initialDelaySeconds", 0) + seconds("failureThreshold", 3) * seconds("periodSeconds", 10);
    Ok(Probe { container: container.to_owned(), kind, action, patience: Duration::from_secs(patience) })
}

/// Tries `probe` once against `host`; why it failed.
pub async fn try_once(host: &str, probe: &Probe) -> Result<(), String> {
    let timeout = Duration::from_secs(1);
    match &probe.action {
        Action::Http { scheme, port, path } => {
            let client = reqwest::Client::builder().timeout(timeout).build().map_err(|e| e.to_string())?;
            let url = format!("{scheme}://{host}:{port}{path}");
            let status = client.get(&url).send().await.map_err(|e| format!("GET {url}: {e}"))?.status();
            if (200..400).contains(&status.as_u16()) { Ok(()) } else { Err(format!("GET {url}: {status}")) }
        }
        Action::Tcp { port } => tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, *port)))
            .await
            .map_err(|_| format!("connect {host}:{port}: timed out"))?
            .map(drop)
            .map_err(|e| format!("connect {host}:{port}: {e}")),
        Action::Grpc { port, service } => {
            use tonic_health::pb::{
                HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
            };
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{host}:{port}"))
                .map_err(|e| e.to_string())?
                .connect_timeout(timeout)
                .timeout(timeout)
                .connect()
                .await
                .map_err(|e| format!("connect {host}:{port}: {e}"))?;
            let answer = HealthClient::new(channel)
                .check(HealthCheckRequest { service: service.clone() })
                .await
                .map_err(|e| format!("Check({service:?}): {} {}", e.code(), e.message()))?
                .into_inner();
            if answer.status == ServingStatus::Serving as i32 {
                Ok(())
            } else {
                Err(format!("Check({service:?}): status {} (not SERVING)", answer.status))
            }
        }
        Action::Exec => Err("an exec probe runs inside the container; not tried from outside".into()),
    }
}

/// Why this tool does not try an action.
fn not_tried(action: &Action) -> Option<&'static str> {
    match action {
        Action::Exec => Some("exec probes run inside the container"),
        Action::Http { scheme, .. } if scheme != "http" => Some("no TLS client here"),
        _ => None,
    }
}

/// Tries every probe until it succeeds or its patience (capped at `cap`) runs out, printing one
/// line each; an `exec` or `https` probe is reported as not tried and does not fail the run.
pub async fn check_all(host: &str, probes: &[Probe], cap: Duration) -> Result<(), ProbeError> {
    let mut failed = 0;
    let mut tried = 0;
    for probe in probes {
        let label = format!("{} {} ({})", probe.container, probe.kind, probe.action);
        if let Some(why) = not_tried(&probe.action) {
            println!("  --   {label}: not tried ({why})");
            continue;
        }
        tried += 1;
        let started = Instant::now();
        let deadline = started + probe.patience.min(cap);
        loop {
            match try_once(host, probe).await {
                Ok(()) => {
                    println!("  ok   {label} after {} ms", started.elapsed().as_millis());
                    break;
                }
                Err(why) if Instant::now() >= deadline => {
                    println!("  FAIL {label}: {why}");
                    failed += 1;
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    if failed > 0 { Err(ProbeError::Failed { failed, tried }) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "
apiVersion: apps/v1
kind: Deployment
spec:
  template:
    spec:
      initContainers:
      - name: side
        ports: [{name: grpc, containerPort: 7401}]
        startupProbe: {grpc: {port: grpc, service: exo.queue.v1.QueueService}, failureThreshold: 30, periodSeconds: 1}
      containers:
      - name: app
        livenessProbe: {tcpSocket: {port: 9000}}
        readinessProbe: {httpGet: {path: /readyz, port: 8080, scheme: HTTPS}, initialDelaySeconds: 2, periodSeconds: 5}
---
kind: Service
spec: {ports: [{port: 80}]}
";

    #[test]
    fn reads_every_probe_with_named_ports_and_the_kubelet_defaults() {
        let probes = read_probes(POD).expect("probes");
        assert_eq!(probes.len(), 3);
        assert_eq!(
            probes[0].action,
            Action::Grpc { port: 7401, service: "exo.queue.v1.QueueService".into() }
        );
        assert_eq!(probes[0].patience, Duration::from_secs(30));
        assert_eq!(
            (probes[1].kind, &probes[1].action),
            ("readinessProbe", &Action::Http { scheme: "https".into(), port: 8080, path: "/readyz".into() })
        );
        assert_eq!(probes[1].patience, Duration::from_secs(17));
        assert_eq!((probes[2].kind, &probes[2].action), ("livenessProbe", &Action::Tcp { port: 9000 }));
        assert_eq!(probes[2].patience, Duration::from_secs(30));
    }

    #[test]
    fn refuses_a_file_without_containers_and_an_unknown_named_port() {
        assert!(matches!(read_probes("kind: Service\nspec: {}\n"), Err(ProbeError::Manifest(_))));
        let unnamed =
            "kind: Pod\nspec:\n  containers:\n  - name: a\n    readinessProbe: {tcpSocket: {port: web}}\n";
        let err = read_probes(unnamed).expect_err("no port named web");
        assert!(err.to_string().contains("no container port is named \"web\""), "{err}");
    }

    #[tokio::test]
    async fn a_closed_port_fails_and_an_open_one_passes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let open = listener.local_addr().expect("addr").port();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let probe = |port| Probe {
            container: "c".into(),
            kind: "livenessProbe",
            action: Action::Tcp { port },
            patience: Duration::from_millis(300),
        };
        check_all("127.0.0.1", &[probe(open)], Duration::from_secs(1)).await.expect("open port");
        let err = check_all("127.0.0.1", &[probe(open), probe(closed)], Duration::from_secs(1))
            .await
            .expect_err("closed port");
        assert!(matches!(err, ProbeError::Failed { failed: 1, tried: 2 }), "{err}");
    }
}
