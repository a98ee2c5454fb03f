//! Jaeger senders, each the real one: Jaeger's Python client (UDP Thrift
//! compact, 6831), Jaeger's Node.js client (UDP Thrift binary, 6832, and
//! Thrift binary over HTTP, 14268), OpenTelemetry's Jaeger exporter (UDP
//! compact and HTTP), and a gRPC stub generated from the project's
//! `model.proto` / `collector.proto` (`CollectorService/PostSpans`, 14250).
//! Their spans come back through the query API as the OpenTelemetry
//! Collector translates them: typed tags, logs as events, references as the
//! parent and links, kind, status, scope, process — redacted like OTLP
//! spans. Bad input gets a 400 / `INVALID_ARGUMENT` naming the problem over
//! HTTP and gRPC, and is counted over UDP; the collector keeps serving. The
//! receivers can be switched off, and run in a sidecar, which forwards.

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_testkit::collector::{jaeger_tag, post_to, Collector, Opts};
use meshtrace_testkit::envoy::{EnvoyBuilder, Filter};
use meshtrace_testkit::http::Client;
use meshtrace_testkit::upstream::Upstream;
use meshtrace_testkit::{free_port, node_client, python_client, python_client_in, workspace_root};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn tag(s: &Value, k: &str) -> Option<Value> {
    jaeger_tag(s, k).map(|t| t["value"].clone())
}

/// The trace's spans once it has `n`, and its processes.
fn trace_of(c: &Collector, trace_id: &str, n: usize) -> (Vec<Value>, Value) {
    let v = c.get_json_until(&format!("/api/traces/{trace_id}"), |v| {
        v["data"][0]["spans"]
            .as_array()
            .is_some_and(|s| s.len() == n)
    });
    let spans = v["data"][0]["spans"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(spans.len(), n, "{v}");
    (spans, v["data"][0]["processes"].clone())
}

fn by_id<'a>(spans: &'a [Value], id: &Value) -> &'a Value {
    spans
        .iter()
        .find(|s| s["spanID"] == *id)
        .unwrap_or_else(|| panic!("no span {id} in {spans:?}"))
}

fn process_of<'a>(processes: &'a Value, span: &Value) -> &'a Value {
    &processes[span["processID"].as_str().unwrap()]
}

