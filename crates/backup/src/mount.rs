//! `atrest backup mount`: a read-only FUSE view of every snapshot, as
//! restic's: `snapshots/<time>/` (and `snapshots/latest`, a symlink),
//! `ids/<id prefix>` (symlinks into `snapshots/`); inside a snapshot, one
//! entry per backed-up path (its last component), then the trees as they
//! were saved: names, modes, owners, times, symlinks, special files,
//! xattrs and contents.
//!
//! Inodes are numbered as entries are first listed and kept for the life
//! of the mount (browsing a tree costs a few dozen bytes per entry seen).
//! Reads find the blobs covering the range through the index's blob sizes
//! and keep the last few opened blobs; a blob that fails authentication
//! is `EIO`, never wrong bytes.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, ReplyXattr, Request,
};

use crate::backend::Backend;
use crate::keys::BlobId;
use crate::repo::{Repository, parse_id};
use crate::tree::{Node, NodeKind};

/// Attributes and names never change under a mount of a repository.
const TTL: Duration = Duration::from_secs(3600);
/// Opened blobs kept for reads nearby.
const BLOB_CACHE: usize = 8;

enum Entry {
    /// A directory made by the mount (root, `snapshots`, `ids`, a snapshot).
    Dir {
        children: Vec<(OsString, u64)>,
        time: SystemTime,
    },
    /// A symlink made by the mount.
    Link { target: OsString, time: SystemTime },
    /// An entry of a snapshot's tree; a directory's children are listed
    /// on first use.
    Node {
        node: Node,
        children: Option<Vec<(OsString, u64)>>,
        /// A file's blobs with their end offsets, once first read.
        extents: Option<Arc<Vec<(BlobId, u64)>>>,
    },
}

pub struct SnapshotFs<B: Backend> {
    repo: Repository<B>,
    entries: RwLock<Vec<Entry>>,
    salts: Mutex<HashMap<[u8; 32], [u8; 32]>>,
    blobs: Mutex<Vec<(BlobId, Arc<Vec<u8>>)>>,
    uid: u32,
    gid: u32,
}

