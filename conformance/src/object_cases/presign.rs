//! The presign cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// A presigned GET URL downloads the object with no other credentials
    case "presign.get", needs Some(Cap::Presign);
    async fn presign_get(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("psget").await?;
        put(&ctx, &b, "dir/file name.txt", "presigned content").await?;
        let url =
            ok(ctx.client.presign(&b, "dir/file name.txt", false, Duration::from_secs(300)).await, "presign")?
                .url;
        let response = reqwest::get(&url).await.map_err(|e| format!("GET {url}: {e}"))?;
        check!(response.status() == 200, "presigned GET answered {}", response.status());
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        check!(body.as_ref() == b"presigned content", "presigned GET returned {body:?}");
        Ok(())
    }

    /// A presigned PUT URL uploads the object with no other credentials
    case "presign.put", needs Some(Cap::Presign);
    async fn presign_put(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("psput").await?;
        let presigned =
            ok(ctx.client.presign(&b, "upload.bin", true, Duration::from_secs(300)).await, "presign")?;
        let mut request = reqwest::Client::new().put(&presigned.url).body(vec![1u8, 2, 3]);
        for (name, value) in &presigned.headers {
            request = request.header(name, value);
        }
        let url = &presigned.url;
        let response = request.send().await.map_err(|e| format!("PUT {url}: {e}"))?;
        check!(response.status().is_success(), "presigned PUT answered {}", response.status());
        check!(read(&ctx, &b, "upload.bin").await? == [1, 2, 3], "presigned PUT stored wrong bytes");
        Ok(())
    }

    /// A presigned URL with any part altered is refused
    case "presign.tampered", needs Some(Cap::Presign);
    async fn presign_tampered(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("pstamper").await?;
        put(&ctx, &b, "secret", "s").await?;
        put(&ctx, &b, "other", "o").await?;
        let url = ok(ctx.client.presign(&b, "secret", false, Duration::from_secs(300)).await, "presign")?.url;
        // Backends name the parameters differently (signature= / X-Amz-Signature= /
        // X-Goog-Signature= / sig=, expires= / X-Amz-Expires= / X-Goog-Expires= / se=): find the
        // value after whichever is present.
        let value_of = |names: &[&str]| {
            let lower = url.to_ascii_lowercase();
            names.iter().find_map(|name| {
                ['?', '&']
                    .iter()
                    .find_map(|sep| lower.find(&format!("{sep}{name}=")).map(|at| at + name.len() + 2))
            })
        };
        let signature_at =
            value_of(&["signature", "x-amz-signature", "x-goog-signature", "sig"]).ok_or("URL has no signature parameter")?;
        let expires_at = value_of(&["expires", "x-amz-expires", "x-goog-expires", "se"]).ok_or("URL has no expiry parameter")?;
        let flipped = {
            let mut u = url.clone().into_bytes();
            u[signature_at] = if u[signature_at] == b'0' { b'1' } else { b'0' };
            String::from_utf8(u).map_err(|e| e.to_string())?
        };
        let variants = [
            ("other key", url.replacen("/secret?", "/other?", 1)),
            ("flipped signature", flipped),
            ("later expiry", format!("{}9{}", &url[..expires_at], &url[expires_at..])),
        ];
        let http = reqwest::Client::new();
        for (what, tampered) in variants {
            check!(tampered != url, "{what}: could not alter the URL {url}");
            let response = http.get(&tampered).send().await.map_err(|e| e.to_string())?;
            check!(
                response.status() == 403 || response.status() == 401,
                "{what}: tampered URL answered {}",
                response.status()
            );
        }
        let put_with_get_url = http.put(&url).body("x").send().await.map_err(|e| e.to_string())?;
        check!(!put_with_get_url.status().is_success(), "a GET URL allowed a PUT");
        check!(read(&ctx, &b, "secret").await? == b"s", "a refused request changed the object");
        Ok(())
    }

    /// A presigned URL stops working when it expires
    case "presign.expired", needs Some(Cap::Presign);
    async fn presign_expired(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("psexp").await?;
        put(&ctx, &b, "k", "v").await?;
        let url = ok(ctx.client.presign(&b, "k", false, Duration::from_secs(1)).await, "presign")?.url;
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let response = reqwest::get(&url).await.map_err(|e| e.to_string())?;
        check!(
            response.status() == 403 || response.status() == 401,
            "expired URL answered {}",
            response.status()
        );
        Ok(())
    }
}
