//! Rendering a checked manifest into deployment files. Output is deterministic: the same
//! manifest gives byte-identical files (ordered maps, no timestamps, no randomness).

pub mod arm;
pub mod cloudformation;
pub mod compose;
pub mod k8s;
pub mod systemd;

use std::collections::BTreeMap;

use eqs::config::EqsConfig;
use exo_proxy_core::config::ServerConfig;
use serde::Serialize;

use crate::manifest::{Manifest, Provider, ProviderKind};

/// Rendered files by relative path.
pub type Files = BTreeMap<String, String>;

/// Registry of the proxy images.
pub const PROXY_REGISTRY: &str = "ghcr.io/exoflow";

/// One proxy the app needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sidecar {
    /// eqs, eos or ekv.
    pub name: &'static str,
    /// Port on the pod's or host's loopback.
    pub port: u16,
    /// The SDK's endpoint variable.
    pub endpoint_env: &'static str,
    /// gRPC service name for health checks.
    pub grpc_service: &'static str,
    /// The proxy's config file, as the proxy loads it.
    pub config: String,
    /// The Unix socket it serves as well, when the app reaches it that way.
    pub socket: Option<String>,
}

/// Where the proxies' Unix sockets live in a pod (`app.container.proxy-transport: unix`).
pub const SOCKET_DIR: &str = "/run/exoflow";

/// The Unix socket `proxy` serves on `host`, if the manifest asks for sockets there.
fn proxy_socket(m: &Manifest, host: ProxyHost, proxy: &str) -> Option<String> {
    let unix = m.app.container.proxy_transport == crate::manifest::ProxyTransport::Unix;
    (unix && host == ProxyHost::Pod).then(|| format!("{SOCKET_DIR}/{proxy}.sock"))
}

/// The variable (and Secret key) holding the bearer token the proxies require in a pod.
pub const TOKEN_ENV: &str = "EXO_PROXY_TOKEN";

/// Where the proxies keep local data, when their backend is local.
pub const DATA_DIR: &str = "/var/lib/exoflow";

/// Every proxy's data under [`DATA_DIR`] (a pod's or a compose project's shared volume).
pub fn shared_data_dir(_proxy: &str) -> String {
    DATA_DIR.to_owned()
}

fn yaml<T: Serialize>(value: &T) -> String {
    // Serializing plain config structs cannot fail.
    serde_yaml_ng::to_string(value).unwrap_or_default()
}

/// Where the proxies run beside the app, which decides how they listen and authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHost {
    /// A VM or a compose project: loopback only, credentials from the referenced secrets.
    Loopback,
    /// A Kubernetes pod: 0.0.0.0 (so kubelet probes reach it) behind the pod's bearer token.
    Pod,
    /// An ECS task: loopback, and AWS credentials from the task role (not from references).
    EcsTask,
    /// A VM (systemd): loopback, or — with `compute.standalone` — the address and TLS other
    /// hosts reach, behind the bearer token.
    Vm,
}

/// Where systemd hands a unit's credentials (`LoadCredential=`) to it.
pub fn credential_path(m: &Manifest, proxy: &str, name: &str) -> String {
    format!("/run/credentials/exoflow-{}-{proxy}.service/{name}", m.name)
}

