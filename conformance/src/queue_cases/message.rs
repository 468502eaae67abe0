//! The message cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// Bodies come back byte-exact: empty, non-UTF-8, every byte value
    case "message.bytes_round_trip", needs None;
    async fn bytes_round_trip(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("bytes").await?;
        let every_byte: Vec<u8> = (0..=255u8).collect();
        let bodies: Vec<Vec<u8>> =
            vec![Vec::new(), vec![0xff, 0xfe, 0x00, 0xc3, 0x28], every_byte, b"plain text\n".to_vec()];
        for body in &bodies {
            ok(ctx.client.send(&q, body.clone()).await, "send")?;
        }
        let mut got: Vec<Vec<u8>> = drain(&ctx, &q).await?.into_iter().map(|m| m.body).collect();
        let mut want = bodies;
        got.sort();
        want.sort();
        check!(got == want, "bodies changed in transit: sent {want:?}, got {got:?}");
        Ok(())
    }

    /// Attributes come back exactly, including non-ASCII values
    case "message.attributes_round_trip", needs None;
    async fn attributes_round_trip(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("attrs").await?;
        let sent = Outgoing::new("x")
            .attribute("trace-id", "abc123")
            .attribute("Content_Type", "application/json")
            .attribute("emoji", "snow ☃ and \u{1F600}")
            .attribute("multi.line", "a\tb\nc");
        let expected = sent.attributes.clone();
        ok(ctx.client.send_message(&q, sent).await, "send")?;
        let m = receive_one(&ctx, &q, Duration::from_secs(30)).await?;
        check!(m.attributes == expected, "attributes changed: sent {expected:?}, got {:?}", m.attributes);
        Ok(())
    }

    /// Bad attribute names or values, or too many, fail with INVALID_ATTRIBUTE and enqueue nothing
    case "message.invalid_attributes", needs None;
    async fn invalid_attributes(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("badattrs").await?;
        let cases = [
            ("", "v"),
            ("has space", "v"),
            ("exo.reserved", "v"),
            ("AWS.reserved", "v"),
            (".lead", "v"),
            ("a..b", "v"),
            ("empty", ""),
            ("ctrl", "bell\u{7}"),
        ];
        for (name, value) in cases {
            expect_reason(
                ctx.client.send_message(&q, Outgoing::new("x").attribute(name, value)).await,
                Reason::InvalidAttribute,
                &format!("attribute {name:?}={value:?}"),
            )?;
        }
        let max = ctx.limits().max_attributes as usize;
        let mut crowded = Outgoing::new("x");
        for i in 0..=max {
            crowded = crowded.attribute(format!("a{i}"), "v");
        }
        expect_reason(
            ctx.client.send_message(&q, crowded).await,
            Reason::InvalidAttribute,
            "too many attributes",
        )?;
        check!(visible_count(&ctx, &q).await? == 0, "a rejected message was enqueued");
        Ok(())
    }

    /// A body over the limit fails with MESSAGE_TOO_LARGE and enqueues nothing; exactly the limit
    /// is accepted
    case "message.too_large", needs None;
    async fn too_large(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("large").await?;
        let max = ctx.limits().max_message_bytes as usize;
        let err = expect_reason(
            ctx.client.send(&q, vec![b'x'; max + 1]).await,
            Reason::MessageTooLarge,
            "oversize send",
        )?;
        check!(!err.retryable, "MESSAGE_TOO_LARGE must not be retryable");
        check!(visible_count(&ctx, &q).await? == 0, "the oversize message was enqueued");
        // Attributes count towards the limit.
        let with_attr = Outgoing::new(vec![b'y'; max - 4]).attribute("abc", "de");
        expect_reason(
            ctx.client.send_message(&q, with_attr).await,
            Reason::MessageTooLarge,
            "body+attributes over limit",
        )?;
        ok(ctx.client.send(&q, vec![b'z'; max]).await, "send of exactly the limit")?;
        let m = receive_one(&ctx, &q, Duration::from_secs(30)).await?;
        check!(m.body.len() == max && m.body.iter().all(|b| *b == b'z'), "limit-sized body changed");
        Ok(())
    }
}
