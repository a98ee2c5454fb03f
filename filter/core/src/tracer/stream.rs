//! One HTTP stream through the sidecar: decide, propagate, and (if sampled)
//! build one span that covers the whole stream, emitted at `on_log`.

use crate::config::{ResponseHeaderForm, TraceResponseMode};
use crate::host::{Headers, StreamHost};

use crate::propagation::w3c::TraceparentText;
use crate::propagation::{self, IncomingHeaders, Outgoing};
use crate::sampling::Decision;
use crate::tracer::{truncate, Tracer};
use meshtrace_proto::{SpanId, TraceId};
use std::sync::Arc;

/// Envoy's legacy response-flag bits (`response.flags`), with their short codes.
const RESPONSE_FLAGS: &[(u32, &str, bool)] = &[
    // (bit, code, is a local failure)
    (0, "LH", true),
    (1, "UH", true),
    (2, "UT", true),
    (3, "LR", true),
    (4, "UR", true),
    (5, "UF", true),
    (6, "UC", true),
    (7, "UO", true),
    (8, "NR", true),
    (9, "DI", false),
    (10, "FI", true),
    (11, "RL", true),
    (12, "UAEX", true),
    (13, "RLSE", true),
    (14, "DC", false),
    (15, "URX", true),
    (16, "SI", true),
    (17, "IH", true),
    (18, "DPE", true),
    (19, "UMSDR", true),
    (20, "RFCF", false),
    (21, "NFCF", true),
    (22, "DT", true),
    (23, "UPE", true),
    (24, "NC", true),
    (25, "OM", true),
    (26, "DF", true),
    (27, "DO", true),
    (28, "DR", false),
    (29, "UDO", true),
];

/// Short codes for a flag bitmask, comma-separated, and whether any is a local failure.
pub fn response_flags(bits: u64) -> (String, bool) {
    let mut out = String::new();
    let mut failure = false;
    for (bit, code, is_failure) in RESPONSE_FLAGS {
        if bits & (1u64 << bit) != 0 {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(code);
            failure |= is_failure;
        }
    }
    (out, failure)
}

fn int_le(bytes: &[u8]) -> Option<i64> {
    let arr: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(i64::from_le_bytes(arr))
}

fn ascii_int(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// Splits `ip:port` / `[ipv6]:port`.
fn split_host_port(addr: &str) -> (&str, Option<i64>) {
    if let Some(rest) = addr.strip_prefix('[') {
        if let Some((host, port)) = rest.split_once("]:") {
            return (host, port.parse().ok());
        }
        return (rest.trim_end_matches(']'), None);
    }
    match addr.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (addr, None),
    }
}

/// W3C Trace Context Level 2's response header.
pub const TRACERESPONSE: &str = "traceresponse";
/// Where the Level 2 draft now puts it (w3c/trace-context#560): a page reads
/// `performance.getEntriesByType("navigation")[0].serverTiming`.
pub const SERVER_TIMING: &str = "server-timing";
const EXPOSE_HEADERS: &str = "access-control-expose-headers";
const ALLOW_ORIGIN: &str = "access-control-allow-origin";

/// What the response headers say about the context to write.
#[derive(Debug, Default, Clone, Copy)]
struct ResponseSeen {
    has_traceresponse: bool,
    /// CORS: the response lets another origin read it...
    cors: bool,
    /// ...and already exposes `traceresponse` (or every header).
    exposed: bool,
}

impl ResponseSeen {
    fn observe(&mut self, name: &str, value: &[u8]) {
        match name {
            TRACERESPONSE => self.has_traceresponse = true,
            ALLOW_ORIGIN => self.cors = true,
            EXPOSE_HEADERS => {
                self.exposed |= value.split(|b| *b == b',').any(|v| {
                    let v = v.trim_ascii();
                    v == b"*" || v.eq_ignore_ascii_case(TRACERESPONSE.as_bytes())
                });
            }
            _ => {}
        }
    }
}

