//! The one clock.
//!
//! All wall-clock time in Coffer comes from here, so tests of retention and point-in-time
//! restore can fix it: when `COFFER_FAKE_NOW` holds an RFC 3339 timestamp, `now()` returns it
//! (documented in docs/cli.md as a testing aid; it never changes what is read from disk).

use jiff::Timestamp;

/// The current time, or the time fixed by `COFFER_FAKE_NOW`.
pub fn now() -> Timestamp {
    if let Ok(s) = std::env::var("COFFER_FAKE_NOW") {
        if let Ok(ts) = s.parse::<Timestamp>() {
            return ts;
        }
    }
    Timestamp::now()
}

/// Nanoseconds since the Unix epoch for a timestamp, as stored on disk (i64); times beyond
/// i64's range (after 2262) saturate, so a time far in the future never wraps into the past
/// (a retention judged from it stays in force).
pub fn to_unix_ns(ts: Timestamp) -> i64 {
    i64::try_from(ts.as_nanosecond()).unwrap_or(if ts.as_nanosecond() < 0 { i64::MIN } else { i64::MAX })
}

/// The inverse of [`to_unix_ns`]; out-of-range values clamp to the epoch.
pub fn from_unix_ns(ns: i64) -> Timestamp {
    Timestamp::from_nanosecond(ns as i128).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A monotonic stopwatch for durations in summaries (not wall-clock time).
pub fn stopwatch() -> std::time::Instant {
    std::time::Instant::now()
}
