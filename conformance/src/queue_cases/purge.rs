//! The purge cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// Purge deletes every message and keeps the queue
    case "purge.empties", needs Some(Cap::Purge);
    async fn purge(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("purge").await?;
        for i in 0..5 {
            ok(ctx.client.send(&q, format!("{i}")).await, "send")?;
        }
        receive_one(&ctx, &q, Duration::from_secs(1)).await?;
        ok(ctx.client.purge(&q).await, "purge")?;
        sleep(1.3).await;
        receive_none(&ctx, &q, "the queue was purged (in-flight messages included)").await?;
        ok(ctx.client.queue_info(&q).await, "queue survives purge")?;
        ok(ctx.client.send(&q, "after").await, "send after purge")?;
        check!(
            receive_one(&ctx, &q, Duration::from_secs(30)).await?.body == b"after",
            "queue unusable after purge"
        );
        Ok(())
    }
}
