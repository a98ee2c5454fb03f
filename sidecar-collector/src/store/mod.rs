//! Span storage behind a writer and a reader interface (as Jaeger's storage
//! API separates them), so another backend can be added and pass the same
//! test suite (`store::suite`). Imports only `model`.

pub mod blocks;
pub mod history;
pub mod lock;
pub mod rows;
pub mod sqlite;
#[cfg(test)]
pub mod suite;

use crate::model::{SpanRecord, StoredSpan, StoredTrace};

/// Trace search parameters (Jaeger's `/api/traces`).
#[derive(Debug, Clone, Default)]
pub struct TraceQuery {
    pub service: String,
    pub operation: Option<String>,
    /// All must match on one span (Jaeger's rule), or with `tags_any` any of
    /// them on any span.
    pub tags: Vec<(String, String)>,
    /// A trace matches when any one tag matches (the `tagsOp=or` extension).
    pub tags_any: bool,
    pub start_us: i64,
    pub end_us: i64,
    pub min_duration_us: Option<i64>,
    pub max_duration_us: Option<i64>,
    pub limit: usize,
}

impl TraceQuery {
    /// The tag conditions, each under the names semantic conventions gave it.
    pub fn tag_filter(&self) -> crate::model::TagFilter {
        crate::model::TagFilter::new(&self.tags, self.tags_any)
    }
}

/// Traces read within a span budget.
#[derive(Debug, Default)]
pub struct TraceSet {
    pub traces: Vec<StoredTrace>,
    /// Asked-for traces that have spans but none fit the budget.
    pub left_out: usize,
    /// The read's memory budget (not the span count) cut the answer.
    pub cut_by_bytes: bool,
    /// What the answer should say it may lack (a peer that did not answer).
    pub warnings: Vec<String>,
}

/// A dependency edge: (parent service, child service, calls).
pub type Edge = (String, String, u64);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("storage I/O at {path}: {source}{}", disk_full(source))]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("stored span is corrupt: {0}")]
    Corrupt(String),
    /// The object store failed or did not answer.
    #[error("object store: {0}")]
    Backend(String),
    /// The write-ahead log holds as much as it may (the object store is down
    /// or slow): writes wait until blocks are uploaded.
    #[error("the write-ahead log is full ({bytes} of {limit} bytes, wal.max_bytes): blocks are not reaching the object store; retry later")]
    WalFull { bytes: u64, limit: u64 },
    /// Sealed heads are waiting to be written as blocks (the local disk
    /// fails or the block thread is behind): writes wait so memory stays
    /// within the bound.
    #[error("the head is full ({bytes} bytes of spans wait to be written as blocks, limit {limit}: twice store.blocks.max_bytes); retry later")]
    HeadFull { bytes: u64, limit: u64 },
    /// The read's deadline passed (or its client went away): its work stopped.
    #[error("the read was stopped: it ran past its deadline ({0})")]
    Stopped(String),
    /// The read needs more memory than it may hold.
    #[error("the read needs more than its memory budget ({limit} bytes, {name}); narrow it")]
    OverBudget { limit: u64, name: &'static str },
}

/// Said plainly when the disk is full, as SQLite says it ("database or disk is full").
fn disk_full(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::StorageFull {
        " (the disk is full)"
    } else {
        ""
    }
}

impl StoreError {
    /// The read ran out of time or memory (an answer for the client, not a fault).
    pub fn is_limit(&self) -> bool {
        matches!(self, StoreError::Stopped(_) | StoreError::OverBudget { .. })
    }
}

/// When a read must stop: a deadline, and a flag its owner sets when it gives
/// up first. Shared with what runs the read's work (SQLite's progress handler).
#[derive(Debug)]
pub struct Stop {
    deadline: Option<std::time::Instant>,
    flag: std::sync::atomic::AtomicBool,
    /// What the deadline is, for messages (`query.timeout (60s)`).
    what: String,
}

impl Stop {
    /// True once the deadline passed or the flag is set.
    pub fn stopped(&self) -> bool {
        self.flag.load(std::sync::atomic::Ordering::Relaxed)
            || self
                .deadline
                .is_some_and(|d| std::time::Instant::now() >= d)
    }
}

