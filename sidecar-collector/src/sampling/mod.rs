//! Sampling strategies served to the filters and to Jaeger/OTel remote
//! samplers: a Jaeger strategies file, validated (a bad file at start-up
//! stops the collector before it binds a port), hot-reloaded on an interval
//! (a bad new file keeps the last good strategies, logs, and is counted),
//! served as Jaeger's `/api/sampling?service=S` JSON.

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

/// Jaeger's `SamplingStrategyResponse` JSON for `service`.
pub fn response_json(file: &StrategiesFile, service: &str) -> Value {
    let s = file.for_service(service);
    let mut out = match s.default {
        Sampler::Probabilistic(p) => json!({
            "strategyType": "PROBABILISTIC",
            "probabilisticSampling": {"samplingRate": p},
        }),
        Sampler::RateLimiting(r) => json!({
            "strategyType": "RATE_LIMITING",
            "rateLimitingSampling": {"maxTracesPerSecond": r},
        }),
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
        out["operationSampling"] = json!({
            "defaultSamplingProbability": default_probability,
            "defaultLowerBoundTracesPerSecond": 0.0,
            "defaultUpperBoundTracesPerSecond": 0.0,
            "perOperationStrategies": s.operations.iter().map(|(op, p)| json!({
                "operation": op,
                "probabilisticSampling": {"samplingRate": p},
            })).collect::<Vec<_>>(),
        });
    }
    out
}

/// `GET /api/sampling?service=S` and `GET /sampling?service=S` (the Jaeger agent's path).
pub fn router(strategies: Arc<Strategies>) -> axum::Router {
    use axum::extract::{RawQuery, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    async fn handler(State(st): State<Arc<Strategies>>, RawQuery(q): RawQuery) -> Response {
        let pairs = crate::query::pairs(q);
        let services: Vec<&String> = pairs
            .iter()
            .filter(|(k, _)| k == "service")
            .map(|(_, v)| v)
            .collect();
        match services.as_slice() {
            [s] if !s.is_empty() => axum::Json(response_json(&st.current(), s)).into_response(),
            _ => (
                StatusCode::BAD_REQUEST,
                "'service' parameter must be provided exactly once and not be empty\n",
            )
                .into_response(),
        }
    }
    axum::Router::new()
        .route("/api/sampling", get(handler))
        .route("/sampling", get(handler))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(strategies)
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
        assert_eq!(b["rateLimitingSampling"]["maxTracesPerSecond"], 5.0);
        assert!(b.get("operationSampling").is_none());
        let other = response_json(&f, "zzz");
        assert_eq!(other["probabilisticSampling"]["samplingRate"], 0.5);
        let none = response_json(&StrategiesFile::default(), "x");
        assert_eq!(
            none["probabilisticSampling"]["samplingRate"], 0.001,
            "Jaeger's default"
        );
    }
}
