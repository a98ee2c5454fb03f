//! `istio/`: every kustomization passes the offline checks of `scripts/validate-istio`
//! (kustomize render, Kubernetes schemas, Istio and prometheus-operator CRD schemas, `envoy --mode validate` with
//! the built filter), each check fails on a deliberately broken overlay, and the
//! pluginConfig the manifests carry is the configuration the demo loads into Envoy.

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_testkit::workspace_root;
use serde_json::Value;
use std::process::Command;

fn validate(dirs: &[&str]) -> (bool, String) {
    let out = Command::new(workspace_root().join("scripts/validate-istio"))
        .args(dirs)
        .current_dir(workspace_root())
        .output()
        .expect("run scripts/validate-istio");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `kubectl kustomize DIR` as JSON documents.
fn render(dir: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(workspace_root().join(dir))
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("\n---\n")
        .map(|d| serde_yaml_ng::from_str(d).expect("YAML document"))
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

#[test]
fn every_kustomization_passes_every_check() {
    let (ok, out) = validate(&[]);
    assert!(ok, "{out}");
    for (dir, istio, kube, envoy) in [
        ("istio:", 4, 6, 1),
        ("istio/policy:", 1, 0, 0),
        ("istio/wasmplugin:", 3, 0, 1),
        ("istio/envoyfilter:", 3, 0, 1),
        ("istio/envoyfilter-module:", 3, 0, 1),
        ("istio/examples/per-workload-native:", 3, 2, 1),
        ("istio/collector:", 0, 6, 0),
        ("istio/collector-replicas:", 0, 7, 0),
        ("istio/collector-kafka:", 0, 9, 0),
        ("istio/examples/per-workload:", 2, 2, 1),
        ("istio/monitoring:", 1, 1, 0),
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("ok   {dir}")))
            .unwrap_or_else(|| panic!("{dir} not checked:\n{out}"));
        // The counts show each check really looked at something.
        assert!(
            line.contains(&format!(
                "{kube} Kubernetes, {istio} custom (CRD), {envoy} Envoy"
            )),
            "{line}"
        );
    }
}

#[test]
fn each_check_fails_on_its_broken_manifest() {
    for (case, needle) in [
        (
            "istio-schema",
            "spec/phase must be equal to one of the allowed values",
        ),
        (
            "kubernetes-schema",
            "spec/replicas: 'one' is not of type 'integer'",
        ),
        (
            "kubernetes-unknown-field",
            "'imagePulPolicy' was unexpected",
        ),
        (
            "plugin-config",
            "invalid meshtrace config: export.max_batch_spans: must be greater than 0",
        ),
        (
            "envoyfilter-config",
            "invalid meshtrace config: sampling.default_strategy.param",
        ),
        (
            "envoyfilter-module-config",
            "invalid meshtrace config: sampling.default_strategy.param",
        ),
        ("envoy-cluster", "connect_timeout"),
        (
            "authorization-policy",
            "spec/action must be equal to one of the allowed values",
        ),
        ("prometheus-rule", "groups/0/rules/0/for must match pattern"),
    ] {
        let dir = format!("tests/istio-broken/{case}");
        let (ok, out) = validate(&[&dir]);
        assert!(!ok, "{case} passed:\n{out}");
        assert!(out.contains(&format!("FAIL {dir}")), "{out}");
        assert!(out.contains(needle), "{case}: {needle:?} not in:\n{out}");
    }
}

#[test]
fn the_manifests_carry_the_configuration_the_demo_loads() {
    let demo = meshtrace_testkit::istio::plugin_config().expect("plugin config");
    assert!(demo["sampling"]["remote"].is_object(), "{demo}");
    let wasmplugin = render("istio/wasmplugin");
    assert_eq!(
        find(&wasmplugin, "WasmPlugin", "meshtrace")["spec"]["pluginConfig"],
        demo
    );
    let per_workload = render("istio/examples/per-workload");
    assert_eq!(
        find(&per_workload, "WasmPlugin", "meshtrace-checkout")["spec"]["pluginConfig"],
        demo
    );
    let envoyfilter = render("istio/envoyfilter");
    let ef = find(&envoyfilter, "EnvoyFilter", "meshtrace");
    assert_eq!(
        ef["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"]["configuration"]
            ["value"],
        demo
    );
    let native = render("istio/envoyfilter-module");
    assert_eq!(
        find(&native, "EnvoyFilter", "meshtrace-native")["spec"]["configPatches"][0]["patch"]
            ["value"]["typed_config"]["filter_config"]["value"],
        demo,
        "the native build runs the same configuration"
    );
    // The source itself is never applied.
    for docs in [&wasmplugin, &per_workload, &envoyfilter] {
        assert!(docs.iter().all(|d| d["kind"] != "PluginConfig"));
    }
    // The central collector's strategies ConfigMap is the demo's strategies file.
    let collector = render("istio/collector");
    let cm = find(&collector, "ConfigMap", "meshtrace-collector-config");
    let file = std::fs::read_to_string(meshtrace_testkit::istio::strategies_path()).expect("file");
    assert_eq!(cm["data"]["strategies.json"].as_str(), Some(file.as_str()));
    // The central collector: liveness waits for a startup probe (a volume may be
    // slow to attach), and both read /healthz, which answers as soon as it listens.
    let central = find(&collector, "Deployment", "meshtrace-collector");
    let container = &central["spec"]["template"]["spec"]["containers"][0];
    for probe in ["startupProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["path"], "/healthz", "{probe}");
    }
    let startup = &container["startupProbe"];
    let budget =
        startup["periodSeconds"].as_u64().unwrap() * startup["failureThreshold"].as_u64().unwrap();
    assert!(budget >= 120, "the startup probe allows {budget} s");
}

