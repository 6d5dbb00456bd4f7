//! `forget`, `tag`, `prune` and `unlock`: parse, call `retention`, print.

use std::io::Write;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use indicatif::HumanBytes;
use serde_json::json;

use super::args::*;
use super::commands::{
    connections, filter, open, print_json, progress, refuse_on_rollback, snapshot_json, split_tags, threads, time_of,
};
use super::exit::ExitCode;
use super::governance::{audited, governance_at, governance_now, Note};
use crate::repo::lock::{list_sessions, Session, SessionInfo};
use crate::repo::snapshots::ListedSnapshot;
use crate::repo::Repository;
use crate::retention::forget::{self, ForgetOptions, GroupPlan};
use crate::retention::policy::{self, GroupBy, Policy};
use crate::retention::prune::{self, Outcome, Plan, PruneOptions};

pub(super) fn policy_of(a: &KeepArgs) -> Policy {
    Policy {
        last: a.keep_last.unwrap_or_default(),
        hourly: a.keep_hourly.unwrap_or_default(),
        daily: a.keep_daily.unwrap_or_default(),
        weekly: a.keep_weekly.unwrap_or_default(),
        monthly: a.keep_monthly.unwrap_or_default(),
        yearly: a.keep_yearly.unwrap_or_default(),
        within: a.keep_within,
        within_hourly: a.keep_within_hourly,
        within_daily: a.keep_within_daily,
        within_weekly: a.keep_within_weekly,
        within_monthly: a.keep_within_monthly,
        within_yearly: a.keep_within_yearly,
        tags: a.keep_tags.iter().map(|t| policy::parse_tag_list(t)).collect(),
    }
}

fn prune_options(g: &Global, o: &PruneOpts, repo: &Repository) -> Result<PruneOptions> {
    Ok(PruneOptions {
        max_unused: prune::parse_max_unused(&o.max_unused).map_err(|e| anyhow!(e))?,
        max_repack: o
            .max_repack_size
            .as_deref()
            .map(prune::parse_size)
            .transpose()
            .map_err(|e| anyhow!("--max-repack-size: {e}"))?,
        threads: threads(g),
        uploaders: connections(g, repo),
    })
}

pub fn forget(g: &Global, a: ForgetArgs) -> Result<ExitCode> {
    let repo = Arc::new(open(g)?);
    if a.dry_run {
        return forget_run(g, &repo, &a, &mut Default::default());
    }
    audited(&repo, "forget", |note| forget_run(g, &repo, &a, note))
}

fn forget_run(g: &Global, repo: &Arc<Repository>, a: &ForgetArgs, note: &mut Note) -> Result<ExitCode> {
    let prune_opts = if a.prune { Some(prune_options(g, &a.prune_opts, repo)?) } else { None };
    // The storage's present, for the minimum retention, from a lock of this command's own.
    let (session, governance) = governance_at(repo, "forget", a.dry_run)?;
    let opts = ForgetOptions {
        policy: policy_of(&a.keep),
        group_by: GroupBy::parse(&a.group_by).map_err(|e| anyhow!("--group-by: {e}"))?,
        filter: filter(&a.filter),
        ids: a.snapshots.clone(),
        allow_remove_all: a.unsafe_allow_remove_all,
        governance,
    };
    let result = forget_plan_and_execute(g, repo, a, &opts, note);
    if let Some(s) = session {
        s.end();
    }
    let to_remove = result?;
    if let Some(popts) = prune_opts.filter(|_| to_remove > 0) {
        run_prune(g, repo, &popts, a.dry_run, false)?;
    }
    Ok(ExitCode::Ok)
}

