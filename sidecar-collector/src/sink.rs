//! Where received spans go: the store (all-in-one, central) or the upstream
//! collector (sidecar). The receivers answer once the sink has taken them.

use crate::forward::Forwarder;
use crate::ingest::cost::{decoded_cost_and_spans, json_cost};
use crate::ingest::wire;
use crate::ingest::{
    records_from_request, retain_valid, span_count, Ingested, RawSpans, Redaction, TimeWindow,
};
use crate::memory::{MemoryError, RequestMemory};
use crate::pipeline::{Pipeline, SubmitError};
use crate::telemetry::Counters;
use bytes::Bytes;
use meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::sync::Arc;

/// How an export's bytes are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

/// Why an export was not taken; each receiver answers it in its protocol.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Not an `ExportTraceServiceRequest` (HTTP 400, gRPC `INVALID_ARGUMENT`).
    #[error("{0}")]
    Malformed(String),
    /// Could never fit (HTTP 413, gRPC `RESOURCE_EXHAUSTED` without retry information).
    #[error("{0}")]
    TooLarge(String),
    /// Retry later (HTTP 503 + `Retry-After`, gRPC `UNAVAILABLE`).
    #[error("{0}")]
    Retry(String),
}

impl From<MemoryError> for Refusal {
    fn from(e: MemoryError) -> Self {
        if e.retryable() {
            Refusal::Retry(e.to_string())
        } else {
            Refusal::TooLarge(e.to_string())
        }
    }
}

impl From<SubmitError> for Refusal {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::TooLarge { .. } => Refusal::TooLarge(e.to_string()),
            _ => Refusal::Retry(e.to_string()),
        }
    }
}

#[derive(Clone)]
pub struct Sink {
    pub target: Target,
    /// Credentials in attributes, replaced before anything is kept or forwarded.
    pub redaction: Arc<Redaction>,
    /// Exporters beside the target (Kafka): a sender is answered once each
    /// has taken its spans too.
    pub exporters: Vec<Arc<dyn Exporter>>,
}

/// What an exporter still owes a sender: resolves once the spans it took
/// are durably taken (or refused).
pub type Delivery =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Refusal>> + Send>>;

/// An exporter beside the sink's target, taking each accepted request
/// (redacted, its invalid spans removed).
pub trait Exporter: Send + Sync {
    /// What a request of `bytes` would be refused with for room now.
    fn no_room_for(&self, bytes: u64) -> Option<Refusal>;
    /// Takes what it needs of `req` now (encodes and queues it); the
    /// delivery resolves once that is durably taken.
    fn export(self: Arc<Self>, req: &ExportTraceServiceRequest) -> Result<Delivery, Refusal>;
}

/// An OTLP exporter never refuses a sender: what its queue cannot take is
/// dropped for its endpoint alone.
impl Exporter for crate::forward::OtlpExporter {
    fn no_room_for(&self, _bytes: u64) -> Option<Refusal> {
        None
    }

    fn export(self: Arc<Self>, req: &ExportTraceServiceRequest) -> Result<Delivery, Refusal> {
        self.offer(req);
        Ok(Box::pin(std::future::ready(Ok(()))))
    }
}

#[cfg(feature = "kafka")]
impl From<crate::kafka::KafkaError> for Refusal {
    fn from(e: crate::kafka::KafkaError) -> Self {
        match e {
            crate::kafka::KafkaError::TooLarge(m) => Refusal::TooLarge(m),
            other => Refusal::Retry(other.to_string()),
        }
    }
}

#[cfg(feature = "kafka")]
impl Exporter for crate::kafka::KafkaExporter {
    fn no_room_for(&self, bytes: u64) -> Option<Refusal> {
        crate::kafka::KafkaExporter::no_room_for(self, bytes).map(Refusal::from)
    }

    fn export(self: Arc<Self>, req: &ExportTraceServiceRequest) -> Result<Delivery, Refusal> {
        let produced = crate::kafka::KafkaExporter::produce(&self, req)?;
        Ok(Box::pin(
            async move { produced.await.map_err(Refusal::from) },
        ))
    }
}

