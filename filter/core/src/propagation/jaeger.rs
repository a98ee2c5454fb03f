//! Jaeger's `uber-trace-id: {trace-id}:{span-id}:{parent-span-id}:{flags}`.

use meshtrace_proto::{IdError, SpanId, TraceId};

pub const FLAG_SAMPLED: u8 = 0x01;
pub const FLAG_DEBUG: u8 = 0x02;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UberTraceId {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JaegerError {
    #[error("expected 4 ':'-separated fields, got {0}")]
    Fields(usize),
    #[error("trace id: {0}")]
    TraceId(IdError),
    #[error("span id: {0}")]
    SpanId(IdError),
    #[error("parent span id: {0}")]
    ParentId(IdError),
    #[error("invalid flags")]
    Flags,
}

/// Parses the header; ids are 1..=32 / 1..=16 hex characters (Jaeger clients
/// drop leading zeros). Accepts the URL-encoded `%3A` separator some clients send.
pub fn parse(v: &[u8]) -> Result<UberTraceId, JaegerError> {
    let decoded;
    let v = if v.windows(3).any(|w| w.eq_ignore_ascii_case(b"%3a")) {
        decoded = String::from_utf8_lossy(v)
            .replace("%3A", ":")
            .replace("%3a", ":");
        decoded.as_bytes()
    } else {
        v
    };
    let parts: Vec<&[u8]> = v.split(|c| *c == b':').collect();
    let [t, s, p, f] = parts.as_slice() else {
        return Err(JaegerError::Fields(parts.len()));
    };
    let trace_id = TraceId::from_hex_padded(t).map_err(JaegerError::TraceId)?;
    let span_id = SpanId::from_hex_padded(s).map_err(JaegerError::SpanId)?;
    // The parent id is deprecated and may be 0; it must still be hex.
    match SpanId::from_hex_padded(p) {
        Ok(_) | Err(IdError::AllZero) => {}
        Err(e) => return Err(JaegerError::ParentId(e)),
    }
    if f.is_empty() || f.len() > 2 {
        return Err(JaegerError::Flags);
    }
    let flags = std::str::from_utf8(f)
        .ok()
        .and_then(|s| u8::from_str_radix(s, 16).ok())
        .ok_or(JaegerError::Flags)?;
    Ok(UberTraceId {
        trace_id,
        span_id,
        flags,
    })
}

pub fn format(trace_id: &TraceId, span_id: &SpanId, flags: u8) -> String {
    let mut s = String::with_capacity(56);
    trace_id.write_short_hex(&mut s);
    s.push(':');
    span_id.write_hex(&mut s);
    s.push_str(":0:");
    s.push_str(&format!("{flags:x}"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, Result<u8, JaegerError>, &str)] = &[
            (
                "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
                Ok(1),
                "128-bit sampled",
            ),
            (
                "a3ce929d0e0e4736:00f067aa0ba902b7:0:0",
                Ok(0),
                "64-bit not sampled",
            ),
            ("abc:def:0:3", Ok(3), "short ids, debug+sampled"),
            ("abc%3Adef%3A0%3A1", Ok(1), "url-encoded"),
            (
                "ABC:DEF:0:1",
                Ok(1),
                "uppercase tolerated as Jaeger clients do",
            ),
            ("abc:def:0", Err(JaegerError::Fields(3)), "three fields"),
            (
                "0:def:0:1",
                Err(JaegerError::TraceId(IdError::AllZero)),
                "zero trace id",
            ),
            (
                "abc:0:0:1",
                Err(JaegerError::SpanId(IdError::AllZero)),
                "zero span id",
            ),
            (
                "abc:def:zz:1",
                Err(JaegerError::ParentId(IdError::NotHex)),
                "bad parent",
            ),
            ("abc:def:0:xyz", Err(JaegerError::Flags), "bad flags"),
            ("abc:def:0:", Err(JaegerError::Flags), "empty flags"),
            (
                "4bf92f3577b34da6a3ce929d0e0e47361:def:0:1",
                Err(JaegerError::TraceId(IdError::Length {
                    expected: 32,
                    got: 33,
                })),
                "33-char trace id",
            ),
        ];
        for (input, want, why) in cases {
            assert_eq!(
                &parse(input.as_bytes()).map(|u| u.flags),
                want,
                "{why}: {input}"
            );
        }
    }

    #[test]
    fn roundtrip() {
        let u = parse(b"a3ce929d0e0e4736:00f067aa0ba902b7:0:1").unwrap();
        assert_eq!(
            format(&u.trace_id, &u.span_id, u.flags),
            "a3ce929d0e0e4736:00f067aa0ba902b7:0:1"
        );
    }
}