/// Plans, prints, executes; returns how many snapshots the plan removes.
fn forget_plan_and_execute(
    g: &Global,
    repo: &Arc<Repository>,
    a: &ForgetArgs,
    opts: &ForgetOptions,
    note: &mut Note,
) -> Result<usize> {
    let plans = forget::plan(repo, opts)?;
    note.plan = Some(json!(plans.iter().map(group_json).collect::<Vec<_>>()));
    if !a.dry_run {
        refuse_on_rollback(g, repo)?;
    }
    // forget --prune refuses before it forgets anything when prune could not run after it.
    if a.prune && !a.dry_run {
        let index = repo.load_index_with(false)?;
        if let Some(d) = index.damaged_files.first() {
            bail!(
                "{}: {}; prune cannot run while an index file is damaged, so nothing was forgotten: run `coffer \
                 repair index` first",
                crate::repo::index_path(&d.id),
                d.reason
            );
        }
    }
    if g.json {
        print_json(&plans.iter().map(group_json).collect::<Vec<_>>())?;
    } else {
        print_forget(opts, &plans)?;
    }
    for p in &plans {
        for id in &p.future_dated {
            eprintln!(
                "warning: snapshot {} claims a time later than the storage's timestamp of its object: kept, \
                 and not counted by the policy",
                id.short()
            );
        }
        if !g.quiet {
            for (id, why) in &p.protected {
                eprintln!("note: not removing snapshot {}: it is {why}", id.short());
            }
        }
    }
    let mut ids: Vec<_> = plans.iter().flat_map(GroupPlan::removed_ids).collect();
    ids.sort();
    ids.dedup();
    let to_remove = ids.len();
    if a.dry_run {
        if !g.quiet {
            eprintln!("dry run: would remove {to_remove} {}", plural(to_remove, "snapshot"));
        }
    } else {
        let n = forget::execute(repo, &plans)?;
        note.outcome = Some(json!({ "removed": ids.iter().map(|i| i.to_hex()).collect::<Vec<_>>() }));
        if !g.quiet && !g.json {
            eprintln!("removed {n} {}", plural(n, "snapshot"));
        }
    }
    Ok(to_remove)
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

fn group_json(p: &GroupPlan) -> serde_json::Value {
    let snaps = |v: &[ListedSnapshot]| v.iter().map(|s| snapshot_json(&s.id, &s.snapshot)).collect::<Vec<_>>();
    json!({
        "group": { "host": p.key.host, "paths": p.key.paths, "tags": p.key.tags },
        "keep": snaps(&p.keep),
        "remove": snaps(&p.remove),
        "reasons": p.reasons.iter().map(|(id, m)| json!({ "snapshot": id.to_hex(), "matches": m })).collect::<Vec<_>>(),
        "future_dated": p.future_dated.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
        "remove_damaged": p.remove_damaged.iter().map(|d| json!({ "id": d.id.to_hex(), "error": d.reason })).collect::<Vec<_>>(),
        "rule": p.rule,
        "protected": p.protected.iter().map(|(id, why)| json!({ "snapshot": id.to_hex(), "reason": why })).collect::<Vec<_>>(),
    })
}

fn print_forget(opts: &ForgetOptions, plans: &[GroupPlan]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if opts.ids.is_empty() && !opts.policy.is_empty() {
        writeln!(out, "Applying Policy: {}", opts.policy)?;
    }
    let mut last_rule = None;
    for p in plans {
        if p.rule.is_some() && p.rule != last_rule {
            let stored = opts.governance.current().map(|c| c.value);
            let rule = stored
                .as_ref()
                .and_then(|d| d.rules.iter().find(|r| Some(crate::retention::governance::scope_name(r)) == p.rule));
            let pol = rule.map(|r| crate::retention::governance::policy_of(&r.keep).to_string()).unwrap_or_default();
            writeln!(out, "Applying the stored policy, rule {}: {pol}", p.rule.as_deref().unwrap_or(""))?;
            last_rule = p.rule.clone();
        }
        let key = p.key.to_string();
        if !key.is_empty() {
            writeln!(out, "snapshots of {key}:")?;
        }
        if !p.keep.is_empty() {
            writeln!(out, "keep {} {}:", p.keep.len(), plural(p.keep.len(), "snapshot"))?;
            table(&mut out, &p.keep, Some(&p.reasons))?;
        }
        if !p.remove.is_empty() {
            writeln!(out, "remove {} {}:", p.remove.len(), plural(p.remove.len(), "snapshot"))?;
            table(&mut out, &p.remove, None)?;
        }
        for d in &p.remove_damaged {
            writeln!(out, "remove damaged snapshot {} ({})", d.id.short(), d.reason)?;
        }
        writeln!(out)?;
    }
    Ok(())
}

type Reasons = [(crate::id::SnapshotId, Vec<String>)];

/// The snapshots of a forget group, columns as wide as their widest value.
fn table(out: &mut impl Write, snaps: &[ListedSnapshot], reasons: Option<&Reasons>) -> Result<()> {
    let time = |s: &ListedSnapshot| time_of(&s.snapshot).strftime("%Y-%m-%d %H:%M:%S %:z").to_string();
    let width = |f: &dyn Fn(&ListedSnapshot) -> String, head: &str| {
        snaps.iter().map(|s| f(s).chars().count()).chain([head.len()]).max().unwrap_or(0)
    };
    let why = |s: &ListedSnapshot| -> Vec<String> {
        reasons.and_then(|r| r.iter().find(|(id, _)| *id == s.id)).map(|(_, m)| m.clone()).unwrap_or_default()
    };
    let (wt, wh, wg) = (
        width(&time, "time"),
        width(&|s| s.snapshot.host.clone(), "host"),
        width(&|s| s.snapshot.tags.join(","), "tags"),
    );
    let wr = width(&|s| why(s).first().cloned().unwrap_or_default(), "reasons");
    let line = |out: &mut dyn Write, c: [&str; 6]| -> Result<()> {
        let l = if reasons.is_some() {
            format!("{:<8}  {:<wt$}  {:<wh$}  {:<wg$}  {:<wr$}  {}", c[0], c[1], c[2], c[3], c[4], c[5])
        } else {
            format!("{:<8}  {:<wt$}  {:<wh$}  {:<wg$}  {}", c[0], c[1], c[2], c[3], c[5])
        };
        writeln!(out, "{}", l.trim_end())?;
        Ok(())
    };
    line(out, ["id", "time", "host", "tags", "reasons", "paths"])?;
    for s in snaps {
        let paths: Vec<_> = s.snapshot.paths.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect();
        let why = why(s);
        let (t, tags, id) = (time(s), s.snapshot.tags.join(","), s.id.short());
        let first = why.first().map(String::as_str).unwrap_or("");
        line(out, [&id, &t, &s.snapshot.host, &tags, first, &paths.join(" ")])?;
        for more in why.iter().skip(1) {
            line(out, ["", "", "", "", more, ""])?;
        }
    }
    Ok(())
}

pub fn tag(g: &Global, a: TagArgs) -> Result<ExitCode> {
    if a.add.is_empty() && a.remove.is_empty() && a.set.is_empty() {
        bail!("give --add, --remove or --set");
    }
    let repo = open(g)?;
    audited(&repo, "tag", |note| {
        let (session, gov) = governance_now(&repo, "tag")?;
        let r = tag_run(g, &repo, &a, &gov, note);
        session.end();
        r
    })
}

fn tag_run(
    g: &Global,
    repo: &Repository,
    a: &TagArgs,
    gov: &crate::retention::governance::Governance,
    note: &mut Note,
) -> Result<ExitCode> {
    let f = filter(&a.filter);
    let listed = repo.load_snapshots_listed()?;
    let targets: Vec<&ListedSnapshot> = if a.snapshots.is_empty() {
        listed.iter().filter(|s| f.matches(&s.snapshot)).collect()
    } else {
        let mut v: Vec<&ListedSnapshot> = Vec::new();
        for spec in &a.snapshots {
            let found = repo.find_snapshot(spec, &f)?;
            let Some(l) = listed.iter().find(|l| l.id == found.0) else {
                bail!("snapshot {} vanished while it was read; try again", found.0.short());
            };
            if !v.iter().any(|x| x.id == l.id) {
                v.push(l);
            }
        }
        v
    };
    refuse_on_rollback(g, repo)?;
    let (add, remove, set) = (split_tags(&a.add), split_tags(&a.remove), split_tags(&a.set));
    let new_tags = |s: &ListedSnapshot| {
        if !a.set.is_empty() {
            set.clone()
        } else {
            // As restic: the tags to add first, then those to remove.
            let mut t: Vec<String> = s.snapshot.tags.clone();
            for x in &add {
                if !t.contains(x) {
                    t.push(x.clone());
                }
            }
            t.retain(|x| !remove.contains(x));
            t
        }
    };
    // Changing tags replaces the snapshot object: refused, before anything changes, for a
    // snapshot that may not be removed.
    gov.refuse_removal(targets.iter().copied().filter(|s| new_tags(s) != s.snapshot.tags), "tag")?;
    note.plan = Some(json!(targets
        .iter()
        .map(|s| json!({ "snapshot": s.id.to_hex(), "tags": new_tags(s) }))
        .collect::<Vec<_>>()));
    let mut report = Vec::new();
    for s in &targets {
        let tags = new_tags(s);
        let new = repo.retag(&s.id, &s.snapshot, tags.clone())?;
        if !g.json && !g.quiet {
            match &new {
                Some(n) => eprintln!("snapshot {} is now {} with tags [{}]", s.id.short(), n.short(), tags.join(", ")),
                None => eprintln!("snapshot {} unchanged", s.id.short()),
            }
        }
        report.push(json!({ "snapshot": s.id.to_hex(), "new": new.map(|n| n.to_hex()), "tags": tags }));
    }
    note.outcome = Some(json!(report));
    if g.json {
        print_json(&report)?;
    } else if !g.quiet {
        let changed = report.iter().filter(|r| !r["new"].is_null()).count();
        eprintln!("changed the tags of {changed} {}", plural(changed, "snapshot"));
    }
    Ok(ExitCode::Ok)
}

pub fn prune(g: &Global, a: PruneArgs) -> Result<ExitCode> {
    let repo = Arc::new(open(g)?);
    let opts = prune_options(g, &a.opts, &repo)?;
    if a.dry_run {
        run_prune(g, &repo, &opts, true, g.json)?;
        return Ok(ExitCode::Ok);
    }
    audited(&repo, "prune", |note| {
        if let Some((plan, outcome)) = run_prune(g, &repo, &opts, false, g.json)? {
            note.plan = Some(plan);
            note.outcome = Some(outcome);
        }
        Ok(ExitCode::Ok)
    })
}

/// Plans, prints the plan, and (unless a dry run) executes it; returns the plan and the
/// outcome as JSON when it ran.
fn run_prune(
    g: &Global,
    repo: &Arc<Repository>,
    opts: &PruneOptions,
    dry_run: bool,
    json_out: bool,
) -> Result<Option<(serde_json::Value, serde_json::Value)>> {
    let (session, _) = prune::start_session(repo)?;
    let prog = progress(g, "prune");
    let plan = match prune::plan(repo, &session, opts, prog.as_ref()) {
        Ok(p) => p,
        Err(e) => {
            session.end();
            return Err(e.into());
        }
    };
    if !dry_run {
        if let Err(e) = refuse_on_rollback(g, repo) {
            session.end();
            return Err(e);
        }
    }
    if !json_out && !g.quiet {
        print_plan(&plan, dry_run);
    }
    if dry_run {
        session.end();
        if json_out {
            print_json(&json!({ "dry_run": true, "plan": plan, "outcome": null }))?;
        }
        return Ok(None);
    }
    let plan_json = serde_json::to_value(&plan)?;
    let out = prune::execute(repo, &session, plan, opts, prog.as_ref());
    prog.finish();
    session.end();
    let out = out?;
    let out_json = serde_json::to_value(&out)?;
    if json_out {
        print_json(&json!({ "dry_run": false, "plan": plan_json, "outcome": out_json }))?;
    } else if !g.quiet {
        print_outcome(&out);
    }
    Ok(Some((plan_json, out_json)))
}

fn amount(a: &prune::Amount) -> String {
    format!("{} {} ({})", a.packs, plural(a.packs as usize, "pack"), HumanBytes(a.bytes))
}

fn print_plan(p: &Plan, dry_run: bool) {
    let head = if dry_run { "would" } else { "will" };
    eprintln!(
        "{} snapshots; {} indexed; blobs in use {}, unused {}",
        p.snapshots,
        amount(&p.packs),
        HumanBytes(p.used_bytes),
        HumanBytes(p.unused_bytes)
    );
    for s in &p.sessions {
        eprintln!("working around a running {} on {} (pid {}, {}): {}", s.kind, s.host, s.pid, s.username, s.command);
    }
    eprintln!("{head} repack {}, copying {} still in use", amount(&p.repack), HumanBytes(p.repack_copy_bytes));
    eprintln!("{head} mark unused: {}", amount(&p.unused));
    if p.leftovers.packs > 0 {
        eprintln!("{head} mark leftovers of processes that ended: {}", amount(&p.leftovers));
    }
    if p.in_flight.packs > 0 {
        eprintln!("leaving alone {} not yet indexed by running backups", amount(&p.in_flight));
    }
    if p.rescue_blobs > 0 {
        eprintln!("{head} copy {} blobs that only packs marked for deletion hold", p.rescue_blobs);
    }
    eprintln!("{head} delete obsolete packs no session can still use: {}", amount(&p.delete));
    if p.waiting.packs > 0 {
        eprintln!("keeping obsolete packs that running sessions may still use: {}", amount(&p.waiting));
    }
    if p.index_files_replaced > 0 {
        eprintln!("{head} rewrite the index, replacing {} files", p.index_files_replaced);
    }
    if p.locked.packs > 0 {
        eprintln!(
            "leaving obsolete packs S3 Object Lock still keeps (until {} at the latest): {}",
            crate::clock::from_unix_ns(p.locked_until_ns).strftime("%Y-%m-%d %H:%M UTC"),
            amount(&p.locked)
        );
    }
    if p.locks_to_extend > 0 {
        eprintln!("{head} extend the S3 Object Lock of {} objects still needed", p.locks_to_extend);
    }
    let r = &p.requests;
    eprintln!("requests (estimated): GET {}, PUT {}, DELETE {}, LIST {}", r.get, r.put, r.delete, r.list);
    eprintln!(
        "space freed: {} once everything marked is deleted (what this run marks is deleted now if no backup runs)",
        HumanBytes(p.freed_eventually())
    );
}

fn print_outcome(o: &Outcome) {
    eprintln!(
        "wrote {} new packs ({}) and {} index files; marked {} packs obsolete",
        o.packs_written,
        HumanBytes(o.bytes_written),
        o.index_files_written,
        o.packs_marked
    );
    eprintln!(
        "deleted {} packs ({}) and {} index files",
        o.packs_deleted,
        HumanBytes(o.bytes_deleted),
        o.index_files_deleted
    );
    if o.locks_extended > 0 || o.objects_locked > 0 {
        eprintln!(
            "extended the S3 Object Lock of {} objects; left {} objects the lock still keeps",
            o.locks_extended, o.objects_locked
        );
    }
    if o.packs_waiting > 0 {
        eprintln!("{} obsolete packs wait for running sessions to end; the next prune deletes them", o.packs_waiting);
    }
}

pub fn unlock(g: &Global, a: UnlockArgs) -> Result<ExitCode> {
    let repo = open(g)?;
    audited(&repo, "unlock", |note| unlock_run(g, &repo, &a, note))
}

fn unlock_run(g: &Global, repo: &Repository, a: &UnlockArgs, note: &mut Note) -> Result<ExitCode> {
    // A lock of our own gives the storage's present time to judge the others by.
    let me = Session::start(repo, crate::format::lock::LockKind::Writer, "unlock")?;
    let sessions = list_sessions(repo)?;
    let now = sessions
        .iter()
        .find(|s| s.session == me.id())
        .map(|s| s.renewed_ns)
        .ok_or_else(|| anyhow!("this command's own lock is missing from the listing of locks/"))?;
    let mut removed: Vec<&SessionInfo> = Vec::new();
    for s in sessions.iter().filter(|s| s.session != me.id()) {
        if a.remove_all || !s.is_live(now) {
            for l in &s.locks {
                repo.store().delete(&crate::repo::lock_path(l))?;
            }
            removed.push(s);
        }
    }
    me.end();
    note.outcome = Some(serde_json::to_value(&removed)?);
    if g.json {
        print_json(&removed)?;
    } else if !g.quiet {
        for s in &removed {
            eprintln!("removed the lock of {} on {} (pid {}, {})", s.kind, s.host, s.pid, s.command);
        }
        eprintln!("removed {} {}", removed.len(), plural(removed.len(), "lock"));
    }
    Ok(ExitCode::Ok)
}
