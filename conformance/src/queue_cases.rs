//! The queue cases. Every case uses its own queues (see [`Ctx::name`]), never assumes message
//! order, and waits only as long as the behaviour needs (visibility and delay are whole seconds).

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use exo_sdk::{Error, Message, Outgoing, QueueCapability as Cap, QueueOptions, Reason, Receive};

use crate::{CaseOutcome, QueueCase as Case, QueueCtx as Ctx, case, check, expect_reason, ok};

/// Every queue case, in report order.
pub fn queue_cases() -> Vec<Case> {
    vec![
        case!("queue.describe", None, "Describe names the backend and gives usable limits", describe),
        case!(
            "queue.create_idempotent",
            None,
            "Creating an existing queue with the same options succeeds with created=false",
            create_idempotent
        ),
        case!(
            "queue.create_conflict",
            None,
            "Creating an existing queue with other options fails with QUEUE_ALREADY_EXISTS",
            create_conflict
        ),
        case!(
            "queue.invalid_names",
            None,
            "Names outside the portable rules fail with INVALID_NAME and create nothing",
            invalid_names
        ),
        case!("queue.not_found", None, "Every call on a missing queue fails with QUEUE_NOT_FOUND", not_found),
        case!("queue.delete", None, "Deleting a queue removes it and its messages", delete),
        case!(
            "queue.list_prefix_paging",
            None,
            "ListQueues filters by prefix and pages without gaps or repeats",
            list_prefix_paging
        ),
        case!("queue.info_counts", None, "GetQueueInfo counts visible and in-flight messages", info_counts),
        case!(
            "message.bytes_round_trip",
            None,
            "Bodies come back byte-exact: empty, non-UTF-8, every byte value",
            bytes_round_trip
        ),
        case!(
            "message.attributes_round_trip",
            None,
            "Attributes come back exactly, including non-ASCII values",
            attributes_round_trip
        ),
        case!(
            "message.invalid_attributes",
            None,
            "Bad attribute names or values, or too many, fail with INVALID_ATTRIBUTE and enqueue nothing",
            invalid_attributes
        ),
        case!(
            "message.too_large",
            None,
            "A body over the limit fails with MESSAGE_TOO_LARGE and enqueues nothing; exactly the limit is accepted",
            too_large
        ),
        case!(
            "batch.bad_entry_isolated",
            None,
            "A batch with one bad entry reports exactly that entry and sends the rest",
            batch_bad_entry
        ),
        case!(
            "batch.duplicate_ids",
            None,
            "A batch with duplicate entry ids is rejected whole and sends nothing",
            batch_duplicate_ids
        ),
        case!(
            "batch.limits",
            None,
            "An empty batch or one over max_batch_entries fails with INVALID_ARGUMENT",
            batch_limits
        ),
        case!("receive.at_most_max", None, "Receive never returns more than asked", receive_at_most_max),
        case!(
            "receive.argument_ranges",
            None,
            "Out-of-range max_messages, wait or visibility fail with INVALID_ARGUMENT",
            receive_ranges
        ),
        case!(
            "visibility.hides_then_reappears",
            None,
            "A received message is hidden for its visibility timeout, then reappears",
            hides_then_reappears
        ),
        case!(
            "visibility.extend",
            Some(Cap::ChangeVisibility),
            "ChangeVisibility extends the hidden time and keeps the receipt valid",
            extend_visibility
        ),
        case!(
            "visibility.release_zero",
            Some(Cap::ChangeVisibility),
            "ChangeVisibility to 0 makes the message visible at once",
            release_zero
        ),
        case!("ack.removes", None, "An acked message is never delivered again", ack_removes),
        case!("ack.double_harmless", None, "Acking twice with the same receipt succeeds", double_ack),
        case!(
            "ack.stale_receipt",
            Some(Cap::StaleReceipts),
            "A receipt superseded by a later receive fails with RECEIPT_STALE; the new one works",
            stale_receipt
        ),
        case!(
            "ack.invalid_receipt",
            None,
            "Garbage or another queue's receipt fails with INVALID_RECEIPT",
            invalid_receipt
        ),
        case!(
            "receive.dequeue_count",
            None,
            "The dequeue count starts at 1 and grows with each delivery",
            dequeue_count
        ),
        case!(
            "dead_letter.after_max_receives",
            Some(Cap::DeadLetter),
            "After max_receives deliveries a message moves to the dead-letter queue exactly once",
            dead_letter
        ),
        case!(
            "dead_letter.target_must_exist",
            Some(Cap::DeadLetter),
            "Naming a missing dead-letter queue fails with QUEUE_NOT_FOUND and creates nothing",
            dead_letter_missing
        ),
        case!(
            "delay.per_message_and_queue",
            Some(Cap::Delay),
            "Delayed messages stay invisible until their delay has passed",
            delay
        ),
        case!(
            "delay.out_of_range",
            Some(Cap::Delay),
            "A delay above max_delay_seconds fails with INVALID_ARGUMENT",
            delay_out_of_range
        ),
        case!(
            "retention.expiry",
            Some(Cap::Retention),
            "Messages older than the queue's retention are never delivered",
            retention
        ),
        case!(
            "long_poll.early_return",
            Some(Cap::LongPoll),
            "A waiting receive returns soon after a message arrives",
            long_poll_early
        ),
        case!(
            "long_poll.empty_after_wait",
            Some(Cap::LongPoll),
            "A waiting receive on an empty queue returns empty after the wait",
            long_poll_empty
        ),
        case!(
            "consumers.competing",
            None,
            "Concurrent consumers never hold the same message at once and nothing is lost",
            competing_consumers
        ),
        case!(
            "delivery.unordered_complete",
            None,
            "Every message sent is delivered, whatever the order",
            unordered_complete
        ),
        case!("purge.empties", Some(Cap::Purge), "Purge deletes every message and keeps the queue", purge),
        case!(
            "http.problem_json",
            None,
            "HTTP errors are RFC 9457 problem+json with the stable reason",
            http_problem_json
        ),
        case!(
            "http.cross_protocol",
            None,
            "A message sent over HTTP/JSON is received byte-exact over gRPC",
            http_cross_protocol
        ),
        case!(
            "http.malformed_json",
            None,
            "Malformed JSON fails with 400 MALFORMED_REQUEST and changes nothing",
            http_malformed
        ),
        case!(
            "http.openapi_routes",
            None,
            "Every queue route in the OpenAPI document is served",
            http_openapi_routes
        ),
    ]
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

// ---------- helpers ----------

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

// ---------- queues ----------

async fn describe(ctx: Ctx) -> CaseOutcome {
    let d = ok(ctx.client.describe().await, "describe")?;
    check!(!d.backend.is_empty(), "backend name is empty");
    let l = d.limits.ok_or("no limits")?;
    check!(l.max_message_bytes >= 1024, "max_message_bytes {} is implausibly small", l.max_message_bytes);
    check!(
        l.max_batch_entries >= 1 && l.max_receive_messages >= 1,
        "batch/receive limits must be >= 1: {l:?}"
    );
    check!(l.max_visibility_timeout_seconds >= 60, "max visibility below a minute: {l:?}");
    check!(l.min_retention_seconds <= l.max_retention_seconds, "retention range inverted: {l:?}");
    Ok(())
}

async fn create_idempotent(ctx: Ctx) -> CaseOutcome {
    let name = ctx.name("idem");
    let options = QueueOptions { visibility_timeout_seconds: Some(45), ..Default::default() };
    let (created, info) = ok(ctx.client.create_queue(&name, options.clone()).await, "first create")?;
    check!(created, "first create must report created=true");
    check!(info.name == name, "info names {:?}, not {name:?}", info.name);
    let (created, _) = ok(ctx.client.create_queue(&name, options).await, "second create")?;
    check!(!created, "second create must report created=false");
    let info = ok(ctx.client.queue_info(&name).await, "queue_info")?;
    check!(info.options.and_then(|o| o.visibility_timeout_seconds) == Some(45), "options not kept");
    Ok(())
}

async fn create_conflict(ctx: Ctx) -> CaseOutcome {
    let name = ctx
        .queue_with("conflict", QueueOptions { visibility_timeout_seconds: Some(10), ..Default::default() })
        .await?;
    let other = QueueOptions { visibility_timeout_seconds: Some(20), ..Default::default() };
    expect_reason(
        ctx.client.create_queue(&name, other).await,
        Reason::QueueAlreadyExists,
        "conflicting create",
    )?;
    let info = ok(ctx.client.queue_info(&name).await, "queue_info")?;
    check!(
        info.options.and_then(|o| o.visibility_timeout_seconds) == Some(10),
        "conflicting create changed the options"
    );
    Ok(())
}

async fn invalid_names(ctx: Ctx) -> CaseOutcome {
    let long = "q".repeat(64);
    for bad in [
        "ab",
        "Upper-Case",
        "under_score",
        "-lead",
        "trail-",
        "dou--ble",
        "dot.ted",
        "spa ce",
        "ünï",
        "",
        &long,
    ] {
        let err = expect_reason(
            ctx.client.create_queue(bad, QueueOptions::default()).await,
            Reason::InvalidName,
            bad,
        )?;
        check!(
            err.code == exo_sdk::Code::InvalidArgument,
            "INVALID_NAME must be gRPC INVALID_ARGUMENT, got {:?}",
            err.code
        );
        expect_reason(ctx.client.send(bad, "x").await, Reason::InvalidName, bad)?;
    }
    // A huge name is still INVALID_NAME to the client: what the error quotes is bounded (gRPC
    // clients refuse trailers over 8–16 KiB; an HTTP error body stays small).
    let huge = "q".repeat(10_000);
    expect_reason(
        ctx.client.create_queue(&huge, QueueOptions::default()).await,
        Reason::InvalidName,
        "10 000 characters",
    )?;
    let body = serde_json::json!({ "name": "q".repeat(100_000) });
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/queues", ctx.http_base))
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("HTTP create: {e}"))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| e.to_string())?;
    check!(status == 400 && text.contains("INVALID_NAME"), "a 100 KB name answered {status}");
    check!(text.len() < 4096, "the error body for a 100 KB name is {} bytes", text.len());
    let listed = ok(ctx.client.list_queues("").await, "list")?;
    check!(
        !listed.iter().any(|n| n.contains('_') || n.contains('.') || n.len() < 3),
        "an invalid name was created: {listed:?}"
    );
    Ok(())
}

