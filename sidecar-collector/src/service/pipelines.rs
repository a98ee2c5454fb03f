//! What each mode runs, declared once: its pipelines (receivers → processors →
//! exporters, the OpenTelemetry Collector's `service.pipelines`, typed) and the
//! services beside them. [`super::System::start`] builds exactly this plan and
//! nothing else; adding a receiver or an exporter is a variant here and its
//! start in the component that owns it.
//!
//! Acknowledgement: a sender is answered once every durable exporter of its
//! pipeline has accepted its spans (the store committed them, the forward
//! queue holds them), never earlier; a plan without a durable exporter is
//! refused.

use meshtrace_collector::config::{Config, Mode};

/// Where spans come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receiver {
    /// OTLP over gRPC (`otlp.grpc_listen`) and HTTP (`otlp.http_listen`).
    Otlp,
    /// Zipkin's span API (`receivers.zipkin`).
    Zipkin,
    /// Jaeger's senders: UDP, Thrift over HTTP, gRPC (`receivers.jaeger`).
    Jaeger,
    /// The Kafka topic, in a consumer group (`kafka.*`; ingester mode).
    Kafka,
}

/// What is done to spans between receiving and exporting, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processor {
    /// Each request reserves its decoded size first (`memory.*`).
    MemoryLimiter,
    /// Credentials in attributes replaced (`redaction.*`).
    Redaction,
    /// Spans outside [now − `max_span_age`, now + `max_span_future`] rejected.
    TimeWindow,
    /// Adaptive sampling counts what arrives (`sampling.adaptive`).
    AdaptiveCounts,
    /// Span metrics, the service graph and the SPM history (`metrics.*`).
    SpanMetrics,
}

/// Where spans go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exporter {
    /// The embedded store (`store.*`): accepted once committed.
    Store,
    /// The upstream collector (`sidecar.*`): accepted once queued.
    Forward,
    /// The Kafka topic (`kafka.*`): accepted once Kafka acknowledged.
    Kafka,
    /// OTLP endpoints (`exporters.otlp`), each with its own queue. Beside a
    /// store or Kafka a full queue drops spans for its endpoint alone (not
    /// durable); as the only exporter (a gateway) a sender is accepted once
    /// the first endpoint's queue holds its spans, and told to retry when
    /// it is full (durable, as the sidecar's forward queue).
    Otlp { durable: bool },
}

impl Exporter {
    /// Whether a sender waits for it (all of today's do).
    pub fn durable(self) -> bool {
        match self {
            Exporter::Store | Exporter::Forward | Exporter::Kafka => true,
            Exporter::Otlp { durable } => durable,
        }
    }
}

/// What runs beside the pipelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Jaeger's query API, the UI, the analysis API (`query.*`).
    Query,
    /// Sampling strategies, served to the filters (`sampling.*`).
    Sampling,
    /// The filter's counters read from the pod's Envoy (`sidecar.envoy_admin`).
    FilterStats,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline {
    pub name: &'static str,
    pub receivers: Vec<Receiver>,
    pub processors: Vec<Processor>,
    pub exporters: Vec<Exporter>,
}

