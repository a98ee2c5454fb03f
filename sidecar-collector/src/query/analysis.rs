//! The analysis endpoints, on the `meshtrace-analysis` crate (the UI runs the
//! same crate compiled to wasm for traces it has in hand):
//!
//! - `GET /api/analysis/critical-path/{trace_id}`: the trace's critical path
//!   (clock skew adjusted first), each span's self time and critical-path time,
//!   and what was worked around (missing parents, skew).
//! - `GET /api/analysis/hotspots?service=…`: for the traces a v1 search finds
//!   (same parameters; `limit` up to `HOTSPOT_MAX_TRACES`), or for the traces
//!   given as repeated `traceID` (those picked in the UI's search results),
//!   which (service, operation) pairs hold how much of the end-to-end latency
//!   on the critical path. Bounded: traces are read and folded in chunks under the answer's span
//!   budget, within `HOTSPOT_TIME_BUDGET`; what was left out is said.
//! - `GET /api/analysis/service-map?lookback=…` (or `start`/`end`, µs): the
//!   service graph over a time range from the per-minute edge history: each
//!   edge's request rate (sampled and adjusted), error rate and p95.
//! - `GET /api/analysis/compare-windows?service=…`: a window against a baseline
//!   window for a service (and operation): percentiles, error rate, throughput
//!   and their deltas, and the attribute values over-represented in the
//!   window's slow or failed spans. Bounded like hotspots.
//! - `GET /api/analysis/sampling?lookback=…`: per service the strategy in force
//!   (file and adaptive, Jaeger's JSON), its server spans per second as stored
//!   and adjusted for sampling, the effective probability, and the strategies'
//!   change log.
//! - `GET /api/analysis/diff?a=…&b=…`: two traces merged by their (service,
//!   operation) paths, each node with both counts and durations and the delta,
//!   nodes on one side only marked.

use super::answer::Hold;
use super::{bounds, params::parse_trace_id, v3, QueryState, Search, SearchParams};
use crate::model::{service_of, StoredTrace};
use crate::store::{ReadCtl, StoreError};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use axum_extra::extract::Query;
use meshtrace_analysis::hotspots::{Hotspot, Hotspots};
use meshtrace_analysis::report::{critical_path_report, process_of};
use meshtrace_analysis::windows::{Attributes, SpanFacts};
use meshtrace_analysis::Span;
use serde::Serialize;

pub fn routes() -> Router<QueryState> {
    Router::new()
        .route(
            "/api/analysis/critical-path/{trace_id}",
            get(critical_path_of),
        )
        .route("/api/analysis/hotspots", get(hotspots))
        .route("/api/analysis/diff", get(diff))
        .route("/api/analysis/service-map", get(service_map))
        .route("/api/analysis/compare-windows", get(compare_windows))
        .route("/api/analysis/sampling", get(sampling_page))
}

/// Traces one hotspots answer folds in at most.
pub const HOTSPOT_MAX_TRACES: usize = 2000;
/// Traces read per store call.
const HOTSPOT_CHUNK: usize = 100;
/// How long one hotspots answer may read and compute.
pub const HOTSPOT_TIME_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

fn id_u64(b: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(b).ok().map(u64::from_be_bytes)
}

/// A read's hold in the analysis endpoints' error shape (v3's).
async fn begin(st: &QueryState) -> Result<Hold, Response> {
    st.budget.begin_in(v3::error).await
}

/// What one analysis span holds (its strings, its slot in a `Vec` that may double).
fn analysis_span_cost(s: &Span) -> u64 {
    (2 * std::mem::size_of::<Span>() + s.service.len() + s.operation.len() + s.process.len()) as u64
}

/// [`analysis_spans`], charged to `ctl`.
fn charged_spans(t: &StoredTrace, ctl: &ReadCtl) -> Result<Vec<Span>, StoreError> {
    let spans = analysis_spans(t);
    ctl.charge(spans.iter().map(analysis_span_cost).sum())?;
    Ok(spans)
}

/// How [`each_trace`] went: traces handed over, left out for memory, and why it
/// stopped early (the time budget), if it did.
#[derive(Default)]
struct Walked {
    done: usize,
    too_big: usize,
    stopped: Option<String>,
}

