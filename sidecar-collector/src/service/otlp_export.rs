//! The OTLP exporters (`exporters.otlp`): a forwarder per endpoint with its
//! own queue, retries and concurrency (`forward::Forwarder`, as a sidecar's),
//! its counters mirrored per endpoint (`meshtrace_collector_otlp_export_*`);
//! drained at shutdown within `sidecar.shutdown_grace`.

use super::{Context, System};
use anyhow::{anyhow, Context as _};
use meshtrace_collector::config::OtlpExporterConfig;
use meshtrace_collector::forward::{ForwardSettings, Forwarder, OtlpExporter, Protocol};
use meshtrace_collector::telemetry::{Counters, EndpointLabel};
use std::sync::Arc;
use std::time::Duration;

fn settings(ctx: &Context, e: &OtlpExporterConfig) -> anyhow::Result<ForwardSettings> {
    let mut headers = tonic::metadata::MetadataMap::new();
    for (k, v) in &e.headers {
        let key = tonic::metadata::MetadataKey::from_bytes(k.as_bytes())
            .map_err(|_| anyhow!("exporters.otlp: header {k:?} is not a header name"))?;
        let value = v
            .parse()
            .map_err(|_| anyhow!("exporters.otlp: header {k:?}: not a header value"))?;
        headers.insert(key, value);
    }
    let ca_pem = match &e.ca_file {
        Some(ca) => Some(
            std::fs::read(ca)
                .with_context(|| format!("exporters.otlp: reading ca_file {}", ca.display()))?,
        ),
        None => None,
    };
    let tls = e.endpoint.starts_with("https://").then(|| {
        let tls = tonic::transport::ClientTlsConfig::new().with_enabled_roots();
        match &ca_pem {
            Some(pem) => tls.ca_certificate(tonic::transport::Certificate::from_pem(pem)),
            None => tls,
        }
    });
    Ok(ForwardSettings {
        upstream: e.endpoint.clone(),
        queue_bytes: e.queue_bytes,
        batch_bytes: ctx.cfg.sidecar.batch_bytes,
        max_in_flight: e.max_in_flight,
        retry_initial: Duration::from_millis(ctx.cfg.sidecar.retry_initial_ms),
        retry_max: Duration::from_millis(ctx.cfg.sidecar.retry_max_ms),
        max_retry_time: e.max_retry_time,
        timeout: e.timeout,
        shutdown_grace: ctx.cfg.sidecar.shutdown_grace,
        tls,
        token: None,
        headers,
        compression: match e.compression.as_str() {
            "gzip" => Some(tonic::codec::CompressionEncoding::Gzip),
            "zstd" => Some(tonic::codec::CompressionEncoding::Zstd),
            _ => None,
        },
        protocol: match e.protocol.as_str() {
            "http/protobuf" => Protocol::HttpProtobuf,
            _ => Protocol::Grpc,
        },
        ca_pem,
        disk_queue: (e.queue == "disk").then(|| ctx.cfg.export_queue_dir(e)),
    })
}

/// Starts `e`'s forwarder with `counters`; its stop drains the queue within the grace.
fn start_one(
    ctx: &Context,
    e: &OtlpExporterConfig,
    counters: Arc<Counters>,
    system: &mut System,
) -> anyhow::Result<Forwarder> {
    let (forwarder, shutdown, task) = Forwarder::start(settings(ctx, e)?, counters)
        .map_err(|m| anyhow!("exporters.otlp: {m}"))?;
    let grace = ctx.cfg.sidecar.shutdown_grace;
    system.at_stop("otlp exporter", async move {
        shutdown.begin(grace);
        let _ = tokio::time::timeout(grace + Duration::from_secs(15), task).await;
    });
    tracing::info!(endpoint = %e.endpoint, "spans go to an OTLP endpoint too");
    Ok(forwarder)
}

/// The exporters beside a store, Kafka or a gateway's target (the endpoints
/// after the first `skip`): never holding a sender.
pub fn start(
    ctx: &Context,
    skip: usize,
    system: &mut System,
) -> anyhow::Result<Vec<Arc<OtlpExporter>>> {
    let mut out = Vec::new();
    for e in ctx.cfg.exporters.otlp.iter().skip(skip) {
        let counters = Arc::new(Counters::default());
        let forwarder = start_one(ctx, e, counters.clone(), system)?;
        out.push(Arc::new(OtlpExporter::new(
            e.endpoint.clone(),
            forwarder,
            counters,
        )));
    }
    let mirrored = out.clone();
    let metrics = ctx.telemetry.metrics.otlp_export.clone();
    let mirror = tokio::spawn(async move {
        loop {
            for e in &mirrored {
                let label = EndpointLabel {
                    endpoint: e.endpoint.clone(),
                };
                metrics
                    .spans_sent
                    .get_or_create(&label)
                    .set(e.counters.spans_forwarded.get());
                metrics
                    .spans_dropped
                    .get_or_create(&label)
                    .set(e.counters.spans_dropped.get());
                metrics
                    .queue_bytes
                    .get_or_create(&label)
                    .set(e.counters.queue_bytes.get());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    system.abort_at_stop("otlp exporter metrics", [mirror]);
    Ok(out)
}

/// A gateway's target: the first endpoint's queue, with the sidecar's
/// acknowledgement (accepted once queued, "retry later" when full).
pub fn start_target(ctx: &Context, system: &mut System) -> anyhow::Result<Forwarder> {
    let e = ctx
        .cfg
        .exporters
        .otlp
        .first()
        .ok_or_else(|| anyhow!("exporters.otlp: no endpoint"))?;
    start_one(ctx, e, ctx.telemetry.metrics.counters.clone(), system)
}
