//! What an OTLP export costs in memory once decoded, read from its wire bytes
//! without decoding it. Protobuf amplifies: an empty `ResourceSpans` is two
//! bytes on the wire and a hundred-odd bytes decoded, so a 16 MiB message can
//! decode into gigabytes. The collector reserves this cost before decoding
//! and refuses what could never fit.
//!
//! The walk follows the OTLP trace schema: every element of a repeated
//! message field counts its struct size twice (a `Vec` grows by doubling),
//! every string and bytes field its length; scalars live inside their struct.
//! Unknown fields are skipped, as prost skips them.

use meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use meshtrace_proto::otlp::common::v1::{AnyValue, EntityRef, InstrumentationScope, KeyValue};
use meshtrace_proto::otlp::resource::v1::Resource;
use meshtrace_proto::otlp::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use std::mem::size_of;

/// Nesting prost accepts (its recursion limit).
const MAX_DEPTH: usize = 100;

/// Why the bytes are not an OTLP export (the message names the byte offset).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(String);

/// The OTLP trace messages, as far as memory goes.
#[derive(Clone, Copy, Debug)]
enum Msg {
    Request,
    ResourceSpans,
    Resource,
    EntityRef,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    /// `ArrayValue` and `KeyValueList`: one repeated field of `AnyValue` / `KeyValue`.
    Array,
    KvList,
}

/// A protobuf schema, as far as memory goes: what each length-delimited
/// field of each message is. OTLP's is [`Msg`]; Jaeger's `api_v2` model has
/// its own (`ingest::jaeger`).
pub(crate) trait Schema: Copy {
    fn field(self, tag: u64) -> Field<Self>;
    /// Whether this message is a span (its byte ranges are collected).
    fn is_span(self) -> bool {
        false
    }
}

impl Schema for Msg {
    fn field(self, tag: u64) -> Field<Msg> {
        field(self, tag)
    }
    fn is_span(self) -> bool {
        matches!(self, Msg::Span)
    }
}

/// What a length-delimited field of a message is.
pub(crate) enum Field<M> {
    /// A nested message, inline in its parent (`optional` or a oneof).
    One(M),
    /// An element of a repeated message field: what it costs (OTLP's schema
    /// gives its struct size, twice: a `Vec` grows by doubling).
    Many(M, usize),
    /// A string or bytes (repeated strings count their `String` too).
    Text { repeated: bool },
    /// Not in the schema (skipped by prost).
    Unknown,
}

fn field(msg: Msg, tag: u64) -> Field<Msg> {
    use Field::*;
    match (msg, tag) {
        (Msg::Request, 1) => Many(Msg::ResourceSpans, 2 * size_of::<ResourceSpans>()),
        (Msg::ResourceSpans, 1) => One(Msg::Resource),
        (Msg::ResourceSpans, 2) => Many(Msg::ScopeSpans, 2 * size_of::<ScopeSpans>()),
        (Msg::ResourceSpans, 3) => Text { repeated: false },
        (Msg::Resource, 1) => Many(Msg::KeyValue, 2 * size_of::<KeyValue>()),
        (Msg::Resource, 3) => Many(Msg::EntityRef, 2 * size_of::<EntityRef>()),
        (Msg::EntityRef, 1 | 2) => Text { repeated: false },
        (Msg::EntityRef, 3 | 4) => Text { repeated: true },
        (Msg::ScopeSpans, 1) => One(Msg::Scope),
        (Msg::ScopeSpans, 2) => Many(Msg::Span, 2 * size_of::<Span>()),
        (Msg::ScopeSpans, 3) => Text { repeated: false },
        (Msg::Scope, 1 | 2) => Text { repeated: false },
        (Msg::Scope, 3) => Many(Msg::KeyValue, 2 * size_of::<KeyValue>()),
        (Msg::Span, 1..=5) => Text { repeated: false },
        (Msg::Span, 9) => Many(Msg::KeyValue, 2 * size_of::<KeyValue>()),
        (Msg::Span, 11) => Many(Msg::Event, 2 * size_of::<span::Event>()),
        (Msg::Span, 13) => Many(Msg::Link, 2 * size_of::<span::Link>()),
        (Msg::Span, 15) => One(Msg::Status),
        (Msg::Event, 2) => Text { repeated: false },
        (Msg::Event, 3) => Many(Msg::KeyValue, 2 * size_of::<KeyValue>()),
        (Msg::Link, 1..=3) => Text { repeated: false },
        (Msg::Link, 4) => Many(Msg::KeyValue, 2 * size_of::<KeyValue>()),
        (Msg::Status, 2) => Text { repeated: false },
        (Msg::KeyValue, 1) => Text { repeated: false },
        (Msg::KeyValue, 2) => One(Msg::AnyValue),
        (Msg::AnyValue, 1 | 7) => Text { repeated: false },
        (Msg::AnyValue, 5) => One(Msg::Array),
        (Msg::AnyValue, 6) => One(Msg::KvList),
        (Msg::Array, 1) => Many(Msg::AnyValue, 2 * size_of::<AnyValue>()),
        (Msg::KvList, 1) => Many(Msg::KeyValue, 2 * size_of::<KeyValue>()),
        _ => Unknown,
    }
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&b) = buf.get(*pos) else {
            return Err(WireError(format!("truncated varint at byte {pos}")));
        };
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(WireError(format!(
        "varint longer than 10 bytes at byte {pos}"
    )))
}

