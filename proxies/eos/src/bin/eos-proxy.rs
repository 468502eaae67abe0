//! `eos-proxy`: the ExoFlow object-store sidecar. Flags, configuration and start-up are every
//! proxy's own (`exo_proxy_core::cli`); this binary only names itself.

fn main() -> anyhow::Result<()> {
    Ok(exo_proxy_core::cli::main::<eos::EosProxy>(&exo_proxy_core::cli::Binary {
        proxy: "eos",
        version: env!("CARGO_PKG_VERSION"),
        about: "The ExoFlow object-store proxy: serves exo.object.v1 over gRPC and HTTP on one port.",
        data_flag: "root",
        data_help: "Data root of the fs backend",
    })?)
}
