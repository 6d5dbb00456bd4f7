//! `dump`: one file of a snapshot to a writer, or a directory as a tar or zip archive,
//! streamed: contents are fetched one chunk at a time as the archive is written, so a
//! 10 GB directory never sits in memory (only the tree being walked and one chunk do).
//!
//! tar (GNU format, via the `tar` crate) keeps the metadata exactly: mode bits, owner ids and
//! names, mtime to the nanosecond and extended attributes (PAX records `mtime` and
//! `SCHILY.xattr.*`), symlinks, hard links within the dump, FIFOs and device nodes. zip
//! (the `zip` crate, streamed with data descriptors) keeps what zip can: mode bits,
//! symlinks, mtime to two seconds; names that are not UTF-8 are shown lossily, and other
//! kinds of entries are left out with a warning. Entries are named by their snapshot path
//! without the leading `/` (as `tar -C / -c path` names them).

use std::collections::HashMap;
use std::io::{self, Read, Write};

use crate::format::tree::{Node, NodeKind};
use crate::id::BlobId;
use crate::progress::Progress;
use crate::repo::{MasterIndex, RepoError, Repository};

/// The archive format for a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Archive {
    Tar,
    Zip,
}

/// A file's content as a reader: chunks fetched and decrypted one at a time.
pub struct Content<'a> {
    repo: &'a Repository,
    index: &'a MasterIndex,
    chunks: std::slice::Iter<'a, [u8; 32]>,
    buf: Vec<u8>,
    at: usize,
    progress: Option<&'a dyn Progress>,
}

impl<'a> Content<'a> {
    pub fn new(repo: &'a Repository, index: &'a MasterIndex, node: &'a Node) -> Self {
        Content { repo, index, chunks: node.content.iter(), buf: Vec::new(), at: 0, progress: None }
    }

    /// Reports each chunk's bytes as it is fetched.
    pub fn reporting(mut self, progress: &'a dyn Progress) -> Self {
        self.progress = Some(progress);
        self
    }
}

impl Read for Content<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.buf.len() {
            let Some(id) = self.chunks.next() else { return Ok(0) };
            self.buf = self.repo.read_data_blob(self.index, &BlobId(*id)).map_err(io::Error::other)?;
            self.at = 0;
            if let Some(p) = self.progress {
                p.add_bytes(self.buf.len() as u64);
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Writes one file's content; returns the bytes written. A content that does not add up to
/// the recorded size is an error (a damaged snapshot must not pass for a whole file).
pub fn file(
    repo: &Repository,
    index: &MasterIndex,
    node: &Node,
    out: &mut dyn Write,
    progress: &dyn Progress,
) -> io::Result<u64> {
    progress.set_total(node.size, 1);
    let n = io::copy(&mut Content::new(repo, index, node).reporting(progress), out)?;
    if n != node.size {
        return Err(io::Error::other(format!("content is {n} bytes, the snapshot records {}", node.size)));
    }
    Ok(n)
}

/// Why a dump stopped: the repository, or the writing (a closed pipe, a full disk).
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("writing the archive: {0}")]
    Write(#[source] io::Error),
}

/// What a dump wrote.
#[derive(Debug, Default)]
pub struct Dumped {
    pub entries: u64,
    pub bytes: u64,
    /// Entries the format cannot hold (zip: devices, FIFOs), left out.
    pub skipped: u64,
}

/// Writes directory `node` (at snapshot path `path`) and everything below it as an archive.
pub fn tree(
    repo: &Repository,
    index: &MasterIndex,
    node: &Node,
    path: &[u8],
    archive: Archive,
    out: &mut dyn Write,
    progress: &dyn Progress,
) -> Result<Dumped, DumpError> {
    let io_err = DumpError::Write;
    let mut sink: Box<dyn Sink + '_> = match archive {
        Archive::Tar => Box::new(TarSink { b: tar::Builder::new(out), links: HashMap::new() }),
        Archive::Zip => Box::new(ZipSink { z: Some(zip::ZipWriter::new_stream(out)) }),
    };
    let mut done = Dumped::default();
    // Depth first, an explicit stack of open directories' remaining entries (trees may be deep).
    let mut stack: Vec<(Vec<u8>, std::vec::IntoIter<Node>)> = Vec::new();
    if path != b"/" {
        sink.entry(repo, index, &name_of(path), node, progress).map_err(io_err)?;
        done.entries += 1;
    }
    if let Some(t) = node.subtree {
        stack.push((path.to_vec(), repo.load_tree(index, &BlobId(t))?.into_iter()));
    }
    while let Some((dir, entries)) = stack.last_mut() {
        let Some(n) = entries.next() else {
            stack.pop();
            continue;
        };
        let mut p = dir.clone();
        if !p.ends_with(b"/") {
            p.push(b'/');
        }
        p.extend_from_slice(&n.name);
        progress.reading(&p, true);
        let written = sink.entry(repo, index, &name_of(&p), &n, progress).map_err(io_err)?;
        progress.reading(&p, false);
        progress.add_item();
        if written {
            done.entries += 1;
            done.bytes += if n.kind == NodeKind::File { n.size } else { 0 };
        } else {
            done.skipped += 1;
        }
        if let (NodeKind::Dir, Some(t)) = (n.kind, n.subtree) {
            stack.push((p, repo.load_tree(index, &BlobId(t))?.into_iter()));
        }
    }
    sink.finish().map_err(io_err)?;
    Ok(done)
}

