//! The topic routes over HTTP/JSON: the same behaviour as gRPC, errors as problem+json.

use base64::Engine as _;
use serde_json::{Value, json};

use super::*;

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let mut request = http.request(method.clone(), &url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(|e| format!("{method} {url} failed: {e}"))?;
    let status = response.status().as_u16();
    let json = response.json().await.map_err(|e| format!("{method} {url}: body is not JSON: {e}"))?;
    Ok((status, json))
}

crate::cases! {
    /// Topics, subscriptions and publishes work over HTTP/JSON and reach gRPC consumers byte-exact
    case "topic_http.round_trip", needs Some(Cap::Topics);
    async fn round_trip(ctx: Ctx) -> CaseOutcome {
        let http = reqwest::Client::new();
        let base = format!("{}/api/v1/topics", ctx.http_base);
        let topic = ctx.name("web");
        let (status, body) = call(&http, reqwest::Method::POST, base.clone(), Some(json!({"name": topic}))).await?;
        check!(status == 201 && body["created"] == true, "create topic: {status} {body}");
        let (status, _) = call(&http, reqwest::Method::POST, base.clone(), Some(json!({"name": topic}))).await?;
        check!(status == 200, "create existing topic answered {status}");
        let queue = ctx.name("web-q");
        let subscription = json!({"name": "web", "queue": queue, "filter": "via = 'http'", "createQueue": {}});
        let (status, body) =
            call(&http, reqwest::Method::POST, format!("{base}/{topic}/subscriptions"), Some(subscription)).await?;
        check!(status == 201 && body["subscription"]["queue"] == queue.as_str(), "subscribe: {status} {body}");
        let bytes = vec![0u8, 159, 146, 150, 255, b'\n'];
        let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let message = json!({"message": {"body": encoded, "attributes": {"via": "http"}}});
        let (status, published) = call(&http, reqwest::Method::POST, format!("{base}/{topic}/publish"), Some(message)).await?;
        check!(status == 200 && published["deliveries"] == 1, "publish: {status} {published}");
        let batch = json!({"entries": [{"id": "skip", "message": {"body": "eA==", "attributes": {"via": "grpc"}}},
                                        {"id": "bad", "message": {"body": "eA==", "attributes": {"exo.x": "y"}}}]});
        let (status, results) = call(&http, reqwest::Method::POST, format!("{base}/{topic}/publish/batch"), Some(batch)).await?;
        check!(status == 200, "publish batch answered {status}: {results}");
        check!(results["results"][0]["id"] == "skip" && results["results"][0]["publishId"].is_string(), "batch entry 0: {results}");
        check!(results["results"][1]["error"]["reason"] == "INVALID_ATTRIBUTE", "batch entry 1: {results}");
        let (status, info) = call(&http, reqwest::Method::GET, format!("{base}/{topic}"), None).await?;
        check!(status == 200 && info["info"]["subscriptions"][0]["filter"] == "via = 'http'", "topic info: {status} {info}");
        let (status, list) = call(&http, reqwest::Method::GET, format!("{base}?prefix={}", ctx.prefix), None).await?;
        check!(status == 200 && list["names"] == json!([topic]), "list topics: {status} {list}");
        let copy = topics::one_copy(&ctx, &queue).await?;
        check!(copy.body == bytes, "bytes changed between HTTP and gRPC: {:?}", copy.body);
        check!(
            copy.attributes.get(exo_sdk::PUBLISH_ID_ATTRIBUTE) == published["publishId"].as_str().map(str::to_owned).as_ref(),
            "publish id differs: {published} vs {:?}",
            copy.attributes
        );
        let (status, _) = call(&http, reqwest::Method::DELETE, format!("{base}/{topic}/subscriptions/web"), None).await?;
        check!(status == 200, "unsubscribe answered {status}");
        let (status, _) = call(&http, reqwest::Method::DELETE, format!("{base}/{topic}"), None).await?;
        check!(status == 200, "delete topic answered {status}");
        Ok(())
    }

    /// Topic errors over HTTP are problem+json with their reason and status
    case "topic_http.problems", needs Some(Cap::Topics);
    async fn problems(ctx: Ctx) -> CaseOutcome {
        let http = reqwest::Client::new();
        let base = format!("{}/api/v1/topics", ctx.http_base);
        let missing = ctx.name("nowhere");
        let topic = ctx.topic("probs").await?;
        let queue = ctx.queue("probs-q").await?;
        for (method, url, body, status, reason) in [
            (reqwest::Method::POST, format!("{base}/{missing}/publish"), Some(json!({"message": {"body": "eA=="}})), 404, "TOPIC_NOT_FOUND"),
            (reqwest::Method::GET, format!("{base}/{missing}"), None, 404, "TOPIC_NOT_FOUND"),
            (reqwest::Method::DELETE, format!("{base}/{topic}/subscriptions/nope"), None, 404, "SUBSCRIPTION_NOT_FOUND"),
            (reqwest::Method::POST, format!("{base}/{topic}/subscriptions"), Some(json!({"name": "sub", "queue": queue, "filter": "a =="})), 400, "INVALID_FILTER"),
            (reqwest::Method::POST, base.clone(), Some(json!({"name": "Not_Valid"})), 400, "INVALID_NAME"),
        ] {
            let mut request = http.request(method.clone(), &url);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request
                .send()
                .await
                .map_err(|e| format!("{method} {url}: {e}"))?;
            let got = response.status().as_u16();
            let content_type =
                response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let problem: Value = response.json().await.map_err(|e| format!("{method} {url}: not JSON: {e}"))?;
            check!(got == status && problem["reason"] == reason, "{method} {url}: expected {status} {reason}, got {got} {problem}");
            check!(content_type.starts_with("application/problem+json"), "{method} {url}: content-type {content_type:?}");
        }
        let (_, sub) = ok(ctx.topics.subscribe(&topic, "sub", &queue, "", None).await, "subscribe")?;
        let conflict = json!({"name": "sub", "queue": queue, "filter": "k exists"});
        let (status, problem) = call(&http, reqwest::Method::POST, format!("{base}/{topic}/subscriptions"), Some(conflict)).await?;
        check!(status == 409 && problem["reason"] == "SUBSCRIPTION_ALREADY_EXISTS", "conflict: {status} {problem}");
        check!(sub.filter.is_empty(), "the conflicting request changed the subscription");
        Ok(())
    }
}
