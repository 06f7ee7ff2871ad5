//! `backup`: walk the source, chunk, deduplicate against the index and pack
//! what is new (docs/format.md §18).
//!
//! Two things keep a run fast:
//! - **The parent snapshot.** A file whose size, mtime, ctime and inode
//!   number equal those of the same path in the parent snapshot, and whose
//!   blobs the index still holds, keeps the parent's blob list without being
//!   read (restic's rule). `ctime` changes with every write and every
//!   metadata change and cannot be set from user space, so a file rewritten
//!   with its old mtime put back is still read.
//! - **Packing beside the walk.** The walking thread reads, chunks and
//!   hashes; blobs it has not seen go through a bounded queue to packer
//!   threads that compress, seal and upload their own packs. The walk never
//!   waits for zstd or the storage unless the queue is full.
//!
//! The index only learns of a pack once its packer has uploaded it; the
//! index file naming the run's blobs is written after every packer has
//! finished, and the snapshot after that (the write order of repo.rs).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use crate::backend::{Backend, hex};
use crate::chunker::Chunker;
use crate::error::{BackupError, Result};
use crate::keys::{BlobId, BlobKind, RepoKeys};
use crate::pack::{Location, PACK_TARGET, PackWriter};
use crate::readahead::{self, ReadAhead, Scope};
use crate::tree::{Node, NodeKind, Summary, Tree, Xattr};

/// Glob patterns over an entry's name (a pattern without `/`) or its whole
/// path (one with `/`; `*` does not cross `/`, `**` does).
#[derive(Debug, Clone, Default)]
pub struct Patterns(pub Vec<glob::Pattern>);

impl Patterns {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, path: &Path) -> bool {
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..glob::MatchOptions::new()
        };
        let name = path.file_name().map(Path::new).unwrap_or(path);
        self.0.iter().any(|p| {
            if p.as_str().contains('/') {
                p.matches_path_with(path, options)
            } else {
                p.matches_path_with(name, options)
            }
        })
    }
}

/// Counters a caller can watch from another thread while a `backup` or
/// `restore` runs (for a progress bar): entries and bytes done so far.
#[derive(Debug, Default)]
pub struct Progress {
    pub files: std::sync::atomic::AtomicU64,
    pub bytes: std::sync::atomic::AtomicU64,
}

impl Progress {
    pub(crate) fn add(progress: &Option<Arc<Progress>>, files: u64, bytes: u64) {
        if let Some(p) = progress {
            p.files.fetch_add(files, Ordering::Relaxed);
            p.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }
}

/// Which snapshot a run compares files with before reading them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Parent {
    /// The latest snapshot of the same host and the same paths.
    #[default]
    Latest,
    /// This snapshot (id, unique prefix or `latest`).
    Snapshot(String),
    /// None: read every file (`--force`).
    None,
}

/// Choices for one `backup`.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Entries to leave out (see [`Patterns`]).
    pub excludes: Vec<glob::Pattern>,
    /// Do not descend into directories on another file system than the
    /// path given (the mount point itself is kept, empty).
    pub one_file_system: bool,
    /// Read and chunk everything, say what would be stored, store nothing.
    pub dry_run: bool,
    pub parent: Parent,
    /// Packer threads; 0 = one per CPU, at most 4.
    pub threads: usize,
    /// Updated as files are read (or found unchanged).
    pub progress: Option<Arc<Progress>>,
    /// Walk without read-ahead threads (readahead.rs): the snapshot is the
    /// same, a walk from cold caches slower.
    pub no_read_ahead: bool,
}

impl BackupOptions {
    pub(crate) fn packers(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(4),
            n => n,
        }
    }
}

/// One blob on its way to a packer.
pub(crate) type Blob = (BlobKind, BlobId, Vec<u8>);

/// What the packers of a run wrote: every new index entry, and the number
/// of packs.
pub(crate) type Packed = (Vec<(BlobId, Location)>, u64);

/// Blobs waiting for a packer, per packer thread: bounds the memory a run
/// holds (at most ~chunk max × this × threads).
const QUEUE_PER_PACKER: usize = 2;

