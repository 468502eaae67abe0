//! The eqs-proxy configuration file: the shared `server:` section and the `backend:` section.
//!
//! ```yaml
//! server:
//!   listen: 127.0.0.1:7401
//!   request-timeout: 30s
//!   log: { format: json, level: info }
//! backend:
//!   kind: embedded            # or: memory
//!   path: .exo/eqs.db
//!   max-message-bytes: 262144
//! ```
//!
//! or Amazon SQS (settings: [`exo_aws::AwsSettings`]):
//!
//! ```yaml
//! backend:
//!   kind: sqs
//!   region: eu-west-1
//!   credentials: { access-key-id: env:AWS_ACCESS_KEY_ID, secret-access-key: env:AWS_SECRET_ACCESS_KEY }
//! ```

use exo_proxy_core::config::{ConfigError, ServerConfig};
use serde::{Deserialize, Serialize};

pub use crate::services::DEFAULT_MAX_MESSAGE_BYTES;

/// Default port of eqs.
pub const DEFAULT_PORT: u16 = 7401;

pub use crate::services::{BackendConfig, failover::FailoverConfig};

/// The whole eqs-proxy configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EqsConfig {
    /// Listener, limits, logging.
    #[serde(default = "default_server")]
    pub server: ServerConfig,
    /// The backend.
    #[serde(default)]
    pub backend: BackendConfig,
    /// Topics the proxy makes when it starts, with their subscriptions (kept as they are when
    /// they exist already). The proxy reports ready once they all exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<DeclaredTopic>,
    /// Where bodies above the backend's own limit go (claim-check); without it such messages
    /// are refused with MESSAGE_TOO_LARGE.
    #[serde(default, rename = "large-messages", skip_serializing_if = "Option::is_none")]
    pub large_messages: Option<LargeMessagesConfig>,
}

/// Large messages (`large-messages:`): the object store their bodies go to
/// (see [`crate::layers::LargeMessageQueue`]).
///
/// ```yaml
/// large-messages:
///   store: { kind: remote, url: http://127.0.0.1:7402 }   # the eos sidecar; or fs, and s3,
///                                             # azure-blob, gcs with eqs's *-store features
///   bucket: exo-large-messages               # the layer's own: its sweeper deletes in it
///   max-message-bytes: 4063232
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LargeMessagesConfig {
    /// The object backend, configured as eos's `backend:` section.
    pub store: exo_objects::services::BackendConfig,
    /// The bucket (made at start when missing).
    pub bucket: String,
    /// Prefix of every key written (and of what the sweeper looks at).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// The largest message accepted (body plus attributes), above the backend's own limit; the
    /// server's `max-request-bytes` must leave room for it.
    #[serde(default = "default_large_message_bytes")]
    pub max_message_bytes: u64,
    /// How often the sweeper deletes bodies no message can reference any more.
    #[serde(default = "default_sweep_every", with = "humantime_serde")]
    pub sweep_every: std::time::Duration,
    /// How long past its message's longest possible life a body is kept.
    #[serde(default = "default_sweep_every", with = "humantime_serde")]
    pub sweep_grace: std::time::Duration,
}

/// Default largest large message: what fits the default `max-request-bytes` (4 MiB) with room
/// for the request around it.
pub const DEFAULT_LARGE_MESSAGE_BYTES: u64 = 4 * 1024 * 1024 - 64 * 1024;
/// Largest `large-messages.max-message-bytes`: a receive holds its messages in memory (up to
/// 32 MiB of bodies per receive, or one message).
pub const MAX_LARGE_MESSAGE_BYTES: u64 = 32 * 1024 * 1024;

fn default_large_message_bytes() -> u64 {
    DEFAULT_LARGE_MESSAGE_BYTES
}

fn default_sweep_every() -> std::time::Duration {
    std::time::Duration::from_secs(3600)
}

/// A topic in the config (`topics:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeclaredTopic {
    /// Portable topic name.
    pub name: String,
    /// Its subscriptions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<DeclaredSubscription>,
}

/// A subscription in the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeclaredSubscription {
    /// Portable subscription name, unique within the topic.
    pub name: String,
    /// The queue it delivers into.
    pub queue: String,
    /// Which messages it gets (see the eqs README, "Topics"); empty for all.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filter: String,
    /// Make the queue with default options when it does not exist (otherwise it must).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub create_queue: bool,
    /// Deliver by POSTing each message to the app instead of leaving it to be received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushConfig>,
}

/// Push delivery of a subscription: the proxy POSTs each message to the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PushConfig {
    /// The app's endpoint: `http://` on loopback (the app beside the proxy), e.g.
    /// `http://127.0.0.1:8080/events/orders`.
    pub url: String,
    /// Most messages being POSTed at once.
    #[serde(default = "default_push_concurrency")]
    pub concurrency: u32,
    /// How long the app has to answer; then the message is left for redelivery.
    #[serde(default = "default_push_timeout", with = "humantime_serde")]
    pub timeout: std::time::Duration,
}

