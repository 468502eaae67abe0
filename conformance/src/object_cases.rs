//! The object cases. Every case uses its own buckets; bodies are compared byte for byte.

use std::{collections::HashMap, time::Duration};

use bytes::Bytes;
use exo_sdk::{ByteRange, GetOptions, ObjectCapability as Cap, PutOptions, Reason, WriteIf};

use crate::{CaseOutcome, ObjectCase as Case, ObjectCtx as Ctx, case, check, expect_reason, ok};

/// Every object case, in report order.
pub fn object_cases() -> Vec<Case> {
    vec![
        case!("object.describe", None, "Describe names the backend and gives usable limits", describe),
        case!(
            "bucket.create_idempotent",
            None,
            "Creating a bucket twice succeeds; the second reports created=false",
            bucket_idempotent
        ),
        case!(
            "bucket.invalid_names",
            None,
            "Bucket names outside the portable rules fail with INVALID_NAME and create nothing",
            bucket_invalid_names
        ),
        case!(
            "bucket.not_found",
            None,
            "Every call on a missing bucket fails with BUCKET_NOT_FOUND",
            bucket_not_found
        ),
        case!(
            "bucket.delete_non_empty",
            None,
            "Deleting a bucket with objects fails with NOT_EMPTY; once empty it deletes",
            bucket_delete_non_empty
        ),
        case!("object.round_trip", None, "Bytes, content type and metadata come back exactly", round_trip),
        case!("object.empty", None, "An empty object is stored and read back as empty", empty_object),
        case!(
            "object.every_byte",
            None,
            "Every byte value survives, in one chunk and across chunk boundaries",
            every_byte
        ),
        case!(
            "object.multi_chunk",
            None,
            "A 5 MiB object streamed in many chunks comes back identical",
            multi_chunk
        ),
        case!(
            "object.overwrite",
            None,
            "A put replaces the object whole: new bytes, new ETag, old metadata gone",
            overwrite
        ),
        case!(
            "object.head",
            None,
            "Head reports size, ETag, content type and metadata without the bytes",
            head
        ),
        case!(
            "object.not_found",
            None,
            "Get and Head of a missing key fail with OBJECT_NOT_FOUND",
            object_not_found
        ),
        case!("object.delete", None, "Delete removes the object", delete),
        case!(
            "object.delete_idempotent",
            Some(Cap::IdempotentDelete),
            "Deleting a missing key succeeds",
            delete_idempotent
        ),
        case!(
            "object.delete_if_match",
            Some(Cap::ConditionalReplace),
            "A delete with a stale ETag fails and keeps the object; the current ETag deletes",
            delete_if_match
        ),
        case!(
            "object.create_only",
            Some(Cap::ConditionalCreate),
            "create-only stores once; a second fails with CONDITION_FAILED and changes nothing",
            create_only
        ),
        case!(
            "object.if_match_write",
            Some(Cap::ConditionalReplace),
            "if-match replaces at the current ETag and fails at a stale one, changing nothing",
            if_match_write
        ),
        case!(
            "object.if_match_missing",
            Some(Cap::ConditionalReplace),
            "if-match on a missing key fails and creates nothing",
            if_match_missing
        ),
        case!(
            "range.from_offset",
            Some(Cap::RangeRead),
            "A range from an offset returns the tail",
            range_from
        ),
        case!(
            "range.middle",
            Some(Cap::RangeRead),
            "A middle range returns exactly those bytes",
            range_middle
        ),
        case!(
            "range.suffix",
            Some(Cap::RangeRead),
            "A suffix range returns the last n bytes (all if n exceeds the size)",
            range_suffix
        ),
        case!(
            "range.zero_length",
            Some(Cap::RangeRead),
            "Empty ranges (start = end, or from the end) return no bytes",
            range_zero
        ),
        case!(
            "range.invalid",
            Some(Cap::RangeRead),
            "A range past the end is RANGE_NOT_SATISFIABLE; an inverted one INVALID_ARGUMENT",
            range_invalid
        ),
        case!(
            "get.conditional",
            None,
            "Get with if-none-match at the ETag is NOT_MODIFIED; with a wrong if-match CONDITION_FAILED",
            get_conditional
        ),
        case!("list.prefix", None, "List filters by prefix in key order", list_prefix),
        case!("list.delimiter", None, "A delimiter groups keys into common prefixes", list_delimiter),
        case!("list.paging", None, "Small pages cover everything without gaps or repeats", list_paging),
        case!(
            "list.consistent_paging",
            None,
            "Keys inserted or deleted between pages never cause repeats; untouched keys are never skipped",
            list_consistent
        ),
        case!(
            "copy.independent",
            Some(Cap::Copy),
            "A copy has the same bytes and attributes, and changing one never changes the other",
            copy_independent
        ),
        case!(
            "copy.missing_source",
            Some(Cap::Copy),
            "Copying a missing source fails with OBJECT_NOT_FOUND and creates nothing",
            copy_missing
        ),
        case!(
            "copy.create_only",
            Some(Cap::Copy),
            "A create-only copy onto an existing key fails and keeps it",
            copy_create_only
        ),
        case!(
            "presign.get",
            Some(Cap::Presign),
            "A presigned GET URL downloads the object with no other credentials",
            presign_get
        ),
        case!(
            "presign.put",
            Some(Cap::Presign),
            "A presigned PUT URL uploads the object with no other credentials",
            presign_put
        ),
        case!(
            "presign.tampered",
            Some(Cap::Presign),
            "A presigned URL with any part altered is refused",
            presign_tampered
        ),
        case!(
            "presign.expired",
            Some(Cap::Presign),
            "A presigned URL stops working when it expires",
            presign_expired
        ),
        case!(
            "delete_batch.per_key",
            None,
            "DeleteBatch reports each key; a bad key fails alone",
            delete_batch
        ),
        case!(
            "keys.special",
            None,
            "Keys with .., absolute paths, %2F, backslashes, unicode, 1024 bytes or store-like names round-trip and list exactly",
            special_keys
        ),
        case!(
            "keys.invalid",
            None,
            "Empty, oversize, NUL or control-character keys fail with INVALID_ARGUMENT and write nothing",
            invalid_keys
        ),
        case!(
            "metadata.invalid",
            None,
            "Bad metadata names or values, case-insensitive duplicates, or too much metadata fail and write nothing",
            invalid_metadata
        ),
        case!(
            "upload.length_mismatch",
            None,
            "An upload whose bytes differ from its announced length fails and keeps the previous object",
            length_mismatch
        ),
        case!(
            "upload.stream_misuse",
            None,
            "A gRPC upload without finish, or with a chunk over the message limit, fails not retryable (MALFORMED_REQUEST / REQUEST_TOO_LARGE) and stores nothing",
            upload_stream_misuse
        ),
        case!(
            "upload.cancelled",
            None,
            "An upload cancelled midway leaves nothing visible and keeps the previous object",
            upload_cancelled
        ),
        case!(
            "object.cas_race",
            Some(Cap::ConditionalReplace),
            "5 workers doing 10 if-match increments each end at exactly 50",
            cas_race
        ),
        case!(
            "http.object_round_trip",
            None,
            "HTTP PUT with headers, GET with Range (206), HEAD, and gRPC see the same object",
            http_round_trip
        ),
        case!(
            "http.range_unsatisfiable",
            Some(Cap::RangeRead),
            "HTTP Range starting at the size (or bytes=-0) is 416 with Content-Range: bytes */size (RFC 9110)",
            http_range_unsatisfiable
        ),
        case!(
            "http.object_conditionals",
            None,
            "HTTP If-None-Match: * on an existing key is 412 problem+json; GET If-None-Match at the ETag is an empty 304",
            http_conditionals
        ),
        case!(
            "http.object_bad_metadata",
            None,
            "A non-ASCII metadata header is 400 and writes nothing",
            http_bad_metadata
        ),
        case!(
            "http.object_openapi_routes",
            None,
            "Every object route in the OpenAPI document is served",
            http_openapi_routes
        ),
    ]
}