/// Reads `ids` in chunks and hands each whole trace to `f`; what a chunk held
/// is given back to `ctl` once it is handed over. Traces a chunk could not hold
/// whole are read again alone; one that does not fit alone in the read's memory
/// is left out and counted (an analysis of part of a trace would mislead).
/// Stops early, saying so, past `HOTSPOT_TIME_BUDGET`.
fn each_trace(
    store: &dyn crate::store::SpanReader,
    ids: &[[u8; 16]],
    max_spans: usize,
    ctl: &ReadCtl,
    mut f: impl FnMut(&StoredTrace) -> Result<(), StoreError>,
) -> Result<Walked, StoreError> {
    let started = std::time::Instant::now();
    let mut w = Walked::default();
    let mut read = |chunk: &[[u8; 16]], w: &mut Walked| -> Result<Vec<[u8; 16]>, StoreError> {
        let before = ctl.used();
        // A quarter of what is left stays free while the chunk is read: the
        // work `f` does on each trace needs room too.
        let headroom = ctl.limit().saturating_sub(before) / 4;
        let kept = ctl.try_charge(headroom);
        let set = store.traces_within(chunk, max_spans, ctl);
        if kept {
            ctl.release(headroom);
        }
        let set = set?;
        let mut again = Vec::new();
        for t in &set.traces {
            if t.truncated {
                again.push(t.trace_id);
            } else {
                f(t)?;
                w.done += 1;
            }
        }
        if set.left_out > 0 {
            again.extend(
                chunk
                    .iter()
                    .filter(|id| !set.traces.iter().any(|t| &t.trace_id == *id)),
            );
        }
        drop(set);
        ctl.release(ctl.used().saturating_sub(before));
        Ok(again)
    };
    for chunk in ids.chunks(HOTSPOT_CHUNK) {
        if started.elapsed() > HOTSPOT_TIME_BUDGET {
            w.stopped = Some(format!(
                "stopped after {} of {} traces: the {} s time budget ran out",
                w.done,
                ids.len(),
                HOTSPOT_TIME_BUDGET.as_secs()
            ));
            break;
        }
        for id in read(chunk, &mut w)? {
            if !read(&[id], &mut w)?.is_empty() {
                w.too_big += 1;
            }
        }
    }
    Ok(w)
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
            let process = process_of(&service, attr);
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

async fn critical_path_of(State(st): State<QueryState>, Path(id): Path<String>) -> Response {
    let Some(tid) = parse_trace_id(&id) else {
        return v3::error(
            StatusCode::BAD_REQUEST,
            format!("malformed parameter trace_id: {id:?} is not a trace id"),
        );
    };
    let hold = match begin(&st).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let (store, max_spans) = (st.store.clone(), st.budget.max_spans);
    let report = hold
        .run(move |ctl| {
            let set = store.traces_within(&[tid], max_spans, ctl)?;
            let Some(stored) = set.traces.first() else {
                return Ok(None);
            };
            let spans = charged_spans(stored, ctl)?;
            ctl.check()?;
            Ok(Some(critical_path_report(
                meshtrace_proto::TraceId(stored.trace_id).to_string(),
                spans,
            )))
        })
        .await;
    match report {
        Ok(Some(r)) => Json(r).into_response(),
        Ok(None) => v3::error(StatusCode::NOT_FOUND, "trace not found"),
        Err(r) => r,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HotspotsAnswer {
    /// Traces folded in.
    traces: u64,
    /// Their end-to-end latency, summed (ns).
    total_ns: i64,
    hotspots: Vec<Hotspot>,
    /// Why fewer traces than asked were analysed, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    truncated: Option<String>,
}

async fn hotspots(State(st): State<QueryState>, Query(p): Query<SearchParams>) -> Response {
    // A search, or the traces picked in the search results (repeated `traceID`).
    let (mut query, mut picked) = (None, Vec::new());
    match super::parse_search(&p, super::now_us()) {
        Ok(Search::Query(q)) => query = Some(q),
        Ok(Search::Ids(ids)) => picked = ids,
        Err(m) => return v3::error(StatusCode::BAD_REQUEST, m),
    };
    let asked = query.as_ref().map_or(picked.len(), |q| q.limit);
    if let Some(q) = query.as_mut() {
        q.limit = q.limit.min(HOTSPOT_MAX_TRACES);
    }
    picked.sort_unstable();
    picked.dedup();
    picked.truncate(HOTSPOT_MAX_TRACES);
    let hold = match begin(&st).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let (store, max_spans) = (st.store.clone(), st.budget.max_spans);
    let result = hold
        .run(move |ctl| {
            let ids = match &query {
                Some(q) => store.find_trace_ids(q, ctl)?,
                None => picked,
            };
            let mut h = Hotspots::new(500, 1000);
            let walked = each_trace(&*store, &ids, max_spans, ctl, |t| {
                let spans = charged_spans(t, ctl)?;
                let cost = spans.iter().map(analysis_span_cost).sum();
                h.add(&meshtrace_proto::TraceId(t.trace_id).to_string(), spans);
                ctl.release(cost);
                Ok(())
            })?;
            let mut notes: Vec<String> = Vec::new();
            if asked > HOTSPOT_MAX_TRACES {
                notes.push(match query {
                    Some(_) => format!("limit {asked} is above {HOTSPOT_MAX_TRACES} traces: the newest {HOTSPOT_MAX_TRACES} were analysed"),
                    None => format!("{asked} traces were given: the first {HOTSPOT_MAX_TRACES} (by id) were analysed"),
                });
            }
            notes.extend(walked.stopped);
            if walked.too_big > 0 {
                notes.push(format!(
                    "{} traces were left out: each is larger than one query may hold (query.max_bytes / query.max_concurrent: {} bytes)",
                    walked.too_big,
                    ctl.limit()
                ));
            }
            Ok((h, (!notes.is_empty()).then(|| notes.join("; "))))
        })
        .await;
    match result {
        Ok((h, truncated)) => Json(HotspotsAnswer {
            traces: h.traces,
            total_ns: h.total_ns,
            hotspots: h.ranked(),
            truncated,
        })
        .into_response(),
        Err(r) => r,
    }
}

#[derive(serde::Deserialize)]
struct DiffParams {
    a: Option<String>,
    b: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DiffAnswer {
    a: String,
    b: String,
    nodes: Vec<meshtrace_analysis::diff::DiffNode>,
}

async fn diff(State(st): State<QueryState>, Query(p): Query<DiffParams>) -> Response {
    let mut ids = Vec::new();
    for (name, v) in [("a", &p.a), ("b", &p.b)] {
        match v.as_deref().and_then(parse_trace_id) {
            Some(id) => ids.push(id),
            None => {
                return v3::error(
                    StatusCode::BAD_REQUEST,
                    format!("malformed parameter {name}: a trace id is required"),
                )
            }
        }
    }
    let hold = match begin(&st).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let (store, max_spans) = (st.store.clone(), st.budget.max_spans);
    let answer = hold
        .run(move |ctl| {
            let set = store.traces_within(&ids, max_spans, ctl)?;
            let find = |id: &[u8; 16]| set.traces.iter().find(|t| &t.trace_id == id);
            let (Some(a), Some(b)) = (find(&ids[0]), find(&ids[1])) else {
                return Ok(None);
            };
            let (sa, sb) = (charged_spans(a, ctl)?, charged_spans(b, ctl)?);
            ctl.check()?;
            let nodes = meshtrace_analysis::diff::diff(sa, sb);
            ctl.charge(
                nodes
                    .iter()
                    .map(|n| (128 + n.service.len() + n.operation.len()) as u64)
                    .sum(),
            )?;
            Ok(Some(DiffAnswer {
                a: meshtrace_proto::TraceId(a.trace_id).to_string(),
                b: meshtrace_proto::TraceId(b.trace_id).to_string(),
                nodes,
            }))
        })
        .await;
    match answer {
        Ok(Some(d)) => Json(d).into_response(),
        Ok(None) => v3::error(StatusCode::NOT_FOUND, "trace not found"),
        Err(r) => r,
    }
}

#[derive(serde::Deserialize)]
struct MapParams {
    start: Option<String>,
    end: Option<String>,
    lookback: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MapEdge {
    client: String,
    server: String,
    connection_type: String,
    requests: u64,
    failed: u64,
    requests_per_second: f64,
    adjusted_per_second: f64,
    error_rate: f64,
    /// p95 of the server side's duration (ms); absent without requests.
    p95_ms: Option<f64>,
}

/// (client, server, connection type).
type EdgeKey = (String, String, String);
/// (requests, failed, adjusted requests, server-duration bucket counts).
type EdgeSums = (u64, u64, f64, Vec<f64>);

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceMap {
    start_us: i64,
    end_us: i64,
    services: Vec<String>,
    edges: Vec<MapEdge>,
}

async fn service_map(State(st): State<QueryState>, Query(p): Query<MapParams>) -> Response {
    let Some(metrics) = st.metrics.clone() else {
        return v3::error(
            StatusCode::NOT_IMPLEMENTED,
            "the service map needs span metrics (metrics.enabled is false)",
        );
    };
    let window = (|| {
        let lookback = match p.lookback.as_deref().filter(|s| !s.is_empty()) {
            None => 3_600_000_000,
            Some(l) => bounds::go_duration_us("lookback", l, true)?,
        };
        bounds::window_us(
            ("start", p.start.as_deref()),
            ("end", p.end.as_deref()),
            lookback,
            super::now_us(),
        )
    })();
    let (start_us, end_us) = match window {
        Ok(w) => w,
        Err(m) => return v3::error(StatusCode::BAD_REQUEST, m),
    };
    if start_us == end_us {
        return v3::error(StatusCode::BAD_REQUEST, "start must be before end");
    }
    let hold = match begin(&st).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let (from, to) = (start_us / 1_000_000 - 59, end_us / 1_000_000);
    let m = metrics.clone();
    let map = hold
        .run(move |ctl| {
            let rows = m.edge_history(from, to, ctl)?;
            Ok(service_map_of(
                rows,
                start_us,
                end_us,
                &m.settings().bounds_ms,
            ))
        })
        .await;
    match map {
        Ok(map) => Json(map).into_response(),
        Err(r) => r,
    }
}

/// The map of the edge rows of `[start_us, end_us]`.
fn service_map_of(
    rows: Vec<crate::store::history::EdgeMinuteRow>,
    start_us: i64,
    end_us: i64,
    bounds: &[f64],
) -> ServiceMap {
    let window_s = ((end_us - start_us) as f64 / 1e6).max(1.0);
    let mut by_edge: std::collections::BTreeMap<EdgeKey, EdgeSums> =
        std::collections::BTreeMap::new();
    for r in rows {
        let e = by_edge
            .entry((r.client, r.server, r.connection_type))
            .or_default();
        e.0 += r.requests;
        e.1 += r.failed;
        e.2 += r.adjusted;
        if e.3.len() < r.buckets.len() {
            e.3.resize(r.buckets.len(), 0.0);
        }
        for (a, b) in e.3.iter_mut().zip(&r.buckets) {
            *a += *b as f64;
        }
    }
    let mut services = std::collections::BTreeSet::new();
    let edges = by_edge
        .into_iter()
        .map(
            |((client, server, connection_type), (req, failed, adjusted, buckets))| {
                services.insert(client.clone());
                services.insert(server.clone());
                MapEdge {
                    client,
                    server,
                    connection_type,
                    requests: req,
                    failed,
                    requests_per_second: req as f64 / window_s,
                    adjusted_per_second: adjusted / window_s,
                    error_rate: if req > 0 {
                        failed as f64 / req as f64
                    } else {
                        0.0
                    },
                    p95_ms: crate::metrics::spm::quantile_ms(0.95, &buckets, bounds),
                }
            },
        )
        .collect();
    ServiceMap {
        start_us,
        end_us,
        services: services.into_iter().collect(),
        edges,
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct WindowParams {
    service: Option<String>,
    operation: Option<String>,
    /// The window, µs since the epoch (default: the last hour).
    start: Option<String>,
    end: Option<String>,
    /// The baseline, µs (default: the window moved back by `baselineOffset`).
    baseline_start: Option<String>,
    baseline_end: Option<String>,
    /// Go duration, default 24h.
    baseline_offset: Option<String>,
    /// Traces read per side at most (default 500, at most 2,000).
    limit: Option<String>,
}

fn span_facts(
    t: &StoredTrace,
    service: &str,
    operation: Option<&str>,
    names: &mut Attributes,
    ctl: &ReadCtl,
) -> Result<Vec<SpanFacts>, StoreError> {
    let mut out = Vec::new();
    for s in t
        .spans
        .iter()
        .filter(|s| service_of(&s.origin.resource) == service)
        .filter(|s| operation.is_none_or(|o| s.span.name == o))
    {
        let mut attributes = Vec::new();
        for kv in s
            .span
            .attributes
            .iter()
            .chain(&s.origin.resource.attributes)
        {
            if kv.key == "service.name" {
                continue;
            }
            let Some(text) = kv.value.as_ref().and_then(crate::model::value_text) else {
                continue;
            };
            let (id, new) = names.intern(&kv.key, &text);
            if new {
                // Held once, in the table (and in a map beside it).
                ctl.charge(2 * (kv.key.len() + text.len()) as u64 + 128)?;
            }
            attributes.push(id);
        }
        ctl.charge((2 * std::mem::size_of::<SpanFacts>() + 4 * attributes.capacity()) as u64)?;
        out.push(SpanFacts {
            duration_ns: (s.span.end_time_unix_nano as i64 - s.span.start_time_unix_nano as i64)
                .max(0),
            error: crate::model::is_error(&s.span),
            attributes,
        });
    }
    Ok(out)
}

/// The comparison, and why fewer traces than found were compared, if so.
#[derive(Serialize)]
struct WindowsAnswer {
    #[serde(flatten)]
    comparison: meshtrace_analysis::windows::WindowComparison,
    #[serde(skip_serializing_if = "Option::is_none")]
    truncated: Option<String>,
}

async fn compare_windows(State(st): State<QueryState>, Query(p): Query<WindowParams>) -> Response {
    let bad = |m: String| v3::error(StatusCode::BAD_REQUEST, m);
    let Some(service) = p.service.clone().filter(|s| !s.is_empty()) else {
        return bad("malformed parameter service: a service name is required".into());
    };
    let parsed = (|| -> Result<(i64, i64, i64, i64, usize), String> {
        let (start, end) = bounds::window_us(
            ("start", p.start.as_deref()),
            ("end", p.end.as_deref()),
            3_600_000_000,
            super::now_us(),
        )?;
        let offset = match p.baseline_offset.as_deref().filter(|s| !s.is_empty()) {
            None => 86_400_000_000,
            Some(o) => bounds::go_duration_us("baselineOffset", o, false)?,
        };
        let (bstart, bend) = bounds::window_us(
            ("baselineStart", p.baseline_start.as_deref()),
            ("baselineEnd", p.baseline_end.as_deref()),
            end.saturating_sub(start),
            end.saturating_sub(offset).max(0),
        )?;
        if start >= end || bstart >= bend {
            return Err("each window must start before it ends".into());
        }
        let limit = match p.limit.as_deref().filter(|s| !s.is_empty()) {
            None => 500,
            Some(l) => bounds::count("limit", l, HOTSPOT_MAX_TRACES)?,
        };
        Ok((start, end, bstart, bend, limit))
    })();
    let (start, end, bstart, bend, limit) = match parsed {
        Ok(x) => x,
        Err(m) => return bad(m),
    };
    let hold = match begin(&st).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let (store, max_spans) = (st.store.clone(), st.budget.max_spans);
    let operation = p.operation.clone().filter(|s| !s.is_empty());
    let result = hold
        .run(move |ctl| {
            let mut names = Attributes::default();
            let side = |from: i64, to: i64, names: &mut Attributes| -> Result<(Vec<_>, Walked), StoreError> {
                let q = crate::store::TraceQuery {
                    service: service.clone(),
                    operation: operation.clone(),
                    start_us: from,
                    end_us: to,
                    limit,
                    ..Default::default()
                };
                let ids = store.find_trace_ids(&q, ctl)?;
                let mut out = Vec::new();
                let walked = each_trace(&*store, &ids, max_spans, ctl, |t| {
                    out.extend(span_facts(t, &service, operation.as_deref(), names, ctl)?);
                    Ok(())
                })?;
                Ok((out, walked))
            };
            let (w, ww) = side(start, end, &mut names)?;
            let (b, bw) = side(bstart, bend, &mut names)?;
            ctl.check()?;
            let comparison = meshtrace_analysis::windows::compare(
                &w,
                (end - start) as f64 / 1e6,
                &b,
                (bend - bstart) as f64 / 1e6,
                &names,
                20,
                2,
            );
            let mut notes: Vec<String> = [ww.stopped, bw.stopped].into_iter().flatten().collect();
            let too_big = ww.too_big + bw.too_big;
            if too_big > 0 {
                notes.push(format!(
                    "{too_big} traces were left out: each is larger than one query may hold (query.max_bytes / query.max_concurrent: {} bytes)",
                    ctl.limit()
                ));
            }
            Ok(WindowsAnswer {
                comparison,
                truncated: (!notes.is_empty()).then(|| notes.join("; ")),
            })
        })
        .await;
    match result {
        Ok(c) => Json(c).into_response(),
        Err(r) => r,
    }
}

#[derive(serde::Deserialize)]
struct SamplingParams {
    lookback: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceSampling {
    service: String,
    /// What `/api/sampling?service=…` answers (Jaeger's JSON).
    strategy: Option<meshtrace_proto::sampling_json::StrategyResponse>,
    adaptive: bool,
    /// Server spans stored per second over the window, and adjusted for sampling.
    observed_per_second: f64,
    adjusted_per_second: f64,
    /// observed ÷ adjusted: the probability traffic was actually sampled with.
    effective_probability: Option<f64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SamplingPage {
    lookback_seconds: f64,
    services: Vec<ServiceSampling>,
    changes: Vec<crate::sampling::Change>,
}

async fn sampling_page(State(st): State<QueryState>, Query(p): Query<SamplingParams>) -> Response {
    let lookback_us = match p.lookback.as_deref().filter(|s| !s.is_empty()) {
        None => 3_600_000_000,
        Some(l) => match bounds::go_duration_us("lookback", l, true) {
            Ok(v) => v,
            Err(m) => return v3::error(StatusCode::BAD_REQUEST, m),
        },
    };
    let hold = match begin(&st).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let (store, metrics, sampling) = (st.store.clone(), st.metrics.clone(), st.sampling.clone());
    let page = hold
        .run(move |ctl| {
            let services = store.services(ctl)?;
            let now_s = super::now_us() / 1_000_000;
            let from = now_s - lookback_us / 1_000_000;
            let rows = match &metrics {
                Some(m) => m.history(&services, from - 59, now_s, ctl)?,
                None => Vec::new(),
            };
            // Server spans per service, summed once (not a scan of every row per service).
            let mut sums: std::collections::HashMap<&str, (f64, f64)> =
                std::collections::HashMap::new();
            for r in rows.iter().filter(|r| r.kind == 2) {
                let e = sums.entry(r.service.as_str()).or_default();
                e.0 += r.calls as f64;
                e.1 += r.adjusted_calls;
            }
            let seconds = (lookback_us as f64 / 1e6).max(1.0);
            let mut out = Vec::with_capacity(services.len());
            for service in &services {
                ctl.check()?;
                let (obs, adj) = sums.get(service.as_str()).copied().unwrap_or_default();
                let (strategy, adaptive) = match &sampling {
                    Some(p) => (
                        p.local_strategy(service)
                            .map(|r| crate::sampling::to_json(&r)),
                        p.adaptive_for(service),
                    ),
                    None => (None, false),
                };
                ctl.charge(
                    (512 + service.len()
                        + strategy
                            .as_ref()
                            .and_then(|s| s.operation_sampling.as_ref())
                            .map_or(0, |p| p.per_operation_strategies.len() * 128))
                        as u64,
                )?;
                out.push(ServiceSampling {
                    service: service.clone(),
                    strategy,
                    adaptive,
                    observed_per_second: obs / seconds,
                    adjusted_per_second: adj / seconds,
                    effective_probability: (adj > 0.0).then(|| obs / adj),
                });
            }
            Ok(SamplingPage {
                lookback_seconds: seconds,
                services: out,
                changes: sampling.as_ref().map(|p| p.changes()).unwrap_or_default(),
            })
        })
        .await;
    match page {
        Ok(p) => Json(p).into_response(),
        Err(r) => r,
    }
}
