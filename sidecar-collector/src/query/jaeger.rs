//! Stored spans → Jaeger's JSON model (`meshtrace_proto::jaeger_json`):
//! processes (one per distinct resource), typed tags, logs, references, the
//! derived tags Jaeger's OTLP translator adds, and Jaeger's span-id
//! de-duplication for Zipkin-style shared spans.

use crate::model::{is_error, kind_name, service_of, value_json, Origin, StoredTrace};
use base64::Engine;
use meshtrace_proto::jaeger_json as j;
use meshtrace_proto::otlp::common::v1::{any_value, KeyValue};
use meshtrace_proto::otlp::trace::v1::span::SpanKind;
use meshtrace_proto::otlp::trace::v1::status::StatusCode;
use meshtrace_proto::semconv;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(out, "{x:02x}");
    }
    out
}

/// A typed Jaeger tag. Arrays and key-value lists become their JSON text and
/// bytes base64, as Jaeger's OTLP translator renders them.
fn tag(key: &str, v: Option<&any_value::Value>) -> j::KeyValue {
    let value = match v {
        Some(any_value::Value::StringValue(s)) => j::TagValue::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => j::TagValue::Bool(*b),
        Some(any_value::Value::IntValue(i)) => j::TagValue::Int64(*i),
        Some(any_value::Value::DoubleValue(d)) => j::TagValue::Float64(*d),
        Some(any_value::Value::BytesValue(b)) => {
            j::TagValue::Binary(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(other) => j::TagValue::String(value_json(other).to_string()),
        None => j::TagValue::String(String::new()),
    };
    j::KeyValue {
        key: key.to_string(),
        value,
    }
}

fn tags<'a>(kvs: impl IntoIterator<Item = &'a KeyValue>) -> Vec<j::KeyValue> {
    kvs.into_iter()
        .map(|kv| tag(&kv.key, kv.value.as_ref().and_then(|v| v.value.as_ref())))
        .collect()
}

/// Jaeger's span-id de-duplication (its `SpanIDDeduper` adjuster): when a
/// server span shares its id with another span (Zipkin's shared spans), the
/// server span gets a new unused id and becomes the child of the shared one;
/// children of the shared id then hang under the server span. Returns the new
/// (span id, parent id) per span index.
fn dedupe_span_ids(t: &StoredTrace) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut ids: Vec<(Vec<u8>, Vec<u8>)> = t
        .spans
        .iter()
        .map(|s| (s.span.span_id.clone(), s.span.parent_span_id.clone()))
        .collect();
    let mut count: HashMap<&[u8], usize> = HashMap::new();
    for s in &t.spans {
        *count.entry(s.span.span_id.as_slice()).or_default() += 1;
    }
    if count.values().all(|n| *n == 1) {
        return ids;
    }
    let mut used: HashSet<u64> = t
        .spans
        .iter()
        .filter_map(|s| <[u8; 8]>::try_from(s.span.span_id.as_slice()).ok())
        .map(u64::from_be_bytes)
        .collect();
    let mut renamed: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for (i, s) in t.spans.iter().enumerate() {
        let shared = count.get(s.span.span_id.as_slice()).is_some_and(|n| *n > 1);
        if !shared || s.span.kind != SpanKind::Server as i32 {
            continue;
        }
        let Ok(old) = <[u8; 8]>::try_from(s.span.span_id.as_slice()) else {
            continue;
        };
        let mut new = u64::from_be_bytes(old);
        loop {
            new = new.wrapping_add(1);
            if new != 0 && used.insert(new) {
                break;
            }
        }
        let new = new.to_be_bytes().to_vec();
        renamed.insert(old.to_vec(), new.clone());
        ids[i] = (new, old.to_vec());
    }
    for (i, s) in t.spans.iter().enumerate() {
        if let Some(new_parent) = renamed.get(&s.span.parent_span_id) {
            if ids[i].0 != *new_parent && ids[i].1 == s.span.parent_span_id {
                ids[i].1 = new_parent.clone();
            }
        }
    }
    ids
}