impl Pipeline {
    pub fn has(&self, p: Processor) -> bool {
        self.processors.contains(&p)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub pipelines: Vec<Pipeline>,
    pub services: Vec<Service>,
}

/// The plan of `cfg.mode`, with the optional parts `cfg` turns on.
pub fn plan(cfg: &Config) -> Result<Plan, String> {
    let senders = [
        Some(Receiver::Otlp),
        (cfg.receivers.zipkin.on_in(cfg.mode) && !cfg.receivers.zipkin.listen.is_empty())
            .then_some(Receiver::Zipkin),
        cfg.receivers
            .jaeger
            .on_in(cfg.mode)
            .then_some(Receiver::Jaeger),
    ];
    let kafka = cfg.kafka.exports_in(cfg.mode).then_some(Exporter::Kafka);
    let with = |e: &[Option<Exporter>]| -> Vec<Exporter> { e.iter().flatten().copied().collect() };
    // What a store does with what it takes.
    let storing = |receivers: Vec<Receiver>, exporters: Vec<Exporter>| {
        let store = exporters.contains(&Exporter::Store);
        Pipeline {
            name: "traces",
            receivers,
            processors: [
                Some(Processor::MemoryLimiter),
                Some(Processor::Redaction),
                store.then_some(Processor::TimeWindow),
                (store && !cfg.sampling.adaptive.services.is_empty())
                    .then_some(Processor::AdaptiveCounts),
                (store && cfg.metrics.enabled).then_some(Processor::SpanMetrics),
            ]
            .into_iter()
            .flatten()
            .collect(),
            exporters,
        }
    };
    let plan = match cfg.mode {
        Mode::Sidecar => Plan {
            pipelines: vec![Pipeline {
                name: "traces",
                receivers: senders.into_iter().flatten().collect(),
                processors: vec![Processor::MemoryLimiter, Processor::Redaction],
                // Forwarding upstream, unless the sidecar only writes to Kafka
                // (the configuration requires an upstream otherwise).
                exporters: with(&[
                    (!(cfg.sidecar.upstream.is_empty() && kafka.is_some()))
                        .then_some(Exporter::Forward),
                    kafka,
                ]),
            }],
            services: [
                Some(Service::Sampling),
                (!cfg.sidecar.envoy_admin.is_empty()).then_some(Service::FilterStats),
            ]
            .into_iter()
            .flatten()
            .collect(),
        },
        Mode::Central | Mode::AllInOne => {
            let store = cfg.store.enabled.then_some(Exporter::Store);
            let otlp = (!cfg.exporters.otlp.is_empty()).then_some(Exporter::Otlp {
                durable: store.is_none() && kafka.is_none(),
            });
            Plan {
                pipelines: vec![storing(
                    senders.into_iter().flatten().collect(),
                    with(&[store, kafka, otlp]),
                )],
                services: [
                    cfg.store.enabled.then_some(Service::Query),
                    Some(Service::Sampling),
                ]
                .into_iter()
                .flatten()
                .collect(),
            }
        }
        Mode::Ingester => Plan {
            pipelines: vec![storing(vec![Receiver::Kafka], vec![Exporter::Store])],
            services: vec![Service::Query],
        },
    };
    if !cfg!(feature = "kafka")
        && plan.pipelines.iter().any(|p| {
            p.exporters.contains(&Exporter::Kafka) || p.receivers.contains(&Receiver::Kafka)
        })
    {
        return Err(
            "kafka.brokers: this collector was built without Kafka (cargo feature `kafka`)".into(),
        );
    }
    for p in &plan.pipelines {
        // Never optional: what arrives is bounded in memory and has its
        // credentials replaced, whatever the exporters.
        for must in [Processor::MemoryLimiter, Processor::Redaction] {
            if !p.has(must) {
                return Err(format!("pipeline {}: {must:?} is missing", p.name));
            }
        }
        if !p.exporters.iter().any(|e| e.durable()) {
            return Err(format!(
                "pipeline {}: no durable exporter, so no sender could ever be acknowledged",
                p.name
            ));
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_runs_what_it_declares() {
        let mut cfg = Config {
            mode: Mode::Sidecar,
            ..Default::default()
        };
        let p = plan(&cfg).unwrap();
        assert_eq!(p.pipelines.len(), 1);
        assert_eq!(p.pipelines[0].exporters, [Exporter::Forward]);
        assert!(p.pipelines[0].has(Processor::Redaction));
        assert!(
            !p.pipelines[0].has(Processor::SpanMetrics),
            "a sidecar stores nothing"
        );
        assert_eq!(p.services, [Service::Sampling]);
        assert_eq!(
            p.pipelines[0].receivers,
            [Receiver::Otlp],
            "Zipkin and Jaeger off in a sidecar by default"
        );
        cfg.receivers.zipkin.enabled = Some(true);
        assert_eq!(
            plan(&cfg).unwrap().pipelines[0].receivers,
            [Receiver::Otlp, Receiver::Zipkin]
        );
        cfg.receivers.jaeger.enabled = Some(true);
        assert_eq!(
            plan(&cfg).unwrap().pipelines[0].receivers,
            [Receiver::Otlp, Receiver::Zipkin, Receiver::Jaeger]
        );
        cfg.receivers.zipkin.listen = String::new();
        assert_eq!(
            plan(&cfg).unwrap().pipelines[0].receivers,
            [Receiver::Otlp, Receiver::Jaeger],
            "an empty address turns it off"
        );
        cfg.sidecar.envoy_admin = "127.0.0.1:15000".into();
        assert_eq!(
            plan(&cfg).unwrap().services,
            [Service::Sampling, Service::FilterStats]
        );

        for mode in [Mode::Central, Mode::AllInOne] {
            let mut cfg = Config {
                mode,
                ..Default::default()
            };
            let p = plan(&cfg).unwrap();
            let traces = &p.pipelines[0];
            assert_eq!(traces.exporters, [Exporter::Store]);
            assert_eq!(
                traces.processors,
                [
                    Processor::MemoryLimiter,
                    Processor::Redaction,
                    Processor::TimeWindow,
                    Processor::SpanMetrics
                ]
            );
            assert_eq!(p.services, [Service::Query, Service::Sampling]);
            let by_default = mode == Mode::AllInOne;
            for r in [Receiver::Zipkin, Receiver::Jaeger] {
                assert_eq!(traces.receivers.contains(&r), by_default, "{mode:?}");
            }
            cfg.receivers.zipkin.enabled = Some(!by_default);
            cfg.receivers.jaeger.enabled = Some(!by_default);
            for r in [Receiver::Zipkin, Receiver::Jaeger] {
                assert_eq!(
                    plan(&cfg).unwrap().pipelines[0].receivers.contains(&r),
                    !by_default
                );
            }
            cfg.metrics.enabled = false;
            cfg.sampling.adaptive.services = vec!["*".into()];
            let traces = plan(&cfg).unwrap().pipelines[0].clone();
            assert!(traces.has(Processor::AdaptiveCounts));
            assert!(!traces.has(Processor::SpanMetrics));
        }
    }

    #[test]
    fn kafka_otlp_exporters_and_the_ingester_are_planned() {
        let mut cfg = Config {
            mode: Mode::Central,
            ..Default::default()
        };
        cfg.kafka.brokers = vec!["k:9092".into()];
        let p = plan(&cfg).unwrap();
        assert_eq!(p.pipelines[0].exporters, [Exporter::Store, Exporter::Kafka]);
        cfg.store.enabled = false;
        cfg.exporters.otlp = vec![Default::default()];
        let p = plan(&cfg).unwrap();
        assert_eq!(
            p.pipelines[0].exporters,
            [Exporter::Kafka, Exporter::Otlp { durable: false }],
            "Kafka acknowledges; the OTLP endpoint never holds a sender"
        );
        assert!(
            !p.pipelines[0].has(Processor::SpanMetrics),
            "nothing stored"
        );
        assert_eq!(p.services, [Service::Sampling], "no query API");
        cfg.kafka.brokers.clear();
        assert_eq!(
            plan(&cfg).unwrap().pipelines[0].exporters,
            [Exporter::Otlp { durable: true }],
            "a gateway: the endpoint's queue acknowledges"
        );
        let mut sidecar = Config {
            mode: Mode::Sidecar,
            ..Default::default()
        };
        sidecar.kafka.brokers = vec!["k:9092".into()];
        assert_eq!(
            plan(&sidecar).unwrap().pipelines[0].exporters,
            [Exporter::Kafka]
        );
        sidecar.sidecar.upstream = "http://c:4317".into();
        assert_eq!(
            plan(&sidecar).unwrap().pipelines[0].exporters,
            [Exporter::Forward, Exporter::Kafka]
        );
        let ingester = Config {
            mode: Mode::Ingester,
            ..Default::default()
        };
        let p = plan(&ingester).unwrap();
        assert_eq!(p.pipelines[0].receivers, [Receiver::Kafka]);
        assert_eq!(p.pipelines[0].exporters, [Exporter::Store]);
        assert!(p.pipelines[0].has(Processor::SpanMetrics));
        assert_eq!(p.services, [Service::Query]);
    }

    #[test]
    fn every_pipeline_acknowledges_through_a_durable_exporter() {
        for mode in [Mode::Sidecar, Mode::Central, Mode::AllInOne, Mode::Ingester] {
            let cfg = Config {
                mode,
                ..Default::default()
            };
            for p in plan(&cfg).unwrap().pipelines {
                assert!(p.exporters.iter().any(|e| e.durable()), "{mode:?}: {p:?}");
                assert!(!p.receivers.is_empty(), "{mode:?}: {p:?}");
            }
        }
    }
}
