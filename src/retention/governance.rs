//! What the stored policy and the holds mean: which policy is in effect, which snapshots
//! must not be removed yet, and why.
//!
//! **The policy in effect**: rules are scoped (a host, a tag, both, or neither: the default).
//! Each policy document sets the rules of the scopes it names (a rule with nothing in it
//! clears its scope); for each scope, the newest document naming it (by the storage's
//! timestamp, ties by id) decides. So two admins setting different scopes at once both keep
//! their change, and for one scope the last writer wins.
//!
//! **Keep rules** (`forget` with no `--keep-*` flags): a rule with a host or tag covers the
//! snapshots it matches; the default covers those no other keep rule covers. Each rule is
//! applied as `forget --keep-...` would be to the snapshots it covers; a snapshot is removed
//! only when every rule covering it removes it.
//!
//! **Minimum retention**: a snapshot may be removed only once it has been stored for the
//! minimum, counted from the storage's timestamp of its object (not the time it claims) to
//! the storage's present (the timestamp of a lock the judging command just wrote), in
//! calendar units (UTC). The minimum that applies is the largest of every rule covering the
//! snapshot (the default always covers it) among the rules in effect at any time since the
//! snapshot was stored (per scope: the one in effect then, and every one set since). Raising the minimum thus applies at once;
//! lowering it applies only to snapshots stored after the change, so whoever holds the
//! password cannot shorten the minimum and delete at once.
//!
//! **Holds**: a snapshot named by a hold no release names is not removed by anything, and
//! prune keeps the data of its tree even when its snapshot object is gone.

use std::collections::{HashMap, HashSet};

use super::policy::{Count, Duration, Policy};
use crate::format::hold::{HoldKind, HoldRecord};
use crate::format::policy::{Keep, PolicyDoc, Rule, Span};
use crate::id::{HoldId, PolicyId, SnapshotId};
use crate::repo::governance::Stored;
use crate::repo::snapshots::ListedSnapshot;
use crate::repo::{RepoError, Repository, Result};

/// A hold in force.
#[derive(Clone, Debug)]
pub struct ActiveHold {
    pub id: HoldId,
    pub stored_ns: i64,
    pub record: HoldRecord,
}

impl ActiveHold {
    pub fn snapshots(&self) -> &[([u8; 32], [u8; 32])] {
        match &self.record.kind {
            HoldKind::Hold(v) => v,
            HoldKind::Release(_) => &[],
        }
    }
}

/// Why a snapshot may not be removed now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Protected {
    Held(Vec<(HoldId, String)>),
    /// Under the minimum retention until this storage time (Unix ns).
    Retained {
        until_ns: i64,
    },
    /// Its object is locked by S3 Object Lock until about then (Unix ns).
    Locked {
        until_ns: i64,
    },
}

impl std::fmt::Display for Protected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Protected::Held(h) => {
                let shown = |w: &str| -> String { w.chars().map(|c| if c.is_control() { '?' } else { c }).collect() };
                let names: Vec<String> = h.iter().map(|(id, why)| format!("{} ({})", id.short(), shown(why))).collect();
                write!(f, "under legal hold {}; removable once released", names.join(", "))
            }
            Protected::Retained { until_ns } => write!(
                f,
                "under the minimum retention; removable after {}",
                crate::clock::from_unix_ns(*until_ns).strftime("%Y-%m-%d %H:%M:%S UTC")
            ),
            Protected::Locked { until_ns } => write!(
                f,
                "in an object S3 Object Lock keeps; removable after {}",
                crate::clock::from_unix_ns(*until_ns).strftime("%Y-%m-%d %H:%M:%S UTC")
            ),
        }
    }
}

/// The policy documents and holds of a repository, judged at one storage time.
#[derive(Clone, Debug, Default)]
pub struct Governance {
    /// Oldest by storage time first.
    pub policies: Vec<Stored<PolicyId, PolicyDoc>>,
    pub holds: Vec<ActiveHold>,
    /// Released holds, with the release.
    pub released: Vec<(ActiveHold, Stored<HoldId, HoldRecord>)>,
    /// The storage's present (Unix ns).
    pub now_ns: i64,
    /// The repository's Object Lock retention (ns), when it has one: a snapshot object is
    /// locked that long after it was stored (snapshots are never extended).
    pub lock_retention_ns: Option<i64>,
}

