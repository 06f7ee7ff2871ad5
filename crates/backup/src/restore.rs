//! `restore`: write a snapshot's entries under a target directory.
//!
//! The walking thread reads trees (read ahead, on S3, in a few requests per
//! level: fetch.rs) and makes directories, symlinks and special files;
//! regular files are planned in batches and restored pack by pack, as
//! restic's restorer does: the blobs a batch needs are grouped by pack and
//! read in a few coalesced ranged reads, several at once
//! ([`Repository::read_blobs_by_pack`]), and each blob, opened and checked
//! against its id, is written at every offset of every file that uses it.
//! A file is written under a temporary name and renamed into place only
//! once every one of its blobs was written, so a damaged file never
//! appears with wrong bytes. Second names of hard-linked files are linked
//! after every file was written, then directory modes, owners and times
//! are set, deepest first (their entries changed them). One `syncfs` at
//! the end makes the restore durable before it reports success, instead
//! of an `fsync` per file.

use std::collections::HashMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use crate::backend::{Backend, hex};
use crate::error::{BackupError, Result};
use crate::fetch::{Delivered, Salts, TreesAhead};
use crate::keys::BlobId;
use crate::repo::{Repository, RestoreReport, parse_id};
use crate::run::{Patterns, Progress};
use crate::tree::{Node, NodeKind};

/// Which entries a restore writes, and with how many threads.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Restore only entries matching one of these (with everything below a
    /// matching directory, and the directories leading to them). Matched
    /// against the path as stored in the snapshot (see [`Patterns`]).
    pub includes: Patterns,
    /// Leave out entries matching one of these, and everything below them.
    pub excludes: Patterns,
    /// Reader threads (each reads a range of a pack, opens its blobs and
    /// writes them); 0 = one per CPU, at most 4, or the store's
    /// [`ReadProfile::requests_in_flight`](crate::ReadProfile) if more.
    pub threads: usize,
    /// Updated as files are written.
    pub progress: Option<Arc<Progress>>,
}

/// One regular file to restore: where, and its node.
type Job = (PathBuf, Node);

/// A batch is planned and restored once its files use this many blobs (a
/// file counts at least one): bounds what a restore holds of a snapshot's
/// plan, whatever the snapshot's size. The walk goes on making the next
/// batch while one is restored.
pub(crate) const BATCH_USES: usize = 32 << 10;

/// What the walking thread collects for after the files.
#[derive(Default)]
struct Later {
    /// Directories: where, node, whether selected (else created only if
    /// something below was restored).
    dirs: Vec<(PathBuf, Node)>,
    /// Hard-link groups: the first name's destination.
    first_names: HashMap<u64, PathBuf>,
    /// Further names: (destination, first name).
    links: Vec<(PathBuf, PathBuf)>,
}

impl<B: Backend> Repository<B> {
    /// Restores a snapshot under `target` (each backed-up path below it,
    /// without its leading `/`). Files whose blobs fail are left out and
    /// reported; nothing unauthenticated is ever written.
    pub fn restore(&self, snapshot: &str, target: &Path) -> Result<RestoreReport> {
        self.restore_with(snapshot, target, &RestoreOptions::default())
    }

