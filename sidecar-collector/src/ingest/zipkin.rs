//! Zipkin's span model (v2 JSON and protobuf, `POST /api/v2/spans`) as OTLP,
//! following the OpenTelemetry Collector's Zipkin receiver: one resource per
//! `localEndpoint.serviceName`, tags as string attributes, annotations as
//! events, `kind` as the span kind, the status from `otel.status_code` /
//! `otel.status_description` or an `error` tag, the scope from
//! `otel.scope.name` (or `otel.library.name`), the endpoints' addresses as
//! `network.*` and `peer.service` attributes. A shared span (Zipkin's server
//! half, with the client's id) keeps its id: the store keeps both halves and
//! the query API gives the server half its own id, as Jaeger does.
//!
//! Times are microseconds in Zipkin and nanoseconds in OTLP. A span without a
//! timestamp gets start 0, which the ingest's validation rejects in
//! `partial_success` with the reason, as any span outside the accepted window.

use std::collections::BTreeMap;

use meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use meshtrace_proto::otlp::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use meshtrace_proto::otlp::resource::v1::Resource;
use meshtrace_proto::otlp::trace::v1::{span, status, ResourceSpans, ScopeSpans, Span, Status};
use serde::Deserialize;

/// What in a request is not a Zipkin span list.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ZipkinError {
    #[error("not a Zipkin v2 JSON span list: {0}")]
    Json(String),
    #[error("not a Zipkin v1 JSON span list: {0}")]
    JsonV1(String),
    #[error("not a Zipkin ListOfSpans protobuf: {0}")]
    Proto(String),
    #[error("span {index}: {field}: {problem}")]
    Span {
        index: usize,
        field: &'static str,
        problem: String,
    },
}

/// One span, whichever encoding it came in.
#[derive(Debug, Default, Clone, PartialEq)]
struct ZSpan {
    trace_id: [u8; 16],
    id: [u8; 8],
    parent_id: Option<[u8; 8]>,
    name: String,
    kind: Option<ZKind>,
    timestamp_us: u64,
    duration_us: u64,
    local: Endpoint,
    remote: Option<Endpoint>,
    annotations: Vec<(u64, String)>,
    tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ZKind {
    Client,
    Server,
    Producer,
    Consumer,
}

#[derive(Debug, Default, Clone, PartialEq)]
struct Endpoint {
    service_name: String,
    ip: Option<String>,
    port: Option<u16>,
}

// ---- v2 JSON ------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonSpan {
    trace_id: String,
    id: String,
    #[serde(default)]
    parent_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    timestamp: Option<serde_json::Number>,
    #[serde(default)]
    duration: Option<serde_json::Number>,
    #[serde(default)]
    local_endpoint: Option<JsonEndpoint>,
    #[serde(default)]
    remote_endpoint: Option<JsonEndpoint>,
    #[serde(default)]
    annotations: Vec<JsonAnnotation>,
    #[serde(default)]
    tags: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct JsonEndpoint {
    #[serde(default)]
    service_name: Option<String>,
    #[serde(default)]
    ipv4: Option<String>,
    #[serde(default)]
    ipv6: Option<String>,
    #[serde(default)]
    port: Option<i64>,
}

#[derive(Deserialize)]
struct JsonAnnotation {
    timestamp: serde_json::Number,
    value: String,
}

/// A Zipkin v2 JSON body (`[{"traceId": …}, …]`) as an OTLP export.
pub fn from_json_v2(body: &[u8]) -> Result<ExportTraceServiceRequest, ZipkinError> {
    let spans: Vec<JsonSpan> =
        serde_json::from_slice(body).map_err(|e| ZipkinError::Json(e.to_string()))?;
    let spans = spans
        .into_iter()
        .enumerate()
        .map(|(index, s)| json_span(index, s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(translate(spans))
}

fn micros(index: usize, field: &'static str, n: &serde_json::Number) -> Result<u64, ZipkinError> {
    n.as_u64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && *f < 1.8e19)
                .map(|f| f.round() as u64)
        })
        .ok_or_else(|| ZipkinError::Span {
            index,
            field,
            problem: format!("{n} is not a count of microseconds"),
        })
}

