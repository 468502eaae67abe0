//! The range cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// A range from an offset returns the tail
    case "range.from_offset", needs Some(Cap::RangeRead);
    async fn range_from(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("rfrom").await?;
        let data = pattern(100_000);
        put(&ctx, &b, "k", data.clone()).await?;
        let (header, got) = read_range(&ctx, &b, "k", ByteRange::From(70_000)).await?;
        check!(got == data[70_000..], "tail differs");
        check!(header.offset == 70_000 && header.length == 30_000, "header {header:?}");
        check!(header.info.map(|i| i.size) == Some(100_000), "header must give the whole size");
        Ok(())
    }

    /// A middle range returns exactly those bytes
    case "range.middle", needs Some(Cap::RangeRead);
    async fn range_middle(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("rmid").await?;
        let data = pattern(200_000);
        put(&ctx, &b, "k", data.clone()).await?;
        let (_, got) = read_range(&ctx, &b, "k", ByteRange::Span(65_530, 131_080)).await?;
        check!(got == data[65_530..131_080], "middle differs");
        let (_, past) = read_range(&ctx, &b, "k", ByteRange::Span(199_990, 250_000)).await?;
        check!(past == data[199_990..], "a span past the end must be clipped to the end");
        Ok(())
    }

    /// A suffix range returns the last n bytes (all if n exceeds the size)
    case "range.suffix", needs Some(Cap::RangeRead);
    async fn range_suffix(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("rsuf").await?;
        let data = pattern(1000);
        put(&ctx, &b, "k", data.clone()).await?;
        check!(read_range(&ctx, &b, "k", ByteRange::Suffix(10)).await?.1 == data[990..], "suffix differs");
        check!(
            read_range(&ctx, &b, "k", ByteRange::Suffix(5000)).await?.1 == data,
            "oversize suffix must return everything"
        );
        Ok(())
    }

    /// Empty ranges (start = end, or from the end) return no bytes
    case "range.zero_length", needs Some(Cap::RangeRead);
    async fn range_zero(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("rzero").await?;
        put(&ctx, &b, "k", pattern(100)).await?;
        let (h, got) = read_range(&ctx, &b, "k", ByteRange::Span(40, 40)).await?;
        check!(got.is_empty() && h.length == 0, "empty span returned {} bytes", got.len());
        let (h, got) = read_range(&ctx, &b, "k", ByteRange::From(100)).await?;
        check!(got.is_empty() && h.length == 0, "range from the end returned {} bytes", got.len());
        Ok(())
    }

    /// A range past the end is RANGE_NOT_SATISFIABLE; an inverted one INVALID_ARGUMENT
    case "range.invalid", needs Some(Cap::RangeRead);
    async fn range_invalid(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("rbad").await?;
        put(&ctx, &b, "k", pattern(100)).await?;
        let err = expect_reason(
            ctx.client
                .get_bytes(&b, "k", GetOptions { range: Some(ByteRange::From(101)), ..Default::default() })
                .await,
            Reason::RangeNotSatisfiable,
            "range past the end",
        )?;
        check!(
            err.code == exo_sdk::Code::OutOfRange,
            "RANGE_NOT_SATISFIABLE must be OUT_OF_RANGE, got {:?}",
            err.code
        );
        expect_reason(
            ctx.client
                .get_bytes(&b, "k", GetOptions { range: Some(ByteRange::Span(50, 10)), ..Default::default() })
                .await,
            Reason::InvalidArgument,
            "inverted range",
        )?;
        Ok(())
    }
}
