//! The span metrics on `/metrics`, under the names users already query: the
//! seed's Jaeger names, the OpenTelemetry spanmetrics and servicegraph
//! connectors' names, and meshtrace's sampling-adjusted twins. Every name,
//! label and help text is declared here, once.

use super::{Series, SpanMetrics};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use std::collections::BTreeMap;
use std::fmt::Error;
use std::sync::Arc;

/// OTLP span kind → the spanmetrics connector's `span_kind` value.
pub const SPAN_KINDS: [&str; 6] = [
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
];

/// OTLP status code → the spanmetrics connector's `status_code` value.
pub const STATUS_CODES: [&str; 3] = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];

/// The label of the one series label sets beyond the cap fold into (the OTel convention).
pub const OVERFLOW: [(&str, &str); 1] = [("otel_metric_overflow", "true")];

/// Registers the span metrics' families in a registry.
#[derive(Debug)]
pub struct Exporter(pub Arc<SpanMetrics>);

fn ms() -> Unit {
    Unit::Other("milliseconds".into())
}

fn histogram(
    m: &mut MetricEncoder,
    labels: &impl EncodeLabelSet,
    bounds: &[f64],
    sum: f64,
    buckets: &[u64],
) -> Result<(), Error> {
    let pairs: Vec<(f64, u64)> = bounds
        .iter()
        .copied()
        .chain(std::iter::once(f64::MAX))
        .zip(buckets.iter().copied())
        .collect();
    let count = buckets.iter().sum();
    m.encode_family(labels)?
        .encode_histogram::<NoLabelSet>(sum, count, &pairs, None)
}

fn counter<V: prometheus_client::encoding::EncodeCounterValue>(
    m: &mut MetricEncoder,
    labels: &impl EncodeLabelSet,
    v: V,
) -> Result<(), Error> {
    m.encode_family(labels)?
        .encode_counter::<NoLabelSet, V, u64>(&v, None)
}

fn gauge(m: &mut MetricEncoder, labels: &impl EncodeLabelSet, v: i64) -> Result<(), Error> {
    m.encode_family(labels)?.encode_gauge(&v)
}

impl Collector for Exporter {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), Error> {
        let bounds = self.0.settings().bounds_ms.clone();
        let st = self.0.lock();
        let cells = || {
            st.spans.services.iter().flat_map(|(svc, ops)| {
                ops.iter().flat_map(move |(op, cells)| {
                    cells
                        .iter()
                        .map(move |(k, s, series)| (&**svc, &**op, *k, *s, series))
                })
            })
        };
        let otel = |svc, op, k: u8, s: u8| {
            [
                ("service_name", svc),
                ("span_name", op),
                ("span_kind", SPAN_KINDS[usize::from(k).min(5)]),
                ("status_code", STATUS_CODES[usize::from(s).min(2)]),
            ]
        };
        let overflow = st.spans.overflow.as_ref();

        // The OpenTelemetry spanmetrics connector's names (what Jaeger SPM and Grafana read).
        {
            let mut m = enc.encode_descriptor(
                "traces_span_metrics_calls",
                "Spans stored (observed, not adjusted for sampling) by service_name, span_name, span_kind and status_code; errors are status_code=\"STATUS_CODE_ERROR\"",
                None,
                MetricType::Counter,
            )?;
            for (svc, op, k, s, x) in cells() {
                counter(&mut m, &otel(svc, op, k, s), x.calls)?;
            }
            if let Some(o) = overflow {
                counter(&mut m, &OVERFLOW, o.calls)?;
            }
        }
        {
            let u = ms();
            let mut m = enc.encode_descriptor(
                "traces_span_metrics_duration",
                "Span durations by service_name, span_name, span_kind and status_code (observed spans)",
                Some(&u),
                MetricType::Histogram,
            )?;
            for (svc, op, k, s, x) in cells() {
                histogram(&mut m, &otel(svc, op, k, s), &bounds, x.sum_ms, &x.buckets)?;
            }
            if let Some(o) = overflow {
                histogram(&mut m, &OVERFLOW, &bounds, o.sum_ms, &o.buckets)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "meshtrace_span_calls_adjusted",
                "Calls adjusted for sampling (each stored span counts 1/p, p the probability its trace was sampled with): the real request count, by the labels of traces_span_metrics_calls",
                None,
                MetricType::Counter,
            )?;
            for (svc, op, k, s, x) in cells() {
                counter(&mut m, &otel(svc, op, k, s), x.adjusted)?;
            }
            if let Some(o) = overflow {
                counter(&mut m, &OVERFLOW, o.adjusted)?;
            }
        }

