//! The collector's bottom layer: span records as stored and read back, and how
//! OTLP values, kinds and resources are seen by the store, the query API and
//! the metrics. Imports nothing from the crate.

use base64::Engine;
use meshtrace_proto::otlp::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use meshtrace_proto::otlp::resource::v1::Resource;
use meshtrace_proto::otlp::trace::v1::{status::StatusCode, Span};
use meshtrace_proto::semconv;
use prost::Message;
use std::sync::Arc;

/// 9999-12-31T23:59:59.999999Z, the last instant RFC 3339 can write, in µs
/// since the epoch: every time a query takes or answers is at most this.
pub const LAST_RFC3339_US: i64 = 253_402_300_799_999_999;
/// The same instant in ms.
pub const LAST_RFC3339_MS: i64 = LAST_RFC3339_US / 1000;

/// A span ready to store: index columns plus the encoded span and resource.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub service: String,
    pub operation: String,
    /// OTLP span kind.
    pub kind: i32,
    pub start_us: i64,
    pub duration_us: i64,
    pub error: bool,
    /// OTLP status code (0 unset, 1 ok, 2 error).
    pub status_code: i32,
    /// Values of the configured indexed tag keys.
    pub indexed_tags: Vec<(String, String)>,
    /// The probability this span's trace was sampled with, when known: the
    /// probabilistic sampler's `sampler.param`, else OpenTelemetry's `th` in the
    /// span's `tracestate`. Adaptive sampling's input and span metrics' weight (1/p).
    pub sampled_probability: Option<f64>,
    /// This span's own sampler decided, probabilistically (`sampler.type` is
    /// `probabilistic`), rather than following its parent: what adaptive sampling counts.
    pub sampler_decided: bool,
    /// The span's [`Origin`], encoded once per `ScopeSpans` and shared by its spans.
    pub origin: Arc<[u8]>,
    /// Encoded `Span`, with every attribute, event and link (shared, not
    /// copied, by the stores that keep it).
    pub body: bytes::Bytes,
    /// Every tag [`span_matches_tag`] finds on the span, as [`tag_hash`]es,
    /// sorted: the blocks engine's tag filters read these, not the body.
    pub tags: Arc<[u64]>,
}

/// What a storable span must have: ids of the right length, not all zero, and
/// an end not before its start.
#[derive(Debug, Clone, Copy)]
pub struct ValidSpan {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub duration_ns: u64,
}

/// Checks a span; the error names the field.
pub fn validate(s: &Span) -> Result<ValidSpan, String> {
    validate_parts(
        &s.trace_id,
        &s.span_id,
        &s.parent_span_id,
        s.start_time_unix_nano,
        s.end_time_unix_nano,
    )
}

/// [`validate`] on a span's fields (read in place, not decoded).
pub fn validate_parts(
    trace_id: &[u8],
    span_id: &[u8],
    parent_span_id: &[u8],
    start_ns: u64,
    end_ns: u64,
) -> Result<ValidSpan, String> {
    let tid = <[u8; 16]>::try_from(trace_id)
        .ok()
        .filter(|t| t.iter().any(|b| *b != 0))
        .ok_or_else(|| {
            format!(
                "trace_id must be 16 non-zero bytes (got {})",
                trace_id.len()
            )
        })?;
    let sid = <[u8; 8]>::try_from(span_id)
        .ok()
        .filter(|t| t.iter().any(|b| *b != 0))
        .ok_or_else(|| format!("span_id must be 8 non-zero bytes (got {})", span_id.len()))?;
    let parent = match parent_span_id.len() {
        0 => None,
        8 => <[u8; 8]>::try_from(parent_span_id).ok(),
        n => return Err(format!("parent_span_id must be empty or 8 bytes (got {n})")),
    };
    let duration_ns = end_ns
        .checked_sub(start_ns)
        .ok_or("end_time_unix_nano is before start_time_unix_nano")?;
    Ok(ValidSpan {
        trace_id: tid,
        span_id: sid,
        parent_span_id: parent,
        duration_ns,
    })
}

