//! Jaeger's sampling-strategies file, its validation and its merge rules.
//!
//! Accepts Jaeger's own layout (operation strategies nested inside a service
//! or the default strategy) and the flat layout of the seed document (a
//! top-level `operation_strategies` list whose entries name their `service`).
//!
//! Merge rules (Jaeger's static strategy store):
//! - a service's own `type`/`param` win over `default_strategy`;
//! - operation strategies are probabilistic only;
//! - a service inherits the default strategy's operation strategies, and its
//!   own entries win on conflict.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The strategy kinds of Jaeger's file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StrategyType {
    Probabilistic,
    Ratelimiting,
}

/// An operation entry, nested in a service (no `service`) or top-level (with `service`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationStrategy {
    /// Only in the flat, top-level form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub operation: String,
    #[serde(rename = "type")]
    pub kind: StrategyType,
    pub param: f64,
}

/// `default_strategy`: a type/param and optional operation strategies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultStrategy {
    #[serde(rename = "type")]
    pub kind: StrategyType,
    pub param: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operation_strategies: Vec<OperationStrategy>,
}

/// One entry of `service_strategies`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceStrategy {
    pub service: String,
    #[serde(rename = "type")]
    pub kind: StrategyType,
    pub param: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operation_strategies: Vec<OperationStrategy>,
}

/// The whole strategies file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategiesFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_strategy: Option<DefaultStrategy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_strategies: Vec<ServiceStrategy>,
    /// The seed document's flat form: entries carry `service`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operation_strategies: Vec<OperationStrategy>,
}

/// A strategy problem, with the path of the offending field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct StrategyError {
    pub path: String,
    pub message: String,
}

/// The sampler that applies when no operation strategy matches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    /// Sample with this probability, in [0, 1].
    Probabilistic(f64),
    /// At most this many new traces per second.
    RateLimiting(f64),
}

/// The effective sampling for one service after the merge rules.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSampling {
    pub default: Sampler,
    /// Operation name → probability.
    pub operations: BTreeMap<String, f64>,
}

/// Jaeger's built-in default when a file has no `default_strategy`.
pub const JAEGER_DEFAULT_PROBABILITY: f64 = 0.001;

fn check_probability(path: &str, param: f64) -> Result<(), StrategyError> {
    if param.is_finite() && (0.0..=1.0).contains(&param) {
        return Ok(());
    }
    let hint = if param.is_finite() && param > 1.0 && param <= 100.0 {
        format!(
            "; it looks like a percentage: write {} for {}%",
            param / 100.0,
            param
        )
    } else {
        String::new()
    };
    Err(StrategyError {
        path: path.to_string(),
        message: format!(
            "probabilistic param {param} is outside [0, 1] (a fraction, not a percentage){hint}"
        ),
    })
}

fn check_rate(path: &str, param: f64) -> Result<(), StrategyError> {
    if param.is_finite() && param >= 0.0 {
        return Ok(());
    }
    Err(StrategyError {
        path: path.to_string(),
        message: format!("ratelimiting param {param} must be a number of traces per second >= 0"),
    })
}

fn check(path: &str, kind: StrategyType, param: f64) -> Result<(), StrategyError> {
    match kind {
        StrategyType::Probabilistic => check_probability(&format!("{path}.param"), param),
        StrategyType::Ratelimiting => check_rate(&format!("{path}.param"), param),
    }
}

fn check_operation(path: &str, op: &OperationStrategy) -> Result<(), StrategyError> {
    if op.operation.is_empty() {
        return Err(StrategyError {
            path: format!("{path}.operation"),
            message: "operation name is empty".into(),
        });
    }
    if op.kind != StrategyType::Probabilistic {
        return Err(StrategyError {
            path: format!("{path}.type"),
            message: format!(
                "operation strategies must be probabilistic (operation {:?})",
                op.operation
            ),
        });
    }
    check_probability(&format!("{path}.param"), op.param)
}

impl StrategiesFile {
    /// Parses JSON and validates it; errors name the field.
    pub fn from_json(text: &str) -> Result<Self, StrategyError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let file: StrategiesFile =
            serde::Deserialize::deserialize(&mut de).map_err(|e| StrategyError {
                path: "strategies".into(),
                message: e.to_string(),
            })?;
        file.validate("")?;
        Ok(file)
    }

    /// Checks every param and name. `prefix` is prepended to error paths.
    pub fn validate(&self, prefix: &str) -> Result<(), StrategyError> {
        let p = |s: &str| {
            if prefix.is_empty() {
                s.to_string()
            } else {
                format!("{prefix}.{s}")
            }
        };
        if let Some(d) = &self.default_strategy {
            check(&p("default_strategy"), d.kind, d.param)?;
            for (i, op) in d.operation_strategies.iter().enumerate() {
                check_operation(
                    &p(&format!("default_strategy.operation_strategies[{i}]")),
                    op,
                )?;
            }
        }
        for (i, s) in self.service_strategies.iter().enumerate() {
            let sp = p(&format!("service_strategies[{i}]"));
            if s.service.is_empty() {
                return Err(StrategyError {
                    path: format!("{sp}.service"),
                    message: "service name is empty".into(),
                });
            }
            check(&format!("{sp} (service {:?})", s.service), s.kind, s.param)?;
            for (j, op) in s.operation_strategies.iter().enumerate() {
                check_operation(
                    &format!("{sp}.operation_strategies[{j}] (service {:?})", s.service),
                    op,
                )?;
            }
        }
        for (i, op) in self.operation_strategies.iter().enumerate() {
            let path = p(&format!("operation_strategies[{i}]"));
            if op.service.as_deref().unwrap_or("").is_empty() {
                return Err(StrategyError {
                    path: format!("{path}.service"),
                    message: "a top-level operation strategy must name its service".into(),
                });
            }
            check_operation(
                &format!("{path} (service {:?})", op.service.as_deref().unwrap_or("")),
                op,
            )?;
        }
        Ok(())
    }

    /// The effective strategy of `service` under Jaeger's merge rules.
    pub fn for_service(&self, service: &str) -> ServiceSampling {
        let own = self
            .service_strategies
            .iter()
            .find(|s| s.service == service);
        let default = match (own, &self.default_strategy) {
            (Some(s), _) => to_sampler(s.kind, s.param),
            (None, Some(d)) => to_sampler(d.kind, d.param),
            (None, None) => Sampler::Probabilistic(JAEGER_DEFAULT_PROBABILITY),
        };
        let mut operations = BTreeMap::new();
        if let Some(d) = &self.default_strategy {
            for op in &d.operation_strategies {
                operations.insert(op.operation.clone(), op.param);
            }
        }
        if let Some(s) = own {
            for op in &s.operation_strategies {
                operations.insert(op.operation.clone(), op.param);
            }
        }
        for op in &self.operation_strategies {
            if op.service.as_deref() == Some(service) {
                operations.insert(op.operation.clone(), op.param);
            }
        }
        ServiceSampling {
            default,
            operations,
        }
    }
}

