//! The receive cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// Receive never returns more than asked
    case "receive.at_most_max", needs None;
    async fn receive_at_most_max(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("atmost").await?;
        let results = ok(
            ctx.client.send_batch(&q, (0..10).map(|i| Outgoing::new(i.to_string())).collect()).await,
            "batch",
        )?;
        check!(results.iter().all(Result::is_ok), "batch send failed: {results:?}");
        for ask in [1u32, 3] {
            let got = ok(
                ctx.client.receive(&q, Receive::up_to(ask).visibility(Duration::from_secs(30))).await,
                "receive",
            )?;
            check!(!got.is_empty() && got.len() <= ask as usize, "asked for {ask}, got {}", got.len());
        }
        Ok(())
    }

    /// Out-of-range max_messages, wait or visibility fail with INVALID_ARGUMENT
    case "receive.argument_ranges", needs None;
    async fn receive_ranges(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("ranges").await?;
        let l = ctx.limits();
        expect_reason(
            ctx.client.receive(&q, Receive::up_to(l.max_receive_messages + 1)).await,
            Reason::InvalidArgument,
            "max_messages",
        )?;
        let too_long_wait = Receive::up_to(1).wait(Duration::from_secs(u64::from(l.max_wait_seconds) + 1));
        let result = ctx.client.receive(&q, too_long_wait).await;
        // Without long polling the wait itself is unsupported; either way it is rejected.
        match result {
            Err(e) if matches!(e.reason, Reason::InvalidArgument | Reason::Unsupported) => {}
            other => return Err(format!("wait above max: expected INVALID_ARGUMENT, got {other:?}")),
        }
        let vis =
            Receive::up_to(1).visibility(Duration::from_secs(u64::from(l.max_visibility_timeout_seconds) + 1));
        expect_reason(ctx.client.receive(&q, vis).await, Reason::InvalidArgument, "visibility")?;
        Ok(())
    }

    /// The dequeue count starts at 1 and grows with each delivery
    case "receive.dequeue_count", needs None;
    async fn dequeue_count(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("dqc").await?;
        ok(ctx.client.send(&q, "x").await, "send")?;
        for expected in 1..=3 {
            let m = receive_one(&ctx, &q, Duration::ZERO).await?;
            check!(m.dequeue_count == expected, "delivery {expected} reported dequeue_count {}", m.dequeue_count);
        }
        Ok(())
    }
}
