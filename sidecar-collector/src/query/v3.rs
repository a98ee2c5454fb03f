//! Jaeger's api_v3 over HTTP/JSON (what the current Jaeger UI and Grafana's
//! Jaeger data source in its v3 mode call), beside v1: `/api/v3/services`,
//! `/api/v3/operations`, `/api/v3/traces/{trace_id}`, `/api/v3/traces` and
//! `/api/v3/trace-summaries`. Traces answer OTLP JSON (hex ids, nanosecond
//! times as decimal strings) wrapped in `{"result": …}` as Jaeger's gateway
//! does; errors are `{"error": {"httpCode": N, "message": "…"}}`.

use super::answer::Hold;
use super::duration::parse_go_duration_us;
use super::{params::parse_trace_id, QueryState};
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

/// A read's hold in v3's error shape.
async fn begin(st: &QueryState) -> Result<Hold, Response> {
    st.budget.begin_in(error).await
}

async fn services(State(st): State<QueryState>) -> Response {
    let hold = match begin(&st).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let store = st.store.clone();
    match hold.run(move |ctl| store.services(ctl)).await {
        Ok(services) => json(StatusCode::OK, &Services { services }),
        Err(r) => r,
    }
}

/// A query string as name/value pairs, read the way Jaeger's gateway reads
/// it: each parameter by its canonical camelCase name, else its deprecated
/// snake_case alias; a parameter given twice with different values is refused
/// (the gateway would silently take the first).
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// The first non-empty value under any of `names` (canonical first), with
    /// the name it came under.
    pub fn get(&self, names: &[&'static str]) -> Result<Option<(&'static str, &str)>, Refusal> {
        for name in names {
            let mut values = self
                .0
                .iter()
                .filter(|(k, v)| k == name && !v.is_empty())
                .map(|(_, v)| v.as_str());
            if let Some(first) = values.next() {
                if values.any(|v| v != first) {
                    return Err(malformed(
                        name,
                        "given more than once, with different values",
                    ));
                }
                return Ok(Some((name, first)));
            }
        }
        Ok(None)
    }
}

/// Canonical name and deprecated alias of every api_v3 query parameter.
mod names {
    pub const SERVICE: &[&str] = &["query.serviceName", "query.service_name"];
    /// `query.spanName`: what some Jaeger UI builds send for the operation.
    pub const OPERATION: &[&str] = &[
        "query.operationName",
        "query.operation_name",
        "query.spanName",
        "query.span_name",
    ];
    pub const TIME_MIN: &[&str] = &["query.startTimeMin", "query.start_time_min"];
    pub const TIME_MAX: &[&str] = &["query.startTimeMax", "query.start_time_max"];
    pub const SEARCH_DEPTH: &[&str] = &[
        "query.searchDepth",
        "query.search_depth",
        "query.num_traces",
        "query.numTraces",
    ];
    pub const DURATION_MIN: &[&str] = &["query.durationMin", "query.duration_min"];
    pub const DURATION_MAX: &[&str] = &["query.durationMax", "query.duration_max"];
    pub const QUERY_RAW: &[&str] = &["query.rawTraces", "query.raw_traces"];
    pub const ATTRIBUTES: &[&str] = &["query.attributes"];
    /// meshtrace's extension: `and` (default) or `or`.
    pub const ATTRIBUTES_OP: &[&str] = &["query.attributesOp", "query.attributes_op"];
    pub const START: &[&str] = &["startTime", "start_time"];
    pub const END: &[&str] = &["endTime", "end_time"];
    pub const RAW: &[&str] = &["rawTraces", "raw_traces"];
    pub const SPAN_KIND: &[&str] = &["spanKind", "span_kind"];
    pub const OPS_SERVICE: &[&str] = &["service"];
}

