use super::export::Exporter;
use super::*;
use prometheus_client::registry::Registry;

fn settings(max_series: usize) -> MetricsSettings {
    MetricsSettings {
        bounds_ms: vec![10.0, 100.0],
        max_series,
        graph: GraphSettings {
            max_edges: 10,
            wait_ms: 1000,
            max_pending: 100,
        },
        history_retention_s: 3600,
    }
}

#[allow(clippy::too_many_arguments)]
fn span(
    trace: u8,
    id: u8,
    parent: Option<u8>,
    service: &str,
    op: &str,
    kind: i32,
    ms: i64,
    status: i32,
    p: Option<f64>,
) -> SpanRecord {
    SpanRecord {
        trace_id: [trace; 16],
        span_id: [id; 8],
        parent_span_id: parent.map(|p| [p; 8]),
        service: service.into(),
        operation: op.into(),
        kind,
        start_us: 0,
        duration_us: ms * 1000,
        error: status == 2,
        status_code: status,
        indexed_tags: vec![],
        sampled_probability: p,
        sampler_decided: p.is_some(),
        origin: Arc::from(Vec::new()),
        body: Default::default(),
        tags: Arc::from(Vec::new()),
    }
}

fn render(m: &Arc<SpanMetrics>) -> String {
    let mut r = Registry::default();
    r.register_collector(Box::new(Exporter(m.clone())));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
    out
}

fn has(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "missing line {line:?} in:\n{text}"
    );
}

#[test]
fn every_name_users_query_from_one_set_of_spans() {
    let m = Arc::new(SpanMetrics::new(settings(100), None));
    m.record_at(
        &[
            // frontend (root, sampled at 0.1) calls checkout; checkout fails once.
            span(1, 1, None, "frontend", "GET /", 2, 50, 0, Some(0.1)),
            span(1, 2, Some(1), "frontend", "checkout", 3, 40, 0, Some(0.1)),
            span(1, 3, Some(2), "checkout", "POST /pay", 2, 30, 2, Some(0.1)),
            span(2, 4, None, "frontend", "GET /", 2, 5, 1, None),
        ],
        0,
        0,
    );
    let t = render(&m);
    has(
        &t,
        r#"traces_span_metrics_calls_total{service_name="frontend",span_name="GET /",span_kind="SPAN_KIND_SERVER",status_code="STATUS_CODE_UNSET"} 1"#,
    );
    has(
        &t,
        r#"traces_span_metrics_calls_total{service_name="checkout",span_name="POST /pay",span_kind="SPAN_KIND_SERVER",status_code="STATUS_CODE_ERROR"} 1"#,
    );
    has(
        &t,
        r#"traces_span_metrics_duration_milliseconds_bucket{le="100.0",service_name="frontend",span_name="GET /",span_kind="SPAN_KIND_SERVER",status_code="STATUS_CODE_UNSET"} 1"#,
    );
    has(
        &t,
        r#"meshtrace_span_calls_adjusted_total{service_name="frontend",span_name="GET /",span_kind="SPAN_KIND_SERVER",status_code="STATUS_CODE_UNSET"} 10.0"#,
    );
    has(
        &t,
        r#"jaeger_spans_total{service="frontend",operation="GET /",error="false"} 2"#,
    );
    has(
        &t,
        r#"jaeger_spans_total{service="checkout",operation="POST /pay",error="true"} 1"#,
    );
    has(
        &t,
        r#"meshtrace_spans_adjusted_total{service="frontend",operation="GET /",error="false"} 11.0"#,
    );
    // Two frontend GET / spans: 5 ms and 50 ms.
    has(
        &t,
        r#"jaeger_span_duration_milliseconds_bucket{le="10.0",service="frontend",operation="GET /"} 1"#,
    );
    has(
        &t,
        r#"jaeger_span_duration_milliseconds_bucket{le="+Inf",service="frontend",operation="GET /"} 2"#,
    );
    has(
        &t,
        r#"jaeger_span_duration_milliseconds_sum{service="frontend",operation="GET /"} 55.0"#,
    );
    // Traces entering: frontend twice (roots), checkout once (server span).
    has(
        &t,
        r#"jaeger_traces_per_service_total{service="frontend"} 2"#,
    );
    has(
        &t,
        r#"jaeger_traces_per_service_total{service="checkout"} 1"#,
    );
    has(
        &t,
        r#"meshtrace_traces_per_service_adjusted_total{service="frontend"} 11.0"#,
    );
    // The service graph: frontend's client span 2 is the parent of checkout's server span 3.
    has(
        &t,
        r#"traces_service_graph_request_total{client="frontend",server="checkout",connection_type=""} 1"#,
    );
    has(
        &t,
        r#"traces_service_graph_request_failed_total{client="frontend",server="checkout",connection_type=""} 1"#,
    );
    has(
        &t,
        r#"traces_service_graph_request_server_seconds_bucket{le="0.1",client="frontend",server="checkout",connection_type=""} 1"#,
    );
    has(
        &t,
        r#"traces_service_graph_request_client_seconds_sum{client="frontend",server="checkout",connection_type=""} 0.04"#,
    );
    has(
        &t,
        r#"meshtrace_metrics_overflow_spans_total{table="span_metrics"} 0"#,
    );
    assert!(t.contains("# TYPE jaeger_span_duration_milliseconds histogram"));
    assert!(t.contains("# HELP jaeger_spans Spans stored"));
}

