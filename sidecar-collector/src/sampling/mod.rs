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

use crate::grpc::sampling::sampling_manager_server::{SamplingManager, SamplingManagerServer};
use crate::telemetry::{OperationLabels, SamplingMetrics};
use meshtrace_proto::jaeger::{
    OperationSamplingStrategy, PerOperationSamplingStrategies, ProbabilisticSamplingStrategy,
    RateLimitingSamplingStrategy, SamplingStrategyParameters, SamplingStrategyResponse,
    SamplingStrategyType,
};
use meshtrace_proto::sampling_json::StrategyResponse;
use meshtrace_proto::strategy::{Sampler, ServiceSampling, StrategiesFile};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The strategies in force, and where they come from.
pub struct Strategies {
    current: RwLock<Arc<StrategiesFile>>,
    path: Option<PathBuf>,
    last_text: RwLock<String>,
    metrics: Arc<SamplingMetrics>,
    /// What changed when (newest last), at most `MAX_CHANGES`.
    changes: std::sync::Mutex<std::collections::VecDeque<Change>>,
}

/// One entry of the strategies' change log.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    pub at_unix_ms: u64,
    pub what: String,
}

/// Change-log entries kept.
const MAX_CHANGES: usize = 100;

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn sampler_text(s: Sampler) -> String {
    match s {
        Sampler::Probabilistic(p) => format!("probabilistic {p}"),
        Sampler::RateLimiting(r) => format!("ratelimiting {r}/s"),
    }
}

/// What differs between two strategies files, one line per service or operation.
pub fn describe_changes(old: &StrategiesFile, new: &StrategiesFile) -> Vec<String> {
    let names = |f: &StrategiesFile| -> std::collections::BTreeSet<String> {
        f.service_strategies
            .iter()
            .map(|s| s.service.clone())
            .chain(
                f.operation_strategies
                    .iter()
                    .filter_map(|o| o.service.clone()),
            )
            .collect()
    };
    let mut out = Vec::new();
    let (a, b) = (old.for_service(""), new.for_service(""));
    if a != b {
        out.push(format!(
            "default strategy: {} → {}",
            sampler_text(a.default),
            sampler_text(b.default)
        ));
    }
    for svc in names(old).union(&names(new)) {
        let (a, b) = (old.for_service(svc), new.for_service(svc));
        if a.default != b.default {
            out.push(format!(
                "{svc}: {} → {}",
                sampler_text(a.default),
                sampler_text(b.default)
            ));
        }
        for op in a
            .operations
            .keys()
            .chain(b.operations.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            match (a.operations.get(op), b.operations.get(op)) {
                (Some(x), Some(y)) if x != y => out.push(format!("{svc} {op}: {x} → {y}")),
                (Some(x), None) => out.push(format!("{svc} {op}: {x} → removed")),
                (None, Some(y)) => out.push(format!("{svc} {op}: added, {y}")),
                _ => {}
            }
        }
    }
    out
}