/// A trace prepared for Jaeger's JSON: its processes (one per distinct
/// resource; origins differing only in scope share one), each span's process
/// and its (de-duplicated) ids. Spans are rendered one at a time from it.
pub struct TraceJson<'a> {
    t: &'a StoredTrace,
    trace_id: String,
    ids: Vec<(Vec<u8>, Vec<u8>)>,
    processes: BTreeMap<String, j::Process>,
    pids: Vec<String>,
}

impl<'a> TraceJson<'a> {
    pub fn new(t: &'a StoredTrace) -> TraceJson<'a> {
        let mut processes: BTreeMap<String, j::Process> = BTreeMap::new();
        let mut process_of: Vec<(Arc<Origin>, String)> = Vec::new();
        let mut pids = Vec::with_capacity(t.spans.len());
        for s in &t.spans {
            let found = process_of
                .iter()
                .find(|(o, _)| Arc::ptr_eq(o, &s.origin) || o.resource == s.origin.resource);
            let pid = match found {
                Some((_, id)) => id.clone(),
                None => {
                    let id = format!("p{}", process_of.len() + 1);
                    processes.insert(
                        id.clone(),
                        j::Process {
                            service_name: service_of(&s.origin.resource),
                            tags: tags(
                                s.origin
                                    .resource
                                    .attributes
                                    .iter()
                                    .filter(|a| a.key != semconv::SERVICE_NAME),
                            ),
                        },
                    );
                    process_of.push((s.origin.clone(), id.clone()));
                    id
                }
            };
            pids.push(pid);
        }
        TraceJson {
            t,
            trace_id: hex(&t.trace_id),
            ids: dedupe_span_ids(t),
            processes,
            pids,
        }
    }

    /// Span `i` in Jaeger's JSON model.
    fn span(&self, i: usize) -> j::Span {
        let s = &self.t.spans[i];
        let (span_id, parent_id) = (self.ids[i].0.clone(), self.ids[i].1.clone());
        let pid = self.pids[i].clone();
        let trace_id = &self.trace_id;
        let sp = &s.span;
        let mut references = Vec::with_capacity(1 + sp.links.len());
        if !parent_id.is_empty() {
            references.push(j::Reference {
                ref_type: j::RefType::ChildOf,
                trace_id: trace_id.clone(),
                span_id: hex(&parent_id),
            });
        }
        for l in &sp.links {
            references.push(j::Reference {
                ref_type: j::RefType::FollowsFrom,
                trace_id: hex(&l.trace_id),
                span_id: hex(&l.span_id),
            });
        }
        let mut span_tags = tags(&sp.attributes);
        let scope = &s.origin.scope;
        if !scope.name.is_empty() {
            span_tags.push(j::KeyValue::string(semconv::OTEL_SCOPE_NAME, &scope.name));
        }
        if !scope.version.is_empty() {
            span_tags.push(j::KeyValue::string(
                semconv::OTEL_SCOPE_VERSION,
                &scope.version,
            ));
        }
        span_tags.push(j::KeyValue::string(semconv::SPAN_KIND, kind_name(sp.kind)));
        if let Some(st) = &sp.status {
            if is_error(sp) {
                span_tags.push(j::KeyValue {
                    key: semconv::ERROR.into(),
                    value: j::TagValue::Bool(true),
                });
                span_tags.push(j::KeyValue::string(semconv::OTEL_STATUS_CODE, "ERROR"));
                if !st.message.is_empty() {
                    span_tags.push(j::KeyValue::string(
                        semconv::OTEL_STATUS_DESCRIPTION,
                        &st.message,
                    ));
                }
            } else if st.code == StatusCode::Ok as i32 {
                span_tags.push(j::KeyValue::string(semconv::OTEL_STATUS_CODE, "OK"));
            }
        }
        if !sp.trace_state.is_empty() {
            span_tags.push(j::KeyValue::string(
                semconv::W3C_TRACESTATE,
                &sp.trace_state,
            ));
        }
        let logs = sp
            .events
            .iter()
            .map(|e| {
                let mut fields = Vec::with_capacity(1 + e.attributes.len());
                fields.push(j::KeyValue::string(semconv::EVENT, &e.name));
                fields.extend(tags(&e.attributes));
                j::Log {
                    timestamp: e.time_unix_nano / 1000,
                    fields,
                }
            })
            .collect();
        j::Span {
            trace_id: trace_id.clone(),
            span_id: hex(&span_id),
            operation_name: sp.name.clone(),
            references,
            start_time: sp.start_time_unix_nano / 1000,
            duration: sp
                .end_time_unix_nano
                .saturating_sub(sp.start_time_unix_nano)
                / 1000,
            tags: span_tags,
            logs,
            process_id: pid,
            warnings: None,
            flags: 1,
        }
    }

    /// The whole trace as one value.
    pub fn build(self, warnings: Option<Vec<String>>) -> j::Trace {
        let spans = (0..self.t.spans.len()).map(|i| self.span(i)).collect();
        j::Trace {
            trace_id: self.trace_id,
            spans,
            processes: self.processes,
            warnings,
        }
    }

    /// Writes the trace's JSON (the same text `build` serializes to), one span
    /// at a time: no whole-trace model in memory.
    pub fn write(
        &self,
        w: &mut (impl std::io::Write + ?Sized),
        warnings: Option<&[String]>,
    ) -> std::io::Result<()> {
        w.write_all(b"{\"traceID\":")?;
        serde_json::to_writer(&mut *w, &self.trace_id)?;
        w.write_all(b",\"spans\":[")?;
        for i in 0..self.t.spans.len() {
            if i > 0 {
                w.write_all(b",")?;
            }
            serde_json::to_writer(&mut *w, &self.span(i))?;
        }
        w.write_all(b"],\"processes\":")?;
        serde_json::to_writer(&mut *w, &self.processes)?;
        w.write_all(b",\"warnings\":")?;
        serde_json::to_writer(&mut *w, &warnings)?;
        w.write_all(b"}")
    }
}

/// One trace in Jaeger's JSON (as one value; answers are written span by span).
#[cfg(test)]
pub fn trace_json(t: &StoredTrace) -> j::Trace {
    TraceJson::new(t).build(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StoredSpan;
    use crate::store::suite::{kv, span, BASE_NS};
    use meshtrace_proto::otlp::common::v1::{AnyValue, ArrayValue, InstrumentationScope};
    use meshtrace_proto::otlp::resource::v1::Resource;
    use meshtrace_proto::otlp::trace::v1::Status;

    fn origin(svc: &str, scope: &str) -> Arc<Origin> {
        Arc::new(Origin {
            resource: Resource {
                attributes: vec![
                    kv("service.name", svc),
                    kv("k8s.pod.name", &format!("{svc}-0")),
                ],
                ..Default::default()
            },
            scope: InstrumentationScope {
                name: scope.into(),
                version: if scope.is_empty() { "" } else { "1.0" }.into(),
                ..Default::default()
            },
        })
    }

    /// Jaeger JSON for fixed fixtures, compared with a golden file
    /// (`UPDATE_GOLDEN=1 cargo test -p meshtrace-collector` rewrites it).
    #[test]
    fn trace_json_matches_golden_file() {
        let mut root = span(1, 1, 0, "GET /a", BASE_NS, 5_000_000, 200);
        let text = |v: &str| AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        };
        root.attributes.push(KeyValue {
            key: "http.request.header.accept".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue {
                    values: vec![text("a"), text("b")],
                })),
            }),
            ..Default::default()
        });
        root.attributes.push(KeyValue {
            key: "raw".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::BytesValue(b"hi!".to_vec())),
            }),
            ..Default::default()
        });
        let mut child = span(1, 2, 1, "GET /b", BASE_NS + 1_000, 2_000_000, 503);
        child.kind = 3;
        child.status = Some(Status {
            code: 2,
            message: "UF".into(),
        });
        child.trace_state = "vendor=x".into();
        let trace = StoredTrace {
            truncated: false,
            trace_id: [1; 16],
            spans: vec![
                StoredSpan {
                    span: root,
                    origin: origin("frontend", "meshtrace"),
                },
                StoredSpan {
                    span: child,
                    origin: origin("backend", ""),
                },
            ],
        };
        let value = serde_json::to_value(trace_json(&trace)).unwrap();
        let got = serde_json::to_string_pretty(&value).unwrap() + "\n";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/trace.json");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &got).unwrap();
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{} missing: run with UPDATE_GOLDEN=1", path.display()));
        assert_eq!(
            got, want,
            "Jaeger JSON changed; if intended, rerun with UPDATE_GOLDEN=1"
        );
        assert!(
            got.contains(r#""value": "[\"a\",\"b\"]""#),
            "array as JSON text"
        );
        assert!(got.contains(r#""value": "aGkh""#), "bytes as base64");
        assert!(got.contains(r#""key": "otel.scope.name""#));
    }

    #[test]
    fn zipkin_shared_span_ids_come_back_as_two_spans() {
        // client span 2 (frontend) and server span 2 (backend) share an id; the
        // backend's child 3 names 2 as its parent.
        let mut client = span(1, 2, 1, "call", BASE_NS, 10, 200);
        client.kind = 3;
        let server = span(1, 2, 1, "serve", BASE_NS + 1, 8, 200);
        let child = span(1, 3, 2, "db", BASE_NS + 2, 1, 200);
        let trace = StoredTrace {
            truncated: false,
            trace_id: [1; 16],
            spans: vec![
                StoredSpan {
                    span: client,
                    origin: origin("frontend", ""),
                },
                StoredSpan {
                    span: server,
                    origin: origin("backend", ""),
                },
                StoredSpan {
                    span: child,
                    origin: origin("backend", ""),
                },
            ],
        };
        let t = trace_json(&trace);
        assert_eq!(t.spans.len(), 2 + 1);
        let parent = |i: usize| t.spans[i].references[0].span_id.clone();
        assert_eq!(t.spans[0].span_id, "0202020202020202");
        assert_ne!(
            t.spans[1].span_id, t.spans[0].span_id,
            "server span renamed"
        );
        assert_eq!(parent(1), t.spans[0].span_id, "server under client");
        assert_eq!(parent(2), t.spans[1].span_id, "child under the server span");
    }

    #[test]
    fn written_one_span_at_a_time_is_the_same_json() {
        let mut child = span(2, 2, 1, "child", BASE_NS + 5, 10, 500);
        child.kind = 2;
        let trace = StoredTrace {
            truncated: true,
            trace_id: [2; 16],
            spans: vec![
                StoredSpan {
                    span: span(2, 1, 0, "root", BASE_NS, 100, 200),
                    origin: origin("a", "scope"),
                },
                StoredSpan {
                    span: child,
                    origin: origin("b", ""),
                },
            ],
        };
        let warnings = vec!["cut".to_string()];
        let mut written = Vec::new();
        TraceJson::new(&trace)
            .write(&mut written, Some(&warnings))
            .unwrap();
        let built = serde_json::to_value(TraceJson::new(&trace).build(Some(warnings))).unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(&written).unwrap();
        assert_eq!(parsed, built);
        let mut none = Vec::new();
        TraceJson::new(&trace).write(&mut none, None).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&none).unwrap(),
            serde_json::to_value(trace_json(&trace)).unwrap()
        );
    }
}
