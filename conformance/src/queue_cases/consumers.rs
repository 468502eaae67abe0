//! The consumers cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// Concurrent consumers never hold the same message at once and nothing is lost
    case "consumers.competing", needs None;
    async fn competing_consumers(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("compete").await?;
        let total = 200usize;
        let max_batch = ctx.limits().max_batch_entries.max(1) as usize;
        let mut sent = HashSet::new();
        let bodies: Vec<Outgoing> = (0..total).map(|i| Outgoing::new(format!("job-{i}"))).collect();
        for chunk in bodies.chunks(max_batch.min(10)) {
            for result in ok(ctx.client.send_batch(&q, chunk.to_vec()).await, "batch")? {
                sent.insert(ok(result, "batch entry")?);
            }
        }
        check!(sent.len() == total, "sent {} distinct ids, expected {total}", sent.len());
        let mut workers = Vec::new();
        for _ in 0..4 {
            let client = ctx.client.clone();
            let q = q.clone();
            workers.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut empty_rounds = 0;
                while empty_rounds < 3 {
                    let batch = client.receive(&q, Receive::up_to(5).visibility(Duration::from_secs(60))).await?;
                    if batch.is_empty() {
                        empty_rounds += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    empty_rounds = 0;
                    for m in batch {
                        client.ack(&q, &m.receipt).await?;
                        seen.push(m.message_id);
                    }
                }
                Ok::<_, Error>(seen)
            }));
        }
        let mut counts: HashMap<String, usize> = HashMap::new();
        for worker in workers {
            let seen = worker
                .await
                .map_err(|e| format!("worker panicked: {e}"))?
                .map_err(|e| format!("worker failed: {e}"))?;
            for id in seen {
                *counts.entry(id).or_default() += 1;
            }
        }
        let doubles: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        check!(doubles.is_empty(), "messages held by two consumers at once: {doubles:?}");
        let received: HashSet<String> = counts.into_keys().collect();
        let lost: Vec<_> = sent.difference(&received).collect();
        check!(lost.is_empty(), "{} messages lost: {:?}", lost.len(), lost.iter().take(5).collect::<Vec<_>>());
        Ok(())
    }
}
