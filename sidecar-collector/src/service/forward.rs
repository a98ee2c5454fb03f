//! The forward exporter (sidecar mode): spans queued for the upstream
//! collector (`sidecar.*`), drained at shutdown within `sidecar.shutdown_grace`.

use super::{Context, System};
use anyhow::anyhow;
use meshtrace_collector::forward::{ForwardSettings, Forwarder};
use meshtrace_collector::sink::Target;
use std::time::Duration;

pub fn start(ctx: &Context, system: &mut System) -> anyhow::Result<Target> {
    let sc = &ctx.cfg.sidecar;
    let settings = ForwardSettings {
        upstream: sc.upstream.clone(),
        queue_bytes: sc.queue_bytes,
        batch_bytes: sc.batch_bytes,
        max_in_flight: sc.max_in_flight,
        retry_initial: Duration::from_millis(sc.retry_initial_ms),
        retry_max: Duration::from_millis(sc.retry_max_ms),
        max_retry_time: sc.max_retry_time,
        timeout: Duration::from_millis(sc.timeout_ms),
        shutdown_grace: sc.shutdown_grace,
        tls: ctx.upstream_tls.clone(),
        token: ctx.upstream_token.clone(),
        headers: Default::default(),
        compression: None,
        protocol: Default::default(),
        ca_pem: None,
        disk_queue: None,
    };
    let counters = ctx.telemetry.metrics.counters.clone();
    let (forwarder, shutdown, task) = Forwarder::start(settings, counters.clone())
        .map_err(|e| anyhow!("sidecar.upstream: {e}"))?;
    let grace = sc.shutdown_grace;
    system.at_stop("forward", async move {
        // Every sender is gone: the task ends once the queue is forwarded, or
        // once the grace period is over (what is left is counted as dropped).
        shutdown.begin(grace);
        if tokio::time::timeout(grace + Duration::from_secs(15), task)
            .await
            .is_err()
        {
            tracing::warn!("forwarding did not end after the shutdown grace; exiting anyway");
        }
        tracing::info!(
            forwarded = counters.spans_forwarded.get(),
            dropped = counters.spans_dropped.get(),
            "forwarding ended"
        );
    });
    Ok(Target::Forward(forwarder))
}

/// The filter's counters, read from the pod's Envoy and re-exported on
/// `/metrics` with their help text (`sidecar.envoy_admin`).
pub fn start_filter_stats(ctx: &Context, system: &mut System) {
    let stats = meshtrace_collector::filter_stats::FilterStats::default();
    ctx.telemetry.register_collector(Box::new(stats.clone()));
    let task = stats.spawn(ctx.cfg.sidecar.envoy_admin.clone(), Duration::from_secs(5));
    system.abort_at_stop("filter stats", [task]);
}
