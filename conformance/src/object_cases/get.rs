//! The get cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// Get with if-none-match at the ETag is NOT_MODIFIED; with a wrong if-match CONDITION_FAILED
    case "get.conditional", needs None;
    async fn get_conditional(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("getcond").await?;
        let info = put(&ctx, &b, "k", "v").await?;
        expect_reason(
            ctx.client
                .get_bytes(&b, "k", GetOptions { if_none_match: Some(info.etag.clone()), ..Default::default() })
                .await,
            Reason::NotModified,
            "if-none-match at the ETag",
        )?;
        expect_reason(
            ctx.client
                .get_bytes(&b, "k", GetOptions { if_match: Some("not-the-etag".into()), ..Default::default() })
                .await,
            Reason::ConditionFailed,
            "if-match with another ETag",
        )?;
        let (_, got) = ok(
            ctx.client
                .get_bytes(
                    &b,
                    "k",
                    GetOptions {
                        if_match: Some(info.etag),
                        if_none_match: Some("other".into()),
                        ..Default::default()
                    },
                )
                .await,
            "matching conditions",
        )?;
        check!(got == b"v", "conditional get returned wrong bytes");
        Ok(())
    }
}