impl SpanRecord {
    /// A span ready to store, or why it cannot be stored (the reason names the field).
    /// `origin_tags`: the [`origin_tag_hashes`] of the span's resource and scope.
    pub fn from_span(
        s: &Span,
        service: &str,
        origin: &Arc<[u8]>,
        origin_tags: &[u64],
        indexed: &[String],
    ) -> Result<SpanRecord, String> {
        Self::from_span_with_body(s, service, origin, origin_tags, indexed, None)
    }

    /// [`SpanRecord::from_span`] with `body`, the span's encoding when the caller
    /// has it (the wire bytes it was decoded from); encoded here otherwise.
    pub fn from_span_with_body(
        s: &Span,
        service: &str,
        origin: &Arc<[u8]>,
        origin_tags: &[u64],
        indexed: &[String],
        body: Option<bytes::Bytes>,
    ) -> Result<SpanRecord, String> {
        let ValidSpan {
            trace_id,
            span_id,
            parent_span_id,
            duration_ns,
        } = validate(s)?;
        let error = is_error(s);
        let own_probability = sampled_probability(&s.attributes);
        let mut indexed_tags: Vec<(String, String)> = s
            .attributes
            .iter()
            .filter(|a| indexed.contains(&a.key))
            .filter_map(|a| Some((a.key.clone(), value_text(a.value.as_ref()?)?)))
            .collect();
        if error && indexed.iter().any(|k| k == semconv::ERROR) {
            indexed_tags.push((semconv::ERROR.into(), "true".into()));
        }
        Ok(SpanRecord {
            trace_id,
            span_id,
            parent_span_id,
            service: service.to_string(),
            operation: s.name.clone(),
            kind: s.kind,
            start_us: (s.start_time_unix_nano / 1000) as i64,
            duration_us: (duration_ns / 1000) as i64,
            error,
            status_code: s.status.as_ref().map_or(0, |st| st.code),
            indexed_tags,
            sampled_probability: own_probability.or_else(|| tracestate_probability(&s.trace_state)),
            sampler_decided: own_probability.is_some(),
            origin: origin.clone(),
            body: body.unwrap_or_else(|| s.encode_to_vec().into()),
            tags: span_tag_hashes(s, origin_tags),
        })
    }
}

/// `sampler.param` when `sampler.type` is `probabilistic` (Jaeger's and the filter's tags).
pub fn sampled_probability(attrs: &[KeyValue]) -> Option<f64> {
    match find_attr(attrs, semconv::SAMPLER_TYPE)?.value.as_ref()? {
        any_value::Value::StringValue(t) if t == semconv::SAMPLER_TYPE_PROBABILISTIC => {}
        _ => return None,
    }
    match find_attr(attrs, semconv::SAMPLER_PARAM)?.value.as_ref()? {
        any_value::Value::DoubleValue(p) => Some(*p),
        any_value::Value::IntValue(p) => Some(*p as f64),
        any_value::Value::StringValue(p) => p.parse().ok(),
        _ => None,
    }
}

/// The probability in OpenTelemetry's `ot=th:` member of a `tracestate`
/// (consistent probability sampling: `1 - th/2^56`); `None` when absent or invalid.
pub fn tracestate_probability(tracestate: &str) -> Option<f64> {
    if tracestate.is_empty() {
        return None;
    }
    let threshold = meshtrace_proto::otel_ts::parse(tracestate).threshold?;
    Some(meshtrace_proto::otel_ts::probability(threshold)).filter(|p| *p > 0.0)
}

/// Where a span comes from: its resource (Jaeger's process) and its
/// instrumentation scope. Stored once per distinct value; read back once per
/// trace or search and shared by its spans, never decoded per span.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Origin {
    pub resource: Resource,
    pub scope: InstrumentationScope,
}

/// Field number of the scope inside an encoded origin. An origin is an encoded
/// `Resource` followed by the scope as this (unknown to `Resource`) field, so
/// partitions written before scopes were kept decode unchanged (no scope).
const ORIGIN_SCOPE_FIELD: u32 = 1000;

