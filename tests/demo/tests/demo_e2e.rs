//! `scripts/demo` end to end: the real command, with the real Envoys, filters, sidecar
//! collectors and central collector it starts, read back through the query API while it
//! runs. Also: a taken port stops it with a message naming the port, and a second run works.

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{demo_command, lines};
use meshtrace_demo::orchestrator as demo;
use meshtrace_testkit::collector::jaeger_tag;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn nothing_listening() {
    let listening: Vec<String> = demo::ports()
        .into_iter()
        .filter(|(ip, port, _)| {
            let a: SocketAddr = format!("{ip}:{port}").parse().expect("address");
            TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok()
        })
        .map(|(ip, port, what)| format!("{ip}:{port} {what}"))
        .collect();
    assert!(listening.is_empty(), "still listening: {listening:?}");
}

fn get(path: &str) -> Value {
    let a: SocketAddr = "127.0.0.1:16686".parse().expect("address");
    demo::get_json(a, path).unwrap_or_else(|e| panic!("{e}"))
}

/// Checks one trace: all three services, and every span but the root has its parent in
/// the trace; each SERVER span of checkout/inventory is the child of a CLIENT span of the
/// service that called it (the link crosses two sidecars).
fn check_trace(id: &str) {
    let t = &get(&format!("/api/traces/{id}"))["data"][0];
    let service_of: HashMap<&str, &str> = t["processes"]
        .as_object()
        .expect("processes")
        .iter()
        .map(|(k, p)| (k.as_str(), p["serviceName"].as_str().expect("serviceName")))
        .collect();
    let spans = t["spans"].as_array().expect("spans");
    let by_id: HashMap<&str, &Value> = spans
        .iter()
        .map(|s| (s["spanID"].as_str().expect("spanID"), s))
        .collect();
    let service = |s: &Value| service_of[s["processID"].as_str().expect("processID")];
    let kind = |s: &Value| {
        jaeger_tag(s, "span.kind")
            .and_then(|v| v["value"].as_str())
            .unwrap_or("")
            .to_string()
    };
    let services: HashSet<&str> = spans.iter().map(service).collect();
    assert_eq!(
        services,
        HashSet::from(["frontend", "checkout", "inventory"]),
        "{t}"
    );
    let mut roots = 0;
    let mut crossings = HashSet::new();
    for s in spans {
        let parent = s["references"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["refType"] == "CHILD_OF"))
            .and_then(|r| r["spanID"].as_str());
        let Some(parent) = parent else {
            roots += 1;
            assert_eq!(service(s), "frontend", "the root is the frontend's: {s}");
            assert_eq!(kind(s), "server", "{s}");
            continue;
        };
        let p = by_id
            .get(parent)
            .unwrap_or_else(|| panic!("parent {parent} of {s} is not in the trace"));
        if kind(s) == "server" && service(s) != "frontend" {
            assert_eq!(
                kind(p),
                "client",
                "a SERVER span's parent is the caller's CLIENT span"
            );
            assert_ne!(service(p), service(s), "the link crosses sidecars: {s}");
            crossings.insert((service(p).to_string(), service(s).to_string()));
        }
        if kind(s) == "client" {
            assert_eq!(
                service(p),
                service(s),
                "a CLIENT span's parent is its own SERVER span"
            );
        }
    }
    assert_eq!(roots, 1, "one root in {t}");
    assert!(
        crossings.contains(&("frontend".into(), "checkout".into()))
            && crossings.contains(&("checkout".into(), "inventory".into())),
        "frontend → checkout → inventory across the sidecars: {crossings:?}"
    );
}

