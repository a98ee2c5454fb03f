//! Kafka, on librdkafka: the exporter and the ingester's consumer settings.
//!
//! The exporter writes accepted spans to `kafka.topic` as OTLP protobuf — an
//! `ExportTraceServiceRequest` per trace of each export (its resource and
//! scope kept), keyed by the 16-byte trace id so that a trace stays on one
//! partition: the `otlp_proto` encoding Jaeger v2's and the OpenTelemetry
//! Collector's Kafka receivers read. The producer is idempotent (`acks=all`,
//! ordered retries without duplicates), compressed (`kafka.compression`).
//! A sender is answered once Kafka acknowledged every message of its spans;
//! what is produced and not yet acknowledged is bounded by
//! `kafka.max_buffer_bytes` (the producer's own queue too): past it a sender
//! is told to retry, as it is when Kafka does not take a message within
//! `kafka.delivery_timeout`. Nothing is dropped without its sender knowing.

use crate::telemetry::{KafkaMetrics, PartitionLabels};
use meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use meshtrace_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Settings of the exporter and the ingester.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: Vec<String>,
    pub topic: String,
    pub compression: String,
    pub max_buffer_bytes: u64,
    pub delivery_timeout: Duration,
    pub group_id: String,
    pub properties: Vec<(String, String)>,
}

/// Why spans were not taken by Kafka (the sender is told to retry).
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// Could never be taken: larger than the whole buffer.
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Retry(String),
    #[error("kafka: {0}")]
    Setup(String),
}

/// Reads librdkafka's statistics (every 5 s): produce retries, consumer lag.
pub struct StatsContext {
    metrics: Arc<KafkaMetrics>,
    /// The last `txretries` seen per broker (the counter grows by the difference).
    retries: Mutex<HashMap<String, u64>>,
    /// When each kind of error was last logged.
    logged: Mutex<HashMap<String, std::time::Instant>>,
}

impl StatsContext {
    pub fn new(metrics: Arc<KafkaMetrics>) -> StatsContext {
        StatsContext {
            metrics,
            retries: Mutex::new(HashMap::new()),
            logged: Mutex::new(HashMap::new()),
        }
    }
}

impl ClientContext for StatsContext {
    /// librdkafka reports every failed connection while a broker is down:
    /// logged once a minute per kind (the metrics and the senders' answers
    /// say the rest).
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        let kind = format!("{:?}", error.rdkafka_error_code());
        let now = std::time::Instant::now();
        if let Ok(mut last) = self.logged.lock() {
            match last.get(&kind) {
                Some(at) if now.duration_since(*at) < Duration::from_secs(60) => return,
                _ => {
                    last.insert(kind, now);
                }
            }
        }
        tracing::warn!(error = %error, "Kafka: {reason} (repeats are logged once a minute)");
    }

    /// librdkafka's own log, warnings and worse, once a minute per facility.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        if !matches!(
            level,
            L::Emerg | L::Alert | L::Critical | L::Error | L::Warning
        ) {
            return;
        }
        let now = std::time::Instant::now();
        if let Ok(mut last) = self.logged.lock() {
            match last.get(fac) {
                Some(at) if now.duration_since(*at) < Duration::from_secs(60) => return,
                _ => {
                    last.insert(fac.to_string(), now);
                }
            }
        }
        tracing::warn!(
            facility = fac,
            "librdkafka: {message} (repeats are logged once a minute)"
        );
    }

    fn stats(&self, s: Statistics) {
        if let Ok(mut seen) = self.retries.lock() {
            for (name, b) in &s.brokers {
                let before = seen.insert(name.clone(), b.txretries).unwrap_or(0);
                self.metrics
                    .produce_retries
                    .inc_by(b.txretries.saturating_sub(before));
            }
        }
        for (topic, t) in &s.topics {
            for (partition, p) in &t.partitions {
                // librdkafka lists an internal partition -1, and -1 lags for
                // partitions it does not consume.
                if *partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                self.metrics
                    .consumer_lag
                    .get_or_create(&PartitionLabels {
                        topic: topic.clone(),
                        partition: partition.to_string(),
                    })
                    .set(p.consumer_lag);
            }
        }
    }
}

impl rdkafka::consumer::ConsumerContext for StatsContext {}

/// The librdkafka settings both clients share, then `kafka.properties`.
pub fn client_config(s: &KafkaSettings, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", s.brokers.join(","))
        .set("client.id", client_id)
        .set("statistics.interval.ms", "5000");
    for (k, v) in &s.properties {
        c.set(k, v);
    }
    c
}

