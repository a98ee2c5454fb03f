//! The receivers of a pipeline, as apps for their listeners — OTLP/HTTP, OTLP
//! gRPC, Zipkin, Jaeger's Thrift over HTTP and gRPC — in front of the
//! pipeline's sink, behind the memory limiter and the queue's room check; and
//! Jaeger's UDP receivers, which bound themselves (`receiver::jaeger`).

use super::pipelines::{Pipeline, Processor, Receiver};
use super::Context;
use meshtrace_collector::ingest::jaeger::thrift::Protocol;
use meshtrace_collector::ingest::Redaction;
use meshtrace_collector::memory;
use meshtrace_collector::receiver::grpc::{self, GrpcReceiver};
use meshtrace_collector::receiver::http::{self, HttpState};
use meshtrace_collector::receiver::jaeger::{self, JaegerGrpc, JaegerHttpState, UdpReceiver};
use meshtrace_collector::receiver::zipkin::{self, ZipkinState};
use meshtrace_collector::sink::{Exporter, Sink, Target};
use meshtrace_collector::telemetry;
use std::sync::Arc;

/// A listener's configuration key and its app.
pub struct ReceiverApp {
    pub key: &'static str,
    pub addr: String,
    pub app: axum::Router,
}

/// A UDP port's configuration key, address and receiver.
pub struct UdpApp {
    pub key: &'static str,
    pub addr: String,
    pub receiver: UdpReceiver,
}

/// What the ingester runs (`receiver::kafka`); nothing without the `kafka` feature.
#[cfg(feature = "kafka")]
pub type IngesterApp = meshtrace_collector::receiver::kafka::Ingester;
#[cfg(not(feature = "kafka"))]
pub type IngesterApp = std::convert::Infallible;

/// A pipeline's receivers: HTTP and gRPC apps, UDP ports, the Kafka ingester.
pub struct Receivers {
    pub http: Vec<ReceiverApp>,
    pub udp: Vec<UdpApp>,
    pub ingester: Option<IngesterApp>,
}

/// The apps of `pipeline`'s receivers, sending to `target` and `exporters`.
pub fn apps(
    ctx: &Context,
    pipeline: &Pipeline,
    target: Target,
    exporters: Vec<Arc<dyn Exporter>>,
) -> anyhow::Result<Receivers> {
    let cfg = &ctx.cfg;
    // Every pipeline redacts and limits memory (`pipelines::plan` checks it).
    debug_assert!(pipeline.has(Processor::Redaction) && pipeline.has(Processor::MemoryLimiter));
    let sink = Sink {
        exporters,
        target,
        redaction: Arc::new(
            Redaction::new(&cfg.redaction.keys, &cfg.redaction.allow)
                .with_patterns(&cfg.redaction.patterns)?,
        ),
    };
    let max_message_bytes = ctx.max_message_bytes;
    let reserve = axum::middleware::from_fn_with_state(
        memory::IngestMemory {
            limiter: ctx.limiter.clone(),
            max_message_bytes: max_message_bytes as u64,
        },
        memory::reserve_request,
    );
    // Outermost: a full queue refuses before the memory reservation and the body.
    let room = axum::middleware::from_fn_with_state(
        sink.clone(),
        meshtrace_collector::sink::refuse_when_full,
    );
    let mut apps = Vec::new();
    let mut udp = Vec::new();
    #[cfg_attr(not(feature = "kafka"), allow(unused_mut))]
    let mut ingester = None;
    for r in &pipeline.receivers {
        match r {
            Receiver::Otlp => {
                let http_app = http::router(HttpState {
                    sink: sink.clone(),
                    max_message_bytes,
                })
                .route_layer(reserve.clone())
                .route_layer(room.clone())
                .merge(telemetry::health_router(ctx.telemetry.clone()));
                let grpc_app = tonic::service::Routes::new(grpc::service(
                    GrpcReceiver { sink: sink.clone() },
                    max_message_bytes,
                ))
                .into_axum_router()
                .route_layer(reserve.clone())
                .route_layer(room.clone())
                .route_layer(axum::middleware::from_fn(grpc::never_fits_is_final));
                apps.push(ReceiverApp {
                    key: "otlp.http_listen",
                    addr: cfg.otlp.http_listen.clone(),
                    app: http_app,
                });
                apps.push(ReceiverApp {
                    key: "otlp.grpc_listen",
                    addr: cfg.otlp.grpc_listen.clone(),
                    app: grpc_app,
                });
            }
            Receiver::Zipkin => apps.push(ReceiverApp {
                key: "receivers.zipkin.listen",
                addr: cfg.receivers.zipkin.listen.clone(),
                app: zipkin::router(ZipkinState {
                    sink: sink.clone(),
                    max_message_bytes,
                })
                .route_layer(reserve.clone())
                .route_layer(room.clone())
                .merge(telemetry::health_router(ctx.telemetry.clone())),
            }),
            #[cfg(feature = "kafka")]
            Receiver::Kafka => {
                ingester = Some(meshtrace_collector::receiver::kafka::Ingester {
                    sink: sink.clone(),
                    limiter: ctx.limiter.clone(),
                    settings: super::kafka::settings(cfg),
                    max_batch_messages: cfg.kafka.max_batch_messages,
                    metrics: ctx.telemetry.metrics.kafka.clone(),
                });
            }
            #[cfg(not(feature = "kafka"))]
            Receiver::Kafka => {
                return Err(anyhow::anyhow!(
                    "kafka.brokers: this collector was built without Kafka (cargo feature `kafka`)"
                ))
            }
            Receiver::Jaeger => {
                let j = &cfg.receivers.jaeger;
                if !j.thrift_http_listen.is_empty() {
                    apps.push(ReceiverApp {
                        key: "receivers.jaeger.thrift_http_listen",
                        addr: j.thrift_http_listen.clone(),
                        app: jaeger::http_router(JaegerHttpState {
                            sink: sink.clone(),
                            max_message_bytes,
                        })
                        .route_layer(reserve.clone())
                        .route_layer(room.clone())
                        .merge(telemetry::health_router(ctx.telemetry.clone())),
                    });
                }
                if !j.grpc_listen.is_empty() {
                    apps.push(ReceiverApp {
                        key: "receivers.jaeger.grpc_listen",
                        addr: j.grpc_listen.clone(),
                        app: tonic::service::Routes::new(jaeger::grpc_service(
                            JaegerGrpc { sink: sink.clone() },
                            max_message_bytes,
                        ))
                        .into_axum_router()
                        .route_layer(reserve.clone())
                        .route_layer(room.clone())
                        .route_layer(axum::middleware::from_fn(grpc::never_fits_is_final)),
                    });
                }
                for (key, addr, protocol) in [
                    (
                        "receivers.jaeger.thrift_compact_listen",
                        &j.thrift_compact_listen,
                        Protocol::Compact,
                    ),
                    (
                        "receivers.jaeger.thrift_binary_listen",
                        &j.thrift_binary_listen,
                        Protocol::Binary,
                    ),
                ] {
                    if addr.is_empty() {
                        continue;
                    }
                    udp.push(UdpApp {
                        key,
                        addr: addr.clone(),
                        receiver: UdpReceiver::new(
                            sink.clone(),
                            ctx.limiter.clone(),
                            protocol,
                            key,
                            j.max_packet_bytes,
                            j.max_packets_per_second,
                            j.max_packets_in_flight,
                            ctx.telemetry.metrics.udp.clone(),
                        ),
                    });
                }
            }
        }
    }
    Ok(Receivers {
        http: apps,
        udp,
        ingester,
    })
}
