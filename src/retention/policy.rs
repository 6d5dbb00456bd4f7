//! Retention policies for `coffer forget`: restic's `ApplyPolicy`, reproduced exactly.
//!
//! Source: restic `internal/data/snapshot_policy.go`, `duration.go`, `tag_list.go`,
//! `snapshot_group.go` and `cmd/restic/cmd_forget.go` at commit
//! a80be1478a4c537f8396e0db2b05120aa78f11e0 (v0.19.1-213). The unit tests below replay
//! restic's own golden files (`testdata/`, see its README.md).
//!
//! Pure: no I/O, no clock. The caller passes "now" (restic's `time.Now()`).
//!
//! restic's algorithm, in short (see [`apply`]):
//! - the list is sorted newest first, stably (equal instants keep their input order);
//! - the reference for every `--keep-within*` is the newest snapshot that is strictly
//!   before `now` (none such: Go's zero time, 0001-01-01T00:00:00Z); the cutoff is
//!   `reference.AddDate(-y, -m, -d).Add(-h hours)` with Go's `AddDate` normalisation
//!   (2016-03-31 minus 1m is "2016-02-31", i.e. 2016-03-02, not 02-29), computed in the
//!   reference snapshot's own offset; a snapshot is within iff it is strictly after the
//!   cutoff;
//! - buckets (hour, day, ISO week, month, year) are cut in each snapshot's own offset;
//!   a bucket keeps a snapshot when its bucket value differs from the last *kept* value
//!   of that bucket and the count is not used up; "unlimited" never runs out;
//! - the oldest snapshot of the list is kept, as "oldest <reason>", by every bucket that
//!   still has counts left (or every within-bucket whose window it is in) even when its
//!   bucket value equals the last kept one; it uses up a count like any other;
//! - tags and `--keep-within` keep without counting.
//!
//! Coffer's own rule, applied *before* restic's algorithm and kept apart from it: items
//! with [`Item::untrusted_time`] (claimed time later than the storage's clock) are always
//! kept with [`UNTRUSTED_REASON`]; restic's algorithm then runs on the other items only, so
//! such an item never uses a count or a bucket, never is "the oldest", and never is the
//! reference for `--keep-within*`. With no untrusted items the result is restic's.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use jiff::{Timestamp, Zoned};

/// The only reason given for an item with [`Item::untrusted_time`].
pub const UNTRUSTED_REASON: &str = "future-dated (not counted)";

/// restic's `ErrNegativePolicyCount`.
pub const NEGATIVE_COUNT: &str = "negative values not allowed, use 'unlimited' instead";

// ---------------------------------------------------------------------------------------
// Duration (restic's data.Duration)

/// restic's `Duration`: calendar years, months, days and hours, e.g. `1y2m3d4h`.
///
/// Each component is set by its last occurrence (`1d2d` is 2 days); components may be
/// negative in the grammar (`1y-2m`), which `forget` then refuses ([`Policy::validate`]).
/// An all-zero duration means "not set".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Duration {
    pub years: i32,
    pub months: i32,
    pub days: i32,
    pub hours: i32,
}

impl Duration {
    /// restic's `ParseDuration`, with its error messages. The string is trimmed of
    /// (Unicode) white space; the empty string is the zero duration. Grammar: one or more
    /// `[-]<ASCII digits><unit>` with unit `y`, `m`, `d` or `h`.
    ///
    /// One deviation: a number that does not fit (restic panics on one beyond `int64`,
    /// Coffer's fields are `i32`) is an error, "number N is out of range".
    pub fn parse(s: &str) -> Result<Duration, String> {
        let mut d = Duration::default();
        let mut rest = s.trim().as_bytes();
        while !rest.is_empty() {
            let (num, after) = next_number(rest)?;
            let Some((&unit, after)) = after.split_first() else {
                return Err(format!("no unit found after number {num}"));
            };
            match unit {
                b'y' => d.years = num,
                b'm' => d.months = num,
                b'd' => d.days = num,
                b'h' => d.hours = num,
                // Go's %q of a byte: the byte taken as a rune (0xC3 prints as 'Ã').
                _ => {
                    let unit = go_quote_rune(char::from(unit));
                    return Err(format!("invalid unit {unit} found after number {num}"));
                }
            }
            rest = after;
        }
        Ok(d)
    }

    /// restic's `Zero`: all components zero ("not set").
    pub fn is_zero(&self) -> bool {
        self.years == 0 && self.months == 0 && self.days == 0 && self.hours == 0
    }

    /// Whether any component is negative (refused by `forget`).
    pub fn has_negative(&self) -> bool {
        self.years < 0 || self.months < 0 || self.days < 0 || self.hours < 0
    }
}

/// restic's `nextNumber`: an optional `-`, then ASCII digits (at least one).
fn next_number(input: &[u8]) -> Result<(i32, &[u8]), String> {
    let (negative, input) = match input.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, input),
    };
    let len = input.iter().take_while(|b| b.is_ascii_digit()).count();
    if len == 0 {
        return Err("no number found".to_string());
    }
    let (digits, rest) = input.split_at(len);
    let text = String::from_utf8_lossy(digits);
    let out_of_range = || format!("number {}{text} is out of range", if negative { "-" } else { "" });
    let mut n: i64 = 0;
    for &b in digits {
        n = n.checked_mul(10).and_then(|n| n.checked_add(i64::from(b - b'0'))).ok_or_else(out_of_range)?;
    }
    if negative {
        n = -n;
    }
    let n = i32::try_from(n).map_err(|_| out_of_range())?;
    Ok((n, rest))
}

/// restic's `Duration.String`: the non-zero components in the order y, m, d, h
/// (`5d7m` prints as `7m5d`); the zero duration prints as the empty string.
impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (v, unit) in [(self.years, 'y'), (self.months, 'm'), (self.days, 'd'), (self.hours, 'h')] {
            if v != 0 {
                write!(f, "{v}{unit}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Duration::parse(s)
    }
}

// ---------------------------------------------------------------------------------------
// Counts (restic's ForgetPolicyCount)

/// A `--keep-{last,hourly,daily,weekly,monthly,yearly}` count. `Limited(0)` means the
/// option is not given. restic stores these as `int` with -1 for "unlimited".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Count {
    Limited(u64),
    Unlimited,
}

impl Default for Count {
    fn default() -> Self {
        Count::Limited(0)
    }
}

impl Count {
    /// restic's integer form: -1 for unlimited.
    pub fn as_restic_int(self) -> i64 {
        match self {
            Count::Unlimited => -1,
            Count::Limited(n) => i64::try_from(n).unwrap_or(i64::MAX),
        }
    }

    pub fn is_zero(self) -> bool {
        self == Count::Limited(0)
    }
}