impl Governance {
    /// Reads every policy document and hold record; `now_ns` is the storage's present.
    pub fn load(repo: &Repository, now_ns: i64) -> Result<Governance> {
        let mut policies = repo.load_policies()?;
        // Storage clocks count in seconds (S3's LastModified): documents of one second are
        // ordered by their seq, which each writer makes one more than the largest it saw.
        policies.sort_by_key(|p| (p.stored_ns, p.value.seq, p.id));
        let records = repo.load_holds()?;
        let releases: HashMap<[u8; 32], &Stored<HoldId, HoldRecord>> = records
            .iter()
            .filter_map(|r| match r.value.kind {
                HoldKind::Release(h) => Some((h, r)),
                HoldKind::Hold(_) => None,
            })
            .collect();
        let (mut holds, mut released) = (Vec::new(), Vec::new());
        for r in &records {
            if let HoldKind::Hold(_) = r.value.kind {
                let h = ActiveHold { id: r.id, stored_ns: r.stored_ns, record: r.value.clone() };
                match releases.get(&r.id.0) {
                    Some(rel) => released.push((h, (*rel).clone())),
                    None => holds.push(h),
                }
            }
        }
        let lock_retention_ns =
            repo.store().object_lock().map(|l| (l.retention_s as i64).saturating_mul(1_000_000_000));
        Ok(Governance { policies, holds, released, now_ns, lock_retention_ns })
    }

    /// The largest seq of any document (the next one is one more).
    pub fn max_seq(&self) -> u64 {
        self.policies.iter().map(|p| p.value.seq).max().unwrap_or(0)
    }

    /// The policy in effect: for each scope, its rule from the newest document naming it, as
    /// one document (id, time and writer of the newest document); `None` when none is stored.
    pub fn current(&self) -> Option<Stored<PolicyId, PolicyDoc>> {
        let last = self.policies.last()?;
        let mut by_scope: std::collections::BTreeMap<(Option<String>, Option<String>), &Rule> = Default::default();
        for p in &self.policies {
            for r in &p.value.rules {
                by_scope.insert((r.host.clone(), r.tag.clone()), r);
            }
        }
        let rules = by_scope.into_values().filter(|r| !is_cleared(r)).cloned().collect();
        Some(Stored { id: last.id, stored_ns: last.stored_ns, value: PolicyDoc { rules, ..last.value.clone() } })
    }

    /// For each scope, the rule in effect when a snapshot was stored at `stored_ns`, and every
    /// rule set for it since. Documents stored within the margin of the snapshot count as
    /// set since (storage clocks may disagree by that much, and count in seconds).
    fn rules_since(&self, stored_ns: i64) -> Vec<&Rule> {
        let mut at: HashMap<(Option<String>, Option<String>), &Rule> = HashMap::new();
        let mut later = Vec::new();
        let before = stored_ns.saturating_sub(crate::repo::lock::margin_ns());
        for p in &self.policies {
            for r in &p.value.rules {
                if p.stored_ns < before {
                    at.insert((r.host.clone(), r.tag.clone()), r);
                } else {
                    later.push(r);
                }
            }
        }
        at.into_values().chain(later).collect()
    }

    /// The holds in force on a snapshot, with their reasons.
    pub fn holds_on(&self, id: &SnapshotId) -> Vec<(HoldId, String)> {
        self.holds
            .iter()
            .filter(|h| h.snapshots().iter().any(|(s, _)| *s == id.0))
            .map(|h| (h.id, h.record.reason.clone()))
            .collect()
    }

    /// `(snapshot, tree)` of every held snapshot.
    pub fn held_roots(&self) -> Vec<(SnapshotId, [u8; 32])> {
        let mut seen = HashSet::new();
        self.holds
            .iter()
            .flat_map(|h| h.snapshots().iter())
            .filter(|(s, _)| seen.insert(*s))
            .map(|(s, t)| (SnapshotId(*s), *t))
            .collect()
    }

    /// The storage time (Unix ns) before which the minimum retention keeps a snapshot stored
    /// at `stored_ns` (host and tags as given); `None` when no minimum applies.
    pub fn retained_until(&self, stored_ns: i64, host: &str, tags: &[String]) -> Option<i64> {
        self.rules_since(stored_ns)
            .into_iter()
            .filter(|r| covers(r, host, tags))
            .filter_map(|r| r.min_retention.as_ref())
            .map(|span| add_span(stored_ns, span))
            .max()
    }

