//! OTLP spans → Jaeger's JSON model (`traceID`, `spans`, `references`,
//! `processes`, typed `tags`, `logs`).

use crate::store::StoredSpan;
use meshtrace_proto::otlp::common::v1::{any_value, KeyValue};
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// OTLP span kind → Jaeger's `span.kind` / `spanKind` name.
pub fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

pub fn kind_from_name(name: &str) -> Option<i32> {
    Some(match name {
        "internal" => 1,
        "server" => 2,
        "client" => 3,
        "producer" => 4,
        "consumer" => 5,
        _ => return None,
    })
}

/// A typed Jaeger tag.
fn tag(key: &str, v: Option<&any_value::Value>) -> Value {
    match v {
        Some(any_value::Value::StringValue(s)) => json!({"key": key, "type": "string", "value": s}),
        Some(any_value::Value::BoolValue(b)) => json!({"key": key, "type": "bool", "value": b}),
        Some(any_value::Value::IntValue(i)) => json!({"key": key, "type": "int64", "value": i}),
        Some(any_value::Value::DoubleValue(d)) => {
            json!({"key": key, "type": "float64", "value": d})
        }
        Some(any_value::Value::BytesValue(b)) => {
            json!({"key": key, "type": "binary", "value": hex(b)})
        }
        Some(other) => json!({"key": key, "type": "string", "value": format!("{other:?}")}),
        None => json!({"key": key, "type": "string", "value": ""}),
    }
}

fn tags(kvs: &[KeyValue]) -> Vec<Value> {
    kvs.iter()
        .map(|kv| tag(&kv.key, kv.value.as_ref().and_then(|v| v.value.as_ref())))
        .collect()
}

fn service_of(s: &StoredSpan) -> String {
    s.resource
        .attributes
        .iter()
        .find(|a| a.key == "service.name")
        .and_then(|a| a.value.as_ref())
        .and_then(crate::ingest::value_text)
        .unwrap_or_else(|| "unknown_service".into())
}

/// One trace in Jaeger's JSON.
pub fn trace_json(spans: &[StoredSpan]) -> Value {
    let trace_id = spans
        .first()
        .map(|s| hex(&s.span.trace_id))
        .unwrap_or_default();
    // One process per distinct resource.
    let mut processes: BTreeMap<String, Value> = BTreeMap::new();
    let mut process_of: Vec<(Vec<u8>, String)> = Vec::new();
    let mut out = Vec::new();
    for s in spans {
        let key = prost::Message::encode_to_vec(&s.resource);
        let pid = match process_of.iter().find(|(k, _)| *k == key) {
            Some((_, id)) => id.clone(),
            None => {
                let id = format!("p{}", process_of.len() + 1);
                let other: Vec<KeyValue> = s
                    .resource
                    .attributes
                    .iter()
                    .filter(|a| a.key != "service.name")
                    .cloned()
                    .collect();
                processes.insert(
                    id.clone(),
                    json!({"serviceName": service_of(s), "tags": tags(&other)}),
                );
                process_of.push((key, id.clone()));
                id
            }
        };
        let sp = &s.span;
        let mut refs = Vec::new();
        if !sp.parent_span_id.is_empty() {
            refs.push(json!({"refType": "CHILD_OF", "traceID": trace_id, "spanID": hex(&sp.parent_span_id)}));
        }
        for l in &sp.links {
            refs.push(json!({"refType": "FOLLOWS_FROM", "traceID": hex(&l.trace_id), "spanID": hex(&l.span_id)}));
        }
        let mut span_tags = tags(&sp.attributes);
        span_tags.push(json!({"key": "span.kind", "type": "string", "value": kind_name(sp.kind)}));
        if let Some(st) = &sp.status {
            if st.code == 2 {
                span_tags.push(json!({"key": "error", "type": "bool", "value": true}));
                span_tags
                    .push(json!({"key": "otel.status_code", "type": "string", "value": "ERROR"}));
                if !st.message.is_empty() {
                    span_tags.push(json!({"key": "otel.status_description", "type": "string", "value": st.message}));
                }
            } else if st.code == 1 {
                span_tags.push(json!({"key": "otel.status_code", "type": "string", "value": "OK"}));
            }
        }
        if !sp.trace_state.is_empty() {
            span_tags
                .push(json!({"key": "w3c.tracestate", "type": "string", "value": sp.trace_state}));
        }
        let logs: Vec<Value> = sp
            .events
            .iter()
            .map(|e| {
                let mut fields = vec![json!({"key": "event", "type": "string", "value": e.name})];
                fields.extend(tags(&e.attributes));
                json!({"timestamp": e.time_unix_nano / 1000, "fields": fields})
            })
            .collect();
        out.push(json!({
            "traceID": trace_id,
            "spanID": hex(&sp.span_id),
            "operationName": sp.name,
            "references": refs,
            "startTime": sp.start_time_unix_nano / 1000,
            "duration": sp.end_time_unix_nano.saturating_sub(sp.start_time_unix_nano) / 1000,
            "tags": span_tags,
            "logs": logs,
            "processID": pid,
            "warnings": null,
            "flags": 1,
        }));
    }
    json!({"traceID": trace_id, "spans": out, "processes": processes, "warnings": null})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::suite::{kv, span, BASE_NS};
    use meshtrace_proto::otlp::resource::v1::Resource;
    use meshtrace_proto::otlp::trace::v1::Status;

    /// Jaeger JSON for fixed fixtures, compared with a golden file
    /// (`UPDATE_GOLDEN=1 cargo test -p meshtrace-collector` rewrites it).
    #[test]
    fn trace_json_matches_golden_file() {
        let resource = |svc: &str| Resource {
            attributes: vec![
                kv("service.name", svc),
                kv("k8s.pod.name", &format!("{svc}-0")),
            ],
            ..Default::default()
        };
        let mut child = span(1, 2, 1, "GET /b", BASE_NS + 1_000, 2_000_000, 503);
        child.kind = 3;
        child.status = Some(Status {
            code: 2,
            message: "UF".into(),
        });
        child.trace_state = "vendor=x".into();
        let spans = vec![
            StoredSpan {
                span: span(1, 1, 0, "GET /a", BASE_NS, 5_000_000, 200),
                resource: resource("frontend"),
            },
            StoredSpan {
                span: child,
                resource: resource("backend"),
            },
        ];
        let got = serde_json::to_string_pretty(&trace_json(&spans)).unwrap() + "\n";
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
    }
}
