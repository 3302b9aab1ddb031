//! The one parser of Go duration strings (`time.ParseDuration`) in the workspace.
//!
//! Kubernetes and the Go originals write durations as Go does: an optional sign, then one or
//! more decimal numbers each followed by a unit (`ns`, `us` or `µs`, `ms`, `s`, `m`, `h`), as
//! `300ms`, `1m30s`, `-1.5h`, `.5s`; or a bare `0`. The rules followed here are Go's:
//!
//! - a number is digits, optionally a `.` and more digits, and has at least one digit
//!   (`1.s` and `.5s` are numbers, `.s` is not);
//! - every number carries a unit (`1` alone is an error, only `0` may stand without one);
//! - the sign applies to the whole string and is written once, before the first number;
//! - no white space anywhere;
//! - the value is a signed 64-bit count of nanoseconds (about ±292 years): anything larger
//!   is out of range; fractions below a nanosecond are dropped (truncated toward zero).
//!
//! [`parse_go_duration_nanos`] returns Go's signed value; [`parse_go_duration`] returns a
//! [`std::time::Duration`] and rejects negative values (`-0` is zero), for the fields and
//! flags where a negative duration means nothing.

use std::time::Duration;

/// Why a string is not a (non-negative) Go duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not of the form `[-+]?(number unit)+` or `0`.
    #[error("invalid duration {0:?}")]
    Invalid(String),
    /// A number without a unit.
    #[error("missing unit in duration {0:?} (ns, us, µs, ms, s, m or h)")]
    MissingUnit(String),
    /// A unit that is none of `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`.
    #[error("unknown unit {unit:?} in duration {input:?} (ns, us, µs, ms, s, m or h)")]
    UnknownUnit { unit: String, input: String },
    /// More than a signed 64-bit count of nanoseconds holds.
    #[error("duration {0:?} out of range")]
    OutOfRange(String),
    /// A negative value where only zero or more is meaningful.
    #[error("negative duration {0:?}")]
    Negative(String),
}

/// Nanoseconds per unit, as Go's `time` package names them (`µs` as U+00B5 or U+03BC).
fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// 2^63: the magnitude of the most negative value; one more than the largest positive one.
const LIMIT: u128 = 1 << 63;

/// Fraction digits kept: more cannot change the value by a nanosecond (the largest unit, the
/// hour, is under 10^13 ns).
const FRACTION_DIGITS: usize = 18;

/// Parses a Go duration string into signed nanoseconds, as Go's `time.ParseDuration`.
pub fn parse_go_duration_nanos(input: &str) -> Result<i64, DurationError> {
    let invalid = || DurationError::Invalid(input.to_string());
    let out_of_range = || DurationError::OutOfRange(input.to_string());
    let (negative, mut rest) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
        let whole_len = digits(rest);
        let (whole, after) = rest.split_at(whole_len);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(tail) => tail.split_at(digits(tail)),
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        if unit_len == 0 {
            return Err(DurationError::MissingUnit(input.to_string()));
        }
        let (unit, tail) = after.split_at(unit_len);
        let per_unit = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
            unit: unit.to_string(),
            input: input.to_string(),
        })?;
        let mut value: u128 = 0;
        for d in whole.bytes() {
            value = value * 10 + u128::from(d - b'0');
            if value > LIMIT {
                return Err(out_of_range());
            }
        }
        value *= per_unit;
        let kept = &fraction[..fraction.len().min(FRACTION_DIGITS)];
        if !kept.is_empty() {
            let (mut numerator, mut scale) = (0u128, 1u128);
            for d in kept.bytes() {
                numerator = numerator * 10 + u128::from(d - b'0');
                scale *= 10;
            }
            value += numerator * per_unit / scale;
        }
        total += value;
        if total > LIMIT {
            return Err(out_of_range());
        }
        rest = tail;
    }
    if negative {
        // total <= 2^63, so its negation fits.
        return i64::try_from(-(total as i128)).map_err(|_| out_of_range());
    }
    i64::try_from(total).map_err(|_| out_of_range())
}

