//! The http cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// The proxy answers the standard gRPC health check for its service with SERVING (what the
    /// rendered Kubernetes probes ask), and NOT_FOUND for a service it does not serve
    case "health.grpc", needs None;
    async fn grpc_health(ctx: Ctx) -> CaseOutcome {
        crate::grpc_serving(&ctx.http_base, "exo.object.v1.ObjectService").await
    }

    /// HTTP PUT with headers, GET with Range (206), HEAD, and gRPC see the same object
    case "http.object_round_trip", needs None;
    async fn http_round_trip(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("httprt").await?;
        let http = reqwest::Client::new();
        let url = format!("{}/api/v1/buckets/{b}/objects/dir/a%20b.bin", ctx.http_base);
        let data = pattern(10_000);
        let response = http
            .put(&url)
            .header("content-type", "application/x-test")
            .header("x-exo-meta-color", "blue")
            .body(data.clone())
            .send()
            .await
            .map_err(|e| format!("HTTP PUT: {e}"))?;
        check!(response.status() == 200, "HTTP PUT answered {}", response.status());
        let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        check!(etag.starts_with('"') && etag.ends_with('"'), "ETag header not quoted: {etag:?}");
        let info = ok(ctx.client.head(&b, "dir/a b.bin").await, "gRPC head")?;
        check!(format!("\"{}\"", info.etag) == etag, "ETags differ: {etag} vs {}", info.etag);
        check!(
            info.content_type == "application/x-test"
                && info.metadata.get("color").map(String::as_str) == Some("blue"),
            "attributes: {info:?}"
        );
        let ranged = http.get(&url).header("range", "bytes=100-199").send().await.map_err(|e| e.to_string())?;
        check!(ranged.status() == 206, "ranged GET answered {}", ranged.status());
        let content_range =
            ranged.headers().get("content-range").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        check!(content_range == "bytes 100-199/10000", "Content-Range {content_range:?}");
        let body = ranged.bytes().await.map_err(|e| e.to_string())?;
        check!(body.as_ref() == &data[100..200], "ranged body differs");
        let head = http.head(&url).send().await.map_err(|e| e.to_string())?;
        let length = head.headers().get("content-length").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        check!(head.status() == 200 && length == "10000", "HEAD: {} length {length:?}", head.status());
        check!(head.headers().get("x-exo-meta-color").is_some(), "HEAD lacks metadata headers");
        Ok(())
    }

    /// HTTP Range starting at the size (or bytes=-0) is 416 with Content-Range: bytes */size (RFC
    /// 9110)
    case "http.range_unsatisfiable", needs Some(Cap::RangeRead);
    async fn http_range_unsatisfiable(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("httprange").await?;
        let http = reqwest::Client::new();
        let url = |key: &str| format!("{}/api/v1/buckets/{b}/objects/{key}", ctx.http_base);
        ok(ctx.client.put_bytes(&b, "k", pattern(1000), PutOptions::default()).await, "put")?;
        ok(ctx.client.put_bytes(&b, "empty", Vec::new(), PutOptions::default()).await, "put empty")?;
        for (key, range, size) in [
            ("k", "bytes=1000-", 1000),
            ("k", "bytes=1000-2000", 1000),
            ("k", "bytes=-0", 1000),
            ("empty", "bytes=0-", 0),
        ] {
            let response =
                http.get(url(key)).header("range", range).send().await.map_err(|e| format!("GET: {e}"))?;
            let status = response.status();
            let content_range =
                response.headers().get("content-range").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            check!(status == 416, "{range} on {size} bytes answered {status}, not 416");
            check!(content_range == format!("bytes */{size}"), "{range}: Content-Range {content_range:?}");
            let problem: serde_json::Value = response.json().await.map_err(|e| format!("problem body: {e}"))?;
            check!(problem["reason"] == "RANGE_NOT_SATISFIABLE", "{range}: problem {problem}");
        }
        let last = http.get(url("k")).header("range", "bytes=999-").send().await.map_err(|e| e.to_string())?;
        check!(last.status() == 206, "the last byte answered {}", last.status());
        check!(
            last.bytes().await.map_err(|e| e.to_string())?.as_ref() == &pattern(1000)[999..],
            "last byte differs"
        );
        Ok(())
    }

    /// HTTP If-None-Match: * on an existing key is 412 problem+json; GET If-None-Match at the ETag
    /// is an empty 304
    case "http.object_conditionals", needs None;
    async fn http_conditionals(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("httpcond").await?;
        let info = put(&ctx, &b, "k", "v").await?;
        let http = reqwest::Client::new();
        let url = format!("{}/api/v1/buckets/{b}/objects/k", ctx.http_base);
        let response =
            http.put(&url).header("if-none-match", "*").body("new").send().await.map_err(|e| e.to_string())?;
        check!(response.status() == 412, "If-None-Match: * on an existing key answered {}", response.status());
        let problem: serde_json::Value = response.json().await.map_err(|e| format!("problem body: {e}"))?;
        check!(problem["reason"] == "CONDITION_FAILED", "problem {problem}");
        let not_modified = http
            .get(&url)
            .header("if-none-match", format!("\"{}\"", info.etag))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        check!(not_modified.status() == 304, "If-None-Match at the ETag answered {}", not_modified.status());
        check!(not_modified.bytes().await.map_err(|e| e.to_string())?.is_empty(), "a 304 must have no body");
        check!(read(&ctx, &b, "k").await? == b"v", "a refused write changed the object");
        Ok(())
    }

    /// A non-ASCII metadata header is 400 and writes nothing
    case "http.object_bad_metadata", needs None;
    async fn http_bad_metadata(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("httpmeta").await?;
        let url = format!("{}/api/v1/buckets/{b}/objects/k", ctx.http_base);
        let value = reqwest::header::HeaderValue::from_bytes(b"caf\xe9").map_err(|e| e.to_string())?;
        let response = reqwest::Client::new()
            .put(&url)
            .header("x-exo-meta-name", value)
            .body("v")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        check!(response.status() == 400, "non-ASCII metadata header answered {}", response.status());
        expect_reason(ctx.client.head(&b, "k").await, Reason::ObjectNotFound, "a rejected upload wrote")?;
        Ok(())
    }

    /// Every object route in the OpenAPI document is served
    case "http.object_openapi_routes", needs None;
    async fn http_openapi_routes(ctx: Ctx) -> CaseOutcome {
        let b = ctx.bucket("openapi").await?;
        crate::openapi_check::documented_routes_are_served(
            &ctx.http_base,
            &["objects", "meta"],
            &[("bucket", &b), ("key", "k")],
        )
        .await
    }
}
