//! The sampling decision.
//!
//! Order: force header or B3/Jaeger debug → sampled; an upstream decision
//! (W3C flag, B3 sampled, Jaeger flag) → honoured; otherwise the service's
//! strategy for the operation. The probabilistic decision is OpenTelemetry's
//! consistent probability sampling: sample iff the trace id's low 56 bits
//! (its randomness) are at or above `(1 - p) * 2^56`. It is a pure function
//! of trace id and probability, so every sidecar on a trace agrees, and a
//! sidecar with a lower probability keeps a subset of what a higher one kept.

use crate::propagation::TraceState;
use meshtrace_proto::strategy::{Sampler as Strategy, ServiceSampling};
use meshtrace_proto::TraceId;
use rustc_hash::FxHashMap;

const MAX_RANDOMNESS: u64 = 1 << 56;

/// The rejection threshold for probability `p`.
pub fn threshold(p: f64) -> u64 {
    if p.is_nan() || p <= 0.0 {
        MAX_RANDOMNESS
    } else if p >= 1.0 {
        0
    } else {
        ((1.0 - p) * MAX_RANDOMNESS as f64).round() as u64
    }
}

/// Whether `trace_id` is sampled at `threshold`.
pub fn consistent_sample(trace_id: &TraceId, threshold: u64) -> bool {
    trace_id.randomness() >= threshold
}

/// Why a request was (not) sampled; recorded as `sampler.type`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Upstream decided (`sampler.type = parent`).
    Parent(bool),
    /// Force header or debug flag (`sampler.type = const`, param 1).
    Forced,
    /// By probability `p`.
    Probabilistic { sampled: bool, probability: f64 },
    /// By the rate limiter at `rate` traces/s.
    RateLimited { sampled: bool, rate: f64 },
}

impl Decision {
    pub fn sampled(&self) -> bool {
        match self {
            Decision::Parent(s) => *s,
            Decision::Forced => true,
            Decision::Probabilistic { sampled, .. } | Decision::RateLimited { sampled, .. } => {
                *sampled
            }
        }
    }
    /// (`sampler.type`, `sampler.param`) for the span.
    pub fn sampler_tags(&self) -> (&'static str, Option<f64>) {
        match self {
            Decision::Parent(_) => ("parent", None),
            Decision::Forced => ("const", Some(1.0)),
            Decision::Probabilistic { probability, .. } => ("probabilistic", Some(*probability)),
            Decision::RateLimited { rate, .. } => ("ratelimiting", Some(*rate)),
        }
    }
}

/// The sampler of one service (one per VM).
#[derive(Debug)]
pub struct Sampler {
    default: Strategy,
    default_threshold: u64,
    /// operation → (probability, threshold)
    operations: FxHashMap<String, (f64, u64)>,
}

impl Sampler {
    pub fn new(s: &ServiceSampling, now_ns: u64) -> Self {
        let _ = now_ns;
        let default_threshold = match s.default {
            Strategy::Probabilistic(p) => threshold(p),
            Strategy::RateLimiting(_) => MAX_RANDOMNESS,
        };
        Sampler {
            default: s.default,
            default_threshold,
            operations: s
                .operations
                .iter()
                .map(|(k, p)| (k.clone(), (*p, threshold(*p))))
                .collect(),
        }
    }

    /// The probability and threshold `operation` is sampled with, if probabilistic.
    pub fn threshold_for(&self, operation: &str) -> Option<(f64, u64)> {
        match (self.operations.get(operation), self.default) {
            (Some(pt), _) => Some(*pt),
            (None, Strategy::Probabilistic(p)) => Some((p, self.default_threshold)),
            (None, Strategy::RateLimiting(_)) => None,
        }
    }

    /// Whether `decide` looks at the operation name (per-operation strategies exist).
    pub fn needs_operation(&self) -> bool {
        !self.operations.is_empty()
    }

    /// Decides for a request. `upstream` is the decision that arrived, if any;
    /// `take_token(rate)` is only called for a `ratelimiting` decision: it takes
    /// from the Envoy-wide budget (see `budget`).
    pub fn decide(
        &mut self,
        operation: &str,
        trace_id: &TraceId,
        upstream: Option<bool>,
        forced: bool,
        take_token: impl FnOnce(f64) -> bool,
    ) -> Decision {
        if forced {
            return Decision::Forced;
        }
        if let Some(s) = upstream {
            return Decision::Parent(s);
        }
        if let Some((p, t)) = self.operations.get(operation) {
            return Decision::Probabilistic {
                sampled: consistent_sample(trace_id, *t),
                probability: *p,
            };
        }
        match self.default {
            Strategy::RateLimiting(rate) => Decision::RateLimited {
                sampled: take_token(rate),
                rate,
            },
            Strategy::Probabilistic(p) => Decision::Probabilistic {
                sampled: consistent_sample(trace_id, self.default_threshold),
                probability: p,
            },
        }
    }
}

