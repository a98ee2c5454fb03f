//! Adaptive sampling: per-operation probabilities computed from the spans the
//! collector receives, so that each operation yields about
//! `target_traces_per_second` sampled traces whatever its traffic.
//!
//! Every span whose sampler was probabilistic (`sampler.type = probabilistic`,
//! `sampler.param = p`, as the filter and Jaeger clients record them) stands
//! for `1/p` requests. Each interval, the estimated request rate of each
//! (service, operation) is smoothed with an exponentially weighted moving
//! average (`smoothing` is the weight of the newest interval), and the
//! probability becomes `target / rate`, within `[min_sampling_probability, 1]`
//! and never below what keeps `lower_bound_traces_per_minute`. Smoothing the
//! rate, not the probability, keeps a stable operation stable: a window with
//! fewer samples than expected raises the probability a little, never to 1.

use crate::telemetry::{OperationLabels, SamplingMetrics};
use meshtrace_proto::jaeger::{
    OperationSamplingStrategy, PerOperationSamplingStrategies, ProbabilisticSamplingStrategy,
    SamplingStrategyResponse,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most (service, operation) pairs tracked; more are ignored (and counted).
pub const MAX_OPERATIONS: usize = 10_000;
/// An operation with no sampled span for this many intervals is forgotten (it
/// falls back to the strategies file until spans come again), so names sent once
/// cannot hold the table.
pub const FORGET_AFTER_IDLE_INTERVALS: u32 = 10;

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Services it applies to; `*` means all.
    pub services: Vec<String>,
    pub target_traces_per_second: f64,
    pub min_sampling_probability: f64,
    pub lower_bound_traces_per_minute: f64,
    pub interval: Duration,
    pub smoothing: f64,
    /// Operations tracked per service; more are ignored (and counted) until idle
    /// ones are forgotten.
    pub max_operations_per_service: usize,
}

#[derive(Debug, Default, Clone)]
struct Op {
    /// Σ 1/p over this interval's spans: the requests they stand for.
    requests: f64,
    spans: u64,
    /// Intervals in a row without a sampled span.
    idle_intervals: u32,
    /// Smoothed requests per second, once estimated.
    rate: Option<f64>,
    probability: Option<f64>,
}

#[derive(Debug)]
struct State {
    ops: HashMap<(String, String), Op>,
    /// Operations tracked per service.
    per_service: HashMap<String, usize>,
    window_start: Instant,
    overflow: u64,
}

/// Spans of one export request, summed by (service, operation).
#[derive(Debug, Default)]
pub struct Tally(Vec<(String, String, f64, u64)>);

/// One operation's current figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub service: String,
    pub operation: String,
    pub probability: f64,
    pub requests_per_second: f64,
}

/// One interval's counts: (service, operation, requests Σ1/p, spans).
pub type Counts = Vec<(String, String, f64, u64)>;

/// Replicas sharing their counts (through the bucket): every replica
/// publishes what it saw in an interval and computes probabilities from the
/// sum of everyone's, so all serve the same ones with no leader.
pub trait CountsExchange: Send + Sync {
    /// Publishes `mine`, this replica's counts of interval `index` (intervals
    /// since the epoch), and returns the sum of every replica's counts of
    /// interval `index - 1` (all published by now), or why it could not.
    fn exchange(&self, index: u64, mine: &Counts) -> Result<Option<Counts>, String>;
}

pub struct Adaptive {
    pub settings: Settings,
    /// Counts shared with the other replicas, when several share a bucket.
    exchange: std::sync::OnceLock<Arc<dyn CountsExchange>>,
    state: Mutex<State>,
    metrics: Arc<SamplingMetrics>,
    /// Probabilities that moved by a factor of 2 or more, newest last (bounded).
    changes: Mutex<std::collections::VecDeque<super::Change>>,
}

impl Adaptive {
    pub fn new(settings: Settings, metrics: Arc<SamplingMetrics>) -> Adaptive {
        Adaptive {
            settings,
            metrics,
            state: Mutex::new(State {
                ops: HashMap::new(),
                per_service: HashMap::new(),
                window_start: Instant::now(),
                overflow: 0,
            }),
            changes: Mutex::default(),
            exchange: std::sync::OnceLock::new(),
        }
    }

