//! OTLP export requests → storable records, with the OTLP spec's partial
//! success: invalid spans are rejected and counted, the rest are kept.

pub mod cost;
pub mod redact;

use crate::model::{origin_tag_hashes, service_of, validate, Origin, SpanRecord};
use meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use std::sync::Arc;

pub use redact::Redaction;

/// The outcome of converting one request.
#[derive(Debug, Default)]
pub struct Ingested {
    pub records: Vec<SpanRecord>,
    pub rejected: u64,
    /// Why the first rejected span was rejected.
    pub message: String,
}

/// Removes invalid spans in place (sidecar mode forwards the rest);
/// returns how many were removed and why the first one was.
pub fn retain_valid(req: &mut ExportTraceServiceRequest) -> (u64, String) {
    let mut rejected = 0;
    let mut message = String::new();
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            ss.spans.retain(|s| match validate(s) {
                Ok(_) => true,
                Err(why) => {
                    if rejected == 0 {
                        message = format!("span {:?}: {why}", s.name);
                    }
                    rejected += 1;
                    false
                }
            });
        }
    }
    (rejected, message)
}

/// Number of spans in a request.
pub fn span_count(req: &ExportTraceServiceRequest) -> u64 {
    req.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len() as u64)
        .sum()
}

/// Which span start times are stored: older ones would land in partitions
/// retention drops at once, far-future ones in partitions that never expire
/// (and each distinct day opens a file).
#[derive(Debug, Clone, Copy)]
pub struct TimeWindow {
    /// How far back a span may start (the retention, by default).
    pub max_age: std::time::Duration,
    /// How far ahead of this collector's clock a span may start.
    pub max_future: std::time::Duration,
}

impl TimeWindow {
    /// Why a span starting at `start_us` is refused at `now_us`, if it is.
    pub fn refuse(&self, start_us: i64, now_us: i64) -> Option<String> {
        let age = i64::try_from(self.max_age.as_micros()).unwrap_or(i64::MAX);
        let ahead = i64::try_from(self.max_future.as_micros()).unwrap_or(i64::MAX);
        if start_us < now_us.saturating_sub(age) {
            Some(format!(
                "start_time_unix_nano is more than {} in the past (older than the retention)",
                humantime::format_duration(self.max_age)
            ))
        } else if start_us > now_us.saturating_add(ahead) {
            Some(format!(
                "start_time_unix_nano is more than {} in the future",
                humantime::format_duration(self.max_future)
            ))
        } else {
            None
        }
    }
}

/// Converts a request; `indexed` are the tag keys that get an index; spans
/// outside `window` (around `now_us`) are rejected with the reason. Each
/// resource and scope is encoded once and shared by its spans.
pub fn records_from_request(
    req: ExportTraceServiceRequest,
    indexed: &[String],
    window: Option<(TimeWindow, i64)>,
) -> Ingested {
    let mut out = Ingested::default();
    for rs in req.resource_spans {
        let resource = rs.resource.unwrap_or_default();
        let service = service_of(&resource);
        for ss in rs.scope_spans {
            let origin: Arc<[u8]> = Origin::encode(&resource, ss.scope.as_ref()).into();
            let origin_tags = origin_tag_hashes(&resource, ss.scope.as_ref());
            for s in ss.spans {
                let record = SpanRecord::from_span(&s, &service, &origin, &origin_tags, indexed)
                    .and_then(
                        |r| match window.and_then(|(w, now)| w.refuse(r.start_us, now)) {
                            Some(why) => Err(why),
                            None => Ok(r),
                        },
                    );
                match record {
                    Ok(r) => out.records.push(r),
                    Err(why) => {
                        if out.rejected == 0 {
                            out.message = format!("span {:?}: {why}", s.name);
                        }
                        out.rejected += 1;
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshtrace_proto::otlp::resource::v1::Resource;
    use meshtrace_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use std::time::Duration;

    #[test]
    fn spans_outside_the_time_window_are_rejected_with_the_reason() {
        let now_us: i64 = 1_800_000_000_000_000;
        let span = |start_us: i64, id: u8| Span {
            trace_id: vec![1; 16],
            span_id: vec![id; 8],
            name: format!("s{id}"),
            start_time_unix_nano: start_us as u64 * 1000,
            end_time_unix_nano: start_us as u64 * 1000 + 1000,
            ..Default::default()
        };
        let day = 86_400_000_000i64;
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource::default()),
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        span(now_us, 1),
                        span(now_us - 8 * day, 2),
                        span(now_us + 70 * 365 * day, 3),
                        span(now_us + 30 * 60_000_000, 4),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let window = TimeWindow {
            max_age: Duration::from_secs(7 * 86_400),
            max_future: Duration::from_secs(3600),
        };
        let got = records_from_request(req.clone(), &[], Some((window, now_us)));
        assert_eq!(got.records.len(), 2, "now and 30 min ahead");
        assert_eq!(got.rejected, 2);
        assert!(
            got.message.contains("\"s2\"") && got.message.contains("7days in the past"),
            "{}",
            got.message
        );
        let all = records_from_request(req, &[], None);
        assert_eq!(all.records.len(), 4, "no window: everything valid is kept");
        assert!(window
            .refuse(now_us + 70 * 365 * day, now_us)
            .unwrap()
            .contains("1h in the future"));
    }
}
