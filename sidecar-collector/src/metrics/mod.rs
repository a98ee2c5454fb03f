//! Metrics derived from stored spans: per (service, operation, span kind,
//! status) a call counter and a duration histogram, traces per service, the
//! service graph, and a per-minute history for Jaeger's SPM API. Counted both
//! as observed and adjusted for sampling (each span counts 1/p, p being the
//! probability its trace was sampled with). Every family is capped at
//! `metrics.max_series` label sets; beyond, spans fold into one series
//! labelled `otel_metric_overflow="true"` and are counted.
//!
//! Updated once per committed batch by the writer thread (one lock per batch);
//! exported on `/metrics` through the registry as a `Collector`.

pub mod export;
pub mod graph;
pub mod spm;

use crate::model::SpanRecord;
use crate::store::history::{edge_row_cost, minute_row_cost, EdgeMinuteRow, HistoryDb, MinuteRow};
use crate::store::ReadCtl;
use graph::{Graph, GraphSettings};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What to compute and how much of it to keep.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// Upper bounds of the duration buckets, milliseconds, ascending.
    pub bounds_ms: Vec<f64>,
    /// Label sets per family at most.
    pub max_series: usize,
    pub graph: GraphSettings,
    /// How long the per-minute history is kept, in seconds.
    pub history_retention_s: i64,
}

/// A call counter and a duration histogram.
#[derive(Debug, Clone)]
pub struct Series {
    pub calls: u64,
    /// Calls counted 1/p each.
    pub adjusted: f64,
    pub sum_ms: f64,
    /// Per bucket, not cumulative; the last is +Inf.
    pub buckets: Box<[u64]>,
}

impl Series {
    fn new(n: usize) -> Series {
        Series {
            calls: 0,
            adjusted: 0.0,
            sum_ms: 0.0,
            buckets: vec![0; n].into_boxed_slice(),
        }
    }

    fn add(&mut self, bucket: usize, ms: f64, weight: f64) {
        self.calls += 1;
        self.adjusted += weight;
        self.sum_ms += ms;
        if let Some(b) = self.buckets.get_mut(bucket) {
            *b += 1;
        }
    }

    fn merge(&mut self, o: &Series) {
        self.calls += o.calls;
        self.adjusted += o.adjusted;
        self.sum_ms += o.sum_ms;
        for (a, b) in self.buckets.iter_mut().zip(o.buckets.iter()) {
            *a += b;
        }
    }
}

/// (span kind, status code) → series, for one operation.
type Cells = Vec<(u8, u8, Series)>;

/// Series by service, operation, span kind and status, with a cap and an
/// overflow series. Nested maps keyed by `str` so a span is counted without
/// allocating.
#[derive(Debug)]
pub struct SeriesTable {
    pub services: HashMap<Box<str>, HashMap<Box<str>, Cells>>,
    len: usize,
    cap: usize,
    buckets: usize,
    pub overflow: Option<Series>,
    /// Spans folded into the overflow series.
    pub folded: u64,
}

impl SeriesTable {
    fn new(cap: usize, buckets: usize) -> SeriesTable {
        SeriesTable {
            services: HashMap::new(),
            len: 0,
            cap,
            buckets,
            overflow: None,
            folded: 0,
        }
    }

    /// Label sets held (the overflow series not counted).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn series(&mut self, service: &str, operation: &str, kind: u8, status: u8) -> &mut Series {
        let exists = self
            .services
            .get(service)
            .and_then(|ops| ops.get(operation))
            .is_some_and(|cells| cells.iter().any(|(k, s, _)| *k == kind && *s == status));
        if !exists {
            if self.len >= self.cap {
                self.folded += 1;
                let n = self.buckets;
                return self.overflow.get_or_insert_with(|| Series::new(n));
            }
            self.len += 1;
            self.services
                .entry(service.into())
                .or_default()
                .entry(operation.into())
                .or_default()
                .push((kind, status, Series::new(self.buckets)));
        }
        let n = self.buckets;
        match self
            .services
            .get_mut(service)
            .and_then(|ops| ops.get_mut(operation))
            .and_then(|cells| {
                cells
                    .iter_mut()
                    .find(|(k, s, _)| *k == kind && *s == status)
            }) {
            Some((_, _, s)) => s,
            // Unreachable: inserted above. Counted in the overflow rather than panicking.
            None => self.overflow.get_or_insert_with(|| Series::new(n)),
        }
    }
}