fn json_span(index: usize, s: JsonSpan) -> Result<ZSpan, ZipkinError> {
    let err = |field: &'static str, problem: String| ZipkinError::Span {
        index,
        field,
        problem,
    };
    let endpoint = |e: JsonEndpoint, field: &'static str| -> Result<Endpoint, ZipkinError> {
        let port = match e.port {
            None | Some(0) => None,
            Some(p) => Some(
                u16::try_from(p)
                    .map_err(|_| err(field, format!("port {p} is not a port number")))?,
            ),
        };
        Ok(Endpoint {
            service_name: e.service_name.unwrap_or_default(),
            ip: e.ipv4.or(e.ipv6).filter(|ip| !ip.is_empty()),
            port,
        })
    };
    Ok(ZSpan {
        trace_id: trace_id_hex(&s.trace_id).ok_or_else(|| {
            err(
                "traceId",
                format!("{:?} is not 16 or 32 hex digits", clip(&s.trace_id)),
            )
        })?,
        id: span_id_hex(&s.id)
            .ok_or_else(|| err("id", format!("{:?} is not 16 hex digits", clip(&s.id))))?,
        parent_id: match s.parent_id.as_deref() {
            None | Some("") => None,
            Some(p) => {
                Some(span_id_hex(p).ok_or_else(|| {
                    err("parentId", format!("{:?} is not 16 hex digits", clip(p)))
                })?)
            }
        },
        name: s.name.unwrap_or_default(),
        kind: match s.kind.as_deref() {
            None | Some("") => None,
            Some(k) => Some(kind_named(k).ok_or_else(|| {
                err(
                    "kind",
                    format!("{:?} is not CLIENT, SERVER, PRODUCER or CONSUMER", clip(k)),
                )
            })?),
        },
        timestamp_us: s
            .timestamp
            .as_ref()
            .map(|t| micros(index, "timestamp", t))
            .transpose()?
            .unwrap_or(0),
        duration_us: s
            .duration
            .as_ref()
            .map(|d| micros(index, "duration", d))
            .transpose()?
            .unwrap_or(0),
        local: s
            .local_endpoint
            .map(|e| endpoint(e, "localEndpoint"))
            .transpose()?
            .unwrap_or_default(),
        remote: s
            .remote_endpoint
            .map(|e| endpoint(e, "remoteEndpoint"))
            .transpose()?,
        annotations: s
            .annotations
            .into_iter()
            .map(|a| Ok((micros(index, "annotations", &a.timestamp)?, a.value)))
            .collect::<Result<_, ZipkinError>>()?,
        tags: s
            .tags
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect(),
    })
}

// ---- v1 JSON ------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct V1Span {
    trace_id: String,
    id: String,
    #[serde(default)]
    parent_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    timestamp: Option<serde_json::Number>,
    #[serde(default)]
    duration: Option<serde_json::Number>,
    #[serde(default)]
    annotations: Vec<V1Annotation>,
    #[serde(default)]
    binary_annotations: Vec<V1Binary>,
}

#[derive(Deserialize)]
struct V1Annotation {
    timestamp: serde_json::Number,
    value: String,
    #[serde(default)]
    endpoint: Option<JsonEndpoint>,
}

#[derive(Deserialize)]
struct V1Binary {
    key: String,
    value: serde_json::Value,
    #[serde(default)]
    endpoint: Option<JsonEndpoint>,
}

/// A Zipkin v1 JSON body (`POST /api/v1/spans`) as an OTLP export: each v1
/// span becomes the v2 spans Zipkin's own converter makes of it — the
/// core annotations (`cs`/`cr`, `sr`/`ss`, `ms`, `mr`) give the kind, the
/// local endpoint, the timestamp and duration; a span with both a client
/// and a server side becomes the client span and the server's shared span;
/// `ca`/`sa`/`ma` give the remote endpoint; other annotations and binary
/// annotations become annotations and tags of the side whose service wrote
/// them.
pub fn from_json_v1(body: &[u8]) -> Result<ExportTraceServiceRequest, ZipkinError> {
    let spans: Vec<V1Span> =
        serde_json::from_slice(body).map_err(|e| ZipkinError::JsonV1(e.to_string()))?;
    let mut out = Vec::with_capacity(spans.len());
    for (index, s) in spans.into_iter().enumerate() {
        for v2 in v1_to_v2(s) {
            out.push(json_span(index, v2)?);
        }
    }
    Ok(translate(out))
}

fn number_u64(n: &serde_json::Number) -> Option<u64> {
    n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < 1.8e19)
            .map(|f| f.round() as u64)
    })
}

