//! `policy`, `hold` and `audit`, and what every destructive or administrative command shares:
//! the audit entry it leaves ([`audited`]) and the storage's present it judges by
//! ([`judged_now`]).

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use super::args::*;
use super::commands::{open, print_json};
use super::exit::{exit_code_for, ExitCode};
use crate::format::hold::{HoldKind, HoldRecord};
use crate::format::policy::{PolicyDoc, Rule};
use crate::repo::audit::{self, Record};
use crate::repo::lock::Session;
use crate::repo::Repository;
use crate::retention::governance::{self, ActiveHold, Governance};
use crate::retention::policy::Policy;

/// `s` with control characters escaped: records written by any password holder are shown
/// as evidence, so none may forge lines or drive the terminal.
fn printable(s: &str) -> String {
    super::progress::terminal_text(s)
}

/// What an audited command tells its entry.
#[derive(Default)]
pub struct Note {
    pub plan: Option<Value>,
    pub outcome: Option<Value>,
}

/// Runs `f` and appends an audit entry with its plan and outcome, whether it succeeded or
/// failed (a refusal is worth recording too). An entry that cannot be written fails the
/// command, naming what was done.
pub fn audited(repo: &Repository, command: &str, f: impl FnOnce(&mut Note) -> Result<ExitCode>) -> Result<ExitCode> {
    let mut note = Note::default();
    let result = f(&mut note);
    let (exit_code, outcome) = match &result {
        Ok(code) => (*code as i32, note.outcome.take().unwrap_or(Value::Null)),
        Err(e) => (exit_code_for(e) as i32, json!({ "error": super::error_text(e) })),
    };
    let record = Record {
        command: command.to_string(),
        args: std::env::args().skip(1).collect(),
        exit_code,
        plan: note.plan.map(|p| p.to_string()).unwrap_or_default(),
        outcome: outcome.to_string(),
    };
    match (repo.append_audit(&record), result) {
        (Ok(_), r) => r,
        (Err(e), Ok(_)) => Err(anyhow!("{command} finished, but its audit entry could not be written: {e}")),
        (Err(e), Err(orig)) => {
            eprintln!("warning: the audit entry of this failed {command} could not be written: {e}");
            Err(orig)
        }
    }
}

/// A writer session, and the storage's present: the timestamp of the session's own lock,
/// which no client's clock can move.
pub fn judged_now(repo: &Repository, command: &str) -> Result<(Session, i64)> {
    let session = Session::start(repo, crate::format::lock::LockKind::Writer, command)?;
    match session_now(repo, &session) {
        Ok(now) => Ok((session, now)),
        Err(e) => {
            session.end();
            Err(e)
        }
    }
}

/// The storage's timestamp of a session's first lock.
pub fn session_now(repo: &Repository, session: &Session) -> Result<i64> {
    Ok(repo.store().head(&crate::repo::lock_path(&session.first_lock()))?.modified_ns)
}

/// The policy documents and holds, judged at the storage's present.
pub fn governance_now(repo: &Repository, command: &str) -> Result<(Session, Governance)> {
    governance_at(repo, command, false).map(|(s, g)| (s.expect("a session unless a dry run"), g))
}

/// As [`governance_now`]; for a dry run (`dry_run`), credentials that cannot write a lock
/// are no obstacle: the present is then this host's clock, said in a warning (a dry run
/// decides nothing).
pub fn governance_at(repo: &Repository, command: &str, dry_run: bool) -> Result<(Option<Session>, Governance)> {
    let (session, now) = match judged_now(repo, command) {
        Ok((s, now)) => (Some(s), now),
        Err(e) if dry_run => {
            eprintln!(
                "warning: no lock could be written ({e:#}); this dry run judges the minimum retention by this \
                 host's clock"
            );
            (None, crate::clock::to_unix_ns(crate::clock::now()))
        }
        Err(e) => return Err(e),
    };
    match Governance::load(repo, now) {
        Ok(g) => Ok((session, g)),
        Err(e) => {
            if let Some(s) = session {
                s.end();
            }
            Err(e.into())
        }
    }
}

