//! Jaeger's api_v3 over HTTP/JSON (what the current Jaeger UI and Grafana's
//! Jaeger data source in its v3 mode call), beside v1: `/api/v3/services`,
//! `/api/v3/operations`, `/api/v3/traces/{trace_id}`, `/api/v3/traces` and
//! `/api/v3/trace-summaries`. Traces answer OTLP JSON (hex ids, nanosecond
//! times as decimal strings) wrapped in `{"result": …}` as Jaeger's gateway
//! does; errors are `{"error": {"httpCode": N, "message": "…"}}`.

use super::duration::parse_go_duration_us;
use super::{blocking_v3, params::parse_trace_id, QueryState};
use crate::model::{is_error, kind_from_name, kind_name, service_of, StoredTrace};
use crate::store::TraceQuery;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use axum_extra::extract::Query;
use meshtrace_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;

/// The v3 routes (merged into the query router).
pub fn routes() -> Router<QueryState> {
    Router::new()
        .route("/api/v3/services", get(services))
        .route("/api/v3/operations", get(operations))
        .route("/api/v3/traces", get(find_traces))
        .route("/api/v3/traces/{trace_id}", get(get_trace))
        .route("/api/v3/trace-summaries", get(find_summaries))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorDetails {
    http_code: u16,
    message: String,
}

#[derive(Serialize)]
struct ErrorBody {
    error: ErrorDetails,
}

/// Why a request is refused (its answer is [`error`]).
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.status, self.message)
    }
}

fn malformed(param: &str, why: impl std::fmt::Display) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        message: format!("malformed parameter {param}: {why}"),
    }
}

/// Jaeger's gateway error: `{"error": {"httpCode": 400, "message": "…"}}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json(
        status,
        &ErrorBody {
            error: ErrorDetails {
                http_code: status.as_u16(),
                message: message.into(),
            },
        },
    )
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(b) => (status, [(header::CONTENT_TYPE, "application/json")], b).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(Serialize)]
struct Services {
    services: Vec<String>,
}

