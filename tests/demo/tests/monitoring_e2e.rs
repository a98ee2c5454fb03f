//! The demo's monitoring, end to end: `scripts/demo` starts a real Prometheus that
//! scrapes the real collectors and Envoys with meshtrace's rules loaded. Against it:
//! the seed's three PromQL queries return data for the demo's services, its HighLatency
//! alert (pointed at the demo's slow operation) fires after its 5 minutes (so this
//! test takes about 6), every PromQL expression of the Grafana dashboard and of the
//! rules returns data, the service graph has the demo's three edges, and the status
//! line shows the adjusted request rate beside the sampled one.

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{demo_command, lines};
use meshtrace_demo::monitoring::PROMETHEUS;
use meshtrace_testkit::prometheus::Api;
use meshtrace_testkit::workspace_root;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

const SERVICES: [&str; 3] = ["frontend", "checkout", "inventory"];

/// The parts of an alert expression that must return data for the alert to mean
/// anything: the operands of its comparisons and set operators (`and`, `or`,
/// `unless`), with `absent(…)` unwrapped and constants dropped. An alert that is
/// quiet because an operand names a metric that does not exist would be silent forever.
fn signals(expr: &str) -> Vec<String> {
    let e = expr.trim();
    if let Some(inner) = e.strip_prefix("absent(").and_then(|r| r.strip_suffix(')')) {
        if balanced(inner) {
            return signals(inner);
        }
    }
    if let Some(inner) = e.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
        if balanced(inner) {
            return signals(inner);
        }
    }
    let b = e.as_bytes();
    let (mut depth, mut quoted) = (0i32, false);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' => quoted = !quoted,
            b'(' | b'{' | b'[' if !quoted => depth += 1,
            b')' | b'}' | b']' if !quoted => depth -= 1,
            _ if depth == 0 && !quoted => {
                let rest = &e[i..];
                let op = [" and ", " unless ", " or ", "\nand ", "\nunless ", "\nor "]
                    .iter()
                    .find(|k| rest.starts_with(*k))
                    .map(|k| k.len())
                    .or_else(|| {
                        [">=", "<=", "==", "!=", ">", "<"]
                            .iter()
                            .find(|k| rest.starts_with(*k))
                            .map(|k| k.len())
                    });
                if let Some(n) = op {
                    let mut right = e[i + n..].trim_start();
                    // Vector matching modifiers belong to the operator.
                    loop {
                        let before = right;
                        for m in ["on", "ignoring", "group_left", "group_right", "bool"] {
                            if let Some(r) = right.strip_prefix(m) {
                                let r = r.trim_start();
                                right = match r.strip_prefix('(') {
                                    Some(x) => x.split_once(')').map_or(x, |(_, y)| y).trim_start(),
                                    None if m == "bool" => r,
                                    None => right,
                                };
                            }
                        }
                        if before == right {
                            break;
                        }
                    }
                    let mut out = signals(&e[..i]);
                    out.extend(signals(right));
                    return out;
                }
            }
            _ => {}
        }
        i += 1;
    }
    if e.parse::<f64>().is_ok() {
        vec![]
    } else {
        vec![e.to_string()]
    }
}

fn balanced(s: &str) -> bool {
    let mut d = 0i32;
    for c in s.chars() {
        match c {
            '(' => d += 1,
            ')' => d -= 1,
            _ => {}
        }
        if d < 0 {
            return false;
        }
    }
    d == 0
}

