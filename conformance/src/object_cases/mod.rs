//! The object cases. Every case uses its own buckets; bodies are compared byte for byte.

use std::{collections::HashMap, time::Duration};

use bytes::Bytes;
use exo_sdk::{ByteRange, GetOptions, ObjectCapability as Cap, PutOptions, Reason, WriteIf};

use crate::{CaseOutcome, ObjectCase as Case, ObjectCtx as Ctx, check, expect_reason, ok};

mod bucket;
mod conditions;
mod copy;
mod delete;
mod get;
mod http;
mod keys;
mod list;
mod metadata;
mod objects;
mod presign;
mod range;
mod upload;

/// Every case, area by area, in report order.
pub fn object_cases() -> Vec<Case> {
    [
        objects::cases(),
        bucket::cases(),
        delete::cases(),
        conditions::cases(),
        range::cases(),
        get::cases(),
        list::cases(),
        copy::cases(),
        presign::cases(),
        keys::cases(),
        metadata::cases(),
        upload::cases(),
        http::cases(),
    ]
    .concat()
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
