//! The entries cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// Values come back byte-exact: empty, binary, every byte value
    case "kv.bytes_round_trip", needs None;
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

    /// A missing key is KEY_NOT_FOUND, never an empty value; an empty value is found
    case "kv.missing_is_not_found", needs None;
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

    /// Every write returns a new version, which Get reports
    case "kv.versions_change", needs None;
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

    /// Delete removes a key and reports whether it existed
    case "kv.delete", needs None;
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

    /// Keys with / \\ # ? % spaces, unicode and control characters round-trip and list exactly
    case "kv.special_keys", needs None;
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
}
