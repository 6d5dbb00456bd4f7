//! Tree blobs: one directory's entries, sorted by name bytes.
//!
//! Payload layout (docs/format.md, "Trees"): version u8 (= 1), a u32 count, then each node:
//! name (bytes), kind u8, mode u32 (permission bits incl. setuid/setgid/sticky), uid u32,
//! gid u32, user (bytes), group (bytes), mtime seconds i64 and nanoseconds u32, ctime seconds
//! i64 and nanoseconds u32, device u64, inode u64, link count u64, size u64, rdev u64,
//! symlink target (bytes), xattrs (u32 count of name bytes + value bytes), content (u32 count
//! of 32-byte blob ids), subtree (optional id). Names are arbitrary bytes other than `/` and
//! NUL, never empty, `.` or `..`; decoding rejects anything else, so a hostile tree cannot
//! name a path outside the directory it describes.

use super::codec::{Reader, Writer};
use super::FormatError;

pub const VERSION: u8 = 1;

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeKind {
    File = 1,
    Dir = 2,
    Symlink = 3,
    Fifo = 4,
    CharDevice = 5,
    BlockDevice = 6,
    Socket = 7,
}

impl NodeKind {
    pub fn from_u8(v: u8) -> Result<Self, FormatError> {
        Ok(match v {
            1 => Self::File,
            2 => Self::Dir,
            3 => Self::Symlink,
            4 => Self::Fifo,
            5 => Self::CharDevice,
            6 => Self::BlockDevice,
            7 => Self::Socket,
            _ => return Err(FormatError::Invalid("unknown node kind")),
        })
    }
    /// The word used in listings and JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Dir => "dir",
            Self::Symlink => "symlink",
            Self::Fifo => "fifo",
            Self::CharDevice => "chardev",
            Self::BlockDevice => "blockdev",
            Self::Socket => "socket",
        }
    }
}

/// A timestamp as stored: seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct Time {
    pub sec: i64,
    pub nsec: u32,
}

/// One entry of a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: Vec<u8>,
    pub kind: NodeKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub user: Vec<u8>,
    pub group: Vec<u8>,
    pub mtime: Time,
    pub ctime: Time,
    pub dev: u64,
    pub inode: u64,
    pub nlink: u64,
    pub size: u64,
    pub rdev: u64,
    pub link_target: Vec<u8>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub content: Vec<[u8; 32]>,
    pub subtree: Option<[u8; 32]>,
}

impl Node {
    /// An empty node of the given name and kind; the walker fills in the rest.
    pub fn new(name: Vec<u8>, kind: NodeKind) -> Self {
        Node {
            name,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            user: Vec::new(),
            group: Vec::new(),
            mtime: Time::default(),
            ctime: Time::default(),
            dev: 0,
            inode: 0,
            nlink: 0,
            size: 0,
            rdev: 0,
            link_target: Vec::new(),
            xattrs: Vec::new(),
            content: Vec::new(),
            subtree: None,
        }
    }
}

/// Whether `name` may appear as a node name (see the module docs).
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

pub fn encode(nodes: &[Node]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(VERSION);
    w.len(nodes.len());
    for n in nodes {
        w.bytes(&n.name);
        w.u8(n.kind as u8);
        w.u32(n.mode);
        w.u32(n.uid);
        w.u32(n.gid);
        w.bytes(&n.user);
        w.bytes(&n.group);
        w.i64(n.mtime.sec);
        w.u32(n.mtime.nsec);
        w.i64(n.ctime.sec);
        w.u32(n.ctime.nsec);
        w.u64(n.dev);
        w.u64(n.inode);
        w.u64(n.nlink);
        w.u64(n.size);
        w.u64(n.rdev);
        w.bytes(&n.link_target);
        w.len(n.xattrs.len());
        for (k, v) in &n.xattrs {
            w.bytes(k);
            w.bytes(v);
        }
        w.len(n.content.len());
        for id in &n.content {
            w.id(id);
        }
        w.opt_id(n.subtree.as_ref());
    }
    w.into_bytes()
}

fn decode_node(r: &mut Reader<'_>) -> Result<Node, FormatError> {
    let name = r.bytes()?.to_vec();
    if !valid_name(&name) {
        return Err(FormatError::Invalid("node name is empty, '.', '..' or contains '/' or NUL"));
    }
    let kind = NodeKind::from_u8(r.u8()?)?;
    let mode = r.u32()?;
    let uid = r.u32()?;
    let gid = r.u32()?;
    let user = r.bytes()?.to_vec();
    let group = r.bytes()?.to_vec();
    let mtime = Time { sec: r.i64()?, nsec: r.u32()? };
    let ctime = Time { sec: r.i64()?, nsec: r.u32()? };
    if mtime.nsec >= 1_000_000_000 || ctime.nsec >= 1_000_000_000 {
        return Err(FormatError::Invalid("nanoseconds out of range"));
    }
    let (dev, inode, nlink, size, rdev) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?);
    let link_target = r.bytes()?.to_vec();
    let xattrs = r.list(8, |r| Ok((r.bytes()?.to_vec(), r.bytes()?.to_vec())))?;
    let content = r.list(32, |r| r.id())?;
    let subtree = r.opt_id()?;
    Ok(Node {
        name,
        kind,
        mode,
        uid,
        gid,
        user,
        group,
        mtime,
        ctime,
        dev,
        inode,
        nlink,
        size,
        rdev,
        link_target,
        xattrs,
        content,
        subtree,
    })
}