/// The call that needs `capability`, expected to fail with UNSUPPORTED where it is not declared.
pub async fn probe_unsupported(ctx: &Ctx, capability: Cap) -> Result<(), String> {
    let b = ctx.bucket("probe").await?;
    let c = &ctx.client;
    ok(c.put_bytes(&b, "k", "v", PutOptions::default()).await, "put")?;
    let result = match capability {
        Cap::ConditionalCreate => c
            .put_bytes(&b, "k2", "v", PutOptions { condition: WriteIf::Absent, ..Default::default() })
            .await
            .map(|_| ()),
        Cap::ConditionalReplace => c.delete(&b, "k", Some("x")).await,
        Cap::Presign => c.presign(&b, "k", false, Duration::from_secs(60)).await.map(|_| ()),
        Cap::Copy => c.copy(&b, "k", &b, "k3", WriteIf::Always).await.map(|_| ()),
        Cap::RangeRead => c
            .get_bytes(&b, "k", GetOptions { range: Some(ByteRange::From(0)), ..Default::default() })
            .await
            .map(|_| ()),
        Cap::IdempotentDelete => {
            return match c.delete(&b, "missing", None).await {
                Err(err) if err.reason == Reason::ObjectNotFound => Ok(()),
                other => Err(format!(
                    "IDEMPOTENT_DELETE is not declared, so deleting a missing key must fail with OBJECT_NOT_FOUND; got {other:?}"
                )),
            };
        }
        Cap::Unspecified => return Err("no probe for UNSPECIFIED".into()),
    };
    match result {
        Err(err) if err.reason == Reason::Unsupported => Ok(()),
        Err(err) => Err(format!(
            "{} is not declared, so its call must fail with UNSUPPORTED; got {err}",
            capability.as_str_name()
        )),
        Ok(()) => Err(format!(
            "{} is not declared, yet its call succeeded: the declaration lies",
            capability.as_str_name()
        )),
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8).collect()
}

async fn put(ctx: &Ctx, b: &str, k: &str, data: impl Into<Bytes>) -> Result<exo_sdk::ObjectInfo, String> {
    ok(ctx.client.put_bytes(b, k, data, PutOptions::default()).await, &format!("put {k:?}"))
}

async fn read(ctx: &Ctx, b: &str, k: &str) -> Result<Vec<u8>, String> {
    Ok(ok(ctx.client.get_bytes(b, k, GetOptions::default()).await, &format!("get {k:?}"))?.1)
}

async fn read_range(
    ctx: &Ctx,
    b: &str,
    k: &str,
    range: ByteRange,
) -> Result<(exo_sdk::GetHeader, Vec<u8>), String> {
    ok(
        ctx.client.get_bytes(b, k, GetOptions { range: Some(range), ..Default::default() }).await,
        &format!("get {range:?}"),
    )
}

async fn keys(ctx: &Ctx, b: &str) -> Result<Vec<String>, String> {
    Ok(ok(ctx.client.list(b, "", "").await, "list")?.0.into_iter().map(|o| o.key).collect())
}

async fn describe(ctx: Ctx) -> CaseOutcome {
    let d = ok(ctx.client.describe().await, "describe")?;
    check!(!d.backend.is_empty(), "backend name is empty");
    let l = d.limits.ok_or("no limits")?;
    check!(l.max_key_bytes >= 1024 && l.max_page_size >= 1, "limits implausible: {l:?}");
    Ok(())
}

async fn bucket_idempotent(ctx: Ctx) -> CaseOutcome {
    let name = ctx.name("idem");
    check!(ok(ctx.client.create_bucket(&name).await, "create")?, "first create must report created=true");
    check!(
        !ok(ctx.client.create_bucket(&name).await, "create again")?,
        "second create must report created=false"
    );
    check!(ok(ctx.client.list_buckets().await, "list")?.contains(&name), "bucket not listed");
    Ok(())
}

async fn bucket_invalid_names(ctx: Ctx) -> CaseOutcome {
    for bad in ["ab", "Upper", "under_score", "dot.ted", "-lead", "dou--ble", ""] {
        expect_reason(ctx.client.create_bucket(bad).await, Reason::InvalidName, bad)?;
    }
    let buckets = ok(ctx.client.list_buckets().await, "list")?;
    check!(
        !buckets.iter().any(|b| b.contains('_') || b.contains('.') || b.len() < 3),
        "an invalid bucket was created: {buckets:?}"
    );
    Ok(())
}

