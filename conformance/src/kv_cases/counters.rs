//! The counter cases (Increment). Each case's doc comment is its description in reports.

use super::*;

/// Milliseconds since the Unix epoch, the clock expiries are stated in.
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The counter's value as `Get` reads it: decimal text.
async fn counter_text(ctx: &Ctx, table: &str, key: &str) -> Result<String, String> {
    Ok(String::from_utf8_lossy(&value_of(ctx, table, key).await?.value).into_owned())
}

crate::cases! {
    /// An increment creates an absent counter at its delta, adds and subtracts, and Get reads
    /// the counter as decimal text; every increment answers a new version
    case "kv.increment_counts", needs Some(Cap::Increment);
    async fn increment_counts(ctx: Ctx) -> CaseOutcome {
        let t = ctx.table("incr").await?;
        let c = &ctx.client;
        let first = ok(c.increment_with(&t, "views", 5, None).await, "first increment")?;
        check!(first.value == 5, "an absent counter plus 5 answered {}", first.value);
        check!(ok(c.increment(&t, "views", 37).await, "increment")? == 42, "5 + 37 was not 42");
        check!(counter_text(&ctx, &t, "views").await? == "42", "Get does not read the counter as \"42\"");
        let down = ok(c.increment_with(&t, "views", -50, None).await, "negative increment")?;
        check!(down.value == -8, "42 - 50 answered {}", down.value);
        check!(down.version != first.version, "the version did not change");
        let e = value_of(&ctx, &t, "views").await?;
        check!(e.value == b"-8" && e.version == down.version, "Get after the increments: {e:?}");
        check!(ok(c.increment(&t, "zero", 0).await, "increment by 0")? == 0, "0 on an absent key");
        check!(counter_text(&ctx, &t, "zero").await? == "0", "an increment by 0 did not create \"0\"");
        // A value put as text is a counter too.
        ok(c.put(&t, "typed", "-17", Put::default()).await, "put")?;
        check!(ok(c.increment(&t, "typed", 20).await, "increment a put value")? == 3, "-17 + 20 was not 3");
        Ok(())
    }

    /// 16 clients incrementing one counter at once (deltas 1..=16, 20 times each) end at
    /// exactly the sum of their deltas (a THROTTLED answer wrote nothing and is repeated)
    case "kv.increment_concurrent_sum", needs Some(Cap::Increment);
    async fn increment_concurrent(ctx: Ctx) -> CaseOutcome {
        let t = ctx.table("incrsum").await?;
        let mut workers = Vec::new();
        for delta in 1..=16i64 {
            let (client, t) = (ctx.client.clone(), t.clone());
            workers.push(tokio::spawn(async move {
                let mut done = 0;
                while done < 20 {
                    match client.increment(&t, "hits", delta).await {
                        Ok(_) => done += 1,
                        // Nothing written (a contended compare-and-set loop gave up): again.
                        Err(err) if err.reason == Reason::Throttled => {}
                        Err(err) => return Err(err.to_string()),
                    }
                }
                Ok::<_, String>(())
            }));
        }
        for w in workers {
            w.await.map_err(|e| format!("worker panicked: {e}"))??;
        }
        let expected: i64 = (1..=16).sum::<i64>() * 20;
        let got = counter_text(&ctx, &t, "hits").await?;
        check!(got == expected.to_string(), "the counter ended at {got}, the deltas sum to {expected}");
        Ok(())
    }

    /// Increments racing compare-and-set writers on one key: both count, none is lost
    case "kv.increment_races_cas", needs Some(Cap::Increment);
    async fn increment_races_cas(ctx: Ctx) -> CaseOutcome {
        let t = ctx.table("incrcas").await?;
        ok(ctx.client.put(&t, "n", "0", Put::create()).await, "create")?;
        let incrementer = {
            let (client, t) = (ctx.client.clone(), t.clone());
            tokio::spawn(async move {
                let mut done = 0;
                while done < 40 {
                    match client.increment(&t, "n", 1000).await {
                        Ok(_) => done += 1,
                        Err(err) if err.reason == Reason::Throttled => {}
                        Err(err) => return Err(err.to_string()),
                    }
                }
                Ok::<_, String>(())
            })
        };
        let cas = {
            let (client, t) = (ctx.client.clone(), t.clone());
            tokio::spawn(async move {
                let mut done = 0;
                for _ in 0..4000 {
                    if done == 40 {
                        return Ok(());
                    }
                    let e = client.get(&t, "n").await.map_err(|e| e.to_string())?;
                    let n: i64 = String::from_utf8_lossy(&e.value).parse().map_err(|_| "not a number".to_owned())?;
                    match client.put(&t, "n", (n + 1).to_string(), Put::if_version(&e.version)).await {
                        Ok(_) => done += 1,
                        Err(err) if err.reason == Reason::ConditionFailed => {}
                        Err(err) => return Err(err.to_string()),
                    }
                }
                Err("the compare-and-set writer lost 4000 races".to_owned())
            })
        };
        incrementer.await.map_err(|e| format!("incrementer panicked: {e}"))??;
        cas.await.map_err(|e| format!("CAS writer panicked: {e}"))??;
        let got = counter_text(&ctx, &t, "n").await?;
        check!(got == "40040", "ended at {got}: 40 increments of 1000 and 40 CAS +1 make 40040");
        Ok(())
    }

    /// An increment of a value that is not a counter fails with NOT_A_COUNTER (FAILED_PRECONDITION)
    /// and changes neither the value nor its version
    case "kv.increment_not_a_counter", needs Some(Cap::Increment);
    async fn increment_not_a_counter(ctx: Ctx) -> CaseOutcome {
        let t = ctx.table("incrnan").await?;
        let values: [&[u8]; 8] = [b"abc", b"1.5", b"007", b"+5", b" 5", b"", b"\xff\x00", b"99999999999999999999"];
        for (i, value) in values.into_iter().enumerate() {
            let key = format!("k{i}");
            let version = ok(ctx.client.put(&t, &key, value.to_vec(), Put::default()).await, "put")?;
            let err = expect_reason(
                ctx.client.increment(&t, &key, 1).await,
                Reason::NotACounter,
                &format!("increment of {:?}", String::from_utf8_lossy(value)),
            )?;
            check!(
                err.code == exo_sdk::Code::FailedPrecondition,
                "NOT_A_COUNTER must be FAILED_PRECONDITION, got {:?}",
                err.code
            );
            let e = value_of(&ctx, &t, &key).await?;
            check!(e.value == value && e.version == version, "a refused increment changed {key}: {e:?}");
        }
        Ok(())
    }

    /// An increment past the 64-bit signed range fails with COUNTER_OVERFLOW (OUT_OF_RANGE) and
    /// changes nothing; the extremes themselves are counters
    case "kv.increment_overflow", needs Some(Cap::Increment);
    async fn increment_overflow(ctx: Ctx) -> CaseOutcome {
        let t = ctx.table("incrmax").await?;
        check!(ok(ctx.client.increment(&t, "top", i64::MAX).await, "to the top")? == i64::MAX, "i64::MAX");
        let err = expect_reason(ctx.client.increment(&t, "top", 1).await, Reason::CounterOverflow, "past the top")?;
        check!(err.code == exo_sdk::Code::OutOfRange, "COUNTER_OVERFLOW must be OUT_OF_RANGE, got {:?}", err.code);
        check!(counter_text(&ctx, &t, "top").await? == i64::MAX.to_string(), "an overflow changed the counter");
        check!(ok(ctx.client.increment(&t, "bottom", i64::MIN).await, "to the bottom")? == i64::MIN, "i64::MIN");
        expect_reason(ctx.client.increment(&t, "bottom", -1).await, Reason::CounterOverflow, "past the bottom")?;
        check!(ok(ctx.client.increment(&t, "bottom", 1).await, "back up")? == i64::MIN + 1, "i64::MIN + 1");
        Ok(())
    }

    /// A time to live applies to the counter an increment creates; later increments keep that
    /// expiry; once it passes the counter starts again from its delta
    case "kv.increment_ttl_window", needs Some(Cap::Increment);
    async fn increment_ttl_window(ctx: Ctx) -> CaseOutcome {
        let t = ctx.table("incrttl").await?;
        let window = Some(Duration::from_secs(3));
        if !ctx.backend.capabilities.contains(&(Cap::Ttl as i32)) {
            let asked = ctx.client.increment_with(&t, "w", 1, window).await;
            expect_reason(asked, Reason::Unsupported, "an increment with a TTL where TTL is not declared")?;
            return Ok(());
        }
        ok(ctx.client.increment_with(&t, "w", 1, window).await, "open the window")?;
        let expiry = value_of(&ctx, &t, "w").await?.expires_at_ms;
        check!(expiry > 0, "the created counter has no expiry");
        ok(ctx.client.increment_with(&t, "w", 1, Some(Duration::from_secs(60))).await, "in the window")?;
        match ctx.client.get(&t, "w").await {
            Ok(e) if e.value == b"2" && e.expires_at_ms == expiry => {}
            // The window ended during these calls (a backend slower than the window): the
            // second increment may have opened a new one, so there is nothing to judge here.
            _ if now_ms() >= expiry => {}
            Ok(e) => return Err(format!("a later increment moved the expiry: {e:?}")),
            Err(err) => return Err(format!("get \"w\" failed: {err}")),
        }
        // Past the expiry (by the wall clock the expiry is stated in), the counter starts again.
        let wait = expiry.saturating_sub(now_ms()) + 500;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        check!(ok(ctx.client.increment(&t, "w", 1).await, "after the window")? == 1, "an expired counter did not restart");
        check!(value_of(&ctx, &t, "w").await?.expires_at_ms == 0, "the restarted counter kept the old expiry");
        Ok(())
    }

    /// An increment on a missing table fails with TABLE_NOT_FOUND and creates nothing
    case "kv.increment_missing_table", needs Some(Cap::Increment);
    async fn increment_missing_table(ctx: Ctx) -> CaseOutcome {
        let t = ctx.table("incrgone").await?;
        ok(ctx.client.delete_table(&t).await, "delete table")?;
        expect_reason(ctx.client.increment(&t, "k", 1).await, Reason::TableNotFound, "increment")?;
        Ok(())
    }

    /// Over HTTP the delta may be a number or a decimal string, the value answers as a string
    /// (proto3 JSON), and NOT_A_COUNTER is a 409 problem+json
    case "kv.increment_http", needs Some(Cap::Increment);
    async fn increment_http(ctx: Ctx) -> CaseOutcome {
        let t = ctx.table("incrhttp").await?;
        let http = reqwest::Client::new();
        let url = format!("{}/api/v1/tables/{t}/increment", ctx.http_base);
        let post = |body: serde_json::Value| http.post(&url).json(&body).send();
        let answer: serde_json::Value = post(serde_json::json!({"key": "a/b c", "delta": 7}))
            .await
            .map_err(|e| format!("HTTP increment failed: {e}"))?
            .json()
            .await
            .map_err(|e| format!("bad JSON: {e}"))?;
        check!(answer["value"] == "7", "a numeric delta answered {answer}");
        let answer: serde_json::Value = post(serde_json::json!({"key": "a/b c", "delta": "-9223372036854775800"}))
            .await
            .map_err(|e| format!("HTTP increment failed: {e}"))?
            .json()
            .await
            .map_err(|e| format!("bad JSON: {e}"))?;
        check!(answer["value"] == "-9223372036854775793", "a string delta answered {answer}");
        check!(counter_text(&ctx, &t, "a/b c").await? == "-9223372036854775793", "gRPC reads another value");
        let response = post(serde_json::json!({"key": "a/b c", "delta": "1.5"}))
            .await
            .map_err(|e| format!("HTTP increment failed: {e}"))?;
        check!(response.status() == 400, "a fractional delta answered {}", response.status());
        ok(ctx.client.put(&t, "text", "hello", Put::default()).await, "put")?;
        let response = post(serde_json::json!({"key": "text", "delta": 1}))
            .await
            .map_err(|e| format!("HTTP increment failed: {e}"))?;
        check!(response.status() == 409, "NOT_A_COUNTER answered {}", response.status());
        let problem: serde_json::Value = response.json().await.map_err(|e| format!("bad problem JSON: {e}"))?;
        check!(problem["reason"] == "NOT_A_COUNTER", "problem body: {problem}");
        Ok(())
    }
}
