//! The ExoFlow app manifest (`exoflow.yaml`): what an app needs — providers and failover, where
//! it runs, its image, and the queues, buckets and tables it uses. Keys are kebab-case.
//!
//! ```yaml
//! name: shop
//! metadata:
//!   provider: { current: aws, failover-chain: [aws, azure] }
//! providers:
//!   aws:   { kind: aws, region: us-east-1, auth: { profile: env:AWS_PROFILE } }
//!   azure: { kind: azure, location: westeurope, account: shopdata,
//!            auth: { client-secret: env:encrypted:ARM_CLIENT_SECRET } }
//! compute: { platform: { affinity: [k8s, vms, edge] } }
//! app:
//!   container: { image: ghcr.io/acme/shop, tag: "1.4.2", port: 8080 }
//!   vm: { image: shop-1.4.2 }
//! queues: [{ name: orders, max-receives: 5, dead-letter: orders-dead }, { name: orders-dead }]
//! topics: [{ name: order-events, subscriptions: [{ name: billing, queue: orders, filter: "kind = 'created'" }] }]
//! buckets: [{ name: uploads }]
//! tables: [{ name: carts, ttl: true }]
//! autoscale: { queue: orders, target-depth: 100, min-replicas: 2, max-replicas: 10 }
//! ```

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Manifest {
    /// The app's name: portable name rules (3–63 of a-z 0-9 -).
    pub name: String,
    /// Which provider is current and which follow it.
    #[serde(default)]
    pub metadata: Metadata,
    /// Cloud (or local) accounts the app may use, by id.
    #[serde(default)]
    pub providers: BTreeMap<String, Provider>,
    /// Where the app runs.
    #[serde(default)]
    pub compute: Compute,
    /// The app's own artefacts.
    pub app: App,
    /// Monitoring systems to feed.
    #[serde(default)]
    pub monitoring: Monitoring,
    /// Queues the app uses.
    #[serde(default)]
    pub queues: Vec<Queue>,
    /// Topics the app publishes to, each fanning out to subscriptions that deliver into the
    /// app's queues.
    #[serde(default)]
    pub topics: Vec<Topic>,
    /// Buckets the app uses.
    #[serde(default)]
    pub buckets: Vec<Bucket>,
    /// Tables the app uses.
    #[serde(default)]
    pub tables: Vec<Table>,
    /// Scale the app on a queue's depth.
    #[serde(default)]
    pub autoscale: Option<Autoscale>,
    /// Replicas when not autoscaled.
    #[serde(default = "one")]
    pub replicas: u32,
    /// Kubernetes namespace (default: the app's name).
    #[serde(default)]
    pub namespace: Option<String>,
}

fn one() -> u32 {
    1
}

/// `metadata:`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Metadata {
    /// Provider selection.
    #[serde(default)]
    pub provider: ProviderChoice,
}

/// `metadata.provider:`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct ProviderChoice {
    /// The provider used now.
    #[serde(default)]
    pub current: String,
    /// Providers in failover order (the current one first).
    #[serde(default)]
    pub failover_chain: Vec<String>,
}

/// What kind of account a provider is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    /// Amazon Web Services.
    Aws,
    /// Microsoft Azure.
    Azure,
    /// The embedded local backends (edge devices, development).
    Local,
    /// A PostgreSQL database you run: queues and key-value tables (no objects).
    Postgres,
    /// A NATS server or cluster with JetStream you run: queues only.
    Nats,
    /// A Redis you run: key-value tables only, under a namespace (key prefix).
    Redis,
    /// A RabbitMQ you run: queues only (quorum queues).
    Rabbitmq,
    /// Google Cloud: objects only (Cloud Storage); queues and tables on GCP are not offered yet.
    Gcp,
    /// Central ExoFlow proxies (standalone, on VMs: see `compute.standalone`) that the app's
    /// proxies forward every call to over TLS (`kind: remote`): queues, objects and tables.
    Remote,
}

impl ProviderKind {
    /// The provider's name in the proxies' backend registries.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aws => "aws",
            Self::Azure => "azure",
            Self::Local => "local",
            Self::Postgres => "postgres",
            Self::Nats => "nats",
            Self::Redis => "redis",
            Self::Rabbitmq => "rabbitmq",
            Self::Gcp => "gcp",
            Self::Remote => "remote",
        }
    }
}

