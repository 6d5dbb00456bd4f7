//! `repair index`, `repair snapshots`, `repair packs`: print the plan, then carry it out.

use std::sync::Arc;

use anyhow::{anyhow, Result};
use serde_json::json;

use super::args::*;
use super::commands::{open, print_json, progress, threads};
use super::exit::ExitCode;
use super::governance::{audited, session_now, Note};
use crate::id::PackId;
use crate::repair;
use crate::repo::lock::Session;
use crate::retention::prune;

pub fn repair(g: &Global, c: RepairCommand) -> Result<ExitCode> {
    let repo = Arc::new(open(g)?);
    let (name, dry_run) = match &c {
        RepairCommand::Index(a) => ("repair index", a.dry_run),
        RepairCommand::Snapshots(a) => ("repair snapshots", a.dry_run),
        RepairCommand::Packs(a) => ("repair packs", a.dry_run),
    };
    let run = |note: &mut Note| match c {
        RepairCommand::Index(a) => index(g, &repo, a, note),
        RepairCommand::Snapshots(a) => snapshots(g, &repo, a, note),
        RepairCommand::Packs(a) => packs(g, &repo, a, note),
    };
    if dry_run {
        run(&mut Note::default())
    } else {
        audited(&repo, name, run)
    }
}

/// Reads the snapshots (which compares them with this client's marks) and refuses while the
/// repository went back in time.
fn refuse_if_rolled_back(g: &Global, repo: &crate::repo::Repository) -> Result<()> {
    repo.load_snapshots_all()?;
    super::commands::refuse_on_rollback(g, repo)
}

/// Prints `{"dry_run", "plan", "outcome"}`.
fn report(dry_run: bool, plan: serde_json::Value, outcome: Option<serde_json::Value>) -> Result<()> {
    print_json(&json!({ "dry_run": dry_run, "plan": plan, "outcome": outcome }))
}

fn index(g: &Global, repo: &Arc<crate::repo::Repository>, a: RepairIndexArgs, note: &mut Note) -> Result<ExitCode> {
    let repo = repo.as_ref();
    let (session, _) = prune::start_exclusive(repo, "repair index")?;
    let prog = progress(g, "repair index");
    let plan = repair::index::plan(repo, a.read_all_packs, threads(g).max(4), prog.as_ref());
    prog.finish();
    // The session ends when it is dropped, on an early return too.
    let plan = plan?;
    if !a.dry_run {
        refuse_if_rolled_back(g, repo)?;
    }
    let plan_json = serde_json::to_value(&plan)?;
    if !g.json && !g.quiet {
        eprintln!(
            "repair index: {} packs described by readable index files, {} by their own headers; {} blobs",
            plan.packs_from_index, plan.packs_from_headers, plan.blobs
        );
        for d in &plan.index_files_damaged {
            eprintln!("  damaged index file, replaced: {d}");
        }
        for u in &plan.packs_kept_unreadable {
            eprintln!("  pack with an unreadable header, kept with the index's entries (`coffer repair packs` salvages it): {u}");
        }
        for u in &plan.packs_unreadable {
            eprintln!("  unreadable pack no index file describes, left out: {u}");
        }
        for m in &plan.packs_missing {
            eprintln!("  missing pack, left out: {m}");
        }
        eprintln!("  the new index replaces {} index files", plan.index_files_replaced);
    }
    if a.dry_run || plan.is_noop() {
        session.end();
        if !g.json && !g.quiet {
            eprintln!(
                "{}",
                if a.dry_run { "dry run: nothing was changed" } else { "the index is whole: nothing to do" }
            );
        }
        if g.json {
            report(a.dry_run, plan_json, None)?;
        }
        return Ok(ExitCode::Ok);
    }
    note.plan = Some(plan_json.clone());
    let out = repair::index::execute(repo, plan);
    session.end();
    let out = out?;
    note.outcome = Some(serde_json::to_value(&out)?);
    if g.json {
        report(false, plan_json, Some(serde_json::to_value(&out)?))?;
    } else if !g.quiet {
        eprintln!(
            "wrote {}; deleted {} index files",
            out.index_file.as_deref().unwrap_or("nothing"),
            out.index_files_deleted
        );
    }
    Ok(ExitCode::Ok)
}

