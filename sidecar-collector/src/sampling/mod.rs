//! Sampling strategies served to the filters and to Jaeger/OTel remote
//! samplers: a Jaeger strategies file, validated (a bad file at start-up
//! stops the collector before it binds a port), hot-reloaded on an interval
//! (a bad new file keeps the last good strategies, logs, and is counted),
//! served as Jaeger's `/api/sampling?service=S` JSON (:5778) and
//! `jaeger.api_v2.SamplingManager/GetSamplingStrategy` (gRPC, :5779).
//! Optional adaptive sampling overlays computed per-operation probabilities;
//! a sidecar serves what the central collector has, cached.

pub mod adaptive;
pub mod upstream;

use meshtrace_proto::jaeger::{
    OperationSamplingStrategy, PerOperationSamplingStrategies, ProbabilisticSamplingStrategy,
    RateLimitingSamplingStrategy, SamplingStrategyResponse, SamplingStrategyType,
};
use meshtrace_proto::strategy::{Sampler, StrategiesFile};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The strategies in force, and where they come from.
pub struct Strategies {
    current: RwLock<Arc<StrategiesFile>>,
    path: Option<PathBuf>,
    last_text: RwLock<String>,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

/// Reads and validates a strategies file; the error names the file and the field.
pub fn load(path: &std::path::Path) -> Result<(StrategiesFile, String), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("sampling strategies file {}: {e}", path.display()))?;
    let file = StrategiesFile::from_json(&text)
        .map_err(|e| format!("sampling strategies file {}: {e}", path.display()))?;
    Ok((file, text))
}

impl Strategies {
    /// Loads `path` (or Jaeger's default when none is configured).
    pub fn open(path: Option<PathBuf>) -> Result<Strategies, String> {
        let (file, text) = match &path {
            Some(p) => load(p)?,
            None => (StrategiesFile::default(), String::new()),
        };
        Ok(Strategies {
            current: RwLock::new(Arc::new(file)),
            path,
            last_text: RwLock::new(text),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        })
    }

    pub fn current(&self) -> Arc<StrategiesFile> {
        self.current
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Re-reads the file if it changed. A bad file keeps the last good strategies.
    pub fn reload(&self) {
        let Some(path) = &self.path else { return };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(path = %path.display(), error = %e, "cannot read strategies file; keeping the last good strategies");
                return;
            }
        };
        if self.last_text.read().is_ok_and(|t| *t == text) {
            return;
        }
        match StrategiesFile::from_json(&text) {
            Ok(file) => {
                if let Ok(mut c) = self.current.write() {
                    *c = Arc::new(file);
                }
                if let Ok(mut t) = self.last_text.write() {
                    *t = text;
                }
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(path = %path.display(), "sampling strategies reloaded");
            }
            Err(e) => {
                // Remember the bad text so the error is logged once per change.
                if let Ok(mut t) = self.last_text.write() {
                    *t = text;
                }
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(path = %path.display(), error = %e, "invalid strategies file; keeping the last good strategies");
            }
        }
    }

    /// Reloads every `interval` until the task is dropped.
    pub fn spawn_reloader(
        self: &Arc<Self>,
        interval: Duration,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.path.as_ref()?;
        let me = self.clone();
        Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let m = me.clone();
                let _ = tokio::task::spawn_blocking(move || m.reload()).await;
            }
        }))
    }
}

/// Jaeger's `SamplingStrategyResponse` for `service` from a strategies file.
/// A fractional `maxTracesPerSecond` rounds up (the wire type is an integer;
/// truncating 0.5 to 0 would sample nothing).
pub fn response(file: &StrategiesFile, service: &str) -> SamplingStrategyResponse {
    let s = file.for_service(service);
    let mut out = match s.default {
        Sampler::Probabilistic(p) => SamplingStrategyResponse {
            strategy_type: SamplingStrategyType::Probabilistic as i32,
            probabilistic_sampling: Some(ProbabilisticSamplingStrategy { sampling_rate: p }),
            ..Default::default()
        },
        Sampler::RateLimiting(r) => SamplingStrategyResponse {
            strategy_type: SamplingStrategyType::RateLimiting as i32,
            rate_limiting_sampling: Some(RateLimitingSamplingStrategy {
                max_traces_per_second: r.ceil().clamp(0.0, f64::from(i32::MAX)) as i32,
            }),
            ..Default::default()
        },
    };
    if !s.operations.is_empty() {
        let default_probability = match s.default {
            Sampler::Probabilistic(p) => p,
            Sampler::RateLimiting(_) => file
                .default_strategy
                .as_ref()
                .filter(|d| d.kind == meshtrace_proto::strategy::StrategyType::Probabilistic)
                .map_or(meshtrace_proto::strategy::JAEGER_DEFAULT_PROBABILITY, |d| {
                    d.param
                }),
        };
        out.operation_sampling = Some(PerOperationSamplingStrategies {
            default_sampling_probability: default_probability,
            default_lower_bound_traces_per_second: 0.0,
            default_upper_bound_traces_per_second: 0.0,
            per_operation_strategies: s
                .operations
                .iter()
                .map(|(op, p)| OperationSamplingStrategy {
                    operation: op.clone(),
                    probabilistic_sampling: Some(ProbabilisticSamplingStrategy {
                        sampling_rate: *p,
                    }),
                })
                .collect(),
        });
    }
    out
}

