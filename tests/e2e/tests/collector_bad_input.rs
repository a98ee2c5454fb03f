//! Bad input to the real collector binary: each gets the right error, and the
//! collector keeps serving (checked after every case).

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_proto::otlp::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use meshtrace_proto::otlp::common::v1::{any_value, AnyValue};
use meshtrace_proto::otlp::trace::v1::Span;
use meshtrace_proto::prost::Message;
use meshtrace_testkit::collector::{grpc_raw, post, Collector};
use meshtrace_testkit::otlp::kv;

fn span(tid: Vec<u8>, sid: Vec<u8>, start: u64, end: u64) -> Span {
    Span {
        trace_id: tid,
        span_id: sid,
        name: "op".into(),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    meshtrace_testkit::otlp::request("bad-input", spans)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A valid export still works and the query API answers.
fn still_serving(c: &Collector, n: u8) {
    let t = now();
    let body = request(vec![span(
        vec![0xa0, n, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14],
        vec![1; 8],
        t,
        t + 1000,
    )])
    .encode_to_vec();
    let m = post(c.otlp_port, "application/x-protobuf", &[], &body).expect("collector answers");
    assert_eq!(m.status(), 200, "valid export after bad input #{n}");
    assert_eq!(c.get("/healthz").0, 200);
}

/// `response` reports `rejected` invalid spans (naming `trace_id`), and the one
/// valid span of the request, in trace `stored`, was kept.
fn assert_partial_success(c: &Collector, response: &[u8], rejected: i64, stored: &str) {
    let ps = ExportTraceServiceResponse::decode(response)
        .unwrap()
        .partial_success
        .expect("partial success");
    assert_eq!(ps.rejected_spans, rejected);
    assert!(
        ps.error_message.contains("trace_id"),
        "{}",
        ps.error_message
    );
    let v = c.get_json_until(&format!("/api/traces/{stored}"), |v| v["data"].is_array());
    assert_eq!(
        v["data"][0]["spans"].as_array().map(Vec::len),
        Some(1),
        "valid span stored"
    );
}

fn status_and_text(m: Option<meshtrace_testkit::http::Message>) -> (u16, String) {
    let m = m.expect("an answer, not a dropped connection");
    (m.status(), String::from_utf8_lossy(&m.body).into_owned())
}

/// Field `num` holding `body`, length-delimited.
fn length_delimited(num: u32, body: &[u8]) -> Vec<u8> {
    use meshtrace_proto::prost::encoding::{encode_key, encode_varint, WireType};
    let mut out = Vec::new();
    encode_key(num, WireType::LengthDelimited, &mut out);
    encode_varint(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

/// AnyValue nested `depth` times through kvlist values, built without recursion.
fn deeply_nested_attribute(depth: usize) -> Vec<u8> {
    let mut value = AnyValue {
        value: Some(any_value::Value::StringValue("leaf".into())),
    }
    .encode_to_vec();
    for _ in 0..depth {
        let mut kvb = length_delimited(1, b"k"); // KeyValue.key
        kvb.extend(length_delimited(2, &value)); // KeyValue.value
        let list = length_delimited(1, &kvb); // KeyValueList.values
        value = length_delimited(6, &list); // AnyValue.kvlist_value
    }
    value
}

/// A request whose one span has an attribute nested `depth` levels deep.
fn deeply_nested_request(depth: usize) -> Vec<u8> {
    let t = now();
    let nested = deeply_nested_attribute(depth);
    let mut attr = Vec::new();
    meshtrace_proto::prost::encoding::string::encode(1, &"deep".to_string(), &mut attr);
    meshtrace_proto::prost::encoding::encode_key(
        2,
        meshtrace_proto::prost::encoding::WireType::LengthDelimited,
        &mut attr,
    );
    meshtrace_proto::prost::encoding::encode_varint(nested.len() as u64, &mut attr);
    attr.extend_from_slice(&nested);
    let mut sp = span(vec![5; 16], vec![5; 8], t, t + 1).encode_to_vec();
    meshtrace_proto::prost::encoding::encode_key(
        9,
        meshtrace_proto::prost::encoding::WireType::LengthDelimited,
        &mut sp,
    );
    meshtrace_proto::prost::encoding::encode_varint(attr.len() as u64, &mut sp);
    sp.extend_from_slice(&attr);
    // Wrap: ScopeSpans.spans(2) → ResourceSpans.scope_spans(2) → request.resource_spans(1).
    length_delimited(1, &length_delimited(2, &length_delimited(2, &sp)))
}

#[test]
fn bad_input_gets_clear_errors_and_the_collector_keeps_serving() {
    let c = Collector::start_with_config("otlp:\n  max_message_bytes: 4194304\n");
    let t = now();
    let good = request(vec![span(vec![7; 16], vec![7; 8], t, t + 1000)]).encode_to_vec();

    // Truncated protobuf.
    let (s, msg) = status_and_text(post(
        c.otlp_port,
        "application/x-protobuf",
        &[],
        &good[..good.len() / 2],
    ));
    assert_eq!(s, 400, "{msg}");
    assert!(msg.contains("ExportTraceServiceRequest"), "{msg}");
    still_serving(&c, 1);

    // Random bytes (a fixed sequence that is not a valid message).
    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 | 0x07)
        .collect();
    let (s, msg) = status_and_text(post(c.otlp_port, "application/x-protobuf", &[], &random));
    assert_eq!(s, 400, "{msg}");
    still_serving(&c, 2);

    // Wrong content type.
    let (s, msg) = status_and_text(post(c.otlp_port, "text/plain", &[], b"hello"));
    assert_eq!(s, 415);
    assert!(msg.contains("application/x-protobuf"), "{msg}");
    still_serving(&c, 3);

    // Oversized body (limit 4 MiB here).
    let big = vec![0u8; 5 * 1024 * 1024];
    let (s, _) = status_and_text(post(c.otlp_port, "application/x-protobuf", &[], &big));
    assert_eq!(s, 413);
    still_serving(&c, 4);

    // Invalid ids and end before start: rejected one by one, the good span kept.
    let body = request(vec![
        span(vec![1, 2, 3], vec![1; 8], t, t + 1),
        span(vec![9; 16], vec![0; 8], t, t + 1),
        span(vec![9; 16], vec![9; 8], t + 10, t),
        span(vec![8; 16], vec![8; 8], t, t + 1),
    ])
    .encode_to_vec();
    let m = post(c.otlp_port, "application/x-protobuf", &[], &body).expect("an answer");
    assert_eq!(m.status(), 200);
    assert_partial_success(&c, &m.body, 3, "08080808080808080808080808080808");
    still_serving(&c, 5);

    // Spans dated outside the window (year 2200; older than the 7-day retention):
    // rejected with the reason, no partition opened for their days.
    let year_2200 = 7_258_118_400_000_000_000u64;
    let ten_days_ago = t - 10 * 86_400_000_000_000;
    let body = request(vec![
        span(vec![0xd1; 16], vec![1; 8], year_2200, year_2200 + 1),
        span(vec![0xd2; 16], vec![1; 8], ten_days_ago, ten_days_ago + 1),
        span(vec![0xd3; 16], vec![1; 8], t, t + 1),
    ])
    .encode_to_vec();
    let m = post(c.otlp_port, "application/x-protobuf", &[], &body).expect("an answer");
    assert_eq!(m.status(), 200);
    let ps = ExportTraceServiceResponse::decode(m.body.as_slice())
        .unwrap()
        .partial_success
        .expect("partial success");
    assert_eq!(ps.rejected_spans, 2, "{}", ps.error_message);
    assert!(
        ps.error_message.contains("in the future"),
        "{}",
        ps.error_message
    );
    for ns in [year_2200, ten_days_ago] {
        let day = ns / 86_400_000_000_000;
        let file = c.data_dir.join(format!("spans-{day:06}.sqlite"));
        assert!(!file.exists(), "{} was opened", file.display());
    }

    // 100k attributes on one span: stored, served back.
    let mut s100k = span(vec![6; 16], vec![6; 8], t, t + 1);
    s100k.attributes = (0..100_000).map(|i| kv(&format!("k{i}"), "v")).collect();
    let body = request(vec![s100k]).encode_to_vec();
    let (s, msg) = status_and_text(post(c.otlp_port, "application/x-protobuf", &[], &body));
    assert_eq!(s, 200, "{msg}");
    let (qs, qbody) = c.get("/api/traces/06060606060606060606060606060606");
    assert_eq!(qs, 200);
    assert!(qbody.contains("\"k99999\""));
    still_serving(&c, 6);

    // Deeply nested attribute values: refused by the decoder's recursion limit, not a crash.
    let body = deeply_nested_request(2000);
    let (s, msg) = status_and_text(post(c.otlp_port, "application/x-protobuf", &[], &body));
    assert_eq!(s, 400, "{msg}");
    assert!(msg.to_lowercase().contains("recursion"), "{msg}");
    still_serving(&c, 7);

    // The same in OTLP/JSON.
    let mut deep_json = String::from(r#"{"stringValue":"leaf"}"#);
    for _ in 0..2000 {
        deep_json =
            format!(r#"{{"kvlistValue":{{"values":[{{"key":"k","value":{deep_json}}}]}}}}"#);
    }
    let body = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"05050505050505050505050505050505","spanId":"0505050505050505","name":"x","attributes":[{{"key":"deep","value":{deep_json}}}]}}]}}]}}]}}"#
    );
    let (s, msg) = status_and_text(post(c.otlp_port, "application/json", &[], body.as_bytes()));
    assert_eq!(s, 400, "{msg}");
    assert!(msg.contains("OTLP/JSON"), "{msg}");
    still_serving(&c, 8);

    // Malformed JSON and gzip.
    let (s, _) = status_and_text(post(
        c.otlp_port,
        "application/json",
        &[],
        b"{\"resourceSpans\":[",
    ));
    assert_eq!(s, 400);
    let (s, msg) = status_and_text(post(
        c.otlp_port,
        "application/x-protobuf",
        &[("content-encoding", "gzip")],
        b"not gzip",
    ));
    assert_eq!(s, 400, "{msg}");
    assert!(msg.contains("gzip"), "{msg}");
    let (s, msg) = status_and_text(post(
        c.otlp_port,
        "application/x-protobuf",
        &[("content-encoding", "zstd")],
        b"not zstd",
    ));
    assert_eq!(s, 400, "{msg}");
    assert!(msg.contains("invalid zstd body"), "{msg}");
    let (s, msg) = status_and_text(post(
        c.otlp_port,
        "application/x-protobuf",
        &[("content-encoding", "br")],
        b"brotli",
    ));
    assert_eq!(s, 415, "{msg}");
    assert!(msg.contains("\"br\" is not supported"), "{msg}");
    still_serving(&c, 9);
}

