//! The ExoFlow contract, generated from the `.proto` files in `proto/`.
//!
//! - [`queue::v1`], [`object::v1`], [`kv::v1`]: messages, gRPC clients and servers.
//! - [`common::v1`]: the error vocabulary ([`common::v1::ErrorReason`], [`common::v1::ErrorDetail`]).
//! - [`rpc`]: the `google.rpc.Status` envelope that carries an `ErrorDetail` in gRPC trailers.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC server reflection.
//! - [`OPENAPI`]: the OpenAPI 3 document of the HTTP/JSON side; [`EQS_OPENAPI`], [`EOS_OPENAPI`],
//!   [`EKV_OPENAPI`]: each proxy's own.
//!
//! Every `exo.*` message also implements `serde::Serialize`/`Deserialize` with the canonical
//! proto3 JSON mapping (lowerCamelCase names, bytes as base64, 64-bit integers as strings).

#![allow(missing_docs, clippy::all)]

/// Shared types.
pub mod common {
    /// Version 1.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/exo.common.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/exo.common.v1.serde.rs"));
    }
}

/// The queue service (eqs).
pub mod queue {
    /// Version 1.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/exo.queue.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/exo.queue.v1.serde.rs"));
    }
}

/// The object service (eos).
pub mod object {
    /// Version 1.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/exo.object.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/exo.object.v1.serde.rs"));
    }
}

/// The key-value service (ekv).
pub mod kv {
    /// Version 1.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/exo.kv.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/exo.kv.v1.serde.rs"));
    }
}

/// The standard rich-error envelope.
pub mod rpc {
    include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
}

/// Encoded `FileDescriptorSet` of every ExoFlow proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/exo_descriptor.bin"));

/// The OpenAPI 3 document of every HTTP/JSON route of the three proxies, for reading.
pub const OPENAPI: &str = include_str!("../openapi.json");
/// eqs's own OpenAPI document (its routes only), served at its `/api/v1/openapi.json`.
pub const EQS_OPENAPI: &str = include_str!("../openapi-eqs.json");
/// eos's own OpenAPI document, served at its `/api/v1/openapi.json`.
pub const EOS_OPENAPI: &str = include_str!("../openapi-eos.json");
/// ekv's own OpenAPI document, served at its `/api/v1/openapi.json`.
pub const EKV_OPENAPI: &str = include_str!("../openapi-ekv.json");

/// The type URL under which an [`common::v1::ErrorDetail`] is packed into `google.rpc.Status.details`.
pub const ERROR_DETAIL_TYPE_URL: &str = "type.googleapis.com/exo.common.v1.ErrorDetail";
