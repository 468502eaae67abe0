//! Manifests: the examples check and render deterministically; the proxy configs rendered for
//! local backends load with the proxies' own loaders; a broken manifest reports every problem
//! with its line; the Kubernetes output keeps the invariants kubernetes-validate does not check.

use std::collections::BTreeSet;

use exo_deploy::{Target, manifest::Manifest, plan, render, render::ProxyHost, validate};

fn example(name: &str) -> String {
    std::fs::read_to_string(format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The `topics:` section of the shop example.
fn topics_block() -> String {
    let shop = example("shop.yaml");
    let start = shop.find("topics:\n").expect("the example has topics");
    let end = shop.find("buckets:\n").expect("the example has buckets");
    shop[start..end].to_owned()
}

#[test]
fn topics_are_checked_against_the_queues_and_the_filter_language() {
    let shop = example("shop.yaml");
    for (replacement, message) in [
        ("        queue: nowhere\n", "queue 'nowhere' is not declared"),
        ("        queue: orders\n", "already has a subscription"),
    ] {
        let problems =
            validate::check(&shop.replace("        queue: order-audit\n", replacement)).unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.path == "topics.0.subscriptions.1.queue" && p.message.contains(message)),
            "{problems:?}"
        );
    }
    let bad_filter = shop.replace("kind in ('created', 'paid')", "kind in ('created' 'paid')");
    let problems = validate::check(&bad_filter).unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.path == "topics.0.subscriptions.0.filter" && p.message.contains("filter at byte")),
        "{problems:?}"
    );
    // Every eqs config carries the topics, in the filters' canonical spelling.
    let m = checked("shop.yaml");
    let sidecars = render::sidecars(&m, ProxyHost::Pod, &|name| format!("/data/{name}"));
    let eqs: eqs::config::EqsConfig =
        exo_proxy_core::config::parse_yaml(&sidecars.iter().find(|s| s.name == "eqs").unwrap().config, "eqs")
            .unwrap();
    assert_eq!(eqs.topics.len(), 1);
    assert_eq!(eqs.topics[0].subscriptions[0].filter, "kind in ('created', 'paid')");
    assert!(!eqs.topics[0].subscriptions[0].create_queue, "cloud queues come from the templates");
}

fn checked(name: &str) -> Manifest {
    match validate::check(&example(name)) {
        Ok((m, warnings)) => {
            assert!(warnings.is_empty(), "{warnings:?}");
            m
        }
        Err(problems) => {
            panic!("{name}: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
        }
    }
}

#[test]
fn examples_check_and_plan_every_affinity() {
    let m = checked("shop.yaml");
    let targets: Vec<Target> = plan(&m).into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        targets,
        vec![Target::K8s, Target::Systemd, Target::Compose, Target::CloudFormation, Target::Arm]
    );
    checked("edge-local.yaml");
    checked("central.yaml");
    checked("app-remote.yaml");
}

fn k8s_docs(files: &std::collections::BTreeMap<String, String>) -> Vec<serde_json::Value> {
    files
        .iter()
        .filter(|(path, _)| path.starts_with("k8s/"))
        .map(|(_, text)| serde_yaml_ng::from_str(text).unwrap())
        .collect()
}

#[test]
fn autoscaling_is_a_keda_scaled_object_on_the_current_providers_queue() {
    let text = example("shop.yaml");
    // AWS current: the SQS scaler, no HPA of our own on a metric nothing serves.
    let aws = checked("shop.yaml");
    let files = render(&aws, Target::K8s, true);
    assert!(!files.contains_key("k8s/hpa.yaml"));
    assert!(files["k8s/scaledobject.yaml"].contains("type: aws-sqs-queue"));
    assert!(files["k8s/scaledobject.yaml"].contains("queueURL: shop-orders"));
    assert_eq!(exo_deploy::crd_check::check(&k8s_docs(&files)), Vec::<String>::new());
    // Every proxy is scraped, not only eqs.
    for proxy in ["eqs", "eos", "ekv"] {
        assert!(files["k8s/podmonitor.yaml"].contains(&format!("port: {proxy}")), "{proxy}");
    }
    // Azure current: the storage-queue scaler through KEDA's workload identity.
    let azure_text = text
        .replace("current: aws", "current: azure")
        .replace("failover-chain: [aws, azure]", "failover-chain: [azure, aws]");
    let azure = validate::check(&azure_text).unwrap().0;
    let files = render(&azure, Target::K8s, true);
    assert!(files["k8s/scaledobject.yaml"].contains("type: azure-queue"));
    assert!(files["k8s/triggerauthentication.yaml"].contains("azure-workload"));
    assert_eq!(exo_deploy::crd_check::check(&k8s_docs(&files)), Vec::<String>::new());
    // The check catches what kubernetes-validate cannot see.
    let mut docs = k8s_docs(&files);
    for doc in &mut docs {
        if doc["kind"] == "ScaledObject" {
            doc["spec"]["scaleTargetRef"]["name"] = "other".into();
            doc["spec"]["triggers"][0]["metadata"]["queueLength"] = "0".into();
        }
        if doc["kind"] == "PodMonitor" {
            doc["spec"]["podMetricsEndpoints"][0]["port"] = "nope".into();
        }
    }
    let problems = exo_deploy::crd_check::check(&docs);
    assert_eq!(problems.len(), 3, "{problems:?}");
}

#[test]
fn systemd_units_leave_room_for_many_connections() {
    let m = checked("shop.yaml");
    let units = render(&m, Target::Systemd, true);
    let services: Vec<_> = units.iter().filter(|(path, _)| path.ends_with(".service")).collect();
    assert!(!services.is_empty());
    for (path, unit) in services {
        assert!(unit.contains("\nLimitNOFILE=65536\n"), "{path} has no LimitNOFILE");
    }
}

#[test]
fn rendering_is_deterministic() {
    for name in ["shop.yaml", "edge-local.yaml", "central.yaml", "app-remote.yaml"] {
        let m = checked(name);
        for target in [Target::K8s, Target::Compose, Target::Systemd, Target::CloudFormation, Target::Arm] {
            assert_eq!(render(&m, target, true), render(&checked(name), target, true), "{name} {target:?}");
        }
    }
}

#[test]
fn golden_files_match() {
    let golden = format!("{}/tests/golden", env!("CARGO_MANIFEST_DIR"));
    let m = checked("shop.yaml");
    for target in [Target::K8s, Target::Compose, Target::Systemd, Target::CloudFormation, Target::Arm] {
        for (path, content) in render(&m, target, true) {
            let file = format!("{golden}/{path}");
            if std::env::var_os("EXO_UPDATE_GOLDEN").is_some() {
                std::fs::create_dir_all(std::path::Path::new(&file).parent().unwrap()).unwrap();
                std::fs::write(&file, &content).unwrap();
            }
            let expected = std::fs::read_to_string(&file).unwrap_or_else(|_| {
                panic!("missing golden file {file}; run with EXO_UPDATE_GOLDEN=1 and review the diff")
            });
            assert_eq!(
                content, expected,
                "{path} differs from its golden file (EXO_UPDATE_GOLDEN=1 to accept)"
            );
        }
    }
}

