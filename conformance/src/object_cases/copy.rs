//! The copy cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// A copy has the same bytes and attributes, and changing one never changes the other
    case "copy.independent", needs Some(Cap::Copy);
    async fn copy_independent(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("copy").await?;
        let other = ctx.bucket("copy-dst").await?;
        let options = PutOptions {
            content_type: "text/csv".into(),
            metadata: [("a".to_owned(), "1".to_owned())].into(),
            ..Default::default()
        };
        let src = ok(ctx.client.put_bytes(&b, "src", pattern(70_000), options).await, "put")?;
        let copy = ok(ctx.client.copy(&b, "src", &other, "dst", WriteIf::Always).await, "copy")?;
        // ETags may be derived from content (S3), so a copy may share its source's; it must be the
        // copy's current one.
        let head = ok(ctx.client.head(&other, "dst").await, "head copy")?;
        check!(
            !copy.etag.is_empty() && head.etag == copy.etag,
            "copy reported ETag {} but has {}",
            copy.etag,
            head.etag
        );
        check!(
            copy.size == src.size && copy.content_type == "text/csv" && copy.metadata == src.metadata,
            "copy attributes: {copy:?}"
        );
        check!(read(&ctx, &other, "dst").await? == pattern(70_000), "copy bytes differ");
        put(&ctx, &b, "src", "changed").await?;
        check!(read(&ctx, &other, "dst").await? == pattern(70_000), "overwriting the source changed the copy");
        ok(
            ctx.client
                .put_bytes(
                    &other,
                    "dst",
                    "copy changed",
                    PutOptions { metadata: [("b".to_owned(), "2".to_owned())].into(), ..Default::default() },
                )
                .await,
            "overwrite copy",
        )?;
        check!(read(&ctx, &b, "src").await? == b"changed", "overwriting the copy changed the source");
        check!(
            ok(ctx.client.head(&b, "src").await, "head")?.metadata.is_empty(),
            "the source's metadata changed with the copy's"
        );
        Ok(())
    }

    /// Copying a missing source fails with OBJECT_NOT_FOUND and creates nothing
    case "copy.missing_source", needs Some(Cap::Copy);
    async fn copy_missing(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("copymiss").await?;
        expect_reason(
            ctx.client.copy(&b, "nope", &b, "dst", WriteIf::Always).await,
            Reason::ObjectNotFound,
            "copy of a missing source",
        )?;
        expect_reason(
            ctx.client.head(&b, "dst").await,
            Reason::ObjectNotFound,
            "a failed copy created the destination",
        )?;
        Ok(())
    }

    /// A create-only copy onto an existing key fails and keeps it
    case "copy.create_only", needs Some(Cap::Copy);
    async fn copy_create_only(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("copyco").await?;
        put(&ctx, &b, "src", "new").await?;
        put(&ctx, &b, "dst", "old").await?;
        expect_reason(
            ctx.client.copy(&b, "src", &b, "dst", WriteIf::Absent).await,
            Reason::ConditionFailed,
            "create-only copy",
        )?;
        check!(read(&ctx, &b, "dst").await? == b"old", "a failed copy replaced the destination");
        Ok(())
    }
}
