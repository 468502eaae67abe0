//! The retention cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// Messages older than the queue's retention are never delivered
    case "retention.expiry", needs Some(Cap::Retention);
    async fn retention(ctx: Ctx) -> CaseOutcome {
        let seconds = ctx.limits().min_retention_seconds.max(2);
        let q = ctx.queue_with("ret", QueueOptions { retention_seconds: seconds, ..Default::default() }).await?;
        ok(ctx.client.send(&q, "short-lived").await, "send")?;
        let m = receive_one(&ctx, &q, Duration::ZERO).await?;
        check!(m.body == b"short-lived", "message changed");
        sleep(f64::from(seconds) + 0.5).await;
        receive_none(&ctx, &q, "the message outlived its retention").await?;
        let options =
            QueueOptions { retention_seconds: ctx.limits().max_retention_seconds + 1, ..Default::default() };
        expect_reason(
            ctx.client.create_queue(&ctx.name("retbad"), options).await,
            Reason::InvalidArgument,
            "retention above max",
        )?;
        Ok(())
    }
}
