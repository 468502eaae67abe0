//! Validated values shared by the API layer and the backends: keys, metadata, conditions,
//! ranges, limits and capabilities.

use std::pin::Pin;

use bytes::Bytes;
use exo_proto::{common::v1::ErrorReason, object::v1 as pb};
use exo_proxy_core::{ExoError, ExoResult, ResourceName};
use futures::Stream;

pub use pb::ObjectCapability as Capability;

/// A bucket name that passed the portable rules.
pub type BucketName = ResourceName;

/// Object bytes in flight: chunks, or the error that ended the stream.
pub type ByteStream = Pin<Box<dyn Stream<Item = ExoResult<Bytes>> + Send>>;

/// Chunk size for reads served from disk or memory.
pub const READ_CHUNK: usize = 256 * 1024;

/// What a backend is and can do (see [`exo_proxy_core::Descriptor`]).
pub type Descriptor = exo_proxy_core::Descriptor<Capability, pb::Limits>;

/// Limits of the local backends; `max_object_bytes` 0 means only the disk limits the size.
pub fn local_limits(max_object_bytes: u64) -> pb::Limits {
    pb::Limits {
        max_object_bytes,
        max_key_bytes: 1024,
        max_metadata_entries: 32,
        max_metadata_bytes: 2048,
        max_page_size: 1000,
        max_presign_seconds: 7 * 24 * 3600,
    }
}

/// Checks an object key: 1 to `max` bytes of UTF-8 without control characters (U+0000–U+001F,
/// U+007F), which S3 listings and Azure blob names cannot carry. Everything else — `..`, `/`,
/// `\`, `%2F`, leading `/`, unicode — is an ordinary character: keys never become file paths.
pub fn check_key(key: &str, max: u32, field: &str) -> ExoResult<()> {
    if key.is_empty() || key.len() > max as usize {
        return Err(ExoError::invalid_argument(
            field,
            format!("keys must be 1 to {max} bytes of UTF-8, got {}", key.len()),
        ));
    }
    if let Some(c) = key.chars().find(|c| c.is_ascii_control()) {
        return Err(ExoError::invalid_argument(
            field,
            format!("keys must not contain control characters (found U+{:04X})", c as u32),
        ));
    }
    Ok(())
}

/// Normalizes user metadata: names are `[A-Za-z_][A-Za-z0-9_]*` (what both S3 headers and Azure
/// C#-identifier rules accept), compared ignoring case and stored lowercase; values are printable
/// ASCII; names may not repeat ignoring case; entries and total bytes are bounded.
pub fn normalize_metadata(
    metadata: impl IntoIterator<Item = (String, String)>,
    limits: &pb::Limits,
) -> ExoResult<std::collections::HashMap<String, String>> {
    let mut out = std::collections::HashMap::new();
    let mut total = 0usize;
    for (name, value) in metadata {
        let field = format!("metadata[{name:?}]");
        let valid_name = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name || name.len() > 128 {
            return Err(ExoError::invalid_argument(
                field,
                format!("metadata name {name:?} must match [A-Za-z_][A-Za-z0-9_]* (at most 128)"),
            ));
        }
        if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(ExoError::invalid_argument(
                field,
                format!("metadata {name:?} must be printable ASCII"),
            ));
        }
        total += name.len() + value.len();
        if out.insert(name.to_ascii_lowercase(), value).is_some() {
            return Err(ExoError::invalid_argument(
                field,
                format!("metadata name {name:?} is given twice (names ignore case)"),
            ));
        }
    }
    if out.len() > limits.max_metadata_entries as usize || total > limits.max_metadata_bytes as usize {
        return Err(ExoError::invalid_argument(
            "metadata",
            format!(
                "{} metadata entries of {total} bytes exceed the limits ({} entries, {} bytes)",
                out.len(),
                limits.max_metadata_entries,
                limits.max_metadata_bytes
            ),
        ));
    }
    Ok(out)
}

/// A write precondition, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteCondition {
    /// Unconditional.
    None,
    /// Only if nothing exists under the key.
    CreateOnly,
    /// Only if the current ETag is this.
    IfMatch(String),
}

