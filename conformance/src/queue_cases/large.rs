//! The large-message cases (LARGE_MESSAGES: bodies above the backend's own limit go through an
//! object store). Each case's doc comment is its description in reports.

use super::*;

/// Above every backend's inline limit (SQS 760 KiB, Azure 48 000 bytes, local 256 KiB).
const LARGE: usize = 1024 * 1024 + 7;

/// A body whose bytes differ along its length, so a truncated or shifted copy shows.
fn large_body(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

crate::cases! {
    /// A body above the backend's own limit comes back byte-exact with its attributes, and no
    /// reference attribute shows
    case "large.round_trip", needs Some(Cap::LargeMessages);
    async fn round_trip(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("big").await?;
        let body = large_body(LARGE, 1);
        let id = ok(
            ctx.client.send_message(&q, Outgoing::new(body.clone()).attribute("kind", "blob")).await,
            "send of a large message",
        )?;
        let m = receive_one(&ctx, &q, Duration::from_secs(30)).await?;
        check!(m.message_id == id, "message id changed: sent {id}, got {}", m.message_id);
        check!(m.body.len() == body.len(), "body came back with {} bytes, sent {}", m.body.len(), body.len());
        check!(m.body == body, "body changed in transit");
        let want = HashMap::from([("kind".to_owned(), "blob".to_owned())]);
        check!(m.attributes == want, "attributes changed: got {:?}", m.attributes);
        ok(ctx.client.ack(&q, &m.receipt).await, "ack")?;
        receive_none(&ctx, &q, "the large message was acknowledged").await
    }

    /// A batch mixing small, large and invalid messages: each gets its own result, the invalid
    /// one INVALID_ATTRIBUTE, the others arrive whole
    case "large.batch", needs Some(Cap::LargeMessages);
    async fn batch(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("bigbatch").await?;
        let (small, large) = (b"small".to_vec(), large_body(LARGE, 2));
        let results = ok(
            ctx.client
                .send_batch(
                    &q,
                    vec![
                        Outgoing::new(small.clone()),
                        Outgoing::new(large_body(LARGE, 9)).attribute("bad name", "v"),
                        Outgoing::new(large.clone()),
                    ],
                )
                .await,
            "send_batch",
        )?;
        check!(results.len() == 3, "expected 3 results, got {}", results.len());
        check!(results[0].is_ok() && results[2].is_ok(), "small or large entry refused: {results:?}");
        match &results[1] {
            Err(e) if e.reason == Reason::InvalidAttribute => {}
            other => return Err(format!("invalid entry: expected INVALID_ATTRIBUTE, got {other:?}")),
        }
        let mut got: Vec<Vec<u8>> = drain(&ctx, &q).await?.into_iter().map(|m| m.body).collect();
        got.sort();
        let mut want = vec![small, large];
        want.sort();
        check!(got.len() == 2 && got == want, "expected the small and the large body, got {} bodies", got.len());
        Ok(())
    }

    /// A large message not acknowledged comes back whole; its receipt works for
    /// ChangeVisibility and Ack like any other
    case "large.redelivery", needs Some(Cap::LargeMessages);
    async fn redelivery(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("bigagain").await?;
        let body = large_body(LARGE, 3);
        ok(ctx.client.send(&q, body.clone()).await, "send")?;
        let first = receive_one(&ctx, &q, Duration::from_secs(30)).await?;
        if ctx.backend.capabilities.contains(&(Cap::ChangeVisibility as i32)) {
            ok(ctx.client.change_visibility(&q, &first.receipt, Duration::ZERO).await, "change_visibility")?;
        } else {
            return Err(format!("{}ChangeVisibility not declared", crate::NOT_RUN));
        }
        let second = receive_within(&ctx, &q, Duration::from_secs(10)).await?;
        check!(second.body == body, "redelivered body changed ({} bytes)", second.body.len());
        check!(second.dequeue_count >= 2, "dequeue_count {} after a redelivery", second.dequeue_count);
        ok(ctx.client.ack(&q, &second.receipt).await, "ack")?;
        receive_none(&ctx, &q, "the large message was acknowledged").await
    }

    /// A large message dead-lettered keeps its whole body in the dead-letter queue
    case "large.dead_letter", needs Some(Cap::LargeMessages);
    async fn dead_letter(ctx: Ctx) -> CaseOutcome {
        if !ctx.backend.capabilities.contains(&(Cap::DeadLetter as i32)) {
            return Err(format!("{}DEAD_LETTER not declared", crate::NOT_RUN));
        }
        let dlq = ctx.queue("bigdlq").await?;
        let q = ctx
            .queue_with(
                "bigsrc",
                QueueOptions { max_receives: 1, dead_letter_queue: dlq.clone(), ..Default::default() },
            )
            .await?;
        let body = large_body(LARGE, 4);
        ok(ctx.client.send(&q, body.clone()).await, "send")?;
        let _ = receive_one(&ctx, &q, Duration::ZERO).await?;
        receive_none(&ctx, &q, "the message exceeded max_receives").await?;
        let dead = drain(&ctx, &dlq).await?;
        check!(dead.len() == 1, "expected one dead-lettered message, got {}", dead.len());
        check!(dead[0].body == body, "the dead-lettered body changed ({} bytes)", dead[0].body.len());
        ok(ctx.client.ack(&dlq, &dead[0].receipt).await, "ack in the dead-letter queue")
    }

    /// The reference's attribute names are reserved: a send using them fails with
    /// INVALID_ATTRIBUTE and enqueues nothing
    case "large.reserved_attributes", needs Some(Cap::LargeMessages);
    async fn reserved(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("bigreserved").await?;
        for name in ["ExtendedPayloadSize", "SQSLargePayloadSize"] {
            expect_reason(
                ctx.client.send_message(&q, Outgoing::new("x").attribute(name, "12")).await,
                Reason::InvalidAttribute,
                &format!("attribute {name}"),
            )?;
        }
        check!(visible_count(&ctx, &q).await? == 0, "a refused message was enqueued");
        Ok(())
    }

    /// A large message may carry as many attributes as Describe allows
    case "large.most_attributes", needs Some(Cap::LargeMessages);
    async fn most_attributes(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("bigattrs").await?;
        let mut sent = Outgoing::new(large_body(LARGE, 5));
        for i in 0..ctx.limits().max_attributes {
            sent = sent.attribute(format!("a{i}"), "v");
        }
        let want = sent.attributes.clone();
        ok(ctx.client.send_message(&q, sent).await, "send with max_attributes attributes")?;
        let m = receive_one(&ctx, &q, Duration::from_secs(30)).await?;
        check!(m.attributes == want, "attributes changed: got {:?}", m.attributes);
        check!(m.body.len() == LARGE, "body came back with {} bytes", m.body.len());
        Ok(())
    }
}

/// Without LARGE_MESSAGES a message over Describe's limit is refused with MESSAGE_TOO_LARGE.
pub(super) async fn large_messages_undeclared(ctx: &Ctx, queue: &str) -> CaseOutcome {
    let max = ctx.limits().max_message_bytes as usize;
    match ctx.client.send(queue, vec![b'x'; max + 1]).await {
        Err(e) if e.reason == Reason::MessageTooLarge => Ok(()),
        Err(e) => Err(format!(
            "LARGE_MESSAGES is not declared, so a message over the limit must fail with MESSAGE_TOO_LARGE; got {e}"
        )),
        Ok(_) => Err("LARGE_MESSAGES is not declared, yet a message over the limit was accepted".into()),
    }
}