/// `to - from`, as a JSON number, when both are counts of microseconds.
fn elapsed(from: &serde_json::Number, to: &serde_json::Number) -> Option<serde_json::Number> {
    Some(number_u64(to)?.saturating_sub(number_u64(from)?).into())
}

fn v1_to_v2(s: V1Span) -> Vec<JsonSpan> {
    let core = |v: &str| s.annotations.iter().find(|a| a.value == v);
    let (cs, cr, sr, ss, ms, mr) = (
        core("cs"),
        core("cr"),
        core("sr"),
        core("ss"),
        core("ms"),
        core("mr"),
    );
    let blank = |kind: Option<&str>| JsonSpan {
        trace_id: s.trace_id.clone(),
        id: s.id.clone(),
        parent_id: s.parent_id.clone(),
        name: s.name.clone(),
        kind: kind.map(str::to_string),
        timestamp: None,
        duration: None,
        local_endpoint: None,
        remote_endpoint: None,
        annotations: Vec::new(),
        tags: BTreeMap::new(),
    };
    // One side: its kind, its annotations' endpoint, its start and end.
    let side = |kind: &str, start: Option<&V1Annotation>, end: Option<&V1Annotation>| {
        let mut span = blank(Some(kind));
        span.local_endpoint = start.or(end).and_then(|a| a.endpoint.clone());
        span.timestamp = start.map(|a| a.timestamp.clone());
        span.duration = start
            .zip(end)
            .and_then(|(a, b)| elapsed(&a.timestamp, &b.timestamp));
        span
    };
    let client = (cs.is_some() || cr.is_some()).then(|| side("CLIENT", cs, cr));
    let server = (sr.is_some() || ss.is_some()).then(|| side("SERVER", sr, ss));
    let messaging = match (ms, mr) {
        (Some(a), _) => Some(side("PRODUCER", Some(a), None)),
        (None, Some(a)) => Some(side("CONSUMER", Some(a), None)),
        _ => None,
    };
    let mut spans: Vec<JsonSpan> = [client, server, messaging].into_iter().flatten().collect();
    if spans.is_empty() {
        let mut span = blank(None);
        span.local_endpoint = s
            .annotations
            .iter()
            .find_map(|a| a.endpoint.clone())
            .or_else(|| s.binary_annotations.iter().find_map(|b| b.endpoint.clone()));
        spans.push(span);
    }
    // The span's own timestamp and duration are its originator's: the first side's.
    if let Some(first) = spans.first_mut() {
        if s.timestamp.is_some() {
            first.timestamp = s.timestamp.clone();
        }
        if s.duration.is_some() {
            first.duration = s.duration.clone();
        }
    }
    // The side whose service wrote `endpoint`, else the first.
    let side_of = |spans: &[JsonSpan], endpoint: &Option<JsonEndpoint>| -> usize {
        let service = endpoint.as_ref().and_then(|e| e.service_name.as_deref());
        spans
            .iter()
            .position(|sp| {
                service.is_some()
                    && sp
                        .local_endpoint
                        .as_ref()
                        .and_then(|e| e.service_name.as_deref())
                        == service
            })
            .unwrap_or(0)
    };
    for a in s.annotations {
        if matches!(a.value.as_str(), "cs" | "cr" | "sr" | "ss" | "ms" | "mr") {
            continue;
        }
        let at = side_of(&spans, &a.endpoint);
        if let Some(sp) = spans.get_mut(at) {
            sp.annotations.push(JsonAnnotation {
                timestamp: a.timestamp,
                value: a.value,
            });
        }
    }
    for b in s.binary_annotations {
        // Address annotations: the other side of a client, server or message.
        let remote_of = match b.key.as_str() {
            "sa" => Some("CLIENT"),
            "ca" => Some("SERVER"),
            "ma" => Some("PRODUCER"),
            _ => None,
        };
        if let Some(kind) = remote_of {
            let target = spans.iter_mut().find(|sp| {
                sp.kind.as_deref() == Some(kind)
                    || (kind == "PRODUCER" && sp.kind.as_deref() == Some("CONSUMER"))
            });
            if let Some(sp) = target {
                sp.remote_endpoint = b.endpoint;
            }
            continue;
        }
        let at = side_of(&spans, &b.endpoint);
        if let Some(sp) = spans.get_mut(at) {
            if sp.local_endpoint.is_none() {
                sp.local_endpoint = b.endpoint;
            }
            sp.tags.insert(b.key, b.value);
        }
    }
    spans
}