async fn not_found(ctx: Ctx) -> CaseOutcome {
    let q = ctx.name("missing");
    let c = &ctx.client;
    expect_reason(c.send(&q, "x").await, Reason::QueueNotFound, "send")?;
    expect_reason(c.send_batch(&q, vec![Outgoing::new("x")]).await, Reason::QueueNotFound, "send_batch")?;
    expect_reason(c.receive(&q, Receive::up_to(1)).await, Reason::QueueNotFound, "receive")?;
    expect_reason(c.queue_info(&q).await, Reason::QueueNotFound, "queue_info")?;
    expect_reason(c.delete_queue(&q).await, Reason::QueueNotFound, "delete_queue")?;
    // Ack may reject the receipt before looking up the queue; both are precise errors.
    match c.ack(&q, "bogus-receipt").await {
        Err(e) if matches!(e.reason, Reason::QueueNotFound | Reason::InvalidReceipt) => {}
        other => return Err(format!("ack on a missing queue: expected QUEUE_NOT_FOUND, got {other:?}")),
    }
    let err = expect_reason(c.queue_info(&q).await, Reason::QueueNotFound, "queue_info")?;
    check!(err.is_not_found(), "QUEUE_NOT_FOUND must be gRPC NOT_FOUND, got {:?}", err.code);
    check!(err.resource == q, "error names resource {:?}, expected {q:?}", err.resource);
    Ok(())
}

