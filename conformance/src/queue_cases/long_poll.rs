//! The long-poll cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// A waiting receive returns soon after a message arrives
    case "long_poll.early_return", needs Some(Cap::LongPoll);
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

    /// A waiting receive on an empty queue returns empty after the wait
    case "long_poll.empty_after_wait", needs Some(Cap::LongPoll);
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

    /// A waiting receive whose caller's deadline (x-exo-timeout-ms) is shorter than its wait
    /// answers empty before the deadline, not with a timeout
    case "long_poll.within_callers_deadline", needs Some(Cap::LongPoll);
    async fn long_poll_within_deadline(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("lpdeadline").await?;
        let http = reqwest::Client::new();
        for (wait_seconds, deadline_ms) in [(5, 2500u64), (3, 1200)] {
            let started = Instant::now();
            let response = http
                .post(format!("{}/api/v1/queues/{q}/messages/receive", ctx.http_base))
                .header("x-exo-timeout-ms", deadline_ms.to_string())
                .json(&serde_json::json!({"maxMessages": 1, "waitSeconds": wait_seconds}))
                .send()
                .await
                .map_err(|e| format!("HTTP receive failed: {e}"))?;
            let elapsed = started.elapsed();
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            check!(
                status == 200,
                "wait {wait_seconds} s with a {deadline_ms} ms deadline answered {status}: {body}"
            );
            check!(
                elapsed < Duration::from_millis(deadline_ms),
                "wait {wait_seconds} s answered after {elapsed:?}, past the caller's {deadline_ms} ms"
            );
            let answer: serde_json::Value =
                serde_json::from_str(&body).map_err(|e| format!("bad JSON {body:?}: {e}"))?;
            check!(
                answer["messages"].as_array().is_none_or(Vec::is_empty),
                "an empty queue returned messages: {answer}"
            );
        }
        Ok(())
    }

    /// Callers whose own deadline has passed are answered 504 without touching the backend, and
    /// do not open the circuit breaker for the callers after them
    case "deadline.callers_timeouts_do_not_open_the_breaker", needs None;
    async fn callers_timeouts_do_not_open_the_breaker(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("deadline").await?;
        let http = reqwest::Client::new();
        let url = format!("{}/api/v1/queues/{q}/messages", ctx.http_base);
        let body = serde_json::json!({"message": {"body": "eA=="}});
        for i in 0..8 {
            let response = http
                .post(&url)
                .header("x-exo-timeout-ms", "0")
                .json(&body)
                .send()
                .await
                .map_err(|e| format!("HTTP send failed: {e}"))?;
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            check!(status == 504, "send {i} with a passed deadline answered {status}: {text}");
        }
        let response =
            http.post(&url).json(&body).send().await.map_err(|e| format!("HTTP send failed: {e}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        check!(status == 200, "a send without a deadline after them answered {status}: {text}");
        check!(visible_count(&ctx, &q).await? == 1, "the timed-out sends stored messages");
        Ok(())
    }
}
