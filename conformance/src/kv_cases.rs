//! The key-value cases. Every case uses its own tables; waits are whole seconds where the
//! behaviour needs time (TTL).

use std::{collections::HashSet, time::Duration};

use exo_sdk::{Entry, Error, KvCapability as Cap, Precondition, Put, Reason};

use crate::{CaseOutcome, KvCase as Case, KvCtx as Ctx, case, check, expect_reason, ok};

/// Every key-value case, in report order.
pub fn kv_cases() -> Vec<Case> {
    vec![
        case!("kv.describe", None, "Describe names the backend and gives usable limits", describe),
        case!(
            "kv.table_create_idempotent",
            None,
            "Creating a table twice succeeds; the second reports created=false",
            table_idempotent
        ),
        case!(
            "kv.table_invalid_names",
            None,
            "Table names outside the portable rules fail with INVALID_NAME and create nothing",
            table_invalid_names
        ),
        case!(
            "kv.table_not_found",
            None,
            "Every call on a missing table fails with TABLE_NOT_FOUND",
            table_not_found
        ),
        case!("kv.table_delete", None, "Deleting a table removes its keys", table_delete),
        case!(
            "kv.bytes_round_trip",
            None,
            "Values come back byte-exact: empty, binary, every byte value",
            bytes_round_trip
        ),
        case!(
            "kv.missing_is_not_found",
            None,
            "A missing key is KEY_NOT_FOUND, never an empty value; an empty value is found",
            missing_is_not_found
        ),
        case!(
            "kv.versions_change",
            None,
            "Every write returns a new version, which Get reports",
            versions_change
        ),
        case!(
            "kv.create_only",
            Some(Cap::CompareAndSet),
            "must_not_exist writes once; a second write fails with CONDITION_FAILED and changes nothing",
            create_only
        ),
        case!(
            "kv.cas_version",
            Some(Cap::CompareAndSet),
            "version_equals succeeds at the current version and fails at a stale one, changing nothing",
            cas_version
        ),
        case!(
            "kv.cas_missing_key",
            Some(Cap::CompareAndSet),
            "version_equals on a missing key fails with CONDITION_FAILED and creates nothing",
            cas_missing
        ),
        case!("kv.delete", None, "Delete removes a key and reports whether it existed", delete),
        case!(
            "kv.delete_conditional",
            Some(Cap::CompareAndSet),
            "A delete at a stale version fails and keeps the key; at the current one it deletes",
            delete_conditional
        ),
        case!(
            "kv.ttl_expiry",
            Some(Cap::Ttl),
            "An expired value is never returned, listed or batch-read, and a create-only write succeeds over it",
            ttl_expiry
        ),
        case!(
            "kv.ttl_range",
            Some(Cap::Ttl),
            "A TTL above max_ttl_seconds fails with INVALID_ARGUMENT and writes nothing",
            ttl_range
        ),
        case!(
            "kv.list_prefix_paging",
            Some(Cap::List),
            "List filters by prefix, in key order, and pages without gaps or repeats",
            list_paging
        ),
        case!(
            "kv.list_keys_only",
            Some(Cap::List),
            "keys_only lists keys and versions without values",
            list_keys_only
        ),
        case!(
            "kv.list_consistent_paging",
            Some(Cap::List),
            "Keys inserted or deleted between pages never cause repeats, and untouched keys are never skipped",
            list_consistent
        ),
        case!(
            "kv.batch_get",
            None,
            "BatchGet returns found entries in request order and names the missing keys",
            batch_get
        ),
        case!(
            "kv.batch_get_limits",
            None,
            "An empty, oversize or duplicated BatchGet fails with INVALID_ARGUMENT",
            batch_get_limits
        ),
        case!(
            "kv.key_limits",
            None,
            "Empty or oversize keys fail with INVALID_ARGUMENT; a maximum-size key works",
            key_limits
        ),
        case!(
            "kv.value_too_large",
            None,
            "A value over the limit fails with VALUE_TOO_LARGE and the previous value stays",
            value_too_large
        ),
        case!(
            "kv.special_keys",
            None,
            "Keys with / \\ # ? % spaces, unicode and control characters round-trip and list exactly",
            special_keys
        ),
        case!(
            "kv.cas_race",
            Some(Cap::CompareAndSet),
            "5 workers doing 10 compare-and-set increments each end at exactly 50",
            cas_race
        ),
        case!(
            "kv.malformed_condition",
            Some(Cap::CompareAndSet),
            "An empty version or a false must_not_exist fails with INVALID_ARGUMENT",
            malformed_condition
        ),
        case!(
            "kv.http_round_trip",
            None,
            "A value written over HTTP/JSON is read byte-exact over gRPC, and the reverse",
            http_round_trip
        ),
        case!(
            "kv.http_problem_json",
            None,
            "A missing key over HTTP is a 404 problem+json with reason KEY_NOT_FOUND",
            http_problem_json
        ),
        case!(
            "kv.http_openapi_routes",
            None,
            "Every key-value route in the OpenAPI document is served",
            http_openapi_routes
        ),
    ]
}

