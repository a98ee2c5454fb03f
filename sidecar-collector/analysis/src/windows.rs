//! A window against a baseline window, for one service (and operation):
//! latency percentiles, error rate and throughput with their deltas, and the
//! attribute values over-represented in the window's slow or failed spans
//! compared with the baseline's spans (what Grafana's Traces Drilldown
//! comparison does for Tempo). Slow means slower than the baseline's p95.
//!
//! An empty baseline is said, not compared against: no deltas (`null`), a
//! `notice`, the window's own p95 as the slow threshold, and attribute values
//! ranked against the window's other spans instead of the baseline's.

use crate::percentile;
use serde::Serialize;
use std::collections::HashMap;

/// One span as the comparison needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanFacts {
    pub duration_ns: i64,
    pub error: bool,
    /// Its attributes (span and resource), as ids in an [`Attributes`] table.
    pub attributes: Vec<u32>,
}

/// Attribute (key, value) pairs as text, each stored once and known by an id:
/// a comparison over 100,000 spans of 20 attributes holds the distinct pairs
/// and four bytes per attribute, not every attribute's text again.
#[derive(Debug, Default, Clone)]
pub struct Attributes {
    pairs: Vec<(String, String)>,
    /// key → value → id (looked up by `&str`, no allocation for a known pair).
    ids: HashMap<String, HashMap<String, u32>>,
}

impl Attributes {
    /// The id of `(key, value)`, and whether it is new (its text now held).
    pub fn intern(&mut self, key: &str, value: &str) -> (u32, bool) {
        if let Some(&id) = self.ids.get(key).and_then(|v| v.get(value)) {
            return (id, false);
        }
        let id = self.pairs.len() as u32;
        self.pairs.push((key.to_string(), value.to_string()));
        self.ids
            .entry(key.to_string())
            .or_default()
            .insert(value.to_string(), id);
        (id, true)
    }

    /// The pair of `id`.
    pub fn get(&self, id: u32) -> Option<(&str, &str)> {
        self.pairs
            .get(id as usize)
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Distinct pairs held.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// One side's numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Side {
    pub spans: u64,
    pub per_second: f64,
    pub error_rate: f64,
    pub p50_ns: i64,
    pub p95_ns: i64,
    pub p99_ns: i64,
}

/// An attribute value and how much more often it appears among the window's
/// slow or failed spans than among the baseline's spans.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Overrepresented {
    pub key: String,
    pub value: String,
    /// Share of the window's slow or failed spans that have it.
    pub in_selection: f64,
    /// Share of the baseline's spans that have it.
    pub in_baseline: f64,
    /// `in_selection - in_baseline`: what the list is ranked by.
    pub score: f64,
    /// Slow or failed spans of the window that have it.
    pub count: u64,
}

/// The comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowComparison {
    pub window: Side,
    pub baseline: Side,
    /// True when the baseline window holds no spans: deltas are `null`.
    pub baseline_empty: bool,
    /// What a reader must know before reading the numbers (an empty baseline).
    pub notice: Option<String>,
    /// Window minus baseline (`null` without a baseline).
    pub delta_p50_ns: Option<i64>,
    pub delta_p95_ns: Option<i64>,
    pub delta_p99_ns: Option<i64>,
    pub delta_error_rate: Option<f64>,
    pub delta_per_second: Option<f64>,
    /// The duration above which a window span counts as slow (ns).
    pub slow_threshold_ns: i64,
    /// Window spans that are slow or failed.
    pub selected: u64,
    pub overrepresented: Vec<Overrepresented>,
}

fn side(spans: &[SpanFacts], seconds: f64) -> Side {
    let mut d: Vec<i64> = spans.iter().map(|s| s.duration_ns).collect();
    let n = spans.len() as u64;
    Side {
        spans: n,
        per_second: n as f64 / seconds.max(1e-9),
        error_rate: if n > 0 {
            spans.iter().filter(|s| s.error).count() as f64 / n as f64
        } else {
            0.0
        },
        p50_ns: percentile(&mut d, 0.5),
        p95_ns: percentile(&mut d, 0.95),
        p99_ns: percentile(&mut d, 0.99),
    }
}

fn shares<'a>(spans: impl Iterator<Item = &'a SpanFacts>) -> (u64, HashMap<u32, u64>) {
    let mut n = 0;
    let mut m: HashMap<u32, u64> = HashMap::new();
    let mut seen: Vec<u32> = Vec::new();
    for s in spans {
        n += 1;
        // Once per span, whatever its duplicates.
        seen.clear();
        seen.extend_from_slice(&s.attributes);
        seen.sort_unstable();
        seen.dedup();
        for &kv in &seen {
            *m.entry(kv).or_default() += 1;
        }
    }
    (n, m)
}