async fn delete(ctx: Ctx) -> CaseOutcome {
    let q = ctx.queue("del").await?;
    ok(ctx.client.send(&q, "x").await, "send")?;
    ok(ctx.client.delete_queue(&q).await, "delete")?;
    expect_reason(ctx.client.queue_info(&q).await, Reason::QueueNotFound, "info after delete")?;
    let (created, info) = ok(ctx.client.create_queue(&q, QueueOptions::default()).await, "re-create")?;
    check!(created, "re-create after delete must report created=true");
    check!(info.visible_messages == 0, "messages survived the delete");
    receive_none(&ctx, &q, "queue was deleted and re-created").await
}

async fn list_prefix_paging(ctx: Ctx) -> CaseOutcome {
    let mut expected = Vec::new();
    for i in 0..5 {
        expected.push(ctx.queue(&format!("ls-{i}")).await?);
    }
    ctx.queue("other").await?;
    let prefix = ctx.name("ls-");
    let all = ok(ctx.client.list_queues(&prefix).await, "list")?;
    check!(all == expected, "list by prefix: expected {expected:?}, got {all:?}");
    let mut paged = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let (page, next) = ok(ctx.client.list_queues_page(&prefix, 2, &token).await, "list page")?;
        check!(page.len() <= 2, "page of {} exceeds page_size 2", page.len());
        paged.extend(page);
        if next.is_empty() {
            break;
        }
        token = next;
    }
    check!(paged == expected, "paged listing: expected {expected:?}, got {paged:?}");
    expect_reason(
        ctx.client.list_queues_page(&prefix, 2, "not-a-token!").await,
        Reason::InvalidArgument,
        "bad token",
    )?;
    Ok(())
}