async fn bucket_not_found(ctx: Ctx) -> CaseOutcome {
    let b = ctx.name("missing");
    let c = &ctx.client;
    expect_reason(c.put_bytes(&b, "k", "v", PutOptions::default()).await, Reason::BucketNotFound, "put")?;
    expect_reason(c.get_bytes(&b, "k", GetOptions::default()).await, Reason::BucketNotFound, "get")?;
    expect_reason(c.head(&b, "k").await, Reason::BucketNotFound, "head")?;
    expect_reason(c.delete(&b, "k", None).await, Reason::BucketNotFound, "delete")?;
    expect_reason(c.list_page(&b, "", "", 0, "").await, Reason::BucketNotFound, "list")?;
    expect_reason(c.delete_bucket(&b).await, Reason::BucketNotFound, "delete_bucket")?;
    Ok(())
}

async fn bucket_delete_non_empty(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("nonempty").await?;
    put(&ctx, &b, "k", "v").await?;
    let err = expect_reason(ctx.client.delete_bucket(&b).await, Reason::NotEmpty, "delete non-empty bucket")?;
    check!(
        err.code == exo_sdk::Code::FailedPrecondition,
        "NOT_EMPTY must be FAILED_PRECONDITION, got {:?}",
        err.code
    );
    check!(read(&ctx, &b, "k").await? == b"v", "the object was harmed");
    ok(ctx.client.delete(&b, "k", None).await, "delete object")?;
    ok(ctx.client.delete_bucket(&b).await, "delete empty bucket")?;
    check!(!ok(ctx.client.list_buckets().await, "list")?.contains(&b), "bucket still listed");
    Ok(())
}

async fn round_trip(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("rt").await?;
    let metadata: HashMap<String, String> =
        [("owner".to_owned(), "team-a".to_owned()), ("trace_id".to_owned(), "abc 123".to_owned())].into();
    let options =
        PutOptions { content_type: "image/png".into(), metadata: metadata.clone(), ..Default::default() };
    let data = pattern(1000);
    let info = ok(ctx.client.put_bytes(&b, "pic.png", data.clone(), options).await, "put")?;
    check!(info.size == 1000 && !info.etag.is_empty(), "put returned {info:?}");
    let (header, got) = ok(ctx.client.get_bytes(&b, "pic.png", GetOptions::default()).await, "get")?;
    check!(got == data, "bytes changed");
    let got_info = header.info.unwrap_or_default();
    check!(got_info.content_type == "image/png", "content type {:?}", got_info.content_type);
    check!(got_info.metadata == metadata, "metadata {:?}", got_info.metadata);
    check!(got_info.etag == info.etag, "ETag changed between put and get");
    Ok(())
}

async fn empty_object(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("empty").await?;
    let info = put(&ctx, &b, "nothing", Bytes::new()).await?;
    check!(info.size == 0, "size {}", info.size);
    check!(read(&ctx, &b, "nothing").await?.is_empty(), "empty object has bytes");
    check!(
        ok(ctx.client.head(&b, "nothing").await, "head")?.content_type == "application/octet-stream",
        "default content type missing"
    );
    Ok(())
}

async fn every_byte(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("bytes").await?;
    let small: Vec<u8> = (0..=255u8).collect();
    put(&ctx, &b, "small", small.clone()).await?;
    check!(read(&ctx, &b, "small").await? == small, "256-byte object changed");
    // Straddles upload (256 KiB) and download (64 KiB) chunk boundaries.
    let big: Vec<u8> = (0..exo_sdk::UPLOAD_CHUNK * 2 + 77).map(|i| (i % 251) as u8).collect();
    put(&ctx, &b, "big", big.clone()).await?;
    check!(read(&ctx, &b, "big").await? == big, "chunked object changed");
    Ok(())
}

async fn multi_chunk(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("chunks").await?;
    let data = pattern(5 * 1024 * 1024 + 3);
    // Uneven chunk sizes, as a real streaming client may send.
    let mut chunks = Vec::new();
    let mut at = 0;
    let mut size = 1;
    while at < data.len() {
        let end = (at + size).min(data.len());
        chunks.push(Ok(Bytes::copy_from_slice(&data[at..end])));
        at = end;
        size = (size * 3 + 7) % 300_000 + 1;
    }
    ok(
        ctx.client.put_stream(&b, "big", futures::stream::iter(chunks), PutOptions::default()).await,
        "streamed put",
    )?;
    let got = read(&ctx, &b, "big").await?;
    check!(got.len() == data.len(), "size {} instead of {}", got.len(), data.len());
    check!(got == data, "bytes differ");
    Ok(())
}

async fn overwrite(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("over").await?;
    let first = ok(
        ctx.client
            .put_bytes(
                &b,
                "k",
                "first version",
                PutOptions { metadata: [("old".to_owned(), "1".to_owned())].into(), ..Default::default() },
            )
            .await,
        "put",
    )?;
    let second = put(&ctx, &b, "k", "2nd").await?;
    check!(first.etag != second.etag, "ETag did not change on overwrite");
    check!(read(&ctx, &b, "k").await? == b"2nd", "overwrite did not replace the bytes");
    let info = ok(ctx.client.head(&b, "k").await, "head")?;
    check!(info.metadata.is_empty() && info.size == 3, "old attributes survived: {info:?}");
    Ok(())
}

async fn head(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("head").await?;
    let put_info = ok(
        ctx.client
            .put_bytes(
                &b,
                "k",
                pattern(12345),
                PutOptions { content_type: "text/plain".into(), ..Default::default() },
            )
            .await,
        "put",
    )?;
    let info = ok(ctx.client.head(&b, "k").await, "head")?;
    check!(
        info.size == 12345 && info.etag == put_info.etag && info.content_type == "text/plain",
        "head: {info:?}"
    );
    check!(info.last_modified_ms > 0 && info.key == "k" && info.bucket == b, "head: {info:?}");
    Ok(())
}

async fn object_not_found(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("nf").await?;
    let err = expect_reason(
        ctx.client.get_bytes(&b, "nope", GetOptions::default()).await,
        Reason::ObjectNotFound,
        "get",
    )?;
    check!(
        err.is_not_found() && !err.retryable,
        "OBJECT_NOT_FOUND must be NOT_FOUND, not retryable: {err:?}"
    );
    expect_reason(ctx.client.head(&b, "nope").await, Reason::ObjectNotFound, "head")?;
    Ok(())
}

