//! Reading a manifest and finding every problem in it, each with its line, column and a hint.

use std::{collections::BTreeSet, fmt};

use exo_proxy_core::ResourceName;

use crate::{
    locate::{Locations, Position},
    manifest::{Affinity, Manifest, ProviderKind},
};

/// Azure service-principal keys a manifest may carry for deploying (not read by the proxies).
const AZURE_DEPLOY_KEYS: [&str; 3] = ["client-id", "tenant-id", "client-secret"];

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Rendering is refused.
    Error,
    /// Rendering proceeds; the output works but is probably not what was meant.
    Warning,
}

/// One problem, at its place in the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// Dotted path of the offending node, e.g. `queues.1.dead-letter`.
    pub path: String,
    /// Where it is.
    pub position: Position,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}: {level}: {}: {}",
            self.position.line, self.position.column, self.path, self.message
        )?;
        if !self.hint.is_empty() {
            write!(f, " (hint: {})", self.hint)?;
        }
        Ok(())
    }
}

/// A manifest that parsed, with its warnings; or every problem found.
pub type Checked = Result<(Manifest, Vec<Problem>), Vec<Problem>>;

/// Known monitoring targets.
pub const MONITORING_TARGETS: &[&str] = &["prometheus", "otlp", "cloudwatch", "azure-monitor"];

struct Collector<'a> {
    locations: &'a Locations,
    problems: Vec<Problem>,
}

impl Collector<'_> {
    fn push(&mut self, severity: Severity, path: &str, message: impl Into<String>, hint: impl Into<String>) {
        self.problems.push(Problem {
            severity,
            path: path.to_owned(),
            position: self.locations.find(path),
            message: message.into(),
            hint: hint.into(),
        });
    }
    fn error(&mut self, path: &str, message: impl Into<String>, hint: impl Into<String>) {
        self.push(Severity::Error, path, message, hint);
    }
    fn warn(&mut self, path: &str, message: impl Into<String>, hint: impl Into<String>) {
        self.push(Severity::Warning, path, message, hint);
    }
    fn name(&mut self, kind: &str, path: &str, name: &str) {
        if let Err(err) = ResourceName::parse(kind, name, path) {
            self.error(
                path,
                err.message,
                "3 to 63 of a-z, 0-9 and '-', starting and ending with a letter or digit, no '--'",
            );
        }
    }
}

/// Parses `text` and checks it. Unknown keys, type errors and every semantic problem are
/// reported with positions; warnings come back with a manifest that is good enough to render.
pub fn check(text: &str) -> Checked {
    let locations = Locations::of(text);
    let mut unknown = Vec::new();
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    let parsed: Result<Manifest, _> =
        serde_ignored::deserialize(deserializer, |path| unknown.push(path.to_string()));
    let mut c = Collector { locations: &locations, problems: Vec::new() };
    for path in unknown {
        let path = path.replace('?', "");
        c.error(&path, "unknown key", "check the spelling against deploy/README.md (keys are kebab-case)");
    }
    let manifest = match parsed {
        Ok(manifest) => manifest,
        Err(err) => {
            let position =
                err.location().map(|l| Position { line: l.line(), column: l.column() }).unwrap_or_default();
            c.problems.push(Problem {
                severity: Severity::Error,
                path: String::new(),
                position,
                message: err.to_string(),
                hint: "fix the structure first; semantic checks run once it parses".into(),
            });
            return Err(c.problems);
        }
    };
    semantic(&manifest, &mut c);
    c.problems.sort_by_key(|p| (p.position.line, p.position.column, p.severity));
    if c.problems.iter().any(|p| p.severity == Severity::Error) {
        Err(c.problems)
    } else {
        Ok((manifest, c.problems))
    }
}

fn secret_reference(value: &str) -> bool {
    ["env:", "file:"].iter().any(|p| value.strip_prefix(p).is_some_and(|rest| !rest.is_empty()))
}

