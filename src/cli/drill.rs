//! `drill` and `drill history`.

use std::io::Write;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use serde_json::json;

use super::args::*;
use super::commands::{open, print_json, progress, reader_session, threads};
use super::exit::ExitCode;
use crate::drill::{self, report, DrillOptions, Sample};
use crate::repo::snapshots::SnapshotFilter;

pub fn drill(g: &Global, a: DrillArgs) -> Result<ExitCode> {
    if let Some(DrillCommand::History) = a.command {
        return history(g);
    }
    let sample = match (&a.sample, a.full) {
        (_, true) => Sample::Full,
        (None, false) => Sample::Share(0.05),
        (Some(s), false) => {
            let p: f64 = s
                .trim()
                .trim_end_matches('%')
                .trim()
                .parse()
                .map_err(|_| anyhow!("--sample {s:?}: give a percentage, e.g. 5%"))?;
            if !(p > 0.0 && p <= 100.0) {
                bail!("--sample {s:?}: a percentage above 0 and at most 100");
            }
            Sample::Share(p / 100.0)
        }
    };
    let span = |v: &Option<String>, what: &str| {
        v.as_deref().map(crate::timespec::parse_span_secs).transpose().map_err(|e| anyhow!("{what}: {e}"))
    };
    let (rto_secs, rpo_secs) = (span(&a.rto, "--rto")?, span(&a.rpo, "--rpo")?);
    let report_kind = match &a.report {
        None => None,
        Some(p) => match p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("md") | Some("markdown") => Some(false),
            Some("html") | Some("htm") => Some(true),
            _ => bail!("--report {}: the name must end in .md (Markdown) or .html (an HTML page)", p.display()),
        },
    };
    // The report's file must be writable before anything runs (a drill is recorded).
    if let Some(p) = &a.report {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(p)
            .map_err(|e| anyhow!("--report {}: cannot write it: {e}", p.display()))?;
    }
    let repo = Arc::new(open(g)?);
    let _reading = reader_session(&repo, "drill");
    let all = repo.load_snapshots()?;
    let chosen: Vec<_> = match &a.snapshot {
        Some(spec) => {
            let f = SnapshotFilter { hosts: a.host.clone(), ..Default::default() };
            vec![repo.find_snapshot(spec, &f)?]
        }
        None => {
            let mut hosts: Vec<&str> = all.iter().map(|(_, s)| s.host.as_str()).collect();
            hosts.sort();
            hosts.dedup();
            hosts.retain(|h| a.host.is_empty() || a.host.iter().any(|x| x == h));
            hosts.iter().filter_map(|h| all.iter().rev().find(|(_, s)| s.host == *h).cloned()).collect()
        }
    };
    if chosen.is_empty() {
        bail!("no snapshot to drill (the repository has none{})", if a.host.is_empty() { "" } else { " of that host" });
    }
    // Objectives not given on the command line come from the stored policy.
    let gov = crate::retention::governance::Governance::load(&repo, 0)?;
    let index = Arc::new(repo.load_index()?);
    let several = chosen.len() > 1;
    super::governance::audited(&repo, "drill", |note| {
        note.plan =
            Some(serde_json::json!({ "snapshots": chosen.iter().map(|(id, _)| id.to_hex()).collect::<Vec<_>>() }));
        let code =
            run_chosen(g, &a, &repo, &index, &chosen, &all, sample, (rto_secs, rpo_secs), &gov, report_kind, several)?;
        note.outcome = Some(serde_json::json!({ "exit_code": code as i32 }));
        Ok(code)
    })
}

#[allow(clippy::too_many_arguments)]
fn run_chosen(
    g: &Global,
    a: &DrillArgs,
    repo: &Arc<crate::repo::Repository>,
    index: &Arc<crate::repo::MasterIndex>,
    chosen: &[(crate::id::SnapshotId, crate::format::snapshot::Snapshot)],
    all: &[(crate::id::SnapshotId, crate::format::snapshot::Snapshot)],
    sample: Sample,
    (rto_given, rpo_given): (Option<u64>, Option<u64>),
    gov: &crate::retention::governance::Governance,
    report_kind: Option<bool>,
    several: bool,
) -> Result<ExitCode> {
    let mut results = Vec::new();
    for (id, snap) in chosen {
        let (rto_stored, rpo_stored) = gov.objectives(&snap.host, &snap.tags);
        let (rto_secs, rpo_secs) = (rto_given.or(rto_stored), rpo_given.or(rpo_stored));
        let target =
            a.target
                .as_ref()
                .map(|t| if several { t.join(format!("{}-{}", snap.host, id.short())) } else { t.clone() });
        let opts =
            DrillOptions { sample, target, compare_source: a.compare_source, rto_secs, rpo_secs, threads: threads(g) };
        let prog = progress(g, "drill");
        let r = drill::run(repo, index, *id, snap, all, &opts, prog.clone());
        prog.finish();
        results.push(r?);
    }
    if let (Some(path), Some(html)) = (&a.report, report_kind) {
        let history: Vec<_> = repo.load_drills()?.into_iter().map(|(_, r)| r).collect();
        let text = if html { report::html(&results, &history) } else { report::markdown(&results, &history) };
        std::fs::write(path, text).map_err(|e| anyhow!("writing the report {}: {e}", path.display()))?;
    }
    if g.json {
        if several {
            print_json(&results)?;
        } else {
            print_json(&results[0])?;
        }
    } else if !g.quiet {
        for r in &results {
            print_result(r);
        }
    }
    let damage = results.iter().any(|r| !r.damaged.is_empty());
    let breached = results.iter().any(|r| r.objectives.rto.met == Some(false) || r.objectives.rpo.met == Some(false));
    Ok(if damage {
        ExitCode::DrillDamage
    } else if breached {
        ExitCode::ObjectiveBreached
    } else {
        ExitCode::Ok
    })
}