pub fn policy(g: &Global, cmd: PolicyCommand) -> Result<ExitCode> {
    let repo = open(g)?;
    match cmd {
        PolicyCommand::Show => {
            let gov = Governance::load(&repo, 0)?;
            show_policy(g, &gov)?;
            Ok(ExitCode::Ok)
        }
        PolicyCommand::Set(a) => audited(&repo, "policy set", |note| policy_set(g, &repo, *a, note)),
    }
}

fn span_secs(s: &str, what: &str) -> Result<Option<u64>> {
    let v = crate::timespec::parse_span_secs(s).map_err(|e| anyhow!("{what}: {e}"))?;
    Ok((v > 0).then_some(v))
}

fn policy_set(g: &Global, repo: &Repository, a: PolicySetArgs, note: &mut Note) -> Result<ExitCode> {
    let keep = super::retention::policy_of(&a.keep);
    let given = !keep.is_empty() || a.min_retention.is_some() || a.rto.is_some() || a.rpo.is_some();
    if !given && !a.clear {
        bail!("nothing to set: give --keep-*, --min-retention, --rto, --rpo, or --clear");
    }
    if a.clear && !keep.is_empty() {
        bail!("--clear removes the scope's rules: give it without --keep-*");
    }
    for (what, v) in [("--host", &a.host), ("--tag", &a.tag)] {
        match v.as_deref() {
            Some(x) if x.trim().is_empty() => {
                bail!("{what}: an empty name is not a scope (leave it out for the default)")
            }
            Some(x) if what == "--tag" && x.contains(',') => {
                bail!("--tag {x:?}: one tag per rule (set a rule for each)")
            }
            _ => {}
        }
    }
    keep.validate().map_err(|e| anyhow!("{e}"))?;
    if a.min_retention.is_some_and(|d| d.years < 0 || d.months < 0 || d.days < 0 || d.hours < 0) {
        bail!("--min-retention: a negative duration is not allowed");
    }
    let rto = a.rto.as_deref().map(|s| span_secs(s, "--rto")).transpose()?;
    let rpo = a.rpo.as_deref().map(|s| span_secs(s, "--rpo")).transpose()?;
    // The scope's rule after this change, from the rule it had (if any); a rule with nothing
    // in it clears the scope.
    let change = |old: Option<&Rule>| -> Rule {
        let cleared = Rule { host: a.host.clone(), tag: a.tag.clone(), ..Default::default() };
        if a.clear {
            return cleared;
        }
        let mut rule = old.cloned().unwrap_or(cleared);
        if !keep.is_empty() {
            rule.keep = governance::keep_of(&keep);
        }
        if let Some(d) = a.min_retention {
            rule.min_retention = Some(governance::span_of(Some(d))).filter(|s| *s != [0; 4]);
        }
        if let Some(v) = rto {
            rule.rto_s = v;
        }
        if let Some(v) = rpo {
            rule.rpo_s = v;
        }
        rule
    };
    let scope_of = |d: &PolicyDoc| d.rules.iter().find(|r| r.host == a.host && r.tag == a.tag).cloned();
    let scope = governance::scope_name(&Rule { host: a.host.clone(), tag: a.tag.clone(), ..Default::default() });
    // The document names only this scope (a rule with nothing in it clears it): the newest
    // document naming a scope decides it, so a concurrent `policy set` of another scope keeps
    // its change too.
    let gov = Governance::load(repo, 0)?;
    let before = gov.current().map(|p| p.value).unwrap_or_default();
    let old_min = scope_of(&before).and_then(|r| r.min_retention);
    let wanted = change(scope_of(&before).as_ref());
    let new_min = wanted.min_retention;
    let (host, user) = audit::who();
    let doc = PolicyDoc {
        seq: gov.max_seq() + 1,
        time_ns: crate::clock::to_unix_ns(crate::clock::now()),
        host,
        user,
        rules: vec![wanted],
    };
    let mut after = before.clone();
    after.rules.retain(|r| !(r.host == a.host && r.tag == a.tag));
    after.rules.extend(doc.rules.iter().filter(|r| !governance::is_cleared(r)).cloned());
    note.plan = Some(json!({ "scope": scope, "before": policy_json(&before), "after": policy_json(&after) }));
    let (id, _) = repo.save_policy(&doc)?;
    note.outcome = Some(json!({ "policy": id.to_hex() }));
    let lowered = match (old_min, new_min) {
        (Some(o), Some(n)) => governance::add_span(0, &n) < governance::add_span(0, &o),
        (Some(_), None) => true,
        _ => false,
    };
    if lowered && !g.quiet {
        eprintln!(
            "note: the minimum retention of {scope} was lowered; snapshots stored before now keep the old minimum \
             until it has passed for them"
        );
    }
    let gov = Governance::load(repo, 0)?;
    show_policy(g, &gov)?;
    Ok(ExitCode::Ok)
}