#[test]
fn local_proxy_configs_load_with_the_proxies_own_loaders() {
    use exo_proxy_core::config::parse_yaml;
    let m = checked("edge-local.yaml");
    for target in [Target::K8s, Target::Compose, Target::Systemd] {
        for s in exo_deploy::render::sidecars(
            &m,
            if target == Target::K8s { ProxyHost::Pod } else { ProxyHost::Loopback },
            &exo_deploy::render::shared_data_dir,
        ) {
            match s.name {
                "eqs" => parse_yaml::<eqs::config::EqsConfig>(&s.config, "eqs").unwrap().validate().unwrap(),
                "eos" => {
                    parse_yaml::<eos::config::EosConfig>(&s.config, "eos").unwrap().server.validate().unwrap()
                }
                "ekv" => {
                    parse_yaml::<ekv::config::EkvConfig>(&s.config, "ekv").unwrap().server.validate().unwrap()
                }
                other => panic!("unexpected proxy {other}"),
            }
        }
    }
    // The ConfigMap carries exactly those files.
    let files = render(&m, Target::K8s, true);
    let configmap: serde_yaml_ng::Value = serde_yaml_ng::from_str(&files["k8s/configmap.yaml"]).unwrap();
    let eqs_text = configmap["data"]["eqs.yaml"].as_str().unwrap();
    parse_yaml::<eqs::config::EqsConfig>(eqs_text, "configmap").unwrap().validate().unwrap();
}

#[test]
fn proxy_transport_unix_shares_sockets_through_an_in_memory_volume() {
    use exo_proxy_core::config::parse_yaml;
    let m = checked("edge-local.yaml"); // proxy-transport: unix
    let files = render(&m, Target::K8s, true);
    let deployment: serde_json::Value = serde_yaml_ng::from_str(&files["k8s/deployment.yaml"]).unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "exoflow-sockets").unwrap();
    assert_eq!(volume["emptyDir"]["medium"], "Memory");
    let mounted = |c: &serde_json::Value| {
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "exoflow-sockets" && v["mountPath"] == "/run/exoflow")
    };
    let app = &pod["containers"][0];
    assert!(mounted(app), "the app mounts the sockets");
    let env = |name: &str| {
        app["env"].as_array().unwrap().iter().find(|e| e["name"] == name).unwrap()["value"].clone()
    };
    assert_eq!(env("EXO_EQS_ENDPOINT"), "unix:/run/exoflow/eqs.sock");
    assert_eq!(env("EXO_EOS_ENDPOINT"), "unix:/run/exoflow/eos.sock");
    assert_eq!(env("EXO_EKV_ENDPOINT"), "unix:/run/exoflow/ekv.sock");
    for sidecar in pod["initContainers"].as_array().unwrap() {
        assert!(mounted(sidecar), "{} mounts the sockets", sidecar["name"]);
        // The TCP port stays: the probes use it.
        assert!(sidecar["readinessProbe"]["grpc"]["port"].is_number());
    }
    let configmap: serde_yaml_ng::Value = serde_yaml_ng::from_str(&files["k8s/configmap.yaml"]).unwrap();
    let eqs =
        parse_yaml::<eqs::config::EqsConfig>(configmap["data"]["eqs.yaml"].as_str().unwrap(), "eqs").unwrap();
    eqs.validate().unwrap();
    assert_eq!(eqs.server.unix_socket.as_deref(), Some(std::path::Path::new("/run/exoflow/eqs.sock")));

    // Other targets keep loopback ports; the default is TCP in pods too.
    for s in exo_deploy::render::sidecars(&m, ProxyHost::Loopback, &exo_deploy::render::shared_data_dir) {
        assert!(s.socket.is_none() && !s.config.contains("unix-socket"), "{}", s.config);
    }
    let tcp = checked("shop.yaml");
    let files = render(&tcp, Target::K8s, true);
    assert!(!files["k8s/deployment.yaml"].contains("exoflow-sockets"));
    assert!(files["k8s/deployment.yaml"].contains("http://127.0.0.1:7401"));
}

#[test]
fn aws_proxy_configs_load_with_the_proxies_own_loaders() {
    use exo_proxy_core::{cli::ProxyConfig, config::parse_yaml};
    let m = checked("shop.yaml");
    let sidecars = exo_deploy::render::sidecars(&m, ProxyHost::Pod, &exo_deploy::render::shared_data_dir);
    assert_eq!(sidecars.len(), 3);
    for s in sidecars {
        let (kind, settings) = match s.name {
            "eqs" => {
                let c = parse_yaml::<eqs::config::EqsConfig>(&s.config, "eqs").unwrap();
                ProxyConfig::validate(&c).unwrap();
                // The failover chain [aws, azure]: SQS first, Azure's queue as the standby.
                let eqs::config::BackendConfig::Failover(eqs::config::FailoverConfig { members, .. }) =
                    c.backend
                else {
                    panic!("eqs is not a failover chain")
                };
                let [
                    eqs::config::BackendConfig::Sqs(settings),
                    eqs::config::BackendConfig::AzureQueue(standby),
                ] = &members[..]
                else {
                    panic!("chain members {members:?}")
                };
                assert_eq!((standby.account.as_str(), standby.name_prefix.as_str()), ("shopdata", "shop-"));
                ("sqs", settings.clone())
            }
            "eos" => {
                let c = parse_yaml::<eos::config::EosConfig>(&s.config, "eos").unwrap();
                ProxyConfig::validate(&c).unwrap();
                let eos::config::BackendConfig::Failover(eos::config::FailoverConfig { members, .. }) =
                    c.backend
                else {
                    panic!("no chain")
                };
                let eos::config::BackendConfig::S3(settings) = members[0].clone() else {
                    panic!("s3 is not first")
                };
                ("s3", settings)
            }
            "ekv" => {
                let c = parse_yaml::<ekv::config::EkvConfig>(&s.config, "ekv").unwrap();
                ProxyConfig::validate(&c).unwrap();
                let ekv::config::BackendConfig::Failover(ekv::config::FailoverConfig { members, .. }) =
                    c.backend
                else {
                    panic!("no chain")
                };
                let ekv::config::BackendConfig::Dynamodb(settings) = members[0].clone() else {
                    panic!("dynamodb is not first")
                };
                ("dynamodb", settings)
            }
            other => panic!("unexpected proxy {other}"),
        };
        // The names CloudFormation gives the resources are `<app>-<name>`.
        assert_eq!(settings.name_prefix, "shop-", "{kind}");
        assert_eq!(settings.region.as_deref(), Some("us-east-1"), "{kind}");
        assert_eq!(
            settings.credentials.get("profile").map(|r| String::from(r.clone())).as_deref(),
            Some("env:AWS_PROFILE"),
            "{kind}"
        );
    }
}