fn to_sampler(kind: StrategyType, param: f64) -> Sampler {
    match kind {
        StrategyType::Probabilistic => Sampler::Probabilistic(param),
        StrategyType::Ratelimiting => Sampler::RateLimiting(param),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAEGER_EXAMPLE: &str = r#"{
      "service_strategies": [
        {"service": "foo", "type": "probabilistic", "param": 0.8,
         "operation_strategies": [{"operation": "op1", "type": "probabilistic", "param": 0.2}]},
        {"service": "bar", "type": "ratelimiting", "param": 5}
      ],
      "default_strategy": {"type": "probabilistic", "param": 0.5,
        "operation_strategies": [
          {"operation": "/health", "type": "probabilistic", "param": 0.0},
          {"operation": "op1", "type": "probabilistic", "param": 0.9}]}
    }"#;

    #[test]
    fn jaeger_merge_rules() {
        let f = StrategiesFile::from_json(JAEGER_EXAMPLE).unwrap();
        let foo = f.for_service("foo");
        assert_eq!(
            foo.default,
            Sampler::Probabilistic(0.8),
            "service param wins"
        );
        assert_eq!(foo.operations["op1"], 0.2, "service op wins on conflict");
        assert_eq!(foo.operations["/health"], 0.0, "inherits default ops");
        let bar = f.for_service("bar");
        assert_eq!(bar.default, Sampler::RateLimiting(5.0));
        let other = f.for_service("other");
        assert_eq!(
            other.default,
            Sampler::Probabilistic(0.5),
            "falls back to default"
        );
        assert_eq!(other.operations.len(), 2);
    }

    #[test]
    fn flat_seed_form_is_accepted() {
        let f = StrategiesFile::from_json(
            r#"{"service_strategies":[{"service":"a","type":"probabilistic","param":0.1}],
                "operation_strategies":[{"service":"a","operation":"POST /api/v1/memory","type":"probabilistic","param":0.5}]}"#,
        )
        .unwrap();
        let a = f.for_service("a");
        assert_eq!(a.operations["POST /api/v1/memory"], 0.5);
        assert!(f.for_service("b").operations.is_empty());
        assert_eq!(
            f.for_service("b").default,
            Sampler::Probabilistic(JAEGER_DEFAULT_PROBABILITY)
        );
    }

    #[test]
    fn seed_percentage_param_is_rejected_with_hint() {
        let err = StrategiesFile::from_json(
            r#"{"service_strategies":[{"service":"machine-native-ops","type":"probabilistic","param":10}]}"#,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("machine-native-ops"), "{msg}");
        assert!(msg.contains("10"), "{msg}");
        assert!(msg.contains("0.1"), "{msg}");
    }

    #[test]
    fn invalid_entries_named() {
        let cases = [
            (
                r#"{"default_strategy":{"type":"probabilistic","param":-0.5}}"#,
                "default_strategy.param",
                "negative probability",
            ),
            (
                r#"{"default_strategy":{"type":"ratelimiting","param":-1}}"#,
                "default_strategy.param",
                "negative rate",
            ),
            (
                r#"{"operation_strategies":[{"operation":"x","type":"probabilistic","param":0.1}]}"#,
                "operation_strategies[0].service",
                "flat op without service",
            ),
            (
                r#"{"service_strategies":[{"service":"s","type":"probabilistic","param":0.1,"operation_strategies":[{"operation":"o","type":"ratelimiting","param":3}]}]}"#,
                "operation_strategies[0]",
                "ratelimiting operation",
            ),
            (
                r#"{"service_strategies":[{"service":"s","type":"sometimes","param":0.1}]}"#,
                "unknown variant",
                "unknown type",
            ),
            (r#"{"services":[]}"#, "unknown field", "unknown key"),
        ];
        for (json, want, why) in cases {
            let msg = StrategiesFile::from_json(json).unwrap_err().to_string();
            assert!(msg.contains(want), "{why}: {msg}");
        }
    }
}
