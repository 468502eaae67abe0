//! The batch cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// BatchGet returns found entries in request order and names the missing keys
    case "kv.batch_get", needs None;
    async fn batch_get(ctx: Ctx) -> CaseOutcome {
        let t = ctx.table("batch").await?;
        for k in ["a", "b", "c"] {
            ok(ctx.client.put(&t, k, format!("v{k}"), Put::default()).await, "put")?;
        }
        let (found, missing) = ok(ctx.client.batch_get(&t, &["c", "x", "a", "y"]).await, "batch_get")?;
        let keys: Vec<&str> = found.iter().map(|e| e.key.as_str()).collect();
        check!(keys == ["c", "a"], "found {keys:?}, expected [c, a] in request order");
        check!(found[0].value == b"vc" && found[1].value == b"va", "batch values wrong");
        check!(missing == ["x", "y"], "missing {missing:?}, expected [x, y]");
        Ok(())
    }

    /// An empty, oversize or duplicated BatchGet fails with INVALID_ARGUMENT
    case "kv.batch_get_limits", needs None;
    async fn batch_get_limits(ctx: Ctx) -> CaseOutcome {
        let t = ctx.table("batchlim").await?;
        expect_reason(ctx.client.batch_get(&t, &[]).await, Reason::InvalidArgument, "empty batch")?;
        let many: Vec<String> = (0..=ctx.limits().max_batch_keys).map(|i| format!("k{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        expect_reason(ctx.client.batch_get(&t, &refs).await, Reason::InvalidArgument, "oversize batch")?;
        expect_reason(
            ctx.client.batch_get(&t, &["a", "b", "a"]).await,
            Reason::InvalidArgument,
            "duplicate keys",
        )?;
        Ok(())
    }
}