/// Compares `window` (lasting `window_s` seconds) with `baseline` (`baseline_s`),
/// their attribute ids read in `names`; at most `top` attribute values, each
/// seen on at least `min_count` selected spans.
pub fn compare(
    window: &[SpanFacts],
    window_s: f64,
    baseline: &[SpanFacts],
    baseline_s: f64,
    names: &Attributes,
    top: usize,
    min_count: u64,
) -> WindowComparison {
    let w = side(window, window_s);
    let b = side(baseline, baseline_s);
    let threshold = if baseline.is_empty() {
        w.p95_ns
    } else {
        b.p95_ns
    };
    let is_selected = |s: &&SpanFacts| s.error || s.duration_ns > threshold;
    let (ns, in_sel) = shares(window.iter().filter(is_selected));
    // Without a baseline, the selection is set against the window's other spans.
    let (nb, in_base) = if baseline.is_empty() {
        shares(window.iter().filter(|s| !is_selected(s)))
    } else {
        shares(baseline.iter())
    };
    let mut over: Vec<Overrepresented> = in_sel
        .iter()
        .filter(|(_, c)| **c >= min_count)
        .filter_map(|(id, &c)| {
            let (k, v) = names.get(*id)?;
            let a = c as f64 / ns.max(1) as f64;
            let bshare = in_base.get(id).copied().unwrap_or(0) as f64 / nb.max(1) as f64;
            Some(Overrepresented {
                key: k.to_string(),
                value: v.to_string(),
                in_selection: a,
                in_baseline: bshare,
                score: a - bshare,
                count: c,
            })
        })
        .filter(|o| o.score > 0.0)
        .collect();
    over.sort_by(|x, y| {
        y.score
            .total_cmp(&x.score)
            .then(y.count.cmp(&x.count))
            .then(x.key.cmp(&y.key))
            .then(x.value.cmp(&y.value))
    });
    over.truncate(top);
    let has = !baseline.is_empty();
    WindowComparison {
        baseline_empty: !has,
        notice: (!has).then(|| {
            "no baseline data: the baseline window holds no spans of this service, so there are no deltas; attribute values are ranked against the window's other spans".to_string()
        }),
        delta_p50_ns: has.then(|| w.p50_ns - b.p50_ns),
        delta_p95_ns: has.then(|| w.p95_ns - b.p95_ns),
        delta_p99_ns: has.then(|| w.p99_ns - b.p99_ns),
        delta_error_rate: has.then_some(w.error_rate - b.error_rate),
        delta_per_second: has.then_some(w.per_second - b.per_second),
        slow_threshold_ns: threshold,
        selected: ns,
        window: w,
        baseline: b,
        overrepresented: over,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static NAMES: std::cell::RefCell<Attributes> = std::cell::RefCell::default();
    }

    fn f(ms: i64, error: bool, attrs: &[(&str, &str)]) -> SpanFacts {
        SpanFacts {
            duration_ns: ms * 1_000_000,
            error,
            attributes: attrs
                .iter()
                .map(|(k, v)| NAMES.with(|n| n.borrow_mut().intern(k, v).0))
                .collect(),
        }
    }

    fn names() -> Attributes {
        NAMES.with(|n| n.borrow().clone())
    }

    #[test]
    fn the_attribute_only_slow_spans_have_ranks_first() {
        // Baseline: 100 spans of 10 ms on shards 1 and 2.
        let baseline: Vec<SpanFacts> = (0..100)
            .map(|i| {
                f(
                    10,
                    false,
                    &[
                        ("db.shard", if i % 2 == 0 { "1" } else { "2" }),
                        ("region", "eu"),
                    ],
                )
            })
            .collect();
        // Window: the same, plus 20 slow spans (300 ms), all on shard 7, and 5 failures.
        let mut window = baseline.clone();
        for _ in 0..20 {
            window.push(f(300, false, &[("db.shard", "7"), ("region", "eu")]));
        }
        for _ in 0..5 {
            window.push(f(10, true, &[("db.shard", "1"), ("region", "eu")]));
        }
        let c = compare(&window, 60.0, &baseline, 60.0, &names(), 10, 2);
        assert_eq!(c.baseline.p95_ns, 10_000_000);
        assert_eq!(c.selected, 25, "20 slow + 5 failed");
        let top = &c.overrepresented[0];
        assert_eq!((top.key.as_str(), top.value.as_str()), ("db.shard", "7"));
        assert_eq!(top.in_selection, 0.8);
        assert_eq!(top.in_baseline, 0.0);
        // region=eu is everywhere: not over-represented.
        assert!(
            c.overrepresented.iter().all(|o| o.key != "region"),
            "{:?}",
            c.overrepresented
        );
        assert_eq!(c.window.spans, 125);
        assert!((c.delta_per_second.unwrap() - 25.0 / 60.0).abs() < 1e-12);
        assert!((c.delta_error_rate.unwrap() - 0.04).abs() < 1e-12);
        assert!(c.delta_p99_ns.unwrap() > 0);
        assert!(!c.baseline_empty && c.notice.is_none());
    }

    #[test]
    fn an_empty_baseline_is_said_not_compared_against() {
        // 100 spans; the 5 slowest (above the window's own p95) carry pod=b, the rest pod=a.
        let window: Vec<SpanFacts> = (1..=100)
            .map(|i| {
                f(
                    i,
                    false,
                    &[("pod", if i > 95 { "b" } else { "a" }), ("region", "eu")],
                )
            })
            .collect();
        let c = compare(&window, 10.0, &[], 10.0, &names(), 5, 1);
        assert_eq!(c.slow_threshold_ns, 95_000_000);
        assert_eq!(c.selected, 5);
        assert!(c.baseline_empty);
        assert!(c.notice.as_deref().unwrap().contains("no baseline data"));
        assert_eq!(c.delta_p50_ns, None, "no delta against zero");
        assert_eq!(c.delta_error_rate, None);
        // Ranked against the window's other 95 spans: pod=b stands out, region=eu
        // (everywhere) does not — against an empty baseline every value was +100%.
        let top: Vec<(&str, &str)> = c
            .overrepresented
            .iter()
            .map(|o| (o.key.as_str(), o.value.as_str()))
            .collect();
        assert_eq!(top, [("pod", "b")]);
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["deltaP95Ns"], serde_json::Value::Null);
        assert_eq!(json["baselineEmpty"], true);
    }
}