    /// [`Repository::restore`] of the entries `options` select.
    pub fn restore_with(
        &self,
        snapshot: &str,
        target: &Path,
        options: &RestoreOptions,
    ) -> Result<RestoreReport> {
        let (_, snap) = self.snapshot(snapshot)?;
        let ahead = self.read_trees_ahead(&[&snap.tree]);
        let mut salts = HashMap::new();
        let root = self.load_tree_ahead(&ahead, &snap.tree, &mut salts)?;
        fs::create_dir_all(target).map_err(BackupError::file(target))?;
        let threads = match options.threads {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(4)
                .max(self.backend().read_profile().requests_in_flight),
            n => n,
        };
        let mut report = RestoreReport::default();
        let mut later = Later::default();
        let pack_salts = Salts::default();
        std::thread::scope(|s| -> Result<()> {
            let (tx, rx) = sync_channel::<Vec<Job>>(1);
            let (pack_salts, progress) = (&pack_salts, &options.progress);
            let writer = s.spawn(move || {
                let mut report = RestoreReport::default();
                for batch in rx {
                    let r = self.restore_files(batch, threads, pack_salts, progress);
                    report.files += r.files;
                    report.bytes += r.bytes;
                    report.failed.extend(r.failed);
                }
                report
            });
            let mut walker = Walker {
                repo: self,
                options,
                ahead: &ahead,
                salts,
                tx,
                batch: Vec::new(),
                batch_uses: 0,
                report: &mut report,
                later: &mut later,
            };
            for node in &root.nodes {
                let stored = Path::new(std::ffi::OsStr::from_bytes(&node.name));
                let rel = stored.strip_prefix("/").unwrap_or(stored);
                walker.entry(node, stored, &target.join(rel), false);
            }
            let last = walker.flush();
            drop(walker);
            match writer.join() {
                Ok(r) => {
                    report.files += r.files;
                    report.bytes += r.bytes;
                    report.failed.extend(r.failed);
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
            last
        })?;
        for (dest, first) in &later.links {
            match fs::hard_link(first, dest) {
                Ok(()) => report.files += 1,
                Err(e) => report.failed.push(format!("{}: {e}", dest.display())),
            }
        }
        // Directories last, deepest first: restoring their entries changed
        // their times, and a read-only mode would have refused the entries.
        for (dest, node) in later.dirs.iter().rev() {
            if !dest.is_dir() {
                continue;
            }
            if let Err(e) = set_owner_mode(dest, node) {
                report.failed.push(e.to_string());
            }
            set_times(dest, node);
        }
        let dir = fs::File::open(target).map_err(BackupError::file(target))?;
        rustix::fs::syncfs(&dir).map_err(|e| BackupError::file(target)(e.into()))?;
        Ok(report)
    }

    /// Restores one batch of files pack by pack; returns what it did.
    fn restore_files(
        &self,
        batch: Vec<Job>,
        threads: usize,
        salts: &Salts,
        progress: &Option<Arc<Progress>>,
    ) -> RestoreReport {
        let mut planned = Batch {
            files: Vec::with_capacity(batch.len()),
            report: Mutex::new(RestoreReport::default()),
            progress,
        };
        // Every offset of every file each blob is written at.
        let mut uses: HashMap<BlobId, Vec<(usize, u64)>> = HashMap::new();
        for (dest, node) in batch {
            let blobs = match self.plan_file(&node) {
                Ok(b) => b,
                Err(e) => {
                    let failed = format!("{}: {e}", dest.display());
                    planned
                        .report
                        .get_mut()
                        .expect("report")
                        .failed
                        .push(failed);
                    continue;
                }
            };
            let i = planned.files.len();
            let mut size = 0;
            for (id, offset, len) in &blobs {
                uses.entry(*id).or_default().push((i, *offset));
                size = offset + len;
            }
            planned.files.push(Pending {
                tmp: dest.with_file_name(format!(
                    ".atrest-restore-{}",
                    hex(&atrest_core::random_array::<6>())
                )),
                dest,
                node,
                size,
                left: AtomicUsize::new(blobs.len()),
                error: Mutex::new(None),
            });
        }
        // Empty files have nothing to wait for.
        for file in planned.files.iter().filter(|f| f.node.content.is_empty()) {
            planned.finish(file, None);
        }
        self.read_blobs_by_pack(uses.keys().copied(), salts, threads, &|id, got| {
            for &(i, offset) in uses.get(&id).into_iter().flatten() {
                planned.write(i, offset, &got);
            }
            std::ops::ControlFlow::Continue(())
        });
        planned.report.into_inner().expect("report")
    }

    /// A file's blobs: id, offset in the file and length, from the index.
    fn plan_file(&self, node: &Node) -> Result<Vec<(BlobId, u64, u64)>> {
        let mut offset = 0;
        node.content
            .iter()
            .map(|id| {
                let id = parse_id(id)?;
                let len = self
                    .blob_len(&id)
                    .ok_or_else(|| BackupError::MissingBlob(hex(&id)))?;
                let at = offset;
                offset += u64::from(len);
                Ok((id, at, u64::from(len)))
            })
            .collect()
    }
}

/// One file of a batch being restored.
struct Pending {
    dest: PathBuf,
    /// Where it is written until every blob is in.
    tmp: PathBuf,
    node: Node,
    size: u64,
    /// Blob uses not written yet (or failed): the last one finishes it.
    left: AtomicUsize,
    /// The first reason it cannot be restored.
    error: Mutex<Option<String>>,
}

/// The files of a batch and what became of them.
struct Batch<'a> {
    files: Vec<Pending>,
    report: Mutex<RestoreReport>,
    progress: &'a Option<Arc<Progress>>,
}

impl Batch<'_> {
    /// One use of a blob by file `i` at `offset` (or why the blob is not
    /// there); the file's last use finishes it.
    fn write(&self, i: usize, offset: u64, got: &Delivered) {
        let file = &self.files[i];
        let mut handle = None;
        let failed = file.error.lock().expect("file error").is_some();
        let error = match got {
            Err(e) => Some(e.clone()),
            Ok(_) if failed => None,
            Ok(data) => match write_at(&file.tmp, offset, data) {
                Ok(f) => {
                    handle = Some(f);
                    Progress::add(self.progress, 0, data.len() as u64);
                    None
                }
                Err(e) => Some(e.to_string()),
            },
        };
        if let Some(e) = error {
            // Its bytes go now, not when its last blob is in: on a full
            // disk, the space is free for the other files.
            file.error.lock().expect("file error").get_or_insert(e);
            let _ = fs::remove_file(&file.tmp);
        }
        if file.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish(file, handle);
        }
    }

    /// Every use of `file`'s blobs is in: renames it into place, or removes
    /// it and reports why not.
    fn finish(&self, file: &Pending, handle: Option<fs::File>) {
        let error = file.error.lock().expect("file error").take();
        let done = match error {
            Some(e) => Err(e),
            None => complete(file, handle).map_err(|e| e.to_string()),
        };
        if done.is_err() {
            let _ = fs::remove_file(&file.tmp);
        }
        let mut report = self.report.lock().expect("report");
        match done {
            Ok(()) => {
                report.files += 1;
                report.bytes += file.size;
                Progress::add(self.progress, 1, 0);
            }
            Err(e) => report.failed.push(format!("{}: {e}", file.dest.display())),
        }
    }
}

