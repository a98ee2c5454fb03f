//! api_v3 answers against the real SQLite store, compared with golden files
//! (`UPDATE_GOLDEN=1` rewrites them; review the diff).

use super::*;
use crate::ingest::records_from_request;
use crate::query::{answer::Budget, router};
use crate::store::sqlite::SqliteStore;
use crate::store::SpanWriter;
use axum::body::Body;
use axum::http::Request;
use meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use meshtrace_proto::otlp::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use meshtrace_proto::otlp::resource::v1::Resource;
use meshtrace_proto::otlp::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use tower::ServiceExt;

/// 2026-12-01T10:00:00Z in nanoseconds.
const T0: u64 = 1_796_119_200_000_000_000;

use crate::store::suite::kv;

fn span(
    id: u8,
    parent: Option<u8>,
    name: &str,
    kind: i32,
    start_ms: u64,
    end_ms: u64,
    error: bool,
) -> Span {
    Span {
        trace_id: vec![0xab; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.into(),
        kind,
        start_time_unix_nano: T0 + start_ms * 1_000_000,
        end_time_unix_nano: T0 + end_ms * 1_000_000,
        attributes: vec![kv("http.request.method", "GET")],
        status: error.then(|| Status {
            code: status::StatusCode::Error as i32,
            message: "boom".into(),
        }),
        ..Default::default()
    }
}

fn resource_spans(service: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", service)],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "meshtrace".into(),
                version: "0.1.0".into(),
                ..Default::default()
            }),
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// frontend GET / (root) → frontend client call → checkout POST /orders (fails),
/// and a span whose parent never arrived.
fn fixture_request() -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![
            resource_spans(
                "frontend",
                vec![
                    span(1, None, "GET /", 2, 0, 100, false),
                    span(2, Some(1), "POST checkout", 3, 10, 90, true),
                ],
            ),
            resource_spans(
                "checkout",
                vec![
                    span(3, Some(2), "POST /orders", 2, 20, 80, true),
                    span(4, Some(9), "late", 1, 30, 40, false),
                ],
            ),
        ],
    }
}

/// The fixture in a real SQLite store.
fn fixture() -> (tempfile::TempDir, QueryState) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path(), Default::default()).unwrap());
    let records = records_from_request(fixture_request(), &[], None, None).records;
    store.write(&records).unwrap();
    let st = QueryState {
        archive: None,
        store,
        metrics: None,
        sampling: None,
        budget: Budget::new(100, 1000, 2, None),
    };
    (dir, st)
}

async fn get(st: &QueryState, uri: &str) -> (u16, serde_json::Value) {
    let resp = router(st.clone())
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 24)
        .await
        .unwrap();
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{uri}: {e}: {}", String::from_utf8_lossy(&body)));
    (status, v)
}

fn golden(name: &str, got: &serde_json::Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/query/v3/golden")
        .join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(got).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(text, want, "{name} differs from {}", path.display());
}

const WINDOW: &str =
    "query.start_time_min=2026-12-01T09:59:00Z&query.start_time_max=2026-12-01T12:00:00%2B01:00";

