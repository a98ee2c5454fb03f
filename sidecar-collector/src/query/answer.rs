//! Every read within a budget (slot, deadline, bytes: [`Budget`], [`Hold`]), and
//! trace answers within it: at most `query.max_traces` traces and
//! `query.max_spans` spans per answer, at most `query.max_concurrent` such
//! answers at once, none while the process is over its memory limit; the JSON
//! is written to the socket as it is produced (one span's Jaeger model at a
//! time, in 64 KiB chunks), so an answer holds its stored spans, never its text. What a
//! budget cut is said in the answer: a `warnings` entry on the first trace
//! (the Jaeger UI shows trace warnings), and `total` counts what is there.

use super::error;
use super::jaeger::TraceJson;
use crate::memory::MemoryLimiter;
use crate::store::{ReadCtl, StoreError, TraceSet};
use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// How long a read waits for a slot before it is told to retry.
const WAIT_FOR_SLOT: Duration = Duration::from_secs(10);
const CHUNK: usize = 64 * 1024;
/// Answers whose read accounted more than this are streamed (below it, the
/// whole JSON is built before it is sent: one hop fewer).
const STREAM_FROM_BYTES: u64 = 8 << 20;

/// An error answer in the endpoint's shape (v1's envelope, v3's gateway error).
pub type Shape = fn(StatusCode, String) -> Response;

/// v1's envelope, as a [`Shape`].
pub fn v1_shape(status: StatusCode, msg: String) -> Response {
    error(status, &msg)
}

/// The budget of every read: at most `query.max_concurrent` at once, each
/// within `query.timeout` and its share of `query.max_bytes`; trace answers
/// also within `query.max_traces` and `query.max_spans`.
#[derive(Clone)]
pub struct Budget {
    pub max_traces: usize,
    pub max_spans: usize,
    pub slots: Arc<Semaphore>,
    pub max_concurrent: usize,
    pub memory: Option<Arc<MemoryLimiter>>,
    /// `query.timeout`: a read's work stops at it.
    pub timeout: Duration,
    /// Bytes one read may account for (`query.max_bytes / query.max_concurrent`).
    pub read_bytes: u64,
}

impl Budget {
    pub fn new(
        max_traces: usize,
        max_spans: usize,
        max_concurrent: usize,
        memory: Option<Arc<MemoryLimiter>>,
    ) -> Budget {
        Budget {
            max_traces,
            max_spans,
            slots: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            memory,
            timeout: Duration::from_secs(60),
            read_bytes: 256 << 20,
        }
    }

    /// With `query.timeout` and `query.max_bytes` (shared by the slots).
    pub fn limits(mut self, timeout: Duration, max_bytes: u64) -> Budget {
        self.timeout = timeout;
        self.read_bytes = (max_bytes / self.max_concurrent.max(1) as u64).max(1 << 20);
        self
    }

    /// A slot for one read and its bounds, or the retryable refusal (in `shape`).
    /// The deadline runs from here: waiting for the slot counts.
    pub async fn begin_in(&self, shape: Shape) -> Result<Hold, Response> {
        let deadline = Instant::now() + self.timeout;
        if let Some(m) = &self.memory {
            if let Err(e) = m.check() {
                return Err(retry_later(shape, e.to_string()));
            }
        }
        let wait = WAIT_FOR_SLOT.min(self.timeout);
        match tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(Hold {
                slot: Arc::new(p),
                ctl: Arc::new(ReadCtl::new(
                    Some(deadline),
                    self.read_bytes,
                    format!(
                        "query.timeout ({})",
                        humantime::format_duration(self.timeout)
                    ),
                )),
                deadline,
                shape,
            }),
            _ => Err(retry_later(
                shape,
                format!(
                    "{} queries are running (query.max_concurrent); retry later",
                    self.max_concurrent
                ),
            )),
        }
    }

    /// [`Budget::begin_in`] with v1's error shape.
    pub async fn begin(&self) -> Result<Hold, Response> {
        self.begin_in(v1_shape).await
    }
}

/// One read in progress: its slot, deadline and memory account. Dropped when
/// the answer is written or the client goes away; work still running for it
/// then stops at its next check.
pub struct Hold {
    slot: Arc<OwnedSemaphorePermit>,
    pub ctl: Arc<ReadCtl>,
    deadline: Instant,
    shape: Shape,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.ctl.give_up();
    }
}

impl Hold {
    /// Runs `f` on a blocking thread (never on the runtime's), under this
    /// read's bounds. Past the deadline the answer is a 503 naming
    /// `query.timeout`, and `f` is told to stop; it keeps the slot until it has.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ReadCtl) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Response> {
        let (ctl, slot) = (self.ctl.clone(), self.slot.clone());
        let task = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            f(&ctl)
        });
        let left = self.deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left + Duration::from_millis(250), task).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(store_error(self.shape, &e)),
            Ok(Err(e)) => Err((self.shape)(
                StatusCode::INTERNAL_SERVER_ERROR,
                e.to_string(),
            )),
            Err(_) => {
                self.ctl.give_up();
                Err(store_error(self.shape, &self.ctl.stopped()))
            }
        }
    }
}