#[test]
fn azure_proxy_configs_load_and_name_what_arm_creates() {
    use exo_proxy_core::{cli::ProxyConfig, config::parse_yaml};
    // The shop, failed over: Azure is now the current provider.
    let text = example("shop.yaml")
        .replace("current: aws", "current: azure")
        .replace("failover-chain: [aws, azure]", "failover-chain: [azure, aws]");
    let (m, _) = validate::check(&text).unwrap_or_else(|p| panic!("{p:?}"));
    for s in exo_deploy::render::sidecars(&m, ProxyHost::Pod, &exo_deploy::render::shared_data_dir) {
        let settings = match s.name {
            "eqs" => {
                let c = parse_yaml::<eqs::config::EqsConfig>(&s.config, "eqs").unwrap();
                ProxyConfig::validate(&c).unwrap();
                let eqs::config::BackendConfig::Failover(eqs::config::FailoverConfig { members, .. }) =
                    c.backend
                else {
                    panic!("not a chain")
                };
                let Some(eqs::config::BackendConfig::AzureQueue(settings)) = members.first() else {
                    panic!("azure-queue is not first: {members:?}")
                };
                settings.clone()
            }
            "eos" => {
                let c = parse_yaml::<eos::config::EosConfig>(&s.config, "eos").unwrap();
                ProxyConfig::validate(&c).unwrap();
                let eos::config::BackendConfig::Failover(eos::config::FailoverConfig { members, .. }) =
                    c.backend
                else {
                    panic!("no chain")
                };
                let eos::config::BackendConfig::AzureBlob(settings) = members[0].clone() else {
                    panic!("azure-blob is not first")
                };
                settings
            }
            "ekv" => {
                let c = parse_yaml::<ekv::config::EkvConfig>(&s.config, "ekv").unwrap();
                ProxyConfig::validate(&c).unwrap();
                let ekv::config::BackendConfig::Failover(ekv::config::FailoverConfig { members, .. }) =
                    c.backend
                else {
                    panic!("no chain")
                };
                let ekv::config::BackendConfig::AzureTable(settings) = members[0].clone() else {
                    panic!("azure-table is not first")
                };
                settings
            }
            other => panic!("unexpected proxy {other}"),
        };
        assert_eq!(settings.account, "shopdata");
        assert_eq!(settings.name_prefix, "shop-");
        // Only the storage credential: the service principal is for deploying.
        assert_eq!(settings.credentials.keys().collect::<Vec<_>>(), ["account-key"]);
    }
    // ARM creates each table under the name the backend looks for.
    let arm = render(&m, Target::Arm, true);
    for t in &m.tables {
        let physical = ekv::services::azure_table::physical_name(&format!("shop-{}", t.name));
        assert!(arm["arm/template.json"].contains(&format!("/default/{physical}")), "{physical}");
    }
    // ARM creates each queue with eqs's metadata, so the proxy reads the manifest's options.
    let template: serde_json::Value = serde_json::from_str(&arm["arm/template.json"]).unwrap();
    let queues: Vec<&serde_json::Value> = template["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["type"].as_str().unwrap().ends_with("/queueServices/queues"))
        .collect();
    assert_eq!(queues.len(), m.queues.len());
    for (resource, q) in queues.iter().zip(&m.queues) {
        let metadata = &resource["properties"]["metadata"];
        assert_eq!(metadata["exovisibility"], q.visibility_timeout.unwrap_or(30).to_string(), "{}", q.name);
        assert_eq!(metadata["exoretention"], "345600");
    }
    // Without a storage credential the proxies could not reach Azure: refused, with the line.
    let keyless = text.replace("      account-key: env:encrypted:AZURE_STORAGE_KEY\n", "");
    let problems = validate::check(&keyless).unwrap_err();
    assert!(problems.iter().any(|p| p.message.contains("exactly one storage credential")), "{problems:?}");
}

#[test]
fn the_ecs_task_runs_the_proxies_from_env_configs_with_the_task_role() {
    use exo_proxy_core::{cli::ProxyConfig, config::parse_yaml};
    let m = checked("shop.yaml");
    let files = render(&m, Target::CloudFormation, true);
    let template: serde_json::Value = serde_json::from_str(&files["cloudformation/template.json"]).unwrap();
    let task = &template["Resources"]["TaskDefinition"]["Properties"];
    let containers = task["ContainerDefinitions"].as_array().unwrap();
    let names: Vec<&str> = containers.iter().map(|c| c["Name"].as_str().unwrap()).collect();
    assert_eq!(names, ["app", "eqs", "eos", "ekv"]);
    for c in &containers[1..] {
        let config = c["Environment"][0]["Value"].as_str().unwrap();
        assert_eq!(c["Environment"][0]["Name"], "EXO_CONFIG_YAML");
        // Each config loads with its proxy's loader; AWS credentials come from the task role.
        let aws_credentials = match c["Name"].as_str().unwrap() {
            "eqs" => {
                let cfg = parse_yaml::<eqs::config::EqsConfig>(config, "eqs").unwrap();
                ProxyConfig::validate(&cfg).unwrap();
                let eqs::config::BackendConfig::Failover(eqs::config::FailoverConfig { members, .. }) =
                    cfg.backend
                else {
                    panic!("no chain")
                };
                let eqs::config::BackendConfig::Sqs(aws) = &members[0] else { panic!("sqs is not first") };
                aws.credentials.len()
            }
            "eos" => {
                let cfg = parse_yaml::<eos::config::EosConfig>(config, "eos").unwrap();
                ProxyConfig::validate(&cfg).unwrap();
                let eos::config::BackendConfig::Failover(eos::config::FailoverConfig { members, .. }) =
                    cfg.backend
                else {
                    panic!("no chain")
                };
                let eos::config::BackendConfig::S3(aws) = &members[0] else { panic!("s3 is not first") };
                aws.credentials.len()
            }
            _ => {
                let cfg = parse_yaml::<ekv::config::EkvConfig>(config, "ekv").unwrap();
                ProxyConfig::validate(&cfg).unwrap();
                let ekv::config::BackendConfig::Failover(ekv::config::FailoverConfig { members, .. }) =
                    cfg.backend
                else {
                    panic!("no chain")
                };
                let ekv::config::BackendConfig::Dynamodb(aws) = &members[0] else {
                    panic!("dynamodb is not first")
                };
                aws.credentials.len()
            }
        };
        assert_eq!(aws_credentials, 0, "{}: AWS credentials must come from the task role", c["Name"]);
        assert!(config.contains("listen: 127.0.0.1:"), "task containers share loopback");
        // Only what the proxies read: the standby's storage key and the key that opens it.
        let secrets: Vec<&str> =
            c["Secrets"].as_array().unwrap().iter().map(|s| s["Name"].as_str().unwrap()).collect();
        assert_eq!(secrets, ["AZURE_STORAGE_KEY", "EXO_SECRETS_KEY"]);
    }
    assert_eq!(task["TaskRoleArn"]["Fn::GetAtt"][0], "ProxyRole");
    assert_ne!(task["ExecutionRoleArn"], task["TaskRoleArn"]);
    assert_eq!(
        template["Resources"]["EcsService"]["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"],
        "DISABLED"
    );
}

#[test]
fn a_broken_manifest_reports_every_problem_with_its_line() {
    let text = "\
name: Shop_App
metadata:
  provider:
    current: aws
    failover-chain: [aws, gcp]
providers:
  aws:
    kind: aws
    regoin: us-east-1
    auth:
      secret: AKIAREALLYSECRET
compute:
  platform:
    affinity: [k8s]
app:
  container:
    image: ghcr.io/acme/shop
queues:
  - name: orders
    max-receives: 3
    dead-letter: nowhere
autoscale:
  queue: missing
  target-depth: 10
  max-replicas: 3
";
    let problems = validate::check(text).unwrap_err();
    let lines: Vec<(usize, &str)> = problems.iter().map(|p| (p.position.line, p.message.as_str())).collect();
    let expect = [
        (1, "app name"),
        (5, "unknown provider 'gcp'"),
        (7, "needs a region"),
        (9, "unknown key"),
        (11, "references, not values"),
        (11, "not an AWS credential"),
        (16, "no tag or digest"),
        (21, "dead-letter queue 'nowhere'"),
        (23, "queue 'missing'"),
    ];
    for (line, fragment) in expect {
        assert!(
            lines.iter().any(|(l, m)| *l == line && m.contains(fragment)),
            "expected a problem on line {line} containing {fragment:?}; got {lines:#?}"
        );
    }
    // The secret value never appears in a message.
    assert!(!problems.iter().any(|p| p.to_string().contains("AKIAREALLYSECRET")));
}

#[test]
fn proxy_images_come_from_the_configured_registry() {
    let images = |m: &Manifest| -> BTreeSet<String> {
        let files = render(m, Target::Compose, true);
        let compose = files.values().map(String::as_str).collect::<Vec<_>>().join("\n");
        compose
            .split_whitespace()
            .filter(|w| w.contains("-proxy:"))
            .map(|w| w.trim_matches(|c| c == '"' || c == ',').to_owned())
            .collect()
    };
    let default = checked("edge-local.yaml");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        images(&default),
        ["eqs", "eos", "ekv"].map(|p| format!("ghcr.io/exoflow/{p}-proxy:{version}")).into_iter().collect()
    );
    let text = example("edge-local.yaml")
        .replace("    port: 9000\n", "    port: 9000\n    proxy-registry: registry.example:5000/team\n");
    let (mirrored, _) = validate::check(&text).unwrap();
    assert!(
        images(&mirrored).iter().all(|i| i.starts_with("registry.example:5000/team/")),
        "{:?}",
        images(&mirrored)
    );
    for bad in ["https://registry.example", "registry.example/", "Registry.Example", ""] {
        let text = example("edge-local.yaml")
            .replace("    port: 9000\n", &format!("    port: 9000\n    proxy-registry: \"{bad}\"\n"));
        assert!(validate::check(&text).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn latest_is_a_warning_not_an_error() {
    let text = example("edge-local.yaml").replace("tag: \"2.0.0\"", "tag: latest");
    let (_, warnings) = validate::check(&text).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].message.contains("latest"));
}

#[test]
fn k8s_invariants_kubernetes_validate_does_not_check() {
    let m = checked("shop.yaml");
    for native in [true, false] {
        let files = render(&m, Target::K8s, native);
        let deployment: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&files["k8s/deployment.yaml"]).unwrap();
        let spec = &deployment["spec"];
        assert_eq!(
            spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"],
            "selector must match the pod labels"
        );
        let pod = &spec["template"]["spec"];
        let mut names = BTreeSet::new();
        for list in ["containers", "initContainers"] {
            for c in pod[list].as_sequence().into_iter().flatten() {
                let name = c["name"].as_str().unwrap().to_owned();
                assert!(names.insert(name.clone()), "duplicate container name {name}");
                assert!(!c["image"].as_str().unwrap().ends_with(":latest"), "unpinned image");
                assert_eq!(
                    c["securityContext"]["allowPrivilegeEscalation"],
                    serde_yaml_ng::Value::Bool(false)
                );
                assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], serde_yaml_ng::Value::Bool(true));
                for kind in ["requests", "limits"] {
                    for (_, q) in c["resources"][kind].as_mapping().unwrap() {
                        let q = q.as_str().unwrap();
                        let valid =
                            q.strip_suffix("Mi").or(q.strip_suffix('m')).unwrap_or(q).parse::<u64>().is_ok();
                        assert!(valid, "bad quantity {q}");
                    }
                }
            }
        }
        assert_eq!(names.len(), 4, "app + eqs + eos + ekv");
        // Credentials only by reference to the Secret.
        let text = &files["k8s/deployment.yaml"];
        assert!(
            text.contains("secretKeyRef") && !text.contains("value: env:"),
            "credentials must come from the Secret"
        );
        let sidecars_are_native = pod["initContainers"]
            .as_sequence()
            .is_some_and(|s| s.iter().all(|c| c["restartPolicy"] == "Always"));
        assert_eq!(sidecars_are_native, native);
        // The proxies require the bearer token in a pod: the app gets it from the same Secret key.
        let token_ref = |c: &serde_yaml_ng::Value| {
            c["env"]
                .as_sequence()
                .into_iter()
                .flatten()
                .find(|e| e["name"] == "EXO_PROXY_TOKEN")
                .map(|e| e["valueFrom"]["secretKeyRef"].clone())
        };
        let all: Vec<&serde_yaml_ng::Value> = ["containers", "initContainers"]
            .iter()
            .flat_map(|list| pod[*list].as_sequence().into_iter().flatten())
            .collect();
        let app = all.iter().find(|c| c["name"] == "app").expect("the app container");
        let app_token = token_ref(app).expect("the app container gets EXO_PROXY_TOKEN");
        for proxy in all.iter().filter(|c| c["name"] != "app") {
            assert_eq!(
                token_ref(proxy).as_ref(),
                Some(&app_token),
                "{:?} reads another token",
                proxy["name"]
            );
        }
    }
}

