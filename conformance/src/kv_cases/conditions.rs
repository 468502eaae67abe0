//! The conditions cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// must_not_exist writes once; a second write fails with CONDITION_FAILED and changes nothing
    case "kv.create_only", needs Some(Cap::CompareAndSet);
    async fn create_only(ctx: Ctx) -> CaseOutcome {
        let t = ctx.table("create").await?;
        let v = ok(ctx.client.put(&t, "k", "first", Put::create()).await, "first create")?;
        let err = expect_reason(
            ctx.client.put(&t, "k", "second", Put::create()).await,
            Reason::ConditionFailed,
            "second create",
        )?;
        check!(
            err.code == exo_sdk::Code::FailedPrecondition,
            "CONDITION_FAILED must be FAILED_PRECONDITION, got {:?}",
            err.code
        );
        let e = value_of(&ctx, &t, "k").await?;
        check!(e.value == b"first" && e.version == v, "a failed create changed the entry: {e:?}");
        Ok(())
    }

    /// version_equals succeeds at the current version and fails at a stale one, changing nothing
    case "kv.cas_version", needs Some(Cap::CompareAndSet);
    async fn cas_version(ctx: Ctx) -> CaseOutcome {
        let t = ctx.table("cas").await?;
        let v1 = ok(ctx.client.put(&t, "k", "1", Put::default()).await, "put")?;
        let v2 = ok(ctx.client.put(&t, "k", "2", Put::if_version(&v1)).await, "cas at current version")?;
        expect_reason(
            ctx.client.put(&t, "k", "3", Put::if_version(&v1)).await,
            Reason::ConditionFailed,
            "cas at stale version",
        )?;
        let e = value_of(&ctx, &t, "k").await?;
        check!(e.value == b"2" && e.version == v2, "a failed CAS changed the entry: {e:?}");
        Ok(())
    }

    /// version_equals on a missing key fails with CONDITION_FAILED and creates nothing
    case "kv.cas_missing_key", needs Some(Cap::CompareAndSet);
    async fn cas_missing(ctx: Ctx) -> CaseOutcome {
        let t = ctx.table("casmiss").await?;
        expect_reason(
            ctx.client.put(&t, "k", "v", Put::if_version("v-unknown")).await,
            Reason::ConditionFailed,
            "cas on missing key",
        )?;
        expect_reason(ctx.client.get(&t, "k").await, Reason::KeyNotFound, "a failed CAS created the key")?;
        Ok(())
    }

    /// A delete at a stale version fails and keeps the key; at the current one it deletes
    case "kv.delete_conditional", needs Some(Cap::CompareAndSet);
    async fn delete_conditional(ctx: Ctx) -> CaseOutcome {
        let t = ctx.table("delcas").await?;
        let v1 = ok(ctx.client.put(&t, "k", "1", Put::default()).await, "put")?;
        let v2 = ok(ctx.client.put(&t, "k", "2", Put::default()).await, "put")?;
        expect_reason(
            ctx.client.delete(&t, "k", Some(&v1)).await,
            Reason::ConditionFailed,
            "delete at stale version",
        )?;
        check!(value_of(&ctx, &t, "k").await?.value == b"2", "a failed conditional delete removed the key");
        check!(
            ok(ctx.client.delete(&t, "k", Some(&v2)).await, "delete at current version")?,
            "deleted must be true"
        );
        expect_reason(ctx.client.get(&t, "k").await, Reason::KeyNotFound, "get after delete")?;
        Ok(())
    }

    /// 5 workers doing 10 compare-and-set increments each end at exactly 50
    case "kv.cas_race", needs Some(Cap::CompareAndSet);
    async fn cas_race(ctx: Ctx) -> CaseOutcome {
        let t = ctx.table("race").await?;
        ok(ctx.client.put(&t, "counter", "0", Put::create()).await, "create counter")?;
        let mut workers = Vec::new();
        for _ in 0..5 {
            let client = ctx.client.clone();
            let t = t.clone();
            workers.push(tokio::spawn(async move {
                let mut done = 0;
                let mut attempts = 0;
                while done < 10 {
                    attempts += 1;
                    if attempts > 2000 {
                        return Err("too many CAS retries".to_owned());
                    }
                    let e = client.get(&t, "counter").await.map_err(|e| e.to_string())?;
                    let n: u64 = String::from_utf8_lossy(&e.value)
                        .parse()
                        .map_err(|_| "counter is not a number".to_owned())?;
                    match client.put(&t, "counter", (n + 1).to_string(), Put::if_version(&e.version)).await {
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
        let e = value_of(&ctx, &t, "counter").await?;
        check!(e.value == b"50", "counter ended at {:?}, expected 50", String::from_utf8_lossy(&e.value));
        Ok(())
    }

    /// An empty version or a false must_not_exist fails with INVALID_ARGUMENT
    case "kv.malformed_condition", needs Some(Cap::CompareAndSet);
    async fn malformed_condition(ctx: Ctx) -> CaseOutcome {
        use exo_sdk::proto::kv::v1 as pb;
        let t = ctx.table("badcond").await?;
        let mut raw = ctx.client.raw();
        for kind in [pb::condition::Kind::VersionEquals(String::new()), pb::condition::Kind::MustNotExist(false)]
        {
            let req = pb::PutRequest {
                table: t.clone(),
                key: "k".into(),
                value: b"v".to_vec(),
                condition: Some(pb::Condition { kind: Some(kind.clone()) }),
                ttl_seconds: 0,
            };
            expect_reason(
                raw.put(req).await.map_err(Error::from),
                Reason::InvalidArgument,
                &format!("{kind:?}"),
            )?;
        }
        expect_reason(ctx.client.get(&t, "k").await, Reason::KeyNotFound, "a rejected put wrote")?;
        let _ = Precondition::None;
        Ok(())
    }
}
