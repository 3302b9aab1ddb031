//! The schedule dialect and its evaluation in a time zone.
//!
//! [`parse_schedule`] is the one place where the CronHPA dialect is adapted to the `croner`
//! crate: standard 5-field cron (minute hour day-of-month month day-of-week), names
//! (`jan`…`dec` in the month field, `sun`…`sat` in the day-of-week field), `* , - / ?`,
//! day-of-week 0-7 with 0 and 7 both Sunday, the descriptors `@yearly @annually @monthly
//! @weekly @daily @midnight @hourly` and `@every <duration>`, and Vixie cron's rule for the
//! day fields: when both day-of-month and day-of-week are restricted (neither starts with `*`
//! nor is `?`) a day matches if **either** matches; otherwise both must match.
//!
//! Cron schedules are evaluated on the wall clock of a time zone ([`Schedule::next_after`],
//! [`Schedule::latest_in`]): a local time that does not exist (spring forward) is skipped, a
//! local time that happens twice (fall back) fires once, at its first occurrence.

use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, SubsecRound, TimeZone, Utc};
use chrono_tz::Tz;
use croner::{Cron, parser::CronParser, parser::Seconds, parser::Year};

/// Longest a search walks before giving up (excluded days, skipped local times).
const MAX_STEPS: usize = 20_000;
/// How far local wall-clock time can run ahead of the instant it names across a DST
/// transition; backward searches start this far ahead (no zone shifts by more than 2 h).
const DST_SLACK: Duration = Duration::hours(3);

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A cron expression, matched on the local wall clock of the time zone.
    Cron(Box<Cron>),
    /// `@every <duration>`: every `duration` (whole seconds, at least 1 s) after an anchor.
    Every(Duration),
}

/// Days on which no schedule fires (`spec.excludeDates`): cron expressions of which only the
/// day-of-month, month and day-of-week fields count.
#[derive(Debug, Clone, Default)]
pub struct Exclusions(Vec<Cron>);

/// The normalised fields of a 5-field expression and whether the day fields combine with AND.
struct Fields {
    fields: [String; 5],
    dom_and_dow: bool,
}

const FIELD_NAMES: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Most expressions [`parse_schedule_cached`] remembers; the memo is emptied when full.
pub const PARSE_CACHE_LIMIT: usize = 4096;

type ParseCache = std::collections::HashMap<String, Result<Schedule, String>>;

/// [`parse_schedule`], memoized by expression. Every reconciliation validates its object, and
/// parsing (croner) was the controller's costliest step when 10,000 objects fire at once;
/// objects mostly share a few expressions. Bounded by [`PARSE_CACHE_LIMIT`].
pub fn parse_schedule_cached(expr: &str) -> Result<Schedule, String> {
    static CACHE: std::sync::LazyLock<std::sync::Mutex<ParseCache>> =
        std::sync::LazyLock::new(Default::default);
    let cache = || CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(hit) = cache().get(expr) {
        return hit.clone();
    }
    let parsed = parse_schedule(expr);
    let mut cache = cache();
    if cache.len() >= PARSE_CACHE_LIMIT {
        cache.clear();
    }
    cache.insert(expr.to_owned(), parsed.clone());
    parsed
}