/// restic's `ForgetPolicyCount.Set`: exactly `unlimited`, or what Go's
/// `strconv.ParseInt(s, 10, 64)` accepts (optional `+`/`-`, ASCII digits, no spaces) that
/// is not negative. Coffer deliberately differs in one point: `-1` also means unlimited, as
/// in restic before 0.16 (which crontabs written for it still say); restic 0.16 and later
/// refuse it. Other negative counts are refused ([`NEGATIVE_COUNT`]); `-0` is 0. Errors are
/// restic's, e.g. `strconv.ParseInt: parsing "abc": invalid syntax`.
pub fn parse_count(s: &str) -> Result<Count, String> {
    if s == "unlimited" || s == "-1" {
        return Ok(Count::Unlimited);
    }
    let syntax = || format!("strconv.ParseInt: parsing {}: invalid syntax", go_quote(s));
    let range = || format!("strconv.ParseInt: parsing {}: value out of range", go_quote(s));
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() {
        return Err(syntax());
    }
    let mut n: u64 = 0;
    for b in digits.bytes() {
        if !b.is_ascii_digit() {
            return Err(syntax());
        }
        n = n.checked_mul(10).and_then(|n| n.checked_add(u64::from(b - b'0'))).ok_or_else(range)?;
    }
    let limit = if negative { 1u64 << 63 } else { (1u64 << 63) - 1 };
    if n > limit {
        return Err(range());
    }
    if negative && n != 0 {
        return Err(NEGATIVE_COUNT.to_string());
    }
    Ok(Count::Limited(n))
}

/// restic's `ForgetPolicyCount.String`.
impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count::Unlimited => f.write_str("unlimited"),
            Count::Limited(n) => write!(f, "{n}"),
        }
    }
}

impl FromStr for Count {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_count(s)
    }
}

/// restic's `splitTagList` (the value of one `--keep-tag`): split at commas, trim each
/// part; no part is dropped, so `""` is `[""]`, which matches the snapshots without tags.
pub fn parse_tag_list(s: &str) -> Vec<String> {
    s.split(',').map(|t| t.trim().to_string()).collect()
}

// ---------------------------------------------------------------------------------------
// Policy (restic's ExpirePolicy)

/// restic's `ExpirePolicy`. `within*` of `None` or of a zero duration are "not set".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub last: Count,
    pub hourly: Count,
    pub daily: Count,
    pub weekly: Count,
    pub monthly: Count,
    pub yearly: Count,
    pub within: Option<Duration>,
    pub within_hourly: Option<Duration>,
    pub within_daily: Option<Duration>,
    pub within_weekly: Option<Duration>,
    pub within_monthly: Option<Duration>,
    pub within_yearly: Option<Duration>,
    /// `--keep-tag`s: a snapshot is kept if it has all tags of at least one inner list
    /// (see [`has_tags`] for the empty-tag and empty-list cases).
    pub tags: Vec<Vec<String>>,
}

/// A `within*` that is given: `Some` and not zero.
fn given(d: &Option<Duration>) -> Option<Duration> {
    d.filter(|d| !d.is_zero())
}

impl Policy {
    fn counts(&self) -> [Count; 6] {
        [self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly]
    }

    fn within_buckets(&self) -> [Option<Duration>; 5] {
        [
            given(&self.within_hourly),
            given(&self.within_daily),
            given(&self.within_weekly),
            given(&self.within_monthly),
            given(&self.within_yearly),
        ]
    }

    /// restic's `Empty`: no count, no duration, no tag list. An empty policy removes
    /// everything, so `forget` refuses it ([`check_policy_given`]).
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
            && self.counts().iter().all(|c| c.is_zero())
            && given(&self.within).is_none()
            && self.within_buckets().iter().all(Option::is_none)
    }

    /// restic's `verifyForgetOptions` (counts cannot be below -1 here by construction).
    pub fn validate(&self) -> Result<(), String> {
        let durations = [
            &self.within,
            &self.within_hourly,
            &self.within_daily,
            &self.within_weekly,
            &self.within_monthly,
            &self.within_yearly,
        ];
        if durations.into_iter().flatten().any(Duration::has_negative) {
            return Err("durations containing negative values are not allowed for --keep-within*".to_string());
        }
        Ok(())
    }
}

/// restic's `ExpirePolicy.String`, printed as "Applying Policy: <this>", e.g.
/// `keep 7 daily, 2 weekly, all monthly snapshots and all snapshots with tags [[foo] [a, b]]
/// and all snapshots within 1y of the newest`; `remove` for the empty policy.
impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = ["latest", "hourly", "daily", "weekly", "monthly", "yearly"];
        let mut keeps = Vec::new();
        for (count, name) in self.counts().into_iter().zip(names) {
            match count {
                Count::Unlimited => keeps.push(format!("all {name}")),
                Count::Limited(0) => {}
                Count::Limited(n) => keeps.push(format!("{n} {name}")),
            }
        }
        let mut keepw = Vec::new();
        for (d, name) in self.within_buckets().into_iter().zip(["hourly", "daily", "weekly", "monthly", "yearly"]) {
            if let Some(d) = d {
                keepw.push(format!("{name} snapshots within {d}"));
            }
        }
        let mut s = String::new();
        if !keeps.is_empty() {
            s = format!("{} snapshots", keeps.join(", "));
        }
        if !keepw.is_empty() {
            if !s.is_empty() {
                s.push_str(", ");
            }
            s.push_str(&keepw.join(", "));
        }
        if !self.tags.is_empty() {
            if !s.is_empty() {
                s.push_str(" and ");
            }
            let lists: Vec<String> = self.tags.iter().map(|l| tag_list_string(l)).collect();
            let _ = write!(s, "all snapshots with tags [{}]", lists.join(" "));
        }
        if let Some(d) = given(&self.within) {
            if !s.is_empty() {
                s.push_str(" and ");
            }
            let _ = write!(s, "all snapshots within {d} of the newest");
        }
        if s.is_empty() {
            f.write_str("remove")
        } else {
            write!(f, "keep {s}")
        }
    }
}

/// restic's `TagList.String`: `[a, b]`.
fn tag_list_string(l: &[String]) -> String {
    format!("[{}]", l.join(", "))
}

/// restic's `Snapshot.HasTags`: every tag of `list` is among `tags`, except that an empty
/// tag reached while `tags` is empty matches at once. So `[""]` matches exactly the
/// untagged snapshots, and an empty list matches every snapshot.
pub fn has_tags(tags: &[String], list: &[String]) -> bool {
    for tag in list {
        if tag.is_empty() && tags.is_empty() {
            return true;
        }
        if !tags.contains(tag) {
            return false;
        }
    }
    true
}

// ---------------------------------------------------------------------------------------
// Applying a policy

/// One snapshot of a group, as the policy sees it.
#[derive(Clone, Debug)]
pub struct Item {
    /// The snapshot's time in its own recorded UTC offset: buckets (hour, day, ISO week,
    /// month, year) are cut in this time zone, and the `--keep-within*` cutoff is computed
    /// in the zone of the reference snapshot, as restic does with Go's `time.Time`.
    pub time: Zoned,
    pub tags: Vec<String>,
    /// Coffer's rule: the claimed time is later than the storage's clock. Such an item is
    /// always kept ([`UNTRUSTED_REASON`]) and left out of restic's algorithm.
    pub untrusted_time: bool,
}

/// restic's `KeepReason.Counters`: what is left of each count after this snapshot was
/// evaluated; -1 for unlimited, 0 for an unset or used-up count (restic's JSON omits 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    #[serde(skip_serializing_if = "is_zero")]
    pub last: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub hourly: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub daily: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub weekly: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub monthly: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub yearly: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// What [`apply`] decided for one item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Index of the item in the slice given to [`apply`].
    pub index: usize,
    pub keep: bool,
    /// restic's `KeepReason.Matches`, in restic's order: `has tags [a, b]` (per matching
    /// list), `within 1y2m`, then `last snapshot`, `hourly snapshot`, ... `yearly snapshot`
    /// (each possibly `oldest ...`), then `hourly within 1d` ... `yearly within 1d` (each
    /// possibly `oldest ...`). Empty iff not kept. [`UNTRUSTED_REASON`] alone for
    /// untrusted items.
    pub matches: Vec<String>,
    /// restic's counters after evaluating this item; `Some` exactly for kept trusted items
    /// (restic reports them only for kept snapshots).
    pub counters: Option<Counters>,
}

