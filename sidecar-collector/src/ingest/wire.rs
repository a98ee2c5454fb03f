//! The store's ingest path without decoding spans: an export's spans are read
//! in place from its wire bytes (ids, times, name, kind, status, attributes as
//! slices) and stored as those bytes. Decoding every span into owned `String`s
//! and `Vec`s and dropping them again was the largest part of the central
//! collector's CPU per span after storage itself (prost's decode about a fifth,
//! `scripts/bench/collector`, perf). Resources and scopes, a few per export, are
//! decoded with prost. A span redaction would change, or one this reader does
//! not take as it is (nested array or key/value-list values, a message field
//! repeated, a wrong wire type), is decoded with prost, redacted and encoded
//! again, as before; an export whose structure is unusual goes the old way whole.
//! `records_from_wire` gives what `records_from_request` gives (property test).

use super::cost::{resource_cost, scope_cost, span_cost};
use super::{Ingested, Redaction, TimeWindow};
use crate::model::{
    kind_name, origin_tag_hashes, service_of, tag_hash, tracestate_probability, validate_parts,
    Origin, SpanRecord, ValidSpan,
};
use bytes::Bytes;
use meshtrace_proto::otlp::common::v1::InstrumentationScope;
use meshtrace_proto::otlp::resource::v1::Resource;
use meshtrace_proto::otlp::trace::v1::Span;
use meshtrace_proto::semconv;
use prost::Message;
use std::ops::Range;
use std::sync::Arc;

/// An attribute value, read in place.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    /// No value (no `value`, or an `AnyValue` with none set).
    Empty,
}

#[derive(Debug, Clone, Copy)]
pub struct Attr<'a> {
    pub key: &'a str,
    pub value: Val<'a>,
}

/// The fields of a span a record needs.
#[derive(Debug, Default)]
pub struct SpanView<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
    pub trace_state: &'a str,
    pub name: &'a str,
    pub kind: i32,
    pub start: u64,
    pub end: u64,
    pub status_code: i32,
}

/// One protobuf field: its number and its value.
enum F<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32,
    Len(&'a [u8]),
}

/// The fields of a message, in order; `None` at the first malformed byte.
struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Fields { buf, pos: 0 }
    }

    /// The next field, `Some(None)` at the end, `None` when malformed.
    fn next_field(&mut self) -> Option<Option<(u64, F<'a>)>> {
        if self.pos >= self.buf.len() {
            return Some(None);
        }
        let key = varint(self.buf, &mut self.pos)?;
        let (tag, wire) = (key >> 3, key & 7);
        if tag == 0 {
            return None;
        }
        let f = match wire {
            0 => F::Varint(varint(self.buf, &mut self.pos)?),
            1 => {
                let b = self.buf.get(self.pos..self.pos.checked_add(8)?)?;
                self.pos += 8;
                F::Fixed64(u64::from_le_bytes(b.try_into().ok()?))
            }
            5 => {
                self.buf.get(self.pos..self.pos.checked_add(4)?)?;
                self.pos += 4;
                F::Fixed32
            }
            2 => {
                let len = usize::try_from(varint(self.buf, &mut self.pos)?).ok()?;
                let b = self.buf.get(self.pos..self.pos.checked_add(len)?)?;
                self.pos += len;
                F::Len(b)
            }
            _ => return None,
        };
        Some(Some((tag, f)))
    }
}

fn text(b: &[u8]) -> Option<&str> {
    std::str::from_utf8(b).ok()
}

/// An `AnyValue`; `None` for nested values and anything unusual.
fn any_value(buf: &[u8]) -> Option<Val<'_>> {
    let mut f = Fields::new(buf);
    let mut v = Val::Empty;
    let mut set = false;
    while let Some((tag, field)) = f.next_field()? {
        let next = match (tag, field) {
            (1, F::Len(b)) => Val::Str(text(b)?),
            (2, F::Varint(x)) => Val::Bool(x != 0),
            (3, F::Varint(x)) => Val::Int(x as i64),
            (4, F::Fixed64(x)) => Val::Double(f64::from_bits(x)),
            (7, F::Len(b)) => Val::Bytes(b),
            (1..=7, _) => return None,
            _ => continue,
        };
        // One value per `AnyValue`, as every sender writes it.
        if set {
            return None;
        }
        set = true;
        v = next;
    }
    Some(v)
}