#[derive(Clone, PartialEq, prost::Message)]
struct ScopeOfOrigin {
    #[prost(message, optional, tag = "1000")]
    scope: Option<InstrumentationScope>,
}

impl Origin {
    /// The stored bytes of a resource and a scope.
    pub fn encode(resource: &Resource, scope: Option<&InstrumentationScope>) -> Vec<u8> {
        let mut out = resource.encode_to_vec();
        if let Some(scope) = scope.filter(|s| !s.name.is_empty() || !s.version.is_empty()) {
            prost::encoding::message::encode(ORIGIN_SCOPE_FIELD, scope, &mut out);
        }
        out
    }

    /// Reads stored bytes back.
    pub fn decode(bytes: &[u8]) -> Result<Origin, prost::DecodeError> {
        Ok(Origin {
            resource: Resource::decode(bytes)?,
            scope: ScopeOfOrigin::decode(bytes)?.scope.unwrap_or_default(),
        })
    }
}

/// A span read back with its shared origin.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSpan {
    pub span: Span,
    pub origin: Arc<Origin>,
}

/// A trace read back: its spans in start order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoredTrace {
    pub trace_id: [u8; 16],
    pub spans: Vec<StoredSpan>,
    /// Spans were left out: the answer reached its span budget.
    pub truncated: bool,
}

/// Heap bytes of a decoded span (what it holds in memory, with its struct): each
/// vector counted at twice its elements (prost grows them by doubling), each
/// string and byte string by its length rounded up to an allocation (16 B).
/// Reads charge this against their budget; walking the decoded span costs a
/// few nanoseconds per attribute.
pub fn span_memory(s: &Span) -> u64 {
    use std::mem::size_of;
    fn heap(len: usize) -> usize {
        if len == 0 {
            0
        } else {
            len.div_ceil(16) * 16
        }
    }
    fn value(v: &AnyValue) -> usize {
        match &v.value {
            Some(any_value::Value::StringValue(s)) => heap(s.len()),
            Some(any_value::Value::BytesValue(b)) => heap(b.len()),
            Some(any_value::Value::ArrayValue(a)) => {
                2 * a.values.len() * size_of::<AnyValue>()
                    + a.values.iter().map(value).sum::<usize>()
            }
            Some(any_value::Value::KvlistValue(l)) => attrs(&l.values),
            _ => 0,
        }
    }
    fn attrs(kvs: &[KeyValue]) -> usize {
        2 * kvs.len() * size_of::<KeyValue>()
            + kvs
                .iter()
                .map(|kv| heap(kv.key.len()) + kv.value.as_ref().map_or(0, value))
                .sum::<usize>()
    }
    let events: usize = s
        .events
        .iter()
        .map(|e| heap(e.name.len()) + attrs(&e.attributes))
        .sum::<usize>()
        + 2 * s.events.len() * size_of::<meshtrace_proto::otlp::trace::v1::span::Event>();
    let links: usize = s
        .links
        .iter()
        .map(|l| {
            heap(l.trace_id.len())
                + heap(l.span_id.len())
                + heap(l.trace_state.len())
                + attrs(&l.attributes)
        })
        .sum::<usize>()
        + 2 * s.links.len() * size_of::<meshtrace_proto::otlp::trace::v1::span::Link>();
    let own = size_of::<Span>()
        + heap(s.trace_id.len())
        + heap(s.span_id.len())
        + heap(s.parent_span_id.len())
        + heap(s.trace_state.len())
        + heap(s.name.len())
        + s.status.as_ref().map_or(0, |st| heap(st.message.len()));
    (own + attrs(&s.attributes) + events + links) as u64
}

/// An attribute value as text, for indexing and tag matching. Arrays and
/// key-value lists are JSON (as Jaeger's OTLP translator renders them).
pub fn value_text(v: &AnyValue) -> Option<String> {
    Some(match v.value.as_ref()? {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::DoubleValue(d) => d.to_string(),
        other => value_json(other).to_string(),
    })
}