/// The packer threads of one run, started in `scope`; `f` gets the sending
/// end. Returns `f`'s result with every new index entry and the number of
/// packs written, or the first packer error.
pub(crate) fn with_packers<B: Backend, T>(
    keys: &RepoKeys,
    backend: &B,
    threads: usize,
    f: impl FnOnce(Sink<'_>) -> Result<T>,
) -> Result<(T, Packed)> {
    let failed = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (tx, rx) = sync_channel::<Blob>(QUEUE_PER_PACKER * threads.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                let rx = Arc::clone(&rx);
                let failed = &failed;
                s.spawn(move || {
                    let r = packer(keys, backend, &rx);
                    if r.is_err() {
                        failed.store(true, Ordering::Release);
                    }
                    r
                })
            })
            .collect();
        drop(rx);
        let result = f(Sink {
            tx: Some(tx),
            failed: &failed,
        });
        let mut entries = Vec::new();
        let mut packs = 0;
        let mut first_error = None;
        for w in workers {
            match w.join() {
                Ok(Ok((e, p))) => {
                    entries.extend(e);
                    packs += p;
                }
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        // A packer's own error explains a walk stopped by `WorkerStopped`.
        if let Some(e) = first_error {
            return Err(e);
        }
        Ok((result?, (entries, packs)))
    })
}

/// Seals blobs into packs of about [`PACK_TARGET`] bytes and uploads each
/// as it fills; the last, partial packs when the queue closes. Trees go
/// into packs of their own (as restic's do): a walk of a snapshot's trees
/// then reads a few tree packs in a few ranged reads (fetch.rs), instead
/// of tree blobs scattered between data blobs in every pack.
fn packer<B: Backend>(keys: &RepoKeys, backend: &B, rx: &Mutex<Receiver<Blob>>) -> Result<Packed> {
    let mut entries = Vec::new();
    let mut packs = 0;
    // The open data pack and the open tree pack.
    let mut open: [Option<(PackWriter<'_>, usize)>; 2] = [None, None];
    let mut close = |writer: PackWriter<'_>| -> Result<()> {
        let pack = writer.finish();
        let name = pack.name;
        backend.put_pieces(&crate::repo::pack_name(&name), pack.pieces)?;
        packs += 1;
        entries.extend(pack.entries.iter().map(|e| (e.id, e.location(name))));
        Ok(())
    };
    loop {
        // The lock is held only while waiting; packing runs unlocked.
        let next = rx.lock().expect("packer queue").recv();
        let Ok((kind, id, data)) = next else { break };
        let slot = &mut open[usize::from(kind == BlobKind::Tree)];
        let (writer, raw) = slot.get_or_insert_with(|| (PackWriter::new(keys), 0));
        writer.add(kind, id, &data)?;
        *raw += data.len();
        if *raw >= PACK_TARGET {
            let (writer, _) = slot.take().expect("open pack");
            close(writer)?;
        }
    }
    for slot in &mut open {
        if let Some((writer, _)) = slot.take() {
            close(writer)?;
        }
    }
    Ok((entries, packs))
}

/// Where a run sends the blobs it has not seen: packers, or nowhere (a dry
/// run).
pub(crate) struct Sink<'a> {
    tx: Option<SyncSender<Blob>>,
    failed: &'a AtomicBool,
}

impl Sink<'_> {
    pub(crate) fn dry(failed: &AtomicBool) -> Sink<'_> {
        Sink { tx: None, failed }
    }

    pub(crate) fn send(&self, blob: Blob) -> Result<()> {
        let Some(tx) = &self.tx else { return Ok(()) };
        if self.failed.load(Ordering::Acquire) || tx.send(blob).is_err() {
            return Err(BackupError::WorkerStopped);
        }
        Ok(())
    }
}