/// A value quoted in an error, at most 40 characters of it.
fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

fn kind_named(k: &str) -> Option<ZKind> {
    match k {
        "CLIENT" => Some(ZKind::Client),
        "SERVER" => Some(ZKind::Server),
        "PRODUCER" => Some(ZKind::Producer),
        "CONSUMER" => Some(ZKind::Consumer),
        _ => None,
    }
}

fn hex_into(s: &str, out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(())
}

/// A 64- or 128-bit trace id (the 64-bit form is the low half).
fn trace_id_hex(s: &str) -> Option<[u8; 16]> {
    let mut id = [0u8; 16];
    match s.len() {
        32 => hex_into(s, &mut id)?,
        16 => hex_into(s, &mut id[8..])?,
        _ => return None,
    }
    Some(id)
}

fn span_id_hex(s: &str) -> Option<[u8; 8]> {
    let mut id = [0u8; 8];
    hex_into(s, &mut id)?;
    Some(id)
}

// ---- v2 protobuf (zipkin.proto) -----------------------------------------

mod proto {
    //! The messages of Zipkin's `zipkin.proto` (package `zipkin.proto3`).

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListOfSpans {
        #[prost(message, repeated, tag = "1")]
        pub spans: Vec<Span>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub parent_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        pub id: Vec<u8>,
        #[prost(int32, tag = "4")]
        pub kind: i32,
        #[prost(string, tag = "5")]
        pub name: String,
        #[prost(fixed64, tag = "6")]
        pub timestamp: u64,
        #[prost(uint64, tag = "7")]
        pub duration: u64,
        #[prost(message, optional, tag = "8")]
        pub local_endpoint: Option<Endpoint>,
        #[prost(message, optional, tag = "9")]
        pub remote_endpoint: Option<Endpoint>,
        #[prost(message, repeated, tag = "10")]
        pub annotations: Vec<Annotation>,
        #[prost(btree_map = "string, string", tag = "11")]
        pub tags: std::collections::BTreeMap<String, String>,
        #[prost(bool, tag = "12")]
        pub debug: bool,
        #[prost(bool, tag = "13")]
        pub shared: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Endpoint {
        #[prost(string, tag = "1")]
        pub service_name: String,
        #[prost(bytes = "vec", tag = "2")]
        pub ipv4: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        pub ipv6: Vec<u8>,
        #[prost(int32, tag = "4")]
        pub port: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Annotation {
        #[prost(fixed64, tag = "1")]
        pub timestamp: u64,
        #[prost(string, tag = "2")]
        pub value: String,
    }
}

/// A Zipkin `ListOfSpans` protobuf body (`application/x-protobuf`) as an OTLP export.
pub fn from_proto_v2(body: &[u8]) -> Result<ExportTraceServiceRequest, ZipkinError> {
    let list = <proto::ListOfSpans as prost::Message>::decode(body)
        .map_err(|e| ZipkinError::Proto(e.to_string()))?;
    let spans = list
        .spans
        .into_iter()
        .enumerate()
        .map(|(index, s)| proto_span(index, s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(translate(spans))
}

fn proto_span(index: usize, s: proto::Span) -> Result<ZSpan, ZipkinError> {
    let err = |field: &'static str, problem: String| ZipkinError::Span {
        index,
        field,
        problem,
    };
    let trace_id = match s.trace_id.len() {
        16 => <[u8; 16]>::try_from(s.trace_id.as_slice()).ok(),
        8 => {
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&s.trace_id);
            Some(id)
        }
        _ => None,
    }
    .ok_or_else(|| {
        err(
            "trace_id",
            format!("{} bytes, not 8 or 16", s.trace_id.len()),
        )
    })?;
    let id = <[u8; 8]>::try_from(s.id.as_slice())
        .map_err(|_| err("id", format!("{} bytes, not 8", s.id.len())))?;
    let parent_id = match s.parent_id.len() {
        0 => None,
        _ => Some(
            <[u8; 8]>::try_from(s.parent_id.as_slice())
                .map_err(|_| err("parent_id", format!("{} bytes, not 8", s.parent_id.len())))?,
        ),
    };
    let endpoint = |e: proto::Endpoint, field: &'static str| -> Result<Endpoint, ZipkinError> {
        let ip = match (e.ipv4.len(), e.ipv6.len()) {
            (4, _) => <[u8; 4]>::try_from(e.ipv4.as_slice())
                .ok()
                .map(|a| std::net::Ipv4Addr::from(a).to_string()),
            (_, 16) => <[u8; 16]>::try_from(e.ipv6.as_slice())
                .ok()
                .map(|a| std::net::Ipv6Addr::from(a).to_string()),
            (0, 0) => None,
            (v4, v6) => {
                return Err(err(
                    field,
                    format!("an address of {v4} (ipv4) / {v6} (ipv6) bytes"),
                ))
            }
        };
        let port = match e.port {
            0 => None,
            p => Some(
                u16::try_from(p)
                    .map_err(|_| err(field, format!("port {p} is not a port number")))?,
            ),
        };
        Ok(Endpoint {
            service_name: e.service_name,
            ip,
            port,
        })
    };
    Ok(ZSpan {
        trace_id,
        id,
        parent_id,
        name: s.name,
        kind: match s.kind {
            0 => None,
            1 => Some(ZKind::Client),
            2 => Some(ZKind::Server),
            3 => Some(ZKind::Producer),
            4 => Some(ZKind::Consumer),
            k => return Err(err("kind", format!("{k} is not a Zipkin span kind"))),
        },
        timestamp_us: s.timestamp,
        duration_us: s.duration,
        local: s
            .local_endpoint
            .map(|e| endpoint(e, "local_endpoint"))
            .transpose()?
            .unwrap_or_default(),
        remote: s
            .remote_endpoint
            .map(|e| endpoint(e, "remote_endpoint"))
            .transpose()?,
        annotations: s
            .annotations
            .into_iter()
            .map(|a| (a.timestamp, a.value))
            .collect(),
        tags: s.tags,
    })
}

// ---- memory ---------------------------------------------------------------

/// Memory a body may take while translated, at most: its text copied three
/// times (decoded, translated, exported) and the structures of what it holds.
/// Protobuf is counted from its bytes without decoding, by `zipkin.proto`'s
/// schema (`ingest::cost`): each span, annotation and tag its structures
/// along the way; JSON spans cannot be shorter than
/// `{"traceId":"…","id":"…"}` with a 16-digit trace id (44 bytes), and a tag
/// or annotation no shorter than its text's own copies cost
/// (`tests::the_translation_bound_holds_what_translating_allocates`).
pub fn translation_bound(body: &[u8], protobuf: bool) -> u64 {
    let text = 3 * body.len() as u64;
    if protobuf {
        // A body that does not walk does not decode either: its text is all.
        return text
            + crate::ingest::cost::walk(body, 0, body.len(), ZMsg::List, 0, &mut Vec::new())
                .unwrap_or(0);
    }
    text + (body.len() as u64 / 44 + 1).saturating_mul(PER_SPAN)
}

/// A span's structures: its protobuf and JSON forms, its `ZSpan`, its OTLP
/// span and two attributes of its endpoints.
const PER_SPAN: u64 = (std::mem::size_of::<proto::Span>()
    + std::mem::size_of::<ZSpan>()
    + std::mem::size_of::<Span>()
    + 2 * std::mem::size_of::<KeyValue>()
    + 256) as u64;

/// A tag: its two strings in two maps (protobuf's, the `ZSpan`'s) with the
/// maps' nodes, and its OTLP attribute (twice: a `Vec` grows by doubling).
const PER_TAG: u64 =
    (4 * std::mem::size_of::<String>() + 2 * std::mem::size_of::<KeyValue>()) as u64 + 96;

/// An annotation: its protobuf and `ZSpan` forms and its OTLP event, twice.
const PER_ANNOTATION: u64 = 2
    * (std::mem::size_of::<proto::Annotation>()
        + std::mem::size_of::<(u64, String)>()
        + std::mem::size_of::<span::Event>()) as u64;

/// `zipkin.proto`'s messages, as far as memory goes.
#[derive(Clone, Copy, Debug)]
enum ZMsg {
    List,
    Span,
    Endpoint,
    Annotation,
    Tag,
}

impl crate::ingest::cost::Schema for ZMsg {
    fn field(self, tag: u64) -> crate::ingest::cost::Field<ZMsg> {
        use crate::ingest::cost::Field::*;
        match (self, tag) {
            (ZMsg::List, 1) => Many(ZMsg::Span, PER_SPAN as usize),
            (ZMsg::Span, 1..=3 | 5) => Text { repeated: false },
            (ZMsg::Span, 8 | 9) => One(ZMsg::Endpoint),
            (ZMsg::Span, 10) => Many(ZMsg::Annotation, PER_ANNOTATION as usize),
            (ZMsg::Span, 11) => Many(ZMsg::Tag, PER_TAG as usize),
            (ZMsg::Endpoint, 1..=3) | (ZMsg::Annotation, 2) | (ZMsg::Tag, 1 | 2) => {
                Text { repeated: false }
            }
            _ => Unknown,
        }
    }
}

// ---- to OTLP ------------------------------------------------------------

fn string_kv(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..Default::default()
    }
}

