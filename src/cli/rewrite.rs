//! `rewrite`: parse, call `retention::rewrite`, print.

use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use serde_json::json;

use super::args::*;
use super::commands::{filter, open, print_json, refuse_on_rollback};
use super::exit::ExitCode;
use super::governance::{audited, governance_at};
use crate::format::erasure::ErasureRecord;
use crate::repo::snapshots::{match_id, ListedSnapshot};
use crate::retention::rewrite;
use crate::source::exclude::Patterns;

pub fn rewrite(g: &Global, a: RewriteArgs) -> Result<ExitCode> {
    let patterns = Patterns::from_args(&a.exclude, &a.exclude_file).map_err(|e| anyhow!("{e}"))?;
    if patterns.is_empty() {
        bail!("give the paths to leave out with --exclude or --exclude-file (a pattern of only `/` names nothing)");
    }
    let repo = Arc::new(open(g)?);
    if a.dry_run {
        return run(g, &repo, &a, &patterns, &mut Default::default());
    }
    audited(&repo, "rewrite", |note| run(g, &repo, &a, &patterns, note))
}

fn chosen(all: Vec<ListedSnapshot>, a: &RewriteArgs) -> Result<Vec<ListedSnapshot>> {
    let f = filter(&a.filter);
    let all: Vec<ListedSnapshot> = all.into_iter().filter(|s| f.matches(&s.snapshot)).collect();
    if a.snapshots.is_empty() {
        return Ok(all);
    }
    let ids: Vec<_> = all.iter().map(|s| s.id).collect();
    let mut v: Vec<ListedSnapshot> = Vec::new();
    for spec in &a.snapshots {
        let id = if spec == "latest" {
            all.last().map(|s| s.id).ok_or_else(|| anyhow!("no snapshot matches"))?
        } else {
            match_id(spec, &ids)?
        };
        if !v.iter().any(|s| s.id == id) {
            v.push(all.iter().find(|s| s.id == id).expect("matched").clone());
        }
    }
    Ok(v)
}

fn run(
    g: &Global,
    repo: &Arc<crate::repo::Repository>,
    a: &RewriteArgs,
    patterns: &Patterns,
    note: &mut super::governance::Note,
) -> Result<ExitCode> {
    let (session, gov) = governance_at(repo, "rewrite", a.dry_run)?;
    let result = (|| {
        let snaps = chosen(repo.load_snapshots_listed()?, a)?;
        let index = repo.load_index()?;
        let plan = rewrite::plan(repo, &index, &snaps, patterns, &gov, a.forget)?;
        if !a.dry_run {
            refuse_on_rollback(g, repo)?;
        }
        let plan_json = serde_json::to_value(&plan)?;
        note.plan = Some(json!({ "patterns": patterns.sources, "rewrites": plan_json["rewrites"] }));
        if !g.json && !g.quiet {
            for r in &plan.rewrites {
                eprintln!("snapshot {}: {} paths left out:", &r.snapshot[..8], r.removed.len());
                for p in &r.removed {
                    eprintln!("  {p}");
                }
            }
            eprintln!("{} snapshots to rewrite, {} hold nothing that matches", plan.rewrites.len(), plan.unchanged);
        }
        for r in plan.rewrites.iter().filter(|_| a.forget) {
            if let Some(why) = &r.kept_because {
                eprintln!("warning: the original snapshot {} cannot be removed: it is {why}", &r.snapshot[..8]);
            }
        }
        if a.dry_run {
            if g.json {
                print_json(&json!({ "dry_run": true, "plan": plan_json, "outcome": null }))?;
            } else if !g.quiet {
                eprintln!("dry run: nothing was changed");
            }
            return Ok(ExitCode::Ok);
        }
        let (host, user) = crate::repo::audit::who();
        let record = ErasureRecord {
            time_ns: crate::clock::to_unix_ns(crate::clock::now()),
            host,
            user,
            reason: a.reason.clone().unwrap_or_default(),
            patterns: patterns.sources.clone(),
            rewritten: vec![],
            kept: vec![],
        };
        let alive = session.as_ref().expect("a session unless a dry run").alive();
        let out = rewrite::execute(repo, plan, a.forget, record, &alive)?;
        note.outcome = Some(serde_json::to_value(&out)?);
        if g.json {
            print_json(&json!({ "dry_run": false, "plan": plan_json, "outcome": out }))?;
        } else if !g.quiet {
            for (old, new) in &out.written {
                eprintln!("snapshot {} rewritten as {}", &old[..8], &new[..8]);
            }
            eprintln!(
                "removed {} original snapshots; the erasure is recorded ({}); `coffer prune` removes the data",
                out.forgotten,
                out.erasure_record.as_deref().map_or("", |s| &s[..8])
            );
        }
        // With --forget, an original kept by a hold or the minimum retention still holds the
        // data: the erasure is not complete.
        Ok(if a.forget && !out.kept.is_empty() { ExitCode::Partial } else { ExitCode::Ok })
    })();
    if let Some(s) = session {
        s.end();
    }
    result
}
