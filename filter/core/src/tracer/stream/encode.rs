//! A finished span as OTLP protobuf (`ScopeSpans.spans` entry), written straight
//! into the export buffer: ids, times, the semantic-convention attributes, the
//! custom tags, the status.

use super::finish::Ending;
use super::{int_le, lossy, split_host_port, SpanState};
use crate::config::AttributeType;
use crate::otlp::{self, span_field as f, SpanKind, StatusCode, Value};
use crate::semconv as sc;
use crate::tracer::{truncate, AttributeTag, HeaderTag};

/// The tracer's tag configuration a span is written with.
pub(super) struct Tags<'a> {
    /// Pre-encoded attributes that never change (literal, env, metadata tags).
    pub fixed: &'a [u8],
    pub max_length: usize,
    pub request: &'a [HeaderTag],
    pub response: &'a [HeaderTag],
    pub attributes: &'a [AttributeTag],
}

pub(super) fn write_span(buf: &mut Vec<u8>, span: &SpanState, e: &Ending, tags: &Tags<'_>) {
    otlp::put_nested(buf, otlp::field::SCOPE_SPANS_SPANS, |b| {
        otlp::put_bytes(b, f::TRACE_ID, &span.trace_id.0);
        otlp::put_bytes(b, f::SPAN_ID, &span.span_id.0);
        if let Some(ts) = &span.tracestate {
            otlp::put_str(b, f::TRACE_STATE, ts);
        }
        if let Some(p) = &span.parent {
            otlp::put_bytes(b, f::PARENT_SPAN_ID, &p.0);
        }
        otlp::put_str(b, f::NAME, &span.name);
        otlp::put_uint(b, f::KIND, e.kind as u64);
        otlp::put_fixed64(b, f::START, span.start_ns);
        otlp::put_fixed64(b, f::END, e.end_ns.max(span.start_ns));
        let a = f::ATTRIBUTES;
        let max = tags.max_length;
        let text = |at: Option<usize>| at.map(|i| String::from_utf8_lossy(span.headers.value(i)));
        let method = text(span.fields.method);
        let method = method.as_deref().unwrap_or("GET");
        otlp::put_attr(
            b,
            a,
            sc::HTTP_REQUEST_METHOD,
            &Value::Str(truncate(method, max)),
        );
        let path = text(span.fields.path);
        let path = crate::operation::path_without_query(path.as_deref().unwrap_or("/"));
        otlp::put_attr(b, a, sc::URL_PATH, &Value::Str(truncate(path, max)));
        if let Some(s) = text(span.fields.scheme) {
            let s = truncate(&s, max);
            otlp::put_attr(b, a, sc::URL_SCHEME, &Value::Str(s));
        }
        if let Some(auth) = text(span.fields.authority) {
            let auth = truncate(&auth, max);
            let (h, port) = split_host_port(auth);
            otlp::put_attr(b, a, sc::SERVER_ADDRESS, &Value::Str(h));
            if let Some(p) = port {
                otlp::put_attr(b, a, sc::SERVER_PORT, &Value::Int(p));
            }
        }
        if let Some(s) = e.status {
            otlp::put_attr(b, a, sc::HTTP_RESPONSE_STATUS_CODE, &Value::Int(s));
        }
        if let Some(g) = span.grpc_status {
            otlp::put_attr(b, a, sc::RPC_GRPC_STATUS_CODE, &Value::Int(g));
        }
        if let Some(ua) = text(span.fields.user_agent) {
            let ua = truncate(&ua, max);
            otlp::put_attr(b, a, sc::USER_AGENT_ORIGINAL, &Value::Str(ua));
        }
        if let Some(d) = text(span.fields.debug_id) {
            let d = truncate(&d, max);
            otlp::put_attr(b, a, sc::JAEGER_DEBUG_ID, &Value::Str(d));
        }
        if let Some(r) = text(span.fields.request_id) {
            let r = truncate(&r, max);
            otlp::put_attr(b, a, sc::HTTP_REQUEST_HEADER_X_REQUEST_ID, &Value::Str(r));
        }
        if let Some(p) = &e.peer {
            let (h, port) = split_host_port(p);
            otlp::put_attr(b, a, sc::NETWORK_PEER_ADDRESS, &Value::Str(h));
            if let Some(port) = port {
                otlp::put_attr(b, a, sc::NETWORK_PEER_PORT, &Value::Int(port));
            }
            if e.kind == SpanKind::Server {
                otlp::put_attr(b, a, sc::CLIENT_ADDRESS, &Value::Str(h));
            }
        }
        if let Some(n) = e.req_size {
            otlp::put_attr(b, a, sc::HTTP_REQUEST_BODY_SIZE, &Value::Int(n));
        }
        if let Some(n) = e.resp_size {
            otlp::put_attr(b, a, sc::HTTP_RESPONSE_BODY_SIZE, &Value::Int(n));
        }
        if let Some(c) = &e.cluster {
            otlp::put_attr(b, a, sc::ENVOY_UPSTREAM_CLUSTER, &Value::Str(c));
        }
        if let Some(u) = &e.upstream_host {
            otlp::put_attr(b, a, sc::ENVOY_UPSTREAM_HOST, &Value::Str(u));
        }
        if !e.flags.is_empty() {
            otlp::put_attr(b, a, sc::ENVOY_RESPONSE_FLAGS, &Value::Str(&e.flags));
        }
        let (stype, sparam) = span.decision.sampler_tags();
        otlp::put_attr(b, a, sc::SAMPLER_TYPE, &Value::Str(stype));
        if let Some(p) = sparam {
            otlp::put_attr(b, a, sc::SAMPLER_PARAM, &Value::Double(p));
        }
        b.extend_from_slice(tags.fixed);
        for (i, tag) in tags.request.iter().enumerate() {
            match span.request_tags.iter().find(|(j, _)| *j == i) {
                Some((_, at)) => {
                    let v = String::from_utf8_lossy(span.headers.value(*at));
                    let v = truncate(&v, tag.max_length);
                    otlp::put_attr(b, a, &tag.tag, &Value::Str(v));
                }
                None => {
                    if let Some(d) = &tag.default {
                        otlp::put_attr(b, a, &tag.tag, &Value::Str(d));
                    }
                }
            }
        }
        for (i, tag) in tags.response.iter().enumerate() {
            match span.response_tags.iter().find(|(j, _)| *j == i) {
                Some((_, v)) => otlp::put_attr(b, a, &tag.tag, &Value::Str(v)),
                None => {
                    if let Some(d) = &tag.default {
                        otlp::put_attr(b, a, &tag.tag, &Value::Str(d));
                    }
                }
            }
        }
        for (i, raw) in &e.attr_values {
            let tag = &tags.attributes[*i];
            let value = raw.as_deref().and_then(|bytes| match tag.value_type {
                AttributeType::Int => int_le(bytes).map(Value::Int),
                AttributeType::Bool => bytes.first().map(|x| Value::Bool(*x != 0)),
                AttributeType::String => None,
            });
            match (value, raw) {
                (Some(v), _) => otlp::put_attr(b, a, &tag.tag, &v),
                (None, Some(bytes)) if tag.value_type == AttributeType::String => {
                    let s = lossy(bytes, tag.max_length);
                    otlp::put_attr(b, a, &tag.tag, &Value::Str(&s));
                }
                _ => {
                    if let Some(d) = &tag.default {
                        otlp::put_attr(b, a, &tag.tag, &Value::Str(d));
                    }
                }
            }
        }
        otlp::put_nested(b, f::STATUS, |s| {
            if e.error && !e.status_message.is_empty() {
                otlp::put_str(s, otlp::field::STATUS_MESSAGE, &e.status_message);
            }
            let code = if e.error {
                StatusCode::Error
            } else {
                StatusCode::Unset
            };
            otlp::put_uint(s, otlp::field::STATUS_CODE, code as u64);
        });
    })
}