fn time_of(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// `2026-12-06T07:31:41Z` (UTC) of a time in ms since the epoch.
fn time_name(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // H. Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl<B: Backend> SnapshotFs<B> {
    /// Reads the snapshot list; every tree is read when first entered.
    pub fn new(repo: Repository<B>) -> crate::Result<Self> {
        let snapshots = repo.snapshots()?;
        #[allow(
            clippy::disallowed_methods,
            reason = "the times of the mount's own directories, shown to people"
        )]
        let now = SystemTime::now();
        // 1 = root, 2 = snapshots, 3 = ids; index = inode number - 1.
        let mut entries = vec![
            Entry::Dir {
                children: vec![("snapshots".into(), 2), ("ids".into(), 3)],
                time: now,
            },
            Entry::Dir {
                children: Vec::new(),
                time: now,
            },
            Entry::Dir {
                children: Vec::new(),
                time: now,
            },
        ];
        let mut by_time = Vec::new();
        let mut by_id = Vec::new();
        let mut used: HashMap<String, usize> = HashMap::new();
        for (id, snap) in &snapshots {
            let mut name = time_name(snap.time_ms);
            let n = used.entry(name.clone()).or_default();
            *n += 1;
            if *n > 1 {
                name = format!("{name}-{}", &id[..8]);
            }
            // The snapshot's directory: one entry per backed-up path.
            let ino = entries.len() as u64 + 1;
            entries.push(Entry::Dir {
                children: Vec::new(),
                time: time_of(snap.time_ms),
            });
            let root = repo.load_tree(&snap.tree, &mut HashMap::new())?;
            let mut children = Vec::new();
            for node in root.nodes {
                let base = std::path::Path::new(OsStr::from_bytes(&node.name))
                    .file_name()
                    .map(OsStr::to_os_string)
                    .unwrap_or_else(|| "root".into());
                let mut label = base.clone();
                let mut k = 1;
                while children.iter().any(|(n, _)| *n == label) {
                    k += 1;
                    label = format!("{}-{k}", base.to_string_lossy()).into();
                }
                children.push((label, entries.len() as u64 + 1));
                entries.push(Entry::Node {
                    node,
                    children: None,
                    extents: None,
                });
            }
            if let Entry::Dir { children: c, .. } = &mut entries[ino as usize - 1] {
                *c = children;
            }
            by_time.push((OsString::from(&name), ino));
            let link = entries.len() as u64 + 1;
            entries.push(Entry::Link {
                target: format!("../snapshots/{name}").into(),
                time: time_of(snap.time_ms),
            });
            by_id.push((OsString::from(&id[..8]), link));
        }
        if let Some((name, _)) = by_time.last() {
            let link = entries.len() as u64 + 1;
            entries.push(Entry::Link {
                target: name.clone(),
                time: now,
            });
            by_time.push(("latest".into(), link));
        }
        if let Entry::Dir { children, .. } = &mut entries[1] {
            *children = by_time;
        }
        if let Entry::Dir { children, .. } = &mut entries[2] {
            *children = by_id;
        }
        Ok(Self {
            repo,
            entries: RwLock::new(entries),
            salts: Mutex::new(HashMap::new()),
            blobs: Mutex::new(Vec::new()),
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
        })
    }

    fn attr(&self, ino: u64, entry: &Entry) -> FileAttr {
        let base = |kind, perm, size, time| FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind,
            perm,
            nlink: 1,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        };
        match entry {
            Entry::Dir { time, .. } => base(FileType::Directory, 0o555, 0, *time),
            Entry::Link { target, time } => {
                base(FileType::Symlink, 0o777, target.len() as u64, *time)
            }
            Entry::Node { node, .. } => {
                let kind = match node.kind {
                    NodeKind::File => FileType::RegularFile,
                    NodeKind::Dir => FileType::Directory,
                    NodeKind::Symlink => FileType::Symlink,
                    NodeKind::Fifo => FileType::NamedPipe,
                    NodeKind::Chardev => FileType::CharDevice,
                    NodeKind::Blockdev => FileType::BlockDevice,
                    NodeKind::Socket => FileType::Socket,
                };
                let size = match node.kind {
                    NodeKind::Symlink => node.target.len() as u64,
                    _ => node.size,
                };
                let time =
                    UNIX_EPOCH + Duration::new(node.mtime_sec.max(0) as u64, node.mtime_nsec);
                let mut attr = base(kind, (node.mode & 0o7777) as u16, size, time);
                attr.uid = node.uid;
                attr.gid = node.gid;
                attr.rdev = node.rdev as u32;
                attr
            }
        }
    }

    /// The children of directory `ino`, listing a tree on first use.
    fn children(&self, ino: u64) -> Result<Vec<(OsString, u64)>, Errno> {
        self.repo.keep_lock();
        {
            let entries = self.entries.read().expect("entries");
            match entries.get(ino as usize - 1) {
                Some(Entry::Dir { children, .. }) => return Ok(children.clone()),
                Some(Entry::Node {
                    children: Some(c), ..
                }) => return Ok(c.clone()),
                Some(Entry::Node { node, .. }) if node.kind == NodeKind::Dir => {}
                Some(_) => return Err(Errno::ENOTDIR),
                None => return Err(Errno::ENOENT),
            }
        }
        let subtree = {
            let entries = self.entries.read().expect("entries");
            match &entries[ino as usize - 1] {
                Entry::Node { node, .. } => node.subtree.clone(),
                _ => None,
            }
        };
        let tree = match subtree {
            Some(id) => self
                .repo
                .load_tree(&id, &mut self.salts.lock().expect("salts"))
                .map_err(|_| Errno::EIO)?,
            None => Default::default(),
        };
        let mut entries = self.entries.write().expect("entries");
        // Another thread may have listed it meanwhile.
        if let Entry::Node {
            children: Some(c), ..
        } = &entries[ino as usize - 1]
        {
            return Ok(c.clone());
        }
        let mut children = Vec::with_capacity(tree.nodes.len());
        for node in tree.nodes {
            children.push((
                OsString::from(OsStr::from_bytes(&node.name)),
                entries.len() as u64 + 1,
            ));
            entries.push(Entry::Node {
                node,
                children: None,
                extents: None,
            });
        }
        if let Entry::Node { children: c, .. } = &mut entries[ino as usize - 1] {
            *c = Some(children.clone());
        }
        Ok(children)
    }

    /// A file's blobs and where each ends, from the index's sizes.
    fn extents(&self, ino: u64) -> Result<Arc<Vec<(BlobId, u64)>>, Errno> {
        let content = {
            let entries = self.entries.read().expect("entries");
            match entries.get(ino as usize - 1) {
                Some(Entry::Node {
                    extents: Some(e), ..
                }) => return Ok(Arc::clone(e)),
                Some(Entry::Node { node, .. }) if node.kind == NodeKind::File => {
                    node.content.clone()
                }
                _ => return Err(Errno::EINVAL),
            }
        };
        let mut end = 0u64;
        let mut out = Vec::with_capacity(content.len());
        for id in &content {
            let id = parse_id(id).map_err(|_| Errno::EIO)?;
            end += u64::from(self.repo.blob_len(&id).ok_or(Errno::EIO)?);
            out.push((id, end));
        }
        let out = Arc::new(out);
        if let Some(Entry::Node { extents, .. }) = self
            .entries
            .write()
            .expect("entries")
            .get_mut(ino as usize - 1)
        {
            *extents = Some(Arc::clone(&out));
        }
        Ok(out)
    }

    fn blob(&self, id: &BlobId) -> Result<Arc<Vec<u8>>, Errno> {
        if let Some((_, b)) = self
            .blobs
            .lock()
            .expect("blobs")
            .iter()
            .find(|(i, _)| i == id)
        {
            return Ok(Arc::clone(b));
        }
        let data = Arc::new(
            self.repo
                .read_blob(id, &mut self.salts.lock().expect("salts"))
                .map_err(|_| Errno::EIO)?,
        );
        let mut cache = self.blobs.lock().expect("blobs");
        if cache.len() >= BLOB_CACHE {
            cache.remove(0);
        }
        cache.push((*id, Arc::clone(&data)));
        Ok(data)
    }

    fn read_range(&self, ino: u64, offset: u64, size: usize) -> Result<Vec<u8>, Errno> {
        self.repo.keep_lock();
        let extents = self.extents(ino)?;
        let total = extents.last().map_or(0, |(_, e)| *e);
        let end = (offset + size as u64).min(total);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let first = extents.partition_point(|(_, e)| *e <= offset);
        let mut start = if first == 0 { 0 } else { extents[first - 1].1 };
        for (id, blob_end) in &extents[first..] {
            if start >= end {
                break;
            }
            let data = self.blob(id)?;
            let from = offset.max(start) - start;
            let to = end.min(*blob_end) - start;
            out.extend_from_slice(&data[from as usize..to as usize]);
            start = *blob_end;
        }
        Ok(out)
    }

    fn with_entry<T>(&self, ino: u64, f: impl FnOnce(&Entry) -> T) -> Result<T, Errno> {
        let entries = self.entries.read().expect("entries");
        entries
            .get((ino as usize).wrapping_sub(1))
            .map(f)
            .ok_or(Errno::ENOENT)
    }
}