async fn info_counts(ctx: Ctx) -> CaseOutcome {
    let q = ctx.queue("info").await?;
    for i in 0..3 {
        ok(ctx.client.send(&q, format!("m{i}")).await, "send")?;
    }
    let info = ok(ctx.client.queue_info(&q).await, "info")?;
    check!(info.visible_messages == 3 && info.in_flight_messages == 0, "after 3 sends: {info:?}");
    receive_one(&ctx, &q, Duration::from_secs(30)).await?;
    let info = ok(ctx.client.queue_info(&q).await, "info")?;
    check!(info.visible_messages == 2 && info.in_flight_messages == 1, "after 1 receive: {info:?}");
    Ok(())
}

// ---------- messages ----------

async fn bytes_round_trip(ctx: Ctx) -> CaseOutcome {
    let q = ctx.queue("bytes").await?;
    let every_byte: Vec<u8> = (0..=255u8).collect();
    let bodies: Vec<Vec<u8>> =
        vec![Vec::new(), vec![0xff, 0xfe, 0x00, 0xc3, 0x28], every_byte, b"plain text\n".to_vec()];
    for body in &bodies {
        ok(ctx.client.send(&q, body.clone()).await, "send")?;
    }
    let mut got: Vec<Vec<u8>> = drain(&ctx, &q).await?.into_iter().map(|m| m.body).collect();
    let mut want = bodies;
    got.sort();
    want.sort();
    check!(got == want, "bodies changed in transit: sent {want:?}, got {got:?}");
    Ok(())
}

async fn attributes_round_trip(ctx: Ctx) -> CaseOutcome {
    let q = ctx.queue("attrs").await?;
    let sent = Outgoing::new("x")
        .attribute("trace-id", "abc123")
        .attribute("Content_Type", "application/json")
        .attribute("emoji", "snow ☃ and \u{1F600}")
        .attribute("multi.line", "a\tb\nc");
    let expected = sent.attributes.clone();
    ok(ctx.client.send_message(&q, sent).await, "send")?;
    let m = receive_one(&ctx, &q, Duration::from_secs(30)).await?;
    check!(m.attributes == expected, "attributes changed: sent {expected:?}, got {:?}", m.attributes);
    Ok(())
}

async fn invalid_attributes(ctx: Ctx) -> CaseOutcome {
    let q = ctx.queue("badattrs").await?;
    let cases = [
        ("", "v"),
        ("has space", "v"),
        ("exo.reserved", "v"),
        ("AWS.reserved", "v"),
        (".lead", "v"),
        ("a..b", "v"),
        ("empty", ""),
        ("ctrl", "bell\u{7}"),
    ];
    for (name, value) in cases {
        expect_reason(
            ctx.client.send_message(&q, Outgoing::new("x").attribute(name, value)).await,
            Reason::InvalidAttribute,
            &format!("attribute {name:?}={value:?}"),
        )?;
    }
    let max = ctx.limits().max_attributes as usize;
    let mut crowded = Outgoing::new("x");
    for i in 0..=max {
        crowded = crowded.attribute(format!("a{i}"), "v");
    }
    expect_reason(
        ctx.client.send_message(&q, crowded).await,
        Reason::InvalidAttribute,
        "too many attributes",
    )?;
    check!(visible_count(&ctx, &q).await? == 0, "a rejected message was enqueued");
    Ok(())
}

