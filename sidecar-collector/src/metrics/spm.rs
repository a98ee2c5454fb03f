//! Jaeger's SPM answers (call rate, error rate, latency quantiles over time)
//! computed from the per-minute history, the way Jaeger's Prometheus reader
//! would from the spanmetrics series: at each step, the minutes inside
//! `(t - ratePer, t]` (a minute partly inside counts by the part inside).

use crate::store::history::MinuteRow;
use meshtrace_proto::jaeger_json::{GaugeValue, Label, Metric, MetricFamily, MetricPoint};
use std::collections::BTreeMap;

/// What is asked (Jaeger's parameters, parsed).
#[derive(Debug, Clone)]
pub struct SpmQuery {
    pub services: Vec<String>,
    pub group_by_operation: bool,
    /// OTLP span kinds to include.
    pub span_kinds: Vec<i32>,
    pub end_ms: i64,
    pub lookback_ms: i64,
    pub step_ms: i64,
    pub rate_per_ms: i64,
    /// Count calls adjusted for sampling (meshtrace's `adjusted=true`).
    pub adjusted: bool,
}

/// Which measure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Measure {
    Calls,
    Errors,
    /// The quantile, in (0, 1].
    Latency(f64),
}

/// Points per series at most (Prometheus's limit for a range query).
pub const MAX_POINTS: i64 = 11_000;

/// The history's resolution: a point per minute is all it has.
pub const MIN_STEP_MS: i64 = 60_000;

impl SpmQuery {
    /// The minutes (unix seconds) whose rows this query reads.
    pub fn minutes(&self) -> (i64, i64) {
        let first = (self.end_ms - self.lookback_ms - self.rate_per_ms) / 1000 - 60;
        (first - first.rem_euclid(60), self.end_ms / 1000)
    }

    /// Why the query cannot be answered, naming the parameter.
    pub fn check(&self) -> Result<(), String> {
        if self.step_ms <= 0 {
            return Err("unable to parse param 'step': must be more than 0".into());
        }
        if self.lookback_ms <= 0 {
            return Err("unable to parse param 'lookback': must be more than 0".into());
        }
        if self.rate_per_ms <= 0 {
            return Err("unable to parse param 'ratePer': must be more than 0".into());
        }
        if self.lookback_ms / self.step_ms + 1 > MAX_POINTS {
            return Err(format!(
                "exceeded maximum resolution of {MAX_POINTS} points per timeseries: lookback/step is {}; increase 'step'",
                self.lookback_ms / self.step_ms
            ));
        }
        Ok(())
    }
}

#[derive(Default, Clone)]
struct Sums {
    calls: f64,
    errors: f64,
    buckets: Vec<f64>,
}

