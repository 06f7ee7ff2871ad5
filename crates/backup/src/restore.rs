//! `restore`: write a snapshot's entries under a target directory.
//!
//! The walking thread reads trees and makes directories, symlinks and
//! special files; regular files go to worker threads that read, open and
//! check their blobs and write them under a temporary name, renamed into
//! place only once every blob opened, so a damaged file never appears with
//! wrong bytes. Second names of hard-linked files are linked after every
//! worker has finished, then directory modes, owners and times are set,
//! deepest first (their entries changed them). One `syncfs` at the end
//! makes the restore durable before it reports success, instead of an
//! `fsync` per file.

use std::collections::HashMap;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};

use crate::backend::{Backend, hex};
use crate::error::{BackupError, Result};
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
    /// File writer threads; 0 = one per CPU, at most 4.
    pub threads: usize,
    /// Updated as files are written.
    pub progress: Option<Arc<Progress>>,
}

/// One regular file for a worker: where, and its node.
type Job = (PathBuf, Node);

/// What the walking thread collects for after the workers.
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
        let mut salts = HashMap::new();
        let root = self.load_tree(&snap.tree, &mut salts)?;
        fs::create_dir_all(target).map_err(BackupError::file(target))?;
        let threads = match options.threads {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(4),
            n => n,
        };
        let mut report = RestoreReport::default();
        let mut later = Later::default();
        std::thread::scope(|s| -> Result<()> {
            let (tx, rx) = sync_channel::<Job>(16 * threads);
            let rx = Arc::new(Mutex::new(rx));
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let rx = Arc::clone(&rx);
                    s.spawn(move || self.file_worker(&rx, &options.progress))
                })
                .collect();
            drop(rx);
            let mut walker = Walker {
                repo: self,
                options,
                salts,
                tx,
                report: &mut report,
                later: &mut later,
            };
            for node in &root.nodes {
                let stored = Path::new(std::ffi::OsStr::from_bytes(&node.name));
                let rel = stored.strip_prefix("/").unwrap_or(stored);
                walker.entry(node, stored, &target.join(rel), false);
            }
            drop(walker);
            for w in workers {
                match w.join() {
                    Ok(r) => {
                        report.files += r.files;
                        report.bytes += r.bytes;
                        report.failed.extend(r.failed);
                    }
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            Ok(())
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

    /// Writes files until the queue closes; returns what it did.
    fn file_worker(
        &self,
        rx: &Mutex<Receiver<Job>>,
        progress: &Option<Arc<Progress>>,
    ) -> RestoreReport {
        let mut report = RestoreReport::default();
        let mut salts = HashMap::new();
        loop {
            let next = rx.lock().expect("restore queue").recv();
            let Ok((dest, node)) = next else { break };
            self.keep_lock();
            match self.restore_file(&dest, &node, &mut salts, progress) {
                Ok(n) => {
                    report.files += 1;
                    report.bytes += n;
                    Progress::add(progress, 1, 0);
                }
                Err(e) => report.failed.push(format!("{}: {e}", dest.display())),
            }
        }
        report
    }

    /// One regular file: blobs to a temporary name, renamed once all opened.
    fn restore_file(
        &self,
        dest: &Path,
        node: &Node,
        salts: &mut HashMap<[u8; 32], [u8; 32]>,
        progress: &Option<Arc<Progress>>,
    ) -> Result<u64> {
        let tmp = dest.with_file_name(format!(
            ".atrest-restore-{}",
            hex(&atrest_core::random_array::<6>())
        ));
        let write = |salts: &mut HashMap<[u8; 32], [u8; 32]>| -> Result<u64> {
            let mut f = fs::File::create(&tmp).map_err(BackupError::file(&tmp))?;
            let mut n = 0u64;
            for id in &node.content {
                let data = self.read_blob(&parse_id(id)?, salts)?;
                // Zero chunks become holes: sparse files stay sparse.
                if data.len() >= 4096 && data.iter().all(|b| *b == 0) {
                    f.seek(SeekFrom::Current(data.len() as i64))
                        .map_err(BackupError::file(&tmp))?;
                } else {
                    f.write_all(&data).map_err(BackupError::file(&tmp))?;
                }
                n += data.len() as u64;
                Progress::add(progress, 0, data.len() as u64);
            }
            f.set_len(n).map_err(BackupError::file(&tmp))?;
            Ok(n)
        };
        let n = match write(salts) {
            Ok(n) => n,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        fs::rename(&tmp, dest).map_err(BackupError::file(dest))?;
        set_owner_mode(dest, node)?;
        set_times(dest, node);
        Ok(n)
    }
}

/// The walking thread of one restore.
struct Walker<'a, B: Backend> {
    repo: &'a Repository<B>,
    options: &'a RestoreOptions,
    salts: HashMap<[u8; 32], [u8; 32]>,
    tx: std::sync::mpsc::SyncSender<Job>,
    report: &'a mut RestoreReport,
    later: &'a mut Later,
}

impl<B: Backend> Walker<'_, B> {
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
                let tree = self.repo.load_tree(sub, &mut self.salts)?;
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
                self.tx
                    .send((dest.to_path_buf(), node.clone()))
                    .map_err(|_| BackupError::WorkerStopped)
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
