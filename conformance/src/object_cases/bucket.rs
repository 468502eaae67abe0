//! The bucket cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// Creating a bucket twice succeeds; the second reports created=false
    case "bucket.create_idempotent", needs None;
    async fn bucket_idempotent(ctx: Ctx) -> CaseOutcome {
        let name = ctx.name("idem");
        check!(ok(ctx.client.create_bucket(&name).await, "create")?, "first create must report created=true");
        check!(
            !ok(ctx.client.create_bucket(&name).await, "create again")?,
            "second create must report created=false"
        );
        check!(ok(ctx.client.list_buckets().await, "list")?.contains(&name), "bucket not listed");
        Ok(())
    }

    /// Bucket names outside the portable rules fail with INVALID_NAME and create nothing
    case "bucket.invalid_names", needs None;
    async fn bucket_invalid_names(ctx: Ctx) -> CaseOutcome {
        for bad in ["ab", "Upper", "under_score", "dot.ted", "-lead", "dou--ble", ""] {
            expect_reason(ctx.client.create_bucket(bad).await, Reason::InvalidName, bad)?;
        }
        let buckets = ok(ctx.client.list_buckets().await, "list")?;
        check!(
            !buckets.iter().any(|b| b.contains('_') || b.contains('.') || b.len() < 3),
            "an invalid bucket was created: {buckets:?}"
        );
        Ok(())
    }

    /// Every call on a missing bucket fails with BUCKET_NOT_FOUND
    case "bucket.not_found", needs None;
    async fn bucket_not_found(ctx: Ctx) -> CaseOutcome {
        let b = ctx.name("missing");
        let c = &ctx.client;
        expect_reason(c.put_bytes(&b, "k", "v", PutOptions::default()).await, Reason::BucketNotFound, "put")?;
        expect_reason(c.get_bytes(&b, "k", GetOptions::default()).await, Reason::BucketNotFound, "get")?;
        expect_reason(c.head(&b, "k").await, Reason::BucketNotFound, "head")?;
        expect_reason(c.delete(&b, "k", None).await, Reason::BucketNotFound, "delete")?;
        expect_reason(c.list_page(&b, "", "", 0, "").await, Reason::BucketNotFound, "list")?;
        expect_reason(c.delete_bucket(&b).await, Reason::BucketNotFound, "delete_bucket")?;
        Ok(())
    }

    /// Deleting a bucket with objects fails with NOT_EMPTY; once empty it deletes
    case "bucket.delete_non_empty", needs None;
    async fn bucket_delete_non_empty(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("nonempty").await?;
        put(&ctx, &b, "k", "v").await?;
        let err = expect_reason(ctx.client.delete_bucket(&b).await, Reason::NotEmpty, "delete non-empty bucket")?;
        check!(
            err.code == exo_sdk::Code::FailedPrecondition,
            "NOT_EMPTY must be FAILED_PRECONDITION, got {:?}",
            err.code
        );
        check!(read(&ctx, &b, "k").await? == b"v", "the object was harmed");
        ok(ctx.client.delete(&b, "k", None).await, "delete object")?;
        ok(ctx.client.delete_bucket(&b).await, "delete empty bucket")?;
        check!(!ok(ctx.client.list_buckets().await, "list")?.contains(&b), "bucket still listed");
        Ok(())
    }
}
