//! The tables cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// Describe names the backend and gives usable limits
    case "kv.describe", needs None;
    async fn describe(ctx: Ctx) -> CaseOutcome {
        let d = ok(ctx.client.describe().await, "describe")?;
        check!(!d.backend.is_empty(), "backend name is empty");
        let l = d.limits.ok_or("no limits")?;
        check!(l.max_key_bytes >= 256 && l.max_value_bytes >= 1024, "limits implausibly small: {l:?}");
        check!(l.max_batch_keys >= 1 && l.max_page_size >= 1, "batch/page limits must be >= 1: {l:?}");
        Ok(())
    }

    /// Creating a table twice succeeds; the second reports created=false
    case "kv.table_create_idempotent", needs None;
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

    /// Table names outside the portable rules fail with INVALID_NAME and create nothing
    case "kv.table_invalid_names", needs None;
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

    /// Every call on a missing table fails with TABLE_NOT_FOUND
    case "kv.table_not_found", needs None;
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

    /// Deleting a table removes its keys
    case "kv.table_delete", needs None;
    async fn table_delete(ctx: Ctx) -> CaseOutcome {
        let t = ctx.table("del").await?;
        ok(ctx.client.put(&t, "k", "v", Put::default()).await, "put")?;
        ok(ctx.client.delete_table(&t).await, "delete_table")?;
        expect_reason(ctx.client.get(&t, "k").await, Reason::TableNotFound, "get after delete")?;
        ok(ctx.client.create_table(&t).await, "re-create")?;
        expect_reason(ctx.client.get(&t, "k").await, Reason::KeyNotFound, "key survived table deletion")?;
        Ok(())
    }
}