/// A PAX time: seconds and a decimal fraction; before 1970, `-1.75` for 1.75 s before.
fn pax_time(sec: i64, nsec: u32) -> String {
    if sec < 0 && nsec > 0 {
        format!("-{}.{:09}", -(sec + 1), 1_000_000_000 - nsec)
    } else {
        format!("{sec}.{nsec:09}")
    }
}

/// A snapshot path as an archive member name: no leading `/`.
fn name_of(path: &[u8]) -> Vec<u8> {
    path.strip_prefix(b"/").unwrap_or(path).to_vec()
}

trait Sink {
    /// Writes one entry; `false` if the format cannot hold it (left out, with a warning).
    fn entry(
        &mut self,
        repo: &Repository,
        index: &MasterIndex,
        name: &[u8],
        node: &Node,
        progress: &dyn Progress,
    ) -> io::Result<bool>;
    fn finish(&mut self) -> io::Result<()>;
}

struct TarSink<W: Write> {
    b: tar::Builder<W>,
    /// (device, inode) of hard-linked files -> the name of the first one written.
    links: HashMap<(u64, u64), Vec<u8>>,
}

impl<W: Write> Sink for TarSink<W> {
    fn entry(
        &mut self,
        repo: &Repository,
        index: &MasterIndex,
        name: &[u8],
        node: &Node,
        progress: &dyn Progress,
    ) -> io::Result<bool> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes(name));
        // Nanosecond mtime and extended attributes ride in PAX records before the entry.
        let mut pax: Vec<(String, Vec<u8>)> =
            vec![("mtime".into(), pax_time(node.mtime.sec, node.mtime.nsec).into_bytes())];
        for (k, v) in &node.xattrs {
            pax.push((format!("SCHILY.xattr.{}", String::from_utf8_lossy(k)), v.clone()));
        }
        self.b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        let mut h = tar::Header::new_gnu();
        h.set_mode(node.mode & 0o7777);
        h.set_uid(u64::from(node.uid));
        h.set_gid(u64::from(node.gid));
        // Names longer than the header holds are left to the ids.
        let _ = h.set_username(&String::from_utf8_lossy(&node.user));
        let _ = h.set_groupname(&String::from_utf8_lossy(&node.group));
        h.set_mtime(node.mtime.sec.max(0) as u64);
        h.set_size(0);
        let kind = match node.kind {
            NodeKind::Dir => tar::EntryType::Directory,
            NodeKind::Symlink => tar::EntryType::Symlink,
            NodeKind::Fifo => tar::EntryType::Fifo,
            NodeKind::CharDevice | NodeKind::BlockDevice => {
                h.set_device_major(rustix::fs::major(node.rdev))?;
                h.set_device_minor(rustix::fs::minor(node.rdev))?;
                if node.kind == NodeKind::CharDevice {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                }
            }
            NodeKind::Socket => return Ok(false),
            NodeKind::File => {
                let key = (node.dev, node.inode);
                if let Some(first) = self.links.get(&key).filter(|_| node.nlink > 1) {
                    h.set_entry_type(tar::EntryType::Link);
                    let target = std::path::Path::new(std::ffi::OsStr::from_bytes(first));
                    self.b.append_link(&mut h, path, target)?;
                    return Ok(true);
                }
                if node.nlink > 1 {
                    self.links.insert(key, name.to_vec());
                }
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(node.size);
                let mut content = Content::new(repo, index, node).reporting(progress).take(node.size);
                self.b.append_data(&mut h, path, &mut content)?;
                if content.limit() > 0 {
                    return Err(io::Error::other(format!(
                        "{}: content ends {} bytes short of the recorded size",
                        String::from_utf8_lossy(name),
                        content.limit()
                    )));
                }
                return Ok(true);
            }
        };
        h.set_entry_type(kind);
        if node.kind == NodeKind::Symlink {
            let target = std::path::Path::new(std::ffi::OsStr::from_bytes(&node.link_target));
            self.b.append_link(&mut h, path, target)?;
        } else {
            self.b.append_data(&mut h, path, io::empty())?;
        }
        Ok(true)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.b.finish()
    }
}