async fn too_large(ctx: Ctx) -> CaseOutcome {
    let q = ctx.queue("large").await?;
    let max = ctx.limits().max_message_bytes as usize;
    let err = expect_reason(
        ctx.client.send(&q, vec![b'x'; max + 1]).await,
        Reason::MessageTooLarge,
        "oversize send",
    )?;
    check!(!err.retryable, "MESSAGE_TOO_LARGE must not be retryable");
    check!(visible_count(&ctx, &q).await? == 0, "the oversize message was enqueued");
    // Attributes count towards the limit.
    let with_attr = Outgoing::new(vec![b'y'; max - 4]).attribute("abc", "de");
    expect_reason(
        ctx.client.send_message(&q, with_attr).await,
        Reason::MessageTooLarge,
        "body+attributes over limit",
    )?;
    ok(ctx.client.send(&q, vec![b'z'; max]).await, "send of exactly the limit")?;
    let m = receive_one(&ctx, &q, Duration::from_secs(30)).await?;
    check!(m.body.len() == max && m.body.iter().all(|b| *b == b'z'), "limit-sized body changed");
    Ok(())
}

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

async fn batch_limits(ctx: Ctx) -> CaseOutcome {
    let q = ctx.queue("batchlim").await?;
    expect_reason(ctx.client.send_batch(&q, Vec::new()).await, Reason::InvalidArgument, "empty batch")?;
    let too_many = (0..=ctx.limits().max_batch_entries).map(|i| Outgoing::new(i.to_string())).collect();
    expect_reason(ctx.client.send_batch(&q, too_many).await, Reason::InvalidArgument, "oversize batch")?;
    check!(visible_count(&ctx, &q).await? == 0, "a rejected batch sent messages");
    Ok(())
}

// ---------- receive, visibility, ack ----------

async fn receive_at_most_max(ctx: Ctx) -> CaseOutcome {
    let q = ctx.queue("atmost").await?;
    let results = ok(
        ctx.client.send_batch(&q, (0..10).map(|i| Outgoing::new(i.to_string())).collect()).await,
        "batch",
    )?;
    check!(results.iter().all(Result::is_ok), "batch send failed: {results:?}");
    for ask in [1u32, 3] {
        let got = ok(
            ctx.client.receive(&q, Receive::up_to(ask).visibility(Duration::from_secs(30))).await,
            "receive",
        )?;
        check!(!got.is_empty() && got.len() <= ask as usize, "asked for {ask}, got {}", got.len());
    }
    Ok(())
}

async fn receive_ranges(ctx: Ctx) -> CaseOutcome {
    let q = ctx.queue("ranges").await?;
    let l = ctx.limits();
    expect_reason(
        ctx.client.receive(&q, Receive::up_to(l.max_receive_messages + 1)).await,
        Reason::InvalidArgument,
        "max_messages",
    )?;
    let too_long_wait = Receive::up_to(1).wait(Duration::from_secs(u64::from(l.max_wait_seconds) + 1));
    let result = ctx.client.receive(&q, too_long_wait).await;
    // Without long polling the wait itself is unsupported; either way it is rejected.
    match result {
        Err(e) if matches!(e.reason, Reason::InvalidArgument | Reason::Unsupported) => {}
        other => return Err(format!("wait above max: expected INVALID_ARGUMENT, got {other:?}")),
    }
    let vis =
        Receive::up_to(1).visibility(Duration::from_secs(u64::from(l.max_visibility_timeout_seconds) + 1));
    expect_reason(ctx.client.receive(&q, vis).await, Reason::InvalidArgument, "visibility")?;
    Ok(())
}