/// Observed and adjusted counts of one service.
#[derive(Debug, Clone, Copy, Default)]
pub struct Count {
    pub observed: u64,
    pub adjusted: f64,
}

/// The minute being accumulated for the history.
#[derive(Debug)]
struct Minute {
    start: i64,
    /// service → operation → one row per span kind.
    rows: HashMap<Box<str>, HashMap<Box<str>, Vec<MinuteRow>>>,
    len: usize,
    /// client → server → one row per connection type.
    edges: HashMap<Box<str>, HashMap<Box<str>, Vec<EdgeMinuteRow>>>,
    edge_count: usize,
}

impl Minute {
    fn new(start: i64) -> Minute {
        Minute {
            start,
            rows: HashMap::new(),
            len: 0,
            edges: HashMap::new(),
            edge_count: 0,
        }
    }
}

/// A finished minute: its span rows and edge rows.
type MinuteRows = (Vec<MinuteRow>, Vec<EdgeMinuteRow>);

/// Everything counted, behind one lock.
#[derive(Debug)]
pub struct State {
    pub spans: SeriesTable,
    /// Traces entering each service (root, server and consumer spans).
    pub traces: HashMap<Box<str>, Count>,
    pub traces_overflow: Count,
    pub traces_folded: u64,
    pub graph: Graph,
    minute: Minute,
    /// Spans the history could not keep (more label sets than max_series in a minute).
    pub history_folded: u64,
    /// History rows that could not be written (the store refused them).
    pub history_lost: u64,
}

/// The span metrics of one collector.
#[derive(Debug)]
pub struct SpanMetrics {
    settings: MetricsSettings,
    state: Mutex<State>,
    history: Option<Arc<HistoryDbHandle>>,
    /// Minutes shared with the other replicas on one bucket.
    shared: std::sync::OnceLock<crate::store::blocks::shared::Shared>,
}

/// The history file, shared with the SPM reader.
pub struct HistoryDbHandle(pub HistoryDb);

impl std::fmt::Debug for HistoryDbHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HistoryDb")
    }
}

/// The weight of a span: 1/p when its sampling probability is known and sane.
pub fn weight(p: Option<f64>) -> f64 {
    match p {
        Some(p) if p > 0.0 && p <= 1.0 => 1.0 / p,
        _ => 1.0,
    }
}

fn unix_now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn mono_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

impl SpanMetrics {
    /// Span metrics; with `history`, minutes are persisted there.
    pub fn new(settings: MetricsSettings, history: Option<HistoryDb>) -> SpanMetrics {
        let n = settings.bounds_ms.len() + 1;
        SpanMetrics {
            state: Mutex::new(State {
                spans: SeriesTable::new(settings.max_series, n),
                traces: HashMap::new(),
                traces_overflow: Count::default(),
                traces_folded: 0,
                graph: Graph::new(settings.graph, &settings.bounds_ms),
                minute: Minute::new(0),
                history_folded: 0,
                history_lost: 0,
            }),
            history: history.map(|h| Arc::new(HistoryDbHandle(h))),
            settings,
            shared: std::sync::OnceLock::new(),
        }
    }

    /// Shares finished minutes with the other replicas on the bucket: each
    /// publishes its own, and adds the others' to its history, so the Monitor
    /// tab (`/api/metrics/*`) of any replica shows the whole mesh (its minute
    /// in progress is this replica's alone until the others close it).
    pub fn share(&self, shared: crate::store::blocks::shared::Shared) {
        let _ = self.shared.set(shared);
    }

