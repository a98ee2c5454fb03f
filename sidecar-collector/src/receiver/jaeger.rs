//! Jaeger's senders: agents and clients over UDP (`emitBatch`, Thrift
//! compact on 6831 and binary on 6832), Thrift over HTTP (`POST /api/traces`,
//! 14268, answered `202` as Jaeger answers it) and gRPC
//! (`jaeger.api_v2.CollectorService/PostSpans`, 14250). The batches become
//! OTLP (`ingest::jaeger`) and go the OTLP path from there: what a batch
//! costs read and translated is reserved before it is read, credentials are
//! redacted, invalid spans rejected one by one; a sender over HTTP or gRPC is
//! answered once its spans are committed (or queued, in a sidecar).
//!
//! HTTP: what is not a Thrift batch is a `400` naming the byte; a full
//! queue or the memory limit a `503` with `Retry-After`. gRPC:
//! `INVALID_ARGUMENT`, `UNAVAILABLE`, `RESOURCE_EXHAUSTED`. UDP has no
//! answer: every packet is counted by outcome
//! (`meshtrace_collector_udp_packets_total`), and a malformed one is logged
//! at most once a minute per port. UDP is bounded three ways: packets over
//! `max_packet_bytes` are dropped, at most `max_packets_per_second` are taken
//! (a token bucket), at most `max_packets_in_flight` are being translated or
//! stored at once — past those, packets are dropped and counted, and the
//! memory limiter refuses a packet it has no room for.

use crate::grpc::jaeger_collector::collector_service_server::{
    CollectorService, CollectorServiceServer,
};
use crate::grpc::EncodedExport;
use crate::ingest::jaeger::thrift::{self, Protocol};
use crate::ingest::jaeger::{proto_cost, to_otlp};
use crate::memory::{MemoryLimiter, RequestMemory};
use crate::receiver::http::{accepted, inflated, media_type, plain, refused};
use crate::sink::{Refusal, Sink};
use crate::telemetry::UdpMetrics;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use meshtrace_proto::jaeger::model::{PostSpansRequest, PostSpansResponse};
use prost::Message;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tonic::codec::CompressionEncoding;

// ---- HTTP: POST /api/traces ---------------------------------------------------

#[derive(Clone)]
pub struct JaegerHttpState {
    pub sink: Sink,
    pub max_message_bytes: usize,
}

pub fn http_router(state: JaegerHttpState) -> Router {
    let limit = state.max_message_bytes;
    Router::new()
        .route("/api/traces", post(traces))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

#[derive(serde::Deserialize)]
struct Format {
    format: Option<String>,
}

async fn traces(
    State(st): State<JaegerHttpState>,
    memory: Option<Extension<RequestMemory>>,
    Query(q): Query<Format>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let memory = memory.map(|Extension(m)| m);
    if let Some(f) = q.format.as_deref().filter(|f| *f != "jaeger.thrift") {
        return plain(
            StatusCode::BAD_REQUEST,
            format!("format {f:?} is not supported: this endpoint takes jaeger.thrift"),
        );
    }
    if let Err(r) = media_type(
        &headers,
        &[
            ("application/x-thrift", ()),
            ("application/vnd.apache.thrift.binary", ()),
        ],
        None,
    ) {
        return r;
    }
    let raw = match inflated(
        &st.sink,
        &headers,
        body,
        st.max_message_bytes,
        memory.as_ref(),
    )
    .await
    {
        Ok(raw) => raw,
        Err(r) => return r,
    };
    let cost = match thrift::batch_cost(&raw) {
        Ok(c) => c,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if let Some(m) = &memory {
        if let Err(e) = m.grow_to(cost.saturating_add(raw.len() as u64)).await {
            return refused(Refusal::from(e));
        }
    }
    let batch = match thrift::http_batch(&raw) {
        Ok(b) => b,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e.to_string()),
    };
    drop(raw);
    accepted(st.sink.accept(to_otlp(vec![batch]), memory).await)
}

// ---- gRPC: CollectorService/PostSpans -----------------------------------------

pub struct JaegerGrpc {
    pub sink: Sink,
}

fn status_of(e: Refusal) -> tonic::Status {
    match e {
        Refusal::Malformed(m) => tonic::Status::invalid_argument(m),
        Refusal::TooLarge(m) => tonic::Status::resource_exhausted(m),
        Refusal::Retry(m) => tonic::Status::unavailable(m),
    }
}

#[tonic::async_trait]
impl CollectorService for JaegerGrpc {
    async fn post_spans(
        &self,
        request: tonic::Request<EncodedExport>,
    ) -> Result<tonic::Response<PostSpansResponse>, tonic::Status> {
        let memory = request.extensions().get::<RequestMemory>().cloned();
        let raw = request.into_inner().0;
        self.sink.room_for(raw.len() as u64).map_err(status_of)?;
        let malformed = |e: String| {
            tonic::Status::invalid_argument(format!("malformed PostSpansRequest protobuf: {e}"))
        };
        let cost = proto_cost(&raw).map_err(|e| malformed(e.to_string()))?;
        if let Some(m) = &memory {
            m.grow_to(cost.saturating_add(raw.len() as u64))
                .await
                .map_err(|e| status_of(e.into()))?;
        }
        let req = PostSpansRequest::decode(raw).map_err(|e| malformed(e.to_string()))?;
        let accepted = self
            .sink
            .accept(to_otlp(req.batch.into_iter().collect()), memory)
            .await
            .map_err(status_of)?;
        if accepted.rejected > 0 {
            // Jaeger's API has no partial success: the rest is stored, the
            // rejected spans are counted (`spans_rejected`) and said here.
            tracing::debug!(
                rejected = accepted.rejected,
                reason = %accepted.message,
                "PostSpans: spans rejected"
            );
        }
        Ok(tonic::Response::new(PostSpansResponse {}))
    }
}

/// The gRPC service, with the size limit and gzip both ways.
pub fn grpc_service(
    receiver: JaegerGrpc,
    max_message_bytes: usize,
) -> CollectorServiceServer<JaegerGrpc> {
    CollectorServiceServer::new(receiver)
        .max_decoding_message_size(max_message_bytes)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
}

// ---- UDP: an agent's emitBatch ------------------------------------------------

/// One UDP port's receiver.
#[derive(Clone)]
pub struct UdpReceiver {
    pub sink: Sink,
    pub limiter: Arc<MemoryLimiter>,
    pub protocol: Protocol,
    /// The listener's configuration key (in metrics and logs).
    pub key: &'static str,
    pub max_packet_bytes: usize,
    pub max_packets_per_second: u32,
    pub in_flight: Arc<Semaphore>,
    pub metrics: Arc<UdpMetrics>,
    /// When a malformed packet was last logged (seconds since `started`).
    last_logged: Arc<AtomicU64>,
    started: Instant,
}

impl UdpReceiver {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        sink: Sink,
        limiter: Arc<MemoryLimiter>,
        protocol: Protocol,
        key: &'static str,
        max_packet_bytes: usize,
        max_packets_per_second: u32,
        max_packets_in_flight: usize,
        metrics: Arc<UdpMetrics>,
    ) -> UdpReceiver {
        UdpReceiver {
            sink,
            limiter,
            protocol,
            key,
            max_packet_bytes,
            max_packets_per_second,
            in_flight: Arc::new(Semaphore::new(max_packets_in_flight)),
            metrics,
            last_logged: Arc::new(AtomicU64::new(u64::MAX)),
            started: Instant::now(),
        }
    }

    /// Logs a malformed packet, at most once a minute.
    fn log_malformed(&self, why: &str) {
        let now = self.started.elapsed().as_secs();
        let last = self.last_logged.load(Ordering::Relaxed);
        if last != u64::MAX && now < last.saturating_add(60) {
            return;
        }
        if self
            .last_logged
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(
                listener = self.key,
                error = why,
                "malformed UDP packet dropped (counted in meshtrace_collector_udp_packets_total; logged at most once a minute)"
            );
        }
    }

    /// Translates and stores one packet; the outcome it is counted under.
    async fn take(&self, packet: Vec<u8>) -> &'static str {
        let cost = match thrift::agent_cost(&packet, self.protocol) {
            Ok(c) => c,
            Err(e) => {
                self.log_malformed(&e.0);
                return "malformed";
            }
        };
        let reservation = match self
            .limiter
            .reserve(cost.saturating_add(packet.len() as u64))
            .await
        {
            Ok(r) => r,
            Err(_) => return "refused",
        };
        let batch = match thrift::agent_batch(&packet, self.protocol) {
            Ok(b) => b,
            Err(e) => {
                self.log_malformed(&e.0);
                return "malformed";
            }
        };
        drop(packet);
        match self
            .sink
            .accept(to_otlp(vec![batch]), Some(RequestMemory::from(reservation)))
            .await
        {
            Ok(_) => "accepted",
            Err(_) => "refused",
        }
    }
}

