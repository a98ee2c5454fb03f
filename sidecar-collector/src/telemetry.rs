//! The collector's own telemetry: every self-metric declared once here (name,
//! help, labels), one `prometheus-client` registry with the process metrics,
//! and the `/metrics`, `/healthz`, `/readyz` routes that `main` merges into
//! each mode's routers. Sits at the bottom: imports nothing from the crate.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A gauge of whole numbers that are never negative (depths, bytes).
pub type UGauge = Gauge<u64, AtomicU64>;
/// A gauge of floating-point values.
pub type FGauge = Gauge<f64, AtomicU64>;

/// Span flow through the receivers, the write pipeline and the forwarder.
#[derive(Debug, Default)]
pub struct Counters {
    /// Spans received by the OTLP receivers (valid or not).
    pub spans_received: Counter,
    /// Spans acknowledged: stored, or queued for forwarding in sidecar mode.
    pub spans_accepted: Counter,
    /// Spans answered with a retryable error (queue full, memory limit, store failure).
    pub spans_refused: Counter,
    /// Invalid spans rejected in `partial_success`.
    pub spans_rejected: Counter,
    /// Spans committed to the store.
    pub spans_stored: Counter,
    /// Failed store transactions.
    pub store_failures: Counter,
    /// Store transactions (each commits a group of export requests).
    pub transactions: Counter,
    /// Export requests waiting.
    pub queue_depth: UGauge,
    /// Sidecar mode: spans the upstream accepted.
    pub spans_forwarded: Counter,
    /// Sidecar mode: spans given up on (upstream refused them, or retries ran out).
    pub spans_dropped: Counter,
    /// Bytes of spans waiting (for the writer, or to be forwarded in sidecar mode).
    pub queue_bytes: UGauge,
    /// Attribute values replaced by `[REDACTED]` at ingest.
    pub attributes_redacted: Counter,
    /// Export requests refused for room before they were decompressed or decoded.
    pub exports_refused_undecoded: Counter,
}

impl Counters {
    fn register(&self, r: &mut Registry) {
        let counters = [
            (
                "spans_received",
                "Spans received by the OTLP receivers, valid or not",
                &self.spans_received,
            ),
            (
                "spans_accepted",
                "Spans acknowledged (stored, or queued for forwarding in sidecar mode)",
                &self.spans_accepted,
            ),
            (
                "spans_refused",
                "Spans answered with a retryable error (queue full, memory limit or store failure)",
                &self.spans_refused,
            ),
            (
                "spans_rejected",
                "Invalid spans rejected in partial_success",
                &self.spans_rejected,
            ),
            (
                "spans_stored",
                "Spans committed to the store",
                &self.spans_stored,
            ),
            (
                "store_transactions",
                "Store transactions; each commits a group of export requests",
                &self.transactions,
            ),
            (
                "store_failures",
                "Failed store transactions",
                &self.store_failures,
            ),
            (
                "spans_forwarded",
                "Sidecar mode: spans the upstream accepted",
                &self.spans_forwarded,
            ),
            (
                "spans_dropped",
                "Sidecar mode: spans given up on",
                &self.spans_dropped,
            ),
            (
                "attributes_redacted",
                "Attribute values named like credentials, replaced by [REDACTED] at ingest",
                &self.attributes_redacted,
            ),
            (
                "exports_refused_undecoded",
                "Export requests refused for room (full queue) before they were decompressed or decoded",
                &self.exports_refused_undecoded,
            ),
        ];
        for (name, help, c) in counters {
            r.register(name, help, c.clone());
        }
        r.register(
            "queue_depth",
            "Export requests waiting",
            self.queue_depth.clone(),
        );
        r.register(
            "queue_bytes",
            "Bytes of spans waiting (for the writer, or to be forwarded in sidecar mode)",
            self.queue_bytes.clone(),
        );
    }
}

/// Labels of a per-operation sampling series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OperationLabels {
    pub service: String,
    pub operation: String,
}