fn int_kv(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// The OTLP status a Zipkin span's tags give, removing the tags it came from.
fn status_from(tags: &mut BTreeMap<String, String>) -> Option<Status> {
    let mut status = None;
    if let Some(code) = tags.remove("otel.status_code") {
        let code = match code.as_str() {
            "OK" | "STATUS_CODE_OK" => status::StatusCode::Ok,
            "ERROR" | "STATUS_CODE_ERROR" => status::StatusCode::Error,
            _ => status::StatusCode::Unset,
        };
        status = Some(Status {
            code: code as i32,
            message: tags.remove("otel.status_description").unwrap_or_default(),
        });
    }
    // Zipkin's `error` tag: present means failed; its value, when not just
    // "true", is the message (Brave and Zipkin's UI read it so).
    if let Some(error) = tags.remove("error") {
        if error != "false" {
            let message = match error.as_str() {
                "" | "true" => status
                    .as_ref()
                    .map(|s| s.message.clone())
                    .unwrap_or_default(),
                _ => error,
            };
            status = Some(Status {
                code: status::StatusCode::Error as i32,
                message,
            });
        }
    }
    status
}

fn otlp_span(mut z: ZSpan) -> Span {
    let status = status_from(&mut z.tags);
    let kind = match z.kind {
        Some(ZKind::Client) => span::SpanKind::Client,
        Some(ZKind::Server) => span::SpanKind::Server,
        Some(ZKind::Producer) => span::SpanKind::Producer,
        Some(ZKind::Consumer) => span::SpanKind::Consumer,
        None => match z.tags.remove("span.kind").as_deref() {
            Some("internal") => span::SpanKind::Internal,
            _ => span::SpanKind::Unspecified,
        },
    };
    let trace_state = z.tags.remove("w3c.tracestate").unwrap_or_default();
    let mut attributes: Vec<KeyValue> = std::mem::take(&mut z.tags)
        .into_iter()
        .filter(|(k, _)| !is_scope_tag(k))
        .map(|(k, v)| string_kv(&k, v))
        .collect();
    if let Some(ip) = z.local.ip.take() {
        attributes.push(string_kv("network.local.address", ip));
    }
    if let Some(port) = z.local.port {
        attributes.push(int_kv("network.local.port", i64::from(port)));
    }
    if let Some(remote) = z.remote.take() {
        if !remote.service_name.is_empty() {
            attributes.push(string_kv("peer.service", remote.service_name));
        }
        if let Some(ip) = remote.ip {
            attributes.push(string_kv("network.peer.address", ip));
        }
        if let Some(port) = remote.port {
            attributes.push(int_kv("network.peer.port", i64::from(port)));
        }
    }
    let start = z.timestamp_us.saturating_mul(1000);
    Span {
        trace_id: z.trace_id.to_vec(),
        span_id: z.id.to_vec(),
        trace_state,
        // A span naming itself as its parent is a root (the Collector's rule).
        parent_span_id: z
            .parent_id
            .filter(|p| *p != z.id && *p != [0; 8])
            .map(|p| p.to_vec())
            .unwrap_or_default(),
        name: z.name,
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start.saturating_add(z.duration_us.saturating_mul(1000)),
        attributes,
        events: z
            .annotations
            .into_iter()
            .map(|(ts, value)| {
                let (name, attributes) = event_of(value);
                span::Event {
                    time_unix_nano: ts.saturating_mul(1000),
                    name,
                    attributes,
                    ..Default::default()
                }
            })
            .collect(),
        status,
        ..Default::default()
    }
}

/// An annotation as an event. OpenTelemetry's Zipkin exporters write an
/// event as `{"name": {"key": value, …}}` (the specification's mapping): its
/// name and attributes come back; any other value is the event's name.
fn event_of(value: String) -> (String, Vec<KeyValue>) {
    if value.starts_with('{') {
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_str(&value) {
            if let Some((name, serde_json::Value::Object(attrs))) =
                m.iter().next().filter(|_| m.len() == 1)
            {
                let attributes = attrs
                    .iter()
                    .map(|(k, v)| match v {
                        serde_json::Value::String(s) => string_kv(k, s.clone()),
                        serde_json::Value::Number(n) if n.is_i64() => {
                            int_kv(k, n.as_i64().unwrap_or_default())
                        }
                        other => string_kv(k, other.to_string()),
                    })
                    .collect();
                return (name.clone(), attributes);
            }
        }
    }
    (value, Vec::new())
}

/// Tags that describe the process, not the span (OpenTelemetry's resource
/// namespaces; the Zipkin exporters write the resource's attributes as tags):
/// they go to the span's resource.
fn is_resource_tag(k: &str) -> bool {
    const NAMESPACES: [&str; 12] = [
        "service.",
        "telemetry.",
        "host.",
        "k8s.",
        "container.",
        "process.",
        "os.",
        "cloud.",
        "deployment.",
        "faas.",
        "device.",
        "webengine.",
    ];
    NAMESPACES.iter().any(|n| k.starts_with(n))
}

fn is_scope_tag(k: &str) -> bool {
    matches!(
        k,
        "otel.scope.name" | "otel.scope.version" | "otel.library.name" | "otel.library.version"
    )
}

/// The instrumentation scope a span's tags name.
fn scope_of(tags: &BTreeMap<String, String>) -> (String, String) {
    let name = tags
        .get("otel.scope.name")
        .or_else(|| tags.get("otel.library.name"))
        .cloned()
        .unwrap_or_default();
    let version = tags
        .get("otel.scope.version")
        .or_else(|| tags.get("otel.library.version"))
        .cloned()
        .unwrap_or_default();
    (name, version)
}

/// A scope's (name, version) and its spans.
type ScopeGroup = ((String, String), Vec<Span>);

/// A resource: its service and the other attributes its spans' tags gave.
type ResourceKey = (String, Vec<(String, String)>);

/// Spans grouped by resource (its service and resource tags, in order of first
/// appearance) and by scope within it.
fn translate(spans: Vec<ZSpan>) -> ExportTraceServiceRequest {
    let mut resources: Vec<(ResourceKey, Vec<ScopeGroup>)> = Vec::new();
    for mut z in spans {
        let service = match z.local.service_name.as_str() {
            "" => "unknown_service".to_string(),
            s => s.to_string(),
        };
        let scope = scope_of(&z.tags);
        let resource_tags: Vec<(String, String)> = z
            .tags
            .iter()
            .filter(|(k, _)| is_resource_tag(k) && k.as_str() != "service.name")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        z.tags.retain(|k, _| !is_resource_tag(k));
        let service = (service, resource_tags);
        let at = match resources.iter().position(|(s, _)| *s == service) {
            Some(i) => i,
            None => {
                resources.push((service, Vec::new()));
                resources.len() - 1
            }
        };
        let Some((_, scopes)) = resources.get_mut(at) else {
            continue;
        };
        let span = otlp_span(z);
        match scopes.iter_mut().find(|(s, _)| *s == scope) {
            Some((_, list)) => list.push(span),
            None => scopes.push((scope, vec![span])),
        }
    }
    ExportTraceServiceRequest {
        resource_spans: resources
            .into_iter()
            .map(|((service, tags), scopes)| ResourceSpans {
                resource: Some(Resource {
                    attributes: std::iter::once(string_kv("service.name", service))
                        .chain(tags.into_iter().map(|(k, v)| string_kv(&k, v)))
                        .collect(),
                    ..Default::default()
                }),
                scope_spans: scopes
                    .into_iter()
                    .map(|((name, version), spans)| ScopeSpans {
                        scope: (!name.is_empty()).then(|| InstrumentationScope {
                            name,
                            version,
                            ..Default::default()
                        }),
                        spans,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
    }
}

#[cfg(test)]
#[path = "zipkin_tests.rs"]
mod tests;
