//! The write path: a bounded queue in front of one writer thread that commits
//! everything waiting in one transaction (group commit) and only then
//! answers each request. Full queue → the receiver answers "retry later";
//! nothing is accepted that will then be dropped.

use crate::metrics::SpanMetrics;
use crate::model::SpanRecord;
use crate::store::{SpanWriter, StoreError};
use crate::telemetry::Counters;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

struct Job {
    records: Vec<SpanRecord>,
    bytes: u64,
    done: oneshot::Sender<Result<(), String>>,
}

/// Adds `bytes` to `used` unless that would pass `max`; true if reserved.
pub fn reserve(used: &AtomicU64, bytes: u64, max: u64) -> bool {
    let mut current = used.load(Ordering::Relaxed);
    loop {
        if current + bytes > max {
            return false;
        }
        match used.compare_exchange(
            current,
            current + bytes,
            Ordering::AcqRel,
            Ordering::Relaxed,
        ) {
            Ok(_) => return true,
            Err(now) => current = now,
        }
    }
}

/// Memory a batch of records holds while queued: each record's struct, its
/// buffers by capacity and its indexed tags; an origin shared by consecutive
/// records counts once.
fn record_bytes(records: &[SpanRecord]) -> u64 {
    let mut last_origin: Option<&std::sync::Arc<[u8]>> = None;
    let mut total = 0u64;
    for r in records {
        if !last_origin.is_some_and(|o| std::sync::Arc::ptr_eq(o, &r.origin)) {
            total += r.origin.len() as u64;
            last_origin = Some(&r.origin);
        }
        let tags: usize = r
            .indexed_tags
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2 * std::mem::size_of::<String>())
            .sum();
        total += (std::mem::size_of::<SpanRecord>()
            + r.body.len()
            + r.service.capacity()
            + r.operation.capacity()
            + tags) as u64;
    }
    total
}

/// Why a submission was not stored.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the write queue is full; retry later")]
    Full,
    #[error("the store is shut down")]
    Closed,
    #[error("the store refused the write: {0}")]
    Store(String),
    /// Larger than the queue could ever hold: final, not "retry later".
    #[error("the request ({bytes} bytes) is larger than {key} ({limit} bytes) and can never be queued; send smaller batches")]
    TooLarge {
        bytes: u64,
        limit: u64,
        key: &'static str,
    },
}

/// Queue bounds and group-commit settings.
#[derive(Debug, Clone, Copy)]
pub struct PipelineSettings {
    /// Export requests that may wait.
    pub queue_size: usize,
    /// Requests committed in one transaction at most.
    pub max_batch: usize,
    /// Bytes of records that may wait.
    pub max_bytes: u64,
    /// How long the writer waits for more requests to join a transaction.
    pub batch_timeout: Duration,
}

#[derive(Clone)]
pub struct Pipeline {
    tx: SyncSender<Job>,
    max_bytes: u64,
    queue_size: usize,
    pub counters: Arc<Counters>,
}

impl Pipeline {
    /// Starts the writer thread. It ends when every `Pipeline` clone is dropped,
    /// after writing what was queued.
    /// With `metrics`, committed spans are counted there (after their senders are answered).
    pub fn start(
        store: Arc<dyn SpanWriter>,
        settings: PipelineSettings,
        counters: Arc<Counters>,
        metrics: Option<Arc<SpanMetrics>>,
    ) -> std::io::Result<(Pipeline, std::thread::JoinHandle<()>)> {
        let (tx, rx) = sync_channel::<Job>(settings.queue_size);
        let c = counters.clone();
        let handle = std::thread::Builder::new()
            .name("span-writer".into())
            .spawn(move || writer(rx, store, settings, c, metrics))?;
        Ok((
            Pipeline {
                tx,
                max_bytes: settings.max_bytes,
                queue_size: settings.queue_size,
                counters,
            },
            handle,
        ))
    }

