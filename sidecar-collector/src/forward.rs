//! Sidecar mode: a bounded in-memory queue (by bytes) in front of an OTLP
//! gRPC client to the upstream collector. The local Envoy is answered as
//! soon as its spans are queued; when the queue is full it is told to retry
//! later. Failed exports are retried with exponential backoff and jitter
//! until `max_retry_time`; spans the upstream refuses for good, or that run
//! out of retries, are dropped and counted.

use crate::ingest::span_count;
use crate::pipeline::{Counters, SubmitError};
use meshtrace_proto::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::Code;

/// Forwarding settings.
#[derive(Debug, Clone)]
pub struct ForwardSettings {
    pub upstream: String,
    pub queue_bytes: u64,
    pub batch_bytes: usize,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub max_retry_time: Duration,
    pub timeout: Duration,
}

#[derive(Clone)]
pub struct Forwarder {
    tx: mpsc::UnboundedSender<(ExportTraceServiceRequest, u64)>,
    max_bytes: u64,
    pub counters: Arc<Counters>,
}

impl Forwarder {
    /// Starts the forwarding task. It ends when every `Forwarder` clone is
    /// dropped and the queue is empty (or when the retries give up).
    pub fn start(
        s: ForwardSettings,
        counters: Arc<Counters>,
    ) -> Result<(Forwarder, tokio::task::JoinHandle<()>), String> {
        let channel = Channel::from_shared(s.upstream.clone())
            .map_err(|e| format!("sidecar.upstream: {:?} is not a URL: {e}", s.upstream))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(s.timeout)
            .connect_lazy();
        let client = TraceServiceClient::new(channel).max_encoding_message_size(64 * 1024 * 1024);
        let (tx, rx) = mpsc::unbounded_channel();
        let c = counters.clone();
        let max_bytes = s.queue_bytes;
        let task = tokio::spawn(run(rx, client, s, c));
        Ok((
            Forwarder {
                tx,
                max_bytes,
                counters,
            },
            task,
        ))
    }

    /// Queues a request, or refuses it when the queue is full.
    pub fn enqueue(&self, req: ExportTraceServiceRequest) -> Result<(), SubmitError> {
        let size = req.encoded_len() as u64;
        let n = span_count(&req);
        let q = &self.counters.queue_bytes;
        let mut current = q.load(Ordering::Relaxed);
        loop {
            if current + size > self.max_bytes {
                self.counters.spans_refused.fetch_add(n, Ordering::Relaxed);
                return Err(SubmitError::Full);
            }
            match q.compare_exchange(current, current + size, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        self.counters.spans_accepted.fetch_add(n, Ordering::Relaxed);
        self.counters.queue_depth.fetch_add(1, Ordering::Relaxed);
        self.tx.send((req, size)).map_err(|_| SubmitError::Closed)
    }
}

fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::ResourceExhausted
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::OutOfRange
            | Code::DataLoss
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal
    )
}

/// A pseudo-random factor in [0.5, 1.5) for backoff jitter.
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    0.5 + f64::from(nanos % 1000) / 1000.0
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<(ExportTraceServiceRequest, u64)>,
    mut client: TraceServiceClient<Channel>,
    s: ForwardSettings,
    c: Arc<Counters>,
) {
    while let Some((first, size)) = rx.recv().await {
        // Merge what is waiting into one export, up to batch_bytes.
        let mut batch = first;
        let mut bytes = size;
        let mut requests = 1;
        while (bytes as usize) < s.batch_bytes {
            match rx.try_recv() {
                Ok((more, sz)) => {
                    batch.resource_spans.extend(more.resource_spans);
                    bytes += sz;
                    requests += 1;
                }
                Err(_) => break,
            }
        }
        let n = span_count(&batch);
        let started = Instant::now();
        let mut delay = s.retry_initial;
        loop {
            match client.export(batch.clone()).await {
                Ok(_) => {
                    c.spans_forwarded.fetch_add(n, Ordering::Relaxed);
                    break;
                }
                Err(status) if retryable(status.code()) && started.elapsed() < s.max_retry_time => {
                    tracing::warn!(code = ?status.code(), message = status.message(), retry_in_ms = delay.as_millis() as u64,
                        "upstream export failed; retrying");
                    tokio::time::sleep(delay.mul_f64(jitter())).await;
                    delay = (delay * 2).min(s.retry_max);
                }
                Err(status) => {
                    c.spans_dropped.fetch_add(n, Ordering::Relaxed);
                    tracing::error!(code = ?status.code(), message = status.message(), spans = n,
                        "upstream export failed for good; spans dropped");
                    break;
                }
            }
        }
        c.queue_bytes.fetch_sub(bytes, Ordering::Relaxed);
        c.queue_depth.fetch_sub(requests, Ordering::Relaxed);
    }
}
