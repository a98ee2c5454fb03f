//! Extracting the incoming trace context and injecting the new one.
//!
//! Formats are read in priority order W3C, B3 single, B3 multi, Jaeger; the
//! first valid one wins. Any invalid header means "start a new trace" and
//! never fails the request. Formats that arrived (valid or not) are written
//! back with the new context so the upstream never sees a stale or broken one.

pub mod b3;
pub mod jaeger;
pub mod w3c;

use meshtrace_proto::{SpanId, TraceId};

/// A set of propagation formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Formats(u8);

impl Formats {
    pub const NONE: Formats = Formats(0);
    pub const W3C: Formats = Formats(1);
    pub const B3_MULTI: Formats = Formats(2);
    pub const B3_SINGLE: Formats = Formats(4);
    pub const JAEGER: Formats = Formats(8);

    pub fn contains(self, other: Formats) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }
    pub fn insert(&mut self, other: Formats) {
        self.0 |= other.0;
    }
    pub fn union(self, other: Formats) -> Formats {
        Formats(self.0 | other.0)
    }
    /// The formats of `self` that `other` does not have.
    pub fn without(self, other: Formats) -> Formats {
        Formats(self.0 & !other.0)
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// The propagation headers of one request, as found by one pass over the header map.
#[derive(Debug, Default, Clone)]
pub struct IncomingHeaders<'a> {
    pub traceparent: Option<&'a [u8]>,
    pub traceparent_count: u8,
    pub tracestate: Vec<&'a [u8]>,
    pub b3: Option<&'a [u8]>,
    pub x_b3_traceid: Option<&'a [u8]>,
    pub x_b3_spanid: Option<&'a [u8]>,
    pub x_b3_sampled: Option<&'a [u8]>,
    pub x_b3_flags: Option<&'a [u8]>,
    pub x_b3_present: bool,
    pub uber_trace_id: Option<&'a [u8]>,
}

impl<'a> IncomingHeaders<'a> {
    /// Records `name: value` if it is a propagation header. `name` is lowercase (Envoy normalises).
    pub fn observe(&mut self, name: &str, value: &'a [u8]) -> bool {
        match name {
            "traceparent" => {
                self.traceparent = Some(value);
                self.traceparent_count = self.traceparent_count.saturating_add(1);
            }
            "tracestate" => self.tracestate.push(value),
            "b3" => self.b3 = Some(value),
            "x-b3-traceid" => {
                self.x_b3_traceid = Some(value);
                self.x_b3_present = true;
            }
            "x-b3-spanid" => {
                self.x_b3_spanid = Some(value);
                self.x_b3_present = true;
            }
            "x-b3-sampled" => {
                self.x_b3_sampled = Some(value);
                self.x_b3_present = true;
            }
            "x-b3-flags" => {
                self.x_b3_flags = Some(value);
                self.x_b3_present = true;
            }
            "x-b3-parentspanid" => self.x_b3_present = true,
            "uber-trace-id" => self.uber_trace_id = Some(value),
            _ => return false,
        }
        true
    }
}

/// What to do with the incoming `tracestate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceState {
    /// None arrived.
    Absent,
    /// Arrived valid and in one header: leave the header alone.
    Keep(String),
    /// Arrived but needed cleaning (or came in several headers): write this.
    Replace(String),
    /// Must not be propagated (no valid traceparent to go with it).
    Remove,
}

impl TraceState {
    pub fn value(&self) -> Option<&str> {
        match self {
            TraceState::Keep(s) | TraceState::Replace(s) => Some(s),
            _ => None,
        }
    }

    /// The value to record on the span, moved out.
    pub fn into_value(self) -> Option<String> {
        match self {
            TraceState::Keep(s) | TraceState::Replace(s) => Some(s),
            _ => None,
        }
    }
}

/// The remote parent, if a valid one arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteParent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
}

/// The result of extraction.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    pub parent: Option<RemoteParent>,
    /// An upstream decision, if one arrived (also without ids, e.g. `b3: 0`).
    pub sampled: Option<bool>,
    /// B3 debug or Jaeger debug flag.
    pub debug: bool,
    /// W3C trace-flags of the parent when the context came from `traceparent`.
    pub w3c_flags: Option<u8>,
    /// The `traceparent` that arrived must be rewritten even if nothing else
    /// changes (a higher version, unknown flags set).
    pub w3c_rewrite: bool,
    pub tracestate: TraceState,
    /// Formats whose headers were present (valid or not).
    pub arrived: Formats,
    /// Some propagation header was present but invalid.
    pub invalid: bool,
}