/// Packets per second, with a second's worth of burst.
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Bucket {
        Bucket {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            last: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Receives packets on `socket` until `stop` resolves, then waits for the
/// packets in flight (their spans committed or refused).
pub async fn serve_udp(
    socket: UdpSocket,
    r: UdpReceiver,
    stop: impl std::future::Future<Output = ()>,
) {
    // One byte more than allowed: a packet that fills it was larger.
    let mut buf = vec![0u8; r.max_packet_bytes + 1];
    let mut bucket = Bucket::new(r.max_packets_per_second);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        let n = tokio::select! {
            got = socket.recv_from(&mut buf) => match got {
                Ok((n, _)) => n,
                Err(e) => {
                    tracing::debug!(listener = r.key, error = %e, "UDP receive failed");
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        while tasks.try_join_next().is_some() {}
        let outcome = if n > r.max_packet_bytes {
            "too_large"
        } else if !bucket.take(Instant::now()) {
            "rate_limited"
        } else {
            match r.in_flight.clone().try_acquire_owned() {
                Ok(permit) => {
                    let packet = buf.get(..n).unwrap_or_default().to_vec();
                    let r = r.clone();
                    tasks.spawn(async move {
                        let outcome = r.take(packet).await;
                        r.metrics.count(r.key, outcome);
                        drop(permit);
                    });
                    continue;
                }
                Err(_) => "busy",
            }
        };
        r.metrics.count(r.key, outcome);
    }
    // What was taken is finished: the spans of a packet counted `accepted`
    // are committed (or queued) before the exporters stop.
    let drained = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(30), drained)
        .await
        .is_err()
    {
        tracing::warn!(
            listener = r.key,
            "UDP packets still in flight after 30 s at shutdown"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_takes_its_rate_and_a_seconds_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::new(100);
        let burst = (0..1000).filter(|_| b.take(t0)).count();
        assert_eq!(burst, 100, "a second's worth at once");
        assert!(!b.take(t0));
        let later = t0 + Duration::from_millis(500);
        let refilled = (0..1000).filter(|_| b.take(later)).count();
        assert_eq!(refilled, 50, "half a second later: half the rate");
        let much_later = t0 + Duration::from_secs(3600);
        let capped = (0..1000).filter(|_| b.take(much_later)).count();
        assert_eq!(capped, 100, "never more than a second's worth");
    }
}