async fn hides_then_reappears(ctx: Ctx) -> CaseOutcome {
    let q = ctx.queue("vis").await?;
    let id = ok(ctx.client.send(&q, "v").await, "send")?;
    let first = receive_one(&ctx, &q, Duration::from_secs(1)).await?;
    check!(first.message_id == id, "received {} instead of {id}", first.message_id);
    receive_none(&ctx, &q, "the message is in flight").await?;
    sleep(1.3).await;
    let again = receive_one(&ctx, &q, Duration::from_secs(30)).await?;
    check!(again.message_id == id, "a different message reappeared");
    check!(again.body == b"v", "body changed on redelivery");
    Ok(())
}

async fn extend_visibility(ctx: Ctx) -> CaseOutcome {
    let q = ctx.queue("extend").await?;
    ok(ctx.client.send(&q, "x").await, "send")?;
    let m = receive_one(&ctx, &q, Duration::from_secs(1)).await?;
    ok(ctx.client.change_visibility(&q, &m.receipt, Duration::from_secs(4)).await, "extend")?;
    sleep(1.5).await;
    receive_none(&ctx, &q, "visibility was extended to 4 s").await?;
    ok(ctx.client.ack(&q, &m.receipt).await, "ack with the receipt after extending")?;
    sleep(3.0).await;
    receive_none(&ctx, &q, "the message was acked").await
}

async fn release_zero(ctx: Ctx) -> CaseOutcome {
    let q = ctx.queue("release").await?;
    let id = ok(ctx.client.send(&q, "x").await, "send")?;
    let m = receive_one(&ctx, &q, Duration::from_secs(300)).await?;
    ok(ctx.client.change_visibility(&q, &m.receipt, Duration::ZERO).await, "release")?;
    let again = receive_one(&ctx, &q, Duration::from_secs(30)).await?;
    check!(again.message_id == id, "released message not redelivered");
    check!(again.dequeue_count == 2, "dequeue count after release: {}", again.dequeue_count);
    Ok(())
}

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

async fn double_ack(ctx: Ctx) -> CaseOutcome {
    let q = ctx.queue("dack").await?;
    ok(ctx.client.send(&q, "x").await, "send")?;
    let m = receive_one(&ctx, &q, Duration::from_secs(30)).await?;
    ok(ctx.client.ack(&q, &m.receipt).await, "first ack")?;
    ok(ctx.client.ack(&q, &m.receipt).await, "second ack")
}

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

async fn dequeue_count(ctx: Ctx) -> CaseOutcome {
    let q = ctx.queue("dqc").await?;
    ok(ctx.client.send(&q, "x").await, "send")?;
    for expected in 1..=3 {
        let m = receive_one(&ctx, &q, Duration::ZERO).await?;
        check!(m.dequeue_count == expected, "delivery {expected} reported dequeue_count {}", m.dequeue_count);
    }
    Ok(())
}

// ---------- dead letter, delay, retention, long poll ----------

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
    let dead = drain(&ctx, &dlq).await?;
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

async fn delay(ctx: Ctx) -> CaseOutcome {
    // Long enough that a slow backend (an emulator on a busy machine) still answers every check
    // below while the message is delayed; each check says how late it came if it did not.
    const DELAY: Duration = Duration::from_secs(6);
    let q = ctx.queue("delay").await?;
    let dq = ctx.queue_with("qdelay", QueueOptions { delay_seconds: 6, ..Default::default() }).await?;
    let sent = std::time::Instant::now();
    ok(ctx.client.send_message(&q, Outgoing::new("late").delay(DELAY)).await, "delayed send")?;
    ok(ctx.client.send(&dq, "queue-delayed").await, "send on delayed queue")?;
    ok(ctx.client.send_message(&dq, Outgoing::new("now").delay(Duration::ZERO)).await, "undelayed send")?;
    let info = ok(ctx.client.queue_info(&q).await, "info")?;
    // Counted as not visible. Azure Storage Queue cannot tell a delayed message from one in
    // flight (both are merely invisible), so either count may hold it.
    check!(
        info.visible_messages == 0 && info.delayed_messages + info.in_flight_messages == 1,
        "delayed message counted as visible or not at all ({:?} after sending): {info:?}",
        sent.elapsed()
    );
    receive_none(&ctx, &q, "the message is delayed 6 s").await?;
    let immediate = drain(&ctx, &dq).await?;
    check!(
        immediate.len() == 1 && immediate[0].body == b"now",
        "only the undelayed message may be visible ({:?} after sending): {immediate:?}",
        sent.elapsed()
    );
    check!(sent.elapsed() < DELAY, "the checks above took {:?}, longer than the delay", sent.elapsed());
    tokio::time::sleep(DELAY.saturating_sub(sent.elapsed()) + Duration::from_millis(300)).await;
    check!(receive_one(&ctx, &q, Duration::from_secs(30)).await?.body == b"late", "delayed message wrong");
    check!(
        receive_one(&ctx, &dq, Duration::from_secs(30)).await?.body == b"queue-delayed",
        "queue-delayed message wrong"
    );
    check!(
        sent.elapsed() >= Duration::from_millis(5_900),
        "a delayed message arrived after {:?}",
        sent.elapsed()
    );
    Ok(())
}