        // The seed's Jaeger names: the same spans, grouped by (service, operation[, error]).
        let mut by_error: BTreeMap<(&str, &str, bool), (u64, f64)> = BTreeMap::new();
        let mut by_op: BTreeMap<(&str, &str), Series> = BTreeMap::new();
        for (svc, op, _, s, x) in cells() {
            let e = by_error.entry((svc, op, s == 2)).or_default();
            e.0 += x.calls;
            e.1 += x.adjusted;
            by_op
                .entry((svc, op))
                .and_modify(|a| a.merge(x))
                .or_insert_with(|| x.clone());
        }
        let tf = |b: bool| if b { "true" } else { "false" };
        {
            let mut m = enc.encode_descriptor(
                "jaeger_spans",
                "Spans stored (observed) by service, operation and error",
                None,
                MetricType::Counter,
            )?;
            for ((svc, op, err), (n, _)) in &by_error {
                counter(
                    &mut m,
                    &[("service", *svc), ("operation", *op), ("error", tf(*err))],
                    *n,
                )?;
            }
            if let Some(o) = overflow {
                counter(&mut m, &OVERFLOW, o.calls)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "meshtrace_spans_adjusted",
                "jaeger_spans_total adjusted for sampling (each span counts 1/p)",
                None,
                MetricType::Counter,
            )?;
            for ((svc, op, err), (_, a)) in &by_error {
                counter(
                    &mut m,
                    &[("service", *svc), ("operation", *op), ("error", tf(*err))],
                    *a,
                )?;
            }
            if let Some(o) = overflow {
                counter(&mut m, &OVERFLOW, o.adjusted)?;
            }
        }
        {
            let u = ms();
            let mut m = enc.encode_descriptor(
                "jaeger_span_duration",
                "Span durations by service and operation (observed spans, every kind and status)",
                Some(&u),
                MetricType::Histogram,
            )?;
            for ((svc, op), x) in &by_op {
                histogram(
                    &mut m,
                    &[("service", *svc), ("operation", *op)],
                    &bounds,
                    x.sum_ms,
                    &x.buckets,
                )?;
            }
            if let Some(o) = overflow {
                histogram(&mut m, &OVERFLOW, &bounds, o.sum_ms, &o.buckets)?;
            }
        }
        let mut services: Vec<_> = st.traces.iter().collect();
        services.sort_by(|a, b| a.0.cmp(b.0));
        let traces_overflow = (st.traces_folded > 0).then_some(st.traces_overflow);
        {
            let mut m = enc.encode_descriptor(
                "jaeger_traces_per_service",
                "Traces entering each service (its root, server and consumer spans; observed): a trace that calls a service twice counts twice",
                None,
                MetricType::Counter,
            )?;
            for (svc, c) in &services {
                counter(&mut m, &[("service", &***svc)], c.observed)?;
            }
            if let Some(o) = traces_overflow {
                counter(&mut m, &OVERFLOW, o.observed)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "meshtrace_traces_per_service_adjusted",
                "jaeger_traces_per_service_total adjusted for sampling (each span counts 1/p)",
                None,
                MetricType::Counter,
            )?;
            for (svc, c) in &services {
                counter(&mut m, &[("service", &***svc)], c.adjusted)?;
            }
            if let Some(o) = traces_overflow {
                counter(&mut m, &OVERFLOW, o.adjusted)?;
            }
        }

