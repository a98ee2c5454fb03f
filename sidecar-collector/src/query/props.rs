//! Every read endpoint family with arbitrary parameters (proptest): names it
//! takes and names it does not, values that overflow, NaN, infinities,
//! negatives, year 10000, huge durations, junk text and repeats. On a small
//! real store with span metrics and their history, every request must answer
//! (no panic: the router would not return), with a status a client can act
//! on, within a bounded time — every point and row loop is capped before it
//! starts, so no parameter can make one long.

use super::answer::Budget;
use super::{router, QueryState};
use crate::metrics::graph::GraphSettings;
use crate::metrics::{MetricsSettings, SpanMetrics};
use crate::store::history::HistoryDb;
use crate::store::sqlite::SqliteStore;
use crate::store::suite::{kv, records};
use crate::store::SpanWriter;
use axum::body::Body;
use axum::http::Request;
use meshtrace_proto::otlp::trace::v1::Span;
use proptest::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// Each family: its path (a `{id}` is filled with a trace id) and its parameters.
const FAMILIES: &[(&str, &[&str])] = &[
    (
        "/api/traces",
        &[
            "service",
            "operation",
            "start",
            "end",
            "lookback",
            "minDuration",
            "maxDuration",
            "limit",
            "tags",
            "tag",
            "traceID",
            "prettyPrint",
        ],
    ),
    ("/api/traces/{id}", &["prettyPrint"]),
    ("/api/services", &["prettyPrint"]),
    ("/api/operations", &["service", "spanKind"]),
    ("/api/dependencies", &["endTs", "lookback", "service"]),
    (
        "/api/metrics/calls",
        &[
            "service",
            "groupByOperation",
            "endTs",
            "lookback",
            "step",
            "ratePer",
            "spanKind",
            "adjusted",
        ],
    ),
    (
        "/api/metrics/latencies",
        &[
            "service",
            "quantile",
            "groupByOperation",
            "endTs",
            "lookback",
            "step",
            "ratePer",
            "spanKind",
        ],
    ),
    (
        "/api/metrics/errors",
        &["service", "endTs", "lookback", "step", "ratePer"],
    ),
    ("/api/metrics/minstep", &[]),
    (
        "/api/v3/traces",
        &[
            "query.serviceName",
            "query.service_name",
            "query.operationName",
            "query.startTimeMin",
            "query.startTimeMax",
            "query.start_time_min",
            "query.start_time_max",
            "query.searchDepth",
            "query.num_traces",
            "query.durationMin",
            "query.durationMax",
            "query.rawTraces",
            "query.attributes",
        ],
    ),
    (
        "/api/v3/trace-summaries",
        &[
            "query.serviceName",
            "query.startTimeMin",
            "query.startTimeMax",
            "query.searchDepth",
            "query.durationMin",
        ],
    ),
    (
        "/api/v3/traces/{id}",
        &["startTime", "endTime", "rawTraces", "start_time"],
    ),
    ("/api/v3/services", &[]),
    ("/api/v3/operations", &["service", "spanKind", "span_kind"]),
    ("/api/analysis/critical-path/{id}", &[]),
    (
        "/api/analysis/hotspots",
        &[
            "traceID",
            "service",
            "operation",
            "start",
            "end",
            "lookback",
            "limit",
            "minDuration",
        ],
    ),
    ("/api/analysis/diff", &["a", "b"]),
    ("/api/analysis/service-map", &["start", "end", "lookback"]),
    (
        "/api/analysis/compare-windows",
        &[
            "service",
            "operation",
            "start",
            "end",
            "baselineStart",
            "baselineEnd",
            "baselineOffset",
            "limit",
        ],
    ),
    ("/api/analysis/sampling", &["lookback"]),
];

/// A value a careless or hostile client might send.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("9223372036854775807".to_string()),
        Just("-9223372036854775808".to_string()),
        Just("99999999999999999999999".to_string()),
        Just("253402304400000".to_string()),
        Just("253402300800000000".to_string()),
        Just("0".to_string()),
        Just("1".to_string()),
        Just("-1".to_string()),
        Just("NaN".to_string()),
        Just("inf".to_string()),
        Just("1e308".to_string()),
        Just("0.5".to_string()),
        Just("60000".to_string()),
        Just("shop".to_string()),
        Just("true".to_string()),
        Just("server".to_string()),
        Just("10000-01-01T00:00:00Z".to_string()),
        Just("2026-12-01T10:00:00Z".to_string()),
        Just("0000-01-01T00:00:00Z".to_string()),
        Just("9999999999h".to_string()),
        Just("1h".to_string()),
        Just("{\"a\":\"b\"}".to_string()),
        Just("abababababababababababababababab".to_string()),
        "[ -~]{0,24}",
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| v.to_string()),
    ]
}