/// Sampling strategies: file reloads, the sidecar's upstream cache, adaptive sampling.
#[derive(Debug, Default)]
pub struct SamplingMetrics {
    /// Strategies file reloads that took effect.
    pub reloads: Counter,
    /// Strategies file reloads refused (invalid or unreadable).
    pub reload_failures: Counter,
    /// Sidecar mode: strategies fetched from the central collector.
    pub upstream_fetches: Counter,
    /// Sidecar mode: failed fetches (the cached strategy stays).
    pub upstream_failures: Counter,
    /// Adaptive sampling's probability per operation.
    pub adaptive_probability: Family<OperationLabels, FGauge>,
    /// Adaptive sampling's estimated request rate per operation.
    pub adaptive_requests_per_second: Family<OperationLabels, FGauge>,
    /// Spans adaptive sampling did not count: too many operations tracked.
    pub adaptive_overflow: Counter,
    /// The probability the strategies file configures, per service (`*`: the
    /// default strategy) and operation (empty: the service's default).
    pub configured_probability: Family<OperationLabels, FGauge>,
}

impl SamplingMetrics {
    fn register(&self, r: &mut Registry) {
        let c = r.sub_registry_with_prefix("sampling");
        c.register(
            "reloads",
            "Strategies file reloads that took effect",
            self.reloads.clone(),
        );
        c.register(
            "reload_failures",
            "Strategies file reloads refused (invalid or unreadable); the last good strategies stay",
            self.reload_failures.clone(),
        );
        c.register(
            "upstream_fetches",
            "Strategies fetched from the central collector",
            self.upstream_fetches.clone(),
        );
        c.register(
            "upstream_failures",
            "Failed fetches from the central collector (the cached strategy stays)",
            self.upstream_failures.clone(),
        );
        c.register(
            "configured_probability",
            "Sampling probability the strategies file configures, by service (* for the default strategy) and operation (empty for the service's default); rate-limited services have none",
            self.configured_probability.clone(),
        );
    }

    /// Adaptive sampling's series keep their pre-registry names (`meshtrace_sampling_adaptive_*`).
    fn register_adaptive(&self, r: &mut Registry) {
        let a = r.sub_registry_with_prefix("adaptive");
        a.register(
            "probability",
            "Sampling probability adaptive sampling computed for an operation",
            self.adaptive_probability.clone(),
        );
        a.register(
            "requests_per_second",
            "Request rate adaptive sampling estimated for an operation (sampled spans / probability, smoothed)",
            self.adaptive_requests_per_second.clone(),
        );
        a.register(
            "operations_overflow",
            "Spans not counted: more operations tracked than adaptive sampling keeps",
            self.adaptive_overflow.clone(),
        );
    }
}

/// Labels of a listener's series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ListenerLabels {
    /// The configuration key of the listener, e.g. `otlp.grpc_listen`.
    pub listener: String,
}

/// Labels of a closed-by-the-server series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TimeoutLabels {
    pub listener: String,
    /// `header` (no complete request head in time), `idle` or `request`.
    pub reason: String,
}

/// Connections of every listener.
#[derive(Debug, Default)]
pub struct ConnectionMetrics {
    /// Connections open now.
    pub open: Family<ListenerLabels, UGauge>,
    /// Connections closed at once because the listener was at `server.max_connections`.
    pub refused: Family<ListenerLabels, Counter>,
    /// Connections or requests ended by a timeout.
    pub timed_out: Family<TimeoutLabels, Counter>,
}

impl ConnectionMetrics {
    fn register(&self, r: &mut Registry) {
        let c = r.sub_registry_with_prefix("connections");
        c.register("open", "Connections open, by listener", self.open.clone());
        c.register(
            "refused",
            "Connections closed at once: the listener had server.max_connections open",
            self.refused.clone(),
        );
        c.register(
            "timed_out",
            "Connections closed (header, idle) or requests answered 503 (request) by a server timeout",
            self.timed_out.clone(),
        );
    }
}

/// Labels of a UDP packet series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct UdpLabels {
    /// The listener's configuration key.
    pub listener: String,
    /// `accepted`, `malformed`, `too_large`, `rate_limited`, `busy` (as many
    /// packets in flight as allowed), `refused` (memory limit, full queue,
    /// failing store).
    pub outcome: String,
}

/// The UDP receivers' packets (Jaeger agents' `emitBatch`).
#[derive(Debug, Default)]
pub struct UdpMetrics {
    pub packets: Family<UdpLabels, Counter>,
}