fn count_json(c: crate::retention::policy::Count) -> Value {
    match c {
        crate::retention::policy::Count::Limited(n) => json!(n),
        crate::retention::policy::Count::Unlimited => json!("unlimited"),
    }
}

fn keep_json(p: &Policy) -> Value {
    let mut m = serde_json::Map::new();
    for (k, c) in [
        ("last", p.last),
        ("hourly", p.hourly),
        ("daily", p.daily),
        ("weekly", p.weekly),
        ("monthly", p.monthly),
        ("yearly", p.yearly),
    ] {
        if c != crate::retention::policy::Count::Limited(0) {
            m.insert(k.into(), count_json(c));
        }
    }
    for (k, d) in [
        ("within", p.within),
        ("within_hourly", p.within_hourly),
        ("within_daily", p.within_daily),
        ("within_weekly", p.within_weekly),
        ("within_monthly", p.within_monthly),
        ("within_yearly", p.within_yearly),
    ] {
        if let Some(d) = d.filter(|d| !d.is_zero()) {
            m.insert(k.into(), json!(d.to_string()));
        }
    }
    if !p.tags.is_empty() {
        m.insert("tags".into(), json!(p.tags));
    }
    Value::Object(m)
}

fn rule_json(r: &Rule) -> Value {
    json!({
        "scope": governance::scope_name(r),
        "host": r.host,
        "tag": r.tag,
        "keep": keep_json(&governance::policy_of(&r.keep)),
        "min_retention": r.min_retention.as_ref().and_then(governance::duration_of).map(|d| d.to_string()),
        "rto_seconds": r.rto_s,
        "rpo_seconds": r.rpo_s,
    })
}

fn policy_json(d: &PolicyDoc) -> Value {
    json!({ "seq": d.seq, "rules": d.rules.iter().map(rule_json).collect::<Vec<_>>() })
}

fn show_policy(g: &Global, gov: &Governance) -> Result<()> {
    let cur = gov.current();
    let cur = cur.as_ref();
    if g.json {
        let v = cur.map(|p| {
            let mut v = policy_json(&p.value);
            v["id"] = json!(p.id.to_hex());
            v["stored"] = json!(crate::clock::from_unix_ns(p.stored_ns).to_string());
            v["set_by"] = json!(format!("{}@{}", p.value.user, p.value.host));
            v["history"] = json!(gov.policies.len());
            v["seq"] = json!(gov.max_seq());
            v
        });
        return print_json(&v.unwrap_or(Value::Null));
    }
    let Some(p) = cur else {
        outln!("no policy is stored (`coffer policy set` stores one)");
        return Ok(());
    };
    outln!(
        "policy {} (version {}, set {} by {}@{})",
        p.id.short(),
        gov.max_seq(),
        crate::clock::from_unix_ns(p.stored_ns).strftime("%Y-%m-%d %H:%M:%S UTC"),
        p.value.user,
        p.value.host
    );
    for r in &p.value.rules {
        let mut parts = Vec::new();
        let keep = governance::policy_of(&r.keep);
        if !keep.is_empty() {
            parts.push(keep.to_string());
        }
        if let Some(d) = r.min_retention.as_ref().and_then(governance::duration_of) {
            parts.push(format!("minimum retention {d}"));
        }
        if let Some(s) = r.rto_s {
            parts.push(format!("RTO {}", crate::drill::report::human_secs(s as f64)));
        }
        if let Some(s) = r.rpo_s {
            parts.push(format!("RPO {}", crate::drill::report::human_secs(s as f64)));
        }
        outln!("  {}: {}", governance::scope_name(r), parts.join("; "));
    }
    if p.value.rules.is_empty() {
        outln!("  (no rules)");
    }
    Ok(())
}

