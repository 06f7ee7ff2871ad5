//! `atrest backup mount`: a read-only FUSE view of every snapshot, as
//! restic's: `snapshots/<time>/` (and `snapshots/latest`, a symlink),
//! `ids/<id prefix>` (symlinks into `snapshots/`); inside a snapshot, one
//! entry per backed-up path (its last component), then the trees as they
//! were saved: names, modes, owners, times, symlinks, special files,
//! xattrs and contents.
//!
//! Inodes are numbered as entries are first listed and kept for the life
//! of the mount (browsing a tree costs a few dozen bytes per entry seen).
//! Reads find the blobs covering the range through the index's blob sizes.
//! Blobs are read pack by pack (fetch.rs), ahead of the reads that will
//! want them: a read of a file's blob not in the cache also reads the
//! file's next blobs in the same pack (within [`READ_AHEAD_SPAN`] of the
//! file, at most [`READ_AHEAD_BYTES`] opened), in coalesced ranged reads
//! (a pack lays its blobs out in random order, so these span the pack:
//! a few reads of at most 4 MiB), so a sequential read of a file costs a
//! few requests per pack instead of one per blob; a directory's tree not
//! in the cache is read with the trees of its sibling directories not
//! listed yet (at most [`TREES_AHEAD_BYTES`]), and the snapshots' root
//! trees all together when the mount starts. Opened blobs, data and
//! trees, are kept in one cache of at most [`CACHE_BYTES`], least recently
//! used out first. Memory beyond the entries seen: the cache, plus per
//! FUSE thread (two) one read ahead in flight: at most
//! [`READ_AHEAD_BYTES`] opened, and while it is read the ranges of the
//! pack that hold them (at most the pack, ~16 MiB). Every blob is checked
//! against its id as it is read; one that fails is `EIO`, never wrong
//! bytes, and is never cached.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::ops::ControlFlow;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, ReplyXattr, Request,
};

use crate::backend::Backend;
use crate::error::BackupError;
use crate::fetch::Salts;
use crate::keys::BlobId;
use crate::repo::{Repository, parse_id, parse_tree};
use crate::tree::{Node, NodeKind, Snapshot, Tree};

/// Attributes and names never change under a mount of a repository.
const TTL: Duration = Duration::from_secs(3600);
/// Opened blobs (file contents and trees) kept, in plaintext bytes.
const CACHE_BYTES: usize = 32 << 20;
/// A file's blobs read ahead lie at most this far (in the file) past the
/// blob a read wants...
const READ_AHEAD_SPAN: u64 = 16 << 20;
/// ... and are at most this many bytes opened.
const READ_AHEAD_BYTES: u64 = 8 << 20;
/// Sibling directories' trees read with a directory's, in bytes.
const TREES_AHEAD_BYTES: u64 = 4 << 20;

/// Opened blobs by id, the least recently used evicted first once they
/// hold more than `limit` bytes (the newest is always kept).
struct BlobCache {
    blobs: HashMap<BlobId, (Arc<Vec<u8>>, u64)>,
    /// Last use → id; the first is the least recently used.
    order: BTreeMap<u64, BlobId>,
    bytes: usize,
    limit: usize,
    clock: u64,
}

impl BlobCache {
    fn new(limit: usize) -> Self {
        Self {
            blobs: HashMap::new(),
            order: BTreeMap::new(),
            bytes: 0,
            limit,
            clock: 0,
        }
    }

    fn contains(&self, id: &BlobId) -> bool {
        self.blobs.contains_key(id)
    }

    /// A blob, now the most recently used.
    fn get(&mut self, id: &BlobId) -> Option<Arc<Vec<u8>>> {
        let (data, used) = self.blobs.get_mut(id)?;
        self.order.remove(used);
        self.clock += 1;
        *used = self.clock;
        self.order.insert(self.clock, *id);
        Some(Arc::clone(data))
    }

    fn insert(&mut self, id: BlobId, data: Arc<Vec<u8>>) {
        if self.get(&id).is_some() {
            return;
        }
        self.clock += 1;
        self.bytes += data.len();
        self.blobs.insert(id, (data, self.clock));
        self.order.insert(self.clock, id);
        while self.bytes > self.limit && self.order.len() > 1 {
            let Some((_, old)) = self.order.pop_first() else {
                break;
            };
            if let Some((data, _)) = self.blobs.remove(&old) {
                self.bytes -= data.len();
            }
        }
    }
}

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
        /// The directory it is listed in.
        parent: u64,
        children: Option<Vec<(OsString, u64)>>,
        /// A file's blobs with their end offsets, once first read.
        extents: Option<Arc<Vec<(BlobId, u64)>>>,
    },
}