impl UdpMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "udp_packets",
            "UDP packets received, by listener and outcome (accepted, malformed, too_large, rate_limited, busy, refused)",
            self.packets.clone(),
        );
    }

    /// Counts one packet of `listener` with `outcome`.
    pub fn count(&self, listener: &str, outcome: &str) {
        self.packets
            .get_or_create(&UdpLabels {
                listener: listener.into(),
                outcome: outcome.into(),
            })
            .inc();
    }
}

/// Labels of a Kafka partition's series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: String,
}

/// Kafka: the exporter's produced messages and its buffer, the ingester's
/// consumed messages, commits and lag.
#[derive(Debug, Default)]
pub struct KafkaMetrics {
    /// Messages (one trace's spans of one export) Kafka acknowledged.
    pub messages_produced: Counter,
    /// Spans in them.
    pub spans_produced: Counter,
    /// Messages Kafka did not take within `kafka.delivery_timeout` (their senders were told to retry).
    pub produce_failures: Counter,
    /// Produce requests the client sent again (librdkafka's `txretries`).
    pub produce_retries: Counter,
    /// Bytes produced and not yet acknowledged.
    pub buffered_bytes: UGauge,
    /// Ingester: messages read from the topic and stored.
    pub messages_consumed: Counter,
    /// Ingester: messages that are not OTLP exports (skipped, logged).
    pub messages_malformed: Counter,
    /// Ingester: offset commits (each after the store committed what they cover).
    pub offset_commits: Counter,
    /// Ingester: messages in each partition not yet consumed.
    pub consumer_lag: Family<PartitionLabels, Gauge>,
}

impl KafkaMetrics {
    fn register(&self, r: &mut Registry) {
        let k = r.sub_registry_with_prefix("kafka");
        for (name, help, c) in [
            ("messages_produced", "Messages (one trace's spans of one export) Kafka acknowledged", &self.messages_produced),
            ("spans_produced", "Spans in the messages Kafka acknowledged", &self.spans_produced),
            ("produce_failures", "Messages Kafka did not take within kafka.delivery_timeout; their senders were told to retry", &self.produce_failures),
            ("produce_retries", "Produce requests sent again to a broker (librdkafka's txretries)", &self.produce_retries),
            ("messages_consumed", "Ingester: messages read from the topic and stored", &self.messages_consumed),
            ("messages_malformed", "Ingester: messages that are not OTLP exports, skipped", &self.messages_malformed),
            ("offset_commits", "Ingester: offset commits, each after the store committed the messages it covers", &self.offset_commits),
        ] {
            k.register(name, help, c.clone());
        }
        k.register(
            "buffered_bytes",
            "Bytes produced to Kafka and not yet acknowledged (at most kafka.max_buffer_bytes)",
            self.buffered_bytes.clone(),
        );
        k.register(
            "consumer_lag",
            "Ingester: messages in each partition not yet consumed",
            self.consumer_lag.clone(),
        );
    }
}

/// Labels of an OTLP exporter's series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: String,
}

/// The OTLP exporters (`exporters.otlp`), per endpoint.
#[derive(Debug, Default)]
pub struct OtlpExportMetrics {
    pub spans_sent: Family<EndpointLabel, Gauge<u64, AtomicU64>>,
    pub spans_dropped: Family<EndpointLabel, Gauge<u64, AtomicU64>>,
    pub queue_bytes: Family<EndpointLabel, UGauge>,
}

impl OtlpExportMetrics {
    fn register(&self, r: &mut Registry) {
        let o = r.sub_registry_with_prefix("otlp_export");
        o.register(
            "spans_sent",
            "Spans each OTLP exporter's endpoint accepted (a running count)",
            self.spans_sent.clone(),
        );
        o.register(
            "spans_dropped",
            "Spans each OTLP exporter gave up on: its queue full, or retries over (a running count)",
            self.spans_dropped.clone(),
        );
        o.register(
            "queue_bytes",
            "Bytes queued for each OTLP exporter's endpoint",
            self.queue_bytes.clone(),
        );
    }
}

/// Labels of a refusal series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RefusalLabels {
    /// `too_large` (could never fit), `busy` (the decode budget is taken),
    /// `over_limit` (the process is over memory.limit_bytes).
    pub reason: String,
}

