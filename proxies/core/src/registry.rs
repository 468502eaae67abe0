//! The backend registry: each proxy lists its backends once, with [`backends!`](crate::backends),
//! and everything that names backends — the `backend:` config enum and its errors, the bins'
//! `--backend` choices, the conformance runner, `exo deploy`, the docs tables — reads that list.
//!
//! A registry line carries a backend's identity (kind name, provider, one-line description,
//! the cargo feature it needs); the [`Backend`] impl beside the backend's code carries its
//! behaviour (settings type, defaults, validation, limits, how it opens). Adding a backend is its
//! module plus one registry line.

use std::path::PathBuf;

pub use futures::future::BoxFuture;

use crate::{ExoError, ExoResult, config::ConfigError};

/// What the registry needs from one backend of a service.
pub trait Backend {
    /// What the backend opens into: the service's backend trait object (e.g. `Arc<dyn Queue>`).
    type Opened;
    /// What every backend of the service is opened with (call timeout, presigner…).
    type Context: Sync;
    /// Its settings: the `backend:` section without `kind`.
    type Config: Clone;

    /// The settings `--backend <kind>` selects; `data` is the data path flag of local backends.
    fn settings(data: Option<PathBuf>) -> Self::Config;

    /// Points a local backend at `data` (the `--db` / `--root` flags); others ignore it.
    fn set_data_path(_config: &mut Self::Config, _data: PathBuf) {}

    /// Checks the settings hang together, before anything is opened.
    fn validate(_config: &Self::Config) -> Result<(), ConfigError> {
        Ok(())
    }

    /// The largest item (message, object) a backend with these settings stores, where the
    /// service caps it; `None` where it does not.
    fn largest_item(_config: &Self::Config) -> Option<u64> {
        None
    }

    /// Opens the backend (connects, creates files), without layers.
    fn open<'a>(
        config: &'a Self::Config,
        context: &'a Self::Context,
    ) -> BoxFuture<'a, ExoResult<Self::Opened>>;
}

/// One registry line, as lists and docs show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The `kind:` of the `backend:` section.
    pub kind: &'static str,
    /// The provider it belongs to (`local`, `aws`, `azure`, …): a provider offers at most one
    /// backend per service.
    pub provider: &'static str,
    /// One line for help texts and docs.
    pub about: &'static str,
    /// The cargo feature it needs, if any.
    pub feature: Option<&'static str>,
    /// Whether this build has it.
    pub built: bool,
}

/// A backend kind this build was compiled without: it reads any settings so the error can say
/// which cargo feature brings it, instead of serde's "unknown variant".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotBuilt;

impl serde::Serialize for NotBuilt {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_unit()
    }
}

impl<'de> serde::Deserialize<'de> for NotBuilt {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer).map(|_| NotBuilt)
    }
}

/// The error for a backend kind this build lacks.
pub fn not_built(service: &str, kind: &str, feature: &str) -> ConfigError {
    ConfigError::Invalid(format!(
        "{service} backend '{kind}' is not in this build: rebuild with the cargo feature `{feature}` \
         (the default features include every backend)"
    ))
}

/// What opening a backend this build lacks answers (validation normally refuses it first).
pub fn open_not_built<'a, T: Send + 'a>(error: ConfigError) -> BoxFuture<'a, ExoResult<T>> {
    let error = ExoError::new(exo_proto::common::v1::ErrorReason::Unsupported, error.to_string());
    Box::pin(async move { Err(error) })
}

/// The error for a backend kind no registry line names.
pub fn unknown(service: &str, kind: &str, known: &[&str]) -> ConfigError {
    ConfigError::Invalid(format!("unknown {service} backend '{kind}' (known: {})", known.join(", ")))
}

