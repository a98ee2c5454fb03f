//! The analysis endpoints, on the `meshtrace-analysis` crate (the UI runs the
//! same crate compiled to wasm for traces it has in hand):
//!
//! - `GET /api/analysis/critical-path/{trace_id}`: the trace's critical path
//!   (clock skew adjusted first), each span's self time and critical-path time,
//!   and what was worked around (missing parents, skew).

use super::{blocking_v3, params::parse_trace_id, v3, QueryState};
use crate::model::{service_of, StoredTrace};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use meshtrace_analysis::critical::critical_times;
use meshtrace_analysis::{critical_path, self_times, skew, Span, Trace, TraceWarning};
use serde::Serialize;

pub fn routes() -> Router<QueryState> {
    Router::new().route(
        "/api/analysis/critical-path/{trace_id}",
        get(critical_path_of),
    )
}

fn id_u64(b: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(b).ok().map(u64::from_be_bytes)
}

fn hex(id: u64) -> String {
    format!("{id:016x}")
}

/// A stored trace as the analyses see it: a consumer span does not hold up its
/// producer (asynchronous); the process is the service and its pod or host.
pub fn analysis_spans(t: &StoredTrace) -> Vec<Span> {
    t.spans
        .iter()
        .filter_map(|s| {
            let attr = |k: &str| {
                crate::model::find_attr(&s.origin.resource.attributes, k)
                    .and_then(crate::model::value_text)
            };
            let service = service_of(&s.origin.resource);
            let process = format!(
                "{service}/{}",
                attr("k8s.pod.name")
                    .or_else(|| attr("host.name"))
                    .or_else(|| attr("service.instance.id"))
                    .unwrap_or_default()
            );
            Some(Span {
                id: id_u64(&s.span.span_id)?,
                parent: id_u64(&s.span.parent_span_id),
                start: s.span.start_time_unix_nano as i64,
                end: s.span.end_time_unix_nano as i64,
                asynchronous: s.span.kind == 5,
                service,
                operation: s.span.name.clone(),
                process,
            })
        })
        .collect()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PathSegment {
    span_id: String,
    /// Nanoseconds since the epoch, as decimal strings (as OTLP JSON times are).
    start_time_unix_nano: String,
    end_time_unix_nano: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SpanTimes {
    span_id: String,
    service: String,
    operation: String,
    self_ns: i64,
    critical_ns: i64,
    /// Start after clock-skew adjustment (ns).
    adjusted_start_unix_nano: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CriticalPathAnswer {
    trace_id: String,
    duration_ns: i64,
    critical_path: Vec<PathSegment>,
    spans: Vec<SpanTimes>,
    warnings: Vec<TraceWarning>,
}

async fn critical_path_of(State(st): State<QueryState>, Path(id): Path<String>) -> Response {
    let Some(tid) = parse_trace_id(&id) else {
        return v3::error(
            StatusCode::BAD_REQUEST,
            format!("malformed parameter trace_id: {id:?} is not a trace id"),
        );
    };
    let _slot = match st.budget.slot().await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let max_spans = st.budget.max_spans;
    let set = match blocking_v3(move || st.store.traces_within(&[tid], max_spans)).await {
        Ok(set) => set,
        Err(r) => return r,
    };
    let Some(stored) = set.traces.first() else {
        return v3::error(StatusCode::NOT_FOUND, "trace not found");
    };
    let mut t = Trace::new(analysis_spans(stored));
    skew::adjust(&mut t);
    let path = critical_path(&t);
    let crit = critical_times(&t, &path);
    let own = self_times(&t);
    let duration_ns = t.root.map_or(0, |r| t.spans[r].duration());
    Json(CriticalPathAnswer {
        trace_id: meshtrace_proto::TraceId(stored.trace_id).to_string(),
        duration_ns,
        critical_path: path
            .iter()
            .map(|s| PathSegment {
                span_id: hex(t.spans[s.span].id),
                start_time_unix_nano: s.start.to_string(),
                end_time_unix_nano: s.end.to_string(),
            })
            .collect(),
        spans: t
            .spans
            .iter()
            .enumerate()
            .map(|(i, s)| SpanTimes {
                span_id: hex(s.id),
                service: s.service.clone(),
                operation: s.operation.clone(),
                self_ns: own[i],
                critical_ns: crit[i],
                adjusted_start_unix_nano: s.start.to_string(),
            })
            .collect(),
        warnings: t.warnings.clone(),
    })
    .into_response()
}
