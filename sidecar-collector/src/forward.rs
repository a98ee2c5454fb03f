//! Sidecar mode: a bounded in-memory queue of *encoded* requests in front of
//! an OTLP gRPC client to the upstream collector. Memory is what the bound
//! says: requests are kept as bytes, batches are their concatenation (two
//! encoded messages of one type concatenated are their merge), and the batch
//! goes out through a raw-bytes codec without being decoded again. The local Envoy is answered as
//! soon as its spans are queued; when the queue is full it is told to retry
//! later. Failed exports are retried with exponential backoff and jitter
//! until `max_retry_time`; a batch the upstream refuses for good
//! (`INVALID_ARGUMENT`, `RESOURCE_EXHAUSTED` without retry information, …) is
//! dropped at once, counted and logged (once per status code), and the queue
//! keeps flowing. A request larger than `batch_bytes` is split into exports
//! that fit; one larger than the whole queue is refused for good. At
//! shutdown the queue is forwarded for up to `shutdown_grace`; what is left
//! then is counted as dropped and logged.

use crate::ingest::span_count;
use crate::pipeline::{reserve, SubmitError};
use crate::telemetry::Counters;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use meshtrace_proto::otlp::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use meshtrace_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

mod disk;
mod http;

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
    /// Exports sent at once (at least one).
    pub max_in_flight: usize,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub max_retry_time: Duration,
    pub timeout: Duration,
    /// How long the queue keeps being forwarded after shutdown begins.
    pub shutdown_grace: Duration,
    /// TLS to the upstream (`https://`).
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    /// `Authorization: Bearer` sent with every export.
    pub token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    /// Further headers sent with every export (an OTLP exporter's `headers`).
    pub headers: tonic::metadata::MetadataMap,
    /// How exports are compressed (none: as the sidecar sends to its central).
    pub compression: Option<tonic::codec::CompressionEncoding>,
    /// OTLP over gRPC, or over HTTP (`http/protobuf`).
    pub protocol: Protocol,
    /// CA certificates (PEM) of an `https://` endpoint for the HTTP protocol
    /// (gRPC takes them in `tls`).
    pub ca_pem: Option<Vec<u8>>,
    /// Queue on disk in this directory (what is queued outlives the process),
    /// or in memory.
    pub disk_queue: Option<std::path::PathBuf>,
}

/// How exports travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Grpc,
    /// `POST …/v1/traces`, `application/x-protobuf`.
    HttpProtobuf,
}

/// The client exports go out through.
enum Transport {
    Grpc(Channel),
    Http(http::HttpExport),
}

impl Transport {
    /// What a batch is sent as (every attempt sends the same bytes).
    async fn body(&self, batch: Bytes) -> Result<Bytes, Status> {
        match self {
            Transport::Grpc(_) => Ok(batch),
            Transport::Http(h) => h.body(batch).await,
        }
    }

    async fn send(&self, body: Bytes, s: &ForwardSettings) -> Result<(), Status> {
        match self {
            Transport::Grpc(channel) => export(channel, body, s).await,
            Transport::Http(h) => h.send(body).await,
        }
    }
}

#[derive(Clone)]
pub struct Forwarder {
    tx: mpsc::UnboundedSender<Item>,
    max_bytes: u64,
    batch_bytes: usize,
    pub counters: Arc<Counters>,
}

/// Ends forwarding: after the grace period, what is still queued is dropped.
#[derive(Clone)]
pub struct Shutdown {
    deadline: Arc<std::sync::Mutex<Option<Instant>>>,
    wake: Arc<tokio::sync::Notify>,
}

impl Shutdown {
    /// Forwarding goes on until `grace` has passed (or the queue is empty).
    pub fn begin(&self, grace: Duration) {
        if let Ok(mut d) = self.deadline.lock() {
            *d = Some(Instant::now() + grace);
        }
        self.wake.notify_waiters();
    }

    fn passed(&self) -> bool {
        self.deadline
            .lock()
            .ok()
            .and_then(|d| *d)
            .is_some_and(|d| Instant::now() >= d)
    }

    fn deadline(&self) -> Option<Instant> {
        self.deadline.lock().ok().and_then(|d| *d)
    }
}