/// Shows the configured probabilities on `/metrics` (what the dashboard sets
/// against the effective probability of the spans stored).
fn publish(file: &StrategiesFile, metrics: &SamplingMetrics) {
    let g = &metrics.configured_probability;
    g.clear();
    let set = |service: &str, sampling: ServiceSampling| {
        if let Sampler::Probabilistic(p) = sampling.default {
            g.get_or_create(&OperationLabels {
                service: service.into(),
                operation: String::new(),
            })
            .set(p);
        }
        for (operation, p) in sampling.operations {
            g.get_or_create(&OperationLabels {
                service: service.into(),
                operation,
            })
            .set(p);
        }
    };
    // A service no entry names gets the default strategy: what for_service gives a
    // name no service can have (service names are never empty).
    set("*", file.for_service(""));
    let named = file
        .service_strategies
        .iter()
        .map(|s| s.service.as_str())
        .chain(
            file.operation_strategies
                .iter()
                .filter_map(|o| o.service.as_deref()),
        );
    for service in named.collect::<std::collections::BTreeSet<_>>() {
        set(service, file.for_service(service));
    }
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
    pub fn open(
        path: Option<PathBuf>,
        metrics: Arc<SamplingMetrics>,
    ) -> Result<Strategies, String> {
        let (file, text) = match &path {
            Some(p) => load(p)?,
            None => (StrategiesFile::default(), String::new()),
        };
        publish(&file, &metrics);
        let first = Change {
            at_unix_ms: unix_ms(),
            what: match &path {
                Some(p) => format!(
                    "loaded {} ({} service strategies)",
                    p.display(),
                    file.service_strategies.len()
                ),
                None => "no strategies file: Jaeger's default (probabilistic 0.001)".into(),
            },
        };
        Ok(Strategies {
            current: RwLock::new(Arc::new(file)),
            path,
            last_text: RwLock::new(text),
            metrics,
            changes: std::sync::Mutex::new(std::collections::VecDeque::from([first])),
        })
    }

    /// The change log, oldest first.
    pub fn changes(&self) -> Vec<Change> {
        self.changes
            .lock()
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn note(&self, what: String) {
        if let Ok(mut c) = self.changes.lock() {
            if c.len() >= MAX_CHANGES {
                c.pop_front();
            }
            c.push_back(Change {
                at_unix_ms: unix_ms(),
                what,
            });
        }
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
                self.metrics.reload_failures.inc();
                tracing::error!(path = %path.display(), error = %e, "cannot read strategies file; keeping the last good strategies");
                return;
            }
        };
        if self.last_text.read().is_ok_and(|t| *t == text) {
            return;
        }
        match StrategiesFile::from_json(&text) {
            Ok(file) => {
                publish(&file, &self.metrics);
                let changed = describe_changes(&self.current(), &file);
                self.note(if changed.is_empty() {
                    "reloaded: no strategy changed".into()
                } else {
                    format!("reloaded: {}", changed.join("; "))
                });
                if let Ok(mut c) = self.current.write() {
                    *c = Arc::new(file);
                }
                if let Ok(mut t) = self.last_text.write() {
                    *t = text;
                }
                self.metrics.reloads.inc();
                tracing::info!(path = %path.display(), "sampling strategies reloaded");
            }
            Err(e) => {
                // Remember the bad text so the error is logged once per change.
                if let Ok(mut t) = self.last_text.write() {
                    *t = text;
                }
                self.metrics.reload_failures.inc();
                self.note(format!(
                    "refused an invalid file ({e}); the last good strategies stay"
                ));
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
pub fn to_json(r: &SamplingStrategyResponse) -> StrategyResponse {
    StrategyResponse::from(r)
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
    /// The strategies' change log (sidecars have none: the central collector keeps it).
    pub fn changes(&self) -> Vec<Change> {
        match self {
            Provider::Local {
                strategies,
                adaptive,
            } => {
                let mut all = strategies.changes();
                if let Some(a) = adaptive {
                    all.extend(a.changes());
                }
                all.sort_by_key(|c| c.at_unix_ms);
                all
            }
            Provider::Upstream(_) => Vec::new(),
        }
    }

    /// Whether adaptive sampling sets this service's probabilities.
    pub fn adaptive_for(&self, service: &str) -> bool {
        matches!(self, Provider::Local { adaptive: Some(a), .. } if a.applies_to(service))
    }

    /// The strategy this collector sets for `service` itself (`None` when it
    /// forwards to an upstream's): computed in place, no waiting.
    pub fn local_strategy(&self, service: &str) -> Option<SamplingStrategyResponse> {
        match self {
            Provider::Local {
                strategies,
                adaptive,
            } => {
                let base = response(&strategies.current(), service);
                Some(match adaptive {
                    Some(a) => a.overlay(service, base),
                    None => base,
                })
            }
            Provider::Upstream(_) => None,
        }
    }

    pub async fn strategy(&self, service: &str) -> Result<SamplingStrategyResponse, String> {
        match self {
            Provider::Upstream(cache) => cache.get(service).await,
            local => local
                .local_strategy(service)
                .ok_or_else(|| "no local strategies".to_string()),
        }
    }
}

/// `GET /api/sampling?service=S` and `GET /sampling?service=S` (the Jaeger agent's path),
/// and `GET /api/sampling/adaptive` (the adaptive estimates, JSON).
pub fn router(provider: Arc<Provider>) -> axum::Router {
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use axum_extra::extract::Query;

    #[derive(serde::Deserialize)]
    struct Params {
        #[serde(default)]
        service: Vec<String>,
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct AdaptiveOperation<'a> {
        service: &'a str,
        operation: &'a str,
        probability: f64,
        requests_per_second: f64,
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct AdaptiveAnswer<'a> {
        target_traces_per_second: f64,
        operations: Vec<AdaptiveOperation<'a>>,
    }

    async fn handler(State(p): State<Arc<Provider>>, Query(q): Query<Params>) -> Response {
        match q.service.as_slice() {
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
            } => {
                let estimates = a.estimates();
                axum::Json(AdaptiveAnswer {
                    target_traces_per_second: a.settings.target_traces_per_second,
                    operations: estimates
                        .iter()
                        .map(|e| AdaptiveOperation {
                            service: &e.service,
                            operation: &e.operation,
                            probability: e.probability,
                            requests_per_second: e.requests_per_second,
                        })
                        .collect(),
                })
                .into_response()
            }
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
        .with_state(provider)
}

/// `jaeger.api_v2.SamplingManager/GetSamplingStrategy`.
pub struct GrpcSampling(pub Arc<Provider>);

#[tonic::async_trait]
impl SamplingManager for GrpcSampling {
    async fn get_sampling_strategy(
        &self,
        request: tonic::Request<SamplingStrategyParameters>,
    ) -> Result<tonic::Response<SamplingStrategyResponse>, tonic::Status> {
        let params = request.into_inner();
        if params.service_name.is_empty() {
            return Err(tonic::Status::invalid_argument(
                "serviceName must not be empty",
            ));
        }
        self.0
            .strategy(&params.service_name)
            .await
            .map(tonic::Response::new)
            .map_err(tonic::Status::unavailable)
    }
}

/// The gRPC service; requests are a service name, so 64 KiB is plenty.
pub fn grpc_service(provider: Arc<Provider>) -> SamplingManagerServer<GrpcSampling> {
    SamplingManagerServer::new(GrpcSampling(provider)).max_decoding_message_size(64 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response_json(file: &StrategiesFile, service: &str) -> serde_json::Value {
        serde_json::to_value(to_json(&response(file, service))).unwrap()
    }

    #[test]
    fn changes_are_described_per_service_and_operation() {
        let a = StrategiesFile::from_json(
            r#"{"default_strategy":{"type":"probabilistic","param":0.1},
                "service_strategies":[{"service":"f","type":"probabilistic","param":0.5,
                  "operation_strategies":[{"operation":"GET /x","type":"probabilistic","param":1.0}]}]}"#,
        )
        .unwrap();
        let b = StrategiesFile::from_json(
            r#"{"default_strategy":{"type":"probabilistic","param":0.1},
                "service_strategies":[{"service":"f","type":"probabilistic","param":0.25},
                  {"service":"g","type":"ratelimiting","param":5}]}"#,
        )
        .unwrap();
        assert_eq!(
            describe_changes(&a, &b),
            vec![
                "f: probabilistic 0.5 → probabilistic 0.25",
                "f GET /x: 1 → removed",
                "g: probabilistic 0.1 → ratelimiting 5/s",
            ]
        );
        assert!(describe_changes(&a, &a).is_empty());
    }

    #[test]
    fn configured_probabilities_are_published_per_service_and_operation() {
        let f = StrategiesFile::from_json(
            r#"{"default_strategy":{"type":"probabilistic","param":0.1},
                "service_strategies":[
                  {"service":"a","type":"probabilistic","param":0.5,
                   "operation_strategies":[{"operation":"GET /x","type":"probabilistic","param":1.0}]},
                  {"service":"r","type":"ratelimiting","param":5}],
                "operation_strategies":[{"service":"flat","operation":"op","type":"probabilistic","param":0.25}]}"#,
        )
        .unwrap();
        let m = SamplingMetrics::default();
        publish(&f, &m);
        let p = |service: &str, operation: &str| {
            m.configured_probability
                .get(&OperationLabels {
                    service: service.into(),
                    operation: operation.into(),
                })
                .map(|g| g.get())
        };
        assert_eq!(p("*", ""), Some(0.1));
        assert_eq!(p("a", ""), Some(0.5));
        assert_eq!(p("a", "GET /x"), Some(1.0));
        assert_eq!(p("r", ""), None, "a rate limit is not a probability");
        assert_eq!(p("flat", ""), Some(0.1));
        assert_eq!(p("flat", "op"), Some(0.25));
        // A reload replaces them all.
        publish(&StrategiesFile::default(), &m);
        assert_eq!(p("a", ""), None);
        assert_eq!(
            p("*", ""),
            Some(meshtrace_proto::strategy::JAEGER_DEFAULT_PROBABILITY)
        );
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
