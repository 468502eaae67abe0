//! The list cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// List filters by prefix, in key order, and pages without gaps or repeats
    case "kv.list_prefix_paging", needs Some(Cap::List);
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

    /// keys_only lists keys and versions without values
    case "kv.list_keys_only", needs Some(Cap::List);
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

    /// Keys inserted or deleted between pages never cause repeats, and untouched keys are never
    /// skipped
    case "kv.list_consistent_paging", needs Some(Cap::List);
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
}