impl Forwarder {
    /// Starts the forwarding task. It ends when every `Forwarder` clone is
    /// dropped and the queue is empty (or when the retries give up).
    pub fn start(
        s: ForwardSettings,
        counters: Arc<Counters>,
    ) -> Result<(Forwarder, Shutdown, tokio::task::JoinHandle<()>), String> {
        let transport = match s.protocol {
            Protocol::HttpProtobuf => Transport::Http(http::HttpExport::new(&s)?),
            Protocol::Grpc => {
                let mut endpoint = Channel::from_shared(s.upstream.clone())
                    .map_err(|e| format!("{:?} is not a URL: {e}", s.upstream))?
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(s.timeout);
                if let Some(tls) = &s.tls {
                    endpoint = endpoint
                        .tls_config(tls.clone())
                        .map_err(|e| format!("ca_file: {e}"))?;
                }
                Transport::Grpc(endpoint.connect_lazy())
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let c = counters.clone();
        let (max_bytes, batch_bytes) = (s.queue_bytes, s.batch_bytes);
        let shutdown = Shutdown {
            deadline: Arc::default(),
            wake: Arc::default(),
        };
        let transport = Arc::new(transport);
        let task = match &s.disk_queue {
            None => tokio::spawn(run(rx, transport, s, c, shutdown.clone())),
            Some(dir) => {
                let spool = disk::Spool::open(dir, max_bytes)
                    .map_err(|e| format!("the disk queue {}: {e}", dir.display()))?;
                let left = spool.waiting();
                if !left.is_empty() {
                    let (bytes, spans) = left
                        .iter()
                        .fold((0, 0), |(b, n), seg| (b + seg.bytes, n + seg.spans));
                    c.queue_bytes.inc_by(bytes);
                    c.queue_depth.inc_by(left.len() as u64);
                    tracing::info!(dir = %dir.display(), spans, bytes, "disk queue: spans a previous run left are sent first");
                }
                tokio::spawn(run_disk(rx, transport, s, c, shutdown.clone(), spool))
            }
        };
        Ok((
            Forwarder {
                tx,
                max_bytes,
                batch_bytes,
                counters,
            },
            shutdown,
            task,
        ))
    }

    /// Why a request of at least `bytes` (its wire size: it is no smaller
    /// encoded again) would be refused now: asked before it is decoded.
    pub fn no_room_for(&self, bytes: u64) -> Option<SubmitError> {
        if bytes > self.max_bytes {
            return Some(SubmitError::TooLarge {
                bytes,
                limit: self.max_bytes,
                key: "sidecar.queue_bytes",
            });
        }
        (self.counters.queue_bytes.get().saturating_add(bytes) > self.max_bytes)
            .then_some(SubmitError::Full)
    }

    /// Takes `size` bytes of the queue for `spans` spans, or refuses them (and
    /// counts them refused): for good when larger than the whole queue, "retry
    /// later" when it is full.
    fn admit(&self, size: u64, spans: u64) -> Result<(), SubmitError> {
        if size > self.max_bytes {
            self.counters.spans_refused.inc_by(spans);
            return Err(SubmitError::TooLarge {
                bytes: size,
                limit: self.max_bytes,
                key: "sidecar.queue_bytes",
            });
        }
        if !reserve(self.counters.queue_bytes.inner(), size, self.max_bytes) {
            self.counters.spans_refused.inc_by(spans);
            return Err(SubmitError::Full);
        }
        Ok(())
    }

    /// Whether an export of `bytes` goes into one batch as it is.
    pub fn fits_one_batch(&self, bytes: usize) -> bool {
        bytes <= self.batch_bytes
    }

    /// Queues an export as its bytes (`spans` spans, all valid, nothing to
    /// redact, at most `batch_bytes`: [`crate::ingest::wire::forwards_as_is`]),
    /// or refuses it as [`Forwarder::enqueue`] does.
    pub fn enqueue_encoded(&self, bytes: Vec<u8>, spans: u64) -> Result<(), SubmitError> {
        self.admit(bytes.len() as u64, spans)?;
        self.counters.spans_accepted.inc_by(spans);
        self.counters.queue_depth.inc();
        self.tx
            .send((bytes, spans))
            .map_err(|_| SubmitError::Closed)
    }

    /// Queues a request (split into parts of at most `batch_bytes`), or
    /// refuses it: for good when it is larger than the whole queue, "retry
    /// later" when the queue is full.
    pub fn enqueue(&self, req: ExportTraceServiceRequest) -> Result<(), SubmitError> {
        let size = req.encoded_len() as u64;
        let n = span_count(&req);
        self.admit(size, n)?;
        // The decoded request is dropped here: only its bytes wait in memory.
        let parts = split(req, self.batch_bytes);
        let encoded: u64 = parts.iter().map(|p| p.encoded_len() as u64).sum();
        // Splitting repeats resources and scopes: account for the difference.
        if encoded > size {
            self.counters.queue_bytes.inc_by(encoded - size);
        } else {
            self.counters.queue_bytes.dec_by(size - encoded);
        }
        self.counters.spans_accepted.inc_by(n);
        for p in parts {
            let k = span_count(&p);
            self.counters.queue_depth.inc();
            self.tx
                .send((p.encode_to_vec(), k))
                .map_err(|_| SubmitError::Closed)?;
        }
        Ok(())
    }
}

/// An OTLP exporter beside the store (`exporters.otlp`): accepted spans are
/// queued for its endpoint and sent by a forwarder of their own, never
/// holding a sender — when its queue is full they are dropped for this
/// endpoint (counted in its own counters, logged once a minute) and ingest
/// and the store go on.
pub struct OtlpExporter {
    /// Its endpoint (in metrics and logs).
    pub endpoint: String,
    forwarder: Forwarder,
    /// This exporter's own counters (`spans_forwarded`, `spans_dropped`, `queue_bytes`).
    pub counters: Arc<Counters>,
    last_logged: std::sync::Mutex<Option<Instant>>,
}

impl OtlpExporter {
    pub fn new(endpoint: String, forwarder: Forwarder, counters: Arc<Counters>) -> OtlpExporter {
        OtlpExporter {
            endpoint,
            forwarder,
            counters,
            last_logged: std::sync::Mutex::new(None),
        }
    }

    /// Queues a copy of `req` for the endpoint, or drops it for this endpoint.
    pub fn offer(&self, req: &ExportTraceServiceRequest) {
        let n = span_count(req);
        let queued = match self.forwarder.no_room_for(req.encoded_len() as u64) {
            Some(e) => Err(e),
            None => self.forwarder.enqueue(req.clone()),
        };
        if let Err(e) = queued {
            self.counters.spans_dropped.inc_by(n);
            let now = Instant::now();
            if let Ok(mut last) = self.last_logged.lock() {
                if last.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(60)) {
                    *last = Some(now);
                    tracing::warn!(
                        endpoint = %self.endpoint,
                        spans = n,
                        reason = %e,
                        "OTLP exporter: spans dropped for this endpoint (its queue is full; logged once a minute)"
                    );
                }
            }
        }
    }
}

/// Splits a request into requests of at most `max` encoded bytes where it can
/// (whole spans: one span larger than `max` goes alone), keeping each span's
/// resource and scope.
pub fn split(req: ExportTraceServiceRequest, max: usize) -> Vec<ExportTraceServiceRequest> {
    if req.encoded_len() <= max {
        return vec![req];
    }
    let mut out = Vec::new();
    let mut current = ExportTraceServiceRequest::default();
    let mut current_len = 0usize;
    for rs in req.resource_spans {
        let rs_len = rs.encoded_len();
        if rs_len + 8 <= max {
            if current_len + rs_len + 8 > max && !current.resource_spans.is_empty() {
                out.push(std::mem::take(&mut current));
                current_len = 0;
            }
            current_len += rs_len + 8;
            current.resource_spans.push(rs);
            continue;
        }
        // One resource's spans are too many for one export: cut by span.
        if !current.resource_spans.is_empty() {
            out.push(std::mem::take(&mut current));
            current_len = 0;
        }
        for ss in &rs.scope_spans {
            let piece = |spans| ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: rs.resource.clone(),
                    scope_spans: vec![ScopeSpans {
                        scope: ss.scope.clone(),
                        spans,
                        schema_url: ss.schema_url.clone(),
                    }],
                    schema_url: rs.schema_url.clone(),
                }],
            };
            let overhead = piece(Vec::new()).encoded_len() + 16;
            let (mut chunk, mut chunk_len) = (Vec::new(), overhead);
            for span in &ss.spans {
                let l = span.encoded_len() + 8;
                if chunk_len + l > max && !chunk.is_empty() {
                    out.push(piece(std::mem::take(&mut chunk)));
                    chunk_len = overhead;
                }
                chunk_len += l;
                chunk.push(span.clone());
            }
            if !chunk.is_empty() {
                out.push(piece(chunk));
            }
        }
    }
    if !current.resource_spans.is_empty() {
        out.push(current);
    }
    out
}

