//! `backup --files-from`, `--files-from-verbatim` and `--files-from-raw`: the paths to back
//! up, read from files (restic's three options, with restic's semantics).
//!
//! - `--files-from`: one path a line; blank lines and lines starting with `#` are left out,
//!   surrounding spaces trimmed, and each line is a glob expanded against the file system
//!   (`/home/*/Documents`). A line that matches nothing is taken literally, so a missing path
//!   is reported by name rather than silently dropped.
//! - `--files-from-verbatim`: one path a line, exactly as written (only empty lines left
//!   out): for names with spaces, `#` or glob characters.
//! - `--files-from-raw`: paths separated by NUL bytes (`find -print0`), any bytes at all.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// How a list file is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListKind {
    Globs,
    Verbatim,
    Raw,
}

/// Reads one list file (`-` is standard input).
pub fn read_list(file: &std::path::Path, kind: ListKind) -> Result<Vec<PathBuf>, String> {
    let bytes = if file == std::path::Path::new("-") {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b).map_err(|e| format!("standard input: {e}"))?;
        b
    } else {
        std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?
    };
    parse_list(&bytes, kind).map_err(|e| format!("{}: {e}", file.display()))
}

/// The paths a list names.
pub fn parse_list(bytes: &[u8], kind: ListKind) -> Result<Vec<PathBuf>, String> {
    let path = |b: &[u8]| PathBuf::from(OsStr::from_bytes(b));
    match kind {
        ListKind::Raw => Ok(bytes.split(|b| *b == 0).filter(|p| !p.is_empty()).map(path).collect()),
        ListKind::Verbatim => Ok(bytes
            .split(|b| *b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .filter(|l| !l.is_empty())
            .map(path)
            .collect()),
        ListKind::Globs => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| "not UTF-8 text: use --files-from-raw (NUL-separated) for such names".to_string())?;
            let mut out = Vec::new();
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                out.extend(expand(line).map_err(|e| format!("line {}: {e}", n + 1))?);
            }
            Ok(out)
        }
    }
}

/// A glob's matches, sorted; the line itself when nothing matches.
fn expand(line: &str) -> Result<Vec<PathBuf>, String> {
    let paths = glob::glob(line).map_err(|e| format!("{line:?}: {e}"))?;
    let mut found: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
    if found.is_empty() {
        found.push(PathBuf::from(line));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_kinds() {
        let d = tempfile::tempdir().unwrap();
        for n in ["a1", "a2", "b"] {
            std::fs::write(d.path().join(n), "").unwrap();
        }
        let dir = d.path().display();
        let text = format!("# comment\n\n  {dir}/a*  \n{dir}/missing\n");
        let got = parse_list(text.as_bytes(), ListKind::Globs).unwrap();
        let want: Vec<PathBuf> = ["a1", "a2", "missing"].iter().map(|n| d.path().join(n)).collect();
        assert_eq!(got, want);
        let v = parse_list(b"/x/# not a comment\r\n\n/y/*\n", ListKind::Verbatim).unwrap();
        assert_eq!(v, [PathBuf::from("/x/# not a comment"), PathBuf::from("/y/*")]);
        let r = parse_list(b"/a\nb\0/c\0\0", ListKind::Raw).unwrap();
        assert_eq!(r, [PathBuf::from("/a\nb"), PathBuf::from("/c")]);
        assert!(parse_list(b"\xff\n", ListKind::Globs).is_err());
    }
}