fn skip(buf: &[u8], pos: &mut usize, n: usize) -> Result<(), WireError> {
    if buf.len() - *pos < n {
        return Err(WireError(format!(
            "field of {n} bytes at byte {pos} runs past the end ({} bytes)",
            buf.len()
        )));
    }
    *pos += n;
    Ok(())
}

/// The decoded cost of the message `msg` spanning `buf[start..end]`; the byte
/// ranges of its spans are pushed to `spans`, in order.
pub(crate) fn walk<M: Schema>(
    buf: &[u8],
    start: usize,
    end: usize,
    msg: M,
    depth: usize,
    spans: &mut Vec<std::ops::Range<usize>>,
) -> Result<u64, WireError> {
    if depth > MAX_DEPTH {
        return Err(WireError(format!(
            "messages nested deeper than {MAX_DEPTH} (the recursion limit) at byte {start}"
        )));
    }
    let body = &buf[..end];
    let mut pos = start;
    let mut cost = 0u64;
    while pos < end {
        let key = varint(body, &mut pos)?;
        let (tag, wire) = (key >> 3, key & 7);
        if tag == 0 {
            return Err(WireError(format!("field number 0 at byte {pos}")));
        }
        match wire {
            0 => {
                varint(body, &mut pos)?;
            }
            1 => skip(body, &mut pos, 8)?,
            5 => skip(body, &mut pos, 4)?,
            2 => {
                let len = usize::try_from(varint(body, &mut pos)?).unwrap_or(usize::MAX);
                let from = pos;
                skip(body, &mut pos, len)?;
                cost += match msg.field(tag) {
                    Field::One(inner) => walk(buf, from, pos, inner, depth + 1, spans)?,
                    Field::Many(inner, size) => {
                        if inner.is_span() {
                            spans.push(from..pos);
                        }
                        size as u64 + walk(buf, from, pos, inner, depth + 1, spans)?
                    }
                    Field::Text { repeated } => {
                        len as u64
                            + if repeated {
                                2 * size_of::<String>() as u64
                            } else {
                                0
                            }
                    }
                    Field::Unknown => 0,
                };
            }
            other => {
                return Err(WireError(format!(
                    "wire type {other} (field {tag}) at byte {pos} is not supported"
                )))
            }
        }
    }
    Ok(cost)
}

/// Bytes an `ExportTraceServiceRequest` occupies once decoded (an upper
/// bound), or why its wire bytes are malformed.
pub fn decoded_cost(buf: &[u8]) -> Result<u64, WireError> {
    Ok(decoded_cost_and_spans(buf)?.0)
}

