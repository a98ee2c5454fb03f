//! Jaeger's span formats as OTLP. Jaeger clients and agents send
//! `jaeger.thrift` batches — Thrift compact over UDP (6831), binary over UDP
//! (6832) and over HTTP (`POST /api/traces`, 14268) — and Jaeger's gRPC
//! senders `api_v2` protobuf batches (`CollectorService/PostSpans`, 14250).
//! Both are read into the `api_v2` model (`meshtrace_proto::jaeger::model`;
//! Thrift by [`thrift`]), which [`to_otlp`] turns into OTLP by the
//! OpenTelemetry Collector's Jaeger receiver's rules: the process becomes the
//! resource (`service.name` and its tags), tags become typed attributes, logs
//! become events (named by their `event` field), the parent is the first
//! `CHILD_OF` reference in the same trace and every other reference a link
//! (with `opentracing.ref_type`), `span.kind` the kind, `error` /
//! `otel.status_code` / `otel.status_description` the status,
//! `otel.scope.*` (or `otel.library.*`) the scope, `w3c.tracestate` the
//! trace state.
//!
//! Memory: what a batch costs read and translated is counted from its bytes
//! first, allocating nothing ([`thrift::agent_cost`], [`thrift::batch_cost`],
//! [`proto_cost`]); the receivers reserve it before reading.

pub mod thrift;

use crate::ingest::cost::{self, Field, Schema, WireError};
use meshtrace_proto::jaeger::model;
use meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use meshtrace_proto::otlp::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use meshtrace_proto::otlp::resource::v1::Resource;
use meshtrace_proto::otlp::trace::v1::{span, status, ResourceSpans, ScopeSpans, Span, Status};
use std::collections::HashMap;
use std::mem::size_of;

/// Why the bytes are not a Jaeger batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JaegerError(pub String);

impl From<WireError> for JaegerError {
    fn from(e: WireError) -> Self {
        JaegerError(e.to_string())
    }
}

/// What each element of a batch costs in memory, read into the `api_v2`
/// model and translated to OTLP (both alive at once, each `Vec` counted
/// twice for its doubling); strings count their length once (moved, not
/// copied). An upper bound: `tests::the_cost_bounds_what_a_batch_takes`.
pub(crate) mod charge {
    use super::*;

    const fn u(n: usize) -> u64 {
        n as u64
    }

    pub const KEY_VALUE: u64 = 2 * u(size_of::<model::KeyValue>() + size_of::<KeyValue>());
    pub const REF: u64 = 2 * u(size_of::<model::SpanRef>() + size_of::<span::Link>())
        // Its ids (model and OTLP) and its `opentracing.ref_type` attribute.
        + 2 * 24
        + KEY_VALUE
        + 48;
    pub const LOG: u64 = 2 * u(size_of::<model::Log>() + size_of::<span::Event>());
    /// A span may open a scope of its own; Thrift's carry a parent reference.
    pub const SPAN: u64 = 2 * u(size_of::<model::Span>() + size_of::<Span>())
        + 2 * 24
        + REF
        + 2 * u(size_of::<ScopeSpans>() + size_of::<InstrumentationScope>());
    pub const PROCESS: u64 = 2 * u(size_of::<model::Process>() + size_of::<ResourceSpans>())
        + u(size_of::<Resource>())
        // `service.name`, and a service of its own when unnamed.
        + KEY_VALUE
        + 64;
    /// With a fixed allowance for what every batch has whatever it holds
    /// (the list the batches travel in, a grown `Vec`'s last doubling, the
    /// reader's own state): the property test found a batch of one span
    /// one byte over the struct sizes alone.
    pub const BATCH: u64 =
        2 * u(size_of::<model::Batch>() + size_of::<ExportTraceServiceRequest>()) + 256;
}

/// The `api_v2` messages, as far as memory goes ([`cost::Schema`]).
#[derive(Clone, Copy, Debug)]
enum ProtoMsg {
    PostSpansRequest,
    Batch,
    Process,
    Span,
    KeyValue,
    Log,
    SpanRef,
}

impl Schema for ProtoMsg {
    fn field(self, tag: u64) -> Field<ProtoMsg> {
        use Field::*;
        use ProtoMsg as M;
        let kv = Many(M::KeyValue, charge::KEY_VALUE as usize);
        match (self, tag) {
            (M::PostSpansRequest, 1) => One(M::Batch),
            (M::Batch, 1) => Many(M::Span, charge::SPAN as usize),
            (M::Batch, 2) | (M::Span, 10) => Many(M::Process, charge::PROCESS as usize),
            (M::Process, 1) => Text { repeated: false },
            (M::Process, 2) | (M::Span, 8) | (M::Log, 2) => kv,
            (M::Span, 1..=3 | 11) => Text { repeated: false },
            (M::Span, 4) => Many(M::SpanRef, charge::REF as usize),
            (M::Span, 9) => Many(M::Log, charge::LOG as usize),
            (M::Span, 12) => Text { repeated: true },
            (M::KeyValue, 1 | 3 | 7) => Text { repeated: false },
            (M::SpanRef, 1 | 2) => Text { repeated: false },
            _ => Unknown,
        }
    }
}

