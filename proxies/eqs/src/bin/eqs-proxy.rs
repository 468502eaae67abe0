//! `eqs-proxy`: the ExoFlow queue sidecar. Flags, configuration and start-up are every
//! proxy's own (`exo_proxy_core::cli`); this binary only names itself.

fn main() -> anyhow::Result<()> {
    Ok(exo_proxy_core::cli::main::<eqs::EqsProxy>(&exo_proxy_core::cli::Binary {
        proxy: "eqs",
        version: env!("CARGO_PKG_VERSION"),
        about: "The ExoFlow queue proxy: serves exo.queue.v1 over gRPC and HTTP/JSON on one port.",
        data_flag: "db",
        data_help: "Database file of the embedded backend",
    })?)
}