/// The proxies `m` needs, each with its config for the current provider, as run on `host`; a
/// proxy with a local backend keeps its data under `data_dir(proxy_name)`.
pub fn sidecars(m: &Manifest, host: ProxyHost, data_dir: &dyn Fn(&str) -> String) -> Vec<Sidecar> {
    let listen_any = host == ProxyHost::Pod;
    let task_role = host == ProxyHost::EcsTask;
    let kind = m.current_provider().map(|p| p.kind).unwrap_or(ProviderKind::Local);
    let standalone = m.compute.standalone.as_ref().filter(|_| host == ProxyHost::Vm);
    let server = |port: u16, proxy: &str| {
        let ip: std::net::IpAddr = match standalone {
            Some(standalone) => standalone.listen,
            None if listen_any => [0, 0, 0, 0].into(),
            None => [127, 0, 0, 1].into(),
        };
        let mut s = ServerConfig::with_listen(std::net::SocketAddr::from((ip, port)));
        // A pod's own network namespace is private to it; a VM's network is not.
        s.allow_insecure_non_loopback = listen_any || standalone.is_some_and(|s| s.allow_insecure);
        if let Some(tls) = standalone.and_then(|s| s.tls.as_ref()) {
            // The files as systemd hands them over (see `systemd::render`), the rest defaults.
            let file = |name: &str| credential_path(m, proxy, name);
            let mut settings =
                serde_json::json!({ "cert-file": file("tls-cert"), "key-file": file("tls-key") });
            if tls.client_ca_file.is_some() {
                settings["client-ca-file"] = file("tls-client-ca").into();
                settings["allowed-clients"] = tls.allowed_clients_of(proxy).to_vec().into();
            }
            s.tls = serde_json::from_value(settings).ok();
        }
        // Reachable beyond loopback (a pod's IP, other hosts): require the bearer token.
        if listen_any || standalone.is_some() {
            s.auth_token = Some(exo_proxy_core::secret::SecretRef::Env(TOKEN_ENV.to_owned()));
        }
        s.log.format = exo_proxy_core::config::LogFormat::Json;
        s.unix_socket = proxy_socket(m, host, proxy).map(Into::into);
        s
    };
    let mut out = Vec::new();
    if !m.queues.is_empty() {
        let config = match kind {
            ProviderKind::Local => yaml(&EqsConfig {
                server: server(eqs::config::DEFAULT_PORT, "eqs"),
                backend: eqs::config::BackendConfig::named(
                    "embedded",
                    Some(format!("{}/eqs.db", data_dir("eqs")).into()),
                )
                .unwrap_or_default(),
                topics: declared_topics(m, true),
                large_messages: None,
            }),
            // Every provider that is not local: its backends, chained.
            _ => yaml(&EqsConfig {
                server: server(eqs::config::DEFAULT_PORT, "eqs"),
                backend: queue_backend(m, task_role),
                topics: declared_topics(m, false),
                large_messages: None,
            }),
        };
        out.push(Sidecar {
            name: "eqs",
            port: eqs::config::DEFAULT_PORT,
            endpoint_env: exo_sdk::EQS_ENDPOINT_ENV,
            grpc_service: "exo.queue.v1.QueueService",
            config,
            socket: proxy_socket(m, host, "eqs"),
        });
    }
    if !m.buckets.is_empty() {
        let config = match kind {
            ProviderKind::Local => yaml(&eos::config::EosConfig {
                server: server(eos::config::DEFAULT_PORT, "eos"),
                backend: eos::config::BackendConfig::named(
                    "fs",
                    Some(format!("{}/objects", data_dir("eos")).into()),
                )
                .unwrap_or_default(),
                presign: Default::default(),
            }),
            // Every provider that is not local: its backends, chained.
            _ => yaml(&eos::config::EosConfig {
                server: server(eos::config::DEFAULT_PORT, "eos"),
                backend: object_backend(m, task_role, format!("{}/eos-failover.db", data_dir("eos")).into()),
                presign: Default::default(),
            }),
        };
        out.push(Sidecar {
            name: "eos",
            port: eos::config::DEFAULT_PORT,
            endpoint_env: exo_sdk::EOS_ENDPOINT_ENV,
            grpc_service: "exo.object.v1.ObjectService",
            config,
            socket: proxy_socket(m, host, "eos"),
        });
    }
    if !m.tables.is_empty() {
        let config = match kind {
            ProviderKind::Local => yaml(&ekv::config::EkvConfig {
                server: server(ekv::config::DEFAULT_PORT, "ekv"),
                backend: ekv::config::BackendConfig::named(
                    "embedded",
                    Some(format!("{}/ekv.db", data_dir("ekv")).into()),
                )
                .unwrap_or_default(),
            }),
            // Every provider that is not local: its backends, chained.
            _ => yaml(&ekv::config::EkvConfig {
                server: server(ekv::config::DEFAULT_PORT, "ekv"),
                backend: kv_backend(m, task_role, format!("{}/ekv-failover.db", data_dir("ekv")).into()),
            }),
        };
        out.push(Sidecar {
            name: "ekv",
            port: ekv::config::DEFAULT_PORT,
            endpoint_env: exo_sdk::EKV_ENDPOINT_ENV,
            grpc_service: "exo.kv.v1.KvService",
            config,
            socket: proxy_socket(m, host, "ekv"),
        });
    }
    out
}