pub struct SnapshotFs<B: Backend> {
    repo: Repository<B>,
    entries: RwLock<Vec<Entry>>,
    salts: Salts,
    cache: Mutex<BlobCache>,
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
    /// Reads the snapshot list and their root trees; every other tree is
    /// read when first entered.
    pub fn new(repo: Repository<B>) -> crate::Result<Self> {
        let snapshots = repo.snapshots()?;
        let salts = Salts::default();
        let roots = read_roots(&repo, &salts, &snapshots)?;
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
            let root = roots
                .get(&snap.tree)
                .cloned()
                .ok_or_else(|| BackupError::damaged(format!("tree {}", snap.tree), "not read"))?;
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
                    parent: ino,
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
            salts,
            cache: Mutex::new(BlobCache::new(CACHE_BYTES)),
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
            Some(id) => self.dir_tree(ino, &id)?,
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
                parent: ino,
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

    /// Reads `wanted` pack by pack (fetch.rs) into the cache, in its
    /// order; returns what each gave (one that failed is not cached).
    fn fetch(&self, wanted: &[BlobId]) -> HashMap<BlobId, Result<Arc<Vec<u8>>, String>> {
        let got = Mutex::new(HashMap::with_capacity(wanted.len()));
        let threads = self.repo.backend().read_profile().requests_in_flight;
        self.repo
            .read_blobs_by_pack(wanted.iter().copied(), &self.salts, threads, &|id, read| {
                got.lock().expect("fetched").insert(id, read.map(Arc::new));
                ControlFlow::Continue(())
            });
        let got = got.into_inner().expect("fetched");
        let mut cache = self.cache.lock().expect("blob cache");
        for id in wanted {
            if let Some(Ok(data)) = got.get(id) {
                cache.insert(*id, Arc::clone(data));
            }
        }
        got
    }

    /// Blob `i` of a file whose blobs are `extents`: from the cache, or
    /// read with the file's next blobs that are in the same pack.
    fn file_blob(&self, extents: &[(BlobId, u64)], i: usize) -> Result<Arc<Vec<u8>>, Errno> {
        let id = extents[i].0;
        if let Some(data) = self.cache.lock().expect("blob cache").get(&id) {
            return Ok(data);
        }
        let first = self.repo.location(&id).ok_or(Errno::EIO)?;
        let mut wanted = vec![id];
        let mut taken = HashSet::from([id]);
        let mut opened = u64::from(first.raw_len);
        {
            let cache = self.cache.lock().expect("blob cache");
            let from = extents[i].1;
            for (next, end) in &extents[i + 1..] {
                if end - from > READ_AHEAD_SPAN {
                    break;
                }
                let Some(loc) = self.repo.location(next) else {
                    continue;
                };
                if loc.pack != first.pack || cache.contains(next) || taken.contains(next) {
                    continue;
                }
                opened += u64::from(loc.raw_len);
                if opened > READ_AHEAD_BYTES {
                    break;
                }
                taken.insert(*next);
                wanted.push(*next);
            }
        }
        match self.fetch(&wanted).remove(&id) {
            Some(Ok(data)) => Ok(data),
            _ => Err(Errno::EIO),
        }
    }

    /// The tree `id` of directory `ino`: from the cache, or read with the
    /// trees of its sibling directories not listed yet, so a walk of the
    /// mount (`find`, `ls -R`, `cp -a`) reads a directory's subdirectories'
    /// trees together, not one request each.
    fn dir_tree(&self, ino: u64, id: &str) -> Result<Tree, Errno> {
        let blob = parse_id(id).map_err(|_| Errno::EIO)?;
        let cached = self.cache.lock().expect("blob cache").get(&blob);
        let plain = match cached {
            Some(plain) => plain,
            None => {
                let mut wanted = vec![blob];
                wanted.extend(self.unlisted_siblings(ino, blob));
                match self.fetch(&wanted).remove(&blob) {
                    Some(Ok(plain)) => plain,
                    _ => return Err(Errno::EIO),
                }
            }
        };
        parse_tree(id, &plain).map_err(|_| Errno::EIO)
    }

    /// The trees of the directories beside `ino` that are neither listed
    /// nor cached, up to [`TREES_AHEAD_BYTES`].
    fn unlisted_siblings(&self, ino: u64, own: BlobId) -> Vec<BlobId> {
        let entries = self.entries.read().expect("entries");
        let parent = match entries.get(ino as usize - 1) {
            Some(Entry::Node { parent, .. }) => *parent,
            _ => return Vec::new(),
        };
        let siblings = match entries.get(parent as usize - 1) {
            Some(Entry::Dir { children, .. })
            | Some(Entry::Node {
                children: Some(children),
                ..
            }) => children,
            _ => return Vec::new(),
        };
        let cache = self.cache.lock().expect("blob cache");
        let mut taken = HashSet::from([own]);
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for (_, sibling) in siblings {
            let Some(Entry::Node {
                node,
                children: None,
                ..
            }) = entries.get(*sibling as usize - 1)
            else {
                continue;
            };
            let Some(tree) = node.subtree.as_deref().and_then(|t| parse_id(t).ok()) else {
                continue;
            };
            if cache.contains(&tree) || !taken.insert(tree) {
                continue;
            }
            bytes += u64::from(self.repo.blob_len(&tree).unwrap_or(0));
            if bytes > TREES_AHEAD_BYTES {
                break;
            }
            out.push(tree);
        }
        out
    }

    fn read_range(&self, ino: u64, offset: u64, size: usize) -> Result<Vec<u8>, Errno> {
        self.repo.keep_lock();
        let extents = self.extents(ino)?;
        let total = extents.last().map_or(0, |(_, e)| *e);
        let end = (offset + size as u64).min(total);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let first = extents.partition_point(|(_, e)| *e <= offset);
        let mut start = if first == 0 { 0 } else { extents[first - 1].1 };
        for (i, (_, blob_end)) in extents.iter().enumerate().skip(first) {
            if start >= end {
                break;
            }
            let data = self.file_blob(&extents, i)?;
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

/// The root trees of `snapshots`, by id, read together pack by pack; the
/// first that cannot be read fails the mount, as it did read alone.
fn read_roots<B: Backend>(
    repo: &Repository<B>,
    salts: &Salts,
    snapshots: &[(String, Snapshot)],
) -> crate::Result<HashMap<String, Tree>> {
    let read = Mutex::new(Vec::new());
    let threads = repo.backend().read_profile().requests_in_flight;
    let ids = snapshots
        .iter()
        .map(|(_, s)| parse_id(&s.tree))
        .collect::<crate::Result<Vec<_>>>()?;
    repo.read_blobs_by_pack(ids, salts, threads, &|id, got| {
        read.lock().expect("roots").push((id, got));
        ControlFlow::Continue(())
    });
    let mut roots = HashMap::new();
    for (id, got) in read.into_inner().expect("roots") {
        let id = crate::backend::hex(&id);
        let plain = got.map_err(|why| BackupError::damaged(format!("tree {id}"), why))?;
        let tree = parse_tree(&id, &plain)?;
        roots.insert(id, tree);
    }
    Ok(roots)
}

/// `O_ACCMODE` bits other than `O_RDONLY` (0): a write open.
fn libc_accmode() -> i32 {
    rustix::fs::OFlags::ACCMODE.bits() as i32
}

#[cfg(test)]
mod tests {
    use super::{BlobCache, time_name};
    use std::sync::Arc;

    #[test]
    fn the_cache_evicts_the_least_recently_used_past_its_limit() {
        let mut cache = BlobCache::new(300);
        let blob = |n: u8| Arc::new(vec![n; 100]);
        for n in 1..=3 {
            cache.insert([n; 32], blob(n));
        }
        // 1 is used again, so 2 is now the least recently used.
        assert_eq!(cache.get(&[1; 32]).as_deref(), Some(&vec![1; 100]));
        cache.insert([4; 32], blob(4));
        assert!(!cache.contains(&[2; 32]));
        assert!([1, 3, 4].iter().all(|n| cache.contains(&[*n; 32])));
        assert_eq!(cache.bytes, 300);
        // A blob larger than the limit is kept alone (a read needs it).
        cache.insert([5; 32], Arc::new(vec![5; 1000]));
        assert_eq!((cache.blobs.len(), cache.order.len()), (1, 1));
        assert_eq!(cache.bytes, 1000);
        // Inserting what is there only marks it used.
        cache.insert([5; 32], Arc::new(vec![5; 1000]));
        assert_eq!(cache.bytes, 1000);
    }

    #[test]
    fn time_names_are_utc_rfc3339() {
        assert_eq!(time_name(0), "1970-01-01T00:00:00Z");
        assert_eq!(time_name(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(time_name(1_796_541_101_999), "2026-12-06T07:11:41Z");
    }
}