async fn services(State(st): State<QueryState>) -> Response {
    match blocking_v3(move || st.store.services()).await {
        Ok(services) => json(StatusCode::OK, &Services { services }),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct OperationParams {
    service: Option<String>,
    span_kind: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Operation {
    name: String,
    span_kind: String,
}

#[derive(Serialize)]
struct Operations {
    operations: Vec<Operation>,
}

async fn operations(State(st): State<QueryState>, Query(q): Query<OperationParams>) -> Response {
    let Some(service) = q.service.filter(|s| !s.is_empty()) else {
        return malformed("service", "a service name is required").into_response();
    };
    let want = match q.span_kind.as_deref() {
        None | Some("") => None,
        Some(k) => match kind_from_name(k) {
            Some(n) => Some(n),
            None => {
                return malformed("span_kind", format!("unknown span kind {k:?}")).into_response()
            }
        },
    };
    match blocking_v3(move || st.store.operations(&service)).await {
        Ok(ops) => json(
            StatusCode::OK,
            &Operations {
                operations: ops
                    .into_iter()
                    .filter(|(_, k)| want.is_none_or(|w| w == *k))
                    .map(|(name, k)| Operation {
                        name,
                        span_kind: kind_name(k).to_string(),
                    })
                    .collect(),
            },
        ),
        Err(r) => r,
    }
}

/// An RFC 3339 time (`2026-12-01T10:00:00Z`, fractions and `+02:00` offsets too)
/// in microseconds since the epoch.
pub fn parse_rfc3339_us(s: &str) -> Result<i64, String> {
    let s = s.trim();
    // humantime reads UTC (`Z`); an offset is applied here.
    let (base, offset_s) = match s.len().checked_sub(6).map(|i| s.split_at(i)) {
        Some((b, o))
            if (o.starts_with('+') || o.starts_with('-') || o.starts_with(' '))
                && o.as_bytes().get(3) == Some(&b':') =>
        {
            // ' ': a `+` sent unencoded (Grafana's Jaeger data source writes the
            // times into the query string as they are) reads back as a space.
            let h: i64 = o[1..3].parse().map_err(|_| format!("bad offset {o:?}"))?;
            let m: i64 = o[4..6].parse().map_err(|_| format!("bad offset {o:?}"))?;
            let sign = if o.starts_with('-') { -1 } else { 1 };
            (format!("{b}Z"), sign * (h * 3600 + m * 60))
        }
        _ => (s.to_string(), 0),
    };
    let t = humantime::parse_rfc3339_weak(&base)
        .map_err(|e| format!("parsing time {s:?} as RFC 3339: {e}"))?;
    let us = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("{s:?} is before 1970"))?
        .as_micros() as i64;
    Ok(us - offset_s * 1_000_000)
}

/// `FindTraces` / `FindTraceSummaries` parameters, as Jaeger's gateway reads them.
#[derive(Debug, Default, Deserialize)]
pub struct FindParams {
    #[serde(rename = "query.service_name")]
    service_name: Option<String>,
    #[serde(rename = "query.operation_name")]
    operation_name: Option<String>,
    #[serde(rename = "query.start_time_min")]
    start_time_min: Option<String>,
    #[serde(rename = "query.start_time_max")]
    start_time_max: Option<String>,
    #[serde(rename = "query.search_depth")]
    search_depth: Option<String>,
    /// The older name of `query.search_depth`.
    #[serde(rename = "query.num_traces")]
    num_traces: Option<String>,
    #[serde(rename = "query.duration_min")]
    duration_min: Option<String>,
    #[serde(rename = "query.duration_max")]
    duration_max: Option<String>,
    /// Accepted and ignored: traces are always answered as stored (no adjustment on the wire).
    #[serde(rename = "query.raw_traces")]
    raw_traces: Option<String>,
    /// meshtrace: attributes every matching trace has on one span, a JSON object
    /// of strings (`{"error":"true","http.response.status_code":"503"}`), as
    /// v1's `tags`.
    #[serde(rename = "query.attributes")]
    attributes: Option<String>,
}

/// Validated find parameters, or the error answer naming the parameter.
pub fn parse_find(p: &FindParams) -> Result<TraceQuery, Refusal> {
    let (Some(min), Some(max)) = (
        p.start_time_min.as_deref().filter(|s| !s.is_empty()),
        p.start_time_max.as_deref().filter(|s| !s.is_empty()),
    ) else {
        return Err(Refusal {
            status: StatusCode::BAD_REQUEST,
            message: "query.start_time_min and query.start_time_max are required".into(),
        });
    };
    let start_us = parse_rfc3339_us(min).map_err(|e| malformed("query.start_time_min", e))?;
    let end_us = parse_rfc3339_us(max).map_err(|e| malformed("query.start_time_max", e))?;
    let Some(service) = p.service_name.clone().filter(|s| !s.is_empty()) else {
        return Err(malformed(
            "query.service_name",
            "a service name is required",
        ));
    };
    let limit = match (p.search_depth.as_deref(), p.num_traces.as_deref()) {
        (Some(n), _) if !n.is_empty() => n
            .parse::<usize>()
            .map_err(|e| malformed("query.search_depth", e))?,
        (_, Some(n)) if !n.is_empty() => n
            .parse::<usize>()
            .map_err(|e| malformed("query.num_traces", e))?,
        _ => 100,
    };
    let duration = |name: &str, v: &Option<String>| -> Result<Option<i64>, Refusal> {
        match v.as_deref().filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(d) => parse_go_duration_us(d)
                .map(Some)
                .ok_or_else(|| malformed(name, format!("time: invalid duration {d:?}"))),
        }
    };
    if let Some(r) = p.raw_traces.as_deref().filter(|s| !s.is_empty()) {
        r.parse::<bool>()
            .map_err(|e| malformed("query.raw_traces", e))?;
    }
    let tags = match p.attributes.as_deref().filter(|s| !s.is_empty()) {
        None => Vec::new(),
        Some(j) => serde_json::from_str::<BTreeMap<String, String>>(j)
            .map_err(|e| {
                malformed(
                    "query.attributes",
                    format!("not a JSON object of strings: {e}"),
                )
            })?
            .into_iter()
            .collect(),
    };
    Ok(TraceQuery {
        service,
        operation: p.operation_name.clone().filter(|s| !s.is_empty()),
        tags,
        start_us,
        end_us,
        min_duration_us: duration("query.duration_min", &p.duration_min)?,
        max_duration_us: duration("query.duration_max", &p.duration_max)?,
        limit,
    })
}

/// Drops `null` members: protobuf JSON leaves an unset message out, and clients
/// that validate the shape (the Jaeger UI's schemas) refuse `null` where a message may be.
fn without_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(without_nulls);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(without_nulls),
        _ => {}
    }
}

