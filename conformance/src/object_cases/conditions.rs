//! The conditions cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// create-only stores once; a second fails with CONDITION_FAILED and changes nothing
    case "object.create_only", needs Some(Cap::ConditionalCreate);
    async fn create_only(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("create").await?;
        let absent = PutOptions { condition: WriteIf::Absent, ..Default::default() };
        let first = ok(ctx.client.put_bytes(&b, "k", "first", absent.clone()).await, "first create")?;
        let err = expect_reason(
            ctx.client.put_bytes(&b, "k", "second", absent).await,
            Reason::ConditionFailed,
            "second create",
        )?;
        check!(err.code == exo_sdk::Code::FailedPrecondition, "CONDITION_FAILED must be FAILED_PRECONDITION");
        check!(read(&ctx, &b, "k").await? == b"first", "a failed create changed the bytes");
        check!(
            ok(ctx.client.head(&b, "k").await, "head")?.etag == first.etag,
            "a failed create changed the ETag"
        );
        Ok(())
    }

    /// if-match replaces at the current ETag and fails at a stale one, changing nothing
    case "object.if_match_write", needs Some(Cap::ConditionalReplace);
    async fn if_match_write(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("ifmatch").await?;
        let v1 = put(&ctx, &b, "k", "1").await?;
        let v2 = ok(
            ctx.client
                .put_bytes(
                    &b,
                    "k",
                    "2",
                    PutOptions { condition: WriteIf::Matches(v1.etag.clone()), ..Default::default() },
                )
                .await,
            "if-match at current",
        )?;
        expect_reason(
            ctx.client
                .put_bytes(
                    &b,
                    "k",
                    "3",
                    PutOptions { condition: WriteIf::Matches(v1.etag), ..Default::default() },
                )
                .await,
            Reason::ConditionFailed,
            "if-match at stale ETag",
        )?;
        check!(read(&ctx, &b, "k").await? == b"2", "a failed if-match write changed the bytes");
        check!(
            ok(ctx.client.head(&b, "k").await, "head")?.etag == v2.etag,
            "a failed if-match write changed the ETag"
        );
        Ok(())
    }

    /// if-match on a missing key fails and creates nothing
    case "object.if_match_missing", needs Some(Cap::ConditionalReplace);
    async fn if_match_missing(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("ifmiss").await?;
        expect_reason(
            ctx.client
                .put_bytes(
                    &b,
                    "k",
                    "v",
                    PutOptions { condition: WriteIf::Matches("abc".into()), ..Default::default() },
                )
                .await,
            Reason::ConditionFailed,
            "if-match on a missing key",
        )?;
        expect_reason(
            ctx.client.head(&b, "k").await,
            Reason::ObjectNotFound,
            "a failed if-match created the key",
        )?;
        Ok(())
    }

    /// 5 workers doing 10 if-match increments each end at exactly 50
    case "object.cas_race", needs Some(Cap::ConditionalReplace);
    async fn cas_race(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("race").await?;
        put(&ctx, &b, "counter", "0").await?;
        let mut workers = Vec::new();
        for _ in 0..5 {
            let client = ctx.client.clone();
            let b = b.clone();
            workers.push(tokio::spawn(async move {
                let (mut done, mut attempts) = (0, 0);
                while done < 10 {
                    attempts += 1;
                    if attempts > 2000 {
                        return Err("too many retries".to_owned());
                    }
                    let (header, body) = client
                        .get_bytes(&b, "counter", GetOptions::default())
                        .await
                        .map_err(|e| e.to_string())?;
                    let n: u64 = String::from_utf8_lossy(&body)
                        .parse()
                        .map_err(|_| "counter is not a number".to_owned())?;
                    let etag = header.info.unwrap_or_default().etag;
                    let options = PutOptions { condition: WriteIf::Matches(etag), ..Default::default() };
                    match client.put_bytes(&b, "counter", (n + 1).to_string(), options).await {
                        Ok(_) => done += 1,
                        Err(err) if err.reason == Reason::ConditionFailed => continue,
                        Err(err) => return Err(err.to_string()),
                    }
                }
                Ok(())
            }));
        }
        for w in workers {
            w.await.map_err(|e| format!("worker panicked: {e}"))??;
        }
        let value = read(&ctx, &b, "counter").await?;
        check!(value == b"50", "counter ended at {:?}", String::from_utf8_lossy(&value));
        Ok(())
    }
}