fn process_tag(p: &Value, k: &str) -> Option<Value> {
    p["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == k)
        .map(|t| t["value"].clone())
}

fn compact(c: &Collector) -> String {
    format!("127.0.0.1:{}", c.jaeger_compact_port)
}

fn http_endpoint(c: &Collector) -> String {
    format!("http://127.0.0.1:{}/api/traces", c.jaeger_http_port)
}

/// `meshtrace_collector_udp_packets_total` of `listener` and `outcome`.
fn packets(c: &Collector, listener: &str, outcome: &str) -> u64 {
    let (_, text) = c.get("/metrics");
    let series = format!(
        "meshtrace_collector_udp_packets_total{{listener=\"{listener}\",outcome=\"{outcome}\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.trim().parse().unwrap())
}

fn packets_until(c: &Collector, listener: &str, outcome: &str, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = packets(c, listener, outcome);
        if got >= n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn jaegers_python_client_over_udp_compact_is_received_and_translated() {
    let c = Collector::start_in(meshtrace_testkit::scratch_path("jaeger-client"));
    let (ids, stderr) = python_client_in(
        ".venv-jaeger",
        "jaeger_send.py",
        &["jaeger-client", &compact(&c)],
        b"",
    );
    let trace_id = ids["trace_id"].as_str().unwrap();
    let (spans, processes) = trace_of(&c, trace_id, 3);
    let (parent, cause, child) = (
        by_id(&spans, &ids["parent"]),
        by_id(&spans, &ids["cause"]),
        by_id(&spans, &ids["child"]),
    );
    assert_eq!(parent["operationName"], "GET /legacy", "{stderr}");
    assert_eq!(tag(parent, "span.kind"), Some("server".into()));
    assert_eq!(
        tag(parent, "http.status_code"),
        Some(200.into()),
        "typed: {parent}"
    );
    assert_eq!(cause["references"][0]["spanID"], ids["parent"]);
    assert_eq!(tag(child, "span.kind"), Some("client".into()));
    assert_eq!(tag(child, "error"), Some(true.into()), "{child}");
    assert_eq!(tag(child, "db.rows"), Some(3.into()));
    assert_eq!(tag(child, "ratio"), Some(0.25.into()));
    assert_eq!(
        tag(child, "authorization"),
        Some("[REDACTED]".into()),
        "credentials are redacted as on the OTLP path"
    );
    let refs = child["references"].as_array().unwrap();
    assert_eq!(refs.len(), 2, "{child}");
    assert_eq!(refs[0]["refType"], "CHILD_OF");
    assert_eq!(refs[0]["spanID"], ids["parent"]);
    assert_eq!(refs[1]["refType"], "FOLLOWS_FROM");
    assert_eq!(refs[1]["spanID"], ids["cause"]);
    let log = &child["logs"][0];
    let field = |k: &str| {
        log["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["key"] == k)
            .map(|f| f["value"].clone())
    };
    assert_eq!(field("event"), Some("retry".into()), "{log}");
    assert_eq!(field("attempt"), Some(2.into()), "{log}");
    let p = process_of(&processes, parent);
    assert_eq!(p["serviceName"], "legacy-python");
    assert!(
        process_tag(p, "jaeger.version")
            .is_some_and(|v| v.as_str().unwrap().starts_with("Python-")),
        "{p}"
    );
    assert!(packets(&c, "receivers.jaeger.thrift_compact_listen", "accepted") > 0);
}

#[test]
fn opentelemetrys_jaeger_exporter_over_udp_and_http_is_received() {
    let c = Collector::start_in(meshtrace_testkit::scratch_path("jaeger-otel"));
    for (sender, target) in [("otel-udp", compact(&c)), ("otel-http", http_endpoint(&c))] {
        let (ids, stderr) =
            python_client_in(".venv-jaeger", "jaeger_send.py", &[sender, &target], b"");
        assert_eq!(ids["flushed"], true, "{sender}: {stderr}");
        let trace_id = ids["trace_id"].as_str().unwrap();
        let (spans, processes) = trace_of(&c, trace_id, 2);
        let (parent, child) = (by_id(&spans, &ids["parent"]), by_id(&spans, &ids["child"]));
        assert_eq!(tag(parent, "span.kind"), Some("server".into()), "{sender}");
        assert_eq!(tag(parent, "orders"), Some(4.into()), "{sender}: {parent}");
        assert_eq!(
            tag(parent, "otel.scope.name"),
            Some("meshtrace-e2e-jaeger".into()),
            "{sender}: the library tags name the scope"
        );
        let event = &parent["logs"][0]["fields"];
        assert!(
            event.to_string().contains("cache miss"),
            "{sender}: {parent}"
        );
        assert!(event.to_string().contains("o-1"), "{sender}: {parent}");
        assert_eq!(child["references"][0]["spanID"], ids["parent"]);
        assert_eq!(tag(child, "error"), Some(true.into()), "{sender}: {child}");
        assert_eq!(
            tag(child, "otel.status_description"),
            Some("deadlock".into()),
            "{sender}: {child}"
        );
        // This exporter's process is the service name alone.
        let p = process_of(&processes, parent);
        assert_eq!(p["serviceName"], format!("jaeger-{sender}"), "{p}");
    }
}

#[test]
fn jaegers_node_client_over_udp_binary_and_http_is_received() {
    let c = Collector::start_in(meshtrace_testkit::scratch_path("jaeger-node"));
    let binary_port = c.jaeger_binary_port.to_string();
    let http = http_endpoint(&c);
    for (mode, args) in [
        ("udp", vec!["udp", "127.0.0.1", binary_port.as_str()]),
        ("http", vec!["http", http.as_str()]),
    ] {
        let ids = node_client("jaeger_send.mjs", &args);
        let trace_id = ids["trace_id"].as_str().unwrap();
        let (spans, processes) = trace_of(&c, trace_id, 2);
        let (parent, child) = (by_id(&spans, &ids["parent"]), by_id(&spans, &ids["child"]));
        assert_eq!(tag(parent, "span.kind"), Some("server".into()), "{mode}");
        // JavaScript numbers are doubles: the client sends 3 as 3.0.
        assert_eq!(tag(child, "db.rows"), Some(3.0.into()), "{mode}: {child}");
        assert_eq!(tag(child, "error"), Some(true.into()), "{mode}: {child}");
        assert!(
            child["logs"][0].to_string().contains("retry"),
            "{mode}: {child}"
        );
        assert_eq!(child["references"][0]["spanID"], ids["parent"]);
        let p = process_of(&processes, parent);
        assert_eq!(p["serviceName"], format!("legacy-node-{mode}"));
        assert_eq!(process_tag(p, "deployment.environment"), Some("e2e".into()));
    }
    assert!(packets(&c, "receivers.jaeger.thrift_binary_listen", "accepted") > 0);
}

#[test]
fn jaeger_grpc_post_spans_is_received_and_garbage_is_invalid_argument() {
    let c = Collector::start_in(meshtrace_testkit::scratch_path("jaeger-grpc"));
    let proto = workspace_root().join("proto/proto");
    let target = format!("127.0.0.1:{}", c.jaeger_grpc_port);
    let trace_id = "5a0d2ec3e1c94b6a9f2f1d3c0b4a6e71";
    let (r, stderr) = python_client(
        "jaeger_grpc.py",
        &[proto.to_str().unwrap(), &target, trace_id],
        b"",
    );
    assert_eq!(r, json!({"ok": true}), "{stderr}");
    let (spans, processes) = trace_of(&c, trace_id, 2);
    let parent = by_id(&spans, &json!("00000000000000a1"));
    let child = by_id(&spans, &json!("00000000000000a2"));
    assert_eq!(tag(parent, "error"), Some(true.into()), "{parent}");
    assert_eq!(tag(parent, "http.status_code"), Some(503.into()));
    assert_eq!(tag(child, "ratio"), Some(0.5.into()));
    assert_eq!(child["references"][0]["spanID"], "00000000000000a1");
    assert_eq!(child["references"][1]["traceID"], "f".repeat(32));
    assert_eq!(child["references"][1]["refType"], "FOLLOWS_FROM");
    assert!(child["logs"][0].to_string().contains("retry"), "{child}");
    assert_eq!(process_of(&processes, parent)["serviceName"], "grpc-sender");
    let db = process_of(&processes, child);
    assert_eq!(db["serviceName"], "grpc-db", "a span's own process");
    assert_eq!(process_tag(db, "hostname"), Some("db-0".into()));

    let (r, _) = python_client(
        "jaeger_grpc.py",
        &[proto.to_str().unwrap(), &target, trace_id, "garbage"],
        b"",
    );
    assert_eq!(r["error"], "INVALID_ARGUMENT", "{r}");
    assert!(
        r["details"].as_str().unwrap().contains("PostSpansRequest"),
        "{r}"
    );
}

#[test]
fn bad_jaeger_input_is_refused_or_counted_and_the_collector_keeps_serving() {
    let c = Collector::start_in(meshtrace_testkit::scratch_path("jaeger-bad"));
    let post = |ct: &str, path: &str, body: &[u8]| {
        let m = post_to(c.jaeger_http_port, path, ct, &[], body).unwrap();
        (m.status(), String::from_utf8_lossy(&m.body).into_owned())
    };
    let (status, text) = post(
        "application/x-thrift",
        "/api/traces",
        b"\x0c\x00\x01garbage",
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("not a Jaeger Thrift binary batch"), "{text}");
    let (status, text) = post("application/json", "/api/traces", b"[]");
    assert_eq!(status, 415, "{text}");
    assert!(text.contains("application/x-thrift"), "{text}");
    let (status, text) = post(
        "application/x-thrift",
        "/api/traces?format=zipkin.thrift",
        b"",
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("zipkin.thrift"), "{text}");

    // UDP: garbage, a packet over max_packet_bytes (65,000), a Zipkin call.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = ("127.0.0.1", c.jaeger_compact_port);
    udp.send_to(b"\x82\x81\x01\x09emitBatch\xff\xff\xff", to)
        .unwrap();
    udp.send_to(&vec![0x82u8; 65_001], to).unwrap();
    let listener = "receivers.jaeger.thrift_compact_listen";
    assert_eq!(packets_until(&c, listener, "malformed", 1), 1);
    assert_eq!(packets_until(&c, listener, "too_large", 1), 1);
    let log = std::fs::read_to_string(&c.log_path).unwrap();
    assert!(log.contains("malformed UDP packet dropped"), "{log}");

    // Still serving: a real sender's trace arrives.
    let (ids, _) = python_client_in(
        ".venv-jaeger",
        "jaeger_send.py",
        &["jaeger-client", &compact(&c)],
        b"",
    );
    trace_of(&c, ids["trace_id"].as_str().unwrap(), 3);
}

#[test]
fn the_receivers_switch_off_and_run_in_a_sidecar_which_forwards() {
    let off = Collector::start_with_config("receivers:\n  jaeger:\n    enabled: false\n");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", off.jaeger_http_port)).is_err(),
        "receivers.jaeger.enabled: false leaves 14268 closed"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", off.jaeger_grpc_port)).is_err());
    drop(off);

    // The agent in the pod: an app's Jaeger client on localhost:6831 keeps
    // working when the sidecar collector takes the agent's place.
    let central = Collector::start_in(meshtrace_testkit::scratch_path("jaeger-central"));
    let upstream = format!("http://127.0.0.1:{}", central.grpc_port);
    let mut opts = Opts::sidecar(&upstream);
    opts.yaml = Some("receivers:\n  jaeger:\n    enabled: true\n".into());
    let sidecar = Collector::start_opts(meshtrace_testkit::scratch_path("jaeger-sidecar"), opts);
    let (ids, _) = python_client_in(
        ".venv-jaeger",
        "jaeger_send.py",
        &["jaeger-client", &compact(&sidecar)],
        b"",
    );
    let (spans, _) = trace_of(&central, ids["trace_id"].as_str().unwrap(), 3);
    assert_eq!(
        tag(by_id(&spans, &ids["child"]), "span.kind"),
        Some("client".into())
    );
}

/// A process killed when dropped.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The seed's snippet — a Flask app auto-instrumented for Flask and requests,
/// `JaegerExporter(agent_host_name, agent_port=6831)` — behind a sidecar Envoy
/// with the filter, exporting to the pod's sidecar collector in place of the
/// Jaeger agent: its spans join the mesh span of the same request.
#[test]
fn the_seeds_flask_app_on_the_agent_port_joins_the_mesh_trace() {
    let central = Collector::start_in(meshtrace_testkit::scratch_path("seed-central"));
    // As istio/components/sidecar-collector runs it: the flag turns the receivers on.
    let mut opts = Opts::sidecar(&format!("http://127.0.0.1:{}", central.grpc_port));
    opts.args.push("--jaeger-receivers=true".into());
    let sidecar = Collector::start_opts(meshtrace_testkit::scratch_path("seed-sidecar"), opts);
    let inventory = Upstream::start();
    let app_port = free_port();
    let py = workspace_root().join(".venv-jaeger/bin/python");
    assert!(py.exists(), "no .venv-jaeger: run scripts/setup");
    let app_log = meshtrace_testkit::scratch_path("seed-app.log");
    let _app = Process(
        std::process::Command::new(py)
            .arg(workspace_root().join("tests/clients/jaeger_seed_app.py"))
            .args([
                app_port.to_string(),
                sidecar.jaeger_compact_port.to_string(),
                format!("http://127.0.0.1:{}/inventory", inventory.port),
            ])
            .stdout(std::fs::File::create(&app_log).unwrap())
            .stderr(std::fs::File::create(app_log.with_extension("err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", app_port)).is_err() {
        assert!(Instant::now() < deadline, "the Flask app did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let cfg = r#"{"export":{"flush_interval_ms":100,"tick_ms":50}}"#;
    let mut b = EnvoyBuilder::new("checkout", Filter::Meshtrace(cfg.into()), sidecar.otlp_port);
    let port = b.listener("INBOUND", app_port);
    let _envoy = b.start();
    let r = Client::connect(port).get("/checkout", &[]);
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(&r.body));
    // The app's requests call carried the trace on: its traceparent names it.
    let tp = inventory.last().header("traceparent").unwrap();
    let trace_id = &tp[3..35];
    let (spans, processes) = trace_of(&central, trace_id, 3);
    let service = |s: &Value| process_of(&processes, s)["serviceName"].clone();
    let mesh = spans.iter().find(|s| service(s) == "checkout").unwrap();
    let flask = spans
        .iter()
        .find(|s| service(s) == "seed-app" && tag(s, "span.kind") == Some("server".into()))
        .unwrap_or_else(|| panic!("no Flask server span: {spans:?}"));
    let client = spans
        .iter()
        .find(|s| service(s) == "seed-app" && tag(s, "span.kind") == Some("client".into()))
        .unwrap_or_else(|| panic!("no requests client span: {spans:?}"));
    assert_eq!(
        flask["references"][0]["spanID"], mesh["spanID"],
        "the app's server span is the mesh span's child"
    );
    assert_eq!(client["references"][0]["spanID"], flask["spanID"]);
    assert_eq!(tp[36..52], *client["spanID"].as_str().unwrap());
    // The app's instrumentation writes `http.status_code`, the filter
    // `http.response.status_code`: a search under either name finds both.
    let text = |v: Option<Value>| v.map(|v| v.to_string().trim_matches('"').to_string());
    assert_eq!(text(tag(flask, "http.status_code")).as_deref(), Some("200"));
    assert_eq!(
        text(tag(mesh, "http.response.status_code")).as_deref(),
        Some("200")
    );
    for (svc, name) in [
        ("seed-app", "http.response.status_code"),
        ("checkout", "http.status_code"),
    ] {
        let found = central.get_json_until(
            &format!("/api/traces?service={svc}&tags=%7B%22{name}%22%3A%22200%22%7D&lookback=1h"),
            |v| v["data"].as_array().is_some_and(|d| !d.is_empty()),
        );
        let ids: Vec<&str> = found["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["traceID"].as_str())
            .collect();
        assert!(ids.contains(&trace_id), "{svc} by {name}: {found}");
    }
}
