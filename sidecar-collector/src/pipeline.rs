//! The write path: a bounded queue in front of one writer thread that commits
//! everything waiting in one transaction (group commit) and only then
//! answers each request. Full queue → the receiver answers "retry later";
//! nothing is accepted that will then be dropped.

use crate::store::{SpanRecord, SpanStore, StoreError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Self-metrics of the pipeline.
#[derive(Debug, Default)]
pub struct Counters {
    pub spans_received: AtomicU64,
    pub spans_accepted: AtomicU64,
    pub spans_refused: AtomicU64,
    pub spans_rejected: AtomicU64,
    pub spans_stored: AtomicU64,
    pub store_failures: AtomicU64,
    /// Store transactions (each commits a group of export requests).
    pub transactions: AtomicU64,
    pub queue_depth: AtomicU64,
    /// Sidecar mode: spans the upstream accepted.
    pub spans_forwarded: AtomicU64,
    /// Sidecar mode: spans given up on (upstream refused them, or retries ran out).
    pub spans_dropped: AtomicU64,
    /// Sidecar mode: bytes waiting to be forwarded.
    pub queue_bytes: AtomicU64,
}

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

/// Memory a batch of records holds while queued (approximate, dominated by the encodings).
fn record_bytes(records: &[SpanRecord]) -> u64 {
    records
        .iter()
        .map(|r| {
            (r.body.len() + r.resource.len() + r.service.len() + r.operation.len() + 96) as u64
        })
        .sum()
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
}

#[derive(Clone)]
pub struct Pipeline {
    tx: SyncSender<Job>,
    max_bytes: u64,
    pub counters: Arc<Counters>,
}

impl Pipeline {
    /// Starts the writer thread. It ends when every `Pipeline` clone is dropped,
    /// after writing what was queued.
    pub fn start(
        store: Arc<dyn SpanStore>,
        queue_size: usize,
        max_batch: usize,
        max_bytes: u64,
        batch_timeout: Duration,
    ) -> (Pipeline, std::thread::JoinHandle<()>) {
        let (tx, rx) = sync_channel::<Job>(queue_size);
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let handle = std::thread::Builder::new()
            .name("span-writer".into())
            .spawn(move || writer(rx, store, max_batch, batch_timeout, c))
            .unwrap_or_else(|e| panic!("cannot start the writer thread: {e}"));
        (
            Pipeline {
                tx,
                max_bytes,
                counters,
            },
            handle,
        )
    }

    /// Queues records and waits until they are committed.
    pub async fn submit(&self, records: Vec<SpanRecord>) -> Result<(), SubmitError> {
        let n = records.len() as u64;
        let bytes = record_bytes(&records);
        // The memory limit: reserve the bytes, or refuse (retryable).
        let q = &self.counters.queue_bytes;
        if !reserve(q, bytes, self.max_bytes) {
            self.counters.spans_refused.fetch_add(n, Ordering::Relaxed);
            return Err(SubmitError::Full);
        }
        let (done, wait) = oneshot::channel();
        match self.tx.try_send(Job {
            records,
            bytes,
            done,
        }) {
            Ok(()) => {
                self.counters.queue_depth.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => {
                q.fetch_sub(bytes, Ordering::Relaxed);
                self.counters.spans_refused.fetch_add(n, Ordering::Relaxed);
                return Err(SubmitError::Full);
            }
            Err(TrySendError::Disconnected(_)) => {
                q.fetch_sub(bytes, Ordering::Relaxed);
                return Err(SubmitError::Closed);
            }
        }
        match wait.await {
            Ok(Ok(())) => {
                self.counters.spans_accepted.fetch_add(n, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(e)) => {
                self.counters.spans_refused.fetch_add(n, Ordering::Relaxed);
                Err(SubmitError::Store(e))
            }
            Err(_) => Err(SubmitError::Closed),
        }
    }
}

fn writer(
    rx: Receiver<Job>,
    store: Arc<dyn SpanStore>,
    max_batch: usize,
    batch_timeout: Duration,
    c: Arc<Counters>,
) {
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
        c.transactions.fetch_add(1, Ordering::Relaxed);
        c.queue_depth
            .fetch_sub(jobs.len() as u64, Ordering::Relaxed);
        let queued_bytes: u64 = jobs.iter().map(|j| j.bytes).sum();
        let records: Vec<SpanRecord> = jobs.iter_mut().flat_map(|j| j.records.drain(..)).collect();
        let n = records.len() as u64;
        let result: Result<(), StoreError> = store.write(&records);
        match &result {
            Ok(()) => {
                c.spans_stored.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                c.store_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, spans = n, "span write failed; senders told to retry");
            }
        }
        drop(records);
        c.queue_bytes.fetch_sub(queued_bytes, Ordering::Relaxed);
        for j in jobs {
            let _ = j
                .done
                .send(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StoredSpan, TraceQuery};
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

    impl SpanStore for GatedStore {
        fn write(&self, spans: &[SpanRecord]) -> Result<(), StoreError> {
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.cv.wait(open).unwrap();
            }
            *self.written.lock().unwrap() += spans.len();
            Ok(())
        }
        fn trace(&self, _: &[u8; 16]) -> Result<Vec<StoredSpan>, StoreError> {
            Ok(vec![])
        }
        fn services(&self) -> Result<Vec<String>, StoreError> {
            Ok(vec![])
        }
        fn operations(&self, _: &str) -> Result<Vec<(String, i32)>, StoreError> {
            Ok(vec![])
        }
        fn find_trace_ids(&self, _: &TraceQuery) -> Result<Vec<[u8; 16]>, StoreError> {
            Ok(vec![])
        }
        fn dependencies(&self, _: i64, _: i64) -> Result<Vec<(String, String, u64)>, StoreError> {
            Ok(vec![])
        }
        fn apply_retention(&self, _: i64) -> Result<usize, StoreError> {
            Ok(0)
        }
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
                indexed_tags: vec![],
                sampled_probability: None,
                resource: vec![],
                body: vec![0; body],
            })
            .collect()
    }

    #[tokio::test]
    async fn memory_limit_refuses_and_frees_after_commit() {
        let store = Arc::new(GatedStore::default());
        // Room for 100 KB of queued records; each submission below is ~55 KB.
        let (p, _writer) = Pipeline::start(store.clone(), 100, 1, 100_000, Duration::ZERO);
        let first = tokio::spawn({
            let p = p.clone();
            async move { p.submit(records(50, 1000)).await }
        });
        // The writer holds the first job (taken off the queue, bytes still reserved).
        let c = p.counters.clone();
        while !(c.queue_depth.load(Ordering::Relaxed) == 0
            && c.queue_bytes.load(Ordering::Relaxed) > 0)
        {
            tokio::task::yield_now().await;
        }
        let refused = p.submit(records(50, 1000)).await;
        assert!(matches!(refused, Err(SubmitError::Full)), "{refused:?}");
        assert_eq!(c.spans_refused.load(Ordering::Relaxed), 50);
        store.open();
        assert!(first.await.unwrap().is_ok());
        assert_eq!(
            c.queue_bytes.load(Ordering::Relaxed),
            0,
            "freed after commit"
        );
        assert!(p.submit(records(50, 1000)).await.is_ok(), "room again");
        assert_eq!(*store.written.lock().unwrap(), 100);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batch_timeout_groups_requests_into_one_transaction() {
        for (timeout, expect_one) in [(Duration::from_millis(300), true), (Duration::ZERO, false)] {
            let store = Arc::new(GatedStore::default());
            store.open();
            let (p, _writer) = Pipeline::start(store.clone(), 100, 100, 1 << 30, timeout);
            let first = tokio::spawn({
                let p = p.clone();
                async move { p.submit(records(1, 10)).await }
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(p.submit(records(1, 10)).await.is_ok());
            assert!(first.await.unwrap().is_ok());
            let tx = p.counters.transactions.load(Ordering::Relaxed);
            if expect_one {
                assert_eq!(tx, 1, "two requests 50 ms apart share a 300 ms batch");
            } else {
                assert_eq!(tx, 2, "no timeout: each commits as it comes");
            }
        }
    }
}