/// The feature name inside a `feature = "name"` cfg, as written in a registry line.
#[doc(hidden)]
pub const fn feature_name(cfg: &'static str) -> &'static str {
    // `stringify!(feature = "aws")` is `feature = "aws"`: the name sits between the quotes.
    let bytes = cfg.as_bytes();
    let mut start = 0;
    while start < bytes.len() && bytes[start] != b'"' {
        start += 1;
    }
    let mut end = bytes.len();
    while end > start + 1 && bytes[end - 1] != b'"' {
        end -= 1;
    }
    if start + 1 >= end {
        return cfg;
    }
    let (_, tail) = bytes.split_at(start + 1);
    let (name, _) = tail.split_at(end - start - 2);
    match std::str::from_utf8(name) {
        Ok(name) => name,
        Err(_) => cfg,
    }
}

/// Declares a proxy's backends: generates the `backend:` config enum (serde-tagged by `kind`),
/// its `KINDS`/`ENTRIES` lists, `kind()`, `named()`, `set_data_path()`, `validate()`,
/// `largest_item()` and `open()`, all from one line per backend.
///
/// ```ignore
/// exo_proxy_core::backends! {
///     /// Which backend serves the queues, with its settings.
///     pub enum BackendConfig for "queue", opens Arc<dyn Queue>, with OpenContext {
///         "memory" in "local" => Memory(memory::MemoryQueue): "in-process, not durable",
///         #[cfg(feature = "aws")]
///         "sqs" in "aws" => Sqs(sqs::SqsQueue): "Amazon SQS",
///     }
///     chain "failover" => Failover(failover::FailoverQueue): "an ordered chain of backends";
/// }
/// ```
///
/// The chain line is the composite backend whose members are themselves `backend:` sections; it
/// is configured in a file only, so it is not among `KINDS`.
#[macro_export]
macro_rules! backends {
    (
        $(#[$enum_meta:meta])*
        $vis:vis enum $name:ident for $service:literal, opens $opened:ty, with $context:ty {
            $(
                $(#[cfg($cfg:meta)])?
                $kind:literal in $provider:literal => $variant:ident($backend:ty): $about:literal,
            )+
        }
        chain $chain_kind:literal => $chain_variant:ident($chain:ty): $chain_about:literal;
    ) => {
        $(#[$enum_meta])*
        #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        #[serde(tag = "kind")]
        $vis enum $name {
            $(
                $(#[cfg($cfg)])?
                #[doc = $about]
                #[serde(rename = $kind)]
                $variant(<$backend as $crate::registry::Backend>::Config),
                $(
                    #[cfg(not($cfg))]
                    #[doc = concat!($about, " (not in this build)")]
                    #[serde(rename = $kind)]
                    $variant($crate::registry::NotBuilt),
                )?
            )+
            #[doc = $chain_about]
            #[serde(rename = $chain_kind)]
            $chain_variant(<$chain as $crate::registry::Backend>::Config),
        }

        impl $name {
            /// Every backend kind this build has that `named` makes (the chain is configured
            /// in a file): the one list help texts and errors quote.
            pub const KINDS: &'static [&'static str] = &[$( $(#[cfg($cfg)])? $kind, )+];

            /// Every registry line, built into this binary or not (docs and lists).
            pub const ENTRIES: &'static [$crate::registry::Entry] = &[$(
                $crate::registry::Entry {
                    kind: $kind,
                    provider: $provider,
                    about: $about,
                    feature: $crate::__registry_feature!($($cfg)?),
                    built: $crate::__registry_built!($($cfg)?),
                },
            )+];

            /// The kind of the chain backend.
            pub const CHAIN: &'static str = $chain_kind;

            /// The service these backends serve, as errors name it.
            pub const SERVICE: &'static str = $service;

            /// The backend's `kind:`.
            pub fn kind(&self) -> &'static str {
                match self {
                    $( Self::$variant(_) => $kind, )+
                    Self::$chain_variant(_) => $chain_kind,
                }
            }

            /// The registry line of a built backend of `kind`.
            pub fn entry(kind: &str) -> Option<&'static $crate::registry::Entry> {
                Self::ENTRIES.iter().find(|e| e.kind == kind)
            }

            /// A backend of `kind` with default settings (`data` for local backends).
            pub fn named(
                kind: &str,
                data: Option<std::path::PathBuf>,
            ) -> Result<Self, $crate::config::ConfigError> {
                $(
                    $(#[cfg($cfg)])?
                    if kind == $kind {
                        return Ok(Self::$variant(<$backend as $crate::registry::Backend>::settings(data)));
                    }
                    $(
                        #[cfg(not($cfg))]
                        if kind == $kind {
                            return Err($crate::registry::not_built(
                                $service, $kind, $crate::registry::feature_name(stringify!($cfg))));
                        }
                    )?
                )+
                let _ = data;
                Err($crate::registry::unknown($service, kind, Self::KINDS))
            }

            /// Points a local backend at `data`; others are left as they are.
            pub fn set_data_path(&mut self, data: std::path::PathBuf) {
                match self {
                    $(
                        $(#[cfg($cfg)])?
                        Self::$variant(config) => <$backend as $crate::registry::Backend>::set_data_path(config, data),
                    )+
                    #[allow(unreachable_patterns)]
                    _ => {}
                }
            }

            /// Checks the settings of this backend (and of a chain's members).
            pub fn validate(&self) -> Result<(), $crate::config::ConfigError> {
                match self {
                    $(
                        $(#[cfg($cfg)])?
                        Self::$variant(config) => <$backend as $crate::registry::Backend>::validate(config),
                        $(
                            #[cfg(not($cfg))]
                            Self::$variant(_) => Err($crate::registry::not_built(
                                $service, $kind, $crate::registry::feature_name(stringify!($cfg)))),
                        )?
                    )+
                    Self::$chain_variant(config) => <$chain as $crate::registry::Backend>::validate(config),
                }
            }

            /// The largest item the backend stores, where the service caps it.
            pub fn largest_item(&self) -> Option<u64> {
                match self {
                    $(
                        $(#[cfg($cfg)])?
                        Self::$variant(config) => <$backend as $crate::registry::Backend>::largest_item(config),
                    )+
                    Self::$chain_variant(config) => <$chain as $crate::registry::Backend>::largest_item(config),
                    #[allow(unreachable_patterns)]
                    _ => None,
                }
            }

            /// Opens the backend, without layers.
            pub fn open<'a>(
                &'a self,
                context: &'a $context,
            ) -> $crate::registry::BoxFuture<'a, $crate::ExoResult<$opened>> {
                match self {
                    $(
                        $(#[cfg($cfg)])?
                        Self::$variant(config) => <$backend as $crate::registry::Backend>::open(config, context),
                    )+
                    Self::$chain_variant(config) => <$chain as $crate::registry::Backend>::open(config, context),
                    $($(
                        #[cfg(not($cfg))]
                        Self::$variant(_) => $crate::registry::open_not_built($crate::registry::not_built(
                            $service, $kind, $crate::registry::feature_name(stringify!($cfg)))),
                    )?)+
                }
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __registry_feature {
    () => {
        None
    };
    ($cfg:meta) => {
        Some($crate::registry::feature_name(stringify!($cfg)))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __registry_built {
    () => {
        true
    };
    ($cfg:meta) => {
        cfg!($cfg)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy service whose backends open into the size they were configured with.
    struct Small;
    struct Chain;

    #[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SmallConfig {
        #[serde(default)]
        size: u64,
    }

    #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    struct ChainConfig {
        members: Vec<ToyConfig>,
    }

    impl Backend for Small {
        type Opened = u64;
        type Context = u64;
        type Config = SmallConfig;
        fn settings(data: Option<PathBuf>) -> SmallConfig {
            SmallConfig { size: data.map(|d| d.as_os_str().len() as u64).unwrap_or(1) }
        }
        fn largest_item(config: &SmallConfig) -> Option<u64> {
            Some(config.size)
        }
        fn validate(config: &SmallConfig) -> Result<(), ConfigError> {
            if config.size > 100 { Err(ConfigError::Invalid("too big".into())) } else { Ok(()) }
        }
        fn open<'a>(config: &'a SmallConfig, context: &'a u64) -> BoxFuture<'a, ExoResult<u64>> {
            Box::pin(async move { Ok(config.size + context) })
        }
    }

    impl Backend for Chain {
        type Opened = u64;
        type Context = u64;
        type Config = ChainConfig;
        fn settings(_data: Option<PathBuf>) -> ChainConfig {
            ChainConfig { members: Vec::new() }
        }
        fn validate(config: &ChainConfig) -> Result<(), ConfigError> {
            config.members.iter().try_for_each(ToyConfig::validate)
        }
        fn largest_item(config: &ChainConfig) -> Option<u64> {
            config.members.iter().filter_map(ToyConfig::largest_item).max()
        }
        fn open<'a>(config: &'a ChainConfig, context: &'a u64) -> BoxFuture<'a, ExoResult<u64>> {
            Box::pin(async move {
                let mut sum = 0;
                for member in &config.members {
                    sum += member.open(context).await?;
                }
                Ok(sum)
            })
        }
    }

    crate::backends! {
        /// The toy service's backends.
        enum ToyConfig for "toy", opens u64, with u64 {
            "small" in "local" => Small(Small): "A small one.",
            #[cfg(not(test))]
            "absent" in "cloud" => Absent(Small): "Only outside tests.",
        }
        chain "chain" => Chain(Chain): "All of them.";
    }

    #[test]
    fn one_line_gives_the_enum_its_lists_and_its_errors() {
        assert_eq!(ToyConfig::KINDS, &["small"]);
        assert_eq!(ToyConfig::ENTRIES.len(), 2);
        assert!(ToyConfig::ENTRIES[0].built && !ToyConfig::ENTRIES[1].built);
        assert_eq!(ToyConfig::ENTRIES[1].feature, Some("not(test)"));
        assert_eq!(ToyConfig::entry("absent").map(|e| e.provider), Some("cloud"));

        let small = ToyConfig::named("small", Some("abc".into())).unwrap();
        assert_eq!(small, ToyConfig::Small(SmallConfig { size: 3 }));
        assert_eq!(small.kind(), "small");
        assert_eq!(small.largest_item(), Some(3));
        assert_eq!((ToyConfig::CHAIN, ToyConfig::SERVICE), ("chain", "toy"));
        let mut moved = small.clone();
        moved.set_data_path("elsewhere".into()); // Small keeps no path: unchanged
        assert_eq!(moved, small);

        let unknown = ToyConfig::named("large", None).unwrap_err().to_string();
        assert!(unknown.contains("unknown toy backend 'large' (known: small)"), "{unknown}");
        let absent = ToyConfig::named("absent", None).unwrap_err().to_string();
        assert!(absent.contains("toy backend 'absent' is not in this build"), "{absent}");
    }

    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
    }

    #[test]
    fn sections_parse_by_kind_and_a_missing_backend_names_its_feature() {
        let parsed: ToyConfig =
            serde_yaml_ng::from_str("kind: chain\nmembers: [{kind: small, size: 5}, {kind: small, size: 7}]")
                .unwrap();
        assert_eq!(parsed.largest_item(), Some(7));
        parsed.validate().unwrap();
        let opened = block_on(parsed.open(&1)).unwrap();
        assert_eq!(opened, 14);

        let too_big: ToyConfig = serde_yaml_ng::from_str("kind: small\nsize: 101").unwrap();
        assert!(too_big.validate().is_err());
        assert!(serde_yaml_ng::from_str::<ToyConfig>("kind: small\nsize: 1\nextra: 2").is_err());

        // A kind this build lacks still parses (any settings), then fails validation and open
        // with the feature to build it with.
        let absent: ToyConfig = serde_yaml_ng::from_str("kind: absent\nanything: [1, 2]").unwrap();
        let err = absent.validate().unwrap_err().to_string();
        assert!(err.contains("cargo feature `not(test)`"), "{err}");
        assert!(block_on(absent.open(&0)).is_err());
        assert!(serde_yaml_ng::from_str::<ToyConfig>("kind: nothing").is_err());
    }

    #[test]
    fn feature_names_come_out_of_their_cfg() {
        assert_eq!(feature_name("feature = \"aws\""), "aws");
        assert_eq!(feature_name("feature=\"azure\""), "azure");
        assert_eq!(feature_name("unix"), "unix");
    }
}