/// The same bad input over OTLP gRPC, sent by a real gRPC client (grpcio).
#[test]
fn bad_grpc_input_gets_invalid_argument_and_the_collector_keeps_serving() {
    const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    let c = Collector::start_with_config("otlp:\n  max_message_bytes: 1048576\n");
    let t = now();
    let good = request(vec![span(vec![7; 16], vec![7; 8], t, t + 1000)]).encode_to_vec();
    let grpc = |msg: &[u8]| grpc_raw(c.grpc_port, EXPORT, msg);

    let (code, details, _) = grpc(&good[..good.len() / 2]);
    assert_eq!(code, "INVALID_ARGUMENT", "truncated: {details}");
    assert!(details.contains("ExportTraceServiceRequest"), "{details}");
    still_serving(&c, 1);

    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 | 0x07)
        .collect();
    let (code, details, _) = grpc(&random);
    assert_eq!(code, "INVALID_ARGUMENT", "random bytes: {details}");
    still_serving(&c, 2);

    let (code, details, _) = grpc(&deeply_nested_request(2000));
    assert_eq!(code, "INVALID_ARGUMENT", "deep nesting: {details}");
    still_serving(&c, 3);

    let (code, details, _) = grpc(&vec![0u8; 2 * 1024 * 1024]);
    assert_eq!(code, "RESOURCE_EXHAUSTED", "oversized, final: {details}");
    assert!(details.contains("too large"), "{details}");
    still_serving(&c, 4);

    let body = request(vec![
        span(vec![1, 2, 3], vec![1; 8], t, t + 1),
        span(vec![4; 16], vec![4; 8], t, t + 1),
    ])
    .encode_to_vec();
    let (code, details, resp) = grpc(&body);
    assert_eq!(code, "OK", "{details}");
    assert_partial_success(&c, &resp, 1, "04040404040404040404040404040404");

    let (code, details, _) = grpc_raw(
        c.grpc_port,
        "/opentelemetry.proto.collector.trace.v1.TraceService/Nope",
        &good,
    );
    assert_eq!(code, "UNIMPLEMENTED", "{details}");
    let (code, details, _) = grpc(&good);
    assert_eq!(code, "OK", "{details}");
    still_serving(&c, 5);
}

