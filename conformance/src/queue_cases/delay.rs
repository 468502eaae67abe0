//! The delay cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// Delayed messages stay invisible until their delay has passed
    case "delay.per_message_and_queue", needs Some(Cap::Delay);
    async fn delay(ctx: Ctx) -> CaseOutcome {
        // Long enough that a slow backend (an emulator on a busy machine) still answers every check
        // below while the message is delayed; each check says how late it came if it did not.
        const DELAY: Duration = Duration::from_secs(6);
        let q = ctx.queue("delay").await?;
        let dq = ctx.queue_with("qdelay", QueueOptions { delay_seconds: 6, ..Default::default() }).await?;
        let sent = std::time::Instant::now();
        ok(ctx.client.send_message(&q, Outgoing::new("late").delay(DELAY)).await, "delayed send")?;
        ok(ctx.client.send(&dq, "queue-delayed").await, "send on delayed queue")?;
        ok(ctx.client.send_message(&dq, Outgoing::new("now").delay(Duration::ZERO)).await, "undelayed send")?;
        let info = ok(ctx.client.queue_info(&q).await, "info")?;
        // Counted as not visible. Azure Storage Queue cannot tell a delayed message from one in
        // flight (both are merely invisible), so either count may hold it.
        check!(
            info.visible_messages == 0 && info.delayed_messages + info.in_flight_messages == 1,
            "delayed message counted as visible or not at all ({:?} after sending): {info:?}",
            sent.elapsed()
        );
        receive_none(&ctx, &q, "the message is delayed 6 s").await?;
        let immediate = drain(&ctx, &dq).await?;
        check!(
            immediate.len() == 1 && immediate[0].body == b"now",
            "only the undelayed message may be visible ({:?} after sending): {immediate:?}",
            sent.elapsed()
        );
        check!(sent.elapsed() < DELAY, "the checks above took {:?}, longer than the delay", sent.elapsed());
        tokio::time::sleep(DELAY.saturating_sub(sent.elapsed()) + Duration::from_millis(300)).await;
        // Due now; a backend counting in whole seconds may show them up to a second later.
        let within = Duration::from_secs(3);
        check!(receive_within(&ctx, &q, within).await?.body == b"late", "delayed message wrong");
        check!(receive_within(&ctx, &dq, within).await?.body == b"queue-delayed", "queue-delayed message wrong");
        check!(
            sent.elapsed() >= Duration::from_millis(5_900),
            "a delayed message arrived after {:?}",
            sent.elapsed()
        );
        Ok(())
    }

    /// A delay above max_delay_seconds fails with INVALID_ARGUMENT
    case "delay.out_of_range", needs Some(Cap::Delay);
    async fn delay_out_of_range(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("delayrange").await?;
        let over = Duration::from_secs(u64::from(ctx.limits().max_delay_seconds) + 1);
        expect_reason(
            ctx.client.send_message(&q, Outgoing::new("x").delay(over)).await,
            Reason::InvalidArgument,
            "message delay",
        )?;
        let options = QueueOptions { delay_seconds: ctx.limits().max_delay_seconds + 1, ..Default::default() };
        expect_reason(
            ctx.client.create_queue(&ctx.name("delayq"), options).await,
            Reason::InvalidArgument,
            "queue delay",
        )?;
        check!(visible_count(&ctx, &q).await? == 0, "a rejected message was enqueued");
        Ok(())
    }
}