/// Writes one blob into a file being restored. Zero chunks become holes:
/// sparse files stay sparse (the file's length is set when it is done).
fn write_at(tmp: &Path, offset: u64, data: &[u8]) -> Result<fs::File> {
    let f = open_temporary(tmp)?;
    if !(data.len() >= 4096 && data.iter().all(|b| *b == 0)) {
        f.write_all_at(data, offset)
            .map_err(BackupError::file(tmp))?;
    }
    Ok(f)
}

/// A file being restored, made by whichever of its blobs comes first
/// (several readers may write it at once, each at its own offsets).
fn open_temporary(tmp: &Path) -> Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(tmp)
        .map_err(BackupError::file(tmp))
}

/// Sets a written file's length, renames it into place, and sets its
/// owner, mode, xattrs and times.
fn complete(file: &Pending, handle: Option<fs::File>) -> Result<()> {
    let f = match handle {
        Some(f) => f,
        None => open_temporary(&file.tmp)?,
    };
    f.set_len(file.size).map_err(BackupError::file(&file.tmp))?;
    drop(f);
    fs::rename(&file.tmp, &file.dest).map_err(BackupError::file(&file.dest))?;
    set_owner_mode(&file.dest, &file.node)?;
    set_times(&file.dest, &file.node);
    Ok(())
}

/// The walking thread of one restore.
struct Walker<'a, B: Backend> {
    repo: &'a Repository<B>,
    options: &'a RestoreOptions,
    ahead: &'a TreesAhead,
    salts: HashMap<[u8; 32], [u8; 32]>,
    /// Batches of files, to the thread that restores them.
    tx: SyncSender<Vec<Job>>,
    batch: Vec<Job>,
    /// Blob uses of `batch` (see [`BATCH_USES`]).
    batch_uses: usize,
    report: &'a mut RestoreReport,
    later: &'a mut Later,
}

