//! `ekv-proxy`: the ExoFlow key-value sidecar. Flags, configuration and start-up are every
//! proxy's own (`exo_proxy_core::cli`); this binary only names itself.

fn main() -> anyhow::Result<()> {
    Ok(exo_proxy_core::cli::main::<ekv::EkvProxy>(&exo_proxy_core::cli::Binary {
        proxy: "ekv",
        version: env!("CARGO_PKG_VERSION"),
        about: "The ExoFlow key-value proxy: serves exo.kv.v1 over gRPC and HTTP/JSON on one port.",
        data_flag: "db",
        data_help: "Database file of the embedded backend",
    })?)
}