/// Whether the upstream's answer means "try again later". OTLP: `UNAVAILABLE`,
/// `DEADLINE_EXCEEDED`, `ABORTED`, `OUT_OF_RANGE`, `DATA_LOSS`, `CANCELLED`
/// are; `RESOURCE_EXHAUSTED` only with retry information. `UNKNOWN` and
/// `INTERNAL` (transport failures surface so) are retried too: dropping on
/// them would lose spans to a hiccup. Everything else is final.
fn retryable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::DataLoss
        | Code::Cancelled
        | Code::Unknown
        | Code::Internal => true,
        Code::ResourceExhausted => !status.details().is_empty(),
        _ => false,
    }
}

/// A pseudo-random factor in [0.5, 1.5) for backoff jitter.
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    0.5 + f64::from(nanos % 1000) / 1000.0
}

async fn export(channel: &Channel, body: Bytes, s: &ForwardSettings) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    if let Some(c) = s.compression {
        grpc = grpc.send_compressed(c);
    }
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("upstream not reachable: {e}")))?;
    let mut request = tonic::Request::new(body);
    *request.metadata_mut() = s.headers.clone();
    if let Some(t) = &s.token {
        request.metadata_mut().insert("authorization", t.clone());
    }
    grpc.unary(request, PathAndQuery::from_static(EXPORT_PATH), RawCodec)
        .await
        .map(|_| ())
}

