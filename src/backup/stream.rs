//! `backup --stdin` and `backup --stdin-from-command`: one stream stored as one file.
//!
//! The stream is chunked as it arrives (nothing is buffered beyond the chunker's window), and
//! chunks go to the sink's packer threads, so every core compresses a large dump. The
//! snapshot's root tree mirrors the file's path (`--stdin-filename`, default `stdin`): a
//! file `/NAME`, with directories on the way for a nested name (`db/app.sql` gives `/db`
//! holding `app.sql`). The file is owned by the user running the backup, mode 0600, with the
//! backup's start as its times.
//!
//! Before the snapshot is written the stream's `finish` is asked whether it ended well: a
//! command that exited non-zero (or was killed) fails the backup and no snapshot is written,
//! as restic does. The data already stored stays unreferenced until a prune.

use std::io::Read;
use std::sync::Arc;

use super::{
    commit, finish_sink, open_sink, prepare, snapshot_of, BackupError, BackupOptions, BackupResult, Counters, Out,
};
use crate::chunker::Chunker;
use crate::compress::{plan_for_file, Plan};
use crate::format::snapshot::Summary;
use crate::format::tree::{self, Node, NodeKind, Time};
use crate::format::BlobType;
use crate::id::BlobId;
use crate::progress::Progress;
use crate::repo::writer::claim;
use crate::repo::Repository;

/// A stream to back up as one file.
pub struct Stream<'a> {
    /// The file's path in the snapshot, relative to `/` (`--stdin-filename`).
    pub name: String,
    pub reader: Box<dyn Read + 'a>,
    /// Whether the stream ended well (a command's exit status); asked after the last byte.
    pub finish: Box<dyn FnOnce() -> Result<(), String> + 'a>,
}

/// Checks a `--stdin-filename` (for the command line, when it is parsed): the reason it
/// cannot be one.
pub fn check_stdin_filename(name: &str) -> Result<(), &'static str> {
    parts(name).map(|_| ())
}

/// The components of a `--stdin-filename`: relative, no `.` or `..`, no NUL.
fn components(name: &str) -> Result<Vec<Vec<u8>>, BackupError> {
    parts(name).map_err(|why| BackupError::Invalid(format!("--stdin-filename {name:?}: {why}")))
}

fn parts(name: &str) -> Result<Vec<Vec<u8>>, &'static str> {
    if name.contains('\0') {
        return Err("contains a NUL byte");
    }
    let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return Err("give a file name");
    }
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Err("may not contain `.` or `..`");
    }
    if parts.iter().any(|p| p.len() > 255) {
        return Err("a name longer than 255 bytes cannot be restored");
    }
    Ok(parts.into_iter().map(|p| p.as_bytes().to_vec()).collect())
}

/// Backs up one stream. Returns after the snapshot is durable (or, for a dry run, counted).
pub fn run_stream(
    repo: Arc<Repository>,
    opts: BackupOptions,
    stream: Stream<'_>,
    progress: Arc<dyn Progress>,
) -> Result<BackupResult, BackupError> {
    let started = crate::clock::now();
    let watch = crate::clock::stopwatch();
    let parts = components(&stream.name)?;
    let root_path = parts.iter().fold(Vec::new(), |mut p, c| {
        p.push(b'/');
        p.extend_from_slice(c);
        p
    });
    let roots = vec![root_path.clone()];
    let prep = prepare(&repo, &opts, &roots, progress.as_ref())?;
    let threads = opts.threads.max(1);
    let (sink, known) = open_sink(&repo, &opts, &prep, threads);
    let mut out = sink.as_ref().map(Out::new);
    let counters = Counters::default();
    let mut store = |blob_type: BlobType, id: BlobId, data: &[u8], plan: Plan| {
        if !claim(&known, id) {
            return;
        }
        match out.as_mut() {
            Some(out) => out.store(true, blob_type, id, data, plan),
            None => {
                counters.dry_blobs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                counters.dry_bytes.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }
    };
    let keys = repo.keys().clone();
    let mut chunker = Chunker::new(repo.config().chunker, keys.gear_table());
    let mut content = Vec::new();
    let mut plan = None;
    let shown = String::from_utf8_lossy(&root_path).into_owned();
    let read = chunker
        .chunk_stream(stream.reader, |chunk: &[u8]| -> std::io::Result<()> {
            let plan = *plan.get_or_insert_with(|| plan_for_file(chunk));
            let id = keys.blob_id(BlobType::Data, chunk);
            store(BlobType::Data, id, chunk, plan);
            content.push(id.0);
            progress.add_bytes(chunk.len() as u64);
            Ok(())
        })
        .map_err(|e| BackupError::Source { path: shown.clone(), source: e })?;
    (stream.finish)().map_err(BackupError::Stream)?;
    progress.add_item();
    progress.file(&root_path, crate::progress::FileStatus::New);

    let now = Time { sec: started.as_second(), nsec: started.subsec_nanosecond() as u32 };
    let names = crate::source::Names::default();
    let (uid, gid) = (rustix::process::getuid().as_raw(), rustix::process::getgid().as_raw());
    let node = |name: &[u8], kind: NodeKind, mode: u32| {
        let mut n = Node::new(name.to_vec(), kind);
        (n.mode, n.uid, n.gid, n.user, n.group) = (mode, uid, gid, names.user(uid), names.group(gid));
        (n.mtime, n.ctime, n.nlink) = (now, now, 1);
        n
    };
    let (last, dirs) = parts.split_last().expect("checked: at least one part");
    let mut entry = node(last, NodeKind::File, 0o600);
    entry.size = read;
    entry.content = content;
    // The trees from the file's directory up to the root, each holding the one entry below.
    for dir in dirs.iter().rev().map(Some).chain([None]) {
        let bytes = tree::encode(std::slice::from_ref(&entry));
        let id = keys.blob_id(BlobType::Tree, &bytes);
        store(BlobType::Tree, id, &bytes, Plan::Try);
        match dir {
            Some(name) => {
                entry = node(name, NodeKind::Dir, 0o755);
                entry.subtree = Some(id.0);
            }
            None => entry.subtree = Some(id.0),
        }
    }
    let root = entry.subtree.expect("set by the last round");
    drop(out);
    let mut summary = Summary {
        files_new: 1,
        dirs_new: dirs.len() as u64 + 1,
        total_files_processed: 1,
        total_bytes_processed: read,
        ..Default::default()
    };
    finish_sink(sink, &mut summary, &counters)?;
    summary.duration_ns = watch.elapsed().as_nanos() as u64;
    let snapshot = snapshot_of(&opts, &prep, started, roots, root, summary);
    let (snapshot_id, rescued) = commit(&repo, &opts, prep, &snapshot)?;
    Ok(BackupResult { snapshot_id, snapshot, warnings: Vec::new(), rescued })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_filenames() {
        assert_eq!(components("dump.sql").unwrap(), vec![b"dump.sql".to_vec()]);
        assert_eq!(components("/db//app.sql").unwrap(), vec![b"db".to_vec(), b"app.sql".to_vec()]);
        for bad in ["", "/", "a/../b", "./x", "a\0b"] {
            assert!(components(bad).is_err(), "{bad:?}");
        }
    }
}