    /// As [`Self::retained_until`] for a snapshot whose host and tags are unknown (it does
    /// not read): every rule counts.
    pub fn retained_until_any(&self, stored_ns: i64) -> Option<i64> {
        self.rules_since(stored_ns)
            .into_iter()
            .filter_map(|r| r.min_retention.as_ref())
            .map(|span| add_span(stored_ns, span))
            .max()
    }

    /// Why `s` may not be removed now, if it may not.
    pub fn protection(&self, s: &ListedSnapshot) -> Option<Protected> {
        let held = self.holds_on(&s.id);
        if !held.is_empty() {
            return Some(Protected::Held(held));
        }
        if let Some(until_ns) =
            self.retained_until(s.stored_ns, &s.snapshot.host, &s.snapshot.tags).filter(|&until| until > self.now_ns)
        {
            return Some(Protected::Retained { until_ns });
        }
        // Written locked until the writer's clock plus the retention: counted from the
        // storage's timestamp, with the margin storage clocks may disagree by.
        self.lock_retention_ns
            .map(|r| s.stored_ns.saturating_add(r).saturating_add(crate::repo::lock::margin_ns()))
            .filter(|&until| until > self.now_ns)
            .map(|until_ns| Protected::Locked { until_ns })
    }

    /// An error naming the first snapshot of `snaps` that may not be removed, and when it
    /// may (`what` is the command, for the message).
    pub fn refuse_removal<'a>(&self, snaps: impl IntoIterator<Item = &'a ListedSnapshot>, what: &str) -> Result<()> {
        for s in snaps {
            if let Some(p) = self.protection(s) {
                return Err(RepoError::Protected(format!("{what}: snapshot {} is {p}", s.id.short())));
            }
        }
        Ok(())
    }

    /// The recovery objectives for a snapshot of `host` with `tags` (seconds): the strictest
    /// of the rules covering it in the policy in effect.
    pub fn objectives(&self, host: &str, tags: &[String]) -> (Option<u64>, Option<u64>) {
        let Some(p) = self.current() else { return (None, None) };
        let covering: Vec<&Rule> = p.value.rules.iter().filter(|r| covers(r, host, tags)).collect();
        (covering.iter().filter_map(|r| r.rto_s).min(), covering.iter().filter_map(|r| r.rpo_s).min())
    }
}

/// Whether a rule sets nothing: it clears its scope.
pub fn is_cleared(r: &Rule) -> bool {
    r.keep.is_empty() && r.min_retention.is_none() && r.rto_s.is_none() && r.rpo_s.is_none()
}

/// Whether a rule's scope includes a snapshot of `host` with `tags`.
pub fn covers(r: &Rule, host: &str, tags: &[String]) -> bool {
    r.host.as_deref().is_none_or(|h| h == host) && r.tag.as_deref().is_none_or(|t| tags.iter().any(|x| x == t))
}

/// `stored_ns` plus a calendar span, in UTC; saturates far in the future.
pub fn add_span(stored_ns: i64, s: &Span) -> i64 {
    let z = crate::clock::from_unix_ns(stored_ns).to_zoned(jiff::tz::TimeZone::UTC);
    let span = jiff::Span::new()
        .try_years(s[0].clamp(0, 19_998) as i64)
        .and_then(|sp| sp.try_months(s[1].clamp(0, 239_976) as i64))
        .and_then(|sp| sp.try_days(s[2].clamp(0, 7_304_484) as i64))
        .and_then(|sp| sp.try_hours(s[3].clamp(0, 175_307_616) as i64));
    match span.ok().and_then(|sp| z.checked_add(sp).ok()) {
        Some(t) => crate::clock::to_unix_ns(t.timestamp()),
        None => i64::MAX,
    }
}

/// A rule's scope as shown: `default`, `host=H`, `tag=T` or `host=H,tag=T`.
pub fn scope_name(r: &Rule) -> String {
    match (&r.host, &r.tag) {
        (None, None) => "default".into(),
        (Some(h), None) => format!("host={h}"),
        (None, Some(t)) => format!("tag={t}"),
        (Some(h), Some(t)) => format!("host={h},tag={t}"),
    }
}

