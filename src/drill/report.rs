//! The report a person reads (`drill --report FILE`): Markdown, or a self-contained HTML
//! page. What was tested, the seed and coverage, the results, every error with the ids
//! involved, RTO and RPO against the objectives, and the trend over past drills.

use super::DrillResult;
use crate::format::drill::DrillRecord;

/// Seconds as `1h 02m 03s` (or `4.2 s` under a minute).
pub fn human_secs(s: f64) -> String {
    if !s.is_finite() {
        return "n/a".into();
    }
    if s < 60.0 {
        return format!("{s:.1} s");
    }
    let t = s.round() as u64;
    let (h, m, sec) = (t / 3600, (t % 3600) / 60, t % 60);
    if h > 0 {
        format!("{h}h {m:02}m {sec:02}s")
    } else {
        format!("{m}m {sec:02}s")
    }
}

/// Human bytes (binary units); indicatif stays in cli/.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

fn met(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "met",
        Some(false) => "BREACHED",
        None => "no objective set",
    }
}

/// The report's lines as (kind, text): a heading, a paragraph, a table row or a list item.
enum Line {
    H1(String),
    H2(String),
    P(String),
    Item(String),
    Table(Vec<String>, Vec<Vec<String>>),
}

fn lines(results: &[DrillResult], history: &[DrillRecord]) -> Vec<Line> {
    let mut out = vec![Line::H1("Coffer recovery drill".into())];
    let all_passed = results.iter().all(|r| r.passed);
    out.push(Line::P(format!(
        "Result: **{}** ({} snapshot{} drilled).",
        if all_passed { "PASSED" } else { "FAILED" },
        results.len(),
        if results.len() == 1 { "" } else { "s" }
    )));
    for r in results {
        out.push(Line::H2(format!("Host {}, snapshot {}", r.host, &r.snapshot[..8])));
        out.push(Line::Table(
            vec!["What".into(), "Value".into()],
            vec![
                vec!["Drill record".into(), r.drill_id.clone()],
                vec!["Time".into(), r.time.clone()],
                vec!["Snapshot".into(), r.snapshot.clone()],
                vec![
                    "What was restored".into(),
                    if r.full {
                        "every file (full restore)".into()
                    } else {
                        format!("part {} of {} (about {:.1}% of the files)", r.part + 1, r.parts, r.sample * 100.0)
                    },
                ],
                vec!["Seed".into(), r.seed.clone()],
                vec!["Files checked".into(), format!("{} of {}", r.files_checked, r.files_total)],
                vec!["Bytes checked".into(), format!("{} of {}", bytes(r.bytes_checked), bytes(r.bytes_total))],
                vec!["Compared with the live files".into(), r.source_compared.to_string()],
                vec!["Coverage by drills so far".into(), format!("{:.1}%", r.coverage * 100.0)],
                vec!["Duration".into(), human_secs(r.duration)],
                vec!["Throughput".into(), format!("{}/s", bytes(r.throughput as u64))],
                vec![
                    "Projected full restore (RTO)".into(),
                    format!(
                        "{} (objective: {}; {})",
                        human_secs(r.projected_full_restore_seconds),
                        r.objectives.rto.target.map_or("none".into(), |t| human_secs(t as f64)),
                        met(r.objectives.rto.met)
                    ),
                ],
                vec![
                    "RPO (newest snapshot's age; largest gap in 30 days)".into(),
                    format!(
                        "{}; {} (objective: {}; {})",
                        human_secs(r.rpo_seconds),
                        human_secs(r.rpo_max_gap_seconds),
                        r.objectives.rpo.target.map_or("none".into(), |t| human_secs(t as f64)),
                        met(r.objectives.rpo.met)
                    ),
                ],
                vec!["Result".into(), if r.passed { "passed".into() } else { "FAILED".into() }],
            ],
        ));
        if r.damaged.is_empty() {
            out.push(Line::P("No damage was found: every restored byte matched the repository's ids.".into()));
        } else {
            out.push(Line::P(format!("{} problems were found:", r.damaged.len())));
            for d in &r.damaged {
                out.push(Line::Item(format!("`{}`: {}", d.path, d.error)));
            }
        }
        let mine: Vec<&DrillRecord> = history.iter().filter(|h| h.host == r.host).rev().take(20).collect();
        if !mine.is_empty() {
            out.push(Line::P("Trend (newest first):".into()));
            let rows = mine
                .iter()
                .map(|h| {
                    vec![
                        crate::clock::from_unix_ns(h.time_ns).to_string(),
                        hex::encode(&h.snapshot[..4]),
                        if h.passed { "passed".into() } else { "FAILED".into() },
                        human_secs(h.projected_ns as f64 / 1e9),
                        human_secs(h.rpo_max_gap_ns as f64 / 1e9),
                        format!("{:.1}%", f64::from(h.coverage_ppm) / 1e4),
                    ]
                })
                .collect();
            out.push(Line::Table(
                ["time", "snapshot", "result", "RTO", "RPO", "coverage"].iter().map(|s| s.to_string()).collect(),
                rows,
            ));
        }
    }
    out
}