#[tokio::test]
async fn answers_match_jaegers_shapes() {
    let (_d, st) = fixture();
    let (s, v) = get(&st, "/api/v3/services").await;
    assert_eq!(s, 200);
    golden("services", &v);
    let (s, v) = get(&st, "/api/v3/operations?service=frontend").await;
    assert_eq!(s, 200);
    golden("operations", &v);
    let (_, v) = get(&st, "/api/v3/operations?service=frontend&span_kind=client").await;
    assert_eq!(v["operations"].as_array().unwrap().len(), 1, "{v}");
    let id = "abababababababababababababababab";
    let (s, v) = get(&st, &format!("/api/v3/traces/{id}")).await;
    assert_eq!(s, 200);
    golden("get_trace", &v);
    // Decimal-string nanoseconds, hex ids, numeric kind and status code.
    let first = &v["result"]["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(first["traceId"], id);
    assert_eq!(first["startTimeUnixNano"], T0.to_string());
    assert!(
        first.get("status").is_none(),
        "an unset status is left out, not null"
    );
    let (s, v) = get(
        &st,
        &format!("/api/v3/traces?query.service_name=frontend&{WINDOW}"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    golden("find_traces", &v);
    let (s, v) = get(
        &st,
        &format!("/api/v3/trace-summaries?query.service_name=frontend&{WINDOW}"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    golden("trace_summaries", &v);
    // Attributes narrow the search as v1's tags do.
    let (s, v1) = get(&st, &format!("/api/v3/trace-summaries?query.service_name=frontend&{WINDOW}&query.attributes=%7B%22http.request.method%22%3A%22GET%22%7D")).await;
    assert_eq!(
        (s, v1["summaries"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{v1}"
    );
    let (s, v2) = get(&st, &format!("/api/v3/trace-summaries?query.service_name=frontend&{WINDOW}&query.attributes=%7B%22http.request.method%22%3A%22PUT%22%7D")).await;
    assert_eq!(s, 200, "{v2}");
    assert_eq!(
        v2["summaries"],
        serde_json::json!([]),
        "no trace has a PUT span"
    );
    let sum = &v["summaries"][0];
    assert_eq!(sum["rootServiceName"], "frontend");
    assert_eq!(sum["rootOperationName"], "GET /");
    assert_eq!(
        (
            sum["spanCount"].as_u64(),
            sum["errorSpanCount"].as_u64(),
            sum["orphanSpanCount"].as_u64()
        ),
        (Some(4), Some(2), Some(1))
    );
}

#[tokio::test]
async fn errors_in_jaegers_gateway_shape() {
    let (_d, st) = fixture();
    for (uri, status, needle) in [
        ("/api/v3/traces/xyz", 400, "malformed parameter trace_id"),
        ("/api/v3/traces/00000000000000000000000000000001", 404, "No traces found"),
        ("/api/v3/traces?query.service_name=frontend", 400, "query.startTimeMin and query.startTimeMax are required"),
        ("/api/v3/traces?query.service_name=frontend&query.start_time_min=yesterday&query.start_time_max=2026-12-01T11:00:00Z", 400, "malformed parameter query.start_time_min"),
        ("/api/v3/traces?query.service_name=frontend&query.start_time_min=2026-12-01T09:00:00Z&query.start_time_max=2026-12-01T11:00:00Z&query.duration_min=fast", 400, "malformed parameter query.duration_min"),
        ("/api/v3/traces?query.service_name=frontend&query.start_time_min=2026-12-01T09:00:00Z&query.start_time_max=2026-12-01T11:00:00Z&query.search_depth=x", 400, "malformed parameter query.search_depth"),
        ("/api/v3/traces?query.service_name=nobody&query.start_time_min=2026-12-01T09:00:00Z&query.start_time_max=2026-12-01T11:00:00Z", 404, "No traces found"),
        ("/api/v3/operations", 400, "malformed parameter service"),
        ("/api/v3/traces?query.service_name=frontend&query.start_time_min=2026-12-01T09:00:00Z&query.start_time_max=2026-12-01T11:00:00Z&query.attributes=%5B1%5D", 400, "malformed parameter query.attributes"),
    ] {
        let (s, v) = get(&st, uri).await;
        assert_eq!(s, status, "{uri}: {v}");
        assert_eq!(v["error"]["httpCode"], status, "{uri}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(needle), "{uri}: {v}");
    }
}

/// Grafana's Jaeger data source in its api_v3 mode (`pkg/tsdb/jaeger/grpc_client.go`,
/// types in `pkg/tsdb/jaeger/types/grpc_types.go`), mirrored: the requests as it
/// builds them and the answers decoded into its types, field names and Go types
/// (Go's decoder ignores unknown fields and fails on a type mismatch; so does this).
mod grafana {
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Services {
        pub services: Vec<String>,
    }
    #[derive(Deserialize)]
    pub struct Operations {
        pub operations: Vec<Operation>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Operation {
        pub name: String,
        pub span_kind: String,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    pub struct Traces {
        pub result: Result_,
        pub error: StreamError,
    }
    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    pub struct StreamError {
        pub http_code: i64,
        pub message: String,
    }
    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    pub struct Result_ {
        pub resource_spans: Vec<ResourceSpans>,
    }
    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    pub struct ResourceSpans {
        pub resource: Resource,
        pub scope_spans: Vec<ScopeSpans>,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    pub struct Resource {
        pub attributes: Vec<KeyValue>,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    pub struct ScopeSpans {
        pub scope: Scope,
        pub spans: Vec<Span>,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    pub struct Scope {
        pub name: String,
        pub version: String,
    }
    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    pub struct Span {
        pub trace_id: String,
        pub span_id: String,
        pub trace_state: String,
        pub parent_span_id: String,
        pub flags: i64,
        pub name: String,
        pub kind: i64,
        pub start_time_unix_nano: String,
        pub end_time_unix_nano: String,
        pub attributes: Vec<KeyValue>,
        pub events: Vec<SpanEvent>,
        pub links: Vec<serde_json::Value>,
        pub status: Status,
    }
    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    pub struct SpanEvent {
        pub time_unix_nano: String,
        pub name: String,
        pub attributes: Vec<KeyValue>,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    pub struct Status {
        pub message: String,
        pub code: i64,
    }
    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    pub struct KeyValue {
        pub key: String,
        pub value: AnyValue,
    }
    /// As Grafana declares it today (`pkg/tsdb/jaeger/types/grpc_types.go`):
    /// every scalar a string. Jaeger's gateway (and meshtrace) write OTLP JSON,
    /// where `boolValue` and `doubleValue` are JSON booleans and numbers, so
    /// Grafana's v3 mode cannot read a trace that has either.
    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    pub struct AnyValue {
        pub string_value: String,
        pub bool_value: String,
        pub int_value: String,
        pub double_value: String,
        pub bytes_value: String,
    }
}

#[tokio::test]
async fn grafanas_jaeger_data_source_in_v3_mode_reads_the_answers() {
    let (_d, st) = fixture();
    let decode = |what: &str, v: serde_json::Value| -> serde_json::Value {
        assert!(v.is_object(), "{what}: {v}");
        v
    };
    let (s, v) = get(&st, "/api/v3/services").await;
    assert_eq!(s, 200);
    let services: grafana::Services = serde_json::from_value(decode("services", v)).unwrap();
    assert_eq!(services.services, ["checkout", "frontend"]);
    // GrpcOperations: `service` (not `query.service_name`), names only.
    let (s, v) = get(&st, "/api/v3/operations?service=frontend").await;
    assert_eq!(s, 200);
    let ops: grafana::Operations = serde_json::from_value(v).unwrap();
    let names: Vec<(&str, &str)> = ops
        .operations
        .iter()
        .map(|o| (o.name.as_str(), o.span_kind.as_str()))
        .collect();
    assert_eq!(names, [("GET /", "server"), ("POST checkout", "client")]);
    // GrpcSearch: service, operation, the logfmt tags as a JSON object and the
    // durations encoded; then the two times appended unencoded, RFC 3339 with
    // nanoseconds (a `+` offset arrives as a space).
    let search = "/api/v3/traces?query.attributes=%7B%22http.request.method%22%3A%22GET%22%7D\
        &query.duration_min=50ms&query.operation_name=GET+%2F&query.service_name=frontend\
        &query.start_time_min=2026-12-01T10:59:00.000000001+01:00\
        &query.start_time_max=2026-12-01T10:01:00.123456789Z";
    let (s, v) = get(&st, search).await;
    assert_eq!(s, 200, "{v}");
    let found: grafana::Traces = serde_json::from_value(v).unwrap();
    assert_eq!(found.error.http_code, 0);
    let spans: Vec<&grafana::Span> = found
        .result
        .resource_spans
        .iter()
        .flat_map(|r| r.scope_spans.iter().flat_map(|s| s.spans.iter()))
        .collect();
    assert_eq!(spans.len(), 4, "the whole trace");
    // GrpcTrace with "trace id time params" on: `start_time` and `end_time`, unencoded.
    let id = "abababababababababababababababab";
    let (s, v) = get(
        &st,
        &format!("/api/v3/traces/{id}?start_time=2026-12-01T09:00:00.5Z&end_time=2026-12-01T11:00:00+01:00"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let trace: grafana::Traces = serde_json::from_value(v).unwrap();
    let rs = &trace.result.resource_spans;
    let service = |r: &grafana::ResourceSpans| {
        r.resource
            .attributes
            .iter()
            .find(|kv| kv.key == "service.name")
            .map(|kv| kv.value.string_value.clone())
    };
    assert_eq!(service(&rs[0]).as_deref(), Some("frontend"));
    let root = &rs[0].scope_spans[0].spans[0];
    assert_eq!(
        (
            root.trace_id.as_str(),
            root.span_id.as_str(),
            root.parent_span_id.as_str()
        ),
        (id, "0101010101010101", "")
    );
    assert_eq!(
        (root.kind, root.start_time_unix_nano.clone()),
        (2, T0.to_string())
    );
    assert_eq!(rs[0].scope_spans[0].scope.name, "meshtrace");
    let failed = &rs[0].scope_spans[0].spans[1];
    assert_eq!(
        (failed.status.code, failed.status.message.as_str()),
        (2, "boom")
    );
    // A trace it does not have: a status Grafana reports as the request failing.
    let (s, v) = get(&st, "/api/v3/traces/00000000000000000000000000000001").await;
    let missing: grafana::Traces = serde_json::from_value(v).unwrap();
    assert_eq!((s, missing.error.http_code), (404, 404));
}

/// A store holding one trace whose root carries `extra` attributes.
fn store_with(extra: Vec<KeyValue>) -> (tempfile::TempDir, QueryState) {
    let (dir, st) = fixture();
    let mut root = span(7, None, "GET /typed", 2, 0, 10, false);
    root.trace_id = vec![0xcd; 16];
    root.attributes.extend(extra);
    let req = ExportTraceServiceRequest {
        resource_spans: vec![resource_spans("typed", vec![root])],
    };
    let store = SqliteStore::open(dir.path(), Default::default()).unwrap();
    store
        .write(&records_from_request(req, &[], None, None).records)
        .unwrap();
    (dir, st)
}

fn typed(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

#[tokio::test]
async fn grafanas_v3_mode_reads_string_and_int_attributes_only() {
    let id = "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd";
    // Strings and ints: Grafana's types read it.
    let (_d, st) = store_with(vec![typed(
        "http.response.status_code",
        any_value::Value::IntValue(200),
    )]);
    let (s, v) = get(&st, &format!("/api/v3/traces/{id}")).await;
    assert_eq!(s, 200, "{v}");
    let t: grafana::Traces = serde_json::from_value(v).unwrap();
    let attrs = &t.result.resource_spans[0].scope_spans[0].spans[0].attributes;
    assert!(attrs
        .iter()
        .any(|a| a.key == "http.response.status_code" && a.value.int_value == "200"));
    // A double (every probabilistically sampled mesh span: `sampler.param`) or a
    // bool: OTLP JSON writes a number / a boolean, as Jaeger's gateway does, and
    // Grafana's string fields refuse it. Kept as Jaeger writes it; the README says
    // to use Grafana's v1 mode (or the Jaeger UI, or meshtrace's) for such traces.
    for (key, value, json) in [
        ("sampler.param", any_value::Value::DoubleValue(0.1), "0.1"),
        ("cache.hit", any_value::Value::BoolValue(true), "true"),
    ] {
        let (_d, st) = store_with(vec![typed(key, value)]);
        let (s, v) = get(&st, &format!("/api/v3/traces/{id}")).await;
        assert_eq!(s, 200);
        assert!(v.to_string().contains(&format!(":{json}}}")), "{v}");
        assert!(
            serde_json::from_value::<grafana::Traces>(v).is_err(),
            "{key}: Grafana's types refuse it"
        );
        // Grafana's v1 mode reads the same trace (Jaeger's v1 JSON types every tag).
        let (s, v1) = get(&st, &format!("/api/traces/{id}")).await;
        assert_eq!(s, 200, "{v1}");
        let tags = v1["data"][0]["spans"][0]["tags"].as_array().unwrap();
        assert!(tags.iter().any(|t| t["key"] == key), "{v1}");
    }
}

/// The requests the current Jaeger UI (`packages/jaeger-ui/src/api/v3/client.ts`)
/// and Jaeger's own gateway parameter names (`cmd/query/app/apiv3/http_gateway.go`:
/// canonical camelCase, deprecated snake_case aliases) send, exactly.
#[tokio::test]
async fn the_current_jaeger_ui_and_the_gateways_canonical_names_find_the_traces() {
    let (_d, st) = fixture();
    let (min, max) = ("2026-12-01T09:00:00.000Z", "2026-12-01T11:00:00.000Z");
    let found = |v: &serde_json::Value| -> usize {
        v["result"]["resourceSpans"].as_array().map_or(0, |r| {
            r.iter()
                .flat_map(|r| r["scopeSpans"].as_array().unwrap())
                .map(|s| s["spans"].as_array().unwrap().len())
                .sum()
        })
    };
    // The Jaeger UI's search (URLSearchParams: `+` for spaces, `:` encoded).
    let ui = format!(
        "/api/v3/trace-summaries?query.service_name=frontend&query.span_name=GET+%2F&query.start_time_min={}&query.start_time_max={}&query.num_traces=20",
        min.replace(':', "%3A"),
        max.replace(':', "%3A")
    );
    let (s, v) = get(&st, &ui).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["summaries"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["summaries"][0]["rootOperationName"], "GET /");
    // The gateway's canonical names, every parameter.
    let canonical = format!(
        "/api/v3/traces?query.serviceName=frontend&query.operationName=GET+%2F&query.startTimeMin={min}&query.startTimeMax={max}&query.searchDepth=20&query.durationMin=1ms&query.durationMax=1h&query.rawTraces=true"
    );
    let (s, v) = get(&st, &canonical).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(found(&v), 4, "the whole trace");
    // The same search with every deprecated alias: the same answer.
    let aliases = format!(
        "/api/v3/traces?query.service_name=frontend&query.operation_name=GET+%2F&query.start_time_min={min}&query.start_time_max={max}&query.search_depth=20&query.duration_min=1ms&query.duration_max=1h&query.raw_traces=true"
    );
    let (s, v2) = get(&st, &aliases).await;
    assert_eq!((s, found(&v2)), (200, 4));
    // A duration filter that excludes the root: nothing.
    let (s, _) = get(&st, &canonical.replace("durationMin=1ms", "durationMin=1s")).await;
    assert_eq!(s, 404);
    // GetTrace with the canonical time range and rawTraces.
    let id = "abababababababababababababababab";
    let (s, v) = get(
        &st,
        &format!("/api/v3/traces/{id}?startTime={min}&endTime={max}&rawTraces=true"),
    )
    .await;
    assert_eq!((s, found(&v)), (200, 4));
    let (s, v) = get(&st, &format!("/api/v3/traces/{id}?startTime=yesterday")).await;
    assert_eq!(s, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("startTime"),
        "{v}"
    );
    // GetOperations with spanKind (was ignored): the name or the enum.
    for (kind, want) in [
        ("spanKind=server", vec!["GET /"]),
        ("spanKind=SPAN_KIND_CLIENT", vec!["POST checkout"]),
        ("span_kind=client", vec!["POST checkout"]),
        ("", vec!["GET /", "POST checkout"]),
    ] {
        let (s, v) = get(&st, &format!("/api/v3/operations?service=frontend&{kind}")).await;
        assert_eq!(s, 200, "{v}");
        let names: Vec<&str> = v["operations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, want, "{kind}");
    }
    let (s, v) = get(&st, "/api/v3/operations?service=frontend&spanKind=sideways").await;
    assert_eq!(s, 400);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("spanKind"),
        "{v}"
    );
    // One parameter given twice, differently: refused by name (the same twice is fine).
    let (s, v) = get(&st, &format!("/api/v3/traces?query.serviceName=frontend&query.serviceName=checkout&query.startTimeMin={min}&query.startTimeMax={max}")).await;
    assert_eq!(s, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("query.serviceName"),
        "{v}"
    );
    let (s, _) = get(&st, &format!("/api/v3/traces?query.serviceName=frontend&query.serviceName=frontend&query.startTimeMin={min}&query.startTimeMax={max}")).await;
    assert_eq!(s, 200);
}

#[test]
fn rfc3339_with_fractions_and_offsets() {
    let z = parse_rfc3339_us("2026-12-01T10:00:00Z").unwrap();
    assert_eq!(z, (T0 / 1000) as i64);
    assert_eq!(
        parse_rfc3339_us("2026-12-01T10:00:00.5Z").unwrap(),
        z + 500_000
    );
    assert_eq!(parse_rfc3339_us("2026-12-01T12:00:00+02:00").unwrap(), z);
    assert_eq!(parse_rfc3339_us("2026-12-01T05:30:00-04:30").unwrap(), z);
    assert_eq!(
        parse_rfc3339_us("2026-12-01T12:00:00 02:00").unwrap(),
        z,
        "+ sent unencoded"
    );
    assert!(parse_rfc3339_us("yesterday").is_err());
}

#[tokio::test]
async fn critical_path_of_a_stored_trace() {
    let (_d, st) = fixture();
    let (s, v) = get(
        &st,
        "/api/analysis/critical-path/abababababababababababababababab",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let ms = |k: &serde_json::Value| (k.as_str().unwrap().parse::<u64>().unwrap() - T0) / 1_000_000;
    let path: Vec<(String, u64, u64)> = v["criticalPath"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["spanId"].as_str().unwrap()[..2].to_string(),
                ms(&p["startTimeUnixNano"]),
                ms(&p["endTimeUnixNano"]),
            )
        })
        .collect();
    // By hand: the root until its client call, the call until the server span, the
    // server span, back in the call, back in the root.
    assert_eq!(
        path,
        vec![
            ("01".into(), 0, 10),
            ("02".into(), 10, 20),
            ("03".into(), 20, 80),
            ("02".into(), 80, 90),
            ("01".into(), 90, 100)
        ]
    );
    assert_eq!(v["durationNs"], 100_000_000);
    assert!(
        v["warnings"].to_string().contains("missing_parent"),
        "the orphan is reported: {}",
        v["warnings"]
    );
    let (s, _) = get(
        &st,
        "/api/analysis/critical-path/00000000000000000000000000000001",
    )
    .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn hotspots_rank_pairs_by_critical_path_time_as_computed_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path(), Default::default()).unwrap());
    // Two traces: frontend GET / 0..T calls checkout POST /orders 10..T-10, which
    // calls inventory GET /stock 30..T-30; the second is 100 ms slower in inventory.
    for (n, extra) in [(1u8, 0u64), (2, 100)] {
        let s = |id: u8, parent: Option<u8>, name: &str, a: u64, b: u64| {
            let mut x = span(id, parent, name, 2, a, b, false);
            x.trace_id = vec![n; 16];
            x
        };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![
                resource_spans("frontend", vec![s(1, None, "GET /", 0, 100 + extra)]),
                resource_spans(
                    "checkout",
                    vec![s(2, Some(1), "POST /orders", 10, 90 + extra)],
                ),
                resource_spans(
                    "inventory",
                    vec![s(3, Some(2), "GET /stock", 30, 70 + extra)],
                ),
            ],
        };
        store
            .write(&records_from_request(req, &[], None, None).records)
            .unwrap();
    }
    let st = QueryState {
        archive: None,
        store,
        metrics: None,
        sampling: None,
        budget: Budget::new(100, 1000, 2, None),
    };
    let start = T0 / 1000 - 1_000_000;
    let (s, v) = get(
        &st,
        &format!(
            "/api/analysis/hotspots?service=frontend&start={start}&end={}",
            start + 10_000_000
        ),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["traces"], 2);
    let ranked: Vec<(String, i64)> = v["hotspots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["service"].as_str().unwrap().to_string(),
                h["criticalNs"].as_i64().unwrap() / 1_000_000,
            )
        })
        .collect();
    // By hand (ms): inventory 40 + 140, checkout (20 + 20) × 2, frontend (10 + 10) × 2.
    assert_eq!(
        ranked,
        vec![
            ("inventory".into(), 180),
            ("checkout".into(), 80),
            ("frontend".into(), 40)
        ]
    );
    assert_eq!(
        v["hotspots"][0]["examples"][0][0],
        "02020202020202020202020202020202"
    );
    let (s, v) = get(&st, "/api/analysis/hotspots").await;
    assert_eq!(s, 400, "{v}");
    // The traces picked in search results: only the slower one (given twice, and an
    // unknown id), its inventory 140 ms on the critical path.
    let (s, v) = get(
        &st,
        "/api/analysis/hotspots?traceID=02020202020202020202020202020202&traceID=02020202020202020202020202020202&traceID=0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["traces"], 1, "{v}");
    assert_eq!(v["hotspots"][0]["service"], "inventory");
    assert_eq!(
        v["hotspots"][0]["criticalNs"].as_i64().unwrap() / 1_000_000,
        140
    );
    let (s, v) = get(&st, "/api/analysis/hotspots?traceID=nothex").await;
    assert_eq!(s, 400, "{v}");
}

#[tokio::test]
async fn diff_of_two_stored_traces() {
    let (_d, st) = fixture();
    let id = "abababababababababababababababab";
    let (s, v) = get(&st, &format!("/api/analysis/diff?a={id}&b={id}")).await;
    assert_eq!(s, 200, "{v}");
    let nodes = v["nodes"].as_array().unwrap();
    assert!(!nodes.is_empty());
    assert!(
        nodes
            .iter()
            .all(|n| n["presence"] == "both" && n["delta"] == 0),
        "{v}"
    );
    let (s, _) = get(&st, &format!("/api/analysis/diff?a={id}")).await;
    assert_eq!(s, 400);
    let (s, _) = get(&st, &format!("/api/analysis/diff?a={id}&b=01")).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn the_service_map_over_a_window_from_the_edge_history() {
    use crate::metrics::graph::GraphSettings;
    use crate::metrics::{MetricsSettings, SpanMetrics};
    use crate::store::history::HistoryDb;
    let (dir, mut st) = fixture();
    let metrics = Arc::new(SpanMetrics::new(
        MetricsSettings {
            bounds_ms: vec![10.0, 100.0],
            max_series: 100,
            graph: GraphSettings {
                max_edges: 10,
                wait_ms: 10_000,
                max_pending: 100,
            },
            history_retention_s: 3600,
        },
        Some(HistoryDb::open(dir.path(), &[10.0, 100.0]).unwrap()),
    ));
    // The fixture's spans, counted: frontend's client span is the parent of
    // checkout's server span (failed): one request on frontend → checkout.
    let all = st.store.traces(&[[0xab; 16]]).unwrap();
    assert_eq!(all.len(), 1);
    // (The span whose parent never arrived is INTERNAL: it pairs with nothing.)
    metrics.record(&records_from_request(fixture_request(), &[], None, None).records);
    st.metrics = Some(metrics);
    let (s, v) = get(&st, "/api/analysis/service-map?lookback=1h").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["services"], serde_json::json!(["checkout", "frontend"]));
    let e = &v["edges"][0];
    assert_eq!(
        (e["client"].as_str(), e["server"].as_str()),
        (Some("frontend"), Some("checkout"))
    );
    assert_eq!(
        (e["requests"].as_u64(), e["failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(e["errorRate"], 1.0);
    // One 60 ms server span in the (10, 100] bucket: p95 interpolates to 95.5 ms.
    assert!((e["p95Ms"].as_f64().unwrap() - 95.5).abs() < 1e-9, "{e}");
    let (s, _) = get(&st, "/api/analysis/service-map?lookback=soon").await;
    assert_eq!(s, 400);
}

/// Issue 21, finding 8: the sampling page looped over every service on a
/// runtime thread, with no slot (100,000 services: 1.4 s; with adaptive
/// sampling on `*`, 12 s of CPU). Now it is one read like the others: off the
/// runtime, in a slot, charged in bytes (a small budget refuses it by name),
/// and linear in services (server rows summed once, not scanned per service).
#[tokio::test]
async fn the_sampling_page_over_20000_services_is_a_bounded_read() {
    use crate::sampling::adaptive::{Adaptive, Settings};
    use crate::sampling::{Provider, Strategies};
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path(), Default::default()).unwrap());
    let n = 20_000usize;
    let req = ExportTraceServiceRequest {
        resource_spans: (0..n)
            .map(|i| {
                let mut s = span((i % 250 + 1) as u8, None, "GET /", 2, 0, 1, false);
                s.trace_id = (i as u128 + 1).to_be_bytes().to_vec();
                resource_spans(&format!("svc-{i:05}"), vec![s])
            })
            .collect(),
    };
    store
        .write(&records_from_request(req, &[], None, None).records)
        .unwrap();
    let metrics = Arc::new(crate::telemetry::SamplingMetrics::default());
    let adaptive = Arc::new(Adaptive::new(
        Settings {
            services: vec!["*".into()],
            target_traces_per_second: 1.0,
            min_sampling_probability: 0.0001,
            lower_bound_traces_per_minute: 1.0,
            interval: std::time::Duration::from_secs(60),
            smoothing: 0.5,
            max_operations_per_service: 100,
        },
        metrics.clone(),
    ));
    let provider = Arc::new(Provider::Local {
        strategies: Arc::new(Strategies::open(None, metrics).unwrap()),
        adaptive: Some(adaptive),
    });
    let st = |bytes: u64| QueryState {
        archive: None,
        store: store.clone(),
        metrics: None,
        sampling: Some(provider.clone()),
        budget: Budget::new(100, 1000, 2, None).limits(std::time::Duration::from_secs(30), bytes),
    };
    let t = std::time::Instant::now();
    let (s, v) = get(&st(256 << 20), "/api/analysis/sampling?lookback=1h").await;
    eprintln!("sampling page, {n} services: {:?}", t.elapsed());
    assert_eq!(s, 200);
    let services = v["services"].as_array().unwrap();
    assert_eq!(services.len(), n);
    assert_eq!(services[0]["adaptive"], true);
    assert!(services[0]["strategy"].is_object());
    // 20,000 services do not fit in a 4 MiB budget (2 MiB per read): refused by name.
    let (s, v) = get(&st(4 << 20), "/api/analysis/sampling?lookback=1h").await;
    assert_eq!(s, 503, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("query.max_bytes"),
        "{v}"
    );
}