/// A store error as an answer: a read over its time or memory is told what to
/// narrow and to retry (503 + Retry-After); anything else is a 500.
pub fn store_error(shape: Shape, e: &StoreError) -> Response {
    match e {
        StoreError::Stopped(what) => retry_later(
            shape,
            format!("the query ran past {what} and was stopped; narrow it (a shorter time range, fewer traces or services) or retry later"),
        ),
        StoreError::OverBudget { limit, name } => retry_later(
            shape,
            format!("the query needs more memory than one query may hold ({name}: {limit} bytes); narrow it (a shorter time range, fewer traces, services or operations)"),
        ),
        e => {
            tracing::error!(error = %e, "query failed");
            shape(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// 503 with `Retry-After: 1`, in `shape`.
pub fn retry_later(shape: Shape, msg: String) -> Response {
    let mut r = shape(StatusCode::SERVICE_UNAVAILABLE, msg);
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    r
}

/// Why the answer is not everything that was asked for.
pub fn warnings(set: &TraceSet, ids_dropped: usize, budget: &Budget) -> Vec<String> {
    let mut w = Vec::new();
    if ids_dropped > 0 {
        w.push(format!(
            "{ids_dropped} more traces were asked for than query.max_traces ({}) allows; they were left out",
            budget.max_traces
        ));
    }
    let truncated = set.traces.iter().filter(|t| t.truncated).count();
    if truncated > 0 || set.left_out > 0 {
        let limit = if set.cut_by_bytes {
            format!(
                "the memory one query may hold (query.max_bytes / query.max_concurrent: {} bytes)",
                budget.read_bytes
            )
        } else {
            format!("query.max_spans ({})", budget.max_spans)
        };
        w.push(format!(
            "the answer reached {limit}: {truncated} traces are missing spans and {} were left out",
            set.left_out
        ));
    }
    w.extend(set.warnings.iter().cloned());
    w
}

/// Sends what is written in chunks; the body ends when it is dropped.
struct ChunkWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Writes `{"data":[trace,…],"total":N,"limit":0,"offset":0,"errors":null}`, one trace at a time.
fn write_envelope(
    out: &mut dyn Write,
    set: TraceSet,
    mut warnings: Vec<String>,
) -> std::io::Result<()> {
    let total = set.traces.len();
    out.write_all(b"{\"data\":[")?;
    for (i, t) in set.traces.into_iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        let w = (i == 0 && !warnings.is_empty()).then(|| std::mem::take(&mut warnings));
        TraceJson::new(&t).write(&mut *out, w.as_deref())?;
    }
    write!(
        out,
        "],\"total\":{total},\"limit\":0,\"offset\":0,\"errors\":null}}"
    )?;
    out.flush()
}

/// The traces as Jaeger's envelope, written as they are serialized; the
/// read is held until the last byte is handed over. `pretty` indents a small
/// answer (one for people); a large one is sent compact, as it is streamed.
pub fn traces_answer(set: TraceSet, warnings: Vec<String>, pretty: bool, hold: Hold) -> Response {
    if pretty && hold.ctl.used() <= STREAM_FROM_BYTES {
        let mut body = Vec::new();
        let written = write_envelope(&mut body, set, warnings).map_err(|e| e.to_string());
        drop(hold);
        let body = written.and_then(|()| {
            serde_json::from_slice::<serde_json::Value>(&body)
                .and_then(|v| serde_json::to_vec_pretty(&v))
                .map_err(|e| e.to_string())
        });
        return match body {
            Ok(body) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response(),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
        };
    }
    json_answer(hold, move |out| write_envelope(out, set, warnings))
}

/// A JSON answer produced by `write`: a small one (its read accounted at most
/// 8 MiB) is written at once (streaming costs a thread hop and a channel), a
/// larger one is written to the socket in 64 KiB chunks from a blocking thread
/// as it is produced, and stops if the client goes away. The read is held
/// until the last byte is handed over.
pub fn json_answer(
    hold: Hold,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()> + Send + 'static,
) -> Response {
    if hold.ctl.used() <= STREAM_FROM_BYTES {
        let mut body = Vec::new();
        let written = write(&mut body);
        drop(hold);
        return match written {
            Ok(()) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response(),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
    }
    let (tx, mut rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let _hold = hold;
        let mut out = ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        if let Err(e) = write(&mut out).and_then(|()| out.flush()) {
            tracing::debug!(error = %e, "answer not completed");
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}
