//! A structural check of the custom resources `exo deploy` renders for Kubernetes (KEDA's
//! `ScaledObject` and `TriggerAuthentication`, the Prometheus Operator's `PodMonitor`).
//! kubernetes-validate knows only built-in kinds and merely warns about these, so this checks
//! the fields their operators require, their types, and what no schema can: that a
//! `ScaledObject` targets the rendered Deployment, that its `authenticationRef` names a rendered
//! `TriggerAuthentication`, and that a `PodMonitor` selects the pod and scrapes ports it has.

use serde_json::Value;

/// Triggers `exo deploy` renders, with the metadata keys each scaler requires.
const TRIGGERS: &[(&str, &[&str])] = &[
    ("aws-sqs-queue", &["queueURL", "queueLength", "awsRegion"]),
    ("azure-queue", &["queueName", "queueLength", "accountName"]),
    ("prometheus", &["serverAddress", "query", "threshold"]),
];

/// Problems in the custom resources among `docs` (every rendered k8s document; empty when fine).
pub fn check(docs: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let kind = |d: &Value| d["kind"].as_str().unwrap_or_default().to_owned();
    let deployment = docs.iter().find(|d| kind(d) == "Deployment");
    let auths: Vec<&str> = docs
        .iter()
        .filter(|d| kind(d) == "TriggerAuthentication")
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    for doc in docs {
        let name = doc["metadata"]["name"].as_str().unwrap_or("?");
        let mut bad = |what: String| problems.push(format!("{} {name}: {what}", kind(doc)));
        match (doc["apiVersion"].as_str().unwrap_or_default(), kind(doc).as_str()) {
            ("keda.sh/v1alpha1", "ScaledObject") => {
                let spec = &doc["spec"];
                let target = &spec["scaleTargetRef"];
                match deployment {
                    Some(d) if target["name"] == d["metadata"]["name"] && target["kind"] == "Deployment" => {}
                    _ => bad(format!("scaleTargetRef {target} is not the rendered Deployment")),
                }
                let (min, max) = (spec["minReplicaCount"].as_u64(), spec["maxReplicaCount"].as_u64());
                if !matches!((min, max), (Some(lo), Some(hi)) if lo <= hi && hi > 0) {
                    bad(format!(
                        "minReplicaCount {min:?} and maxReplicaCount {max:?} must be integers, min <= max"
                    ));
                }
                let triggers = spec["triggers"].as_array().cloned().unwrap_or_default();
                if triggers.is_empty() {
                    bad("has no triggers".into());
                }
                for t in &triggers {
                    let ty = t["type"].as_str().unwrap_or_default();
                    let Some((_, required)) = TRIGGERS.iter().find(|(known, _)| *known == ty) else {
                        bad(format!("unknown trigger type {ty:?}"));
                        continue;
                    };
                    let metadata = t["metadata"].as_object().cloned().unwrap_or_default();
                    for key in *required {
                        match metadata.get(*key).and_then(Value::as_str) {
                            Some(v) if !v.is_empty() => {}
                            _ => bad(format!("trigger {ty} needs a non-empty string {key}")),
                        }
                    }
                    if let Some((key, v)) = metadata.iter().find(|(_, v)| !v.is_string()) {
                        bad(format!("trigger {ty} metadata {key} must be a string, got {v}"));
                    }
                    for key in ["queueLength", "threshold"] {
                        if let Some(v) = metadata.get(key).and_then(Value::as_str)
                            && v.parse::<u64>().map_or(true, |n| n == 0)
                        {
                            bad(format!("trigger {ty} {key} must be a positive integer, got {v:?}"));
                        }
                    }
                    if let Some(auth) = t.get("authenticationRef")
                        && !auths.contains(&auth["name"].as_str().unwrap_or_default())
                    {
                        bad(format!("authenticationRef {auth} names no rendered TriggerAuthentication"));
                    }
                }
            }
            ("keda.sh/v1alpha1", "TriggerAuthentication") => {
                let provider = doc["spec"]["podIdentity"]["provider"].as_str().unwrap_or_default();
                if !["azure-workload", "aws", "aws-eks", "gcp"].contains(&provider) {
                    bad(format!("podIdentity.provider {provider:?} is not one KEDA knows"));
                }
            }
            ("monitoring.coreos.com/v1", "PodMonitor") => {
                let selector = &doc["spec"]["selector"]["matchLabels"];
                let pod = deployment.map(|d| &d["spec"]["template"]);
                let selects = pod.is_some_and(|p| {
                    selector.as_object().is_some_and(|want| {
                        !want.is_empty() && want.iter().all(|(k, v)| p["metadata"]["labels"][k] == *v)
                    })
                });
                if !selects {
                    bad(format!("selector {selector} does not select the Deployment's pods"));
                }
                let ports: Vec<&str> = pod
                    .map(|p| {
                        ["containers", "initContainers"]
                            .iter()
                            .flat_map(|list| p["spec"][*list].as_array().into_iter().flatten())
                            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                            .filter_map(|port| port["name"].as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                let endpoints = doc["spec"]["podMetricsEndpoints"].as_array().cloned().unwrap_or_default();
                if endpoints.is_empty() {
                    bad("has no podMetricsEndpoints".into());
                }
                for e in endpoints {
                    let port = e["port"].as_str().unwrap_or_default();
                    if !ports.contains(&port) {
                        bad(format!("endpoint port {port:?} is not a named port of the pod ({ports:?})"));
                    }
                    if !e["path"].as_str().is_some_and(|p| p.starts_with('/')) {
                        bad(format!("endpoint {port} needs a path starting with /"));
                    }
                }
            }
            (api, k) if api.ends_with(".coreos.com/v1") || api.starts_with("keda.sh/") => {
                bad(format!("{api} {k} is not a custom resource exo deploy renders"));
            }
            _ => {}
        }
    }
    problems
}
