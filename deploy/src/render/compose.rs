//! compose, for a single host (edge affinity): the app and its proxies, the proxies sharing the
//! app's network namespace so the app reaches them on 127.0.0.1. Credentials are interpolated
//! from the host environment and must be set (`${NAME:?}`); nothing secret is written.

use serde_json::{Value, json};

use crate::{
    manifest::Manifest,
    render::{DATA_DIR, Files, credential_env, proxy_image, shared_data_dir, sidecars},
};

/// Renders `compose/compose.yaml` and the proxy configs it mounts.
pub fn render(m: &Manifest) -> Files {
    let proxies = sidecars(m, super::ProxyHost::Loopback, &shared_data_dir);
    let hardened = |service: &mut Value| {
        service["read_only"] = json!(true);
        service["security_opt"] = json!(["no-new-privileges:true"]);
        service["cap_drop"] = json!(["ALL"]);
        service["restart"] = json!("unless-stopped");
    };
    let image = match &m.app.container.edge_override {
        Some(o) => format!("{}:{}", o.image, o.tag.clone().unwrap_or_default()),
        None => m.app_image(),
    };
    let mut app = json!({
        "image": image,
        "environment": proxies.iter().map(|s| (s.endpoint_env.to_owned(), json!(format!("http://127.0.0.1:{}", s.port)))).collect::<serde_json::Map<_, _>>(),
        "tmpfs": ["/tmp"],
    });
    if let Some(port) = m.app.container.port {
        app["ports"] = json!([format!("{port}:{port}")]);
    }
    hardened(&mut app);
    let mut services = serde_json::Map::new();
    services.insert("app".into(), app);
    let mut files = Files::new();
    let credentials: serde_json::Map<String, Value> = credential_env(m)
        .into_iter()
        .map(|name| (name.clone(), json!(format!("${{{name}:?set {name}}}"))))
        .collect();
    for s in &proxies {
        let mut service = json!({
            "image": proxy_image(m, s.name),
            "command": ["--config", format!("/etc/exoflow/{}.yaml", s.name)],
            "network_mode": "service:app",
            "depends_on": ["app"],
            "environment": credentials,
            "volumes": [
                format!("./exoflow/{}.yaml:/etc/exoflow/{}.yaml:ro", s.name, s.name),
                format!("exoflow-data:{DATA_DIR}"),
            ],
        });
        hardened(&mut service);
        services.insert(s.name.into(), service);
        files.insert(format!("compose/exoflow/{}.yaml", s.name), s.config.clone());
    }
    let compose = json!({ "name": m.name, "services": services, "volumes": { "exoflow-data": {} } });
    files.insert("compose/compose.yaml".into(), serde_yaml_ng::to_string(&compose).unwrap_or_default());
    files
}