async fn delete(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("del").await?;
    put(&ctx, &b, "k", "v").await?;
    ok(ctx.client.delete(&b, "k", None).await, "delete")?;
    expect_reason(ctx.client.head(&b, "k").await, Reason::ObjectNotFound, "head after delete")?;
    check!(keys(&ctx, &b).await?.is_empty(), "deleted object still listed");
    Ok(())
}

async fn delete_idempotent(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("delidem").await?;
    ok(ctx.client.delete(&b, "never-existed", None).await, "delete of a missing key")?;
    put(&ctx, &b, "k", "v").await?;
    ok(ctx.client.delete(&b, "k", None).await, "delete")?;
    ok(ctx.client.delete(&b, "k", None).await, "second delete")
}

async fn delete_if_match(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("delmatch").await?;
    let old = put(&ctx, &b, "k", "1").await?;
    let current = put(&ctx, &b, "k", "2").await?;
    expect_reason(
        ctx.client.delete(&b, "k", Some(&old.etag)).await,
        Reason::ConditionFailed,
        "delete with stale ETag",
    )?;
    check!(read(&ctx, &b, "k").await? == b"2", "a failed conditional delete removed the object");
    ok(ctx.client.delete(&b, "k", Some(&current.etag)).await, "delete with current ETag")?;
    expect_reason(ctx.client.head(&b, "k").await, Reason::ObjectNotFound, "head")?;
    expect_reason(
        ctx.client.delete(&b, "k", Some(&current.etag)).await,
        Reason::ConditionFailed,
        "conditional delete of a missing key",
    )?;
    Ok(())
}

async fn create_only(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("create").await?;
    let absent = PutOptions { condition: WriteIf::Absent, ..Default::default() };
    let first = ok(ctx.client.put_bytes(&b, "k", "first", absent.clone()).await, "first create")?;
    let err = expect_reason(
        ctx.client.put_bytes(&b, "k", "second", absent).await,
        Reason::ConditionFailed,
        "second create",
    )?;
    check!(err.code == exo_sdk::Code::FailedPrecondition, "CONDITION_FAILED must be FAILED_PRECONDITION");
    check!(read(&ctx, &b, "k").await? == b"first", "a failed create changed the bytes");
    check!(
        ok(ctx.client.head(&b, "k").await, "head")?.etag == first.etag,
        "a failed create changed the ETag"
    );
    Ok(())
}

async fn if_match_write(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("ifmatch").await?;
    let v1 = put(&ctx, &b, "k", "1").await?;
    let v2 = ok(
        ctx.client
            .put_bytes(
                &b,
                "k",
                "2",
                PutOptions { condition: WriteIf::Matches(v1.etag.clone()), ..Default::default() },
            )
            .await,
        "if-match at current",
    )?;
    expect_reason(
        ctx.client
            .put_bytes(
                &b,
                "k",
                "3",
                PutOptions { condition: WriteIf::Matches(v1.etag), ..Default::default() },
            )
            .await,
        Reason::ConditionFailed,
        "if-match at stale ETag",
    )?;
    check!(read(&ctx, &b, "k").await? == b"2", "a failed if-match write changed the bytes");
    check!(
        ok(ctx.client.head(&b, "k").await, "head")?.etag == v2.etag,
        "a failed if-match write changed the ETag"
    );
    Ok(())
}

async fn if_match_missing(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("ifmiss").await?;
    expect_reason(
        ctx.client
            .put_bytes(
                &b,
                "k",
                "v",
                PutOptions { condition: WriteIf::Matches("abc".into()), ..Default::default() },
            )
            .await,
        Reason::ConditionFailed,
        "if-match on a missing key",
    )?;
    expect_reason(
        ctx.client.head(&b, "k").await,
        Reason::ObjectNotFound,
        "a failed if-match created the key",
    )?;
    Ok(())
}

async fn range_from(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("rfrom").await?;
    let data = pattern(100_000);
    put(&ctx, &b, "k", data.clone()).await?;
    let (header, got) = read_range(&ctx, &b, "k", ByteRange::From(70_000)).await?;
    check!(got == data[70_000..], "tail differs");
    check!(header.offset == 70_000 && header.length == 30_000, "header {header:?}");
    check!(header.info.map(|i| i.size) == Some(100_000), "header must give the whole size");
    Ok(())
}

async fn range_middle(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("rmid").await?;
    let data = pattern(200_000);
    put(&ctx, &b, "k", data.clone()).await?;
    let (_, got) = read_range(&ctx, &b, "k", ByteRange::Span(65_530, 131_080)).await?;
    check!(got == data[65_530..131_080], "middle differs");
    let (_, past) = read_range(&ctx, &b, "k", ByteRange::Span(199_990, 250_000)).await?;
    check!(past == data[199_990..], "a span past the end must be clipped to the end");
    Ok(())
}

async fn range_suffix(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("rsuf").await?;
    let data = pattern(1000);
    put(&ctx, &b, "k", data.clone()).await?;
    check!(read_range(&ctx, &b, "k", ByteRange::Suffix(10)).await?.1 == data[990..], "suffix differs");
    check!(
        read_range(&ctx, &b, "k", ByteRange::Suffix(5000)).await?.1 == data,
        "oversize suffix must return everything"
    );
    Ok(())
}

async fn range_zero(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("rzero").await?;
    put(&ctx, &b, "k", pattern(100)).await?;
    let (h, got) = read_range(&ctx, &b, "k", ByteRange::Span(40, 40)).await?;
    check!(got.is_empty() && h.length == 0, "empty span returned {} bytes", got.len());
    let (h, got) = read_range(&ctx, &b, "k", ByteRange::From(100)).await?;
    check!(got.is_empty() && h.length == 0, "range from the end returned {} bytes", got.len());
    Ok(())
}

