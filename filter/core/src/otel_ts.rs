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

/// `th` encoding: 14 hex digits with trailing zeros removed; `0` for zero.
pub fn format_th(threshold: u64) -> String {
    if threshold == 0 {
        return "0".into();
    }
    let s = format!("{:014x}", threshold.min(MAX - 1));
    s.trim_end_matches('0').to_string()
}

/// The probability a threshold stands for.
pub fn probability(threshold: u64) -> f64 {
    1.0 - threshold as f64 / MAX as f64
}

/// `tracestate` with `ot`'s `th` set to `threshold` (or removed with `None`),
/// other `ot` sub-keys and members kept; the modified `ot` member moves to the
/// front, as W3C asks of a member a vendor updates. `None` if nothing is left.
pub fn with_threshold(tracestate: Option<&str>, threshold: Option<u64>) -> Option<String> {
    let ts = tracestate.unwrap_or("");
    let mut sub: Vec<String> = ot_member(ts)
        .map(|ot| {
            ot.split(';')
                .filter(|p| !p.is_empty() && !p.starts_with("th:"))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if let Some(t) = threshold {
        sub.insert(0, format!("th:{}", format_th(t)));
    }
    let mut members: Vec<String> = Vec::new();
    if !sub.is_empty() {
        members.push(format!("ot={}", sub.join(";")));
    }
    members.extend(
        ts.split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty() && !m.starts_with("ot="))
            .map(str::to_string),
    );
    // W3C's limit: 32 members; drop from the end.
    members.truncate(32);
    (!members.is_empty()).then(|| members.join(","))
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
    }
}
