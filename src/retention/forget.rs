//! `forget`: which snapshots to remove, as a plan computed before anything is deleted.
//!
//! The snapshots the filters select are grouped (`--group-by`, default host and paths), and
//! restic's policy ([`super::policy::apply`]) decides per group which to keep. One rule is
//! Coffer's own: a snapshot whose claimed time is more than [`FUTURE_TOLERANCE`] later than
//! the storage's timestamp of its object cannot have been written then (a host with a
//! clock far ahead, or a compromised one planting snapshots); it is kept, reported, and
//! never counted, so it cannot push real snapshots out of a bucket or move the
//! `--keep-within` window. Which snapshots are removed is decided first ([`plan`]), then
//! the snapshot objects are deleted ([`execute`]); a dry run stops after the plan.

use std::collections::BTreeMap;

use super::governance::{self, Governance};
use super::policy::{self, GroupBy, GroupKey, Item, Policy};
use crate::id::SnapshotId;
use crate::repo::snapshots::{match_id, DamagedSnapshot, ListedSnapshot, SnapshotFilter};
use crate::repo::{RepoError, Repository, Result};

/// How much later than its object's storage timestamp a snapshot may claim to be before it
/// counts as future-dated: room for honest clocks that drift, far less than a bucket.
pub const FUTURE_TOLERANCE_NS: i64 = 10 * 60 * 1_000_000_000;

/// What to forget.
#[derive(Clone, Debug, Default)]
pub struct ForgetOptions {
    pub policy: Policy,
    pub group_by: GroupBy,
    pub filter: SnapshotFilter,
    /// Snapshots named on the command line: exactly these are removed, no policy applies.
    pub ids: Vec<String>,
    /// restic's `--unsafe-allow-remove-all`: an empty policy with a filter removes all
    /// the filter selects.
    pub allow_remove_all: bool,
    /// Holds, the minimum retention and the stored policy, judged at the storage's present.
    pub governance: Governance,
}

/// The decision for one group.
#[derive(Clone, Debug)]
pub struct GroupPlan {
    pub key: GroupKey,
    /// Newest first, as restic lists them.
    pub keep: Vec<ListedSnapshot>,
    pub remove: Vec<ListedSnapshot>,
    /// For each kept snapshot, the rules that kept it.
    pub reasons: Vec<(SnapshotId, Vec<String>)>,
    /// Kept snapshots whose claimed time is later than their storage timestamp.
    pub future_dated: Vec<SnapshotId>,
    /// Damaged (unreadable) snapshots named by id: removed. A policy never removes one.
    pub remove_damaged: Vec<DamagedSnapshot>,
    /// The stored policy's rule this group was judged by (`default`, `host=H`, ...), when
    /// the stored policy was applied.
    pub rule: Option<String>,
    /// Snapshots the policy would remove that a hold or the minimum retention keeps, and why.
    pub protected: Vec<(SnapshotId, String)>,
}

impl GroupPlan {
    fn new(key: GroupKey) -> Self {
        GroupPlan {
            key,
            keep: vec![],
            remove: vec![],
            reasons: vec![],
            future_dated: vec![],
            remove_damaged: vec![],
            rule: None,
            protected: vec![],
        }
    }
    pub fn removed_ids(&self) -> impl Iterator<Item = SnapshotId> + '_ {
        self.remove.iter().map(|s| s.id).chain(self.remove_damaged.iter().map(|d| d.id))
    }
    /// Snapshots removed, readable and damaged.
    pub fn removed_count(&self) -> usize {
        self.remove.len() + self.remove_damaged.len()
    }
}

/// Whether a snapshot claims a time its object's storage timestamp rules out.
pub fn is_future_dated(s: &ListedSnapshot) -> bool {
    s.snapshot.time_ns > s.stored_ns.saturating_add(FUTURE_TOLERANCE_NS)
}

fn paths_of(s: &ListedSnapshot) -> Vec<String> {
    s.snapshot.paths.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect()
}

/// The snapshot's time in the UTC offset recorded with it (where buckets are cut).
pub fn zoned(s: &ListedSnapshot) -> jiff::Zoned {
    let ts = crate::clock::from_unix_ns(s.snapshot.time_ns);
    let off = jiff::tz::Offset::from_seconds(s.snapshot.utc_offset_s).unwrap_or(jiff::tz::Offset::UTC);
    ts.to_zoned(jiff::tz::TimeZone::fixed(off))
}

