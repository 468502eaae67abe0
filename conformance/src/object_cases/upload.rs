//! The upload cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// An upload whose bytes differ from its announced length fails and keeps the previous object
    case "upload.length_mismatch", needs None;
    async fn length_mismatch(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("lenmis").await?;
        put(&ctx, &b, "k", "previous").await?;
        for announced in [3u64, 100] {
            expect_reason(
                ctx.client
                    .put_bytes(
                        &b,
                        "k",
                        "ten bytes!",
                        PutOptions { content_length: Some(announced), ..Default::default() },
                    )
                    .await,
                Reason::InvalidArgument,
                &format!("announced {announced}, sent 10"),
            )?;
        }
        check!(read(&ctx, &b, "k").await? == b"previous", "a refused upload replaced the object");
        Ok(())
    }

    /// A gRPC upload without finish, or with a chunk over the message limit, fails not retryable
    /// (MALFORMED_REQUEST / REQUEST_TOO_LARGE) and stores nothing
    case "upload.stream_misuse", needs None;
    async fn upload_stream_misuse(ctx: Ctx) -> CaseOutcome {
        use exo_proto::object::v1::{self as pb, object_service_client::ObjectServiceClient, put_request::Part};
        let b = ctx.bucket("misuse").await?;
        put(&ctx, &b, "k", "previous").await?;
        let channel = tonic::transport::Endpoint::from_shared(ctx.http_base.clone())
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("gRPC connect: {e}"))?;
        let mut grpc = ObjectServiceClient::new(channel).max_encoding_message_size(usize::MAX);
        let header = pb::PutRequest {
            part: Some(Part::Header(pb::PutHeader { bucket: b.clone(), key: "k".into(), ..Default::default() })),
            finish: false,
        };
        let chunk = |bytes: Vec<u8>| pb::PutRequest { part: Some(Part::Chunk(bytes.into())), finish: false };
        // A chunk far over any proxy's message limit (the default is 4 MiB).
        let cases = [
            (
                "no finish message",
                vec![header.clone(), chunk(b"partial".to_vec())],
                exo_sdk::Reason::MalformedRequest,
            ),
            ("a 20 MiB chunk", vec![header, chunk(vec![7u8; 20 << 20])], exo_sdk::Reason::RequestTooLarge),
        ];
        for (what, messages, reason) in cases {
            let status = match grpc.put(futures::stream::iter(messages)).await {
                Ok(_) => return Err(format!("an upload with {what} was stored")),
                Err(status) => status,
            };
            let err = exo_sdk::Error::from(status);
            check!(err.reason == reason, "an upload with {what}: {:?}, not {reason:?} ({err})", err.reason);
            check!(!err.retryable, "an upload with {what} is marked retryable: {err}");
        }
        check!(read(&ctx, &b, "k").await? == b"previous", "a refused upload changed the object");
        Ok(())
    }

    /// An upload cancelled midway leaves nothing visible and keeps the previous object
    case "upload.cancelled", needs None;
    async fn upload_cancelled(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("cancel").await?;
        put(&ctx, &b, "k", "previous").await?;
        let chunks = [
            Ok(Bytes::from(vec![1u8; 300_000])),
            Ok(Bytes::from(vec![2u8; 300_000])),
            Err(std::io::Error::other("disk unplugged")),
        ];
        for key in ["k", "fresh"] {
            let result = ctx
                .client
                .put_stream(
                    &b,
                    key,
                    futures::stream::iter(
                        chunks
                            .iter()
                            .map(|c| match c {
                                Ok(bytes) => Ok(bytes.clone()),
                                Err(e) => Err(std::io::Error::other(e.to_string())),
                            })
                            .collect::<Vec<_>>(),
                    ),
                    PutOptions::default(),
                )
                .await;
            check!(result.is_err(), "a cancelled upload of {key} reported success");
        }
        // The proxy notices the cancelled stream asynchronously; give it a moment.
        tokio::time::sleep(Duration::from_millis(300)).await;
        check!(read(&ctx, &b, "k").await? == b"previous", "a cancelled upload replaced the object");
        expect_reason(
            ctx.client.head(&b, "fresh").await,
            Reason::ObjectNotFound,
            "a cancelled upload created an object",
        )?;
        Ok(())
    }
}
