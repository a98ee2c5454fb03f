//! Jaeger's HTTP query API (v1 JSON and the SPM endpoints), so the Jaeger UI and Grafana's Jaeger
//! data source work unchanged. Reads through the store's reader interface;
//! answers are `meshtrace_proto::jaeger_json` structs serialized directly.

pub mod analysis;
pub mod answer;
pub mod bounds;
pub mod duration;
pub mod jaeger;
mod params;
#[cfg(test)]
mod props;
pub mod spm;
pub mod v3;

use crate::model::kind_name;
use crate::store::SpanReader;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use axum_extra::extract::Query;
use meshtrace_proto::jaeger_json::{DependencyLink, Envelope, Operation, ResponseError};
pub use params::{parse_search, Search, SearchParams};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Clone)]
pub struct QueryState {
    pub store: Arc<dyn SpanReader>,
    /// The span metrics and their history (SPM); `None` when metrics are off.
    pub metrics: Option<Arc<crate::metrics::SpanMetrics>>,
    /// The sampling strategies in force (the sampling page).
    pub sampling: Option<Arc<crate::sampling::Provider>>,
    /// What one trace answer may hold, and how many run at once.
    pub budget: answer::Budget,
    /// Where `POST /api/archive/{traceID}` copies traces (`None`: no archive).
    pub archive: Option<Arc<crate::store::blocks::archive::Archive>>,
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
        .route("/api/archive/{id}", axum::routing::post(archive_trace))
        .route("/api/dependencies", get(dependencies))
        .route("/api/metrics/latencies", get(spm::latencies))
        .route("/api/metrics/calls", get(spm::calls))
        .route("/api/metrics/errors", get(spm::errors))
        .route("/api/metrics/minstep", get(spm::minstep))
        .merge(v3::routes())
        .merge(analysis::routes())
        .with_state(state)
}

/// `prettyPrint=true` on any endpoint indents the JSON (as Jaeger's query service does).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Format {
    pretty_print: Option<String>,
}

/// Whether a `prettyPrint` value asks for indented JSON.
pub fn pretty(value: &Option<String>) -> bool {
    value
        .as_deref()
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

impl Format {
    fn pretty(&self) -> bool {
        pretty(&self.pretty_print)
    }
}

fn json_response<T: Serialize>(status: StatusCode, body: &T, pretty: bool) -> Response {
    let encoded = if pretty {
        serde_json::to_vec_pretty(body)
    } else {
        serde_json::to_vec(body)
    };
    match encoded {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the answer: {e}"),
        )
            .into_response(),
    }
}

/// Jaeger's envelope around a list.
fn data<T: Serialize>(items: Vec<T>, pretty: bool) -> Response {
    let total = items.len();
    json_response(StatusCode::OK, &Envelope::new(items, total), pretty)
}

/// Jaeger's error envelope.
pub fn error(status: StatusCode, msg: &str) -> Response {
    let body: Envelope<Option<()>> = Envelope {
        data: None,
        total: 0,
        limit: 0,
        offset: 0,
        errors: Some(vec![ResponseError {
            code: status.as_u16(),
            msg: msg.to_string(),
            trace_id: None,
        }]),
    };
    json_response(status, &body, false)
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DependencyParams {
    end_ts: Option<String>,
    lookback: Option<String>,
    service: Option<String>,
    pretty_print: Option<String>,
}

/// `/api/dependencies?endTs=MS&lookback=MS[&service=S]` (Jaeger's units:
/// milliseconds). With `service`, only edges that touch it.
async fn dependencies(State(st): State<QueryState>, Query(q): Query<DependencyParams>) -> Response {
    let window = (|| {
        let end_ms = match q.end_ts.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => bounds::epoch_ms("endTs", v)?,
            None => (now_us() / 1000).clamp(0, bounds::MAX_MS),
        };
        let lookback_ms = match q.lookback.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => bounds::positive_ms("lookback", v)?,
            None => 86_400_000,
        };
        Ok::<_, String>((
            end_ms.saturating_sub(lookback_ms).max(0) * 1000,
            end_ms * 1000,
        ))
    })();
    let (start_us, end_us) = match window {
        Ok(w) => w,
        Err(m) => return error(StatusCode::BAD_REQUEST, &m),
    };
    let service = q.service.filter(|s| !s.is_empty());
    let hold = match st.budget.begin().await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let store = st.store.clone();
    match hold
        .run(move |ctl| store.dependencies(start_us, end_us, ctl))
        .await
    {
        Ok(edges) => data(
            edges
                .into_iter()
                .filter(|(p, c, _)| service.as_ref().is_none_or(|s| s == p || s == c))
                .map(|(parent, child, call_count)| DependencyLink {
                    parent,
                    child,
                    call_count,
                })
                .collect(),
            pretty(&q.pretty_print),
        ),
        Err(r) => r,
    }
}

async fn services(State(st): State<QueryState>, Query(f): Query<Format>) -> Response {
    let hold = match st.budget.begin().await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let store = st.store.clone();
    match hold.run(move |ctl| store.services(ctl)).await {
        Ok(s) => data(s, f.pretty()),
        Err(r) => r,
    }
}

