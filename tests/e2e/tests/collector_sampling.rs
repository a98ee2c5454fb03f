//! The collector serves Jaeger sampling strategies: shape, errors, hot
//! reload, a bad reload keeping the last good strategies, and the seed's
//! percentage file refused at start-up before any port is bound.

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_testkit::collector::{Collector, Opts};
use serde_json::Value;
use std::time::{Duration, Instant};

const GOOD: &str = r#"{
  "default_strategy": {"type": "probabilistic", "param": 0.5},
  "service_strategies": [
    {"service": "checkout", "type": "probabilistic", "param": 0.2,
     "operation_strategies": [{"operation": "POST /api/v1/memory", "type": "probabilistic", "param": 0.05}]},
    {"service": "search", "type": "ratelimiting", "param": 10}
  ]
}"#;

fn json(c: &Collector, path: &str) -> Value {
    let (status, body) = c.get_sampling(path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn start_with(file: &std::path::Path) -> Collector {
    let dir = meshtrace_testkit::scratch_path("sampling");
    Collector::start_opts(
        dir,
        Opts {
            yaml: Some("sampling:\n  reload_interval: 1s\n".into()),
            args: vec!["--sampling-strategies".into(), file.display().to_string()],
            ..Opts::default()
        },
    )
}

#[test]
fn strategies_are_served_and_hot_reloaded() {
    let file = meshtrace_testkit::scratch_path("strategies.json");
    std::fs::write(&file, GOOD).unwrap();
    let c = start_with(&file);

    let v = json(&c, "/api/sampling?service=checkout");
    assert_eq!(v["strategyType"], "PROBABILISTIC");
    assert_eq!(v["probabilisticSampling"]["samplingRate"], 0.2);
    assert_eq!(
        v["operationSampling"]["perOperationStrategies"][0]["operation"],
        "POST /api/v1/memory"
    );
    assert_eq!(
        v["operationSampling"]["perOperationStrategies"][0]["probabilisticSampling"]
            ["samplingRate"],
        0.05
    );
    assert_eq!(
        json(&c, "/sampling?service=checkout"),
        v,
        "the agent path answers the same"
    );
    let s = json(&c, "/api/sampling?service=search");
    assert_eq!(s["strategyType"], "RATE_LIMITING");
    assert_eq!(s["rateLimitingSampling"]["maxTracesPerSecond"], 10.0);
    assert_eq!(
        json(&c, "/api/sampling?service=other")["probabilisticSampling"]["samplingRate"],
        0.5
    );
    for bad in [
        "/api/sampling",
        "/api/sampling?service=",
        "/api/sampling?service=a&service=b",
    ] {
        let (status, body) = c.get_sampling(bad);
        assert_eq!(status, 400, "{bad}");
        assert!(body.contains("service"), "{body}");
    }

    // Change the file: the new strategy is served within a few reload intervals.
    std::fs::write(&file, GOOD.replace("\"param\": 0.2", "\"param\": 0.7")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while json(&c, "/api/sampling?service=checkout")["probabilisticSampling"]["samplingRate"] != 0.7
    {
        assert!(Instant::now() < deadline, "reload did not take effect");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A bad file: the last good strategies stay, the error is logged and counted.
    std::fs::write(&file, GOOD.replace("\"param\": 0.5", "\"param\": 10")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, m) = c.get("/metrics");
        if m.contains("meshtrace_collector_sampling_reload_failures_total 1") {
            break;
        }
        assert!(Instant::now() < deadline, "bad reload not counted: {m}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        json(&c, "/api/sampling?service=checkout")["probabilisticSampling"]["samplingRate"],
        0.7
    );
    assert_eq!(
        json(&c, "/api/sampling?service=other")["probabilisticSampling"]["samplingRate"],
        0.5
    );
    let log = c.log();
    assert!(
        log.contains("keeping the last good strategies") && log.contains("0.1"),
        "{log}"
    );
    let _ = std::fs::remove_file(&file);
}

#[test]
fn the_seed_percentage_file_stops_start_up_before_any_port() {
    // The seed document's example: "param": 10 meaning 10%.
    let file = meshtrace_testkit::scratch_path("seed.json");
    std::fs::write(
        &file,
        r#"{"service_strategies":[{"service":"machine-native-ops","type":"probabilistic","param":10},
            {"service":"machine-native-ops-critical","type":"probabilistic","param":100}]}"#,
    )
    .unwrap();
    // Hold every port: binding any of them first would report the port instead.
    let (held, a) = meshtrace_testkit::collector::hold_ports(4);
    let out = meshtrace_testkit::collector::command()
        .args([
            "--sampling-strategies",
            file.to_str().unwrap(),
            "--data-dir",
            std::env::temp_dir().to_str().unwrap(),
        ])
        .args([
            "--otlp-grpc-listen",
            &a[0],
            "--otlp-http-listen",
            &a[1],
            "--query-listen",
            &a[2],
            "--sampling-listen",
            &a[3],
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("machine-native-ops") && text.contains("10") && text.contains("0.1"),
        "{text}"
    );
    assert!(
        !text.contains("cannot listen"),
        "failed on a port, not on the file: {text}"
    );
    drop(held);
    let _ = std::fs::remove_file(&file);
}

/// Numbers as f64, so `0` (int32 in the proto JSON mapping) equals `0.0`.
fn normalized(v: &Value) -> Value {
    match v {
        Value::Number(n) => serde_json::json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.iter().map(normalized).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), normalized(v))).collect())
        }
        other => other.clone(),
    }
}

