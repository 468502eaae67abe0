//! The push-delivery cases: the proxy POSTs each message of a push subscription to the app
//! (see [`crate::push_app`] for the declared topic and the app's answers). They run only on a
//! proxy the suite starts (a push endpoint comes from the proxy's config, never from a caller);
//! against `--endpoint` they are reported unverified.

use exo_sdk::{PUBLISH_ID_ATTRIBUTE, TOPIC_ATTRIBUTE};

use super::*;
use crate::{
    not_run,
    push_app::{PushApp, PushCall, REFUSED_MAX_RECEIVES},
};

/// The push app, or why these cases cannot run.
fn app(ctx: &Ctx) -> Result<&PushApp, CaseOutcome> {
    ctx.push.as_ref().ok_or_else(|| {
        not_run("push delivery needs a push subscription in the proxy's config: run the suite with --backend or --config, not --endpoint")
    })
}

/// Publishes `body` for `route` once the declared subscription exists (the proxy makes its
/// declared topics as it starts, so a case may run before they are there).
async fn publish(ctx: &Ctx, app: &PushApp, route: &str, body: &[u8]) -> Result<String, String> {
    let started = Instant::now();
    loop {
        match ctx.topics.topic_info(app.topic()).await {
            Ok(info) if info.subscriptions.iter().any(|s| s.name == route) => break,
            Ok(_) => {}
            Err(err) if err.reason == Reason::TopicNotFound => {}
            Err(err) => return Err(format!("topic_info of the declared push topic failed: {err}")),
        }
        check!(
            started.elapsed() < Duration::from_secs(20),
            "the declared push subscription {route} was not made within 20 s"
        );
        sleep(0.2).await;
    }
    let mut message = Outgoing::new(body.to_vec()).attribute("case", ctx.prefix.clone());
    for (name, value) in PushApp::attributes(route) {
        message = message.attribute(name, value);
    }
    let published = ok(ctx.topics.publish(app.topic(), message).await, "publish to the declared push topic")?;
    check!(published.deliveries == 1, "deliveries {} != 1 (route {route})", published.deliveries);
    Ok(published.publish_id)
}

/// The POSTs for `publish_id` once `done` holds of them, within `within`.
async fn calls_until(
    app: &PushApp,
    publish_id: &str,
    within: Duration,
    done: impl Fn(&[PushCall]) -> bool,
) -> Result<Vec<PushCall>, String> {
    let started = Instant::now();
    loop {
        let calls = app.calls(publish_id);
        if done(&calls) {
            return Ok(calls);
        }
        if started.elapsed() > within {
            let seen: Vec<_> = calls.iter().map(|c| (c.route.as_str(), c.answered)).collect();
            return Err(format!("within {within:?} the app got only these POSTs for the publish: {seen:?}"));
        }
        sleep(0.1).await;
    }
}