async fn delay_out_of_range(ctx: Ctx) -> CaseOutcome {
    let q = ctx.queue("delayrange").await?;
    let over = Duration::from_secs(u64::from(ctx.limits().max_delay_seconds) + 1);
    expect_reason(
        ctx.client.send_message(&q, Outgoing::new("x").delay(over)).await,
        Reason::InvalidArgument,
        "message delay",
    )?;
    let options = QueueOptions { delay_seconds: ctx.limits().max_delay_seconds + 1, ..Default::default() };
    expect_reason(
        ctx.client.create_queue(&ctx.name("delayq"), options).await,
        Reason::InvalidArgument,
        "queue delay",
    )?;
    check!(visible_count(&ctx, &q).await? == 0, "a rejected message was enqueued");
    Ok(())
}

async fn retention(ctx: Ctx) -> CaseOutcome {
    let seconds = ctx.limits().min_retention_seconds.max(2);
    let q = ctx.queue_with("ret", QueueOptions { retention_seconds: seconds, ..Default::default() }).await?;
    ok(ctx.client.send(&q, "short-lived").await, "send")?;
    let m = receive_one(&ctx, &q, Duration::ZERO).await?;
    check!(m.body == b"short-lived", "message changed");
    sleep(f64::from(seconds) + 0.5).await;
    receive_none(&ctx, &q, "the message outlived its retention").await?;
    let options =
        QueueOptions { retention_seconds: ctx.limits().max_retention_seconds + 1, ..Default::default() };
    expect_reason(
        ctx.client.create_queue(&ctx.name("retbad"), options).await,
        Reason::InvalidArgument,
        "retention above max",
    )?;
    Ok(())
}

async fn long_poll_early(ctx: Ctx) -> CaseOutcome {
    let q = ctx.queue("lp").await?;
    let sender = ctx.client.clone();
    let target = q.clone();
    let send = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sender.send(&target, "wake").await
    });
    let started = Instant::now();
    let got =
        ok(ctx.client.receive(&q, Receive::up_to(1).wait(Duration::from_secs(10))).await, "waiting receive")?;
    let elapsed = started.elapsed();
    ok(
        send.await.map_err(|e| Error::client(Reason::Internal, e.to_string(), false)).and_then(|r| r),
        "send",
    )?;
    check!(got.len() == 1 && got[0].body == b"wake", "waiting receive returned {got:?}");
    check!(
        elapsed < Duration::from_secs(5),
        "receive took {elapsed:?} although a message arrived after 0.3 s"
    );
    Ok(())
}

async fn long_poll_empty(ctx: Ctx) -> CaseOutcome {
    let q = ctx.queue("lpempty").await?;
    let started = Instant::now();
    let got =
        ok(ctx.client.receive(&q, Receive::up_to(1).wait(Duration::from_secs(2))).await, "waiting receive")?;
    let elapsed = started.elapsed();
    check!(got.is_empty(), "empty queue returned messages");
    check!(elapsed >= Duration::from_millis(1800), "returned after {elapsed:?}, before the 2 s wait");
    check!(elapsed < Duration::from_secs(6), "returned after {elapsed:?}, far beyond the 2 s wait");
    Ok(())
}

// ---------- concurrency and delivery ----------

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