/// How one read is bounded, checked inside every scan and loop that serves it:
/// a deadline after which its work stops, and the bytes of memory (what it
/// holds and what its answer will take) it may account for. Reads that hold
/// spans charge them as they read; a read over its bytes is cut or refused.
#[derive(Debug)]
pub struct ReadCtl {
    stop: std::sync::Arc<Stop>,
    limit_bytes: u64,
    used: std::sync::atomic::AtomicU64,
    /// Partial results met on the way (a peer that did not answer).
    warnings: std::sync::Mutex<Vec<String>>,
}

impl ReadCtl {
    /// No deadline and no memory bound (internal reads and tests).
    pub fn unbounded() -> ReadCtl {
        ReadCtl::new(None, u64::MAX, String::new())
    }

    /// A read that stops at `deadline` (described by `what`, e.g.
    /// `query.timeout (60s)`) and may hold `limit_bytes`.
    pub fn new(deadline: Option<std::time::Instant>, limit_bytes: u64, what: String) -> ReadCtl {
        ReadCtl {
            stop: std::sync::Arc::new(Stop {
                deadline,
                flag: std::sync::atomic::AtomicBool::new(false),
                what,
            }),
            limit_bytes,
            used: std::sync::atomic::AtomicU64::new(0),
            warnings: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Notes that the answer may be partial, and why (once per message).
    pub fn warn(&self, message: String) {
        let mut w = self.warnings.lock().unwrap_or_else(|e| e.into_inner());
        if !w.contains(&message) && w.len() < 16 {
            w.push(message);
        }
    }

    /// The warnings noted so far.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `Err(Stopped)` once the deadline passed or the read was given up.
    pub fn check(&self) -> Result<(), StoreError> {
        if self.stop.stopped() {
            return Err(self.stopped());
        }
        Ok(())
    }

    /// The error of a read stopped at its deadline.
    pub fn stopped(&self) -> StoreError {
        StoreError::Stopped(self.stop.what.clone())
    }

    /// `e`, or `Stopped` when the read's deadline is what interrupted it.
    pub fn stopped_or(&self, e: impl Into<StoreError>) -> StoreError {
        if self.stop.stopped() {
            self.stopped()
        } else {
            e.into()
        }
    }

    /// Gives the read up: its next check stops it.
    pub fn give_up(&self) {
        self.stop
            .flag
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The stop condition, for work that cannot hold a reference (SQLite's handler).
    pub fn stop_handle(&self) -> std::sync::Arc<Stop> {
        self.stop.clone()
    }

    /// Accounts `bytes` more; false (nothing accounted) when that would pass the limit.
    pub fn try_charge(&self, bytes: u64) -> bool {
        use std::sync::atomic::Ordering;
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let Some(next) = used.checked_add(bytes).filter(|n| *n <= self.limit_bytes) else {
                return false;
            };
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    /// Accounts `bytes` more, or `Err(OverBudget)`; checks the deadline too.
    pub fn charge(&self, bytes: u64) -> Result<(), StoreError> {
        self.check()?;
        if self.try_charge(bytes) {
            Ok(())
        } else {
            Err(StoreError::OverBudget {
                limit: self.limit_bytes,
                name: "query.max_bytes / query.max_concurrent",
            })
        }
    }

    /// Returns `bytes` (memory the read no longer holds).
    pub fn release(&self, bytes: u64) {
        use std::sync::atomic::Ordering;
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(bytes))
            });
    }

    /// Bytes accounted now.
    pub fn used(&self) -> u64 {
        self.used.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The most the read may account for.
    pub fn limit(&self) -> u64 {
        self.limit_bytes
    }
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
    /// Each span read is charged to `ctl` (`model::span_memory`); past its memory
    /// budget, traces are cut the same way (and `cut_by_bytes` says so). Every
    /// method stops with `StoreError::Stopped` once `ctl`'s deadline passes.
    fn traces_within(
        &self,
        ids: &[[u8; 16]],
        max_spans: usize,
        ctl: &ReadCtl,
    ) -> Result<TraceSet, StoreError>;

    /// Every span of the traces with these ids (no budget).
    fn traces(&self, ids: &[[u8; 16]]) -> Result<Vec<StoredTrace>, StoreError> {
        Ok(self
            .traces_within(ids, usize::MAX, &ReadCtl::unbounded())?
            .traces)
    }
    /// Trace ids matching `q`, newest first, at most `q.limit`.
    fn find_trace_ids(&self, q: &TraceQuery, ctl: &ReadCtl) -> Result<Vec<[u8; 16]>, StoreError>;
    /// Service names (each charged to `ctl`).
    fn services(&self, ctl: &ReadCtl) -> Result<Vec<String>, StoreError>;
    /// (operation, span kind) pairs of a service (each charged to `ctl`).
    fn operations(&self, service: &str, ctl: &ReadCtl) -> Result<Vec<(String, i32)>, StoreError>;
    /// Edges from parent/child spans across services, for child spans starting
    /// in [start_us, end_us].
    fn dependencies(
        &self,
        start_us: i64,
        end_us: i64,
        ctl: &ReadCtl,
    ) -> Result<Vec<Edge>, StoreError>;

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
        self.traces(&self.find_trace_ids(q, &ReadCtl::unbounded())?)
    }
}

/// Both sides: what a backend is, and what the shared suite tests.
pub trait SpanStore: SpanWriter + SpanReader {}

impl<T: SpanWriter + SpanReader> SpanStore for T {}

impl<T: SpanWriter + ?Sized> SpanWriter for std::sync::Arc<T> {
    fn write(&self, spans: &[SpanRecord]) -> Result<(), StoreError> {
        (**self).write(spans)
    }
    fn apply_retention(&self, cutoff_us: i64) -> Result<usize, StoreError> {
        (**self).apply_retention(cutoff_us)
    }
}

impl<T: SpanReader + ?Sized> SpanReader for std::sync::Arc<T> {
    fn traces_within(
        &self,
        ids: &[[u8; 16]],
        max_spans: usize,
        ctl: &ReadCtl,
    ) -> Result<TraceSet, StoreError> {
        (**self).traces_within(ids, max_spans, ctl)
    }
    fn find_trace_ids(&self, q: &TraceQuery, ctl: &ReadCtl) -> Result<Vec<[u8; 16]>, StoreError> {
        (**self).find_trace_ids(q, ctl)
    }
    fn services(&self, ctl: &ReadCtl) -> Result<Vec<String>, StoreError> {
        (**self).services(ctl)
    }
    fn operations(&self, service: &str, ctl: &ReadCtl) -> Result<Vec<(String, i32)>, StoreError> {
        (**self).operations(service, ctl)
    }
    fn dependencies(
        &self,
        start_us: i64,
        end_us: i64,
        ctl: &ReadCtl,
    ) -> Result<Vec<Edge>, StoreError> {
        (**self).dependencies(start_us, end_us, ctl)
    }
}

/// The configured engine, with what the collector does to it besides reading
/// and writing (integrity checks, health, retention).
#[derive(Clone)]
pub enum Engine {
    Sqlite(std::sync::Arc<sqlite::SqliteStore>),
    Blocks(std::sync::Arc<blocks::BlockStore>),
}

impl Engine {
    pub fn writer(&self) -> std::sync::Arc<dyn SpanWriter> {
        match self {
            Engine::Sqlite(s) => s.clone(),
            Engine::Blocks(s) => s.clone(),
        }
    }

    pub fn reader(&self) -> std::sync::Arc<dyn SpanReader> {
        match self {
            Engine::Sqlite(s) => s.clone(),
            Engine::Blocks(s) => s.clone(),
        }
    }

    /// After start-up: SQLite checks its partitions (checked, set aside); the
    /// blocks engine has nothing to check (blocks are immutable, checksummed by Parquet).
    pub fn check_partitions(&self) -> (usize, usize) {
        match self {
            Engine::Sqlite(s) => s.check_partitions(),
            Engine::Blocks(_) => (0, 0),
        }
    }

    /// (can it be written, can it be read), closing idle partitions on the
    /// way when `close_idle` is given.
    pub fn health(
        &self,
        close_idle: Option<std::time::Duration>,
    ) -> (Result<(), StoreError>, Result<(), StoreError>) {
        match self {
            Engine::Sqlite(s) => {
                if let Some(idle) = close_idle {
                    let n = s.close_idle(idle);
                    if n > 0 {
                        tracing::debug!(partitions = n, "idle partitions closed");
                    }
                }
                (s.check_writable(), s.check_readable())
            }
            Engine::Blocks(s) => s.health(),
        }
    }

    /// Drops what is older than `cutoff_us`; returns how many days went.
    pub fn apply_retention(&self, cutoff_us: i64) -> Result<usize, StoreError> {
        self.writer().apply_retention(cutoff_us)
    }
}