fn semantic(m: &Manifest, c: &mut Collector<'_>) {
    c.name("app", "name", &m.name);

    // Providers and failover.
    let current = &m.metadata.provider.current;
    if current.is_empty() {
        c.error("metadata.provider.current", "no current provider", "name one of the providers");
    } else if !m.providers.contains_key(current) {
        c.error(
            "metadata.provider.current",
            format!("unknown provider '{current}'"),
            format!("declare it under providers (known: {})", known(m)),
        );
    }
    let mut seen = BTreeSet::new();
    for (i, id) in m.metadata.provider.failover_chain.iter().enumerate() {
        let path = format!("metadata.provider.failover-chain.{i}");
        if !m.providers.contains_key(id) {
            c.error(
                &path,
                format!("unknown provider '{id}' in the failover chain"),
                format!("known: {}", known(m)),
            );
        }
        if !seen.insert(id) {
            c.error(
                &path,
                format!("provider '{id}' appears twice in the failover chain"),
                "list each provider once",
            );
        }
    }
    if let Some(first) = m.metadata.provider.failover_chain.first()
        && first != current
    {
        c.error(
            "metadata.provider.failover-chain.0",
            format!("the chain starts with '{first}', not the current provider '{current}'"),
            "put the current provider first",
        );
    }
    for (id, p) in &m.providers {
        let base = format!("providers.{id}");
        match p.kind {
            ProviderKind::Aws if p.region.is_none() => {
                c.error(&base, "an aws provider needs a region", "add region: us-east-1 (for example)")
            }
            ProviderKind::Azure if p.location.is_none() || p.account.is_none() => c.error(
                &base,
                "an azure provider needs a location and a storage account",
                "add location: and account:",
            ),
            ProviderKind::Postgres if p.url.as_deref().is_none_or(str::is_empty) => c.error(
                &base,
                "a postgres provider needs a url",
                "add url: postgres://user@host:5432/database",
            ),
            ProviderKind::Postgres => {
                // The CA file lives where the proxy runs, not here.
                let mut settings = crate::render::postgres_settings(m, p);
                let ca = settings.ca_file.take();
                if let Err(err) = settings.validate() {
                    c.error(&base, err.to_string(), "fix url: or schema:")
                }
                if ca.is_some_and(|ca| !ca.is_absolute()) {
                    c.error(
                        &format!("{base}.ca-file"),
                        "ca-file must be an absolute path where the proxy runs",
                        "",
                    )
                }
            }
            ProviderKind::Gcp if p.project.as_deref().is_none_or(str::is_empty) => c.error(
                &base,
                "a gcp provider needs a project (the one its buckets live in)",
                "add project: my-project",
            ),
            ProviderKind::Nats | ProviderKind::Redis if p.url.as_deref().is_none_or(str::is_empty) => {
                let example =
                    if p.kind == ProviderKind::Nats { "nats://host:4222" } else { "redis://host:6379/0" };
                c.error(
                    &base,
                    format!("a {} provider needs a url", p.kind.as_str()),
                    format!("add url: {example}"),
                )
            }
            ProviderKind::Nats | ProviderKind::Redis | ProviderKind::Rabbitmq => {
                if let Some(problem) = crate::render::server_settings_problem(m, p) {
                    c.error(&base, problem, "fix url:, namespace:, user: or auth:")
                }
            }
            ProviderKind::Remote => remote_problems(c, &base, p),
            _ => {}
        }
        if p.kind != ProviderKind::Remote && (p.client_cert_file.is_some() || p.client_key_file.is_some()) {
            c.error(&base, "client-cert-file and client-key-file are for a remote provider", "drop them");
        }
        if let Some(account) = &p.account
            && (!(3..=24).contains(&account.len())
                || !account.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        {
            c.error(
                &format!("{base}.account"),
                "Azure storage account names are 3 to 24 lowercase letters and digits",
                "",
            );
        }
        for (key, value) in &p.auth {
            let server_keys: &[&str] = match p.kind {
                ProviderKind::Nats => &["password", "token"],
                ProviderKind::Redis | ProviderKind::Rabbitmq => &["password"],
                _ => &[],
            };
            if matches!(p.kind, ProviderKind::Nats | ProviderKind::Redis)
                && !server_keys.contains(&key.as_str())
            {
                c.error(
                    &format!("{base}.auth.{key}"),
                    format!("'{key}' is not a {} credential the proxies read", p.kind.as_str()),
                    format!("use {}", server_keys.join(" or ")),
                );
            }
            if p.kind == ProviderKind::Gcp && key != "service-account-key" {
                c.error(
                    &format!("{base}.auth.{key}"),
                    format!("'{key}' is not a GCP credential the proxies read"),
                    "use service-account-key (a key file by reference), or no auth: the metadata server's identity",
                );
            }
            if p.kind == ProviderKind::Remote && key != "token" {
                c.error(
                    &format!("{base}.auth.{key}"),
                    format!("'{key}' is not a credential of the central proxies"),
                    "use token (their server.auth-token, EXO_PROXY_TOKEN on the VM)",
                );
            }
            if p.kind == ProviderKind::Postgres && key != "password" {
                c.error(
                    &format!("{base}.auth.{key}"),
                    format!("'{key}' is not a PostgreSQL credential the proxies read"),
                    "use password (the user is in the url)",
                );
            }
            if p.kind == ProviderKind::Aws && !exo_aws::CREDENTIAL_KEYS.contains(&key.as_str()) {
                c.error(
                    &format!("{base}.auth.{key}"),
                    format!("'{key}' is not an AWS credential the proxies read"),
                    format!("use {}", exo_aws::CREDENTIAL_KEYS.join(", ")),
                );
            }
            if p.kind == ProviderKind::Azure
                && !exo_azure::CREDENTIAL_KEYS.contains(&key.as_str())
                && !AZURE_DEPLOY_KEYS.contains(&key.as_str())
            {
                c.error(
                    &format!("{base}.auth.{key}"),
                    format!("'{key}' is not an Azure credential ExoFlow reads"),
                    format!(
                        "the proxies read {}; {} are for deploying",
                        exo_azure::CREDENTIAL_KEYS.join(", "),
                        AZURE_DEPLOY_KEYS.join(", ")
                    ),
                );
            }
            if !secret_reference(value) {
                c.error(
                    &format!("{base}.auth.{key}"),
                    "credentials must be references, not values",
                    "use env:NAME, env:encrypted:NAME or file:/path",
                );
            }
        }
        let storage_keys = p.auth.keys().filter(|k| exo_azure::CREDENTIAL_KEYS.contains(&k.as_str())).count();
        if p.kind == ProviderKind::Azure && storage_keys != 1 {
            c.error(
                &format!("{base}.auth"),
                "an azure provider needs exactly one storage credential for the proxies",
                format!(
                    "add one of {} (Entra ID credentials are not read by the proxies yet)",
                    exo_azure::CREDENTIAL_KEYS.join(", ")
                ),
            );
        }
    }

    if let Some(standalone) = &m.compute.standalone {
        standalone_problems(c, standalone);
    }

    // Every service the app uses needs a provider in the chain that offers it (the proxies'
    // registries say which): otherwise its proxy would quietly fall back to local storage.
    let chain: Vec<&crate::manifest::Provider> =
        m.chain().iter().filter_map(|id| m.providers.get(id)).collect();
    let local = chain.iter().any(|p| p.kind == ProviderKind::Local);
    let services: [(&str, bool, &[exo_proxy_core::registry::Entry]); 3] = [
        ("queues", !m.queues.is_empty(), eqs::config::BackendConfig::ENTRIES),
        ("buckets", !m.buckets.is_empty(), eos::config::BackendConfig::ENTRIES),
        ("tables", !m.tables.is_empty(), ekv::config::BackendConfig::ENTRIES),
    ];
    for (service, used, entries) in services {
        let offered = |p: &&crate::manifest::Provider| entries.iter().any(|e| e.provider == p.kind.as_str());
        if used && !local && !chain.is_empty() && !chain.iter().any(offered) {
            let kinds: Vec<&str> = chain.iter().map(|p| p.kind.as_str()).collect();
            let mut offering: Vec<&str> = entries.iter().map(|e| e.provider).collect();
            offering.dedup();
            c.error(
                service,
                format!("no provider in the failover chain ({}) offers {service}", kinds.join(", ")),
                format!("add a provider that does ({}) to the chain, or drop them", offering.join(", ")),
            );
        }
    }

    // Compute and image.
    let affinity = &m.compute.platform.affinity;
    if affinity.is_empty() {
        c.error("compute.platform.affinity", "no compute affinity", "list at least one of k8s, vms, edge");
    }
    let container = &m.app.container;
    if container.image.is_empty() || container.image.contains(char::is_whitespace) {
        c.error("app.container.image", "the image name is empty or has spaces", "");
    }
    if container.image.rsplit('/').next().is_some_and(|last| last.contains(':')) {
        c.error(
            "app.container.image",
            "the image carries a tag; give it in `tag`",
            "image: ghcr.io/acme/shop, tag: 1.4.2",
        );
    }
    match (&container.tag, &container.digest) {
        (None, None) => c.error(
            "app.container",
            "the image has no tag or digest",
            "add tag: (a version) or digest: sha256:...",
        ),
        (Some(tag), None) if tag == "latest" => {
            c.warn("app.container.tag", "`latest` is not a pinned version", "pin a version or a digest")
        }
        _ => {}
    }
    if let Some(registry) = &container.proxy_registry
        && let Err(why) = check_registry(registry)
    {
        c.error("app.container.proxy-registry", why, "registry.example/team");
    }
    if let Some(digest) = &container.digest
        && !(digest.starts_with("sha256:")
            && digest.len() == 71
            && digest[7..].bytes().all(|b| b.is_ascii_hexdigit()))
    {
        c.error("app.container.digest", "a digest is sha256: followed by 64 hex digits", "");
    }
    if affinity.contains(&Affinity::Vms) && m.app.vm.is_none() {
        c.error("app", "affinity includes vms but app.vm is missing", "add app.vm.image");
    }
    let aws_in_chain =
        m.chain().iter().filter_map(|id| m.providers.get(id)).any(|p| p.kind == ProviderKind::Aws);
    if let Some(vm) = &m.app.vm
        && aws_in_chain
        && affinity.contains(&Affinity::Vms)
        && !(vm.image.starts_with("ami-") && vm.image.len() >= 12)
    {
        c.error("app.vm.image", "on AWS the VM image is an AMI id", "ami-0123456789abcdef0");
    }
    if container.edge_override.is_some() && !affinity.contains(&Affinity::Edge) {
        c.warn("app.container.edge-override", "edge-override is set but edge is not in the affinity", "");
    }
    if let Some(o) = &container.edge_override
        && o.tag.is_none()
    {
        c.error("app.container.edge-override", "the edge image has no tag", "add tag:");
    }
    for (i, t) in m.monitoring.targets.iter().enumerate() {
        if !MONITORING_TARGETS.contains(&t.as_str()) {
            c.error(
                &format!("monitoring.targets.{i}"),
                format!("unknown monitoring target '{t}'"),
                format!("known: {}", MONITORING_TARGETS.join(", ")),
            );
        }
    }

    // Resources.
    let queues: BTreeSet<&str> = m.queues.iter().map(|q| q.name.as_str()).collect();
    for (kind, names) in [
        ("queue", m.queues.iter().map(|q| q.name.as_str()).collect::<Vec<_>>()),
        ("bucket", m.buckets.iter().map(|b| b.name.as_str()).collect()),
        ("table", m.tables.iter().map(|t| t.name.as_str()).collect()),
    ] {
        let list = format!("{kind}s");
        let mut seen = BTreeSet::new();
        for (i, name) in names.iter().enumerate() {
            let path = format!("{list}.{i}.name");
            c.name(kind, &path, name);
            if !seen.insert(*name) {
                c.error(&path, format!("{kind} '{name}' is declared twice"), "");
            }
        }
    }
    for (i, q) in m.queues.iter().enumerate() {
        match (&q.dead_letter, q.max_receives) {
            (Some(dlq), Some(n)) => {
                if !queues.contains(dlq.as_str()) {
                    c.error(
                        &format!("queues.{i}.dead-letter"),
                        format!("dead-letter queue '{dlq}' is not declared"),
                        "declare it under queues",
                    );
                } else if dlq == &q.name {
                    c.error(
                        &format!("queues.{i}.dead-letter"),
                        "a queue cannot be its own dead-letter queue",
                        "",
                    );
                }
                if n == 0 || n > 1000 {
                    c.error(&format!("queues.{i}.max-receives"), "max-receives must be 1 to 1000", "");
                }
            }
            (None, None) => {}
            _ => c.error(
                &format!("queues.{i}"),
                "max-receives and dead-letter go together",
                "set both or neither",
            ),
        }
        if q.visibility_timeout.is_some_and(|v| v > 43_200) {
            c.error(&format!("queues.{i}.visibility-timeout"), "visibility timeout above 12 h (43200 s)", "");
        }
    }
    let mut topics = BTreeSet::new();
    for (i, topic) in m.topics.iter().enumerate() {
        let path = format!("topics.{i}");
        c.name("topic", &format!("{path}.name"), &topic.name);
        if !topics.insert(topic.name.as_str()) {
            c.error(&format!("{path}.name"), format!("topic '{}' is declared twice", topic.name), "");
        }
        let (mut names, mut subscribed) = (BTreeSet::new(), BTreeSet::new());
        for (j, sub) in topic.subscriptions.iter().enumerate() {
            let path = format!("{path}.subscriptions.{j}");
            c.name("subscription", &format!("{path}.name"), &sub.name);
            if !names.insert(sub.name.as_str()) {
                c.error(
                    &format!("{path}.name"),
                    format!("subscription '{}' is declared twice", sub.name),
                    "",
                );
            }
            if !queues.contains(sub.queue.as_str()) {
                c.error(
                    &format!("{path}.queue"),
                    format!("queue '{}' is not declared", sub.queue),
                    "declare it under queues",
                );
            } else if !subscribed.insert(sub.queue.as_str()) {
                c.error(
                    &format!("{path}.queue"),
                    format!("queue '{}' already has a subscription of topic '{}'", sub.queue, topic.name),
                    "a queue gets one subscription per topic (SNS delivers to a queue once per topic)",
                );
            }
            if let Some(push) = &sub.push
                && (!push.starts_with('/') || push.contains(char::is_whitespace) || push.contains(['?', '#']))
            {
                c.error(
                    &format!("{path}.push"),
                    format!("push path {push:?} is not a plain absolute path"),
                    "give the path on the app's port, e.g. /events/orders",
                );
            }
            if sub.push.is_some() && m.app.container.port.is_none() {
                c.error(&format!("{path}.push"), "push needs the app's port", "set app.container.port");
            }
            if let Err(err) = eqs::filter::Filter::parse(sub.filter.as_deref().unwrap_or_default()) {
                c.error(
                    &format!("{path}.filter"),
                    err.message,
                    "see the eqs README, \"Topics\", for the filter language",
                );
            }
        }
    }
    // Topics need a provider whose queue backend offers them.
    if !m.topics.is_empty() {
        for id in m.chain() {
            if let Some(p) = m.providers.get(&id)
                && p.kind == ProviderKind::Nats
            {
                c.error(
                    "topics",
                    format!("provider '{id}' ({}) offers no topics yet", p.kind.as_str()),
                    "use aws, azure, postgres, rabbitmq or local for an app with topics",
                );
            }
        }
    }
    if let Some(a) = &m.autoscale {
        if !queues.contains(a.queue.as_str()) {
            c.error(
                "autoscale.queue",
                format!("queue '{}' is not declared", a.queue),
                "autoscale on one of the app's queues",
            );
        }
        if a.min_replicas == 0 || a.min_replicas > a.max_replicas {
            c.error("autoscale", "need 1 <= min-replicas <= max-replicas", "");
        }
        if a.target_depth == 0 {
            c.error("autoscale.target-depth", "target-depth must be positive", "");
        }
        let local = m.current_provider().is_some_and(|p| p.kind == crate::manifest::ProviderKind::Local);
        if local && m.monitoring.prometheus_url.is_none() {
            c.error(
                "autoscale",
                "a local provider has no queue scaler of its own: KEDA reads the proxies' depth metric from Prometheus",
                "set monitoring.prometheus-url (and monitoring.targets: [prometheus])",
            );
        }
    }
    if let Some(ns) = &m.namespace {
        c.name("namespace", "namespace", ns);
    }
    if m.replicas == 0 {
        c.error("replicas", "replicas must be at least 1", "");
    }
}

fn known(m: &Manifest) -> String {
    if m.providers.is_empty() {
        "none declared".into()
    } else {
        m.providers.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// Whether `registry` names a registry and path the proxy images can be pulled from
/// (`host[:port][/path]`, no scheme, no tag): why not, if it does not.
pub fn check_registry(registry: &str) -> Result<(), String> {
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-_/:".contains(&b);
    if registry.is_empty() || registry.contains("://") || registry.ends_with('/') || registry.starts_with('/')
    {
        return Err(format!(
            "{registry:?} is not a registry path: host[:port][/path], no scheme, no trailing '/'"
        ));
    }
    if !registry.bytes().all(allowed) || registry.contains("//") {
        return Err(format!(
            "{registry:?} has characters an image reference cannot hold (lowercase, digits, . - _ / :)"
        ));
    }
    Ok(())
}
/// What is wrong with a remote provider: where its central proxies are, and how they are
/// reached (TLS unless the host is this one).
fn remote_problems(c: &mut Collector<'_>, base: &str, p: &crate::manifest::Provider) {
    let url = p.url.as_deref().unwrap_or_default();
    let (scheme, rest) = url.split_once(':').unwrap_or(("", ""));
    let host = rest.trim_start_matches("//").trim_end_matches('/');
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match scheme {
        _ if url.is_empty() => c.error(
            base,
            "a remote provider needs the url of its central proxies",
            "add url: https://exoflow.internal (each service on its standard port) or srv:NAME",
        ),
        "https" | "srv" | "srv+http" | "http" if host.is_empty() || host.contains('/') || host.contains(':') => {
            c.error(
                &format!("{base}.url"),
                format!("{url:?} must name a host only"),
                "each service is reached on its standard port (7401 queues, 7402 objects, 7403 tables), or by SRV as _eqs._tcp.NAME etc.",
            )
        }
        "https" | "srv" => {}
        "http" | "srv+http" if !loopback => c.error(
            &format!("{base}.url"),
            format!("{url:?} would send every call in plaintext to another host"),
            "use https:// (or srv:) with the central proxies' compute.standalone.tls",
        ),
        "http" | "srv+http" => {}
        _ => c.error(&format!("{base}.url"), format!("{url:?} is not https://HOST or srv:NAME"), ""),
    }
    for (key, file) in [
        ("ca-file", &p.ca_file),
        ("client-cert-file", &p.client_cert_file),
        ("client-key-file", &p.client_key_file),
    ] {
        if file.as_deref().is_some_and(|f| !f.starts_with('/')) {
            c.error(
                &format!("{base}.{key}"),
                format!("{key} must be an absolute path where the proxy runs"),
                "",
            );
        }
    }
    if p.client_cert_file.is_some() != p.client_key_file.is_some() {
        c.error(base, "client-cert-file and client-key-file go together", "");
    }
    let dirs: std::collections::BTreeSet<&std::path::Path> =
        [&p.ca_file, &p.client_cert_file, &p.client_key_file]
            .into_iter()
            .flatten()
            .filter_map(|f| std::path::Path::new(f).parent())
            .collect();
    if dirs.len() > 1 {
        c.error(
            base,
            "ca-file, client-cert-file and client-key-file must be in one directory",
            "in a pod it is where their Secret is mounted",
        );
    }
    if let Some(dir) = dirs.first().map(|d| d.display().to_string())
        && ["/etc/exoflow", "/var/lib/exoflow", "/tmp"]
            .iter()
            .any(|taken| dir == *taken || dir.starts_with(&format!("{taken}/")))
    {
        c.error(
            &format!("{base}.ca-file"),
            format!("the TLS files' directory {dir} is where the proxies' config, data or scratch space is mounted in a pod"),
            "use a directory of their own, e.g. /etc/exoflow-tls",
        );
    }
    if p.ca_file.is_some() && matches!(scheme, "http" | "srv+http") {
        c.error(&format!("{base}.ca-file"), "ca-file is for TLS: the url must be https:// or srv:", "");
    }
}

/// What is wrong with `compute.standalone`: proxies other hosts reach serve TLS.
fn standalone_problems(c: &mut Collector<'_>, standalone: &crate::manifest::Standalone) {
    let base = "compute.standalone";
    match &standalone.tls {
        None if !standalone.listen.is_loopback() && !standalone.allow_insecure => c.error(
            &format!("{base}.listen"),
            format!("proxies listening on {} without TLS would take calls in plaintext from other hosts", standalone.listen),
            "add tls: (cert-file, key-file, and client-ca-file for client certificates), or allow-insecure: true on a private network",
        ),
        None => {}
        Some(tls) => {
            for (key, file) in [("cert-file", Some(&tls.cert_file)), ("key-file", Some(&tls.key_file)), ("client-ca-file", tls.client_ca_file.as_ref())] {
                if file.is_some_and(|f| !f.starts_with('/')) {
                    c.error(&format!("{base}.tls.{key}"), format!("{key} must be an absolute path on the VM"), "");
                }
            }
            if tls.client_ca_file.is_none() && !tls.allowed_clients.is_empty() {
                c.error(
                    &format!("{base}.tls.allowed-clients"),
                    "allowed-clients names client certificates, which need client-ca-file",
                    "add client-ca-file:",
                );
            }
            let lists = std::iter::once((format!("{base}.tls.allowed-clients"), &tls.allowed_clients)).chain(
                tls.allowed_clients_by_proxy
                    .iter()
                    .map(|(proxy, list)| (format!("{base}.tls.allowed-clients-by-proxy.{proxy}"), list)),
            );
            for (path, identities) in lists {
                for (i, identity) in identities.iter().enumerate() {
                    if let Err(why) = identity.parse::<exo_proxy_core::tls::ClientIdentity>() {
                        c.error(&format!("{path}[{i}]"), why, "subject:<DN>, dns:<name> or uri:<URI>");
                    }
                }
            }
            for (proxy, identities) in &tls.allowed_clients_by_proxy {
                let path = format!("{base}.tls.allowed-clients-by-proxy.{proxy}");
                if !["eqs", "eos", "ekv"].contains(&proxy.as_str()) {
                    c.error(&path, format!("{proxy:?} is not a proxy"), "eqs, eos or ekv");
                } else if tls.client_ca_file.is_none() {
                    c.error(&path, "allowed-clients-by-proxy names client certificates, which need client-ca-file", "add client-ca-file:");
                } else if identities.is_empty() {
                    // An empty list would let in any certificate from the CA: say so explicitly.
                    c.error(&path, format!("an empty list would let any certificate from the CA call {proxy}"), "name the identities, or leave the proxy out to use allowed-clients");
                }
            }
        }
    }
}
