//! OpenTelemetry traces, exported over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set
//! (and `OTEL_SDK_DISABLED` is not `true`); off otherwise, at the cost of one flag read per
//! request.
//!
//! - Each request is a server span continuing the caller's W3C `traceparent` (gRPC metadata and
//!   HTTP headers are both HTTP headers here), named `<service>/<method>` for gRPC and
//!   `<METHOD> <route template>` for HTTP (the path itself is the `url.path` attribute). Health
//!   probes and metric scrapes are not traced.
//! - Each backend call is a client span under it ([`backend_span`], used by the observe layer).
//! - eqs carries the send's context in each message (the `traceparent` attribute, see
//!   [`current_traceparent`]), and a receive links to the context of each message it returns
//!   ([`link_current`]), so a consumer's receive leads to the producer's send.
//! - The service name is `OTEL_SERVICE_NAME`, or the binary's name (`eqs-proxy`, `exo`).
//!   Other standard variables apply (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_BSP_*`).

use std::sync::atomic::{AtomicBool, Ordering};

use axum::{extract::Request, middleware::Next, response::Response};
use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{SpanContext, TraceContextExt, TracerProvider as _},
};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The message attribute (and header) carrying a W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether traces are being exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether the environment asks for traces.
pub fn requested() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && !std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The running exporter; [`TraceExport::finish`] sends what is still buffered.
#[derive(Debug)]
pub struct TraceExport {
    provider: SdkTracerProvider,
}

impl TraceExport {
    /// Flushes buffered spans and stops the exporter.
    pub async fn finish(self) {
        // The flush blocks on the exporter, which needs this runtime to make progress.
        let provider = self.provider;
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
}

/// The tracing layer that turns spans into OpenTelemetry spans, and its exporter; `None` when
/// traces are not requested or the exporter cannot be built (said on stderr). Must run inside
/// a Tokio runtime (the gRPC channel is made here).
pub(crate) fn layer<S>() -> Option<(impl tracing_subscriber::Layer<S>, TraceExport)>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    if !requested() {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder().with_tonic().build() {
        Ok(exporter) => exporter,
        Err(err) => {
            eprintln!("OpenTelemetry: cannot export traces: {err}; running without traces");
            return None;
        }
    };
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        let binary = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "exoflow".to_owned());
        resource = resource.with_service_name(binary);
    }
    let provider =
        SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
    let tracer = provider.tracer("exoflow");
    opentelemetry::global::set_tracer_provider(provider.clone());
    ENABLED.store(true, Ordering::Relaxed);
    // Only the spans made here: the libraries' own (h2, hyper, tonic) would be noise.
    let ours = tracing_subscriber::filter::Targets::new().with_target(module_path!(), tracing::Level::INFO);
    let layer =
        tracing_subscriber::Layer::with_filter(tracing_opentelemetry::layer().with_tracer(tracer), ours);
    Some((layer, TraceExport { provider }))
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Middleware: the request as a server span continuing the caller's trace context.
pub async fn request_span(request: Request, next: Next) -> Response {
    if !enabled() {
        return next.run(request).await;
    }
    let path = request.uri().path();
    if is_probe(path) {
        return next.run(request).await;
    }
    let parent = TraceContextPropagator::new().extract(&Headers(request.headers()));
    let grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    // HTTP spans are named by their route template (`POST /api/v1/queues/{queue}/messages`), as
    // OpenTelemetry's HTTP conventions ask: one name per operation, the names in `url.path`.
    let route = request.extensions().get::<axum::extract::MatchedPath>().map(|m| m.as_str().to_owned());
    let name = if grpc {
        path.trim_start_matches('/').to_owned()
    } else {
        format!("{} {}", request.method(), route.as_deref().unwrap_or("unmatched"))
    };
    let span = tracing::info_span!(
        "request",
        otel.name = %name,
        otel.kind = "server",
        rpc.system = if grpc { "grpc" } else { "" },
        http.request.method = %request.method(),
        http.route = route.as_deref().unwrap_or_default(),
        url.path = %path,
    );
    let _ = span.set_parent(parent);
    next.run(request).instrument(span).await
}

/// Health probes and scrapes (`/healthz`, `/readyz`, `/metrics`, gRPC health): not traced, or
/// every kubelet probe would be a trace of its own.
fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics") || path.starts_with("/grpc.health.v1.Health/")
}

/// A client span for one backend call, under the current request span; disabled (free) when
/// traces are off.
pub fn backend_span(service: &'static str, op: &'static str, backend: &'static str) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "backend call",
        otel.name = %format!("{backend} {op}"),
        otel.kind = "client",
        exo.service = service,
        exo.operation = op,
        exo.backend = backend,
    )
}

struct One(Option<String>);

impl Injector for One {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

/// The current span's context as a W3C `traceparent`, when traces are on and there is one.
pub fn current_traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut one = One(None);
    TraceContextPropagator::new().inject_context(&context, &mut one);
    one.0
}

/// The span context a `traceparent` value names, when it is well formed.
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    struct Value<'a>(&'a str);
    impl Extractor for Value<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            (key == TRACEPARENT).then_some(self.0)
        }
        fn keys(&self) -> Vec<&str> {
            vec![TRACEPARENT]
        }
    }
    let context: Context = TraceContextPropagator::new().extract(&Value(value));
    let span = context.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// Links the current span to the span a message's `traceparent` names (a receive to each
/// message's send).
pub fn link_current(traceparent: &str) {
    if !enabled() {
        return;
    }
    if let Some(producer) = parse_traceparent(traceparent) {
        tracing::Span::current().add_link(producer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_parse_and_garbage_does_not() {
        let context = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
        for junk in ["", "00-0-0-01", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "hello"] {
            assert!(parse_traceparent(junk).is_none(), "{junk}");
        }
    }

    #[test]
    fn off_by_default_and_free() {
        assert!(!enabled());
        assert!(current_traceparent().is_none());
        assert!(backend_span("queue", "send", "memory").is_disabled());
    }
}
