//! A minimal OTLP protobuf writer.
//!
//! Spans are encoded straight into the export buffer as `ScopeSpans.spans`
//! entries, once, at the end of the stream; a batch becomes an
//! `ExportTraceServiceRequest` by prepending the (pre-encoded) resource and
//! scope. Hand-written because the filter is size- and CPU-sensitive: no
//! intermediate message structs, no per-attribute allocation. Host tests
//! decode the output with prost (opentelemetry-proto) to prove it is valid.

/// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;

pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_key(buf: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(buf, (u64::from(field) << 3) | u64::from(wire));
}

pub fn put_bytes(buf: &mut Vec<u8>, field: u32, v: &[u8]) {
    put_key(buf, field, LEN);
    put_varint(buf, v.len() as u64);
    buf.extend_from_slice(v);
}

pub fn put_str(buf: &mut Vec<u8>, field: u32, v: &str) {
    put_bytes(buf, field, v.as_bytes());
}

pub fn put_uint(buf: &mut Vec<u8>, field: u32, v: u64) {
    put_key(buf, field, VARINT);
    put_varint(buf, v);
}

pub fn put_fixed64(buf: &mut Vec<u8>, field: u32, v: u64) {
    put_key(buf, field, FIXED64);
    buf.extend_from_slice(&v.to_le_bytes());
}

/// Writes a length-delimited nested message produced by `body`. One length
/// byte is reserved; if the body turns out longer than 127 bytes the body is
/// shifted to make room (rare for attributes, once per span).
pub fn put_nested(buf: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    put_key(buf, field, LEN);
    let at = buf.len();
    buf.push(0);
    body(buf);
    let len = buf.len() - at - 1;
    if len < 0x80 {
        buf[at] = len as u8;
    } else {
        let mut tmp = Vec::with_capacity(10);
        put_varint(&mut tmp, len as u64);
        buf.splice(at..at + 1, tmp);
    }
}

/// Length of a varint.
pub fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Double(f64),
}

/// A `KeyValue` with its `AnyValue`.
pub fn put_attr(buf: &mut Vec<u8>, field: u32, key: &str, value: &Value<'_>) {
    put_nested(buf, field, |b| {
        put_str(b, key_value::KEY, key);
        put_nested(b, key_value::VALUE, |v| match value {
            Value::Str(s) => put_str(v, any_value::STRING, s),
            Value::Bool(x) => put_uint(v, any_value::BOOL, u64::from(*x)),
            Value::Int(i) => put_uint(v, any_value::INT, *i as u64),
            Value::Double(d) => {
                put_key(v, any_value::DOUBLE, FIXED64);
                v.extend_from_slice(&d.to_le_bytes());
            }
        });
    });
}

/// Span kinds (OTLP enum values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Server = 2,
    Client = 3,
}

/// Status codes (OTLP enum values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCode {
    Unset = 0,
    Ok = 1,
    Error = 2,
}

/// Field numbers of `opentelemetry.proto.common.v1.KeyValue`.
pub mod key_value {
    pub const KEY: u32 = 1;
    pub const VALUE: u32 = 2;
}

/// Field numbers of `opentelemetry.proto.common.v1.AnyValue`.
pub mod any_value {
    pub const STRING: u32 = 1;
    pub const BOOL: u32 = 2;
    pub const INT: u32 = 3;
    pub const DOUBLE: u32 = 4;
}

/// Field numbers of the messages around the spans: `ExportTraceServiceRequest`,
/// `ResourceSpans`, `ScopeSpans`, `Resource`, `InstrumentationScope`, `Status`.
pub mod field {
    pub const REQUEST_RESOURCE_SPANS: u32 = 1;
    pub const RESOURCE_SPANS_RESOURCE: u32 = 1;
    pub const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
    pub const SCOPE_SPANS_SCOPE: u32 = 1;
    pub const SCOPE_SPANS_SPANS: u32 = 2;
    pub const RESOURCE_ATTRIBUTES: u32 = 1;
    pub const SCOPE_NAME: u32 = 1;
    pub const SCOPE_VERSION: u32 = 2;
    pub const STATUS_MESSAGE: u32 = 2;
    pub const STATUS_CODE: u32 = 3;
}

/// Field numbers of `opentelemetry.proto.trace.v1.Span`.
pub mod span_field {
    pub const TRACE_ID: u32 = 1;
    pub const SPAN_ID: u32 = 2;
    pub const TRACE_STATE: u32 = 3;
    pub const PARENT_SPAN_ID: u32 = 4;
    pub const NAME: u32 = 5;
    pub const KIND: u32 = 6;
    pub const START: u32 = 7;
    pub const END: u32 = 8;
    pub const ATTRIBUTES: u32 = 9;
    pub const STATUS: u32 = 15;
}