#[test]
fn cloudformation_scopes_the_role_to_the_declared_resources() {
    let m = checked("shop.yaml");
    let files = render(&m, Target::CloudFormation, true);
    let template: serde_json::Value = serde_json::from_str(&files["cloudformation/template.json"]).unwrap();
    let resources = template["Resources"].as_object().unwrap();
    assert_eq!(resources["QueueOrders"]["Properties"]["RedrivePolicy"]["maxReceiveCount"], 5);
    assert_eq!(resources["TableCarts"]["Properties"]["TimeToLiveSpecification"]["Enabled"], true);
    let statements = resources["ProxyRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap();
    for statement in statements {
        let text = statement["Resource"].to_string();
        // The wildcards: listing queue and topic names, which SQS and SNS cannot scope.
        if statement["Action"] == serde_json::json!(["sqs:ListQueues"])
            || statement["Action"] == serde_json::json!(["sns:ListTopics"])
        {
            continue;
        }
        assert!(
            !text.contains('*') || text.contains("Arn}/*"),
            "role reaches beyond the app's resources: {text}"
        );
    }
    // Topics: SNS with raw delivery into the subscribed queue, the filter as a policy, the
    // queue policy letting the topic send, and the subscription's name where eqs looks for it.
    let subscription = &resources["SubscriptionOrderEventsFulfilment"]["Properties"];
    assert_eq!(subscription["RawMessageDelivery"], true);
    assert_eq!(subscription["Endpoint"]["Fn::GetAtt"][0], "QueueOrders");
    assert_eq!(subscription["FilterPolicy"], serde_json::json!({ "kind": ["created", "paid"] }));
    assert!(
        resources["QueuePolicyOrders"]["Properties"]["PolicyDocument"]
            .to_string()
            .contains("sns.amazonaws.com")
    );
    assert!(
        resources["QueueOrders"]["Properties"]["Tags"]
            .to_string()
            .contains(r#""Key":"exo-subscription:order-events","Value":"fulfilment 0""#),
        "{}",
        resources["QueueOrders"]["Properties"]
    );
    // Tables have exactly the layout ekv's dynamodb backend uses.
    let keys = &resources["TableCarts"]["Properties"]["KeySchema"];
    assert_eq!(keys[0]["AttributeName"], ekv::services::dynamodb::PARTITION_KEY);
    assert_eq!(keys[1]["AttributeName"], ekv::services::dynamodb::SORT_KEY);
    let user_data = resources["LaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"]
        .as_str()
        .unwrap();
    assert!(user_data.contains("systemctl enable --now exoflow-shop-eqs.service"), "{user_data}");
}

#[test]
fn arm_template_passes_the_structural_check_and_scopes_roles_to_the_account() {
    let m = checked("shop.yaml");
    let files = render(&m, Target::Arm, true);
    let template: serde_json::Value = serde_json::from_str(&files["arm/template.json"]).unwrap();
    assert_eq!(exo_deploy::arm_check::check(&template), Vec::<String>::new());
    let resources = template["resources"].as_array().unwrap();
    let roles: Vec<&serde_json::Value> =
        resources.iter().filter(|r| r["type"] == "Microsoft.Authorization/roleAssignments").collect();
    assert_eq!(roles.len(), 3, "one role per service used");
    for role in roles {
        assert!(
            role["scope"].as_str().unwrap().contains("storageAccounts"),
            "role not scoped to the account: {role}"
        );
    }
    let tables: Vec<&str> = resources
        .iter()
        .filter(|r| r["type"] == "Microsoft.Storage/storageAccounts/tableServices/tables")
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        tables,
        vec![
            "[format('{0}/default/tshopzycarts', parameters('storageAccountName'))]",
            // Where eqs's azure-queue keeps the topics (name prefix `shop-`, letters and digits).
            "[format('{0}/default/exotopicsshop', parameters('storageAccountName'))]",
        ]
    );
}

#[test]
fn the_committed_json_schema_is_current() {
    let path = format!("{}/exoflow.schema.json", env!("CARGO_MANIFEST_DIR"));
    let schema = exo_deploy::manifest::json_schema();
    if std::env::var_os("EXO_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &schema).unwrap();
    }
    let committed =
        std::fs::read_to_string(&path).expect("deploy/exoflow.schema.json (EXO_UPDATE_GOLDEN=1 writes it)");
    assert_eq!(schema, committed, "deploy/exoflow.schema.json is stale: run with EXO_UPDATE_GOLDEN=1");
    let parsed: serde_json::Value = serde_json::from_str(&committed).unwrap();
    for key in ["name", "app", "queues", "providers"] {
        assert!(parsed["properties"].get(key).is_some(), "schema lacks {key}");
    }
}

/// A PostgreSQL you run as the primary of queues and tables, with AWS as the standby (and for
/// the objects PostgreSQL does not offer).
fn self_hosted(chain: &str) -> String {
    example("shop.yaml")
        .replace("    current: aws\n    failover-chain: [aws, azure]\n", &format!("    current: db\n    failover-chain: {chain}\n"))
        .replace(
            "providers:\n",
            "providers:\n  db:\n    kind: postgres\n    url: postgres://shop@db.internal:5432/shop\n    auth:\n      password: file:/run/secrets/pg\n",
        )
}

#[test]
fn a_postgres_primary_chains_with_a_cloud_and_objects_go_to_the_cloud() {
    use exo_proxy_core::{cli::ProxyConfig, config::parse_yaml};
    let (m, _) = validate::check(&self_hosted("[db, aws]")).unwrap();
    let sidecars = render::sidecars(&m, ProxyHost::Pod, &|name| format!("/data/{name}"));
    let config = |name: &str| sidecars.iter().find(|s| s.name == name).unwrap().config.clone();

    let eqs: eqs::config::EqsConfig = parse_yaml(&config("eqs"), "eqs").unwrap();
    ProxyConfig::validate(&eqs).unwrap();
    let eqs::config::BackendConfig::Failover(chain) = eqs.backend else { panic!("no queue chain") };
    let kinds: Vec<&str> = chain.members.iter().map(|b| b.kind()).collect();
    assert_eq!(kinds, ["postgres", "sqs"]);
    let eqs::config::BackendConfig::Postgres(pg) = &chain.members[0] else { unreachable!() };
    assert_eq!(pg.connection.url, "postgres://shop@db.internal:5432/shop");
    assert_eq!(pg.connection.schema, "shop");
    assert!(pg.connection.password.is_some(), "the password reference is carried");

    let ekv: ekv::config::EkvConfig = parse_yaml(&config("ekv"), "ekv").unwrap();
    ProxyConfig::validate(&ekv).unwrap();
    let ekv::config::BackendConfig::Failover(chain) = ekv.backend else { panic!("no kv chain") };
    assert_eq!(chain.members.iter().map(|b| b.kind()).collect::<Vec<_>>(), ["postgres", "dynamodb"]);

    // PostgreSQL offers no objects: eos is the cloud's alone, not a chain with a hole.
    let eos: eos::config::EosConfig = parse_yaml(&config("eos"), "eos").unwrap();
    assert_eq!(eos.backend.kind(), "s3");
}

#[test]
fn buckets_with_only_postgres_in_the_chain_are_refused_clearly() {
    let problems = validate::check(&self_hosted("[db]")).unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.message.contains("no provider in the failover chain (postgres) offers buckets")),
        "{problems:?}"
    );
    let no_url = self_hosted("[db, aws]").replace("    url: postgres://shop@db.internal:5432/shop\n", "");
    let problems = validate::check(&no_url).unwrap_err();
    assert!(problems.iter().any(|p| p.message.contains("a postgres provider needs a url")), "{problems:?}");
    let wrong_key = self_hosted("[db, aws]").replace("      password: file:", "      token: file:");
    let problems = validate::check(&wrong_key).unwrap_err();
    assert!(
        problems.iter().any(|p| p.message.contains("'token' is not a PostgreSQL credential")),
        "{problems:?}"
    );
}