/// OpenTelemetry consistent probability sampling in `tracestate`. A sampled
/// probabilistic decision records its threshold (`ot=th:`). With `consistent`
/// (the `consistent_downstream` option, not forced), a sampled parent whose `th`
/// is below this hop's own threshold for `operation` is decided again on the same
/// randomness (`ot=rv:`, else `trace_randomness` when the ids are random) and the
/// raised threshold written on, or `th` removed when this hop drops the trace.
/// Returns the decision and the tracestate to write (`None`: leave it as it came).
pub fn otel_threshold(
    decision: Decision,
    sampler: &Sampler,
    operation: &str,
    consistent: bool,
    incoming: &TraceState,
    trace_randomness: Option<u64>,
) -> (Decision, Option<TraceState>) {
    let rewrite = |threshold: Option<u64>| {
        Some(
            match crate::otel_ts::with_threshold(incoming.value(), threshold) {
                Some(s) => TraceState::Replace(s),
                None if matches!(incoming, TraceState::Absent) => TraceState::Absent,
                None => TraceState::Remove,
            },
        )
    };
    match decision {
        Decision::Probabilistic {
            sampled: true,
            probability,
        } => (decision, rewrite(Some(threshold(probability)))),
        Decision::Parent(true) if consistent => {
            let ot = incoming
                .value()
                .map(crate::otel_ts::parse)
                .unwrap_or_default();
            match (
                ot.threshold,
                ot.randomness.or(trace_randomness),
                sampler.threshold_for(operation),
            ) {
                (Some(up), Some(r), Some((p_own, mine))) if mine > up => {
                    let sampled = r >= mine;
                    (
                        Decision::Probabilistic {
                            sampled,
                            probability: p_own,
                        },
                        rewrite(sampled.then_some(mine)),
                    )
                }
                _ => (decision, None),
            }
        }
        _ => (decision, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use meshtrace_proto::strategy::StrategiesFile;

    fn sampler(json: &str, service: &str) -> Sampler {
        Sampler::new(
            &StrategiesFile::from_json(json)
                .unwrap()
                .for_service(service),
            0,
        )
    }

    /// The fraction sampled over n random trace ids.
    fn ratio(s: &mut Sampler, op: &str, n: usize, seed: u64) -> f64 {
        let mut rng = Rng::new(seed);
        let k = (0..n)
            .filter(|_| {
                s.decide(op, &TraceId(rng.trace_id()), None, false, |_| false)
                    .sampled()
            })
            .count();
        k as f64 / n as f64
    }

    #[test]
    fn probabilities_hold_statistically() {
        // 5 standard deviations of a binomial proportion at n = 20000.
        let n = 20_000;
        let json = r#"{"default_strategy":{"type":"probabilistic","param":0.5},
            "service_strategies":[{"service":"svc","type":"probabilistic","param":0.1,
              "operation_strategies":[{"operation":"GET /hot","type":"probabilistic","param":0.01},
                                      {"operation":"GET /all","type":"probabilistic","param":1.0},
                                      {"operation":"GET /none","type":"probabilistic","param":0.0}]}]}"#;
        let mut s = sampler(json, "svc");
        for (op, p, seed) in [
            ("GET /other", 0.1, 1),
            ("GET /hot", 0.01, 2),
            ("GET /all", 1.0, 3),
            ("GET /none", 0.0, 4),
        ] {
            let got = ratio(&mut s, op, n, seed);
            let tol = 5.0 * (p * (1.0 - p) / n as f64).sqrt();
            assert!((got - p).abs() <= tol, "{op}: got {got}, want {p} ± {tol}");
        }
        let mut other = sampler(json, "elsewhere");
        let got = ratio(&mut other, "x", n, 5);
        assert!(
            (got - 0.5).abs() < 5.0 * (0.25 / n as f64).sqrt(),
            "default 0.5, got {got}"
        );
    }

    #[test]
    fn decisions_are_consistent_and_nested() {
        // Same trace id → same decision; a lower probability keeps a subset.
        let mut rng = Rng::new(9);
        for _ in 0..10_000 {
            let id = TraceId(rng.trace_id());
            let hi = consistent_sample(&id, threshold(0.5));
            let lo = consistent_sample(&id, threshold(0.05));
            assert_eq!(hi, consistent_sample(&id, threshold(0.5)));
            assert!(!lo || hi, "sampled at 5% but not at 50%");
        }
    }

    #[test]
    fn parent_and_force_win() {
        let mut s = sampler(
            r#"{"default_strategy":{"type":"probabilistic","param":0}}"#,
            "svc",
        );
        let id = TraceId([7; 16]);
        assert_eq!(
            s.decide("op", &id, Some(true), false, |_| false),
            Decision::Parent(true)
        );
        assert_eq!(
            s.decide("op", &id, Some(false), false, |_| false),
            Decision::Parent(false)
        );
        assert_eq!(
            s.decide("op", &id, Some(false), true, |_| false),
            Decision::Forced
        );
        assert!(!s.decide("op", &id, None, false, |_| false).sampled());
    }

    #[test]
    fn rate_limiter_budget() {
        let mut s = sampler(
            r#"{"default_strategy":{"type":"ratelimiting","param":10}}"#,
            "svc",
        );
        let id = TraceId([7; 16]);
        // 1000 requests spread over 2 seconds: 10 burst + 20 refill.
        let mut state: Option<[u8; 16]> = None;
        let taken = (0..1000u64)
            .filter(|i| {
                s.decide("op", &id, None, false, |rate| {
                    let (next, took) = crate::budget::refill_take(
                        state.as_ref().map(|b| &b[..]),
                        rate,
                        i * 2_000_000,
                    );
                    state = Some(next);
                    took
                })
                .sampled()
            })
            .count();
        assert!((29..=31).contains(&taken), "{taken}");
    }

    #[test]
    fn thresholds() {
        assert_eq!(threshold(1.0), 0);
        assert_eq!(threshold(0.0), 1 << 56);
        assert_eq!(threshold(0.5), 1 << 55);
        assert_eq!(threshold(f64::NAN), 1 << 56);
    }
}
