//! The ttl cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// An expired value is never returned, listed or batch-read, and a create-only write succeeds
    /// over it
    case "kv.ttl_expiry", needs Some(Cap::Ttl);
    async fn ttl_expiry(ctx: Ctx) -> CaseOutcome {
        // Long enough that a slow backend (an emulator on a busy machine) still answers the
        // first read before the entry expires; the check says how late it came if not.
        const TTL: Duration = Duration::from_secs(3);
        let t = ctx.table("ttl").await?;
        ok(
            ctx.client.put(&t, "long", "stays", Put::default().ttl(Duration::from_secs(3600))).await,
            "put with long ttl",
        )?;
        let put = std::time::Instant::now();
        ok(ctx.client.put(&t, "short", "gone soon", Put::default().ttl(TTL)).await, "put with ttl")?;
        let e = value_of(&ctx, &t, "short")
            .await
            .map_err(|why| format!("{why} ({:?} after the put, TTL {TTL:?})", put.elapsed()))?;
        check!(e.expires_at_ms > 0, "entry with ttl reports no expiry");
        tokio::time::sleep((TTL + Duration::from_millis(600)).saturating_sub(put.elapsed())).await;
        expect_reason(ctx.client.get(&t, "short").await, Reason::KeyNotFound, "get after expiry")?;
        let listed: Vec<String> = ok(ctx.client.list(&t, "").await, "list")?.into_iter().map(|e| e.key).collect();
        check!(listed == ["long"], "listing after expiry: {listed:?}");
        let (found, missing) = ok(ctx.client.batch_get(&t, &["short", "long"]).await, "batch_get")?;
        check!(
            found.len() == 1 && missing == ["short"],
            "batch_get after expiry: found {found:?}, missing {missing:?}"
        );
        ok(ctx.client.put(&t, "short", "again", Put::create()).await, "create-only over an expired key")?;
        check!(value_of(&ctx, &t, "short").await?.value == b"again", "re-created value wrong");
        Ok(())
    }

    /// A TTL above max_ttl_seconds fails with INVALID_ARGUMENT and writes nothing
    case "kv.ttl_range", needs Some(Cap::Ttl);
    async fn ttl_range(ctx: Ctx) -> CaseOutcome {
        let t = ctx.table("ttlrange").await?;
        let over = Duration::from_secs(u64::from(ctx.limits().max_ttl_seconds) + 1);
        expect_reason(
            ctx.client.put(&t, "k", "v", Put::default().ttl(over)).await,
            Reason::InvalidArgument,
            "ttl above max",
        )?;
        expect_reason(ctx.client.get(&t, "k").await, Reason::KeyNotFound, "a rejected put wrote")?;
        Ok(())
    }
}