/// The call that needs `capability`, expected to fail with UNSUPPORTED where it is not declared.
pub async fn probe_unsupported(ctx: &Ctx, capability: Cap) -> Result<(), String> {
    let table = ctx.table("probe").await?;
    let c = &ctx.client;
    let result = match capability {
        Cap::CompareAndSet => c.put(&table, "k", "v", Put::create()).await.map(|_| ()),
        Cap::Ttl => c.put(&table, "k", "v", Put::default().ttl(Duration::from_secs(60))).await.map(|_| ()),
        Cap::List => c.list_page(&table, "", 0, "", false).await.map(|_| ()),
        Cap::Unspecified => return Err("no probe for UNSPECIFIED".into()),
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

async fn value_of(ctx: &Ctx, table: &str, key: &str) -> Result<Entry, String> {
    ok(ctx.client.get(table, key).await, &format!("get {key:?}"))
}

async fn describe(ctx: Ctx) -> CaseOutcome {
    let d = ok(ctx.client.describe().await, "describe")?;
    check!(!d.backend.is_empty(), "backend name is empty");
    let l = d.limits.ok_or("no limits")?;
    check!(l.max_key_bytes >= 256 && l.max_value_bytes >= 1024, "limits implausibly small: {l:?}");
    check!(l.max_batch_keys >= 1 && l.max_page_size >= 1, "batch/page limits must be >= 1: {l:?}");
    Ok(())
}

async fn table_idempotent(ctx: Ctx) -> CaseOutcome {
    let name = ctx.name("idem");
    check!(
        ok(ctx.client.create_table(&name).await, "first create")?,
        "first create must report created=true"
    );
    check!(
        !ok(ctx.client.create_table(&name).await, "second create")?,
        "second create must report created=false"
    );
    check!(ok(ctx.client.list_tables().await, "list")?.contains(&name), "table not listed");
    Ok(())
}

async fn table_invalid_names(ctx: Ctx) -> CaseOutcome {
    for bad in ["ab", "Upper", "under_score", "-lead", "dou--ble", "sp ace", ""] {
        expect_reason(ctx.client.create_table(bad).await, Reason::InvalidName, bad)?;
    }
    let tables = ok(ctx.client.list_tables().await, "list")?;
    check!(
        !tables.iter().any(|t| t.contains('_') || t.contains(' ') || t.len() < 3),
        "an invalid table was created: {tables:?}"
    );
    Ok(())
}

async fn table_not_found(ctx: Ctx) -> CaseOutcome {
    let t = ctx.name("missing");
    let c = &ctx.client;
    expect_reason(c.get(&t, "k").await, Reason::TableNotFound, "get")?;
    expect_reason(c.put(&t, "k", "v", Put::default()).await, Reason::TableNotFound, "put")?;
    expect_reason(c.delete(&t, "k", None).await, Reason::TableNotFound, "delete")?;
    expect_reason(c.batch_get(&t, &["k"]).await, Reason::TableNotFound, "batch_get")?;
    expect_reason(c.delete_table(&t).await, Reason::TableNotFound, "delete_table")?;
    let err = expect_reason(c.get(&t, "k").await, Reason::TableNotFound, "get")?;
    check!(err.is_not_found(), "TABLE_NOT_FOUND must be gRPC NOT_FOUND, got {:?}", err.code);
    Ok(())
}

async fn table_delete(ctx: Ctx) -> CaseOutcome {
    let t = ctx.table("del").await?;
    ok(ctx.client.put(&t, "k", "v", Put::default()).await, "put")?;
    ok(ctx.client.delete_table(&t).await, "delete_table")?;
    expect_reason(ctx.client.get(&t, "k").await, Reason::TableNotFound, "get after delete")?;
    ok(ctx.client.create_table(&t).await, "re-create")?;
    expect_reason(ctx.client.get(&t, "k").await, Reason::KeyNotFound, "key survived table deletion")?;
    Ok(())
}

async fn bytes_round_trip(ctx: Ctx) -> CaseOutcome {
    let t = ctx.table("bytes").await?;
    let every: Vec<u8> = (0..=255u8).collect();
    for (key, value) in [
        ("empty", Vec::new()),
        ("binary", vec![0xff, 0x00, 0xfe, 0xc3, 0x28]),
        ("every", every),
        ("text", b"hello\n".to_vec()),
    ] {
        ok(ctx.client.put(&t, key, value.clone(), Put::default()).await, "put")?;
        let got = value_of(&ctx, &t, key).await?;
        check!(got.value == value, "{key}: value changed: sent {value:?}, got {:?}", got.value);
        check!(got.key == key, "{key}: entry names key {:?}", got.key);
    }
    Ok(())
}

async fn missing_is_not_found(ctx: Ctx) -> CaseOutcome {
    let t = ctx.table("missing").await?;
    let err = expect_reason(ctx.client.get(&t, "absent").await, Reason::KeyNotFound, "get missing")?;
    check!(
        err.is_not_found() && !err.retryable,
        "KEY_NOT_FOUND must be NOT_FOUND and not retryable: {err:?}"
    );
    ok(ctx.client.put(&t, "empty", Vec::new(), Put::default()).await, "put empty")?;
    let e = value_of(&ctx, &t, "empty").await?;
    check!(e.value.is_empty() && !e.version.is_empty(), "empty value must be found with a version: {e:?}");
    Ok(())
}

async fn versions_change(ctx: Ctx) -> CaseOutcome {
    let t = ctx.table("versions").await?;
    let mut seen = HashSet::new();
    for i in 0..5 {
        let v = ok(ctx.client.put(&t, "k", format!("{i}"), Put::default()).await, "put")?;
        check!(!v.is_empty(), "empty version");
        check!(seen.insert(v.clone()), "version {v} returned twice");
        let e = value_of(&ctx, &t, "k").await?;
        check!(e.version == v, "get reports version {}, put returned {v}", e.version);
    }
    // Same value again still makes a new version.
    let v = ok(ctx.client.put(&t, "k", "4", Put::default()).await, "put same value")?;
    check!(seen.insert(v), "rewriting the same value must still change the version");
    Ok(())
}

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

async fn delete(ctx: Ctx) -> CaseOutcome {
    let t = ctx.table("delete").await?;
    ok(ctx.client.put(&t, "k", "v", Put::default()).await, "put")?;
    check!(
        ok(ctx.client.delete(&t, "k", None).await, "delete")?,
        "delete of an existing key must report deleted=true"
    );
    expect_reason(ctx.client.get(&t, "k").await, Reason::KeyNotFound, "get after delete")?;
    check!(
        !ok(ctx.client.delete(&t, "k", None).await, "second delete")?,
        "delete of a missing key must report deleted=false"
    );
    Ok(())
}

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

async fn ttl_expiry(ctx: Ctx) -> CaseOutcome {
    let t = ctx.table("ttl").await?;
    ok(
        ctx.client.put(&t, "short", "gone soon", Put::default().ttl(Duration::from_secs(1))).await,
        "put with ttl",
    )?;
    ok(
        ctx.client.put(&t, "long", "stays", Put::default().ttl(Duration::from_secs(3600))).await,
        "put with long ttl",
    )?;
    let e = value_of(&ctx, &t, "short").await?;
    check!(e.expires_at_ms > 0, "entry with ttl reports no expiry");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    expect_reason(ctx.client.get(&t, "short").await, Reason::KeyNotFound, "get after expiry")?;
    let listed: Vec<String> = ok(ctx.client.list(&t, "").await, "list")?.into_iter().map(|e| e.key).collect();
    check!(listed == ["long"], "listing after expiry: {listed:?}");
    let (found, missing) = ok(ctx.client.batch_get(&t, &["short", "long"]).await, "batch_get")?;
    check!(
        found.len() == 1 && missing == ["short"],
        "batch_get after expiry: found {found:?}, missing {missing:?}"
    );
    ok(ctx.client.put(&t, "short", "again", Put::create()).await, "create-only over an expired key")?;
    check!(value_of(&ctx, &t, "short").await?.value == b"again", "re-created value wrong");
    Ok(())
}

async fn ttl_range(ctx: Ctx) -> CaseOutcome {
    let t = ctx.table("ttlrange").await?;
    let over = Duration::from_secs(u64::from(ctx.limits().max_ttl_seconds) + 1);
    expect_reason(
        ctx.client.put(&t, "k", "v", Put::default().ttl(over)).await,
        Reason::InvalidArgument,
        "ttl above max",
    )?;
    expect_reason(ctx.client.get(&t, "k").await, Reason::KeyNotFound, "a rejected put wrote")?;
    Ok(())
}

async fn list_paging(ctx: Ctx) -> CaseOutcome {
    let t = ctx.table("list").await?;
    let keys = ["user/1", "user/10", "user/2", "user/20", "user/3", "users", "other/1", "a"];
    for k in keys {
        ok(ctx.client.put(&t, k, k, Put::default()).await, "put")?;
    }
    let mut want: Vec<&str> = keys.iter().copied().filter(|k| k.starts_with("user/")).collect();
    want.sort_unstable();
    let mut paged = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let (page, next) = ok(ctx.client.list_page(&t, "user/", 2, &token, false).await, "list page")?;
        check!(page.len() <= 2, "page of {} exceeds page_size 2", page.len());
        for e in &page {
            check!(e.value == e.key.as_bytes(), "listed value wrong for {}", e.key);
        }
        paged.extend(page.into_iter().map(|e| e.key));
        if next.is_empty() {
            break;
        }
        token = next;
    }
    check!(paged == want, "paged listing: expected {want:?}, got {paged:?}");
    let all: Vec<String> =
        ok(ctx.client.list(&t, "").await, "list all")?.into_iter().map(|e| e.key).collect();
    let mut sorted = all.clone();
    sorted.sort();
    check!(all == sorted && all.len() == keys.len(), "full listing not in key order or incomplete: {all:?}");
    expect_reason(
        ctx.client.list_page(&t, "", 2, "garbage!", false).await,
        Reason::InvalidArgument,
        "bad page token",
    )?;
    Ok(())
}

async fn list_keys_only(ctx: Ctx) -> CaseOutcome {
    let t = ctx.table("keysonly").await?;
    let v = ok(ctx.client.put(&t, "k", "value", Put::default()).await, "put")?;
    let (page, _) = ok(ctx.client.list_page(&t, "", 0, "", true).await, "list keys only")?;
    check!(
        page.len() == 1 && page[0].key == "k" && page[0].version == v && page[0].value.is_empty(),
        "keys-only listing: {page:?}"
    );
    Ok(())
}

async fn list_consistent(ctx: Ctx) -> CaseOutcome {
    let t = ctx.table("listcons").await?;
    for i in 0..10 {
        ok(ctx.client.put(&t, &format!("k{i:02}"), "v", Put::default()).await, "put")?;
    }
    let (first, token) = ok(ctx.client.list_page(&t, "", 4, "", true).await, "page 1")?;
    // Between pages: delete a listed key, delete an unlisted one, insert before and after the cursor.
    ok(ctx.client.delete(&t, "k01", None).await, "delete listed")?;
    ok(ctx.client.delete(&t, "k07", None).await, "delete unlisted")?;
    ok(ctx.client.put(&t, "k00a", "v", Put::default()).await, "insert before cursor")?;
    ok(ctx.client.put(&t, "k05a", "v", Put::default()).await, "insert after cursor")?;
    let mut rest = Vec::new();
    let mut token = token;
    while !token.is_empty() {
        let (page, next) = ok(ctx.client.list_page(&t, "", 4, &token, true).await, "next page")?;
        rest.extend(page.into_iter().map(|e| e.key));
        token = next;
    }
    let first: Vec<String> = first.into_iter().map(|e| e.key).collect();
    let all: Vec<&String> = first.iter().chain(rest.iter()).collect();
    let unique: HashSet<&&String> = all.iter().collect();
    check!(unique.len() == all.len(), "a key was listed twice: {all:?}");
    for untouched in ["k04", "k05", "k06", "k08", "k09"] {
        check!(rest.iter().any(|k| k == untouched), "untouched key {untouched} skipped: {rest:?}");
    }
    check!(!rest.iter().any(|k| k == "k07"), "a key deleted before its page was listed");
    check!(rest.iter().any(|k| k == "k05a"), "a key inserted after the cursor was missed");
    Ok(())
}

async fn batch_get(ctx: Ctx) -> CaseOutcome {
    let t = ctx.table("batch").await?;
    for k in ["a", "b", "c"] {
        ok(ctx.client.put(&t, k, format!("v{k}"), Put::default()).await, "put")?;
    }
    let (found, missing) = ok(ctx.client.batch_get(&t, &["c", "x", "a", "y"]).await, "batch_get")?;
    let keys: Vec<&str> = found.iter().map(|e| e.key.as_str()).collect();
    check!(keys == ["c", "a"], "found {keys:?}, expected [c, a] in request order");
    check!(found[0].value == b"vc" && found[1].value == b"va", "batch values wrong");
    check!(missing == ["x", "y"], "missing {missing:?}, expected [x, y]");
    Ok(())
}

async fn batch_get_limits(ctx: Ctx) -> CaseOutcome {
    let t = ctx.table("batchlim").await?;
    expect_reason(ctx.client.batch_get(&t, &[]).await, Reason::InvalidArgument, "empty batch")?;
    let many: Vec<String> = (0..=ctx.limits().max_batch_keys).map(|i| format!("k{i}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    expect_reason(ctx.client.batch_get(&t, &refs).await, Reason::InvalidArgument, "oversize batch")?;
    expect_reason(
        ctx.client.batch_get(&t, &["a", "b", "a"]).await,
        Reason::InvalidArgument,
        "duplicate keys",
    )?;
    Ok(())
}

async fn key_limits(ctx: Ctx) -> CaseOutcome {
    let t = ctx.table("keylim").await?;
    let max = ctx.limits().max_key_bytes as usize;
    expect_reason(ctx.client.put(&t, "", "v", Put::default()).await, Reason::InvalidArgument, "empty key")?;
    expect_reason(ctx.client.get(&t, "").await, Reason::InvalidArgument, "get empty key")?;
    let long = "k".repeat(max + 1);
    expect_reason(
        ctx.client.put(&t, &long, "v", Put::default()).await,
        Reason::InvalidArgument,
        "oversize key",
    )?;
    // Multi-byte characters count in bytes: max/2 two-byte characters fit exactly.
    let widest = "é".repeat(max / 2);
    ok(ctx.client.put(&t, &widest, "v", Put::default()).await, "maximum-size key")?;
    check!(value_of(&ctx, &t, &widest).await?.value == b"v", "maximum-size key lost");
    check!(ok(ctx.client.list(&t, "").await, "list")?.len() == 1, "a rejected key was written");
    Ok(())
}

async fn value_too_large(ctx: Ctx) -> CaseOutcome {
    let t = ctx.table("valbig").await?;
    let max = ctx.limits().max_value_bytes as usize;
    let v = ok(ctx.client.put(&t, "k", "small", Put::default()).await, "put")?;
    let err = expect_reason(
        ctx.client.put(&t, "k", vec![1u8; max + 1], Put::default()).await,
        Reason::ValueTooLarge,
        "oversize value",
    )?;
    check!(
        err.code == exo_sdk::Code::ResourceExhausted,
        "VALUE_TOO_LARGE must be RESOURCE_EXHAUSTED, got {:?}",
        err.code
    );
    let e = value_of(&ctx, &t, "k").await?;
    check!(e.value == b"small" && e.version == v, "a rejected put changed the entry");
    ok(ctx.client.put(&t, "k", vec![2u8; max], Put::default()).await, "put of exactly the limit")?;
    check!(value_of(&ctx, &t, "k").await?.value.len() == max, "limit-size value changed");
    Ok(())
}

async fn special_keys(ctx: Ctx) -> CaseOutcome {
    let t = ctx.table("special").await?;
    let keys = [
        "a/b/c",
        "back\\slash",
        "hash#tag",
        "what?now",
        "100%",
        "%2F",
        "with space",
        "ünïcødé ☃",
        "tab\tnew\nline",
        "../up",
        "/leading",
        "nul\0byte",
    ];
    for k in keys {
        ok(ctx.client.put(&t, k, k.as_bytes().to_vec(), Put::default()).await, &format!("put {k:?}"))?;
        let e = value_of(&ctx, &t, k).await?;
        check!(e.key == k && e.value == k.as_bytes(), "key {k:?} came back as {:?}", e.key);
    }
    let mut want: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    want.sort();
    let listed: Vec<String> = ok(ctx.client.list(&t, "").await, "list")?.into_iter().map(|e| e.key).collect();
    check!(listed == want, "listing differs: {listed:?}");
    Ok(())
}

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

async fn http_round_trip(ctx: Ctx) -> CaseOutcome {
    use base64::Engine as _;
    let t = ctx.table("http").await?;
    let http = reqwest::Client::new();
    let value = vec![0u8, 255, 10, 13];
    let encoded = base64::engine::general_purpose::STANDARD.encode(&value);
    let url = format!("{}/api/v1/tables/{t}/entries/dir/key%20one", ctx.http_base);
    let response = http
        .put(&url)
        .json(&serde_json::json!({"value": encoded, "condition": {"mustNotExist": true}}))
        .send()
        .await
        .map_err(|e| format!("HTTP put failed: {e}"))?;
    check!(response.status() == 200, "HTTP put answered {}", response.status());
    let put: serde_json::Value = response.json().await.map_err(|e| format!("bad JSON: {e}"))?;
    let e = value_of(&ctx, &t, "dir/key one").await?;
    check!(e.value == value, "bytes changed between HTTP and gRPC");
    check!(put["version"] == e.version.as_str(), "versions differ: {put} vs {}", e.version);
    ok(ctx.client.put(&t, "from-grpc", b"\x01\x02".to_vec(), Put::default()).await, "grpc put")?;
    let got: serde_json::Value = http
        .get(format!("{}/api/v1/tables/{t}/entries/from-grpc", ctx.http_base))
        .send()
        .await
        .map_err(|e| format!("HTTP get failed: {e}"))?
        .json()
        .await
        .map_err(|e| format!("bad JSON: {e}"))?;
    check!(got["entry"]["value"] == "AQI=", "HTTP get value: {got}");
    Ok(())
}

async fn http_problem_json(ctx: Ctx) -> CaseOutcome {
    let t = ctx.table("httpprob").await?;
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/tables/{t}/entries/nothing-here", ctx.http_base))
        .send()
        .await
        .map_err(|e| format!("HTTP get failed: {e}"))?;
    check!(response.status() == 404, "expected 404, got {}", response.status());
    let ct = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    check!(ct.starts_with("application/problem+json"), "content-type {ct:?}");
    let body: serde_json::Value = response.json().await.map_err(|e| format!("bad problem JSON: {e}"))?;
    check!(body["reason"] == "KEY_NOT_FOUND" && body["status"] == 404, "problem body: {body}");
    Ok(())
}

async fn http_openapi_routes(ctx: Ctx) -> CaseOutcome {
    let t = ctx.table("openapi").await?;
    crate::openapi_check::documented_routes_are_served(
        &ctx.http_base,
        &["kv", "meta"],
        &[("table", &t), ("key", "k")],
    )
    .await
}
