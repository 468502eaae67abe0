//! The topic cases: fan-out, subscriptions, limits. Each case's doc comment is its description in
//! reports. Every case needs TOPICS; without it the probe checks that topics answer UNSUPPORTED.

use exo_sdk::{PUBLISH_ID_ATTRIBUTE, TOPIC_ATTRIBUTE};

use super::*;

/// Creates queue `<prefix>-<suffix>` and subscribes it to `topic` as `suffix` with `filter`.
pub(super) async fn subscribed(ctx: &Ctx, topic: &str, suffix: &str, filter: &str) -> Result<String, String> {
    let queue = ctx.queue(suffix).await?;
    ok(ctx.topics.subscribe(topic, suffix, &queue, filter, None).await, "subscribe")?;
    Ok(queue)
}

/// The one copy `queue` holds of a publish (fails on none or more than one).
pub(super) async fn one_copy(ctx: &Ctx, queue: &str) -> Result<Message, String> {
    let mut copies = drain(ctx, queue).await?;
    check!(copies.len() == 1, "expected exactly one copy in {queue}, got {}", copies.len());
    Ok(copies.remove(0))
}

crate::cases! {
    /// Creating a topic is idempotent, and a new topic is listed with no subscriptions
    case "topics.create_idempotent", needs Some(Cap::Topics);
    async fn create_idempotent(ctx: Ctx) -> CaseOutcome {
        let name = ctx.name("events");
        check!(ok(ctx.topics.create_topic(&name).await, "create_topic")?, "first create must say created");
        check!(!ok(ctx.topics.create_topic(&name).await, "create_topic again")?, "second create must say existed");
        let info = ok(ctx.topics.topic_info(&name).await, "topic_info")?;
        check!(info.name == name && info.subscriptions.is_empty(), "unexpected info {info:?}");
        check!(info.created_at_ms > 0, "created_at_ms missing");
        let listed = ok(ctx.topics.list_topics(&ctx.prefix).await, "list_topics")?;
        check!(listed == vec![name.clone()], "list_topics({}) gave {listed:?}", ctx.prefix);
        Ok(())
    }

    /// Topics list in lexical order by prefix, a page at a time
    case "topics.list_pages", needs Some(Cap::Topics);
    async fn list_pages(ctx: Ctx) -> CaseOutcome {
        for suffix in ["c", "a", "b"] {
            ctx.topic(&format!("t-{suffix}")).await?;
        }
        let mut raw = ctx.topics.raw();
        let request = |token: String| exo_sdk::proto::queue::v1::ListTopicsRequest {
            prefix: ctx.name("t-"),
            page_size: 2,
            page_token: token,
        };
        let first = ok(raw.list_topics(request(String::new())).await.map_err(Into::into), "list_topics page 1")?
            .into_inner();
        check!(first.names == vec![ctx.name("t-a"), ctx.name("t-b")], "page 1: {:?}", first.names);
        check!(!first.next_page_token.is_empty(), "page 1 must have a next page token");
        let second = ok(raw.list_topics(request(first.next_page_token)).await.map_err(Into::into), "list_topics page 2")?
            .into_inner();
        check!(second.names == vec![ctx.name("t-c")], "page 2: {:?}", second.names);
        check!(second.next_page_token.is_empty(), "page 2 is the last");
        Ok(())
    }

    /// Invalid topic and subscription names fail with INVALID_NAME and create nothing
    case "topics.names_validated", needs Some(Cap::Topics);
    async fn names_validated(ctx: Ctx) -> CaseOutcome {
        for bad in ["Ab", "a_b", "-ab", "a--b", "x"] {
            expect_reason(ctx.topics.create_topic(bad).await, Reason::InvalidName, bad)?;
        }
        let topic = ctx.topic("names").await?;
        let queue = ctx.queue("names-q").await?;
        expect_reason(
            ctx.topics.subscribe(&topic, "Bad_Name", &queue, "", None).await,
            Reason::InvalidName,
            "subscription name",
        )?;
        expect_reason(
            ctx.topics.subscribe(&topic, "fine", "No_Queue", "", None).await,
            Reason::InvalidName,
            "queue name",
        )?;
        let info = ok(ctx.topics.topic_info(&topic).await, "topic_info")?;
        check!(info.subscriptions.is_empty(), "a refused subscription was created: {:?}", info.subscriptions);
        Ok(())
    }

    /// Every topic call on a missing topic fails with TOPIC_NOT_FOUND and creates nothing
    case "topics.missing_topic", needs Some(Cap::Topics);
    async fn missing_topic(ctx: Ctx) -> CaseOutcome {
        let topic = ctx.name("ghost");
        let queue = ctx.queue("ghost-q").await?;
        let t = &ctx.topics;
        expect_reason(t.publish(&topic, Outgoing::new("x")).await, Reason::TopicNotFound, "publish")?;
        expect_reason(
            t.publish_batch(&topic, vec![Outgoing::new("x")]).await,
            Reason::TopicNotFound,
            "publish_batch",
        )?;
        expect_reason(t.topic_info(&topic).await, Reason::TopicNotFound, "topic_info")?;
        expect_reason(t.delete_topic(&topic).await, Reason::TopicNotFound, "delete_topic")?;
        expect_reason(t.subscribe(&topic, "sub", &queue, "", None).await, Reason::TopicNotFound, "subscribe")?;
        let fresh = ctx.name("ghost-new");
        expect_reason(
            t.subscribe(&topic, "sub", &fresh, "", Some(QueueOptions::default())).await,
            Reason::TopicNotFound,
            "subscribe with create_queue",
        )?;
        expect_reason(ctx.client.queue_info(&fresh).await, Reason::QueueNotFound, "no queue may be created")?;
        expect_reason(t.unsubscribe(&topic, "sub").await, Reason::TopicNotFound, "unsubscribe")?;
        check!(visible_count(&ctx, &queue).await? == 0, "a message reached the queue");
        Ok(())
    }

    /// One publish reaches every subscription exactly once, body and attributes unchanged, each
    /// copy marked with the topic and one shared publish id
    case "fanout.every_subscription", needs Some(Cap::Topics);
    async fn every_subscription(ctx: Ctx) -> CaseOutcome {
        let topic = ctx.topic("orders").await?;
        let mut queues = Vec::new();
        for suffix in ["billing", "shipping", "mail"] {
            queues.push(subscribed(&ctx, &topic, suffix, "").await?);
        }
        let published = ok(
            ctx.topics.publish(&topic, Outgoing::new("order 42").attribute("type", "order.created")).await,
            "publish",
        )?;
        check!(published.deliveries == 3, "deliveries {} != 3", published.deliveries);
        check!(!published.publish_id.is_empty(), "no publish id");
        for queue in &queues {
            let copy = one_copy(&ctx, queue).await?;
            check!(copy.body == b"order 42", "body changed in {queue}: {:?}", copy.body);
            check!(copy.attributes.get("type").map(String::as_str) == Some("order.created"), "attribute lost in {queue}");
            check!(copy.attributes.get(TOPIC_ATTRIBUTE) == Some(&topic), "{TOPIC_ATTRIBUTE} in {queue}: {:?}", copy.attributes);
            check!(
                copy.attributes.get(PUBLISH_ID_ATTRIBUTE) == Some(&published.publish_id),
                "{PUBLISH_ID_ATTRIBUTE} in {queue}: {:?}",
                copy.attributes
            );
            check!(copy.attributes.len() == 3, "unexpected attributes in {queue}: {:?}", copy.attributes);
            check!(copy.dequeue_count == 1, "first delivery has dequeue_count {}", copy.dequeue_count);
            check!(!copy.message_id.is_empty(), "a copy without a message id in {queue}");
        }
        Ok(())
    }

    /// Binary bodies and non-ASCII attribute values arrive byte-exact in every copy
    case "fanout.byte_exact", needs Some(Cap::Topics);
    async fn byte_exact(ctx: Ctx) -> CaseOutcome {
        let topic = ctx.topic("bytes").await?;
        let a = subscribed(&ctx, &topic, "aaa", "").await?;
        let b = subscribed(&ctx, &topic, "bbb", "").await?;
        let body: Vec<u8> = (0..=255u8).rev().collect();
        let value = "zürich · 東京 · \"quoted\" \\ tab\tend";
        ok(ctx.topics.publish(&topic, Outgoing::new(body.clone()).attribute("city", value)).await, "publish")?;
        for queue in [a, b] {
            let copy = one_copy(&ctx, &queue).await?;
            check!(copy.body == body, "body changed in {queue}");
            check!(copy.attributes.get("city").map(String::as_str) == Some(value), "attribute changed in {queue}");
        }
        // An empty body is a message too.
        let empty = ok(ctx.topics.publish(&topic, Outgoing::new(Vec::new())).await, "publish empty")?;
        check!(empty.deliveries == 2, "empty body delivered {} times", empty.deliveries);
        Ok(())
    }

    /// Publishing to a topic without subscriptions succeeds and delivers nothing
    case "fanout.no_subscriptions", needs Some(Cap::Topics);
    async fn no_subscriptions(ctx: Ctx) -> CaseOutcome {
        let topic = ctx.topic("lonely").await?;
        let published = ok(ctx.topics.publish(&topic, Outgoing::new("x")).await, "publish")?;
        check!(published.deliveries == 0, "delivered to {} subscriptions of none", published.deliveries);
        Ok(())
    }

    /// A subscription created after a publish never sees that message, only later ones
    case "fanout.late_subscription", needs Some(Cap::Topics);
    async fn late_subscription(ctx: Ctx) -> CaseOutcome {
        let topic = ctx.topic("late").await?;
        let early = subscribed(&ctx, &topic, "early", "").await?;
        ok(ctx.topics.publish(&topic, Outgoing::new("before")).await, "publish before")?;
        let late = subscribed(&ctx, &topic, "late", "").await?;
        sleep(0.3).await;
        receive_none(&ctx, &late, "the subscription did not exist at publish time").await?;
        ok(ctx.topics.publish(&topic, Outgoing::new("after")).await, "publish after")?;
        check!(one_copy(&ctx, &late).await?.body == b"after", "late subscriber got the wrong message");
        let early_bodies: HashSet<Vec<u8>> = drain(&ctx, &early).await?.into_iter().map(|m| m.body).collect();
        check!(
            early_bodies == HashSet::from([b"before".to_vec(), b"after".to_vec()]),
            "early subscriber got {early_bodies:?}"
        );
        Ok(())
    }

    /// After unsubscribing, publishes skip that queue; what it already holds stays
    case "fanout.unsubscribe", needs Some(Cap::Topics);
    async fn unsubscribe(ctx: Ctx) -> CaseOutcome {
        let topic = ctx.topic("unsub").await?;
        let stays = subscribed(&ctx, &topic, "stays", "").await?;
        let leaves = subscribed(&ctx, &topic, "leaves", "").await?;
        ok(ctx.topics.publish(&topic, Outgoing::new("one")).await, "publish one")?;
        ok(ctx.topics.unsubscribe(&topic, "leaves").await, "unsubscribe")?;
        expect_reason(ctx.topics.unsubscribe(&topic, "leaves").await, Reason::SubscriptionNotFound, "unsubscribe twice")?;
        let published = ok(ctx.topics.publish(&topic, Outgoing::new("two")).await, "publish two")?;
        check!(published.deliveries == 1, "deliveries {} after unsubscribing one of two", published.deliveries);
        check!(one_copy(&ctx, &leaves).await?.body == b"one", "the unsubscribed queue lost or gained messages");
        check!(drain(&ctx, &stays).await?.len() == 2, "the remaining subscriber missed a message");
        let info = ok(ctx.topics.topic_info(&topic).await, "topic_info")?;
        let names: Vec<&str> = info.subscriptions.iter().map(|s| s.name.as_str()).collect();
        check!(names == ["stays"], "subscriptions after unsubscribe: {names:?}");
        Ok(())
    }

    /// Deleting a topic stops deliveries and keeps the subscription queues and their messages
    case "topics.delete_keeps_queues", needs Some(Cap::Topics);
    async fn delete_keeps_queues(ctx: Ctx) -> CaseOutcome {
        let topic = ctx.topic("gone").await?;
        let queue = subscribed(&ctx, &topic, "keeper", "").await?;
        ok(ctx.topics.publish(&topic, Outgoing::new("kept")).await, "publish")?;
        ok(ctx.topics.delete_topic(&topic).await, "delete_topic")?;
        expect_reason(ctx.topics.topic_info(&topic).await, Reason::TopicNotFound, "topic_info after delete")?;
        expect_reason(ctx.topics.publish(&topic, Outgoing::new("x")).await, Reason::TopicNotFound, "publish after delete")?;
        check!(one_copy(&ctx, &queue).await?.body == b"kept", "the queue lost its message with the topic");
        // A topic of the same name starts without the old subscriptions.
        ctx.topics.create_topic(&topic).await.map_err(|e| format!("recreate: {e}"))?;
        let info = ok(ctx.topics.topic_info(&topic).await, "topic_info")?;
        check!(info.subscriptions.is_empty(), "a recreated topic kept old subscriptions: {:?}", info.subscriptions);
        Ok(())
    }

    /// A batch publish delivers every entry to every subscription, each with its own publish id
    case "fanout.batch", needs Some(Cap::Topics);
    async fn batch(ctx: Ctx) -> CaseOutcome {
        let topic = ctx.topic("batch").await?;
        let a = subscribed(&ctx, &topic, "aaa", "").await?;
        let b = subscribed(&ctx, &topic, "bbb", "").await?;
        let messages: Vec<Outgoing> = (0..5).map(|i| Outgoing::new(format!("m{i}"))).collect();
        let results = ok(ctx.topics.publish_batch(&topic, messages).await, "publish_batch")?;
        check!(results.len() == 5, "{} results for 5 entries", results.len());
        let mut ids = HashSet::new();
        for (i, result) in results.into_iter().enumerate() {
            let published = result.map_err(|e| format!("entry {i} failed: {e}"))?;
            check!(published.deliveries == 2, "entry {i} delivered {} times", published.deliveries);
            ids.insert(published.publish_id);
        }
        check!(ids.len() == 5, "publish ids repeat: {ids:?}");
        for queue in [a, b] {
            let got = drain(&ctx, &queue).await?;
            let bodies: HashSet<Vec<u8>> = got.iter().map(|m| m.body.clone()).collect();
            check!(got.len() == 5 && bodies.len() == 5, "{queue} got {} copies, {} distinct", got.len(), bodies.len());
            let copy_ids: HashSet<String> =
                got.iter().filter_map(|m| m.attributes.get(PUBLISH_ID_ATTRIBUTE).cloned()).collect();
            check!(copy_ids == ids, "{queue}'s publish ids differ from the batch's");
        }
        Ok(())
    }

    /// A bad batch entry fails on its own with its reason and reaches no one; the others are delivered
    case "fanout.batch_partial_failure", needs Some(Cap::Topics);
    async fn batch_partial(ctx: Ctx) -> CaseOutcome {
        let topic = ctx.topic("partial").await?;
        let queue = subscribed(&ctx, &topic, "sub", "").await?;
        let too_big = ctx.backend.topic_limits.map(|l| l.max_message_bytes as usize + 1).ok_or("describe has no topic_limits")?;
        let entries = vec![
            Outgoing::new("good-0"),
            Outgoing::new("bad").attribute("exo.forged", "x"),
            Outgoing::new(vec![b'z'; too_big]),
            Outgoing::new("good-3"),
        ];
        let results = ok(ctx.topics.publish_batch(&topic, entries).await, "publish_batch")?;
        check!(results.len() == 4, "{} results for 4 entries", results.len());
        check!(results[0].is_ok() && results[3].is_ok(), "good entries failed: {results:?}");
        match &results[1] {
            Err(e) if e.reason == Reason::InvalidAttribute => {}
            other => return Err(format!("reserved attribute entry: expected INVALID_ATTRIBUTE, got {other:?}")),
        }
        match &results[2] {
            Err(e) if e.reason == Reason::MessageTooLarge => {}
            other => return Err(format!("oversize entry: expected MESSAGE_TOO_LARGE, got {:?}", other.as_ref().map(|_| ()))),
        }
        let bodies: HashSet<Vec<u8>> = drain(&ctx, &queue).await?.into_iter().map(|m| m.body).collect();
        check!(
            bodies == HashSet::from([b"good-0".to_vec(), b"good-3".to_vec()]),
            "the queue holds {} messages, expected only the two good ones",
            bodies.len()
        );
        Ok(())
    }

    /// Describe states topic limits that leave room for each copy's own attributes
    case "limits.topic_limits", needs Some(Cap::Topics);
    async fn topic_limits(ctx: Ctx) -> CaseOutcome {
        let limits = ctx.backend.topic_limits.ok_or("TOPICS is declared but describe has no topic_limits")?;
        let queue = ctx.limits();
        check!(limits.max_message_bytes > 0 && limits.max_message_bytes < queue.max_message_bytes, "max_message_bytes {} vs queue {}", limits.max_message_bytes, queue.max_message_bytes);
        check!(limits.max_attributes + 2 <= queue.max_attributes, "max_attributes {} leaves no room for the copy's two (queue {})", limits.max_attributes, queue.max_attributes);
        check!(limits.max_batch_entries >= 1 && limits.max_subscriptions >= 1 && limits.max_filter_bytes >= 64, "implausible limits {limits:?}");
        Ok(())
    }

    /// A message of exactly the topic limit is delivered intact; one byte more is MESSAGE_TOO_LARGE and reaches no one
    case "limits.message_size", needs Some(Cap::Topics);
    async fn message_size(ctx: Ctx) -> CaseOutcome {
        let limits = ctx.backend.topic_limits.ok_or("describe has no topic_limits")?;
        let topic = ctx.topic("size").await?;
        let queue = subscribed(&ctx, &topic, "sub", "").await?;
        let attribute_bytes = "k".len() + "v".len();
        let fits = vec![b'a'; limits.max_message_bytes as usize - attribute_bytes];
        ok(ctx.topics.publish(&topic, Outgoing::new(fits.clone()).attribute("k", "v")).await, "publish at the limit")?;
        let over = vec![b'a'; limits.max_message_bytes as usize - attribute_bytes + 1];
        expect_reason(ctx.topics.publish(&topic, Outgoing::new(over).attribute("k", "v")).await, Reason::MessageTooLarge, "one byte over")?;
        let copy = one_copy(&ctx, &queue).await?;
        check!(copy.body == fits, "the message at the limit arrived changed ({} bytes)", copy.body.len());
        Ok(())
    }

    /// Attributes up to the topic limit are delivered; more, or a reserved name, are refused and reach no one
    case "limits.attributes", needs Some(Cap::Topics);
    async fn attributes(ctx: Ctx) -> CaseOutcome {
        let limits = ctx.backend.topic_limits.ok_or("describe has no topic_limits")?;
        let topic = ctx.topic("attrs").await?;
        let queue = subscribed(&ctx, &topic, "sub", "").await?;
        let with = |n: u32| (0..n).fold(Outgoing::new("x"), |m, i| m.attribute(format!("a{i}"), "v"));
        ok(ctx.topics.publish(&topic, with(limits.max_attributes)).await, "publish at the attribute limit")?;
        expect_reason(ctx.topics.publish(&topic, with(limits.max_attributes + 1)).await, Reason::InvalidAttribute, "one attribute over")?;
        for reserved in [TOPIC_ATTRIBUTE, PUBLISH_ID_ATTRIBUTE, "AWS.trace"] {
            expect_reason(
                ctx.topics.publish(&topic, Outgoing::new("x").attribute(reserved, "forged")).await,
                Reason::InvalidAttribute,
                reserved,
            )?;
        }
        let copy = one_copy(&ctx, &queue).await?;
        check!(copy.attributes.len() as u32 == limits.max_attributes + 2, "copy has {} attributes", copy.attributes.len());
        Ok(())
    }

    /// Subscribing is idempotent for identical settings (a filter compares by meaning, stored in one canonical spelling); the same name with other settings is SUBSCRIPTION_ALREADY_EXISTS
    case "subscriptions.idempotent_and_conflict", needs Some(Cap::Topics);
    async fn idempotent_and_conflict(ctx: Ctx) -> CaseOutcome {
        let topic = ctx.topic("dup").await?;
        let queue = ctx.queue("dup-q").await?;
        let other = ctx.queue("dup-other").await?;
        let (created, sub) = ok(ctx.topics.subscribe(&topic, "sub", &queue, "k = 'v'", None).await, "subscribe")?;
        check!(created && sub.queue == queue && sub.filter == "k = 'v'" && sub.created_at_ms > 0, "unexpected {sub:?}");
        let (again, _) = ok(ctx.topics.subscribe(&topic, "sub", &queue, "k = 'v'", None).await, "subscribe again")?;
        check!(!again, "an identical subscription must answer created = false");
        // The same filter spelled otherwise is the same subscription.
        let (respelled, stored) =
            ok(ctx.topics.subscribe(&topic, "sub", &queue, r#"k IN ("v")"#, None).await, "subscribe respelled")?;
        check!(!respelled && stored.filter == "k = 'v'", "a respelled identical filter: created {respelled}, {stored:?}");
        // An `in` list is a set: another order, or a value twice, is the same filter.
        // (Its own queue: SNS delivers to a queue once per topic.)
        let listed_queue = ctx.queue("dup-in").await?;
        let (listed, first) =
            ok(ctx.topics.subscribe(&topic, "sub-in", &listed_queue, "k in ('b', 'a')", None).await, "subscribe in")?;
        check!(listed && first.filter == "k in ('a', 'b')", "an in list is stored sorted: {first:?}");
        let (reordered, _) = ok(
            ctx.topics.subscribe(&topic, "sub-in", &listed_queue, "k in ('a', 'b', 'a')", None).await,
            "subscribe with the in list reordered",
        )?;
        check!(!reordered, "the same in list reordered must answer created = false");
        ok(ctx.topics.unsubscribe(&topic, "sub-in").await, "unsubscribe sub-in")?;
        expect_reason(ctx.topics.subscribe(&topic, "sub", &other, "k = 'v'", None).await, Reason::SubscriptionAlreadyExists, "other queue")?;
        expect_reason(ctx.topics.subscribe(&topic, "sub", &queue, "k = 'w'", None).await, Reason::SubscriptionAlreadyExists, "other filter")?;
        let fresh = ctx.name("dup-fresh");
        expect_reason(
            ctx.topics.subscribe(&topic, "sub", &fresh, "", Some(QueueOptions::default())).await,
            Reason::SubscriptionAlreadyExists,
            "conflict with create_queue",
        )?;
        expect_reason(ctx.client.queue_info(&fresh).await, Reason::QueueNotFound, "a refused subscription created its queue")?;
        let info = ok(ctx.topics.topic_info(&topic).await, "topic_info")?;
        check!(info.subscriptions.len() == 1 && info.subscriptions[0].queue == queue, "subscriptions {:?}", info.subscriptions);
        Ok(())
    }

    /// Subscribing a missing queue without create options is QUEUE_NOT_FOUND and creates nothing
    case "subscriptions.queue_must_exist", needs Some(Cap::Topics);
    async fn queue_must_exist(ctx: Ctx) -> CaseOutcome {
        let topic = ctx.topic("noq").await?;
        let missing = ctx.name("noq-q");
        expect_reason(ctx.topics.subscribe(&topic, "sub", &missing, "", None).await, Reason::QueueNotFound, "subscribe")?;
        expect_reason(ctx.client.queue_info(&missing).await, Reason::QueueNotFound, "queue created anyway")?;
        check!(ok(ctx.topics.topic_info(&topic).await, "topic_info")?.subscriptions.is_empty(), "subscription created anyway");
        Ok(())
    }

    /// With create options the subscription's queue is created with them, and an existing queue with other options is refused
    case "subscriptions.create_queue", needs Some(Cap::Topics);
    async fn create_queue(ctx: Ctx) -> CaseOutcome {
        let topic = ctx.topic("mkq").await?;
        let queue = ctx.name("mkq-q");
        let options = QueueOptions { visibility_timeout_seconds: Some(45), ..Default::default() };
        ok(ctx.topics.subscribe(&topic, "sub", &queue, "", Some(options)).await, "subscribe with create_queue")?;
        let info = ok(ctx.client.queue_info(&queue).await, "queue_info")?;
        check!(info.options.and_then(|o| o.visibility_timeout_seconds) == Some(45), "queue options not applied");
        ok(ctx.topics.publish(&topic, Outgoing::new("x")).await, "publish")?;
        check!(one_copy(&ctx, &queue).await?.body == b"x", "the created queue got no copy");
        let different = QueueOptions { visibility_timeout_seconds: Some(46), ..Default::default() };
        expect_reason(
            ctx.topics.subscribe(&topic, "sub-two", &queue, "", Some(different)).await,
            Reason::QueueAlreadyExists,
            "existing queue with other options",
        )?;
        Ok(())
    }

    /// Deleting a subscription's queue deletes the subscription; the others keep receiving
    case "subscriptions.queue_deleted", needs Some(Cap::Topics);
    async fn queue_deleted(ctx: Ctx) -> CaseOutcome {
        let topic = ctx.topic("qdel").await?;
        let doomed = subscribed(&ctx, &topic, "doomed", "").await?;
        let alive = subscribed(&ctx, &topic, "alive", "").await?;
        ok(ctx.client.delete_queue(&doomed).await, "delete_queue")?;
        let info = ok(ctx.topics.topic_info(&topic).await, "topic_info")?;
        let names: Vec<&str> = info.subscriptions.iter().map(|s| s.name.as_str()).collect();
        check!(names == ["alive"], "subscriptions after deleting a queue: {names:?}");
        let published = ok(ctx.topics.publish(&topic, Outgoing::new("x")).await, "publish")?;
        check!(published.deliveries == 1, "deliveries {}", published.deliveries);
        check!(one_copy(&ctx, &alive).await?.body == b"x", "the remaining subscriber got nothing");
        Ok(())
    }

    /// Each subscriber consumes at its own pace: a copy held or acked by one never affects another's
    case "delivery.subscribers_independent", needs Some(Cap::Topics);
    async fn subscribers_independent(ctx: Ctx) -> CaseOutcome {
        let topic = ctx.topic("indep").await?;
        let slow = subscribed(&ctx, &topic, "slow", "").await?;
        let fast = subscribed(&ctx, &topic, "fast", "").await?;
        ok(ctx.topics.publish(&topic, Outgoing::new("x")).await, "publish")?;
        // The slow subscriber takes its copy and sits on it.
        let held = receive_one(&ctx, &slow, Duration::from_secs(60)).await?;
        // The fast one receives and acks its own.
        let copy = receive_one(&ctx, &fast, Duration::from_secs(30)).await?;
        ok(ctx.client.ack(&fast, &copy.receipt).await, "ack fast")?;
        receive_none(&ctx, &fast, "acked").await?;
        receive_none(&ctx, &slow, "held by its consumer").await?;
        // The slow subscriber's copy is still its own to finish.
        ok(ctx.client.ack(&slow, &held.receipt).await, "ack slow")?;
        Ok(())
    }

    /// Publishes from many concurrent callers each reach every subscription exactly once
    case "delivery.concurrent_publishes", needs Some(Cap::Topics);
    async fn concurrent_publishes(ctx: Ctx) -> CaseOutcome {
        let topic = ctx.topic("conc").await?;
        let a = subscribed(&ctx, &topic, "aaa", "").await?;
        let b = subscribed(&ctx, &topic, "bbb", "").await?;
        let publishes = (0..20).map(|i| {
            let (topics, topic) = (ctx.topics.clone(), topic.clone());
            async move { topics.publish(&topic, Outgoing::new(format!("p{i}"))).await }
        });
        let results = futures::future::join_all(publishes).await;
        let ids: HashSet<String> = results
            .into_iter()
            .map(|r| r.map(|p| p.publish_id))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("a publish failed: {e}"))?;
        check!(ids.len() == 20, "{} distinct publish ids for 20 publishes", ids.len());
        for queue in [a, b] {
            let got = drain(&ctx, &queue).await?;
            let copy_ids: HashSet<String> =
                got.iter().filter_map(|m| m.attributes.get(PUBLISH_ID_ATTRIBUTE).cloned()).collect();
            check!(got.len() == 20 && copy_ids == ids, "{queue} got {} copies of {} publishes", got.len(), copy_ids.len());
        }
        Ok(())
    }
}
