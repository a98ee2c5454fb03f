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

/// The whole answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CriticalPathReport {
    pub trace_id: String,
    /// The root's duration after skew adjustment (ns).
    pub duration_ns: i64,
    pub critical_path: Vec<PathSegment>,
    pub spans: Vec<SpanTimes>,
    pub warnings: Vec<TraceWarning>,
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
    fn the_process_is_the_first_instance_attribute_present() {
        let attrs = |k: &str| (k == "host.name").then(|| "h1".to_string());
        assert_eq!(process_of("svc", attrs), "svc/h1");
        assert_eq!(process_of("svc", |_| None), "svc/");
    }
}
