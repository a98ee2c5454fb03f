//! Jaeger's remote-sampling answer as JSON (`GET /api/sampling?service=S`):
//! the collector writes it, the filter reads it. Field names are Jaeger's
//! (the proto3 JSON mapping of `jaeger.api_v2.SamplingStrategyResponse`).

use serde::{Deserialize, Serialize};

/// `strategyType`: Jaeger writes the enum name; older agents wrote the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StrategyKind {
    #[default]
    Probabilistic,
    RateLimiting,
}

impl StrategyKind {
    /// Jaeger's enum name.
    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::Probabilistic => "PROBABILISTIC",
            StrategyKind::RateLimiting => "RATE_LIMITING",
        }
    }
}

impl Serialize for StrategyKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Reads the name or the number with a plain visitor (an untagged enum would
/// buffer the value and cost the filter's `.wasm` several kilobytes).
impl<'de> Deserialize<'de> for StrategyKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = StrategyKind;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("PROBABILISTIC, RATE_LIMITING, 0 or 1")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StrategyKind, E> {
                match v {
                    "PROBABILISTIC" => Ok(StrategyKind::Probabilistic),
                    "RATE_LIMITING" => Ok(StrategyKind::RateLimiting),
                    _ => Err(E::custom(format!("unknown strategyType {v:?}"))),
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<StrategyKind, E> {
                match v {
                    0 => Ok(StrategyKind::Probabilistic),
                    1 => Ok(StrategyKind::RateLimiting),
                    _ => Err(E::custom(format!("unknown strategyType {v}"))),
                }
            }
        }
        d.deserialize_any(Visitor)
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