/// [`decoded_cost`], and where each span's bytes are in `buf` (in the order
/// prost decodes them): a span left as it came is stored as these bytes, not
/// encoded again.
pub fn decoded_cost_and_spans(buf: &[u8]) -> Result<(u64, Vec<std::ops::Range<usize>>), WireError> {
    let mut spans = Vec::new();
    let cost = walk(buf, 0, buf.len(), Msg::Request, 0, &mut spans)?;
    Ok((size_of::<ExportTraceServiceRequest>() as u64 + cost, spans))
}

/// Bytes a `Resource` occupies once decoded (an upper bound), from its wire bytes.
pub fn resource_cost(buf: &[u8]) -> Result<u64, WireError> {
    message_cost(buf, Msg::Resource, size_of::<Resource>())
}

/// Bytes an `InstrumentationScope` occupies once decoded (an upper bound).
pub fn scope_cost(buf: &[u8]) -> Result<u64, WireError> {
    message_cost(buf, Msg::Scope, size_of::<InstrumentationScope>())
}

/// Bytes a `Span` occupies once decoded (an upper bound).
pub fn span_cost(buf: &[u8]) -> Result<u64, WireError> {
    message_cost(buf, Msg::Span, size_of::<Span>())
}

fn message_cost(buf: &[u8], msg: Msg, size: usize) -> Result<u64, WireError> {
    Ok(size as u64 + walk(buf, 0, buf.len(), msg, 1, &mut Vec::new())?)
}