/// One proxy's backend: the current provider's service, or, with a failover chain of several
/// cloud providers, a failover chain of their services in that order (writes go to the first
/// that answers; queue receives drain every member, object and KV reads fall through).
/// `service(provider)` is a provider's service, if it is a cloud provider.
fn chained<B>(
    m: &Manifest,
    service: impl Fn(&Provider) -> Option<B>,
    failover: impl FnOnce(Vec<B>) -> B,
) -> Option<B> {
    let mut members: Vec<B> =
        m.chain().iter().filter_map(|id| m.providers.get(id)).filter_map(&service).collect();
    match members.len() {
        0 => m.current_provider().and_then(service),
        1 => members.pop(),
        _ => Some(failover(members)),
    }
}

/// The backend provider `p` offers for one service: the registry line of that proxy whose
/// provider is `p`'s kind, with `p`'s settings. Local providers have no cloud settings (their
/// proxies are rendered above).
fn provider_backend<B: serde::de::DeserializeOwned>(
    entries: &[exo_proxy_core::registry::Entry],
    proxy: Proxy,
    m: &Manifest,
    p: &Provider,
    task_role: bool,
) -> Option<B> {
    let (provider, settings) = match p.kind {
        ProviderKind::Aws => ("aws", serde_json::to_value(aws_settings(m, Some(p), task_role))),
        ProviderKind::Azure => ("azure", serde_json::to_value(azure_settings(m, Some(p)))),
        ProviderKind::Postgres => ("postgres", serde_json::to_value(postgres_settings(m, p))),
        ProviderKind::Nats | ProviderKind::Redis | ProviderKind::Rabbitmq => {
            (p.kind.as_str(), Ok(server_settings(m, p)))
        }
        ProviderKind::Gcp => ("gcp", Ok(gcp_settings(p))),
        ProviderKind::Remote => ("remote", Ok(remote_settings(p, proxy))),
        ProviderKind::Local => return None,
    };
    // A provider that does not offer this service (postgres has no objects) is not a member.
    let entry = entries.iter().find(|e| e.provider == provider)?;
    let mut section = settings.ok()?;
    section.as_object_mut()?.insert("kind".into(), entry.kind.into());
    // Settings this crate built always read back; a test renders every provider × service.
    serde_json::from_value(section).ok()
}

fn queue_backend(m: &Manifest, task_role: bool) -> eqs::config::BackendConfig {
    use eqs::config::{BackendConfig, FailoverConfig};
    let service = |p: &Provider| provider_backend(BackendConfig::ENTRIES, Proxy::EQS, m, p, task_role);
    chained(m, service, |members| {
        BackendConfig::Failover(FailoverConfig {
            members,
            member_timeout: exo_proxy_core::failover::MEMBER_TIMEOUT,
            member_backoff: exo_proxy_core::failover::BACKOFF,
        })
    })
    .unwrap_or_default()
}

fn object_backend(m: &Manifest, task_role: bool, journal: std::path::PathBuf) -> eos::config::BackendConfig {
    use eos::config::{BackendConfig, FailoverConfig};
    let service = |p: &Provider| provider_backend(BackendConfig::ENTRIES, Proxy::EOS, m, p, task_role);
    chained(m, service, |members| {
        BackendConfig::Failover(FailoverConfig {
            members,
            journal,
            member_timeout: exo_proxy_core::failover::MEMBER_TIMEOUT,
            member_backoff: exo_proxy_core::failover::BACKOFF,
        })
    })
    .unwrap_or_default()
}

fn kv_backend(m: &Manifest, task_role: bool, journal: std::path::PathBuf) -> ekv::config::BackendConfig {
    use ekv::config::{BackendConfig, FailoverConfig};
    let service = |p: &Provider| provider_backend(BackendConfig::ENTRIES, Proxy::EKV, m, p, task_role);
    chained(m, service, |members| {
        BackendConfig::Failover(FailoverConfig {
            members,
            journal,
            member_timeout: exo_proxy_core::failover::MEMBER_TIMEOUT,
            member_backoff: exo_proxy_core::failover::BACKOFF,
        })
    })
    .unwrap_or_default()
}

/// Which proxy a backend section is for.
#[derive(Debug, Clone, Copy)]
pub struct Proxy {
    /// `eqs`, `eos` or `ekv`.
    pub name: &'static str,
    /// Its standard port.
    pub port: u16,
}

