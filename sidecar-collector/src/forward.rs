//! Sidecar mode: a bounded in-memory queue of *encoded* requests in front of
//! an OTLP gRPC client to the upstream collector. Memory is what the bound
//! says: requests are kept as bytes, batches are their concatenation (two
//! encoded messages of one type concatenated are their merge), and the batch
//! goes out through a raw-bytes codec without being decoded again. The local Envoy is answered as
//! soon as its spans are queued; when the queue is full it is told to retry
//! later. Failed exports are retried with exponential backoff and jitter
//! until `max_retry_time`; spans the upstream refuses for good, or that run
//! out of retries, are dropped and counted.

use crate::ingest::span_count;
use crate::pipeline::{reserve, SubmitError};
use crate::telemetry::Counters;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use meshtrace_proto::otlp::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Sends already-encoded request bytes; decodes the response with prost.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;
struct ResponseDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        ExportTraceServiceResponse::decode(bytes)
            .map(Some)
            .map_err(|e| Status::internal(format!("upstream response: {e}")))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

/// A queued request: its encoding and span count.
type Item = (Vec<u8>, u64);

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
    tx: mpsc::UnboundedSender<Item>,
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
        let (tx, rx) = mpsc::unbounded_channel();
        let c = counters.clone();
        let max_bytes = s.queue_bytes;
        let task = tokio::spawn(run(rx, channel, s, c));
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
        // The decoded request is dropped here: only its bytes wait in memory.
        let bytes = req.encode_to_vec();
        if !reserve(self.counters.queue_bytes.inner(), size, self.max_bytes) {
            self.counters.spans_refused.inc_by(n);
            return Err(SubmitError::Full);
        }
        self.counters.spans_accepted.inc_by(n);
        self.counters.queue_depth.inc();
        self.tx.send((bytes, n)).map_err(|_| SubmitError::Closed)
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

async fn export(channel: &Channel, body: Bytes) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("upstream not reachable: {e}")))?;
    grpc.unary(
        tonic::Request::new(body),
        PathAndQuery::from_static(EXPORT_PATH),
        RawCodec,
    )
    .await
    .map(|_| ())
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Item>,
    channel: Channel,
    s: ForwardSettings,
    c: Arc<Counters>,
) {
    let mut batch = BytesMut::new();
    while let Some((first, n0)) = rx.recv().await {
        // Concatenate what is waiting, up to batch_bytes.
        batch.clear();
        batch.extend_from_slice(&first);
        drop(first);
        let (mut n, mut requests) = (n0, 1u64);
        while batch.len() < s.batch_bytes {
            match rx.try_recv() {
                Ok((more, k)) => {
                    batch.extend_from_slice(&more);
                    n += k;
                    requests += 1;
                }
                Err(_) => break,
            }
        }
        let bytes = batch.split().freeze();
        let size = bytes.len() as u64;
        let started = Instant::now();
        let mut delay = s.retry_initial;
        loop {
            match export(&channel, bytes.clone()).await {
                Ok(()) => {
                    c.spans_forwarded.inc_by(n);
                    break;
                }
                Err(status) if retryable(status.code()) && started.elapsed() < s.max_retry_time => {
                    tracing::warn!(code = ?status.code(), message = status.message(), retry_in_ms = delay.as_millis() as u64,
                        "upstream export failed; retrying");
                    tokio::time::sleep(delay.mul_f64(jitter())).await;
                    delay = (delay * 2).min(s.retry_max);
                }
                Err(status) => {
                    c.spans_dropped.inc_by(n);
                    tracing::error!(code = ?status.code(), message = status.message(), spans = n,
                        "upstream export failed for good; spans dropped");
                    break;
                }
            }
        }
        c.queue_bytes.dec_by(size);
        c.queue_depth.dec_by(requests);
    }
}