/// The shop example without its topics (for providers that offer none yet).
fn without_topics(manifest: String) -> String {
    let start = manifest.find("topics:\n").expect("the example has topics");
    let end = manifest.find("buckets:\n").expect("the example has buckets");
    format!("{}{}", &manifest[..start], &manifest[end..])
}

/// NATS JetStream for the queues and Redis for the tables, both run by the team, with AWS as the
/// standby of both and the home of the objects.
fn brokers(chain: &str) -> String {
    without_topics(example("shop.yaml"))
        .replace(
            "    current: aws\n    failover-chain: [aws, azure]\n",
            &format!("    current: bus\n    failover-chain: {chain}\n"),
        )
        .replace(
            "providers:\n",
            "providers:\n  bus:\n    kind: nats\n    url: nats://nats-1.internal:4222,nats://nats-2.internal:4222\n    \
             user: shop\n    auth:\n      password: file:/run/secrets/nats\n  cache:\n    kind: redis\n    \
             url: redis://cache.internal:6379/0\n    namespace: shop-prod\n    auth:\n      password: env:REDIS_PASSWORD\n",
        )
}

#[test]
fn nats_queues_and_redis_tables_chain_with_a_cloud() {
    use exo_proxy_core::{cli::ProxyConfig, config::parse_yaml};
    let (m, _) = validate::check(&brokers("[bus, cache, aws]")).unwrap();
    let sidecars = render::sidecars(&m, ProxyHost::Pod, &|name| format!("/data/{name}"));
    let config = |name: &str| sidecars.iter().find(|s| s.name == name).unwrap().config.clone();

    let eqs: eqs::config::EqsConfig = parse_yaml(&config("eqs"), "eqs").unwrap();
    ProxyConfig::validate(&eqs).unwrap();
    let eqs::config::BackendConfig::Failover(chain) = eqs.backend else { panic!("no queue chain") };
    assert_eq!(chain.members.iter().map(|b| b.kind()).collect::<Vec<_>>(), ["nats", "sqs"]);
    let eqs::config::BackendConfig::Nats(nats) = &chain.members[0] else { unreachable!() };
    assert_eq!(nats.url, "nats://nats-1.internal:4222,nats://nats-2.internal:4222");
    assert_eq!(nats.namespace, "shop", "the namespace defaults to the app's name");
    assert_eq!(nats.user.as_deref(), Some("shop"));
    assert!(nats.password.is_some(), "the password reference is carried");

    let ekv: ekv::config::EkvConfig = parse_yaml(&config("ekv"), "ekv").unwrap();
    ProxyConfig::validate(&ekv).unwrap();
    let ekv::config::BackendConfig::Failover(chain) = ekv.backend else { panic!("no kv chain") };
    assert_eq!(chain.members.iter().map(|b| b.kind()).collect::<Vec<_>>(), ["redis", "dynamodb"]);
    let ekv::config::BackendConfig::Redis(redis) = &chain.members[0] else { unreachable!() };
    assert_eq!(redis.namespace, "shop-prod");

    // Neither offers objects: eos is the cloud's alone.
    let eos: eos::config::EosConfig = parse_yaml(&config("eos"), "eos").unwrap();
    assert_eq!(eos.backend.kind(), "s3");
}

