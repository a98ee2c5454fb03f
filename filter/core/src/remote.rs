//! Remote sampling: the filter polls Jaeger's `/api/sampling?service=S` from
//! the collector and turns the answer into its sampler. Until the first
//! answer, and whenever the collector does not answer, the last known
//! strategy (else the static config) stays in force.

use meshtrace_proto::sampling_json::{StrategyKind, StrategyResponse};
use meshtrace_proto::strategy::{Sampler, ServiceSampling};
use std::collections::BTreeMap;

/// `path?service=<percent-encoded service>`.
pub fn query_path(path: &str, service: &str) -> String {
    let mut out = String::with_capacity(path.len() + 9 + service.len());
    out.push_str(path);
    out.push_str(if path.contains('?') {
        "&service="
    } else {
        "?service="
    });
    for b in service.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn rate(p: Option<f64>, what: &str) -> Result<f64, String> {
    let p = p.ok_or(format!("{what} is not a number"))?;
    if p.is_finite() && (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{what} {p} is outside [0, 1]"))
    }
}

/// Parses Jaeger's `SamplingStrategyResponse` JSON (the typed model in
/// `meshtrace_proto::sampling_json`, which the collector writes).
pub fn parse_strategy_response(body: &[u8]) -> Result<ServiceSampling, String> {
    let v: StrategyResponse = serde_json::from_slice(body)
        .map_err(|e| format!("strategy response is not JSON of Jaeger's shape: {e}"))?;
    let mut operations = BTreeMap::new();
    let ops = v.operation_sampling.as_ref();
    for (i, o) in ops
        .map(|o| o.per_operation_strategies.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let p = rate(
            Some(o.probabilistic_sampling.sampling_rate),
            &format!("perOperationStrategies[{i}] samplingRate"),
        )?;
        operations.insert(o.operation.clone(), p);
    }
    let default = match v.strategy_type {
        StrategyKind::RateLimiting => {
            let tps = v
                .rate_limiting_sampling
                .map(|r| r.max_traces_per_second)
                .filter(|t| t.is_finite() && *t >= 0.0)
                .ok_or("rateLimitingSampling.maxTracesPerSecond is missing or negative")?;
            Sampler::RateLimiting(tps)
        }
        StrategyKind::Probabilistic => {
            let p = match ops.and_then(|o| o.default_sampling_probability) {
                Some(p) => rate(Some(p), "defaultSamplingProbability")?,
                None => rate(
                    v.probabilistic_sampling.map(|p| p.sampling_rate),
                    "probabilisticSampling.samplingRate",
                )?,
            };
            Sampler::Probabilistic(p)
        }
    };
    Ok(ServiceSampling {
        default,
        operations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        let s = parse_strategy_response(
            br#"{"strategyType":"PROBABILISTIC","probabilisticSampling":{"samplingRate":0.2},
                "operationSampling":{"defaultSamplingProbability":0.2,"defaultLowerBoundTracesPerSecond":0,
                  "perOperationStrategies":[{"operation":"GET /a","probabilisticSampling":{"samplingRate":0.05}}]}}"#,
        )
        .unwrap();
        assert_eq!(s.default, Sampler::Probabilistic(0.2));
        assert_eq!(s.operations["GET /a"], 0.05);
        let r = parse_strategy_response(
            br#"{"strategyType":"RATE_LIMITING","rateLimitingSampling":{"maxTracesPerSecond":10}}"#,
        )
        .unwrap();
        assert_eq!(r.default, Sampler::RateLimiting(10.0));
        let n = parse_strategy_response(
            br#"{"strategyType":1,"rateLimitingSampling":{"maxTracesPerSecond":3}}"#,
        )
        .unwrap();
        assert_eq!(n.default, Sampler::RateLimiting(3.0), "numeric enum");
        let bad = [
            (&br#"nope"#[..], "not JSON"),
            (
                br#"{"strategyType":"PROBABILISTIC","probabilisticSampling":{"samplingRate":10}}"#,
                "outside",
            ),
            (br#"{"strategyType":"PROBABILISTIC"}"#, "not a number"),
            (br#"{"strategyType":"RATE_LIMITING"}"#, "maxTracesPerSecond"),
            (
                br#"{"strategyType":"SOMETIMES","probabilisticSampling":{"samplingRate":1}}"#,
                "unknown",
            ),
        ];
        for (body, want) in bad {
            let e = parse_strategy_response(body).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(
            query_path("/api/sampling", "checkout"),
            "/api/sampling?service=checkout"
        );
        assert_eq!(
            query_path("/api/sampling", "a b/c"),
            "/api/sampling?service=a%20b%2Fc"
        );
        assert_eq!(query_path("/s?x=1", "a"), "/s?x=1&service=a");
    }
}