/// Writes this hop's response context in the configured forms; `seen` is
/// `None` when the response map was not read (then `traceresponse` is set,
/// replacing any, and no CORS header is looked for).
fn write_response_context(
    host: &mut impl StreamHost,
    value: &[u8],
    form: ResponseHeaderForm,
    seen: Option<ResponseSeen>,
) {
    if form.traceresponse() {
        match seen {
            Some(s) if !s.has_traceresponse => host.add_response_header(TRACERESPONSE, value),
            _ => host.set_response_header(TRACERESPONSE, value),
        }
        // A page of another origin reads the header only if it is exposed.
        if seen.is_some_and(|s| s.cors && !s.exposed) {
            host.append_response_header(EXPOSE_HEADERS, TRACERESPONSE.as_bytes());
        }
    }
    if form.server_timing() {
        // Added beside the app's own Server-Timing entries, if any.
        let entry = [&b"traceparent;desc=\""[..], value, b"\""].concat();
        host.append_response_header(SERVER_TIMING, &entry);
    }
}

/// State of a sampled stream.
#[derive(Debug)]
pub struct SpanState {
    trace_id: TraceId,
    span_id: SpanId,
    parent: Option<SpanId>,
    tracestate: Option<String>,
    name: Arc<str>,
    start_ns: u64,
    decision: Decision,
    /// The request header map as the host gave it; fields index into it, so
    /// no value is copied per request.
    headers: Headers,
    fields: RequestFields,
    /// (request-header tag, header index)
    request_tags: Vec<(usize, usize)>,
    /// Known from the headers (no body, or content-length); else read at the end.
    request_body_size: Option<i64>,
    response_body_size: Option<i64>,
    status: Option<i64>,
    grpc_status: Option<i64>,
    response_tags: Vec<(usize, String)>,
}

/// Indices of the request headers a span records.
#[derive(Debug, Default, Clone, Copy)]
struct RequestFields {
    method: Option<usize>,
    path: Option<usize>,
    scheme: Option<usize>,
    authority: Option<usize>,
    user_agent: Option<usize>,
    request_id: Option<usize>,
    /// Jaeger's `jaeger-debug-id`: forced sampling, recorded as a tag.
    debug_id: Option<usize>,
}

/// Per-stream tracing: the span when the request is sampled, and the
/// `traceresponse` to return when this hop answers with one.
#[derive(Debug, Default)]
pub struct Stream {
    span: Option<Box<SpanState>>,
    traceresponse: Option<TraceparentText>,
    /// The request came with `origin` (a browser's cross-origin request): the
    /// response is read for CORS before the context is written.
    origin: bool,
}

fn lossy(v: &[u8], max: usize) -> String {
    truncate(&String::from_utf8_lossy(v), max).to_string()
}

impl Stream {
    pub fn is_sampled(&self) -> bool {
        self.span.is_some()
    }

    /// Response headers are needed: a span to complete or a `traceresponse` to write.
    pub fn wants_response_headers(&self) -> bool {
        self.span.is_some() || self.traceresponse.is_some()
    }

    /// Request headers arrived: extract, decide, inject.
    ///
    /// `end_of_stream`: the request has no body (its size is then known to be 0).
    pub(super) fn on_request_headers(
        tracer: &mut Tracer,
        host: &mut impl StreamHost,
        end_of_stream: bool,
    ) -> Stream {
        let headers = host.request_headers();
        let mut incoming = IncomingHeaders::default();
        let mut fields = RequestFields::default();
        let mut content_length = None;
        let mut forced = false;
        let mut origin = false;
        let mut tag_values: Vec<(usize, usize)> = Vec::new();
        for at in 0..headers.len() {
            let Some((name, v)) = headers.get(at) else {
                continue;
            };
            if incoming.observe(name, v) {
                continue;
            }
            match name {
                ":method" => fields.method = Some(at),
                ":path" => fields.path = Some(at),
                ":scheme" => fields.scheme = Some(at),
                ":authority" => fields.authority = Some(at),
                "user-agent" => fields.user_agent = Some(at),
                "x-request-id" => fields.request_id = Some(at),
                crate::semconv::JAEGER_DEBUG_ID if !v.is_empty() => fields.debug_id = Some(at),
                "content-length" => content_length = ascii_int(v),
                "origin" => origin = true,
                _ => {}
            }
            if tracer.force_header.as_deref() == Some(name) {
                forced = true;
            }
            for (i, t) in tracer.request_header_tags.iter().enumerate() {
                if t.header == name {
                    tag_values.push((i, at));
                }
            }
        }
        let counters = &mut tracer.buffer.counters;
        counters.spans_started += 1;
        let extracted = propagation::extract(&incoming);
        if extracted.invalid {
            counters.invalid_context += 1;
        }
        let value_of = |at: Option<usize>, default: &'static str| match at {
            Some(i) => String::from_utf8_lossy(headers.value(i)),
            None => std::borrow::Cow::Borrowed(default),
        };
        // The operation name is only computed when the decision needs it or
        // the span is built: unsampled requests skip it.
        let name_of = |tracer: &mut Tracer| {
            let overflowed_before = tracer.namer.overflowed;
            let name = tracer
                .namer
                .name(&value_of(fields.method, "GET"), &value_of(fields.path, "/"));
            if tracer.namer.overflowed != overflowed_before {
                tracer.buffer.counters.operations_overflow += 1;
            }
            name
        };
        let mut name = if tracer.sampler.needs_operation() {
            Some(name_of(tracer))
        } else {
            None
        };

