//! Zipkin B3: the single `b3` header and the `x-b3-*` headers.

use meshtrace_proto::{IdError, SpanId, TraceId};

/// The sampling state B3 can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum B3Sampling {
    Deny,
    Accept,
    Debug,
}

/// A parsed B3 context: ids may be absent (`b3: 0` carries only a decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct B3 {
    pub ids: Option<(TraceId, SpanId)>,
    pub sampling: Option<B3Sampling>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum B3Error {
    #[error("trace id must be 16 or 32 lowercase hex characters")]
    TraceIdLength,
    #[error("trace id: {0}")]
    TraceId(IdError),
    #[error("span id: {0}")]
    SpanId(IdError),
    #[error("parent span id: {0}")]
    ParentId(IdError),
    #[error("invalid sampling state")]
    Sampling,
    #[error("span id without trace id, or trace id without span id")]
    Incomplete,
    #[error("too many fields")]
    Fields,
}

fn lower_hex_only(v: &[u8]) -> Result<(), IdError> {
    if v.iter().any(|c| c.is_ascii_uppercase()) {
        return Err(IdError::Uppercase);
    }
    Ok(())
}

fn trace_id(v: &[u8]) -> Result<TraceId, B3Error> {
    if v.len() != 16 && v.len() != 32 {
        return Err(B3Error::TraceIdLength);
    }
    lower_hex_only(v).map_err(B3Error::TraceId)?;
    TraceId::from_hex_padded(v).map_err(B3Error::TraceId)
}

fn span_id(v: &[u8], err: fn(IdError) -> B3Error) -> Result<SpanId, B3Error> {
    lower_hex_only(v).map_err(err)?;
    if v.len() != 16 {
        return Err(err(IdError::Length {
            expected: 16,
            got: v.len(),
        }));
    }
    SpanId::from_hex(v).map_err(err)
}

fn sampling(v: &[u8]) -> Result<B3Sampling, B3Error> {
    match v {
        b"0" => Ok(B3Sampling::Deny),
        b"1" => Ok(B3Sampling::Accept),
        b"d" => Ok(B3Sampling::Debug),
        _ => Err(B3Error::Sampling),
    }
}

/// Parses the single header: `{traceid}-{spanid}[-{sampling}[-{parentspanid}]]` or `{sampling}`.
pub fn parse_single(v: &[u8]) -> Result<B3, B3Error> {
    let parts: Vec<&[u8]> = v.split(|c| *c == b'-').collect();
    match parts.as_slice() {
        [only] => Ok(B3 {
            ids: None,
            sampling: Some(sampling(only)?),
        }),
        [t, s, rest @ ..] => {
            if rest.len() > 2 {
                return Err(B3Error::Fields);
            }
            let ids = (trace_id(t)?, span_id(s, B3Error::SpanId)?);
            let sampling = match rest.first() {
                Some(x) => Some(sampling(x)?),
                None => None,
            };
            if let Some(p) = rest.get(1) {
                span_id(p, B3Error::ParentId)?;
            }
            Ok(B3 {
                ids: Some(ids),
                sampling,
            })
        }
        [] => Err(B3Error::Sampling),
    }
}

/// Parses the multi-header form from the individual header values.
pub fn parse_multi(
    trace: Option<&[u8]>,
    span: Option<&[u8]>,
    sampled: Option<&[u8]>,
    flags: Option<&[u8]>,
) -> Result<B3, B3Error> {
    let ids = match (trace, span) {
        (Some(t), Some(s)) => Some((trace_id(t)?, span_id(s, B3Error::SpanId)?)),
        (None, None) => None,
        _ => return Err(B3Error::Incomplete),
    };
    let mut state = match sampled {
        Some(b"1") | Some(b"true") => Some(B3Sampling::Accept),
        Some(b"0") | Some(b"false") => Some(B3Sampling::Deny),
        Some(_) => return Err(B3Error::Sampling),
        None => None,
    };
    if flags == Some(b"1") {
        state = Some(B3Sampling::Debug);
    }
    Ok(B3 {
        ids,
        sampling: state,
    })
}