fn default_push_concurrency() -> u32 {
    4
}

fn default_push_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

impl PushConfig {
    /// The URL is plain HTTP to a loopback address; concurrency and timeout are in range.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let invalid = |why: &str| ConfigError::Invalid(format!("{at}.push: {why}"));
        let rest = self
            .url
            .strip_prefix("http://")
            .ok_or_else(|| invalid("url must be http:// (the app beside the proxy)"))?;
        let host = rest.split('/').next().unwrap_or_default();
        let host = host
            .rsplit_once(':')
            .map_or(host, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { host });
        let loopback = host == "localhost"
            || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(invalid(
                "url must name a loopback host (127.0.0.1, [::1] or localhost): push goes to the app beside the proxy",
            ));
        }
        if !(1..=256).contains(&self.concurrency) {
            return Err(invalid("concurrency must be 1 ..= 256"));
        }
        if self.timeout.is_zero() || self.timeout > std::time::Duration::from_secs(12 * 3600 - 60) {
            return Err(invalid("timeout must be above 0 and below the longest visibility timeout"));
        }
        Ok(())
    }
}

fn default_server() -> ServerConfig {
    ServerConfig::with_listen(std::net::SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)))
}

impl Default for EqsConfig {
    fn default() -> Self {
        Self {
            server: default_server(),
            backend: BackendConfig::default(),
            topics: Vec::new(),
            large_messages: None,
        }
    }
}

impl EqsConfig {
    /// Checks the settings hang together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.backend.validate()?;
        self.validate_large_messages()?;
        // A `remote` backend's limit is the remote proxy's, known only once it answers.
        let Some(max) = self.backend.largest_item() else {
            return self.validate_topics();
        };
        if max == 0 || max > 16 * 1024 * 1024 {
            return Err(ConfigError::Invalid("backend.max-message-bytes must be 1 ..= 16 MiB".into()));
        }
        if max as usize + 64 * 1024 > self.server.max_request_bytes {
            return Err(ConfigError::Invalid(format!(
                "backend.max-message-bytes ({max}) needs server.max-request-bytes of at least {}",
                max + 64 * 1024
            )));
        }
        self.validate_topics()
    }

    /// The large-message section: a store that validates, a portable bucket name, a limit above
    /// the backend's that a request can carry, a sweep interval.
    fn validate_large_messages(&self) -> Result<(), ConfigError> {
        let Some(large) = &self.large_messages else { return Ok(()) };
        let invalid = |why: String| ConfigError::Invalid(format!("large-messages.{why}"));
        large.store.validate().map_err(|e| {
            let feature = match large.store.kind() {
                "s3" => "s3-store",
                "azure-blob" => "blob-store",
                "gcs" => "gcs-store",
                _ => return invalid(format!("store: {e}")),
            };
            if e.to_string().contains("is not in this build") {
                invalid(format!(
                    "store: kind '{}' is not in this eqs build (the images leave the cloud stores to the eos \
                     sidecar): point it at eos with `kind: remote` and eos's url, or build eqs with the cargo \
                     feature `{feature}`",
                    large.store.kind()
                ))
            } else {
                invalid(format!("store: {e}"))
            }
        })?;
        exo_objects::model::BucketName::parse("bucket", &large.bucket, "bucket")
            .map_err(|e| invalid(format!("bucket: {}", e.message)))?;
        let Some(inline) = self.backend.largest_item() else {
            return Err(invalid(
                "store: the backend's limit is not known here (a remote proxy's): give large-messages to the remote proxy instead"
                    .into(),
            ));
        };
        let max = large.max_message_bytes;
        if max <= inline || max > MAX_LARGE_MESSAGE_BYTES {
            return Err(invalid(format!(
                "max-message-bytes ({max}) must be above the backend's own limit ({inline}) and at most {MAX_LARGE_MESSAGE_BYTES}"
            )));
        }
        if max as usize + 64 * 1024 > self.server.max_request_bytes {
            return Err(invalid(format!(
                "max-message-bytes ({max}) needs server.max-request-bytes of at least {}",
                max + 64 * 1024
            )));
        }
        if large.sweep_every.is_zero() {
            return Err(invalid("sweep-every must be above 0".into()));
        }
        Ok(())
    }

    /// Declared topics: portable names, unique; filters that parse.
    fn validate_topics(&self) -> Result<(), ConfigError> {
        let invalid = |e: exo_proxy_core::ExoError| ConfigError::Invalid(format!("topics: {}", e.message));
        let mut topics = std::collections::HashSet::new();
        for topic in &self.topics {
            crate::model::TopicName::parse("topic", &topic.name, "topics[].name").map_err(invalid)?;
            if !topics.insert(&topic.name) {
                return Err(ConfigError::Invalid(format!(
                    "topics: topic '{}' is declared twice",
                    topic.name
                )));
            }
            let mut names = std::collections::HashSet::new();
            for sub in &topic.subscriptions {
                crate::model::TopicName::parse("subscription", &sub.name, "name").map_err(invalid)?;
                crate::model::QueueName::parse("queue", &sub.queue, "queue").map_err(invalid)?;
                crate::filter::Filter::parse(&sub.filter).map_err(|e| {
                    ConfigError::Invalid(format!("topics: {}.{}: {}", topic.name, sub.name, e.message))
                })?;
                if let Some(push) = &sub.push {
                    push.validate(&format!("topics: {}.{}", topic.name, sub.name))?;
                }
                if !names.insert(&sub.name) {
                    return Err(ConfigError::Invalid(format!(
                        "topics: topic '{}' declares subscription '{}' twice",
                        topic.name, sub.name
                    )));
                }
            }
        }
        Ok(())
    }
}

