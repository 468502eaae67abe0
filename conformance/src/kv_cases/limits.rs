//! The limits cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// Empty or oversize keys fail with INVALID_ARGUMENT; a maximum-size key works
    case "kv.key_limits", needs None;
    async fn key_limits(ctx: Ctx) -> CaseOutcome {
        let t = ctx.table("keylim").await?;
        let max = ctx.limits().max_key_bytes as usize;
        expect_reason(ctx.client.put(&t, "", "v", Put::default()).await, Reason::InvalidArgument, "empty key")?;
        expect_reason(ctx.client.get(&t, "").await, Reason::InvalidArgument, "get empty key")?;
        let long = "k".repeat(max + 1);
        expect_reason(
            ctx.client.put(&t, &long, "v", Put::default()).await,
            Reason::InvalidArgument,
            "oversize key",
        )?;
        // Multi-byte characters count in bytes: max/2 two-byte characters fit exactly.
        let widest = "é".repeat(max / 2);
        ok(ctx.client.put(&t, &widest, "v", Put::default()).await, "maximum-size key")?;
        check!(value_of(&ctx, &t, &widest).await?.value == b"v", "maximum-size key lost");
        check!(ok(ctx.client.list(&t, "").await, "list")?.len() == 1, "a rejected key was written");
        Ok(())
    }

    /// A value over the limit fails with VALUE_TOO_LARGE and the previous value stays
    case "kv.value_too_large", needs None;
    async fn value_too_large(ctx: Ctx) -> CaseOutcome {
        let t = ctx.table("valbig").await?;
        let max = ctx.limits().max_value_bytes as usize;
        let v = ok(ctx.client.put(&t, "k", "small", Put::default()).await, "put")?;
        let err = expect_reason(
            ctx.client.put(&t, "k", vec![1u8; max + 1], Put::default()).await,
            Reason::ValueTooLarge,
            "oversize value",
        )?;
        check!(
            err.code == exo_sdk::Code::ResourceExhausted,
            "VALUE_TOO_LARGE must be RESOURCE_EXHAUSTED, got {:?}",
            err.code
        );
        let e = value_of(&ctx, &t, "k").await?;
        check!(e.value == b"small" && e.version == v, "a rejected put changed the entry");
        ok(ctx.client.put(&t, "k", vec![2u8; max], Put::default()).await, "put of exactly the limit")?;
        check!(value_of(&ctx, &t, "k").await?.value.len() == max, "limit-size value changed");
        Ok(())
    }
}
