//! Schedules for `coffer run PROFILE`: systemd service and timer units, or a cron entry
//! where there is no systemd. Pure text in, text out; `cli/schedule.rs` writes the files and
//! talks to systemctl and crontab.
//!
//! The service is a oneshot at low priority (`Nice=10`, `IOSchedulingClass=idle`), with
//! `LimitNOFILE` raised for large trees; the timer has `Persistent=true` (a run missed while
//! the machine was off happens at the next boot) and a randomized delay, so many machines
//! on one schedule do not all hit the repository at once.

/// What a schedule runs.
#[derive(Clone, Debug)]
pub struct Job {
    pub profile: String,
    /// The absolute path of the coffer binary.
    pub exe: String,
    /// The absolute path of the profile file.
    pub config: String,
    /// systemd `OnCalendar=` syntax.
    pub calendar: String,
    /// `RandomizedDelaySec=` in seconds.
    pub delay_s: u64,
}

/// The unit names of a profile's schedule.
pub fn unit_names(profile: &str) -> (String, String) {
    (format!("coffer-{profile}.service"), format!("coffer-{profile}.timer"))
}

/// Quotes a word for an `ExecStart=` line (systemd's quoting: double quotes, `\` escapes).
fn quote(w: &str) -> String {
    if !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:@=,".contains(c)) {
        return w.to_string();
    }
    format!("\"{}\"", w.replace('\\', "\\\\").replace('"', "\\\"").replace('%', "%%").replace('$', "$$"))
}

/// The service unit.
pub fn service(j: &Job) -> String {
    format!(
        "# Written by `coffer schedule install {p}`; `coffer schedule remove {p}` removes it.\n\
         [Unit]\n\
         Description=Coffer backup run (profile {p})\n\
         Wants=network-online.target\n\
         After=network-online.target\n\n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={exe} --config {cfg} run {p}\n\
         Nice=10\n\
         IOSchedulingClass=idle\n\
         LimitNOFILE=65536\n\
         # Exit codes 3 (partial backup) and 5 (objective breached) are warnings, not failures.\n\
         SuccessExitStatus=3 5\n",
        p = j.profile,
        exe = quote(&j.exe),
        cfg = quote(&j.config),
    )
}

/// The timer unit.
pub fn timer(j: &Job) -> String {
    let (service, _) = unit_names(&j.profile);
    format!(
        "# Written by `coffer schedule install {p}`; `coffer schedule remove {p}` removes it.\n\
         [Unit]\n\
         Description=Coffer backup schedule (profile {p})\n\
         [Timer]\n\
         OnCalendar={cal}\n\
         Persistent=true\n\
         RandomizedDelaySec={delay}\n\
         Unit={service}\n\n\
         [Install]\n\
         WantedBy=timers.target\n",
        p = j.profile,
        cal = j.calendar,
        delay = j.delay_s,
    )
}

/// The marker lines around a profile's entry in a crontab.
pub fn cron_marker(profile: &str) -> String {
    format!("# coffer schedule: {profile}")
}

/// A cron line (with the user field for /etc/cron.d when `user` is given). Cron has no
/// catch-up: the run happens at the given time, or not at all. Its randomized delay is a
/// `sleep` of a random number of seconds (`shuf`, coreutils) before the run. The line ends
/// in a shell comment naming the calendar expression, for `schedule list`.
pub fn cron_entry(j: &Job, user: Option<&str>) -> Result<String, String> {
    let when = cron_time(&j.calendar)?;
    let who = user.map(|u| format!("{u} ")).unwrap_or_default();
    let sh = |w: &str| format!("'{}'", w.replace('\'', "'\\''").replace('%', "\\%"));
    let delay = if j.delay_s > 0 { format!("sleep $(shuf -i 0-{} -n 1); ", j.delay_s) } else { String::new() };
    Ok(format!(
        "{}\n{when} {who}{delay}{} --config {} run {} {CALENDAR_MARK}{}\n",
        cron_marker(&j.profile),
        sh(&j.exe),
        sh(&j.config),
        j.profile,
        j.calendar.trim().replace('%', "\\%"),
    ))
}

/// What precedes the calendar expression at the end of a cron line.
pub const CALENDAR_MARK: &str = "# on: ";

/// The OnCalendar forms cron can express: `hourly`, `daily`, `weekly`, `monthly`,
/// `[DOW[,DOW...]] *-*-* HH:MM[:00]` (and `HH:MM` alone).
pub fn cron_time(calendar: &str) -> Result<String, String> {
    let c = calendar.trim();
    let named = match c {
        "hourly" => Some("0 * * * *"),
        "daily" => Some("0 0 * * *"),
        "weekly" => Some("0 0 * * 1"),
        "monthly" => Some("0 0 1 * *"),
        _ => None,
    };
    if let Some(n) = named {
        return Ok(n.into());
    }
    let bad =
        || format!("{c:?}: cron cannot express this; give hourly, daily, weekly, monthly or [Mon,Tue...] *-*-* HH:MM");
    let parts: Vec<&str> = c.split_whitespace().collect();
    let (dow, time) = match parts.as_slice() {
        [t] => (None, *t),
        ["*-*-*", t] => (None, *t),
        [d, "*-*-*", t] => (Some(*d), *t),
        _ => return Err(bad()),
    };
    let hm: Vec<&str> = time.split(':').collect();
    let (h, m) = match hm.as_slice() {
        [h, m] | [h, m, "00"] => (h.parse::<u8>().map_err(|_| bad())?, m.parse::<u8>().map_err(|_| bad())?),
        _ => return Err(bad()),
    };
    if h > 23 || m > 59 {
        return Err(bad());
    }
    let days = match dow {
        None => "*".to_string(),
        Some(d) => {
            let names = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
            let mut out = Vec::new();
            for part in d.split(',') {
                let i = names.iter().position(|n| n.eq_ignore_ascii_case(part)).ok_or_else(bad)?;
                out.push(i.to_string());
            }
            out.join(",")
        }
    };
    Ok(format!("{m} {h} * * {days}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_forms() {
        assert_eq!(cron_time("daily").unwrap(), "0 0 * * *");
        assert_eq!(cron_time("*-*-* 03:30").unwrap(), "30 3 * * *");
        assert_eq!(cron_time("Mon,Fri *-*-* 23:05:00").unwrap(), "5 23 * * 1,5");
        assert!(cron_time("*-*-01 03:00").is_err());
        assert!(cron_time("*-*-* 25:00").is_err());
    }

    #[test]
    fn units_name_the_profile_and_quote_paths() {
        let j = Job {
            profile: "nightly".into(),
            exe: "/usr/bin/coffer".into(),
            config: "/etc/my coffer.toml".into(),
            calendar: "daily".into(),
            delay_s: 900,
        };
        let s = service(&j);
        assert!(s.contains("ExecStart=/usr/bin/coffer --config \"/etc/my coffer.toml\" run nightly"), "{s}");
        assert!(timer(&j)
            .contains("OnCalendar=daily\nPersistent=true\nRandomizedDelaySec=900\nUnit=coffer-nightly.service"));
        let c = cron_entry(&j, Some("root")).unwrap();
        assert!(
            c.ends_with("0 0 * * * root sleep $(shuf -i 0-900 -n 1); '/usr/bin/coffer' --config '/etc/my coffer.toml' run nightly # on: daily\n"),
            "{c}"
        );
        let c = cron_entry(&Job { delay_s: 0, ..j }, None).unwrap();
        assert!(
            c.ends_with("0 0 * * * '/usr/bin/coffer' --config '/etc/my coffer.toml' run nightly # on: daily\n"),
            "{c}"
        );
    }
}
