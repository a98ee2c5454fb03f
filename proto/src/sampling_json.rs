//! Jaeger's remote-sampling answer as JSON (`GET /api/sampling?service=S`):
//! the collector writes it, the filter reads it. Field names are Jaeger's
//! (the proto3 JSON mapping of `jaeger.api_v2.SamplingStrategyResponse`).

use serde::{Deserialize, Serialize};

/// `strategyType`: Jaeger writes the enum name; older agents wrote the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(try_from = "StrategyTypeWire", into = "&'static str")]
pub enum StrategyKind {
    #[default]
    Probabilistic,
    RateLimiting,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StrategyTypeWire {
    Name(String),
    Number(u64),
}

impl TryFrom<StrategyTypeWire> for StrategyKind {
    type Error = String;
    fn try_from(w: StrategyTypeWire) -> Result<Self, String> {
        match w {
            StrategyTypeWire::Name(n) if n == "PROBABILISTIC" => Ok(StrategyKind::Probabilistic),
            StrategyTypeWire::Name(n) if n == "RATE_LIMITING" => Ok(StrategyKind::RateLimiting),
            StrategyTypeWire::Number(0) => Ok(StrategyKind::Probabilistic),
            StrategyTypeWire::Number(1) => Ok(StrategyKind::RateLimiting),
            StrategyTypeWire::Name(n) => Err(format!("unknown strategyType {n:?}")),
            StrategyTypeWire::Number(n) => Err(format!("unknown strategyType {n}")),
        }
    }
}

impl From<StrategyKind> for &'static str {
    fn from(k: StrategyKind) -> &'static str {
        match k {
            StrategyKind::Probabilistic => "PROBABILISTIC",
            StrategyKind::RateLimiting => "RATE_LIMITING",
        }
    }
}

/// `probabilisticSampling`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probabilistic {
    pub sampling_rate: f64,
}

/// `rateLimitingSampling`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimiting {
    /// An integer on Jaeger's wire (written as one: Go clients read it into an
    /// int32); read as any number so `2.5` from a hand-written server still parses.
    #[serde(serialize_with = "whole_as_integer")]
    pub max_traces_per_second: f64,
}

fn whole_as_integer<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

/// One entry of `perOperationStrategies`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationStrategy {
    pub operation: String,
    pub probabilistic_sampling: Probabilistic,
}

/// `operationSampling`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationSampling {
    #[serde(default)]
    pub default_sampling_probability: Option<f64>,
    #[serde(default)]
    pub default_lower_bound_traces_per_second: f64,
    #[serde(default)]
    pub default_upper_bound_traces_per_second: f64,
    #[serde(default)]
    pub per_operation_strategies: Vec<OperationStrategy>,
}

/// The whole answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct StrategyResponse {
    #[serde(default)]
    pub strategy_type: StrategyKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probabilistic_sampling: Option<Probabilistic>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiting_sampling: Option<RateLimiting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_sampling: Option<OperationSampling>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_both_enum_forms() {
        let text = r#"{"strategyType":"PROBABILISTIC","probabilisticSampling":{"samplingRate":0.2},"operationSampling":{"defaultSamplingProbability":0.2,"defaultLowerBoundTracesPerSecond":0.0,"defaultUpperBoundTracesPerSecond":0.0,"perOperationStrategies":[{"operation":"GET /a","probabilisticSampling":{"samplingRate":0.05}}]}}"#;
        let r: StrategyResponse = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), text);
        let rl =
            r#"{"strategyType":"RATE_LIMITING","rateLimitingSampling":{"maxTracesPerSecond":5}}"#;
        let r: StrategyResponse = serde_json::from_str(rl).unwrap();
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            rl,
            "an integer, as Go clients expect"
        );
        let n: StrategyResponse = serde_json::from_str(r#"{"strategyType":1}"#).unwrap();
        assert_eq!(n.strategy_type, StrategyKind::RateLimiting);
        let e = serde_json::from_str::<StrategyResponse>(r#"{"strategyType":"SOMETIMES"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown strategyType"), "{e}");
    }
}
