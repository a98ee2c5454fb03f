//! The write path: a bounded queue in front of one writer thread that commits
//! everything waiting in one transaction (group commit) and only then
//! answers each request. Full queue → the receiver answers "retry later";
//! nothing is accepted that will then be dropped.

use crate::store::{SpanRecord, SpanStore, StoreError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
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
    done: oneshot::Sender<Result<(), String>>,
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
    pub counters: Arc<Counters>,
}

impl Pipeline {
    /// Starts the writer thread. It ends when every `Pipeline` clone is dropped,
    /// after writing what was queued.
    pub fn start(
        store: Arc<dyn SpanStore>,
        queue_size: usize,
        max_batch: usize,
    ) -> (Pipeline, std::thread::JoinHandle<()>) {
        let (tx, rx) = sync_channel::<Job>(queue_size);
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let handle = std::thread::Builder::new()
            .name("span-writer".into())
            .spawn(move || writer(rx, store, max_batch, c))
            .unwrap_or_else(|e| panic!("cannot start the writer thread: {e}"));
        (Pipeline { tx, counters }, handle)
    }

    /// Queues records and waits until they are committed.
    pub async fn submit(&self, records: Vec<SpanRecord>) -> Result<(), SubmitError> {
        let n = records.len() as u64;
        let (done, wait) = oneshot::channel();
        match self.tx.try_send(Job { records, done }) {
            Ok(()) => {
                self.counters.queue_depth.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => {
                self.counters.spans_refused.fetch_add(n, Ordering::Relaxed);
                return Err(SubmitError::Full);
            }
            Err(TrySendError::Disconnected(_)) => return Err(SubmitError::Closed),
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

fn writer(rx: Receiver<Job>, store: Arc<dyn SpanStore>, max_batch: usize, c: Arc<Counters>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        c.queue_depth
            .fetch_sub(jobs.len() as u64, Ordering::Relaxed);
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
        for j in jobs {
            let _ = j
                .done
                .send(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        }
    }
}