/// Counts and logs spans given up on; each reason's first drop is logged as
/// an error, later ones at debug level (the summary line counts them all).
struct Drops {
    seen: std::collections::HashSet<String>,
    c: Arc<Counters>,
}

impl Drops {
    fn drop_spans(this: &std::sync::Mutex<Drops>, n: u64, reason: &str, detail: &str) {
        let Ok(mut d) = this.lock() else {
            return;
        };
        d.c.spans_dropped.inc_by(n);
        if d.seen.insert(reason.to_string()) {
            tracing::error!(spans = n, reason, detail, "spans dropped (logged once per reason; meshtrace_collector_spans_dropped_total counts every one)");
        } else {
            tracing::debug!(spans = n, reason, detail, "spans dropped");
        }
    }
}

/// Merges what is queued into batches and sends up to `max_in_flight` of them
/// at once: one at a time, each waiting for the central's fsynced commit, a
/// sidecar fed at saturation delivered 27,900 stored spans/s where the central
/// fed directly stored 38,700. A batch keeps its place in the queue's bound
/// (`queue_bytes`) until it is sent or dropped, so what is in flight is within
/// it; batches may arrive out of order (spans carry their trace). Ends once the
/// queue is closed and every batch in flight is done.
async fn run(
    mut rx: mpsc::UnboundedReceiver<Item>,
    transport: Arc<Transport>,
    s: ForwardSettings,
    c: Arc<Counters>,
    shutdown: Shutdown,
) {
    let drops = Arc::new(std::sync::Mutex::new(Drops {
        seen: Default::default(),
        c: c.clone(),
    }));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(s.max_in_flight.max(1)));
    let s = Arc::new(s);
    let mut sending = tokio::task::JoinSet::new();
    let mut batch = BytesMut::new();
    // A request that would have overflowed the last batch: the next one's first.
    let mut carried: Option<Item> = None;
    loop {
        let (first, n0) = match carried.take() {
            Some(item) => item,
            None => match rx.recv().await {
                Some(item) => item,
                None => break,
            },
        };
        // Wait for a free place before merging: what queues meanwhile joins this batch.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        while sending.try_join_next().is_some() {}
        let (bytes, n, requests) = merge(
            &mut rx,
            &mut carried,
            &mut batch,
            (first, n0),
            s.batch_bytes,
        );
        let size = bytes.len() as u64;
        let (transport, s, c, shutdown, drops) = (
            transport.clone(),
            s.clone(),
            c.clone(),
            shutdown.clone(),
            drops.clone(),
        );
        sending.spawn(async move {
            send_batch(&transport, &s, &c, &shutdown, &drops, bytes, n, false).await;
            // Its place in the queue is free once it is sent or dropped.
            c.queue_bytes.dec_by(size);
            c.queue_depth.dec_by(requests);
            drop(permit);
        });
    }
    while sending.join_next().await.is_some() {}
}

