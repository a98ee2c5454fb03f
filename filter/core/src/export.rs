//! The per-VM export buffer.
//!
//! Spans are appended already encoded. A batch is sealed when it reaches
//! `max_batch_spans` or `max_batch_bytes`, or when its oldest span is
//! `flush_interval_ms` old (checked on the root tick). At most
//! `max_in_flight` calls are outstanding.
//!
//! When full (`max_buffer_bytes` of unsent spans) the **newest** span is
//! dropped and counted: what is already buffered keeps its place, nothing
//! blocks and no request waits. A call that fails with a retryable outcome
//! (no response, timeout, 429, 502, 503, 504) puts its batch back at the
//! head and backs off exponentially; any other failure drops the batch and
//! counts it.

use crate::config::ExportConfig;
use crate::metrics::Counters;
use std::collections::VecDeque;

/// An unsent batch of encoded `ScopeSpans.spans` entries.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub spans: Vec<u8>,
    pub count: usize,
}

/// What happened to an export call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// The call got this HTTP status.
    Status(u32),
    /// No response: connection failure, reset or timeout.
    NoResponse,
}

impl CallOutcome {
    fn is_success(self) -> bool {
        matches!(self, CallOutcome::Status(200..=299))
    }
    fn is_retryable(self) -> bool {
        matches!(
            self,
            CallOutcome::NoResponse | CallOutcome::Status(429 | 502 | 503 | 504)
        )
    }
}

#[derive(Debug)]
pub struct ExportBuffer {
    cfg: ExportConfig,
    current: Batch,
    current_since_ns: u64,
    ready: VecDeque<Batch>,
    buffered_bytes: usize,
    in_flight: Vec<(u32, Batch)>,
    backoff_ms: u64,
    retry_at_ns: u64,
    pub counters: Counters,
}

impl ExportBuffer {
    pub fn new(cfg: &ExportConfig) -> Self {
        ExportBuffer {
            cfg: cfg.clone(),
            current: Batch::default(),
            current_since_ns: 0,
            ready: VecDeque::new(),
            buffered_bytes: 0,
            in_flight: Vec::new(),
            backoff_ms: 0,
            retry_at_ns: 0,
            counters: Counters::default(),
        }
    }

    /// Appends one span written by `encode`. Returns false (and counts a drop) when full.
    pub fn append(&mut self, now_ns: u64, encode: impl FnOnce(&mut Vec<u8>)) -> bool {
        if self.buffered_bytes >= self.cfg.max_buffer_bytes {
            self.counters.spans_dropped += 1;
            return false;
        }
        if self.current.count == 0 {
            self.current_since_ns = now_ns;
        }
        let before = self.current.spans.len();
        encode(&mut self.current.spans);
        self.buffered_bytes += self.current.spans.len() - before;
        self.current.count += 1;
        if self.current.count >= self.cfg.max_batch_spans
            || self.current.spans.len() >= self.cfg.max_batch_bytes
        {
            self.seal();
        }
        true
    }

    fn seal(&mut self) {
        if self.current.count > 0 {
            let cap = self.current.spans.len();
            let batch = std::mem::replace(
                &mut self.current,
                Batch {
                    spans: Vec::with_capacity(cap),
                    count: 0,
                },
            );
            self.ready.push_back(batch);
        }
    }

    /// The next batch to send now, if any (called on the tick, repeatedly).
    pub fn next_batch(&mut self, now_ns: u64) -> Option<Batch> {
        if self.current.count > 0
            && now_ns.saturating_sub(self.current_since_ns)
                >= self.cfg.flush_interval_ms * 1_000_000
        {
            self.seal();
        }
        if now_ns < self.retry_at_ns || self.in_flight.len() >= self.cfg.max_in_flight {
            return None;
        }
        let batch = self.ready.pop_front()?;
        self.buffered_bytes -= batch.spans.len();
        Some(batch)
    }

    /// The batch was handed to the host as call `token`.
    pub fn dispatched(&mut self, token: u32, batch: Batch) {
        self.in_flight.push((token, batch));
    }

    /// The host refused to start the call (e.g. unknown cluster): retry later.
    pub fn dispatch_failed(&mut self, batch: Batch, now_ns: u64) {
        self.counters.export_failures += 1;
        self.requeue(batch);
        self.back_off(now_ns);
    }

    /// The call `token` finished.
    pub fn completed(&mut self, token: u32, outcome: CallOutcome, now_ns: u64) {
        let Some(pos) = self.in_flight.iter().position(|(t, _)| *t == token) else {
            return;
        };
        let (_, batch) = self.in_flight.swap_remove(pos);
        if outcome.is_success() {
            self.counters.spans_exported += batch.count as u64;
            self.backoff_ms = 0;
            self.retry_at_ns = 0;
            return;
        }
        self.counters.export_failures += 1;
        if outcome.is_retryable() {
            self.requeue(batch);
            self.back_off(now_ns);
        } else {
            self.counters.spans_dropped += batch.count as u64;
        }
    }

