//! `jaeger.thrift` batches read into the `api_v2` model, on the `thrift`
//! crate's compact and binary protocols: an agent's UDP packet (the oneway
//! call `Agent.emitBatch(1: Batch)`, compact on 6831, binary on 6832) or a
//! collector's HTTP body (a `Batch`, binary).
//!
//! The schema (Jaeger's IDL): `Batch {1: Process process, 2: list<Span>
//! spans}`, `Process {1: string serviceName, 2: list<Tag> tags}`, `Span {1:
//! i64 traceIdLow, 2: i64 traceIdHigh, 3: i64 spanId, 4: i64 parentSpanId, 5:
//! string operationName, 6: list<SpanRef> references, 7: i32 flags, 8: i64
//! startTime, 9: i64 duration, 10: list<Tag> tags, 11: list<Log> logs}` (times
//! in microseconds), `Tag {1: string key, 2: TagType vType, 3: string vStr, 4:
//! double vDouble, 5: bool vBool, 6: i64 vLong, 7: binary vBinary}`, `Log {1:
//! i64 timestamp, 2: list<Tag> fields}`, `SpanRef {1: SpanRefType refType, 2:
//! i64 traceIdLow, 3: i64 traceIdHigh, 4: i64 spanId}`. Other fields are
//! skipped, as Thrift readers skip them.
//!
//! Every read is bounded by the input: no string or list longer than the
//! bytes left, nesting at most [`MAX_DEPTH`]; what a batch will cost is
//! counted first without allocating (strings are skipped and measured).

use super::{charge, JaegerError};
use meshtrace_proto::jaeger::model;
use std::cell::Cell;
use std::io::Read;
use std::rc::Rc;
use thrift::protocol::{
    TBinaryInputProtocol, TCompactInputProtocol, TInputProtocol, TMessageType, TType,
};
use thrift::TConfiguration;

/// Nesting a batch needs is four levels; more is not a Jaeger batch.
const MAX_DEPTH: usize = 16;

/// Which Thrift protocol the bytes are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Compact,
    Binary,
}

/// The input, counting what has been read (to measure skipped strings).
struct Counted<'a> {
    rest: &'a [u8],
    read: Rc<Cell<usize>>,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.rest.read(buf)?;
        self.read.set(self.read.get() + n);
        Ok(n)
    }
}

type P<'a> = dyn TInputProtocol + 'a;