    /// Shares counts with the other replicas from now on: probabilities come
    /// from the sum of every replica's counts, one interval behind.
    pub fn share_counts(&self, exchange: Arc<dyn CountsExchange>) {
        let _ = self.exchange.set(exchange);
    }

    /// With shared counts: publishes this replica's interval `index`, then
    /// recomputes from everyone's interval `index - 1`. Blocking (object-store
    /// calls): run it off the runtime. Without them: [`Adaptive::recompute`].
    pub fn recompute_shared(&self, index: u64) {
        let Some(exchange) = self.exchange.get() else {
            return self.recompute();
        };
        let mine: Counts = match self.state.lock() {
            Ok(mut st) => st
                .ops
                .iter_mut()
                .filter(|(_, op)| op.spans > 0)
                .map(|((s, o), op)| {
                    let c = (s.clone(), o.clone(), op.requests, op.spans);
                    op.requests = 0.0;
                    op.spans = 0;
                    c
                })
                .collect(),
            Err(_) => return,
        };
        match exchange.exchange(index, &mine) {
            Ok(Some(sum)) => {
                self.observe(Tally(sum));
                self.recompute_over(self.settings.interval.as_secs_f64());
            }
            // The first interval: nothing published before it yet.
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "adaptive sampling: counts not shared this interval; computing from this replica's alone");
                self.observe(Tally(mine));
                self.recompute();
            }
        }
    }

    /// Probabilities that moved by a factor of 2 or more, oldest first.
    pub fn changes(&self) -> Vec<super::Change> {
        self.changes
            .lock()
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn applies_to(&self, service: &str) -> bool {
        self.settings
            .services
            .iter()
            .any(|s| s == "*" || s == service)
    }

    /// Sums spans sampled with probability `p` by (service, operation): the
    /// requests they stand for (Σ 1/p) and their count. A `p` outside
    /// [`min_sampling_probability`, 1] is not one this sampling serves: any OTLP
    /// sender can write `sampler.param`, and one span claiming `5e-324` would
    /// otherwise stand for more requests than exist. Taken before a request is
    /// stored, applied with [`Adaptive::observe`] once it is (a refused request
    /// comes back and must not count twice).
    pub fn tally<'a>(&self, spans: impl IntoIterator<Item = (&'a str, &'a str, f64)>) -> Tally {
        let mut out: Vec<(String, String, f64, u64)> = Vec::new();
        // Borrowed keys: no allocation per span; linear in spans however many
        // operations an export holds (a scan was quadratic in them).
        let mut at: std::collections::HashMap<(&str, &str), usize> = Default::default();
        for (service, operation, p) in spans {
            let plausible = p >= self.settings.min_sampling_probability && p > 0.0 && p <= 1.0;
            if !(plausible && self.applies_to(service)) {
                continue;
            }
            match at.get(&(service, operation)) {
                Some(&i) => {
                    out[i].2 += 1.0 / p;
                    out[i].3 += 1;
                }
                None => {
                    at.insert((service, operation), out.len());
                    out.push((service.to_string(), operation.to_string(), 1.0 / p, 1));
                }
            }
        }
        Tally(out)
    }

    /// Adds a tally to the current interval (one lock per export request).
    pub fn observe(&self, tally: Tally) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let st = &mut *st;
        for (service, operation, requests, spans) in tally.0 {
            let key = (service, operation);
            if !st.ops.contains_key(&key) {
                // A service gets an entry only with an operation it keeps: junk
                // names that overflow leave nothing behind.
                let in_service = st.per_service.get(&key.0).copied().unwrap_or(0);
                if st.ops.len() >= MAX_OPERATIONS
                    || in_service >= self.settings.max_operations_per_service
                {
                    st.overflow += spans;
                    self.metrics.adaptive_overflow.inc_by(spans);
                    continue;
                }
                *st.per_service.entry(key.0.clone()).or_default() += 1;
            }
            let op = st.ops.entry(key).or_default();
            op.requests += requests;
            op.spans += spans;
        }
    }

    /// Closes the interval that started at the last call and recomputes.
    pub fn recompute(&self) {
        let secs = match self.state.lock() {
            Ok(st) => st.window_start.elapsed().as_secs_f64().max(0.001),
            Err(_) => return,
        };
        self.recompute_over(secs);
    }

    /// Recomputes from the counts gathered, as the requests of `secs` seconds.
    fn recompute_over(&self, secs: f64) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        st.window_start = Instant::now();
        let s = &self.settings;
        let floor_rate = s.lower_bound_traces_per_minute / 60.0;
        let st = &mut *st;
        st.ops.retain(|(service, _), op| {
            op.idle_intervals = if op.spans == 0 {
                op.idle_intervals + 1
            } else {
                0
            };
            let keep = op.idle_intervals < FORGET_AFTER_IDLE_INTERVALS;
            if !keep {
                if let Some(n) = st.per_service.get_mut(service) {
                    *n = n.saturating_sub(1);
                }
            }
            keep
        });
        // A service whose operations were all forgotten is forgotten too.
        st.per_service.retain(|_, n| *n > 0);
        let mut moved = Vec::new();
        for ((service, operation), op) in st.ops.iter_mut() {
            let before = op.probability;
            let observed = op.requests / secs;
            let rate = match op.rate {
                None => observed,
                Some(r) => s.smoothing * observed + (1.0 - s.smoothing) * r,
            };
            op.rate = Some(rate);
            op.requests = 0.0;
            op.spans = 0;
            let p = if rate > 0.0 {
                (s.target_traces_per_second / rate).max(floor_rate / rate)
            } else {
                1.0
            };
            let now = p.clamp(s.min_sampling_probability, 1.0);
            op.probability = Some(now);
            match before {
                None => moved.push(format!("adaptive: {service} {operation}: set to {now:.4}")),
                Some(b) if b > 0.0 && (now / b >= 2.0 || b / now >= 2.0) => moved.push(format!(
                    "adaptive: {service} {operation}: {b:.4} → {now:.4}"
                )),
                Some(_) => {}
            }
        }
        if !moved.is_empty() {
            if let Ok(mut c) = self.changes.lock() {
                for what in moved {
                    if c.len() >= 100 {
                        c.pop_front();
                    }
                    c.push_back(super::Change {
                        at_unix_ms: super::unix_ms(),
                        what,
                    });
                }
            }
        }
        let m = &self.metrics;
        m.adaptive_probability.clear();
        m.adaptive_requests_per_second.clear();
        for ((service, operation), op) in &st.ops {
            let (Some(p), Some(rate)) = (op.probability, op.rate) else {
                continue;
            };
            let labels = OperationLabels {
                service: service.clone(),
                operation: operation.clone(),
            };
            m.adaptive_probability.get_or_create(&labels).set(p);
            m.adaptive_requests_per_second
                .get_or_create(&labels)
                .set(rate);
        }
    }

    /// Probabilities computed so far for `service`, by operation.
    pub fn probabilities(&self, service: &str) -> BTreeMap<String, f64> {
        let Ok(st) = self.state.lock() else {
            return BTreeMap::new();
        };
        st.ops
            .iter()
            .filter(|((s, _), _)| s == service)
            .filter_map(|((_, o), op)| Some((o.clone(), op.probability?)))
            .collect()
    }

    /// Every estimate, sorted by service then operation.
    pub fn estimates(&self) -> Vec<Estimate> {
        let Ok(st) = self.state.lock() else {
            return Vec::new();
        };
        let mut out: Vec<Estimate> = st
            .ops
            .iter()
            .filter_map(|((s, o), op)| {
                Some(Estimate {
                    service: s.clone(),
                    operation: o.clone(),
                    probability: op.probability?,
                    requests_per_second: op.rate?,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.service, &a.operation).cmp(&(&b.service, &b.operation)));
        out
    }

    pub fn overflow(&self) -> u64 {
        self.state.lock().map_or(0, |s| s.overflow)
    }

    /// `base` (from the strategies file) with the computed per-operation
    /// probabilities: they replace the file's for the operations estimated;
    /// other operations keep the file's value or the default.
    pub fn overlay(
        &self,
        service: &str,
        mut base: SamplingStrategyResponse,
    ) -> SamplingStrategyResponse {
        if !self.applies_to(service) {
            return base;
        }
        let computed = self.probabilities(service);
        let default_probability = base
            .probabilistic_sampling
            .as_ref()
            .map(|p| p.sampling_rate)
            .or_else(|| {
                base.operation_sampling
                    .as_ref()
                    .map(|o| o.default_sampling_probability)
            })
            .unwrap_or(meshtrace_proto::strategy::JAEGER_DEFAULT_PROBABILITY);
        let ops = base
            .operation_sampling
            .get_or_insert_with(|| PerOperationSamplingStrategies {
                default_sampling_probability: default_probability,
                ..Default::default()
            });
        ops.default_lower_bound_traces_per_second =
            self.settings.lower_bound_traces_per_minute / 60.0;
        let mut merged: BTreeMap<String, f64> = ops
            .per_operation_strategies
            .iter()
            .map(|s| {
                (
                    s.operation.clone(),
                    s.probabilistic_sampling
                        .as_ref()
                        .map_or(default_probability, |p| p.sampling_rate),
                )
            })
            .collect();
        merged.extend(computed);
        ops.per_operation_strategies = merged
            .into_iter()
            .map(|(operation, p)| OperationSamplingStrategy {
                operation,
                probabilistic_sampling: Some(ProbabilisticSamplingStrategy { sampling_rate: p }),
            })
            .collect();
        base
    }

    /// Recomputes every interval until the task is dropped. With shared
    /// counts, intervals are aligned on the clock (every replica closes interval
    /// `k` at the same instant) and the exchange runs off the runtime.
    pub fn spawn(self: &std::sync::Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        if me.exchange.get().is_some() {
            return tokio::spawn(async move {
                let every = me.settings.interval.as_millis().max(1) as u64;
                loop {
                    let now = super::unix_ms();
                    // Half an interval past the boundary: every replica has closed it.
                    let next = (now / every + 1) * every + every / 2;
                    tokio::time::sleep(Duration::from_millis(next - now)).await;
                    let index = (next / every).saturating_sub(1);
                    let m = me.clone();
                    let _ = tokio::task::spawn_blocking(move || m.recompute_shared(index)).await;
                }
            });
        }
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(me.settings.interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                me.recompute();
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            services: vec!["svc".into()],
            target_traces_per_second: 1.0,
            min_sampling_probability: 0.0001,
            lower_bound_traces_per_minute: 1.0,
            interval: Duration::from_secs(1),
            smoothing: 0.5,
            max_operations_per_service: 100,
        }
    }

    /// Simulates `secs` one-second intervals of traffic at `rates` (req/s per
    /// operation), sampled with the probabilities served so far (deterministic
    /// rounding of the expected sampled count).
    fn simulate(
        a: &Adaptive,
        rates: &[(&str, f64)],
        secs: usize,
        carry: &mut HashMap<String, f64>,
    ) {
        for _ in 0..secs {
            let probs = a.probabilities("svc");
            for (op, rate) in rates {
                let p = probs.get(*op).copied().unwrap_or(1.0);
                let c = carry.entry(op.to_string()).or_default();
                *c += rate * p;
                let n = c.floor();
                *c -= n;
                a.observe(a.tally((0..n as usize).map(|_| ("svc", *op, p))));
            }
            // One simulated second: pretend the window was exactly 1 s.
            if let Ok(mut st) = a.state.lock() {
                st.window_start = Instant::now() - Duration::from_secs(1);
            }
            a.recompute();
        }
    }

    #[test]
    fn converges_to_the_target_rate_per_operation() {
        let a = Adaptive::new(settings(), Arc::default());
        let mut carry = HashMap::new();
        simulate(&a, &[("busy", 200.0), ("rare", 5.0)], 30, &mut carry);
        let p = a.probabilities("svc");
        assert!((p["busy"] - 1.0 / 200.0).abs() < 0.001, "{p:?}");
        assert!((p["rare"] - 1.0 / 5.0).abs() < 0.02, "{p:?}");
        // Sampled rate = rate × p ≈ the target for both.
        assert!((200.0 * p["busy"] - 1.0).abs() < 0.2);
        assert!((5.0 * p["rare"] - 1.0).abs() < 0.2);
        // Stable: another 10 s at the same traffic barely moves it.
        let before = p["busy"];
        simulate(&a, &[("busy", 200.0), ("rare", 5.0)], 10, &mut carry);
        let after = a.probabilities("svc")["busy"];
        assert!((after / before - 1.0).abs() < 0.2, "{before} → {after}");
        // The first probability per operation was logged (and any later move by a
        // factor of 2 or more); the steady state adds nothing.
        let log = a.changes();
        assert!(
            log.iter()
                .any(|c| c.what.starts_with("adaptive: svc busy: ")),
            "{log:?}"
        );
        let n = log.len();
        simulate(&a, &[("busy", 200.0), ("rare", 5.0)], 10, &mut carry);
        assert_eq!(a.changes().len(), n, "no change logged at steady state");
    }

    #[test]
    fn bounds_and_scope() {
        let a = Adaptive::new(settings(), Arc::default());
        let mut carry = HashMap::new();
        simulate(
            &a,
            &[("huge", 1_000_000.0), ("trickle", 0.1)],
            5,
            &mut carry,
        );
        let p = a.probabilities("svc");
        assert_eq!(p["huge"], 0.0001, "min_sampling_probability");
        assert_eq!(
            p.get("trickle").copied().unwrap_or(1.0),
            1.0,
            "rare: all of it"
        );
        // Other services are not tracked.
        a.observe(a.tally([("other", "x", 0.5)]));
        a.recompute();
        assert!(a.probabilities("other").is_empty());
        // Bad probabilities are ignored, not divided by.
        a.observe(a.tally([
            ("svc", "bad", 0.0),
            ("svc", "bad", f64::NAN),
            ("svc", "bad", 2.0),
        ]));
        a.recompute();
        assert!(!a.probabilities("svc").contains_key("bad"));
    }

    #[test]
    fn untrusted_spans_cannot_steer_it() {
        let a = Adaptive::new(settings(), Arc::default());
        let mut carry = HashMap::new();
        simulate(&a, &[("real", 5.0)], 10, &mut carry);
        let before = a.probabilities("svc")["real"];
        // One span claiming a probability far below anything served: ignored.
        a.observe(a.tally([("svc", "real", 5e-324), ("svc", "real", 1e-9)]));
        simulate(&a, &[("real", 5.0)], 1, &mut carry);
        let after = a.probabilities("svc")["real"];
        assert!((after / before - 1.0).abs() < 0.3, "{before} → {after}");
        // One at the minimum counts, but only as an outlier: the smoothed rate
        // lets go of it within a few intervals.
        a.observe(a.tally([("svc", "real", 0.0001)]));
        simulate(&a, &[("real", 5.0)], 1, &mut carry);
        assert!(a.probabilities("svc")["real"] < 0.01, "the outlier counted");
        simulate(&a, &[("real", 5.0)], 20, &mut carry);
        let recovered = a.probabilities("svc")["real"];
        assert!(
            (recovered / before - 1.0).abs() < 0.3,
            "{before} → {recovered}"
        );
    }

    #[test]
    fn junk_operation_names_cannot_hold_the_table() {
        let a = Adaptive::new(settings(), Arc::default());
        // 10,000 junk names in one burst: only max_operations_per_service are kept.
        let junk: Vec<String> = (0..10_000).map(|i| format!("junk-{i}")).collect();
        a.observe(a.tally(junk.iter().map(|j| ("svc", j.as_str(), 1.0))));
        a.recompute();
        assert_eq!(a.probabilities("svc").len(), 100, "capped per service");
        // A real operation arriving now is not tracked yet (counted as overflow) …
        let mut carry = HashMap::new();
        simulate(&a, &[("real", 50.0)], 1, &mut carry);
        assert!(!a.probabilities("svc").contains_key("real"));
        assert!(a.overflow() > 0);
        // … but once the junk has been idle long enough it is forgotten and the
        // real operation is estimated.
        simulate(
            &a,
            &[("real", 50.0)],
            FORGET_AFTER_IDLE_INTERVALS as usize + 2,
            &mut carry,
        );
        let p = a.probabilities("svc");
        assert!(p.contains_key("real"), "{} operations", p.len());
        assert!(!p.keys().any(|k| k.starts_with("junk")), "junk forgotten");
        // Another service still has room while one is flooded.
        let s2 = Adaptive::new(
            Settings {
                services: vec!["*".into()],
                ..settings()
            },
            Arc::default(),
        );
        s2.observe(s2.tally(junk.iter().map(|j| ("svc", j.as_str(), 1.0))));
        s2.observe(s2.tally([("other", "GET /", 1.0)]));
        s2.recompute();
        assert!(s2.probabilities("other").contains_key("GET /"));
    }

    #[test]
    fn junk_service_names_leave_nothing_behind() {
        let a = Adaptive::new(
            Settings {
                services: vec!["*".into()],
                ..settings()
            },
            Arc::default(),
        );
        // Fill the table, then 50,000 junk service names: all overflow, and none
        // is remembered (each used to leave an entry in the per-service count).
        let fill: Vec<(String, String)> = (0..MAX_OPERATIONS)
            .map(|i| (format!("svc{}", i / 100), format!("op{i}")))
            .collect();
        a.observe(a.tally(fill.iter().map(|(s, o)| (s.as_str(), o.as_str(), 1.0))));
        let junk: Vec<String> = (0..50_000).map(|i| format!("junk-service-{i}")).collect();
        a.observe(a.tally(junk.iter().map(|j| (j.as_str(), "GET /", 1.0))));
        let services = || a.state.lock().unwrap().per_service.len();
        assert_eq!(services(), MAX_OPERATIONS / 100);
        // Once everything idles out, the count is empty again.
        for _ in 0..FORGET_AFTER_IDLE_INTERVALS + 1 {
            a.recompute();
        }
        assert_eq!(services(), 0);
    }

    #[test]
    fn overlay_keeps_file_operations_and_default() {
        let a = Adaptive::new(settings(), Arc::default());
        a.observe(a.tally((0..10).map(|_| ("svc", "GET /a", 0.5))));
        a.recompute();
        let file = meshtrace_proto::strategy::StrategiesFile::from_json(
            r#"{"service_strategies":[{"service":"svc","type":"probabilistic","param":0.3,
                "operation_strategies":[{"operation":"GET /b","type":"probabilistic","param":0.7}]}]}"#,
        )
        .unwrap();
        let r = a.overlay("svc", super::super::response(&file, "svc"));
        let o = r.operation_sampling.unwrap();
        assert_eq!(o.default_sampling_probability, 0.3);
        let ops: Vec<(String, f64)> = o
            .per_operation_strategies
            .iter()
            .map(|s| {
                (
                    s.operation.clone(),
                    s.probabilistic_sampling.as_ref().unwrap().sampling_rate,
                )
            })
            .collect();
        assert_eq!(ops[1], ("GET /b".into(), 0.7), "file entry kept");
        assert_eq!(ops[0].0, "GET /a");
        assert!(ops[0].1 < 1.0 && ops[0].1 > 0.0, "{ops:?}");
        assert!((o.default_lower_bound_traces_per_second - 1.0 / 60.0).abs() < 1e-9);
        // A service adaptive does not cover is the file's answer, untouched.
        let other = a.overlay("zzz", super::super::response(&file, "zzz"));
        assert_eq!(other, super::super::response(&file, "zzz"));
    }
}