        let (trace_id, parent, random) = match extracted.parent {
            Some(p) => (
                p.trace_id,
                Some(p.span_id),
                extracted.w3c_flags.unwrap_or(0) & propagation::w3c::FLAG_RANDOM,
            ),
            None => (
                TraceId(tracer.rng.trace_id()),
                None,
                propagation::w3c::FLAG_RANDOM,
            ),
        };
        let budget_key = &tracer.budget_key;
        // Jaeger's debug id samples like a debug flag, and says so downstream.
        let debug = extracted.debug || fields.debug_id.is_some();
        let decision = tracer.sampler.decide(
            name.as_deref().unwrap_or(""),
            &trace_id,
            extracted.sampled,
            forced || debug,
            |rate| crate::budget::take_shared(host, budget_key, rate),
        );
        let (decision, new_tracestate) = crate::sampling::otel_threshold(
            decision,
            &tracer.sampler,
            name.as_deref().unwrap_or(""),
            tracer.config.sampling.consistent_downstream && !forced && !debug,
            &extracted.tracestate,
            (random != 0).then(|| trace_id.randomness()),
        );
        let sampled = decision.sampled();
        // One rule for a hop that records no span, whatever headers the app
        // forwarded: it writes no span id of its own. With a valid parent, every
        // format goes on carrying the parent's id; only what is missing or must
        // change is written (formats to inject that did not arrive or arrived
        // invalid, a traceparent of another version or with unknown flags, a
        // changed decision, tracestate edits). A sampled hop writes its new span
        // id in every format.
        let keep_parent = match parent {
            Some(p) if !sampled => Some(p),
            _ => None,
        };
        let span_id = keep_parent.unwrap_or_else(|| SpanId(tracer.rng.span_id()));