/// Parses a Go duration string that must not be negative (`-0` is zero).
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let nanos = parse_go_duration_nanos(input)?;
    let nanos = u64::try_from(nanos).map_err(|_| DurationError::Negative(input.to_string()))?;
    Ok(Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn parses_what_go_parses() {
        let table: &[(&str, i64)] = &[
            ("0", 0),
            ("+0", 0),
            ("-0", 0),
            ("0s", 0),
            ("5s", 5 * S),
            ("30s", 30 * S),
            ("1478s", 1478 * S),
            ("-5s", -5 * S),
            ("+5s", 5 * S),
            ("-0s", 0),
            ("5.0s", 5 * S),
            ("5.6s", 5 * S + 600_000_000),
            ("5.s", 5 * S),
            (".5s", S / 2),
            ("1.0s", S),
            ("1.00s", S),
            ("1.004s", S + 4_000_000),
            ("1.0040s", S + 4_000_000),
            ("100.00100s", 100 * S + 1_000_000),
            ("10ns", 10),
            ("11us", 11_000),
            ("12µs", 12_000),
            ("12\u{3bc}s", 12_000),
            ("13ms", 13_000_000),
            ("14s", 14 * S),
            ("15m", 15 * 60 * S),
            ("16h", 16 * 3600 * S),
            ("3h30m", (3 * 3600 + 30 * 60) * S),
            ("10.5s4m", 4 * 60 * S + 10 * S + S / 2),
            ("-2m3.4s", -(2 * 60 * S + 3 * S + 400_000_000)),
            ("1h2m3s4ms5us6ns", 3723 * S + 4_000_000 + 5_000 + 6),
            ("39h9m14.425s", (39 * 3600 + 9 * 60 + 14) * S + 425_000_000),
            ("1.5h", 5400 * S),
            ("300ms", 300_000_000),
            ("-300ms", -300_000_000),
            ("1h2m3.5s", 3_723_500_000_000),
            // sub-nanosecond parts are truncated, not rounded
            ("1.5ns", 1),
            ("0.9ns", 0),
            // the limits of a signed 64-bit count of nanoseconds
            ("9223372036854775807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("9223372036.854775807s", i64::MAX),
            ("2562047h47m16.854775807s", i64::MAX),
            // digits past what matters are accepted and ignored
            ("0.100000000000000000000h", 360 * S),
            ("0.830103483285477580700h", 2_988_372_539_827),
        ];
        for &(input, want) in table {
            assert_eq!(parse_go_duration_nanos(input), Ok(want), "{input:?}");
        }
    }

    #[test]
    fn rejects_what_go_rejects() {
        let invalid = |s: &str| DurationError::Invalid(s.to_string());
        let missing = |s: &str| DurationError::MissingUnit(s.to_string());
        let range = |s: &str| DurationError::OutOfRange(s.to_string());
        let unknown = |u: &str, s: &str| DurationError::UnknownUnit {
            unit: u.to_string(),
            input: s.to_string(),
        };
        let table = [
            ("", invalid("")),
            ("3", missing("3")),
            ("00", missing("00")),
            ("-", invalid("-")),
            ("+", invalid("+")),
            ("s", invalid("s")),
            (".", invalid(".")),
            ("-.", invalid("-.")),
            (".s", invalid(".s")),
            ("+.s", invalid("+.s")),
            ("1..2s", missing("1..2s")),
            ("1d", unknown("d", "1d")),
            ("1x", unknown("x", "1x")),
            ("5sec", unknown("sec", "5sec")),
            ("1m 30s", unknown("m ", "1m 30s")),
            (" 5s", invalid(" 5s")),
            ("5s ", unknown("s ", "5s ")),
            ("--5s", invalid("--5s")),
            ("1s-2s", unknown("s-", "1s-2s")),
            ("abc", invalid("abc")),
            ("9223372036854775808ns", range("9223372036854775808ns")),
            ("9223372036854775.808us", range("9223372036854775.808us")),
            (
                "9223372036854ms775us808ns",
                range("9223372036854ms775us808ns"),
            ),
            ("-9223372036854775809ns", range("-9223372036854775809ns")),
            ("3000000h", range("3000000h")),
            (
                "99999999999999999999999999h",
                range("99999999999999999999999999h"),
            ),
        ];
        for (input, want) in table {
            assert_eq!(parse_go_duration_nanos(input), Err(want), "{input:?}");
        }
    }

    #[test]
    fn unsigned_form_rejects_negative_values_only() {
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("+2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_go_duration("-0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("-0s"), Ok(Duration::ZERO));
        assert_eq!(
            parse_go_duration("9223372036854775807ns"),
            Ok(Duration::from_nanos(i64::MAX as u64))
        );
        assert_eq!(
            parse_go_duration("-5s"),
            Err(DurationError::Negative("-5s".into()))
        );
        assert_eq!(
            parse_go_duration("5"),
            Err(DurationError::MissingUnit("5".into()))
        );
    }

    #[test]
    fn errors_name_the_input() {
        let text = |s: &str| {
            parse_go_duration(s)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert_eq!(
            text("1x"),
            r#"unknown unit "x" in duration "1x" (ns, us, µs, ms, s, m or h)"#
        );
        assert_eq!(
            text("90"),
            r#"missing unit in duration "90" (ns, us, µs, ms, s, m or h)"#
        );
        assert_eq!(text("-1s"), r#"negative duration "-1s""#);
        assert_eq!(text(""), r#"invalid duration """#);
    }
}