    fn requeue(&mut self, batch: Batch) {
        self.buffered_bytes += batch.spans.len();
        self.ready.push_front(batch);
    }

    fn back_off(&mut self, now_ns: u64) {
        self.backoff_ms = if self.backoff_ms == 0 {
            self.cfg.backoff_initial_ms
        } else {
            (self.backoff_ms * 2).min(self.cfg.backoff_max_ms)
        };
        self.retry_at_ns = now_ns + self.backoff_ms * 1_000_000;
    }

    /// Spans waiting (not in flight).
    pub fn buffered_spans(&self) -> usize {
        self.current.count + self.ready.iter().map(|b| b.count).sum::<usize>()
    }
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
    pub fn backoff_ms(&self) -> u64 {
        self.backoff_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> ExportConfig {
        crate::config::Config::from_json(json.as_bytes())
            .unwrap()
            .export
    }

    fn span(buf: &mut Vec<u8>) {
        buf.extend_from_slice(&[0u8; 100]);
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn seals_on_count_bytes_and_age() {
        let mut b = ExportBuffer::new(&cfg(
            r#"{"export":{"max_batch_spans":3,"max_batch_bytes":250,"flush_interval_ms":50}}"#,
        ));
        b.append(0, span);
        b.append(0, span);
        assert!(b.next_batch(1).is_none(), "neither full nor old");
        b.append(0, span);
        assert_eq!(
            b.next_batch(1).unwrap().count,
            3,
            "sealed by bytes (300 >= 250)"
        );
        b.append(10 * MS, span);
        assert!(b.next_batch(20 * MS).is_none());
        assert_eq!(b.next_batch(60 * MS).unwrap().count, 1, "sealed by age");
    }

    #[test]
    fn drops_newest_when_full() {
        let mut b = ExportBuffer::new(&cfg(
            r#"{"export":{"max_batch_spans":1,"max_batch_bytes":100,"max_buffer_bytes":300}}"#,
        ));
        let accepted = (0..10).filter(|_| b.append(0, span)).count();
        assert_eq!(accepted, 3);
        assert_eq!(b.counters.spans_dropped, 7);
        assert_eq!(b.buffered_spans(), 3);
    }

    #[test]
    fn retryable_failures_requeue_and_back_off() {
        let mut b = ExportBuffer::new(&cfg(
            r#"{"export":{"max_batch_spans":1,"backoff_initial_ms":100,"backoff_max_ms":250}}"#,
        ));
        b.append(0, span);
        let batch = b.next_batch(0).unwrap();
        b.dispatched(7, batch);
        b.completed(7, CallOutcome::NoResponse, 0);
        assert_eq!(b.buffered_spans(), 1, "batch back in the queue");
        assert!(b.next_batch(50 * MS).is_none(), "backing off");
        let batch = b.next_batch(100 * MS).unwrap();
        b.dispatched(8, batch);
        b.completed(8, CallOutcome::Status(503), 100 * MS);
        assert_eq!(b.backoff_ms(), 200);
        let batch = b.next_batch(300 * MS).unwrap();
        b.dispatched(9, batch);
        b.completed(9, CallOutcome::Status(429), 300 * MS);
        assert_eq!(b.backoff_ms(), 250, "capped");
        let batch = b.next_batch(550 * MS).unwrap();
        b.dispatched(10, batch);
        b.completed(10, CallOutcome::Status(200), 550 * MS);
        assert_eq!(b.counters.spans_exported, 1);
        assert_eq!(b.counters.export_failures, 3);
        assert_eq!(b.backoff_ms(), 0, "reset on success");
    }

    #[test]
    fn non_retryable_failure_drops() {
        let mut b = ExportBuffer::new(&cfg(r#"{"export":{"max_batch_spans":2}}"#));
        b.append(0, span);
        b.append(0, span);
        let batch = b.next_batch(0).unwrap();
        b.dispatched(1, batch);
        b.completed(1, CallOutcome::Status(400), 0);
        assert_eq!(b.counters.spans_dropped, 2);
        assert_eq!(b.buffered_spans(), 0);
    }

    #[test]
    fn in_flight_is_bounded() {
        let mut b = ExportBuffer::new(&cfg(
            r#"{"export":{"max_batch_spans":1,"max_in_flight":2}}"#,
        ));
        for _ in 0..5 {
            b.append(0, span);
        }
        for t in 0..2 {
            let batch = b.next_batch(0).unwrap();
            b.dispatched(t, batch);
        }
        assert!(b.next_batch(0).is_none());
        b.completed(0, CallOutcome::Status(200), 0);
        assert!(b.next_batch(0).is_some());
    }
}