impl WriteCondition {
    /// Checks the condition against the current ETag (`None` if no object).
    pub fn check(&self, current: Option<&str>, bucket: &str, key: &str) -> ExoResult<()> {
        let holds = match (self, current) {
            (WriteCondition::None, _) => true,
            (WriteCondition::CreateOnly, current) => current.is_none(),
            (WriteCondition::IfMatch(want), Some(have)) => want == have,
            (WriteCondition::IfMatch(_), None) => false,
        };
        if holds {
            Ok(())
        } else {
            let why = match self {
                WriteCondition::CreateOnly => "an object already exists under the key",
                _ => "the object's ETag does not match",
            };
            Err(ExoError::new(
                ErrorReason::ConditionFailed,
                format!("condition failed for {bucket}/{key}: {why}"),
            )
            .with_resource(format!("{bucket}/{key}")))
        }
    }
}

/// Read preconditions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadCondition {
    /// CONDITION_FAILED unless the ETag matches.
    pub if_match: Option<String>,
    /// NOT_MODIFIED if the ETag matches (`*` matches any).
    pub if_none_match: Option<String>,
}

impl ReadCondition {
    /// Checks the conditions against an object's ETag.
    pub fn check(&self, etag: &str, bucket: &str, key: &str) -> ExoResult<()> {
        if let Some(want) = &self.if_match
            && want != etag
            && want != "*"
        {
            return Err(ExoError::new(
                ErrorReason::ConditionFailed,
                format!("{bucket}/{key}: ETag does not match if_match"),
            )
            .with_resource(format!("{bucket}/{key}")));
        }
        if let Some(not) = &self.if_none_match
            && (not == etag || not == "*")
        {
            return Err(ExoError::new(ErrorReason::NotModified, format!("{bucket}/{key} is not modified"))
                .with_resource(format!("{bucket}/{key}")));
        }
        Ok(())
    }
}

/// A requested byte range, validated in shape; resolved against a size with [`Range::resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// From an offset to the end.
    From(u64),
    /// `[start, end)`.
    Span(u64, u64),
    /// The last `n` bytes.
    Suffix(u64),
}

impl Range {
    /// `(offset, length)` within an object of `size` bytes, or RANGE_NOT_SATISFIABLE.
    pub fn resolve(self, size: u64) -> ExoResult<(u64, u64)> {
        let unsatisfiable = || {
            ExoError::new(
                ErrorReason::RangeNotSatisfiable,
                format!("range {self:?} is outside the object of {size} bytes"),
            )
            .with_field("range")
        };
        match self {
            Range::From(start) if start <= size => Ok((start, size - start)),
            Range::Span(start, end) if start <= end && start <= size => Ok((start, end.min(size) - start)),
            Range::Suffix(n) => Ok((size.saturating_sub(n), n.min(size))),
            _ => Err(unsatisfiable()),
        }
    }
}

/// BUCKET_NOT_FOUND.
pub fn bucket_not_found(bucket: &str) -> ExoError {
    ExoError::new(ErrorReason::BucketNotFound, format!("bucket '{bucket}' does not exist"))
        .with_resource(bucket)
}

/// OBJECT_NOT_FOUND.
pub fn object_not_found(bucket: &str, key: &str) -> ExoError {
    ExoError::new(ErrorReason::ObjectNotFound, format!("no object {key:?} in bucket '{bucket}'"))
        .with_resource(format!("{bucket}/{key}"))
}

/// An ETag as the contract carries it: without the quotes HTTP and the cloud services put round it.
pub fn bare_etag(etag: &str) -> String {
    etag.trim_matches('"').to_owned()
}

/// An ETag as a conditional header wants it: quoted (`*` stays as it is).
pub fn quoted_etag(etag: &str) -> String {
    if etag == "*" || etag.starts_with('"') { etag.to_owned() } else { format!("\"{etag}\"") }
}

/// CONDITION_FAILED for an if-match write or delete on a key with no object.
pub fn nothing_to_match(bucket: &str, key: &str) -> ExoError {
    ExoError::new(
        ErrorReason::ConditionFailed,
        format!("condition failed for {bucket}/{key}: no object to match"),
    )
    .with_resource(format!("{bucket}/{key}"))
}