/// A span kind as api_v3 names it (`server`, or the enum's `SPAN_KIND_SERVER`).
fn span_kind_param(p: &Params) -> Result<Option<i32>, Refusal> {
    match p.get(names::SPAN_KIND)? {
        None => Ok(None),
        Some((name, k)) => {
            let plain = k
                .strip_prefix("SPAN_KIND_")
                .map(str::to_ascii_lowercase)
                .unwrap_or_else(|| k.to_string());
            kind_from_name(&plain)
                .map(Some)
                .ok_or_else(|| malformed(name, format!("unknown span kind {k:?}")))
        }
    }
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

async fn operations(State(st): State<QueryState>, Query(q): Query<Params>) -> Response {
    let service = match q.get(names::OPS_SERVICE) {
        Ok(Some((_, s))) => s.to_string(),
        Ok(None) => return malformed("service", "a service name is required").into_response(),
        Err(r) => return r.into_response(),
    };
    let want = match span_kind_param(&q) {
        Ok(k) => k,
        Err(r) => return r.into_response(),
    };
    let hold = match begin(&st).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let store = st.store.clone();
    match hold.run(move |ctl| store.operations(&service, ctl)).await {
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

/// Validated `FindTraces` / `FindTraceSummaries` parameters (camelCase or
/// their snake_case aliases), or the error answer naming the parameter.
pub fn parse_find(p: &Params) -> Result<TraceQuery, Refusal> {
    let (Some((min_name, min)), Some((max_name, max))) =
        (p.get(names::TIME_MIN)?, p.get(names::TIME_MAX)?)
    else {
        return Err(Refusal {
            status: StatusCode::BAD_REQUEST,
            message: "query.startTimeMin and query.startTimeMax are required".into(),
        });
    };
    let start_us = parse_rfc3339_us(min).map_err(|e| malformed(min_name, e))?;
    let end_us = parse_rfc3339_us(max).map_err(|e| malformed(max_name, e))?;
    if start_us > end_us {
        return Err(malformed(
            min_name,
            format!("{min:?} is after {max_name} {max:?}"),
        ));
    }
    let Some((_, service)) = p.get(names::SERVICE)? else {
        return Err(malformed("query.serviceName", "a service name is required"));
    };
    let limit = match p.get(names::SEARCH_DEPTH)? {
        Some((name, n)) => match n.parse::<usize>() {
            Ok(0) => return Err(malformed(name, "must be at least 1")),
            Ok(n) => n,
            Err(e) => return Err(malformed(name, e)),
        },
        None => 100,
    };
    let duration = |names: &[&'static str]| -> Result<Option<i64>, Refusal> {
        match p.get(names)? {
            None => Ok(None),
            Some((name, d)) => parse_go_duration_us(d)
                .map(Some)
                .ok_or_else(|| malformed(name, format!("time: invalid duration {d:?}"))),
        }
    };
    if let Some((name, r)) = p.get(names::QUERY_RAW)? {
        r.parse::<bool>().map_err(|e| malformed(name, e))?;
    }
    let tags = match p.get(names::ATTRIBUTES)? {
        None => Vec::new(),
        // A JSON object of strings (api_v3), or (meshtrace's extension, where a
        // key may repeat) a JSON array of [key, value] pairs.
        Some((name, j)) => match serde_json::from_str::<BTreeMap<String, String>>(j) {
            Ok(m) => m.into_iter().collect(),
            Err(e) => serde_json::from_str::<Vec<(String, String)>>(j).map_err(|_| {
                malformed(
                    name,
                    format!(
                        "not a JSON object of strings (or an array of [key, value] pairs): {e}"
                    ),
                )
            })?,
        },
    };
    let tags_any = match p.get(names::ATTRIBUTES_OP)? {
        None => false,
        Some((name, op)) => super::params::tags_op(Some(op)).map_err(|e| malformed(name, e))?,
    };
    Ok(TraceQuery {
        service: service.to_string(),
        operation: p.get(names::OPERATION)?.map(|(_, o)| o.to_string()),
        tags,
        tags_any,
        start_us,
        end_us,
        min_duration_us: duration(names::DURATION_MIN)?,
        max_duration_us: duration(names::DURATION_MAX)?,
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

fn traces_answer(traces: Vec<StoredTrace>, hold: Hold) -> Response {
    if traces.is_empty() {
        return error(StatusCode::NOT_FOUND, "No traces found");
    }
    super::answer::json_answer(hold, move |out| write_otlp(out, &traces))
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

async fn get_trace(
    State(st): State<QueryState>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> Response {
    let Some(tid) = parse_trace_id(&id) else {
        return malformed(
            "trace_id",
            format!("{id:?} is not a trace id (1 to 32 hex characters)"),
        )
        .into_response();
    };
    let checked = (|| -> Result<(), Refusal> {
        for names in [names::START, names::END] {
            if let Some((name, t)) = q.get(names)? {
                parse_rfc3339_us(t).map_err(|e| malformed(name, e))?;
            }
        }
        if let Some((name, r)) = q.get(names::RAW)? {
            r.parse::<bool>().map_err(|e| malformed(name, e))?;
        }
        Ok(())
    })();
    if let Err(r) = checked {
        return r.into_response();
    }
    let hold = match begin(&st).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let (store, max_spans) = (st.store.clone(), st.budget.max_spans);
    match hold
        .run(move |ctl| store.traces_within(&[tid], max_spans, ctl))
        .await
    {
        Ok(set) => traces_answer(set.traces, hold),
        Err(r) => r,
    }
}

/// The traces a search finds, and the read that found them (held until the
/// answer is written).
async fn find(st: &QueryState, p: &Params) -> Result<(Vec<StoredTrace>, Hold), Response> {
    let mut q = parse_find(p).map_err(IntoResponse::into_response)?;
    let hold = begin(st).await?;
    q.limit = q.limit.min(st.budget.max_traces);
    let (store, max_spans) = (st.store.clone(), st.budget.max_spans);
    let traces = hold
        .run(move |ctl| {
            let ids = store.find_trace_ids(&q, ctl)?;
            Ok(store.traces_within(&ids, max_spans, ctl)?.traces)
        })
        .await?;
    Ok((traces, hold))
}

async fn find_traces(State(st): State<QueryState>, Query(p): Query<Params>) -> Response {
    match find(&st, &p).await {
        Ok((traces, hold)) => traces_answer(traces, hold),
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

async fn find_summaries(State(st): State<QueryState>, Query(p): Query<Params>) -> Response {
    match find(&st, &p).await {
        Ok((traces, _hold)) => json(
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