/// Decides what to remove; nothing is changed.
pub fn plan(repo: &Repository, opts: &ForgetOptions) -> Result<Vec<GroupPlan>> {
    if !opts.ids.is_empty() {
        let (all, damaged) = repo.load_snapshots_all()?;
        let plans = plan_ids(&all, &damaged, opts)?;
        refuse_protected(&opts.governance, &plans)?;
        return Ok(plans);
    }
    // Damaged snapshots are warned about and kept: only `forget ID` removes one.
    let all = repo.load_snapshots_listed()?;
    let all: Vec<ListedSnapshot> = all.into_iter().filter(|s| opts.filter.matches(&s.snapshot)).collect();
    let stored = opts.governance.current().map(|p| p.value);
    let mut plans = match stored.filter(|_| opts.policy.is_empty()) {
        Some(doc) if doc.rules.iter().any(|r| !r.keep.is_empty()) => plan_stored(&all, &doc, opts)?,
        _ => plan_policy(all, &opts.policy, opts)?,
    };
    protect(&opts.governance, &mut plans);
    Ok(plans)
}

/// `forget ID` refuses outright to remove a protected snapshot.
fn refuse_protected(g: &Governance, plans: &[GroupPlan]) -> Result<()> {
    for p in plans {
        g.refuse_removal(&p.remove, "forget")?;
        for d in &p.remove_damaged {
            let held = g.holds_on(&d.id);
            if !held.is_empty() {
                let p = governance::Protected::Held(held);
                return Err(RepoError::Protected(format!("forget: snapshot {} is {p}", d.id.short())));
            }
            if let Some(until_ns) = g.retained_until_any(d.stored_ns).filter(|&t| t > g.now_ns) {
                let p = governance::Protected::Retained { until_ns };
                return Err(RepoError::Protected(format!("forget: snapshot {} is {p}", d.id.short())));
            }
        }
    }
    Ok(())
}

/// A policy keeps, with the protection as its reason, what a hold or the minimum retention
/// protects.
fn protect(g: &Governance, plans: &mut [GroupPlan]) {
    for p in plans {
        let (mut keep, mut remove) = (Vec::new(), Vec::new());
        for s in p.remove.drain(..) {
            match g.protection(&s) {
                Some(why) => {
                    let why = why.to_string();
                    p.reasons.push((s.id, vec![why.clone()]));
                    p.protected.push((s.id, why));
                    keep.push(s);
                }
                None => remove.push(s),
            }
        }
        p.remove = remove;
        p.keep.extend(keep);
        p.keep.sort_by_key(|s| std::cmp::Reverse((s.snapshot.time_ns, s.id)));
    }
}

/// The stored policy (see [`governance`]): each keep rule applied to the snapshots it
/// covers; a snapshot is removed only when every rule covering it removes it.
fn plan_stored(
    all: &[ListedSnapshot],
    doc: &crate::format::policy::PolicyDoc,
    opts: &ForgetOptions,
) -> Result<Vec<GroupPlan>> {
    let keep_rules: Vec<_> = doc.rules.iter().filter(|r| !r.keep.is_empty()).collect();
    let specific = |s: &ListedSnapshot| {
        keep_rules
            .iter()
            .any(|r| (r.host.is_some() || r.tag.is_some()) && governance::covers(r, &s.snapshot.host, &s.snapshot.tags))
    };
    let mut plans = Vec::new();
    for r in &keep_rules {
        let scoped = r.host.is_some() || r.tag.is_some();
        let covered: Vec<ListedSnapshot> = all
            .iter()
            .filter(|s| if scoped { governance::covers(r, &s.snapshot.host, &s.snapshot.tags) } else { !specific(s) })
            .cloned()
            .collect();
        let p = governance::policy_of(&r.keep);
        for mut g in plan_policy(covered, &p, opts)? {
            g.rule = Some(governance::scope_name(r));
            plans.push(g);
        }
    }
    // Removed only when no rule keeps it.
    let kept: std::collections::HashSet<SnapshotId> = plans.iter().flat_map(|p| p.keep.iter().map(|s| s.id)).collect();
    for p in &mut plans {
        let (spared, remove): (Vec<_>, Vec<_>) = p.remove.drain(..).partition(|s| kept.contains(&s.id));
        p.remove = remove;
        for s in spared {
            p.reasons.push((s.id, vec!["kept by another rule".into()]));
            p.keep.push(s);
        }
        p.keep.sort_by_key(|s| std::cmp::Reverse((s.snapshot.time_ns, s.id)));
    }
    Ok(plans)
}