#[derive(Clone, Copy)]
enum Bucker {
    Always,
    Hour,
    Day,
    IsoWeek,
    Month,
    Year,
}

/// restic's bucket functions (`always`, `ymdh`, `ymd`, `yw`, `ym`, `y`), on the civil time
/// of `t` in its own zone; `nr` is the item's position in the sorted (trusted) list.
fn bucket_value(b: Bucker, t: &Zoned, nr: usize) -> i64 {
    let (y, m, d, h) = (i64::from(t.year()), i64::from(t.month()), i64::from(t.day()), i64::from(t.hour()));
    match b {
        Bucker::Always => i64::try_from(nr).unwrap_or(i64::MAX),
        Bucker::Hour => y * 1_000_000 + m * 10_000 + d * 100 + h,
        Bucker::Day => y * 10_000 + m * 100 + d,
        // Go's Time.ISOWeek: ISO 8601 week-numbering year and week.
        Bucker::IsoWeek => {
            let w = t.date().iso_week_date();
            i64::from(w.year()) * 100 + i64::from(w.week())
        }
        Bucker::Month => y * 100 + m,
        Bucker::Year => y,
    }
}

/// The reference time for `--keep-within*` (restic's `findLatestTimestamp`).
enum Reference<'a> {
    /// No snapshot is strictly before `now`: Go's zero `time.Time` (0001-01-01 UTC).
    GoZeroTime,
    At(&'a Zoned),
}

/// Go's zero time, in nanoseconds since the Unix epoch.
fn go_zero_time_ns() -> i128 {
    i128::from(days_from_civil(1, 1, 1)) * 86_400 * 1_000_000_000
}

/// Days since 1970-01-01 of a proleptic Gregorian date (month 1..=12, any year).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `reference.AddDate(-years, -months, -days).Add(time.Hour * time.Duration(-hours))`
/// exactly as Go computes it, in nanoseconds since the Unix epoch: months overflow into
/// years, then the day overflows across months (Go's `time.Date` normalisation), in the
/// reference's zone; the hours are an absolute duration (Go's int64 nanosecond product
/// wraps, and so does this).
fn within_cutoff(reference: &Reference, d: &Duration) -> i128 {
    let (year, month, day, hour, minute, second, nanos) = match reference {
        Reference::GoZeroTime => (1, 1, 1, 0, 0, 0, 0),
        Reference::At(z) => (
            i64::from(z.year()),
            i64::from(z.month()),
            i64::from(z.day()),
            i64::from(z.hour()),
            i64::from(z.minute()),
            i64::from(z.second()),
            i64::from(z.subsec_nanosecond()),
        ),
    };
    let m0 = month - 1 - i64::from(d.months);
    let y = year - i64::from(d.years) + m0.div_euclid(12);
    let m = m0.rem_euclid(12) + 1;
    let days = days_from_civil(y, m, 1) + day - i64::from(d.days) - 1;
    let local = i128::from(days) * 86_400 + i128::from(hour * 3600 + minute * 60 + second);
    let offset = match reference {
        Reference::GoZeroTime => 0,
        Reference::At(z) => go_zone_offset(z, local),
    };
    let hours = 3_600_000_000_000i64.wrapping_mul(-i64::from(d.hours));
    (local - offset) * 1_000_000_000 + i128::from(nanos) + i128::from(hours)
}

/// The UTC offset (seconds) Go's `time.Date` picks for the civil time `local` (seconds
/// since the epoch, read as if UTC) in the zone of `z`. For a fixed offset (what Coffer
/// records) that offset; for a rule-based zone Go's lookup: the offset at `local`, and if
/// that is not 0, the offset at `local - offset`.
fn go_zone_offset(z: &Zoned, local: i128) -> i128 {
    let tz = z.time_zone();
    if let Ok(off) = tz.to_fixed_offset() {
        return i128::from(off.seconds());
    }
    let lookup = |secs: i128| -> Option<i128> {
        let secs = i64::try_from(secs).ok()?;
        let ts = Timestamp::from_second(secs).ok()?;
        Some(i128::from(tz.to_offset(ts).seconds()))
    };
    match lookup(local) {
        None => i128::from(z.offset().seconds()),
        Some(0) => 0,
        Some(first) => lookup(local - first).unwrap_or(first),
    }
}

struct Bucket {
    count: i64,
    bucker: Bucker,
    last: i64,
    reason: &'static str,
}

struct WithinBucket {
    within: Duration,
    cutoff: i128,
    bucker: Bucker,
    last: i64,
    reason: &'static str,
}