/// Encodes a `Resource` message body (attributes only).
pub fn encode_resource(attrs: &[(String, String)]) -> Vec<u8> {
    let mut buf = Vec::new();
    for (k, v) in attrs {
        put_attr(&mut buf, field::RESOURCE_ATTRIBUTES, k, &Value::Str(v));
    }
    buf
}

/// Encodes an `InstrumentationScope` body.
pub fn encode_scope(name: &str, version: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    put_str(&mut buf, field::SCOPE_NAME, name);
    put_str(&mut buf, field::SCOPE_VERSION, version);
    buf
}

/// Builds `ExportTraceServiceRequest { resource_spans: [ { resource, scope_spans: [ { scope, spans } ] } ] }`
/// around `spans`, a concatenation of encoded `ScopeSpans.spans` (field 2) entries.
pub fn encode_request(resource: &[u8], scope: &[u8], spans: &[u8], out: &mut Vec<u8>) {
    let nested_len = |body: usize| 1 + varint_len(body as u64) + body;
    let scope_spans_body = nested_len(scope.len()) + spans.len();
    let resource_spans_body = nested_len(resource.len()) + nested_len(scope_spans_body);
    out.clear();
    out.reserve(nested_len(resource_spans_body));
    put_key(out, field::REQUEST_RESOURCE_SPANS, LEN);
    put_varint(out, resource_spans_body as u64);
    put_bytes(out, field::RESOURCE_SPANS_RESOURCE, resource);
    put_key(out, field::RESOURCE_SPANS_SCOPE_SPANS, LEN);
    put_varint(out, scope_spans_body as u64);
    put_bytes(out, field::SCOPE_SPANS_SCOPE, scope);
    out.extend_from_slice(spans);
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
    use meshtrace_proto::otlp::common::v1::any_value;
    use meshtrace_proto::prost::Message;

    #[test]
    fn varint_len_matches_encoding() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
    }

    #[test]
    fn request_decodes_with_prost() {
        let resource = encode_resource(&[("service.name".into(), "svc".into())]);
        let scope = encode_scope("meshtrace", "0.1.0");
        let mut spans = Vec::new();
        let long = "x".repeat(300);
        for i in 0..3u8 {
            put_nested(&mut spans, field::SCOPE_SPANS_SPANS, |b| {
                put_bytes(b, span_field::TRACE_ID, &[i + 1; 16]);
                put_bytes(b, span_field::SPAN_ID, &[i + 1; 8]);
                put_str(b, span_field::NAME, "GET /x");
                put_uint(b, span_field::KIND, SpanKind::Server as u64);
                put_fixed64(b, span_field::START, 1_000);
                put_fixed64(b, span_field::END, 2_000);
                put_attr(b, span_field::ATTRIBUTES, "long", &Value::Str(&long));
                put_attr(b, span_field::ATTRIBUTES, "n", &Value::Int(-5));
                put_attr(b, span_field::ATTRIBUTES, "b", &Value::Bool(true));
                put_attr(b, span_field::ATTRIBUTES, "d", &Value::Double(0.25));
                put_nested(b, span_field::STATUS, |s| {
                    put_uint(s, field::STATUS_CODE, StatusCode::Error as u64)
                });
            });
        }
        let mut out = Vec::new();
        encode_request(&resource, &scope, &spans, &mut out);
        let req = ExportTraceServiceRequest::decode(out.as_slice()).unwrap();
        let rs = &req.resource_spans[0];
        assert_eq!(
            rs.resource.as_ref().unwrap().attributes[0].key,
            "service.name"
        );
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope.as_ref().unwrap().name, "meshtrace");
        assert_eq!(ss.spans.len(), 3);
        let s = &ss.spans[2];
        assert_eq!(s.trace_id, vec![3u8; 16]);
        assert_eq!(s.kind, 2);
        assert_eq!(s.end_time_unix_nano, 2_000);
        assert_eq!(s.status.as_ref().unwrap().code, 2);
        let val = |k: &str| {
            s.attributes
                .iter()
                .find(|a| a.key == k)
                .unwrap()
                .value
                .clone()
                .unwrap()
                .value
                .unwrap()
        };
        assert_eq!(val("long"), any_value::Value::StringValue(long.clone()));
        assert_eq!(val("n"), any_value::Value::IntValue(-5));
        assert_eq!(val("b"), any_value::Value::BoolValue(true));
        assert_eq!(val("d"), any_value::Value::DoubleValue(0.25));
    }
}