/// One provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Provider {
    /// aws, azure, gcp, local, postgres, nats, redis or rabbitmq.
    pub kind: ProviderKind,
    /// AWS region.
    #[serde(default)]
    pub region: Option<String>,
    /// Azure location.
    #[serde(default)]
    pub location: Option<String>,
    /// Azure storage account.
    #[serde(default)]
    pub account: Option<String>,
    /// GCP: the project the buckets live in.
    #[serde(default)]
    pub project: Option<String>,
    /// PostgreSQL: `postgres://user@host:port/database`; NATS: `nats://host:4222` (several
    /// comma-separated); Redis: `redis://host:6379/0`; RabbitMQ: `amqp://user@host:5672/vhost` —
    /// never with a password (that goes in `auth` as a reference). Remote: `https://host` (each
    /// service on its standard port there: 7401 queues, 7402 objects, 7403 tables) or
    /// `srv:NAME` (each service found by DNS SRV as `_eqs._tcp.NAME`, `_eos._tcp.NAME`,
    /// `_ekv._tcp.NAME`).
    #[serde(default)]
    pub url: Option<String>,
    /// NATS, Redis, RabbitMQ: the app's namespace on the shared server (stream and subject prefix, key
    /// prefix; default: the app's name).
    #[serde(default)]
    pub namespace: Option<String>,
    /// NATS: the user name, with `auth.password`.
    #[serde(default)]
    pub user: Option<String>,
    /// PostgreSQL, NATS, Redis: the PEM file (a path where the proxy runs: a mounted secret) of
    /// the certificate authorities that sign the server's certificate, for TLS
    /// (`sslmode=require`, `tls://`, `rediss://`).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Remote: the PEM client certificate the app's proxies present to the central ones (a
    /// path where the proxy runs: a mounted secret), with `client-key-file`.
    #[serde(default)]
    pub client_cert_file: Option<String>,
    /// Remote: the client certificate's key (a path where the proxy runs).
    #[serde(default)]
    pub client_key_file: Option<String>,
    /// PostgreSQL: the schema holding the app's queues and tables (default: the app's name,
    /// with `-` as `_`).
    #[serde(default)]
    pub schema: Option<String>,
    /// Credential references (`env:NAME`, `env:encrypted:NAME`, `file:/path`), never values.
    #[serde(default)]
    pub auth: BTreeMap<String, String>,
}

/// `compute:`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Compute {
    /// Platform preferences.
    #[serde(default)]
    pub platform: Platform,
    /// On VMs (systemd): the proxies serve other hosts — app hosts whose proxies forward to
    /// them (a `remote` provider) — instead of only the app on loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standalone: Option<Standalone>,
}

/// `compute.standalone:`: proxies other hosts reach.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Standalone {
    /// The address each proxy listens on, on its standard port (e.g. `0.0.0.0`).
    pub listen: std::net::IpAddr,
    /// TLS on the proxies' ports: required off loopback, unless `allow-insecure`.
    #[serde(default)]
    pub tls: Option<StandaloneTls>,
    /// Serve plaintext off loopback: only on a network nothing else shares.
    #[serde(default)]
    pub allow_insecure: bool,
}

/// `compute.standalone.tls:`: files on the VM, handed to the proxies by systemd
/// (`LoadCredential=`), so they need not be readable by the proxies' dynamic user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct StandaloneTls {
    /// The certificate chain (PEM), leaf first; its SANs name the address app hosts dial.
    pub cert_file: String,
    /// Its key (PEM).
    pub key_file: String,
    /// Client certificates must come from this CA (PEM): mutual TLS.
    #[serde(default)]
    pub client_ca_file: Option<String>,
    /// With `client-ca-file`: the client identities let in (`CN=edge`, a DNS or URI SAN), by
    /// every proxy unless `allowed-clients-by-proxy` names that proxy.
    #[serde(default)]
    pub allowed_clients: Vec<String>,
    /// With `client-ca-file`: which identities may call which service, by proxy (`eqs`, `eos`,
    /// `ekv`); a proxy named here lets in its own list instead of `allowed-clients`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allowed_clients_by_proxy: BTreeMap<String, Vec<String>>,
}

impl StandaloneTls {
    /// The identities `proxy` lets in (empty: any certificate from the CA).
    pub fn allowed_clients_of(&self, proxy: &str) -> &[String] {
        self.allowed_clients_by_proxy.get(proxy).unwrap_or(&self.allowed_clients)
    }
}

/// `compute.platform:`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Platform {
    /// Where the app may run, in order of preference.
    #[serde(default)]
    pub affinity: Vec<Affinity>,
}

/// A kind of compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Affinity {
    /// Kubernetes.
    K8s,
    /// Virtual machines (systemd).
    Vms,
    /// Single edge hosts (compose, local backends).
    Edge,
}

/// `app:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct App {
    /// The app's container.
    pub container: Container,
    /// The app's VM image.
    #[serde(default)]
    pub vm: Option<Vm>,
}

