//! Durations in Go's `time.ParseDuration` syntax, what Jaeger's query service
//! accepts for `minDuration`, `maxDuration` and `lookback`, and what Grafana
//! passes through from the user: `1m30s`, `1h2m`, `1.5s`, `300µs`, `0`. A day
//! unit (`2d`) is accepted too, for `lookback` values the Jaeger UI sends.
//!
//! Hand-written because no kept crate reads this syntax: `humantime` refuses
//! fractions (`1.5s`) and `µs`, which Jaeger's clients send.

/// A duration in microseconds (sub-microsecond parts truncate).
pub fn parse_go_duration_us(text: &str) -> Option<i64> {
    if text == "0" {
        return Some(0);
    }
    let mut rest = text;
    let mut total_ns: f64 = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let ns_per_unit = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86_400e9,
            _ => return None,
        };
        let value: f64 = number.parse().ok()?;
        total_ns += value * ns_per_unit;
        rest = next;
    }
    let us = total_ns / 1e3;
    (us.is_finite() && us <= i64::MAX as f64).then_some(us as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_syntax() {
        let cases = [
            ("100ms", Some(100_000)),
            ("1.2s", Some(1_200_000)),
            ("300us", Some(300)),
            ("300µs", Some(300)),
            ("5m", Some(300_000_000)),
            ("1m30s", Some(90_000_000)),
            ("1h2m", Some(3_720_000_000)),
            ("1h0m0.5s", Some(3_600_500_000)),
            ("1.5h", Some(5_400_000_000)),
            ("2d", Some(172_800_000_000)),
            ("1500ns", Some(1)),
            ("0", Some(0)),
            ("10", None),
            ("", None),
            ("ms", None),
            ("1.2.3s", None),
            ("-1s", None),
            ("1x", None),
            ("1s2", None),
            ("99999999999999999999h", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_go_duration_us(s), want, "{s}");
        }
    }
}
