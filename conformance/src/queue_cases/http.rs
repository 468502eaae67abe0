//! The http cases. Each case's doc comment is its description in reports.

use super::*;

crate::cases! {
    /// The proxy answers the standard gRPC health check for its service with SERVING (what the
    /// rendered Kubernetes probes ask), and NOT_FOUND for a service it does not serve
    case "health.grpc", needs None;
    async fn grpc_health(ctx: Ctx) -> CaseOutcome {
        crate::grpc_serving(&ctx.http_base, "exo.queue.v1.QueueService").await
    }

    /// HTTP errors are RFC 9457 problem+json with the stable reason
    case "http.problem_json", needs None;
    async fn http_problem_json(ctx: Ctx) -> CaseOutcome {
        let http = reqwest::Client::new();
        let q = ctx.name("nohttp");
        let response = http
            .post(format!("{}/api/v1/queues/{q}/messages", ctx.http_base))
            .json(&serde_json::json!({"message": {"body": "eA=="}}))
            .send()
            .await
            .map_err(|e| format!("HTTP send failed: {e}"))?;
        check!(response.status() == 404, "expected 404, got {}", response.status());
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        check!(content_type.starts_with("application/problem+json"), "content-type {content_type:?}");
        let body: serde_json::Value =
            response.json().await.map_err(|e| format!("problem body is not JSON: {e}"))?;
        check!(body["reason"] == "QUEUE_NOT_FOUND", "reason {:?}", body["reason"]);
        check!(
            body["status"] == 404 && body["type"].is_string() && body["title"].is_string(),
            "not RFC 9457 shaped: {body}"
        );
        check!(body["retryable"] == false, "retryable flag missing: {body}");
        Ok(())
    }

    /// A message sent over HTTP/JSON is received byte-exact over gRPC
    case "http.cross_protocol", needs None;
    async fn http_cross_protocol(ctx: Ctx) -> CaseOutcome {
        use base64::Engine as _;
        let q = ctx.queue("xproto").await?;
        let body = vec![0u8, 159, 146, 150, 255, b'\n'];
        let encoded = base64::engine::general_purpose::STANDARD.encode(&body);
        let response = reqwest::Client::new()
            .post(format!("{}/api/v1/queues/{q}/messages", ctx.http_base))
            .json(&serde_json::json!({"message": {"body": encoded, "attributes": {"via": "http"}}}))
            .send()
            .await
            .map_err(|e| format!("HTTP send failed: {e}"))?;
        check!(response.status() == 200, "HTTP send answered {}", response.status());
        let sent: serde_json::Value = response.json().await.map_err(|e| format!("bad JSON: {e}"))?;
        let m = receive_one(&ctx, &q, Duration::from_secs(30)).await?;
        check!(m.body == body, "bytes changed between HTTP and gRPC: {:?}", m.body);
        check!(sent["messageId"] == m.message_id.as_str(), "message id differs: {sent} vs {}", m.message_id);
        check!(m.attributes.get("via").map(String::as_str) == Some("http"), "attributes lost");
        Ok(())
    }

    /// Malformed JSON fails with 400 MALFORMED_REQUEST and changes nothing
    case "http.malformed_json", needs None;
    async fn http_malformed(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("badjson").await?;
        let http = reqwest::Client::new();
        for body in ["{not json", r#"{"message": {"body": "***not base64***"}}"#, r#"{"mesage": {}}"#] {
            let response = http
                .post(format!("{}/api/v1/queues/{q}/messages", ctx.http_base))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| format!("HTTP send failed: {e}"))?;
            check!(response.status() == 400, "{body:?}: expected 400, got {}", response.status());
            let problem: serde_json::Value =
                response.json().await.map_err(|e| format!("bad problem body: {e}"))?;
            check!(problem["reason"] == "MALFORMED_REQUEST", "{body:?}: reason {:?}", problem["reason"]);
        }
        check!(visible_count(&ctx, &q).await? == 0, "a malformed request enqueued a message");
        Ok(())
    }

    /// Every queue route in the OpenAPI document is served
    case "http.openapi_routes", needs None;
    async fn http_openapi_routes(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("openapi").await?;
        crate::openapi_check::documented_routes_are_served(&ctx.http_base, &["queues", "meta"], &[("queue", &q)])
            .await
    }

    /// A batch entry's message with a field the contract does not have is refused 400 for the
    /// whole batch, sending nothing, and the served OpenAPI document says so
    /// (additionalProperties: false on the entry's message)
    case "http.batch_unknown_fields", needs None;
    async fn http_batch_unknown_fields(ctx: Ctx) -> CaseOutcome {
        let q = ctx.queue("batchfields").await?;
        let http = reqwest::Client::new();
        let response = http
            .post(format!("{}/api/v1/queues/{q}/messages/batch", ctx.http_base))
            .json(&serde_json::json!({"entries": [
                {"id": "a", "message": {"body": "eA=="}},
                {"id": "b", "message": {"body": "eA==", "priority": 1}},
            ]}))
            .send()
            .await
            .map_err(|e| format!("HTTP batch send failed: {e}"))?;
        let status = response.status();
        let problem: serde_json::Value = response.json().await.unwrap_or_default();
        check!(status == 400, "an unknown field in an entry's message answered {status}: {problem}");
        check!(problem["reason"] == "MALFORMED_REQUEST", "reason {:?}", problem["reason"]);
        check!(visible_count(&ctx, &q).await? == 0, "a refused batch sent messages");
        let doc = crate::openapi_check::served_document(&ctx.http_base).await?;
        for entry in ["SendBatchEntry", "PublishBatchEntry"] {
            let message = &doc["components"]["schemas"][entry]["properties"]["message"];
            check!(
                message["additionalProperties"] == false,
                "the document lets a {entry}'s message carry unknown fields: {message}"
            );
        }
        Ok(())
    }

    /// The largest message Describe allows is accepted over HTTP/JSON too (its body base64 in
    /// the JSON), and comes back whole over gRPC
    case "http.largest_message", needs None;
    async fn http_largest_message(ctx: Ctx) -> CaseOutcome {
        use base64::Engine as _;
        let limits = ok(ctx.client.describe().await, "describe")?.limits.ok_or("no limits")?;
        let size = usize::try_from(limits.max_message_bytes).map_err(|e| e.to_string())?;
        let q = ctx.queue("largest").await?;
        let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let encoded = base64::engine::general_purpose::STANDARD.encode(&body);
        let response = reqwest::Client::new()
            .post(format!("{}/api/v1/queues/{q}/messages", ctx.http_base))
            .json(&serde_json::json!({"message": {"body": encoded}}))
            .send()
            .await
            .map_err(|e| format!("HTTP send failed: {e}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        check!(
            status == 200,
            "a {size}-byte message (Describe's maxMessageBytes) over HTTP answered {status}: {}",
            text.chars().take(300).collect::<String>()
        );
        let m = receive_one(&ctx, &q, Duration::from_secs(30)).await?;
        check!(m.body == body, "the body came back with {} bytes, sent {size}", m.body.len());
        ok(ctx.client.ack(&q, &m.receipt).await, "ack")?;
        Ok(())
    }
}
