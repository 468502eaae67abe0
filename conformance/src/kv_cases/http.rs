//! The http cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// The proxy answers the standard gRPC health check for its service with SERVING (what the
    /// rendered Kubernetes probes ask), and NOT_FOUND for a service it does not serve
    case "health.grpc", needs None;
    async fn grpc_health(ctx: Ctx) -> CaseOutcome {
        crate::grpc_serving(&ctx.http_base, "exo.kv.v1.KvService").await
    }

    /// A value written over HTTP/JSON is read byte-exact over gRPC, and the reverse
    case "kv.http_round_trip", needs None;
    async fn http_round_trip(ctx: Ctx) -> CaseOutcome {
        use base64::Engine as _;
        let t = ctx.table("http").await?;
        let http = reqwest::Client::new();
        let value = vec![0u8, 255, 10, 13];
        let encoded = base64::engine::general_purpose::STANDARD.encode(&value);
        let url = format!("{}/api/v1/tables/{t}/entries/dir/key%20one", ctx.http_base);
        let response = http
            .put(&url)
            .json(&serde_json::json!({"value": encoded, "condition": {"mustNotExist": true}}))
            .send()
            .await
            .map_err(|e| format!("HTTP put failed: {e}"))?;
        check!(response.status() == 200, "HTTP put answered {}", response.status());
        let put: serde_json::Value = response.json().await.map_err(|e| format!("bad JSON: {e}"))?;
        let e = value_of(&ctx, &t, "dir/key one").await?;
        check!(e.value == value, "bytes changed between HTTP and gRPC");
        check!(put["version"] == e.version.as_str(), "versions differ: {put} vs {}", e.version);
        ok(ctx.client.put(&t, "from-grpc", b"\x01\x02".to_vec(), Put::default()).await, "grpc put")?;
        let got: serde_json::Value = http
            .get(format!("{}/api/v1/tables/{t}/entries/from-grpc", ctx.http_base))
            .send()
            .await
            .map_err(|e| format!("HTTP get failed: {e}"))?
            .json()
            .await
            .map_err(|e| format!("bad JSON: {e}"))?;
        check!(got["entry"]["value"] == "AQI=", "HTTP get value: {got}");
        Ok(())
    }

    /// A missing key over HTTP is a 404 problem+json with reason KEY_NOT_FOUND
    case "kv.http_problem_json", needs None;
    async fn http_problem_json(ctx: Ctx) -> CaseOutcome {
        let t = ctx.table("httpprob").await?;
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/tables/{t}/entries/nothing-here", ctx.http_base))
            .send()
            .await
            .map_err(|e| format!("HTTP get failed: {e}"))?;
        check!(response.status() == 404, "expected 404, got {}", response.status());
        let ct = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        check!(ct.starts_with("application/problem+json"), "content-type {ct:?}");
        let body: serde_json::Value = response.json().await.map_err(|e| format!("bad problem JSON: {e}"))?;
        check!(body["reason"] == "KEY_NOT_FOUND" && body["status"] == 404, "problem body: {body}");
        Ok(())
    }

    /// Every key-value route in the OpenAPI document is served
    case "kv.http_openapi_routes", needs None;
    async fn http_openapi_routes(ctx: Ctx) -> CaseOutcome {
        let t = ctx.table("openapi").await?;
        crate::openapi_check::documented_routes_are_served(
            &ctx.http_base,
            &["kv", "meta"],
            &[("table", &t), ("key", "k")],
        )
        .await
    }
}