/// A query string: known names (some repeated) and unknown ones, each value
/// percent-encoded.
fn query(names: &'static [&'static str]) -> impl Strategy<Value = String> {
    let name = if names.is_empty() {
        Just("x").boxed()
    } else {
        prop_oneof![4 => proptest::sample::select(names.to_vec()), 1 => Just("unknown")].boxed()
    };
    proptest::collection::vec((name, value(), 1usize..4), 0..8).prop_map(|params| {
        let mut q = Vec::new();
        for (n, v, repeat) in params {
            let v: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            for _ in 0..repeat {
                q.push(format!("{n}={v}"));
            }
        }
        q.join("&")
    })
}

/// A small store, span metrics with their history, and the read budget.
fn state(dir: &std::path::Path) -> QueryState {
    let store = Arc::new(SqliteStore::open(dir, Default::default()).unwrap());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let spans: Vec<Span> = (1..=50u64)
        .map(|i| Span {
            trace_id: vec![0xab; 16],
            span_id: i.to_be_bytes().to_vec(),
            parent_span_id: if i == 1 {
                vec![]
            } else {
                (i / 2).to_be_bytes().to_vec()
            },
            name: format!("op{}", i % 3),
            kind: 2,
            start_time_unix_nano: now - 1_000_000_000 + i * 1000,
            end_time_unix_nano: now - 1_000_000_000 + i * 2000,
            attributes: vec![kv("http.request.method", "GET")],
            ..Default::default()
        })
        .collect();
    let records = records("shop", spans);
    store.write(&records).unwrap();
    let metrics = Arc::new(SpanMetrics::new(
        MetricsSettings {
            bounds_ms: vec![10.0, 100.0],
            max_series: 100,
            graph: GraphSettings {
                max_edges: 10,
                wait_ms: 1000,
                max_pending: 100,
            },
            history_retention_s: 86_400,
        },
        Some(HistoryDb::open(dir, &[10.0, 100.0]).unwrap()),
    ));
    metrics.record(&records);
    QueryState {
        archive: None,
        store,
        metrics: Some(metrics),
        sampling: None,
        budget: Budget::new(100, 10_000, 4, None).limits(Duration::from_secs(5), 64 << 20),
    }
}

/// A test: its helpers fail it with the reason.
#[test]
#[allow(clippy::unwrap_used)]
fn arbitrary_parameters_on_every_read_endpoint_answer_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let slowest = std::cell::RefCell::new((Duration::ZERO, String::new()));
    for (path, names) in FAMILIES {
        let config = ProptestConfig {
            cases: 48,
            failure_persistence: None,
            ..ProptestConfig::default()
        };
        let mut runner = proptest::test_runner::TestRunner::new(config);
        let result = runner.run(&query(names), |q| {
            let path = path.replace("{id}", "abababababababababababababababab");
            let uri = format!("{path}?{q}");
            let t = Instant::now();
            let answered = rt.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(20),
                    router(st.clone()).oneshot(Request::get(&uri).body(Body::empty()).unwrap()),
                )
                .await
            });
            let took = t.elapsed();
            let resp = match answered {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return Err(TestCaseError::fail(format!("{uri}: {e}"))),
                Err(_) => return Err(TestCaseError::fail(format!("{uri}: no answer in 20 s"))),
            };
            let status = resp.status().as_u16();
            prop_assert!(
                matches!(status, 200 | 400 | 404 | 501 | 503),
                "{uri}: status {status}"
            );
            if took > slowest.borrow().0 {
                *slowest.borrow_mut() = (took, uri.clone());
            }
            // Every loop is capped before it starts: a debug build on a busy
            // machine answers any of these in well under the 5 s query.timeout.
            prop_assert!(took < Duration::from_secs(10), "{uri}: {took:?}");
            Ok(())
        });
        if let Err(e) = result {
            panic!("{path}: {e}");
        }
    }
    let slowest = slowest.into_inner();
    eprintln!("slowest: {:?} {}", slowest.0, slowest.1);
}