struct ZipSink<W: Write> {
    /// `None` once finished.
    z: Option<zip::ZipWriter<zip::write::StreamWriter<W>>>,
}

impl<W: Write> Sink for ZipSink<W> {
    fn entry(
        &mut self,
        repo: &Repository,
        index: &MasterIndex,
        name: &[u8],
        node: &Node,
        progress: &dyn Progress,
    ) -> io::Result<bool> {
        use zip::write::SimpleFileOptions;
        let shown = String::from_utf8_lossy(name).into_owned();
        let mut opts = SimpleFileOptions::default().unix_permissions(node.mode & 0o7777);
        if let Some(t) = zip_time(node.mtime.sec) {
            opts = opts.last_modified_time(t);
        }
        let zerr = |e: zip::result::ZipError| io::Error::other(e.to_string());
        let z = self.z.as_mut().ok_or_else(|| io::Error::other("the archive is finished"))?;
        match node.kind {
            NodeKind::Dir => z.add_directory(shown, opts).map_err(zerr)?,
            NodeKind::Symlink => {
                z.add_symlink(shown, String::from_utf8_lossy(&node.link_target), opts).map_err(zerr)?
            }
            NodeKind::File => {
                let opts =
                    opts.compression_method(zip::CompressionMethod::Deflated).large_file(node.size >= u32::MAX as u64);
                z.start_file(shown, opts).map_err(zerr)?;
                let n = io::copy(&mut Content::new(repo, index, node).reporting(progress), z)?;
                if n != node.size {
                    return Err(io::Error::other(format!("content is {n} bytes, the snapshot records {}", node.size)));
                }
            }
            _ => {
                progress.warn(&format!("{shown}: a {} cannot go into a zip archive; left out", node.kind.as_str()));
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn finish(&mut self) -> io::Result<()> {
        if let Some(z) = self.z.take() {
            z.finish().map_err(|e| io::Error::other(e.to_string()))?;
        }
        Ok(())
    }
}

/// zip's DOS time (UTC; 1980 to 2107), if the time fits.
fn zip_time(sec: i64) -> Option<zip::DateTime> {
    let t = jiff::Timestamp::from_second(sec).ok()?.to_zoned(jiff::tz::TimeZone::UTC);
    zip::DateTime::from_date_and_time(
        u16::try_from(t.year()).ok()?,
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
    )
    .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn pax_times_before_1970() {
        assert_eq!(super::pax_time(-2, 250_000_000), "-1.750000000");
        assert_eq!(super::pax_time(-2, 0), "-2.000000000");
        assert_eq!(super::pax_time(5, 7), "5.000000007");
    }
}
