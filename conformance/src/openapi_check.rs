//! A check any proxy can be put through: every route its OpenAPI document lists for its
//! service is actually served (never the router's ROUTE_NOT_FOUND or 405).

use crate::{CaseOutcome, check};

/// The OpenAPI document the proxy at `base` serves.
pub async fn served_document(base: &str) -> Result<serde_json::Value, String> {
    reqwest::Client::new()
        .get(format!("{base}/api/v1/openapi.json"))
        .send()
        .await
        .map_err(|e| format!("cannot fetch openapi.json: {e}"))?
        .json()
        .await
        .map_err(|e| format!("openapi.json is not JSON: {e}"))
}

/// Calls every documented operation tagged with one of `tags`, with `{name}` path parameters
/// replaced from `params`, and fails if the server does not route it.
pub async fn documented_routes_are_served(base: &str, tags: &[&str], params: &[(&str, &str)]) -> CaseOutcome {
    let http = reqwest::Client::new();
    let doc = served_document(base).await?;
    let paths = doc["paths"].as_object().ok_or("openapi.json has no paths")?;
    let mut checked = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().into_iter().flatten() {
            let tag = operation["tags"][0].as_str().unwrap_or_default();
            if !tags.contains(&tag) {
                continue;
            }
            let mut concrete = path.clone();
            for (name, value) in params {
                concrete = concrete.replace(&format!("{{{name}}}"), value);
            }
            let url = format!("{base}{concrete}");
            let request = match method.as_str() {
                "get" => http.get(url),
                "delete" => http.delete(url),
                "put" => http.put(url).header("content-type", "application/json").body("{}"),
                "post" => http.post(url).header("content-type", "application/json").body("{}"),
                _ => continue,
            };
            let response = request.send().await.map_err(|e| format!("{method} {path}: {e}"))?;
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            check!(
                status != 405 && !body.contains("ROUTE_NOT_FOUND"),
                "{method} {path} is documented but not served: {status} {body}"
            );
            checked += 1;
        }
    }
    check!(checked > 0, "no documented operation tagged {tags:?}");
    Ok(())
}