/// Merges `first` and what else is queued now into one batch of at most
/// `max` bytes (a request that would overflow it is `carried` to the next):
/// the batch, its spans and its requests.
fn merge(
    rx: &mut mpsc::UnboundedReceiver<Item>,
    carried: &mut Option<Item>,
    batch: &mut BytesMut,
    (first, n0): Item,
    max: usize,
) -> (Bytes, u64, u64) {
    batch.clear();
    batch.extend_from_slice(&first);
    drop(first);
    let (mut n, mut requests) = (n0, 1u64);
    while batch.len() < max {
        match rx.try_recv() {
            Ok((more, k)) if batch.len() + more.len() <= max => {
                batch.extend_from_slice(&more);
                n += k;
                requests += 1;
            }
            Ok(item) => {
                *carried = Some(item);
                break;
            }
            Err(_) => break,
        }
    }
    (batch.split().freeze(), n, requests)
}

/// [`run`] with the queue on disk ([`disk::Spool`]): one task writes what is
/// queued as batches (merged as `run` merges them), another sends the oldest
/// ones, up to `max_in_flight` at once, and removes each once it is sent or
/// given up on. When the shutdown grace ends the batches still on disk stay
/// there, not dropped: the next start sends them.
async fn run_disk(
    mut rx: mpsc::UnboundedReceiver<Item>,
    transport: Arc<Transport>,
    s: ForwardSettings,
    c: Arc<Counters>,
    shutdown: Shutdown,
    spool: disk::Spool,
) {
    let drops = Arc::new(std::sync::Mutex::new(Drops {
        seen: Default::default(),
        c: c.clone(),
    }));
    let spool = Arc::new(spool);
    let s = Arc::new(s);
    let writer = {
        let (spool, c, drops, max) = (spool.clone(), c.clone(), drops.clone(), s.batch_bytes);
        let shutdown = shutdown.clone();
        async move {
            let mut batch = BytesMut::new();
            let mut carried: Option<Item> = None;
            loop {
                let first = match carried.take() {
                    Some(item) => item,
                    None => match recv_until(&mut rx, &shutdown).await {
                        Some(item) => item,
                        None => break,
                    },
                };
                let (bytes, n, requests) = merge(&mut rx, &mut carried, &mut batch, first, max);
                let size = bytes.len() as u64;
                // Its requests are now one segment.
                c.queue_depth.dec_by(requests);
                if let Err(e) = spool.write(bytes, n).await {
                    c.queue_bytes.dec_by(size);
                    Drops::drop_spans(
                        &drops,
                        n,
                        "the disk queue could not be written",
                        &e.to_string(),
                    );
                } else {
                    c.queue_depth.inc();
                }
            }
            spool.writing_done();
        }
    };
    let sender = async move {
        let in_flight = Arc::new(tokio::sync::Semaphore::new(s.max_in_flight.max(1)));
        let mut sending = tokio::task::JoinSet::new();
        loop {
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                break;
            };
            while sending.try_join_next().is_some() {}
            let seg = loop {
                if shutdown.passed() {
                    break None;
                }
                // Registered before looking, so a segment written meanwhile wakes it.
                let ready = spool.ready.notified();
                match spool.pop() {
                    Ok(seg) => break Some(seg),
                    Err(true) => break None,
                    Err(false) => {
                        let wake = shutdown.wake.notified();
                        let wait = async {
                            tokio::select! {
                                _ = ready => {}
                                _ = wake => {}
                            }
                        };
                        match shutdown.deadline() {
                            Some(d) => {
                                let _ = tokio::time::timeout_at(d.into(), wait).await;
                            }
                            None => wait.await,
                        }
                    }
                }
            };
            let Some(seg) = seg else { break };
            let bytes = match disk::read(&seg).await {
                Ok(b) => b,
                Err(e) => {
                    Drops::drop_spans(
                        &drops,
                        seg.spans,
                        "the disk queue could not be read",
                        &e.to_string(),
                    );
                    disk::remove(&seg).await;
                    c.queue_bytes.dec_by(seg.bytes);
                    c.queue_depth.dec();
                    continue;
                }
            };
            let (transport, s, c, shutdown, drops, spool) = (
                transport.clone(),
                s.clone(),
                c.clone(),
                shutdown.clone(),
                drops.clone(),
                spool.clone(),
            );
            sending.spawn(async move {
                if send_batch(
                    &transport, &s, &c, &shutdown, &drops, bytes, seg.spans, true,
                )
                .await
                {
                    disk::remove(&seg).await;
                    c.queue_bytes.dec_by(seg.bytes);
                    c.queue_depth.dec();
                } else {
                    spool.unpop(seg);
                }
                drop(permit);
            });
        }
        while sending.join_next().await.is_some() {}
    };
    tokio::join!(writer, sender);
}

