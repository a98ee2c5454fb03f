//! Hotspots: which (service, operation) pairs account for how much of the
//! end-to-end latency on the critical path, across many traces (Uber's CRISP,
//! online). Each trace is folded in as it is read, so the cost is one pass over
//! the traces and the memory is bounded: at most `max_keys` pairs (the rest fold
//! into one `(other)` row) and `max_samples` per-trace values per pair for the
//! percentiles (a uniform reservoir beyond that).

use crate::critical::{critical_path, critical_times, self_times};
use crate::percentile;
use crate::skew;
use crate::trace::{Span, Trace};
use serde::Serialize;
use std::collections::HashMap;

/// One ranked row.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hotspot {
    pub service: String,
    pub operation: String,
    /// Critical-path time in this pair, summed over the traces (ns).
    pub critical_ns: i64,
    /// Its share of the traces' summed end-to-end latency (0..1).
    pub share: f64,
    /// Traces in which the pair is on the critical path.
    pub traces: u64,
    /// Per trace in which it appears: critical-path time, p50 and p95 (ns).
    pub critical_p50_ns: i64,
    pub critical_p95_ns: i64,
    /// Per trace in which it appears: self time, p50 and p95 (ns).
    pub self_p50_ns: i64,
    pub self_p95_ns: i64,
    /// Traces where it took the most critical-path time (id, ns), longest first.
    pub examples: Vec<(String, i64)>,
}

#[derive(Debug, Default)]
struct Acc {
    critical: i64,
    traces: u64,
    seen: u64,
    critical_samples: Vec<i64>,
    self_samples: Vec<i64>,
    examples: Vec<(String, i64)>,
}

/// Folds traces in; [`Hotspots::ranked`] gives the table.
#[derive(Debug)]
pub struct Hotspots {
    max_keys: usize,
    max_samples: usize,
    keys: HashMap<(String, String), Acc>,
    /// Traces folded in.
    pub traces: u64,
    /// Their end-to-end latency, summed (ns).
    pub total_ns: i64,
    rng: u64,
}

const OTHER: &str = "(other)";
const EXAMPLES: usize = 3;

