//! The subscription filter cases: each kind of clause, conjunctions, and refused filters. A filter
//! that does not match drops the message for that subscription only.

use super::{
    topics::{one_copy, subscribed},
    *,
};

/// Publishes each `(name, attributes)` message to `topic` and returns the names `queue` got.
async fn delivered(
    ctx: &Ctx,
    topic: &str,
    queue: &str,
    messages: &[(&str, &[(&str, &str)])],
) -> Result<HashSet<String>, String> {
    for (name, attributes) in messages {
        let message =
            attributes.iter().fold(Outgoing::new(name.as_bytes().to_vec()), |m, (k, v)| m.attribute(*k, *v));
        ok(ctx.topics.publish(topic, message).await, "publish")?;
    }
    Ok(drain(ctx, queue).await?.into_iter().map(|m| String::from_utf8_lossy(&m.body).into_owned()).collect())
}

fn names(list: &[&str]) -> HashSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

crate::cases! {
    /// `name = 'v'` passes exactly that value: case, whitespace and absence all fail it
    case "filter.exact", needs Some(Cap::Topics);
    async fn exact(ctx: Ctx) -> CaseOutcome {
        let topic = ctx.topic("f-eq").await?;
        let queue = subscribed(&ctx, &topic, "eu-only", "region = 'eu'").await?;
        let all = subscribed(&ctx, &topic, "all", "").await?;
        let messages: &[(&str, &[(&str, &str)])] = &[
            ("yes", &[("region", "eu")]),
            ("case", &[("region", "EU")]),
            ("space", &[("region", "eu ")]),
            ("other", &[("region", "us")]),
            ("none", &[]),
            ("other-attr", &[("zone", "eu")]),
        ];
        let got = delivered(&ctx, &topic, &queue, messages).await?;
        check!(got == names(&["yes"]), "exact filter passed {got:?}");
        // The unfiltered subscription got every one: a filter drops for its own subscription only.
        check!(drain(&ctx, &all).await?.len() == messages.len(), "the unfiltered subscriber missed messages");
        Ok(())
    }

    /// `name in (...)` passes any listed value and nothing else
    case "filter.any_of", needs Some(Cap::Topics);
    async fn any_of(ctx: Ctx) -> CaseOutcome {
        let topic = ctx.topic("f-in").await?;
        let queue = subscribed(&ctx, &topic, "sub", r#"type in ('order.created', "order.paid")"#).await?;
        let got = delivered(&ctx, &topic, &queue, &[
            ("created", &[("type", "order.created")]),
            ("paid", &[("type", "order.paid")]),
            ("shipped", &[("type", "order.shipped")]),
            ("absent", &[]),
        ])
        .await?;
        check!(got == names(&["created", "paid"]), "any-of filter passed {got:?}");
        Ok(())
    }

    /// `name prefix 'p'` passes values starting with p, itself included
    case "filter.prefix", needs Some(Cap::Topics);
    async fn prefix(ctx: Ctx) -> CaseOutcome {
        let topic = ctx.topic("f-pre").await?;
        let queue = subscribed(&ctx, &topic, "sub", "customer prefix 'vip-'").await?;
        let got = delivered(&ctx, &topic, &queue, &[
            ("vip", &[("customer", "vip-42")]),
            ("exactly", &[("customer", "vip-")]),
            ("inside", &[("customer", "not-vip-42")]),
            ("case", &[("customer", "VIP-42")]),
            ("absent", &[]),
        ])
        .await?;
        check!(got == names(&["vip", "exactly"]), "prefix filter passed {got:?}");
        Ok(())
    }

    /// `name exists` passes messages carrying the attribute, `name absent` those without it
    case "filter.exists_absent", needs Some(Cap::Topics);
    async fn exists_absent(ctx: Ctx) -> CaseOutcome {
        let topic = ctx.topic("f-ex").await?;
        let with = subscribed(&ctx, &topic, "with", "priority exists").await?;
        let without = subscribed(&ctx, &topic, "without", "priority absent").await?;
        let messages: &[(&str, &[(&str, &str)])] =
            &[("high", &[("priority", "high")]), ("low", &[("priority", "low")]), ("plain", &[("other", "x")])];
        let got_with = delivered(&ctx, &topic, &with, messages).await?;
        check!(got_with == names(&["high", "low"]), "exists passed {got_with:?}");
        let got_without: HashSet<String> =
            drain(&ctx, &without).await?.into_iter().map(|m| String::from_utf8_lossy(&m.body).into_owned()).collect();
        check!(got_without == names(&["plain"]), "absent passed {got_without:?}");
        Ok(())
    }

    /// Clauses joined by `and` must all hold; keywords are case-insensitive
    case "filter.conjunction", needs Some(Cap::Topics);
    async fn conjunction(ctx: Ctx) -> CaseOutcome {
        let topic = ctx.topic("f-and").await?;
        let filter = "region = 'eu' AND type IN ('a', 'b') and test ABSENT";
        let queue = subscribed(&ctx, &topic, "sub", filter).await?;
        let got = delivered(&ctx, &topic, &queue, &[
            ("all", &[("region", "eu"), ("type", "a")]),
            ("wrong-region", &[("region", "us"), ("type", "a")]),
            ("wrong-type", &[("region", "eu"), ("type", "c")]),
            ("test", &[("region", "eu"), ("type", "b"), ("test", "1")]),
        ])
        .await?;
        check!(got == names(&["all"]), "conjunction passed {got:?}");
        let published = ok(ctx.topics.publish(&topic, Outgoing::new("x").attribute("region", "us")).await, "publish")?;
        check!(published.deliveries == 0, "a non-matching message counted {} deliveries", published.deliveries);
        Ok(())
    }

    /// A filter that does not parse is INVALID_FILTER naming the position, and creates neither subscription nor queue
    case "filter.invalid", needs Some(Cap::Topics);
    async fn invalid(ctx: Ctx) -> CaseOutcome {
        let topic = ctx.topic("f-bad").await?;
        let queue = ctx.queue("f-bad-q").await?;
        for (filter, position) in [
            ("region == 'eu'", 8),
            ("region = 'eu' or type = 'a'", 14),
            ("region = 'eu", 9),
            ("region matches 'x'", 7),
            ("exo.topic exists", 0),
            ("a = 'x' and a = 'y'", 12),
        ] {
            let err = expect_reason(ctx.topics.subscribe(&topic, "sub", &queue, filter, None).await, Reason::InvalidFilter, filter)?;
            check!(err.message.contains(&format!("byte {position}")), "{filter:?}: the error does not name byte {position}: {}", err.message);
        }
        let fresh = ctx.name("f-bad-new");
        expect_reason(
            ctx.topics.subscribe(&topic, "sub", &fresh, "region ==", Some(QueueOptions::default())).await,
            Reason::InvalidFilter,
            "with create_queue",
        )?;
        expect_reason(ctx.client.queue_info(&fresh).await, Reason::QueueNotFound, "a refused subscription created its queue")?;
        check!(ok(ctx.topics.topic_info(&topic).await, "topic_info")?.subscriptions.is_empty(), "a refused subscription exists");
        // The subscription stores the filter it was given, and it works after a round trip.
        let (_, sub) = ok(ctx.topics.subscribe(&topic, "fine", &queue, "  k exists  ", None).await, "subscribe")?;
        check!(sub.filter == "k exists", "stored filter {:?}", sub.filter);
        ok(ctx.topics.publish(&topic, Outgoing::new("x").attribute("k", "1")).await, "publish")?;
        one_copy(&ctx, &queue).await?;
        Ok(())
    }
}
