//! The queues cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// Describe names the backend and gives usable limits
    case "queue.describe", needs None;
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

    /// Creating an existing queue with the same options succeeds with created=false
    case "queue.create_idempotent", needs None;
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

    /// Creating an existing queue with other options fails with QUEUE_ALREADY_EXISTS
    case "queue.create_conflict", needs None;
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

    /// Names outside the portable rules fail with INVALID_NAME and create nothing
    case "queue.invalid_names", needs None;
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

    /// Every call on a missing queue fails with QUEUE_NOT_FOUND
    case "queue.not_found", needs None;
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

    /// Deleting a queue removes it and its messages
    case "queue.delete", needs None;
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

    /// ListQueues filters by prefix and pages without gaps or repeats
    case "queue.list_prefix_paging", needs None;
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

    /// GetQueueInfo counts visible and in-flight messages
    case "queue.info_counts", needs None;
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
}