    /// Adds the other replicas' finished minutes not yet added (the last ten).
    fn import_shared(&self, minute: i64) {
        let (Some(shared), Some(h)) = (self.shared.get(), &self.history) else {
            return;
        };
        for m in (1..=10).map(|k| minute - 60 * k) {
            let index = (m / 60).max(0) as u64;
            let others = match shared.others(index) {
                Ok(o) => o,
                Err(error) => {
                    tracing::warn!(%error, "listing the other replicas' metrics minutes failed");
                    return;
                }
            };
            let fresh: Vec<String> = others
                .into_iter()
                .filter(|r| !h.0.imported(m, r).unwrap_or(true))
                .collect();
            if fresh.is_empty() {
                continue;
            }
            match shared.gather_from::<MinuteRows>(index, |r| fresh.iter().any(|f| f == r)) {
                Ok(found) => {
                    for (replica, (rows, edges)) in found {
                        if let Err(error) = h.0.import(m, &replica, &rows, &edges) {
                            tracing::warn!(%error, replica, "adding a replica's metrics minute failed");
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "reading the other replicas' metrics minutes failed")
                }
            }
        }
    }

    pub fn settings(&self) -> &MetricsSettings {
        &self.settings
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts committed spans (the writer thread calls this after each commit).
    pub fn record(&self, records: &[SpanRecord]) {
        self.record_at(records, unix_now_s(), mono_ms());
    }

    /// [`record`](Self::record) at a given wall-clock second and monotonic millisecond.
    pub fn record_at(&self, records: &[SpanRecord], now_s: i64, now_ms: u64) {
        let bounds = &self.settings.bounds_ms;
        let minute = now_s - now_s.rem_euclid(60);
        let mut finished = None;
        {
            let mut st = self.lock();
            if st.minute.start != minute {
                finished = self.take_minute(&mut st, minute);
            }
            let State {
                spans,
                traces,
                traces_overflow,
                traces_folded,
                graph,
                minute: m,
                history_folded,
                ..
            } = &mut *st;
            for r in records {
                let w = weight(r.sampled_probability);
                let ms = r.duration_us.max(0) as f64 / 1000.0;
                let bucket = bounds.partition_point(|b| *b < ms);
                let kind = r.kind.clamp(0, 5) as u8;
                let status = r.status_code.clamp(0, 2) as u8;
                spans
                    .series(&r.service, &r.operation, kind, status)
                    .add(bucket, ms, w);
                if r.parent_span_id.is_none() || kind == 2 || kind == 5 {
                    let known = traces.contains_key(r.service.as_str());
                    let c = if known || traces.len() < self.settings.max_series {
                        if !known {
                            traces.insert(r.service.as_str().into(), Count::default());
                        }
                        traces.get_mut(r.service.as_str())
                    } else {
                        None
                    };
                    let c = c.unwrap_or_else(|| {
                        *traces_folded += 1;
                        traces_overflow
                    });
                    c.observed += 1;
                    c.adjusted += w;
                }
                let paired = graph.observe(
                    r.trace_id,
                    r.span_id,
                    r.parent_span_id,
                    r.kind,
                    &r.service,
                    ms / 1000.0,
                    r.error,
                    w,
                    now_ms,
                );
                if let (Some(p), true) = (paired, self.history.is_some()) {
                    let b = bounds.partition_point(|x| *x < p.server_s * 1000.0);
                    add_edge_to_minute(m, &p, self.settings.graph.max_edges, bounds.len() + 1, b)
                        .unwrap_or_else(|| *history_folded += 1);
                }
                if self.history.is_some() {
                    add_to_minute(m, r, self.settings.max_series, bounds.len() + 1, bucket, w)
                        .unwrap_or_else(|| *history_folded += 1);
                }
            }
            graph.expire(now_ms);
        }
        if let Some(rows) = finished {
            self.persist(&rows);
        }
    }

    /// Starts minute `next`; returns the finished minute's rows.
    fn take_minute(&self, st: &mut State, next: i64) -> Option<MinuteRows> {
        let old = std::mem::replace(&mut st.minute, Minute::new(next));
        (old.len > 0 || old.edge_count > 0).then(|| {
            (
                old.rows
                    .into_values()
                    .flat_map(|ops| ops.into_values().flatten())
                    .collect(),
                old.edges
                    .into_values()
                    .flat_map(|servers| servers.into_values().flatten())
                    .collect(),
            )
        })
    }

    fn persist(&self, (rows, edges): &MinuteRows) {
        let Some(h) = &self.history else {
            return;
        };
        if let Some(shared) = self.shared.get() {
            let minute = rows
                .first()
                .map(|r| r.minute)
                .or_else(|| edges.first().map(|e| e.minute));
            if let Some(m) = minute {
                if let Err(error) = shared.publish((m / 60).max(0) as u64, &(rows, edges)) {
                    tracing::warn!(%error, "sharing the metrics minute with the other replicas failed");
                }
            }
        }
        let written = h.0.add_minute(rows, edges);
        if let Err(error) = written {
            tracing::error!(%error, rows = rows.len() + edges.len(), "writing the metrics history failed");
            self.lock().history_lost += (rows.len() + edges.len()) as u64;
        }
    }

    /// Service-graph edge rows for minutes in `[from, to]` (unix seconds), the
    /// minute in progress included.
    pub fn edge_history(
        &self,
        from: i64,
        to: i64,
        ctl: &ReadCtl,
    ) -> Result<Vec<EdgeMinuteRow>, crate::store::StoreError> {
        let mut rows = match &self.history {
            Some(h) => h.0.read_edges(from, to, ctl)?,
            None => Vec::new(),
        };
        let st = self.lock();
        if st.minute.start >= from && st.minute.start <= to {
            // Charged before it is copied: the lock is held for the copy only.
            let live = st.minute.edges.values().flat_map(|s| s.values().flatten());
            ctl.charge(live.clone().map(edge_row_cost).sum())?;
            rows.extend(live.cloned());
        }
        Ok(rows)
    }

    /// Writes the finished minute if the clock has moved on (a tick calls this,
    /// so a minute is written even when no span follows it), saves the minute
    /// in progress as it stands (a crash loses at most one tick of it), and
    /// drops history older than the retention.
    pub fn flush_due(&self) {
        let now = unix_now_s();
        let minute = now - now.rem_euclid(60);
        let (finished, live) = {
            let mut st = self.lock();
            st.graph.expire(mono_ms());
            let finished = if st.minute.start != minute {
                self.take_minute(&mut st, minute)
            } else {
                None
            };
            // A copy of the minute in progress (at most `max_series` rows and
            // `service_graph_max_edges` edges), written outside the lock.
            let live = self.history.as_ref().map(|_| {
                (
                    st.minute
                        .rows
                        .values()
                        .flat_map(|ops| ops.values().flatten())
                        .cloned()
                        .collect::<Vec<_>>(),
                    st.minute
                        .edges
                        .values()
                        .flat_map(|s| s.values().flatten())
                        .cloned()
                        .collect::<Vec<_>>(),
                )
            });
            (finished, live)
        };
        if let Some(rows) = finished {
            self.persist(&rows);
        }
        if let (Some(h), Some((rows, edges))) = (&self.history, live) {
            if let Err(error) = h.0.save_live(&rows, &edges) {
                tracing::warn!(%error, "saving the metrics minute in progress failed");
            }
        }
        self.import_shared(minute);
        if let Some(h) = &self.history {
            if let Err(error) = h.0.prune(minute - self.settings.history_retention_s) {
                tracing::warn!(%error, "pruning the metrics history failed");
            }
        }
    }

    /// Writes the minute in progress (at shutdown).
    pub fn flush_now(&self) {
        let rows = {
            let mut st = self.lock();
            let start = st.minute.start;
            self.take_minute(&mut st, start)
        };
        if let Some(rows) = rows {
            self.persist(&rows);
        }
    }

    /// History rows of `services` for minutes in `[from, to]` (unix seconds),
    /// the minute in progress included.
    ///
    /// `services` must not repeat a name (each is read once per name given).
    /// Rows are charged to `ctl`, the minute in progress before it is copied
    /// under the metrics lock.
    pub fn history(
        &self,
        services: &[String],
        from: i64,
        to: i64,
        ctl: &ReadCtl,
    ) -> Result<Vec<MinuteRow>, crate::store::StoreError> {
        let mut rows = match &self.history {
            Some(h) => h.0.read(services, from, to, ctl)?,
            None => Vec::new(),
        };
        let st = self.lock();
        if st.minute.start >= from && st.minute.start <= to {
            for service in services {
                if let Some(ops) = st.minute.rows.get(service.as_str()) {
                    ctl.charge(ops.values().flatten().map(minute_row_cost).sum())?;
                    rows.extend(ops.values().flatten().cloned());
                }
            }
        }
        Ok(rows)
    }
}

fn add_edge_to_minute(
    m: &mut Minute,
    p: &graph::Paired,
    cap: usize,
    n: usize,
    bucket: usize,
) -> Option<()> {
    let exists = m
        .edges
        .get(&*p.client)
        .and_then(|s| s.get(&*p.server))
        .is_some_and(|v| v.iter().any(|e| e.connection_type == p.connection_type));
    if !exists {
        if m.edge_count >= cap {
            return None;
        }
        m.edge_count += 1;
        m.edges
            .entry(p.client.clone())
            .or_default()
            .entry(p.server.clone())
            .or_default()
            .push(EdgeMinuteRow {
                minute: m.start,
                client: p.client.to_string(),
                server: p.server.to_string(),
                connection_type: p.connection_type.to_string(),
                buckets: vec![0; n],
                ..EdgeMinuteRow::default()
            });
    }
    let e = m
        .edges
        .get_mut(&*p.client)?
        .get_mut(&*p.server)?
        .iter_mut()
        .find(|e| e.connection_type == p.connection_type)?;
    e.requests += 1;
    e.adjusted += p.weight;
    if p.failed {
        e.failed += 1;
    }
    if let Some(b) = e.buckets.get_mut(bucket) {
        *b += 1;
    }
    Some(())
}

fn add_to_minute(
    m: &mut Minute,
    r: &SpanRecord,
    cap: usize,
    n: usize,
    bucket: usize,
    w: f64,
) -> Option<()> {
    let exists = m
        .rows
        .get(r.service.as_str())
        .and_then(|ops| ops.get(r.operation.as_str()))
        .is_some_and(|cells| cells.iter().any(|c| c.kind == r.kind));
    if !exists {
        if m.len >= cap {
            return None;
        }
        m.len += 1;
        m.rows
            .entry(r.service.as_str().into())
            .or_default()
            .entry(r.operation.as_str().into())
            .or_default()
            .push(MinuteRow {
                minute: m.start,
                service: r.service.clone(),
                operation: r.operation.clone(),
                kind: r.kind,
                buckets: vec![0; n],
                ..MinuteRow::default()
            });
    }
    let row = m
        .rows
        .get_mut(r.service.as_str())?
        .get_mut(r.operation.as_str())?
        .iter_mut()
        .find(|c| c.kind == r.kind)?;
    row.calls += 1;
    row.adjusted_calls += w;
    if r.error {
        row.errors += 1;
        row.adjusted_errors += w;
    }
    if let Some(b) = row.buckets.get_mut(bucket) {
        *b += 1;
    }
    Some(())
}

#[cfg(test)]
mod tests;