impl<B: Backend> Walker<'_, B> {
    /// Sends the files collected so far to be restored.
    fn flush(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.batch_uses = 0;
        self.tx
            .send(std::mem::take(&mut self.batch))
            .map_err(|_| BackupError::WorkerStopped)
    }

    /// Restores `node` (stored at `stored` in the snapshot) to `dest`;
    /// `selected`: an ancestor matched an include.
    fn entry(&mut self, node: &Node, stored: &Path, dest: &Path, selected: bool) {
        if self.options.excludes.matches(stored) {
            return;
        }
        let selected =
            selected || self.options.includes.is_empty() || self.options.includes.matches(stored);
        if let Err(e) = self.entry_inner(node, stored, dest, selected) {
            self.report.failed.push(format!("{}: {e}", dest.display()));
        }
    }

    fn entry_inner(
        &mut self,
        node: &Node,
        stored: &Path,
        dest: &Path,
        selected: bool,
    ) -> Result<()> {
        if node.kind == NodeKind::Dir {
            self.repo.keep_lock();
            if selected {
                make_dir(dest)?;
            }
            self.later.dirs.push((dest.to_path_buf(), node.clone()));
            if let Some(sub) = &node.subtree {
                let tree = self
                    .repo
                    .load_tree_ahead(self.ahead, sub, &mut self.salts)?;
                for child in &tree.nodes {
                    let name = std::ffi::OsStr::from_bytes(&child.name);
                    self.entry(child, &stored.join(name), &dest.join(name), selected);
                }
            }
            return Ok(());
        }
        if !selected {
            return Ok(());
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(BackupError::file(parent))?;
        }
        match node.kind {
            NodeKind::Dir => unreachable!("handled above"),
            NodeKind::File => {
                if let Some(group) = node.hardlink {
                    if let Some(first) = self.later.first_names.get(&group) {
                        self.later.links.push((dest.to_path_buf(), first.clone()));
                        return Ok(());
                    }
                    self.later.first_names.insert(group, dest.to_path_buf());
                }
                self.batch_uses += node.content.len().max(1);
                self.batch.push((dest.to_path_buf(), node.clone()));
                if self.batch_uses >= BATCH_USES {
                    self.flush()?;
                }
                Ok(())
            }
            NodeKind::Symlink => {
                let target = std::ffi::OsStr::from_bytes(&node.target);
                std::os::unix::fs::symlink(target, dest).map_err(BackupError::file(dest))?;
                let _ = std::os::unix::fs::lchown(dest, Some(node.uid), Some(node.gid));
                set_times(dest, node);
                Ok(())
            }
            NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev | NodeKind::Socket => {
                let kind = match node.kind {
                    NodeKind::Fifo => rustix::fs::FileType::Fifo,
                    NodeKind::Chardev => rustix::fs::FileType::CharacterDevice,
                    NodeKind::Blockdev => rustix::fs::FileType::BlockDevice,
                    _ => rustix::fs::FileType::Socket,
                };
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    dest,
                    kind,
                    rustix::fs::Mode::from_raw_mode(node.mode & 0o7777),
                    node.rdev,
                )
                .map_err(|e| BackupError::file(dest)(e.into()))?;
                set_owner_mode(dest, node)?;
                set_times(dest, node);
                Ok(())
            }
        }
    }
}

fn make_dir(dest: &Path) -> Result<()> {
    match fs::create_dir_all(dest) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(BackupError::file(dest)(e)),
    }
}

fn set_owner_mode(path: &Path, node: &Node) -> Result<()> {
    set_xattrs(path, node)?;
    // Owners only as root; elsewhere the restoring user owns everything.
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))
            .map_err(BackupError::file(path))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(node.mode))
        .map_err(BackupError::file(path))
}

fn set_times(path: &Path, node: &Node) {
    let t = rustix::fs::Timespec {
        tv_sec: node.mtime_sec,
        tv_nsec: i64::from(node.mtime_nsec),
    };
    let times = rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    };
    let _ = rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    );
}

fn set_xattrs(path: &Path, node: &Node) -> Result<()> {
    for x in &node.xattrs {
        rustix::fs::lsetxattr(
            path,
            std::ffi::OsStr::from_bytes(&x.name),
            &x.value,
            rustix::fs::XattrFlags::empty(),
        )
        .map_err(|e| BackupError::File {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::Error::from(e).kind(),
                format!(
                    "extended attribute {} not restored: {e}",
                    String::from_utf8_lossy(&x.name)
                ),
            ),
        })?;
    }
    Ok(())
}