#[test]
fn the_replicas_manifests_run_the_blocks_engine_on_a_bucket() {
    let docs = render("istio/collector-replicas");
    assert!(
        docs.iter()
            .all(|d| d["kind"] != "Deployment" && d["kind"] != "PersistentVolumeClaim"),
        "the single-replica Deployment and its volume are gone"
    );
    let sts = find(&docs, "StatefulSet", "meshtrace-collector");
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_eq!(sts["spec"]["serviceName"], "meshtrace-collector-peers");
    let c = &sts["spec"]["template"]["spec"]["containers"][0];
    let env: Vec<&str> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(
        env,
        ["POD_NAME", "POD_IP"],
        "the replica's name and its own address"
    );
    let volumes = sts["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v["secret"]["secretName"] == "meshtrace-s3"),
        "bucket credentials from a Secret"
    );
    let peers = find(&docs, "Service", "meshtrace-collector-peers");
    assert_eq!(
        peers["spec"]["clusterIP"], "None",
        "headless: one address per replica"
    );
    // The configuration loads as the collector reads it, with the blocks engine on s3://.
    let cm = find(&docs, "ConfigMap", "meshtrace-collector-config");
    let yaml = cm["data"]["collector.yaml"].as_str().unwrap();
    let cfg = meshtrace_collector::config::Config::from_yaml(yaml).expect("valid configuration");
    assert_eq!(
        cfg.store.engine,
        meshtrace_collector::config::EngineKind::Blocks
    );
    assert!(cfg.store.blocks.backend.starts_with("s3://"));
    assert!(cfg
        .store
        .blocks
        .peers_dns
        .starts_with("meshtrace-collector-peers."));
    assert!(
        cm["data"]["strategies.json"].is_string(),
        "the strategies kept"
    );
}

#[test]
fn the_kafka_manifests_run_gateways_in_front_of_kafka_and_an_ingester() {
    let docs = render("istio/collector-kafka");
    assert!(
        docs.iter().all(|d| !(d["kind"] == "PersistentVolumeClaim"
            && d["metadata"]["name"] == "meshtrace-store")),
        "the gateways keep no volume"
    );
    let gateways = find(&docs, "Deployment", "meshtrace-collector");
    assert_eq!(
        gateways["spec"]["replicas"], 3,
        "the seed's three collectors"
    );
    let store = gateways["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "store")
        .unwrap();
    assert!(store["emptyDir"].is_object(), "{store}");
    let cm = find(&docs, "ConfigMap", "meshtrace-collector-config");
    let load = |key: &str| {
        meshtrace_collector::config::Config::from_yaml(cm["data"][key].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{key}: {e}"))
    };
    let gateway = load("collector.yaml");
    assert!(!gateway.store.enabled);
    assert_eq!(gateway.kafka.brokers.len(), 3);
    let ingester = load("ingester.yaml");
    assert_eq!(ingester.mode, meshtrace_collector::config::Mode::Ingester);
    assert_eq!(ingester.kafka.topic, gateway.kafka.topic, "one topic");
    let deployment = find(&docs, "Deployment", "meshtrace-ingester");
    let c = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["args"][1], "/etc/meshtrace/ingester.yaml");
    let query = find(&docs, "Service", "meshtrace-query");
    assert_eq!(
        query["spec"]["selector"]["app.kubernetes.io/component"], "ingester",
        "queries go to the ingester"
    );
    find(&docs, "NetworkPolicy", "meshtrace-ingester");
}

/// The sidecar collector a workload gets takes a Jaeger agent's senders on
/// the pod's localhost (the flag `collector_jaeger.rs` runs the seed's app
/// against).
#[test]
fn the_sidecar_collector_takes_the_agents_senders() {
    let docs = render("istio/examples/per-workload");
    let deployments: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Deployment").collect();
    assert!(!deployments.is_empty());
    for d in deployments {
        let containers = d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        let c = containers
            .iter()
            .find(|c| c["name"] == "meshtrace-collector")
            .unwrap_or_else(|| panic!("no sidecar collector in {}", d["metadata"]["name"]));
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(args.contains(&"--mode=sidecar"), "{args:?}");
        assert!(args.contains(&"--jaeger-receivers=true"), "{args:?}");
    }
}
