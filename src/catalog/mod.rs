//! The catalog: a local SQLite index of every snapshot's trees, for point-in-time questions
//! ("which snapshots hold this path", "when did it change", "what did it look like at T").
//!
//! The catalog is derived data: the repository is the truth. It lives at
//! `<cache dir>/<repo id>/catalog.sqlite` (mode 0600: it holds file names), is brought up to
//! date with the repository before every command that reads it ([`Catalog::sync`]), and is
//! always safe to delete. docs/catalog.md describes the schema.
//!
//! Sharing: a tree blob is indexed once, however many snapshots contain it, and a node (one
//! directory entry with its metadata) once, however many trees contain it. A tree's members
//! are rows `entries(tid, nid)`; a changed directory is usually stored as a *delta* against
//! its previous version (the same path in the snapshot's parent): the rows it adds and the
//! rows it removes (docs/catalog.md, "Deltas"). A new snapshot therefore adds rows only for
//! what changed, so the catalog grows with change, not with snapshots x files.
//!
//! Trust: the catalog is never trusted blindly. On open it checks its schema version and the
//! repository id it was built for; SQLite checks each page's structure as it reads it, and
//! any "malformed" or "not a database" error makes the caller rebuild the catalog from the
//! repository. `catalog info` runs SQLite's full `quick_check` (which reads the whole file,
//! about 5 ms per MB, too slow for every lookup).
//! Several processes may use one catalog at once: WAL mode, a busy timeout, and writes in
//! short `IMMEDIATE` transactions that re-check what another process may have added.

mod diff;
mod index;
mod query;
mod sync;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

pub use diff::{DiffEntry, DiffKind};
pub use query::{covers, FindFilter, FindHit, NameTest, NodeInfo, SnapRow, Version, VersionChange};
pub use sync::{BoxError, Source, SyncStats};

/// The schema this code writes; any other version is rebuilt (docs/catalog.md).
pub const SCHEMA_VERSION: i64 = 1;

/// The catalog's file name inside the repository's cache directory.
pub const FILE_NAME: &str = "catalog.sqlite";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The file is damaged, of another schema, or of another repository: rebuild it.
    #[error("catalog {path} is unusable ({reason})")]
    Unusable { path: String, reason: String },
    #[error("catalog database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("catalog file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// Reading the repository failed while syncing.
    #[error(transparent)]
    Source(Box<dyn std::error::Error + Send + Sync>),
    #[error("{0}")]
    Invalid(String),
}

impl CatalogError {
    /// Whether the error means the database file itself is damaged (so: rebuild it).
    /// Rows that should be there and are not, or hold values of the wrong type, mean the
    /// same: readers work inside one transaction, so no concurrent change can cause them.
    pub fn is_corrupt(&self) -> bool {
        match self {
            CatalogError::Unusable { .. } => true,
            CatalogError::Sqlite(e) => sqlite_corrupt(e),
            _ => false,
        }
    }
}

