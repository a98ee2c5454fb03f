//! Zipkin senders: the real OpenTelemetry Python SDK's Zipkin exporter (v2
//! JSON) and a Zipkin protobuf body post to the collector binary's Zipkin
//! receiver; the spans come back through the query API translated as the
//! OpenTelemetry Collector translates them, redacted like OTLP spans.
//! Malformed bodies get a 400 naming the problem; the receiver can be
//! switched off.

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_testkit::collector::{jaeger_tag, post_to, Collector, Opts};
use meshtrace_testkit::python_client;
use serde_json::{json, Value};
use std::io::Write;

fn tag(s: &Value, k: &str) -> Option<Value> {
    jaeger_tag(s, k).map(|t| t["value"].clone())
}

fn spans_of(c: &Collector, trace_id: &str, n: usize) -> Vec<Value> {
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
    spans
}

/// The process (resource) a span of `trace_id` belongs to.
fn spans_process(c: &Collector, trace_id: &str, span: &Value) -> Value {
    let (_, body) = c.get(&format!("/api/traces/{trace_id}"));
    let v: Value = serde_json::from_str(&body).unwrap();
    let pid = span["processID"].as_str().unwrap();
    v["data"][0]["processes"][pid].clone()
}

#[test]
fn the_otel_sdks_zipkin_exporter_is_received_and_translated() {
    let c = Collector::start_in(meshtrace_testkit::scratch_path("zipkin"));
    let endpoint = format!("http://127.0.0.1:{}/api/v2/spans", c.zipkin_port);
    let (ids, stderr) = python_client("zipkin_send.py", &[&endpoint], b"");
    assert_eq!(
        ids["flushed"], true,
        "Zipkin exporter flush failed: {stderr}"
    );
    let trace_id = ids["trace_id"].as_str().unwrap();
    let spans = spans_of(&c, trace_id, 2);
    let by_id = |id: &Value| spans.iter().find(|s| s["spanID"] == *id).unwrap();
    let (parent, child) = (by_id(&ids["parent"]), by_id(&ids["child"]));
    assert_eq!(parent["operationName"], "GET /orders");
    assert_eq!(tag(parent, "span.kind"), Some("server".into()));
    assert_eq!(tag(child, "span.kind"), Some("client".into()));
    // Zipkin's tags are strings: the exporter wrote 4 as "4".
    assert_eq!(tag(parent, "orders"), Some("4".into()));
    assert_eq!(
        tag(parent, "authorization"),
        Some("[REDACTED]".into()),
        "credentials are redacted as on the OTLP path"
    );
    assert_eq!(
        parent["logs"][0]["fields"][0]["value"], "cache miss",
        "{parent}"
    );
    assert_eq!(
        tag(parent, "telemetry.sdk.language"),
        None,
        "the exporter's resource tags describe the process, not the span"
    );
    let process = &spans_process(&c, trace_id, parent);
    assert!(
        process.to_string().contains("telemetry.sdk.language"),
        "{process}"
    );
    assert_eq!(child["references"][0]["spanID"], ids["parent"]);
    assert_eq!(tag(child, "error"), Some(true.into()), "{child}");
    assert_eq!(
        tag(child, "otel.status_description"),
        Some("deadlock".into()),
        "{child}"
    );
    assert_eq!(
        tag(parent, "otel.scope.name"),
        Some("meshtrace-e2e-zipkin".into()),
        "the library tags name the scope"
    );
    let v = c.get_json_until("/api/services", |v| {
        v["data"]
            .as_array()
            .is_some_and(|s| s.contains(&json!("zipkin-client")))
    });
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .contains(&json!("zipkin-client")),
        "{v}"
    );
}

