//! W3C Trace Context (`traceparent`, `tracestate`), strict per the spec.

use meshtrace_proto::{IdError, SpanId, TraceId};

/// A parsed `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub parent_id: SpanId,
    pub flags: u8,
    /// Exactly what this version writes: version 00, no unknown flag set. A
    /// header that is not must be rewritten before it goes on.
    pub canonical: bool,
}

/// Why a `traceparent` was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceParentError {
    #[error("version 00 must be exactly 55 characters, got {0}")]
    Length(usize),
    #[error("shorter than 55 characters: {0}")]
    TooShort(usize),
    #[error("missing '-' delimiter")]
    Delimiter,
    #[error("invalid version")]
    Version,
    #[error("version ff is forbidden")]
    VersionFf,
    #[error("trace-id: {0}")]
    TraceId(IdError),
    #[error("parent-id: {0}")]
    ParentId(IdError),
    #[error("invalid trace-flags")]
    Flags,
}

pub const FLAG_SAMPLED: u8 = 0x01;
/// Level 2's random trace-id flag.
pub const FLAG_RANDOM: u8 = 0x02;
/// The flags this version defines; Level 2 (§3.2.2.5.3 "Other Flags"): the
/// others MUST be set to zero when propagating.
pub const KNOWN_FLAGS: u8 = FLAG_SAMPLED | FLAG_RANDOM;

fn hex_byte(s: &[u8]) -> Option<u8> {
    let v = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some((v(s[0])? << 4) | v(s[1])?)
}

/// Parses `traceparent` bytes: `version-traceid-parentid-flags`.
///
/// Version 00 must be exactly 55 bytes. A higher version may be longer, and
/// then byte 55 must be `-` (the spec's forward-compatibility rule); its
/// first four fields are read as version 00's.
pub fn parse_traceparent(v: &[u8]) -> Result<TraceParent, TraceParentError> {
    if v.len() < 2 {
        return Err(TraceParentError::TooShort(v.len()));
    }
    let version = hex_byte(&v[..2]).ok_or(TraceParentError::Version)?;
    if version == 0xff {
        return Err(TraceParentError::VersionFf);
    }
    if version == 0 && v.len() != 55 {
        return Err(TraceParentError::Length(v.len()));
    }
    if v.len() < 55 {
        return Err(TraceParentError::TooShort(v.len()));
    }
    if v.len() > 55 && v[55] != b'-' {
        return Err(TraceParentError::Delimiter);
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return Err(TraceParentError::Delimiter);
    }
    let trace_id = TraceId::from_hex(&v[3..35]).map_err(TraceParentError::TraceId)?;
    let parent_id = SpanId::from_hex(&v[36..52]).map_err(TraceParentError::ParentId)?;
    let flags = hex_byte(&v[53..55]).ok_or(TraceParentError::Flags)?;
    Ok(TraceParent {
        trace_id,
        parent_id,
        flags,
        canonical: version == 0 && flags & !KNOWN_FLAGS == 0,
    })
}

/// Formats a version-00 `traceparent` (filled as bytes: once or twice per
/// request, so no per-character string pushes).
pub fn format_traceparent(trace_id: &TraceId, span_id: &SpanId, flags: u8) -> TraceparentText {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b = [b'-'; 55];
    b[..2].copy_from_slice(b"00");
    b[3..35].copy_from_slice(&trace_id.hex_bytes());
    b[36..52].copy_from_slice(&span_id.hex_bytes());
    b[53] = HEX[(flags >> 4) as usize];
    b[54] = HEX[(flags & 0xf) as usize];
    TraceparentText(b)
}

/// A version-00 `traceparent` (or `traceresponse`) value, formatted on the
/// stack: the request path writes one or two per request without allocating.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceparentText([u8; 55]);