#[test]
fn signals_are_the_operands_that_must_have_data() {
    assert_eq!(
        signals(r#"up{job="c"} == 0 or absent(up{job="c"})"#),
        [r#"up{job="c"}"#, r#"up{job="c"}"#]
    );
    assert_eq!(
        signals("a:r1h > on (s) group_left () (14.4 * (1 - o))\nand on (s)\na:r5m > on (s) group_left () (14.4 * (1 - o))"),
        ["a:r1h", "14.4 * (1 - o)", "a:r5m", "14.4 * (1 - o)"]
    );
    assert_eq!(
        signals("max_over_time(x[1h]) unless x"),
        ["max_over_time(x[1h])", "x"]
    );
    assert_eq!(
        signals(r#"histogram_quantile(0.95, rate(h{s="a>b"}[5m])) > 1000"#),
        [r#"histogram_quantile(0.95, rate(h{s="a>b"}[5m]))"#]
    );
}

/// Every PromQL expression to check: the dashboard's (variables set as Grafana would
/// with "All" selected), the recording rules', and the alerts' signals.
fn expressions() -> Vec<(String, String)> {
    let root = workspace_root();
    let board: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("istio/monitoring/dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    for p in board["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$service", ".*");
            out.push((format!("dashboard panel {:?}", p["title"]), expr));
        }
    }
    assert!(
        out.len() >= 25,
        "the dashboard has its panels: {}",
        out.len()
    );
    let rules: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root.join("target/demo/prometheus/rules.yaml")).unwrap(),
    )
    .unwrap();
    for g in rules["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let expr = r["expr"].as_str().unwrap();
            if let Some(record) = r["record"].as_str() {
                out.push((format!("recording rule {record}"), expr.to_string()));
            } else {
                let alert = r["alert"].as_str().unwrap();
                let parts = signals(expr);
                assert!(!parts.is_empty(), "{alert}: no signal in {expr}");
                for s in parts {
                    out.push((format!("alert {alert}"), s));
                }
            }
        }
    }
    out
}

fn label(s: &Value, name: &str) -> String {
    s["metric"][name].as_str().unwrap_or("").to_string()
}

/// The demo, interrupted (Ctrl-C: it stops everything it started) if the test fails.
struct Demo(std::process::Child);

impl Demo {
    fn kill(&mut self) -> std::io::Result<()> {
        self.0.kill()
    }

    fn interrupt(&mut self) -> std::process::ExitStatus {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill")
                .args(["-INT", &self.0.id().to_string()])
                .status();
        }
        self.0.wait().expect("demo exit")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.interrupt();
    }
}

