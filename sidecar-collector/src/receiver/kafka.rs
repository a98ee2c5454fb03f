//! `--mode ingester`: spans read from Kafka (`kafka.topic`, OTLP protobuf, as
//! the Kafka exporter writes them) in the consumer group `kafka.group_id`,
//! and stored through the same sink as OTLP's (span metrics, the service
//! graph and adaptive-sampling counts fed as in `central` mode).
//!
//! At least once: the offsets of a batch are committed only after the store
//! committed every message of it; after a crash the uncommitted messages are
//! read again, and the store keeps a span written twice once
//! (`store::suite::duplicate_writes_read_once`). A message that is not an
//! OTLP export is counted, logged and skipped; one the store refuses for
//! now (a full queue, the memory limit) is retried until it is taken.

use crate::kafka::{client_config, KafkaError, KafkaSettings, StatsContext};
use crate::memory::{MemoryLimiter, RequestMemory};
use crate::sink::{Encoding, Refusal, Sink};
use crate::telemetry::KafkaMetrics;
use bytes::Bytes;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The ingester's consumer and where it stores.
pub struct Ingester {
    pub sink: Sink,
    pub limiter: Arc<MemoryLimiter>,
    pub settings: KafkaSettings,
    pub max_batch_messages: usize,
    pub metrics: Arc<KafkaMetrics>,
}

impl Ingester {
    /// The consumer, subscribed to the topic.
    pub fn consumer(&self) -> Result<StreamConsumer<StatsContext>, KafkaError> {
        let s = &self.settings;
        let mut c = client_config(s, "meshtrace-ingester");
        c.set("group.id", &s.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            // A restarted ingester takes its partitions back within seconds.
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            // A fetch waits at most this long for new messages: spans are
            // queryable within about that of their acknowledgement (librdkafka's
            // 500 ms made every trace half a second late, scripts/bench/pipeline).
            .set("fetch.wait.max.ms", "50");
        for (k, v) in &s.properties {
            c.set(k, v);
        }
        let consumer: StreamConsumer<StatsContext> = c
            .create_with_context(StatsContext::new(self.metrics.clone()))
            .map_err(|e| KafkaError::Setup(format!("cannot create the consumer: {e}")))?;
        consumer
            .subscribe(&[s.topic.as_str()])
            .map_err(|e| KafkaError::Setup(format!("cannot subscribe to {}: {e}", s.topic)))?;
        Ok(consumer)
    }

    /// Stores one message's spans; `false` when given up (stopping) before
    /// the store took them.
    async fn take(&self, m: &OwnedMessage, stopping: &AtomicBool) -> bool {
        let Some(payload) = m.payload() else {
            self.skip(m, "an empty message");
            return true;
        };
        let mut wait = Duration::from_millis(50);
        loop {
            let refused = match self.limiter.reserve(payload.len() as u64).await {
                Ok(r) => {
                    let memory = RequestMemory::from(r);
                    match self
                        .sink
                        .accept_encoded(
                            Bytes::copy_from_slice(payload),
                            Encoding::Protobuf,
                            Some(memory),
                        )
                        .await
                    {
                        Ok(_) => {
                            self.metrics.messages_consumed.inc();
                            return true;
                        }
                        Err(Refusal::Malformed(why)) => {
                            self.skip(m, &format!("not an OTLP export: {why}"));
                            return true;
                        }
                        Err(Refusal::TooLarge(why)) => {
                            self.skip(m, &format!("can never be stored: {why}"));
                            return true;
                        }
                        Err(Refusal::Retry(why)) => why,
                    }
                }
                Err(e) if e.retryable() => e.to_string(),
                Err(e) => {
                    self.skip(m, &format!("can never be stored: {e}"));
                    return true;
                }
            };
            if stopping.load(Ordering::Relaxed) {
                return false;
            }
            tracing::debug!(reason = %refused, "the store refused a Kafka message for now: retrying");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }

    fn skip(&self, m: &OwnedMessage, why: &str) {
        self.metrics.messages_malformed.inc();
        tracing::warn!(
            topic = m.topic(),
            partition = m.partition(),
            offset = m.offset(),
            "Kafka message skipped: {why}"
        );
    }

    /// Consumes until `stop` resolves; the batch in hand is finished (stored
    /// and committed) first.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        let consumer = match self.consumer() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "the Kafka ingester cannot start");
                return;
            }
        };
        let stopping = AtomicBool::new(false);
        tokio::pin!(stop);
        loop {
            let first = tokio::select! {
                m = consumer.recv() => m,
                _ = &mut stop => break,
            };
            let first = match first {
                Ok(m) => m.detach(),
                Err(e) => {
                    tracing::warn!(error = %e, "reading from Kafka failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let mut batch = vec![first];
            while batch.len() < self.max_batch_messages {
                match tokio::time::timeout(Duration::from_millis(10), consumer.recv()).await {
                    Ok(Ok(m)) => batch.push(m.detach()),
                    _ => break,
                }
            }
            let done = {
                let all =
                    futures_util::future::join_all(batch.iter().map(|m| self.take(m, &stopping)));
                tokio::pin!(all);
                tokio::select! {
                    d = &mut all => d,
                    _ = &mut stop => {
                        // Finish this batch (what the store refuses is given up), then stop.
                        stopping.store(true, Ordering::Relaxed);
                        let d = all.await;
                        self.commit(&consumer, &batch, &d);
                        break;
                    }
                }
            };
            self.commit(&consumer, &batch, &done);
        }
        // Closing the consumer waits for the last commits: off the runtime's threads.
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
    }

    /// Commits, per partition, past the messages stored — up to the first
    /// one given up, which is read again next time.
    fn commit(
        &self,
        consumer: &StreamConsumer<StatsContext>,
        batch: &[OwnedMessage],
        done: &[bool],
    ) {
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut blocked: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for (m, ok) in batch.iter().zip(done) {
            let key = (m.topic().to_string(), m.partition());
            if !ok {
                let b = blocked.entry(key).or_insert(m.offset());
                *b = (*b).min(m.offset());
            }
        }
        for m in batch {
            let key = (m.topic().to_string(), m.partition());
            if blocked.get(&key).is_some_and(|b| m.offset() >= *b) {
                continue;
            }
            let n = next.entry(key).or_insert(0);
            *n = (*n).max(m.offset() + 1);
        }
        if next.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &next {
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
                tracing::warn!(error = %e, "Kafka offset not committed");
                return;
            }
        }
        match consumer.commit(&tpl, CommitMode::Async) {
            Ok(()) => {
                self.metrics.offset_commits.inc();
            }
            Err(e) => tracing::warn!(error = %e, "Kafka offsets not committed (read again later)"),
        }
    }
}
