//! The process's memory, bounded by configuration whatever arrives.
//!
//! Two limits, like the OpenTelemetry collector's `memory_limiter` plus an
//! account of what each request costs:
//!
//! - **decode budget** (`memory.decode_bytes`): every ingest request reserves
//!   what it holds before it holds it — its body as it arrives (the
//!   `Content-Length`, or `otlp.max_message_bytes` when unknown), then its
//!   decompressed bytes and its decoded size, estimated from the wire bytes
//!   before decoding (`ingest::cost`). A request that needs more than the
//!   whole budget could never fit: refused for good (HTTP 413, gRPC
//!   `RESOURCE_EXHAUSTED` without retry information, which OTLP clients do
//!   not retry) naming the limit. A request that finds the budget taken
//!   waits briefly, then is told to retry (503 / `UNAVAILABLE`). The
//!   reservation ends once the spans are queued, where `queue.max_bytes`
//!   (central) or `sidecar.queue_bytes` takes over.
//! - **process limit** (`memory.limit_bytes`, by default 80% of the memory
//!   cgroup's limit): while the resident set is above it, ingest and trace
//!   queries are refused with retryable errors, before the kernel kills.

use crate::telemetry::{MemoryMetrics, RefusalLabels};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Response, StatusCode};
use axum::middleware::Next;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const MIB: u64 = 1024 * 1024;

/// The limits a collector runs with, from its configuration (0: automatic)
/// and its memory cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    /// `memory.limit_bytes`, or 80% of the cgroup's limit; none without either.
    pub limit_bytes: Option<u64>,
    /// `memory.decode_bytes`, or a quarter of the limit (4–256 MiB), 256 MiB without one.
    pub decode_bytes: u64,
    /// `otlp.max_message_bytes`, lowered to the decode budget: a larger message could never fit.
    pub max_message_bytes: usize,
}

impl Sizing {
    pub fn new(
        limit_bytes: u64,
        decode_bytes: u64,
        max_message_bytes: usize,
        cgroup: Option<u64>,
    ) -> Sizing {
        let limit = match limit_bytes {
            0 => cgroup.map(|l| l / 5 * 4),
            n => Some(n),
        };
        let decode = match (decode_bytes, limit) {
            (0, Some(l)) => (l / 4).clamp(4 * MIB, 256 * MIB),
            (0, None) => 256 * MIB,
            (n, _) => n,
        };
        Sizing {
            limit_bytes: limit,
            decode_bytes: decode,
            max_message_bytes: max_message_bytes.min(usize::try_from(decode).unwrap_or(usize::MAX)),
        }
    }
}

/// `query.max_bytes`: what all reads together may hold (answers and working
/// memory), shared by the `query.max_concurrent` slots. 0: a quarter of the
/// process limit (32 MiB–1 GiB), 512 MiB without one.
pub fn query_bytes(configured: u64, limit_bytes: Option<u64>) -> u64 {
    match (configured, limit_bytes) {
        (0, Some(l)) => (l / 4).clamp(32 * MIB, 1024 * MIB),
        (0, None) => 512 * MIB,
        (n, _) => n,
    }
}

/// Reservations are in KiB (a semaphore permit each).
const UNIT: u64 = 1024;

/// How long a request waits for room in the decode budget.
const WAIT_FOR_ROOM: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    #[error("the request needs {needed} bytes of memory once decoded, more than memory.decode_bytes ({limit}); send smaller batches")]
    TooLarge { needed: u64, limit: u64 },
    #[error("the collector's resident memory ({rss} bytes) is over memory.limit_bytes ({limit}); retry later")]
    OverLimit { rss: u64, limit: u64 },
    #[error("memory.decode_bytes ({limit}) is taken by requests being received and decoded; retry later")]
    Busy { limit: u64 },
}

impl MemoryError {
    /// True unless the request could never fit.
    pub fn retryable(&self) -> bool {
        !matches!(self, MemoryError::TooLarge { .. })
    }

    fn reason(&self) -> &'static str {
        match self {
            MemoryError::TooLarge { .. } => "too_large",
            MemoryError::OverLimit { .. } => "over_limit",
            MemoryError::Busy { .. } => "busy",
        }
    }
}

/// The process's memory limits.
pub struct MemoryLimiter {
    budget: Arc<Semaphore>,
    budget_bytes: u64,
    rss_limit: Option<u64>,
    rss: AtomicU64,
    metrics: Arc<MemoryMetrics>,
}

impl MemoryLimiter {
    pub fn new(
        decode_bytes: u64,
        rss_limit: Option<u64>,
        metrics: Arc<MemoryMetrics>,
    ) -> Arc<MemoryLimiter> {
        let units = (decode_bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS as u64);
        metrics.decode_budget_bytes.set(units * UNIT);
        metrics.limit_bytes.set(rss_limit.unwrap_or(0));
        let limiter = Arc::new(MemoryLimiter {
            budget: Arc::new(Semaphore::new(units as usize)),
            budget_bytes: units * UNIT,
            rss_limit,
            rss: AtomicU64::new(resident_bytes().unwrap_or(0)),
            metrics,
        });
        limiter.sample();
        limiter
    }

