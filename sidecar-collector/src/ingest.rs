//! OTLP export requests → storable records, with the OTLP spec's partial
//! success: invalid spans are rejected and counted, the rest are kept.

use crate::model::{service_of, validate, Origin, SpanRecord};
use meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use meshtrace_proto::otlp::common::v1::{any_value, AnyValue, KeyValue};
use meshtrace_proto::semconv::{REDACTED, SENSITIVE_HEADERS};
use std::sync::Arc;

/// Attributes named like credentials (`authorization`, `cookie`, … — the list
/// the filter uses, plus configured names) have their value replaced by
/// `[REDACTED]` before anything is stored or forwarded: an SDK or a sender
/// outside the mesh may send them even though the filter never records them.
/// A key matches by its last dot-separated segment, case-insensitively, with
/// `_` and `-` alike: `authorization`, `http.request.header.authorization`,
/// `X_API_KEY`.
#[derive(Debug, Clone)]
pub struct Redaction {
    names: Vec<String>,
    allow: Vec<String>,
}

impl Default for Redaction {
    fn default() -> Self {
        Redaction::new(&[], &[])
    }
}

fn same_name(a: &str, b: &str) -> bool {
    let norm = |c: u8| match c.to_ascii_lowercase() {
        b'_' => b'-',
        c => c,
    };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| norm(x) == norm(y))
}

impl Redaction {
    /// The default names plus `extra`; keys in `allow` are kept verbatim.
    pub fn new(extra: &[String], allow: &[String]) -> Self {
        Redaction {
            names: SENSITIVE_HEADERS
                .iter()
                .map(|s| s.to_string())
                .chain(extra.iter().cloned())
                .collect(),
            allow: allow.to_vec(),
        }
    }

    /// Whether the value of attribute `key` is replaced.
    pub fn is_sensitive(&self, key: &str) -> bool {
        let last = key.rsplit('.').next().unwrap_or(key);
        self.names
            .iter()
            .any(|n| same_name(n, last) || same_name(n, key))
            && !self.allow.iter().any(|a| a.eq_ignore_ascii_case(key))
    }

    fn redact(&self, attrs: &mut [KeyValue]) -> u64 {
        let mut n = 0;
        for a in attrs.iter_mut().filter(|a| self.is_sensitive(&a.key)) {
            a.value = Some(AnyValue {
                value: Some(any_value::Value::StringValue(REDACTED.into())),
            });
            n += 1;
        }
        n
    }

    /// Redacts span, event, link and resource attributes in place; returns how
    /// many values were replaced.
    pub fn apply(&self, req: &mut ExportTraceServiceRequest) -> u64 {
        let mut n = 0;
        for rs in &mut req.resource_spans {
            if let Some(r) = rs.resource.as_mut() {
                n += self.redact(&mut r.attributes);
            }
            for ss in &mut rs.scope_spans {
                for s in &mut ss.spans {
                    n += self.redact(&mut s.attributes);
                    for e in &mut s.events {
                        n += self.redact(&mut e.attributes);
                    }
                    for l in &mut s.links {
                        n += self.redact(&mut l.attributes);
                    }
                }
            }
        }
        n
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_names_match_in_every_spelling_unless_allowed() {
        let r = Redaction::new(
            &["x-session".into()],
            &["http.request.header.cookie".into()],
        );
        for key in [
            "authorization",
            "Authorization",
            "http.request.header.authorization",
            "http.request.header.proxy_authorization",
            "X_API_KEY",
            "set-cookie",
            "x-session",
        ] {
            assert!(r.is_sensitive(key), "{key}");
        }
        for key in [
            "http.request.header.cookie",
            "authorization.scheme.name",
            "author",
            "http.request.method",
        ] {
            assert!(!r.is_sensitive(key), "{key}");
        }
    }
}