#[test]
fn nats_and_redis_providers_are_checked_like_their_backends() {
    let problems = validate::check(&brokers("[bus]")).unwrap_err();
    assert!(
        problems.iter().any(|p| p.message.contains("no provider in the failover chain (nats) offers tables")),
        "{problems:?}"
    );
    // Topics need a queue provider that has them: NATS has none yet.
    let with_topics =
        brokers("[bus, cache, aws]").replace("buckets:\n", &format!("{}buckets:\n", topics_block()));
    let problems = validate::check(&with_topics).unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.path == "topics" && p.message.contains("'bus' (nats) offers no topics yet")),
        "{problems:?}"
    );
    let no_url = brokers("[bus, cache, aws]").replace("    url: redis://cache.internal:6379/0\n", "");
    let problems = validate::check(&no_url).unwrap_err();
    assert!(problems.iter().any(|p| p.message.contains("a redis provider needs a url")), "{problems:?}");
    let bad_namespace =
        brokers("[bus, cache, aws]").replace("    user: shop\n", "    user: shop\n    namespace: a.b\n");
    let problems = validate::check(&bad_namespace).unwrap_err();
    assert!(
        problems.iter().any(|p| p.path == "providers.bus" && p.message.contains("namespace")),
        "{problems:?}"
    );
    let wrong_key =
        brokers("[bus, cache, aws]").replace("      password: env:REDIS", "      token: env:REDIS");
    let problems = validate::check(&wrong_key).unwrap_err();
    assert!(problems.iter().any(|p| p.message.contains("'token' is not a redis credential")), "{problems:?}");
}

#[test]
fn a_rabbitmq_provider_renders_the_queue_backend() {
    use exo_proxy_core::{cli::ProxyConfig, config::parse_yaml};
    let manifest = brokers("[bus, cache, aws]").replace(
        "    kind: nats\n    url: nats://nats-1.internal:4222,nats://nats-2.internal:4222\n    user: shop\n",
        "    kind: rabbitmq\n    url: amqp://shop@rabbit.internal:5672/prod\n",
    );
    let (m, _) = validate::check(&manifest).unwrap();
    let sidecars = render::sidecars(&m, ProxyHost::Pod, &|name| format!("/data/{name}"));
    let eqs = sidecars.iter().find(|s| s.name == "eqs").unwrap().config.clone();
    let eqs: eqs::config::EqsConfig = parse_yaml(&eqs, "eqs").unwrap();
    ProxyConfig::validate(&eqs).unwrap();
    let eqs::config::BackendConfig::Failover(chain) = eqs.backend else { panic!("no queue chain") };
    let eqs::config::BackendConfig::RabbitMq(rabbit) = &chain.members[0] else {
        panic!("{:?}", chain.members[0].kind())
    };
    assert_eq!(
        (rabbit.url.as_str(), rabbit.namespace.as_str()),
        ("amqp://shop@rabbit.internal:5672/prod", "shop")
    );
    assert!(rabbit.password.is_some());
    let with_user = manifest.replace("    kind: rabbitmq\n", "    kind: rabbitmq\n    user: shop\n");
    let problems = validate::check(&with_user).unwrap_err();
    assert!(problems.iter().any(|p| p.path == "providers.bus"), "{problems:?}");

    // amqps with the CA mounted where the proxy runs; a CA on a plain amqp:// url is refused.
    let amqps = manifest.replace(
        "    url: amqp://shop@rabbit.internal:5672/prod\n",
        "    url: amqps://shop@rabbit.internal:5671/prod\n    ca-file: /run/secrets/rabbit-ca.pem\n",
    );
    let (m, _) = validate::check(&amqps).unwrap();
    let sidecars = render::sidecars(&m, ProxyHost::Pod, &|name| format!("/data/{name}"));
    let eqs = sidecars.iter().find(|s| s.name == "eqs").unwrap().config.clone();
    assert!(eqs.contains("ca-file: /run/secrets/rabbit-ca.pem"), "{eqs}");
    let plain_with_ca = manifest.replace(
        "    url: amqp://shop@rabbit.internal:5672/prod\n",
        "    url: amqp://shop@rabbit.internal:5672/prod\n    ca-file: /run/secrets/rabbit-ca.pem\n",
    );
    let problems = validate::check(&plain_with_ca).unwrap_err();
    assert!(problems.iter().any(|p| p.message.contains("must be amqps://")), "{problems:?}");
}

