//! Compiles the contract without a system `protoc`: protox parses the .proto files into a
//! descriptor set, tonic-prost-build generates messages and services from it, and pbjson-build
//! generates the canonical proto3 JSON mapping used by the HTTP side.

use std::{env, fs, path::PathBuf};

use prost::Message as _;

const PROTOS: &[&str] = &[
    "proto/exo/common/v1/error.proto",
    "proto/exo/queue/v1/queue.proto",
    "proto/exo/object/v1/object.proto",
    "proto/exo/kv/v1/kv.proto",
    "proto/google/rpc/status.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let fds = protox::compile(PROTOS, ["proto"])?;
    let fds_path = out.join("exo_descriptor.bin");
    fs::write(&fds_path, fds.encode_to_vec())?;

    // Object bytes as `bytes::Bytes`: a chunk is handed on without a copy (the server's read
    // buffer becomes the message, a decoded chunk is a slice of the receive buffer).
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".exo.object.v1.PutRequest.chunk")
        .bytes(".exo.object.v1.GetResponse.chunk")
        .compile_fds(fds.clone())?;

    pbjson_build::Builder::new().register_descriptors(&fs::read(&fds_path)?)?.build(&[".exo"])?;
    Ok(())
}
