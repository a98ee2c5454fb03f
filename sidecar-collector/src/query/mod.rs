//! Jaeger's HTTP query API and JSON model, so the Jaeger UI and Grafana's
//! Jaeger data source work unchanged.

pub mod model;

use crate::store::{SpanStore, StoreError, TraceQuery};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(Clone)]
pub struct QueryState {
    pub store: Arc<dyn SpanStore>,
    /// The write pipeline's counters, for `/metrics` (absent in query-only tests).
    pub counters: Option<Arc<crate::pipeline::Counters>>,
    /// Sampling strategies, for their counters and adaptive gauges on `/metrics`.
    pub sampling: Option<Arc<crate::sampling::Provider>>,
}

pub fn router(state: QueryState) -> Router {
    Router::new()
        .route("/api/services", get(services))
        .route(
            "/api/services/{service}/operations",
            get(service_operations),
        )
        .route("/api/operations", get(operations))
        .route("/api/traces", get(find_traces))
        .route("/api/traces/{id}", get(trace))
        .route("/api/dependencies", get(dependencies))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

/// Jaeger's envelope.
fn data(v: Value) -> Response {
    let total = v.as_array().map_or(0, Vec::len);
    Json(json!({"data": v, "total": total, "limit": 0, "offset": 0, "errors": null}))
        .into_response()
}

/// Jaeger's error envelope.
pub fn error(status: StatusCode, msg: &str) -> Response {
    (
        status,
        Json(json!({"data": null, "total": 0, "limit": 0, "offset": 0,
            "errors": [{"code": status.as_u16(), "msg": msg}]})),
    )
        .into_response()
}

fn store_error(e: StoreError) -> Response {
    tracing::error!(error = %e, "query failed");
    error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(store_error(e)),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())),
    }
}

/// `/api/dependencies?endTs=MS&lookback=MS` (Jaeger's units: milliseconds).
async fn dependencies(State(st): State<QueryState>, RawQuery(q): RawQuery) -> Response {
    let p = pairs(q);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let num = |k: &str, default: i64| -> Result<i64, String> {
        match p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()) {
            None | Some("") => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("parameter '{k}': {v:?} is not a number of milliseconds")),
        }
    };
    let (end_ms, lookback_ms) = match (num("endTs", now_ms), num("lookback", 86_400_000)) {
        (Ok(e), Ok(l)) if l >= 0 => (e, l),
        (Err(m), _) | (_, Err(m)) => return error(StatusCode::BAD_REQUEST, &m),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "parameter 'lookback' must not be negative",
            )
        }
    };
    let (start_us, end_us) = (
        end_ms.saturating_sub(lookback_ms).saturating_mul(1000),
        end_ms.saturating_mul(1000),
    );
    match blocking(move || st.store.dependencies(start_us, end_us)).await {
        Ok(edges) => data(json!(edges
            .into_iter()
            .map(|(parent, child, n)| json!({"parent": parent, "child": child, "callCount": n}))
            .collect::<Vec<_>>())),
        Err(r) => r,
    }
}

/// The collector's self-metrics in Prometheus text format.
pub fn metrics_text(c: &crate::pipeline::Counters) -> String {
    use std::fmt::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = String::new();
    for (name, help, kind, v) in [
        (
            "meshtrace_collector_spans_received_total",
            "Spans received by the OTLP receivers.",
            "counter",
            c.spans_received.load(Relaxed),
        ),
        (
            "meshtrace_collector_spans_accepted_total",
            "Spans acknowledged (stored, or queued for forwarding in sidecar mode).",
            "counter",
            c.spans_accepted.load(Relaxed),
        ),
        (
            "meshtrace_collector_spans_refused_total",
            "Spans answered with a retryable error (queue full or store failure).",
            "counter",
            c.spans_refused.load(Relaxed),
        ),
        (
            "meshtrace_collector_spans_rejected_total",
            "Invalid spans rejected in partial_success.",
            "counter",
            c.spans_rejected.load(Relaxed),
        ),
        (
            "meshtrace_collector_spans_stored_total",
            "Spans committed to the store.",
            "counter",
            c.spans_stored.load(Relaxed),
        ),
        (
            "meshtrace_collector_store_transactions_total",
            "Store transactions; each commits a group of export requests.",
            "counter",
            c.transactions.load(Relaxed),
        ),
        (
            "meshtrace_collector_store_failures_total",
            "Failed store transactions.",
            "counter",
            c.store_failures.load(Relaxed),
        ),
        (
            "meshtrace_collector_spans_forwarded_total",
            "Sidecar mode: spans the upstream accepted.",
            "counter",
            c.spans_forwarded.load(Relaxed),
        ),
        (
            "meshtrace_collector_spans_dropped_total",
            "Sidecar mode: spans given up on.",
            "counter",
            c.spans_dropped.load(Relaxed),
        ),
        (
            "meshtrace_collector_queue_depth",
            "Export requests waiting.",
            "gauge",
            c.queue_depth.load(Relaxed),
        ),
        (
            "meshtrace_collector_queue_bytes",
            "Bytes of spans waiting (for the writer, or to be forwarded in sidecar mode).",
            "gauge",
            c.queue_bytes.load(Relaxed),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
    out
}

fn metrics_response(
    c: Option<&crate::pipeline::Counters>,
    s: Option<&crate::sampling::Provider>,
) -> Response {
    let mut body = c.map(metrics_text).unwrap_or_default();
    if let Some(s) = s {
        body.push_str(&s.metrics_text());
    }
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
        .into_response()
}

async fn metrics(State(st): State<QueryState>) -> Response {
    metrics_response(st.counters.as_deref(), st.sampling.as_deref())
}

/// Sidecar mode has no store: its query port serves metrics and health only.
pub fn sidecar_router(
    counters: Arc<crate::pipeline::Counters>,
    sampling: Arc<crate::sampling::Provider>,
) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || async move { metrics_response(Some(&counters), Some(&sampling)) }),
        )
        .route("/healthz", get(|| async { "ok" }))
}