impl Hotspots {
    pub fn new(max_keys: usize, max_samples: usize) -> Hotspots {
        Hotspots {
            max_keys: max_keys.max(1),
            max_samples: max_samples.max(1),
            keys: HashMap::new(),
            traces: 0,
            total_ns: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    fn next(&mut self) -> u64 {
        // splitmix64: a reservoir needs uniform picks, not secrecy.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Folds one trace in (its clock skew adjusted first).
    pub fn add(&mut self, trace_id: &str, spans: Vec<Span>) {
        let mut t = Trace::new(spans);
        let Some(root) = t.root else { return };
        skew::adjust(&mut t);
        let path = critical_path(&t);
        let crit = critical_times(&t, &path);
        let own = self_times(&t);
        self.traces += 1;
        self.total_ns += t.spans[root].duration();
        let mut per_key: HashMap<(&str, &str), (i64, i64)> = HashMap::new();
        for (i, s) in t.spans.iter().enumerate() {
            let e = per_key
                .entry((s.service.as_str(), s.operation.as_str()))
                .or_default();
            e.0 += crit[i];
            e.1 += own[i];
        }
        for ((service, operation), (c, o)) in per_key {
            if c == 0 {
                continue;
            }
            let full = self.keys.len() >= self.max_keys;
            let key = if full
                && !self
                    .keys
                    .contains_key(&(service.to_string(), operation.to_string()))
            {
                (OTHER.to_string(), OTHER.to_string())
            } else {
                (service.to_string(), operation.to_string())
            };
            let r = self.next();
            let max_samples = self.max_samples;
            let acc = self.keys.entry(key).or_default();
            acc.critical += c;
            acc.traces += 1;
            acc.seen += 1;
            if acc.critical_samples.len() < max_samples {
                acc.critical_samples.push(c);
                acc.self_samples.push(o);
            } else {
                let j = (r % acc.seen) as usize;
                if j < max_samples {
                    acc.critical_samples[j] = c;
                    acc.self_samples[j] = o;
                }
            }
            acc.examples.push((trace_id.to_string(), c));
            acc.examples
                .sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            acc.examples.truncate(EXAMPLES);
        }
    }

    /// The pairs, most critical-path time first.
    pub fn ranked(&self) -> Vec<Hotspot> {
        let mut out: Vec<Hotspot> = self
            .keys
            .iter()
            .map(|((service, operation), a)| {
                let (mut c, mut s) = (a.critical_samples.clone(), a.self_samples.clone());
                Hotspot {
                    service: service.clone(),
                    operation: operation.clone(),
                    critical_ns: a.critical,
                    share: if self.total_ns > 0 {
                        a.critical as f64 / self.total_ns as f64
                    } else {
                        0.0
                    },
                    traces: a.traces,
                    critical_p50_ns: percentile(&mut c, 0.5),
                    critical_p95_ns: percentile(&mut c, 0.95),
                    self_p50_ns: percentile(&mut s, 0.5),
                    self_p95_ns: percentile(&mut s, 0.95),
                    examples: a.examples.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| {
            b.critical_ns
                .cmp(&a.critical_ns)
                .then(a.service.cmp(&b.service))
                .then(a.operation.cmp(&b.operation))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::fixtures::span;

    fn op(mut s: Span, name: &str) -> Span {
        s.operation = name.into();
        s
    }

    /// frontend GET / 0..100 calls checkout POST 10..90 (self 10..30, 70..90) which
    /// calls inventory GET 30..70; `slow` stretches inventory by `extra`.
    fn checkout_trace(extra: i64) -> Vec<Span> {
        vec![
            op(span(1, None, 0, 100 + extra, "frontend"), "GET /"),
            op(span(2, Some(1), 10, 90 + extra, "checkout"), "POST /orders"),
            op(span(3, Some(2), 30, 70 + extra, "inventory"), "GET /stock"),
        ]
    }

    #[test]
    fn ranks_pairs_by_critical_path_time_as_computed_by_hand() {
        let mut h = Hotspots::new(100, 100);
        h.add("t1", checkout_trace(0));
        h.add("t2", checkout_trace(100));
        let r = h.ranked();
        // By hand: inventory 40 + 140 = 180; checkout (20+20) × 2 = 80; frontend 20 × 2 = 40.
        let got: Vec<(&str, i64, u64)> = r
            .iter()
            .map(|x| (x.service.as_str(), x.critical_ns, x.traces))
            .collect();
        assert_eq!(
            got,
            vec![
                ("inventory", 180, 2),
                ("checkout", 80, 2),
                ("frontend", 40, 2)
            ]
        );
        assert_eq!(h.total_ns, 300);
        assert!((r[0].share - 0.6).abs() < 1e-12);
        assert_eq!((r[0].critical_p50_ns, r[0].critical_p95_ns), (140, 140));
        assert_eq!(r[0].examples[0], ("t2".to_string(), 140));
        assert_eq!((r[1].self_p50_ns, r[1].self_p95_ns), (40, 40));
    }

    #[test]
    fn bounded_keys_and_samples() {
        let mut h = Hotspots::new(2, 10);
        for i in 0..100 {
            let spans = vec![op(span(1, None, 0, 10 + i, "s"), &format!("op{}", i % 5))];
            h.add(&format!("t{i}"), spans);
        }
        let r = h.ranked();
        assert_eq!(r.len(), 3, "two pairs and (other)");
        assert!(r.iter().any(|x| x.service == OTHER));
        assert_eq!(r.iter().map(|x| x.traces).sum::<u64>(), 100);
        assert!(h.keys.values().all(|a| a.critical_samples.len() <= 10));
    }
}