/// Extracts the incoming context; never fails.
pub fn extract(h: &IncomingHeaders<'_>) -> Extracted {
    let mut out = Extracted {
        parent: None,
        sampled: None,
        debug: false,
        w3c_flags: None,
        w3c_rewrite: false,
        tracestate: TraceState::Absent,
        arrived: Formats::NONE,
        invalid: false,
    };
    if h.traceparent.is_some() {
        out.arrived.insert(Formats::W3C);
    }
    if h.b3.is_some() {
        out.arrived.insert(Formats::B3_SINGLE);
    }
    if h.x_b3_present {
        out.arrived.insert(Formats::B3_MULTI);
    }
    if h.uber_trace_id.is_some() {
        out.arrived.insert(Formats::JAEGER);
    }

    // W3C: several traceparent headers make it invalid.
    if let Some(tp) = h.traceparent {
        match (h.traceparent_count, w3c::parse_traceparent(tp)) {
            (1, Ok(p)) => {
                out.parent = Some(RemoteParent {
                    trace_id: p.trace_id,
                    span_id: p.parent_id,
                });
                out.sampled = Some(p.flags & w3c::FLAG_SAMPLED != 0);
                out.w3c_flags = Some(p.flags);
                out.w3c_rewrite = !p.canonical;
                out.tracestate = match h.tracestate.as_slice() {
                    [] => TraceState::Absent,
                    [one] => match w3c::sanitize_tracestate(one) {
                        Some(s) if s.as_bytes() == *one => TraceState::Keep(s),
                        Some(s) => TraceState::Replace(s),
                        None => TraceState::Remove,
                    },
                    many => match w3c::sanitize_tracestate(&many.join(&b","[..])) {
                        Some(s) => TraceState::Replace(s),
                        None => TraceState::Remove,
                    },
                };
                return out;
            }
            _ => out.invalid = true,
        }
    }
    if !h.tracestate.is_empty() {
        out.tracestate = TraceState::Remove;
    }

    let mut b3_decision: Option<b3::B3Sampling> = None;
    if let Some(v) = h.b3 {
        match b3::parse_single(v) {
            Ok(b) => {
                if let Some((t, s)) = b.ids {
                    out.parent = Some(RemoteParent {
                        trace_id: t,
                        span_id: s,
                    });
                    apply_b3(&mut out, b.sampling);
                    return out;
                }
                b3_decision = b.sampling;
            }
            Err(_) => out.invalid = true,
        }
    }
    if h.x_b3_present {
        match b3::parse_multi(h.x_b3_traceid, h.x_b3_spanid, h.x_b3_sampled, h.x_b3_flags) {
            Ok(b) => {
                if let Some((t, s)) = b.ids {
                    out.parent = Some(RemoteParent {
                        trace_id: t,
                        span_id: s,
                    });
                    apply_b3(&mut out, b.sampling);
                    return out;
                }
                b3_decision = b3_decision.or(b.sampling);
            }
            Err(_) => out.invalid = true,
        }
    }
    if let Some(v) = h.uber_trace_id {
        match jaeger::parse(v) {
            Ok(u) => {
                out.parent = Some(RemoteParent {
                    trace_id: u.trace_id,
                    span_id: u.span_id,
                });
                out.debug = u.flags & jaeger::FLAG_DEBUG != 0;
                out.sampled = Some(u.flags & jaeger::FLAG_SAMPLED != 0 || out.debug);
                return out;
            }
            Err(_) => out.invalid = true,
        }
    }
    // A decision without ids (e.g. `b3: 0`) still applies to the new trace.
    apply_b3(&mut out, b3_decision);
    out
}

fn apply_b3(out: &mut Extracted, s: Option<b3::B3Sampling>) {
    match s {
        Some(b3::B3Sampling::Accept) => out.sampled = Some(true),
        Some(b3::B3Sampling::Deny) => out.sampled = Some(false),
        Some(b3::B3Sampling::Debug) => {
            out.sampled = Some(true);
            out.debug = true;
        }
        None => {}
    }
}

