//! The delete cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// Delete removes the object
    case "object.delete", needs None;
    async fn delete(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("del").await?;
        put(&ctx, &b, "k", "v").await?;
        ok(ctx.client.delete(&b, "k", None).await, "delete")?;
        expect_reason(ctx.client.head(&b, "k").await, Reason::ObjectNotFound, "head after delete")?;
        check!(keys(&ctx, &b).await?.is_empty(), "deleted object still listed");
        Ok(())
    }

    /// Deleting a missing key succeeds
    case "object.delete_idempotent", needs Some(Cap::IdempotentDelete);
    async fn delete_idempotent(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("delidem").await?;
        ok(ctx.client.delete(&b, "never-existed", None).await, "delete of a missing key")?;
        put(&ctx, &b, "k", "v").await?;
        ok(ctx.client.delete(&b, "k", None).await, "delete")?;
        ok(ctx.client.delete(&b, "k", None).await, "second delete")
    }

    /// A delete with a stale ETag fails and keeps the object; the current ETag deletes
    case "object.delete_if_match", needs Some(Cap::ConditionalReplace);
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

    /// DeleteBatch reports each key; a bad key fails alone
    case "delete_batch.per_key", needs None;
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
}