async fn purge(ctx: Ctx) -> CaseOutcome {
    let q = ctx.queue("purge").await?;
    for i in 0..5 {
        ok(ctx.client.send(&q, format!("{i}")).await, "send")?;
    }
    receive_one(&ctx, &q, Duration::from_secs(1)).await?;
    ok(ctx.client.purge(&q).await, "purge")?;
    sleep(1.3).await;
    receive_none(&ctx, &q, "the queue was purged (in-flight messages included)").await?;
    ok(ctx.client.queue_info(&q).await, "queue survives purge")?;
    ok(ctx.client.send(&q, "after").await, "send after purge")?;
    check!(
        receive_one(&ctx, &q, Duration::from_secs(30)).await?.body == b"after",
        "queue unusable after purge"
    );
    Ok(())
}

// ---------- HTTP/JSON ----------

async fn http_problem_json(ctx: Ctx) -> CaseOutcome {
    let http = reqwest::Client::new();
    let q = ctx.name("nohttp");
    let response = http
        .post(format!("{}/api/v1/queues/{q}/messages", ctx.http_base))
        .json(&serde_json::json!({"message": {"body": "eA=="}}))
        .send()
        .await
        .map_err(|e| format!("HTTP send failed: {e}"))?;
    check!(response.status() == 404, "expected 404, got {}", response.status());
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    check!(content_type.starts_with("application/problem+json"), "content-type {content_type:?}");
    let body: serde_json::Value =
        response.json().await.map_err(|e| format!("problem body is not JSON: {e}"))?;
    check!(body["reason"] == "QUEUE_NOT_FOUND", "reason {:?}", body["reason"]);
    check!(
        body["status"] == 404 && body["type"].is_string() && body["title"].is_string(),
        "not RFC 9457 shaped: {body}"
    );
    check!(body["retryable"] == false, "retryable flag missing: {body}");
    Ok(())
}

async fn http_cross_protocol(ctx: Ctx) -> CaseOutcome {
    use base64::Engine as _;
    let q = ctx.queue("xproto").await?;
    let body = vec![0u8, 159, 146, 150, 255, b'\n'];
    let encoded = base64::engine::general_purpose::STANDARD.encode(&body);
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/queues/{q}/messages", ctx.http_base))
        .json(&serde_json::json!({"message": {"body": encoded, "attributes": {"via": "http"}}}))
        .send()
        .await
        .map_err(|e| format!("HTTP send failed: {e}"))?;
    check!(response.status() == 200, "HTTP send answered {}", response.status());
    let sent: serde_json::Value = response.json().await.map_err(|e| format!("bad JSON: {e}"))?;
    let m = receive_one(&ctx, &q, Duration::from_secs(30)).await?;
    check!(m.body == body, "bytes changed between HTTP and gRPC: {:?}", m.body);
    check!(sent["messageId"] == m.message_id.as_str(), "message id differs: {sent} vs {}", m.message_id);
    check!(m.attributes.get("via").map(String::as_str) == Some("http"), "attributes lost");
    Ok(())
}

async fn http_malformed(ctx: Ctx) -> CaseOutcome {
    let q = ctx.queue("badjson").await?;
    let http = reqwest::Client::new();
    for body in ["{not json", r#"{"message": {"body": "***not base64***"}}"#, r#"{"mesage": {}}"#] {
        let response = http
            .post(format!("{}/api/v1/queues/{q}/messages", ctx.http_base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("HTTP send failed: {e}"))?;
        check!(response.status() == 400, "{body:?}: expected 400, got {}", response.status());
        let problem: serde_json::Value =
            response.json().await.map_err(|e| format!("bad problem body: {e}"))?;
        check!(problem["reason"] == "MALFORMED_REQUEST", "{body:?}: reason {:?}", problem["reason"]);
    }
    check!(visible_count(&ctx, &q).await? == 0, "a malformed request enqueued a message");
    Ok(())
}

async fn http_openapi_routes(ctx: Ctx) -> CaseOutcome {
    let q = ctx.queue("openapi").await?;
    crate::openapi_check::documented_routes_are_served(&ctx.http_base, &["queues", "meta"], &[("queue", &q)])
        .await
}