/// The context to write into the upstream request.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub trace_id: TraceId,
    /// The span this sidecar created: the upstream's parent.
    pub span_id: SpanId,
    /// This span's own parent, for `x-b3-parentspanid`.
    pub parent_span_id: Option<SpanId>,
    pub sampled: bool,
    pub debug: bool,
    /// W3C flags to send (sampled bit is set from `sampled`).
    pub w3c_flags: u8,
    pub tracestate: &'a TraceState,
    /// The `traceparent` of this context when the caller has formatted it
    /// already (the same value as its `traceresponse`); else formatted here.
    pub traceparent: Option<w3c::TraceparentText>,
}

impl Outgoing<'_> {
    /// The W3C flags written: only those this version knows (Level 2: "Other
    /// Flags" MUST be zero), the sampled bit from the decision.
    pub fn traceparent_flags(&self) -> u8 {
        (self.w3c_flags & w3c::FLAG_RANDOM) | u8::from(self.sampled)
    }
}

/// A header change: set to a value, or remove (as the tests collect them).
#[cfg(test)]
pub type HeaderEdit = (&'static str, Option<String>);

/// Injects `ctx` in `formats`: `edit(name, Some(value))` sets a header,
/// `edit(name, None)` removes one. Values are formatted on the stack where
/// they can be (`traceparent`), so an unsampled hop writing only W3C
/// allocates nothing here.
pub fn inject(
    ctx: &Outgoing<'_>,
    formats: Formats,
    mut edit: impl FnMut(&'static str, Option<&[u8]>),
) {
    if formats.contains(Formats::W3C) {
        // Always version 00, whatever version arrived.
        let tp = ctx.traceparent.unwrap_or_else(|| {
            w3c::format_traceparent(&ctx.trace_id, &ctx.span_id, ctx.traceparent_flags())
        });
        edit("traceparent", Some(tp.as_bytes()));
    }
    // One rule, whether or not this hop writes traceparent (an unsampled hop
    // leaves a valid one as it came): `tracestate` goes on only as
    // `w3c::sanitize_tracestate` lets it — rewritten when cleaning changed it,
    // removed when it is invalid or has no traceparent to go with.
    match ctx.tracestate {
        TraceState::Replace(s) => edit("tracestate", Some(s.as_bytes())),
        TraceState::Remove => edit("tracestate", None),
        TraceState::Keep(_) | TraceState::Absent => {}
    }
    let state = if ctx.debug {
        b3::B3Sampling::Debug
    } else if ctx.sampled {
        b3::B3Sampling::Accept
    } else {
        b3::B3Sampling::Deny
    };
    if formats.contains(Formats::B3_SINGLE) {
        let v = b3::format_single(
            &ctx.trace_id,
            &ctx.span_id,
            state,
            ctx.parent_span_id.as_ref(),
        );
        edit("b3", Some(v.as_bytes()));
    }
    if formats.contains(Formats::B3_MULTI) {
        let mut t = String::with_capacity(32);
        ctx.trace_id.write_short_hex(&mut t);
        edit("x-b3-traceid", Some(t.as_bytes()));
        edit("x-b3-spanid", Some(&ctx.span_id.hex_bytes()));
        edit(
            "x-b3-parentspanid",
            ctx.parent_span_id
                .as_ref()
                .map(SpanId::hex_bytes)
                .as_ref()
                .map(|h| &h[..]),
        );
        if ctx.debug {
            edit("x-b3-flags", Some(b"1"));
            edit("x-b3-sampled", None);
        } else {
            edit("x-b3-flags", None);
            edit("x-b3-sampled", Some(if ctx.sampled { b"1" } else { b"0" }));
        }
    }
    if formats.contains(Formats::JAEGER) {
        let flags = if ctx.debug {
            jaeger::FLAG_DEBUG | jaeger::FLAG_SAMPLED
        } else {
            u8::from(ctx.sampled)
        };
        edit(
            "uber-trace-id",
            Some(jaeger::format(&ctx.trace_id, &ctx.span_id, flags).as_bytes()),
        );
    }
}

/// The edits [`inject`] makes, collected.
#[cfg(test)]
pub fn inject_edits(ctx: &Outgoing<'_>, formats: Formats) -> Vec<HeaderEdit> {
    let mut edits = Vec::new();
    inject(ctx, formats, |name, value| {
        edits.push((name, value.map(|v| String::from_utf8_lossy(v).into_owned())));
    });
    edits
}

#[cfg(test)]
mod tests;
