//! The critical-path answer of one trace, as the collector's
//! `/api/analysis/critical-path/{id}` and the UI's in-browser analysis (this
//! crate compiled to wasm: `analysis/wasm`) both give it: skew adjusted first,
//! then the path, each span's self and critical-path time, and the warnings.
//! Ids are hex, times nanoseconds since the epoch as decimal strings (as OTLP
//! JSON writes them).

use crate::critical::{critical_path, critical_times, self_times};
use crate::skew;
use crate::trace::{Span, Trace, TraceWarning};
use serde::Serialize;

/// A stretch of the critical path spent in one span.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PathSegment {
    pub span_id: String,
    pub start_time_unix_nano: String,
    pub end_time_unix_nano: String,
}

/// What one span contributes.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpanTimes {
    pub span_id: String,
    pub service: String,
    pub operation: String,
    pub self_ns: i64,
    pub critical_ns: i64,
    /// Start after clock-skew adjustment (ns).
    pub adjusted_start_unix_nano: String,
}

/// One (service, operation) of a trace: Jaeger's Trace Statistics row.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OperationStats {
    pub service: String,
    pub operation: String,
    pub count: u64,
    /// Sum of the spans' durations (ns).
    pub total_ns: i64,
    /// Sum of their self times: their durations less their children's (ns).
    pub self_ns: i64,
    pub min_ns: i64,
    pub avg_ns: i64,
    pub max_ns: i64,
}

/// The whole answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CriticalPathReport {
    pub trace_id: String,
    /// The root's duration after skew adjustment (ns).
    pub duration_ns: i64,
    pub critical_path: Vec<PathSegment>,
    pub spans: Vec<SpanTimes>,
    /// Per (service, operation), the largest total first.
    pub statistics: Vec<OperationStats>,
    pub warnings: Vec<TraceWarning>,
}

/// Per (service, operation) of `t`: count, total, self (`own`), min, average
/// and max duration; the largest total first (ties by name).
fn statistics(t: &Trace, own: &[i64]) -> Vec<OperationStats> {
    let mut by: std::collections::HashMap<(&str, &str), OperationStats> = Default::default();
    for (s, own) in t.spans.iter().zip(own) {
        let d = s.duration();
        let e = by
            .entry((&s.service, &s.operation))
            .or_insert_with(|| OperationStats {
                service: s.service.clone(),
                operation: s.operation.clone(),
                count: 0,
                total_ns: 0,
                self_ns: 0,
                min_ns: i64::MAX,
                avg_ns: 0,
                max_ns: i64::MIN,
            });
        e.count += 1;
        e.total_ns = e.total_ns.saturating_add(d);
        e.self_ns = e.self_ns.saturating_add(*own);
        e.min_ns = e.min_ns.min(d);
        e.max_ns = e.max_ns.max(d);
    }
    let mut out: Vec<OperationStats> = by
        .into_values()
        .map(|mut e| {
            e.avg_ns = e.total_ns / e.count.max(1) as i64;
            e
        })
        .collect();
    out.sort_by(|a, b| {
        b.total_ns
            .cmp(&a.total_ns)
            .then_with(|| (&a.service, &a.operation).cmp(&(&b.service, &b.operation)))
    });
    out
}

/// A span id as the answers write it: 16 hex digits.
pub fn hex(id: u64) -> String {
    format!("{id:016x}")
}

/// The process whose clock a span was timed by: its service and its pod, host or
/// instance (`attr` reads a resource attribute), the first one present.
pub fn process_of(service: &str, attr: impl Fn(&str) -> Option<String>) -> String {
    let instance = attr("k8s.pod.name")
        .or_else(|| attr("host.name"))
        .or_else(|| attr("service.instance.id"))
        .unwrap_or_default();
    format!("{service}/{instance}")
}

/// The report of the trace made of `spans`.
pub fn critical_path_report(trace_id: String, spans: Vec<Span>) -> CriticalPathReport {
    let mut t = Trace::new(spans);
    skew::adjust(&mut t);
    let path = critical_path(&t);
    let crit = critical_times(&t, &path);
    let own = self_times(&t);
    CriticalPathReport {
        trace_id,
        duration_ns: t.root.map_or(0, |r| t.spans[r].duration()),
        critical_path: path
            .iter()
            .map(|s| PathSegment {
                span_id: hex(t.spans[s.span].id),
                start_time_unix_nano: s.start.to_string(),
                end_time_unix_nano: s.end.to_string(),
            })
            .collect(),
        spans: t
            .spans
            .iter()
            .enumerate()
            .map(|(i, s)| SpanTimes {
                span_id: hex(s.id),
                service: s.service.clone(),
                operation: s.operation.clone(),
                self_ns: own[i],
                critical_ns: crit[i],
                adjusted_start_unix_nano: s.start.to_string(),
            })
            .collect(),
        statistics: statistics(&t, &own),
        warnings: t.warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::fixtures::span;

    #[test]
    fn the_report_names_the_path_and_each_spans_share() {
        // root 0..100 waits for a child 10..60 (another process), then works alone.
        let mut child = span(2, Some(1), 10, 60, "b");
        child.process = "b/pod".into();
        let report = critical_path_report("t".into(), vec![span(1, None, 0, 100, "a"), child]);
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(v["durationNs"], 100);
        let segs: Vec<(String, String, String)> = report
            .critical_path
            .iter()
            .map(|s| {
                (
                    s.span_id.clone(),
                    s.start_time_unix_nano.clone(),
                    s.end_time_unix_nano.clone(),
                )
            })
            .collect();
        let seg = |id: &str, a: &str, b: &str| (id.to_string(), a.to_string(), b.to_string());
        assert_eq!(
            segs,
            vec![
                seg("0000000000000001", "0", "10"),
                seg("0000000000000002", "10", "60"),
                seg("0000000000000001", "60", "100"),
            ]
        );
        assert_eq!(v["spans"][0]["selfNs"], 50);
        assert_eq!(v["spans"][0]["criticalNs"], 50);
        assert_eq!(v["spans"][1]["criticalNs"], 50);
        assert_eq!(v["warnings"], serde_json::json!([]));
    }

    #[test]
    fn statistics_sum_each_operations_spans_and_their_self_time() {
        // root 0..100 calls a twice (10..40, 20..90, overlapping) and b 95..99.
        let mut spans = vec![
            span(1, None, 0, 100, "r"),
            span(2, Some(1), 10, 40, "a"),
            span(3, Some(1), 20, 90, "a"),
            span(4, Some(1), 95, 99, "b"),
        ];
        for s in &mut spans {
            s.operation = format!("op-{}", s.service);
        }
        let report = critical_path_report("t".into(), spans);
        let st = |service: &str, count, total, own, min, avg, max| OperationStats {
            service: service.into(),
            operation: format!("op-{service}"),
            count,
            total_ns: total,
            self_ns: own,
            min_ns: min,
            avg_ns: avg,
            max_ns: max,
        };
        assert_eq!(
            report.statistics,
            vec![
                // The root's self time: 100 less its children's union (10..90, 95..99).
                st("a", 2, 100, 100, 30, 50, 70),
                st("r", 1, 100, 16, 100, 100, 100),
                st("b", 1, 4, 4, 4, 4, 4),
            ]
        );
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(v["statistics"][1]["selfNs"], 16);
    }

    #[test]
    fn the_process_is_the_first_instance_attribute_present() {
        let attrs = |k: &str| (k == "host.name").then(|| "h1".to_string());
        assert_eq!(process_of("svc", attrs), "svc/h1");
        assert_eq!(process_of("svc", |_| None), "svc/");
    }
}
