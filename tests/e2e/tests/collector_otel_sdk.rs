//! The real OpenTelemetry Python SDK exports to the collector binary; the
//! spans come back through the query API with ids, links, attributes, events
//! and resource intact.

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_testkit::collector::{jaeger_tag, Collector};
use meshtrace_testkit::python_client;
use serde_json::Value;

fn send(protocol: &str, endpoint: &str) -> Value {
    let (v, stderr) = python_client("otel_send.py", &[protocol, endpoint], b"");
    assert_eq!(v["flushed"], true, "SDK flush failed: {stderr}");
    v
}

fn check(c: &Collector, ids: &Value) {
    let trace_id = ids["trace_id"].as_str().unwrap();
    let v = c.get_json_until(&format!("/api/traces/{trace_id}"), |v| {
        v["data"][0]["spans"]
            .as_array()
            .is_some_and(|s| s.len() == 2)
    });
    let trace = &v["data"][0];
    let spans = trace["spans"]
        .as_array()
        .unwrap_or_else(|| panic!("no trace: {v}"));
    assert_eq!(spans.len(), 2, "{v}");
    let by_id = |id: &Value| {
        spans
            .iter()
            .find(|s| s["spanID"] == *id)
            .unwrap_or_else(|| panic!("span {id} missing: {v}"))
    };
    let parent = by_id(&ids["parent"]);
    let child = by_id(&ids["child"]);
    let tag =
        |s: &Value, k: &str| jaeger_tag(s, k).map(|t| (t["type"].clone(), t["value"].clone()));
    assert_eq!(parent["operationName"], "POST /checkout");
    assert_eq!(tag(parent, "cart.items"), Some(("int64".into(), 3.into())));
    assert_eq!(tag(parent, "vip"), Some(("bool".into(), true.into())));
    assert_eq!(tag(parent, "ratio"), Some(("float64".into(), 0.5.into())));
    assert_eq!(
        tag(parent, "span.kind"),
        Some(("string".into(), "server".into()))
    );
    assert_eq!(
        tag(parent, "tags.list"),
        Some(("string".into(), r#"["a","b"]"#.into())),
        "an array attribute is JSON text, as Jaeger renders it"
    );
    assert_eq!(
        tag(parent, "otel.scope.name"),
        Some(("string".into(), "meshtrace-e2e".into()))
    );
    assert_eq!(
        tag(parent, "otel.scope.version"),
        Some(("string".into(), "1.2.3".into()))
    );
    // Credentials an SDK sends are redacted at ingest (the filter's list of headers).
    for key in ["authorization", "http.request.header.cookie"] {
        assert_eq!(
            tag(parent, key),
            Some(("string".into(), "[REDACTED]".into())),
            "{key}"
        );
    }
    assert!(!v.to_string().contains("secret-token"));
    let (_, metrics) = c.get("/metrics");
    assert_eq!(
        meshtrace_testkit::collector::metric(
            &metrics,
            "meshtrace_collector_attributes_redacted_total"
        ),
        2
    );
    assert_eq!(parent["logs"][0]["fields"][0]["value"], "cart validated");
    assert_eq!(parent["logs"][0]["fields"][1]["key"], "rule");
    let refs = child["references"].as_array().unwrap();
    assert!(
        refs.iter()
            .any(|r| r["refType"] == "CHILD_OF" && r["spanID"] == ids["parent"]),
        "{refs:?}"
    );
    assert!(
        refs.iter().any(|r| r["refType"] == "FOLLOWS_FROM"
            && r["traceID"] == ids["linked_trace"]
            && r["spanID"] == ids["linked_span"]),
        "link kept: {refs:?}"
    );
    assert_eq!(tag(child, "error"), Some(("bool".into(), true.into())));
    assert_eq!(
        tag(child, "otel.status_description"),
        Some(("string".into(), "card declined".into()))
    );
    let process = &trace["processes"][parent["processID"].as_str().unwrap()];
    assert_eq!(process["serviceName"], "py-client");
    let ptags = process["tags"].as_array().unwrap();
    assert!(ptags
        .iter()
        .any(|t| t["key"] == "deployment.environment" && t["value"] == "test"));
    assert!(ptags
        .iter()
        .any(|t| t["key"] == "telemetry.sdk.language" && t["value"] == "python"));
}

#[test]
fn python_sdk_over_otlp_http() {
    let c = Collector::start();
    let ids = send("http", &format!("http://127.0.0.1:{}", c.otlp_port));
    check(&c, &ids);
}

#[test]
fn python_sdk_over_otlp_grpc() {
    let c = Collector::start();
    let ids = send("grpc", &format!("http://127.0.0.1:{}", c.grpc_port));
    check(&c, &ids);
}
