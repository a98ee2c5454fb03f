//! Query parameters parsed into bounded values, once for every endpoint: a
//! time is an integer inside the calendar RFC 3339 can write (years 0000 to
//! 9999; before 1970 nothing is stored, so the epoch is the floor), a duration
//! is positive and shorter than that calendar, a count is positive and capped.
//! Out of range, overflowing, NaN or malformed: an error naming the parameter.
//! Arithmetic on the results is checked or saturating, never wrapping.

pub use crate::model::{LAST_RFC3339_MS as MAX_MS, LAST_RFC3339_US as MAX_US};

/// A parameter that is not what it must be, with its name.
pub fn bad(name: &str, why: impl std::fmt::Display) -> String {
    format!("malformed parameter {name}: {why}")
}

fn integer(name: &str, text: &str, unit: &str) -> Result<i64, String> {
    text.trim()
        .parse::<i64>()
        .map_err(|_| bad(name, format!("{text:?} is not an integer number of {unit}")))
}

/// A time in µs since the epoch, within [1970, 9999].
pub fn epoch_us(name: &str, text: &str) -> Result<i64, String> {
    let v = integer(name, text, "microseconds since the epoch")?;
    if !(0..=MAX_US).contains(&v) {
        return Err(bad(
            name,
            format!("{v} µs is outside 1970-01-01 to 9999-12-31"),
        ));
    }
    Ok(v)
}

/// A time in ms since the epoch, within [1970, 9999].
pub fn epoch_ms(name: &str, text: &str) -> Result<i64, String> {
    let v = integer(name, text, "milliseconds since the epoch")?;
    if !(0..=MAX_MS).contains(&v) {
        return Err(bad(
            name,
            format!("{v} ms is outside 1970-01-01 to 9999-12-31"),
        ));
    }
    Ok(v)
}

/// A duration in ms, more than 0 and at most the calendar's length.
pub fn positive_ms(name: &str, text: &str) -> Result<i64, String> {
    let v = integer(name, text, "milliseconds")?;
    if v <= 0 {
        return Err(bad(name, "must be more than 0"));
    }
    if v > MAX_MS {
        return Err(bad(name, format!("{v} ms is longer than the calendar")));
    }
    Ok(v)
}

/// A duration in µs from Go's syntax (`1h`, `1.5s`), at most the calendar's
/// length; `positive` refuses 0.
pub fn go_duration_us(name: &str, text: &str, positive: bool) -> Result<i64, String> {
    let v = super::duration::parse_go_duration_us(text.trim()).ok_or_else(|| {
        bad(
            name,
            format!("{text:?} is not a duration like 1h, 1.5s or 1m30s"),
        )
    })?;
    if positive && v == 0 {
        return Err(bad(name, "must be more than 0"));
    }
    if v > MAX_US {
        return Err(bad(name, format!("{text:?} is longer than the calendar")));
    }
    Ok(v)
}

/// A count in [1, `max`] (a larger one is refused, not cut: the caller says
/// which endpoints cut instead).
pub fn count(name: &str, text: &str, max: usize) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err(bad(name, "must be at least 1")),
        Ok(n) if n <= max => Ok(n),
        Ok(n) => Err(bad(name, format!("{n} is more than {max}"))),
        Err(_) => Err(bad(name, format!("{text:?} is not a positive integer"))),
    }
}

/// A time window `[start, end]` (µs) from optional `start`/`end` and a
/// lookback: `end` defaults to now, `start` to `end - lookback` (never before
/// the epoch); `start` after `end` is refused.
pub fn window_us(
    (start_name, start): (&str, Option<&str>),
    (end_name, end): (&str, Option<&str>),
    lookback_us: i64,
    now_us: i64,
) -> Result<(i64, i64), String> {
    let end = match end.filter(|s| !s.is_empty()) {
        Some(e) => epoch_us(end_name, e)?,
        None => now_us.clamp(0, MAX_US),
    };
    let start = match start.filter(|s| !s.is_empty()) {
        Some(s) => epoch_us(start_name, s)?,
        None => end.saturating_sub(lookback_us).max(0),
    };
    if start > end {
        return Err(bad(
            start_name,
            format!("{start} is after {end_name} ({end})"),
        ));
    }
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_inside_the_calendar_only() {
        assert_eq!(epoch_ms("endTs", "0"), Ok(0));
        assert_eq!(epoch_ms("endTs", &MAX_MS.to_string()), Ok(MAX_MS));
        for bad_value in [
            "253402300800000",
            "-1",
            "9223372036854775807",
            "99999999999999999999",
            "NaN",
            "1e3",
            "",
            "0x10",
        ] {
            let e = epoch_ms("endTs", bad_value).unwrap_err();
            assert!(e.contains("endTs"), "{bad_value}: {e}");
        }
        assert!(epoch_us("start", "253402300800000000").is_err());
    }

    #[test]
    fn durations_and_counts() {
        assert_eq!(positive_ms("step", "60000"), Ok(60_000));
        for v in ["0", "-5", "9223372036854775807", "inf", "1.5"] {
            assert!(positive_ms("step", v).unwrap_err().contains("step"), "{v}");
        }
        assert_eq!(go_duration_us("lookback", "1h", true), Ok(3_600_000_000));
        assert!(go_duration_us("lookback", "0", true).is_err());
        assert!(go_duration_us("lookback", "999999999h", true).is_err());
        assert_eq!(count("limit", "20", 100), Ok(20));
        for v in ["0", "101", "-1", "x", "18446744073709551616"] {
            assert!(count("limit", v, 100).unwrap_err().contains("limit"), "{v}");
        }
    }

    #[test]
    fn windows() {
        assert_eq!(
            window_us(("start", None), ("end", Some("100")), 1000, 5),
            Ok((0, 100)),
            "never before the epoch"
        );
        assert_eq!(
            window_us(("start", Some("10")), ("end", None), 1000, 50),
            Ok((10, 50))
        );
        assert!(window_us(("start", Some("60")), ("end", Some("50")), 1, 0)
            .unwrap_err()
            .contains("start"));
    }
}