#[test]
fn otlp_json_with_hex_ids_is_accepted() {
    let c = Collector::start();
    let t = now();
    let body = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"json-svc"}}}}]}},
        "scopeSpans":[{{"spans":[{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","parentSpanId":"eee19b7ec3c1b173",
        "name":"GET /json","kind":2,"startTimeUnixNano":"{t}","endTimeUnixNano":"{}",
        "attributes":[{{"key":"http.response.status_code","value":{{"intValue":"200"}}}}]}}]}}]}}]}}"#,
        t + 5_000_000
    );
    let (s, msg) = status_and_text(post(c.otlp_port, "application/json", &[], body.as_bytes()));
    assert_eq!(s, 200, "{msg}");
    assert!(msg.starts_with('{'), "JSON answer: {msg}");
    let v = c.get_json_until("/api/traces/5b8efff798038103d269b633813fc60c", |v| {
        v["data"].is_array()
    });
    let sp = &v["data"][0]["spans"][0];
    assert_eq!(sp["spanID"], "eee19b7ec3c1b174");
    assert_eq!(sp["references"][0]["spanID"], "eee19b7ec3c1b173");
    assert_eq!(sp["duration"], 5000);
}

#[test]
fn full_queue_answers_retry_later_and_drops_nothing_acknowledged() {
    let c = Collector::start_with_config("queue:\n  queue_size: 1\n  max_batch_requests: 1\n");
    let port = c.otlp_port;
    let t = now();
    let results: Vec<(u16, Option<String>, u8, u32)> = (0..12u8)
        .map(|th| {
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for i in 0..30u32 {
                    let mut tid = vec![0xb0, th];
                    tid.extend_from_slice(&[0; 10]);
                    tid.extend_from_slice(&i.to_be_bytes());
                    let spans = (1..=50u64)
                        .map(|s| span(tid.clone(), s.to_be_bytes().to_vec(), t, t + 1))
                        .collect();
                    let m = post(
                        port,
                        "application/x-protobuf",
                        &[],
                        &request(spans).encode_to_vec(),
                    )
                    .expect("answer");
                    out.push((m.status(), m.header("retry-after"), th, i));
                }
                out
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    let acked: Vec<_> = results.iter().filter(|r| r.0 == 200).collect();
    assert_eq!(
        refused.len() + acked.len(),
        results.len(),
        "only 200 or 503"
    );
    assert!(
        !refused.is_empty(),
        "a one-slot queue under 12 senders must push back"
    );
    assert!(
        refused.iter().all(|r| r.1.as_deref() == Some("1")),
        "503 carries Retry-After"
    );
    for (_, _, th, i) in acked {
        let id = format!("b0{th:02x}00000000000000000000{i:08x}");
        let v = c.get_json_until(&format!("/api/traces/{id}"), |v| v["data"].is_array());
        assert_eq!(
            v["data"][0]["spans"].as_array().map(Vec::len),
            Some(50),
            "acknowledged trace {id} stored whole"
        );
    }
    // Every refusal is counted once: a request refused before it was decoded
    // (a full queue, seen from its size) as an export, one refused after as its
    // 50 spans.
    let (_, metrics) = c.get("/metrics");
    let spans_refused =
        meshtrace_testkit::collector::metric(&metrics, "meshtrace_collector_spans_refused_total");
    let undecoded = meshtrace_testkit::collector::metric(
        &metrics,
        "meshtrace_collector_exports_refused_undecoded_total",
    );
    assert_eq!(spans_refused % 50, 0, "{metrics}");
    assert_eq!(
        spans_refused / 50 + undecoded,
        refused.len() as u64,
        "{metrics}"
    );
}
