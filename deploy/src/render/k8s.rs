//! Kubernetes: the app's Deployment with one proxy sidecar per service it uses (native sidecars —
//! init containers with `restartPolicy: Always`, Kubernetes 1.29+ — or classic ones), the proxy
//! configuration as a ConfigMap, credentials only from a Secret, probes on the proxies' gRPC
//! health service, hardened security contexts, a Service, a PodDisruptionBudget, a
//! NetworkPolicy, KEDA autoscaling on queue depth when the manifest asks for it, and a
//! Prometheus Operator PodMonitor scraping every proxy when it asks for Prometheus.
//!
//! Autoscaling is a KEDA `ScaledObject` (KEDA then owns the HPA): on AWS the `aws-sqs-queue`
//! scaler reads the SQS queue, on Azure the `azure-queue` scaler the storage queue (KEDA's
//! workload identity, through a `TriggerAuthentication`), elsewhere the `prometheus` scaler reads
//! eqs's `exo_queue_visible_messages` from `monitoring.prometheus-url`. The scalers read the
//! current provider's queue only: after a failover the standby's backlog does not scale the app.
//!
//! With `app.container.proxy-transport: unix` each proxy also serves a Unix socket in an
//! in-memory `emptyDir` mounted at `/run/exoflow` in the app and the proxies, and the app's
//! endpoints name the sockets (`unix:/run/exoflow/eqs.sock`); the TCP ports stay for the probes.
//!
//! The proxies listen on 0.0.0.0 inside the pod because kubelet probes connect to the pod IP;
//! the NetworkPolicy admits traffic only to the app's own port, and the proxies require the
//! bearer token `EXO_PROXY_TOKEN` from the Secret (which the app's SDK sends), so other pods cannot
//! use them even where a CNI does not enforce NetworkPolicy.

use serde_json::{Value, json};

use crate::{
    manifest::Manifest,
    render::{Files, SOCKET_DIR, Sidecar, TOKEN_ENV, credential_env, proxy_image, shared_data_dir, sidecars},
};

/// The volume the proxies' Unix sockets are shared through (`proxy-transport: unix`).
const SOCKETS_VOLUME: &str = "exoflow-sockets";

/// The KEDA trigger for the autoscaled queue on the current provider, and the
/// `TriggerAuthentication` it needs, if any.
fn scaler(m: &Manifest, a: &crate::manifest::Autoscale) -> (Value, Option<Value>) {
    use crate::manifest::ProviderKind;
    let physical = format!("{}-{}", m.name, a.queue);
    let target = a.target_depth.to_string();
    match m.current_provider() {
        Some(p) if p.kind == ProviderKind::Aws => (
            json!({ "type": "aws-sqs-queue", "metadata": {
                "queueURL": physical, "queueLength": target,
                "awsRegion": p.region.clone().unwrap_or_default(),
                // The KEDA operator's own IAM role reads the queue depth (sqs:GetQueueAttributes).
                "identityOwner": "operator",
            } }),
            None,
        ),
        Some(p) if p.kind == ProviderKind::Azure => (
            json!({ "type": "azure-queue", "metadata": {
                "queueName": physical, "queueLength": target,
                "accountName": p.account.clone().unwrap_or_default(),
            } }),
            Some(json!({
                "apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
                "metadata": { "name": format!("{}-queue-depth", m.name), "namespace": m.namespace.clone().unwrap_or_else(|| m.name.clone()), "labels": labels(m) },
                // KEDA's workload identity needs Storage Queue Data Reader on the account.
                "spec": { "podIdentity": { "provider": "azure-workload" } },
            })),
        ),
        _ => (
            json!({ "type": "prometheus", "metadata": {
                "serverAddress": m.monitoring.prometheus_url.clone().unwrap_or_default(),
                "query": format!("max(exo_queue_visible_messages{{queue=\"{}\"}})", a.queue),
                "threshold": target,
            } }),
            None,
        ),
    }
}

/// Name of the Secret the credentials come from (created by the operator, never rendered).
pub fn secret_name(m: &Manifest) -> String {
    format!("{}-credentials", m.name)
}

fn labels(m: &Manifest) -> Value {
    json!({ "app.kubernetes.io/name": m.name, "app.kubernetes.io/part-of": "exoflow" })
}

fn hardened() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": { "drop": ["ALL"] },
    })
}