/// An attribute value as JSON: arrays and key-value lists nest, bytes are base64
/// (the OTLP JSON encoding's choice; Jaeger's translator does the same).
pub fn value_json(v: &any_value::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        any_value::Value::StringValue(s) => J::String(s.clone()),
        any_value::Value::BoolValue(b) => J::Bool(*b),
        any_value::Value::IntValue(i) => J::from(*i),
        any_value::Value::DoubleValue(d) => J::from(*d),
        any_value::Value::BytesValue(b) => {
            J::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        any_value::Value::ArrayValue(a) => J::Array(
            a.values
                .iter()
                .map(|x| x.value.as_ref().map_or(J::Null, value_json))
                .collect(),
        ),
        // An index into a profiles dictionary; spans do not use it.
        any_value::Value::StringValueStrindex(i) => J::from(*i),
        any_value::Value::KvlistValue(l) => J::Object(
            l.values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        kv.value
                            .as_ref()
                            .and_then(|x| x.value.as_ref())
                            .map_or(J::Null, value_json),
                    )
                })
                .collect(),
        ),
    }
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

/// Jaeger's `spanKind` name → OTLP span kind.
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

/// Whether a span's status is an error.
pub fn is_error(span: &Span) -> bool {
    span.status
        .as_ref()
        .is_some_and(|s| s.code == StatusCode::Error as i32)
}

/// The service a resource names (`service.name`), or `unknown_service`.
pub fn service_of(resource: &Resource) -> String {
    find_attr(&resource.attributes, semconv::SERVICE_NAME)
        .and_then(value_text)
        .unwrap_or_else(|| semconv::UNKNOWN_SERVICE.into())
}

/// The value of attribute `key`.
pub fn find_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs.iter().find(|a| a.key == key)?.value.as_ref()
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// Tag `key` = `value` (as text, as [`span_matches_tag`] compares it) as 64
/// bits: FNV-1a over the key, a `0xff` byte (never in UTF-8) and the value.
/// Blocks store these (format 2): it must never change.
pub fn tag_hash(key: &str, value: &str) -> u64 {
    fnv(
        fnv(fnv(FNV_OFFSET, key.as_bytes()), &[0xff]),
        value.as_bytes(),
    )
}

fn attr_hashes(attrs: &[KeyValue], out: &mut Vec<u64>) {
    for a in attrs {
        let Some(v) = a.value.as_ref() else { continue };
        match &v.value {
            Some(any_value::Value::StringValue(text)) => out.push(tag_hash(&a.key, text)),
            _ => {
                if let Some(text) = value_text(v) {
                    out.push(tag_hash(&a.key, &text));
                }
            }
        }
    }
}

/// The hashes of the tags a span's origin gives it: resource attributes,
/// `otel.scope.name` and `otel.scope.version`.
pub fn origin_tag_hashes(resource: &Resource, scope: Option<&InstrumentationScope>) -> Vec<u64> {
    let mut out = Vec::with_capacity(resource.attributes.len() + 2);
    attr_hashes(&resource.attributes, &mut out);
    let (name, version) = scope.map_or(("", ""), |s| (s.name.as_str(), s.version.as_str()));
    out.push(tag_hash(semconv::OTEL_SCOPE_NAME, name));
    out.push(tag_hash(semconv::OTEL_SCOPE_VERSION, version));
    out
}

/// Every tag [`span_matches_tag`] can match on span `s` (its attributes, its
/// events' attributes, `error=true`, `span.kind`) and its origin's
/// (`origin_tags`), hashed, sorted and deduplicated.
pub fn span_tag_hashes(s: &Span, origin_tags: &[u64]) -> Arc<[u64]> {
    let mut out = Vec::with_capacity(s.attributes.len() + origin_tags.len() + 2);
    attr_hashes(&s.attributes, &mut out);
    for e in &s.events {
        attr_hashes(&e.attributes, &mut out);
    }
    if is_error(s) {
        out.push(tag_hash(semconv::ERROR, "true"));
    }
    out.push(tag_hash(semconv::SPAN_KIND, kind_name(s.kind)));
    out.extend_from_slice(origin_tags);
    out.sort_unstable();
    out.dedup();
    out.into()
}