/// Decodes a tree, also checking that names are valid, unique and sorted.
pub fn decode(b: &[u8]) -> Result<Vec<Node>, FormatError> {
    let mut r = Reader::new(b);
    let version = r.u8()?;
    if version != VERSION {
        return Err(FormatError::UnsupportedVersion { what: "tree", version });
    }
    let nodes = r.list(80, decode_node)?;
    r.finish()?;
    if nodes.windows(2).any(|w| w[0].name >= w[1].name) {
        return Err(FormatError::Invalid("tree entries are not sorted and unique"));
    }
    nodes.iter().try_for_each(check_shape)?;
    Ok(nodes)
}

/// A node's fields must fit its kind: a directory has a subtree and no content; nothing
/// else has a subtree; only a file has content. (A file that claims a subtree, or a
/// directory without one, would otherwise be restored as something it is not.)
fn check_shape(n: &Node) -> Result<(), FormatError> {
    match (n.kind, n.subtree.is_some(), n.content.is_empty()) {
        (NodeKind::Dir, false, _) => Err(FormatError::Invalid("directory without a subtree")),
        (NodeKind::Dir, true, false) => Err(FormatError::Invalid("directory with file content")),
        (NodeKind::Dir, true, true) => Ok(()),
        (_, true, _) => Err(FormatError::Invalid("a node that is not a directory has a subtree")),
        (NodeKind::File, false, _) | (_, false, true) => Ok(()),
        (_, false, false) => Err(FormatError::Invalid("a node that is not a file has content")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::strategies::*;
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 1..40).prop_filter("valid name", |n| valid_name(n))
    }

    fn node() -> impl Strategy<Value = Node> {
        (
            (name(), 1u8..=7, any::<u32>(), any::<u32>(), any::<u32>(), bytes(10), bytes(10)),
            (any::<i64>(), 0u32..1_000_000_000, any::<i64>(), 0u32..1_000_000_000),
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), bytes(20)),
            (
                proptest::collection::vec((bytes(10), bytes(10)), 0..3),
                proptest::collection::vec(id(), 0..4),
                proptest::option::of(id()),
            ),
        )
            .prop_map(
                |(
                    (name, k, mode, uid, gid, user, group),
                    (ms, mn, cs, cn),
                    (dev, inode, nlink, size, rdev, lt),
                    (xattrs, content, subtree),
                )| Node {
                    name,
                    kind: NodeKind::from_u8(k).unwrap(),
                    mode,
                    uid,
                    gid,
                    user,
                    group,
                    mtime: Time { sec: ms, nsec: mn },
                    ctime: Time { sec: cs, nsec: cn },
                    dev,
                    inode,
                    nlink,
                    size,
                    rdev,
                    link_target: lt,
                    xattrs,
                    content,
                    subtree,
                },
            )
            .prop_map(|mut n| {
                // Only shapes the decoder accepts (check_shape).
                match n.kind {
                    NodeKind::Dir => {
                        n.content.clear();
                        n.subtree = n.subtree.or(Some([7; 32]));
                    }
                    NodeKind::File => n.subtree = None,
                    _ => {
                        n.content.clear();
                        n.subtree = None;
                    }
                }
                n
            })
    }

    proptest! {
        #[test]
        fn round_trip(mut nodes in proptest::collection::vec(node(), 0..6)) {
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            nodes.dedup_by(|a, b| a.name == b.name);
            prop_assert_eq!(decode(&encode(&nodes)).unwrap(), nodes);
        }

        #[test]
        fn decode_never_panics(b in bytes(400)) {
            let _ = decode(&b);
        }
    }

    #[test]
    fn nodes_whose_fields_do_not_fit_their_kind_are_rejected() {
        let mut file_with_subtree = Node::new(b"f".to_vec(), NodeKind::File);
        file_with_subtree.subtree = Some([1; 32]);
        let dir_without_subtree = Node::new(b"d".to_vec(), NodeKind::Dir);
        let mut dir_with_content = Node::new(b"d".to_vec(), NodeKind::Dir);
        dir_with_content.subtree = Some([1; 32]);
        dir_with_content.content = vec![[2; 32]];
        let mut link_with_content = Node::new(b"l".to_vec(), NodeKind::Symlink);
        link_with_content.content = vec![[2; 32]];
        for n in [file_with_subtree, dir_without_subtree, dir_with_content, link_with_content] {
            assert!(decode(&encode(std::slice::from_ref(&n))).is_err(), "{n:?}");
        }
        let mut ok = Node::new(b"d".to_vec(), NodeKind::Dir);
        ok.subtree = Some([1; 32]);
        let mut f = Node::new(b"f".to_vec(), NodeKind::File);
        f.content = vec![[2; 32]];
        assert_eq!(decode(&encode(&[ok.clone(), f.clone()])).unwrap(), vec![ok, f]);
    }

    #[test]
    fn hostile_names_are_rejected() {
        for bad in [&b".."[..], b".", b"", b"a/b", b"a\0"] {
            let n = Node::new(bad.to_vec(), NodeKind::File);
            assert!(decode(&encode(&[n])).is_err(), "{bad:?}");
        }
    }
}