#[test]
fn a_ca_file_reaches_the_tls_settings_of_postgres_nats_and_redis() {
    use exo_proxy_core::config::parse_yaml;
    let manifest = brokers("[bus, cache, aws]")
        .replace("    user: shop\n", "    user: shop\n    ca-file: /run/secrets/nats-ca.pem\n")
        .replace(
            "    namespace: shop-prod\n",
            "    namespace: shop-prod\n    ca-file: /run/secrets/redis-ca.pem\n",
        );
    let (m, _) = validate::check(&manifest).unwrap();
    let sidecars = render::sidecars(&m, ProxyHost::Pod, &|name| format!("/data/{name}"));
    let config = |name: &str| sidecars.iter().find(|s| s.name == name).unwrap().config.clone();
    let eqs: eqs::config::EqsConfig = parse_yaml(&config("eqs"), "eqs").unwrap();
    let eqs::config::BackendConfig::Failover(chain) = eqs.backend else { panic!("no queue chain") };
    let eqs::config::BackendConfig::Nats(nats) = &chain.members[0] else { unreachable!() };
    assert_eq!(nats.ca_file.as_deref(), Some(std::path::Path::new("/run/secrets/nats-ca.pem")));
    let ekv: ekv::config::EkvConfig = parse_yaml(&config("ekv"), "ekv").unwrap();
    let ekv::config::BackendConfig::Failover(chain) = ekv.backend else { panic!("no kv chain") };
    let ekv::config::BackendConfig::Redis(redis) = &chain.members[0] else { unreachable!() };
    assert_eq!(redis.ca_file.as_deref(), Some(std::path::Path::new("/run/secrets/redis-ca.pem")));

    let relative = manifest.replace("ca-file: /run/secrets/nats-ca.pem", "ca-file: nats-ca.pem");
    let problems = validate::check(&relative).unwrap_err();
    assert!(problems.iter().any(|p| p.message.contains("absolute path")), "{problems:?}");
    let pg = self_hosted("[db, aws]").replace(
        "      password: file:/run/secrets/pg\n",
        "      password: file:/run/secrets/pg\n    ca-file: /run/secrets/pg-ca.pem\n",
    );
    let (m, _) = validate::check(&pg).unwrap();
    let p = m.providers.get("db").unwrap();
    assert_eq!(
        render::postgres_settings(&m, p).ca_file.as_deref(),
        Some(std::path::Path::new("/run/secrets/pg-ca.pem"))
    );
}

/// Google Cloud Storage as the primary of the objects, with AWS as the standby of everything and
/// the home of the queues and tables GCP does not offer here.
fn on_gcp(chain: &str) -> String {
    example("shop.yaml")
        .replace(
            "    current: aws\n    failover-chain: [aws, azure]\n",
            &format!("    current: gcp\n    failover-chain: {chain}\n"),
        )
        .replace(
            "providers:\n",
            "providers:\n  gcp:\n    kind: gcp\n    project: shop-prod\n    location: EU\n    auth:\n      \
             service-account-key: file:/run/secrets/gcs/key.json\n",
        )
}

#[test]
fn a_gcp_provider_renders_gcs_for_objects_and_chains_with_a_cloud() {
    use exo_proxy_core::{cli::ProxyConfig, config::parse_yaml};
    let (m, _) = validate::check(&on_gcp("[gcp, aws]")).unwrap();
    let sidecars = render::sidecars(&m, ProxyHost::Pod, &|name| format!("/data/{name}"));
    let config = |name: &str| sidecars.iter().find(|s| s.name == name).unwrap().config.clone();
    let eos: eos::config::EosConfig = parse_yaml(&config("eos"), "eos").unwrap();
    ProxyConfig::validate(&eos).unwrap();
    let eos::config::BackendConfig::Failover(chain) = eos.backend else { panic!("no object chain") };
    assert_eq!(chain.members.iter().map(|b| b.kind()).collect::<Vec<_>>(), ["gcs", "s3"]);
    let eos::config::BackendConfig::Gcs(gcs) = &chain.members[0] else { unreachable!() };
    assert_eq!(gcs.project, "shop-prod");
    assert_eq!(gcs.location.as_deref(), Some("EU"));
    assert!(gcs.credentials.service_account_key.is_some(), "the key reference is carried");
    // GCP offers no queues here: eqs is the standby's alone.
    let eqs: eqs::config::EqsConfig = parse_yaml(&config("eqs"), "eqs").unwrap();
    assert_eq!(eqs.backend.kind(), "sqs");
}

#[test]
fn queues_and_tables_with_only_gcp_in_the_chain_are_refused_clearly() {
    let problems = validate::check(&on_gcp("[gcp]")).unwrap_err();
    for service in ["queues", "tables"] {
        assert!(
            problems.iter().any(|p| p
                .message
                .contains(&format!("no provider in the failover chain (gcp) offers {service}"))
                && p.hint.contains("aws")),
            "{problems:?}"
        );
    }
    let no_project = on_gcp("[gcp, aws]").replace("    project: shop-prod\n", "");
    let problems = validate::check(&no_project).unwrap_err();
    assert!(problems.iter().any(|p| p.message.contains("a gcp provider needs a project")), "{problems:?}");
    let wrong_key = on_gcp("[gcp, aws]").replace("service-account-key: file:", "token: file:");
    let problems = validate::check(&wrong_key).unwrap_err();
    assert!(problems.iter().any(|p| p.message.contains("'token' is not a GCP credential")), "{problems:?}");
}