/// The response in Jaeger's JSON shape (what `/api/sampling` answers).
pub fn to_json(r: &SamplingStrategyResponse) -> Value {
    let mut out = if r.strategy_type == SamplingStrategyType::RateLimiting as i32 {
        json!({
            "strategyType": "RATE_LIMITING",
            "rateLimitingSampling": {"maxTracesPerSecond": r.rate_limiting_sampling.as_ref().map_or(0, |x| x.max_traces_per_second)},
        })
    } else {
        json!({
            "strategyType": "PROBABILISTIC",
            "probabilisticSampling": {"samplingRate": r.probabilistic_sampling.as_ref().map_or(0.0, |x| x.sampling_rate)},
        })
    };
    if let Some(o) = &r.operation_sampling {
        out["operationSampling"] = json!({
            "defaultSamplingProbability": o.default_sampling_probability,
            "defaultLowerBoundTracesPerSecond": o.default_lower_bound_traces_per_second,
            "defaultUpperBoundTracesPerSecond": o.default_upper_bound_traces_per_second,
            "perOperationStrategies": o.per_operation_strategies.iter().map(|s| json!({
                "operation": s.operation,
                "probabilisticSampling": {"samplingRate": s.probabilistic_sampling.as_ref().map_or(0.0, |x| x.sampling_rate)},
            })).collect::<Vec<_>>(),
        });
    }
    out
}

/// Where strategies come from.
pub enum Provider {
    /// The strategies file (or Jaeger's default), with adaptive probabilities on top.
    Local {
        strategies: Arc<Strategies>,
        adaptive: Option<Arc<adaptive::Adaptive>>,
    },
    /// Sidecar mode: the central collector's, cached.
    Upstream(Arc<upstream::UpstreamCache>),
}

impl Provider {
    pub async fn strategy(&self, service: &str) -> Result<SamplingStrategyResponse, String> {
        match self {
            Provider::Local {
                strategies,
                adaptive,
            } => {
                let base = response(&strategies.current(), service);
                Ok(match adaptive {
                    Some(a) => a.overlay(service, base),
                    None => base,
                })
            }
            Provider::Upstream(cache) => cache.get(service).await,
        }
    }

    /// Prometheus lines: reloads, adaptive probabilities, upstream fetches.
    pub fn metrics_text(&self) -> String {
        match self {
            Provider::Local {
                strategies,
                adaptive,
            } => {
                let mut out = metrics_text(strategies);
                if let Some(a) = adaptive {
                    out.push_str(&a.metrics_text());
                }
                out
            }
            Provider::Upstream(c) => format!(
                "# HELP meshtrace_collector_sampling_upstream_fetches_total Strategies fetched from the central collector.\n# TYPE meshtrace_collector_sampling_upstream_fetches_total counter\nmeshtrace_collector_sampling_upstream_fetches_total {}\n# HELP meshtrace_collector_sampling_upstream_failures_total Failed fetches from the central collector (the cached strategy stays).\n# TYPE meshtrace_collector_sampling_upstream_failures_total counter\nmeshtrace_collector_sampling_upstream_failures_total {}\n",
                c.fetches.load(Ordering::Relaxed),
                c.fetch_failures.load(Ordering::Relaxed)
            ),
        }
    }
}

