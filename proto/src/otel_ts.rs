//! OpenTelemetry's `ot` member of the W3C `tracestate`, as consistent
//! probability sampling uses it: `ot=th:T` is the rejection threshold the
//! trace was sampled with (56 bits, hex, trailing zeros dropped; probability
//! `1 - T/2^56`) and `ot=rv:R` explicit randomness (14 hex digits) that
//! replaces the trace id's low 56 bits. Other `ot` sub-keys are kept.

/// The parts of `ot` that sampling reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OtState {
    pub threshold: Option<u64>,
    pub randomness: Option<u64>,
}

const MAX: u64 = 1 << 56;

fn ot_member(tracestate: &str) -> Option<&str> {
    tracestate
        .split(',')
        .map(str::trim)
        .find_map(|m| m.strip_prefix("ot="))
}

fn parse_th(v: &str) -> Option<u64> {
    if v.is_empty() || v.len() > 14 || !v.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    // Right-pad to 14 digits: "c" is 0xc0000000000000.
    let t = u64::from_str_radix(v, 16).ok()? << (4 * (14 - v.len()));
    (t < MAX).then_some(t)
}

fn parse_rv(v: &str) -> Option<u64> {
    if v.len() != 14 || !v.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(v, 16).ok()
}

/// Reads `th` and `rv`; invalid values are ignored (as the spec says).
pub fn parse(tracestate: &str) -> OtState {
    let mut out = OtState::default();
    if let Some(ot) = ot_member(tracestate) {
        for part in ot.split(';') {
            if let Some(v) = part.strip_prefix("th:") {
                out.threshold = parse_th(v);
            } else if let Some(v) = part.strip_prefix("rv:") {
                out.randomness = parse_rv(v);
            }
        }
    }
    out
}

/// Appends the `th` encoding: 14 hex digits with trailing zeros removed; `0` for zero.
fn push_th(out: &mut String, threshold: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let t = threshold.min(MAX - 1);
    if t == 0 {
        out.push('0');
        return;
    }
    let digits = 14 - (t.trailing_zeros() / 4) as usize;
    for i in 0..digits {
        out.push(char::from(HEX[((t >> (4 * (13 - i))) & 0xf) as usize]));
    }
}

/// `th` encoding of a threshold.
pub fn format_th(threshold: u64) -> String {
    let mut s = String::with_capacity(14);
    push_th(&mut s, threshold);
    s
}

/// The probability a threshold stands for.
pub fn probability(threshold: u64) -> f64 {
    1.0 - threshold as f64 / MAX as f64
}

/// `tracestate` with `ot`'s `th` set to `threshold` (or removed with `None`),
/// other `ot` sub-keys and members kept; the modified `ot` member moves to the
/// front, as W3C asks of a member a vendor updates; at most 32 members (W3C's
/// limit, dropped from the end). `None` if nothing is left. One allocation: it
/// runs for every sampled request.
pub fn with_threshold(tracestate: Option<&str>, threshold: Option<u64>) -> Option<String> {
    let ts = tracestate.unwrap_or("");
    let mut out = String::with_capacity(ts.len() + 24);
    let mut ot_parts = 0;
    if let Some(t) = threshold {
        out.push_str("ot=th:");
        push_th(&mut out, t);
        ot_parts += 1;
    }
    let kept = ot_member(ts)
        .into_iter()
        .flat_map(|ot| ot.split(';'))
        .filter(|p| !p.is_empty() && !p.starts_with("th:"));
    for part in kept {
        out.push_str(if ot_parts == 0 { "ot=" } else { ";" });
        out.push_str(part);
        ot_parts += 1;
    }
    let first = usize::from(ot_parts > 0);
    let others = ts
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty() && !m.starts_with("ot="))
        .take(32 - first);
    for (i, m) in others.enumerate() {
        if i + first > 0 {
            out.push(',');
        }
        out.push_str(m);
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_cases() {
        let cases: &[(&str, OtState, &str)] = &[
            (
                "ot=th:c",
                OtState {
                    threshold: Some(0xc0000000000000),
                    randomness: None,
                },
                "one digit, right-padded",
            ),
            (
                "ot=th:0",
                OtState {
                    threshold: Some(0),
                    randomness: None,
                },
                "always sample",
            ),
            (
                "a=b, ot=rv:0123456789abcd;th:8",
                OtState {
                    threshold: Some(0x80000000000000),
                    randomness: Some(0x0123456789abcd),
                },
                "any order, after another member",
            ),
            (
                "ot=th:123456789abcdef",
                OtState::default(),
                "15 digits: invalid",
            ),
            ("ot=th:zz", OtState::default(), "not hex"),
            ("ot=rv:abc", OtState::default(), "rv must be 14 digits"),
            ("ot=th:", OtState::default(), "empty"),
            ("xot=th:8", OtState::default(), "another vendor's key"),
            ("", OtState::default(), "nothing"),
        ];
        for (ts, want, why) in cases {
            assert_eq!(parse(ts), *want, "{ts:?}: {why}");
        }
    }

    #[test]
    fn format_and_rewrite() {
        assert_eq!(format_th(0), "0");
        assert_eq!(format_th(0x80000000000000), "8");
        assert_eq!(format_th(0xe6666666666666), "e6666666666666");
        for t in [0u64, 1, 0x80000000000000, 0xfffffffffffff0, MAX - 1] {
            assert_eq!(
                parse(&format!("ot=th:{}", format_th(t))).threshold,
                Some(t),
                "{t:x}"
            );
        }
        assert_eq!(
            with_threshold(None, Some(0x80000000000000)).as_deref(),
            Some("ot=th:8")
        );
        assert_eq!(
            with_threshold(
                Some("a=1,ot=rv:0123456789abcd;th:4,b=2"),
                Some(0xc0000000000000)
            )
            .as_deref(),
            Some("ot=th:c;rv:0123456789abcd,a=1,b=2"),
            "th replaced, rv kept, ot moved to the front"
        );
        assert_eq!(
            with_threshold(Some("ot=th:8"), None),
            None,
            "removed: nothing left"
        );
        assert_eq!(
            with_threshold(Some("ot=th:8,a=1"), None).as_deref(),
            Some("a=1")
        );
        assert!((probability(0x80000000000000) - 0.5).abs() < 1e-12);
        let many: Vec<String> = (0..40).map(|i| format!("k{i}=v")).collect();
        let out = with_threshold(Some(&many.join(",")), Some(0)).unwrap();
        let members: Vec<&str> = out.split(',').collect();
        assert_eq!(members.len(), 32, "W3C's limit");
        assert_eq!(
            (members[0], members[1], members[31]),
            ("ot=th:0", "k0=v", "k30=v")
        );
    }
}