    /// Why a request of at least `bytes` would be refused for room now (the
    /// queue holds `queue.queue_size` requests, or `bytes` more would pass
    /// `queue.max_bytes`): asked before it is decoded, so a saturated collector
    /// spends nothing on what it will refuse.
    pub fn no_room_for(&self, bytes: u64) -> Option<SubmitError> {
        if bytes > self.max_bytes {
            return Some(SubmitError::TooLarge {
                bytes,
                limit: self.max_bytes,
                key: "queue.max_bytes",
            });
        }
        let c = &self.counters;
        let full = c.queue_depth.get() as usize >= self.queue_size
            || c.queue_bytes.get().saturating_add(bytes) > self.max_bytes;
        full.then_some(SubmitError::Full)
    }

    /// Queues records and waits until they are committed.
    pub async fn submit(&self, records: Vec<SpanRecord>) -> Result<(), SubmitError> {
        let n = records.len() as u64;
        let bytes = record_bytes(&records);
        // The memory limit: reserve the bytes, or refuse (retryable).
        let q = self.counters.queue_bytes.inner();
        if !reserve(q, bytes, self.max_bytes) {
            self.counters.spans_refused.inc_by(n);
            return Err(SubmitError::Full);
        }
        let (done, wait) = oneshot::channel();
        // Counted before it is sent: the writer may take the job (and count it
        // out) before `try_send` returns, and the gauge must never wrap below
        // zero (`no_room_for` reads it).
        self.counters.queue_depth.inc();
        match self.tx.try_send(Job {
            records,
            bytes,
            done,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.counters.queue_depth.dec();
                q.fetch_sub(bytes, Ordering::Relaxed);
                self.counters.spans_refused.inc_by(n);
                return Err(SubmitError::Full);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.counters.queue_depth.dec();
                q.fetch_sub(bytes, Ordering::Relaxed);
                return Err(SubmitError::Closed);
            }
        }
        match wait.await {
            Ok(Ok(())) => {
                self.counters.spans_accepted.inc_by(n);
                Ok(())
            }
            Ok(Err(e)) => {
                self.counters.spans_refused.inc_by(n);
                Err(SubmitError::Store(e))
            }
            Err(_) => Err(SubmitError::Closed),
        }
    }
}