async fn services(State(st): State<QueryState>) -> Response {
    match blocking(move || st.store.services()).await {
        Ok(s) => data(json!(s)),
        Err(r) => r,
    }
}

async fn service_operations(State(st): State<QueryState>, Path(service): Path<String>) -> Response {
    match blocking(move || st.store.operations(&service)).await {
        Ok(ops) => {
            let mut names: Vec<String> = ops.into_iter().map(|(o, _)| o).collect();
            names.dedup();
            data(json!(names))
        }
        Err(r) => r,
    }
}

/// Query-string pairs, decoded, keeping repeats.
pub fn pairs(raw: Option<String>) -> Vec<(String, String)> {
    raw.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h << 4) | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn operations(State(st): State<QueryState>, RawQuery(q): RawQuery) -> Response {
    let p = pairs(q);
    let services: Vec<&String> = p
        .iter()
        .filter(|(k, _)| k == "service")
        .map(|(_, v)| v)
        .collect();
    let [service] = services.as_slice() else {
        return error(
            StatusCode::BAD_REQUEST,
            "parameter 'service' is required exactly once",
        );
    };
    let service = (*service).clone();
    let kind_filter = p
        .iter()
        .find(|(k, _)| k == "spanKind")
        .map(|(_, v)| v.clone());
    let want_kind = match kind_filter.as_deref() {
        None | Some("") => None,
        Some(k) => match model::kind_from_name(k) {
            Some(n) => Some(n),
            None => return error(StatusCode::BAD_REQUEST, &format!("unknown spanKind {k:?}")),
        },
    };
    match blocking(move || st.store.operations(&service)).await {
        Ok(ops) => data(json!(ops
            .into_iter()
            .filter(|(_, k)| want_kind.is_none_or(|w| w == *k))
            .map(|(name, k)| json!({"name": name, "spanKind": model::kind_name(k)}))
            .collect::<Vec<_>>())),
        Err(r) => r,
    }
}

fn parse_trace_id(s: &str) -> Option<[u8; 16]> {
    meshtrace_proto::TraceId::from_hex_padded(s.as_bytes())
        .ok()
        .map(|t| t.0)
}

async fn trace(State(st): State<QueryState>, Path(id): Path<String>) -> Response {
    let Some(tid) = parse_trace_id(&id) else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("{id:?} is not a trace id (1 to 32 hex characters)"),
        );
    };
    match blocking(move || st.store.trace(&tid)).await {
        Ok(spans) if spans.is_empty() => error(StatusCode::NOT_FOUND, "trace not found"),
        Ok(spans) => data(json!([model::trace_json(&spans)])),
        Err(r) => r,
    }
}

/// `100ms`, `1.2s`, `5m`, `300us`, `2h` → microseconds.
pub fn parse_duration_us(s: &str) -> Option<i64> {
    let idx = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(idx);
    let n: f64 = num.parse().ok()?;
    let mult = match unit {
        "ns" => 0.001,
        "us" | "µs" => 1.0,
        "ms" => 1_000.0,
        "s" => 1_000_000.0,
        "m" => 60_000_000.0,
        "h" => 3_600_000_000.0,
        _ => return None,
    };
    (n.is_finite() && n >= 0.0).then_some((n * mult) as i64)
}

/// What `/api/traces` asks for.
#[derive(Debug)]
pub enum Search {
    /// Repeated `traceID`.
    Ids(Vec<[u8; 16]>),
    Query(TraceQuery),
}