/// The exporter.
pub struct KafkaExporter {
    /// Replaced when librdkafka reports a fatal error (an idempotent
    /// producer fenced by a broker that lost its state cannot produce again).
    producer: std::sync::RwLock<Arc<FutureProducer<StatsContext>>>,
    config: ClientConfig,
    topic: String,
    max_buffer_bytes: u64,
    /// Bytes produced and not yet acknowledged (or failed).
    buffered: AtomicU64,
    metrics: Arc<KafkaMetrics>,
    /// How long a sender waits for Kafka's acknowledgement (`message.timeout.ms`
    /// too; librdkafka's idempotent producer does not time out a message it
    /// may have sent while its broker is gone, so the wait has its own deadline).
    delivery_timeout: Duration,
}

/// What an export's delivery watcher shares with the request waiting on it.
#[derive(Default)]
struct Waiting {
    /// Messages not resolved yet.
    pending: u64,
    /// The request stopped waiting (deadline): it counted the pending
    /// messages as failures, which later outcomes do not count again.
    gave_up: bool,
}

/// One trace's spans of an export: its key (the trace id) and the encoded request.
pub type TraceMessage = ([u8; 16], Vec<u8>);

/// An export split by trace: one request per trace id, each with the
/// resources and scopes of its spans, encoded; in order of first appearance.
pub fn messages_by_trace(req: &ExportTraceServiceRequest) -> Vec<(TraceMessage, u64)> {
    let mut order: Vec<[u8; 16]> = Vec::new();
    let mut by_trace: HashMap<[u8; 16], (ExportTraceServiceRequest, u64)> = HashMap::new();
    for rs in &req.resource_spans {
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                let mut key = [0u8; 16];
                if span.trace_id.len() == 16 {
                    key.copy_from_slice(&span.trace_id);
                }
                let (out, spans) = by_trace.entry(key).or_insert_with(|| {
                    order.push(key);
                    (ExportTraceServiceRequest::default(), 0)
                });
                *spans += 1;
                // The request of this trace: the same resource and scope as
                // the last span's, or new ones.
                let same_resource = out
                    .resource_spans
                    .last()
                    .is_some_and(|r| r.resource == rs.resource && r.schema_url == rs.schema_url);
                if !same_resource {
                    out.resource_spans.push(ResourceSpans {
                        resource: rs.resource.clone(),
                        schema_url: rs.schema_url.clone(),
                        scope_spans: Vec::new(),
                    });
                }
                let Some(r) = out.resource_spans.last_mut() else {
                    continue;
                };
                let same_scope = r
                    .scope_spans
                    .last()
                    .is_some_and(|s| s.scope == ss.scope && s.schema_url == ss.schema_url);
                if !same_scope {
                    r.scope_spans.push(ScopeSpans {
                        scope: ss.scope.clone(),
                        schema_url: ss.schema_url.clone(),
                        spans: Vec::new(),
                    });
                }
                if let Some(s) = r.scope_spans.last_mut() {
                    s.spans.push(span.clone());
                }
            }
        }
    }
    order
        .into_iter()
        .filter_map(|k| {
            let (r, spans) = by_trace.remove(&k)?;
            Some(((k, r.encode_to_vec()), spans))
        })
        .collect()
}

impl KafkaExporter {
    pub fn new(s: &KafkaSettings, metrics: Arc<KafkaMetrics>) -> Result<KafkaExporter, KafkaError> {
        let mut c = client_config(s, "meshtrace-collector");
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", &s.compression)
            .set("linger.ms", "5")
            .set(
                "message.timeout.ms",
                s.delivery_timeout.as_millis().to_string(),
            )
            // librdkafka's own queue is no larger than ours.
            .set(
                "queue.buffering.max.kbytes",
                s.max_buffer_bytes.div_ceil(1024).max(1).to_string(),
            );
        for (k, v) in &s.properties {
            c.set(k, v);
        }
        let producer = Self::create(&c, &metrics)?;
        Ok(KafkaExporter {
            producer: std::sync::RwLock::new(producer),
            config: c,
            topic: s.topic.clone(),
            max_buffer_bytes: s.max_buffer_bytes,
            buffered: AtomicU64::new(0),
            metrics,
            delivery_timeout: s.delivery_timeout,
        })
    }

    fn create(
        c: &ClientConfig,
        metrics: &Arc<KafkaMetrics>,
    ) -> Result<Arc<FutureProducer<StatsContext>>, KafkaError> {
        c.create_with_context(StatsContext::new(metrics.clone()))
            .map(Arc::new)
            .map_err(|e| KafkaError::Setup(format!("cannot create the producer: {e}")))
    }

