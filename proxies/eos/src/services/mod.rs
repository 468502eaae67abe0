//! Object backends, one module each.

pub mod azure_blob;
pub mod fs;
pub mod memory;
pub mod s3;

use bytes::Bytes;
use futures::stream;

use crate::model::{ByteStream, READ_CHUNK};

/// Serves `data[offset..offset + length]` as a stream of chunks.
pub(crate) fn bytes_stream(data: Bytes, offset: u64, length: u64) -> ByteStream {
    let slice = data.slice(offset as usize..(offset + length) as usize);
    let chunks: Vec<_> = (0..slice.len())
        .step_by(READ_CHUNK)
        .map(|start| Ok(slice.slice(start..(start + READ_CHUNK).min(slice.len()))))
        .collect();
    Box::pin(stream::iter(chunks))
}
