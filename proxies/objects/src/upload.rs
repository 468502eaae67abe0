//! Uploads cut into parts, for cloud backends that store large objects piecewise (S3 multipart
//! uploads, Azure blocks): one part in memory at a time, and the running size checked against
//! the announced length and the limit as bytes arrive, so a mis-sized upload fails before it is
//! committed.

use bytes::{Bytes, BytesMut};
use exo_proto::object::v1 as pb;
use exo_proxy_core::{ExoResult, now_ms};
use futures::StreamExt as _;

use crate::model::{BucketName, ByteStream, PutMeta, check_upload_size};

/// Reads an upload stream part by part.
pub struct PartReader<'a> {
    body: ByteStream,
    meta: &'a PutMeta,
    part_bytes: usize,
    buffer: BytesMut,
    received: u64,
    stream_done: bool,
    started: bool,
}

impl<'a> PartReader<'a> {
    /// Parts of `part_bytes` (the last may be shorter) from `body`, checked against `meta`.
    pub fn new(body: ByteStream, meta: &'a PutMeta, part_bytes: usize) -> Self {
        Self {
            body,
            meta,
            part_bytes,
            buffer: BytesMut::new(),
            received: 0,
            stream_done: false,
            started: false,
        }
    }

    /// The next part: `part_bytes` long unless it is the last. An empty upload yields one empty
    /// part; after the last part, `None`.
    pub async fn next_part(&mut self) -> ExoResult<Option<Bytes>> {
        // One chunk past a full part, so that a body of exactly one part is known to be done
        // after its first part (one PutObject / Put Blob, not a one-part multipart upload).
        while !self.stream_done && self.buffer.len() <= self.part_bytes {
            match self.body.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    self.received += chunk.len() as u64;
                    check_upload_size(self.received, self.meta, false)?;
                    self.buffer.extend_from_slice(&chunk);
                }
                None => {
                    self.stream_done = true;
                    check_upload_size(self.received, self.meta, true)?;
                }
            }
        }
        if self.buffer.is_empty() && self.started {
            return Ok(None);
        }
        self.started = true;
        let take = self.buffer.len().min(self.part_bytes);
        Ok(Some(self.buffer.split_to(take).freeze()))
    }

    /// Whether every byte has been handed out (the part just returned was the last).
    pub fn done(&self) -> bool {
        self.stream_done && self.buffer.is_empty()
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }
}

/// The attributes of an object just stored from `meta`.
pub fn stored_info(bucket: &BucketName, key: &str, size: u64, etag: String, meta: PutMeta) -> pb::ObjectInfo {
    pb::ObjectInfo {
        bucket: bucket.to_string(),
        key: key.to_owned(),
        size,
        etag,
        content_type: meta.content_type,
        metadata: meta.metadata,
        last_modified_ms: now_ms(),
    }
}

#[cfg(test)]
mod tests {
    use exo_proto::common::v1::ErrorReason;

    use super::*;
    use crate::model::WriteCondition;

    fn meta(length: Option<u64>) -> PutMeta {
        PutMeta {
            content_type: String::new(),
            metadata: Default::default(),
            condition: WriteCondition::None,
            content_length: length,
            max_bytes: 100,
        }
    }

    fn body(chunks: &[&'static [u8]]) -> ByteStream {
        Box::pin(futures::stream::iter(chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect::<Vec<_>>()))
    }

    async fn parts(chunks: &[&'static [u8]], meta: &PutMeta) -> ExoResult<Vec<Vec<u8>>> {
        let mut reader = PartReader::new(body(chunks), meta, 4);
        let mut out = Vec::new();
        while let Some(part) = reader.next_part().await? {
            out.push(part.to_vec());
        }
        assert!(reader.done());
        Ok(out)
    }

    #[tokio::test]
    async fn cuts_fixed_parts_whatever_the_chunking() {
        let m = meta(None);
        assert_eq!(
            parts(&[b"abcdefghij"], &m).await.unwrap(),
            [b"abcd".to_vec(), b"efgh".to_vec(), b"ij".to_vec()]
        );
        assert_eq!(parts(&[b"ab", b"cd", b"e"], &m).await.unwrap(), [b"abcd".to_vec(), b"e".to_vec()]);
        assert_eq!(parts(&[b"abcd"], &m).await.unwrap(), [b"abcd".to_vec()]);
        assert_eq!(parts(&[], &m).await.unwrap(), [Vec::<u8>::new()], "an empty upload is one empty part");
    }

    #[tokio::test]
    async fn a_body_of_exactly_one_part_is_done_after_it() {
        for chunks in [&[&b"abcd"[..]][..], &[b"ab", b"cd"]] {
            let m = meta(Some(4));
            let mut reader = PartReader::new(body(chunks), &m, 4);
            assert_eq!(reader.next_part().await.unwrap().unwrap(), &b"abcd"[..]);
            assert!(reader.done(), "{chunks:?}: the backend can store it in one call");
        }
    }

    #[tokio::test]
    async fn a_short_or_long_upload_fails_before_its_last_part() {
        let short = parts(&[b"abc"], &meta(Some(5))).await.unwrap_err();
        assert_eq!(short.reason, ErrorReason::InvalidArgument);
        let long = parts(&[b"abcdef"], &meta(Some(5))).await.unwrap_err();
        assert_eq!(long.reason, ErrorReason::InvalidArgument);
        let big = parts(&[&[0u8; 101]], &meta(None)).await.unwrap_err();
        assert_eq!(big.reason, ErrorReason::ValueTooLarge);
    }
}