#[test]
fn label_sets_beyond_the_cap_fold_into_one_overflow_series() {
    let m = Arc::new(SpanMetrics::new(settings(3), None));
    let spans: Vec<SpanRecord> = (0..10u8)
        .map(|i| span(1, i + 1, Some(9), "svc", &format!("op{i}"), 1, 1, 0, None))
        .collect();
    m.record_at(&spans, 0, 0);
    // Known label sets still count after the cap is reached.
    m.record_at(&spans[..1], 0, 0);
    let t = render(&m);
    has(
        &t,
        r#"traces_span_metrics_calls_total{service_name="svc",span_name="op0",span_kind="SPAN_KIND_INTERNAL",status_code="STATUS_CODE_UNSET"} 2"#,
    );
    has(
        &t,
        r#"traces_span_metrics_calls_total{otel_metric_overflow="true"} 7"#,
    );
    has(&t, r#"jaeger_spans_total{otel_metric_overflow="true"} 7"#);
    has(
        &t,
        r#"meshtrace_metrics_overflow_spans_total{table="span_metrics"} 7"#,
    );
    has(&t, r#"meshtrace_metrics_series{table="span_metrics"} 3"#);
    let series = t
        .lines()
        .filter(|l| l.starts_with("traces_span_metrics_calls_total{"))
        .count();
    assert_eq!(series, 4, "three label sets and the overflow series");
}

#[test]
fn history_keeps_minutes_and_the_minute_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let db = HistoryDb::open(dir.path(), &[10.0, 100.0]).unwrap();
    let m = SpanMetrics::new(settings(100), Some(db));
    let s = |err| {
        span(
            1,
            1,
            None,
            "a",
            "op",
            2,
            20,
            if err { 2 } else { 0 },
            Some(0.5),
        )
    };
    m.record_at(&[s(false), s(true)], 120, 0);
    // The next minute starts: minute 120 is written.
    m.record_at(&[s(false)], 185, 0);
    let rows = m
        .history(&["a".into()], 0, 1000, &crate::store::ReadCtl::unbounded())
        .unwrap();
    let at = |minute| rows.iter().find(|r| r.minute == minute).unwrap();
    assert_eq!((at(120).calls, at(120).errors), (2, 1));
    assert_eq!(at(120).adjusted_calls, 4.0);
    assert_eq!(at(120).buckets, vec![0, 2, 0]);
    assert_eq!(at(180).calls, 1, "the minute in progress, from memory");
    m.flush_now();
    drop(m);
    // A restart keeps both.
    let db = HistoryDb::open(dir.path(), &[10.0, 100.0]).unwrap();
    let m = SpanMetrics::new(settings(100), Some(db));
    assert_eq!(
        m.history(&["a".into()], 0, 1000, &crate::store::ReadCtl::unbounded())
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn weight_is_one_over_p_when_p_is_sane() {
    assert_eq!(weight(Some(0.01)), 100.0);
    assert_eq!(weight(Some(1.0)), 1.0);
    assert_eq!(weight(None), 1.0);
    assert_eq!(weight(Some(0.0)), 1.0, "p = 0 cannot have been sampled");
    assert_eq!(weight(Some(7.0)), 1.0, "a rate limit, not a probability");
}

#[test]
fn the_graph_history_keeps_edges_per_minute_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = HistoryDb::open(dir.path(), &[10.0, 100.0]).unwrap();
    let m = SpanMetrics::new(settings(100), Some(db));
    let pair = |t: u8, failed: bool| {
        vec![
            span(t, 1, None, "frontend", "checkout", 3, 40, 0, Some(0.5)),
            span(
                t,
                2,
                Some(1),
                "checkout",
                "POST /pay",
                2,
                30,
                if failed { 2 } else { 0 },
                Some(0.5),
            ),
        ]
    };
    m.record_at(&pair(1, false), 120, 0);
    m.record_at(&pair(2, true), 130, 0);
    let e = m
        .edge_history(0, 1000, &crate::store::ReadCtl::unbounded())
        .unwrap();
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(
        (e[0].client.as_str(), e[0].server.as_str()),
        ("frontend", "checkout")
    );
    assert_eq!((e[0].requests, e[0].failed, e[0].adjusted), (2, 1, 4.0));
    assert_eq!(e[0].buckets, vec![0, 2, 0], "server spans of 30 ms");
    m.flush_now();
    drop(m);
    let db = HistoryDb::open(dir.path(), &[10.0, 100.0]).unwrap();
    let m = SpanMetrics::new(settings(100), Some(db));
    assert_eq!(
        m.edge_history(0, 1000, &crate::store::ReadCtl::unbounded())
            .unwrap()[0]
            .requests,
        2
    );
}