/// Applies `policy` to the items of one snapshot group: restic's `ApplyPolicy` on the
/// trusted items, plus Coffer's untrusted-time rule (module docs). `now` is restic's
/// `time.Now()`: a snapshot at or after it is not the `--keep-within*` reference (it is
/// still counted — that is restic's rule, distinct from `untrusted_time`).
///
/// Returns one decision per item, newest first (stable: equal instants keep the order of
/// `items`), which is the order restic lists `keep`, `remove` and `reasons` in.
pub fn apply(items: &[Item], policy: &Policy, now: Timestamp) -> Vec<Decision> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| items[b].time.timestamp().cmp(&items[a].time.timestamp()));
    let trusted_len = order.iter().filter(|&&i| !items[i].untrusted_time).count();

    // findLatestTimestamp: strictly after the previous best (starting from Go's zero
    // time), strictly before now; the first of equal instants wins.
    let now_ns = now.as_nanosecond();
    let mut reference = Reference::GoZeroTime;
    let mut latest_ns = go_zero_time_ns();
    for &i in order.iter().filter(|&&i| !items[i].untrusted_time) {
        let t = items[i].time.timestamp().as_nanosecond();
        if t > latest_ns && t < now_ns {
            latest_ns = t;
            reference = Reference::At(&items[i].time);
        }
    }

    let bucket = |count: Count, bucker, reason| Bucket { count: count.as_restic_int(), bucker, last: -1, reason };
    let mut buckets = [
        bucket(policy.last, Bucker::Always, "last snapshot"),
        bucket(policy.hourly, Bucker::Hour, "hourly snapshot"),
        bucket(policy.daily, Bucker::Day, "daily snapshot"),
        bucket(policy.weekly, Bucker::IsoWeek, "weekly snapshot"),
        bucket(policy.monthly, Bucker::Month, "monthly snapshot"),
        bucket(policy.yearly, Bucker::Year, "yearly snapshot"),
    ];
    let kinds = [
        (Bucker::Hour, "hourly within"),
        (Bucker::Day, "daily within"),
        (Bucker::IsoWeek, "weekly within"),
        (Bucker::Month, "monthly within"),
        (Bucker::Year, "yearly within"),
    ];
    let mut within_buckets: Vec<WithinBucket> = policy
        .within_buckets()
        .into_iter()
        .zip(kinds)
        .filter_map(|(d, (bucker, reason))| {
            d.map(|within| WithinBucket {
                within,
                cutoff: within_cutoff(&reference, &within),
                bucker,
                last: -1,
                reason,
            })
        })
        .collect();
    let within = given(&policy.within).map(|d| (d, within_cutoff(&reference, &d)));

    let mut out = Vec::with_capacity(items.len());
    let mut nr = 0usize;
    for &index in &order {
        let cur = &items[index];
        if cur.untrusted_time {
            out.push(Decision { index, keep: true, matches: vec![UNTRUSTED_REASON.to_string()], counters: None });
            continue;
        }
        let oldest = nr + 1 == trusted_len;
        let t = cur.time.timestamp().as_nanosecond();
        let mut matches = Vec::new();

        // Tags are not counted.
        for list in &policy.tags {
            if has_tags(&cur.tags, list) {
                matches.push(format!("has tags {}", tag_list_string(list)));
            }
        }
        if let Some((d, cutoff)) = within {
            if t > cutoff {
                matches.push(format!("within {d}"));
            }
        }
        for b in buckets.iter_mut() {
            if b.count > 0 || b.count == -1 {
                let val = bucket_value(b.bucker, &cur.time, nr);
                if val != b.last || oldest {
                    matches.push(if val == b.last { format!("oldest {}", b.reason) } else { b.reason.to_string() });
                    b.last = val;
                    if b.count > 0 {
                        b.count -= 1;
                    }
                }
            }
        }
        for b in within_buckets.iter_mut() {
            if t > b.cutoff {
                let val = bucket_value(b.bucker, &cur.time, nr);
                if val != b.last || oldest {
                    let reason = if val == b.last { format!("oldest {}", b.reason) } else { b.reason.to_string() };
                    matches.push(format!("{reason} {}", b.within));
                    b.last = val;
                }
            }
        }

        let keep = !matches.is_empty();
        let counters = keep.then_some(Counters {
            last: buckets[0].count,
            hourly: buckets[1].count,
            daily: buckets[2].count,
            weekly: buckets[3].count,
            monthly: buckets[4].count,
            yearly: buckets[5].count,
        });
        out.push(Decision { index, keep, matches, counters });
        nr += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------
// The guards of restic's `forget`

/// restic's check before applying a policy: an empty policy is refused, unless
/// `--unsafe-allow-remove-all` is given together with a snapshot filter (host, tag, path).
pub fn check_policy_given(policy: &Policy, unsafe_allow_remove_all: bool, filter_given: bool) -> Result<(), String> {
    if !policy.is_empty() {
        return Ok(());
    }
    if !unsafe_allow_remove_all {
        return Err("no policy was specified, no snapshots will be removed".to_string());
    }
    if !filter_given {
        return Err("--unsafe-allow-remove-all is not allowed unless a snapshot filter option is specified".to_string());
    }
    Ok(())
}

/// restic's per-group guard: a non-empty policy that keeps nothing of a group aborts the
/// whole `forget` (nothing is removed) with `refusing to delete last snapshot of snapshot
/// group "<group>"` (`group` as [`GroupKey`]'s Display). Coffer's variant: only trusted
/// items count, so a group whose trusted items would all go is refused even though its
/// future-dated items stay. A group with no trusted item passes.
pub fn check_group_keeps_something(
    policy: &Policy,
    items: &[Item],
    decisions: &[Decision],
    group: &str,
) -> Result<(), String> {
    let trusted = |d: &&Decision| items.get(d.index).is_some_and(|i| !i.untrusted_time);
    let any_trusted = decisions.iter().any(|d| trusted(&d));
    let kept_trusted = decisions.iter().filter(trusted).any(|d| d.keep);
    if !policy.is_empty() && any_trusted && !kept_trusted {
        return Err(format!("refusing to delete last snapshot of snapshot group \"{group}\""));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Grouping (restic's snapshot_group.go)

/// restic's `--group-by`; the default is host and paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy { host: true, paths: true, tags: false }
    }
}

impl GroupBy {
    /// restic's `splitSnapshotGroupBy`: comma-separated `host`/`hosts`, `path`/`paths`,
    /// `tag`/`tags`; empty parts are ignored, so `""` disables grouping.
    pub fn parse(s: &str) -> Result<GroupBy, String> {
        let mut g = GroupBy { host: false, paths: false, tags: false };
        for option in s.split(',') {
            match option {
                "host" | "hosts" => g.host = true,
                "path" | "paths" => g.paths = true,
                "tag" | "tags" => g.tags = true,
                "" => {}
                _ => return Err(format!("unknown grouping option: {}", go_quote(option))),
            }
        }
        Ok(g)
    }
}

/// restic's `SnapshotGroupByOptions.String`: `host,paths,tags` (the ones set).
impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = [(self.host, "host"), (self.paths, "paths"), (self.tags, "tags")]
            .iter()
            .filter(|p| p.0)
            .map(|p| p.1)
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// restic's `SnapshotGroupKey`: the fields not grouped by are empty; paths and tags are
/// sorted (bytewise).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct GroupKey {
    pub host: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
}

impl GroupKey {
    pub fn new(by: GroupBy, host: &str, paths: &[String], tags: &[String]) -> GroupKey {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        GroupKey {
            host: if by.host { host.to_string() } else { String::new() },
            paths: if by.paths { sorted(paths) } else { Vec::new() },
            tags: if by.tags { sorted(tags) } else { Vec::new() },
        }
    }
}

/// restic's `SnapshotGroupKey.String`: `host h, path [/a /b], tags [x y]` (Go's `%v` of a
/// string slice: space-separated in brackets), the empty parts left out.
impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.host.is_empty() {
            parts.push(format!("host {}", self.host));
        }
        if !self.paths.is_empty() {
            parts.push(format!("path [{}]", self.paths.join(" ")));
        }
        if !self.tags.is_empty() {
            parts.push(format!("tags [{}]", self.tags.join(" ")));
        }
        f.write_str(&parts.join(", "))
    }
}

// ---------------------------------------------------------------------------------------
// Go's quoting, for restic's error messages

/// Go's `strconv.IsPrint`, exact for Latin-1, approximate beyond (no control, no space).
fn go_is_print(c: char) -> bool {
    match c as u32 {
        0x20..=0x7e => true,
        0xa1..=0xff => c != '\u{ad}',
        0..=0xa0 => false,
        _ => !c.is_control() && !c.is_whitespace(),
    }
}

fn go_escape(out: &mut String, c: char, quote: char) {
    match c {
        _ if c == quote || c == '\\' => {
            out.push('\\');
            out.push(c);
        }
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        _ if go_is_print(c) => out.push(c),
        _ if (c as u32) < 0x20 || c as u32 == 0x7f => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        _ if (c as u32) < 0x10000 => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        _ => {
            let _ = write!(out, "\\U{:08x}", c as u32);
        }
    }
}

/// Go's `strconv.Quote` (`%q` of a string).
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    s.chars().for_each(|c| go_escape(&mut out, c, '"'));
    out.push('"');
    out
}

/// Go's `strconv.QuoteRune` (`%q` of an integer).
fn go_quote_rune(c: char) -> String {
    let mut out = String::from("'");
    go_escape(&mut out, c, '\'');
    out.push('\'');
    out
}

// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::tz::{Offset, TimeZone};
    use proptest::prelude::*;
    use std::path::PathBuf;

    fn testdata() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/retention/testdata")
    }

    /// A snapshot as restic's JSON has it (extra fields such as "tree" are ignored).
    #[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
    struct Snap {
        time: String,
        #[serde(default)]
        tags: Option<Vec<String>>,
        #[serde(default)]
        paths: Option<Vec<String>>,
    }

    #[derive(Debug, Default, PartialEq, Eq, serde::Deserialize)]
    struct GoldenCounters {
        #[serde(default)]
        last: i64,
        #[serde(default)]
        hourly: i64,
        #[serde(default)]
        daily: i64,
        #[serde(default)]
        weekly: i64,
        #[serde(default)]
        monthly: i64,
        #[serde(default)]
        yearly: i64,
    }

    #[derive(Debug, serde::Deserialize)]
    struct GoldenReason {
        snapshot: Snap,
        matches: Vec<String>,
        counters: GoldenCounters,
    }

    #[derive(Debug, serde::Deserialize)]
    struct Golden {
        keep: Option<Vec<Snap>>,
        #[serde(default)]
        reasons: Option<Vec<GoldenReason>>,
    }

    fn read(name: &str) -> String {
        let path = testdata().join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// restic's `testExpireSnapshots`; restic parses them with `parseTimeUTC`, i.e. in UTC.
    fn test_snapshots() -> Vec<Snap> {
        serde_json::from_str(&read("snapshots.json")).unwrap()
    }

    fn utc(s: &str) -> Zoned {
        s.parse::<Timestamp>().unwrap().to_zoned(TimeZone::UTC)
    }

    fn at(s: &str) -> Zoned {
        // RFC 3339 with an offset; kept in that fixed offset, as Coffer records it.
        let ts: Timestamp = s.parse().unwrap();
        let off = s.rfind(['+', '-']).filter(|&i| i > 10).map(|i| &s[i..]).unwrap_or("+00:00");
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (h, m): (i32, i32) = (off[1..3].parse().unwrap(), off[4..6].parse().unwrap());
        ts.to_zoned(TimeZone::fixed(Offset::from_seconds(sign * (h * 3600 + m * 60)).unwrap()))
    }

    fn item(time: Zoned, tags: &[&str]) -> Item {
        Item { time, tags: tags.iter().map(|t| t.to_string()).collect(), untrusted_time: false }
    }

    fn now() -> Timestamp {
        "2030-01-01T00:00:00Z".parse().unwrap()
    }

    /// The policies of restic's TestApplyPolicy, in order (testdata/policies.json).
    fn test_policies() -> Vec<Policy> {
        let v: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(&read("policies.json")).unwrap();
        v.into_iter()
            .map(|m| {
                let mut p = Policy::default();
                for (k, v) in m {
                    let count = || match v.as_i64().unwrap() {
                        -1 => Count::Unlimited,
                        n => Count::Limited(u64::try_from(n).unwrap()),
                    };
                    let dur = || Some(Duration::parse(v.as_str().unwrap()).unwrap());
                    match k.as_str() {
                        "last" => p.last = count(),
                        "hourly" => p.hourly = count(),
                        "daily" => p.daily = count(),
                        "weekly" => p.weekly = count(),
                        "monthly" => p.monthly = count(),
                        "yearly" => p.yearly = count(),
                        "within" => p.within = dur(),
                        "within_hourly" => p.within_hourly = dur(),
                        "within_daily" => p.within_daily = dur(),
                        "within_weekly" => p.within_weekly = dur(),
                        "within_monthly" => p.within_monthly = dur(),
                        "within_yearly" => p.within_yearly = dur(),
                        "tags" => p.tags = serde_json::from_value(v.clone()).unwrap(),
                        other => panic!("unknown policy key {other}"),
                    }
                }
                p
            })
            .collect()
    }

    /// restic's policySum: the most a policy may keep; 0 if some count is unlimited.
    fn policy_sum(p: &Policy) -> u64 {
        let counts = p.counts();
        if counts.contains(&Count::Unlimited) {
            return 0;
        }
        counts.iter().map(|c| if let Count::Limited(n) = c { *n } else { 0 }).sum()
    }

    #[test]
    fn restic_golden_files() {
        let snaps = test_snapshots();
        assert_eq!(snaps.len(), 103);
        let items: Vec<Item> = snaps
            .iter()
            .map(|s| Item { time: utc(&s.time), tags: s.tags.clone().unwrap_or_default(), untrusted_time: false })
            .collect();
        let policies = test_policies();
        assert_eq!(policies.len(), 40);
        for (n, p) in policies.iter().enumerate() {
            let golden: Golden = serde_json::from_str(&read(&format!("policy_keep_snapshots_{n}"))).unwrap();
            let decisions = apply(&items, p, now());
            assert_eq!(decisions.len(), items.len(), "policy {n}");

            let kept: Vec<&Decision> = decisions.iter().filter(|d| d.keep).collect();
            if policy_sum(p) > 0 {
                assert!(kept.len() as u64 <= policy_sum(p), "policy {n}: too many kept");
            }
            let kept_snaps: Vec<Snap> = kept.iter().map(|d| snaps[d.index].clone()).collect();
            assert_eq!(kept_snaps, golden.keep.unwrap_or_default(), "policy {n} ({p}): kept snapshots");

            let reasons = golden.reasons.unwrap_or_default();
            assert_eq!(kept.len(), reasons.len(), "policy {n}: number of reasons");
            for (d, r) in kept.iter().zip(&reasons) {
                assert_eq!(snaps[d.index], r.snapshot, "policy {n}: reason's snapshot");
                assert_eq!(d.matches, r.matches, "policy {n}: matches of {}", r.snapshot.time);
                let c = d.counters.unwrap();
                let got = GoldenCounters {
                    last: c.last,
                    hourly: c.hourly,
                    daily: c.daily,
                    weekly: c.weekly,
                    monthly: c.monthly,
                    yearly: c.yearly,
                };
                assert_eq!(got, r.counters, "policy {n}: counters of {}", r.snapshot.time);
            }
        }
    }

    #[test]
    fn empty_policy() {
        // restic's TestExpireSnapshotOps.
        assert!(Policy::default().is_empty());
        assert!(Policy { tags: vec![], ..Policy::default() }.is_empty());
        assert!(Policy { within: Some(Duration::default()), ..Policy::default() }.is_empty());
        assert!(!Policy { tags: vec![vec![]], ..Policy::default() }.is_empty());
        let p = Policy {
            daily: Count::Limited(7),
            weekly: Count::Limited(2),
            monthly: Count::Limited(3),
            yearly: Count::Limited(10),
            ..Policy::default()
        };
        assert!(!p.is_empty());
        assert_eq!(policy_sum(&p), 22);

        assert_eq!(
            check_policy_given(&Policy::default(), false, true).unwrap_err(),
            "no policy was specified, no snapshots will be removed"
        );
        assert_eq!(
            check_policy_given(&Policy::default(), true, false).unwrap_err(),
            "--unsafe-allow-remove-all is not allowed unless a snapshot filter option is specified"
        );
        assert!(check_policy_given(&Policy::default(), true, true).is_ok());
        assert!(check_policy_given(&p, false, false).is_ok());
    }

    #[test]
    fn duration_parse_like_restic() {
        let d = |y, m, dd, h| Duration { years: y, months: m, days: dd, hours: h };
        // restic's TestParseDuration.
        for (input, want, shown) in [
            ("9h", d(0, 0, 0, 9), "9h"),
            ("3d", d(0, 0, 3, 0), "3d"),
            ("4d2h", d(0, 0, 4, 2), "4d2h"),
            ("7m5d", d(0, 7, 5, 0), "7m5d"),
            ("6m4d8h", d(0, 6, 4, 8), "6m4d8h"),
            ("5d7m", d(0, 7, 5, 0), "7m5d"),
            ("4h3d9m", d(0, 9, 3, 4), "9m3d4h"),
            ("-7m5d", d(0, -7, 5, 0), "-7m5d"),
            ("1y4m-5d-3h", d(1, 4, -5, -3), "1y4m-5d-3h"),
            ("2y7m-5d", d(2, 7, -5, 0), "2y7m-5d"),
            // and more of the same grammar
            ("", d(0, 0, 0, 0), ""),
            ("  1y\t", d(1, 0, 0, 0), "1y"),
            ("1d2d", d(0, 0, 2, 0), "2d"),
            ("0d", d(0, 0, 0, 0), ""),
            ("007h", d(0, 0, 0, 7), "7h"),
        ] {
            let got = Duration::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(got, want, "{input:?}");
            assert_eq!(got.to_string(), shown, "{input:?}");
        }
        for (input, err) in [
            ("2w", "invalid unit 'w' found after number 2"),
            ("1y4m3w1d", "invalid unit 'w' found after number 3"),
            ("s", "no number found"),
            ("\u{7c0}", "no number found"), // NKO DIGIT ZERO: ASCII digits only
            ("5", "no unit found after number 5"),
            ("-", "no number found"),
            ("--5d", "no number found"),
            ("+5d", "no number found"),
            ("5 d", "invalid unit ' ' found after number 5"),
            ("5ß", "invalid unit 'Ã' found after number 5"), // the first byte, 0xC3, as a rune
            ("5D", "invalid unit 'D' found after number 5"),
            ("3000000000h", "number 3000000000 is out of range"),
        ] {
            assert_eq!(Duration::parse(input).unwrap_err(), err, "{input:?}");
        }
        assert!(d(0, 0, 0, 0).is_zero());
        assert!(d(1, -1, 0, 0).has_negative());
        let p = Policy { within_daily: Some(d(0, 0, -1, 0)), ..Policy::default() };
        assert_eq!(
            p.validate().unwrap_err(),
            "durations containing negative values are not allowed for --keep-within*"
        );
        assert!(Policy { within: Some(d(1, 2, 3, 4)), ..Policy::default() }.validate().is_ok());
    }

    #[test]
    fn counts_like_restic() {
        // restic's TestForgetPolicyValues, and Go ParseInt's corners.
        assert_eq!(parse_count("0").unwrap(), Count::Limited(0));
        assert_eq!(parse_count("1").unwrap(), Count::Limited(1));
        assert_eq!(parse_count("unlimited").unwrap(), Count::Unlimited);
        assert_eq!(parse_count("+3").unwrap(), Count::Limited(3));
        assert_eq!(parse_count("-0").unwrap(), Count::Limited(0));
        assert_eq!(parse_count("9223372036854775807").unwrap(), Count::Limited(i64::MAX as u64));
        assert_eq!(parse_count("").unwrap_err(), "strconv.ParseInt: parsing \"\": invalid syntax");
        // Coffer accepts -1 as unlimited (restic before 0.16); any other negative count is refused.
        assert_eq!(parse_count("-1").unwrap(), Count::Unlimited);
        assert_eq!(parse_count("-2").unwrap_err(), NEGATIVE_COUNT);
        assert_eq!(parse_count("abc").unwrap_err(), "strconv.ParseInt: parsing \"abc\": invalid syntax");
        assert_eq!(parse_count("Unlimited").unwrap_err(), "strconv.ParseInt: parsing \"Unlimited\": invalid syntax");
        assert_eq!(parse_count(" 1").unwrap_err(), "strconv.ParseInt: parsing \" 1\": invalid syntax");
        assert_eq!(parse_count("+").unwrap_err(), "strconv.ParseInt: parsing \"+\": invalid syntax");
        assert_eq!(
            parse_count("9223372036854775808").unwrap_err(),
            "strconv.ParseInt: parsing \"9223372036854775808\": value out of range"
        );
        assert_eq!(
            parse_count("-99999999999999999999").unwrap_err(),
            "strconv.ParseInt: parsing \"-99999999999999999999\": value out of range"
        );
        assert_eq!(parse_count("-9223372036854775808").unwrap_err(), NEGATIVE_COUNT);
        assert_eq!(parse_count("a\tb").unwrap_err(), "strconv.ParseInt: parsing \"a\\tb\": invalid syntax");
        assert_eq!(Count::Unlimited.to_string(), "unlimited");
        assert_eq!(Count::Limited(5).to_string(), "5");
        assert_eq!(Count::Unlimited.as_restic_int(), -1);
    }

    #[test]
    fn policy_display_like_restic() {
        assert_eq!(Policy::default().to_string(), "remove");
        let p = Policy {
            last: Count::Limited(3),
            daily: Count::Limited(7),
            monthly: Count::Unlimited,
            within_weekly: Some(Duration::parse("1m").unwrap()),
            within_yearly: Some(Duration::parse("9y").unwrap()),
            tags: vec![vec!["foo".into()], vec!["a".into(), "b".into()]],
            within: Some(Duration::parse("1y").unwrap()),
            ..Policy::default()
        };
        assert_eq!(
            p.to_string(),
            "keep 3 latest, 7 daily, all monthly snapshots, weekly snapshots within 1m, yearly snapshots within 9y \
             and all snapshots with tags [[foo] [a, b]] and all snapshots within 1y of the newest"
        );
        let p = Policy { within: Some(Duration::parse("2d").unwrap()), ..Policy::default() };
        assert_eq!(p.to_string(), "keep all snapshots within 2d of the newest");
    }

    #[test]
    fn tag_matching_like_restic() {
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(has_tags(&t(&["foo", "bar"]), &t(&["foo", "bar"])));
        assert!(!has_tags(&t(&["foo"]), &t(&["foo", "bar"])));
        assert!(has_tags(&t(&[]), &t(&[""])));
        assert!(!has_tags(&t(&["foo"]), &t(&[""])));
        assert!(has_tags(&t(&["foo"]), &t(&[])));
        assert!(has_tags(&t(&[]), &t(&[])));
        assert!(has_tags(&t(&[]), &t(&["", "foo"])));
        assert!(!has_tags(&t(&["foo"]), &t(&["", "foo"])));
        assert_eq!(parse_tag_list(" a, b ,"), t(&["a", "b", ""]));
        assert_eq!(parse_tag_list(""), t(&[""]));

        let items = [item(utc("2016-01-02T00:00:00Z"), &["x"]), item(utc("2016-01-01T00:00:00Z"), &[])];
        let p = Policy { tags: vec![t(&[""]), t(&[])], ..Policy::default() };
        let d = apply(&items, &p, now());
        assert_eq!(d[0].matches, ["has tags []"]);
        assert_eq!(d[1].matches, ["has tags []", "has tags []"]);
    }

    #[test]
    fn keep_within_is_strict_and_uses_go_add_date() {
        // Exactly at the cutoff is not within; one nanosecond later is.
        let items = [
            item(utc("2016-01-10T00:00:00Z"), &[]),
            item(utc("2016-01-09T00:00:00.000000001Z"), &[]),
            item(utc("2016-01-09T00:00:00Z"), &[]),
        ];
        let p = Policy { within: Some(Duration::parse("1d").unwrap()), ..Policy::default() };
        let keep: Vec<bool> = apply(&items, &p, now()).iter().map(|d| d.keep).collect();
        assert_eq!(keep, [true, true, false]);

        // Go's AddDate: 2016-03-31 minus 1 month is 2016-02-31, normalised to 03-02 (a
        // clamping library would give 02-29 and keep 03-01).
        let items = [
            item(utc("2016-03-31T00:00:00Z"), &[]),
            item(utc("2016-03-02T00:00:01Z"), &[]),
            item(utc("2016-03-02T00:00:00Z"), &[]),
            item(utc("2016-03-01T00:00:00Z"), &[]),
        ];
        let p = Policy { within: Some(Duration::parse("1m").unwrap()), ..Policy::default() };
        let keep: Vec<bool> = apply(&items, &p, now()).iter().map(|d| d.keep).collect();
        assert_eq!(keep, [true, true, false, false]);

        // The calendar part is taken in the reference's own offset, the hours are absolute.
        let reference = at("2016-03-31T00:30:00+02:00"); // 2016-03-30T22:30Z
        let cutoff = within_cutoff(&Reference::At(&reference), &Duration::parse("1m2h").unwrap());
        // civil 2016-03-02T00:30+02:00 = 2016-03-01T22:30Z, minus 2h = 20:30Z
        assert_eq!(cutoff, utc("2016-03-01T20:30:00Z").timestamp().as_nanosecond());

        // A snapshot at or after `now` is not the reference (restic's rule), but counts.
        let items = [
            item(utc("2016-01-20T00:00:00Z"), &[]),
            item(utc("2016-01-10T00:00:00Z"), &[]),
            item(utc("2016-01-09T12:00:00Z"), &[]),
            item(utc("2016-01-08T00:00:00Z"), &[]),
        ];
        let p = Policy { within: Some(Duration::parse("1d").unwrap()), ..Policy::default() };
        let now: Timestamp = "2016-01-15T00:00:00Z".parse().unwrap();
        let keep: Vec<bool> = apply(&items, &p, now).iter().map(|d| d.keep).collect();
        assert_eq!(keep, [true, true, true, false]);
        // Nothing before now: the reference is Go's zero time, so everything is within.
        let early: Timestamp = "2000-01-01T00:00:00Z".parse().unwrap();
        assert!(apply(&items, &p, early).iter().all(|d| d.keep && d.matches == ["within 1d"]));
        // Durations beyond jiff's range behave as in Go (everything is within).
        let p = Policy { within: Some(Duration::parse("99999y").unwrap()), ..Policy::default() };
        assert!(apply(&items, &p, now).iter().all(|d| d.keep));
    }

    #[test]
    fn buckets_are_cut_in_each_snapshots_own_offset() {
        let daily3 = Policy { daily: Count::Limited(3), ..Policy::default() };
        let utc_items = [
            item(at("2016-01-02T00:30:00+00:00"), &[]),
            item(at("2016-01-01T23:30:00+00:00"), &[]),
            item(at("2015-12-30T12:00:00+00:00"), &[]),
        ];
        let keep: Vec<bool> = apply(&utc_items, &daily3, now()).iter().map(|d| d.keep).collect();
        assert_eq!(keep, [true, true, true]);
        // The same instants recorded at +02:00: the first two fall on the same day.
        let plus2 = [
            item(at("2016-01-02T02:30:00+02:00"), &[]),
            item(at("2016-01-02T01:30:00+02:00"), &[]),
            item(at("2015-12-30T14:00:00+02:00"), &[]),
        ];
        let d = apply(&plus2, &daily3, now());
        assert_eq!(d.iter().map(|d| d.keep).collect::<Vec<_>>(), [true, false, true]);
        assert_eq!(d[2].matches, ["daily snapshot"]);
        assert_eq!(d[2].counters.unwrap().daily, 1);
    }

    #[test]
    fn iso_weeks_like_go() {
        // 2021-01-03 (Sunday) is in 2020-W53, as is 2020-12-28; 2021-01-04 is 2021-W01.
        let items = [
            item(utc("2021-01-04T12:00:00Z"), &[]),
            item(utc("2021-01-03T12:00:00Z"), &[]),
            item(utc("2020-12-28T12:00:00Z"), &[]),
            item(utc("2020-12-27T12:00:00Z"), &[]),
            item(utc("2020-12-20T12:00:00Z"), &[]),
        ];
        let p = Policy { weekly: Count::Unlimited, ..Policy::default() };
        let d = apply(&items, &p, now());
        assert_eq!(d.iter().map(|d| d.keep).collect::<Vec<_>>(), [true, true, false, true, true]);
        assert_eq!(bucket_value(Bucker::IsoWeek, &items[1].time, 0), 202053);
        assert_eq!(d[4].counters.unwrap().weekly, -1);
    }

    #[test]
    fn oldest_rule_and_ties() {
        let items = [
            item(utc("2016-01-20T00:00:00Z"), &[]),
            item(utc("2016-01-10T00:00:00Z"), &[]),
            item(utc("2016-01-05T00:00:00Z"), &[]),
        ];
        let monthly = |n| Policy { monthly: Count::Limited(n), ..Policy::default() };
        let d = apply(&items, &monthly(2), now());
        assert_eq!(
            d.iter().map(|d| d.matches.clone()).collect::<Vec<_>>(),
            [vec!["monthly snapshot".to_string()], vec![], vec!["oldest monthly snapshot".to_string()],]
        );
        assert_eq!(d[2].counters.unwrap().monthly, 0);
        assert_eq!(d[1].counters, None);
        let d = apply(&items, &monthly(1), now());
        assert_eq!(d.iter().map(|d| d.keep).collect::<Vec<_>>(), [true, false, false]);
        // Within-buckets: the oldest is kept only if it is in the window.
        let p = Policy { within_monthly: Some(Duration::parse("1y").unwrap()), ..Policy::default() };
        let d = apply(&items, &p, now());
        assert_eq!(d[2].matches, ["oldest monthly within 1y"]);
        let p = Policy { within_monthly: Some(Duration::parse("12d").unwrap()), ..Policy::default() };
        assert!(!apply(&items, &p, now())[2].keep);

        // Equal instants keep their input order (Go's sort.Stable), whatever the offset.
        let items = [
            item(at("2016-01-01T10:00:00+00:00"), &["a"]),
            item(at("2016-01-01T12:00:00+02:00"), &["b"]),
            item(at("2016-01-02T00:00:00+00:00"), &["c"]),
        ];
        let d = apply(&items, &Policy { last: Count::Limited(1), ..Policy::default() }, now());
        assert_eq!(d.iter().map(|d| d.index).collect::<Vec<_>>(), [2, 0, 1]);
        assert_eq!(d.iter().map(|d| d.keep).collect::<Vec<_>>(), [true, false, false]);
    }

    #[test]
    fn untrusted_items_are_kept_and_not_counted() {
        let mut items = vec![
            item(utc("2016-01-30T00:00:00Z"), &[]), // future-dated
            item(utc("2016-01-10T00:00:00Z"), &[]),
            item(utc("2016-01-09T00:00:00Z"), &[]),
            item(utc("2016-01-08T00:00:00Z"), &[]),
        ];
        items[0].untrusted_time = true;
        let last1 = Policy { last: Count::Limited(1), ..Policy::default() };
        let d = apply(&items, &last1, now());
        assert_eq!(d[0].matches, [UNTRUSTED_REASON]);
        assert_eq!(d[0].counters, None);
        assert_eq!(d[1].matches, ["last snapshot"]);
        assert_eq!(d.iter().map(|d| d.keep).collect::<Vec<_>>(), [true, true, false, false]);

        // Not the keep-within reference: the window ends at the newest trusted item.
        let p = Policy { within: Some(Duration::parse("1d").unwrap()), ..Policy::default() };
        let d = apply(&items, &p, now());
        assert_eq!(d.iter().map(|d| d.keep).collect::<Vec<_>>(), [true, true, false, false]);
        // Without the flag, restic's algorithm alone would anchor on it.
        items[0].untrusted_time = false;
        let d = apply(&items, &p, now());
        assert_eq!(d.iter().map(|d| d.keep).collect::<Vec<_>>(), [true, false, false, false]);

        // Never "the oldest": an untrusted oldest item leaves the trusted oldest to the rule.
        let mut items = vec![
            item(utc("2016-01-20T00:00:00Z"), &[]),
            item(utc("2016-01-10T00:00:00Z"), &[]),
            item(utc("2016-01-05T00:00:00Z"), &[]),
        ];
        items[2].untrusted_time = true;
        let d = apply(&items, &Policy { monthly: Count::Limited(2), ..Policy::default() }, now());
        assert_eq!(d[1].matches, ["oldest monthly snapshot"]);
        assert_eq!(d[2].matches, [UNTRUSTED_REASON]);

        // The guard looks at trusted items only.
        let only_tag = Policy { tags: vec![vec!["nope".into()]], ..Policy::default() };
        let d = apply(&items, &only_tag, now());
        assert_eq!(
            check_group_keeps_something(&only_tag, &items, &d, "host h").unwrap_err(),
            "refusing to delete last snapshot of snapshot group \"host h\""
        );
        let all_untrusted: Vec<Item> = items.iter().cloned().map(|i| Item { untrusted_time: true, ..i }).collect();
        let d = apply(&all_untrusted, &only_tag, now());
        assert!(d.iter().all(|d| d.keep));
        assert!(check_group_keeps_something(&only_tag, &all_untrusted, &d, "host h").is_ok());
    }

    #[test]
    fn grouping_like_restic() {
        assert_eq!(GroupBy::parse("host,paths").unwrap(), GroupBy::default());
        assert_eq!(GroupBy::parse("hosts,tag,").unwrap(), GroupBy { host: true, paths: false, tags: true });
        assert_eq!(GroupBy::parse("").unwrap(), GroupBy { host: false, paths: false, tags: false });
        assert_eq!(GroupBy::parse("host,x").unwrap_err(), "unknown grouping option: \"x\"");
        assert_eq!(GroupBy::parse(" host").unwrap_err(), "unknown grouping option: \" host\"");
        assert_eq!(GroupBy { host: true, paths: true, tags: true }.to_string(), "host,paths,tags");
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let k = GroupKey::new(GroupBy::default(), "example", &s(&["/b", "/a"]), &s(&["t"]));
        assert_eq!(k, GroupKey { host: "example".into(), paths: s(&["/a", "/b"]), tags: vec![] });
        assert_eq!(k.to_string(), "host example, path [/a /b]");
        let k = GroupKey::new(GroupBy { host: false, paths: false, tags: true }, "h", &[], &s(&["y", "x"]));
        assert_eq!(k.to_string(), "tags [x y]");
    }

    #[test]
    fn go_quoting() {
        assert_eq!(go_quote("a\"b\\c\u{7f}\u{0}é\u{a0}"), "\"a\\\"b\\\\c\\x7f\\x00é\\u00a0\"");
        assert_eq!(go_quote_rune('\''), "'\\''");
        assert_eq!(go_quote_rune('"'), "'\"'");
        assert_eq!(go_quote_rune('\u{80}'), "'\\u0080'");
        assert_eq!(go_quote_rune('\u{ad}'), "'\\u00ad'");
    }

    #[test]
    fn counters_serialize_like_restic() {
        let c = Counters { last: -1, daily: 2, ..Counters::default() };
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"last":-1,"daily":2}"#);
        assert_eq!(serde_json::to_string(&Counters::default()).unwrap(), "{}");
    }

    fn arb_count() -> impl Strategy<Value = Count> {
        prop_oneof![Just(Count::Limited(0)), (1u64..4).prop_map(Count::Limited), Just(Count::Unlimited)]
    }

    fn arb_duration() -> impl Strategy<Value = Option<Duration>> {
        proptest::option::of(
            (0i32..3, 0i32..14, 0i32..40, 0i32..50).prop_map(|(years, months, days, hours)| Duration {
                years,
                months,
                days,
                hours,
            }),
        )
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        let counts = (arb_count(), arb_count(), arb_count(), arb_count(), arb_count(), arb_count());
        let withins = (arb_duration(), arb_duration(), arb_duration(), arb_duration(), arb_duration(), arb_duration());
        let tag = prop_oneof![Just(String::new()), Just("a".to_string()), Just("b".to_string())];
        let tags = proptest::collection::vec(proptest::collection::vec(tag, 0..3), 0..3);
        (counts, withins, tags).prop_map(|(c, w, tags)| Policy {
            last: c.0,
            hourly: c.1,
            daily: c.2,
            weekly: c.3,
            monthly: c.4,
            yearly: c.5,
            within: w.0,
            within_hourly: w.1,
            within_daily: w.2,
            within_weekly: w.3,
            within_monthly: w.4,
            within_yearly: w.5,
            tags,
        })
    }

    fn arb_item() -> impl Strategy<Value = Item> {
        let secs = prop_oneof![1_400_000_000i64..1_400_200_000, 1_300_000_000i64..1_500_000_000];
        let tags = proptest::collection::vec(prop_oneof![Just("a"), Just("b")], 0..3);
        (secs, -50_400i32..=50_400, tags, proptest::bool::weighted(0.2)).prop_map(|(secs, off, tags, untrusted)| {
            let tz = TimeZone::fixed(Offset::from_seconds(off).unwrap());
            Item {
                time: Timestamp::from_second(secs).unwrap().to_zoned(tz),
                tags: tags.into_iter().map(String::from).collect(),
                untrusted_time: untrusted,
            }
        })
    }

    proptest! {
        #[test]
        fn apply_decides_every_item_once(items in proptest::collection::vec(arb_item(), 0..40), p in arb_policy()) {
            let now = Timestamp::from_second(1_450_000_000).unwrap();
            let d = apply(&items, &p, now);
            prop_assert_eq!(d.len(), items.len());
            let mut seen = vec![false; items.len()];
            for x in &d {
                prop_assert!(!seen[x.index]);
                seen[x.index] = true;
                prop_assert_eq!(x.keep, !x.matches.is_empty());
                if items[x.index].untrusted_time {
                    prop_assert!(x.keep);
                    prop_assert_eq!(&x.matches, &vec![UNTRUSTED_REASON.to_string()]);
                    prop_assert!(x.counters.is_none());
                } else {
                    prop_assert_eq!(x.counters.is_some(), x.keep);
                }
            }
            for w in d.windows(2) {
                prop_assert!(items[w[0].index].time.timestamp() >= items[w[1].index].time.timestamp());
            }
            let trusted: Vec<&Decision> = d.iter().filter(|x| !items[x.index].untrusted_time).collect();
            let kept_trusted = trusted.iter().filter(|x| x.keep).count();
            if !trusted.is_empty() && p.counts().iter().any(|c| !c.is_zero()) {
                prop_assert!(kept_trusted >= 1);
            }
            let counting_only = p.tags.is_empty() && given(&p.within).is_none()
                && p.within_buckets().iter().all(Option::is_none);
            if counting_only && policy_sum(&p) > 0 {
                prop_assert!(kept_trusted as u64 <= policy_sum(&p));
            }
            if p.is_empty() {
                prop_assert_eq!(kept_trusted, 0);
            }
        }
    }
}
