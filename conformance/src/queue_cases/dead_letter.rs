//! The dead-letter cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// After max_receives deliveries a message moves to the dead-letter queue exactly once
    case "dead_letter.after_max_receives", needs Some(Cap::DeadLetter);
    async fn dead_letter(ctx: Ctx) -> CaseOutcome {
        let dlq = ctx.queue("dlq").await?;
        let q = ctx
            .queue_with(
                "src",
                QueueOptions { max_receives: 2, dead_letter_queue: dlq.clone(), ..Default::default() },
            )
            .await?;
        let id = ok(ctx.client.send_message(&q, Outgoing::new("poison").attribute("k", "v")).await, "send")?;
        for n in 1..=2 {
            let m = receive_one(&ctx, &q, Duration::ZERO).await?;
            check!(m.dequeue_count == n, "delivery {n} had dequeue_count {}", m.dequeue_count);
        }
        // The third receive finds it over the limit and dead-letters it instead of delivering.
        receive_none(&ctx, &q, "the message exceeded max_receives").await?;
        // Some brokers move it asynchronously (a RabbitMQ quorum queue dead-letters after the
        // give-back is processed), so its arrival is awaited, briefly; exactly once still holds.
        let mut dead = vec![receive_within(&ctx, &dlq, Duration::from_secs(5)).await?];
        dead.extend(drain(&ctx, &dlq).await?);
        check!(dead.len() == 1, "expected exactly one dead-lettered message, got {}", dead.len());
        check!(
            dead[0].body == b"poison" && dead[0].attributes.get("k").map(String::as_str) == Some("v"),
            "dead-lettered message changed"
        );
        check!(dead[0].message_id == id, "dead-lettered message id changed");
        receive_none(&ctx, &q, "the message was dead-lettered").await?;
        sleep(0.2).await;
        check!(drain(&ctx, &dlq).await?.is_empty(), "message dead-lettered twice");
        Ok(())
    }

    /// Naming a missing dead-letter queue fails with QUEUE_NOT_FOUND and creates nothing
    case "dead_letter.target_must_exist", needs Some(Cap::DeadLetter);
    async fn dead_letter_missing(ctx: Ctx) -> CaseOutcome {
        let name = ctx.name("orphan");
        let options =
            QueueOptions { max_receives: 3, dead_letter_queue: ctx.name("nowhere"), ..Default::default() };
        expect_reason(
            ctx.client.create_queue(&name, options).await,
            Reason::QueueNotFound,
            "missing dead-letter queue",
        )?;
        expect_reason(ctx.client.queue_info(&name).await, Reason::QueueNotFound, "queue must not exist")?;
        let half = QueueOptions { max_receives: 3, ..Default::default() };
        expect_reason(
            ctx.client.create_queue(&name, half).await,
            Reason::InvalidArgument,
            "max_receives without queue",
        )?;
        Ok(())
    }
}
