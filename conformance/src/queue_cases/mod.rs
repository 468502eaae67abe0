//! The queue cases. Every case uses its own queues (see [`Ctx::name`]), never assumes message
//! order, and waits only as long as the behaviour needs (visibility and delay are whole seconds).

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use exo_sdk::{Error, Message, Outgoing, QueueCapability as Cap, QueueOptions, Reason, Receive};

use crate::{CaseOutcome, QueueCase as Case, QueueCtx as Ctx, check, expect_reason, ok};

mod ack;
mod batch;
mod consumers;
mod dead_letter;
mod delay;
mod delivery;
mod http;
mod large;
mod long_poll;
mod message;
mod purge;
mod queues;
mod receive;
mod retention;
mod topic_filters;
mod topic_http;
mod topic_push;
mod topics;
mod visibility;

/// Every case, area by area, in report order.
pub fn queue_cases() -> Vec<Case> {
    [
        queues::cases(),
        message::cases(),
        batch::cases(),
        receive::cases(),
        visibility::cases(),
        ack::cases(),
        dead_letter::cases(),
        delay::cases(),
        retention::cases(),
        long_poll::cases(),
        consumers::cases(),
        delivery::cases(),
        purge::cases(),
        large::cases(),
        http::cases(),
        topics::cases(),
        topic_filters::cases(),
        topic_http::cases(),
        topic_push::cases(),
    ]
    .concat()
}

/// The call that needs `capability`, expected to fail with UNSUPPORTED where it is not declared.
pub async fn probe_unsupported(ctx: &Ctx, capability: Cap) -> Result<(), String> {
    let queue = ctx.queue("probe").await?;
    let c = &ctx.client;
    let result = match capability {
        Cap::LongPoll => c.receive(&queue, Receive::up_to(1).wait(Duration::from_secs(1))).await.map(|_| ()),
        Cap::Delay => {
            c.send_message(&queue, Outgoing::new("x").delay(Duration::from_secs(1))).await.map(|_| ())
        }
        Cap::Retention => c
            .create_queue(
                &ctx.name("probe-ret"),
                QueueOptions { retention_seconds: 3600, ..Default::default() },
            )
            .await
            .map(|_| ()),
        Cap::DeadLetter => c
            .create_queue(
                &ctx.name("probe-dlq"),
                QueueOptions { max_receives: 3, dead_letter_queue: queue.clone(), ..Default::default() },
            )
            .await
            .map(|_| ()),
        Cap::ChangeVisibility => c.change_visibility(&queue, "x", Duration::ZERO).await,
        Cap::Purge => c.purge(&queue).await,
        Cap::StaleReceipts => return stale_receipts_undeclared(ctx, &queue).await,
        Cap::Topics => ctx.topics.create_topic(&ctx.name("probe-topic")).await.map(|_| ()),
        Cap::LargeMessages => return large::large_messages_undeclared(ctx, &queue).await,
        Cap::Durable | Cap::Unspecified => return Err(format!("no probe for {capability:?}")),
    };
    match result {
        Err(err) if err.reason == Reason::Unsupported => Ok(()),
        Err(err) => Err(format!(
            "{} is not declared, so its call must fail with UNSUPPORTED; got {err}",
            capability.as_str_name()
        )),
        Ok(()) => Err(format!(
            "{} is not declared, yet its call succeeded: the declaration lies",
            capability.as_str_name()
        )),
    }
}

/// Receives until the queue yields nothing (messages stay hidden for 30 s, so each is seen once).
async fn drain(ctx: &Ctx, queue: &str) -> Result<Vec<Message>, String> {
    let mut all = Vec::new();
    loop {
        let batch = ok(
            ctx.client.receive(queue, Receive::up_to(10).visibility(Duration::from_secs(30))).await,
            "receive",
        )?;
        if batch.is_empty() {
            return Ok(all);
        }
        all.extend(batch);
    }
}

async fn receive_one(ctx: &Ctx, queue: &str, visibility: Duration) -> Result<Message, String> {
    let batch = ok(ctx.client.receive(queue, Receive::up_to(1).visibility(visibility)).await, "receive")?;
    let count = batch.len();
    batch.into_iter().next().ok_or_else(|| format!("expected a message in {queue}, got {count}"))
}

/// The first message of `queue` that becomes visible within `within` (polled every 200 ms, so
/// a backend without long polls is asked the same way): for checks that a message appears once
/// its time has come, allowing a backend's clock granularity (an emulator may count delays in
/// whole seconds).
async fn receive_within(ctx: &Ctx, queue: &str, within: Duration) -> Result<Message, String> {
    let started = std::time::Instant::now();
    loop {
        let batch = ok(
            ctx.client.receive(queue, Receive::up_to(1).visibility(Duration::from_secs(30))).await,
            "receive",
        )?;
        if let Some(message) = batch.into_iter().next() {
            return Ok(message);
        }
        if started.elapsed() >= within {
            return Err(format!("no message in {queue} within {within:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn receive_none(ctx: &Ctx, queue: &str, why: &str) -> CaseOutcome {
    let batch = ok(ctx.client.receive(queue, Receive::up_to(10)).await, "receive")?;
    check!(batch.is_empty(), "expected no visible message ({why}), got {}", batch.len());
    Ok(())
}

async fn visible_count(ctx: &Ctx, queue: &str) -> Result<u64, String> {
    Ok(ok(ctx.client.queue_info(queue).await, "queue_info")?.visible_messages)
}

async fn sleep(seconds: f64) {
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
}

/// Without STALE_RECEIPTS a superseded receipt may act or do nothing, but must not fail any
/// other way, and the current receipt must still work.
async fn stale_receipts_undeclared(ctx: &Ctx, q: &str) -> CaseOutcome {
    let c = &ctx.client;
    ok(c.send(q, "x").await, "send")?;
    let first = ok(
        c.receive(q, Receive::up_to(1).wait(Duration::from_secs(5)).visibility(Duration::from_secs(1))).await,
        "receive",
    )?;
    let first = first.into_iter().next().ok_or("nothing received")?;
    sleep(1.3).await;
    let second = receive_one(ctx, q, Duration::from_secs(30)).await?;
    match c.ack(q, &first.receipt).await {
        Ok(()) => {}
        Err(e) if e.reason == Reason::ReceiptStale => {
            return Err(
                "a stale receipt was refused with RECEIPT_STALE, yet STALE_RECEIPTS is not declared".into()
            );
        }
        Err(e) => return Err(format!("ack with a superseded receipt failed with {e}")),
    }
    match c.ack(q, &second.receipt).await {
        Ok(()) => Ok(()),
        Err(e) => Err(format!("ack with the current receipt failed: {e}")),
    }
}
