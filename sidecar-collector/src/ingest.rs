//! OTLP export requests → storable records, with the OTLP spec's partial
//! success: invalid spans are rejected and counted, the rest are kept.

use crate::store::SpanRecord;
use meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use meshtrace_proto::otlp::common::v1::{any_value, AnyValue};
use prost::Message;

/// The outcome of converting one request.
#[derive(Debug, Default)]
pub struct Ingested {
    pub records: Vec<SpanRecord>,
    pub rejected: u64,
    /// Why the first rejected span was rejected.
    pub message: String,
}

/// An attribute value as text, for indexing.
pub fn value_text(v: &AnyValue) -> Option<String> {
    match v.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

fn invalid_reason(s: &meshtrace_proto::otlp::trace::v1::Span) -> Option<String> {
    if s.trace_id.len() != 16 || s.trace_id.iter().all(|b| *b == 0) {
        return Some(format!(
            "trace_id must be 16 non-zero bytes (got {})",
            s.trace_id.len()
        ));
    }
    if s.span_id.len() != 8 || s.span_id.iter().all(|b| *b == 0) {
        return Some(format!(
            "span_id must be 8 non-zero bytes (got {})",
            s.span_id.len()
        ));
    }
    if !s.parent_span_id.is_empty() && s.parent_span_id.len() != 8 {
        return Some(format!(
            "parent_span_id must be empty or 8 bytes (got {})",
            s.parent_span_id.len()
        ));
    }
    if s.end_time_unix_nano < s.start_time_unix_nano {
        return Some("end_time_unix_nano is before start_time_unix_nano".into());
    }
    None
}

/// Removes invalid spans in place (sidecar mode forwards the rest);
/// returns how many were removed and why the first one was.
pub fn retain_valid(req: &mut ExportTraceServiceRequest) -> (u64, String) {
    let mut rejected = 0;
    let mut message = String::new();
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            ss.spans.retain(|s| match invalid_reason(s) {
                None => true,
                Some(why) => {
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

/// `sampler.param` when `sampler.type` is `probabilistic` (Jaeger's and the filter's tags).
fn sampled_probability(attrs: &[meshtrace_proto::otlp::common::v1::KeyValue]) -> Option<f64> {
    let get = |k: &str| {
        attrs
            .iter()
            .find(|a| a.key == k)?
            .value
            .as_ref()?
            .value
            .as_ref()
    };
    match get("sampler.type")? {
        any_value::Value::StringValue(t) if t == "probabilistic" => {}
        _ => return None,
    }
    match get("sampler.param")? {
        any_value::Value::DoubleValue(p) => Some(*p),
        any_value::Value::IntValue(p) => Some(*p as f64),
        any_value::Value::StringValue(p) => p.parse().ok(),
        _ => None,
    }
}

/// Converts a request; `indexed` are the tag keys that get an index.
pub fn records_from_request(req: ExportTraceServiceRequest, indexed: &[String]) -> Ingested {
    let mut out = Ingested::default();
    for rs in req.resource_spans {
        let resource = rs.resource.unwrap_or_default();
        let service = resource
            .attributes
            .iter()
            .find(|a| a.key == "service.name")
            .and_then(|a| a.value.as_ref())
            .and_then(value_text)
            .unwrap_or_else(|| "unknown_service".into());
        let resource_bytes = resource.encode_to_vec();
        for ss in rs.scope_spans {
            for s in ss.spans {
                if let Some(why) = invalid_reason(&s) {
                    if out.rejected == 0 {
                        out.message = format!("span {:?}: {why}", s.name);
                    }
                    out.rejected += 1;
                    continue;
                }
                let mut trace_id = [0u8; 16];
                trace_id.copy_from_slice(&s.trace_id);
                let mut span_id = [0u8; 8];
                span_id.copy_from_slice(&s.span_id);
                let error = s.status.as_ref().is_some_and(|st| st.code == 2);
                let mut indexed_tags: Vec<(String, String)> = s
                    .attributes
                    .iter()
                    .filter(|a| indexed.contains(&a.key))
                    .filter_map(|a| Some((a.key.clone(), value_text(a.value.as_ref()?)?)))
                    .collect();
                if error && indexed.iter().any(|k| k == "error") {
                    indexed_tags.push(("error".into(), "true".into()));
                }
                let parent_span_id = <[u8; 8]>::try_from(s.parent_span_id.as_slice()).ok();
                let sampled_probability = sampled_probability(&s.attributes);
                out.records.push(SpanRecord {
                    trace_id,
                    span_id,
                    parent_span_id,
                    service: service.clone(),
                    operation: s.name.clone(),
                    kind: s.kind,
                    start_us: (s.start_time_unix_nano / 1000) as i64,
                    duration_us: ((s.end_time_unix_nano - s.start_time_unix_nano) / 1000) as i64,
                    error,
                    indexed_tags,
                    sampled_probability,
                    resource: resource_bytes.clone(),
                    body: s.encode_to_vec(),
                });
            }
        }
    }
    out
}