/// `GET /api/sampling?service=S` and `GET /sampling?service=S` (the Jaeger agent's path),
/// and `GET /api/sampling/adaptive` (the adaptive estimates, JSON).
pub fn router(provider: Arc<Provider>) -> axum::Router {
    use axum::extract::{RawQuery, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    async fn handler(State(p): State<Arc<Provider>>, RawQuery(q): RawQuery) -> Response {
        let pairs = crate::query::pairs(q);
        let services: Vec<&String> = pairs
            .iter()
            .filter(|(k, _)| k == "service")
            .map(|(_, v)| v)
            .collect();
        match services.as_slice() {
            [s] if !s.is_empty() => match p.strategy(s).await {
                Ok(r) => axum::Json(to_json(&r)).into_response(),
                Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
            },
            _ => (
                StatusCode::BAD_REQUEST,
                "'service' parameter must be provided exactly once and not be empty\n",
            )
                .into_response(),
        }
    }
    async fn adaptive_handler(State(p): State<Arc<Provider>>) -> Response {
        match &*p {
            Provider::Local {
                adaptive: Some(a), ..
            } => axum::Json(json!({
                "targetTracesPerSecond": a.settings.target_traces_per_second,
                "operations": a.estimates().iter().map(|e| json!({
                    "service": e.service,
                    "operation": e.operation,
                    "probability": e.probability,
                    "requestsPerSecond": e.requests_per_second,
                })).collect::<Vec<_>>(),
            }))
            .into_response(),
            _ => (
                StatusCode::NOT_FOUND,
                "adaptive sampling is off here (sampling.adaptive.services is empty, or this is a sidecar)\n",
            )
                .into_response(),
        }
    }
    axum::Router::new()
        .route("/api/sampling", get(handler))
        .route("/sampling", get(handler))
        .route("/api/sampling/adaptive", get(adaptive_handler))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(provider)
}

/// `jaeger.api_v2.SamplingManager/GetSamplingStrategy`.
pub struct GrpcSampling(pub Arc<Provider>);

impl crate::grpc_unary::UnaryHandler for GrpcSampling {
    const SERVICE: &'static str = meshtrace_proto::jaeger::SAMPLING_MANAGER;
    const PATH: &'static str = meshtrace_proto::jaeger::GET_SAMPLING_STRATEGY_PATH;
    type Response = SamplingStrategyResponse;

    fn call(
        self: Arc<Self>,
        message: bytes::Bytes,
    ) -> tonic::codegen::BoxFuture<SamplingStrategyResponse, tonic::Status> {
        Box::pin(async move {
            use prost::Message;
            let params = meshtrace_proto::jaeger::SamplingStrategyParameters::decode(message)
                .map_err(|e| {
                    tonic::Status::invalid_argument(format!(
                        "malformed SamplingStrategyParameters: {e}"
                    ))
                })?;
            if params.service_name.is_empty() {
                return Err(tonic::Status::invalid_argument(
                    "serviceName must not be empty",
                ));
            }
            self.0
                .strategy(&params.service_name)
                .await
                .map_err(tonic::Status::unavailable)
        })
    }
}

/// Prometheus lines for the reload counters.
pub fn metrics_text(s: &Strategies) -> String {
    format!(
        "# HELP meshtrace_collector_sampling_reloads_total Strategies file reloads that took effect.\n# TYPE meshtrace_collector_sampling_reloads_total counter\nmeshtrace_collector_sampling_reloads_total {}\n# HELP meshtrace_collector_sampling_reload_failures_total Strategies file reloads refused (invalid or unreadable); the last good strategies stay.\n# TYPE meshtrace_collector_sampling_reload_failures_total counter\nmeshtrace_collector_sampling_reload_failures_total {}\n",
        s.reloads.load(Ordering::Relaxed),
        s.reload_failures.load(Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response_json(file: &StrategiesFile, service: &str) -> Value {
        to_json(&response(file, service))
    }

    #[test]
    fn jaeger_response_shapes() {
        let f = StrategiesFile::from_json(
            r#"{"default_strategy":{"type":"probabilistic","param":0.5},
                "service_strategies":[
                  {"service":"a","type":"probabilistic","param":0.8,
                   "operation_strategies":[{"operation":"op1","type":"probabilistic","param":0.2}]},
                  {"service":"b","type":"ratelimiting","param":5}]}"#,
        )
        .unwrap();
        let a = response_json(&f, "a");
        assert_eq!(a["strategyType"], "PROBABILISTIC");
        assert_eq!(a["probabilisticSampling"]["samplingRate"], 0.8);
        assert_eq!(a["operationSampling"]["defaultSamplingProbability"], 0.8);
        assert_eq!(
            a["operationSampling"]["perOperationStrategies"][0]["operation"],
            "op1"
        );
        assert_eq!(
            a["operationSampling"]["perOperationStrategies"][0]["probabilisticSampling"]
                ["samplingRate"],
            0.2
        );
        let b = response_json(&f, "b");
        assert_eq!(b["strategyType"], "RATE_LIMITING");
        assert_eq!(b["rateLimitingSampling"]["maxTracesPerSecond"], 5);
        assert!(b.get("operationSampling").is_none());
        let half = StrategiesFile::from_json(
            r#"{"default_strategy":{"type":"ratelimiting","param":0.5}}"#,
        )
        .unwrap();
        assert_eq!(
            response_json(&half, "x")["rateLimitingSampling"]["maxTracesPerSecond"],
            1,
            "a fractional rate rounds up (an integer on the wire; 0 would sample nothing)"
        );
        let other = response_json(&f, "zzz");
        assert_eq!(other["probabilisticSampling"]["samplingRate"], 0.5);
        let none = response_json(&StrategiesFile::default(), "x");
        assert_eq!(
            none["probabilisticSampling"]["samplingRate"], 0.001,
            "Jaeger's default"
        );
    }
}
