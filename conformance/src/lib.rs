//! The ExoFlow conformance suite: behavioural cases every backend must pass, run through the
//! public contract (the SDK over gRPC, and HTTP/JSON), never through backend internals.
//!
//! Each case may need a capability. If the backend declares it, the case must pass. If not, the
//! case instead checks that a call needing it fails with UNSUPPORTED (gRPC UNIMPLEMENTED) and is
//! reported as `unsupported`: a declaration can lie in neither direction.

pub mod backends;
pub mod emulators;
pub mod kv_cases;
pub mod object_cases;
pub mod openapi_check;
pub mod probes;
pub mod push_app;
pub mod queue_cases;
pub mod report;
pub mod runner;

pub use runner::{CaseResult, Outcome, Service, Target, run_suite};

use std::{future::Future, pin::Pin};

use exo_sdk::{
    BackendDescription, KvBackendDescription, KvCapability, KvClient, ObjectBackendDescription,
    ObjectCapability, ObjectClient, QueueCapability, QueueClient, TopicClient,
};

/// What a case returns: `Err` explains the failure (or, made by [`not_run`], why it could not run).
pub type CaseOutcome = Result<(), String>;

/// Marks an `Err` of a case that this kind of run cannot set up.
const NOT_RUN: &str = "\u{0}not run: ";

/// The outcome of a case this kind of run cannot set up (e.g. push delivery against a proxy the
/// suite did not start): reported as unverified, with `why`, never as a pass.
pub fn not_run(why: &str) -> CaseOutcome {
    Err(format!("{NOT_RUN}{why}"))
}

/// A boxed case future.
pub type CaseFuture = Pin<Box<dyn Future<Output = CaseOutcome> + Send>>;

/// One behavioural case over a context `C`, possibly needing a capability `K`.
#[derive(Debug)]
pub struct Case<C, K> {
    /// Stable identifier, `area.behaviour`.
    pub name: &'static str,
    /// What it proves.
    pub description: &'static str,
    /// The capability it needs, if any.
    pub needs: Option<K>,
    /// The case.
    pub run: fn(C) -> CaseFuture,
}

impl<C, K: Copy> Clone for Case<C, K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C, K: Copy> Copy for Case<C, K> {}

/// Passes when the proxy at `base` answers the standard gRPC health check (`grpc.health.v1`) for
/// `service` with SERVING: what Kubernetes startup and readiness probes (and grpc-health-probe)
/// ask, as `exo deploy` renders them.
pub async fn grpc_serving(base: &str, service: &str) -> CaseOutcome {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let channel = tonic::transport::Endpoint::from_shared(base.to_owned())
        .map_err(|e| format!("endpoint {base}: {e}"))?
        .connect()
        .await
        .map_err(|e| format!("connect {base}: {e}"))?;
    let mut client = HealthClient::new(channel);
    // A probe asks again: the proxy may have become ready a moment ago.
    let started = std::time::Instant::now();
    loop {
        let answer = client
            .check(HealthCheckRequest { service: service.to_owned() })
            .await
            .map_err(|e| format!("grpc.health.v1 Check({service}) failed: {e}"))?
            .into_inner();
        if answer.status == ServingStatus::Serving as i32 {
            break;
        }
        crate::check!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "health of {service}: status {} (not SERVING) for 5 s",
            answer.status
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let unknown = client.check(HealthCheckRequest { service: "no.such.Service".into() }).await;
    crate::check!(
        matches!(&unknown, Err(status) if status.code() == tonic::Code::NotFound),
        "health of an unknown service must be NOT_FOUND, got {unknown:?}"
    );
    Ok(())
}

/// A queue case.
pub type QueueCase = Case<QueueCtx, QueueCapability>;
/// A key-value case.
pub type KvCase = Case<KvCtx, KvCapability>;
/// An object case.
pub type ObjectCase = Case<ObjectCtx, ObjectCapability>;

/// What an object case gets.
#[derive(Debug, Clone)]
pub struct ObjectCtx {
    /// SDK client of the proxy under test (no retries).
    pub client: ObjectClient,
    /// What the backend declared.
    pub backend: ObjectBackendDescription,
    /// Base URL of the proxy's HTTP side.
    pub http_base: String,
    /// Unique per case.
    pub prefix: String,
}

impl ObjectCtx {
    /// A bucket name unique to this case.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.prefix)
    }

    /// Creates a bucket and returns its name.
    pub async fn bucket(&self, suffix: &str) -> Result<String, String> {
        let name = self.name(suffix);
        self.client.create_bucket(&name).await.map_err(|e| format!("create_bucket({name}) failed: {e}"))?;
        Ok(name)
    }
}