/// The family Jaeger answers for `measure`, from history rows (any order).
/// `now_s` (seconds since the epoch, with its fraction) tells the minute in
/// progress, whose length so far is its weight: a query at `now` counts all of it.
pub fn compute(
    rows: &[MinuteRow],
    q: &SpmQuery,
    measure: Measure,
    bounds_ms: &[f64],
    now_s: f64,
) -> MetricFamily {
    // group → minute → sums.
    let mut groups: BTreeMap<(String, String), BTreeMap<i64, Sums>> = BTreeMap::new();
    for r in rows {
        if !q.span_kinds.contains(&r.kind) || !q.services.contains(&r.service) {
            continue;
        }
        let op = if q.group_by_operation {
            r.operation.clone()
        } else {
            String::new()
        };
        let s = groups
            .entry((r.service.clone(), op))
            .or_default()
            .entry(r.minute)
            .or_default();
        if q.adjusted {
            s.calls += r.adjusted_calls;
            s.errors += r.adjusted_errors;
        } else {
            s.calls += r.calls as f64;
            s.errors += r.errors as f64;
        }
        if s.buckets.len() < r.buckets.len() {
            s.buckets.resize(r.buckets.len(), 0.0);
        }
        for (a, b) in s.buckets.iter_mut().zip(&r.buckets) {
            *a += *b as f64;
        }
    }
    let start = q.end_ms - q.lookback_ms;
    let mut metrics = Vec::new();
    for ((service, operation), minutes) in groups {
        let mut points = Vec::new();
        let mut t = start;
        while t <= q.end_ms {
            let hi = t as f64 / 1000.0;
            let lo = hi - q.rate_per_ms as f64 / 1000.0;
            let mut w = Sums::default();
            for (m, s) in minutes.range((lo as i64 - 60)..=(hi as i64)) {
                let len = if (*m + 60) as f64 > now_s {
                    (now_s - *m as f64).max(0.001)
                } else {
                    60.0
                };
                let from = (*m as f64).max(lo);
                let to = ((*m as f64) + len).min(hi);
                if to <= from {
                    continue;
                }
                let part = (to - from) / len;
                w.calls += s.calls * part;
                w.errors += s.errors * part;
                if w.buckets.len() < s.buckets.len() {
                    w.buckets.resize(s.buckets.len(), 0.0);
                }
                for (a, b) in w.buckets.iter_mut().zip(&s.buckets) {
                    *a += b * part;
                }
            }
            let value = match measure {
                Measure::Calls => Some(w.calls / (hi - lo)),
                Measure::Errors => (w.calls > 0.0).then(|| w.errors / w.calls),
                Measure::Latency(quantile) => quantile_ms(quantile, &w.buckets, bounds_ms),
            };
            if let Some(v) = value.filter(|v| v.is_finite()) {
                points.push(MetricPoint {
                    gauge_value: GaugeValue { double_value: v },
                    timestamp: timestamp(t),
                });
            }
            t += q.step_ms;
        }
        let mut labels = vec![Label {
            name: "service_name".into(),
            value: service,
        }];
        if q.group_by_operation {
            labels.push(Label {
                name: "operation".into(),
                value: operation,
            });
        }
        metrics.push(Metric {
            labels,
            metric_points: points,
        });
    }
    let (name, help) = match measure {
        Measure::Calls => ("call_rate", "calls/sec, grouped by service".to_string()),
        Measure::Errors => (
            "error_rate",
            "error rate, computed as a fraction of errors/sec over calls/sec, grouped by service"
                .to_string(),
        ),
        Measure::Latency(q) => (
            "latencies",
            format!("{q:.2}th quantile latency, grouped by service"),
        ),
    };
    let (prefix, suffix) = if q.group_by_operation {
        ("service_operation", " & operation")
    } else {
        ("service", "")
    };
    MetricFamily {
        name: format!("{prefix}_{name}"),
        kind: "GAUGE".into(),
        help: format!("{help}{suffix}"),
        metrics,
    }
}

