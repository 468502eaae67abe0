//! The list cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// List filters by prefix in key order
    case "list.prefix", needs None;
    async fn list_prefix(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("lprefix").await?;
        for k in ["logs/2", "logs/10", "logs/1", "logsx", "img/a", "z"] {
            put(&ctx, &b, k, k.to_owned()).await?;
        }
        let (objects, prefixes) = ok(ctx.client.list(&b, "logs/", "").await, "list")?;
        let got: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        check!(got == ["logs/1", "logs/10", "logs/2"] && prefixes.is_empty(), "listed {got:?} {prefixes:?}");
        check!(
            objects.iter().all(|o| o.size == o.key.len() as u64 && !o.etag.is_empty()),
            "listed objects lack attributes"
        );
        Ok(())
    }

    /// A delimiter groups keys into common prefixes
    case "list.delimiter", needs None;
    async fn list_delimiter(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("ldelim").await?;
        for k in ["a/1", "a/2", "a/b/3", "b", "c/x/y", "d"] {
            put(&ctx, &b, k, "v").await?;
        }
        let (objects, prefixes) = ok(ctx.client.list(&b, "", "/").await, "list root")?;
        let got: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        check!(got == ["b", "d"] && prefixes == ["a/", "c/"], "root listing: {got:?} {prefixes:?}");
        let (objects, prefixes) = ok(ctx.client.list(&b, "a/", "/").await, "list a/")?;
        let got: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        check!(got == ["a/1", "a/2"] && prefixes == ["a/b/"], "a/ listing: {got:?} {prefixes:?}");
        Ok(())
    }

    /// Small pages cover everything without gaps or repeats
    case "list.paging", needs None;
    async fn list_paging(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("lpage").await?;
        let mut want = Vec::new();
        for i in 0..11 {
            let k = format!("k{i:02}");
            put(&ctx, &b, &k, "v").await?;
            want.push(k);
        }
        let mut got = Vec::new();
        let mut token = String::new();
        for _ in 0..20 {
            let (objects, _, next) = ok(ctx.client.list_page(&b, "", "", 3, &token).await, "page")?;
            check!(objects.len() <= 3, "page of {}", objects.len());
            got.extend(objects.into_iter().map(|o| o.key));
            if next.is_empty() {
                break;
            }
            token = next;
        }
        check!(got == want, "paged listing {got:?}");
        expect_reason(
            ctx.client.list_page(&b, "", "", 3, "bogus!").await,
            Reason::InvalidArgument,
            "bad page token",
        )?;
        Ok(())
    }

    /// Keys inserted or deleted between pages never cause repeats; untouched keys are never skipped
    case "list.consistent_paging", needs None;
    async fn list_consistent(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("lcons").await?;
        for i in 0..10 {
            put(&ctx, &b, &format!("k{i:02}"), "v").await?;
        }
        let (first, _, token) = ok(ctx.client.list_page(&b, "", "", 4, "").await, "page 1")?;
        ok(ctx.client.delete(&b, "k01", None).await, "delete listed")?;
        ok(ctx.client.delete(&b, "k07", None).await, "delete unlisted")?;
        put(&ctx, &b, "k00a", "v").await?;
        put(&ctx, &b, "k05a", "v").await?;
        let mut rest = Vec::new();
        let mut token = token;
        while !token.is_empty() {
            let (objects, _, next) = ok(ctx.client.list_page(&b, "", "", 4, &token).await, "next page")?;
            rest.extend(objects.into_iter().map(|o| o.key));
            token = next;
        }
        let first: Vec<String> = first.into_iter().map(|o| o.key).collect();
        for k in &rest {
            check!(!first.contains(k), "{k} listed twice");
        }
        for untouched in ["k04", "k05", "k06", "k08", "k09"] {
            check!(rest.iter().any(|k| k == untouched), "untouched {untouched} skipped: {rest:?}");
        }
        check!(
            !rest.iter().any(|k| k == "k07") && rest.iter().any(|k| k == "k05a"),
            "later pages wrong: {rest:?}"
        );
        Ok(())
    }
}