    fn refused(&self, e: MemoryError) -> MemoryError {
        self.metrics
            .refused
            .get_or_create(&RefusalLabels {
                reason: e.reason().into(),
            })
            .inc();
        e
    }

    /// The process limit (`memory.limit_bytes`), if any.
    pub fn limit_bytes(&self) -> Option<u64> {
        self.rss_limit
    }

    /// Refuses (retryably) while the resident set is over the process limit.
    pub fn check(&self) -> Result<(), MemoryError> {
        match self.rss_limit {
            Some(limit) => {
                let rss = self.rss.load(Ordering::Relaxed);
                if rss > limit {
                    return Err(self.refused(MemoryError::OverLimit { rss, limit }));
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Reserves `bytes` of the decode budget, waiting up to a second for room.
    pub async fn reserve(self: &Arc<Self>, bytes: u64) -> Result<Reservation, MemoryError> {
        let mut r = Reservation {
            limiter: self.clone(),
            permit: None,
            bytes: 0,
        };
        r.grow_to(bytes).await?;
        Ok(r)
    }

    /// Re-reads the resident set size.
    fn sample(&self) {
        if let Some(rss) = resident_bytes() {
            self.rss.store(rss, Ordering::Relaxed);
        }
        self.metrics.decode_in_use_bytes.set(
            self.budget_bytes
                .saturating_sub(self.budget.available_permits() as u64 * UNIT),
        );
    }

    /// Samples the resident set every `every` (the check reads the last sample).
    pub fn spawn_sampler(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                me.sample();
            }
        })
    }
}

/// Part of the decode budget, held by one request; returned when dropped.
pub struct Reservation {
    limiter: Arc<MemoryLimiter>,
    permit: Option<OwnedSemaphorePermit>,
    bytes: u64,
}

impl Reservation {
    /// Grows the reservation to `bytes` (never shrinks it).
    pub async fn grow_to(&mut self, bytes: u64) -> Result<(), MemoryError> {
        let l = &self.limiter;
        if bytes > l.budget_bytes {
            return Err(l.refused(MemoryError::TooLarge {
                needed: bytes,
                limit: l.budget_bytes,
            }));
        }
        if bytes <= self.bytes {
            return Ok(());
        }
        l.check()?;
        let have = self.bytes.div_ceil(UNIT);
        let want = bytes.div_ceil(UNIT);
        let more = u32::try_from(want - have).unwrap_or(u32::MAX);
        let permit = match l.budget.clone().try_acquire_many_owned(more) {
            Ok(p) => p,
            Err(_) => {
                match tokio::time::timeout(WAIT_FOR_ROOM, l.budget.clone().acquire_many_owned(more))
                    .await
                {
                    Ok(Ok(p)) => p,
                    _ => {
                        return Err(l.refused(MemoryError::Busy {
                            limit: l.budget_bytes,
                        }))
                    }
                }
            }
        };
        match &mut self.permit {
            Some(p) => p.merge(permit),
            None => self.permit = Some(permit),
        }
        self.bytes = want * UNIT;
        Ok(())
    }

    /// Bytes reserved.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// The reservation of the request being served, for its handler to grow and end.
#[derive(Clone)]
pub struct RequestMemory(Arc<tokio::sync::Mutex<Option<Reservation>>>);

impl From<Reservation> for RequestMemory {
    /// A reservation made outside an HTTP request (a UDP packet's).
    fn from(r: Reservation) -> Self {
        RequestMemory(Arc::new(tokio::sync::Mutex::new(Some(r))))
    }
}

impl RequestMemory {
    /// Grows this request's reservation to `bytes`.
    pub async fn grow_to(&self, bytes: u64) -> Result<(), MemoryError> {
        match self.0.lock().await.as_mut() {
            Some(r) => r.grow_to(bytes).await,
            None => Ok(()),
        }
    }

    /// Grows this request's reservation by `bytes`.
    pub async fn grow_by(&self, bytes: u64) -> Result<(), MemoryError> {
        match self.0.lock().await.as_mut() {
            Some(r) => {
                let to = r.bytes().saturating_add(bytes);
                r.grow_to(to).await
            }
            None => Ok(()),
        }
    }