async fn range_invalid(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("rbad").await?;
    put(&ctx, &b, "k", pattern(100)).await?;
    let err = expect_reason(
        ctx.client
            .get_bytes(&b, "k", GetOptions { range: Some(ByteRange::From(101)), ..Default::default() })
            .await,
        Reason::RangeNotSatisfiable,
        "range past the end",
    )?;
    check!(
        err.code == exo_sdk::Code::OutOfRange,
        "RANGE_NOT_SATISFIABLE must be OUT_OF_RANGE, got {:?}",
        err.code
    );
    expect_reason(
        ctx.client
            .get_bytes(&b, "k", GetOptions { range: Some(ByteRange::Span(50, 10)), ..Default::default() })
            .await,
        Reason::InvalidArgument,
        "inverted range",
    )?;
    Ok(())
}

async fn get_conditional(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("getcond").await?;
    let info = put(&ctx, &b, "k", "v").await?;
    expect_reason(
        ctx.client
            .get_bytes(&b, "k", GetOptions { if_none_match: Some(info.etag.clone()), ..Default::default() })
            .await,
        Reason::NotModified,
        "if-none-match at the ETag",
    )?;
    expect_reason(
        ctx.client
            .get_bytes(&b, "k", GetOptions { if_match: Some("not-the-etag".into()), ..Default::default() })
            .await,
        Reason::ConditionFailed,
        "if-match with another ETag",
    )?;
    let (_, got) = ok(
        ctx.client
            .get_bytes(
                &b,
                "k",
                GetOptions {
                    if_match: Some(info.etag),
                    if_none_match: Some("other".into()),
                    ..Default::default()
                },
            )
            .await,
        "matching conditions",
    )?;
    check!(got == b"v", "conditional get returned wrong bytes");
    Ok(())
}

async fn list_prefix(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("lprefix").await?;
    for k in ["logs/2", "logs/10", "logs/1", "logsx", "img/a", "z"] {
        put(&ctx, &b, k, k.to_owned()).await?;
    }
    let (objects, prefixes) = ok(ctx.client.list(&b, "logs/", "").await, "list")?;
    let got: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    check!(got == ["logs/1", "logs/10", "logs/2"] && prefixes.is_empty(), "listed {got:?} {prefixes:?}");
    check!(
        objects.iter().all(|o| o.size == o.key.len() as u64 && !o.etag.is_empty()),
        "listed objects lack attributes"
    );
    Ok(())
}

async fn list_delimiter(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("ldelim").await?;
    for k in ["a/1", "a/2", "a/b/3", "b", "c/x/y", "d"] {
        put(&ctx, &b, k, "v").await?;
    }
    let (objects, prefixes) = ok(ctx.client.list(&b, "", "/").await, "list root")?;
    let got: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    check!(got == ["b", "d"] && prefixes == ["a/", "c/"], "root listing: {got:?} {prefixes:?}");
    let (objects, prefixes) = ok(ctx.client.list(&b, "a/", "/").await, "list a/")?;
    let got: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    check!(got == ["a/1", "a/2"] && prefixes == ["a/b/"], "a/ listing: {got:?} {prefixes:?}");
    Ok(())
}

async fn list_paging(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("lpage").await?;
    let mut want = Vec::new();
    for i in 0..11 {
        let k = format!("k{i:02}");
        put(&ctx, &b, &k, "v").await?;
        want.push(k);
    }
    let mut got = Vec::new();
    let mut token = String::new();
    for _ in 0..20 {
        let (objects, _, next) = ok(ctx.client.list_page(&b, "", "", 3, &token).await, "page")?;
        check!(objects.len() <= 3, "page of {}", objects.len());
        got.extend(objects.into_iter().map(|o| o.key));
        if next.is_empty() {
            break;
        }
        token = next;
    }
    check!(got == want, "paged listing {got:?}");
    expect_reason(
        ctx.client.list_page(&b, "", "", 3, "bogus!").await,
        Reason::InvalidArgument,
        "bad page token",
    )?;
    Ok(())
}

async fn list_consistent(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("lcons").await?;
    for i in 0..10 {
        put(&ctx, &b, &format!("k{i:02}"), "v").await?;
    }
    let (first, _, token) = ok(ctx.client.list_page(&b, "", "", 4, "").await, "page 1")?;
    ok(ctx.client.delete(&b, "k01", None).await, "delete listed")?;
    ok(ctx.client.delete(&b, "k07", None).await, "delete unlisted")?;
    put(&ctx, &b, "k00a", "v").await?;
    put(&ctx, &b, "k05a", "v").await?;
    let mut rest = Vec::new();
    let mut token = token;
    while !token.is_empty() {
        let (objects, _, next) = ok(ctx.client.list_page(&b, "", "", 4, &token).await, "next page")?;
        rest.extend(objects.into_iter().map(|o| o.key));
        token = next;
    }
    let first: Vec<String> = first.into_iter().map(|o| o.key).collect();
    for k in &rest {
        check!(!first.contains(k), "{k} listed twice");
    }
    for untouched in ["k04", "k05", "k06", "k08", "k09"] {
        check!(rest.iter().any(|k| k == untouched), "untouched {untouched} skipped: {rest:?}");
    }
    check!(
        !rest.iter().any(|k| k == "k07") && rest.iter().any(|k| k == "k05a"),
        "later pages wrong: {rest:?}"
    );
    Ok(())
}

async fn copy_independent(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("copy").await?;
    let other = ctx.bucket("copy-dst").await?;
    let options = PutOptions {
        content_type: "text/csv".into(),
        metadata: [("a".to_owned(), "1".to_owned())].into(),
        ..Default::default()
    };
    let src = ok(ctx.client.put_bytes(&b, "src", pattern(70_000), options).await, "put")?;
    let copy = ok(ctx.client.copy(&b, "src", &other, "dst", WriteIf::Always).await, "copy")?;
    // ETags may be derived from content (S3), so a copy may share its source's; it must be the
    // copy's current one.
    let head = ok(ctx.client.head(&other, "dst").await, "head copy")?;
    check!(
        !copy.etag.is_empty() && head.etag == copy.etag,
        "copy reported ETag {} but has {}",
        copy.etag,
        head.etag
    );
    check!(
        copy.size == src.size && copy.content_type == "text/csv" && copy.metadata == src.metadata,
        "copy attributes: {copy:?}"
    );
    check!(read(&ctx, &other, "dst").await? == pattern(70_000), "copy bytes differ");
    put(&ctx, &b, "src", "changed").await?;
    check!(read(&ctx, &other, "dst").await? == pattern(70_000), "overwriting the source changed the copy");
    ok(
        ctx.client
            .put_bytes(
                &other,
                "dst",
                "copy changed",
                PutOptions { metadata: [("b".to_owned(), "2".to_owned())].into(), ..Default::default() },
            )
            .await,
        "overwrite copy",
    )?;
    check!(read(&ctx, &b, "src").await? == b"changed", "overwriting the copy changed the source");
    check!(
        ok(ctx.client.head(&b, "src").await, "head")?.metadata.is_empty(),
        "the source's metadata changed with the copy's"
    );
    Ok(())
}