fn snapshots(
    g: &Global,
    repo: &Arc<crate::repo::Repository>,
    a: RepairSnapshotsArgs,
    note: &mut Note,
) -> Result<ExitCode> {
    let session = if a.dry_run {
        None
    } else {
        Some(Session::start(repo, crate::format::lock::LockKind::Writer, "repair snapshots")?)
    };
    let plan = repair::snapshots::plan(repo, &a.snapshots)?;
    if !a.dry_run {
        super::commands::refuse_on_rollback(g, repo)?;
    }
    let plan_json = serde_json::to_value(&plan)?;
    if !g.json && !g.quiet {
        for r in &plan.repairs {
            eprintln!("snapshot {}: {} paths replaced:", &r.snapshot[..8], r.replaced.len());
            for p in &r.replaced {
                eprintln!("  {}: {}", p.path, p.reason);
            }
        }
        eprintln!("{} need a repair, {} whole", super::counted(plan.repairs.len() as u64, "snapshot"), plan.whole);
    }
    let Some(session) = session else {
        if g.json {
            report(true, plan_json, None)?;
        } else if !g.quiet {
            eprintln!("dry run: nothing was changed");
        }
        return Ok(ExitCode::Ok);
    };
    // --forget keeps the originals a hold or the minimum retention protects.
    let mut protected = std::collections::HashMap::new();
    if a.forget {
        let gov = crate::retention::governance::Governance::load(repo, session_now(repo, &session)?)?;
        for s in repo.load_snapshots_listed()? {
            if let Some(p) = gov.protection(&s) {
                protected.insert(s.id, p.to_string());
            }
        }
    }
    note.plan = Some(plan_json.clone());
    let out = repair::snapshots::execute(repo, plan, a.forget, &protected, &session.alive());
    session.end();
    let out = out?;
    if g.json {
        report(false, plan_json, Some(serde_json::to_value(&out)?))?;
    } else if !g.quiet {
        for (old, new) in &out.written {
            eprintln!("snapshot {} repaired as {}", &old[..8], &new[..8]);
        }
        if out.forgotten > 0 {
            eprintln!("removed {} original snapshots", out.forgotten);
        }
    }
    for (id, why) in &out.kept {
        eprintln!("warning: the original snapshot {} was kept: it is {why}", &id[..8]);
    }
    note.outcome = Some(serde_json::to_value(&out)?);
    // As for rewrite: --forget could not remove every original.
    Ok(if out.kept.is_empty() { ExitCode::Ok } else { ExitCode::Partial })
}

fn packs(g: &Global, repo: &Arc<crate::repo::Repository>, a: RepairPacksArgs, note: &mut Note) -> Result<ExitCode> {
    let given: Vec<PackId> = a
        .packs
        .iter()
        .map(|s| PackId::from_name(s.rsplit('/').next().unwrap_or(s)).ok_or_else(|| anyhow!("{s:?} is not a pack id")))
        .collect::<Result<_>>()?;
    let (session, _) = prune::start_exclusive(repo, "repair packs")?;
    let plan = repair::packs::plan(repo, &given)?;
    if !a.dry_run {
        refuse_if_rolled_back(g, repo)?;
    }
    let plan_json = serde_json::to_value(&plan)?;
    if !g.json && !g.quiet {
        for p in &plan.packs {
            eprintln!(
                "{}: header {}; {} blobs to copy ({} bytes), {} good elsewhere, {} lost",
                p.pack,
                if p.header_ok { "readable" } else { "unreadable (the index located the blobs)" },
                p.blobs_salvaged,
                p.bytes_salvaged,
                p.blobs_elsewhere,
                p.blobs_lost.len()
            );
            for l in &p.blobs_lost {
                eprintln!("  lost: {l}");
            }
        }
        for p in &plan.packs_gone {
            eprintln!("{p}: missing; nothing to salvage (`coffer repair snapshots` replaces what needed it)");
        }
        if plan.packs.is_empty() && plan.packs_gone.is_empty() {
            eprintln!("no damaged packs: nothing to do");
        }
    }
    if a.dry_run {
        session.end();
        if g.json {
            report(true, plan_json, None)?;
        } else if !g.quiet {
            eprintln!("dry run: nothing was changed");
        }
        return Ok(ExitCode::Ok);
    }
    let lost: usize = plan.packs.iter().map(|p| p.blobs_lost.len()).sum();
    note.plan = Some(plan_json.clone());
    let out = repair::packs::execute(repo, plan, &session.alive());
    session.end();
    let out = out?;
    note.outcome = Some(serde_json::to_value(&out)?);
    if g.json {
        report(false, plan_json, Some(serde_json::to_value(&out)?))?;
    } else if !g.quiet {
        eprintln!(
            "copied {} blobs into new packs; retired {} damaged packs (the next prune deletes them)",
            out.blobs_copied, out.packs_retired
        );
        if lost > 0 {
            eprintln!("{lost} blobs could not be read: `coffer repair snapshots` replaces the files that need them");
        }
    }
    Ok(ExitCode::Ok)
}
