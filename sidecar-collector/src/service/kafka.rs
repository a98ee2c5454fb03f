//! Kafka's parts of a pipeline: the exporter (its stop flushes what is
//! buffered) and the ingester's settings.

use super::{Context, System};
#[cfg(feature = "kafka")]
use meshtrace_collector::config::Config;
use meshtrace_collector::sink::Exporter;
use std::sync::Arc;

#[cfg(feature = "kafka")]
pub fn settings(cfg: &Config) -> meshtrace_collector::kafka::KafkaSettings {
    let k = &cfg.kafka;
    meshtrace_collector::kafka::KafkaSettings {
        brokers: k.brokers.clone(),
        topic: k.topic.clone(),
        compression: k.compression.clone(),
        max_buffer_bytes: k.max_buffer_bytes,
        delivery_timeout: k.delivery_timeout,
        group_id: k.group_id.clone(),
        properties: k
            .properties
            .iter()
            .map(|(a, b)| (a.clone(), b.clone()))
            .collect(),
    }
}

/// The Kafka exporter; at shutdown, after the listeners stopped, what it
/// still buffers is delivered within `kafka.delivery_timeout`.
#[cfg(feature = "kafka")]
pub fn start_exporter(ctx: &Context, system: &mut System) -> anyhow::Result<Arc<dyn Exporter>> {
    let exporter = Arc::new(
        meshtrace_collector::kafka::KafkaExporter::new(
            &settings(&ctx.cfg),
            ctx.telemetry.metrics.kafka.clone(),
        )
        .map_err(|e| anyhow::anyhow!(e))?,
    );
    let grace = ctx.cfg.kafka.delivery_timeout;
    let flushing = exporter.clone();
    system.at_stop("kafka exporter", async move {
        flushing.flush(grace).await;
    });
    tracing::info!(
        brokers = %ctx.cfg.kafka.brokers.join(","),
        topic = %ctx.cfg.kafka.topic,
        "spans go to Kafka"
    );
    Ok(exporter)
}

#[cfg(not(feature = "kafka"))]
pub fn start_exporter(_: &Context, _: &mut System) -> anyhow::Result<Arc<dyn Exporter>> {
    Err(anyhow::anyhow!(
        "kafka.brokers: this collector was built without Kafka (cargo feature `kafka`)"
    ))
}
