//! Points in time as users write them (`--as-of`, `--since`, `--until`).
//!
//! Accepted forms (docs/cli.md, "Times"):
//! - RFC 3339 with an offset: `2026-11-20T14:00:00Z`, `2026-11-20T14:00:00+01:00`;
//! - local civil time: `YYYY-MM-DD`, `YYYY-MM-DD HH:MM`, `YYYY-MM-DD HH:MM:SS` (a `T` may
//!   replace the space), read in the local time zone (`TZ`, else the system's); a time that
//!   a DST change skips or repeats resolves as RFC 9557's "compatible" rule says (the later
//!   offset for a gap, the earlier for a fold);
//! - relative: one or more `<number><unit>` pairs, optionally followed by `ago`: `2h`,
//!   `3 days ago`, `1w 2d`, `90min`. Units: s/sec/second, m/min/minute, h/hr/hour, d/day,
//!   w/week, mo/month, y/year (plural forms too). Days, months and years are calendar units
//!   in the local time zone, so "1 day ago" across a DST change is the same wall-clock time;
//! - `now`, `today` and `yesterday` (local midnight).

use jiff::civil;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, Zoned};

/// Parses `s` relative to `now`, reading civil times in `tz`.
pub fn parse(s: &str, now: Timestamp, tz: &TimeZone) -> Result<Timestamp, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let here = now.to_zoned(tz.clone());
    match lower.as_str() {
        "now" => return Ok(now),
        "today" => return midnight(&here, 0),
        "yesterday" => return midnight(&here, 1),
        _ => {}
    }
    if let Ok(ts) = t.parse::<Timestamp>() {
        return Ok(ts);
    }
    if let Some(civil) = parse_civil(t) {
        return civil.to_zoned(tz.clone()).map(|z| z.timestamp()).map_err(|e| format!("{t:?}: {e}"));
    }
    if let Some(span) = parse_relative(&lower) {
        return here.checked_sub(span).map(|z| z.timestamp()).map_err(|e| format!("{t:?}: {e}"));
    }
    Err(format!(
        "{t:?} is not a time: give RFC 3339 (2026-11-20T14:00:00Z), local \"YYYY-MM-DD[ HH:MM[:SS]]\", \
         or a relative time (\"3 days ago\", \"2h\")"
    ))
}

/// [`parse`] with the clock's now and the local time zone.
pub fn parse_local(s: &str) -> Result<Timestamp, String> {
    parse(s, crate::clock::now(), &TimeZone::system())
}

/// A snapshot time as `backup --time` takes it (restic's form): RFC 3339 with fractional
/// seconds and an offset (`2026-11-20T14:00:00.5+01:00`), kept with that offset; or local
/// civil time `YYYY-MM-DD HH:MM:SS` (also `YYYY-MM-DD[ HH:MM]`) in `tz`, with the offset
/// `tz` has then. Relative forms are refused: a snapshot's time is a point, not "2h".
pub fn parse_snapshot_time(s: &str, tz: &TimeZone) -> Result<Zoned, String> {
    let z = parse_snapshot_time_unchecked(s, tz)?;
    // Snapshot times are i64 nanoseconds: 1677-09-21 to 2262-04-11.
    if i64::try_from(z.timestamp().as_nanosecond()).is_err() {
        return Err(format!("{:?} is outside the years 1678 to 2261 that a snapshot time can hold", s.trim()));
    }
    Ok(z)
}

fn parse_snapshot_time_unchecked(s: &str, tz: &TimeZone) -> Result<Zoned, String> {
    let t = s.trim();
    if let Ok(ts) = t.parse::<Timestamp>() {
        let offset = rfc3339_offset(t).ok_or_else(|| format!("{t:?}: cannot read the UTC offset"))?;
        return Ok(ts.to_zoned(TimeZone::fixed(offset)));
    }
    if let Some(civil) = parse_civil(t) {
        let z = civil.to_zoned(tz.clone()).map_err(|_| format!("{t:?} is outside the times a snapshot can hold"))?;
        // Keep the offset the zone had then, as a fixed zone: that is what is stored.
        return Ok(z.timestamp().to_zoned(TimeZone::fixed(z.offset())));
    }
    Err(format!(
        "{t:?} is not a snapshot time: give RFC 3339 (2026-11-20T14:00:00+01:00) or local \"YYYY-MM-DD HH:MM:SS\""
    ))
}