/// [`span_tag_hashes`] of a span read back.
pub fn stored_tag_hashes(s: &StoredSpan) -> Arc<[u64]> {
    span_tag_hashes(
        &s.span,
        &origin_tag_hashes(&s.origin.resource, Some(&s.origin.scope)),
    )
}

/// Whether a span has tag `key` = `value` the way Jaeger's query sees it: a span
/// attribute, a resource (process) attribute, an event (log) field, or the derived
/// `error=true` and `span.kind` tags. Values compare as text (`200`, `true`).
pub fn span_matches_tag(span: &StoredSpan, key: &str, value: &str) -> bool {
    let attr_is = |attrs: &[KeyValue]| {
        attrs.iter().any(|a| {
            a.key == key
                && a.value
                    .as_ref()
                    .and_then(value_text)
                    .is_some_and(|v| v == value)
        })
    };
    match key {
        semconv::ERROR if value == "true" && is_error(&span.span) => return true,
        semconv::SPAN_KIND if kind_name(span.span.kind) == value => return true,
        semconv::OTEL_SCOPE_NAME if span.origin.scope.name == value => return true,
        semconv::OTEL_SCOPE_VERSION if span.origin.scope.version == value => return true,
        _ => {}
    }
    attr_is(&span.span.attributes)
        || attr_is(&span.origin.resource.attributes)
        || span.span.events.iter().any(|e| attr_is(&e.attributes))
}

/// Tag names OpenTelemetry's semantic conventions renamed, older → current
/// (OpenTracing's and Jaeger clients' names, OTel's before HTTP and
/// networking went stable): a search for either name answers both
/// ([`TagFilter`]). Values must be equal; `http.target` (now `url.path` and
/// `url.query`, two values) has no single counterpart and is not here.
pub const RENAMED_TAGS: &[(&str, &str)] = &[
    ("http.status_code", "http.response.status_code"),
    ("http.method", "http.request.method"),
    ("http.url", "url.full"),
    ("http.scheme", "url.scheme"),
    ("http.host", "server.address"),
    ("http.user_agent", "user_agent.original"),
    ("http.client_ip", "client.address"),
    ("http.flavor", "network.protocol.version"),
    ("http.request_content_length", "http.request.body.size"),
    ("http.response_content_length", "http.response.body.size"),
    ("net.peer.name", "server.address"),
    ("net.peer.port", "server.port"),
    ("net.host.name", "server.address"),
    ("net.host.port", "server.port"),
    ("net.peer.ip", "network.peer.address"),
    ("net.sock.peer.addr", "network.peer.address"),
    ("net.sock.peer.port", "network.peer.port"),
    ("net.protocol.name", "network.protocol.name"),
    ("net.protocol.version", "network.protocol.version"),
    ("peer.hostname", "server.address"),
    ("peer.port", "server.port"),
    ("peer.ipv4", "network.peer.address"),
    ("db.statement", "db.query.text"),
    ("db.operation", "db.operation.name"),
    ("db.name", "db.namespace"),
    ("db.system", "db.system.name"),
    ("messaging.destination", "messaging.destination.name"),
];

/// The names a search for tag `key` looks under: `key` itself, its current
/// name if it is an older one, and the older names of a current one.
pub fn tag_names(key: &str) -> Vec<&str> {
    let mut out = vec![key];
    for (old, new) in RENAMED_TAGS {
        if *old == key {
            out.push(new);
        } else if *new == key {
            out.push(old);
        }
    }
    out
}

/// A search's tag conditions, each `key = value` matching under any of the
/// key's names ([`tag_names`]); all of them on one span, or any (`tagsOp=or`).
#[derive(Debug, Clone, Default)]
pub struct TagFilter {
    /// Per condition: its names and its value.
    tags: Vec<(Vec<String>, String)>,
    /// Per condition: the hashes of its names with its value ([`tag_hash`]).
    hashes: Vec<Vec<u64>>,
    any: bool,
}