/// `histogram_quantile` as Prometheus computes it: linear within the bucket
/// the rank falls in; the +Inf bucket answers the highest finite bound.
pub fn quantile_ms(q: f64, buckets: &[f64], bounds_ms: &[f64]) -> Option<f64> {
    let total: f64 = buckets.iter().sum();
    if total <= 0.0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total;
    let mut cumulative = 0.0;
    for (i, count) in buckets.iter().enumerate() {
        let before = cumulative;
        cumulative += count;
        if cumulative >= rank && *count > 0.0 {
            let Some(upper) = bounds_ms.get(i) else {
                return bounds_ms.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { bounds_ms[i - 1] };
            return Some(lower + (upper - lower) * (rank - before) / count);
        }
    }
    bounds_ms.last().copied()
}

/// RFC 3339 in UTC, as protobuf JSON writes a timestamp.
fn timestamp(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    if ms % 1000 == 0 {
        humantime::format_rfc3339_seconds(t).to_string()
    } else {
        humantime::format_rfc3339_millis(t).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(minute: i64, service: &str, op: &str, kind: i32, calls: u64, errors: u64) -> MinuteRow {
        MinuteRow {
            minute,
            service: service.into(),
            operation: op.into(),
            kind,
            calls,
            errors,
            adjusted_calls: calls as f64 * 10.0,
            adjusted_errors: errors as f64 * 10.0,
            // 10 ms buckets: all calls in (10, 20].
            buckets: vec![0, calls, 0],
        }
    }

    fn query(group: bool) -> SpmQuery {
        SpmQuery {
            services: vec!["a".into()],
            group_by_operation: group,
            span_kinds: vec![2],
            end_ms: 600_000,
            lookback_ms: 120_000,
            step_ms: 60_000,
            rate_per_ms: 120_000,
            adjusted: false,
        }
    }

    #[test]
    fn rates_errors_and_quantiles_per_window() {
        // Minutes 0..10: 60 calls a minute (1/s), 6 errors; client spans and another service ignored.
        let mut rows = Vec::new();
        for m in 0..10 {
            rows.push(row(m * 60, "a", "op1", 2, 60, 6));
            rows.push(row(m * 60, "a", "op1", 3, 999, 999));
            rows.push(row(m * 60, "b", "op1", 2, 999, 999));
        }
        let now = 10_000.0;
        let q = query(false);
        let calls = compute(&rows, &q, Measure::Calls, &[10.0, 20.0], now);
        assert_eq!(calls.name, "service_call_rate");
        assert_eq!(calls.metrics.len(), 1);
        let m = &calls.metrics[0];
        assert_eq!(m.labels[0].value, "a");
        // Points at 480 s, 540 s, 600 s.
        assert_eq!(m.metric_points.len(), 3);
        assert_eq!(m.metric_points[0].timestamp, "1970-01-01T00:08:00Z");
        for p in &m.metric_points {
            assert!((p.gauge_value.double_value - 1.0).abs() < 1e-9, "{p:?}");
        }
        let errors = compute(&rows, &q, Measure::Errors, &[10.0, 20.0], now);
        assert_eq!(errors.name, "service_error_rate");
        assert!((errors.metrics[0].metric_points[0].gauge_value.double_value - 0.1).abs() < 1e-9);
        let p95 = compute(&rows, &q, Measure::Latency(0.95), &[10.0, 20.0], now);
        assert_eq!(p95.name, "service_latencies");
        assert_eq!(p95.help, "0.95th quantile latency, grouped by service");
        // Uniform in (10, 20]: p95 = 19.5.
        assert!((p95.metrics[0].metric_points[0].gauge_value.double_value - 19.5).abs() < 1e-9);
        let adjusted = compute(
            &rows,
            &SpmQuery {
                adjusted: true,
                ..q
            },
            Measure::Calls,
            &[10.0, 20.0],
            now,
        );
        assert!(
            (adjusted.metrics[0].metric_points[0]
                .gauge_value
                .double_value
                - 10.0)
                .abs()
                < 1e-9
        );
    }

    #[test]
    fn grouped_by_operation_and_empty_windows() {
        let rows = vec![row(540, "a", "x", 2, 60, 0), row(540, "a", "y", 2, 30, 0)];
        let q = query(true);
        let f = compute(&rows, &q, Measure::Calls, &[10.0, 20.0], 10_000.0);
        assert_eq!(f.name, "service_operation_call_rate");
        assert_eq!(f.metrics.len(), 2);
        assert_eq!(f.metrics[0].labels[1].name, "operation");
        // At 480 s nothing happened yet: rate 0; latency has no point there.
        assert_eq!(f.metrics[0].metric_points[0].gauge_value.double_value, 0.0);
        let l = compute(&rows, &q, Measure::Latency(0.5), &[10.0, 20.0], 10_000.0);
        assert_eq!(l.metrics[0].metric_points.len(), 1, "{l:?}");
    }

    #[test]
    fn the_minute_in_progress_counts_whole_at_now() {
        // 60 calls recorded in the first 0.3 s of minute 600; asked at 600.3 s with a
        // 60 s window: all 60 are in the window (they are all the minute has so far).
        let rows = vec![row(600, "a", "op", 2, 60, 0)];
        let q = SpmQuery {
            end_ms: 600_300,
            lookback_ms: 60_000,
            step_ms: 60_000,
            rate_per_ms: 60_000,
            ..query(false)
        };
        let f = compute(&rows, &q, Measure::Calls, &[10.0, 20.0], 600.3);
        let last = f.metrics[0]
            .metric_points
            .last()
            .unwrap()
            .gauge_value
            .double_value;
        assert!((last * 60.0 - 60.0).abs() < 1e-9, "{last}");
    }

    #[test]
    fn quantiles_like_prometheus() {
        let b = [10.0, 20.0, 50.0];
        assert_eq!(quantile_ms(0.5, &[10.0, 10.0, 0.0, 0.0], &b), Some(10.0));
        assert_eq!(quantile_ms(0.75, &[10.0, 10.0, 0.0, 0.0], &b), Some(15.0));
        assert_eq!(
            quantile_ms(0.99, &[0.0, 0.0, 0.0, 5.0], &b),
            Some(50.0),
            "+Inf answers the top bound"
        );
        assert_eq!(quantile_ms(0.5, &[0.0; 4], &b), None);
    }

    #[test]
    fn limits_name_the_parameter() {
        let mut q = query(false);
        q.step_ms = 1;
        assert!(q.check().unwrap_err().contains("step"));
        q.step_ms = 0;
        assert!(q.check().unwrap_err().contains("'step'"));
    }
}