/// Formats the single header.
pub fn format_single(
    trace_id: &TraceId,
    span_id: &SpanId,
    state: B3Sampling,
    parent: Option<&SpanId>,
) -> String {
    let mut s = String::with_capacity(68 + 17);
    trace_id.write_short_hex(&mut s);
    s.push('-');
    span_id.write_hex(&mut s);
    s.push('-');
    s.push(match state {
        B3Sampling::Deny => '0',
        B3Sampling::Accept => '1',
        B3Sampling::Debug => 'd',
    });
    if let Some(p) = parent {
        s.push('-');
        p.write_hex(&mut s);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_table() {
        let t32 = "80f198ee56343ba864fe8b2a57d3eff7";
        let t16 = "a3ce929d0e0e4736";
        let sp = "e457b5a2e4d86bd1";
        type Want = Result<(bool, Option<B3Sampling>), B3Error>;
        let cases: Vec<(String, Want, &str)> = vec![
            (
                format!("{t32}-{sp}-1-05e3ac9a4f6e3b90"),
                Ok((true, Some(B3Sampling::Accept))),
                "full",
            ),
            (format!("{t32}-{sp}"), Ok((true, None)), "deferred"),
            (
                format!("{t16}-{sp}-d"),
                Ok((true, Some(B3Sampling::Debug))),
                "64-bit, debug",
            ),
            ("0".into(), Ok((false, Some(B3Sampling::Deny))), "deny only"),
            (
                "d".into(),
                Ok((false, Some(B3Sampling::Debug))),
                "debug only",
            ),
            ("x".into(), Err(B3Error::Sampling), "bad state"),
            (
                format!("{t32}-{sp}-x"),
                Err(B3Error::Sampling),
                "bad state after ids",
            ),
            (
                format!("{}-{sp}-1", &t32[..20]),
                Err(B3Error::TraceIdLength),
                "20-char trace id",
            ),
            (
                format!("{}-{sp}-1", t32.to_uppercase()),
                Err(B3Error::TraceId(IdError::Uppercase)),
                "uppercase",
            ),
            (
                format!("{t32}-0000000000000000-1"),
                Err(B3Error::SpanId(IdError::AllZero)),
                "zero span id",
            ),
            (
                format!("{t32}-{sp}-1-zz"),
                Err(B3Error::ParentId(IdError::Length {
                    expected: 16,
                    got: 2,
                })),
                "bad parent",
            ),
            (
                format!("{t32}-{sp}-1-{sp}-extra"),
                Err(B3Error::Fields),
                "too many fields",
            ),
            ("".into(), Err(B3Error::Sampling), "empty"),
        ];
        for (input, want, why) in cases {
            let got = parse_single(input.as_bytes()).map(|b| (b.ids.is_some(), b.sampling));
            assert_eq!(got, want, "{why}: {input}");
        }
    }

    #[test]
    fn multi_table() {
        let t = Some(&b"80f198ee56343ba864fe8b2a57d3eff7"[..]);
        let s = Some(&b"e457b5a2e4d86bd1"[..]);
        assert_eq!(
            parse_multi(t, s, Some(b"1"), None).unwrap().sampling,
            Some(B3Sampling::Accept)
        );
        assert_eq!(
            parse_multi(t, s, Some(b"true"), None).unwrap().sampling,
            Some(B3Sampling::Accept),
            "legacy true"
        );
        assert_eq!(
            parse_multi(t, s, None, Some(b"1")).unwrap().sampling,
            Some(B3Sampling::Debug),
            "flags=1 is debug"
        );
        assert_eq!(
            parse_multi(None, None, Some(b"0"), None).unwrap().ids,
            None,
            "decision only"
        );
        assert_eq!(
            parse_multi(t, None, None, None),
            Err(B3Error::Incomplete),
            "trace without span"
        );
        assert_eq!(
            parse_multi(t, s, Some(b"yes"), None),
            Err(B3Error::Sampling),
            "bad sampled"
        );
    }

    #[test]
    fn format_keeps_64_bit_ids_short() {
        let b = parse_single(b"a3ce929d0e0e4736-e457b5a2e4d86bd1-1").unwrap();
        let (t, s) = b.ids.unwrap();
        assert_eq!(
            format_single(&t, &s, B3Sampling::Accept, None),
            "a3ce929d0e0e4736-e457b5a2e4d86bd1-1"
        );
    }
}
