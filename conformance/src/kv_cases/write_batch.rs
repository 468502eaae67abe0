//! The write-batch cases (all or none). Each case's doc comment is its description in reports.

use exo_sdk::Write;

use super::*;

/// Whether `key` is absent.
async fn absent(ctx: &Ctx, table: &str, key: &str) -> Result<bool, String> {
    match ctx.client.get(table, key).await {
        Ok(_) => Ok(false),
        Err(err) if err.reason == Reason::KeyNotFound => Ok(true),
        Err(err) => Err(format!("get {key:?}: {err}")),
    }
}

crate::cases! {
    /// A batch of puts and a delete applies every write and answers a version per put and ""
    /// per delete, in order
    case "kv.write_batch_applies", needs Some(Cap::AtomicBatch);
    async fn write_batch_applies(ctx: Ctx) -> CaseOutcome {
        let t = ctx.table("wb").await?;
        ok(ctx.client.put(&t, "old", "x", Put::default()).await, "put")?;
        let writes = vec![
            Write::put("a", b"\x00\xff".to_vec(), Put::default()),
            Write::put("b", "two", Put::create()),
            Write::delete("old"),
            Write::put("c", "three", Put::default().ttl(Duration::from_secs(3600))),
        ];
        let versions = ok(ctx.client.write_batch(&t, writes).await, "write batch")?;
        check!(versions.len() == 4, "4 writes answered {} versions", versions.len());
        check!(versions[2].is_empty(), "a delete answered a version {:?}", versions[2]);
        for (i, (key, value)) in [("a", &b"\x00\xff"[..]), ("b", b"two"), ("c", b"three")].into_iter().enumerate() {
            let slot = if i == 2 { 3 } else { i };
            let e = value_of(&ctx, &t, key).await?;
            check!(e.value == value, "{key} holds {:?}", e.value);
            check!(e.version == versions[slot], "{key}'s version {} is not the batch's {}", e.version, versions[slot]);
        }
        check!(value_of(&ctx, &t, "c").await?.expires_at_ms > 0, "the put with a TTL has no expiry");
        check!(absent(&ctx, &t, "old").await?, "the deleted key is still there");
        Ok(())
    }

    /// One failed condition fails the batch with CONDITION_FAILED naming that write, and no
    /// write of the batch is applied
    case "kv.write_batch_all_or_nothing", needs Some(Cap::AtomicBatch);
    async fn write_batch_all_or_nothing(ctx: Ctx) -> CaseOutcome {
        let t = ctx.table("wbnone").await?;
        let v1 = ok(ctx.client.put(&t, "guarded", "1", Put::default()).await, "put")?;
        ok(ctx.client.put(&t, "guarded", "2", Put::default()).await, "put again")?;
        let kept = ok(ctx.client.put(&t, "kept", "k", Put::default()).await, "put kept")?;
        let writes = vec![
            Write::put("fresh", "new", Put::default()),
            Write::put("guarded", "3", Put::if_version(&v1)),
            Write::delete("kept"),
        ];
        let err = expect_reason(ctx.client.write_batch(&t, writes).await, Reason::ConditionFailed, "stale batch")?;
        check!(err.field == "writes[1]", "the failure names field {:?}, not writes[1]", err.field);
        check!(absent(&ctx, &t, "fresh").await?, "a write before the failed one was applied");
        check!(value_of(&ctx, &t, "guarded").await?.value == b"2", "the guarded key changed");
        let e = value_of(&ctx, &t, "kept").await?;
        check!(e.version == kept, "a write after the failed one was applied: {e:?}");
        // must_not_exist on an existing key, last in the batch, undoes the writes before it.
        let writes = vec![Write::delete("kept"), Write::put("guarded", "x", Put::create())];
        let err = expect_reason(ctx.client.write_batch(&t, writes).await, Reason::ConditionFailed, "create")?;
        check!(err.field == "writes[1]", "the failure names field {:?}", err.field);
        check!(!absent(&ctx, &t, "kept").await?, "the delete before a failed create was applied");
        Ok(())
    }

    /// Compare-and-set transfers between two keys in batches, from 8 clients at once, keep
    /// their sum: no batch lands half
    case "kv.write_batch_transfers", needs Some(Cap::AtomicBatch);
    async fn write_batch_transfers(ctx: Ctx) -> CaseOutcome {
        let t = ctx.table("wbmove").await?;
        ok(ctx.client.put(&t, "from", "1000", Put::default()).await, "put")?;
        ok(ctx.client.put(&t, "to", "0", Put::default()).await, "put")?;
        let mut workers = Vec::new();
        for _ in 0..8 {
            let (client, t) = (ctx.client.clone(), t.clone());
            workers.push(tokio::spawn(async move {
                let mut moved = 0u32;
                for _ in 0..400 {
                    if moved == 5 {
                        break;
                    }
                    let number = |e: &Entry| String::from_utf8_lossy(&e.value).parse::<i64>().map_err(|e| e.to_string());
                    let from = client.get(&t, "from").await.map_err(|e| e.to_string())?;
                    let to = client.get(&t, "to").await.map_err(|e| e.to_string())?;
                    let writes = vec![
                        Write::put("from", (number(&from)? - 1).to_string(), Put::if_version(&from.version)),
                        Write::put("to", (number(&to)? + 1).to_string(), Put::if_version(&to.version)),
                    ];
                    match client.write_batch(&t, writes).await {
                        Ok(_) => moved += 1,
                        Err(err) if err.reason == Reason::ConditionFailed => {}
                        Err(err) => return Err(err.to_string()),
                    }
                }
                if moved < 5 { Err(format!("only {moved} transfers in 400 tries")) } else { Ok(moved) }
            }));
        }
        for w in workers {
            w.await.map_err(|e| format!("worker panicked: {e}"))??;
        }
        let from = value_of(&ctx, &t, "from").await?.value;
        let to = value_of(&ctx, &t, "to").await?.value;
        check!(from == b"960" && to == b"40", "after 40 transfers: from {:?}, to {:?}", String::from_utf8_lossy(&from), String::from_utf8_lossy(&to));
        Ok(())
    }

    /// A malformed batch (empty, a key twice, a delete with a value or must_not_exist, too
    /// many writes, values over the batch limit) fails with INVALID_ARGUMENT or VALUE_TOO_LARGE
    /// and writes nothing
    case "kv.write_batch_invalid", needs Some(Cap::AtomicBatch);
    async fn write_batch_invalid(ctx: Ctx) -> CaseOutcome {
        use exo_sdk::proto::kv::v1 as pb;
        let t = ctx.table("wbbad").await?;
        let limits = ctx.backend.limits.unwrap_or_default();
        expect_reason(ctx.client.write_batch(&t, vec![]).await, Reason::InvalidArgument, "an empty batch")?;
        let twice = vec![Write::put("k", "1", Put::default()), Write::put("k", "2", Put::default())];
        let err = expect_reason(ctx.client.write_batch(&t, twice).await, Reason::InvalidArgument, "a key twice")?;
        check!(err.field == "writes[1].key", "a key twice names field {:?}", err.field);
        let mut raw = ctx.client.raw();
        let with_value = pb::BatchWrite { key: "k".into(), value: b"v".to_vec(), delete: true, ..Default::default() };
        let create_delete = pb::BatchWrite {
            key: "k".into(),
            delete: true,
            condition: Some(pb::Condition { kind: Some(pb::condition::Kind::MustNotExist(true)) }),
            ..Default::default()
        };
        for (write, what) in [(with_value, "a delete with a value"), (create_delete, "a create-only delete")] {
            let req = pb::WriteBatchRequest { table: t.clone(), writes: vec![write] };
            expect_reason(raw.write_batch(req).await.map_err(Error::from), Reason::InvalidArgument, what)?;
        }
        let many = (0..=limits.max_batch_writes).map(|i| Write::put(format!("k{i}"), "v", Put::default())).collect();
        expect_reason(ctx.client.write_batch(&t, many).await, Reason::InvalidArgument, "too many writes")?;
        let chunk = limits.max_value_bytes.min(limits.max_batch_bytes) as usize;
        let count = (limits.max_batch_bytes as usize / chunk.max(1)) + 1;
        if count <= limits.max_batch_writes as usize {
            let heavy = (0..count).map(|i| Write::put(format!("h{i}"), vec![7u8; chunk], Put::default())).collect();
            expect_reason(ctx.client.write_batch(&t, heavy).await, Reason::ValueTooLarge, "values over the batch limit")?;
        }
        let (entries, _) = ok(ctx.client.list_page(&t, "", 0, "", true).await, "list")?;
        check!(entries.is_empty(), "refused batches wrote {} keys", entries.len());
        Ok(())
    }

    /// A batch on a missing table fails with TABLE_NOT_FOUND
    case "kv.write_batch_missing_table", needs Some(Cap::AtomicBatch);
    async fn write_batch_missing_table(ctx: Ctx) -> CaseOutcome {
        let t = ctx.table("wbgone").await?;
        ok(ctx.client.delete_table(&t).await, "delete table")?;
        let writes = vec![Write::put("k", "v", Put::default()), Write::delete("j")];
        expect_reason(ctx.client.write_batch(&t, writes).await, Reason::TableNotFound, "write batch")?;
        Ok(())
    }

    /// Over HTTP a batch takes base64 values and `delete: true`; a failed condition is a 412
    /// problem+json whose field names the write
    case "kv.write_batch_http", needs Some(Cap::AtomicBatch);
    async fn write_batch_http(ctx: Ctx) -> CaseOutcome {
        let t = ctx.table("wbhttp").await?;
        ok(ctx.client.put(&t, "gone", "x", Put::default()).await, "put")?;
        let http = reqwest::Client::new();
        let url = format!("{}/api/v1/tables/{t}/write-batch", ctx.http_base);
        let body = serde_json::json!({"writes": [
            {"key": "a/b c", "value": "AAE="},
            {"key": "gone", "delete": true},
        ]});
        let response = http.post(&url).json(&body).send().await.map_err(|e| format!("HTTP batch failed: {e}"))?;
        check!(response.status() == 200, "a batch over HTTP answered {}", response.status());
        let answer: serde_json::Value = response.json().await.map_err(|e| format!("bad JSON: {e}"))?;
        let e = value_of(&ctx, &t, "a/b c").await?;
        check!(e.value == b"\x00\x01" && answer["versions"][0] == e.version.as_str(), "answer {answer}, entry {e:?}");
        check!(answer["versions"][1] == "", "a delete's version in {answer}");
        check!(absent(&ctx, &t, "gone").await?, "the HTTP delete left the key");
        let body = serde_json::json!({"writes": [
            {"key": "x", "value": "AA=="},
            {"key": "a/b c", "value": "AA==", "condition": {"mustNotExist": true}},
        ]});
        let response = http.post(&url).json(&body).send().await.map_err(|e| format!("HTTP batch failed: {e}"))?;
        check!(response.status() == 412, "a failed condition answered {}", response.status());
        let problem: serde_json::Value = response.json().await.map_err(|e| format!("bad problem JSON: {e}"))?;
        check!(problem["reason"] == "CONDITION_FAILED" && problem["field"] == "writes[1]", "problem: {problem}");
        check!(absent(&ctx, &t, "x").await?, "the refused batch wrote x");
        Ok(())
    }
}