    fn current(&self) -> Arc<FutureProducer<StatsContext>> {
        match self.producer.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// After a failure: if `failed` can never produce again — a fatal error,
    /// or its producer id is no longer the broker's (`error`: a broker that
    /// lost its state fences the idempotent producer) — a new producer takes
    /// its place (once, whoever sees it first).
    fn recover(
        &self,
        failed: &Arc<FutureProducer<StatsContext>>,
        error: Option<rdkafka::error::RDKafkaErrorCode>,
    ) {
        use rdkafka::error::RDKafkaErrorCode as C;
        let (code, reason) = match failed.client().fatal_error() {
            Some(fatal) => fatal,
            None => match error {
                Some(
                    c @ (C::ProducerFenced
                    | C::InvalidProducerEpoch
                    | C::UnknownProducerId
                    | C::InvalidProducerIdMapping
                    | C::OutOfOrderSequenceNumber),
                ) => (c, "the broker no longer knows this producer".to_string()),
                _ => return,
            },
        };
        let Ok(mut current) = self.producer.write() else {
            return;
        };
        if !Arc::ptr_eq(&current, failed) {
            return;
        }
        match Self::create(&self.config, &self.metrics) {
            Ok(fresh) => {
                tracing::warn!(
                    error = ?code,
                    reason = %reason,
                    "the Kafka producer failed for good; a new one takes its place"
                );
                *current = fresh;
            }
            Err(e) => tracing::error!(error = %e, "the Kafka producer cannot be replaced"),
        }
    }

    /// Whether a request of `bytes` would be refused for room now.
    pub fn no_room_for(&self, bytes: u64) -> Option<KafkaError> {
        let buffered = self.buffered.load(Ordering::Relaxed);
        (buffered.saturating_add(bytes) > self.max_buffer_bytes).then(|| {
            KafkaError::Retry(format!(
                "the Kafka buffer is full ({buffered} of kafka.max_buffer_bytes {} bytes not yet acknowledged): retry later",
                self.max_buffer_bytes
            ))
        })
    }

    /// Produces `req`'s spans, one message per trace: enqueued now (or
    /// refused); the returned future resolves once Kafka acknowledged every
    /// message (or one failed).
    pub fn produce(
        self: &Arc<Self>,
        req: &ExportTraceServiceRequest,
    ) -> Result<
        impl std::future::Future<Output = Result<(), KafkaError>> + Send + 'static,
        KafkaError,
    > {
        let messages = messages_by_trace(req);
        let total: u64 = messages.iter().map(|((_, m), _)| m.len() as u64).sum();
        if total > self.max_buffer_bytes {
            return Err(KafkaError::TooLarge(format!(
                "{total} bytes of spans can never fit kafka.max_buffer_bytes ({})",
                self.max_buffer_bytes
            )));
        }
        // Room is taken for the whole export at once.
        let taken = self
            .buffered
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b.saturating_add(total) <= self.max_buffer_bytes).then_some(b + total)
            });
        if taken.is_err() {
            return Err(self.no_room_for(total).unwrap_or_else(|| {
                KafkaError::Retry("the Kafka buffer is full: retry later".into())
            }));
        }
        self.metrics
            .buffered_bytes
            .set(self.buffered.load(Ordering::Relaxed));
        let producer = self.current();
        let mut deliveries = Vec::with_capacity(messages.len());
        let mut refused = None;
        for ((key, payload), spans) in &messages {
            let record = FutureRecord::to(&self.topic)
                .key(key.as_slice())
                .payload(payload.as_slice());
            match producer.send_result(record) {
                Ok(d) => deliveries.push((d, payload.len() as u64, *spans)),
                Err((e, _)) => {
                    refused = Some(KafkaError::Retry(format!(
                        "Kafka's producer queue refused a message: {e}"
                    )));
                    self.recover(&producer, e.rdkafka_error_code());
                    break;
                }
            }
        }
        // What was not enqueued gives its room back now; the rest once delivered.
        let enqueued: u64 = deliveries.iter().map(|(_, b, _)| *b).sum();
        self.release(total - enqueued);
        // The deliveries are watched by a task of their own: room is given
        // back and outcomes counted even when the request stops waiting (its
        // deadline, or the server's request timeout dropping it).
        let waiting = Arc::new(Mutex::new(Waiting {
            pending: deliveries.len() as u64,
            gave_up: false,
        }));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (me, watched) = (self.clone(), waiting.clone());
        tokio::spawn(async move {
            let mut failed = refused;
            let mut code = None;
            for (d, bytes, spans) in deliveries {
                let outcome = d.await;
                me.release(bytes);
                let counted = match watched.lock() {
                    Ok(mut w) => {
                        w.pending = w.pending.saturating_sub(1);
                        !w.gave_up
                    }
                    Err(_) => true,
                };
                match outcome {
                    Ok(Ok(_)) => {
                        me.metrics.messages_produced.inc();
                        me.metrics.spans_produced.inc_by(spans);
                    }
                    Ok(Err((e, _))) => {
                        if counted {
                            me.metrics.produce_failures.inc();
                        }
                        code = code.or(e.rdkafka_error_code());
                        failed.get_or_insert(KafkaError::Retry(format!(
                            "Kafka did not take the spans: {e}"
                        )));
                    }
                    Err(_) => {
                        if counted {
                            me.metrics.produce_failures.inc();
                        }
                        failed.get_or_insert(KafkaError::Retry(
                            "the Kafka producer stopped before delivering".into(),
                        ));
                    }
                }
            }
            let result = match failed {
                Some(e) => {
                    me.recover(&producer, code);
                    Err(e)
                }
                None => Ok(()),
            };
            let _ = tx.send(result);
        });
        let (metrics, timeout) = (self.metrics.clone(), self.delivery_timeout);
        Ok(async move {
            // librdkafka answers at `message.timeout.ms`; a second more for its
            // timer before the request stops waiting on its own.
            match tokio::time::timeout(timeout + Duration::from_secs(1), rx).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(KafkaError::Retry(
                    "the Kafka delivery watcher stopped".into(),
                )),
                Err(_) => {
                    if let Ok(mut w) = waiting.lock() {
                        w.gave_up = true;
                        metrics.produce_failures.inc_by(w.pending);
                    }
                    Err(KafkaError::Retry(format!(
                        "Kafka did not acknowledge the spans within kafka.delivery_timeout ({}s): retry",
                        timeout.as_secs_f64()
                    )))
                }
            }
        })
    }

    fn release(&self, bytes: u64) {
        let left = self
            .buffered
            .fetch_sub(bytes, Ordering::Relaxed)
            .saturating_sub(bytes);
        self.metrics.buffered_bytes.set(left);
    }

    /// Waits (on a blocking thread) up to `timeout` for what is buffered to be delivered.
    pub async fn flush(self: &Arc<Self>, timeout: Duration) {
        let producer = self.current();
        let _ = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshtrace_proto::otlp::common::v1::InstrumentationScope;
    use meshtrace_proto::otlp::resource::v1::Resource;
    use meshtrace_proto::otlp::trace::v1::Span;

    fn span(trace: u8, id: u8) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            name: format!("s{id}"),
            ..Default::default()
        }
    }

    #[test]
    fn an_export_splits_into_one_message_per_trace_keeping_resources_and_scopes() {
        let resource = |name: &str| {
            Some(Resource {
                attributes: vec![meshtrace_proto::otlp::common::v1::KeyValue {
                    key: "service.name".into(),
                    value: Some(meshtrace_proto::otlp::common::v1::AnyValue {
                        value: Some(
                            meshtrace_proto::otlp::common::v1::any_value::Value::StringValue(
                                name.into(),
                            ),
                        ),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            })
        };
        let scope = |name: &str| {
            Some(InstrumentationScope {
                name: name.into(),
                ..Default::default()
            })
        };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: resource("a"),
                    scope_spans: vec![
                        ScopeSpans {
                            scope: scope("x"),
                            spans: vec![span(1, 1), span(2, 2), span(1, 3)],
                            ..Default::default()
                        },
                        ScopeSpans {
                            scope: scope("y"),
                            spans: vec![span(2, 4)],
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                },
                ResourceSpans {
                    resource: resource("b"),
                    scope_spans: vec![ScopeSpans {
                        scope: scope("x"),
                        spans: vec![span(1, 5)],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        };
        let m = messages_by_trace(&req);
        assert_eq!(m.len(), 2, "two traces");
        let ((key1, bytes1), n1) = &m[0];
        assert_eq!(*key1, [1; 16]);
        assert_eq!(*n1, 3);
        let one = ExportTraceServiceRequest::decode(bytes1.as_slice()).unwrap();
        assert_eq!(one.resource_spans.len(), 2, "resources a and b");
        assert_eq!(one.resource_spans[0].resource, resource("a"));
        assert_eq!(one.resource_spans[0].scope_spans[0].spans.len(), 2);
        assert_eq!(one.resource_spans[1].resource, resource("b"));
        let ((key2, bytes2), n2) = &m[1];
        assert_eq!(*key2, [2; 16]);
        assert_eq!(*n2, 2);
        let two = ExportTraceServiceRequest::decode(bytes2.as_slice()).unwrap();
        assert_eq!(two.resource_spans.len(), 1);
        let scopes: Vec<_> = two.resource_spans[0]
            .scope_spans
            .iter()
            .map(|s| s.scope.as_ref().unwrap().name.clone())
            .collect();
        assert_eq!(scopes, ["x", "y"]);
        // Every span once.
        let total: u64 = m.iter().map(|(_, n)| n).sum();
        assert_eq!(total, 5);
    }
}