impl TagFilter {
    pub fn new(tags: &[(String, String)], any: bool) -> TagFilter {
        let tags: Vec<(Vec<String>, String)> = tags
            .iter()
            .map(|(k, v)| {
                let names = tag_names(k).into_iter().map(str::to_string).collect();
                (names, v.clone())
            })
            .collect();
        let hashes = tags
            .iter()
            .map(|(names, v)| names.iter().map(|k| tag_hash(k, v)).collect())
            .collect();
        TagFilter { tags, hashes, any }
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// The conditions: each one's names and value.
    pub fn conditions(&self) -> impl Iterator<Item = (&[String], &str)> {
        self.tags.iter().map(|(n, v)| (n.as_slice(), v.as_str()))
    }

    pub fn any(&self) -> bool {
        self.any
    }

    fn holds(&self, one: impl Fn(usize) -> bool) -> bool {
        if self.any {
            (0..self.tags.len()).any(one)
        } else {
            (0..self.tags.len()).all(one)
        }
    }

    /// Whether the span meets the conditions ([`span_matches_tag`] under each name).
    pub fn matches(&self, span: &StoredSpan) -> bool {
        self.holds(|i| {
            let (names, v) = &self.tags[i];
            names.iter().any(|k| span_matches_tag(span, k, v))
        })
    }

    /// The same test on tag hashes: `has` says whether one is (or may be) there.
    pub fn matches_hashes(&self, has: impl Fn(u64) -> bool) -> bool {
        self.holds(|i| self.hashes[i].iter().any(|h| has(*h)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshtrace_proto::otlp::common::v1::{ArrayValue, KeyValueList};

    fn s(v: &str) -> AnyValue {
        AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }
    }

    #[test]
    fn probability_from_sampler_tags_or_tracestate_threshold() {
        let kv = |k: &str, v: any_value::Value| KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        };
        let tags = [
            kv(
                "sampler.type",
                any_value::Value::StringValue("probabilistic".into()),
            ),
            kv("sampler.param", any_value::Value::DoubleValue(0.25)),
        ];
        assert_eq!(sampled_probability(&tags), Some(0.25));
        let parent = [kv(
            "sampler.type",
            any_value::Value::StringValue("parent".into()),
        )];
        assert_eq!(
            sampled_probability(&parent),
            None,
            "a parent decision has no p"
        );
        // th:e = 0xe0000000000000: rejects 14/16, keeps 1/8.
        assert_eq!(tracestate_probability("vendor=x,ot=th:e"), Some(0.125));
        assert_eq!(tracestate_probability("ot=th:0"), Some(1.0));
        assert_eq!(
            tracestate_probability("ot=th:zz"),
            None,
            "invalid th is ignored"
        );
        assert_eq!(tracestate_probability(""), None);
        assert_eq!(tracestate_probability("ot=rv:00000000000000"), None);

        // A record: the probability from either, "decided" only from its own sampler.
        let origin: Arc<[u8]> = Arc::from(Vec::new());
        let span = |attrs: Vec<KeyValue>, ts: &str| Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            trace_state: ts.into(),
            attributes: attrs,
            ..Default::default()
        };
        let inner =
            SpanRecord::from_span(&span(parent.to_vec(), "ot=th:e"), "s", &origin, &[], &[])
                .unwrap();
        assert_eq!(
            (inner.sampled_probability, inner.sampler_decided),
            (Some(0.125), false)
        );
        let root =
            SpanRecord::from_span(&span(tags.to_vec(), "ot=th:c"), "s", &origin, &[], &[]).unwrap();
        assert_eq!(
            (root.sampled_probability, root.sampler_decided),
            (Some(0.25), true)
        );
    }

    #[test]
    fn arrays_and_lists_render_as_json() {
        let arr = AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![
                    s("a"),
                    AnyValue {
                        value: Some(any_value::Value::IntValue(2)),
                    },
                ],
            })),
        };
        assert_eq!(value_text(&arr).unwrap(), r#"["a",2]"#);
        let list = AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList {
                values: vec![KeyValue {
                    key: "k".into(),
                    value: Some(s("v")),
                    ..Default::default()
                }],
            })),
        };
        assert_eq!(value_text(&list).unwrap(), r#"{"k":"v"}"#);
    }

    #[test]
    fn origins_round_trip_and_old_resources_decode_without_scope() {
        let resource = Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(s("a")),
                ..Default::default()
            }],
            ..Default::default()
        };
        let scope = InstrumentationScope {
            name: "io.opentelemetry.http".into(),
            version: "1.2".into(),
            ..Default::default()
        };
        let o = Origin::decode(&Origin::encode(&resource, Some(&scope))).unwrap();
        assert_eq!(o.resource, resource);
        assert_eq!(o.scope.name, "io.opentelemetry.http");
        assert_eq!(o.scope.version, "1.2");
        let old = Origin::decode(&resource.encode_to_vec()).unwrap();
        assert_eq!(old.resource, resource);
        assert_eq!(old.scope, InstrumentationScope::default());
        assert_eq!(
            Origin::encode(&resource, Some(&InstrumentationScope::default())),
            resource.encode_to_vec(),
            "an empty scope adds nothing"
        );
    }
}