fn count_to(c: Count) -> u64 {
    match c {
        Count::Limited(n) => n.min(u64::MAX - 1),
        Count::Unlimited => u64::MAX,
    }
}

fn count_from(v: u64) -> Count {
    if v == u64::MAX {
        Count::Unlimited
    } else {
        Count::Limited(v)
    }
}

pub fn span_of(d: Option<Duration>) -> Span {
    d.map_or([0; 4], |d| [d.years, d.months, d.days, d.hours])
}

pub fn duration_of(s: &Span) -> Option<Duration> {
    (*s != [0; 4]).then_some(Duration { years: s[0], months: s[1], days: s[2], hours: s[3] })
}

/// forget's policy as stored.
pub fn keep_of(p: &Policy) -> Keep {
    Keep {
        counts: [p.last, p.hourly, p.daily, p.weekly, p.monthly, p.yearly].map(count_to),
        within: [p.within, p.within_hourly, p.within_daily, p.within_weekly, p.within_monthly, p.within_yearly]
            .map(span_of),
        tags: p.tags.clone(),
    }
}

/// A stored keep rule as forget's policy.
pub fn policy_of(k: &Keep) -> Policy {
    let c = k.counts.map(count_from);
    let w = k.within.map(|s| duration_of(&s));
    Policy {
        last: c[0],
        hourly: c[1],
        daily: c[2],
        weekly: c[3],
        monthly: c[4],
        yearly: c[5],
        within: w[0],
        within_hourly: w[1],
        within_daily: w[2],
        within_weekly: w[3],
        within_monthly: w[4],
        within_yearly: w[5],
        tags: k.tags.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400 * 1_000_000_000;

    fn doc(stored_days: i64, min_days: Option<i32>, host: Option<&str>) -> Stored<PolicyId, PolicyDoc> {
        let rule =
            Rule { host: host.map(String::from), min_retention: min_days.map(|d| [0, 0, d, 0]), ..Default::default() };
        Stored {
            id: PolicyId::random(),
            stored_ns: stored_days * DAY,
            value: PolicyDoc { rules: vec![rule], ..Default::default() },
        }
    }

    #[test]
    fn lowering_the_minimum_spares_what_was_stored_before() {
        // 30 days from day 0, lowered to 7 on day 10.
        let g = Governance { policies: vec![doc(0, Some(30), None), doc(10, Some(7), None)], ..Default::default() };
        assert_eq!(g.retained_until(5 * DAY, "h", &[]), Some(35 * DAY), "stored under 30 days");
        assert_eq!(g.retained_until(12 * DAY, "h", &[]), Some(19 * DAY), "stored after the change");
        // Raised on day 10: applies to what was stored before too.
        let g = Governance { policies: vec![doc(0, Some(7), None), doc(10, Some(30), None)], ..Default::default() };
        assert_eq!(g.retained_until(5 * DAY, "h", &[]), Some(35 * DAY));
        // Scoped: only the host's snapshots.
        let g = Governance { policies: vec![doc(0, Some(30), Some("db"))], ..Default::default() };
        assert_eq!(g.retained_until(DAY, "web", &[]), None);
        assert_eq!(g.retained_until(DAY, "db", &[]), Some(31 * DAY));
        // A document for another scope changes nothing for this one: the default set on day
        // 0 is still in effect for a snapshot stored on day 5, after a host rule on day 2.
        let g =
            Governance { policies: vec![doc(0, Some(30), None), doc(2, Some(1), Some("db"))], ..Default::default() };
        assert_eq!(g.retained_until(5 * DAY, "web", &[]), Some(35 * DAY));
        let cur = g.current().unwrap();
        assert_eq!(cur.value.rules.len(), 2, "both scopes are in effect");
    }

    #[test]
    fn calendar_spans_and_policy_round_trip() {
        let t = crate::clock::to_unix_ns("2024-02-29T00:00:00Z".parse().unwrap());
        let later = add_span(t, &[1, 0, 0, 0]);
        assert_eq!(crate::clock::from_unix_ns(later).to_string(), "2025-02-28T00:00:00Z");
        assert_eq!(add_span(0, &[i32::MAX, i32::MAX, 0, 0]), i64::MAX);
        let p = Policy { daily: Count::Limited(7), yearly: Count::Unlimited, ..Default::default() };
        assert_eq!(policy_of(&keep_of(&p)), p);
    }
}
