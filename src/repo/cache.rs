//! The local metadata cache of a remote repository.
//!
//! Index files, snapshots and tree blobs never change once written, so a copy on local disk
//! is as good as the original, and saves a request per object on every command: with it, a
//! backup that finds nothing changed makes only a handful of requests (listings, the config,
//! the new snapshot). Entries hold the objects' encrypted bytes, exactly as stored, and are
//! authenticated on every use by the same code that checks objects from the repository, so a
//! damaged or planted entry is detected, dropped and fetched again; the cache is never
//! trusted. It lives in `<cache dir>/<repo id>/` with mode 0700 (it reveals object sizes
//! and ids) and is always safe to delete.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A repository's cache directory.
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// Opens (creating) the cache of repository `repo_id` under `base`.
    pub fn open(base: &Path, repo_id: &str) -> std::io::Result<Cache> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = base.join(repo_id);
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        // Tag our own directory only: the base may be a shared one the user named.
        let tag = dir.join("CACHEDIR.TAG");
        if !tag.exists() {
            // https://bford.info/cachedir/: backup tools skip directories with this tag.
            let _ = std::fs::write(tag, "Signature: 8a477f597d28d172789f06886806bc55\n# Coffer's cache\n");
        }
        Ok(Cache { dir })
    }

    fn path(&self, kind: &str, name: &str) -> PathBuf {
        self.dir.join(kind).join(name)
    }

    /// The cached bytes of an object, if any.
    pub fn get(&self, kind: &str, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.path(kind, name)).ok()
    }

    /// Stores an object's bytes: written to a temporary file, then renamed into place, so a
    /// reader never sees half an entry. Failures are ignored: the cache only saves requests.
    pub fn put(&self, kind: &str, name: &str, bytes: &[u8]) {
        let _ = self.try_put(kind, name, bytes);
    }

    fn try_put(&self, kind: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let dir = self.dir.join(kind);
        std::fs::create_dir_all(&dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
        tmp.write_all(bytes)?;
        tmp.persist(dir.join(name))?;
        Ok(())
    }

    /// Removes an entry (found damaged, or gone from the repository).
    pub fn remove(&self, kind: &str, name: &str) {
        let _ = std::fs::remove_file(self.path(kind, name));
    }

    /// Removes the entries of `kind` whose names `keep` rejects (objects no longer in the
    /// repository, e.g. after a prune).
    pub fn retain(&self, kind: &str, keep: impl Fn(&str) -> bool) {
        let Ok(entries) = std::fs::read_dir(self.dir.join(kind)) else { return };
        for e in entries.flatten() {
            if let Some(n) = e.file_name().to_str() {
                if !keep(n) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}