fn traces_answer(traces: Vec<StoredTrace>, slot: OwnedSemaphorePermit) -> Response {
    if traces.is_empty() {
        return error(StatusCode::NOT_FOUND, "No traces found");
    }
    let spans = traces.iter().map(|t| t.spans.len()).sum();
    super::answer::json_answer(spans, slot, move |out| write_otlp(out, &traces))
}

/// `serde_json` text of `v` with its `null`s left out (Jaeger's gateway omits
/// unset fields).
fn json_text(v: &impl Serialize) -> std::io::Result<Vec<u8>> {
    let mut v = serde_json::to_value(v)?;
    without_nulls(&mut v);
    Ok(serde_json::to_vec(&v)?)
}

/// Writes `{"result":{"resourceSpans":[…]}}` span by span: each resource group's
/// shell (its resource and scope, no spans) and then each span become JSON on
/// their own, so an answer holds its stored spans and one span's JSON tree at a
/// time — a 100,000-span answer built as one `serde_json::Value` took over 1 GiB.
fn write_otlp(out: &mut dyn std::io::Write, traces: &[StoredTrace]) -> std::io::Result<()> {
    out.write_all(b"{\"result\":{\"resourceSpans\":[")?;
    let mut groups = 0usize;
    let mut close: Vec<u8> = Vec::new();
    for t in traces {
        let mut last: Option<*const crate::model::Origin> = None;
        let mut spans_in_group = 0usize;
        for s in &t.spans {
            let here = Arc::as_ptr(&s.origin);
            if last != Some(here) {
                out.write_all(&close)?;
                if groups > 0 {
                    out.write_all(b",")?;
                }
                groups += 1;
                let shell = json_text(&ResourceSpans {
                    resource: Some(s.origin.resource.clone()),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(s.origin.scope.clone()),
                        ..Default::default()
                    }],
                    ..Default::default()
                })?;
                // `"spans":[]` occurs once, as the scope's key (quotes inside
                // strings are escaped): the spans go between its brackets.
                const SPANS: &[u8] = b"\"spans\":[";
                let at = shell
                    .windows(SPANS.len() + 1)
                    .rposition(|w| w[..SPANS.len()] == *SPANS && w[SPANS.len()] == b']')
                    .map(|i| i + SPANS.len())
                    .ok_or_else(|| std::io::Error::other("a ResourceSpans without spans"))?;
                out.write_all(&shell[..at])?;
                close = shell[at..].to_vec();
                last = Some(here);
                spans_in_group = 0;
            }
            if spans_in_group > 0 {
                out.write_all(b",")?;
            }
            spans_in_group += 1;
            out.write_all(&json_text(&s.span)?)?;
        }
    }
    out.write_all(&close)?;
    out.write_all(b"]}}")
}

#[derive(Deserialize)]
struct GetTraceParams {
    start_time: Option<String>,
    end_time: Option<String>,
    raw_traces: Option<String>,
}

async fn get_trace(
    State(st): State<QueryState>,
    Path(id): Path<String>,
    Query(q): Query<GetTraceParams>,
) -> Response {
    let Some(tid) = parse_trace_id(&id) else {
        return malformed(
            "trace_id",
            format!("{id:?} is not a trace id (1 to 32 hex characters)"),
        )
        .into_response();
    };
    for (name, v) in [("start_time", &q.start_time), ("end_time", &q.end_time)] {
        if let Some(t) = v.as_deref().filter(|s| !s.is_empty()) {
            if let Err(e) = parse_rfc3339_us(t) {
                return malformed(name, e).into_response();
            }
        }
    }
    if let Some(r) = q.raw_traces.as_deref().filter(|s| !s.is_empty()) {
        if let Err(e) = r.parse::<bool>() {
            return malformed("raw_traces", e).into_response();
        }
    }
    let slot = match st.budget.slot().await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let max_spans = st.budget.max_spans;
    match blocking_v3(move || st.store.traces_within(&[tid], max_spans)).await {
        Ok(set) => traces_answer(set.traces, slot),
        Err(r) => r,
    }
}