fn key_value(buf: &[u8]) -> Option<Attr<'_>> {
    let mut f = Fields::new(buf);
    let (mut key, mut value, mut seen_value) = ("", Val::Empty, false);
    while let Some((tag, field)) = f.next_field()? {
        match (tag, field) {
            (1, F::Len(b)) => key = text(b)?,
            (2, F::Len(b)) if !seen_value => {
                seen_value = true;
                value = any_value(b)?;
            }
            (1 | 2, _) => return None,
            _ => {}
        }
    }
    Some(Attr { key, value })
}

/// Reads `buf` as a `Span`: its fields, its attributes into `attrs`, its events'
/// attributes into `event_attrs` and its links' into `link_attrs` (all cleared
/// first, each read through `memo`). `None` when the span is not taken as it is
/// (see the module's doc).
fn span_view<'a>(
    buf: &'a [u8],
    attrs: &mut Vec<Seen<'a>>,
    event_attrs: &mut Vec<Seen<'a>>,
    link_attrs: &mut Vec<Seen<'a>>,
    memo: &mut AttrMemo<'a>,
    redaction: &Redaction,
) -> Option<SpanView<'a>> {
    attrs.clear();
    event_attrs.clear();
    link_attrs.clear();
    let mut v = SpanView::default();
    let mut f = Fields::new(buf);
    let mut status_seen = false;
    while let Some((tag, field)) = f.next_field()? {
        match (tag, field) {
            (1, F::Len(b)) => v.trace_id = b,
            (2, F::Len(b)) => v.span_id = b,
            (3, F::Len(b)) => v.trace_state = text(b)?,
            (4, F::Len(b)) => v.parent_span_id = b,
            (5, F::Len(b)) => v.name = text(b)?,
            (6, F::Varint(x)) => v.kind = x as i32,
            (7, F::Fixed64(x)) => v.start = x,
            (8, F::Fixed64(x)) => v.end = x,
            (9, F::Len(b)) => attrs.push(memo.read(b, redaction)?),
            (10 | 12 | 14, F::Varint(_)) | (16, F::Fixed32) => {}
            (11, F::Len(b)) => {
                let mut e = Fields::new(b);
                while let Some((tag, field)) = e.next_field()? {
                    match (tag, field) {
                        (1, F::Fixed64(_)) | (4, F::Varint(_)) => {}
                        (2, F::Len(n)) => {
                            text(n)?;
                        }
                        (3, F::Len(kv)) => event_attrs.push(memo.read(kv, redaction)?),
                        (1..=4, _) => return None,
                        _ => {}
                    }
                }
            }
            (13, F::Len(b)) => {
                let mut l = Fields::new(b);
                while let Some((tag, field)) = l.next_field()? {
                    match (tag, field) {
                        (1 | 2, F::Len(_)) | (5, F::Varint(_)) | (6, F::Fixed32) => {}
                        (3, F::Len(ts)) => {
                            text(ts)?;
                        }
                        (4, F::Len(kv)) => link_attrs.push(memo.read(kv, redaction)?),
                        (1..=6, _) => return None,
                        _ => {}
                    }
                }
            }
            (15, F::Len(b)) if !status_seen => {
                status_seen = true;
                let mut s = Fields::new(b);
                while let Some((tag, field)) = s.next_field()? {
                    match (tag, field) {
                        (2, F::Len(m)) => {
                            text(m)?;
                        }
                        (3, F::Varint(c)) => v.status_code = c as i32,
                        (2 | 3, _) => return None,
                        _ => {}
                    }
                }
            }
            (1..=16, _) => return None,
            _ => {}
        }
    }
    Some(v)
}

/// An attribute's value as text, as `model::value_text` gives it.
fn val_text(v: &Val<'_>) -> Option<String> {
    Some(match v {
        Val::Str(s) => (*s).to_string(),
        Val::Int(i) => i.to_string(),
        Val::Bool(b) => b.to_string(),
        Val::Double(d) => d.to_string(),
        Val::Bytes(b) => {
            use base64::Engine;
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(b))
                .to_string()
        }
        Val::Empty => return None,
    })
}

/// An attribute as the store needs it: read, checked against redaction, hashed.
#[derive(Debug, Clone, Copy)]
struct Seen<'a> {
    attr: Attr<'a>,
    /// Whether redaction would change it.
    changes: bool,
    /// Its tag hash (none for an empty value).
    hash: Option<u64>,
}

