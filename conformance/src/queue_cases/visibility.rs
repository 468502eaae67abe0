//! The visibility cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// A received message is hidden for its visibility timeout, then reappears
    case "visibility.hides_then_reappears", needs None;
    async fn hides_then_reappears(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("vis").await?;
        let id = ok(ctx.client.send(&q, "v").await, "send")?;
        let first = receive_one(&ctx, &q, Duration::from_secs(1)).await?;
        check!(first.message_id == id, "received {} instead of {id}", first.message_id);
        receive_none(&ctx, &q, "the message is in flight").await?;
        sleep(1.3).await;
        let again = receive_one(&ctx, &q, Duration::from_secs(30)).await?;
        check!(again.message_id == id, "a different message reappeared");
        check!(again.body == b"v", "body changed on redelivery");
        Ok(())
    }

    /// ChangeVisibility extends the hidden time and keeps the receipt valid
    case "visibility.extend", needs Some(Cap::ChangeVisibility);
    async fn extend_visibility(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("extend").await?;
        ok(ctx.client.send(&q, "x").await, "send")?;
        let m = receive_one(&ctx, &q, Duration::from_secs(1)).await?;
        ok(ctx.client.change_visibility(&q, &m.receipt, Duration::from_secs(4)).await, "extend")?;
        sleep(1.5).await;
        receive_none(&ctx, &q, "visibility was extended to 4 s").await?;
        ok(ctx.client.ack(&q, &m.receipt).await, "ack with the receipt after extending")?;
        sleep(3.0).await;
        receive_none(&ctx, &q, "the message was acked").await
    }

    /// ChangeVisibility to 0 makes the message visible at once
    case "visibility.release_zero", needs Some(Cap::ChangeVisibility);
    async fn release_zero(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("release").await?;
        let id = ok(ctx.client.send(&q, "x").await, "send")?;
        let m = receive_one(&ctx, &q, Duration::from_secs(300)).await?;
        ok(ctx.client.change_visibility(&q, &m.receipt, Duration::ZERO).await, "release")?;
        let again = receive_one(&ctx, &q, Duration::from_secs(30)).await?;
        check!(again.message_id == id, "released message not redelivered");
        check!(again.dequeue_count == 2, "dequeue count after release: {}", again.dequeue_count);
        Ok(())
    }
}