/// `app.container:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Container {
    /// Image repository.
    pub image: String,
    /// Image tag (required unless `digest` is given; `latest` only with a warning).
    #[serde(default)]
    pub tag: Option<String>,
    /// Pin by digest (`sha256:...`); wins over the tag.
    #[serde(default)]
    pub digest: Option<String>,
    /// Proxy images follow the app's tag.
    #[serde(default)]
    pub sync_tags: bool,
    /// Registry (and path) the proxy images come from, where `scripts/images` output was pushed
    /// (`registry.example/team`; default `ghcr.io/exoflow`).
    #[serde(default)]
    pub proxy_registry: Option<String>,
    /// Port the app serves on, if any.
    #[serde(default)]
    pub port: Option<u16>,
    /// Another image for edge hosts.
    #[serde(default)]
    pub edge_override: Option<ImageRef>,
    /// How the app reaches its proxies in a Kubernetes pod: `tcp` (loopback ports, the default)
    /// or `unix` (sockets in a shared in-memory `emptyDir` at `/run/exoflow`, the endpoints
    /// `unix:/run/exoflow/eqs.sock`…: no TCP stack per call). gRPC clients in every language
    /// accept `unix:` targets; an HTTP/JSON client must be told the socket. Other targets keep
    /// loopback ports.
    #[serde(default)]
    pub proxy_transport: ProxyTransport,
}

/// `app.container.proxy-transport`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyTransport {
    /// Loopback TCP ports.
    #[default]
    Tcp,
    /// Unix sockets in a volume the pod's containers share.
    Unix,
}

/// An image and tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct ImageRef {
    /// Image repository.
    pub image: String,
    /// Image tag.
    #[serde(default)]
    pub tag: Option<String>,
}

/// `app.vm:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Vm {
    /// Machine image (AMI id, Azure image name, ...).
    pub image: String,
}

/// `monitoring:`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Monitoring {
    /// prometheus, otlp, cloudwatch, azure-monitor.
    #[serde(default)]
    pub targets: Vec<String>,
    /// The Prometheus server KEDA queries for queue depth when the current provider has no
    /// queue scaler of its own (`local`), e.g. `http://prometheus.monitoring:9090`.
    #[serde(default)]
    pub prometheus_url: Option<String>,
}

/// A queue the app uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Queue {
    /// Portable queue name.
    pub name: String,
    /// Visibility timeout in seconds.
    #[serde(default)]
    pub visibility_timeout: Option<u32>,
    /// Receives before dead-lettering (needs `dead-letter`).
    #[serde(default)]
    pub max_receives: Option<u32>,
    /// Dead-letter queue (declared in `queues`).
    #[serde(default)]
    pub dead_letter: Option<String>,
}

/// A topic the app publishes to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Topic {
    /// Portable topic name.
    pub name: String,
    /// Who gets its messages.
    #[serde(default)]
    pub subscriptions: Vec<Subscription>,
}

/// A subscription of a topic: a queue (declared in `queues`) that gets a copy of each message
/// its filter passes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Subscription {
    /// Portable name, unique within the topic.
    pub name: String,
    /// The queue it delivers into (declared in `queues`; at most one subscription per topic).
    pub queue: String,
    /// Which messages: clauses on attributes joined by `and` (`region = 'eu'`,
    /// `type in ('a', 'b')`, `name prefix 'p'`, `name exists`, `name absent`); none for all.
    #[serde(default)]
    pub filter: Option<String>,
    /// Push each message to the app instead of it receiving them: the path on the app's port
    /// (`/events/orders`); the proxy POSTs to `http://127.0.0.1:<app.container.port><path>`.
    #[serde(default)]
    pub push: Option<String>,
}

/// A bucket the app uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Bucket {
    /// Portable bucket name.
    pub name: String,
}

/// A table the app uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Table {
    /// Portable table name.
    pub name: String,
    /// Entries may carry a time to live. Informational: ekv stores and enforces a TTL per entry
    /// on every backend (DynamoDB tables always get their TTL attribute for clean-up).
    #[serde(default)]
    pub ttl: bool,
}

/// `autoscale:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Autoscale {
    /// The queue whose depth drives scaling.
    pub queue: String,
    /// Visible messages per replica.
    pub target_depth: u32,
    /// Fewest replicas.
    #[serde(default = "one")]
    pub min_replicas: u32,
    /// Most replicas.
    pub max_replicas: u32,
}

impl Manifest {
    /// The providers in use: the failover chain, or just the current provider.
    pub fn chain(&self) -> Vec<String> {
        let choice = &self.metadata.provider;
        if choice.failover_chain.is_empty() {
            vec![choice.current.clone()]
        } else {
            choice.failover_chain.clone()
        }
    }

    /// The current provider, if declared.
    pub fn current_provider(&self) -> Option<&Provider> {
        self.providers.get(&self.metadata.provider.current)
    }

    /// The app image reference: `image@digest`, else `image:tag`.
    pub fn app_image(&self) -> String {
        let c = &self.app.container;
        match (&c.digest, &c.tag) {
            (Some(digest), _) => format!("{}@{digest}", c.image),
            (None, Some(tag)) => format!("{}:{tag}", c.image),
            (None, None) => c.image.clone(),
        }
    }
}

/// The JSON Schema of the manifest, for editors (`exo deploy schema`, `deploy/exoflow.schema.json`).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Manifest);
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}
