//! OTLP requests for tests and benchmarks: one service, its spans.

use meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use meshtrace_proto::otlp::common::v1::{any_value, AnyValue, KeyValue};
use meshtrace_proto::otlp::resource::v1::Resource;
use meshtrace_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};

/// A string attribute.
pub fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// An export request of `spans` from `service`.
pub fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Nanoseconds since the epoch.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