/// An upper bound for OTLP/JSON: every object could be the largest struct,
/// twice over, plus the text itself.
pub fn json_cost(text: &[u8]) -> u64 {
    let largest = [
        size_of::<ResourceSpans>(),
        size_of::<Resource>(),
        size_of::<ScopeSpans>(),
        size_of::<InstrumentationScope>(),
        size_of::<Span>(),
        size_of::<span::Event>(),
        size_of::<span::Link>(),
        size_of::<Status>(),
        size_of::<KeyValue>(),
        size_of::<AnyValue>(),
        size_of::<EntityRef>(),
    ]
    .into_iter()
    .max()
    .unwrap_or(256) as u64;
    let objects = text.iter().filter(|b| **b == b'{').count() as u64;
    text.len() as u64 + objects * 2 * largest
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshtrace_proto::otlp::common::v1::{any_value, ArrayValue};
    use prost::Message;

    use crate::store::suite::kv;

    /// The real heap bytes of a decoded request (strings, vecs by capacity) plus its struct.
    #[allow(clippy::ptr_arg)] // capacity, which a slice has not
    fn actual(r: &ExportTraceServiceRequest) -> u64 {
        fn kvs(v: &Vec<KeyValue>) -> u64 {
            v.capacity() as u64 * size_of::<KeyValue>() as u64
                + v.iter()
                    .map(|k| k.key.capacity() as u64 + any(k.value.as_ref()))
                    .sum::<u64>()
        }
        fn any(v: Option<&AnyValue>) -> u64 {
            match v.and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.capacity() as u64,
                Some(any_value::Value::ArrayValue(a)) => {
                    a.values.capacity() as u64 * size_of::<AnyValue>() as u64
                        + a.values.iter().map(|x| any(Some(x))).sum::<u64>()
                }
                _ => 0,
            }
        }
        let mut total = size_of::<ExportTraceServiceRequest>() as u64
            + r.resource_spans.capacity() as u64 * size_of::<ResourceSpans>() as u64;
        for rs in &r.resource_spans {
            total += rs.resource.as_ref().map_or(0, |x| kvs(&x.attributes));
            total += rs.scope_spans.capacity() as u64 * size_of::<ScopeSpans>() as u64;
            for ss in &rs.scope_spans {
                total += ss.spans.capacity() as u64 * size_of::<Span>() as u64;
                for s in &ss.spans {
                    total += (s.trace_id.capacity() + s.span_id.capacity() + s.name.capacity())
                        as u64
                        + kvs(&s.attributes);
                }
            }
        }
        total
    }

    pub(super) fn realistic_for_timing() -> ExportTraceServiceRequest {
        realistic()
    }

    fn realistic() -> ExportTraceServiceRequest {
        let spans = (0..200u64)
            .map(|i| Span {
                trace_id: vec![1; 16],
                span_id: (i + 1).to_be_bytes().to_vec(),
                name: format!("GET /api/{i}"),
                attributes: (0..10)
                    .map(|k| kv(&format!("attr.{k}"), &format!("value-{i}-{k}")))
                    .chain([KeyValue {
                        key: "list".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::ArrayValue(ArrayValue {
                                values: vec![AnyValue::default(); 3],
                            })),
                        }),
                        ..Default::default()
                    }])
                    .collect(),
                ..Default::default()
            })
            .collect();
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", "checkout")],
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

    #[test]
    fn the_estimate_bounds_what_decoding_allocates_without_wild_overcounting() {
        let req = realistic();
        let wire = req.encode_to_vec();
        let decoded = ExportTraceServiceRequest::decode(wire.as_slice()).unwrap();
        let (estimate, real) = (decoded_cost(&wire).unwrap(), actual(&decoded));
        assert!(estimate >= real, "estimate {estimate} < actual {real}");
        assert!(estimate <= 3 * real, "estimate {estimate} vs actual {real}");
    }

    #[test]
    fn empty_resource_spans_amplification_is_seen() {
        // 2 bytes each on the wire, a ResourceSpans each once decoded.
        let wire: Vec<u8> = [0x0a, 0x00].repeat(100_000);
        let cost = decoded_cost(&wire).unwrap();
        assert!(
            cost >= 100_000 * size_of::<ResourceSpans>() as u64,
            "{cost} for {} wire bytes",
            wire.len()
        );
        assert!(
            cost / wire.len() as u64 >= 50,
            "amplification {}",
            cost / wire.len() as u64
        );
    }

    #[test]
    fn malformed_input_is_named_not_decoded() {
        let wire = realistic().encode_to_vec();
        let truncated = &wire[..wire.len() - 3];
        let e = decoded_cost(truncated).unwrap_err();
        assert!(e.to_string().contains("past the end"), "{e}");
        // Nesting beyond prost's limit: arrays in arrays.
        let mut v = AnyValue::default();
        for _ in 0..150 {
            v = AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![v] })),
            };
        }
        let mut req = realistic();
        req.resource_spans[0].scope_spans[0].spans[0].attributes[0].value = Some(v);
        let e = decoded_cost(&req.encode_to_vec()).unwrap_err();
        assert!(e.to_string().contains("nested deeper"), "{e}");
        assert!(decoded_cost(&[0x0b]).is_err(), "group wire type");
        assert!(decoded_cost(&[
            0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
        ])
        .is_err());
    }

    #[test]
    fn json_cost_counts_objects() {
        let empty = br#"{"resourceSpans":[{},{},{}]}"#;
        assert!(json_cost(empty) >= 3 * 2 * size_of::<ResourceSpans>() as u64);
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use prost::Message;

    /// `cargo test --release -p meshtrace-collector cost_vs_decode -- --ignored --nocapture`:
    /// what the estimate costs beside the decode it guards.
    #[test]
    #[ignore]
    fn cost_vs_decode() {
        let req = super::tests::realistic_for_timing();
        let wire = req.encode_to_vec();
        let t = std::time::Instant::now();
        let mut c = 0;
        for _ in 0..200 {
            c += decoded_cost(&wire).unwrap();
        }
        let walk = t.elapsed();
        let t = std::time::Instant::now();
        let mut n = 0;
        for _ in 0..200 {
            n += ExportTraceServiceRequest::decode(wire.as_slice())
                .unwrap()
                .resource_spans
                .len();
        }
        let decode = t.elapsed();
        eprintln!(
            "{} bytes: estimate {:?}, decode {:?} ({c} {n})",
            wire.len(),
            walk / 200,
            decode / 200
        );
    }
}
