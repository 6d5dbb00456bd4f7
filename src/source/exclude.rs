//! Exclusion patterns for `backup --exclude` and `--exclude-file`, and restore filters.
//!
//! Semantics follow restic's, which operators know: a pattern without `/` matches a name at
//! any depth (`*.tmp`, `node_modules`); a pattern with `/` matches the whole absolute path
//! (`/home/*/.cache`), and also everything below a matching directory. `*` does not cross
//! `/`; `**` does. Lines of an exclude file that are empty or start with `#` are ignored.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// A compiled set of patterns.
#[derive(Clone, Default)]
pub struct Patterns {
    by_name: Option<GlobSet>,
    by_path: Option<GlobSet>,
    pub sources: Vec<String>,
}

fn glob(p: &str, case_insensitive: bool) -> Result<Glob, String> {
    GlobBuilder::new(p)
        .literal_separator(true)
        .backslash_escape(true)
        .case_insensitive(case_insensitive)
        .build()
        .map_err(|e| format!("{p:?}: {e}"))
}

/// Prefix of a case-insensitive pattern (`--iexclude`) in [`Patterns::sources`] and in the
/// excludes a snapshot records.
const INSENSITIVE: &str = "(?i)";

impl Patterns {
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        Self::with_insensitive(patterns, &[])
    }

    /// Patterns matched exactly and patterns matched ignoring case (`--iexclude`).
    pub fn with_insensitive(exact: &[String], insensitive: &[String]) -> Result<Self, String> {
        let (mut names, mut paths) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        let (mut any_name, mut any_path) = (false, false);
        let all = exact.iter().map(|p| (p, false)).chain(insensitive.iter().map(|p| (p, true)));
        for (p, ci) in all {
            let p = p.trim_end_matches('/');
            if p.is_empty() {
                continue;
            }
            if p.contains('/') {
                paths.add(glob(p, ci)?);
                any_path = true;
            } else {
                names.add(glob(p, ci)?);
                any_name = true;
            }
        }
        let mut sources = exact.to_vec();
        sources.extend(insensitive.iter().map(|p| format!("{INSENSITIVE}{p}")));
        Ok(Patterns {
            by_name: any_name.then(|| names.build()).transpose().map_err(|e| e.to_string())?,
            by_path: any_path.then(|| paths.build()).transpose().map_err(|e| e.to_string())?,
            sources,
        })
    }

    /// Reads patterns from exclude files and adds the literal ones.
    pub fn from_args(literal: &[String], files: &[std::path::PathBuf]) -> Result<Self, String> {
        Self::new(&Self::gather(literal, files)?)
    }

    /// The literal patterns and those of the files (one a line; blank lines and `#` comments
    /// left out).
    pub fn gather(literal: &[String], files: &[std::path::PathBuf]) -> Result<Vec<String>, String> {
        let mut all = literal.to_vec();
        for f in files {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
            all.extend(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from));
        }
        Ok(all)
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_none() && self.by_path.is_none()
    }

    /// Whether the entry `name` at absolute path `path` matches.
    pub fn matches(&self, path: &[u8], name: &[u8]) -> bool {
        let name_hit = self.by_name.as_ref().is_some_and(|g| g.is_match(bytes_path(name)));
        name_hit || self.by_path.as_ref().is_some_and(|g| g.is_match(bytes_path(path)))
    }
}

fn bytes_path(b: &[u8]) -> &std::path::Path {
    use std::os::unix::ffi::OsStrExt;
    std::path::Path::new(std::ffi::OsStr::from_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        let p = Patterns::new(&["*.tmp".into(), "/home/*/.cache".into(), "/srv/**/x".into()]).unwrap();
        assert!(p.matches(b"/a/b/c.tmp", b"c.tmp"));
        assert!(!p.matches(b"/a/b/c.tmpx", b"c.tmpx"));
        assert!(p.matches(b"/home/u/.cache", b".cache"));
        assert!(!p.matches(b"/home/u/v/.cache", b".cache"));
        assert!(p.matches(b"/srv/1/2/x", b"x"));
    }

    #[test]
    fn case_insensitive_ones() {
        let p = Patterns::with_insensitive(&["*.tmp".into()], &["*.ISO".into(), "/Data/*".into()]).unwrap();
        assert!(p.matches(b"/a/x.iso", b"x.iso"));
        assert!(p.matches(b"/data/y", b"y"));
        assert!(!p.matches(b"/a/x.TMP", b"x.TMP"), "--exclude stays case-sensitive");
        assert_eq!(p.sources, ["*.tmp", "(?i)*.ISO", "(?i)/Data/*"]);
    }
}