/// What a queue case gets.
#[derive(Debug, Clone)]
pub struct QueueCtx {
    /// SDK client of the proxy under test (no retries, so errors are seen as they are).
    pub client: QueueClient,
    /// Topic client of the same proxy (no retries).
    pub topics: TopicClient,
    /// What the backend declared.
    pub backend: BackendDescription,
    /// Base URL of the proxy's HTTP/JSON side (same port as gRPC).
    pub http_base: String,
    /// Unique per case, so cases can run concurrently against a shared backend.
    pub prefix: String,
    /// The push endpoint and its declared topic, when the suite started the proxy (and the
    /// backend has topics).
    pub push: Option<push_app::PushApp>,
}

impl QueueCtx {
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

    /// Creates a topic unique to this case and returns its name.
    pub async fn topic(&self, suffix: &str) -> Result<String, String> {
        let name = self.name(suffix);
        self.topics.create_topic(&name).await.map_err(|e| format!("create_topic({name}) failed: {e}"))?;
        Ok(name)
    }
}

/// What a key-value case gets.
#[derive(Debug, Clone)]
pub struct KvCtx {
    /// SDK client of the proxy under test (no retries).
    pub client: KvClient,
    /// What the backend declared.
    pub backend: KvBackendDescription,
    /// Base URL of the proxy's HTTP/JSON side.
    pub http_base: String,
    /// Unique per case.
    pub prefix: String,
}

impl KvCtx {
    /// A table name unique to this case.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.prefix)
    }

    /// Creates a table and returns its name.
    pub async fn table(&self, suffix: &str) -> Result<String, String> {
        let name = self.name(suffix);
        self.client.create_table(&name).await.map_err(|e| format!("create_table({name}) failed: {e}"))?;
        Ok(name)
    }

    /// The backend's limits.
    pub fn limits(&self) -> exo_proto::kv::v1::Limits {
        self.backend.limits.unwrap_or_default()
    }
}

/// `Ok` value, or a failure message naming `what` failed.
pub fn ok<T>(result: Result<T, exo_sdk::Error>, what: &str) -> Result<T, String> {
    result.map_err(|err| format!("{what} failed: {err}"))
}

/// The error, if `result` failed with exactly `reason`; otherwise a failure message.
pub fn expect_reason<T: std::fmt::Debug>(
    result: Result<T, exo_sdk::Error>,
    reason: exo_sdk::Reason,
    what: &str,
) -> Result<exo_sdk::Error, String> {
    match result {
        Ok(value) => Err(format!("{what}: expected {}, got success {value:?}", reason.as_str_name())),
        Err(err) if err.reason == reason => Ok(err),
        Err(err) => Err(format!("{what}: expected {}, got {err}", reason.as_str_name())),
    }
}

/// One area's cases, each written once: its doc comment (the description reports and
/// `conformance list` show), its name and the capability it needs, and its body. Generates the
/// functions and the area's `cases()` list, in the order written.
///
/// ```ignore
/// crate::cases! {
///     /// An acked message is never delivered again
///     case "ack.removes", needs None;
///     async fn ack_removes(ctx: Ctx) -> CaseOutcome { /* … */ Ok(()) }
/// }
/// ```
#[macro_export]
macro_rules! cases {
    ($(
        $(#[doc = $doc:literal])+
        case $name:literal, needs $needs:expr;
        $(#[$attr:meta])*
        async fn $body:ident($ctx:ident: $ctx_type:ty) -> $outcome:ty $block:block
    )+) => {
        $(
            $(#[doc = $doc])+
            $(#[$attr])*
            async fn $body($ctx: $ctx_type) -> $outcome $block
        )+

        /// This area's cases, in report order.
        pub(super) fn cases() -> Vec<Case> {
            vec![$(
                $crate::Case {
                    name: $name,
                    description: concat!($($doc),+).trim_ascii(),
                    needs: $needs,
                    run: |ctx| Box::pin($body(ctx)),
                },
            )+]
        }
    };
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