impl Proxy {
    /// Queues.
    pub const EQS: Proxy = Proxy { name: "eqs", port: eqs::config::DEFAULT_PORT };
    /// Objects.
    pub const EOS: Proxy = Proxy { name: "eos", port: eos::config::DEFAULT_PORT };
    /// Tables.
    pub const EKV: Proxy = Proxy { name: "ekv", port: ekv::config::DEFAULT_PORT };
}

/// The settings of a remote provider for `proxy`: where that proxy's central counterpart is
/// (`https://host` → the proxy's standard port there; `srv:NAME` → `srv:_eqs._tcp.NAME`), the
/// TLS files, and the token reference (`auth.token`).
pub fn remote_settings(p: &Provider, proxy: Proxy) -> serde_json::Value {
    let base = p.url.clone().unwrap_or_default();
    let url = match base.split_once(':') {
        Some((scheme @ ("srv" | "srv+http"), name)) => format!("{scheme}:_{}._tcp.{name}", proxy.name),
        _ => format!("{}:{}", base.trim_end_matches('/'), proxy.port),
    };
    let mut settings = serde_json::Map::new();
    settings.insert("url".into(), url.into());
    for (key, file) in [
        ("ca-file", &p.ca_file),
        ("client-cert-file", &p.client_cert_file),
        ("client-key-file", &p.client_key_file),
    ] {
        if let Some(file) = file {
            settings.insert(key.into(), file.clone().into());
        }
    }
    if let Some(token) = p.auth.get("token") {
        settings.insert("token".into(), token.clone().into());
    }
    serde_json::Value::Object(settings)
}

/// The directory holding the TLS files (CA, client certificate and key) of the remote
/// providers in the chain, when there are any: in a pod, a Secret of the same files
/// ([`remote_tls_secret`]) is mounted there. `deploy validate` makes sure it is one directory.
pub fn remote_tls_dir(m: &Manifest) -> Option<String> {
    m.chain()
        .iter()
        .filter_map(|id| m.providers.get(id))
        .filter(|p| p.kind == ProviderKind::Remote)
        .flat_map(|p| [&p.ca_file, &p.client_cert_file, &p.client_key_file])
        .flatten()
        .filter_map(|file| std::path::Path::new(file).parent())
        .map(|dir| dir.display().to_string())
        .next()
}

/// The Secret holding the remote providers' TLS files in a pod (one key per file name).
pub fn remote_tls_secret(m: &Manifest) -> String {
    format!("{}-remote-tls", m.name)
}

/// The settings of a NATS, Redis or RabbitMQ provider: its url, the app's namespace on that server (its
/// name unless the provider names one), and the credential references the backend reads
/// (`auth.password`, NATS also `auth.token` and `user`).
fn server_settings(m: &Manifest, p: &Provider) -> serde_json::Value {
    let mut settings = serde_json::Map::new();
    if let Some(url) = &p.url {
        settings.insert("url".into(), url.clone().into());
    }
    settings.insert("namespace".into(), p.namespace.clone().unwrap_or_else(|| m.name.clone()).into());
    if let Some(user) = &p.user {
        settings.insert("user".into(), user.clone().into());
    }
    if let Some(ca) = &p.ca_file {
        settings.insert("ca-file".into(), ca.clone().into());
    }
    for (key, reference) in &p.auth {
        settings.insert(key.clone(), reference.clone().into());
    }
    serde_json::Value::Object(settings)
}

/// The settings of a GCP provider: its project, its location for new buckets, and the
/// service-account key reference (without one the proxy uses the metadata server's identity:
/// GKE workload identity, a VM's service account).
fn gcp_settings(p: &Provider) -> serde_json::Value {
    let mut settings = serde_json::json!({ "project": p.project.clone().unwrap_or_default() });
    if let Some(location) = &p.location {
        settings["location"] = location.clone().into();
    }
    if let Some(key) = p.auth.get("service-account-key") {
        settings["credentials"] = serde_json::json!({ "service-account-key": key });
    }
    settings
}