/// Parses a schedule of the CronHPA dialect (see the module documentation). The error is a
/// human-readable reason, without the schedule itself (callers quote it with its field path).
pub fn parse_schedule(expr: &str) -> Result<Schedule, String> {
    let expr = expr.trim();
    if expr.is_empty() {
        return Err("empty schedule".into());
    }
    if let Some(descriptor) = expr.strip_prefix('@') {
        let lower = descriptor.to_ascii_lowercase();
        let standard = match lower.as_str() {
            "yearly" | "annually" => "0 0 1 1 *",
            "monthly" => "0 0 1 * *",
            "weekly" => "0 0 * * 0",
            "daily" | "midnight" => "0 0 * * *",
            "hourly" => "0 * * * *",
            _ => {
                let Some(rest) = lower.strip_prefix("every") else {
                    return Err(format!(
                        "unknown descriptor @{descriptor} (expected @yearly, @annually, \
                         @monthly, @weekly, @daily, @midnight, @hourly or @every <duration>)"
                    ));
                };
                let rest = rest.trim();
                if rest.is_empty() || !descriptor[5..].starts_with(char::is_whitespace) {
                    return Err("@every needs a duration, e.g. @every 90m".into());
                }
                let d =
                    addon_common::cli::parse_duration(rest).map_err(|e| format!("@every: {e}"))?;
                // As robfig/cron: whole seconds only.
                let secs = i64::try_from(d.as_secs()).map_err(|_| "@every: duration too long")?;
                if secs < 1 {
                    return Err("@every: the duration must be at least 1s".into());
                }
                if secs > 100 * 366 * 86_400 {
                    return Err("@every: the duration must be at most 100 years".into());
                }
                return Ok(Schedule::Every(Duration::seconds(secs)));
            }
        };
        return compile(&normalise(standard)?).map(|c| Schedule::Cron(Box::new(c)));
    }
    compile(&normalise(expr)?).map(|c| Schedule::Cron(Box::new(c)))
}

/// Parses one `excludeDates` entry: a 5-field expression; minute and hour are ignored.
pub fn parse_exclusion(expr: &str) -> Result<Cron, String> {
    if expr.trim().starts_with('@') {
        return Err("descriptors are not allowed in excludeDates; use 5 fields".into());
    }
    let mut fields = normalise(expr)?;
    fields.fields[0] = "*".into();
    fields.fields[1] = "*".into();
    compile(&fields)
}

impl Exclusions {
    /// Parses every entry; the error names the index of the first bad one.
    pub fn parse(exprs: &[String]) -> Result<Self, (usize, String)> {
        exprs
            .iter()
            .enumerate()
            .map(|(i, e)| parse_exclusion(e).map_err(|m| (i, m)))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether the local date is excluded.
    pub fn contains(&self, date: NaiveDate) -> bool {
        let midnight = carrier(date.and_time(chrono::NaiveTime::MIN));
        self.0
            .iter()
            .any(|c| c.is_time_matching(&midnight).unwrap_or(false))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Splits, checks characters and translates names, field by field.
fn normalise(expr: &str) -> Result<Fields, String> {
    let parts: Vec<&str> = expr.split_whitespace().collect();
    if parts.len() != 5 {
        return Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), got {}",
            parts.len()
        ));
    }
    let mut fields: [String; 5] = Default::default();
    for (i, part) in parts.iter().enumerate() {
        let field = FIELD_NAMES[i];
        let names: &[&str] = match i {
            3 => &MONTHS,
            4 => &WEEKDAYS,
            _ => &[],
        };
        let mut out = String::with_capacity(part.len());
        let mut chars = part.char_indices().peekable();
        while let Some((start, c)) = chars.next() {
            match c {
                '0'..='9' | '*' | ',' | '-' | '/' => out.push(c),
                '?' if i == 2 || i == 4 => out.push('*'),
                c if c.is_ascii_alphabetic() => {
                    let mut end = start + c.len_utf8();
                    while let Some(&(j, n)) = chars.peek() {
                        if !n.is_ascii_alphabetic() {
                            break;
                        }
                        end = j + n.len_utf8();
                        chars.next();
                    }
                    let word = part[start..end].to_ascii_lowercase();
                    let Some(pos) = names.iter().position(|n| *n == word) else {
                        return Err(if names.is_empty() {
                            format!("{field} field {part:?}: names are not allowed here")
                        } else {
                            format!("{field} field {part:?}: unknown name {word:?}")
                        });
                    };
                    // Months count from 1; `-sun` ends a range at 7 (Sunday).
                    let value = match i {
                        3 => pos + 1,
                        _ if pos == 0 && out.ends_with('-') => 7,
                        _ => pos,
                    };
                    out.push_str(&value.to_string());
                }
                other => {
                    return Err(format!(
                        "{field} field {part:?}: character {other:?} is not allowed"
                    ));
                }
            }
        }
        check_numbers(field, part, &out, i)?;
        fields[i] = out;
    }
    // Vixie cron: a day field that starts with `*` (or is `?`) is "unrestricted"; when either
    // is unrestricted both must match (AND), otherwise either may match (OR).
    let dom_and_dow = fields[2].starts_with('*') || fields[4].starts_with('*');
    Ok(Fields {
        fields,
        dom_and_dow,
    })
}

