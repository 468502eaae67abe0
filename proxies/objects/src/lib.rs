//! exo-objects: the object store behind eos, as a library — the [`backend::ObjectStore`] trait,
//! its operations as values ([`ops`]), the model, the layer adapter ([`layers::Layered`]) and the
//! backends ([`services`]: memory, fs, S3, Azure Blob, GCS, remote, failover). eos serves it;
//! eqs keeps large message bodies in it without linking the eos proxy.

pub mod backend;
pub mod layers;
pub mod listing;
pub mod model;
pub mod ops;
pub mod presign;
pub mod services;
pub mod upload;
