//! Log setup: `tracing` to stderr as text or JSON lines, and OpenTelemetry traces when the
//! environment asks for them (see [`crate::traces`]).

use tracing_subscriber::{
    EnvFilter, Layer as _, fmt, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG` overrides the configured level. Calling it twice
/// is harmless (the second call keeps the first subscriber). With `OTEL_EXPORTER_OTLP_ENDPOINT`
/// set it also exports traces and returns the exporter to [`crate::traces::TraceExport::finish`]
/// at exit; it must then run inside a Tokio runtime.
pub fn init_tracing(config: &LogConfig) -> Option<crate::traces::TraceExport> {
    // lapin logs every channel the broker closes as an error, including the answer to a
    // "does this queue exist?" question; the proxy reports what matters itself.
    let quiet = |filter: EnvFilter| match "lapin::channel=off".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level).map(quiet))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: a file, a pipe or a log collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = match config.format {
        LogFormat::Text => fmt::layer().with_writer(std::io::stderr).with_ansi(ansi).boxed(),
        LogFormat::Json => fmt::layer().json().flatten_event(true).with_writer(std::io::stderr).boxed(),
    };
    let registry = tracing_subscriber::registry().with(logs.with_filter(filter));
    match crate::traces::layer() {
        Some((traces, export)) => registry.with(traces).try_init().ok().map(|()| export),
        None => {
            let _ = registry.try_init();
            None
        }
    }
}
