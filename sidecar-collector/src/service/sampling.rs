//! The sampling service: the strategies file (or the central collector's
//! strategies, in a sidecar), adaptive sampling, and the two listeners' apps
//! that serve them to the filters (`sampling.*`).

use super::{Context, System};
use anyhow::anyhow;
use meshtrace_collector::sampling::adaptive::{Adaptive, Settings as AdaptiveSettings};
use meshtrace_collector::sampling::upstream::UpstreamCache;
use meshtrace_collector::sampling::{self, Provider, Strategies};
use std::sync::Arc;
use std::time::Duration;

pub struct Sampling {
    pub provider: Arc<Provider>,
    /// Fed by the store's pipeline when it has the `AdaptiveCounts` processor.
    pub adaptive: Option<Arc<Adaptive>>,
}

impl Sampling {
    /// Opens the strategies (a bad file stops start-up before any port is
    /// bound) and starts the reloader and the upstream refresher; `system`
    /// aborts them at shutdown. Adaptive sampling starts later
    /// ([`Sampling::start_adaptive`]).
    pub fn start(
        ctx: &Context,
        adaptive_counts: bool,
        system: &mut System,
    ) -> anyhow::Result<Sampling> {
        let cfg = &ctx.cfg;
        let sampling_metrics = ctx.telemetry.metrics.sampling.clone();
        let strategies = Arc::new(
            Strategies::open(
                cfg.sampling.strategies_file.clone(),
                sampling_metrics.clone(),
            )
            .map_err(|e| anyhow!(e))?,
        );
        let adaptive = adaptive_counts.then(|| {
            let a = &cfg.sampling.adaptive;
            Arc::new(Adaptive::new(
                AdaptiveSettings {
                    services: a.services.clone(),
                    target_traces_per_second: a.target_traces_per_second,
                    min_sampling_probability: a.min_sampling_probability,
                    lower_bound_traces_per_minute: a.lower_bound_traces_per_minute,
                    interval: a.calculation_interval,
                    smoothing: a.smoothing,
                    max_operations_per_service: a.max_operations_per_service,
                },
                sampling_metrics.clone(),
            ))
        });
        let reload_interval = cfg.sampling.reload_interval;
        let provider = Arc::new(if cfg.sampling.upstream.is_empty() {
            Provider::Local {
                strategies: strategies.clone(),
                adaptive: adaptive.clone(),
            }
        } else {
            Provider::Upstream(Arc::new(
                UpstreamCache::new(
                    &cfg.sampling.upstream,
                    reload_interval,
                    Duration::from_millis(cfg.sidecar.timeout_ms),
                    ctx.upstream_tls.clone(),
                    ctx.upstream_token.clone(),
                    sampling_metrics,
                )
                .map_err(|e| anyhow!(e))?,
            ))
        });
        let reloader = strategies.spawn_reloader(reload_interval);
        let refresher = match &*provider {
            Provider::Upstream(c) => Some(c.spawn_refresher()),
            Provider::Local { .. } => None,
        };
        system.abort_at_stop("sampling", [reloader, refresher].into_iter().flatten());
        Ok(Sampling { provider, adaptive })
    }

    /// Starts adaptive sampling's recomputation, once the store has shared its
    /// counts (or not): the task chooses between counting alone and counting
    /// with the other replicas when it starts.
    pub fn start_adaptive(&self, system: &mut System) {
        if let Some(a) = &self.adaptive {
            system.abort_at_stop("adaptive sampling", [a.spawn()]);
        }
    }

    /// The strategies over HTTP (`sampling.http_listen`) and gRPC
    /// (`sampling.grpc_listen`).
    pub fn apps(&self, ctx: &Context) -> (axum::Router, axum::Router) {
        let grpc = tonic::service::Routes::new(sampling::grpc_service(self.provider.clone()))
            .into_axum_router();
        let http = sampling::router(self.provider.clone()).merge(
            meshtrace_collector::telemetry::health_router(ctx.telemetry.clone()),
        );
        (http, grpc)
    }
}
