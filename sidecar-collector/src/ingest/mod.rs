//! OTLP export requests → storable records, with the OTLP spec's partial
//! success: invalid spans are rejected and counted, the rest are kept.

pub mod cost;
pub mod jaeger;
pub mod redact;
pub mod wire;
pub mod zipkin;

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

/// The wire bytes a request was decoded from, where each span is in them, and
/// which spans redaction changed: a span left as it came is stored as its own
/// bytes (a slice of `bytes`), not encoded again.
pub struct RawSpans {
    pub bytes: bytes::Bytes,
    pub ranges: Vec<std::ops::Range<usize>>,
    pub changed: Vec<bool>,
}

impl RawSpans {
    /// The bytes of span `i`, if it came unchanged.
    fn body(&self, i: usize) -> Option<bytes::Bytes> {
        if self.changed.get(i).copied().unwrap_or(true) {
            return None;
        }
        let r = self.ranges.get(i)?;
        (r.end <= self.bytes.len()).then(|| self.bytes.slice(r.clone()))
    }
}

/// Converts a request; `indexed` are the tag keys that get an index; spans
/// outside `window` (around `now_us`) are rejected with the reason. Each
/// resource and scope is encoded once and shared by its spans. With `raw`
/// (the request's wire bytes), unchanged spans keep their bytes as their body.
pub fn records_from_request(
    req: ExportTraceServiceRequest,
    indexed: &[String],
    window: Option<(TimeWindow, i64)>,
    raw: Option<RawSpans>,
) -> Ingested {
    let mut out = Ingested::default();
    // The ranges are used only if they are the decoded spans, one for one.
    let raw = raw
        .filter(|r| r.ranges.len() as u64 == span_count(&req) && r.changed.len() == r.ranges.len());
    let mut index = 0usize;
    let mut kept_raw = 0usize;
    for rs in req.resource_spans {
        let resource = rs.resource.unwrap_or_default();
        let service = service_of(&resource);
        for ss in rs.scope_spans {
            let origin: Arc<[u8]> = Origin::encode(&resource, ss.scope.as_ref()).into();
            let origin_tags = origin_tag_hashes(&resource, ss.scope.as_ref());
            for s in ss.spans {
                let body = raw.as_ref().and_then(|r| r.body(index));
                let raw_len = body.as_ref().map_or(0, bytes::Bytes::len);
                index += 1;
                let record = SpanRecord::from_span_with_body(
                    &s,
                    &service,
                    &origin,
                    &origin_tags,
                    indexed,
                    body,
                )
                .and_then(|r| within(r, window));
                match record {
                    Ok(r) => {
                        kept_raw += raw_len;
                        out.records.push(r)
                    }
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
    if let Some(w) = &raw {
        copy_out_slivers(&mut out.records, kept_raw, w.bytes.len());
    }
    out
}

/// `r`, or why its start lies outside `window` (around the time given with it).
fn within(r: SpanRecord, window: Option<(TimeWindow, i64)>) -> Result<SpanRecord, String> {
    match window.and_then(|(w, now)| w.refuse(r.start_us, now)) {
        Some(why) => Err(why),
        None => Ok(r),
    }
}

/// Slices keep a request's whole buffer (`buf_len` bytes) alive: when the kept
/// slices (`kept` bytes) are less than half of it (rejected or redacted spans),
/// every body is copied out, so the memory held stays within twice what the
/// records count.
fn copy_out_slivers(records: &mut [SpanRecord], kept: usize, buf_len: usize) {
    if kept > 0 && kept.saturating_mul(2) < buf_len {
        for r in records {
            r.body = bytes::Bytes::copy_from_slice(&r.body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshtrace_proto::otlp::resource::v1::Resource;
    use meshtrace_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use meshtrace_proto::semconv::REDACTED as REDACTED_TEXT;
    use std::time::Duration;

    /// Unchanged spans are stored as their wire bytes (slices of one copy of the
    /// request), redacted ones encoded again; both decode to what was sent,
    /// redaction applied; few kept spans are copied out of the request's buffer.
    #[test]
    fn unchanged_spans_keep_their_wire_bytes_and_redacted_ones_are_encoded_again() {
        use crate::store::suite::kv;
        use prost::Message;
        let now_ns = 1_800_000_000_000_000_000u64;
        let span = |id: u8, attrs: Vec<(&str, &str)>| Span {
            trace_id: vec![7; 16],
            span_id: vec![id; 8],
            // Spans 1 and 3 are most of the request.
            name: format!(
                "op{id}{}",
                if id % 2 == 1 {
                    "x".repeat(300)
                } else {
                    String::new()
                }
            ),
            start_time_unix_nano: now_ns,
            end_time_unix_nano: now_ns + 1000,
            attributes: attrs.into_iter().map(|(k, v)| kv(k, v)).collect(),
            ..Default::default()
        };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", "a"), kv("db.password", "x")],
                    ..Default::default()
                }),
                scope_spans: vec![
                    ScopeSpans {
                        spans: vec![
                            span(1, vec![("k", "v")]),
                            span(2, vec![("http.request.header.authorization", "Bearer x")]),
                        ],
                        ..Default::default()
                    },
                    ScopeSpans {
                        spans: vec![span(3, vec![]), span(0, vec![])],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
        };
        let wire = bytes::Bytes::from(req.encode_to_vec());
        let (_, ranges) = cost::decoded_cost_and_spans(&wire).unwrap();
        assert_eq!(ranges.len(), 4);
        let ingest = |ranges: Vec<std::ops::Range<usize>>| {
            let mut decoded = ExportTraceServiceRequest::decode(wire.clone()).unwrap();
            let mut raw = RawSpans {
                bytes: wire.clone(),
                ranges,
                changed: Vec::new(),
            };
            let n = Redaction::default().apply_marking(&mut decoded, &mut raw.changed);
            assert_eq!(n, 2, "the resource's password and span 2's header");
            assert_eq!(raw.changed, [false, true, false, false]);
            let mut expected = decoded.clone();
            let all: Vec<Span> = expected.resource_spans[0]
                .scope_spans
                .iter_mut()
                .flat_map(|ss| std::mem::take(&mut ss.spans))
                .collect();
            (records_from_request(decoded, &[], None, Some(raw)), all)
        };
        let (got, sent) = ingest(ranges.clone());
        assert_eq!(got.rejected, 1, "span 0's id is all zeros");
        assert_eq!(got.records.len(), 3);
        for (r, s) in got.records.iter().zip([&sent[0], &sent[1], &sent[2]]) {
            assert_eq!(&Span::decode(r.body.clone()).unwrap(), s);
        }
        let redacted = Span::decode(got.records[1].body.clone()).unwrap();
        assert!(format!("{redacted:?}").contains(REDACTED_TEXT));
        // Three of four spans kept: more than half of the request's bytes, so the
        // unchanged ones are slices of it.
        let inside = |b: &bytes::Bytes| {
            let (p, w) = (b.as_ptr() as usize, wire.as_ptr() as usize);
            p >= w && p < w + wire.len()
        };
        assert!(inside(&got.records[0].body) && inside(&got.records[2].body));
        assert!(!inside(&got.records[1].body), "redacted: encoded again");
        // Ranges that are not the decoded spans one for one are not used.
        let (got, _) = ingest(ranges[..3].to_vec());
        assert!(got.records.iter().all(|r| !inside(&r.body)));
    }

    #[test]
    fn few_kept_spans_are_copied_out_of_the_request() {
        use crate::store::suite::kv;
        use prost::Message;
        let now_ns = 1_800_000_000_000_000_000u64;
        let spans: Vec<Span> = (0..10u8)
            .map(|i| Span {
                trace_id: vec![7; 16],
                // All but one invalid (a span id of 3 bytes).
                span_id: if i == 0 { vec![1; 8] } else { vec![1; 3] },
                name: "x".repeat(200),
                start_time_unix_nano: now_ns,
                end_time_unix_nano: now_ns + 1000,
                attributes: vec![kv("k", "v")],
                ..Default::default()
            })
            .collect();
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let wire = bytes::Bytes::from(req.encode_to_vec());
        let (_, ranges) = cost::decoded_cost_and_spans(&wire).unwrap();
        let raw = RawSpans {
            bytes: wire.clone(),
            ranges,
            changed: vec![false; 10],
        };
        let got = records_from_request(req, &[], None, Some(raw));
        assert_eq!((got.records.len(), got.rejected), (1, 9));
        let b = &got.records[0].body;
        let (p, w) = (b.as_ptr() as usize, wire.as_ptr() as usize);
        assert!(
            !(p >= w && p < w + wire.len()),
            "one span of ten does not pin the request"
        );
        assert!(Span::decode(b.clone()).is_ok());
    }

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
        let got = records_from_request(req.clone(), &[], Some((window, now_us)), None);
        assert_eq!(got.records.len(), 2, "now and 30 min ahead");
        assert_eq!(got.rejected, 2);
        assert!(
            got.message.contains("\"s2\"") && got.message.contains("7days in the past"),
            "{}",
            got.message
        );
        let all = records_from_request(req, &[], None, None);
        assert_eq!(all.records.len(), 4, "no window: everything valid is kept");
        assert!(window
            .refuse(now_us + 70 * 365 * day, now_us)
            .unwrap()
            .contains("1h in the future"));
    }
}
