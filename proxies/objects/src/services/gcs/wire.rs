//! The JSON API's resources and replies as the backend reads them, preconditions as GCS states
//! them, and the multipart body of an upload.

use super::*;

/// GCS's resource of an object (the fields used).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ObjectResource {
    pub(super) name: String,
    #[serde(default)]
    pub(super) size: Option<String>,
    #[serde(default)]
    pub(super) generation: Option<String>,
    #[serde(default)]
    pub(super) content_type: Option<String>,
    #[serde(default)]
    pub(super) metadata: Option<HashMap<String, String>>,
    #[serde(default)]
    pub(super) updated: Option<String>,
}

impl ObjectResource {
    pub(super) fn info(&self, bucket: &str) -> pb::ObjectInfo {
        pb::ObjectInfo {
            bucket: bucket.to_owned(),
            key: key_of(&self.name),
            size: self.size.as_deref().and_then(|s| s.parse().ok()).unwrap_or_default(),
            etag: self.generation.clone().unwrap_or_default(),
            content_type: self.content_type.clone().unwrap_or_default(),
            metadata: self.metadata.clone().unwrap_or_default(),
            last_modified_ms: self.updated.as_deref().and_then(time::rfc3339_ms).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ObjectList {
    #[serde(default)]
    pub(super) items: Vec<ObjectResource>,
    #[serde(default)]
    pub(super) prefixes: Vec<String>,
    #[serde(default)]
    pub(super) next_page_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BucketList {
    #[serde(default)]
    pub(super) items: Vec<BucketResource>,
    #[serde(default)]
    pub(super) next_page_token: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct BucketResource {
    pub(super) name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RewriteReply {
    #[serde(default)]
    pub(super) done: bool,
    #[serde(default)]
    pub(super) rewrite_token: Option<String>,
    #[serde(default)]
    pub(super) resource: Option<ObjectResource>,
}

/// A failed call: its status and GCS's message.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) status: StatusCode,
    pub(super) message: String,
}

/// The generation precondition a write condition is, or why it cannot hold.
pub(super) fn generation_match(condition: &WriteCondition) -> Result<Option<String>, ()> {
    match condition {
        WriteCondition::None => Ok(None),
        WriteCondition::CreateOnly => Ok(Some("0".into())),
        WriteCondition::IfMatch(etag) if etag.parse::<u64>().is_ok_and(|g| g > 0) => Ok(Some(etag.clone())),
        WriteCondition::IfMatch(_) => Err(()),
    }
}

pub(super) fn condition_failed(bucket: &str, key: &str, why: &str) -> ExoError {
    ExoError::new(ErrorReason::ConditionFailed, format!("condition failed for {bucket}/{key}: {why}"))
        .with_resource(format!("{bucket}/{key}"))
}

/// A multipart/related body (resource JSON, then the bytes) and its boundary, which the bytes
/// never contain.
pub(super) fn related_body(resource: &serde_json::Value, content_type: &str, data: &[u8]) -> (String, Bytes) {
    let mut boundary = format!("exo-{:032x}", rand::random::<u128>());
    while data.windows(boundary.len()).any(|w| w == boundary.as_bytes()) {
        boundary = format!("exo-{:032x}", rand::random::<u128>());
    }
    let mut body = BytesMut::with_capacity(data.len() + 512);
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{resource}\r\n--{boundary}\r\nContent-Type: {content_type}\r\n\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (boundary, body.freeze())
}
