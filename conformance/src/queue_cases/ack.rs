//! The ack cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// An acked message is never delivered again
    case "ack.removes", needs None;
    async fn ack_removes(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("ack").await?;
        ok(ctx.client.send(&q, "x").await, "send")?;
        let m = receive_one(&ctx, &q, Duration::from_secs(1)).await?;
        ok(ctx.client.ack(&q, &m.receipt).await, "ack")?;
        sleep(1.3).await;
        receive_none(&ctx, &q, "the message was acked").await?;
        let info = ok(ctx.client.queue_info(&q).await, "info")?;
        check!(info.visible_messages + info.in_flight_messages == 0, "acked message still counted: {info:?}");
        Ok(())
    }

    /// Acking twice with the same receipt succeeds
    case "ack.double_harmless", needs None;
    async fn double_ack(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("dack").await?;
        ok(ctx.client.send(&q, "x").await, "send")?;
        let m = receive_one(&ctx, &q, Duration::from_secs(30)).await?;
        ok(ctx.client.ack(&q, &m.receipt).await, "first ack")?;
        ok(ctx.client.ack(&q, &m.receipt).await, "second ack")
    }

    /// A receipt superseded by a later receive fails with RECEIPT_STALE; the new one works
    case "ack.stale_receipt", needs Some(Cap::StaleReceipts);
    async fn stale_receipt(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("stale").await?;
        ok(ctx.client.send(&q, "x").await, "send")?;
        let first = receive_one(&ctx, &q, Duration::from_secs(1)).await?;
        sleep(1.3).await;
        let second = receive_one(&ctx, &q, Duration::from_secs(30)).await?;
        check!(first.receipt != second.receipt, "a new receive must issue a new receipt");
        let err = expect_reason(
            ctx.client.ack(&q, &first.receipt).await,
            Reason::ReceiptStale,
            "ack with stale receipt",
        )?;
        check!(!err.message.is_empty(), "stale receipt error has no explanation");
        expect_reason(
            ctx.client.change_visibility(&q, &first.receipt, Duration::ZERO).await,
            Reason::ReceiptStale,
            "change_visibility with stale receipt",
        )
        .or_else(|e| {
            if e.contains("UNSUPPORTED") { Ok(Error::client(Reason::Unsupported, "", false)) } else { Err(e) }
        })?;
        receive_none(&ctx, &q, "the stale receipt must not have released the message").await?;
        ok(ctx.client.ack(&q, &second.receipt).await, "ack with current receipt")
    }

    /// Garbage or another queue's receipt fails with INVALID_RECEIPT
    case "ack.invalid_receipt", needs None;
    async fn invalid_receipt(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("badrcpt").await?;
        let other = ctx.queue("badrcpt-other").await?;
        for junk in ["not a receipt", "AAAA", "%%%"] {
            expect_reason(ctx.client.ack(&q, junk).await, Reason::InvalidReceipt, junk)?;
        }
        expect_reason(ctx.client.ack(&q, "").await, Reason::InvalidReceipt, "empty receipt")?;
        ok(ctx.client.send(&other, "x").await, "send")?;
        let m = receive_one(&ctx, &other, Duration::from_secs(30)).await?;
        expect_reason(ctx.client.ack(&q, &m.receipt).await, Reason::InvalidReceipt, "receipt of another queue")?;
        ok(ctx.client.ack(&other, &m.receipt).await, "ack on the right queue")
    }
}
