//! The objects cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// Describe names the backend and gives usable limits
    case "object.describe", needs None;
    async fn describe(ctx: Ctx) -> CaseOutcome {
        let d = ok(ctx.client.describe().await, "describe")?;
        check!(!d.backend.is_empty(), "backend name is empty");
        let l = d.limits.ok_or("no limits")?;
        check!(l.max_key_bytes >= 1024 && l.max_page_size >= 1, "limits implausible: {l:?}");
        Ok(())
    }

    /// Bytes, content type and metadata come back exactly
    case "object.round_trip", needs None;
    async fn round_trip(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("rt").await?;
        let metadata: HashMap<String, String> =
            [("owner".to_owned(), "team-a".to_owned()), ("trace_id".to_owned(), "abc 123".to_owned())].into();
        let options =
            PutOptions { content_type: "image/png".into(), metadata: metadata.clone(), ..Default::default() };
        let data = pattern(1000);
        let info = ok(ctx.client.put_bytes(&b, "pic.png", data.clone(), options).await, "put")?;
        check!(info.size == 1000 && !info.etag.is_empty(), "put returned {info:?}");
        let (header, got) = ok(ctx.client.get_bytes(&b, "pic.png", GetOptions::default()).await, "get")?;
        check!(got == data, "bytes changed");
        let got_info = header.info.unwrap_or_default();
        check!(got_info.content_type == "image/png", "content type {:?}", got_info.content_type);
        check!(got_info.metadata == metadata, "metadata {:?}", got_info.metadata);
        check!(got_info.etag == info.etag, "ETag changed between put and get");
        Ok(())
    }

    /// An empty object is stored and read back as empty
    case "object.empty", needs None;
    async fn empty_object(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("empty").await?;
        let info = put(&ctx, &b, "nothing", Bytes::new()).await?;
        check!(info.size == 0, "size {}", info.size);
        check!(read(&ctx, &b, "nothing").await?.is_empty(), "empty object has bytes");
        check!(
            ok(ctx.client.head(&b, "nothing").await, "head")?.content_type == "application/octet-stream",
            "default content type missing"
        );
        Ok(())
    }

    /// Every byte value survives, in one chunk and across chunk boundaries
    case "object.every_byte", needs None;
    async fn every_byte(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("bytes").await?;
        let small: Vec<u8> = (0..=255u8).collect();
        put(&ctx, &b, "small", small.clone()).await?;
        check!(read(&ctx, &b, "small").await? == small, "256-byte object changed");
        // Straddles upload (256 KiB) and download (64 KiB) chunk boundaries.
        let big: Vec<u8> = (0..exo_sdk::UPLOAD_CHUNK * 2 + 77).map(|i| (i % 251) as u8).collect();
        put(&ctx, &b, "big", big.clone()).await?;
        check!(read(&ctx, &b, "big").await? == big, "chunked object changed");
        Ok(())
    }

    /// A 5 MiB object streamed in many chunks comes back identical
    case "object.multi_chunk", needs None;
    async fn multi_chunk(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("chunks").await?;
        let data = pattern(5 * 1024 * 1024 + 3);
        // Uneven chunk sizes, as a real streaming client may send.
        let mut chunks = Vec::new();
        let mut at = 0;
        let mut size = 1;
        while at < data.len() {
            let end = (at + size).min(data.len());
            chunks.push(Ok(Bytes::copy_from_slice(&data[at..end])));
            at = end;
            size = (size * 3 + 7) % 300_000 + 1;
        }
        ok(
            ctx.client.put_stream(&b, "big", futures::stream::iter(chunks), PutOptions::default()).await,
            "streamed put",
        )?;
        let got = read(&ctx, &b, "big").await?;
        check!(got.len() == data.len(), "size {} instead of {}", got.len(), data.len());
        check!(got == data, "bytes differ");
        Ok(())
    }

    /// A put replaces the object whole: new bytes, new ETag, old metadata gone
    case "object.overwrite", needs None;
    async fn overwrite(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("over").await?;
        let first = ok(
            ctx.client
                .put_bytes(
                    &b,
                    "k",
                    "first version",
                    PutOptions { metadata: [("old".to_owned(), "1".to_owned())].into(), ..Default::default() },
                )
                .await,
            "put",
        )?;
        let second = put(&ctx, &b, "k", "2nd").await?;
        check!(first.etag != second.etag, "ETag did not change on overwrite");
        check!(read(&ctx, &b, "k").await? == b"2nd", "overwrite did not replace the bytes");
        let info = ok(ctx.client.head(&b, "k").await, "head")?;
        check!(info.metadata.is_empty() && info.size == 3, "old attributes survived: {info:?}");
        Ok(())
    }

    /// Head reports size, ETag, content type and metadata without the bytes
    case "object.head", needs None;
    async fn head(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("head").await?;
        let put_info = ok(
            ctx.client
                .put_bytes(
                    &b,
                    "k",
                    pattern(12345),
                    PutOptions { content_type: "text/plain".into(), ..Default::default() },
                )
                .await,
            "put",
        )?;
        let info = ok(ctx.client.head(&b, "k").await, "head")?;
        check!(
            info.size == 12345 && info.etag == put_info.etag && info.content_type == "text/plain",
            "head: {info:?}"
        );
        check!(info.last_modified_ms > 0 && info.key == "k" && info.bucket == b, "head: {info:?}");
        Ok(())
    }

    /// Get and Head of a missing key fail with OBJECT_NOT_FOUND
    case "object.not_found", needs None;
    async fn object_not_found(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("nf").await?;
        let err = expect_reason(
            ctx.client.get_bytes(&b, "nope", GetOptions::default()).await,
            Reason::ObjectNotFound,
            "get",
        )?;
        check!(
            err.is_not_found() && !err.retryable,
            "OBJECT_NOT_FOUND must be NOT_FOUND, not retryable: {err:?}"
        );
        expect_reason(ctx.client.head(&b, "nope").await, Reason::ObjectNotFound, "head")?;
        Ok(())
    }
}