/// restic's forget with one policy over `all` (already filtered).
fn plan_policy(all: Vec<ListedSnapshot>, pol: &Policy, opts: &ForgetOptions) -> Result<Vec<GroupPlan>> {
    pol.validate().map_err(RepoError::Invalid)?;
    let filtered = !opts.filter.hosts.is_empty() || !opts.filter.tags.is_empty() || !opts.filter.paths.is_empty();
    policy::check_policy_given(pol, opts.allow_remove_all, filtered).map_err(RepoError::Invalid)?;
    let mut groups: BTreeMap<GroupKey, Vec<ListedSnapshot>> = BTreeMap::new();
    for s in all {
        let key = GroupKey::new(opts.group_by, &s.snapshot.host, &paths_of(&s), &s.snapshot.tags);
        groups.entry(key).or_default().push(s);
    }
    let mut plans = Vec::new();
    for (key, snaps) in groups {
        let items: Vec<Item> = snaps
            .iter()
            .map(|s| Item { time: zoned(s), tags: s.snapshot.tags.clone(), untrusted_time: is_future_dated(s) })
            .collect();
        // restic's `time.Now()` only keeps future snapshots from being the --keep-within
        // reference; the storage-based rule above does that here, so no clock is consulted.
        let decisions = policy::apply(&items, pol, jiff::Timestamp::MAX);
        if !opts.allow_remove_all || !pol.is_empty() {
            policy::check_group_keeps_something(pol, &items, &decisions, &key.to_string())
                .map_err(RepoError::Invalid)?;
        }
        let mut g = GroupPlan::new(key);
        for d in decisions {
            let s = snaps[d.index].clone();
            if items[d.index].untrusted_time {
                g.future_dated.push(s.id);
            }
            if d.keep {
                g.reasons.push((s.id, d.matches));
                g.keep.push(s);
            } else {
                g.remove.push(s);
            }
        }
        plans.push(g);
    }
    Ok(plans)
}

/// `forget ID...`: exactly those snapshots, as one group.
fn plan_ids(all: &[ListedSnapshot], damaged: &[DamagedSnapshot], opts: &ForgetOptions) -> Result<Vec<GroupPlan>> {
    if !opts.policy.is_empty() {
        return Err(RepoError::Invalid("give snapshot ids or a policy (--keep-*), not both".into()));
    }
    let ids: Vec<SnapshotId> = all.iter().map(|s| s.id).chain(damaged.iter().map(|d| d.id)).collect();
    let mut remove: Vec<ListedSnapshot> = Vec::new();
    let mut remove_damaged: Vec<DamagedSnapshot> = Vec::new();
    for spec in &opts.ids {
        let id =
            if spec == "latest" {
                all.iter().rev().find(|s| opts.filter.matches(&s.snapshot)).map(|s| s.id).ok_or_else(|| {
                    RepoError::Invalid("no snapshot matches (the repository has none that fit)".into())
                })?
            } else {
                match_id(spec, &ids)?
            };
        match all.iter().find(|s| s.id == id) {
            Some(s) if !remove.iter().any(|r| r.id == id) => remove.push(s.clone()),
            Some(_) => {}
            None if !remove_damaged.iter().any(|d| d.id == id) => {
                remove_damaged.push(damaged.iter().find(|d| d.id == id).expect("listed").clone())
            }
            None => {}
        }
    }
    remove.sort_by_key(|s| std::cmp::Reverse((s.snapshot.time_ns, s.id)));
    Ok(vec![GroupPlan { remove, remove_damaged, ..GroupPlan::new(GroupKey::default()) }])
}

/// Deletes the snapshots the plans remove; returns how many were deleted. A snapshot
/// already gone (removed by another forget meanwhile) counts as deleted.
pub fn execute(repo: &Repository, plans: &[GroupPlan]) -> Result<usize> {
    let mut n = 0;
    let mut done = std::collections::HashSet::new();
    for id in plans.iter().flat_map(GroupPlan::removed_ids).filter(|id| done.insert(*id)) {
        repo.remove_snapshot(&id)?;
        n += 1;
    }
    Ok(n)
}