/// The report in Markdown.
pub fn markdown(results: &[DrillResult], history: &[DrillRecord]) -> String {
    let mut s = String::new();
    for l in lines(results, history) {
        match l {
            Line::H1(t) => s.push_str(&format!("# {t}\n\n")),
            Line::H2(t) => s.push_str(&format!("## {t}\n\n")),
            Line::P(t) => s.push_str(&format!("{t}\n\n")),
            Line::Item(t) => s.push_str(&format!("- {t}\n")),
            Line::Table(head, rows) => {
                s.push_str(&format!("| {} |\n", head.join(" | ")));
                s.push_str(&format!("|{}\n", "---|".repeat(head.len())));
                for r in rows {
                    let cells: Vec<String> = r.iter().map(|c| c.replace('|', "\\|")).collect();
                    s.push_str(&format!("| {} |\n", cells.join(" | ")));
                }
                s.push('\n');
            }
        }
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `**x**` and `` `x` `` of the Markdown lines, as HTML.
fn inline(s: &str) -> String {
    let mut out = String::new();
    let mut bold = false;
    let mut code = false;
    let e = esc(s);
    let mut rest = e.as_str();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("**") {
            out.push_str(if bold { "</strong>" } else { "<strong>" });
            bold = !bold;
            rest = r;
        } else if let Some(r) = rest.strip_prefix('`') {
            out.push_str(if code { "</code>" } else { "<code>" });
            code = !code;
            rest = r;
        } else {
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The report as one self-contained HTML page (no scripts, no external resources).
pub fn html(results: &[DrillResult], history: &[DrillRecord]) -> String {
    let mut s = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Coffer recovery drill</title>\n<style>\
         body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}\
         table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.3em .6em;text-align:left}\
         th{background:#eee}code{background:#f4f4f4;padding:0 .2em}</style></head><body>\n",
    );
    let mut in_list = false;
    for l in lines(results, history) {
        if in_list && !matches!(l, Line::Item(_)) {
            s.push_str("</ul>\n");
            in_list = false;
        }
        match l {
            Line::H1(t) => s.push_str(&format!("<h1>{}</h1>\n", inline(&t))),
            Line::H2(t) => s.push_str(&format!("<h2>{}</h2>\n", inline(&t))),
            Line::P(t) => s.push_str(&format!("<p>{}</p>\n", inline(&t))),
            Line::Item(t) => {
                if !in_list {
                    s.push_str("<ul>\n");
                    in_list = true;
                }
                s.push_str(&format!("<li>{}</li>\n", inline(&t)));
            }
            Line::Table(head, rows) => {
                s.push_str("<table><tr>");
                for h in head {
                    s.push_str(&format!("<th>{}</th>", esc(&h)));
                }
                s.push_str("</tr>\n");
                for r in rows {
                    s.push_str("<tr>");
                    for c in r {
                        s.push_str(&format!("<td>{}</td>", esc(&c)));
                    }
                    s.push_str("</tr>\n");
                }
                s.push_str("</table>\n");
            }
        }
    }
    if in_list {
        s.push_str("</ul>\n");
    }
    s.push_str("</body></html>\n");
    s
}