async fn copy_missing(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("copymiss").await?;
    expect_reason(
        ctx.client.copy(&b, "nope", &b, "dst", WriteIf::Always).await,
        Reason::ObjectNotFound,
        "copy of a missing source",
    )?;
    expect_reason(
        ctx.client.head(&b, "dst").await,
        Reason::ObjectNotFound,
        "a failed copy created the destination",
    )?;
    Ok(())
}

async fn copy_create_only(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("copyco").await?;
    put(&ctx, &b, "src", "new").await?;
    put(&ctx, &b, "dst", "old").await?;
    expect_reason(
        ctx.client.copy(&b, "src", &b, "dst", WriteIf::Absent).await,
        Reason::ConditionFailed,
        "create-only copy",
    )?;
    check!(read(&ctx, &b, "dst").await? == b"old", "a failed copy replaced the destination");
    Ok(())
}

async fn presign_get(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("psget").await?;
    put(&ctx, &b, "dir/file name.txt", "presigned content").await?;
    let url =
        ok(ctx.client.presign(&b, "dir/file name.txt", false, Duration::from_secs(300)).await, "presign")?
            .url;
    let response = reqwest::get(&url).await.map_err(|e| format!("GET {url}: {e}"))?;
    check!(response.status() == 200, "presigned GET answered {}", response.status());
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    check!(body.as_ref() == b"presigned content", "presigned GET returned {body:?}");
    Ok(())
}

async fn presign_put(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("psput").await?;
    let presigned =
        ok(ctx.client.presign(&b, "upload.bin", true, Duration::from_secs(300)).await, "presign")?;
    let mut request = reqwest::Client::new().put(&presigned.url).body(vec![1u8, 2, 3]);
    for (name, value) in &presigned.headers {
        request = request.header(name, value);
    }
    let url = &presigned.url;
    let response = request.send().await.map_err(|e| format!("PUT {url}: {e}"))?;
    check!(response.status().is_success(), "presigned PUT answered {}", response.status());
    check!(read(&ctx, &b, "upload.bin").await? == [1, 2, 3], "presigned PUT stored wrong bytes");
    Ok(())
}

async fn presign_tampered(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("pstamper").await?;
    put(&ctx, &b, "secret", "s").await?;
    put(&ctx, &b, "other", "o").await?;
    let url = ok(ctx.client.presign(&b, "secret", false, Duration::from_secs(300)).await, "presign")?.url;
    // Backends name the parameters differently (signature= / X-Amz-Signature= / sig=, expires= /
    // X-Amz-Expires= / se=): find the value after whichever is present.
    let value_of = |names: &[&str]| {
        let lower = url.to_ascii_lowercase();
        names.iter().find_map(|name| {
            ['?', '&']
                .iter()
                .find_map(|sep| lower.find(&format!("{sep}{name}=")).map(|at| at + name.len() + 2))
        })
    };
    let signature_at =
        value_of(&["signature", "x-amz-signature", "sig"]).ok_or("URL has no signature parameter")?;
    let expires_at = value_of(&["expires", "x-amz-expires", "se"]).ok_or("URL has no expiry parameter")?;
    let flipped = {
        let mut u = url.clone().into_bytes();
        u[signature_at] = if u[signature_at] == b'0' { b'1' } else { b'0' };
        String::from_utf8(u).map_err(|e| e.to_string())?
    };
    let variants = [
        ("other key", url.replacen("/secret?", "/other?", 1)),
        ("flipped signature", flipped),
        ("later expiry", format!("{}9{}", &url[..expires_at], &url[expires_at..])),
    ];
    let http = reqwest::Client::new();
    for (what, tampered) in variants {
        check!(tampered != url, "{what}: could not alter the URL {url}");
        let response = http.get(&tampered).send().await.map_err(|e| e.to_string())?;
        check!(
            response.status() == 403 || response.status() == 401,
            "{what}: tampered URL answered {}",
            response.status()
        );
    }
    let put_with_get_url = http.put(&url).body("x").send().await.map_err(|e| e.to_string())?;
    check!(!put_with_get_url.status().is_success(), "a GET URL allowed a PUT");
    check!(read(&ctx, &b, "secret").await? == b"s", "a refused request changed the object");
    Ok(())
}

async fn presign_expired(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("psexp").await?;
    put(&ctx, &b, "k", "v").await?;
    let url = ok(ctx.client.presign(&b, "k", false, Duration::from_secs(1)).await, "presign")?.url;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let response = reqwest::get(&url).await.map_err(|e| e.to_string())?;
    check!(
        response.status() == 403 || response.status() == 401,
        "expired URL answered {}",
        response.status()
    );
    Ok(())
}

async fn delete_batch(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("dbatch").await?;
    for k in ["a", "b"] {
        put(&ctx, &b, k, "v").await?;
    }
    let results = ok(ctx.client.delete_batch(&b, &["a", "bad\0key", "b", "never"]).await, "delete_batch")?;
    let reasons: Vec<(&str, Option<Reason>)> = results.iter().map(|(k, r)| (k.as_str(), *r)).collect();
    check!(
        reasons == [("a", None), ("bad\0key", Some(Reason::InvalidArgument)), ("b", None), ("never", None)],
        "per-key results {reasons:?}"
    );
    check!(keys(&ctx, &b).await?.is_empty(), "objects survived the batch delete");
    Ok(())
}