fn sidecar_container(m: &Manifest, s: &Sidecar, native: bool) -> Value {
    let env: Vec<Value> = credential_env(m)
        .into_iter()
        .chain([TOKEN_ENV.to_owned()])
        .map(|name| json!({ "name": name, "valueFrom": { "secretKeyRef": { "name": secret_name(m), "key": name } } }))
        .collect();
    let grpc = json!({ "port": s.port, "service": s.grpc_service });
    let mut c = json!({
        "name": s.name,
        "image": proxy_image(m, s.name),
        "imagePullPolicy": "IfNotPresent",
        "args": ["--config", format!("/etc/exoflow/{}.yaml", s.name)],
        "ports": [{ "name": s.name, "containerPort": s.port, "protocol": "TCP" }],
        "env": env,
        "startupProbe": { "grpc": grpc, "periodSeconds": 1, "failureThreshold": 30 },
        "readinessProbe": { "grpc": grpc, "periodSeconds": 5 },
        "livenessProbe": { "httpGet": { "path": "/healthz", "port": s.port }, "periodSeconds": 10 },
        "resources": {
            "requests": { "cpu": "20m", "memory": "32Mi" },
            "limits": { "cpu": "500m", "memory": "128Mi" },
        },
        "securityContext": hardened(),
        "volumeMounts": [
            { "name": "exoflow-config", "mountPath": "/etc/exoflow", "readOnly": true },
            { "name": "exoflow-data", "mountPath": "/var/lib/exoflow" },
        ],
    });
    if let (Some(dir), Some(mounts)) = (super::remote_tls_dir(m), c["volumeMounts"].as_array_mut()) {
        mounts.push(json!({ "name": "exoflow-remote-tls", "mountPath": dir, "readOnly": true }));
    }
    if let (Some(_), Some(mounts)) = (&s.socket, c["volumeMounts"].as_array_mut()) {
        mounts.push(json!({ "name": SOCKETS_VOLUME, "mountPath": SOCKET_DIR }));
    }
    if native {
        c["restartPolicy"] = json!("Always");
    }
    c
}

fn app_container(m: &Manifest, proxies: &[Sidecar]) -> Value {
    let endpoint = |s: &Sidecar| match &s.socket {
        Some(path) => format!("unix:{path}"),
        None => format!("http://127.0.0.1:{}", s.port),
    };
    let mut env: Vec<Value> =
        proxies.iter().map(|s| json!({ "name": s.endpoint_env, "value": endpoint(s) })).collect();
    // The proxies in the pod require the bearer token; the SDK sends what this variable holds.
    if !proxies.is_empty() {
        env.push(json!({
            "name": TOKEN_ENV,
            "valueFrom": { "secretKeyRef": { "name": secret_name(m), "key": TOKEN_ENV } },
        }));
    }
    let mut c = json!({
        "name": "app",
        "image": m.app_image(),
        "imagePullPolicy": "IfNotPresent",
        "env": env,
        "resources": {
            "requests": { "cpu": "100m", "memory": "128Mi" },
            "limits": { "cpu": "1", "memory": "512Mi" },
        },
        "securityContext": hardened(),
        "volumeMounts": [{ "name": "tmp", "mountPath": "/tmp" }],
    });
    if proxies.iter().any(|s| s.socket.is_some())
        && let Some(mounts) = c["volumeMounts"].as_array_mut()
    {
        mounts.push(json!({ "name": SOCKETS_VOLUME, "mountPath": SOCKET_DIR }));
    }
    if let Some(port) = m.app.container.port {
        c["ports"] = json!([{ "name": "http", "containerPort": port, "protocol": "TCP" }]);
        c["readinessProbe"] = json!({ "tcpSocket": { "port": port }, "periodSeconds": 5 });
        c["livenessProbe"] =
            json!({ "tcpSocket": { "port": port }, "periodSeconds": 10, "failureThreshold": 6 });
    }
    c
}

/// checkov findings the design answers differently, each with its reason (pod annotations).
fn checkov_skips(m: &Manifest) -> serde_json::Map<String, Value> {
    let mut skips = vec![
        (
            "CKV_K8S_35",
            "the proxies take credentials from environment references (env:NAME), as the manifest declares them",
        ),
        ("CKV_K8S_15", "images are pinned (tag or digest), so IfNotPresent pulls exactly what was pinned"),
    ];
    if m.app.container.digest.is_none() {
        skips.push((
            "CKV_K8S_43",
            "the manifest pins the app by tag, not digest; proxy images are pinned by release tag",
        ));
    }
    if m.app.container.port.is_none() {
        skips.push(("CKV_K8S_8", "the app serves no port to probe; its proxies have liveness probes"));
        skips.push(("CKV_K8S_9", "the app serves no port to probe; its proxies have readiness probes"));
    }
    skips
        .into_iter()
        .enumerate()
        .map(|(i, (id, why))| (format!("checkov.io/skip{}", i + 1), Value::String(format!("{id}={why}"))))
        .collect()
}

fn yaml(value: &Value) -> String {
    // Rendering a JSON value as YAML cannot fail; keys come out sorted, so output is stable.
    serde_yaml_ng::to_string(value).unwrap_or_default()
}

