//! Jaeger's query JSON model (`model/json` in Jaeger, what `/api/traces`,
//! `/api/services`, `/api/dependencies` answer and what the Jaeger UI and
//! Grafana's Jaeger data source read), as serde structs: the collector
//! serializes them straight into the response.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Jaeger's response envelope (`structuredResponse`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub data: T,
    pub total: usize,
    pub limit: usize,
    pub offset: usize,
    pub errors: Option<Vec<ResponseError>>,
}

impl<T> Envelope<T> {
    /// A successful answer; `total` is the number of items in `data`.
    pub fn new(data: T, total: usize) -> Self {
        Envelope {
            data,
            total,
            limit: 0,
            offset: 0,
            errors: None,
        }
    }
}

/// One entry of `errors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseError {
    pub code: u16,
    pub msg: String,
    #[serde(rename = "traceID", default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// A tag's typed value: `{"type": "int64", "value": 200}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub enum TagValue {
    String(String),
    Bool(bool),
    Int64(i64),
    Float64(f64),
    Binary(String),
}

/// A tag or log field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    #[serde(flatten)]
    pub value: TagValue,
}

impl KeyValue {
    /// A string-typed tag.
    pub fn string(key: &str, value: impl Into<String>) -> Self {
        KeyValue {
            key: key.to_string(),
            value: TagValue::String(value.into()),
        }
    }
}

/// `CHILD_OF` or `FOLLOWS_FROM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefType {
    ChildOf,
    FollowsFrom,
}

/// A span reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    #[serde(rename = "refType")]
    pub ref_type: RefType,
    #[serde(rename = "traceID")]
    pub trace_id: String,
    #[serde(rename = "spanID")]
    pub span_id: String,
}

/// A log (an OTLP event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Log {
    /// Microseconds since the epoch.
    pub timestamp: u64,
    pub fields: Vec<KeyValue>,
}

/// A process (an OTLP resource).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    pub service_name: String,
    pub tags: Vec<KeyValue>,
}

/// One span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Span {
    #[serde(rename = "traceID")]
    pub trace_id: String,
    #[serde(rename = "spanID")]
    pub span_id: String,
    #[serde(rename = "operationName")]
    pub operation_name: String,
    pub references: Vec<Reference>,
    /// Microseconds since the epoch.
    #[serde(rename = "startTime")]
    pub start_time: u64,
    /// Microseconds.
    pub duration: u64,
    pub tags: Vec<KeyValue>,
    pub logs: Vec<Log>,
    #[serde(rename = "processID")]
    pub process_id: String,
    pub warnings: Option<Vec<String>>,
    pub flags: u32,
}

/// One trace: spans and the processes they name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    #[serde(rename = "traceID")]
    pub trace_id: String,
    pub spans: Vec<Span>,
    pub processes: BTreeMap<String, Process>,
    pub warnings: Option<Vec<String>>,
}

/// An operation of a service (`/api/operations`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub name: String,
    pub span_kind: String,
}

/// A dependency edge (`/api/dependencies`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DependencyLink {
    pub parent: String,
    pub child: String,
    pub call_count: u64,
}

/// Jaeger's SPM answer (`/api/metrics/{latencies,calls,errors}`): the
/// `MetricFamily` of `api_v2/metrics/openmetrics.proto` in protobuf JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricFamily {
    pub name: String,
    /// Always `GAUGE`.
    #[serde(rename = "type")]
    pub kind: String,
    pub help: String,
    pub metrics: Vec<Metric>,
}

/// One series of a [`MetricFamily`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metric {
    /// `service_name`, and `operation` when grouped by operation.
    pub labels: Vec<Label>,
    pub metric_points: Vec<MetricPoint>,
}

/// A label of a [`Metric`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub name: String,
    pub value: String,
}

/// One point: `{"gaugeValue": {"doubleValue": 1.5}, "timestamp": "2026-12-01T19:00:00Z"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricPoint {
    pub gauge_value: GaugeValue,
    /// RFC 3339, UTC.
    pub timestamp: String,
}

/// A point's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GaugeValue {
    pub double_value: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_serialize_in_jaegers_shape() {
        let kv = KeyValue {
            key: "http.status_code".into(),
            value: TagValue::Int64(503),
        };
        let text = serde_json::to_string(&kv).unwrap();
        assert_eq!(
            text,
            r#"{"key":"http.status_code","type":"int64","value":503}"#
        );
        assert_eq!(serde_json::from_str::<KeyValue>(&text).unwrap(), kv);
        let r = Reference {
            ref_type: RefType::FollowsFrom,
            trace_id: "a".into(),
            span_id: "b".into(),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"refType":"FOLLOWS_FROM","traceID":"a","spanID":"b"}"#
        );
    }
}
