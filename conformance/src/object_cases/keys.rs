//! The keys cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// Keys with .., absolute paths, %2F, backslashes, unicode, 1024 bytes or store-like names
    /// round-trip and list exactly
    case "keys.special", needs None;
    async fn special_keys(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("special").await?;
        let long = "x".repeat(1024);
        let list = [
            "../../../etc/passwd",
            "/absolute/path",
            "a/../b",
            "%2F..%2F",
            "back\\slash\\..\\",
            "ünïcødé/☃/😀",
            "with space",
            "index.db",
            "blobs/00/anything",
            "tmp/upload",
            ".",
            "..",
            "trailing/",
            "a//b",
            "?query#frag",
            &long,
        ];
        for (i, k) in list.iter().enumerate() {
            put(&ctx, &b, k, format!("value {i}")).await?;
        }
        for (i, k) in list.iter().enumerate() {
            check!(read(&ctx, &b, k).await? == format!("value {i}").as_bytes(), "key {k:?} read back wrong");
        }
        let mut want: Vec<String> = list.iter().map(|k| (*k).to_owned()).collect();
        want.sort();
        check!(keys(&ctx, &b).await? == want, "listing differs from the keys written");
        Ok(())
    }

    /// Empty, oversize, NUL or control-character keys fail with INVALID_ARGUMENT and write nothing
    case "keys.invalid", needs None;
    async fn invalid_keys(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("badkeys").await?;
        let long = "x".repeat(1025);
        for k in ["", "nul\0byte", "tab\there", "new\nline", "\u{7f}del", &long] {
            expect_reason(
                ctx.client.put_bytes(&b, k, "v", PutOptions::default()).await,
                Reason::InvalidArgument,
                &format!("key {k:?}"),
            )?;
        }
        check!(keys(&ctx, &b).await?.is_empty(), "a rejected key was written");
        Ok(())
    }
}