/// What a `PostSpansRequest` costs read and translated, from its bytes.
pub fn proto_cost(buf: &[u8]) -> Result<u64, JaegerError> {
    Ok(charge::BATCH
        + cost::walk(
            buf,
            0,
            buf.len(),
            ProtoMsg::PostSpansRequest,
            0,
            &mut Vec::new(),
        )?)
}

// ---- to OTLP ------------------------------------------------------------

fn kv(key: String, value: any_value::Value) -> KeyValue {
    KeyValue {
        key,
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text_kv(key: &str, value: &str) -> KeyValue {
    kv(
        key.to_string(),
        any_value::Value::StringValue(value.to_string()),
    )
}

/// A tag's value, taken out of it.
fn value_of(t: &mut model::KeyValue) -> any_value::Value {
    use any_value::Value;
    match model::ValueType::try_from(t.v_type) {
        Ok(model::ValueType::Bool) => Value::BoolValue(t.v_bool),
        Ok(model::ValueType::Int64) => Value::IntValue(t.v_int64),
        Ok(model::ValueType::Float64) => Value::DoubleValue(t.v_float64),
        Ok(model::ValueType::Binary) => Value::BytesValue(std::mem::take(&mut t.v_binary)),
        Ok(model::ValueType::String) | Err(_) => Value::StringValue(std::mem::take(&mut t.v_str)),
    }
}

fn attributes(tags: Vec<model::KeyValue>) -> Vec<KeyValue> {
    tags.into_iter()
        .map(|mut t| {
            let v = value_of(&mut t);
            kv(t.key, v)
        })
        .collect()
}

fn nanos(seconds: i64, nanos: i32) -> u64 {
    u64::try_from(seconds)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(nanos).unwrap_or(0))
}

/// A 16-byte trace id; Jaeger's 64-bit ids are its low half.
fn trace_id(id: Vec<u8>) -> Vec<u8> {
    if id.len() == 8 {
        let mut full = vec![0; 8];
        full.extend_from_slice(&id);
        full
    } else {
        id
    }
}

fn resource(p: model::Process) -> Resource {
    let service = if p.service_name.is_empty() {
        "unknown_service".to_string()
    } else {
        p.service_name
    };
    let mut attrs = vec![kv(
        "service.name".into(),
        any_value::Value::StringValue(service),
    )];
    attrs.extend(
        attributes(p.tags)
            .into_iter()
            .filter(|a| a.key != "service.name"),
    );
    Resource {
        attributes: attrs,
        ..Default::default()
    }
}

/// The tags that say what the span is rather than describe it.
#[derive(Default)]
struct Special {
    kind: Option<String>,
    error: bool,
    status_code: Option<String>,
    status_description: Option<String>,
    scope: (Option<String>, Option<String>),
    library: (Option<String>, Option<String>),
    trace_state: Option<String>,
}

fn as_text(v: &any_value::Value) -> Option<String> {
    match v {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

/// A span's scope: (name, version).
type ScopeKey = (String, String);

fn otlp_span(s: model::Span) -> (ScopeKey, Span) {
    let mut special = Special::default();
    let mut attrs = Vec::with_capacity(s.tags.len());
    for mut t in s.tags {
        let v = value_of(&mut t);
        let slot = match t.key.as_str() {
            "span.kind" => &mut special.kind,
            "otel.status_code" => &mut special.status_code,
            "otel.status_description" => &mut special.status_description,
            "otel.scope.name" => &mut special.scope.0,
            "otel.scope.version" => &mut special.scope.1,
            "otel.library.name" => &mut special.library.0,
            "otel.library.version" => &mut special.library.1,
            "w3c.tracestate" => &mut special.trace_state,
            "error" => {
                // The OpenTelemetry Collector's rule: `error` true marks
                // the span failed and is removed; anything else stays.
                let failed = match &v {
                    any_value::Value::BoolValue(b) => *b,
                    any_value::Value::StringValue(s) => s == "true",
                    _ => false,
                };
                if failed {
                    special.error = true;
                    continue;
                }
                attrs.push(kv(t.key, v));
                continue;
            }
            _ => {
                attrs.push(kv(t.key, v));
                continue;
            }
        };
        match as_text(&v) {
            Some(text) => *slot = Some(text),
            None => attrs.push(kv(t.key, v)),
        }
    }
    let kind = match special.kind.as_deref() {
        Some("client") => span::SpanKind::Client,
        Some("server") => span::SpanKind::Server,
        Some("producer") => span::SpanKind::Producer,
        Some("consumer") => span::SpanKind::Consumer,
        Some("internal") => span::SpanKind::Internal,
        _ => span::SpanKind::Unspecified,
    };
    let code = if special.error {
        Some(status::StatusCode::Error)
    } else {
        special.status_code.as_deref().map(|c| match c {
            "ERROR" | "STATUS_CODE_ERROR" | "2" => status::StatusCode::Error,
            "OK" | "STATUS_CODE_OK" | "1" => status::StatusCode::Ok,
            _ => status::StatusCode::Unset,
        })
    };
    let status = code.map(|c| Status {
        code: c as i32,
        message: special.status_description.unwrap_or_default(),
    });
    let trace = trace_id(s.trace_id);
    // The parent: the first CHILD_OF reference within the trace, else the
    // first FOLLOWS_FROM (Jaeger's `ParentSpanID`); every other one a link.
    let same_trace = |r: &model::SpanRef| trace_id(r.trace_id.clone()) == trace;
    let parent_at = s
        .references
        .iter()
        .position(|r| r.ref_type == model::SpanRefType::ChildOf as i32 && same_trace(r))
        .or_else(|| s.references.iter().position(same_trace));
    let mut parent_span_id = Vec::new();
    let mut links = Vec::new();
    for (i, r) in s.references.into_iter().enumerate() {
        if Some(i) == parent_at {
            parent_span_id = r.span_id;
            continue;
        }
        let ref_type = if r.ref_type == model::SpanRefType::FollowsFrom as i32 {
            "follows_from"
        } else {
            "child_of"
        };
        links.push(span::Link {
            trace_id: trace_id(r.trace_id),
            span_id: r.span_id,
            attributes: vec![text_kv("opentracing.ref_type", ref_type)],
            ..Default::default()
        });
    }
    let start = s.start_time.map_or(0, |t| nanos(t.seconds, t.nanos));
    let duration = s.duration.map_or(0, |d| nanos(d.seconds, d.nanos));
    let events = s
        .logs
        .into_iter()
        .map(|l| {
            let mut name = String::new();
            let mut attributes = Vec::with_capacity(l.fields.len());
            for mut f in l.fields {
                let v = value_of(&mut f);
                match v {
                    any_value::Value::StringValue(text) if f.key == "event" && name.is_empty() => {
                        name = text
                    }
                    v => attributes.push(kv(f.key, v)),
                }
            }
            span::Event {
                time_unix_nano: l.timestamp.map_or(0, |t| nanos(t.seconds, t.nanos)),
                name,
                attributes,
                ..Default::default()
            }
        })
        .collect();
    let scope = match special.scope {
        (Some(name), version) => (name, version.unwrap_or_default()),
        (None, _) => (
            special.library.0.unwrap_or_default(),
            special.library.1.unwrap_or_default(),
        ),
    };
    let span = Span {
        trace_id: trace,
        span_id: s.span_id,
        trace_state: special.trace_state.unwrap_or_default(),
        parent_span_id,
        name: s.operation_name,
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start.saturating_add(duration),
        attributes: attrs,
        events,
        links,
        status,
        ..Default::default()
    };
    (scope, span)
}

/// One resource's spans, by scope (in order of first appearance).
#[derive(Default)]
struct Scopes {
    index: HashMap<ScopeKey, usize>,
    list: Vec<ScopeSpans>,
}

impl Scopes {
    fn push(&mut self, scope: ScopeKey, span: Span) {
        let at = *self.index.entry(scope.clone()).or_insert_with(|| {
            self.list.push(ScopeSpans {
                scope: (!scope.0.is_empty()).then(|| InstrumentationScope {
                    name: scope.0.clone(),
                    version: scope.1.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            });
            self.list.len() - 1
        });
        if let Some(ss) = self.list.get_mut(at) {
            ss.spans.push(span);
        }
    }
}

/// Batches as one OTLP export: a resource per batch process, and one per
/// run of spans carrying a process of their own.
pub fn to_otlp(batches: Vec<model::Batch>) -> ExportTraceServiceRequest {
    let mut resource_spans = Vec::new();
    let mut close = |process: model::Process, scopes: Scopes| {
        if !scopes.list.is_empty() {
            resource_spans.push(ResourceSpans {
                resource: Some(resource(process)),
                scope_spans: scopes.list,
                ..Default::default()
            });
        }
    };
    for b in batches {
        let batch_process = b.process.unwrap_or_default();
        let mut own = Scopes::default();
        // Spans with a process of their own, grouped while it repeats.
        let mut run: Option<(model::Process, Scopes)> = None;
        for mut s in b.spans {
            match s.process.take() {
                None => {
                    let (scope, span) = otlp_span(s);
                    own.push(scope, span);
                }
                Some(p) => {
                    let (scope, span) = otlp_span(s);
                    match &mut run {
                        Some((current, scopes)) if *current == p => scopes.push(scope, span),
                        _ => {
                            let mut scopes = Scopes::default();
                            scopes.push(scope, span);
                            if let Some((p0, s0)) = run.replace((p, scopes)) {
                                close(p0, s0);
                            }
                        }
                    }
                }
            }
        }
        if let Some((p, s)) = run {
            close(p, s);
        }
        close(batch_process, own);
    }
    ExportTraceServiceRequest { resource_spans }
}

#[cfg(test)]
mod tests;