/// Parses `/api/traces` parameters; the error names the parameter.
pub fn parse_search(p: &[(String, String)], now_us: i64) -> Result<Search, String> {
    let get = |k: &str| {
        p.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let ids: Vec<&str> = p
        .iter()
        .filter(|(k, _)| k == "traceID")
        .map(|(_, v)| v.as_str())
        .collect();
    if !ids.is_empty() {
        return ids
            .into_iter()
            .map(|id| {
                parse_trace_id(id).ok_or(format!("parameter 'traceID': {id:?} is not a trace id"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Search::Ids);
    }
    let service = get("service").ok_or("parameter 'service' is required (or traceID)")?;
    let num = |k: &str, default: i64| -> Result<i64, String> {
        get(k).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| format!("parameter '{k}': {v:?} is not an integer"))
        })
    };
    let dur = |k: &str| -> Result<Option<i64>, String> {
        get(k)
            .map(|v| {
                parse_duration_us(v).ok_or(format!(
                    "parameter '{k}': {v:?} is not a duration like 100ms or 1.2s"
                ))
            })
            .transpose()
    };
    let end_us = num("end", now_us)?;
    let lookback = match get("lookback") {
        None | Some("custom") => 3_600_000_000,
        Some(l) => {
            parse_duration_us(l).ok_or(format!("parameter 'lookback': {l:?} is not a duration"))?
        }
    };
    let start_us = num("start", end_us - lookback)?;
    let limit = num("limit", 20)?;
    let mut tags = Vec::new();
    if let Some(t) = get("tags") {
        let m: serde_json::Map<String, Value> = serde_json::from_str(t)
            .map_err(|e| format!("parameter 'tags' must be a JSON object: {e}"))?;
        for (k, v) in m {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            tags.push((k, v));
        }
    }
    for (_, v) in p.iter().filter(|(k, _)| k == "tag") {
        let (k, val) = v
            .split_once(':')
            .ok_or(format!("parameter 'tag': {v:?} must be key:value"))?;
        tags.push((k.to_string(), val.to_string()));
    }
    Ok(Search::Query(TraceQuery {
        service: service.to_string(),
        operation: get("operation").map(str::to_string),
        tags,
        start_us,
        end_us,
        min_duration_us: dur("minDuration")?,
        max_duration_us: dur("maxDuration")?,
        limit: if limit > 0 { limit as usize } else { 20 },
    }))
}

async fn find_traces(State(st): State<QueryState>, RawQuery(q): RawQuery) -> Response {
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    let search = match parse_search(&pairs(q), now_us) {
        Ok(s) => s,
        Err(m) => return error(StatusCode::BAD_REQUEST, &m),
    };
    let store = st.store.clone();
    match blocking(move || {
        let ids = match search {
            Search::Ids(ids) => ids,
            Search::Query(q) => store.find_trace_ids(&q)?,
        };
        let mut out = Vec::new();
        for t in ids {
            let spans = store.trace(&t)?;
            if !spans.is_empty() {
                out.push(model::trace_json(&spans));
            }
        }
        Ok(out)
    })
    .await
    {
        Ok(traces) => data(json!(traces)),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases = [
            ("100ms", Some(100_000)),
            ("1.2s", Some(1_200_000)),
            ("300us", Some(300)),
            ("5m", Some(300_000_000)),
            ("10", None),
            ("ms", None),
            ("1.2.3s", None),
            ("-1s", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_duration_us(s), want, "{s}");
        }
    }

    #[test]
    fn search_parameters() {
        let q = |s: &str| parse_search(&pairs(Some(s.into())), 10_000_000_000);
        let bad = [
            ("", "service"),
            ("service=a&minDuration=fast", "minDuration"),
            ("service=a&maxDuration=1x", "maxDuration"),
            ("service=a&tags=%7Bbroken", "tags"),
            ("service=a&tag=nocolon", "tag"),
            ("service=a&limit=ten", "limit"),
            ("service=a&start=yesterday", "start"),
            ("service=a&lookback=forever", "lookback"),
            ("traceID=xyz", "traceID"),
        ];
        for (s, name) in bad {
            let e = q(s).unwrap_err();
            assert!(e.contains(name), "{s}: {e}");
        }
        let Ok(Search::Query(t)) = q("service=a&operation=op&tag=k:v&tags=%7B%22x%22%3A%22y%22%7D&minDuration=100ms&lookback=2h&limit=3") else {
            panic!("valid query rejected");
        };
        assert_eq!(t.operation.as_deref(), Some("op"));
        assert_eq!(
            t.tags,
            vec![("x".to_string(), "y".to_string()), ("k".into(), "v".into())]
        );
        assert_eq!(t.min_duration_us, Some(100_000));
        assert_eq!(t.end_us - t.start_us, 7_200_000_000);
        assert_eq!(t.limit, 3);
        let Ok(Search::Ids(ids)) = q("traceID=abc&traceID=4bf92f3577b34da6a3ce929d0e0e4736") else {
            panic!("ids");
        };
        assert_eq!(ids.len(), 2);
    }

    #[test]
    fn query_pairs_decode_and_repeat() {
        let p = pairs(Some(
            "tag=a%3Ab&tag=c:d&tags=%7B%22x%22%3A%22y%22%7D&service=my+svc".into(),
        ));
        assert_eq!(p[0], ("tag".into(), "a:b".into()));
        assert_eq!(p[1], ("tag".into(), "c:d".into()));
        assert_eq!(p[2].1, "{\"x\":\"y\"}");
        assert_eq!(p[3].1, "my svc");
    }
}
