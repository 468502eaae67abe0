//! The delivery cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// Every message sent is delivered, whatever the order
    case "delivery.unordered_complete", needs None;
    async fn unordered_complete(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("order").await?;
        let mut want = HashSet::new();
        for i in 0..25 {
            want.insert(format!("m{i}"));
            ok(ctx.client.send(&q, format!("m{i}")).await, "send")?;
        }
        let got: HashSet<String> =
            drain(&ctx, &q).await?.into_iter().map(|m| String::from_utf8_lossy(&m.body).into_owned()).collect();
        check!(got == want, "delivered set differs: missing {:?}", want.difference(&got).collect::<Vec<_>>());
        Ok(())
    }
}