/// A protobuf varint.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited protobuf field.
fn field(tag: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint(tag << 3 | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// Zipkin's `ListOfSpans` with one server span of `service`, as zipkin.proto
/// encodes it: trace_id 1, id 3, kind 4, name 5, timestamp 6 (fixed64),
/// duration 7, local_endpoint 8, tags 11.
fn proto_list(trace: [u8; 16], id: [u8; 8], service: &str, now_us: u64) -> Vec<u8> {
    let mut span = Vec::new();
    field(1, &trace, &mut span);
    field(3, &id, &mut span);
    varint(4 << 3, &mut span);
    varint(2, &mut span); // SERVER
    field(5, b"proto op", &mut span);
    varint(6 << 3 | 1, &mut span);
    span.extend_from_slice(&now_us.to_le_bytes());
    varint(7 << 3, &mut span);
    varint(1500, &mut span);
    let mut endpoint = Vec::new();
    field(1, service.as_bytes(), &mut endpoint);
    field(8, &endpoint, &mut span);
    let mut entry = Vec::new();
    field(1, b"peer.service", &mut entry);
    field(2, b"inventory", &mut entry);
    field(11, &entry, &mut span);
    let mut list = Vec::new();
    field(1, &span, &mut list);
    list
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

#[test]
fn protobuf_and_gzip_bodies_are_received_and_bad_ones_named() {
    let c = Collector::start_in(meshtrace_testkit::scratch_path("zipkin-proto"));
    let port = c.zipkin_port;
    let body = proto_list([0xab; 16], [0xcd; 8], "proto-svc", now_us());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&body).unwrap();
    let gz = gz.finish().unwrap();
    let m = post_to(
        port,
        "/api/v2/spans",
        "application/x-protobuf",
        &[("content-encoding", "gzip")],
        &gz,
    )
    .unwrap();
    assert_eq!(m.status(), 202, "{}", String::from_utf8_lossy(&m.body));
    let spans = spans_of(&c, &"ab".repeat(16), 1);
    assert_eq!(spans[0]["operationName"], "proto op");
    assert_eq!(tag(&spans[0], "peer.service"), Some("inventory".into()));
    assert_eq!(spans[0]["duration"], 1500);

    let answer = |ct: &str, body: &[u8]| {
        let m = post_to(port, "/api/v2/spans", ct, &[], body).unwrap();
        (m.status(), String::from_utf8_lossy(&m.body).into_owned())
    };
    let (status, text) = answer("application/json", b"{\"not\": \"a list\"}");
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("not a Zipkin v2 JSON span list"), "{text}");
    let bad_id = json!([{"traceId": "xyz", "id": "6b221d5bc9e6496c", "timestamp": now_us()}]);
    let (status, text) = answer("application/json", bad_id.to_string().as_bytes());
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("span 0: traceId"), "{text}");
    let (status, text) = answer("application/x-protobuf", &[0x0a, 0xff, 0xff]);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("ListOfSpans"), "{text}");
    let (status, text) = answer("text/plain", b"[]");
    assert_eq!(status, 415, "{text}");
    // A span without a timestamp is rejected on its own; the others are kept.
    let mixed = json!([
        {"traceId": "00000000000000000000000000000c01", "id": "0000000000000c01", "name": "kept",
         "timestamp": now_us(), "duration": 10, "localEndpoint": {"serviceName": "mixed"}},
        {"traceId": "00000000000000000000000000000c01", "id": "0000000000000c02", "name": "no timestamp",
         "localEndpoint": {"serviceName": "mixed"}}
    ]);
    let (status, text) = answer("application/json", mixed.to_string().as_bytes());
    assert_eq!(status, 202, "{text}");
    assert!(text.contains("1 spans rejected"), "{text}");
    let spans = spans_of(&c, "00000000000000000000000000000c01", 1);
    assert_eq!(spans[0]["operationName"], "kept");
    let metrics = c.get("/metrics").1;
    assert!(
        meshtrace_testkit::collector::metric(&metrics, "meshtrace_collector_spans_rejected_total")
            >= 1,
        "{metrics}"
    );
}

#[test]
fn the_receiver_is_on_in_all_in_one_and_can_be_switched_off() {
    for (yaml, listening) in [
        (None, true),
        (Some("receivers:\n  zipkin:\n    enabled: false\n"), false),
    ] {
        let c = Collector::start_opts(
            meshtrace_testkit::scratch_path("zipkin-switch"),
            Opts {
                yaml: yaml.map(String::from),
                ..Default::default()
            },
        );
        assert_eq!(
            std::net::TcpStream::connect(("127.0.0.1", c.zipkin_port)).is_ok(),
            listening,
            "{yaml:?}:\n{}",
            c.log()
        );
    }
}

/// Zipkin v1 JSON from a real v1 sender (py_zipkin): a server span with
/// binary annotations and a client span with an `sa` address and an
/// annotation, posted to `/api/v1/spans`.
#[test]
fn py_zipkins_v1_json_is_received_on_the_v1_endpoint() {
    let c = Collector::start_in(meshtrace_testkit::scratch_path("zipkin-v1"));
    let endpoint = format!("http://127.0.0.1:{}/api/v1/spans", c.zipkin_port);
    let (ids, stderr) = python_client("zipkin_v1_send.py", &[&endpoint], b"");
    assert_eq!(ids["statuses"], json!([202]), "{stderr}");
    let trace_id = ids["trace_id"].as_str().unwrap();
    let spans = spans_of(&c, trace_id, 2);
    let by_id = |id: &Value| spans.iter().find(|s| s["spanID"] == *id).unwrap();
    let (server, client) = (by_id(&ids["server"]), by_id(&ids["client"]));
    assert_eq!(server["operationName"], "GET /v1");
    assert_eq!(tag(server, "span.kind"), Some("server".into()));
    assert_eq!(tag(server, "http.path"), Some("/v1".into()));
    assert_eq!(
        tag(server, "network.local.address"),
        Some("10.0.0.1".into())
    );
    assert_eq!(tag(client, "span.kind"), Some("client".into()));
    assert_eq!(
        tag(client, "peer.service"),
        Some("postgres".into()),
        "sa: {client}"
    );
    assert_eq!(tag(client, "network.peer.port"), Some(5432.into()));
    assert_eq!(client["references"][0]["spanID"], ids["server"]);
    assert_eq!(client["logs"][0]["fields"][0]["value"], "retry");
    assert_eq!(
        spans_process(&c, trace_id, server)["serviceName"],
        "v1-frontend"
    );
    // v1 Thrift is not taken: a 415 naming JSON.
    let m = post_to(
        c.zipkin_port,
        "/api/v1/spans",
        "application/x-thrift",
        &[],
        b"\x0c",
    )
    .unwrap();
    assert_eq!(m.status(), 415);
    assert!(String::from_utf8_lossy(&m.body).contains("application/json"));
}