/// Runs `f` on a reader of `bytes` in `protocol`; what it could not read is
/// the error, naming the byte it stopped at.
fn reading<T>(
    bytes: &[u8],
    protocol: Protocol,
    f: impl FnOnce(&mut P<'_>, &Cell<usize>) -> thrift::Result<T>,
) -> Result<T, JaegerError> {
    let read = Rc::new(Cell::new(0));
    let input = Counted {
        rest: bytes,
        read: read.clone(),
    };
    // No string or list can be longer than the input.
    let config = TConfiguration::builder()
        .max_string_size(Some(bytes.len()))
        .max_container_size(Some(bytes.len()))
        .max_recursion_depth(Some(MAX_DEPTH))
        .max_message_size(Some(bytes.len()))
        .max_frame_size(Some(bytes.len()))
        .build()
        .map_err(|e| JaegerError(format!("thrift limits: {e}")))?;
    let at = |e: thrift::Error| {
        JaegerError(format!(
            "not a Jaeger Thrift {} batch: {} (at byte {} of {})",
            match protocol {
                Protocol::Compact => "compact",
                Protocol::Binary => "binary",
            },
            describe(&e),
            read.get(),
            bytes.len()
        ))
    };
    match protocol {
        Protocol::Compact => {
            let mut p = TCompactInputProtocol::with_config(input, config);
            f(&mut p, &read).map_err(at)
        }
        Protocol::Binary => {
            let mut p = TBinaryInputProtocol::with_config(input, false, config);
            f(&mut p, &read).map_err(at)
        }
    }
}

/// Calls `each(p, id, type)` for every field of the struct being read;
/// `false` skips the field.
fn fields(
    p: &mut P<'_>,
    mut each: impl FnMut(&mut P<'_>, i16, TType) -> thrift::Result<bool>,
) -> thrift::Result<()> {
    p.read_struct_begin()?;
    loop {
        let f = p.read_field_begin()?;
        if f.field_type == TType::Stop {
            break;
        }
        if !each(p, f.id.unwrap_or(0), f.field_type)? {
            p.skip(f.field_type)?;
        }
        p.read_field_end()?;
    }
    p.read_struct_end()
}

/// Calls `each` for every struct element of the list being read (elements
/// of another type are skipped).
fn structs(
    p: &mut P<'_>,
    mut each: impl FnMut(&mut P<'_>) -> thrift::Result<()>,
) -> thrift::Result<()> {
    let list = p.read_list_begin()?;
    for _ in 0..list.size {
        if list.element_type == TType::Struct {
            each(p)?;
        } else {
            p.skip(list.element_type)?;
        }
    }
    p.read_list_end()
}

/// The agent's call: `emitBatch`, then its one argument, the batch.
fn agent_call<T>(
    p: &mut P<'_>,
    mut batch: impl FnMut(&mut P<'_>) -> thrift::Result<T>,
) -> thrift::Result<Option<T>> {
    let m = p.read_message_begin()?;
    if !matches!(m.message_type, TMessageType::OneWay | TMessageType::Call) {
        return Err(protocol_error(format!(
            "a {:?} message, not a call",
            m.message_type
        )));
    }
    if m.name != "emitBatch" {
        return Err(protocol_error(format!(
            "the call {:?} is not supported: Jaeger agents call emitBatch (Zipkin spans go to receivers.zipkin)",
            m.name
        )));
    }
    let mut got = None;
    fields(p, |p, id, ty| {
        if (id, ty) == (1, TType::Struct) {
            got = Some(batch(p)?);
            return Ok(true);
        }
        Ok(false)
    })?;
    p.read_message_end()?;
    Ok(got)
}

/// The crate's error with its message (its `Display` gives only the kind).
fn describe(e: &thrift::Error) -> String {
    let (kind, message) = match e {
        thrift::Error::Protocol(p) => (e.to_string(), p.message.as_str()),
        thrift::Error::Transport(t) => (e.to_string(), t.message.as_str()),
        thrift::Error::Application(a) => (e.to_string(), a.message.as_str()),
        thrift::Error::User(u) => return u.to_string(),
    };
    if message.is_empty() || message == kind {
        kind
    } else {
        format!("{kind}: {message}")
    }
}

fn protocol_error(message: String) -> thrift::Error {
    thrift::Error::Protocol(thrift::ProtocolError::new(
        thrift::ProtocolErrorKind::InvalidData,
        message,
    ))
}

// ---- what a batch costs -----------------------------------------------

#[derive(Clone, Copy)]
enum Struct {
    Batch,
    Process,
    Span,
    Tag,
    Log,
    Ref,
}

/// What the struct being read costs read and translated ([`charge`]).
fn cost_of(p: &mut P<'_>, s: Struct, read: &Cell<usize>) -> thrift::Result<u64> {
    use Struct as S;
    use TType as T;
    let mut cost = 0u64;
    fields(p, |p, id, ty| {
        let list = |p: &mut P<'_>, s: Struct, each: u64| -> thrift::Result<u64> {
            let mut c = 0u64;
            structs(p, |p| {
                c = c.saturating_add(each + cost_of(p, s, read)?);
                Ok(())
            })?;
            Ok(c)
        };
        let c = match (s, id, ty) {
            (S::Batch, 1, T::Struct) => charge::PROCESS + cost_of(p, S::Process, read)?,
            (S::Batch, 2, T::List) => list(p, S::Span, charge::SPAN)?,
            (S::Process, 2, T::List) | (S::Span, 10, T::List) | (S::Log, 2, T::List) => {
                list(p, S::Tag, charge::KEY_VALUE)?
            }
            (S::Span, 6, T::List) => list(p, S::Ref, charge::REF)?,
            (S::Span, 11, T::List) => list(p, S::Log, charge::LOG)?,
            (S::Process, 1, T::String)
            | (S::Span, 5, T::String)
            | (S::Tag, 1 | 3 | 7, T::String) => {
                let before = read.get();
                p.skip(T::String)?;
                (read.get() - before) as u64
            }
            _ => return Ok(false),
        };
        cost = cost.saturating_add(c);
        Ok(true)
    })?;
    Ok(cost)
}

/// What an agent's packet costs read and translated.
pub fn agent_cost(packet: &[u8], protocol: Protocol) -> Result<u64, JaegerError> {
    reading(packet, protocol, |p, read| {
        agent_call(p, |p| cost_of(p, Struct::Batch, read))
    })
    .map(|c| charge::BATCH + c.unwrap_or(0))
}

/// What an HTTP body (a binary `Batch`) costs read and translated.
pub fn batch_cost(body: &[u8]) -> Result<u64, JaegerError> {
    reading(body, Protocol::Binary, |p, read| {
        cost_of(p, Struct::Batch, read)
    })
    .map(|c| charge::BATCH + c)
}

// ---- reading ------------------------------------------------------------

fn tag(p: &mut P<'_>) -> thrift::Result<model::KeyValue> {
    let mut t = model::KeyValue::default();
    fields(p, |p, id, ty| {
        match (id, ty) {
            (1, TType::String) => t.key = p.read_string()?,
            // Thrift's TagType: STRING, DOUBLE, BOOL, LONG, BINARY.
            (2, TType::I32) => {
                t.v_type = match p.read_i32()? {
                    1 => model::ValueType::Float64,
                    2 => model::ValueType::Bool,
                    3 => model::ValueType::Int64,
                    4 => model::ValueType::Binary,
                    _ => model::ValueType::String,
                } as i32
            }
            (3, TType::String) => t.v_str = p.read_string()?,
            (4, TType::Double) => t.v_float64 = p.read_double()?,
            (5, TType::Bool) => t.v_bool = p.read_bool()?,
            (6, TType::I64) => t.v_int64 = p.read_i64()?,
            (7, TType::String) => t.v_binary = p.read_bytes()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(t)
}

fn tags(p: &mut P<'_>) -> thrift::Result<Vec<model::KeyValue>> {
    let mut out = Vec::new();
    structs(p, |p| {
        out.push(tag(p)?);
        Ok(())
    })?;
    Ok(out)
}

fn trace_id(high: i64, low: i64) -> Vec<u8> {
    let mut id = Vec::with_capacity(16);
    id.extend_from_slice(&high.to_be_bytes());
    id.extend_from_slice(&low.to_be_bytes());
    id
}

fn micros(us: i64) -> (i64, i32) {
    (
        us.div_euclid(1_000_000),
        (us.rem_euclid(1_000_000) * 1000) as i32,
    )
}

fn timestamp(us: i64) -> model::Timestamp {
    let (seconds, nanos) = micros(us);
    model::Timestamp { seconds, nanos }
}

fn span_ref(p: &mut P<'_>) -> thrift::Result<model::SpanRef> {
    let (mut kind, mut low, mut high, mut id) = (0, 0, 0, 0);
    fields(p, |p, f, ty| {
        match (f, ty) {
            (1, TType::I32) => kind = p.read_i32()?,
            (2, TType::I64) => low = p.read_i64()?,
            (3, TType::I64) => high = p.read_i64()?,
            (4, TType::I64) => id = p.read_i64()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(model::SpanRef {
        trace_id: trace_id(high, low),
        span_id: id.to_be_bytes().to_vec(),
        // Thrift's SpanRefType: CHILD_OF, FOLLOWS_FROM (as api_v2's).
        ref_type: if kind == 1 {
            model::SpanRefType::FollowsFrom
        } else {
            model::SpanRefType::ChildOf
        } as i32,
    })
}

fn log(p: &mut P<'_>) -> thrift::Result<model::Log> {
    let mut l = model::Log::default();
    fields(p, |p, id, ty| {
        match (id, ty) {
            (1, TType::I64) => l.timestamp = Some(timestamp(p.read_i64()?)),
            (2, TType::List) => l.fields = tags(p)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(l)
}

fn span(p: &mut P<'_>) -> thrift::Result<model::Span> {
    let mut s = model::Span::default();
    let (mut low, mut high, mut id, mut parent, mut start, mut duration) = (0, 0, 0, 0, 0, 0);
    fields(p, |p, f, ty| {
        match (f, ty) {
            (1, TType::I64) => low = p.read_i64()?,
            (2, TType::I64) => high = p.read_i64()?,
            (3, TType::I64) => id = p.read_i64()?,
            (4, TType::I64) => parent = p.read_i64()?,
            (5, TType::String) => s.operation_name = p.read_string()?,
            (6, TType::List) => structs(p, |p| {
                s.references.push(span_ref(p)?);
                Ok(())
            })?,
            (7, TType::I32) => s.flags = p.read_i32()? as u32,
            (8, TType::I64) => start = p.read_i64()?,
            (9, TType::I64) => duration = p.read_i64()?,
            (10, TType::List) => s.tags = tags(p)?,
            (11, TType::List) => structs(p, |p| {
                s.logs.push(log(p)?);
                Ok(())
            })?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    s.trace_id = trace_id(high, low);
    s.span_id = id.to_be_bytes().to_vec();
    // `parentSpanId` is the CHILD_OF reference Thrift senders leave out of
    // `references` (Jaeger's converter adds it first when missing).
    let parent_id = parent.to_be_bytes();
    if parent != 0
        && !s.references.iter().any(|r| {
            r.ref_type == model::SpanRefType::ChildOf as i32
                && r.span_id == parent_id
                && r.trace_id == s.trace_id
        })
    {
        s.references.insert(
            0,
            model::SpanRef {
                trace_id: s.trace_id.clone(),
                span_id: parent_id.to_vec(),
                ref_type: model::SpanRefType::ChildOf as i32,
            },
        );
    }
    s.start_time = Some(timestamp(start));
    let (seconds, nanos) = micros(duration.max(0));
    s.duration = Some(model::Duration { seconds, nanos });
    Ok(s)
}

fn process(p: &mut P<'_>) -> thrift::Result<model::Process> {
    let mut out = model::Process::default();
    fields(p, |p, id, ty| {
        match (id, ty) {
            (1, TType::String) => out.service_name = p.read_string()?,
            (2, TType::List) => out.tags = tags(p)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(out)
}

fn batch(p: &mut P<'_>) -> thrift::Result<model::Batch> {
    let mut b = model::Batch::default();
    fields(p, |p, id, ty| {
        match (id, ty) {
            (1, TType::Struct) => b.process = Some(process(p)?),
            (2, TType::List) => structs(p, |p| {
                b.spans.push(span(p)?);
                Ok(())
            })?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(b)
}

/// The batch of an agent's packet (`emitBatch`); a call without one is empty.
pub fn agent_batch(packet: &[u8], protocol: Protocol) -> Result<model::Batch, JaegerError> {
    reading(packet, protocol, |p, _| agent_call(p, batch)).map(Option::unwrap_or_default)
}

/// The batch of an HTTP body (Thrift binary, as Jaeger's `/api/traces` takes it).
pub fn http_batch(body: &[u8]) -> Result<model::Batch, JaegerError> {
    reading(body, Protocol::Binary, |p, _| batch(p))
}