/// Checks a NATS, Redis or RabbitMQ provider's settings as the backend that reads them would, naming what
/// to fix: `None` when they are fine.
pub fn server_settings_problem(m: &Manifest, p: &Provider) -> Option<String> {
    if let Some(ca) = &p.ca_file {
        if p.kind == ProviderKind::Rabbitmq && !p.url.as_deref().is_some_and(|u| u.starts_with("amqps://")) {
            return Some("ca-file is for TLS: a rabbitmq url with it must be amqps://host:5671/vhost".into());
        }
        if !ca.starts_with('/') {
            return Some(format!("ca-file {ca:?} must be an absolute path where the proxy runs"));
        }
    }
    // The CA file lives where the proxy runs, not here: check everything else.
    let p = &Provider { ca_file: None, ..p.clone() };
    let checked = match p.kind {
        ProviderKind::Nats | ProviderKind::Rabbitmq => provider_backend::<eqs::config::BackendConfig>(
            eqs::config::BackendConfig::ENTRIES,
            Proxy::EQS,
            m,
            p,
            false,
        )
        .map(|b| b.validate()),
        ProviderKind::Redis => provider_backend::<ekv::config::BackendConfig>(
            ekv::config::BackendConfig::ENTRIES,
            Proxy::EKV,
            m,
            p,
            false,
        )
        .map(|b| b.validate()),
        _ => return None,
    };
    match checked {
        Some(Ok(())) => None,
        Some(Err(err)) => Some(err.to_string()),
        None => Some(format!("the {} settings do not form a backend configuration", p.kind.as_str())),
    }
}

/// The PostgreSQL settings of provider `p`: its url, its password reference, and a schema of
/// the app's own (its name with `-` as `_`, as PostgreSQL identifiers want) unless it names one.
pub fn postgres_settings(m: &Manifest, p: &Provider) -> exo_postgres::PostgresSettings {
    exo_postgres::PostgresSettings {
        url: p.url.clone().unwrap_or_default(),
        password: p
            .auth
            .get("password")
            .and_then(|r| exo_proxy_core::secret::SecretRef::try_from(r.clone()).ok()),
        schema: p.schema.clone().unwrap_or_else(|| m.name.replace('-', "_")),
        ca_file: p.ca_file.as_ref().map(Into::into),
        ..Default::default()
    }
}