/// Whether SQLite's error means a damaged file (or rows a sound catalog cannot have).
fn sqlite_corrupt(e: &rusqlite::Error) -> bool {
    use rusqlite::Error as E;
    match e {
        E::SqliteFailure(f, _) => {
            matches!(f.code, rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
        }
        E::QueryReturnedNoRows
        | E::IntegralValueOutOfRange(..)
        | E::InvalidColumnType(..)
        | E::FromSqlConversionFailure(..) => true,
        _ => false,
    }
}

pub type Result<T> = std::result::Result<T, CatalogError>;

/// An open catalog.
pub struct Catalog {
    conn: Connection,
    /// None for an in-memory catalog.
    path: Option<PathBuf>,
}

const SCHEMA: &str = "
CREATE TABLE meta(key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE snapshots(
    sid INTEGER PRIMARY KEY AUTOINCREMENT,
    id BLOB NOT NULL UNIQUE,
    time_ns INTEGER NOT NULL,
    host TEXT NOT NULL,
    manifest BLOB NOT NULL,
    root INTEGER
);
CREATE INDEX snapshots_time ON snapshots(time_ns);
CREATE INDEX snapshots_root ON snapshots(root);
CREATE TABLE trees(
    tid INTEGER PRIMARY KEY AUTOINCREMENT,
    ckey BLOB NOT NULL UNIQUE,
    base INTEGER,
    depth INTEGER NOT NULL,
    chain_rows INTEGER NOT NULL
);
CREATE INDEX trees_base ON trees(base) WHERE base IS NOT NULL;
CREATE TABLE blobs(id BLOB PRIMARY KEY, tid INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE names(name_id INTEGER PRIMARY KEY AUTOINCREMENT, name BLOB NOT NULL UNIQUE);
CREATE TABLE nodes(
    nid INTEGER PRIMARY KEY AUTOINCREMENT,
    key BLOB NOT NULL UNIQUE,
    name_id INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    content BLOB,
    subtree INTEGER
);
CREATE INDEX nodes_name ON nodes(name_id);
CREATE INDEX nodes_subtree ON nodes(subtree) WHERE subtree IS NOT NULL;
CREATE TABLE entries(
    tid INTEGER NOT NULL,
    nid INTEGER NOT NULL,
    removed INTEGER NOT NULL,
    PRIMARY KEY(tid, nid)
) WITHOUT ROWID;
CREATE INDEX entries_nid ON entries(nid, removed, tid);
";

impl Catalog {
    /// Opens (creating) the catalog file of repository `repo_id`, checking it; a damaged,
    /// foreign or old-schema file is [`CatalogError::Unusable`] (see [`Catalog::open_or_rebuild`]).
    pub fn open(path: &Path, repo_id: &[u8; 32]) -> Result<Catalog> {
        create_private(path)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let cat = Catalog { conn, path: Some(path.to_path_buf()) };
        cat.configure()?;
        cat.validate(repo_id)?;
        Ok(cat)
    }

    /// [`Catalog::open`], deleting and recreating the file when it is unusable. Returns the
    /// catalog and whether it was recreated (the caller says so: it is worth a warning).
    pub fn open_or_rebuild(path: &Path, repo_id: &[u8; 32]) -> Result<(Catalog, Option<String>)> {
        match Catalog::open(path, repo_id) {
            Ok(c) => Ok((c, None)),
            Err(e) if e.is_corrupt() => {
                Catalog::delete_files(path)?;
                Ok((Catalog::open(path, repo_id)?, Some(e.to_string())))
            }
            Err(e) => Err(e),
        }
    }

    /// A catalog in memory, for `--no-cache` and hosts without a cache directory.
    pub fn in_memory(repo_id: &[u8; 32]) -> Result<Catalog> {
        let cat = Catalog { conn: Connection::open_in_memory()?, path: None };
        cat.stable_plans()?;
        cat.validate(repo_id)?;
        Ok(cat)
    }

    /// The file, if the catalog has one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Query plans that do not depend on bound values: otherwise SQLite re-prepares a
    /// statement on every new value bound where a plan might (measured: a quarter of the
    /// time of a large `find` went into re-preparing).
    fn stable_plans(&self) -> Result<()> {
        self.conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        Ok(())
    }

    fn configure(&self) -> Result<()> {
        self.stable_plans()?;
        // Another process may hold the write lock for a while (a first sync of a large
        // snapshot); wait rather than fail.
        self.conn.busy_timeout(Duration::from_secs(600))?;
        let mode: String = self.conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            // Not damage: the file system cannot do it. The caller falls back to memory.
            return Err(CatalogError::Invalid(format!("SQLite cannot use WAL mode here (got {mode})")));
        }
        // Derived data: losing the last transactions to a power cut is harmless (the next
        // sync redoes them), but the file must never be damaged, which WAL + NORMAL ensures.
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Read through a memory map and keep 32 MiB of pages: a sync of a large snapshot
        // revisits the same pages often, and each page read is otherwise a system call.
        self.conn.pragma_update(None, "mmap_size", 256i64 << 20)?;
        self.conn.pragma_update(None, "cache_size", -32768i64)?;
        Ok(())
    }

    fn unusable(&self, reason: impl Into<String>) -> CatalogError {
        let path = self.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| ":memory:".into());
        CatalogError::Unusable { path, reason: reason.into() }
    }

    /// Creates the schema in an empty database, or checks an existing one.
    fn validate(&self, repo_id: &[u8; 32]) -> Result<()> {
        let version: i64 = self.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| self.wrap(e))?;
        if version == 0 {
            return self.create_schema(repo_id);
        }
        if version != SCHEMA_VERSION {
            return Err(self.unusable(format!("schema version {version}, this coffer uses {SCHEMA_VERSION}")));
        }
        let stored: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'repo_id'", [], |r| r.get(0))
            .optional()
            .map_err(|e| self.wrap(e))?;
        if stored.as_deref() != Some(&repo_id[..]) {
            return Err(self.unusable("it belongs to another repository"));
        }
        Ok(())
    }

    /// A damaged file is "unusable" (rebuild it); other errors (busy, I/O, a full disk) are
    /// passed on as they are: the file may be fine, and another process may be using it.
    fn wrap(&self, e: rusqlite::Error) -> CatalogError {
        if sqlite_corrupt(&e) {
            self.unusable(e.to_string())
        } else {
            CatalogError::Sqlite(e)
        }
    }

    fn create_schema(&self, repo_id: &[u8; 32]) -> Result<()> {
        // IMMEDIATE: take the write lock (waiting for it) before looking, since another
        // process may be creating the schema at this moment.
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let res = self.create_schema_locked(repo_id);
        let end = if res.is_ok() { "COMMIT" } else { "ROLLBACK" };
        self.conn.execute_batch(end)?;
        match res {
            // Created by another process meanwhile: check it like any other.
            Ok(false) => self.validate(repo_id),
            Ok(true) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates the schema unless another process did; says whether this one did.
    fn create_schema_locked(&self, repo_id: &[u8; 32]) -> Result<bool> {
        let version: i64 = self.conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version != 0 {
            return Ok(false);
        }
        let objects: i64 = self.conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if objects != 0 {
            return Err(self.unusable("it is some other SQLite database"));
        }
        self.conn.execute_batch(SCHEMA)?;
        self.conn.execute("INSERT INTO meta(key, value) VALUES ('repo_id', ?1)", [&repo_id[..]])?;
        self.conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(true)
    }

    /// Runs `f` in one read transaction, so it sees one state of the catalog however many
    /// statements it runs while other processes sync.
    pub fn read<T>(&self, f: impl FnOnce(&Catalog) -> Result<T>) -> Result<T> {
        let tx = self.conn.unchecked_transaction()?;
        let v = f(self)?;
        tx.commit()?;
        Ok(v)
    }

    /// Empties the catalog (for `catalog rebuild`): the next sync refills it.
    pub fn clear(&mut self) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "DELETE FROM snapshots; DELETE FROM entries; DELETE FROM nodes; DELETE FROM names; DELETE FROM trees;
             DELETE FROM blobs;",
        )?;
        tx.commit()?;
        self.conn.execute_batch("VACUUM")?;
        Ok(())
    }

    /// SQLite's `quick_check` of the whole file: an error naming the damage, if any.
    pub fn verify(&self) -> Result<()> {
        let check: String = self.conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0)).map_err(|e| self.wrap(e))?;
        if check != "ok" {
            return Err(self.unusable(format!("integrity check failed: {check}")));
        }
        Ok(())
    }

    /// Rows per table and the file's size, for `catalog info` and the benchmark.
    pub fn info(&self) -> Result<Vec<(String, i64)>> {
        let mut v = Vec::new();
        for t in ["snapshots", "trees", "nodes", "names", "entries"] {
            let n: i64 = self.conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))?;
            v.push((t.to_string(), n));
        }
        let pages: i64 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        v.push(("bytes".to_string(), pages * size));
        Ok(v)
    }
}

/// Creates the file with mode 0600 before SQLite opens it (SQLite gives its `-wal` and
/// `-shm` files the database file's mode), and tightens an existing file's mode.
fn create_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |source| CatalogError::Io { path: path.display().to_string(), source };
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
    }
    let f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path).map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    if meta.permissions().mode() & 0o077 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(())
}

impl Catalog {
    /// Deletes a catalog file and SQLite's companions (to rebuild a damaged one).
    pub fn delete_files(path: &Path) -> Result<()> {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(CatalogError::Io { path: PathBuf::from(p).display().to_string(), source }),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