/// Renders every Kubernetes object into `k8s/`. `native` selects native sidecars.
pub fn render(m: &Manifest, native: bool) -> Files {
    let proxies = sidecars(m, super::ProxyHost::Pod, &shared_data_dir);
    let mut files = Files::new();
    let namespace = m.namespace.clone().unwrap_or_else(|| m.name.clone());
    let meta = |name: String| json!({ "name": name, "namespace": namespace, "labels": labels(m) });
    files.insert(
        "k8s/namespace.yaml".into(),
        yaml(&json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": namespace, "labels": labels(m) } })),
    );

    files.insert(
        "k8s/serviceaccount.yaml".into(),
        yaml(&json!({
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(m.name.clone()),
            "automountServiceAccountToken": false,
        })),
    );
    let data: serde_json::Map<String, Value> =
        proxies.iter().map(|s| (format!("{}.yaml", s.name), Value::String(s.config.clone()))).collect();
    files.insert(
        "k8s/configmap.yaml".into(),
        yaml(&json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(format!("{}-exoflow", m.name)), "data": data })),
    );

    let sidecar_containers: Vec<Value> = proxies.iter().map(|s| sidecar_container(m, s, native)).collect();
    let mut containers = vec![app_container(m, &proxies)];
    let mut pod = json!({
        "serviceAccountName": m.name,
        "automountServiceAccountToken": false,
        "securityContext": {
            "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "volumes": [
            { "name": "exoflow-config", "configMap": { "name": format!("{}-exoflow", m.name) } },
            { "name": "exoflow-data", "emptyDir": {} },
            { "name": "tmp", "emptyDir": {} },
        ],
    });
    if super::remote_tls_dir(m).is_some()
        && let Some(volumes) = pod["volumes"].as_array_mut()
    {
        volumes.push(
            json!({ "name": "exoflow-remote-tls", "secret": { "secretName": super::remote_tls_secret(m) } }),
        );
    }
    if proxies.iter().any(|s| s.socket.is_some())
        && let Some(volumes) = pod["volumes"].as_array_mut()
    {
        // In memory: a socket file is all it holds, and it should not outlive the pod.
        volumes
            .push(json!({ "name": SOCKETS_VOLUME, "emptyDir": { "medium": "Memory", "sizeLimit": "1Mi" } }));
    }
    if native {
        pod["initContainers"] = json!(sidecar_containers);
    } else {
        containers.extend(sidecar_containers);
    }
    pod["containers"] = json!(containers);
    let mut template_meta = json!({ "labels": labels(m) });
    if m.monitoring.targets.iter().any(|t| t == "prometheus")
        && let Some(first) = proxies.first()
    {
        template_meta["annotations"] = json!({
            "prometheus.io/scrape": "true", "prometheus.io/port": first.port.to_string(), "prometheus.io/path": "/metrics",
        });
    }
    let mut spec = json!({
        "selector": { "matchLabels": labels(m) },
        "template": { "metadata": template_meta, "spec": pod },
    });
    if m.autoscale.is_none() {
        spec["replicas"] = json!(m.replicas);
    }
    files.insert(
        "k8s/deployment.yaml".into(),
        yaml(&json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": m.name, "namespace": namespace, "labels": labels(m), "annotations": checkov_skips(m) },
            "spec": spec,
        })),
    );

    let mut ingress = Vec::new();
    if let Some(port) = m.app.container.port {
        files.insert(
            "k8s/service.yaml".into(),
            yaml(&json!({
                "apiVersion": "v1", "kind": "Service", "metadata": meta(m.name.clone()),
                "spec": {
                    "type": "ClusterIP",
                    "selector": labels(m),
                    "ports": [{ "name": "http", "port": 80, "targetPort": port, "protocol": "TCP" }],
                },
            })),
        );
        ingress.push(json!({ "ports": [{ "port": port, "protocol": "TCP" }] }));
    }
    files.insert(
        "k8s/networkpolicy.yaml".into(),
        yaml(&json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta(m.name.clone()),
            "spec": { "podSelector": { "matchLabels": labels(m) }, "policyTypes": ["Ingress"], "ingress": ingress },
        })),
    );
    files.insert(
        "k8s/pdb.yaml".into(),
        yaml(&json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta(m.name.clone()),
            "spec": { "maxUnavailable": 1, "selector": { "matchLabels": labels(m) } },
        })),
    );
    if let Some(a) = &m.autoscale {
        let (trigger, auth) = scaler(m, a);
        let mut scaled = json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": meta(m.name.clone()),
            "spec": {
                "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": m.name },
                "minReplicaCount": a.min_replicas,
                "maxReplicaCount": a.max_replicas,
                "triggers": [trigger],
            },
        });
        if let Some(auth) = auth {
            scaled["spec"]["triggers"][0]["authenticationRef"] = json!({ "name": auth["metadata"]["name"] });
            files.insert("k8s/triggerauthentication.yaml".into(), yaml(&auth));
        }
        files.insert("k8s/scaledobject.yaml".into(), yaml(&scaled));
    }
    if m.monitoring.targets.iter().any(|t| t == "prometheus") && !proxies.is_empty() {
        // One scrape endpoint per proxy: pod annotations can name only one port.
        let endpoints: Vec<Value> = proxies
            .iter()
            .map(|s| json!({ "port": s.name, "path": "/metrics", "interval": "30s" }))
            .collect();
        files.insert(
            "k8s/podmonitor.yaml".into(),
            yaml(&json!({
                "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": meta(m.name.clone()),
                "spec": { "selector": { "matchLabels": labels(m) }, "podMetricsEndpoints": endpoints },
            })),
        );
    }
    files
}