/// The memory limiter's state.
#[derive(Debug, Default)]
pub struct MemoryMetrics {
    /// memory.decode_bytes.
    pub decode_budget_bytes: UGauge,
    /// Bytes of the decode budget reserved now.
    pub decode_in_use_bytes: UGauge,
    /// memory.limit_bytes (0: none).
    pub limit_bytes: UGauge,
    /// Requests refused by the memory limits.
    pub refused: Family<RefusalLabels, Counter>,
}

impl MemoryMetrics {
    fn register(&self, r: &mut Registry) {
        let m = r.sub_registry_with_prefix("memory");
        m.register_with_unit(
            "decode_budget",
            "memory.decode_bytes: memory requests may reserve while received and decoded",
            Unit::Bytes,
            self.decode_budget_bytes.clone(),
        );
        m.register_with_unit(
            "decode_in_use",
            "Bytes of the decode budget reserved by requests now",
            Unit::Bytes,
            self.decode_in_use_bytes.clone(),
        );
        m.register_with_unit(
            "limit",
            "memory.limit_bytes: above this resident size ingest and queries are refused (0: no limit)",
            Unit::Bytes,
            self.limit_bytes.clone(),
        );
        m.register(
            "refused",
            "Requests refused by the memory limits, by reason",
            self.refused.clone(),
        );
    }
}

/// Labels of a query-latency series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct EndpointLabels {
    /// The route, e.g. `/api/traces/{id}`.
    pub endpoint: String,
    /// HTTP status class of the answer (`2xx`, `4xx`, `5xx`).
    pub status: String,
}

fn query_histogram() -> Histogram {
    // 1 ms … ~16 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 15,
    ))
}

/// Every self-metric of the collector.
pub struct Metrics {
    pub counters: Arc<Counters>,
    pub sampling: Arc<SamplingMetrics>,
    pub connections: Arc<ConnectionMetrics>,
    pub memory: Arc<MemoryMetrics>,
    pub udp: Arc<UdpMetrics>,
    pub kafka: Arc<KafkaMetrics>,
    pub otlp_export: Arc<OtlpExportMetrics>,
    /// Query API latency by endpoint.
    pub query_duration: Family<EndpointLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            counters: Arc::default(),
            sampling: Arc::default(),
            connections: Arc::default(),
            memory: Arc::default(),
            udp: Arc::default(),
            kafka: Arc::default(),
            otlp_export: Arc::default(),
            query_duration: Family::new_with_constructor(query_histogram),
        }
    }
}

/// The registry and the process's readiness.
pub struct Telemetry {
    pub metrics: Metrics,
    registry: std::sync::RwLock<Registry>,
    /// Why `/readyz` answers 503 (`None`: ready).
    not_ready: std::sync::RwLock<Option<String>>,
}

impl Telemetry {
    /// Registers every metric (and the process metrics) once.
    pub fn new() -> Arc<Telemetry> {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        {
            let collector = registry.sub_registry_with_prefix("meshtrace_collector");
            metrics.counters.register(collector);
            metrics.sampling.register(collector);
            metrics.connections.register(collector);
            metrics.memory.register(collector);
            metrics.udp.register(collector);
            metrics.kafka.register(collector);
            metrics.otlp_export.register(collector);
            collector.register_with_unit(
                "query_duration",
                "Query API latency by endpoint and status class",
                Unit::Seconds,
                metrics.query_duration.clone(),
            );
        }
        metrics
            .sampling
            .register_adaptive(registry.sub_registry_with_prefix("meshtrace_sampling"));
        if let Err(error) =
            kubert_prometheus_process::register(registry.sub_registry_with_prefix("process"))
        {
            tracing::warn!(%error, "process metrics unavailable");
        }
        Arc::new(Telemetry {
            metrics,
            registry: std::sync::RwLock::new(registry),
            not_ready: std::sync::RwLock::new(Some("starting".into())),
        })
    }

    /// `/readyz` answers 200 from now on.
    pub fn set_ready(&self) {
        *self.not_ready.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// `/readyz` answers 503 with this reason (Kubernetes takes the pod out of rotation).
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.not_ready.write().unwrap_or_else(|e| e.into_inner()) = Some(reason.into());
    }

