//! The batch cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// A batch with one bad entry reports exactly that entry and sends the rest
    case "batch.bad_entry_isolated", needs None;
    async fn batch_bad_entry(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("batch").await?;
        let max = ctx.limits().max_message_bytes as usize;
        let entries = vec![
            Outgoing::new("e0"),
            Outgoing::new("e1"),
            Outgoing::new(vec![0u8; max + 1]),
            Outgoing::new("e3").attribute("bad name", "v"),
            Outgoing::new("e4"),
        ];
        let results = ok(ctx.client.send_batch(&q, entries).await, "send_batch")?;
        check!(results.len() == 5, "expected 5 results, got {}", results.len());
        for (i, result) in results.iter().enumerate() {
            match (i, result) {
                (2, Err(e)) if e.reason == Reason::MessageTooLarge => {}
                (3, Err(e)) if e.reason == Reason::InvalidAttribute => {}
                (0 | 1 | 4, Ok(id)) if !id.is_empty() => {}
                _ => return Err(format!("entry {i}: unexpected result {result:?}")),
            }
        }
        let mut bodies: Vec<String> =
            drain(&ctx, &q).await?.into_iter().map(|m| String::from_utf8_lossy(&m.body).into_owned()).collect();
        bodies.sort();
        check!(bodies == ["e0", "e1", "e4"], "delivered {bodies:?}, expected exactly the good entries");
        Ok(())
    }

    /// A batch with duplicate entry ids is rejected whole and sends nothing
    case "batch.duplicate_ids", needs None;
    async fn batch_duplicate_ids(ctx: Ctx) -> CaseOutcome {
        use exo_sdk::proto::queue::v1 as pb;
        let q = ctx.queue("dupids").await?;
        let entry = |id: &str| pb::SendBatchEntry {
            id: id.into(),
            message: Some(pb::OutgoingMessage { body: b"x".to_vec(), ..Default::default() }),
        };
        let result = ctx
            .client
            .raw()
            .send_batch(pb::SendBatchRequest {
                queue: q.clone(),
                entries: vec![entry("a"), entry("b"), entry("a")],
            })
            .await
            .map_err(Error::from);
        expect_reason(result, Reason::InvalidArgument, "duplicate ids")?;
        check!(visible_count(&ctx, &q).await? == 0, "a rejected batch sent messages");
        Ok(())
    }

    /// An empty batch or one over max_batch_entries fails with INVALID_ARGUMENT
    case "batch.limits", needs None;
    async fn batch_limits(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("batchlim").await?;
        expect_reason(ctx.client.send_batch(&q, Vec::new()).await, Reason::InvalidArgument, "empty batch")?;
        let too_many = (0..=ctx.limits().max_batch_entries).map(|i| Outgoing::new(i.to_string())).collect();
        expect_reason(ctx.client.send_batch(&q, too_many).await, Reason::InvalidArgument, "oversize batch")?;
        check!(visible_count(&ctx, &q).await? == 0, "a rejected batch sent messages");
        Ok(())
    }
}