/// The offset at the end of an RFC 3339 timestamp: `Z` or `+HH:MM` / `-HH:MM`.
fn rfc3339_offset(t: &str) -> Option<jiff::tz::Offset> {
    if t.ends_with(['Z', 'z']) {
        return Some(jiff::tz::Offset::UTC);
    }
    let tail = t.get(t.len().checked_sub(6)?..)?.as_bytes();
    let sign = match tail[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let num = |b: &[u8]| -> Option<i32> { std::str::from_utf8(b).ok()?.parse().ok() };
    if tail[3] != b':' {
        return None;
    }
    let secs = sign * (num(&tail[1..3])? * 3600 + num(&tail[4..6])? * 60);
    jiff::tz::Offset::from_seconds(secs).ok()
}

fn midnight(here: &Zoned, days_back: i64) -> Result<Timestamp, String> {
    let day = here.date().checked_sub(Span::new().days(days_back)).map_err(|e| e.to_string())?;
    day.to_zoned(here.time_zone().clone()).map(|z| z.timestamp()).map_err(|e| e.to_string())
}

fn parse_civil(t: &str) -> Option<civil::DateTime> {
    let b = t.as_bytes();
    let shape_ok = b.len() >= 10 && b[4] == b'-' && b[7] == b'-' && b[..4].iter().all(u8::is_ascii_digit);
    if !shape_ok {
        return None;
    }
    if b.len() == 10 {
        return t.parse::<civil::Date>().ok().map(|d| d.to_datetime(civil::Time::midnight()));
    }
    if !matches!(b[10], b' ' | b'T' | b't') {
        return None;
    }
    let date: civil::Date = t[..10].parse().ok()?;
    let time: civil::Time = t[11..].trim().parse().ok()?;
    Some(date.to_datetime(time))
}

fn parse_relative(s: &str) -> Option<Span> {
    let s = s.strip_suffix("ago").unwrap_or(s).trim();
    if s.is_empty() {
        return None;
    }
    let mut span = Span::new();
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let n: i64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let letters = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
        let unit = &rest[..letters];
        rest = rest[letters..].trim_start_matches([' ', ',']);
        span = add_unit(span, n, unit)?;
    }
    Some(span)
}

/// A length of time as objectives give it (`--rto 4h`, `--rpo 1d12h`, `90m`, `45s`): one or
/// more `<number><unit>` with units s, m (minutes), h, d (24 hours) and w, or a bare number
/// of seconds. Returns seconds.
pub fn parse_span_secs(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a length of time: give e.g. 30m, 4h, 1d12h, 2w, 1y or 90s");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = rest[digits..].trim_start();
        let letters = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
        let unit: u64 = match &rest[..letters] {
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 604_800,
            // A year of 365 days (for retention periods such as 6y).
            "y" | "year" | "years" => 31_536_000,
            _ => return Err(bad()),
        };
        rest = rest[letters..].trim_start_matches([' ', ',']);
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(bad)?;
    }
    Ok(total)
}

fn add_unit(span: Span, n: i64, unit: &str) -> Option<Span> {
    let r = match unit {
        "s" | "sec" | "secs" | "second" | "seconds" => span.try_seconds(n),
        "m" | "min" | "mins" | "minute" | "minutes" => span.try_minutes(n),
        "h" | "hr" | "hrs" | "hour" | "hours" => span.try_hours(n),
        "d" | "day" | "days" => span.try_days(n),
        "w" | "week" | "weeks" => span.try_weeks(n),
        "mo" | "month" | "months" => span.try_months(n),
        "y" | "year" | "years" => span.try_years(n),
        _ => return None,
    };
    r.ok()
}