        // The servicegraph connector's / Tempo's names.
        let g = &st.graph;
        let mut edges: Vec<_> = g.edges.iter().collect();
        edges.sort_by(|a, b| a.0.cmp(b.0));
        let edge_labels = |k: &super::graph::EdgeKey| match k {
            Some((c, s, t)) => vec![
                ("client", c.to_string()),
                ("server", s.to_string()),
                ("connection_type", t.to_string()),
            ],
            None => vec![("otel_metric_overflow", "true".to_string())],
        };
        {
            let mut m = enc.encode_descriptor(
                "traces_service_graph_request",
                "Requests between two services: a client (or producer) span paired with the server (or consumer) span it is the parent of (observed)",
                None,
                MetricType::Counter,
            )?;
            for (k, e) in &edges {
                counter(&mut m, &edge_labels(k), e.requests)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "traces_service_graph_request_failed",
                "Requests between two services where either span has an error status (observed)",
                None,
                MetricType::Counter,
            )?;
            for (k, e) in &edges {
                counter(&mut m, &edge_labels(k), e.failed)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "meshtrace_service_graph_request_adjusted",
                "traces_service_graph_request_total adjusted for sampling (each request counts 1/p of its client span)",
                None,
                MetricType::Counter,
            )?;
            for (k, e) in &edges {
                counter(&mut m, &edge_labels(k), e.adjusted_requests)?;
            }
        }
        for (name, help, server) in [
            (
                "traces_service_graph_request_server",
                "Duration of requests between two services as the server span saw it",
                true,
            ),
            (
                "traces_service_graph_request_client",
                "Duration of requests between two services as the client span saw it",
                false,
            ),
        ] {
            let u = Unit::Seconds;
            let mut m = enc.encode_descriptor(name, help, Some(&u), MetricType::Histogram)?;
            for (k, e) in &edges {
                let h = if server { &e.server } else { &e.client };
                histogram(&mut m, &edge_labels(k), g.bounds_s(), h.sum, &h.buckets)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "traces_service_graph_unpaired_spans",
                "Client or server spans whose other half did not arrive within metrics.service_graph_wait",
                None,
                MetricType::Counter,
            )?;
            let mut unpaired: Vec<_> = g.unpaired.iter().collect();
            unpaired.sort();
            for ((side, svc), n) in unpaired {
                counter(&mut m, &[(*side, &**svc)], *n)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "traces_service_graph_dropped_spans",
                "Client or server spans not kept for pairing: metrics.service_graph_max_pending were waiting",
                None,
                MetricType::Counter,
            )?;
            m.encode_counter::<NoLabelSet, u64, u64>(&g.dropped, None)?;
        }

        // The cap at work.
        let tables = [
            ("span_metrics", st.spans.len(), st.spans.folded),
            ("traces_per_service", st.traces.len(), st.traces_folded),
            ("service_graph", g.edges.len(), g.folded),
            ("history", 0, st.history_folded),
        ];
        {
            let mut m = enc.encode_descriptor(
                "meshtrace_metrics_overflow_spans",
                "Spans folded into the otel_metric_overflow=\"true\" series: their label set was new and the table held metrics.max_series",
                None,
                MetricType::Counter,
            )?;
            for (t, _, folded) in tables {
                counter(&mut m, &[("table", t)], folded)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "meshtrace_metrics_series",
                "Label sets held per table (the cap is metrics.max_series, metrics.service_graph_max_edges for the graph)",
                None,
                MetricType::Gauge,
            )?;
            for (t, n, _) in &tables[..3] {
                gauge(&mut m, &[("table", *t)], *n as i64)?;
            }
            gauge(
                &mut m,
                &[("table", "service_graph_pending")],
                g.pending() as i64,
            )?;
        }
        {
            let mut m = enc.encode_descriptor(
                "meshtrace_metrics_history_lost_rows",
                "Per-minute history rows the store refused (the Monitor tab misses them)",
                None,
                MetricType::Counter,
            )?;
            m.encode_counter::<NoLabelSet, u64, u64>(&st.history_lost, None)?;
        }
        Ok(())
    }
}