#[test]
fn central_proxies_on_a_vm_serve_tls_with_their_files_handed_over_by_systemd() {
    use exo_proxy_core::config::parse_yaml;
    let m = checked("central.yaml");
    let units = render(&m, Target::Systemd, true);
    let unit = &units["systemd/exoflow-site-eqs.service"];
    for line in [
        "LoadCredential=tls-cert:/etc/exoflow/tls/site.pem\n",
        "LoadCredential=tls-key:/etc/exoflow/tls/site.key\n",
        "LoadCredential=tls-client-ca:/etc/exoflow/tls/ca.pem\n",
    ] {
        assert!(unit.contains(line), "{line} missing from\n{unit}");
    }
    let config =
        parse_yaml::<eqs::config::EqsConfig>(&units["systemd/etc/exoflow/site/eqs.yaml"], "eqs").unwrap();
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:7401");
    assert!(!config.server.allow_insecure_non_loopback);
    assert!(config.server.auth_token.is_some(), "other hosts' calls need the bearer token");
    let tls = config.server.tls.expect("TLS on the port");
    assert_eq!(tls.cert_file.display().to_string(), "/run/credentials/exoflow-site-eqs.service/tls-cert");
    assert_eq!(
        tls.client_ca_file.map(|f| f.display().to_string()).as_deref(),
        Some("/run/credentials/exoflow-site-eqs.service/tls-client-ca")
    );
    let typed = |entries: &[&str]| entries.iter().map(|e| e.parse().unwrap()).collect::<Vec<_>>();
    assert_eq!(tls.allowed_clients, typed(&["subject:CN=edge"]));
    assert!(units["systemd/etc/exoflow/site/credentials.env.example"].contains("EXO_PROXY_TOKEN="));
    // Which identities may call which service: ekv has its own list.
    let ekv =
        parse_yaml::<ekv::config::EkvConfig>(&units["systemd/etc/exoflow/site/ekv.yaml"], "ekv").unwrap();
    assert_eq!(
        ekv.server.tls.expect("TLS").allowed_clients,
        typed(&["subject:CN=edge", "subject:CN=reports"])
    );
    for (by_proxy, problem) in [
        ("        ekv: []\n", "an empty list would let any certificate from the CA call ekv"),
        ("        eks: [CN=edge]\n", "\"eks\" is not a proxy"),
        (
            "        ekv: [\"email:ops@example\"]\n",
            "unknown kind; write subject:<DN>, dns:<name> or uri:<URI>",
        ),
    ] {
        let source = example("central.yaml").replace("        ekv: [CN=edge, CN=reports]\n", by_proxy);
        let problems = validate::check(&source).unwrap_err();
        assert!(problems.iter().any(|p| p.message.contains(problem)), "{problem}: {problems:?}");
    }

    // Off loopback without TLS: refused, unless plaintext is asked for explicitly.
    let source = example("central.yaml");
    let start = source.find("    tls:\n").unwrap();
    let end = source.find("app:\n").unwrap();
    let plain = format!("{}{}", &source[..start], &source[end..]);
    let problems = validate::check(&plain).unwrap_err();
    assert!(
        problems.iter().any(|p| p.path == "compute.standalone.listen" && p.message.contains("plaintext")),
        "{problems:?}"
    );
    let insecure = plain.replace("    listen: 0.0.0.0\n", "    listen: 0.0.0.0\n    allow-insecure: true\n");
    let (m, _) = validate::check(&insecure).unwrap();
    let units = render(&m, Target::Systemd, true);
    let config =
        parse_yaml::<eqs::config::EqsConfig>(&units["systemd/etc/exoflow/site/eqs.yaml"], "eqs").unwrap();
    assert!(config.server.allow_insecure_non_loopback && config.server.tls.is_none());
    config.validate().unwrap();
}

#[test]
fn an_app_with_a_remote_provider_forwards_each_service_to_the_central_proxies() {
    use exo_proxy_core::config::parse_yaml;
    let m = checked("app-remote.yaml");
    let files = render(&m, Target::K8s, true);
    let configmap: serde_yaml_ng::Value = serde_yaml_ng::from_str(&files["k8s/configmap.yaml"]).unwrap();
    for (file, port) in [("eqs.yaml", 7401), ("ekv.yaml", 7403)] {
        let text = configmap["data"][file].as_str().unwrap();
        let backend: serde_yaml_ng::Value =
            serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text).unwrap()["backend"].clone();
        assert_eq!(backend["kind"].as_str(), Some("remote"));
        assert_eq!(
            backend["url"].as_str().map(str::to_owned),
            Some(format!("https://exoflow.site.internal:{port}"))
        );
        assert_eq!(backend["client-key-file"].as_str(), Some("/etc/exoflow-tls/edge.key"));
        assert_eq!(backend["token"].as_str(), Some("env:EXO_REMOTE_TOKEN"));
    }
    parse_yaml::<eqs::config::EqsConfig>(configmap["data"]["eqs.yaml"].as_str().unwrap(), "eqs")
        .unwrap()
        .validate()
        .unwrap();
    // The TLS files come from a Secret mounted where the config says they are.
    let deployment = &files["k8s/deployment.yaml"];
    assert!(deployment.contains("secretName: kiosk-remote-remote-tls"), "{deployment}");
    assert!(deployment.contains("mountPath: /etc/exoflow-tls"), "{deployment}");

    // On a VM the files are handed over by systemd, so the key can stay root's.
    let units = render(&m, Target::Systemd, true);
    assert!(
        units["systemd/exoflow-kiosk-remote-eqs.service"]
            .contains("LoadCredential=remote-key:/etc/exoflow-tls/edge.key\n")
    );
    assert!(
        units["systemd/etc/exoflow/kiosk-remote/eqs.yaml"]
            .contains("client-key-file: /run/credentials/exoflow-kiosk-remote-eqs.service/remote-key\n")
    );

    // Found by DNS SRV: each service under its own name.
    let srv = example("app-remote.yaml")
        .replace("url: https://exoflow.site.internal", "url: srv:exoflow.service.consul");
    let (m, _) = validate::check(&srv).unwrap();
    let eqs = exo_deploy::render::sidecars(&m, ProxyHost::Pod, &exo_deploy::render::shared_data_dir)
        .into_iter()
        .find(|s| s.name == "eqs")
        .unwrap();
    assert!(eqs.config.contains("url: srv:_eqs._tcp.exoflow.service.consul\n"), "{}", eqs.config);

    // Refused: plaintext to another host, a port in the url, TLS files in the config's directory.
    for (from, to, path, message) in [
        (
            "https://exoflow.site.internal",
            "http://exoflow.site.internal",
            "providers.central.url",
            "plaintext",
        ),
        (
            "https://exoflow.site.internal",
            "https://exoflow.site.internal:9000",
            "providers.central.url",
            "host only",
        ),
        ("/etc/exoflow-tls/", "/etc/exoflow/tls/", "providers.central.ca-file", "mounted in a pod"),
    ] {
        let problems = validate::check(&example("app-remote.yaml").replace(from, to)).unwrap_err();
        assert!(problems.iter().any(|p| p.path == path && p.message.contains(message)), "{to}: {problems:?}");
    }
}