/// Range checks with messages that name the field (croner's own messages do not).
fn check_numbers(field: &str, part: &str, normalised: &str, index: usize) -> Result<(), String> {
    let (min, max) = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)][index];
    for item in normalised.split(',') {
        if item.is_empty() {
            return Err(format!("{field} field {part:?}: empty list item"));
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        if let Some(step) = step {
            match step.parse::<u32>() {
                Ok(s) if s >= 1 => {}
                _ => return Err(format!("{field} field {part:?}: bad step {step:?}")),
            }
        }
        if range == "*" {
            continue;
        }
        let (lo, hi) = match range.split_once('-') {
            Some((a, b)) => (a, Some(b)),
            None => (range, None),
        };
        let parse = |s: &str| -> Result<u32, String> {
            s.parse::<u32>()
                .map_err(|_| format!("{field} field {part:?}: bad value {s:?}"))
                .and_then(|v| {
                    if (min..=max).contains(&v) {
                        Ok(v)
                    } else {
                        Err(format!(
                            "{field} field {part:?}: {v} is out of range {min}-{max}"
                        ))
                    }
                })
        };
        let lo = parse(lo)?;
        if let Some(hi) = hi {
            let hi = parse(hi)?;
            if hi < lo {
                return Err(format!(
                    "{field} field {part:?}: range {lo}-{hi} ends before it starts"
                ));
            }
        }
    }
    Ok(())
}

fn compile(f: &Fields) -> Result<Cron, String> {
    let parser = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .dom_and_dow(f.dom_and_dow)
        .build();
    parser
        .parse(&f.fields.join(" "))
        .map_err(|e| format!("{e}"))
}

/// croner evaluates on a `DateTime<Tz>`; we feed it local wall-clock times carried as UTC so
/// that it never applies DST rules itself (we do, below).
fn carrier(naive: NaiveDateTime) -> DateTime<Utc> {
    Utc.from_utc_datetime(&naive)
}

/// The instant a local wall-clock time names: `None` when it does not exist, the first of
/// the two when it is repeated.
fn resolve(tz: Tz, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|d| d.with_timezone(&Utc))
}

