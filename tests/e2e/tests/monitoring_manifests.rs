//! `istio/monitoring`: the rules and the dashboard are generated from their sources
//! and up to date; `promtool` (Debian's Prometheus tools) checks the rules and runs
//! their unit tests; the PrometheusRule holds exactly the rules file's groups; the
//! dashboard is a valid Grafana dashboard model (Grafana's own types, npm
//! @grafana/schema, through the TypeScript compiler), and the checker rejects a broken one.
//! (That every expression returns data against a real Prometheus scraping the demo is
//! tests/demo/tests/monitoring_e2e.rs.)

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_testkit::workspace_root;
use serde_json::Value;
use std::process::Command;

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.current_dir(workspace_root()).output().expect("run");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn monitoring(file: &str) -> String {
    std::fs::read_to_string(workspace_root().join("istio/monitoring").join(file)).unwrap()
}

#[test]
fn the_generated_files_are_up_to_date() {
    let (ok, out) = run(Command::new(workspace_root().join(".venv/bin/python"))
        .args(["istio/monitoring/generate.py", "--check"]));
    assert!(ok, "{out}");
}

#[test]
fn promtool_checks_the_rules_and_runs_their_unit_tests() {
    let (ok, out) =
        run(Command::new("promtool").args(["check", "rules", "istio/monitoring/rules.yaml"]));
    assert!(ok && out.contains("SUCCESS"), "{out}");
    // rule_files in the test file are relative to it.
    let (ok, out) = run(Command::new("promtool").args([
        "test",
        "rules",
        "istio/monitoring/tests/rules_test.yaml",
    ]));
    assert!(
        ok && out.contains("SUCCESS") && !out.contains("FAILED"),
        "{out}"
    );
}

#[test]
fn the_prometheus_rule_holds_the_rules_file() {
    let plain: Value = serde_yaml_ng::from_str(&monitoring("rules.yaml")).unwrap();
    let crd: Value = serde_yaml_ng::from_str(&monitoring("prometheusrule.yaml")).unwrap();
    assert_eq!(crd["kind"], "PrometheusRule");
    assert_eq!(crd["spec"]["groups"], plain["groups"]);
    let alerts: Vec<&str> = plain["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| r["alert"].as_str())
        .collect();
    for a in [
        "HighLatency",
        "MeshtraceHighErrorRate",
        "MeshtraceSpanMetricsAbsent",
        "MeshtraceSLOSignalLost",
        "MeshtraceAvailabilityBudgetBurn",
        "MeshtraceLatencyBudgetBurn",
    ] {
        assert!(alerts.contains(&a), "{a} in {alerts:?}");
    }
    // The seed's alert, verbatim.
    assert!(monitoring("rules.yaml").contains(
        "expr: histogram_quantile(0.95, rate(jaeger_span_duration_milliseconds_bucket{service=\"machine-native-ops\"}[5m])) > 1000\n    for: 5m"
    ));
}

fn check_dashboard(path: &std::path::Path) -> (bool, String) {
    run(Command::new("node")
        .arg(workspace_root().join("tests/node/check_dashboard.mjs"))
        .arg(path))
}

#[test]
fn the_dashboard_is_a_valid_grafana_model_and_a_broken_one_is_not() {
    let path = workspace_root().join("istio/monitoring/dashboard.json");
    let (ok, out) = check_dashboard(&path);
    assert!(ok, "{out}");
    let mut board: Value = serde_json::from_str(&monitoring("dashboard.json")).unwrap();
    let panels = board["panels"].as_array_mut().unwrap();
    panels[1]["options"]["legend"] = serde_json::json!({"displayMode": "sideways"});
    panels[2]["targets"][0]["format"] = "csv".into();
    panels[3]["gridPos"]["x"] = 0.into();
    panels[4]["datasource"]["uid"] = 7.into();
    let broken = meshtrace_testkit::scratch_path("broken-dashboard.json");
    std::fs::write(&broken, serde_json::to_string(&board).unwrap()).unwrap();
    let (ok, out) = check_dashboard(&broken);
    assert!(!ok, "{out}");
    for needle in [
        "\"sideways\"' is not assignable to type 'LegendDisplayMode",
        "\"csv\"' is not assignable",
        "overlap at (0, 1)",
        "Type 'number' is not assignable to type 'string'",
    ] {
        assert!(out.contains(needle), "{needle:?} not in:\n{out}");
    }
    // The ConfigMap Grafana's sidecar picks up carries this very file.
    let out = Command::new("kubectl")
        .args(["kustomize"])
        .arg(workspace_root().join("istio/monitoring"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("grafana_dashboard: \"1\"") && text.contains("meshtrace.json: |"),
        "{text}"
    );
}