impl TraceparentText {
    /// The value as the hosts take it (no UTF-8 check).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever written (hex digits and dashes).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for TraceparentText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for TraceparentText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for TraceparentText {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The spec's limits for `tracestate`.
pub const MAX_MEMBERS: usize = 32;
pub const MAX_LENGTH: usize = 512;
const LONG_MEMBER: usize = 128;

/// A `tracestate` key, W3C Trace Context Level 2 (§3.3.1.3.1):
/// `key = ( lcalpha / DIGIT ) 0*255 ( keychar )`,
/// `keychar = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@"`. Level 1's
/// `tenant@system` split (tenant ≤ 241, system ≤ 14 starting with a letter) is
/// gone: `foo@=1`, `foo@@bar=1` and a 242-character tenant are other vendors'
/// valid keys, which a vendor SHOULD NOT delete.
fn valid_key(k: &[u8]) -> bool {
    matches!(k.first(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && k.len() <= 256
        && k.iter().all(|c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(c, b'_' | b'-' | b'*' | b'/' | b'@')
        })
}

fn valid_value(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 256
        && v.iter()
            .all(|c| (0x20..=0x7e).contains(c) && *c != b',' && *c != b'=')
        && v.last() != Some(&b' ')
}

/// A `tracestate` as it goes on, by one rule for every hop (sampled or not,
/// whether it writes `traceparent` or leaves it as it came): a valid list
/// goes on (list whitespace and empty members dropped, several headers
/// joined, and past 512 bytes shortened as the spec recommends: members
/// longer than 128 bytes first, then from the end); an invalid one — a
/// member that breaks Level 2's grammar, a key twice, more than 32 members —
/// is discarded whole (`None`), as the W3C test suite expects at STRICT 2.
/// `None` too when nothing is in it.
pub fn sanitize_tracestate(v: &[u8]) -> Option<String> {
    let mut members: Vec<(&[u8], &[u8])> = Vec::new();
    for raw in v.split(|c| *c == b',') {
        let m = trim_ows(raw);
        if m.is_empty() {
            continue;
        }
        let eq = m.iter().position(|c| *c == b'=')?;
        let (key, value) = (&m[..eq], &m[eq + 1..]);
        if !valid_key(key) || !valid_value(value) || members.iter().any(|(k, _)| *k == key) {
            return None;
        }
        members.push((key, value));
        if members.len() > MAX_MEMBERS {
            return None;
        }
    }
    let total = |ms: &[(&[u8], &[u8])]| {
        ms.iter().map(|(k, v)| k.len() + v.len() + 1).sum::<usize>() + ms.len().saturating_sub(1)
    };
    if total(&members) > MAX_LENGTH {
        members.retain(|(k, v)| k.len() + v.len() < LONG_MEMBER);
        while total(&members) > MAX_LENGTH {
            members.pop();
        }
    }
    if members.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(total(&members));
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Both checked to be printable ASCII above.
        out.push_str(&String::from_utf8_lossy(k));
        out.push('=');
        out.push_str(&String::from_utf8_lossy(v));
    }
    Some(out)
}

fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|c| *c != b' ' && *c != b'\t')
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|c| *c != b' ' && *c != b'\t')
        .map_or(start, |e| e + 1);
    &s[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_table() {
        type R = Result<(), TraceParentError>;
        let cases: &[(&str, R, &str)] = &[
            (VALID, Ok(()), "spec example"),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                Ok(()),
                "not sampled",
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future",
                Ok(()),
                "future version with extra field",
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Ok(()),
                "future version, same length",
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
                Err(TraceParentError::Delimiter),
                "future version, extra without dash",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                Err(TraceParentError::Length(56)),
                "v00 with trailing data",
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Err(TraceParentError::VersionFf),
                "version ff",
            ),
            (
                "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Err(TraceParentError::Version),
                "non-hex version",
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                Err(TraceParentError::TraceId(IdError::Uppercase)),
                "uppercase trace id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
                Err(TraceParentError::ParentId(IdError::Uppercase)),
                "uppercase parent id",
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                Err(TraceParentError::TraceId(IdError::AllZero)),
                "zero trace id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                Err(TraceParentError::ParentId(IdError::AllZero)),
                "zero parent id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
                Err(TraceParentError::Flags),
                "bad flags",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
                Err(TraceParentError::Length(54)),
                "short flags",
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
                Err(TraceParentError::Delimiter),
                "wrong delimiter",
            ),
            ("", Err(TraceParentError::TooShort(0)), "empty"),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736",
                Err(TraceParentError::TooShort(35)),
                "future version too short",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
                Err(TraceParentError::Length(56)),
                "trailing space",
            ),
        ];
        for (input, want, why) in cases {
            let got = parse_traceparent(input.as_bytes()).map(|_| ());
            assert_eq!(&got, want, "{why}: {input:?}");
        }
    }

    #[test]
    fn traceparent_roundtrip() {
        let tp = parse_traceparent(VALID.as_bytes()).unwrap();
        assert_eq!(tp.flags, 1);
        assert_eq!(
            format_traceparent(&tp.trace_id, &tp.parent_id, tp.flags),
            VALID
        );
    }

    #[test]
    fn tracestate_table() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("congo=t61rcWkgMzE", Some("congo=t61rcWkgMzE"), "single"),
            (
                "rojo=00f067aa0ba902b7 , congo=t61rcWkgMzE",
                Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
                "ows trimmed",
            ),
            ("a=1,,b=2", Some("a=1,b=2"), "empty member skipped"),
            ("a=1,a=2", None, "a key twice: discarded whole"),
            ("a=1,a=1", None, "the same member twice: discarded whole"),
            ("A=1,b=2", None, "an uppercase key: discarded whole"),
            ("tenant@sys=1", Some("tenant@sys=1"), "multi-tenant key"),
            (
                "1tenant@sys=1",
                Some("1tenant@sys=1"),
                "tenant may start with digit",
            ),
            // Level 2 §3.3.1.3.1: key = ( lcalpha / DIGIT ) 0*255 ( keychar ),
            // keychar includes "@": no tenant/system split any more.
            ("foo@=1", Some("foo@=1"), "L2: '@' as the last keychar"),
            ("foo@@bar=1", Some("foo@@bar=1"), "L2: two '@'"),
            (
                "1special=1",
                Some("1special=1"),
                "L2: a key may start with a digit",
            ),
            (
                "a@b@c=1,x=2",
                Some("a@b@c=1,x=2"),
                "L2: '@' anywhere after the first",
            ),
            ("foo@Bar=1", None, "L2: uppercase is still no keychar"),
            (
                "@foo=1",
                None,
                "L2: the first character is lcalpha or DIGIT",
            ),
            ("_foo=1", None, "L2: '_' cannot start a key"),
            ("foo.bar=1", None, "L2: '.' is no keychar"),
            ("a=b=c", None, "equals in value"),
            ("a=", None, "empty value"),
            ("a=x ", Some("a=x"), "trailing whitespace is list OWS"),
            ("a=x\u{1}", None, "control char in value"),
            ("novalue", None, "no equals"),
            ("", None, "empty"),
        ];
        for (input, want, why) in cases {
            assert_eq!(
                sanitize_tracestate(input.as_bytes()).as_deref(),
                *want,
                "{why}"
            );
        }
    }

    #[test]
    fn tracestate_key_lengths_level_2() {
        // A 242-character tenant: Level 1 capped it at 241, Level 2 only caps the key at 256.
        let tenant = format!("{}@sys=1", "t".repeat(242));
        assert_eq!(
            sanitize_tracestate(tenant.as_bytes()).as_deref(),
            Some(tenant.as_str())
        );
        let longest = format!("{}=1", "k".repeat(256));
        assert_eq!(
            sanitize_tracestate(longest.as_bytes()).as_deref(),
            Some(longest.as_str())
        );
        let too_long = format!("{}=1", "k".repeat(257));
        assert_eq!(
            sanitize_tracestate(too_long.as_bytes()),
            None,
            "257 characters"
        );
    }

    #[test]
    fn canonical_is_version_00_with_known_flags_only() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7";
        for (tp, canonical) in [
            (format!("00-{id}-00"), true),
            (format!("00-{id}-01"), true),
            (format!("00-{id}-03"), true),
            (format!("00-{id}-05"), false),
            (format!("00-{id}-09"), false),
            (format!("00-{id}-ff"), false),
            (format!("cc-{id}-01"), false),
            (format!("cc-{id}-ff-more"), false),
        ] {
            assert_eq!(
                parse_traceparent(tp.as_bytes()).unwrap().canonical,
                canonical,
                "{tp}"
            );
        }
    }

    #[test]
    fn tracestate_limits() {
        let members = |n: usize| {
            (0..n)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let out = sanitize_tracestate(members(32).as_bytes()).unwrap();
        assert_eq!(out.split(',').count(), 32, "32 members go on");
        assert_eq!(
            sanitize_tracestate(members(33).as_bytes()),
            None,
            "33: discarded whole"
        );

        let long = format!("big={}", "x".repeat(200));
        let mut members = vec![long];
        members.extend((0..20).map(|i| format!("k{i:02}={}", "y".repeat(20))));
        let out = sanitize_tracestate(members.join(",").as_bytes()).unwrap();
        assert!(out.len() <= MAX_LENGTH);
        assert!(!out.contains("big="), "long members go first");
        assert!(out.contains("k00="));
    }
}