/// A new ETag: unique per write. Objects are never hashed, so large uploads cost no CPU for it.
pub fn new_etag() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// A presigned request: the backend's URL and any headers the request must carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presigned {
    /// The signed URL.
    pub url: String,
    /// Headers required besides the URL (e.g. Azure's `x-ms-blob-type` on PUT).
    pub headers: std::collections::HashMap<String, String>,
}

impl From<String> for Presigned {
    fn from(url: String) -> Self {
        Self { url, headers: Default::default() }
    }
}

/// What a put carries besides the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutMeta {
    /// MIME type.
    pub content_type: String,
    /// Normalized metadata.
    pub metadata: std::collections::HashMap<String, String>,
    /// Precondition.
    pub condition: WriteCondition,
    /// Exact size announced by the client, checked against the bytes received.
    pub content_length: Option<u64>,
    /// Largest accepted size (0 = unlimited).
    pub max_bytes: u64,
}

impl PutMeta {
    /// The put that copies an object read as `info` (its type, metadata and exact length) under
    /// `condition`.
    pub fn copy_of(info: pb::ObjectInfo, condition: WriteCondition, max_bytes: u64) -> Self {
        Self {
            content_type: info.content_type,
            metadata: info.metadata,
            condition,
            content_length: Some(info.size),
            max_bytes,
        }
    }
}

/// Checks the running byte count of an upload against its announced length and the limit.
pub fn check_upload_size(received: u64, meta: &PutMeta, done: bool) -> ExoResult<()> {
    if meta.max_bytes > 0 && received > meta.max_bytes {
        return Err(ExoError::new(
            ErrorReason::ValueTooLarge,
            format!("object exceeds the limit of {} bytes", meta.max_bytes),
        )
        .with_field("chunk"));
    }
    if let Some(expected) = meta.content_length
        && (received > expected || (done && received != expected))
    {
        return Err(ExoError::invalid_argument(
            "content_length",
            format!(
                "content_length announced {expected} bytes but {received}{} arrived",
                if done { "" } else { "+" }
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_like_http() {
        assert_eq!(Range::From(0).resolve(10).unwrap(), (0, 10));
        assert_eq!(Range::From(10).resolve(10).unwrap(), (10, 0));
        assert!(Range::From(11).resolve(10).is_err());
        assert_eq!(Range::Span(2, 5).resolve(10).unwrap(), (2, 3));
        assert_eq!(Range::Span(2, 50).resolve(10).unwrap(), (2, 8));
        assert_eq!(Range::Span(4, 4).resolve(10).unwrap(), (4, 0));
        assert!(Range::Span(5, 4).resolve(10).is_err());
        assert_eq!(Range::Suffix(3).resolve(10).unwrap(), (7, 3));
        assert_eq!(Range::Suffix(30).resolve(10).unwrap(), (0, 10));
    }

    #[test]
    fn metadata_rules() {
        let limits = local_limits(0);
        let ok = normalize_metadata([("Owner".to_owned(), "team a".to_owned())], &limits).unwrap();
        assert_eq!(ok.get("owner").map(String::as_str), Some("team a"));
        for (name, value) in [("a-b", "v"), ("1a", "v"), ("", "v"), ("ok", "é"), ("ok", "\n")] {
            assert!(
                normalize_metadata([(name.to_owned(), value.to_owned())], &limits).is_err(),
                "{name}={value}"
            );
        }
        let dup = [("Key".to_owned(), "1".to_owned()), ("key".to_owned(), "2".to_owned())];
        assert!(normalize_metadata(dup, &limits).is_err());
    }

    #[test]
    fn keys() {
        for good in ["a", "../../etc/passwd", "/abs", "a\\b", "%2F", "ünï ☃", &"k".repeat(1024)] {
            check_key(good, 1024, "key").unwrap();
        }
        for bad in ["", "nul\0", "tab\t", &"k".repeat(1025)] {
            assert!(check_key(bad, 1024, "key").is_err(), "{bad:?}");
        }
    }
}
