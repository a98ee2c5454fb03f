//! Trace answers within a budget: at most `query.max_traces` traces and
//! `query.max_spans` spans per answer, at most `query.max_concurrent` such
//! answers at once, none while the process is over its memory limit; the JSON
//! is written to the socket as it is produced (one span's Jaeger model at a
//! time, in 64 KiB chunks), so an answer holds its stored spans, never its text. What a
//! budget cut is said in the answer: a `warnings` entry on the first trace
//! (the Jaeger UI shows trace warnings), and `total` counts what is there.

use super::error;
use super::jaeger::TraceJson;
use crate::memory::MemoryLimiter;
use crate::store::TraceSet;
use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// How long a trace query waits for a slot before it is told to retry.
const WAIT_FOR_SLOT: Duration = Duration::from_secs(10);
const CHUNK: usize = 64 * 1024;
/// Answers with more spans than this are streamed (up to it, ~12 MB of JSON is held).
const STREAM_FROM_SPANS: usize = 20_000;

/// The budget of trace answers.
#[derive(Clone)]
pub struct Budget {
    pub max_traces: usize,
    pub max_spans: usize,
    pub slots: Arc<Semaphore>,
    pub max_concurrent: usize,
    pub memory: Option<Arc<MemoryLimiter>>,
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
        }
    }

    /// A slot for one trace answer, or the retryable refusal.
    pub async fn slot(&self) -> Result<OwnedSemaphorePermit, Response> {
        if let Some(m) = &self.memory {
            if let Err(e) = m.check() {
                return Err(retry_later(&e.to_string()));
            }
        }
        match tokio::time::timeout(WAIT_FOR_SLOT, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(retry_later(&format!(
                "{} trace queries are running (query.max_concurrent); retry later",
                self.max_concurrent
            ))),
        }
    }
}

fn retry_later(msg: &str) -> Response {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, msg);
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
        w.push(format!(
            "the answer reached query.max_spans ({}): {truncated} traces are missing spans and {} were left out",
            budget.max_spans, set.left_out
        ));
    }
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
/// slot is held until the last byte is handed over.
pub fn traces_answer(
    set: TraceSet,
    warnings: Vec<String>,
    pretty: bool,
    slot: OwnedSemaphorePermit,
) -> Response {
    let spans: usize = set.traces.iter().map(|t| t.spans.len()).sum();
    if pretty {
        // An indented answer is for people: written at once.
        let mut body = Vec::with_capacity(spans * 1024 + 64);
        let written = write_envelope(&mut body, set, warnings).map_err(|e| e.to_string());
        drop(slot);
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
    json_answer(spans, slot, move |out| write_envelope(out, set, warnings))
}

/// A JSON answer of `spans` spans, produced by `write`: a small one is written
/// at once (streaming costs a thread hop and a channel), a larger one is written
/// to the socket in 64 KiB chunks from a blocking thread as it is produced. The
/// slot is held until the last byte is handed over.
pub fn json_answer(
    spans: usize,
    slot: OwnedSemaphorePermit,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()> + Send + 'static,
) -> Response {
    if spans <= STREAM_FROM_SPANS {
        let mut body = Vec::with_capacity(spans * 1024 + 64);
        let written = write(&mut body);
        drop(slot);
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
        let _slot = slot;
        let mut out = ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        if let Err(e) = write(&mut out).and_then(|()| out.flush()) {
            tracing::debug!(error = %e, "trace answer not completed");
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