    /// Logs every `every` what was received, stored, refused, rejected,
    /// forwarded and dropped since the last line, so an operator reading the
    /// log sees the flow without a metrics stack.
    pub fn spawn_summary(self: &Arc<Self>, every: Duration) -> Option<tokio::task::JoinHandle<()>> {
        if every.is_zero() {
            return None;
        }
        let me = self.clone();
        Some(tokio::spawn(async move {
            let c = &me.metrics.counters;
            let read = || {
                [
                    c.spans_received.get(),
                    c.spans_stored.get(),
                    c.spans_refused.get(),
                    c.spans_rejected.get(),
                    c.spans_forwarded.get(),
                    c.spans_dropped.get(),
                ]
            };
            let mut last = read();
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let now = read();
                let d: Vec<u64> = now
                    .iter()
                    .zip(last)
                    .map(|(n, l)| n.saturating_sub(l))
                    .collect();
                last = now;
                tracing::info!(
                    received = d[0],
                    stored = d[1],
                    refused = d[2],
                    rejected = d[3],
                    forwarded = d[4],
                    dropped = d[5],
                    queue_depth = c.queue_depth.get(),
                    queue_bytes = c.queue_bytes.get(),
                    interval_s = every.as_secs_f64(),
                    "spans since the last summary"
                );
            }
        }))
    }

    /// Adds families computed at each scrape (the span metrics).
    pub fn register_collector(&self, c: Box<dyn prometheus_client::collector::Collector>) {
        self.registry
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .register_collector(c);
    }

    /// The registry in the OpenMetrics text format.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        let registry = self.registry.read().unwrap_or_else(|e| e.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

/// OpenMetrics text → Prometheus text format 0.0.4, for scrapers and tools that
/// ask for the classic format (`promtool check metrics`, older agents, curl):
/// a counter family is named with its `_total` suffix, and `# UNIT` / `# EOF`
/// lines, which that format does not have, are left out. `prometheus-client`
/// writes OpenMetrics only; this is the one step it lacks.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut pending_help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            pending_help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let family = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            if let Some((_, help)) = pending_help.take().filter(|(n, _)| *n == name) {
                out.push_str(&format!("# HELP {family} {help}\n"));
            }
            out.push_str(&format!("# TYPE {family} {kind}\n"));
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `/metrics`: OpenMetrics when the scraper asks for it (Prometheus does),
/// the classic text format otherwise.
async fn metrics(State(t): State<Arc<Telemetry>>, headers: axum::http::HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    match t.render() {
        Ok(body) if openmetrics => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            to_prometheus_text(&body),
        )
            .into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding metrics failed\n",
        )
            .into_response(),
    }
}

async fn readyz(State(t): State<Arc<Telemetry>>) -> Response {
    let reason = t
        .not_ready
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    match reason {
        None => "ok".into_response(),
        Some(r) => (StatusCode::SERVICE_UNAVAILABLE, format!("{r}\n")).into_response(),
    }
}

/// `/healthz` and `/readyz` (every port).
pub fn health_router(t: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(t)
}

/// `/metrics`, `/healthz` and `/readyz` (the query port).
pub fn router(t: Arc<Telemetry>) -> Router {
    health_router(t.clone()).merge(Router::new().route("/metrics", get(metrics)).with_state(t))
}

/// Middleware recording each answer's latency by route (`route_layer` it, so
/// the matched path is known; unmatched paths are not recorded).
pub async fn track_latency(State(t): State<Arc<Telemetry>>, req: Request, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(req).await;
    if let Some(endpoint) = endpoint {
        let status = format!("{}xx", response.status().as_u16() / 100);
        t.metrics
            .query_duration
            .get_or_create(&EndpointLabels { endpoint, status })
            .observe(started.elapsed().as_secs_f64());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_becomes_prometheus_text() {
        let om = "# HELP a_spans Spans.\n# TYPE a_spans counter\na_spans_total 3\n# HELP d Latency.\n# TYPE d histogram\n# UNIT d seconds\nd_sum 1.0\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP a_spans_total Spans.\n# TYPE a_spans_total counter\na_spans_total 3\n# HELP d Latency.\n# TYPE d histogram\nd_sum 1.0\n"
        );
    }

    #[test]
    fn every_family_is_registered_with_help() {
        let t = Telemetry::new();
        t.metrics.counters.spans_received.inc_by(2);
        let text = to_prometheus_text(&t.render().unwrap());
        assert!(
            text.contains("meshtrace_collector_spans_received_total 2"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter"),
            "{text}"
        );
        assert!(!text.contains(".."), "help text ends once: {text}");
    }
}