/// The state of one walk.
pub(crate) struct Walk<'r, 's> {
    pub(crate) keys: &'r RepoKeys,
    pub(crate) chunker: &'r Chunker,
    pub(crate) index: &'r BTreeMap<BlobId, Location>,
    /// Reads a tree of the parent snapshot.
    pub(crate) load_tree: &'r dyn Fn(&str) -> Result<Tree>,
    /// Refreshes the repository lock when due.
    pub(crate) keep_lock: &'r dyn Fn(),
    pub(crate) sink: Sink<'s>,
    /// Blobs sent to the packers by this run (deduplication before they are
    /// in the index).
    pub(crate) seen: HashSet<BlobId>,
    pub(crate) summary: Summary,
    /// Inodes with several names seen so far: (dev, ino) → group, size, content.
    pub(crate) links: HashMap<(u64, u64), (u64, u64, Vec<String>)>,
    pub(crate) options: &'r BackupOptions,
    /// `options.excludes`, built once.
    pub(crate) excludes: &'r Patterns,
    /// The device of the path being backed up (for --one-file-system).
    pub(crate) root_dev: u64,
    /// Warms the caches ahead of the walk (set by [`walk_roots`]).
    pub(crate) read_ahead: Option<ReadAhead>,
}

impl Walk<'_, '_> {
    /// Stores a blob unless the repository already has it.
    pub(crate) fn store(&mut self, kind: BlobKind, data: Vec<u8>) -> Result<BlobId> {
        let id = self.keys.blob_id(&data);
        if self.index.contains_key(&id) || !self.seen.insert(id) {
            return Ok(id);
        }
        self.summary.new_blobs += 1;
        self.summary.new_bytes += data.len() as u64;
        self.sink.send((kind, id, data))?;
        Ok(id)
    }

    pub(crate) fn store_tree(&mut self, tree: &Tree) -> Result<BlobId> {
        self.store(BlobKind::Tree, serde_json::to_vec(tree).expect("json"))
    }