#[test]
fn the_demos_prometheus_answers_every_query_of_the_rules_and_the_dashboard() {
    let mut child = demo_command(&["--duration", "900", "--fresh"])
        .spawn()
        .expect("run scripts/demo");
    let (rx, reader) = lines(child.stdout.take().expect("stdout"));
    let mut child = Demo(child);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut running = false;
    while !running && Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_secs(1)) {
            running = l.starts_with("meshtrace demo running");
        }
    }
    if !running {
        let _ = child.kill();
        panic!(
            "the demo did not come up:\n{}",
            reader.join().unwrap_or_default()
        );
    }
    let prom = Api { port: PROMETHEUS.1 };
    let wait = Duration::from_secs(60);

    // The seed's three queries: data for each of the demo's services.
    for expr in [
        "rate(jaeger_traces_per_service_total[5m])",
        "histogram_quantile(0.95, rate(jaeger_span_duration_milliseconds_bucket[5m]))",
        "rate(jaeger_spans_total{error=\"true\"}[5m])",
    ] {
        let deadline = Instant::now() + wait;
        loop {
            let r = prom.query(expr);
            let services: HashSet<String> = r.iter().map(|s| label(s, "service")).collect();
            // Errors come from checkout and inventory (the flaky reservation) and frontend.
            if SERVICES.iter().all(|s| services.contains(*s)) {
                break;
            }
            assert!(Instant::now() < deadline, "{expr}: {services:?}");
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    // The seed's HighLatency alert, pointed at checkout: its slow GET /report (1.2–1.5 s)
    // makes the p95 cross 1000 ms; the alert is active at once and fires after its 5m.
    let r = prom.query_until(
        "histogram_quantile(0.95, rate(jaeger_span_duration_milliseconds_bucket{service=\"checkout\"}[5m])) > 1000",
        wait,
    );
    assert!(
        r.iter().any(|s| label(s, "operation") == "GET /report"),
        "{r:?}"
    );
    let deadline = Instant::now() + wait;
    let alert = loop {
        let active = prom.alerts().into_iter().find(|a| {
            a["labels"]["alertname"] == "HighLatency" && a["labels"]["operation"] == "GET /report"
        });
        if let Some(a) = active {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "HighLatency not active: {:?}",
            prom.alerts()
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        alert["state"] == "pending" || alert["state"] == "firing",
        "{alert}"
    );
    assert_eq!(alert["labels"]["service"], "checkout");
    assert_eq!(
        alert["annotations"]["summary"],
        "High latency detected in checkout"
    );
    eprintln!("HighLatency: {alert}");

    // The service graph: the demo's three edges, with requests, and failures where the
    // flaky reservation fails (checkout → inventory).
    let deadline = Instant::now() + wait;
    let edges = loop {
        let r = prom.query("sum by (client, server) (traces_service_graph_request_total)");
        let edges: BTreeMap<(String, String), f64> = r
            .iter()
            .map(|s| {
                let v = s["value"][1].as_str().unwrap().parse::<f64>().unwrap();
                ((label(s, "client"), label(s, "server")), v)
            })
            .collect();
        if edges.len() >= 3 {
            break edges;
        }
        assert!(Instant::now() < deadline, "edges: {edges:?}");
        std::thread::sleep(Duration::from_secs(1));
    };
    for (c, s) in [
        ("frontend", "checkout"),
        ("frontend", "inventory"),
        ("checkout", "inventory"),
    ] {
        assert!(
            edges.get(&(c.into(), s.into())).is_some_and(|n| *n > 0.0),
            "{c} → {s}: {edges:?}"
        );
    }
    assert_eq!(edges.len(), 3, "only the demo's edges: {edges:?}");
    prom.query_until(
        "traces_service_graph_request_failed_total{client=\"checkout\",server=\"inventory\"} > 0",
        wait,
    );

    // Every expression of the dashboard and the rules returns data.
    let mut empty = Vec::new();
    let deadline = Instant::now() + wait;
    let mut todo = expressions();
    while !todo.is_empty() {
        todo.retain(|(_, expr)| prom.query(expr).is_empty());
        if todo.is_empty() || Instant::now() > deadline {
            empty = todo.clone();
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(
        empty.is_empty(),
        "these return no data against the demo:\n{}",
        empty
            .iter()
            .map(|(w, e)| format!("  {w}: {e}"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The collector's own Monitor API answers for the demo too.
    let deadline = Instant::now() + wait;
    loop {
        let (status, body) = meshtrace_testkit::collector::get(
            16686,
            "/api/metrics/calls?service=frontend&groupByOperation=true&lookback=300000&step=60000",
        );
        assert_eq!(status, 200, "{body}");
        if body.contains("\"service_operation_call_rate\"") && body.contains("GET /report") {
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        std::thread::sleep(Duration::from_secs(1));
    }

    // The seed's alert keeps its `for: 5m`: wait for it to fire.
    let deadline = Instant::now() + Duration::from_secs(420);
    loop {
        let firing = prom.alerts().into_iter().find(|a| {
            a["labels"]["alertname"] == "HighLatency"
                && a["labels"]["operation"] == "GET /report"
                && a["state"] == "firing"
        });
        if let Some(a) = firing {
            eprintln!("HighLatency fired: {a}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "HighLatency did not fire: {:?}",
            prom.alerts()
        );
        std::thread::sleep(Duration::from_secs(5));
    }

    // Ctrl-C: the demo stops everything it started.
    let status = child.interrupt();
    let out = reader.join().expect("stdout");
    assert!(status.success(), "demo failed:\n{out}");
    for needle in [
        "Prometheus   http://127.0.0.1:19090/",
        "requests: checkout",
        "(sampled ",
    ] {
        assert!(out.contains(needle), "{needle:?} missing from:\n{out}");
    }
}
