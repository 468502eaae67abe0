//! Settings every proxy shares (the `server:` section of a proxy's YAML file) and the YAML
//! loader. Precedence, highest first: command-line flags, `EXO_*` environment variables,
//! the config file, built-in defaults.

use std::{net::SocketAddr, path::Path, time::Duration};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub use crate::config_error::ConfigError;

/// Checks a backend's endpoint override is an http:// or https:// URL.
pub fn check_endpoint(endpoint: Option<&str>) -> Result<(), ConfigError> {
    match endpoint {
        Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => Err(
            ConfigError::Invalid(format!("backend.endpoint must be an http:// or https:// URL, got {url:?}")),
        ),
        _ => Ok(()),
    }
}

/// Checks a cloud backend's name prefix: lowercase letters, digits and `-`, at most `max`
/// (what every service's names accept, so the prefixed name stays valid).
pub fn check_name_prefix(prefix: &str, max: usize) -> Result<(), ConfigError> {
    if prefix.len() > max
        || !prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(ConfigError::Invalid(format!(
            "backend.name-prefix may hold only lowercase letters, digits and '-' (at most {max}), got {prefix:?}"
        )));
    }
    Ok(())
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `eqs=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".to_owned() }
    }
}

/// Permissions of a file the proxy makes, written in octal as a string (`"0660"`): YAML would
/// read a bare `0660` as the decimal 660 or the octal 432 depending on its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl FileMode {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for FileMode {
    fn default() -> Self {
        Self(0o660)
    }
}

impl Serialize for FileMode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{:04o}", self.0))
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
            Ok(mode) if mode <= 0o777 => Ok(Self(mode)),
            _ => Err(serde::de::Error::custom(format!(
                "expected permissions in octal such as \"0660\", got {text:?}"
            ))),
        }
    }
}

/// The `server:` section: where and how a proxy listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerConfig {
    /// Address for gRPC and HTTP/JSON (one port). Loopback by default.
    pub listen: SocketAddr,
    /// Listening on a non-loopback address without TLS is refused unless this is true
    /// (e.g. inside a container whose network namespace is private to the pod).
    pub allow_insecure_non_loopback: bool,
    /// A Unix domain socket served as well as `listen`, for clients on the same host or in the
    /// same pod (a shared `emptyDir`): no TCP stack between app and proxy. Who may connect is
    /// the file's permissions (`unix-socket-mode`); TLS does not apply to it, the bearer token
    /// does. A stale socket file left by a killed proxy is replaced; a live one is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unix_socket: Option<std::path::PathBuf>,
    /// The socket file's permissions, in octal: `"0660"` (the proxy's user and group) unless set.
    #[serde(skip_serializing_if = "FileMode::is_default")]
    pub unix_socket_mode: FileMode,
    /// TLS (and optionally client certificates) on the port; see [`crate::tls::TlsSettings`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::tls::TlsSettings>,
    /// Largest request, in bytes: a gRPC message; an HTTP/JSON body may be a third larger plus
    /// 64 KiB, for the base64 its bytes travel in (see `server::json_body_limit`).
    pub max_request_bytes: usize,
    /// Longest time a backend call may take (a receive's long-poll wait is added to it).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long shutdown waits for in-flight requests before closing anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Threads serving requests. One is the sidecar default: on a loaded node it costs the least
    /// CPU per request and keeps latency flat (see benches/README.md); raise it for a proxy that
    /// serves many apps.
    pub worker_threads: usize,
    /// When set, every call must carry `authorization: Bearer <token>` with this secret
    /// (`env:NAME`, `file:/path` — re-read, so it can rotate — or `env:encrypted:NAME`); the
    /// probes (`/healthz`, `/readyz`, `/metrics`, gRPC health) stay open for kubelet and scrapers.
    pub auth_token: Option<crate::secret::SecretRef>,
    /// Longest wait for the next bytes of a request body: a stalled upload is cut (and stores
    /// nothing).
    #[serde(with = "humantime_serde")]
    pub body_idle_timeout: Duration,
    /// Longest a response may wait for its client to take more bytes: a client that stopped
    /// reading has its connection closed and its slot freed.
    #[serde(with = "humantime_serde")]
    pub write_stall_timeout: Duration,
    /// Longest a client may take to send a request's headers, and a new connection (after its
    /// TLS handshake) to start its first request: slow or silent clients are closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (gracefully: HTTP/2
    /// clients get a GOAWAY and reconnect when they next call). At `max-connections` the idlest
    /// connection is closed early to let a new client in.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// HTTP/2 keep-alive: a ping this often on every connection…
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_interval: Duration,
    /// …and the connection closed when its answer takes longer than this.
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_timeout: Duration,
    /// Most connections served at once (lowered to fit the open-files limit, which the proxy
    /// raises to the hard limit at start). At the cap a new client takes the slot of the
    /// connection idle longest (one that never sent a request first); only when every
    /// connection has a request in flight do further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Logging.
    pub log: LogConfig,
    /// The circuit breaker around the backend (`failures: 0` turns it off).
    pub breaker: crate::layers::BreakerSettings,
    /// Retries of reads after retryable failures, within a budget (`max-attempts: 1` turns it off).
    pub retry: crate::layers::RetrySettings,
    /// Most backend calls running at once (long polls not counted); beyond it a call is refused
    /// THROTTLED (retryable) rather than queued. 0: no limit.
    pub max_in_flight: usize,
}

impl ServerConfig {
    /// Defaults with the given listen address.
    pub fn with_listen(listen: SocketAddr) -> Self {
        Self { listen, ..Self::default() }
    }

    /// Checks the settings hang together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(tls) = &self.tls {
            tls.validate()?;
        }
        if !self.listen.ip().is_loopback() && !self.allow_insecure_non_loopback && self.tls.is_none() {
            return Err(ConfigError::Invalid(format!(
                "refusing to listen on non-loopback address {} without TLS; configure server.tls \
                 (cert-file, key-file), or set server.allow-insecure-non-loopback: true (or \
                 --allow-insecure-non-loopback) only where the network is private, e.g. a pod's own namespace",
                self.listen
            )));
        }
        if let Some(path) = &self.unix_socket {
            // sun_path holds 108 bytes with its terminating NUL.
            if path.as_os_str().len() > 107 || path.as_os_str().is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "server.unix-socket must be a path of 1 to 107 bytes (a Unix socket address's limit), got {}",
                    path.display()
                )));
            }
        }
        if self.max_request_bytes < 1024 {
            return Err(ConfigError::Invalid("server.max-request-bytes must be at least 1024".into()));
        }
        if self.worker_threads == 0 || self.worker_threads > 64 {
            return Err(ConfigError::Invalid("server.worker-threads must be 1 ..= 64".into()));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::Invalid("server.max-connections must be at least 1".into()));
        }
        if [
            self.body_idle_timeout,
            self.write_stall_timeout,
            self.header_read_timeout,
            self.idle_timeout,
            self.http2_keepalive_interval,
            self.http2_keepalive_timeout,
        ]
        .iter()
        .any(Duration::is_zero)
        {
            return Err(ConfigError::Invalid(
                "server.body-idle-timeout, write-stall-timeout, header-read-timeout, idle-timeout \
                 and the http2-keepalive settings must be positive"
                    .into(),
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::Invalid("server.request-timeout must be positive".into()));
        }
        Ok(())
    }
}

impl ServerConfig {
    /// What the layer stack around the backend is made from.
    pub fn stack(&self) -> crate::layers::StackSettings {
        crate::layers::StackSettings {
            max_in_flight: self.max_in_flight,
            breaker: self.breaker,
            retry: self.retry,
            request_timeout: self.request_timeout,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7401)),
            allow_insecure_non_loopback: false,
            unix_socket: None,
            unix_socket_mode: FileMode::default(),
            tls: None,
            body_idle_timeout: Duration::from_secs(30),
            write_stall_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(10),
            max_request_bytes: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(25),
            worker_threads: 1,
            auth_token: None,
            max_connections: 4096,
            breaker: crate::layers::BreakerSettings::default(),
            retry: crate::layers::RetrySettings::default(),
            max_in_flight: 1024,
            log: LogConfig::default(),
        }
    }
}

impl ServerConfig {
    /// A tokio runtime sized by `worker_threads`.
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.worker_threads)
            .thread_name("exo-proxy")
            .enable_all()
            .build()
    }
}

/// Reads and parses a YAML config file, reporting line and column on error.
pub fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
    parse_yaml(&text, &path.display().to_string())
}

/// Parses YAML text; `origin` names it in errors. Config keys are kebab-case everywhere
/// (`max-request-bytes`, `name-prefix`); the snake_case spelling of earlier releases is still
/// read, with a deprecation warning (see [`take_deprecations`]), for one release.
pub fn parse_yaml<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T, ConfigError> {
    let parse_error =
        |err: serde_yaml_ng::Error| ConfigError::Parse { path: origin.to_owned(), message: err.to_string() };
    let mut value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(parse_error)?;
    let mut renamed = Vec::new();
    kebab_keys(&mut value, "", &mut renamed);
    if renamed.is_empty() {
        // Untouched: parse the text itself, so errors keep their line and column.
        return serde_yaml_ng::from_str(text).map_err(parse_error);
    }
    if let Ok(mut pending) = DEPRECATIONS.lock() {
        pending.extend(renamed.into_iter().map(|(old, new)| {
            format!("{origin}: config key '{old}' is deprecated; write '{new}' (snake_case is read for one more release)")
        }));
    }
    serde_yaml_ng::from_value(value).map_err(parse_error)
}

/// Deprecation warnings from configs parsed before logging was set up.
static DEPRECATIONS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The deprecation warnings collected so far (each once), for logging once logs are set up.
pub fn take_deprecations() -> Vec<String> {
    DEPRECATIONS.lock().map(|mut pending| std::mem::take(&mut *pending)).unwrap_or_default()
}

/// Renames snake_case mapping keys to kebab-case, recording `(old path, new key)`. Proxy config
/// keys are all the proxy's own (no user data as keys), so this is safe for them.
fn kebab_keys(value: &mut serde_yaml_ng::Value, path: &str, renamed: &mut Vec<(String, String)>) {
    match value {
        serde_yaml_ng::Value::Mapping(map) => {
            let keys: Vec<serde_yaml_ng::Value> = map.keys().cloned().collect();
            for key in keys {
                let Some(text) = key.as_str() else { continue };
                let here = if path.is_empty() { text.to_owned() } else { format!("{path}.{text}") };
                let mut child = map.remove(&key).unwrap_or_default();
                kebab_keys(&mut child, &here, renamed);
                let new_key = if text.contains('_') {
                    let kebab = text.replace('_', "-");
                    renamed.push((here, kebab.clone()));
                    serde_yaml_ng::Value::String(kebab)
                } else {
                    key
                };
                map.insert(new_key, child);
            }
        }
        serde_yaml_ng::Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                kebab_keys(item, &format!("{path}[{i}]"), renamed);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_listen_is_refused_without_opt_out() {
        let mut config = ServerConfig::with_listen("0.0.0.0:7401".parse().unwrap());
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("non-loopback"), "{err}");
        // The spelling a config file takes (the snake_case one is deprecated).
        assert!(err.contains("server.allow-insecure-non-loopback: true"), "{err}");
        config.allow_insecure_non_loopback = true;
        config.validate().unwrap();
    }

    #[test]
    fn snake_case_keys_are_read_with_a_deprecation_warning() {
        // Other tests may parse configs at the same time: look only at this test's origins.
        let kebab: ServerConfig =
            parse_yaml("max-request-bytes: 2048\nrequest-timeout: 5s\n", "kebab-case-test.yaml").unwrap();
        let snake: ServerConfig = parse_yaml(
            "max_request_bytes: 2048\nrequest_timeout: 5s\nlog:\n  level: debug\n",
            "snake-case-test.yaml",
        )
        .unwrap();
        assert_eq!(snake.max_request_bytes, kebab.max_request_bytes);
        assert_eq!(snake.request_timeout, kebab.request_timeout);
        let warned = take_deprecations();
        assert!(!warned.iter().any(|w| w.starts_with("kebab-case-test.yaml")), "{warned:?}");
        let ours: Vec<_> = warned.iter().filter(|w| w.starts_with("snake-case-test.yaml")).collect();
        assert_eq!(ours.len(), 2, "{warned:?}");
        assert!(ours[0].contains("'max_request_bytes' is deprecated; write 'max-request-bytes'"), "{ours:?}");
        let yaml = serde_yaml_ng::to_string(&kebab).unwrap();
        assert!(yaml.contains("max-request-bytes:") && !yaml.contains('_'), "written kebab-case:\n{yaml}");
    }

    #[test]
    fn unknown_keys_are_reported_with_position() {
        let err = parse_yaml::<ServerConfig>("listen: 127.0.0.1:1\nlisen: x\n", "t.yaml").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("lisen") && text.contains("line 2"), "{text}");
    }

    #[test]
    fn socket_modes_are_octal_strings() {
        let config: ServerConfig =
            parse_yaml("unix-socket: /run/exo/eqs.sock\nunix-socket-mode: \"0600\"\n", "t").unwrap();
        assert_eq!(config.unix_socket_mode, FileMode(0o600));
        assert_eq!(ServerConfig::default().unix_socket_mode, FileMode(0o660));
        let err = parse_yaml::<ServerConfig>("unix-socket-mode: \"0999\"\n", "t").unwrap_err().to_string();
        assert!(err.contains("octal"), "{err}");
        let long =
            ServerConfig { unix_socket: Some(format!("/{}", "x".repeat(120)).into()), ..Default::default() };
        assert!(long.validate().unwrap_err().to_string().contains("107 bytes"));
    }

    #[test]
    fn durations_parse_humanly() {
        let config: ServerConfig = parse_yaml("request_timeout: 1500ms\nshutdown_grace: 2s\n", "t").unwrap();
        assert_eq!(config.request_timeout, Duration::from_millis(1500));
        assert_eq!(config.shutdown_grace, Duration::from_secs(2));
    }
}