impl<B: Backend + 'static> Filesystem for SnapshotFs<B> {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = self.children(parent.0).and_then(|c| {
            let ino = c
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, i)| *i)
                .ok_or(Errno::ENOENT)?;
            self.with_entry(ino, |e| self.attr(ino, e))
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.with_entry(ino.0, |e| self.attr(ino.0, e)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let result = self.with_entry(ino.0, |e| match e {
            Entry::Link { target, .. } => Ok(target.as_bytes().to_vec()),
            Entry::Node { node, .. } if node.kind == NodeKind::Symlink => Ok(node.target.clone()),
            _ => Err(Errno::EINVAL),
        });
        match result.and_then(|r| r) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc_accmode() != 0 {
            return reply.error(Errno::EROFS);
        }
        match self.extents(ino.0) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read_range(ino.0, offset, size as usize) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let children = match self.children(ino.0) {
            Ok(c) => c,
            Err(e) => return reply.error(e),
        };
        let kinds: Vec<FileType> = {
            let entries = self.entries.read().expect("entries");
            children
                .iter()
                .map(|(_, i)| self.attr(*i, &entries[*i as usize - 1]).kind)
                .collect()
        };
        let dots = [(".", ino), ("..", INodeNo::ROOT)];
        for (i, (name, dot)) in dots.iter().enumerate().skip(offset as usize) {
            if reply.add(*dot, i as u64 + 1, FileType::Directory, name) {
                return reply.ok();
            }
        }
        let skip = (offset as usize).saturating_sub(2);
        for (n, ((name, child), kind)) in children.iter().zip(kinds).enumerate().skip(skip) {
            if reply.add(INodeNo(*child), n as u64 + 3, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let value = self.with_entry(ino.0, |e| match e {
            Entry::Node { node, .. } => node
                .xattrs
                .iter()
                .find(|x| x.name == name.as_bytes())
                .map(|x| x.value.clone()),
            _ => None,
        });
        match value {
            Ok(Some(v)) if size == 0 => reply.size(v.len() as u32),
            Ok(Some(v)) if v.len() <= size as usize => reply.data(&v),
            Ok(Some(_)) => reply.error(Errno::ERANGE),
            Ok(None) => reply.error(Errno::NO_XATTR),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let list = self.with_entry(ino.0, |e| match e {
            Entry::Node { node, .. } => node
                .xattrs
                .iter()
                .flat_map(|x| x.name.iter().copied().chain([0]))
                .collect(),
            _ => Vec::new(),
        });
        match list {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() <= size as usize => reply.data(&v),
            Ok(_) => reply.error(Errno::ERANGE),
            Err(e) => reply.error(e),
        }
    }
}

/// `O_ACCMODE` bits other than `O_RDONLY` (0): a write open.
fn libc_accmode() -> i32 {
    rustix::fs::OFlags::ACCMODE.bits() as i32
}

#[cfg(test)]
mod tests {
    use super::time_name;

    #[test]
    fn time_names_are_utc_rfc3339() {
        assert_eq!(time_name(0), "1970-01-01T00:00:00Z");
        assert_eq!(time_name(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(time_name(1_796_541_101_999), "2026-12-06T07:11:41Z");
    }
}