pub fn hold(g: &Global, cmd: HoldCommand) -> Result<ExitCode> {
    let repo = open(g)?;
    match cmd {
        HoldCommand::List(a) => {
            let gov = Governance::load(&repo, 0)?;
            list_holds(g, &gov, a.all)?;
            Ok(ExitCode::Ok)
        }
        HoldCommand::Add(a) => audited(&repo, "hold add", |note| {
            let mut held = Vec::new();
            for spec in &a.snapshots {
                let (id, s) = repo.find_snapshot(spec, &Default::default())?;
                if !held.iter().any(|(h, _)| *h == id.0) {
                    held.push((id.0, s.tree));
                }
            }
            let (host, user) = audit::who();
            let rec = HoldRecord {
                time_ns: crate::clock::to_unix_ns(crate::clock::now()),
                host,
                user,
                reason: a.reason.clone(),
                kind: HoldKind::Hold(held.clone()),
            };
            let snaps: Vec<String> = held.iter().map(|(s, _)| hex::encode(s)).collect();
            note.plan = Some(json!({ "snapshots": snaps, "reason": a.reason }));
            let (id, stored_ns) = repo.save_hold(&rec)?;
            note.outcome = Some(json!({ "hold": id.to_hex() }));
            confirm_held(&repo, stored_ns, &held)?;
            if g.json {
                print_json(&json!({ "id": id.to_hex(), "snapshots": snaps, "reason": a.reason }))?;
            } else {
                outln!("{id}");
                if !g.quiet {
                    eprintln!("hold {} placed on {} snapshot(s)", id.short(), snaps.len());
                }
            }
            Ok(ExitCode::Ok)
        }),
        HoldCommand::Release(a) => audited(&repo, "hold release", |note| {
            let gov = Governance::load(&repo, 0)?;
            let spec = a.hold.to_ascii_lowercase();
            if let Some((h, _)) =
                gov.released.iter().find(|(h, _)| h.id.to_hex().starts_with(&spec) && !spec.is_empty())
            {
                bail!("hold {} is already released", h.id.short());
            }
            let matching: Vec<&ActiveHold> =
                gov.holds.iter().filter(|h| !spec.is_empty() && h.id.to_hex().starts_with(&spec)).collect();
            let h = match matching.as_slice() {
                [h] => *h,
                [] => bail!("no hold in force matches {:?} (`coffer hold list` shows them)", a.hold),
                _ => bail!("{:?} matches {} holds: give more of the id", a.hold, matching.len()),
            };
            note.plan = Some(json!({ "hold": h.id.to_hex(), "reason": a.reason }));
            let (host, user) = audit::who();
            let rec = HoldRecord {
                time_ns: crate::clock::to_unix_ns(crate::clock::now()),
                host,
                user,
                reason: a.reason.clone(),
                kind: HoldKind::Release(h.id.0),
            };
            let (id, _) = repo.save_hold(&rec)?;
            note.outcome = Some(json!({ "release": id.to_hex() }));
            if g.json {
                print_json(&json!({ "released": h.id.to_hex(), "release": id.to_hex() }))?;
            } else if !g.quiet {
                eprintln!("hold {} released", h.id.short());
            }
            Ok(ExitCode::Ok)
        }),
    }
}

/// Commands that remove or replace snapshots, as their sessions name them.
const REMOVING: [&str; 4] = ["forget", "tag", "rewrite", "repair snapshots"];