    /// The node of `path` (whose metadata is `md`) and, for a directory,
    /// everything below it. `parent`: the same path in the parent snapshot.
    pub(crate) fn node(
        &mut self,
        path: &Path,
        name: Vec<u8>,
        md: &fs::Metadata,
        parent: Option<&Node>,
    ) -> Result<Node> {
        if let Some(ra) = &self.read_ahead {
            ra.walked(1, 0);
        }
        let ft = md.file_type();
        let kind = if ft.is_file() {
            NodeKind::File
        } else if ft.is_dir() {
            NodeKind::Dir
        } else if ft.is_symlink() {
            NodeKind::Symlink
        } else if ft.is_fifo() {
            NodeKind::Fifo
        } else if ft.is_char_device() {
            NodeKind::Chardev
        } else if ft.is_block_device() {
            NodeKind::Blockdev
        } else {
            NodeKind::Socket
        };
        let mut node = Node {
            name,
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime_sec: md.mtime(),
            mtime_nsec: md.mtime_nsec() as u32,
            ctime_sec: md.ctime(),
            ctime_nsec: md.ctime_nsec() as u32,
            inode: md.ino(),
            size: 0,
            content: Vec::new(),
            subtree: None,
            target: Vec::new(),
            rdev: 0,
            hardlink: None,
            xattrs: read_xattrs(path),
        };
        let parent = parent.filter(|p| p.kind == kind);
        match kind {
            NodeKind::File => {
                self.summary.files += 1;
                let group = if md.nlink() > 1 {
                    let next = self.links.len() as u64 + 1;
                    if let Some((group, size, content)) = self.links.get(&(md.dev(), md.ino())) {
                        node.hardlink = Some(*group);
                        node.size = *size;
                        node.content = content.clone();
                        return Ok(node);
                    }
                    Some(next)
                } else {
                    None
                };
                let (size, content) = match parent.filter(|p| self.unchanged(p, &node, md)) {
                    Some(p) => {
                        self.summary.unchanged_files += 1;
                        self.summary.bytes += p.size;
                        Progress::add(&self.options.progress, 0, p.size);
                        (p.size, p.content.clone())
                    }
                    None => {
                        let (size, content) = self.file(path)?;
                        if self.changed_while_read(path, md, size) {
                            self.summary
                                .changed_while_read
                                .push(path.display().to_string());
                        }
                        (size, content)
                    }
                };
                Progress::add(&self.options.progress, 1, 0);
                if let Some(g) = group {
                    self.links
                        .insert((md.dev(), md.ino()), (g, size, content.clone()));
                }
                node.hardlink = group;
                node.size = size;
                node.content = content;
            }
            NodeKind::Dir => {
                self.summary.dirs += 1;
                (self.keep_lock)();
                let mut entries: Vec<_> = fs::read_dir(path)
                    .map_err(BackupError::file(path))?
                    .collect::<std::io::Result<_>>()
                    .map_err(BackupError::file(path))?;
                entries.sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
                // A parent tree that cannot be read only costs the shortcut.
                let old = parent
                    .and_then(|p| p.subtree.as_deref())
                    .and_then(|t| (self.load_tree)(t).ok())
                    .unwrap_or_default();
                let mut tree = Tree::default();
                let descend = !(self.options.one_file_system && md.dev() != self.root_dev);
                let excludes = self.excludes;
                for entry in entries.into_iter().filter(|_| descend) {
                    let child = entry.path();
                    if excludes.matches(&child) {
                        continue;
                    }
                    let child_name = entry.file_name().as_bytes().to_vec();
                    let before = old
                        .nodes
                        .binary_search_by(|n| n.name.as_slice().cmp(&child_name))
                        .ok()
                        .map(|i| &old.nodes[i]);
                    let result = fs::symlink_metadata(&child)
                        .map_err(BackupError::file(&child))
                        .and_then(|md| self.node(&child, child_name, &md, before));
                    match result {
                        Ok(n) => tree.nodes.push(n),
                        Err(e @ BackupError::File { .. }) => {
                            self.summary.errors.push(e.to_string())
                        }
                        Err(e) => return Err(e),
                    }
                }
                node.subtree = Some(hex(&self.store_tree(&tree)?));
            }
            NodeKind::Symlink => {
                self.summary.others += 1;
                node.target = fs::read_link(path)
                    .map_err(BackupError::file(path))?
                    .as_os_str()
                    .as_bytes()
                    .to_vec();
            }
            _ => {
                self.summary.others += 1;
                node.rdev = md.rdev();
            }
        }
        Ok(node)
    }

    /// Whether a file may keep the parent snapshot's blobs unread: same
    /// size, mtime, ctime and inode number, and every blob still indexed.
    fn unchanged(&self, parent: &Node, node: &Node, md: &fs::Metadata) -> bool {
        parent.inode != 0
            && parent.inode == node.inode
            && parent.size == md.len()
            && (parent.mtime_sec, parent.mtime_nsec) == (node.mtime_sec, node.mtime_nsec)
            && (parent.ctime_sec, parent.ctime_nsec) == (node.ctime_sec, node.ctime_nsec)
            && parent.content.iter().all(|id| {
                crate::repo::parse_id(id)
                    .is_ok_and(|id| self.index.contains_key(&id) || self.seen.contains(&id))
            })
    }

    /// Whether the file at `path` (stat'ed as `before`) was changed while
    /// it was read, or read to `read` bytes against another size.
    fn changed_while_read(&self, path: &Path, before: &fs::Metadata, read: u64) -> bool {
        let Ok(after) = fs::symlink_metadata(path) else {
            return true;
        };
        read != before.len()
            || (
                after.len(),
                after.mtime(),
                after.mtime_nsec(),
                after.ctime(),
                after.ctime_nsec(),
            ) != (
                before.len(),
                before.mtime(),
                before.mtime_nsec(),
                before.ctime(),
                before.ctime_nsec(),
            )
    }

