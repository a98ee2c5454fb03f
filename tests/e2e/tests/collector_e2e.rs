//! The filter exporting to the real collector binary, read back through
//! Jaeger's query API. Needs `scripts/build-wasm` and `cargo build -p meshtrace-collector`.

use meshtrace_testkit::collector::{jaeger_span_of, jaeger_tag, Collector};
use meshtrace_testkit::envoy::TwoSidecars;
use meshtrace_testkit::http::Client;
use serde_json::Value;

const CFG: &str = r#"{"export":{"flush_interval_ms":100,"tick_ms":50}}"#;

#[test]
fn request_through_two_sidecars_is_visible_in_the_query_api() {
    let collector = Collector::start();
    let mesh = TwoSidecars::start(CFG, CFG, collector.otlp_port);
    let (a_out, app) = (mesh.entry_port, &mesh.app);
    assert_eq!(
        Client::connect(a_out).get("/api/items/7", &[]).status(),
        200
    );
    let tp = app
        .last()
        .header("traceparent")
        .expect("traceparent at the app");
    let trace_id = &tp[3..35];

    let v = collector.get_json_until(&format!("/api/traces/{trace_id}"), |v| {
        v["data"][0]["spans"]
            .as_array()
            .is_some_and(|s| s.len() == 2)
    });
    let trace = &v["data"][0];
    assert_eq!(trace["traceID"], trace_id, "{v}");
    let spans = trace["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 2, "{v}");
    let (client, server) = (
        jaeger_span_of(trace, "frontend"),
        jaeger_span_of(trace, "backend"),
    );
    assert_eq!(server["references"][0]["refType"], "CHILD_OF");
    assert_eq!(
        server["references"][0]["spanID"], client["spanID"],
        "parent link across sidecars"
    );
    assert_eq!(client["operationName"], "GET /api/items/{id}");
    let tag = |s: &Value, k: &str| jaeger_tag(s, k).map(|t| t["value"].clone());
    assert_eq!(tag(server, "span.kind"), Some("server".into()));
    assert_eq!(tag(client, "span.kind"), Some("client".into()));
    assert_eq!(tag(server, "http.response.status_code"), Some(200.into()));
    let procs = trace["processes"].as_object().unwrap();
    assert!(procs.values().any(|p| p["tags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["key"] == "k8s.pod.name")));

    let services = collector.get_json_until("/api/services", |v| {
        v["data"].as_array().is_some_and(|a| a.len() >= 2)
    });
    assert_eq!(services["data"], serde_json::json!(["backend", "frontend"]));
    let ops = collector.get_json_until("/api/operations?service=backend&spanKind=server", |v| {
        v["total"] == 1
    });
    assert_eq!(ops["data"][0]["name"], "GET /api/items/{id}");
    let found = collector.get_json_until("/api/traces?service=frontend&lookback=1h&limit=5", |v| {
        v["total"] == 1
    });
    assert_eq!(found["data"][0]["traceID"], trace_id);

    let deps = collector.get_json_until("/api/dependencies?lookback=3600000", |v| v["total"] == 1);
    assert_eq!(
        deps["data"][0],
        serde_json::json!({"parent": "frontend", "child": "backend", "callCount": 1})
    );
    // Jaeger conformance: `service` narrows dependencies, prettyPrint indents,
    // limit must be positive.
    let only = collector
        .get_json_until("/api/dependencies?lookback=3600000&service=backend", |v| {
            v["total"] == 1
        });
    assert_eq!(only["data"][0]["child"], "backend");
    let none = collector.get_json_until(
        "/api/dependencies?lookback=3600000&service=elsewhere",
        |_| true,
    );
    assert_eq!(
        none["total"], 0,
        "an unrelated service has no edges: {none}"
    );
    let (status, pretty) = collector.get(&format!("/api/traces/{trace_id}?prettyPrint=true"));
    assert_eq!(status, 200);
    assert!(pretty.starts_with("{\n  \"data\": ["), "{pretty}");
    let (status, compact) = collector.get(&format!("/api/traces/{trace_id}"));
    assert_eq!(status, 200);
    assert!(!compact.contains('\n'), "compact by default");
    let (status, body) = collector.get("/api/traces?service=frontend&limit=0");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("limit"), "{body}");
    let found = collector.get_json_until(
        "/api/traces?service=frontend&lookback=1h&minDuration=0s&maxDuration=1m30s",
        |v| v["total"] == 1,
    );
    assert_eq!(found["data"][0]["traceID"], trace_id, "Go duration syntax");

    let (status, metrics) = collector.get("/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("meshtrace_collector_spans_stored_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE meshtrace_collector_queue_depth gauge"),
        "{metrics}"
    );

    // Errors in Jaeger's envelope.
    let (status, body) = collector.get("/api/traces/0000000000000000000000000000abcd");
    assert_eq!(status, 404, "{body}");
    let (status, body) = collector.get("/api/traces?service=frontend&minDuration=fast");
    assert_eq!(status, 400);
    assert!(body.contains("minDuration"), "{body}");
    let (status, body) = collector.get("/api/traces?service=frontend&tags=%7Bbroken");
    assert_eq!(status, 400);
    assert!(body.contains("tags"), "{body}");
    let (status, body) = collector.get("/api/dependencies?lookback=-5");
    assert_eq!(status, 400);
    assert!(body.contains("lookback"), "{body}");
    // Extreme (but numeric) bounds: a 400 naming the parameter, not an overflow.
    let (status, body) =
        collector.get("/api/dependencies?endTs=9223372036854775807&lookback=9223372036854775807");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("endTs"), "{body}");
    assert_eq!(collector.get("/healthz").0, 200, "still serving");
}
