//! The metadata cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// Bad metadata names or values, case-insensitive duplicates, or too much metadata fail and
    /// write nothing
    case "metadata.invalid", needs None;
    async fn invalid_metadata(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("badmeta").await?;
        let too_many: HashMap<String, String> = (0..100).map(|i| (format!("m{i}"), "v".to_owned())).collect();
        let cases: Vec<(&str, HashMap<String, String>)> = vec![
            ("hyphen name", [("bad-name".to_owned(), "v".to_owned())].into()),
            ("digit first", [("1st".to_owned(), "v".to_owned())].into()),
            ("non-ASCII value", [("ok".to_owned(), "ünï".to_owned())].into()),
            ("control in value", [("ok".to_owned(), "a\nb".to_owned())].into()),
            (
                "duplicate ignoring case",
                [("Owner".to_owned(), "a".to_owned()), ("owner".to_owned(), "b".to_owned())].into(),
            ),
            ("too many", too_many),
        ];
        for (what, metadata) in cases {
            expect_reason(
                ctx.client.put_bytes(&b, "k", "v", PutOptions { metadata, ..Default::default() }).await,
                Reason::InvalidArgument,
                what,
            )?;
        }
        check!(keys(&ctx, &b).await?.is_empty(), "an object with rejected metadata was written");
        Ok(())
    }
}