/// A hold takes effect for every such command that starts after it is stored (they read the
/// holds after their session's lock is written); one already running may have read the holds
/// before. So: wait for those to end, then check that every held snapshot is still there.
fn confirm_held(repo: &Repository, stored_ns: i64, held: &[([u8; 32], [u8; 32])]) -> Result<()> {
    let margin = crate::repo::lock::margin_ns();
    let deadline = crate::clock::stopwatch() + std::time::Duration::from_secs(15 * 60);
    loop {
        let sessions = crate::repo::lock::list_sessions(repo)?;
        let now = sessions.iter().map(|s| s.renewed_ns).max().unwrap_or(stored_ns).max(stored_ns);
        let running = sessions.iter().any(|s| {
            REMOVING.contains(&s.command.as_str()) && s.is_live(now) && s.started_ns <= stored_ns.saturating_add(margin)
        });
        if !running {
            break;
        }
        if crate::clock::stopwatch() > deadline {
            bail!("the hold is written, but a forget, tag or rewrite that started before it still runs after 15 minutes: check with `coffer hold list` and `coffer snapshots` that the snapshots are there");
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let present: std::collections::HashSet<[u8; 32]> = repo.list_snapshot_ids()?.into_iter().map(|i| i.0).collect();
    if let Some((gone, _)) = held.iter().find(|(s, _)| !present.contains(s)) {
        bail!(
            "snapshot {} was removed by a command that ran while the hold was placed; the hold keeps its data \
             (prune keeps every blob its tree needs), but the snapshot object is gone",
            &hex::encode(gone)[..8]
        );
    }
    Ok(())
}

fn hold_json(
    h: &ActiveHold,
    release: Option<&crate::repo::governance::Stored<crate::id::HoldId, HoldRecord>>,
) -> Value {
    let t = |ns: i64| crate::clock::from_unix_ns(ns).to_string();
    json!({
        "id": h.id.to_hex(),
        "active": release.is_none(),
        "stored": t(h.stored_ns),
        "time": t(h.record.time_ns),
        "host": h.record.host,
        "user": h.record.user,
        "reason": h.record.reason,
        "snapshots": h.snapshots().iter().map(|(s, _)| hex::encode(s)).collect::<Vec<_>>(),
        "released": release.map(|r| json!({
            "id": r.id.to_hex(), "stored": t(r.stored_ns), "host": r.value.host, "user": r.value.user, "reason": r.value.reason,
        })),
    })
}

fn list_holds(g: &Global, gov: &Governance, all: bool) -> Result<()> {
    let mut rows: Vec<Value> = gov.holds.iter().map(|h| hold_json(h, None)).collect();
    if all {
        rows.extend(gov.released.iter().map(|(h, r)| hold_json(h, Some(r))));
    }
    if g.json {
        return print_json(&rows);
    }
    for r in &rows {
        let snaps: Vec<String> =
            r["snapshots"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()[..8].to_string()).collect();
        let state = if r["active"] == true {
            "in force".to_string()
        } else {
            format!("released ({})", r["released"]["reason"].as_str().unwrap_or(""))
        };
        outln!(
            "{}  {}  {}@{}  {}  snapshots {}: {}",
            &r["id"].as_str().unwrap()[..8],
            &r["stored"].as_str().unwrap()[..19.min(r["stored"].as_str().unwrap().len())],
            printable(r["user"].as_str().unwrap_or("")),
            printable(r["host"].as_str().unwrap_or("")),
            printable(&state),
            snaps.join(","),
            printable(r["reason"].as_str().unwrap_or(""))
        );
    }
    if rows.is_empty() && !g.quiet {
        eprintln!("no holds in force");
    }
    Ok(())
}

pub fn audit_cmd(g: &Global, a: AuditArgs) -> Result<ExitCode> {
    let repo = open(g)?;
    if a.verify {
        return verify(g, &repo);
    }
    let since = a
        .since
        .as_deref()
        .map(|s| crate::timespec::parse(s, crate::clock::now(), &jiff::tz::TimeZone::system()))
        .transpose()
        .map_err(|e| anyhow!("--since: {e}"))?
        .map(crate::clock::to_unix_ns);
    let all = repo.load_audit(false)?;
    let rows: Vec<Value> = all.iter().filter(|l| since.is_none_or(|t| l.stored_ns >= t)).map(entry_json).collect();
    if g.json {
        print_json(&rows)?;
        return Ok(ExitCode::Ok);
    }
    for r in &rows {
        let stored = r["stored"].as_str().unwrap_or("");
        let outcome = if r["exit_code"] == 0 { "ok".to_string() } else { format!("exit {}", r["exit_code"]) };
        outln!(
            "{:>5}  {}  {}@{}  {:<14}  {:<6}  {}",
            r["seq"].as_u64().map_or("?".into(), |s| s.to_string()),
            &stored[..19.min(stored.len())],
            r["user"].as_str().unwrap_or("?"),
            r["host"].as_str().unwrap_or("?"),
            r["command"].as_str().unwrap_or("(unreadable)"),
            outcome,
            r["args"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        );
    }
    if !g.quiet {
        eprintln!("{} audit {}", rows.len(), if rows.len() == 1 { "entry" } else { "entries" });
    }
    Ok(ExitCode::Ok)
}

fn entry_json(l: &audit::Listed) -> Value {
    let t = |ns: i64| crate::clock::from_unix_ns(ns).to_string();
    let parse = |s: &str| if s.is_empty() { Value::Null } else { serde_json::from_str(s).unwrap_or(json!(s)) };
    match &l.entry {
        Ok(e) => json!({
            "id": l.id.to_hex(),
            "seq": e.seq,
            "stored": t(l.stored_ns),
            "time": t(e.time_ns),
            "host": e.host,
            "user": e.user,
            "command": e.command,
            "args": e.args,
            "exit_code": e.exit_code,
            "plan": parse(&e.plan),
            "outcome": parse(&e.outcome),
            "prev": e.prev.iter().map(|(id, h)| json!({ "id": hex::encode(id), "hash": hex::encode(h) })).collect::<Vec<_>>(),
            "hash": hex::encode(l.hash),
            "program_version": e.program_version,
        }),
        Err(why) => json!({ "id": l.id.to_hex(), "stored": t(l.stored_ns), "hash": hex::encode(l.hash), "error": why }),
    }
}

fn verify(g: &Global, repo: &Repository) -> Result<ExitCode> {
    let all = repo.load_audit(true)?;
    let remembered = repo.seen().map(|s| s.audit_remembered()).unwrap_or_default();
    let mut v = audit::verify(&all, &remembered);
    // A repository made in format 4 or later starts its trail at `init`: none at all means
    // it was removed.
    if all.is_empty() && repo.config().version >= 4 {
        v.problems.push(audit::Problem {
            kind: "removed",
            entry: String::new(),
            seq: Some(0),
            message:
                "the audit trail is empty, but the repository was made with one (format 4): every entry was removed"
                    .into(),
        });
    }
    let ok = v.problems.is_empty();
    if ok {
        if let Some(seen) = repo.seen() {
            let seq = |id: &str| {
                all.iter().find(|l| l.id.to_hex() == id).and_then(|l| l.entry.as_ref().ok()).map_or(0, |e| e.seq)
            };
            let hash =
                |id: &str| all.iter().find(|l| l.id.to_hex() == id).map(|l| hex::encode(l.hash)).unwrap_or_default();
            seen.audit_saw(v.heads.iter().map(|h| (h.clone(), hash(h), seq(h))).collect());
        }
    }
    if g.json {
        print_json(&json!({
            "ok": ok,
            "entries": v.entries,
            "heads": v.heads,
            "concurrent_forks": v.concurrent_forks,
            "problems": v.problems,
            "first_problem": v.problems.first(),
        }))?;
    } else {
        for p in &v.problems {
            eprintln!("{}: {}", p.kind, p.message);
        }
        if ok {
            let forks = if v.concurrent_forks > 0 {
                format!(
                    " ({} fork(s) of concurrent writers, joined or to be joined by the next entry)",
                    v.concurrent_forks
                )
            } else {
                String::new()
            };
            outln!("audit trail verified: {} entries, the chain is whole{forks}", v.entries);
        } else {
            let first = &v.problems[0];
            outln!(
                "audit trail BROKEN: {} problem(s); the first: entry {} was {}",
                v.problems.len(),
                if first.entry.is_empty() { "(all)" } else { &first.entry[..8.min(first.entry.len())] },
                first.kind
            );
        }
    }
    Ok(if ok { ExitCode::Ok } else { ExitCode::Error })
}