#[cfg(test)]
mod tag_hash_tests {
    use super::*;
    use meshtrace_proto::otlp::common::v1::ArrayValue;
    use meshtrace_proto::otlp::trace::v1::{span::Event, Status};
    use proptest::prelude::*;

    fn value(kind: u8, text: &str) -> Option<AnyValue> {
        let v = match kind % 7 {
            0 => any_value::Value::StringValue(text.into()),
            1 => any_value::Value::IntValue(text.len() as i64 - 3),
            2 => any_value::Value::BoolValue(text.len().is_multiple_of(2)),
            3 => any_value::Value::DoubleValue(text.len() as f64 / 4.0),
            4 => any_value::Value::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(any_value::Value::StringValue(text.into())),
                }],
            }),
            5 => any_value::Value::BytesValue(text.as_bytes().to_vec()),
            _ => return None,
        };
        Some(AnyValue { value: Some(v) })
    }

    fn kvs(pairs: &[(String, u8, String)]) -> Vec<KeyValue> {
        pairs
            .iter()
            .map(|(k, kind, v)| KeyValue {
                key: k.clone(),
                value: value(*kind, v).or(Some(AnyValue { value: None })),
                ..Default::default()
            })
            .collect()
    }

    type Pairs = Vec<(String, u8, String)>;

    fn pairs() -> impl Strategy<Value = Pairs> {
        // Few distinct keys and values, so candidates hit and miss.
        prop::collection::vec(("[a-c.=]{0,3}", 0u8..8, "[x-z0-9 ]{0,3}"), 0..5)
    }

    proptest! {
        /// The hashes hold exactly the tags `span_matches_tag` matches.
        #[test]
        fn hashes_hold_exactly_the_tags_a_span_matches(
            attrs in pairs(), event in pairs(), resource in pairs(),
            kind in 0i32..7, status in 0i32..3,
            scope in "[a-b]{0,2}", version in "[0-1]{0,1}",
            probes in prop::collection::vec(("[a-c.=]{0,3}", "[x-z0-9 ]{0,3}"), 0..20),
        ) {
            let span = Span {
                kind,
                attributes: kvs(&attrs),
                events: vec![Event { attributes: kvs(&event), ..Default::default() }],
                status: Some(Status { code: status, ..Default::default() }),
                ..Default::default()
            };
            let origin = Origin {
                resource: Resource { attributes: kvs(&resource), ..Default::default() },
                scope: InstrumentationScope { name: scope, version, ..Default::default() },
            };
            let stored = StoredSpan { span, origin: Arc::new(origin) };
            let hashes = stored_tag_hashes(&stored);
            let mut candidates: Vec<(String, String)> = probes;
            for (k, kind, v) in attrs.iter().chain(&event).chain(&resource) {
                if let Some(text) = value(*kind, v).as_ref().and_then(value_text) {
                    candidates.push((k.clone(), text));
                }
                candidates.push((k.clone(), v.clone()));
            }
            for k in ["error", "span.kind", "otel.scope.name", "otel.scope.version"] {
                for v in ["true", "false", "server", "client", "unspecified", "a", "b", "0", ""] {
                    candidates.push((k.into(), v.into()));
                }
            }
            for (k, v) in candidates {
                prop_assert_eq!(
                    span_matches_tag(&stored, &k, &v),
                    hashes.binary_search(&tag_hash(&k, &v)).is_ok(),
                    "tag {}={}", k, v
                );
            }
        }
    }

    fn renamed_pairs() -> impl Strategy<Value = Vec<(String, String)>> {
        let key = prop::sample::select(vec![
            "http.status_code",
            "http.response.status_code",
            "server.address",
            "net.peer.name",
            "net.host.name",
            "custom",
        ]);
        prop::collection::vec((key, prop::sample::select(vec!["1", "2"])), 0..4).prop_map(|v| {
            v.into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
    }

    proptest! {
        /// A filter with renamed names reads the same on a span as on its hashes.
        #[test]
        fn a_filter_reads_the_same_on_spans_and_on_their_hashes(
            attrs in renamed_pairs(), resource in renamed_pairs(),
            tags in renamed_pairs(), any in any::<bool>(),
        ) {
            let kv = |v: &Vec<(String, String)>| {
                kvs(&v.iter().map(|(k, x)| (k.clone(), 0u8, x.clone())).collect::<Vec<_>>())
            };
            let stored = StoredSpan {
                span: Span { attributes: kv(&attrs), ..Default::default() },
                origin: Arc::new(Origin {
                    resource: Resource { attributes: kv(&resource), ..Default::default() },
                    scope: InstrumentationScope::default(),
                }),
            };
            let hashes = stored_tag_hashes(&stored);
            let filter = TagFilter::new(&tags, any);
            let by_hash = filter.matches_hashes(|h| hashes.binary_search(&h).is_ok());
            prop_assert_eq!(filter.matches(&stored), by_hash);
            // One condition: met exactly when some name of it is there with its value.
            for (k, v) in &tags {
                let one = TagFilter::new(&[(k.clone(), v.clone())], false);
                let there = tag_names(k).iter().any(|n| {
                    attrs.iter().chain(&resource).any(|(a, x)| a == n && x == v)
                });
                prop_assert_eq!(one.matches(&stored), there, "{}={}", k, v);
            }
        }
    }

    #[test]
    fn renamed_names_answer_each_other_and_only_their_counterparts() {
        let span = |k: &str, v: &str| StoredSpan {
            span: Span {
                attributes: kvs(&[(k.into(), 0, v.into())]),
                ..Default::default()
            },
            origin: Arc::new(Origin {
                resource: Resource::default(),
                scope: InstrumentationScope::default(),
            }),
        };
        let finds = |k: &str, v: &str, s: &StoredSpan| {
            TagFilter::new(&[(k.into(), v.into())], false).matches(s)
        };
        let old = span("http.status_code", "500");
        let new = span("http.response.status_code", "500");
        for s in [&old, &new] {
            assert!(finds("http.status_code", "500", s));
            assert!(finds("http.response.status_code", "500", s));
            assert!(!finds("http.status_code", "404", s));
        }
        // Two older names of one current name are not each other's.
        let peer = span("net.peer.name", "db");
        assert!(finds("server.address", "db", &peer));
        assert!(!finds("net.host.name", "db", &peer));
        // Every pair is a rename: no name is its own counterpart, none is listed twice.
        for (i, (o, n)) in RENAMED_TAGS.iter().enumerate() {
            assert_ne!(o, n);
            assert!(!RENAMED_TAGS[..i].contains(&(o, n)));
        }
    }

    #[test]
    fn the_hash_never_changes() {
        // Stored in blocks: these values are part of the format.
        assert_eq!(tag_hash("", ""), 0xaf64_724c_8602_eb6e);
        assert_eq!(
            tag_hash("http.response.status_code", "500"),
            0xa85c_b178_8f63_bce6
        );
        assert_ne!(tag_hash("a", "b=c"), tag_hash("a=b", "c"));
    }
}