/// The next request queued; `None` once the queue is closed, or once the
/// shutdown grace is over and nothing is left in it.
async fn recv_until(rx: &mut mpsc::UnboundedReceiver<Item>, shutdown: &Shutdown) -> Option<Item> {
    loop {
        if shutdown.passed() {
            return rx.try_recv().ok();
        }
        let wake = shutdown.wake.notified();
        match shutdown.deadline() {
            Some(d) => {
                if let Ok(item) = tokio::time::timeout_at(d.into(), rx.recv()).await {
                    return item;
                }
            }
            None => {
                tokio::select! {
                    item = rx.recv() => return item,
                    _ = wake => {}
                }
            }
        }
    }
}

/// Sends one batch, retrying what is retryable until `max_retry_time` or the
/// end of the shutdown grace; counts it forwarded or dropped. False when the
/// grace ended and the batch is `kept` (on disk) instead of dropped.
#[allow(clippy::too_many_arguments)]
async fn send_batch(
    transport: &Transport,
    s: &ForwardSettings,
    c: &Counters,
    shutdown: &Shutdown,
    drops: &std::sync::Mutex<Drops>,
    bytes: Bytes,
    n: u64,
    kept: bool,
) -> bool {
    let started = Instant::now();
    let mut delay = s.retry_initial;
    let bytes = match transport.body(bytes).await {
        Ok(b) => b,
        Err(status) => {
            Drops::drop_spans(drops, n, "the batch could not be encoded", status.message());
            return true;
        }
    };
    loop {
        if shutdown.passed() {
            if kept {
                return false;
            }
            Drops::drop_spans(
                drops,
                n,
                "shutdown",
                "the shutdown grace (sidecar.shutdown_grace) ended before the upstream took them",
            );
            return true;
        }
        match transport.send(bytes.clone(), s).await {
            Ok(()) => {
                c.spans_forwarded.inc_by(n);
                return true;
            }
            Err(status) if !retryable(&status) => {
                Drops::drop_spans(
                    drops,
                    n,
                    &format!("upstream refused for good: {:?}", status.code()),
                    status.message(),
                );
                return true;
            }
            Err(status) if started.elapsed() >= s.max_retry_time => {
                Drops::drop_spans(
                    drops,
                    n,
                    "retries ran out (sidecar.max_retry_time)",
                    status.message(),
                );
                return true;
            }
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), retry_in_ms = delay.as_millis() as u64,
                    "upstream export failed; retrying");
                let sleep = tokio::time::sleep(delay.mul_f64(jitter()));
                match shutdown.deadline() {
                    // Shutting down: wake at the deadline at the latest.
                    Some(d) => {
                        let _ = tokio::time::timeout_at(d.into(), sleep).await;
                    }
                    None => {
                        tokio::select! {
                            _ = sleep => {}
                            _ = shutdown.wake.notified() => {}
                        }
                    }
                }
                delay = (delay * 2).min(s.retry_max);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshtrace_proto::otlp::common::v1::{any_value, AnyValue, KeyValue};
    use meshtrace_proto::otlp::resource::v1::Resource;
    use meshtrace_proto::otlp::trace::v1::Span;

    fn req(resources: usize, spans: usize) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: (0..resources)
                .map(|r| ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![KeyValue {
                            key: "service.name".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::StringValue(format!("svc{r}"))),
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans: (0..spans)
                            .map(|i| Span {
                                trace_id: vec![1; 16],
                                span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                                name: "x".repeat(100),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn split_keeps_every_span_with_its_resource_under_the_bound() {
        for (resources, spans, max) in [
            (1, 1000, 10_000),
            (5, 50, 4_000),
            (3, 10, 100_000),
            (1, 3, 50),
        ] {
            let r = req(resources, spans);
            let parts = split(r.clone(), max);
            let total: u64 = parts.iter().map(span_count).sum();
            assert_eq!(total, span_count(&r), "no span lost or doubled");
            for p in &parts {
                let single_span = span_count(p) == 1;
                assert!(
                    p.encoded_len() <= max || single_span,
                    "{} > {max}",
                    p.encoded_len()
                );
                for rs in &p.resource_spans {
                    let svc = &rs.resource.as_ref().unwrap().attributes[0];
                    assert!(
                        matches!(&svc.value.as_ref().unwrap().value, Some(any_value::Value::StringValue(s)) if s.starts_with("svc"))
                    );
                }
            }
            // Order and resources preserved: concatenating the parts gives the spans in order.
            let flat = |x: &[ExportTraceServiceRequest]| -> Vec<(String, Vec<u8>)> {
                x.iter()
                    .flat_map(|q| q.resource_spans.iter())
                    .flat_map(|rs| {
                        let svc =
                            format!("{:?}", rs.resource.as_ref().unwrap().attributes[0].value);
                        rs.scope_spans.iter().flat_map(move |ss| {
                            let svc = svc.clone();
                            ss.spans
                                .iter()
                                .map(move |s| (svc.clone(), s.span_id.clone()))
                        })
                    })
                    .collect()
            };
            assert_eq!(flat(&parts), flat(std::slice::from_ref(&r)));
            if r.encoded_len() > max {
                assert!(parts.len() > 1);
            }
        }
    }

    /// An upstream that holds every export `hold` before answering, and
    /// counts the exports it holds at once (the most of them) and the spans.
    #[derive(Clone, Default)]
    struct Slow {
        now: Arc<std::sync::atomic::AtomicUsize>,
        most: Arc<std::sync::atomic::AtomicUsize>,
        spans: Arc<std::sync::atomic::AtomicU64>,
        hold: Duration,
    }

    #[tonic::async_trait]
    impl crate::grpc::trace_server::trace_service_server::TraceService for Slow {
        async fn export(
            &self,
            request: tonic::Request<crate::grpc::EncodedExport>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, Status> {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.now.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(now, SeqCst);
            tokio::time::sleep(self.hold).await;
            let req = ExportTraceServiceRequest::decode(request.into_inner().0)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            self.spans.fetch_add(span_count(&req), SeqCst);
            self.now.fetch_sub(1, SeqCst);
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }

    /// Issue 23, item 6: up to `max_in_flight` exports are in flight at once
    /// (never more), every span arrives once, the queue's bound is kept (a full
    /// queue refuses, and is empty again once everything is sent), and the task
    /// ends once the queue is closed and the last export answered.
    #[test]
    fn exports_go_several_at_once_within_the_queue_bound() {
        use std::sync::atomic::Ordering::SeqCst;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for max_in_flight in [1usize, 4] {
                let slow = Slow {
                    hold: Duration::from_millis(500),
                    ..Slow::default()
                };
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                let server = tokio::spawn(
                    tonic::transport::Server::builder()
                        .add_service(
                            crate::grpc::trace_server::trace_service_server::TraceServiceServer::new(
                                slow.clone(),
                            ),
                        )
                        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(
                            listener,
                        )),
                );
                let one = req(1, 10);
                let size = one.encoded_len();
                let settings = ForwardSettings {
                    upstream: format!("http://{addr}"),
                    // Twelve requests fit; a batch is one request.
                    queue_bytes: 12 * size as u64 + 8,
                    batch_bytes: size + 8,
                    max_in_flight,
                    retry_initial: Duration::from_millis(50),
                    retry_max: Duration::from_millis(200),
                    max_retry_time: Duration::from_secs(60),
                    timeout: Duration::from_secs(60),
                    shutdown_grace: Duration::from_secs(60),
                    tls: None,
                    token: None,
                    headers: Default::default(),
                    compression: None,
                    protocol: Protocol::Grpc,
                    ca_pem: None,
                    disk_queue: None,
                };
                let counters = Arc::new(Counters::default());
                let (f, _shutdown, task) = Forwarder::start(settings, counters.clone()).unwrap();
                for _ in 0..12 {
                    f.enqueue(one.clone()).unwrap();
                }
                // The bound holds while they are in flight: a thirteenth is refused.
                assert!(matches!(f.enqueue(one.clone()), Err(SubmitError::Full)));
                drop(f);
                tokio::time::timeout(Duration::from_secs(120), task)
                    .await
                    .expect("the forwarder ends once the queue is sent")
                    .unwrap();
                assert_eq!(slow.spans.load(SeqCst), 120, "in flight {max_in_flight}");
                // Never more than allowed; several when allowed (each held half a second).
                let most = slow.most.load(SeqCst);
                assert!(most <= max_in_flight, "{most} > {max_in_flight}");
                assert!(most >= max_in_flight.min(2), "{most} at once of {max_in_flight}");
                assert_eq!(counters.spans_forwarded.get(), 120);
                assert_eq!(counters.queue_bytes.get(), 0);
                assert_eq!(counters.queue_depth.get(), 0);
                server.abort();
            }
        });
    }

    /// The disk queue: what an unreachable endpoint did not take stays on
    /// disk when the grace ends (not dropped), and a forwarder started again
    /// on the directory sends it, every span once, then leaves it empty.
    #[test]
    fn a_disk_queue_outlives_the_forwarder() {
        use std::sync::atomic::Ordering::SeqCst;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("meshtrace-disk-queue-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let one = req(2, 10);
            let size = one.encoded_len();
            let settings = ForwardSettings {
                upstream: format!("http://{addr}"),
                queue_bytes: 64 * size as u64,
                batch_bytes: 3 * size,
                max_in_flight: 2,
                retry_initial: Duration::from_millis(20),
                retry_max: Duration::from_millis(50),
                max_retry_time: Duration::from_secs(600),
                timeout: Duration::from_secs(5),
                shutdown_grace: Duration::from_millis(300),
                tls: None,
                token: None,
                headers: Default::default(),
                compression: None,
                protocol: Protocol::Grpc,
                ca_pem: None,
                disk_queue: Some(dir.clone()),
            };
            // Nothing listens yet (the port is held, not served).
            let counters = Arc::new(Counters::default());
            let (f, shutdown, task) = Forwarder::start(settings.clone(), counters.clone()).unwrap();
            for _ in 0..20 {
                f.enqueue(one.clone()).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            shutdown.begin(Duration::from_millis(300));
            drop(f);
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the forwarder ends at the grace")
                .unwrap();
            assert_eq!(counters.spans_dropped.get(), 0, "kept, not dropped");
            assert_eq!(counters.spans_forwarded.get(), 0);
            let files = std::fs::read_dir(&dir).unwrap().count();
            assert!(
                files >= 7,
                "20 requests in batches of at most 3: {files} files"
            );

            let slow = Slow::default();
            let server = tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(
                        crate::grpc::trace_server::trace_service_server::TraceServiceServer::new(
                            slow.clone(),
                        ),
                    )
                    .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
            );
            let counters = Arc::new(Counters::default());
            let (f, _shutdown, task) = Forwarder::start(settings, counters.clone()).unwrap();
            assert_eq!(
                counters.queue_depth.get(),
                files as u64,
                "what was left is queued"
            );
            f.enqueue(one.clone()).unwrap();
            drop(f);
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("the forwarder ends once the disk queue is sent")
                .unwrap();
            assert_eq!(slow.spans.load(SeqCst), 21 * 20, "every span once");
            assert_eq!(counters.spans_forwarded.get(), 21 * 20);
            assert_eq!(counters.queue_bytes.get(), 0);
            assert_eq!(counters.queue_depth.get(), 0);
            assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
            server.abort();
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn final_and_retryable_answers() {
        assert!(retryable(&Status::unavailable("down")));
        assert!(retryable(&Status::out_of_range("otlp: retryable")));
        assert!(!retryable(&Status::invalid_argument("bad")));
        assert!(!retryable(&Status::resource_exhausted("too large")));
        assert!(!retryable(&Status::unauthenticated("no token")));
        let with_retry_info = Status::with_details(
            Code::ResourceExhausted,
            "busy",
            Bytes::from_static(b"\x08\x01"),
        );
        assert!(retryable(&with_retry_info));
    }
}