#[derive(Clone)]
pub enum Target {
    /// Store, then answer (nothing acknowledged is lost).
    Store {
        pipeline: Pipeline,
        indexed_tags: Arc<Vec<String>>,
        /// Span start times that are stored.
        window: TimeWindow,
        /// Adaptive sampling counts what arrives.
        adaptive: Option<Arc<crate::sampling::adaptive::Adaptive>>,
    },
    /// Queue for forwarding, then answer at once.
    Forward(Forwarder),
    /// Neither: only the sink's exporters take the spans (a gateway to Kafka).
    Gateway(Arc<Counters>),
}

/// Middleware for the ingest routes: a request that a full queue would
/// refuse is refused before its body is read (by its `Content-Length`, or
/// when no room is left at all), with the answer the sink would give.
pub async fn refuse_when_full(
    axum::extract::State(sink): axum::extract::State<Sink>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1);
    match sink.room_for(declared) {
        Ok(()) => next.run(req).await,
        Err(r) => {
            let grpc = crate::grpc::is_grpc(req.headers());
            // Larger than the whole queue: final (as the sink answers it once decoded).
            let (code, status) = match r {
                Refusal::TooLarge(_) => (
                    tonic::Code::ResourceExhausted,
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                ),
                _ => (
                    tonic::Code::Unavailable,
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                ),
            };
            crate::grpc::refusal(grpc, code, status, r.to_string())
        }
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Invalid spans that were left out.
#[derive(Debug, Default)]
pub struct Accepted {
    pub rejected: u64,
    pub message: String,
}

impl Sink {
    pub fn counters(&self) -> &Arc<Counters> {
        match &self.target {
            Target::Store { pipeline, .. } => &pipeline.counters,
            Target::Forward(f) => &f.counters,
            Target::Gateway(c) => c,
        }
    }

    /// `Err(Retry)` when a request of at least `bytes` would be refused for
    /// room (a full queue): checked before its body is read, decompressed or
    /// decoded — at saturation that work was most of a refused request's cost.
    pub fn room_for(&self, bytes: u64) -> Result<(), Refusal> {
        let full = match &self.target {
            Target::Store { pipeline, .. } => pipeline.no_room_for(bytes).map(Refusal::from),
            Target::Forward(f) => f.no_room_for(bytes).map(Refusal::from),
            Target::Gateway(_) => None,
        }
        .or_else(|| self.exporters.iter().find_map(|e| e.no_room_for(bytes)));
        match full {
            Some(e) => {
                self.counters().exports_refused_undecoded.inc();
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// Takes an encoded export: its decoded size is estimated from the wire
    /// bytes and reserved (with the bytes themselves) before it is decoded;
    /// the reservation ends once its spans are queued.
    pub async fn accept_encoded(
        &self,
        raw: Bytes,
        encoding: Encoding,
        memory: Option<RequestMemory>,
    ) -> Result<Accepted, Refusal> {
        self.room_for(raw.len() as u64)?;
        // Exporters beside the target take the decoded request: no wire paths.
        let wire = self.exporters.is_empty();
        if let (true, Encoding::Protobuf, Target::Store { .. }) = (wire, encoding, &self.target) {
            // Spans read in place from one copy of the bytes (a receiver's buffer may
            // be larger, or shared), never decoded: see `ingest::wire`. What that may
            // take is known from the export's layout; past it, or when the export is
            // unusual, it is decoded below under prost's own estimate.
            // The export's shape is counted first, allocating nothing: its layout
            // is reserved with the rest before it is built.
            if let Some(shape) = wire::shape(&raw) {
                let budget = wire::wire_budget(raw.len(), shape.spans);
                if let Some(m) = &memory {
                    m.grow_to(2 * raw.len() as u64 + shape.layout_bytes() + budget)
                        .await?;
                }
                if let Some(layout) = wire::layout(&raw) {
                    let own = Bytes::copy_from_slice(&raw);
                    if let Some(accepted) = self.store_wire(&own, layout, budget, &memory).await {
                        return accepted;
                    }
                }
            }
        }
        if let (true, Encoding::Protobuf, Target::Forward(f)) = (wire, encoding, &self.target) {
            if f.fits_one_batch(raw.len()) {
                if let Some(accepted) = self.forward_wire(f, &raw, &memory).await {
                    return accepted;
                }
            }
        }
        let (cost, ranges) = match encoding {
            Encoding::Protobuf => {
                decoded_cost_and_spans(&raw).map_err(|e| Refusal::Malformed(e.to_string()))?
            }
            Encoding::Json => (json_cost(&raw), Vec::new()),
        };
        if let Some(m) = &memory {
            m.grow_to(raw.len() as u64 + cost).await?;
        }
        let (req, raw) = match encoding {
            Encoding::Protobuf => {
                let req = ExportTraceServiceRequest::decode(raw.clone())
                    .map_err(|e| Refusal::Malformed(e.to_string()))?;
                // Stored spans are slices of these bytes: copied once into a buffer
                // of their own size (a receiver's buffer may be larger, or shared).
                let raw = matches!(self.target, Target::Store { .. }).then(|| RawSpans {
                    bytes: Bytes::copy_from_slice(&raw),
                    ranges,
                    changed: Vec::new(),
                });
                (req, raw)
            }
            Encoding::Json => (
                serde_json::from_slice::<ExportTraceServiceRequest>(&raw)
                    .map_err(|e| Refusal::Malformed(e.to_string()))?,
                None,
            ),
        };
        self.accept_raw(req, memory, raw).await
    }

    /// Takes a decoded request; `memory` (its reservation) ends once its spans
    /// are queued. Every mode counts what it received and rejected here, once
    /// per request.
    pub async fn accept(
        &self,
        req: ExportTraceServiceRequest,
        memory: Option<RequestMemory>,
    ) -> Result<Accepted, Refusal> {
        self.accept_raw(req, memory, None).await
    }

    /// A sidecar's path for protobuf exports: forwarded as their bytes when
    /// nothing in them is to be redacted or refused (`wire::forwards_as_is`);
    /// `None` otherwise (decoded, redacted and encoded again by the caller).
    async fn forward_wire(
        &self,
        f: &Forwarder,
        raw: &Bytes,
        memory: &Option<RequestMemory>,
    ) -> Option<Result<Accepted, Refusal>> {
        let shape = wire::shape(raw)?;
        let budget = wire::wire_budget(raw.len(), shape.spans);
        if let Some(m) = memory {
            if let Err(e) = m
                .grow_to(2 * raw.len() as u64 + shape.layout_bytes() + budget)
                .await
            {
                return Some(Err(e.into()));
            }
        }
        let layout = wire::layout(raw)?;
        let spans = wire::forwards_as_is(raw, layout, &self.redaction, budget)?;
        let c = self.counters();
        c.spans_received.inc_by(spans);
        let queued = if spans > 0 {
            f.enqueue_encoded(raw.to_vec(), spans)
        } else {
            Ok(())
        };
        if let Some(m) = memory {
            m.release().await;
        }
        Some(match queued {
            Ok(()) => Ok(Accepted {
                rejected: 0,
                message: String::new(),
            }),
            Err(e) => Err(e.into()),
        })
    }

    /// The store's path for protobuf exports: records read from the wire bytes;
    /// `None` when the export is unusual or malformed (decoded by prost instead).
    async fn store_wire(
        &self,
        raw: &Bytes,
        layout: wire::Layout,
        budget: u64,
        memory: &Option<RequestMemory>,
    ) -> Option<Result<Accepted, Refusal>> {
        let Target::Store {
            indexed_tags,
            window,
            ..
        } = &self.target
        else {
            return None;
        };
        let spans = layout.spans() as u64;
        let got = wire::records_in_layout(
            raw,
            layout,
            &self.redaction,
            indexed_tags,
            Some((*window, now_us())),
            budget,
        )?;
        let c = self.counters();
        c.spans_received.inc_by(spans);
        c.attributes_redacted.inc_by(got.redacted);
        Some(self.store(got.ingested, memory).await)
    }

    /// Queues records for the store (the reservation ends once they are queued)
    /// and waits until they are committed.
    async fn store(
        &self,
        ingested: Ingested,
        memory: &Option<RequestMemory>,
    ) -> Result<Accepted, Refusal> {
        let Target::Store {
            pipeline, adaptive, ..
        } = &self.target
        else {
            return Err(Refusal::Retry("not a store".into()));
        };
        let c = self.counters();
        // The decoded request is gone; the records are bounded by queue.max_bytes.
        if let Some(m) = memory {
            m.release().await;
        }
        c.spans_rejected.inc_by(ingested.rejected);
        let tally = adaptive.as_ref().map(|a| {
            // Only where the span's own sampler decided: a hop that followed
            // its parent says nothing about its own operation's probability.
            a.tally(ingested.records.iter().filter_map(|r| {
                Some((
                    r.service.as_str(),
                    r.operation.as_str(),
                    r.sampled_probability.filter(|_| r.sampler_decided)?,
                ))
            }))
        });
        if !ingested.records.is_empty() {
            pipeline.submit(ingested.records).await?;
        }
        // Counted once stored: a refused request comes back.
        if let (Some(a), Some(t)) = (adaptive, tally) {
            a.observe(t);
        }
        Ok(Accepted {
            rejected: ingested.rejected,
            message: ingested.message,
        })
    }

    /// [`Sink::accept`] with the request's wire bytes, when it has them.
    async fn accept_raw(
        &self,
        mut req: ExportTraceServiceRequest,
        memory: Option<RequestMemory>,
        mut raw: Option<RawSpans>,
    ) -> Result<Accepted, Refusal> {
        let c = self.counters();
        c.spans_received.inc_by(span_count(&req));
        let redacted = match raw.as_mut() {
            Some(r) => self.redaction.apply_marking(&mut req, &mut r.changed),
            None => self.redaction.apply(&mut req),
        };
        c.attributes_redacted.inc_by(redacted);
        if !self.exporters.is_empty() {
            return self.accept_exported(req, memory, raw).await;
        }
        self.to_target(req, memory, raw).await
    }

    /// The exporters and the target take the request side by side; answered
    /// once all of them have (the first refusal otherwise: the sender retries,
    /// and what some took already is taken again — stores and readers of
    /// the topic keep a span once).
    async fn accept_exported(
        &self,
        mut req: ExportTraceServiceRequest,
        memory: Option<RequestMemory>,
        raw: Option<RawSpans>,
    ) -> Result<Accepted, Refusal> {
        let c = self.counters();
        // Validated once here; the store's own check finds nothing more.
        let (rejected, message) = retain_valid(&mut req);
        c.spans_rejected.inc_by(rejected);
        if span_count(&req) == 0 {
            if let Some(m) = &memory {
                m.release().await;
            }
            return Ok(Accepted { rejected, message });
        }
        // The exporters encode what they send: about the request's size again,
        // until their own bounded queues hold it.
        if let Some(m) = &memory {
            m.grow_by(prost::Message::encoded_len(&req) as u64).await?;
        }
        let mut deliveries = Vec::with_capacity(self.exporters.len());
        for e in &self.exporters {
            match e.clone().export(&req) {
                Ok(d) => deliveries.push(d),
                Err(refused) => {
                    // What the others took is delivered all the same; the
                    // sender retries, and the copies are kept once.
                    if let Some(m) = &memory {
                        m.release().await;
                    }
                    futures_util::future::join_all(deliveries).await;
                    return Err(refused);
                }
            }
        }
        let stored = match self.target {
            Target::Gateway(_) => {
                if let Some(m) = &memory {
                    m.release().await;
                }
                Ok(Accepted::default())
            }
            _ => self.to_target(req, memory, raw).await,
        };
        let exported = futures_util::future::join_all(deliveries).await;
        // What the store itself rejects (starts outside its time window) is
        // told to the sender too.
        let stored = stored?;
        for e in exported {
            e?;
        }
        let message = match (message.is_empty(), stored.message.is_empty()) {
            (_, true) => message,
            (true, false) => stored.message,
            (false, false) => format!("{message}; {}", stored.message),
        };
        Ok(Accepted {
            rejected: rejected + stored.rejected,
            message,
        })
    }

    /// The target takes the request (redacted).
    async fn to_target(
        &self,
        mut req: ExportTraceServiceRequest,
        memory: Option<RequestMemory>,
        raw: Option<RawSpans>,
    ) -> Result<Accepted, Refusal> {
        let c = self.counters();
        match &self.target {
            Target::Store {
                indexed_tags,
                window,
                ..
            } => {
                let ingested =
                    records_from_request(req, indexed_tags, Some((*window, now_us())), raw);
                self.store(ingested, &memory).await
            }
            Target::Forward(f) => {
                let (rejected, message) = retain_valid(&mut req);
                let n = span_count(&req);
                c.spans_rejected.inc_by(rejected);
                if n > 0 {
                    f.enqueue(req)?;
                }
                if let Some(m) = &memory {
                    m.release().await;
                }
                Ok(Accepted { rejected, message })
            }
            Target::Gateway(_) => Ok(Accepted::default()),
        }
    }
}