exo_proxy_core::proxy_config!(EqsConfig, BackendConfig, validate = EqsConfig::validate);

#[cfg(test)]
mod tests {
    use exo_proxy_core::config::parse_yaml;

    use super::*;

    #[test]
    fn documented_example_parses() {
        let text = "server:\n  listen: 127.0.0.1:7401\n  request_timeout: 30s\n  log: { format: json, level: info }\n\
                    backend:\n  kind: embedded\n  path: .exo/eqs.db\n  max_message_bytes: 262144\n";
        let config: EqsConfig = parse_yaml(text, "t").unwrap();
        config.validate().unwrap();
        assert_eq!(config.backend.kind(), "embedded");
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        use exo_proxy_core::cli::{ServerArgs, effective_config};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("eqs.yaml");
        std::fs::write(&file, "server:\n  listen: 127.0.0.1:9000\n  request_timeout: 5s\nbackend:\n  kind: embedded\n  path: a.db\n").unwrap();
        let none = ServerArgs {
            log_format: None,
            worker_threads: None,
            allow_insecure_non_loopback: false,
            config_yaml: None,
            unix_socket: None,
        };
        let from_file: EqsConfig = effective_config(Some(&file), None, None, None, &none).unwrap();
        assert_eq!(from_file.server.listen.port(), 9000);
        assert_eq!(from_file.server.request_timeout, std::time::Duration::from_secs(5));
        let flags = ServerArgs {
            log_format: Some("json".into()),
            worker_threads: Some(2),
            allow_insecure_non_loopback: false,
            config_yaml: None,
            unix_socket: None,
        };
        let overridden: EqsConfig = effective_config(
            Some(&file),
            Some("127.0.0.1:9001".parse().unwrap()),
            None,
            Some("b.db".into()),
            &flags,
        )
        .unwrap();
        assert_eq!(overridden.server.listen.port(), 9001);
        assert_eq!(overridden.server.worker_threads, 2);
        assert_eq!(
            overridden.backend,
            BackendConfig::Embedded(crate::services::embedded::EmbeddedConfig {
                path: "b.db".into(),
                max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES
            })
        );
        let memory: EqsConfig = effective_config(Some(&file), None, Some("memory"), None, &none).unwrap();
        assert_eq!(memory.backend.kind(), "memory");
        assert!(effective_config::<EqsConfig>(Some(&file), None, Some("sqs3"), None, &none).is_err());

        // The same configuration as text (EXO_CONFIG_YAML), for platforms without mounted files;
        // a file and text together are refused rather than one silently winning.
        let text = ServerArgs { config_yaml: Some(std::fs::read_to_string(&file).unwrap()), ..none.clone() };
        let from_text: EqsConfig = effective_config(None, None, None, None, &text).unwrap();
        assert_eq!(from_text, from_file);
        assert!(effective_config::<EqsConfig>(Some(&file), None, None, None, &text).is_err());
    }

    #[test]
    fn failover_member_settings_are_checked_and_named() {
        let chain = |extra: &str| {
            format!(
                "backend:\n  kind: failover\n  members: [{{ kind: memory }}, {{ kind: memory }}]\n{extra}"
            )
        };
        let ok: EqsConfig =
            parse_yaml(&chain("  member-timeout: 500ms\n  member-backoff: 250ms\n"), "t").unwrap();
        ok.validate().unwrap();
        let BackendConfig::Failover(failover) = &ok.backend else { panic!("not a chain") };
        assert_eq!(failover.member_backoff, std::time::Duration::from_millis(250));
        for (extra, field) in
            [("  member-backoff: 0s\n", "member-backoff"), ("  member-timeout: 0s\n", "member-timeout")]
        {
            let config: EqsConfig = parse_yaml(&chain(extra), "t").unwrap();
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
    }

    #[test]
    fn unknown_backend_kind_is_reported() {
        let err = parse_yaml::<EqsConfig>("backend:\n  kind: sqs3\n", "t").unwrap_err().to_string();
        assert!(err.contains("sqs3"), "{err}");
    }
}