/// The attributes already read in an export, by their bytes: most repeat from
/// span to span (the same key and value, so the same bytes), and looking one
/// up (foldhash over its bytes, eight a step) spares reading its fields again,
/// checking its key and text as UTF-8, asking redaction about it and hashing
/// its tag byte by byte (FNV-1a) — together about a tenth of the collector's
/// CPU per stored span under load (perf). Identical bytes read identically, so
/// what it gives is what reading them again gives.
struct AttrMemo<'a> {
    seen: std::collections::HashMap<&'a [u8], Seen<'a>, foldhash::fast::FixedState>,
    /// Entries it holds at most: then it only looks up (the attributes that
    /// repeat are those of the first spans, as a rule; the rest are unique).
    max: usize,
    /// Kept across attributes: numbers' text, redaction's key buffer.
    text: String,
    buf: String,
}

impl<'a> AttrMemo<'a> {
    /// Entries at most, whatever the budget.
    const MAX: usize = 1024;
    /// What an entry may take: a bucket and its control byte, at the table's
    /// lowest load (half full, just grown).
    const ENTRY_BYTES: u64 = 2 * (std::mem::size_of::<(&[u8], Seen<'_>)>() as u64 + 1);

    /// A memo of at most a sixteenth of `budget`; and what it may take.
    fn within(budget: u64) -> (Self, u64) {
        let max = (budget / 16 / Self::ENTRY_BYTES).min(Self::MAX as u64);
        let memo = AttrMemo {
            seen: Default::default(),
            max: max as usize,
            text: String::new(),
            buf: String::new(),
        };
        (memo, max * Self::ENTRY_BYTES)
    }

    /// The attribute whose `KeyValue` message is `kv`; `None` when it is not
    /// taken as it is.
    fn read(&mut self, kv: &'a [u8], redaction: &Redaction) -> Option<Seen<'a>> {
        if let Some(s) = self.seen.get(kv) {
            return Some(*s);
        }
        let attr = key_value(kv)?;
        let text = match attr.value {
            Val::Str(s) => Some(s),
            _ => None,
        };
        let seen = Seen {
            attr,
            changes: redaction.would_change(attr.key, text, &mut self.buf),
            hash: attr_hash(&attr, &mut self.text),
        };
        if self.seen.len() < self.max {
            self.seen.insert(kv, seen);
        }
        Some(seen)
    }
}

/// The tag hash of an attribute (`model::tag_hash` of its key and its value's
/// text, as `val_text` gives it); numbers and booleans written into `text`.
fn attr_hash(a: &Attr<'_>, text: &mut String) -> Option<u64> {
    use std::fmt::Write;
    text.clear();
    let written = match &a.value {
        Val::Str(s) => return Some(tag_hash(a.key, s)),
        Val::Int(i) => write!(text, "{i}"),
        Val::Bool(b) => write!(text, "{b}"),
        Val::Double(d) => write!(text, "{d}"),
        other => return val_text(other).map(|t| tag_hash(a.key, &t)),
    };
    written.ok().map(|()| tag_hash(a.key, text))
}

/// `sampler.param` when `sampler.type` is `probabilistic` (`model::sampled_probability`).
fn sampled_probability(attrs: &[Seen<'_>]) -> Option<f64> {
    let find = |k: &str| attrs.iter().find(|a| a.attr.key == k).map(|a| a.attr.value);
    match find(semconv::SAMPLER_TYPE)? {
        Val::Str(t) if t == semconv::SAMPLER_TYPE_PROBABILISTIC => {}
        _ => return None,
    }
    match find(semconv::SAMPLER_PARAM)? {
        Val::Double(p) => Some(p),
        Val::Int(p) => Some(p as f64),
        Val::Str(p) => p.parse().ok(),
        _ => None,
    }
}

/// Whether redaction would change anything in the span.
fn redacted(attrs: &[&[Seen<'_>]]) -> bool {
    attrs.iter().flat_map(|a| a.iter()).any(|a| a.changes)
}

/// The record of a span read in place (`SpanRecord::from_span`'s result).
#[allow(clippy::too_many_arguments)]
fn record_from_view<'a>(
    v: &SpanView<'a>,
    attrs: &[Seen<'a>],
    event_attrs: &[Seen<'a>],
    service: &str,
    origin: &Arc<[u8]>,
    origin_tags: &[u64],
    indexed: &[String],
    body: Bytes,
    tags: &mut Vec<u64>,
) -> Result<SpanRecord, String> {
    let ValidSpan {
        trace_id,
        span_id,
        parent_span_id,
        duration_ns,
    } = validate_parts(v.trace_id, v.span_id, v.parent_span_id, v.start, v.end)?;
    let error = v.status_code == meshtrace_proto::otlp::trace::v1::status::StatusCode::Error as i32;
    let own_probability = sampled_probability(attrs);
    let mut indexed_tags: Vec<(String, String)> = attrs
        .iter()
        .filter(|a| indexed.iter().any(|k| k == a.attr.key))
        .filter_map(|a| Some((a.attr.key.to_string(), val_text(&a.attr.value)?)))
        .collect();
    if error && indexed.iter().any(|k| k == semconv::ERROR) {
        indexed_tags.push((semconv::ERROR.into(), "true".into()));
    }
    // Gathered in a buffer kept across spans: the record's tags are one allocation.
    tags.clear();
    tags.extend(attrs.iter().chain(event_attrs).filter_map(|a| a.hash));
    if error {
        tags.push(tag_hash(semconv::ERROR, "true"));
    }
    tags.push(tag_hash(semconv::SPAN_KIND, kind_name(v.kind)));
    tags.extend_from_slice(origin_tags);
    tags.sort_unstable();
    tags.dedup();
    Ok(SpanRecord {
        trace_id,
        span_id,
        parent_span_id,
        service: service.to_string(),
        operation: v.name.to_string(),
        kind: v.kind,
        start_us: (v.start / 1000) as i64,
        duration_us: (duration_ns / 1000) as i64,
        error,
        status_code: v.status_code,
        indexed_tags,
        sampled_probability: own_probability.or_else(|| tracestate_probability(v.trace_state)),
        sampler_decided: own_probability.is_some(),
        origin: origin.clone(),
        body,
        tags: Arc::from(&tags[..]),
    })
}

/// Where a scope and its spans are in an export's bytes.
type ScopeLayout = (Option<Range<usize>>, Vec<Range<usize>>);

/// Where a resource and its scopes are in an export's bytes.
type ResourceLayout = (Option<Range<usize>>, Vec<ScopeLayout>);

/// Where the resources, scopes and spans of an export are in its bytes: built
/// once the memory its [`Shape`] says it takes is reserved (a range per span).
pub struct Layout {
    /// (resource bytes, its scopes) per `ResourceSpans`.
    resources: Vec<ResourceLayout>,
}

impl Layout {
    /// How many spans the export holds.
    pub fn spans(&self) -> usize {
        self.resources
            .iter()
            .flat_map(|(_, scopes)| scopes.iter().map(|(_, spans)| spans.len()))
            .sum()
    }
}

/// What reading an export of `bytes` wire bytes and `spans` spans in place may
/// allocate (records, their names and tag hashes, resources and scopes decoded,
/// spans decoded for redaction, slices copied out) before the reader gives up
/// and the export is decoded with prost under its full estimate. Typical spans
/// need a fraction of it; walking every attribute of every span to estimate
/// prost's cost was a twentieth of the collector's CPU per stored span.
pub fn wire_budget(bytes: usize, spans: usize) -> u64 {
    (spans as u64).saturating_mul(std::mem::size_of::<SpanRecord>() as u64)
        + 2 * bytes as u64
        + WIRE_BUDGET_FLOOR
}

/// What any export may take beyond its size: a resource and scope decoded, a
/// few dozen attributes each.
const WIRE_BUDGET_FLOOR: u64 = 16 << 10;

/// Heap bytes of a record beyond its struct (what the budget is charged).
fn record_heap(r: &SpanRecord) -> u64 {
    let pairs: usize = r
        .indexed_tags
        .iter()
        .map(|(k, v)| 2 * std::mem::size_of::<String>() + k.len() + v.len())
        .sum();
    (r.service.len() + r.operation.len() + pairs + 8 * r.tags.len()) as u64
}

fn offset(outer: &[u8], inner: &[u8]) -> Range<usize> {
    let start = inner.as_ptr() as usize - outer.as_ptr() as usize;
    start..start + inner.len()
}

/// How many resources, scopes and spans an export holds: what its layout
/// takes in memory, known before any of it is allocated (16 MiB of empty
/// `ResourceSpans`, two bytes each, would be 8 million entries).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub resources: usize,
    pub scopes: usize,
    pub spans: usize,
}

impl Shape {
    /// What the layout's vectors may take (twice their entries: they grow by doubling).
    pub fn layout_bytes(&self) -> u64 {
        use std::mem::size_of;
        2 * (self.resources * size_of::<ResourceLayout>()
            + self.scopes * size_of::<ScopeLayout>()
            + self.spans * size_of::<Range<usize>>()) as u64
    }
}

/// The shape of an export, allocating nothing; `None` as for [`layout`].
pub fn shape(buf: &[u8]) -> Option<Shape> {
    walk_layout(buf, None)
}

/// The layout of an export; `None` when it is malformed or unusual (a resource
/// or scope given twice, which prost merges).
pub fn layout(buf: &[u8]) -> Option<Layout> {
    let mut resources = Vec::new();
    walk_layout(buf, Some(&mut resources))?;
    Some(Layout { resources })
}

/// Walks an export's resources, scopes and spans, counting them, and pushing
/// where they are to `out` when there is one.
fn walk_layout(buf: &[u8], mut out: Option<&mut Vec<ResourceLayout>>) -> Option<Shape> {
    let mut shape = Shape::default();
    let building = out.is_some();
    let mut req = Fields::new(buf);
    while let Some((tag, field)) = req.next_field()? {
        let rs = match (tag, field) {
            (1, F::Len(b)) => b,
            (1, _) => return None,
            _ => continue,
        };
        shape.resources += 1;
        let (mut resource, mut scopes) = (None, Vec::new());
        let mut f = Fields::new(rs);
        while let Some((tag, field)) = f.next_field()? {
            match (tag, field) {
                (1, F::Len(b)) if resource.is_none() => resource = Some(offset(buf, b)),
                (2, F::Len(ss)) => {
                    shape.scopes += 1;
                    let (mut scope, mut spans) = (None, Vec::new());
                    let mut g = Fields::new(ss);
                    while let Some((tag, field)) = g.next_field()? {
                        match (tag, field) {
                            (1, F::Len(b)) if scope.is_none() => scope = Some(offset(buf, b)),
                            (2, F::Len(b)) => {
                                shape.spans += 1;
                                if building {
                                    spans.push(offset(buf, b));
                                }
                            }
                            (3, F::Len(b)) => {
                                text(b)?;
                            }
                            (1..=3, _) => return None,
                            _ => {}
                        }
                    }
                    if building {
                        scopes.push((scope, spans));
                    }
                }
                (3, F::Len(b)) => {
                    text(b)?;
                }
                (1..=3, _) => return None,
                _ => {}
            }
        }
        if let Some(out) = out.as_deref_mut() {
            out.push((resource, scopes));
        }
    }
    Some(shape)
}

/// What [`records_from_wire`] gives: the records, and how many attribute values
/// redaction changed.
pub struct FromWire {
    pub ingested: Ingested,
    pub redacted: u64,
}

/// The records of the export in `raw` (protobuf), redaction applied, as
/// `records_from_request` makes them from the decoded export; `None` when the
/// export's structure is unusual or malformed (the caller decodes it with prost,
/// which names the problem).
pub fn records_from_wire(
    raw: &Bytes,
    redaction: &Redaction,
    indexed: &[String],
    window: Option<(TimeWindow, i64)>,
) -> Option<FromWire> {
    let layout = layout(raw)?;
    let budget = wire_budget(raw.len(), layout.spans());
    records_in_layout(raw, layout, redaction, indexed, window, budget)
}

/// [`records_from_wire`] with the export's `layout` read and `budget` bytes
/// reserved: `None` also when reading it would allocate more.
pub fn records_in_layout(
    raw: &Bytes,
    layout: Layout,
    redaction: &Redaction,
    indexed: &[String],
    window: Option<(TimeWindow, i64)>,
    budget: u64,
) -> Option<FromWire> {
    let mut out = Ingested::default();
    // The records' structs, and kept slices copied out of a sparse export.
    let mut used = (layout.spans() * std::mem::size_of::<SpanRecord>() + raw.len() / 2) as u64;
    let mut charge = |bytes: u64| {
        used = used.saturating_add(bytes);
        (used <= budget).then_some(())
    };
    charge(0)?;
    out.records.reserve_exact(layout.spans());
    let mut redacted_values = 0u64;
    let (mut attrs, mut event_attrs, mut link_attrs) = (Vec::new(), Vec::new(), Vec::new());
    let mut tags = Vec::new();
    let (mut memo, memo_bytes) = AttrMemo::within(budget);
    charge(memo_bytes)?;
    let mut kept_raw = 0usize;
    for (resource, scopes) in layout.resources {
        let mut resource = match resource {
            Some(r) => {
                charge(resource_cost(&raw[r.clone()]).ok()?)?;
                Resource::decode(raw.slice(r)).ok()?
            }
            None => Resource::default(),
        };
        redacted_values += redaction.apply_resource(&mut resource);
        let service = service_of(&resource);
        for (scope, spans) in scopes {
            let scope = match scope {
                Some(r) => {
                    charge(scope_cost(&raw[r.clone()]).ok()?)?;
                    Some(InstrumentationScope::decode(raw.slice(r)).ok()?)
                }
                None => None,
            };
            let origin: Arc<[u8]> = Origin::encode(&resource, scope.as_ref()).into();
            let origin_tags = origin_tag_hashes(&resource, scope.as_ref());
            charge((origin.len() + 8 * origin_tags.len()) as u64)?;
            for range in spans {
                let bytes = &raw[range.clone()];
                let view = span_view(
                    bytes,
                    &mut attrs,
                    &mut event_attrs,
                    &mut link_attrs,
                    &mut memo,
                    redaction,
                )
                .filter(|_| !redacted(&[&attrs, &event_attrs, &link_attrs]));
                let (record, name, from_raw) = match view {
                    Some(v) => (
                        record_from_view(
                            &v,
                            &attrs,
                            &event_attrs,
                            &service,
                            &origin,
                            &origin_tags,
                            indexed,
                            raw.slice(range.clone()),
                            &mut tags,
                        ),
                        std::borrow::Cow::Borrowed(v.name),
                        range.len(),
                    ),
                    None => {
                        // Decoded, redacted and encoded again (or refused by prost).
                        charge(span_cost(bytes).ok()?)?;
                        let mut s = Span::decode(raw.slice(range)).ok()?;
                        redacted_values += redaction.apply_span(&mut s);
                        (
                            SpanRecord::from_span(&s, &service, &origin, &origin_tags, indexed),
                            std::borrow::Cow::Owned(s.name),
                            0,
                        )
                    }
                };
                match record.and_then(|r| super::within(r, window)) {
                    Ok(r) => {
                        charge(record_heap(&r))?;
                        kept_raw += from_raw;
                        out.records.push(r);
                    }
                    Err(why) => {
                        if out.rejected == 0 {
                            out.message = format!("span {name:?}: {why}");
                        }
                        out.rejected += 1;
                    }
                }
            }
        }
    }
    super::copy_out_slivers(&mut out.records, kept_raw, raw.len());
    Some(FromWire {
        ingested: out,
        redacted: redacted_values,
    })
}

/// Whether a sidecar may forward an export as its bytes: `Some(spans)` when
/// redaction would change nothing in it (resources, spans, events, links) and
/// every span is valid — what decoding it, redacting, keeping the valid spans
/// and encoding it again would send, without doing it (that was most of a
/// sidecar's CPU per span). `None` otherwise, or when reading it would take
/// more than `budget` bytes, or for a structure this reader does not take as
/// it is: the caller decodes it.
pub fn forwards_as_is(
    raw: &[u8],
    layout: Layout,
    redaction: &Redaction,
    budget: u64,
) -> Option<u64> {
    let mut used = 0u64;
    let mut charge = |bytes: u64| {
        used = used.saturating_add(bytes);
        (used <= budget).then_some(())
    };
    let (mut memo, memo_bytes) = AttrMemo::within(budget);
    charge(memo_bytes)?;
    let (mut attrs, mut event_attrs, mut link_attrs) = (Vec::new(), Vec::new(), Vec::new());
    let mut spans = 0u64;
    for (resource, scopes) in layout.resources {
        if let Some(r) = resource {
            let bytes = &raw[r];
            charge(resource_cost(bytes).ok()?)?;
            let mut resource = Resource::decode(bytes).ok()?;
            if redaction.apply_resource(&mut resource) > 0 {
                return None;
            }
        }
        for (_, ranges) in scopes {
            for range in ranges {
                let v = span_view(
                    &raw[range],
                    &mut attrs,
                    &mut event_attrs,
                    &mut link_attrs,
                    &mut memo,
                    redaction,
                )?;
                if redacted(&[&attrs, &event_attrs, &link_attrs]) {
                    return None;
                }
                validate_parts(v.trace_id, v.span_id, v.parent_span_id, v.start, v.end).ok()?;
                charge(
                    (std::mem::size_of::<Seen<'_>>()
                        * (attrs.len() + event_attrs.len() + link_attrs.len()))
                        as u64,
                )?;
                spans += 1;
            }
        }
    }
    Some(spans)
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