async fn special_keys(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("special").await?;
    let long = "x".repeat(1024);
    let list = [
        "../../../etc/passwd",
        "/absolute/path",
        "a/../b",
        "%2F..%2F",
        "back\\slash\\..\\",
        "ünïcødé/☃/😀",
        "with space",
        "index.db",
        "blobs/00/anything",
        "tmp/upload",
        ".",
        "..",
        "trailing/",
        "a//b",
        "?query#frag",
        &long,
    ];
    for (i, k) in list.iter().enumerate() {
        put(&ctx, &b, k, format!("value {i}")).await?;
    }
    for (i, k) in list.iter().enumerate() {
        check!(read(&ctx, &b, k).await? == format!("value {i}").as_bytes(), "key {k:?} read back wrong");
    }
    let mut want: Vec<String> = list.iter().map(|k| (*k).to_owned()).collect();
    want.sort();
    check!(keys(&ctx, &b).await? == want, "listing differs from the keys written");
    Ok(())
}

async fn invalid_keys(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("badkeys").await?;
    let long = "x".repeat(1025);
    for k in ["", "nul\0byte", "tab\there", "new\nline", "\u{7f}del", &long] {
        expect_reason(
            ctx.client.put_bytes(&b, k, "v", PutOptions::default()).await,
            Reason::InvalidArgument,
            &format!("key {k:?}"),
        )?;
    }
    check!(keys(&ctx, &b).await?.is_empty(), "a rejected key was written");
    Ok(())
}

async fn invalid_metadata(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("badmeta").await?;
    let too_many: HashMap<String, String> = (0..100).map(|i| (format!("m{i}"), "v".to_owned())).collect();
    let cases: Vec<(&str, HashMap<String, String>)> = vec![
        ("hyphen name", [("bad-name".to_owned(), "v".to_owned())].into()),
        ("digit first", [("1st".to_owned(), "v".to_owned())].into()),
        ("non-ASCII value", [("ok".to_owned(), "ünï".to_owned())].into()),
        ("control in value", [("ok".to_owned(), "a\nb".to_owned())].into()),
        (
            "duplicate ignoring case",
            [("Owner".to_owned(), "a".to_owned()), ("owner".to_owned(), "b".to_owned())].into(),
        ),
        ("too many", too_many),
    ];
    for (what, metadata) in cases {
        expect_reason(
            ctx.client.put_bytes(&b, "k", "v", PutOptions { metadata, ..Default::default() }).await,
            Reason::InvalidArgument,
            what,
        )?;
    }
    check!(keys(&ctx, &b).await?.is_empty(), "an object with rejected metadata was written");
    Ok(())
}

async fn length_mismatch(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("lenmis").await?;
    put(&ctx, &b, "k", "previous").await?;
    for announced in [3u64, 100] {
        expect_reason(
            ctx.client
                .put_bytes(
                    &b,
                    "k",
                    "ten bytes!",
                    PutOptions { content_length: Some(announced), ..Default::default() },
                )
                .await,
            Reason::InvalidArgument,
            &format!("announced {announced}, sent 10"),
        )?;
    }
    check!(read(&ctx, &b, "k").await? == b"previous", "a refused upload replaced the object");
    Ok(())
}

async fn upload_stream_misuse(ctx: Ctx) -> CaseOutcome {
    use exo_proto::object::v1::{self as pb, object_service_client::ObjectServiceClient, put_request::Part};
    let b = ctx.bucket("misuse").await?;
    put(&ctx, &b, "k", "previous").await?;
    let channel = tonic::transport::Endpoint::from_shared(ctx.http_base.clone())
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("gRPC connect: {e}"))?;
    let mut grpc = ObjectServiceClient::new(channel).max_encoding_message_size(usize::MAX);
    let header = pb::PutRequest {
        part: Some(Part::Header(pb::PutHeader { bucket: b.clone(), key: "k".into(), ..Default::default() })),
        finish: false,
    };
    let chunk = |bytes: Vec<u8>| pb::PutRequest { part: Some(Part::Chunk(bytes)), finish: false };
    // A chunk far over any proxy's message limit (the default is 4 MiB).
    let cases = [
        (
            "no finish message",
            vec![header.clone(), chunk(b"partial".to_vec())],
            exo_sdk::Reason::MalformedRequest,
        ),
        ("a 20 MiB chunk", vec![header, chunk(vec![7u8; 20 << 20])], exo_sdk::Reason::RequestTooLarge),
    ];
    for (what, messages, reason) in cases {
        let status = match grpc.put(futures::stream::iter(messages)).await {
            Ok(_) => return Err(format!("an upload with {what} was stored")),
            Err(status) => status,
        };
        let err = exo_sdk::Error::from(status);
        check!(err.reason == reason, "an upload with {what}: {:?}, not {reason:?} ({err})", err.reason);
        check!(!err.retryable, "an upload with {what} is marked retryable: {err}");
    }
    check!(read(&ctx, &b, "k").await? == b"previous", "a refused upload changed the object");
    Ok(())
}

async fn upload_cancelled(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("cancel").await?;
    put(&ctx, &b, "k", "previous").await?;
    let chunks = [
        Ok(Bytes::from(vec![1u8; 300_000])),
        Ok(Bytes::from(vec![2u8; 300_000])),
        Err(std::io::Error::other("disk unplugged")),
    ];
    for key in ["k", "fresh"] {
        let result = ctx
            .client
            .put_stream(
                &b,
                key,
                futures::stream::iter(
                    chunks
                        .iter()
                        .map(|c| match c {
                            Ok(bytes) => Ok(bytes.clone()),
                            Err(e) => Err(std::io::Error::other(e.to_string())),
                        })
                        .collect::<Vec<_>>(),
                ),
                PutOptions::default(),
            )
            .await;
        check!(result.is_err(), "a cancelled upload of {key} reported success");
    }
    // The proxy notices the cancelled stream asynchronously; give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    check!(read(&ctx, &b, "k").await? == b"previous", "a cancelled upload replaced the object");
    expect_reason(
        ctx.client.head(&b, "fresh").await,
        Reason::ObjectNotFound,
        "a cancelled upload created an object",
    )?;
    Ok(())
}