/// Issue 14 items 4 and 5: a plain curl from outside the mesh, as the demo prints it,
/// learns its trace id from `traceresponse`; `jaeger-debug-id` (and the force header)
/// make sure the trace is recorded whatever the frontend's sampling rate.
fn curl_from_outside_finds_its_trace() {
    let frontend = format!("http://{}:15006/checkout", demo::SERVICES[0].1);
    for (header, tag) in [
        ("jaeger-debug-id: demo-e2e-curl", Some("demo-e2e-curl")),
        ("x-meshtrace-force-trace: 1", None),
    ] {
        let out = Command::new("curl")
            .args(["-s", "-D", "-", "-o", "/dev/null", "-X", "POST", &frontend])
            .args(["-H", "host: frontend:8080", "-H", header])
            .output()
            .expect("curl (scripts/setup installs it)");
        let head = String::from_utf8_lossy(&out.stdout);
        let tr = head
            .lines()
            .find_map(|l| l.strip_prefix("traceresponse: "))
            .unwrap_or_else(|| panic!("{header}: no traceresponse in\n{head}"))
            .trim()
            .to_string();
        assert!(
            tr.len() == 55 && tr.ends_with("-03"),
            "{header}: recorded, says {tr}"
        );
        let trace_id = &tr[3..35];
        let a: SocketAddr = "127.0.0.1:16686".parse().expect("address");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = demo::get_json(a, &format!("/api/traces/{trace_id}")).ok();
            let spans = found
                .as_ref()
                .and_then(|t| t["data"][0]["spans"].as_array().cloned())
                .unwrap_or_default();
            let root = spans
                .iter()
                .find(|s| s["spanID"].as_str() == Some(&tr[36..52]));
            if let Some(root) = root {
                let got = jaeger_tag(root, "jaeger-debug-id")
                    .and_then(|v| v["value"].as_str().map(str::to_string));
                assert_eq!(
                    got.as_deref(),
                    tag,
                    "{header}: the span's jaeger-debug-id tag"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{header}: trace {trace_id} never appeared"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

#[test]
fn the_demo_traces_three_services_and_stops_everything() {
    // 1. A taken port: a clear message naming it, nothing started.
    let held = TcpListener::bind("127.0.0.13:15006").expect("hold a demo port");
    let out: Output = demo_command(&["--duration", "5"])
        .output()
        .expect("run scripts/demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must refuse to start: {stderr}");
    assert!(
        stderr.contains("127.0.0.13:15006 (inventory pod, Envoy inbound listener)")
            && stderr.contains("already in use"),
        "{stderr}"
    );
    drop(held);
    nothing_listening();

    // 2. A 30 s run from an empty store, read while it runs.
    let mut child = demo_command(&["--duration", "30", "--fresh"])
        .spawn()
        .expect("run scripts/demo");
    let (rx, reader) = lines(child.stdout.take().expect("stdout"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut example = None;
    while example.is_none() && Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                if let Some(id) = line.strip_prefix("example trace across all three services: ") {
                    example = Some(id.trim().to_string());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let Some(id) = example else {
        let _ = child.kill();
        let out = reader.join().unwrap_or_default();
        panic!("no example trace printed:\n{out}");
    };
    check_trace(&id);
    curl_from_outside_finds_its_trace();
    // Every stored checkout trace is whole, not just the example.
    let traces = get("/api/traces?service=checkout&lookback=1h&limit=50");
    let ids: Vec<&str> = traces["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|t| t["traceID"].as_str())
        .collect();
    assert!(ids.len() >= 3, "checkout traces: {}", ids.len());
    let end_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    let deps = get(&format!(
        "/api/dependencies?endTs={end_ms}&lookback=3600000"
    ));
    let edges: HashSet<(String, String)> = deps["data"]
        .as_array()
        .expect("dependencies")
        .iter()
        .map(|d| {
            (
                d["parent"].as_str().unwrap_or("").to_string(),
                d["child"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    for (p, c) in [
        ("frontend", "checkout"),
        ("checkout", "inventory"),
        ("frontend", "inventory"),
    ] {
        assert!(
            edges.contains(&(p.into(), c.into())),
            "{p} → {c} in {edges:?}"
        );
    }
    let status = child.wait().expect("demo exit");
    let out = reader.join().expect("stdout");
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    assert!(status.success(), "demo failed: {stderr}\n{out}");
    // What the user sees: requests, traces stored, sampled ratio per service, URLs.
    for needle in [
        "requests sent",
        "traces stored",
        "sampled: frontend",
        "checkout 100%",
        "curl -s http://127.0.0.1:16686/api/traces/",
        "stopped:",
    ] {
        assert!(out.contains(needle), "{needle:?} missing from:\n{out}");
    }
    nothing_listening();
    for p in ["meshtrace-demo app", "meshtrace-collector --mode"] {
        let left = Command::new("pgrep")
            .arg("-f")
            .arg(p)
            .output()
            .expect("pgrep");
        let pids = String::from_utf8_lossy(&left.stdout);
        // Other tests run collectors too, but never with the demo's data directory.
        let ours = pids.lines().any(|pid| {
            std::fs::read(format!("/proc/{}/cmdline", pid.trim()))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("target/demo"))
        });
        assert!(!ours, "a {p} process of the demo is still running");
    }

    // 3. A run killed with SIGKILL leaves its processes behind; the next run stops them
    // (by the PIDs it recorded) and starts; Ctrl-C (SIGINT) stops it and all it started.
    let mut killed = demo_command(&[]).spawn().expect("run");
    let stdout = killed.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    assert!(
        lines.any(|l| l.starts_with("meshtrace demo running")),
        "the run did not come up"
    );
    killed.kill().expect("SIGKILL the demo");
    let _ = killed.wait();
    let mut child = demo_command(&[]).spawn().expect("rerun");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    let mut before = Vec::new();
    for l in lines.by_ref() {
        if l.starts_with("meshtrace demo running (Ctrl-C stops it)") {
            break;
        }
        before.push(l);
    }
    assert!(
        before
            .iter()
            .any(|l| l.starts_with("keeping the traces of earlier runs")),
        "without --fresh the store of the earlier runs stays: {before:?}"
    );
    assert!(
        before
            .iter()
            .filter(|l| l.contains("left from an earlier run"))
            .count()
            >= 10,
        "the leftovers (1 collector + 3 × (sidecar collector, app, Envoy)) were not stopped: {before:?}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let rest: Vec<String> = lines.collect();
    let status = child.wait().expect("demo exit");
    assert!(status.success(), "after Ctrl-C: {rest:?}");
    assert!(
        rest.iter().any(|l| l.starts_with("stopped:")),
        "after Ctrl-C: {rest:?}"
    );
    nothing_listening();
}