    /// Chunks and stores one file; returns its size and blob ids.
    fn file(&mut self, path: &Path) -> Result<(u64, Vec<String>)> {
        let mut f = fs::File::open(path).map_err(BackupError::file(path))?;
        let max = self.chunker.sizes().max;
        // A window of unread bytes, `buf[start..]`, from which chunks are
        // cut: the chunker sees `max` bytes ahead of every cut (or the end
        // of the file). It is refilled to twice that once less than `max`
        // is left, so the unread tail moves to the front once per `max`
        // bytes rather than once per chunk. It grows with what is read (a
        // small file allocates little) and is never zero-filled ahead of
        // the read. Each chunk is copied out at its own size: a chunk that
        // kept the window's allocation would hold all of it resident while
        // it waits in the packers' queue (about 8 MiB per 1 MiB blob).
        let mut buf: Vec<u8> = Vec::new();
        let mut start = 0;
        let mut eof = false;
        let mut ids = Vec::new();
        let mut size = 0u64;
        loop {
            if !eof && buf.len() - start < max {
                buf.drain(..start);
                start = 0;
                let want = 2 * max - buf.len();
                let n = (&mut f)
                    .take(want as u64)
                    .read_to_end(&mut buf)
                    .map_err(BackupError::file(path))?;
                eof = n < want;
            }
            if start == buf.len() {
                break;
            }
            let cut = self.chunker.cut(&buf[start..]);
            let chunk = buf[start..start + cut].to_vec();
            start += cut;
            size += chunk.len() as u64;
            self.summary.bytes += chunk.len() as u64;
            Progress::add(&self.options.progress, 0, chunk.len() as u64);
            if let Some(ra) = &self.read_ahead {
                ra.walked(0, chunk.len() as u64);
            }
            ids.push(hex(&self.store(BlobKind::Data, chunk)?));
        }
        Ok((size, ids))
    }
}

/// The extended attributes of `path` (not following a symlink); none when
/// the file system has none or refuses to list them. Small buffers first
/// (most files have no attribute at all), the exact size on `ERANGE`.
fn read_xattrs(path: &Path) -> Vec<Xattr> {
    let Some(names) = read_sized(|buf| rustix::fs::llistxattr(path, buf)) else {
        return Vec::new();
    };
    names
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .filter_map(|name| {
            let os = std::ffi::OsStr::from_bytes(name);
            let value = read_sized(|buf| rustix::fs::lgetxattr(path, os, buf))?;
            Some(Xattr {
                name: name.to_vec(),
                value,
            })
        })
        .collect()
}

/// What `call` writes into a buffer: tried with 256 bytes, then with the
/// size the call reports for an empty buffer (a list or value may grow in
/// between: tried a few times). `None` on any other error.
fn read_sized(call: impl Fn(&mut [u8]) -> rustix::io::Result<usize>) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    for _ in 0..4 {
        match call(&mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Some(buf);
            }
            Err(rustix::io::Errno::RANGE) => buf.resize(call(&mut []).ok()?.max(buf.len() * 2), 0),
            Err(_) => return None,
        }
    }
    None
}

/// Backs up `paths` (the roots of the snapshot tree) with `walk`; returns
/// the root tree's id.
pub(crate) fn walk_roots(
    walk: &mut Walk<'_, '_>,
    paths: &[PathBuf],
    parent_root: Option<&Tree>,
) -> Result<BlobId> {
    if !walk.options.no_read_ahead {
        let roots = paths
            .iter()
            .filter_map(|p| Some((p.clone(), fs::symlink_metadata(p).ok()?.dev())))
            .collect();
        let scope = Scope {
            excludes: walk.excludes.clone(),
            one_file_system: walk.options.one_file_system,
            contents: parent_root.is_none(),
        };
        walk.read_ahead = Some(ReadAhead::start(roots, scope, readahead::THREADS));
    }
    let mut root = Tree::default();
    for path in paths {
        let md = fs::symlink_metadata(path).map_err(BackupError::file(path))?;
        walk.root_dev = md.dev();
        let name = path.as_os_str().as_bytes().to_vec();
        let before = parent_root.and_then(|t| t.nodes.iter().find(|n| n.name == name));
        let node = walk.node(path, name, &md, before)?;
        root.nodes.push(node);
    }
    // Stops and joins the read-ahead threads (they have nothing left).
    walk.read_ahead = None;
    walk.store_tree(&root)
}