        let mut formats = tracer.inject_formats;
        if tracer.config.propagation.inject_incoming_formats {
            formats = formats.union(extracted.arrived);
        }
        if keep_parent.is_some()
            && !extracted.invalid
            && extracted.sampled == Some(sampled)
            && !debug
        {
            let mut write = formats.without(extracted.arrived);
            if extracted.w3c_rewrite && formats.contains(propagation::Formats::W3C) {
                write.insert(propagation::Formats::W3C);
            }
            formats = write;
        }
        let mut out = Outgoing {
            trace_id,
            span_id,
            // x-b3-parentspanid: this span's parent; a hop without a span has none to name.
            parent_span_id: if keep_parent.is_some() { None } else { parent },
            sampled,
            debug,
            w3c_flags: extracted.w3c_flags.unwrap_or(0) | random,
            tracestate: new_tracestate.as_ref().unwrap_or(&extracted.tracestate),
            traceparent: None,
        };
        // `traceresponse` is this hop's `traceparent`: formatted once for both.
        let traceresponse = match tracer.config.propagation.traceresponse {
            TraceResponseMode::Never => None,
            TraceResponseMode::Roots if extracted.parent.is_some() => None,
            TraceResponseMode::Roots | TraceResponseMode::Always => Some(
                propagation::w3c::format_traceparent(&trace_id, &span_id, out.traceparent_flags()),
            ),
        };
        out.traceparent = traceresponse;
        // `traceparent` is in the map exactly when W3C arrived.
        let arrived_w3c = extracted.arrived.contains(propagation::Formats::W3C);
        propagation::inject(&out, formats, |name, value| {
            // Envoy adds a header more cheaply than it replaces one: the map
            // read above says which names the request holds.
            let present = match name {
                "traceparent" => arrived_w3c,
                _ => headers.contains(name),
            };
            match value {
                Some(v) if !present => host.add_request_header(name, v),
                v => host.set_request_header(name, v),
            }
        });
        if !sampled {
            return Stream {
                span: None,
                traceresponse,
                origin,
            };
        }
        tracer.buffer.counters.spans_sampled += 1;
        let now = host.now_nanos();
        let name = match name.take() {
            Some(n) => n,
            None => name_of(tracer),
        };
        let tracestate = new_tracestate.unwrap_or(extracted.tracestate).into_value();
        Stream {
            span: Some(Box::new(SpanState {
                trace_id,
                span_id,
                parent,
                tracestate,
                name,
                start_ns: now,
                decision,
                headers,
                fields,
                request_tags: tag_values,
                status: None,
                grpc_status: None,
                request_body_size: if end_of_stream {
                    Some(0)
                } else {
                    content_length
                },
                response_body_size: None,
                response_tags: Vec::new(),
            })),
            traceresponse,
            origin,
        }
    }

    /// Response headers arrived (also for local replies).
    pub fn on_response_headers(
        &mut self,
        tracer: &Tracer,
        host: &mut impl StreamHost,
        end_of_stream: bool,
    ) {
        let traceresponse = self.traceresponse.take();
        let form = tracer.config.propagation.response_header;
        let Some(span) = self.span.as_mut() else {
            // Unsampled: the response map is read for a browser's
            // cross-origin request (CORS: `origin` came); else, where looking
            // a header up is cheaper than replacing one, whether the app set
            // `traceresponse`; else `traceresponse` is set.
            if let Some(tr) = traceresponse {
                let seen = if !form.traceresponse() {
                    None
                } else if self.origin {
                    let mut seen = ResponseSeen::default();
                    for (name, value) in host.response_headers().iter() {
                        seen.observe(name, value);
                    }
                    Some(seen)
                } else if host.reads_maps_cheaply() {
                    Some(ResponseSeen {
                        has_traceresponse: host.response_has_header(TRACERESPONSE),
                        ..ResponseSeen::default()
                    })
                } else {
                    None
                };
                write_response_context(host, tr.as_bytes(), form, seen);
            }
            return;
        };
        if end_of_stream {
            span.response_body_size = Some(0);
        }
        let headers = host.response_headers();
        let mut seen = ResponseSeen::default();
        for (name, value) in headers.iter() {
            match name {
                ":status" => span.status = ascii_int(value),
                "content-length" if !end_of_stream => span.response_body_size = ascii_int(value),
                "grpc-status" => span.grpc_status = ascii_int(value),
                _ => seen.observe(name, value),
            }
            for (i, t) in tracer.response_header_tags.iter().enumerate() {
                if t.header == name {
                    span.response_tags.push((i, lossy(value, t.max_length)));
                }
            }
        }
        if let Some(tr) = traceresponse {
            write_response_context(host, tr.as_bytes(), form, Some(seen));
        }
    }

    /// Response trailers arrived (gRPC status lives here).
    pub fn on_response_trailers(&mut self, host: &impl StreamHost) {
        let Some(span) = self.span.as_mut() else {
            return;
        };
        if let Some(v) = host.response_trailers().find("grpc-status") {
            span.grpc_status = ascii_int(v);
        }
    }

    /// The stream is over: finish and buffer the span.
    pub(super) fn on_log(self, tracer: &mut Tracer, host: &impl StreamHost) {
        let Some(span) = self.span else {
            return;
        };
        let ending = finish::read(&span, tracer, host);
        let Tracer {
            buffer,
            static_attrs,
            config,
            request_header_tags,
            response_header_tags,
            attribute_tags,
            ..
        } = tracer;
        let tags = encode::Tags {
            fixed: static_attrs,
            max_length: config.max_tag_length,
            request: request_header_tags,
            response: response_header_tags,
            attributes: attribute_tags,
        };
        buffer.append(ending.end_ns, |buf| {
            encode::write_span(buf, &span, &ending, &tags)
        });
    }
}

mod encode;
mod finish;

#[cfg(test)]
mod cost;
#[cfg(test)]
mod tests;
