//! Sidecar mode: strategies come from the central collector's
//! `SamplingManager` (gRPC), cached here so that the filters only ever talk to
//! 127.0.0.1. A service is fetched on its first request, then refreshed on an
//! interval while it keeps being asked for; when the central collector is
//! unreachable the cached strategy keeps being served. The cache is bounded
//! (the least recently asked name goes first) and a name nobody asked for in
//! three intervals is forgotten, so refreshes stay proportional to what the
//! pod's filters really ask.

use crate::grpc::sampling::sampling_manager_client::SamplingManagerClient;
use crate::telemetry::SamplingMetrics;
use meshtrace_proto::jaeger::{SamplingStrategyParameters, SamplingStrategyResponse};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

struct Entry {
    response: SamplingStrategyResponse,
    last_asked: Instant,
}

pub struct UpstreamCache {
    channel: Channel,
    /// `Authorization: Bearer` sent with every fetch.
    token: Option<MetadataValue<Ascii>>,
    pub upstream: String,
    entries: Mutex<HashMap<String, Entry>>,
    pub refresh: Duration,
    metrics: Arc<SamplingMetrics>,
}

/// Services not asked for in this many refresh intervals stop being refreshed.
const FORGET_AFTER_INTERVALS: u32 = 3;
/// Services cached at most (a pod's filters ask for one or two).
pub const MAX_CACHED: usize = 256;

impl UpstreamCache {
    pub fn new(
        upstream: &str,
        refresh: Duration,
        timeout: Duration,
        tls: Option<ClientTlsConfig>,
        token: Option<MetadataValue<Ascii>>,
        metrics: Arc<SamplingMetrics>,
    ) -> Result<Self, String> {
        let mut endpoint = Endpoint::from_shared(upstream.to_string())
            .map_err(|e| format!("sampling.upstream: {upstream:?}: {e}"))?
            .connect_timeout(timeout)
            .timeout(timeout);
        if let Some(tls) = tls {
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| format!("sidecar.ca_file: {e}"))?;
        }
        let channel = endpoint.connect_lazy();
        Ok(UpstreamCache {
            token,
            channel,
            upstream: upstream.to_string(),
            entries: Mutex::new(HashMap::new()),
            refresh,
            metrics,
        })
    }

    async fn fetch(&self, service: &str) -> Result<SamplingStrategyResponse, String> {
        let mut request = tonic::Request::new(SamplingStrategyParameters {
            service_name: service.to_string(),
        });
        if let Some(t) = &self.token {
            request.metadata_mut().insert("authorization", t.clone());
        }
        let result = SamplingManagerClient::new(self.channel.clone())
            .get_sampling_strategy(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| format!("central collector {}: {}", self.upstream, s.message()));
        match &result {
            Ok(_) => self.metrics.upstream_fetches.inc(),
            Err(_) => self.metrics.upstream_failures.inc(),
        };
        result
    }

    /// The cached strategy, or one fetched now on a first request.
    pub async fn get(&self, service: &str) -> Result<SamplingStrategyResponse, String> {
        if let Ok(mut m) = self.entries.lock() {
            if let Some(e) = m.get_mut(service) {
                e.last_asked = Instant::now();
                return Ok(e.response.clone());
            }
        }
        let response = self.fetch(service).await?;
        if let Ok(mut m) = self.entries.lock() {
            while m.len() >= MAX_CACHED {
                let Some(oldest) = m
                    .iter()
                    .min_by_key(|(_, e)| e.last_asked)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                m.remove(&oldest);
            }
            m.insert(
                service.to_string(),
                Entry {
                    response: response.clone(),
                    last_asked: Instant::now(),
                },
            );
        }
        Ok(response)
    }

    /// Refreshes every cached service each interval; failures keep the cache.
    pub fn spawn_refresher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(me.refresh).await;
                let services: Vec<String> = me.entries.lock().map_or_else(
                    |_| Vec::new(),
                    |mut m| {
                        m.retain(|_, e| {
                            e.last_asked.elapsed() < me.refresh * FORGET_AFTER_INTERVALS
                        });
                        m.keys().cloned().collect()
                    },
                );
                for s in services {
                    match me.fetch(&s).await {
                        Ok(r) => {
                            if let Ok(mut m) = me.entries.lock() {
                                if let Some(e) = m.get_mut(&s) {
                                    e.response = r;
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(service = %s, error = %e, "strategy refresh failed; serving the cached one")
                        }
                    }
                }
            }
        })
    }
}