/// The AWS settings of provider `p`: its region, its credential references, and the app's name
/// prefix, so the proxies find the queues, buckets and tables CloudFormation created as
/// `<app>-<name>`. With `task_role` the credentials are left to the default chain (an ECS task
/// role), not read from references.
fn aws_settings(m: &Manifest, p: Option<&Provider>, task_role: bool) -> exo_aws::AwsSettings {
    exo_aws::AwsSettings {
        region: p.and_then(|p| p.region.clone()),
        endpoint: None,
        // Validation has checked every reference; an unparsable one cannot reach here.
        credentials: p
            .filter(|_| !task_role)
            .map(|p| {
                p.auth
                    .iter()
                    .filter_map(|(k, v)| {
                        exo_proxy_core::secret::SecretRef::try_from(v.clone()).ok().map(|r| (k.clone(), r))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        name_prefix: format!("{}-", m.name),
    }
}

/// The manifest's topics as eqs declares them: made (with their subscriptions) when the proxy
/// starts, where the provider has no resource for them (Azure keeps them in a table) or nothing
/// made them (local); on AWS CloudFormation made them and the proxy finds them as they are.
/// `create_queues`: a local backend has no template making the queues, so the proxy makes a
/// missing one (default options) rather than wait for the app.
pub fn declared_topics(m: &Manifest, create_queues: bool) -> Vec<eqs::config::DeclaredTopic> {
    m.topics
        .iter()
        .map(|t| eqs::config::DeclaredTopic {
            name: t.name.clone(),
            subscriptions: t
                .subscriptions
                .iter()
                .map(|s| eqs::config::DeclaredSubscription {
                    name: s.name.clone(),
                    queue: s.queue.clone(),
                    // The canonical spelling, as the proxy stores it (and reads back from SNS).
                    filter: eqs::filter::Filter::parse(s.filter.as_deref().unwrap_or_default())
                        .map(|f| f.canonical())
                        .unwrap_or_default(),
                    create_queue: create_queues,
                    // The app beside the proxy (same pod, task, host or network namespace).
                    push: s.push.as_ref().map(|path| eqs::config::PushConfig {
                        url: format!("http://127.0.0.1:{}{path}", m.app.container.port.unwrap_or(80)),
                        concurrency: 4,
                        timeout: std::time::Duration::from_secs(10),
                    }),
                })
                .collect(),
        })
        .collect()
}

/// The Azure settings of provider `p`: its storage account, the storage credential among its
/// references (account key, SAS token or connection string), and the app's name prefix, so the
/// proxies find the queues, containers and tables ARM created as `<app>-<name>`.
fn azure_settings(m: &Manifest, p: Option<&Provider>) -> exo_azure::AzureSettings {
    exo_azure::AzureSettings {
        account: p.and_then(|p| p.account.clone()).unwrap_or_default(),
        endpoint: None,
        // Validation has checked the references; Entra ID keys (client-id, ...) are for ARM.
        credentials: p
            .map(|p| {
                p.auth
                    .iter()
                    .filter(|(k, _)| exo_azure::CREDENTIAL_KEYS.contains(&k.as_str()))
                    .filter_map(|(k, v)| {
                        exo_proxy_core::secret::SecretRef::try_from(v.clone()).ok().map(|r| (k.clone(), r))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        name_prefix: format!("{}-", m.name),
        table_endpoint: None,
    }
}

/// The proxy image for `proxy` (`eqs-proxy`, ...), as `scripts/images` tags it: from the
/// manifest's `proxy-registry` (default [`PROXY_REGISTRY`]), with the app's tag when `sync-tags`,
/// else this release's version.
pub fn proxy_image(m: &Manifest, proxy: &str) -> String {
    let tag = match (&m.app.container.tag, m.app.container.sync_tags) {
        (Some(tag), true) => tag.clone(),
        _ => env!("CARGO_PKG_VERSION").to_owned(),
    };
    let registry = m.app.container.proxy_registry.as_deref().unwrap_or(PROXY_REGISTRY);
    format!("{registry}/{proxy}-proxy:{tag}")
}

/// Environment variables (by name) that the proxies' credential references read, e.g.
/// `AWS_PROFILE` for `env:AWS_PROFILE` or `AZURE_STORAGE_KEY` for
/// `env:encrypted:AZURE_STORAGE_KEY` — plus `EXO_SECRETS_KEY`, the key that opens sealed values,
/// when one of them is `env:encrypted:`. Credentials only used for deploying (an Azure service
/// principal) are not passed to the proxies.
pub fn credential_env(m: &Manifest) -> Vec<String> {
    credential_env_of(m, |_| true)
}

/// [`credential_env`] for the providers in the chain that `wanted` keeps.
pub fn credential_env_of(m: &Manifest, wanted: impl Fn(&Provider) -> bool) -> Vec<String> {
    let refs: Vec<&String> = m
        .chain()
        .iter()
        .filter_map(|id| m.providers.get(id))
        .filter(|p| wanted(p))
        .flat_map(|p| {
            p.auth.iter().filter(|(key, _)| match p.kind {
                ProviderKind::Azure => exo_azure::CREDENTIAL_KEYS.contains(&key.as_str()),
                _ => true,
            })
        })
        .map(|(_, value)| value)
        .collect();
    let mut names: Vec<String> = refs
        .iter()
        .filter_map(|v| {
            v.strip_prefix("env:").map(|rest| rest.strip_prefix("encrypted:").unwrap_or(rest).to_owned())
        })
        .collect();
    if refs.iter().any(|v| v.starts_with("env:encrypted:")) {
        names.push(exo_proxy_core::secret::KEY_ENV.to_owned());
    }
    names.sort();
    names.dedup();
    names
}

/// A VM boot script (cloud-init user data) that writes the rendered systemd units and proxy
/// configs, then starts the proxies. Used by the CloudFormation and ARM VM compute.
pub fn boot_script(m: &Manifest) -> String {
    let mut script = String::from("#!/bin/bash\nset -euo pipefail\n");
    for (path, content) in systemd::render(m) {
        let target = match path.strip_prefix("systemd/etc/") {
            Some(rest) => format!("/etc/{rest}"),
            None => format!("/etc/systemd/system/{}", path.trim_start_matches("systemd/")),
        };
        if target.ends_with(".example") {
            continue;
        }
        script.push_str(&format!(
            "mkdir -p \"$(dirname {target})\"\ncat > {target} <<'EXOFLOW_EOF'\n{content}EXOFLOW_EOF\n"
        ));
    }
    script.push_str("systemctl daemon-reload\n");
    for s in sidecars(m, ProxyHost::Loopback, &|_| String::new()) {
        script.push_str(&format!("systemctl enable --now exoflow-{}-{}.service\n", m.name, s.name));
    }
    script
}