fn writer(
    rx: Receiver<Job>,
    store: Arc<dyn SpanWriter>,
    settings: PipelineSettings,
    c: Arc<Counters>,
    metrics: Option<Arc<SpanMetrics>>,
) {
    let (max_batch, batch_timeout) = (settings.max_batch, settings.batch_timeout);
    while let Ok(first) = rx.recv() {
        // Group commit: what is queued now, plus what arrives within the timeout.
        let deadline = Instant::now() + batch_timeout;
        let mut jobs = vec![first];
        while jobs.len() < max_batch {
            let next = match rx.try_recv() {
                Ok(j) => Some(j),
                Err(_) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        None
                    } else {
                        rx.recv_timeout(left).ok()
                    }
                }
            };
            match next {
                Some(j) => jobs.push(j),
                None => break,
            }
        }
        c.transactions.inc();
        c.queue_depth.dec_by(jobs.len() as u64);
        let queued_bytes: u64 = jobs.iter().map(|j| j.bytes).sum();
        let records: Vec<SpanRecord> = jobs.iter_mut().flat_map(|j| j.records.drain(..)).collect();
        let n = records.len() as u64;
        let result: Result<(), StoreError> = store.write(&records);
        match &result {
            Ok(()) => {
                c.spans_stored.inc_by(n);
            }
            Err(e) => {
                c.store_failures.inc();
                tracing::error!(error = %e, spans = n, "span write failed; senders told to retry");
            }
        }
        c.queue_bytes.dec_by(queued_bytes);
        for j in jobs {
            let _ = j
                .done
                .send(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        }
        if let (Some(m), Ok(())) = (&metrics, &result) {
            m.record(&records);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Condvar, Mutex};

    /// A store whose writes wait for a gate: controls timing only (the real
    /// store is exercised by the storage suite and the end-to-end tests).
    #[derive(Default)]
    struct GatedStore {
        open: Mutex<bool>,
        cv: Condvar,
        written: Mutex<usize>,
    }

    impl GatedStore {
        fn open(&self) {
            *self.open.lock().unwrap() = true;
            self.cv.notify_all();
        }
    }

    impl SpanWriter for GatedStore {
        fn write(&self, spans: &[SpanRecord]) -> Result<(), StoreError> {
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.cv.wait(open).unwrap();
            }
            *self.written.lock().unwrap() += spans.len();
            Ok(())
        }
        fn apply_retention(&self, _: i64) -> Result<usize, StoreError> {
            Ok(0)
        }
    }

    fn start(
        store: Arc<GatedStore>,
        queue_size: usize,
        max_batch: usize,
        max_bytes: u64,
        batch_timeout: Duration,
    ) -> Pipeline {
        let settings = PipelineSettings {
            queue_size,
            max_batch,
            max_bytes,
            batch_timeout,
        };
        Pipeline::start(store, settings, Arc::default(), None)
            .unwrap()
            .0
    }

    fn records(n: usize, body: usize) -> Vec<SpanRecord> {
        (0..n)
            .map(|i| SpanRecord {
                trace_id: [1; 16],
                span_id: (i as u64 + 1).to_be_bytes(),
                parent_span_id: None,
                service: "s".into(),
                operation: "o".into(),
                kind: 2,
                start_us: 0,
                duration_us: 1,
                error: false,
                status_code: 0,
                indexed_tags: vec![],
                sampled_probability: None,
                sampler_decided: false,
                origin: Arc::from(Vec::new()),
                body: vec![0; body].into(),
                tags: Arc::from(Vec::new()),
            })
            .collect()
    }

    #[tokio::test]
    async fn memory_limit_refuses_and_frees_after_commit() {
        let store = Arc::new(GatedStore::default());
        // Room for 100 KB of queued records; each submission below is ~55 KB.
        let p = start(store.clone(), 100, 1, 100_000, Duration::ZERO);
        let first = tokio::spawn({
            let p = p.clone();
            async move { p.submit(records(50, 1000)).await }
        });
        // The writer holds the first job (taken off the queue, bytes still reserved).
        let c = p.counters.clone();
        while !(c.queue_depth.get() == 0 && c.queue_bytes.get() > 0) {
            tokio::task::yield_now().await;
        }
        let refused = p.submit(records(50, 1000)).await;
        assert!(matches!(refused, Err(SubmitError::Full)), "{refused:?}");
        assert_eq!(c.spans_refused.get(), 50);
        store.open();
        assert!(first.await.unwrap().is_ok());
        assert_eq!(c.queue_bytes.get(), 0, "freed after commit");
        assert!(p.submit(records(50, 1000)).await.is_ok(), "room again");
        assert_eq!(*store.written.lock().unwrap(), 100);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batch_timeout_groups_requests_into_one_transaction() {
        for (timeout, expect_one) in [(Duration::from_millis(300), true), (Duration::ZERO, false)] {
            let store = Arc::new(GatedStore::default());
            store.open();
            let p = start(store.clone(), 100, 100, 1 << 30, timeout);
            let first = tokio::spawn({
                let p = p.clone();
                async move { p.submit(records(1, 10)).await }
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(p.submit(records(1, 10)).await.is_ok());
            assert!(first.await.unwrap().is_ok());
            let tx = p.counters.transactions.get();
            if expect_one {
                assert_eq!(tx, 1, "two requests 50 ms apart share a 300 ms batch");
            } else {
                assert_eq!(tx, 2, "no timeout: each commits as it comes");
            }
        }
    }
}