impl Schedule {
    /// The first occurrence strictly after `after`. `anchor` is where `@every` counts from
    /// (its occurrences are `anchor + k * duration`, k ≥ 1).
    pub fn next_after(
        &self,
        after: DateTime<Utc>,
        tz: Tz,
        anchor: DateTime<Utc>,
        exclusions: &Exclusions,
    ) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(d) => {
                let secs = d.num_seconds();
                let elapsed = (after - anchor).num_seconds();
                let first = if elapsed < 0 { 1 } else { elapsed / secs + 1 };
                (first..first + MAX_STEPS as i64)
                    .map_while(|k| Some(anchor + Duration::seconds(secs.checked_mul(k)?)))
                    .find(|t| *t > after && !exclusions.contains(t.with_timezone(&tz).date_naive()))
            }
            Schedule::Cron(cron) => {
                // croner keeps the sub-second part of the instant it starts from; occurrences
                // are whole seconds (else a wake-up planned at 08:59:59.7 would be 0.7 s late).
                let after_second = after.trunc_subsecs(0);
                let mut cursor = carrier(after_second.with_timezone(&tz).naive_local());
                for _ in 0..MAX_STEPS {
                    let candidate = cron.find_next_occurrence(&cursor, false).ok()?;
                    let local = candidate.naive_utc();
                    if !exclusions.is_empty() && exclusions.contains(local.date()) {
                        // Jump to the last second of that day.
                        let next_day = local.date().succ_opt()?;
                        cursor = carrier(next_day.and_time(chrono::NaiveTime::MIN))
                            - Duration::seconds(1);
                        continue;
                    }
                    cursor = candidate;
                    if let Some(instant) = resolve(tz, local)
                        && instant > after
                    {
                        return Some(instant);
                    }
                }
                None
            }
        }
    }

    /// The latest occurrence in `(floor, at]`, if any.
    pub fn latest_in(
        &self,
        floor: DateTime<Utc>,
        at: DateTime<Utc>,
        tz: Tz,
        anchor: DateTime<Utc>,
        exclusions: &Exclusions,
    ) -> Option<DateTime<Utc>> {
        if at <= floor {
            return None;
        }
        match self {
            Schedule::Every(d) => {
                let secs = d.num_seconds();
                let elapsed = (at - anchor).num_seconds();
                if elapsed < secs {
                    return None;
                }
                let mut k = elapsed / secs;
                for _ in 0..MAX_STEPS {
                    if k < 1 {
                        return None;
                    }
                    let t = anchor + Duration::seconds(secs.checked_mul(k)?);
                    if t <= floor {
                        return None;
                    }
                    if !exclusions.contains(t.with_timezone(&tz).date_naive()) {
                        return Some(t);
                    }
                    k -= 1;
                }
                None
            }
            Schedule::Cron(cron) => {
                let floor_local = floor.with_timezone(&tz).naive_local() - DST_SLACK;
                let at_second = at.trunc_subsecs(0);
                let mut cursor = carrier(at_second.with_timezone(&tz).naive_local() + DST_SLACK);
                let mut inclusive = true;
                for _ in 0..MAX_STEPS {
                    let candidate = cron.find_previous_occurrence(&cursor, inclusive).ok()?;
                    inclusive = false;
                    let local = candidate.naive_utc();
                    if local < floor_local {
                        return None;
                    }
                    if !exclusions.is_empty() && exclusions.contains(local.date()) {
                        cursor = carrier(local.date().and_time(chrono::NaiveTime::MIN));
                        continue;
                    }
                    cursor = candidate;
                    if let Some(instant) = resolve(tz, local) {
                        if instant <= floor {
                            return None;
                        }
                        if instant <= at {
                            return Some(instant);
                        }
                    }
                }
                None
            }
        }
    }
}

