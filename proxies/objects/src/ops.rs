//! The object operations as values: one type per [`crate::backend::ObjectStore`] method, holding
//! its arguments, with its name and kind stated once (metrics, traces and the retry layer read
//! them from here). A backend destructures what it needs; wrappers pass the value on untouched.
//! An upload's bytes travel beside its [`Put`], as a stream, since a stream is consumed once.

use exo_proto::object::v1 as pb;
use exo_proxy_core::layers::{OpKind, Operation};

use crate::{
    listing::Resume,
    model::{BucketName, Range, ReadCondition, WriteCondition},
};

macro_rules! object_op {
    ($op:ident $(<$a:lifetime>)?, $name:literal, $kind:expr) => {
        impl$(<$a>)? Operation for $op$(<$a>)? {
            const SERVICE: &'static str = "object";
            const NAME: &'static str = $name;
            fn kind(&self) -> OpKind {
                #[allow(clippy::redundant_closure_call)]
                ($kind)(self)
            }
        }
    };
}

/// Creates a bucket; false if it existed.
#[derive(Debug, Clone, Copy)]
pub struct CreateBucket<'a> {
    pub bucket: &'a BucketName,
}
object_op!(CreateBucket<'a>, "create_bucket", |_| OpKind::Write);

/// Deletes an empty bucket.
#[derive(Debug, Clone, Copy)]
pub struct DeleteBucket<'a> {
    pub bucket: &'a BucketName,
}
object_op!(DeleteBucket<'a>, "delete_bucket", |_| OpKind::Write);

/// Every bucket name in lexical order.
#[derive(Debug, Clone, Copy)]
pub struct ListBuckets;
object_op!(ListBuckets, "list_buckets", |_| OpKind::Read);

/// Stores the bytes streamed beside it under `key`. Never repeated (the stream is consumed by
/// the first try) and not under the per-call timeout (its length decides its duration).
#[derive(Debug, Clone)]
pub struct Put<'a> {
    pub bucket: &'a BucketName,
    pub key: &'a str,
    pub meta: crate::model::PutMeta,
}
object_op!(Put<'a>, "put", |_| OpKind::Streamed);

/// Opens an object (or a range of it): its attributes, the `(offset, length)` served, and the
/// bytes.
#[derive(Debug, Clone, Copy)]
pub struct Get<'a> {
    pub bucket: &'a BucketName,
    pub key: &'a str,
    pub range: Option<Range>,
    pub condition: &'a ReadCondition,
}
object_op!(Get<'a>, "get", |_| OpKind::Read);

/// An object's attributes.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    pub bucket: &'a BucketName,
    pub key: &'a str,
}
object_op!(Head<'a>, "head", |_| OpKind::Read);

/// Deletes an object; a missing key succeeds unless `if_match` is given.
#[derive(Debug, Clone, Copy)]
pub struct Delete<'a> {
    pub bucket: &'a BucketName,
    pub key: &'a str,
    pub if_match: Option<&'a str>,
}
object_op!(Delete<'a>, "delete", |op: &Delete<'_>| if op.if_match.is_some() {
    OpKind::ConditionalWrite
} else {
    OpKind::Write
});

/// One page of a listing: up to `limit` keys with `prefix` (grouped at `delimiter`), from
/// `resume`.
#[derive(Debug, Clone)]
pub struct List<'a> {
    pub bucket: &'a BucketName,
    pub prefix: &'a str,
    pub delimiter: &'a str,
    pub resume: Option<Resume>,
    pub limit: usize,
}
object_op!(List<'a>, "list", |_| OpKind::Read);

/// Copies an object; the copy's attributes are its own. A transfer: not under the per-call
/// timeout, not repeated.
#[derive(Debug, Clone, Copy)]
pub struct Copy<'a> {
    pub source_bucket: &'a BucketName,
    pub source_key: &'a str,
    pub bucket: &'a BucketName,
    pub key: &'a str,
    pub condition: &'a WriteCondition,
}
object_op!(Copy<'a>, "copy", |_| OpKind::Streamed);

/// A URL (and any headers it needs) allowing `method` on the object until `expires_at_ms`.
/// Changes nothing.
#[derive(Debug, Clone, Copy)]
pub struct Presign<'a> {
    pub bucket: &'a BucketName,
    pub key: &'a str,
    pub method: pb::PresignMethod,
    pub expires_at_ms: u64,
}
object_op!(Presign<'a>, "presign", |_| OpKind::Read);

exo_proxy_core::operations!(
    /// Every object operation.
    pub enum ObjectOp {
    CreateBucket => CreateBucket<'static>,
    DeleteBucket => DeleteBucket<'static>,
    ListBuckets => ListBuckets,
    Put => Put<'static>,
    Get => Get<'static>,
    Head => Head<'static>,
    Delete => Delete<'static>,
    List => List<'static>,
    Copy => Copy<'static>,
    Presign => Presign<'static>,
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_a_name_of_its_own() {
        let names: std::collections::HashSet<_> = ObjectOp::ALL.iter().map(|op| op.name()).collect();
        assert_eq!(names.len(), ObjectOp::ALL.len(), "{names:?}");
        assert!(names.iter().all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')), "{names:?}");
    }
}
