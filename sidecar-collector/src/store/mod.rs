//! Span storage behind a trait, so another backend can be added and pass the
//! same test suite (`store::suite`).

pub mod sqlite;
#[cfg(test)]
pub mod suite;

use meshtrace_proto::otlp::resource::v1::Resource;
use meshtrace_proto::otlp::trace::v1::Span;

/// A span ready to store: index columns plus the encoded span and resource.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub service: String,
    pub operation: String,
    /// OTLP span kind.
    pub kind: i32,
    pub start_us: i64,
    pub duration_us: i64,
    pub error: bool,
    /// Values of the configured indexed tag keys.
    pub indexed_tags: Vec<(String, String)>,
    /// The probability this span's trace was sampled with, when the sampler that
    /// decided was probabilistic (`sampler.type`/`sampler.param`): adaptive sampling's input.
    pub sampled_probability: Option<f64>,
    /// Encoded `Resource`.
    pub resource: Vec<u8>,
    /// Encoded `Span`, with every attribute, event and link.
    pub body: Vec<u8>,
}

/// A span read back, with its resource.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSpan {
    pub span: Span,
    pub resource: Resource,
}

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

/// Whether a span has tag `key` = `value` the way Jaeger's query sees it: a span
/// attribute, a resource (process) attribute, an event (log) field, or the derived
/// `error=true` and `span.kind` tags. Values compare as text (`200`, `true`).
pub fn span_matches_tag(span: &Span, resource: &Resource, key: &str, value: &str) -> bool {
    let attr_is = |attrs: &[meshtrace_proto::otlp::common::v1::KeyValue]| {
        attrs.iter().any(|a| {
            a.key == key
                && a.value
                    .as_ref()
                    .and_then(crate::ingest::value_text)
                    .is_some_and(|v| v == value)
        })
    };
    match key {
        "error" if value == "true" && span.status.as_ref().is_some_and(|s| s.code == 2) => {
            return true
        }
        "span.kind" if crate::query::model::kind_name(span.kind) == value => return true,
        _ => {}
    }
    attr_is(&span.attributes)
        || attr_is(&resource.attributes)
        || span.events.iter().any(|e| attr_is(&e.attributes))
}

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

impl StoreError {
    /// Whether a retry later may succeed (disk full, locked, read-only).
    pub fn is_retryable(&self) -> bool {
        true
    }
}

/// What every backend provides.
pub trait SpanStore: Send + Sync {
    /// Stores the spans durably; returns only after they are committed.
    fn write(&self, spans: &[SpanRecord]) -> Result<(), StoreError>;
    /// Every span of a trace, in start order.
    fn trace(&self, trace_id: &[u8; 16]) -> Result<Vec<StoredSpan>, StoreError>;
    fn services(&self) -> Result<Vec<String>, StoreError>;
    /// (operation, span kind) pairs of a service.
    fn operations(&self, service: &str) -> Result<Vec<(String, i32)>, StoreError>;
    /// Trace ids matching `q`, newest first, at most `q.limit`.
    fn find_trace_ids(&self, q: &TraceQuery) -> Result<Vec<[u8; 16]>, StoreError>;
    /// (parent service, child service, calls) from parent/child spans across
    /// services, for child spans starting in [start_us, end_us].
    fn dependencies(
        &self,
        start_us: i64,
        end_us: i64,
    ) -> Result<Vec<(String, String, u64)>, StoreError>;
    /// Drops data older than `cutoff_us` (whole partitions).
    fn apply_retention(&self, cutoff_us: i64) -> Result<usize, StoreError>;
}