/// Parses an IANA time zone name.
pub fn parse_time_zone(name: &str) -> Result<Tz, String> {
    Tz::from_str(name).map_err(|_| {
        format!("unknown time zone {name:?} (expected an IANA name such as Asia/Shanghai)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("rfc3339")
            .with_timezone(&Utc)
    }

    fn tz(name: &str) -> Tz {
        parse_time_zone(name).expect("zone")
    }

    fn next(expr: &str, zone: &str, after: &str) -> String {
        let s = parse_schedule(expr).expect(expr);
        let after = utc(after);
        s.next_after(after, tz(zone), after, &Exclusions::default())
            .expect("next")
            .to_rfc3339()
    }

    /// The next `n` occurrences after `after`, as RFC 3339 UTC.
    fn nexts(expr: &str, zone: &str, after: &str, n: usize) -> Vec<String> {
        let s = parse_schedule(expr).expect(expr);
        let mut t = utc(after);
        let anchor = t;
        let mut out = Vec::new();
        for _ in 0..n {
            t = s
                .next_after(t, tz(zone), anchor, &Exclusions::default())
                .expect("next");
            out.push(t.to_rfc3339());
        }
        out
    }

    #[test]
    fn dialect_table() {
        // (expression, after (UTC), next fire (UTC)); 2024-01-01 is a Monday.
        let table = [
            (
                "0 23 * * 7",
                "2024-01-01T00:00:00Z",
                "2024-01-07T23:00:00+00:00",
            ),
            (
                "0 23 * * 0",
                "2024-01-01T00:00:00Z",
                "2024-01-07T23:00:00+00:00",
            ),
            (
                "0 23 * * sun",
                "2024-01-01T00:00:00Z",
                "2024-01-07T23:00:00+00:00",
            ),
            (
                "0 20 * * 5",
                "2024-01-01T00:00:00Z",
                "2024-01-05T20:00:00+00:00",
            ),
            (
                "0 20 * * FRI",
                "2024-01-01T00:00:00Z",
                "2024-01-05T20:00:00+00:00",
            ),
            (
                "0 8 * * *",
                "2024-01-01T08:00:00Z",
                "2024-01-02T08:00:00+00:00",
            ),
            (
                "*/15 * * * *",
                "2024-01-01T00:07:00Z",
                "2024-01-01T00:15:00+00:00",
            ),
            (
                "5/20 * * * *",
                "2024-01-01T00:06:00Z",
                "2024-01-01T00:25:00+00:00",
            ),
            (
                "0 9-17/4 * * *",
                "2024-01-01T09:00:00Z",
                "2024-01-01T13:00:00+00:00",
            ),
            (
                "0 0 * * 1-5",
                "2024-01-05T12:00:00Z",
                "2024-01-08T00:00:00+00:00",
            ),
            (
                "0 0 * * sat-sun",
                "2024-01-01T12:00:00Z",
                "2024-01-06T00:00:00+00:00",
            ),
            (
                "0 0 * * 5-7",
                "2024-01-06T12:00:00Z",
                "2024-01-07T00:00:00+00:00",
            ),
            (
                "0 0 1 jan,jul *",
                "2024-01-01T12:00:00Z",
                "2024-07-01T00:00:00+00:00",
            ),
            (
                "0 0 1 Mar-May ?",
                "2024-01-01T12:00:00Z",
                "2024-03-01T00:00:00+00:00",
            ),
            (
                "30 6 ? * mon",
                "2024-01-01T12:00:00Z",
                "2024-01-08T06:30:00+00:00",
            ),
            (
                "0,30 12 * * *",
                "2024-01-01T12:00:00Z",
                "2024-01-01T12:30:00+00:00",
            ),
            // Vixie OR: the 13th or any Friday.
            (
                "0 0 13 * 5",
                "2024-01-01T00:00:00Z",
                "2024-01-05T00:00:00+00:00",
            ),
            (
                "0 0 13 * 5",
                "2024-01-12T12:00:00Z",
                "2024-01-13T00:00:00+00:00",
            ),
            // A day field starting with `*` makes it AND: odd days that are Mondays.
            (
                "0 0 */2 * 1",
                "2024-01-01T12:00:00Z",
                "2024-01-15T00:00:00+00:00",
            ),
            (
                "@hourly",
                "2024-01-01T00:00:00Z",
                "2024-01-01T01:00:00+00:00",
            ),
            (
                "@daily",
                "2024-01-01T00:00:00Z",
                "2024-01-02T00:00:00+00:00",
            ),
            (
                "@midnight",
                "2024-01-01T00:00:00Z",
                "2024-01-02T00:00:00+00:00",
            ),
            (
                "@weekly",
                "2024-01-01T00:00:00Z",
                "2024-01-07T00:00:00+00:00",
            ),
            (
                "@monthly",
                "2024-01-01T00:00:00Z",
                "2024-02-01T00:00:00+00:00",
            ),
            (
                "@yearly",
                "2024-01-01T00:00:00Z",
                "2025-01-01T00:00:00+00:00",
            ),
            (
                "@annually",
                "2024-01-01T00:00:00Z",
                "2025-01-01T00:00:00+00:00",
            ),
            (
                "@every 90m",
                "2024-01-01T00:00:00Z",
                "2024-01-01T01:30:00+00:00",
            ),
            (
                "@every 1h30m",
                "2024-01-01T00:00:00Z",
                "2024-01-01T01:30:00+00:00",
            ),
            (
                "@EVERY 10s",
                "2024-01-01T00:00:00Z",
                "2024-01-01T00:00:10+00:00",
            ),
            (
                "0 0 29 2 *",
                "2024-03-01T00:00:00Z",
                "2028-02-29T00:00:00+00:00",
            ),
        ];
        for (expr, after, want) in table {
            assert_eq!(next(expr, "UTC", after), want, "{expr} after {after}");
        }
    }

    #[test]
    fn dialect_rejects() {
        let table = [
            ("", "empty schedule"),
            (
                "0 23 * * 8",
                "day-of-week field \"8\": 8 is out of range 0-7",
            ),
            ("60 * * * *", "minute field \"60\": 60 is out of range 0-59"),
            ("0 24 * * *", "hour field"),
            ("0 0 0 * *", "day-of-month field"),
            ("0 0 * 13 *", "month field"),
            ("0 0 * * * *", "expected 5 fields"),
            ("0 0 * *", "expected 5 fields"),
            ("0 0 * * mon-fry", "unknown name \"fry\""),
            ("0 mon * * *", "names are not allowed here"),
            ("0 0 L * *", "names are not allowed"),
            ("0 0 * * 5#2", "character '#' is not allowed"),
            ("0 ? * * *", "character '?' is not allowed"),
            ("*/0 * * * *", "bad step"),
            ("0 5-1 * * *", "ends before it starts"),
            ("1,,2 * * * *", "empty list item"),
            ("@reboot", "unknown descriptor"),
            ("@every", "@every needs a duration"),
            ("@every 0s", "at least 1s"),
            ("@every ten", "@every"),
            ("@everyday", "@every needs a duration"),
        ];
        for (expr, want) in table {
            let err = parse_schedule(expr).expect_err(expr);
            assert!(
                err.contains(want),
                "{expr:?}: {err:?} should contain {want:?}"
            );
        }
    }

    #[test]
    fn seed_schedule_sunday_is_seven() {
        // The seed's `0 23 * * 7` ("every Sunday 23:00") in several consecutive weeks.
        assert_eq!(
            nexts("0 23 * * 7", "UTC", "2024-01-01T00:00:00Z", 3),
            [
                "2024-01-07T23:00:00+00:00",
                "2024-01-14T23:00:00+00:00",
                "2024-01-21T23:00:00+00:00"
            ]
        );
    }

    #[test]
    fn time_zone_shifts_the_wall_clock() {
        // 08:00 in Shanghai (no DST) is 00:00 UTC; the original's TZ=UTC vs Asia/Shanghai case.
        assert_eq!(
            next("0 8 * * *", "Asia/Shanghai", "2024-07-01T01:00:00Z"),
            "2024-07-02T00:00:00+00:00"
        );
        assert_eq!(
            next("0 8 * * *", "UTC", "2024-07-01T01:00:00Z"),
            "2024-07-01T08:00:00+00:00"
        );
    }

    #[test]
    fn new_york_spring_forward_skips_the_missing_hour() {
        // 2024-03-10 02:00 EST → 03:00 EDT: 02:30 does not exist that day.
        assert_eq!(
            nexts("30 2 * * *", "America/New_York", "2024-03-09T00:00:00Z", 3),
            [
                "2024-03-09T07:30:00+00:00", // 02:30 EST
                "2024-03-11T06:30:00+00:00", // 02:30 EDT (the 10th is skipped)
                "2024-03-12T06:30:00+00:00",
            ]
        );
        // An hourly schedule simply has one run fewer that day.
        assert_eq!(
            nexts("0 * * * *", "America/New_York", "2024-03-10T06:30:00Z", 2),
            ["2024-03-10T07:00:00+00:00", "2024-03-10T08:00:00+00:00"] // 01:00 EST, 03:00 EDT
        );
    }

    #[test]
    fn new_york_fall_back_fires_once() {
        // 2024-11-03 02:00 EDT → 01:00 EST: 01:30 happens twice, fires at the first.
        assert_eq!(
            nexts("30 1 * * *", "America/New_York", "2024-11-02T12:00:00Z", 2),
            [
                "2024-11-03T05:30:00+00:00", // 01:30 EDT
                "2024-11-04T06:30:00+00:00", // next day 01:30 EST
            ]
        );
        // Starting inside the second pass does not fire the repeated time again.
        assert_eq!(
            next("30 1 * * *", "America/New_York", "2024-11-03T06:10:00Z"),
            "2024-11-04T06:30:00+00:00"
        );
        // Every 30 minutes: the repeated hour is not run twice.
        assert_eq!(
            nexts(
                "*/30 * * * *",
                "America/New_York",
                "2024-11-03T05:00:00Z",
                3
            ),
            [
                "2024-11-03T05:30:00+00:00", // 01:30 EDT
                "2024-11-03T07:00:00+00:00", // 02:00 EST
                "2024-11-03T07:30:00+00:00",
            ]
        );
    }

    #[test]
    fn london_transitions() {
        // 2024-03-31 01:00 GMT → 02:00 BST; 2024-10-27 02:00 BST → 01:00 GMT.
        assert_eq!(
            nexts("30 1 * * *", "Europe/London", "2024-03-30T12:00:00Z", 2),
            ["2024-04-01T00:30:00+00:00", "2024-04-02T00:30:00+00:00"]
        );
        assert_eq!(
            nexts("30 1 * * *", "Europe/London", "2024-10-26T12:00:00Z", 2),
            ["2024-10-27T00:30:00+00:00", "2024-10-28T01:30:00+00:00"]
        );
    }

    #[test]
    fn lord_howe_half_hour_dst() {
        // Lord Howe: +10:30 standard, +11:00 summer; 2024-10-06 02:00 → 02:30 local.
        assert_eq!(
            nexts(
                "15 2 * * *",
                "Australia/Lord_Howe",
                "2024-10-04T00:00:00Z",
                2
            ),
            [
                "2024-10-04T15:45:00+00:00", // 02:15 +10:30 on the 5th
                "2024-10-06T15:15:00+00:00", // 6th skipped; 02:15 +11:00 on the 7th
            ]
        );
        // 2024-04-07 02:00 +11 → 01:30 +10:30: 01:45 repeats, fires once.
        assert_eq!(
            nexts(
                "45 1 * * *",
                "Australia/Lord_Howe",
                "2024-04-06T00:00:00Z",
                2
            ),
            ["2024-04-06T14:45:00+00:00", "2024-04-07T15:15:00+00:00"]
        );
    }

    #[test]
    fn the_memoized_parser_answers_as_the_parser() {
        let at = utc("2024-01-02T08:59:59Z");
        let none = Exclusions::default();
        for expr in [
            "0 9 * * *",
            "@every 90m",
            "0 23 * * 7",
            "not a schedule",
            "0 23 * * 8",
        ] {
            for _ in 0..2 {
                let (cached, direct) = (parse_schedule_cached(expr), parse_schedule(expr));
                match (cached, direct) {
                    (Ok(c), Ok(d)) => assert_eq!(
                        c.next_after(at, Tz::UTC, at, &none),
                        d.next_after(at, Tz::UTC, at, &none),
                        "{expr}"
                    ),
                    (Err(c), Err(d)) => assert_eq!(c, d, "{expr}"),
                    (c, d) => panic!("{expr}: {c:?} vs {d:?}"),
                }
            }
        }
    }

    #[test]
    fn occurrences_are_whole_seconds_whatever_the_instant_asked_about() {
        let none = Exclusions::default();
        let s = parse_schedule("0 9 * * *").expect("parse");
        let at = utc("2024-01-02T08:59:59Z") + Duration::milliseconds(999);
        assert_eq!(
            s.next_after(at, Tz::UTC, at, &none),
            Some(utc("2024-01-02T09:00:00Z"))
        );
        let at = utc("2024-01-02T09:00:00Z") + Duration::milliseconds(250);
        assert_eq!(
            s.latest_in(utc("2024-01-01T00:00:00Z"), at, Tz::UTC, at, &none),
            Some(utc("2024-01-02T09:00:00Z"))
        );
    }

    #[test]
    fn latest_in_window_respects_dst_and_floor() {
        let s = parse_schedule("30 1 * * *").expect("parse");
        let ny = tz("America/New_York");
        let none = Exclusions::default();
        // In the second 01:xx pass (06:10Z = 01:10 EST), the latest 01:30 is the EDT one.
        let at = utc("2024-11-03T06:10:00Z");
        assert_eq!(
            s.latest_in(utc("2024-11-01T00:00:00Z"), at, ny, at, &none),
            Some(utc("2024-11-03T05:30:00Z"))
        );
        // The floor is exclusive.
        assert_eq!(
            s.latest_in(utc("2024-11-03T05:30:00Z"), at, ny, at, &none),
            None
        );
        let lon = parse_schedule("30 1 * * *").expect("parse");
        assert_eq!(
            lon.latest_in(
                utc("2024-03-30T00:00:00Z"),
                utc("2024-03-31T12:00:00Z"),
                tz("Europe/London"),
                at,
                &none
            ),
            Some(utc("2024-03-30T01:30:00Z")) // the 31st's 01:30 does not exist
        );
    }

    #[test]
    fn every_counts_from_the_anchor() {
        let s = parse_schedule("@every 90m").expect("parse");
        let anchor = utc("2024-01-01T00:00:00Z");
        let none = Exclusions::default();
        let z = tz("UTC");
        assert_eq!(
            s.next_after(utc("2024-01-01T02:00:00Z"), z, anchor, &none),
            Some(utc("2024-01-01T03:00:00Z"))
        );
        assert_eq!(
            s.latest_in(anchor, utc("2024-01-01T04:00:00Z"), z, anchor, &none),
            Some(utc("2024-01-01T03:00:00Z"))
        );
        assert_eq!(
            s.latest_in(anchor, utc("2024-01-01T01:00:00Z"), z, anchor, &none),
            None
        );
    }

    #[test]
    fn exclusions_skip_whole_days() {
        let ex = Exclusions::parse(&["* * * * 0,6".into(), "0 0 25 dec *".into()]).expect("ex");
        let s = parse_schedule("0 8 * * *").expect("parse");
        let z = tz("UTC");
        let fri = utc("2024-01-05T09:00:00Z");
        assert_eq!(
            s.next_after(fri, z, fri, &ex),
            Some(utc("2024-01-08T08:00:00Z"))
        );
        let mon = utc("2024-01-08T07:00:00Z");
        assert_eq!(
            s.latest_in(utc("2024-01-01T00:00:00Z"), mon, z, mon, &ex),
            Some(utc("2024-01-05T08:00:00Z"))
        );
        let xmas_eve = utc("2024-12-24T09:00:00Z");
        assert_eq!(
            s.next_after(xmas_eve, z, xmas_eve, &ex),
            Some(utc("2024-12-26T08:00:00Z"))
        );
        assert!(Exclusions::parse(&["@daily".into()]).is_err());
        assert_eq!(
            Exclusions::parse(&["* * * *".into()])
                .map(|_| ())
                .map_err(|e| e.0),
            Err(0)
        );
        // Every day excluded: no next occurrence, no endless loop.
        let all = Exclusions::parse(&["* * * * *".into()]).expect("all");
        assert_eq!(s.next_after(fri, z, fri, &all), None);
    }

    #[test]
    fn unknown_time_zone_is_rejected() {
        assert!(parse_time_zone("Mars/Olympus_Mons").is_err());
        assert!(parse_time_zone("Asia/Shanghai").is_ok());
        assert!(parse_time_zone("UTC").is_ok());
    }
}