/// Waits until `queue` holds nothing, visible or in flight (the proxy acked what it pushed).
async fn emptied(ctx: &Ctx, queue: &str) -> CaseOutcome {
    let started = Instant::now();
    loop {
        let info = ok(ctx.client.queue_info(queue).await, "queue_info")?;
        if info.visible_messages + info.in_flight_messages == 0 {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(15) {
            return Err(format!(
                "{queue} still holds {} visible and {} in-flight message(s) after the app took them",
                info.visible_messages, info.in_flight_messages
            ));
        }
        sleep(0.2).await;
    }
}

crate::cases! {
    /// A push subscription POSTs each message to the app once as a PushedMessage (topic,
    /// subscription, queue, body and attributes byte-exact, first delivery), and a 2xx answer
    /// acknowledges it: its queue is left empty
    case "push.delivered_and_acked", needs Some(Cap::Topics);
    async fn delivered_and_acked(ctx: Ctx) -> CaseOutcome {
        let app = match app(&ctx) { Ok(app) => app, Err(outcome) => return outcome };
        let body = b"\x00pushed\xff\n".to_vec();
        let publish_id = publish(&ctx, app, "taken", &body).await?;
        calls_until(app, &publish_id, Duration::from_secs(20), |c| !c.is_empty()).await?;
        // Time for a duplicate POST to show.
        sleep(0.5).await;
        let calls = app.calls(&publish_id);
        check!(calls.len() == 1, "a message the app took with 200 was POSTed {} times", calls.len());
        let pushed = &calls[0].pushed;
        check!(
            (pushed.topic.as_str(), pushed.subscription.as_str(), pushed.queue.clone()) == (app.topic(), "taken", app.queue("taken")),
            "pushed as topic {:?}, subscription {:?}, queue {:?}", pushed.topic, pushed.subscription, pushed.queue
        );
        let message = pushed.message.as_ref().ok_or("a PushedMessage without its message")?;
        check!(message.body == body, "body changed: {:?}", message.body);
        check!(message.attributes.get("case") == Some(&ctx.prefix), "attribute lost: {:?}", message.attributes);
        check!(message.attributes.get(TOPIC_ATTRIBUTE).map(String::as_str) == Some(app.topic()), "no {TOPIC_ATTRIBUTE}: {:?}", message.attributes);
        check!(message.attributes.get(PUBLISH_ID_ATTRIBUTE) == Some(&publish_id), "no {PUBLISH_ID_ATTRIBUTE}: {:?}", message.attributes);
        check!(message.dequeue_count == 1, "first push has dequeue_count {}", message.dequeue_count);
        check!(message.receipt.is_empty(), "a pushed message carries a receipt: the proxy acks it, not the app");
        emptied(&ctx, &app.queue("taken")).await
    }

    /// A push the app answers with 500 is offered again after a back-off (dequeue count 2) and
    /// acknowledged once the app answers 2xx
    case "push.refused_then_retried", needs Some(Cap::Topics);
    async fn refused_then_retried(ctx: Ctx) -> CaseOutcome {
        let app = match app(&ctx) { Ok(app) => app, Err(outcome) => return outcome };
        let publish_id = publish(&ctx, app, "flaky", b"retry me").await?;
        let calls = calls_until(app, &publish_id, Duration::from_secs(40), |c| c.iter().any(|c| c.answered == 200)).await?;
        check!(calls[0].answered == 500 && calls.len() == 2, "expected a refused POST then an accepted one, got {:?}",
            calls.iter().map(|c| c.answered).collect::<Vec<_>>());
        let count = |c: &PushCall| c.pushed.message.as_ref().map(|m| m.dequeue_count).unwrap_or_default();
        check!(count(&calls[0]) == 1 && count(&calls[1]) == 2, "dequeue counts {} then {}", count(&calls[0]), count(&calls[1]));
        emptied(&ctx, &app.queue("flaky")).await
    }

    /// A push the app always refuses is dead-lettered by the subscription queue's own settings
    /// after max_receives POSTs, body and attributes intact; the app sees no more of it
    case "push.refused_dead_lettered", needs Some(Cap::Topics);
    async fn refused_dead_lettered(ctx: Ctx) -> CaseOutcome {
        let app = match app(&ctx) { Ok(app) => app, Err(outcome) => return outcome };
        if !app.dead_lettering() {
            return not_run("the backend does not declare DEAD_LETTER, so no dead-lettering push subscription was declared");
        }
        let publish_id = publish(&ctx, app, "refused", b"never taken").await?;
        let dlq = app.dead_letter_queue();
        let started = Instant::now();
        let moved = loop {
            let batch = ok(ctx.client.receive(&dlq, Receive::up_to(10).visibility(Duration::from_secs(30))).await, "receive dlq")?;
            if let Some(m) = batch.into_iter().find(|m| m.attributes.get(PUBLISH_ID_ATTRIBUTE) == Some(&publish_id)) {
                break m;
            }
            check!(started.elapsed() < Duration::from_secs(60), "not dead-lettered within 60 s; the app got {} POSTs", app.calls(&publish_id).len());
            sleep(0.3).await;
        };
        check!(moved.body == b"never taken", "dead-lettered body changed: {:?}", moved.body);
        ok(ctx.client.ack(&dlq, &moved.receipt).await, "ack dlq")?;
        sleep(1.0).await;
        let calls = app.calls(&publish_id);
        check!(
            calls.len() == REFUSED_MAX_RECEIVES as usize && calls.iter().all(|c| c.answered == 503),
            "expected {REFUSED_MAX_RECEIVES} refused POSTs before dead-lettering, got {:?}",
            calls.iter().map(|c| c.answered).collect::<Vec<_>>()
        );
        Ok(())
    }
}
