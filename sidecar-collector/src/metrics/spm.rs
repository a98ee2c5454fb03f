//! Jaeger's SPM answers (call rate, error rate, latency quantiles over time)
//! computed from the per-minute history, the way Jaeger's Prometheus reader
//! would from the spanmetrics series: at each step, the minutes inside
//! `(t - ratePer, t]` (a minute partly inside counts by the part inside).
//!
//! A step whose window holds no data has no point (Prometheus has no sample
//! there: gaps stay gaps, and a series starts at its first minute with data),
//! and a rate is taken over the part of the window the series existed in, so
//! a steady service that started mid-window reads its true rate at every
//! point (the Jaeger UI's operations table averages the points).
//!
//! Every loop is bounded before it starts: points per series by `MAX_POINTS`,
//! the answer's bytes by the read's budget, its time by the read's deadline.

use crate::store::history::MinuteRow;
use crate::store::{ReadCtl, StoreError};
use meshtrace_proto::jaeger_json::{GaugeValue, Label, Metric, MetricFamily, MetricPoint};
use std::collections::BTreeMap;

/// What is asked (Jaeger's parameters, parsed and bounded by [`SpmQuery::check`]:
/// every time inside the calendar, every duration positive, no name twice).
#[derive(Debug, Clone)]
pub struct SpmQuery {
    /// Distinct service names.
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

/// Distinct services one request may ask for.
pub const MAX_SERVICES: usize = 100;

/// What one point of an answer takes (its struct, its RFC 3339 text, its JSON).
const POINT_COST: u64 = 160;

impl SpmQuery {
    /// The minutes (unix seconds) whose rows this query reads.
    pub fn minutes(&self) -> (i64, i64) {
        let first = (self.start_ms().saturating_sub(self.rate_per_ms) / 1000 - 60).max(0);
        (first - first.rem_euclid(60), self.end_ms / 1000)
    }

    /// The first point's time (ms).
    pub fn start_ms(&self) -> i64 {
        self.end_ms.saturating_sub(self.lookback_ms)
    }

    /// Points per series: `lookback / step + 1`, at most [`MAX_POINTS`] once checked.
    pub fn points(&self) -> i64 {
        self.lookback_ms / self.step_ms.max(1) + 1
    }