async fn service_operations(
    State(st): State<QueryState>,
    Path(service): Path<String>,
    Query(f): Query<Format>,
) -> Response {
    let hold = match st.budget.begin().await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let store = st.store.clone();
    match hold.run(move |ctl| store.operations(&service, ctl)).await {
        Ok(ops) => {
            let mut names: Vec<String> = ops.into_iter().map(|(o, _)| o).collect();
            names.dedup();
            data(names, f.pretty())
        }
        Err(r) => r,
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OperationParams {
    #[serde(default)]
    service: Vec<String>,
    span_kind: Option<String>,
    pretty_print: Option<String>,
}

async fn operations(State(st): State<QueryState>, Query(q): Query<OperationParams>) -> Response {
    let [service] = q.service.as_slice() else {
        return error(
            StatusCode::BAD_REQUEST,
            "parameter 'service' is required exactly once",
        );
    };
    let service = service.clone();
    let want_kind = match q.span_kind.as_deref() {
        None | Some("") => None,
        Some(k) => match crate::model::kind_from_name(k) {
            Some(n) => Some(n),
            None => return error(StatusCode::BAD_REQUEST, &format!("unknown spanKind {k:?}")),
        },
    };
    let hold = match st.budget.begin().await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let store = st.store.clone();
    match hold.run(move |ctl| store.operations(&service, ctl)).await {
        Ok(ops) => data(
            ops.into_iter()
                .filter(|(_, k)| want_kind.is_none_or(|w| w == *k))
                .map(|(name, k)| Operation {
                    name,
                    span_kind: kind_name(k).to_string(),
                })
                .collect(),
            pretty(&q.pretty_print),
        ),
        Err(r) => r,
    }
}

/// `400` for a path's trace id that is not one.
fn bad_trace_id(id: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        &format!("{id:?} is not a trace id (1 to 32 hex characters)"),
    )
}

async fn trace(
    State(st): State<QueryState>,
    Path(id): Path<String>,
    Query(f): Query<Format>,
) -> Response {
    let Some(tid) = params::parse_trace_id(&id) else {
        return bad_trace_id(&id);
    };
    let hold = match st.budget.begin().await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let (store, max_spans) = (st.store.clone(), st.budget.max_spans);
    match hold
        .run(move |ctl| store.traces_within(&[tid], max_spans, ctl))
        .await
    {
        Ok(set) if set.traces.is_empty() && set.left_out == 0 => {
            error(StatusCode::NOT_FOUND, "trace not found")
        }
        Ok(set) => {
            let w = answer::warnings(&set, 0, &st.budget);
            answer::traces_answer(set, w, f.pretty(), hold)
        }
        Err(r) => r,
    }
}

/// `POST /api/archive/{traceID}` (the Jaeger UI's Archive button): copies the
/// whole trace to the archive, kept for `archive.retention`.
async fn archive_trace(State(st): State<QueryState>, Path(id): Path<String>) -> Response {
    let Some(archive) = st.archive.clone() else {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "no archive is configured (archive.enabled: false)",
        );
    };
    let Some(tid) = params::parse_trace_id(&id) else {
        return bad_trace_id(&id);
    };
    let hold = match st.budget.begin().await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let (store, max_spans) = (st.store.clone(), st.budget.max_spans);
    let done = hold
        .run(move |ctl| {
            let set = store.traces_within(&[tid], max_spans, ctl)?;
            match set.traces.into_iter().next() {
                None => Ok(Err((StatusCode::NOT_FOUND, "trace not found".to_string()))),
                Some(t) if t.truncated || set.cut_by_bytes => Ok(Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the trace has more spans than one read may hold (query.max_spans {max_spans}, query.max_bytes): not archived"
                    ),
                ))),
                Some(t) => archive.put(&t).map(|()| Ok(t.spans.len())),
            }
        })
        .await;
    match done {
        Ok(Ok(spans)) => {
            tracing::info!(trace_id = %id, spans, "trace archived");
            axum::Json(serde_json::json!({"data": [], "total": 0, "limit": 0, "offset": 0, "errors": null}))
                .into_response()
        }
        Ok(Err((status, m))) => error(status, &m),
        Err(r) => r,
    }
}

async fn find_traces(State(st): State<QueryState>, Query(p): Query<SearchParams>) -> Response {
    let pretty = pretty(&p.pretty_print);
    let search = match parse_search(&p, now_us()) {
        Ok(s) => s,
        Err(m) => return error(StatusCode::BAD_REQUEST, &m),
    };
    let hold = match st.budget.begin().await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let store = st.store.clone();
    let (max_traces, max_spans) = (st.budget.max_traces, st.budget.max_spans);
    match hold
        .run(move |ctl| match search {
            Search::Ids(mut ids) => {
                let dropped = ids.len().saturating_sub(max_traces);
                ids.truncate(max_traces);
                Ok((store.traces_within(&ids, max_spans, ctl)?, dropped))
            }
            Search::Query(mut q) => {
                q.limit = q.limit.min(max_traces);
                let ids = store.find_trace_ids(&q, ctl)?;
                Ok((store.traces_within(&ids, max_spans, ctl)?, 0))
            }
        })
        .await
    {
        Ok((set, dropped)) => {
            let w = answer::warnings(&set, dropped, &st.budget);
            answer::traces_answer(set, w, pretty, hold)
        }
        Err(r) => r,
    }
}