/// A real gRPC client (Python grpcio, stub compiled from `proto/jaeger/api_v2/sampling.proto`).
fn grpc_strategy(port: u16, service: &str) -> Value {
    let proto = meshtrace_testkit::workspace_root().join("proto/proto");
    let target = format!("127.0.0.1:{port}");
    let args = [proto.to_str().unwrap(), &target, service];
    meshtrace_testkit::python_client("sampling_grpc.py", &args, b"").0
}

#[test]
fn grpc_sampling_manager_answers_what_http_answers() {
    let file = meshtrace_testkit::scratch_path("strategies.json");
    std::fs::write(&file, GOOD).unwrap();
    let c = start_with(&file);
    for service in ["checkout", "search", "unknown-service"] {
        let http = json(&c, &format!("/api/sampling?service={service}"));
        let grpc = grpc_strategy(c.sampling_grpc_port, service);
        assert_eq!(
            normalized(&grpc),
            normalized(&http),
            "{service}: gRPC {grpc:#} vs HTTP {http:#}"
        );
    }
    let err = grpc_strategy(c.sampling_grpc_port, "");
    assert_eq!(err["error"], "INVALID_ARGUMENT", "{err}");
    assert!(err["details"].as_str().unwrap().contains("serviceName"));
    let _ = std::fs::remove_file(&file);
}

/// A sidecar serving `central`'s strategies, refreshed every second.
fn caching_sidecar(central: &Collector) -> Collector {
    Collector::start_opts(
        meshtrace_testkit::scratch_path("sidecar"),
        Opts {
            yaml: Some("sampling:\n  reload_interval: 1s\n".into()),
            args: vec![
                "--mode".into(),
                "sidecar".into(),
                "--upstream".into(),
                format!("http://127.0.0.1:{}", central.grpc_port),
                "--sampling-upstream".into(),
                format!("http://127.0.0.1:{}", central.sampling_grpc_port),
            ],
            ..Opts::default()
        },
    )
}

#[test]
fn sidecar_serves_the_central_strategies_cached() {
    let file = meshtrace_testkit::scratch_path("strategies.json");
    std::fs::write(&file, GOOD).unwrap();
    let central = start_with(&file);
    let sidecar = caching_sidecar(&central);
    let path = "/api/sampling?service=checkout";
    assert_eq!(json(&sidecar, path), json(&central, path));
    // The sidecar's gRPC answers too (Jaeger clients that speak gRPC to a local agent).
    assert_eq!(
        normalized(&grpc_strategy(sidecar.sampling_grpc_port, "checkout")),
        normalized(&json(&central, path))
    );

    // The file changes: the central reloads, the sidecar follows within its refresh.
    std::fs::write(&file, GOOD.replace("\"param\": 0.2", "\"param\": 0.3")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while json(&sidecar, path)["probabilisticSampling"]["samplingRate"] != 0.3 {
        assert!(
            Instant::now() < deadline,
            "sidecar never picked up the change"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The central goes away: the cached strategy is still served; a service never
    // asked for before gets a clear 503.
    drop(central);
    std::thread::sleep(Duration::from_millis(2500)); // a refresh or two fail
    assert_eq!(
        json(&sidecar, path)["probabilisticSampling"]["samplingRate"],
        0.3
    );
    let (status, body) = sidecar.get_sampling("/api/sampling?service=never-asked");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("central collector"), "{body}");
    let (_, metrics) = sidecar.get("/metrics");
    assert!(
        meshtrace_testkit::collector::metric(
            &metrics,
            "meshtrace_collector_sampling_upstream_failures_total"
        ) > 0,
        "{metrics}"
    );
    let _ = std::fs::remove_file(&file);
}

#[test]
fn sidecar_strategy_cache_is_bounded_and_forgets_names_nobody_asks_for() {
    let file = meshtrace_testkit::scratch_path("strategies.json");
    std::fs::write(&file, GOOD).unwrap();
    let central = start_with(&file);
    let sidecar = caching_sidecar(&central);
    let fetches = || {
        meshtrace_testkit::collector::metric(
            &sidecar.get("/metrics").1,
            "meshtrace_collector_sampling_upstream_fetches_total",
        )
    };
    // 1,000 names asked once each (a scan, or junk from a local process).
    for i in 0..1000 {
        let (status, _) = sidecar.get_sampling(&format!("/api/sampling?service=junk-{i}"));
        assert_eq!(status, 200);
    }
    let asked = fetches();
    std::thread::sleep(Duration::from_millis(4500));
    let after = fetches() - asked;
    // Refreshed at most 256 names (the bound), for at most 3 intervals (then forgotten).
    eprintln!("{asked} first fetches, then {after} refreshes in 4.5 s");
    assert!(after <= 3 * 256 + 256, "refreshes not bounded: {after}");
    std::thread::sleep(Duration::from_millis(2000));
    let later = fetches() - asked - after;
    assert!(
        later <= 256,
        "names nobody asks for are forgotten: {later} more"
    );
    let _ = std::fs::remove_file(&file);
}
