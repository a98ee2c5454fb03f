//! OTLP export requests → storable records, with the OTLP spec's partial
//! success: invalid spans are rejected and counted, the rest are kept.

use crate::model::{service_of, validate, Origin, SpanRecord};
use meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use std::sync::Arc;

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

/// Converts a request; `indexed` are the tag keys that get an index. Each
/// resource and scope is encoded once and shared by its spans.
pub fn records_from_request(req: ExportTraceServiceRequest, indexed: &[String]) -> Ingested {
    let mut out = Ingested::default();
    for rs in req.resource_spans {
        let resource = rs.resource.unwrap_or_default();
        let service = service_of(&resource);
        for ss in rs.scope_spans {
            let origin: Arc<[u8]> = Origin::encode(&resource, ss.scope.as_ref()).into();
            for s in ss.spans {
                match SpanRecord::from_span(&s, &service, &origin, indexed) {
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