/// The traces a search finds, and the answer slot that read them (held until
/// the answer is written).
async fn find(
    st: &QueryState,
    p: &FindParams,
) -> Result<(Vec<StoredTrace>, OwnedSemaphorePermit), Response> {
    let mut q = parse_find(p).map_err(IntoResponse::into_response)?;
    let slot = st.budget.slot().await?;
    q.limit = q.limit.min(st.budget.max_traces);
    let (store, max_spans) = (st.store.clone(), st.budget.max_spans);
    let traces = blocking_v3(move || {
        let ids = store.find_trace_ids(&q)?;
        Ok(store.traces_within(&ids, max_spans)?.traces)
    })
    .await?;
    Ok((traces, slot))
}

async fn find_traces(State(st): State<QueryState>, Query(p): Query<FindParams>) -> Response {
    match find(&st, &p).await {
        Ok((traces, slot)) => traces_answer(traces, slot),
        Err(r) => r,
    }
}

/// One service's part of a trace.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSummary {
    pub name: String,
    pub span_count: u32,
    pub error_span_count: u32,
}

/// What a search result row shows (Jaeger's `TraceSummary`).
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TraceSummary {
    pub trace_id: String,
    pub root_service_name: String,
    pub root_operation_name: String,
    /// Nanoseconds since the epoch, as a decimal string (proto3 JSON for fixed64).
    pub min_start_time_unix_nano: String,
    pub max_end_time_unix_nano: String,
    pub span_count: u32,
    pub error_span_count: u32,
    pub orphan_span_count: u32,
    pub services: Vec<ServiceSummary>,
}

/// The summary of one trace: the root is the earliest span without a parent in it.
pub fn summary(t: &StoredTrace) -> TraceSummary {
    let ids: HashSet<&[u8]> = t.spans.iter().map(|s| s.span.span_id.as_slice()).collect();
    let orphan = |s: &crate::model::StoredSpan| {
        !s.span.parent_span_id.is_empty() && !ids.contains(s.span.parent_span_id.as_slice())
    };
    let root = t
        .spans
        .iter()
        .filter(|s| s.span.parent_span_id.is_empty())
        .chain(t.spans.iter().filter(|s| orphan(s)))
        .min_by_key(|s| (s.span.parent_span_id.len(), s.span.start_time_unix_nano));
    let mut services: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for s in &t.spans {
        let e = services.entry(service_of(&s.origin.resource)).or_default();
        e.0 += 1;
        e.1 += u32::from(is_error(&s.span));
    }
    let min = t.spans.iter().map(|s| s.span.start_time_unix_nano).min();
    let max = t.spans.iter().map(|s| s.span.end_time_unix_nano).max();
    TraceSummary {
        trace_id: meshtrace_proto::TraceId(t.trace_id).to_string(),
        root_service_name: root
            .map(|s| service_of(&s.origin.resource))
            .unwrap_or_default(),
        root_operation_name: root.map(|s| s.span.name.clone()).unwrap_or_default(),
        min_start_time_unix_nano: min.map(|v| v.to_string()).unwrap_or_default(),
        max_end_time_unix_nano: max.map(|v| v.to_string()).unwrap_or_default(),
        span_count: t.spans.len() as u32,
        error_span_count: t.spans.iter().filter(|s| is_error(&s.span)).count() as u32,
        orphan_span_count: t.spans.iter().filter(|s| orphan(s)).count() as u32,
        services: services
            .into_iter()
            .map(|(name, (n, e))| ServiceSummary {
                name,
                span_count: n,
                error_span_count: e,
            })
            .collect(),
    }
}

#[derive(Serialize)]
struct Summaries {
    summaries: Vec<TraceSummary>,
}

async fn find_summaries(State(st): State<QueryState>, Query(p): Query<FindParams>) -> Response {
    match find(&st, &p).await {
        Ok((traces, _slot)) => json(
            StatusCode::OK,
            &Summaries {
                summaries: traces.iter().map(summary).collect(),
            },
        ),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests;
