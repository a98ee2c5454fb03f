//! Span storage behind a writer and a reader interface (as Jaeger's storage
//! API separates them), so another backend can be added and pass the same
//! test suite (`store::suite`). Imports only `model`.

pub mod history;
pub mod sqlite;
#[cfg(test)]
pub mod suite;

use crate::model::{SpanRecord, StoredSpan, StoredTrace};

/// Trace search parameters (Jaeger's `/api/traces`).
#[derive(Debug, Clone, Default)]
pub struct TraceQuery {
    pub service: String,
    pub operation: Option<String>,
    /// All must match (on the same span).
    pub tags: Vec<(String, String)>,
    pub start_us: i64,
    pub end_us: i64,
    pub min_duration_us: Option<i64>,
    pub max_duration_us: Option<i64>,
    pub limit: usize,
}

/// Traces read within a span budget.
#[derive(Debug, Default)]
pub struct TraceSet {
    pub traces: Vec<StoredTrace>,
    /// Asked-for traces that have spans but none fit the budget.
    pub left_out: usize,
}

/// A dependency edge: (parent service, child service, calls).
pub type Edge = (String, String, u64);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("storage I/O at {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("stored span is corrupt: {0}")]
    Corrupt(String),
}

/// The write side: the pipeline's writer thread and retention use it.
pub trait SpanWriter: Send + Sync {
    /// Stores the spans durably; returns only after they are committed.
    fn write(&self, spans: &[SpanRecord]) -> Result<(), StoreError>;
    /// Drops data older than `cutoff_us` (whole partitions); returns how many.
    fn apply_retention(&self, cutoff_us: i64) -> Result<usize, StoreError>;
}

/// The read side: the query API uses it.
pub trait SpanReader: Send + Sync {
    /// The traces with these ids, in the order asked, each with its spans in
    /// start order; ids with no stored span are left out. One pass over the
    /// store for all of them, holding at most `max_spans` spans: past that,
    /// traces are marked `truncated` (and those with no span read yet are
    /// counted in `left_out`).
    fn traces_within(&self, ids: &[[u8; 16]], max_spans: usize) -> Result<TraceSet, StoreError>;

    /// Every span of the traces with these ids (no budget).
    fn traces(&self, ids: &[[u8; 16]]) -> Result<Vec<StoredTrace>, StoreError> {
        Ok(self.traces_within(ids, usize::MAX)?.traces)
    }
    /// Trace ids matching `q`, newest first, at most `q.limit`.
    fn find_trace_ids(&self, q: &TraceQuery) -> Result<Vec<[u8; 16]>, StoreError>;
    fn services(&self) -> Result<Vec<String>, StoreError>;
    /// (operation, span kind) pairs of a service.
    fn operations(&self, service: &str) -> Result<Vec<(String, i32)>, StoreError>;
    /// Edges from parent/child spans across services, for child spans starting
    /// in [start_us, end_us].
    fn dependencies(&self, start_us: i64, end_us: i64) -> Result<Vec<Edge>, StoreError>;

    /// Every span of one trace, in start order (empty when unknown).
    fn trace(&self, trace_id: &[u8; 16]) -> Result<Vec<StoredSpan>, StoreError> {
        Ok(self
            .traces(&[*trace_id])?
            .into_iter()
            .next()
            .map(|t| t.spans)
            .unwrap_or_default())
    }

    /// The traces matching `q`, newest first: the ids, then every trace in one pass.
    fn find_traces(&self, q: &TraceQuery) -> Result<Vec<StoredTrace>, StoreError> {
        self.traces(&self.find_trace_ids(q)?)
    }
}

/// Both sides: what a backend is, and what the shared suite tests.
pub trait SpanStore: SpanWriter + SpanReader {}

impl<T: SpanWriter + SpanReader> SpanStore for T {}
