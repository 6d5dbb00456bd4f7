//! Prometheus text-format metrics (exposition format 0.0.4) for node_exporter's textfile
//! collector, and the repository-side ones `coffer metrics` reports.
//!
//! Names follow Prometheus conventions: a `coffer_` prefix, base units in the name
//! (`_seconds`, `_bytes`), `_total` only on counters. Timestamps are Unix seconds, so an
//! alert on the live RPO is `time() - coffer_snapshot_newest_timestamp_seconds > 86400`,
//! which keeps working when the file goes stale. The file is written atomically (a
//! temporary file in the same directory, fsynced, then renamed), so the collector never reads
//! half a file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::repo::{RepoError, Repository};

/// Whether a metric is a gauge or a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// One sample of one metric.
#[derive(Clone, Debug)]
pub struct Sample {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Sample {
    pub fn gauge(name: &'static str, help: &'static str, labels: Vec<(&'static str, String)>, value: f64) -> Self {
        Sample { name, help, kind: Kind::Gauge, labels, value }
    }

    pub fn counter(name: &'static str, help: &'static str, labels: Vec<(&'static str, String)>, value: f64) -> Self {
        Sample { name, help, kind: Kind::Counter, labels, value }
    }
}

/// A label value escaped as the text format requires (`\`, `"` and newlines).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The text format: samples grouped by name (one HELP and TYPE line each), in the order of
/// each name's first sample.
pub fn render(samples: &[Sample]) -> String {
    let mut order: Vec<&'static str> = Vec::new();
    let mut by_name: BTreeMap<&'static str, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        if !by_name.contains_key(s.name) {
            order.push(s.name);
        }
        by_name.entry(s.name).or_default().push(s);
    }
    let mut out = String::new();
    for name in order {
        let group = &by_name[name];
        let kind = if group[0].kind == Kind::Counter { "counter" } else { "gauge" };
        let _ = writeln!(out, "# HELP {name} {}", group[0].help);
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for s in group {
            let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let labels = if labels.is_empty() { String::new() } else { format!("{{{}}}", labels.join(",")) };
            let _ = writeln!(out, "{name}{labels} {}", number(s.value));
        }
    }
    out
}

/// A sample value: integers without a fraction, others as Rust prints them.
fn number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v}")
    }
}

/// Writes `text` to `path` atomically (a temporary file in the same folder, fsynced, renamed),
/// readable by all (metrics files, schedule units).
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new().prefix(".coffer-metrics").tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    // node_exporter runs as its own user, systemd reads units: neither is secret.
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Per host: how many snapshots, the newest one's time, and the newest drill.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct HostMetrics {
    pub host: String,
    pub snapshots: u64,
    /// Unix seconds.
    pub newest_snapshot: f64,
    /// Seconds between the newest snapshot and now: the live RPO.
    pub newest_snapshot_age_seconds: f64,
    /// Unix seconds of the newest drill, and whether it passed.
    pub last_drill: Option<f64>,
    pub last_drill_passed: Option<bool>,
}

/// What the repository itself says (`coffer metrics`).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RepoMetrics {
    pub repository: String,
    pub size_bytes: u64,
    pub packs: u64,
    pub snapshots: u64,
    pub hosts: Vec<HostMetrics>,
    /// Unix seconds when this was read.
    pub time: f64,
}

fn secs(ns: i64) -> f64 {
    ns as f64 / 1e9
}

/// Reads the snapshots, the index and the drill records.
pub fn repository(repo: &Repository) -> Result<RepoMetrics, RepoError> {
    let now = crate::clock::to_unix_ns(crate::clock::now());
    let snaps = repo.load_snapshots()?;
    let index = repo.load_index()?;
    let mut hosts: BTreeMap<String, HostMetrics> = BTreeMap::new();
    for (_, s) in &snaps {
        let h =
            hosts.entry(s.host.clone()).or_insert_with(|| HostMetrics { host: s.host.clone(), ..Default::default() });
        h.snapshots += 1;
        h.newest_snapshot = h.newest_snapshot.max(secs(s.time_ns));
    }
    for h in hosts.values_mut() {
        h.newest_snapshot_age_seconds = (secs(now) - h.newest_snapshot).max(0.0);
    }
    for (_, d) in repo.load_drills()? {
        if let Some(h) = hosts.get_mut(&d.host) {
            if h.last_drill.is_none_or(|t| secs(d.time_ns) > t) {
                (h.last_drill, h.last_drill_passed) = (Some(secs(d.time_ns)), Some(d.passed));
            }
        }
    }
    Ok(RepoMetrics {
        repository: repo.store().location().to_string(),
        size_bytes: index.packs().iter().map(|p| p.size).sum(),
        packs: index.packs().len() as u64,
        snapshots: snaps.len() as u64,
        hosts: hosts.into_values().collect(),
        time: secs(now),
    })
}

/// The repository's samples, labelled with `labels` (the profile, when a run writes them).
pub fn repository_samples(m: &RepoMetrics, labels: &[(&'static str, String)]) -> Vec<Sample> {
    let l = |extra: &[(&'static str, String)]| {
        let mut v = labels.to_vec();
        v.extend_from_slice(extra);
        v
    };
    let mut out = vec![
        Sample::gauge("coffer_repository_size_bytes", "Bytes of packs in the repository.", l(&[]), m.size_bytes as f64),
        Sample::gauge("coffer_repository_packs", "Packs in the repository.", l(&[]), m.packs as f64),
        Sample::gauge("coffer_repository_snapshots", "Snapshots in the repository.", l(&[]), m.snapshots as f64),
    ];
    for h in &m.hosts {
        let hl = l(&[("host", h.host.clone())]);
        out.push(Sample::gauge("coffer_host_snapshots", "Snapshots of this host.", hl.clone(), h.snapshots as f64));
        out.push(Sample::gauge(
            "coffer_snapshot_newest_timestamp_seconds",
            "Time of this host's newest snapshot (alert on time() minus this: the live RPO).",
            hl.clone(),
            h.newest_snapshot,
        ));
        out.push(Sample::gauge(
            "coffer_snapshot_newest_age_seconds",
            "Age of this host's newest snapshot when the metrics were written.",
            hl.clone(),
            h.newest_snapshot_age_seconds,
        ));
        if let (Some(t), Some(p)) = (h.last_drill, h.last_drill_passed) {
            out.push(Sample::gauge(
                "coffer_drill_last_timestamp_seconds",
                "Time of this host's newest drill.",
                hl.clone(),
                t,
            ));
            out.push(Sample::gauge(
                "coffer_drill_last_passed",
                "1 if this host's newest drill passed.",
                hl,
                p as u8 as f64,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format() {
        let s = [
            Sample::gauge("coffer_a_seconds", "A.", vec![("profile", "n\"1".into())], 1.5),
            Sample::counter("coffer_runs_total", "Runs.", vec![], 3.0),
            Sample::gauge("coffer_a_seconds", "A.", vec![("profile", "x".into())], 2.0),
        ];
        let t = render(&s);
        assert_eq!(
            t,
            "# HELP coffer_a_seconds A.\n# TYPE coffer_a_seconds gauge\ncoffer_a_seconds{profile=\"n\\\"1\"} 1.5\n\
             coffer_a_seconds{profile=\"x\"} 2\n# HELP coffer_runs_total Runs.\n# TYPE coffer_runs_total counter\n\
             coffer_runs_total 3\n"
        );
    }
}
