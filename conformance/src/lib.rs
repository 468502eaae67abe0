//! The ExoFlow conformance suite: behavioural cases every backend must pass, run through the
//! public contract (the SDK over gRPC, and HTTP/JSON), never through backend internals.
//!
//! Each case may need a capability. If the backend declares it, the case must pass. If not, the
//! case instead checks that a call needing it fails with UNSUPPORTED (gRPC UNIMPLEMENTED) and is
//! reported as `unsupported`: a declaration can lie in neither direction.

pub mod cases;
pub mod report;
pub mod runner;

pub use runner::{CaseResult, Outcome, Target, run_suite};

use std::{future::Future, pin::Pin};

use exo_sdk::{BackendDescription, QueueCapability, QueueClient};

/// What a case returns: `Err` explains the failure.
pub type CaseOutcome = Result<(), String>;

/// A case's body.
pub type CaseFn = fn(Ctx) -> Pin<Box<dyn Future<Output = CaseOutcome> + Send>>;

/// One behavioural case.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Stable identifier, `area.behaviour`.
    pub name: &'static str,
    /// What it proves.
    pub description: &'static str,
    /// The capability it needs, if any.
    pub needs: Option<QueueCapability>,
    /// The case.
    pub run: CaseFn,
}

/// What a case gets: a client, the backend's description, a unique name prefix and the HTTP base.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// SDK client of the proxy under test (no retries, so errors are seen as they are).
    pub client: QueueClient,
    /// What the backend declared.
    pub backend: BackendDescription,
    /// Base URL of the proxy's HTTP/JSON side (same port as gRPC).
    pub http_base: String,
    /// Unique per case, so cases can run concurrently against a shared backend.
    pub prefix: String,
}

impl Ctx {
    /// A queue name unique to this case: `<prefix>-<suffix>`.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.prefix)
    }

    /// Creates a queue with default options and returns its name.
    pub async fn queue(&self, suffix: &str) -> Result<String, String> {
        self.queue_with(suffix, exo_sdk::QueueOptions::default()).await
    }

    /// Creates a queue with `options` and returns its name.
    pub async fn queue_with(&self, suffix: &str, options: exo_sdk::QueueOptions) -> Result<String, String> {
        let name = self.name(suffix);
        self.client
            .create_queue(&name, options)
            .await
            .map_err(|e| format!("create_queue({name}) failed: {e}"))?;
        Ok(name)
    }

    /// The backend's limits.
    pub fn limits(&self) -> exo_proto::queue::v1::Limits {
        self.backend.limits.unwrap_or_default()
    }
}

/// Fails the case with a formatted message unless `cond` holds.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}