fn print_result(r: &drill::DrillResult) {
    let h = report::human_secs;
    let what = if r.full { "every file".to_string() } else { format!("part {} of {}", r.part + 1, r.parts) };
    eprintln!(
        "drill of snapshot {} (host {}): {what}: {} of {} files, {} of {} verified in {}",
        &r.snapshot[..8],
        r.host,
        r.files_checked,
        r.files_total,
        indicatif::HumanBytes(r.bytes_checked),
        indicatif::HumanBytes(r.bytes_total),
        h(r.duration)
    );
    if r.source_compared > 0 {
        eprintln!("  {} files compared with the live ones (unchanged since the snapshot)", r.source_compared);
    }
    for d in &r.damaged {
        eprintln!("  damaged: {}: {}", d.path, d.error);
    }
    let obj = |o: &drill::Objective| match (o.target, o.met) {
        (Some(t), Some(true)) => format!(" (objective {}: met)", h(t as f64)),
        (Some(t), _) => format!(" (objective {}: BREACHED)", h(t as f64)),
        _ => String::new(),
    };
    eprintln!(
        "  RTO: a full restore would take about {}{}",
        h(r.projected_full_restore_seconds),
        obj(&r.objectives.rto)
    );
    eprintln!(
        "  RPO: newest snapshot {} old; largest gap in 30 days {}{}",
        h(r.rpo_seconds),
        h(r.rpo_max_gap_seconds),
        obj(&r.objectives.rpo)
    );
    eprintln!("  coverage by drills so far: {:.1}%", r.coverage * 100.0);
    eprintln!("  {}", if r.passed { "PASSED" } else { "FAILED" });
}

fn history(g: &Global) -> Result<ExitCode> {
    let repo = open(g)?;
    let mut drills = repo.load_drills()?;
    drills.reverse();
    if g.json {
        let v: Vec<_> = drills
            .iter()
            .map(|(id, r)| {
                json!({
                    "id": id.to_hex(),
                    "time": crate::clock::from_unix_ns(r.time_ns).to_string(),
                    "host": r.host,
                    "snapshot": hex::encode(r.snapshot),
                    "passed": r.passed,
                    "full": r.full,
                    "part": r.part,
                    "parts": r.parts,
                    "files_checked": r.files_checked,
                    "bytes_checked": r.bytes_checked,
                    "damaged": r.damaged,
                    "rto_seconds": r.projected_ns as f64 / 1e9,
                    "rpo_seconds": r.rpo_ns as f64 / 1e9,
                    "rpo_max_gap_seconds": r.rpo_max_gap_ns as f64 / 1e9,
                    "coverage": f64::from(r.coverage_ppm) / 1e6,
                    "duration": r.duration_ns as f64 / 1e9,
                })
            })
            .collect();
        print_json(&v)?;
        return Ok(ExitCode::Ok);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<25}  {:<16}  {:<8}  {:<6}  {:>12}  {:>12}  {:>8}",
        "time", "host", "snapshot", "result", "RTO", "RPO", "coverage"
    )?;
    for (_, r) in &drills {
        writeln!(
            out,
            "{:<25}  {:<16}  {:<8}  {:<6}  {:>12}  {:>12}  {:>7.1}%",
            crate::clock::from_unix_ns(r.time_ns).strftime("%Y-%m-%d %H:%M:%S").to_string(),
            r.host,
            hex::encode(&r.snapshot[..4]),
            if r.passed { "passed" } else { "FAILED" },
            report::human_secs(r.projected_ns as f64 / 1e9),
            report::human_secs(r.rpo_max_gap_ns as f64 / 1e9),
            f64::from(r.coverage_ppm) / 1e4
        )?;
    }
    writeln!(out, "{} drills", drills.len())?;
    Ok(ExitCode::Ok)
}