    /// Why the query cannot be answered, naming the parameter.
    pub fn check(&self) -> Result<(), String> {
        use crate::model::LAST_RFC3339_MS as MAX_MS;
        if self.step_ms <= 0 {
            return Err("unable to parse param 'step': must be more than 0".into());
        }
        if self.lookback_ms <= 0 {
            return Err("unable to parse param 'lookback': must be more than 0".into());
        }
        if self.rate_per_ms <= 0 {
            return Err("unable to parse param 'ratePer': must be more than 0".into());
        }
        if !(0..=MAX_MS).contains(&self.end_ms) {
            return Err(format!(
                "unable to parse param 'endTs': {} ms is outside 1970-01-01 to 9999-12-31",
                self.end_ms
            ));
        }
        for (name, v) in [
            ("lookback", self.lookback_ms),
            ("step", self.step_ms),
            ("ratePer", self.rate_per_ms),
        ] {
            if v > MAX_MS {
                return Err(format!(
                    "unable to parse param '{name}': {v} ms is longer than the calendar"
                ));
            }
        }
        if self.lookback_ms > self.end_ms {
            return Err(format!(
                "unable to parse param 'lookback': {} ms before endTs {} reaches before 1970",
                self.lookback_ms, self.end_ms
            ));
        }
        if self.points() > MAX_POINTS {
            return Err(format!(
                "exceeded maximum resolution of {MAX_POINTS} points per timeseries: lookback/step is {}; increase 'step'",
                self.lookback_ms / self.step_ms
            ));
        }
        if self.services.len() > MAX_SERVICES {
            return Err(format!(
                "unable to parse param 'service': {} distinct services, more than {MAX_SERVICES}",
                self.services.len()
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

/// Per group (service, operation), per minute, the sums.
type Groups = BTreeMap<(String, String), BTreeMap<i64, Sums>>;

fn group_rows(rows: &[MinuteRow], q: &SpmQuery) -> Groups {
    let mut groups = Groups::new();
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
    groups
}

/// The family Jaeger answers for `measure`, from history rows (any order).
/// `now_s` (seconds since the epoch, with its fraction) tells the minute in
/// progress, whose length so far is its weight: a query at `now` counts all of it.
/// The answer's points are charged to `ctl` before they are made (a refusal
/// names the budget), and the deadline is checked at every series.
pub fn compute(
    rows: &[MinuteRow],
    q: &SpmQuery,
    measure: Measure,
    bounds_ms: &[f64],
    now_s: f64,
    ctl: &ReadCtl,
) -> Result<MetricFamily, StoreError> {
    let groups = group_rows(rows, q);
    let points = q.points().clamp(0, MAX_POINTS) as u64;
    // A point needs data in its window: a minute reaches the points of the next
    // `(60 s + ratePer) / step + 1` steps at most.
    let per_minute = ((60_000 + q.rate_per_ms) / q.step_ms.max(1)) as u64 + 1;
    let bound: u64 = groups
        .values()
        .map(|m| points.min((m.len() as u64).saturating_mul(per_minute)))
        .fold(0u64, u64::saturating_add);
    ctl.charge(bound.saturating_mul(POINT_COST))?;
    let start = q.start_ms();
    let mut metrics = Vec::with_capacity(groups.len());
    for ((service, operation), minutes) in groups {
        ctl.check()?;
        // The series exists from the start of its first minute with data.
        let born = minutes.keys().next().map_or(f64::MAX, |m| *m as f64);
        let mut series = Vec::new();
        for i in 0..points as i64 {
            // start + i·step ≤ end ≤ MAX_MS: no overflow (checked by `SpmQuery::check`).
            let t = start + i * q.step_ms;
            let hi = t as f64 / 1000.0;
            let lo = hi - q.rate_per_ms as f64 / 1000.0;
            let mut w = Sums::default();
            let mut any = false;
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
                any = true;
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
            if !any {
                continue;
            }
            let value = match measure {
                // Over the part of the window the series existed in.
                Measure::Calls => Some(w.calls / (hi - lo.max(born))),
                Measure::Errors => (w.calls > 0.0).then(|| w.errors / w.calls),
                Measure::Latency(quantile) => quantile_ms(quantile, &w.buckets, bounds_ms),
            };
            if let Some(v) = value.filter(|v| v.is_finite()) {
                series.push(MetricPoint {
                    gauge_value: GaugeValue { double_value: v },
                    timestamp: timestamp(t),
                });
            }
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
            metric_points: series,
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
    Ok(MetricFamily {
        name: format!("{prefix}_{name}"),
        kind: "GAUGE".into(),
        help: format!("{help}{suffix}"),
        metrics,
    })
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

/// RFC 3339 in UTC, as protobuf JSON writes a timestamp. Past year 9999
/// (which `SpmQuery::check` refuses) the formatter fails: the text is then
/// empty, never a panic.
fn timestamp(ms: i64) -> String {
    use std::fmt::Write;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    let mut out = String::new();
    let written = if ms % 1000 == 0 {
        write!(out, "{}", humantime::format_rfc3339_seconds(t))
    } else {
        write!(out, "{}", humantime::format_rfc3339_millis(t))
    };
    if written.is_err() {
        out.clear();
    }
    out
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
        let calls = compute(
            &rows,
            &q,
            Measure::Calls,
            &[10.0, 20.0],
            now,
            &ReadCtl::unbounded(),
        )
        .unwrap();
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
        let errors = compute(
            &rows,
            &q,
            Measure::Errors,
            &[10.0, 20.0],
            now,
            &ReadCtl::unbounded(),
        )
        .unwrap();
        assert_eq!(errors.name, "service_error_rate");
        assert!((errors.metrics[0].metric_points[0].gauge_value.double_value - 0.1).abs() < 1e-9);
        let p95 = compute(
            &rows,
            &q,
            Measure::Latency(0.95),
            &[10.0, 20.0],
            now,
            &ReadCtl::unbounded(),
        )
        .unwrap();
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
            &ReadCtl::unbounded(),
        )
        .unwrap();
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
        let f = compute(
            &rows,
            &q,
            Measure::Calls,
            &[10.0, 20.0],
            10_000.0,
            &ReadCtl::unbounded(),
        )
        .unwrap();
        assert_eq!(f.name, "service_operation_call_rate");
        assert_eq!(f.metrics.len(), 2);
        assert_eq!(f.metrics[0].labels[1].name, "operation");
        // At 480 s and 540 s nothing happened yet: no point (Prometheus has no
        // sample there); at 600 s op x's 60 calls over the minute it existed: 1/s.
        assert_eq!(f.metrics[0].metric_points.len(), 1, "{f:?}");
        assert_eq!(
            f.metrics[0].metric_points[0].timestamp,
            "1970-01-01T00:10:00Z"
        );
        assert_eq!(f.metrics[0].metric_points[0].gauge_value.double_value, 1.0);
        let l = compute(
            &rows,
            &q,
            Measure::Latency(0.5),
            &[10.0, 20.0],
            10_000.0,
            &ReadCtl::unbounded(),
        )
        .unwrap();
        assert_eq!(l.metrics[0].metric_points.len(), 1, "{l:?}");
    }

    #[test]
    fn the_minute_in_progress_counts_whole_at_now() {
        // 60 calls recorded in the first 0.3 s of minute 600; asked at 600.3 s with a
        // 60 s window: all 60 are in the window (they are all the minute has so far).
        // (The series exists since minute 0, so the whole window is its.)
        let rows = vec![row(0, "a", "op", 2, 1, 0), row(600, "a", "op", 2, 60, 0)];
        let q = SpmQuery {
            end_ms: 600_300,
            lookback_ms: 60_000,
            step_ms: 60_000,
            rate_per_ms: 60_000,
            ..query(false)
        };
        let f = compute(
            &rows,
            &q,
            Measure::Calls,
            &[10.0, 20.0],
            600.3,
            &ReadCtl::unbounded(),
        )
        .unwrap();
        let last = f.metrics[0]
            .metric_points
            .last()
            .unwrap()
            .gauge_value
            .double_value;
        assert!((last * 60.0 - 60.0).abs() < 1e-9, "{last}");
    }

    #[test]
    fn a_service_started_mid_window_reads_its_true_rate_and_gaps_stay_gaps() {
        // Hand-computed: 30 calls a minute (0.5/s) from minute 300 s to 540 s; nothing
        // before. end 600 s, lookback 600 s, step 60 s, ratePer 600 s: points at 0, 60,
        // …, 600 s. Windows ending at 0–300 s hold no data: no point. From 360 s on, the
        // window holds k full minutes of a series born at 300 s: 30·k / (60·k) = 0.5.
        let rows: Vec<MinuteRow> = (5..10).map(|m| row(m * 60, "a", "op", 2, 30, 0)).collect();
        let q = SpmQuery {
            end_ms: 600_000,
            lookback_ms: 600_000,
            step_ms: 60_000,
            rate_per_ms: 600_000,
            ..query(false)
        };
        let f = compute(
            &rows,
            &q,
            Measure::Calls,
            &[10.0, 20.0],
            10_000.0,
            &ReadCtl::unbounded(),
        )
        .unwrap();
        let points = &f.metrics[0].metric_points;
        let times: Vec<&str> = points.iter().map(|p| p.timestamp.as_str()).collect();
        assert_eq!(
            times,
            [
                "1970-01-01T00:06:00Z",
                "1970-01-01T00:07:00Z",
                "1970-01-01T00:08:00Z",
                "1970-01-01T00:09:00Z",
                "1970-01-01T00:10:00Z"
            ]
        );
        for p in points {
            assert!((p.gauge_value.double_value - 0.5).abs() < 1e-12, "{p:?}");
        }
        // The Jaeger UI's operations table: the mean of the points is the true rate.
        let mean = points
            .iter()
            .map(|p| p.gauge_value.double_value)
            .sum::<f64>()
            / points.len() as f64;
        assert!((mean - 0.5).abs() < 1e-12, "{mean}");

        // A gap: minutes 0–1 and 4–5 have data, 2–3 none; 60 s windows, 60 s steps.
        let rows: Vec<MinuteRow> = [0, 1, 4, 5]
            .iter()
            .map(|m| row(m * 60, "a", "op", 2, 60, 6))
            .collect();
        let q = SpmQuery {
            end_ms: 360_000,
            lookback_ms: 300_000,
            step_ms: 60_000,
            rate_per_ms: 60_000,
            ..query(false)
        };
        for measure in [Measure::Calls, Measure::Errors, Measure::Latency(0.5)] {
            let f = compute(
                &rows,
                &q,
                measure,
                &[10.0, 20.0],
                10_000.0,
                &ReadCtl::unbounded(),
            )
            .unwrap();
            let times: Vec<&str> = f.metrics[0]
                .metric_points
                .iter()
                .map(|p| p.timestamp.as_str())
                .collect();
            // Points at 60…360 s: windows (0,60], (60,120], (240,300], (300,360] hold
            // minutes 0, 1, 4, 5; (120,180] and (180,240] hold none: no point.
            assert_eq!(
                times,
                [
                    "1970-01-01T00:01:00Z",
                    "1970-01-01T00:02:00Z",
                    "1970-01-01T00:05:00Z",
                    "1970-01-01T00:06:00Z"
                ],
                "{measure:?}"
            );
        }
    }

    #[test]
    fn the_answer_is_charged_before_it_is_made() {
        let mut q = query(true);
        q.lookback_ms = 600_000;
        q.step_ms = 1;
        q.check().unwrap_err();
        q.step_ms = 60;
        q.check().unwrap();
        // 50 series of 10 minutes each: each minute reaches (60 s + 120 s) / 60 ms + 1 =
        // 3,001 points, so each series may have all its 10,001 points: 50 × 10,001 ×
        // 160 B = 80 MB, refused by a 10 MB budget before any point is made.
        let rows: Vec<MinuteRow> = (0..50)
            .flat_map(|i| (0..10).map(move |m| row(m * 60, "a", &format!("op{i}"), 2, 60, 0)))
            .collect();
        let small = ReadCtl::new(None, 10 << 20, String::new());
        let e = compute(&rows, &q, Measure::Calls, &[10.0, 20.0], 10_000.0, &small).unwrap_err();
        assert!(matches!(e, StoreError::OverBudget { .. }), "{e}");
        let late = ReadCtl::new(
            Some(std::time::Instant::now()),
            u64::MAX,
            "query.timeout (1s)".into(),
        );
        let e = compute(&rows, &q, Measure::Calls, &[10.0, 20.0], 10_000.0, &late).unwrap_err();
        assert!(e.to_string().contains("query.timeout"), "{e}");
    }

    #[test]
    fn no_time_past_the_calendar_and_no_overflow() {
        let ok = query(false);
        for (label, q) in [
            (
                "step",
                SpmQuery {
                    end_ms: 10_000,
                    lookback_ms: 1,
                    step_ms: i64::MAX,
                    ..ok.clone()
                },
            ),
            (
                "endTs",
                SpmQuery {
                    end_ms: 253_402_304_400_000,
                    lookback_ms: 60_000,
                    ..ok.clone()
                },
            ),
            (
                "lookback",
                SpmQuery {
                    end_ms: 10_000,
                    lookback_ms: 20_000,
                    ..ok.clone()
                },
            ),
            (
                "ratePer",
                SpmQuery {
                    rate_per_ms: i64::MAX,
                    ..ok.clone()
                },
            ),
        ] {
            let e = q.check().unwrap_err();
            assert!(e.contains(&format!("'{label}'")), "{label}: {e}");
        }
        // The last writable instant is written, not a panic.
        assert_eq!(
            timestamp(crate::model::LAST_RFC3339_MS),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(
            timestamp(crate::model::LAST_RFC3339_MS + 1),
            "",
            "past 9999: empty, no panic"
        );
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
