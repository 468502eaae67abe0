//! The long-poll cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// A waiting receive returns soon after a message arrives
    case "long_poll.early_return", needs Some(Cap::LongPoll);
    async fn long_poll_early(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("lp").await?;
        let sender = ctx.client.clone();
        let target = q.clone();
        let send = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            sender.send(&target, "wake").await
        });
        let started = Instant::now();
        let got =
            ok(ctx.client.receive(&q, Receive::up_to(1).wait(Duration::from_secs(10))).await, "waiting receive")?;
        let elapsed = started.elapsed();
        ok(
            send.await.map_err(|e| Error::client(Reason::Internal, e.to_string(), false)).and_then(|r| r),
            "send",
        )?;
        check!(got.len() == 1 && got[0].body == b"wake", "waiting receive returned {got:?}");
        check!(
            elapsed < Duration::from_secs(5),
            "receive took {elapsed:?} although a message arrived after 0.3 s"
        );
        Ok(())
    }

    /// A waiting receive on an empty queue returns empty after the wait
    case "long_poll.empty_after_wait", needs Some(Cap::LongPoll);
    async fn long_poll_empty(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("lpempty").await?;
        let started = Instant::now();
        let got =
            ok(ctx.client.receive(&q, Receive::up_to(1).wait(Duration::from_secs(2))).await, "waiting receive")?;
        let elapsed = started.elapsed();
        check!(got.is_empty(), "empty queue returned messages");
        check!(elapsed >= Duration::from_millis(1800), "returned after {elapsed:?}, before the 2 s wait");
        check!(elapsed < Duration::from_secs(6), "returned after {elapsed:?}, far beyond the 2 s wait");
        Ok(())
    }
}