#[cfg(test)]
mod span_tests {
    use super::parse_span_secs;

    #[test]
    fn spans() {
        assert_eq!(parse_span_secs("4h"), Ok(14_400));
        assert_eq!(parse_span_secs("1d12h"), Ok(129_600));
        assert_eq!(parse_span_secs("90m"), Ok(5400));
        assert_eq!(parse_span_secs("45"), Ok(45));
        assert_eq!(parse_span_secs("2w"), Ok(1_209_600));
        assert_eq!(parse_span_secs("6y"), Ok(6 * 31_536_000));
        for bad in ["", "4x", "h", "-1h", "99999999999999999999w"] {
            assert!(parse_span_secs(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ny() -> TimeZone {
        TimeZone::get("America/New_York").unwrap()
    }

    #[test]
    fn forms() {
        let now: Timestamp = "2026-11-27T12:00:00Z".parse().unwrap();
        let p = |s: &str| parse(s, now, &ny()).unwrap().to_string();
        assert_eq!(p("2026-11-20T14:00:00Z"), "2026-11-20T14:00:00Z");
        assert_eq!(p("2026-11-20T14:00:00+01:00"), "2026-11-20T13:00:00Z");
        // New York is UTC-5 in November, UTC-4 in July.
        assert_eq!(p("2026-11-20 14:00"), "2026-11-20T19:00:00Z");
        assert_eq!(p("2026-07-01 14:00:30"), "2026-07-01T18:00:30Z");
        assert_eq!(p("2026-11-20"), "2026-11-20T05:00:00Z");
        assert_eq!(p("2h"), "2026-11-27T10:00:00Z");
        assert_eq!(p("3 days ago"), "2026-11-24T12:00:00Z");
        assert_eq!(p("1w 2d"), "2026-11-18T12:00:00Z");
        assert_eq!(p("90min ago"), "2026-11-27T10:30:00Z");
        assert_eq!(p("yesterday"), "2026-11-26T05:00:00Z");
        assert_eq!(p("now"), "2026-11-27T12:00:00Z");
        for bad in ["", "tomorrowish", "3 fortnights", "2026-13-01", "12:00", "ago"] {
            assert!(parse(bad, now, &ny()).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn snapshot_times_keep_their_offset() {
        let z = parse_snapshot_time("2026-11-20T14:00:00.25+01:00", &ny()).unwrap();
        assert_eq!(z.offset().seconds(), 3600);
        assert_eq!(z.timestamp().to_string(), "2026-11-20T13:00:00.25Z");
        let z = parse_snapshot_time("2026-07-01 14:00:30", &ny()).unwrap();
        assert_eq!(z.offset().seconds(), -4 * 3600);
        assert_eq!(z.timestamp().to_string(), "2026-07-01T18:00:30Z");
        assert_eq!(parse_snapshot_time("2026-11-20T14:00:00Z", &ny()).unwrap().offset().seconds(), 0);
        for bad in [
            "",
            "2h",
            "yesterday",
            "2026-13-01 00:00:00",
            "1600-01-01 00:00:00",
            "0000-06-01",
            "2262-04-12T00:00:00Z",
            "9999-12-31 23:59:59",
        ] {
            assert!(parse_snapshot_time(bad, &ny()).is_err(), "{bad:?} parsed");
        }
        assert!(parse_snapshot_time("2262-04-11T00:00:00Z", &ny()).is_ok());
    }

    #[test]
    fn days_are_calendar_days_across_dst() {
        // DST ended in New York on 2026-11-01: 24 wall-clock hours back is 25 real hours.
        let now: Timestamp = "2026-11-01T17:00:00Z".parse().unwrap(); // 12:00 EST
        assert_eq!(parse("1 day ago", now, &ny()).unwrap().to_string(), "2026-10-31T16:00:00Z"); // 12:00 EDT
        assert_eq!(parse("24h", now, &ny()).unwrap().to_string(), "2026-10-31T17:00:00Z");
    }
}