    /// Ends the reservation (the spans are queued, where the queue bound takes over).
    pub async fn release(&self) {
        self.0.lock().await.take();
    }
}

/// The answer to a refused request: gRPC status or HTTP status, with the reason.
pub fn refusal(e: &MemoryError, grpc: bool) -> Response<Body> {
    let (code, status) = if e.retryable() {
        (tonic::Code::Unavailable, StatusCode::SERVICE_UNAVAILABLE)
    } else {
        (
            tonic::Code::ResourceExhausted,
            StatusCode::PAYLOAD_TOO_LARGE,
        )
    };
    crate::grpc::refusal(grpc, code, status, e.to_string())
}

/// State of [`reserve_request`]: the limiter and the largest message.
#[derive(Clone)]
pub struct IngestMemory {
    pub limiter: Arc<MemoryLimiter>,
    pub max_message_bytes: u64,
}

/// Middleware for the ingest routes: before the body is read, reserve what
/// it may hold (its `Content-Length`, else `otlp.max_message_bytes`), and
/// hand the reservation to the handler through the request's extensions.
pub async fn reserve_request(
    State(m): State<IngestMemory>,
    mut req: Request,
    next: Next,
) -> Response<Body> {
    let grpc = crate::grpc::is_grpc(req.headers());
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Larger bodies are refused by the size limit before they are read.
    let first = declared.map_or(m.max_message_bytes, |n| n.min(m.max_message_bytes));
    let reservation = match m.limiter.reserve(first).await {
        Ok(r) => r,
        Err(e) => return refusal(&e, grpc),
    };
    req.extensions_mut()
        .insert(RequestMemory(Arc::new(tokio::sync::Mutex::new(Some(
            reservation,
        )))));
    next.run(req).await
}

/// Resident set size from `/proc/self/status`.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The memory limit of this process's cgroup (v2 `memory.max`, else v1
/// `memory.limit_in_bytes`), if there is one.
pub fn cgroup_limit() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut candidates = Vec::new();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.is_empty() {
            candidates.push(format!("/sys/fs/cgroup{path}/memory.max"));
            candidates.push(format!("/sys/fs/cgroup/unified{path}/memory.max"));
        } else if controllers.split(',').any(|c| c == "memory") {
            candidates.push(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"));
        }
    }
    candidates.push("/sys/fs/cgroup/memory.max".into());
    candidates
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|v| v.trim().parse::<u64>().ok())
        // "max" (v2) does not parse; v1's "no limit" is a huge number.
        .find(|v| *v < (1 << 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(budget: u64, rss_limit: Option<u64>) -> Arc<MemoryLimiter> {
        MemoryLimiter::new(budget, rss_limit, Arc::default())
    }

    #[tokio::test]
    async fn what_can_never_fit_is_refused_for_good_and_the_rest_waits_its_turn() {
        let l = limiter(1 << 20, None);
        let e = l.reserve(2 << 20).await.err().unwrap();
        assert!(!e.retryable(), "{e}");
        assert!(e.to_string().contains("memory.decode_bytes"), "{e}");
        let mut a = l.reserve(600 << 10).await.unwrap();
        let busy = l.reserve(600 << 10).await.err().unwrap();
        assert!(busy.retryable(), "{busy}");
        assert!(a.grow_to(1 << 20).await.is_ok(), "grows within the budget");
        assert_eq!(a.bytes(), 1 << 20);
        // Room comes back when a reservation ends, and a waiter gets it.
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { l.reserve(512 << 10).await.map(|r| r.bytes()) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(a);
        assert_eq!(waiter.await.unwrap(), Ok(512 << 10));
    }

    #[tokio::test]
    async fn over_the_process_limit_everything_is_told_to_retry() {
        let l = limiter(1 << 20, Some(1));
        let e = l.reserve(1024).await.err().unwrap();
        assert!(
            matches!(e, MemoryError::OverLimit { .. }) && e.retryable(),
            "{e}"
        );
        assert!(l.check().is_err());
        assert!(limiter(1 << 20, None).check().is_ok());
    }

    #[test]
    fn sizing_follows_the_cgroup_unless_configured() {
        // The sidecar manifest: 64 MiB.
        let s = Sizing::new(0, 0, 16 * MIB as usize, Some(64 * MIB));
        assert_eq!(s.limit_bytes, Some(64 * MIB / 5 * 4));
        assert_eq!(s.decode_bytes, 64 * MIB / 5);
        assert_eq!(s.max_message_bytes as u64, s.decode_bytes, "lowered to fit");
        // The central manifest: 1 GiB.
        let c = Sizing::new(0, 0, 16 * MIB as usize, Some(1024 * MIB));
        assert_eq!(c.decode_bytes, 1024 * MIB / 5);
        assert_eq!(c.max_message_bytes as u64, 16 * MIB);
        // No cgroup limit: no process limit, 256 MiB to decode.
        let n = Sizing::new(0, 0, 16 * MIB as usize, None);
        assert_eq!((n.limit_bytes, n.decode_bytes), (None, 256 * MIB));
        // Configured values win; tiny limits still leave 4 MiB to decode.
        let k = Sizing::new(512 * MIB, 32 * MIB, 16 * MIB as usize, Some(64 * MIB));
        assert_eq!((k.limit_bytes, k.decode_bytes), (Some(512 * MIB), 32 * MIB));
        assert_eq!(
            Sizing::new(0, 0, MIB as usize, Some(8 * MIB)).decode_bytes,
            4 * MIB
        );
    }

    #[test]
    fn resident_size_is_read() {
        assert!(resident_bytes().unwrap() > 1 << 20);
    }
}