async fn cas_race(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("race").await?;
    put(&ctx, &b, "counter", "0").await?;
    let mut workers = Vec::new();
    for _ in 0..5 {
        let client = ctx.client.clone();
        let b = b.clone();
        workers.push(tokio::spawn(async move {
            let (mut done, mut attempts) = (0, 0);
            while done < 10 {
                attempts += 1;
                if attempts > 2000 {
                    return Err("too many retries".to_owned());
                }
                let (header, body) = client
                    .get_bytes(&b, "counter", GetOptions::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let n: u64 = String::from_utf8_lossy(&body)
                    .parse()
                    .map_err(|_| "counter is not a number".to_owned())?;
                let etag = header.info.unwrap_or_default().etag;
                let options = PutOptions { condition: WriteIf::Matches(etag), ..Default::default() };
                match client.put_bytes(&b, "counter", (n + 1).to_string(), options).await {
                    Ok(_) => done += 1,
                    Err(err) if err.reason == Reason::ConditionFailed => continue,
                    Err(err) => return Err(err.to_string()),
                }
            }
            Ok(())
        }));
    }
    for w in workers {
        w.await.map_err(|e| format!("worker panicked: {e}"))??;
    }
    let value = read(&ctx, &b, "counter").await?;
    check!(value == b"50", "counter ended at {:?}", String::from_utf8_lossy(&value));
    Ok(())
}

async fn http_round_trip(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("httprt").await?;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/buckets/{b}/objects/dir/a%20b.bin", ctx.http_base);
    let data = pattern(10_000);
    let response = http
        .put(&url)
        .header("content-type", "application/x-test")
        .header("x-exo-meta-color", "blue")
        .body(data.clone())
        .send()
        .await
        .map_err(|e| format!("HTTP PUT: {e}"))?;
    check!(response.status() == 200, "HTTP PUT answered {}", response.status());
    let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    check!(etag.starts_with('"') && etag.ends_with('"'), "ETag header not quoted: {etag:?}");
    let info = ok(ctx.client.head(&b, "dir/a b.bin").await, "gRPC head")?;
    check!(format!("\"{}\"", info.etag) == etag, "ETags differ: {etag} vs {}", info.etag);
    check!(
        info.content_type == "application/x-test"
            && info.metadata.get("color").map(String::as_str) == Some("blue"),
        "attributes: {info:?}"
    );
    let ranged = http.get(&url).header("range", "bytes=100-199").send().await.map_err(|e| e.to_string())?;
    check!(ranged.status() == 206, "ranged GET answered {}", ranged.status());
    let content_range =
        ranged.headers().get("content-range").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    check!(content_range == "bytes 100-199/10000", "Content-Range {content_range:?}");
    let body = ranged.bytes().await.map_err(|e| e.to_string())?;
    check!(body.as_ref() == &data[100..200], "ranged body differs");
    let head = http.head(&url).send().await.map_err(|e| e.to_string())?;
    let length = head.headers().get("content-length").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    check!(head.status() == 200 && length == "10000", "HEAD: {} length {length:?}", head.status());
    check!(head.headers().get("x-exo-meta-color").is_some(), "HEAD lacks metadata headers");
    Ok(())
}

async fn http_range_unsatisfiable(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("httprange").await?;
    let http = reqwest::Client::new();
    let url = |key: &str| format!("{}/api/v1/buckets/{b}/objects/{key}", ctx.http_base);
    ok(ctx.client.put_bytes(&b, "k", pattern(1000), PutOptions::default()).await, "put")?;
    ok(ctx.client.put_bytes(&b, "empty", Vec::new(), PutOptions::default()).await, "put empty")?;
    for (key, range, size) in [
        ("k", "bytes=1000-", 1000),
        ("k", "bytes=1000-2000", 1000),
        ("k", "bytes=-0", 1000),
        ("empty", "bytes=0-", 0),
    ] {
        let response =
            http.get(url(key)).header("range", range).send().await.map_err(|e| format!("GET: {e}"))?;
        let status = response.status();
        let content_range =
            response.headers().get("content-range").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        check!(status == 416, "{range} on {size} bytes answered {status}, not 416");
        check!(content_range == format!("bytes */{size}"), "{range}: Content-Range {content_range:?}");
        let problem: serde_json::Value = response.json().await.map_err(|e| format!("problem body: {e}"))?;
        check!(problem["reason"] == "RANGE_NOT_SATISFIABLE", "{range}: problem {problem}");
    }
    let last = http.get(url("k")).header("range", "bytes=999-").send().await.map_err(|e| e.to_string())?;
    check!(last.status() == 206, "the last byte answered {}", last.status());
    check!(
        last.bytes().await.map_err(|e| e.to_string())?.as_ref() == &pattern(1000)[999..],
        "last byte differs"
    );
    Ok(())
}

async fn http_conditionals(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("httpcond").await?;
    let info = put(&ctx, &b, "k", "v").await?;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/buckets/{b}/objects/k", ctx.http_base);
    let response =
        http.put(&url).header("if-none-match", "*").body("new").send().await.map_err(|e| e.to_string())?;
    check!(response.status() == 412, "If-None-Match: * on an existing key answered {}", response.status());
    let problem: serde_json::Value = response.json().await.map_err(|e| format!("problem body: {e}"))?;
    check!(problem["reason"] == "CONDITION_FAILED", "problem {problem}");
    let not_modified = http
        .get(&url)
        .header("if-none-match", format!("\"{}\"", info.etag))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    check!(not_modified.status() == 304, "If-None-Match at the ETag answered {}", not_modified.status());
    check!(not_modified.bytes().await.map_err(|e| e.to_string())?.is_empty(), "a 304 must have no body");
    check!(read(&ctx, &b, "k").await? == b"v", "a refused write changed the object");
    Ok(())
}

async fn http_bad_metadata(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("httpmeta").await?;
    let url = format!("{}/api/v1/buckets/{b}/objects/k", ctx.http_base);
    let value = reqwest::header::HeaderValue::from_bytes(b"caf\xe9").map_err(|e| e.to_string())?;
    let response = reqwest::Client::new()
        .put(&url)
        .header("x-exo-meta-name", value)
        .body("v")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    check!(response.status() == 400, "non-ASCII metadata header answered {}", response.status());
    expect_reason(ctx.client.head(&b, "k").await, Reason::ObjectNotFound, "a rejected upload wrote")?;
    Ok(())
}

async fn http_openapi_routes(ctx: Ctx) -> CaseOutcome {
    let b = ctx.bucket("openapi").await?;
    crate::openapi_check::documented_routes_are_served(
        &ctx.http_base,
        &["objects", "meta"],
        &[("bucket", &b), ("key", "k")],
    )
    .await
}
