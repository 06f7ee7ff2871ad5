//! Read-ahead for a backup's walk: a few threads go through the source
//! tree just ahead of the walking thread, listing directories and
//! `lstat`ing their entries (and, when asked, telling the kernel to read
//! the files' contents with `POSIX_FADV_WILLNEED`), so that the walk finds
//! inodes, directory blocks and file pages in the kernel's caches instead
//! of waiting for the disk one request at a time.
//!
//! It only warms caches: the walk itself is unchanged, serial and in name
//! order, so the snapshot is the same with or without it (a test checks
//! this). It never runs more than [`AHEAD_ENTRIES`] entries and
//! [`AHEAD_BYTES`] of file contents ahead of the walk, and its queue holds
//! only paths of directories not yet listed, so its memory does not grow
//! with the tree. Errors are ignored: the walk meets and reports them.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::run::Patterns;

/// How many entries the read-ahead may have looked at beyond those the
/// walk has done.
pub(crate) const AHEAD_ENTRIES: u64 = 4096;

/// How many bytes of file contents it may have asked the kernel for beyond
/// those the walk has read.
pub(crate) const AHEAD_BYTES: u64 = 64 << 20;

/// Threads of one read-ahead.
pub(crate) const THREADS: usize = 3;

/// What the walk and the read-ahead threads share.
#[derive(Default)]
struct Shared {
    /// Directories to list (path, device of its root for
    /// `--one-file-system`), the next to list last; how many are being
    /// listed.
    queue: Mutex<(Vec<(PathBuf, u64)>, usize)>,
    /// Signalled when the queue changes or the walk moves on.
    moved: Condvar,
    stop: AtomicBool,
    /// Entries (bytes) looked at (asked for) by the read-ahead.
    ahead_entries: AtomicU64,
    ahead_bytes: AtomicU64,
    /// Entries (bytes) done by the walk.
    walked_entries: AtomicU64,
    walked_bytes: AtomicU64,
}

impl Shared {
    fn too_far(&self) -> bool {
        let ahead = self.ahead_entries.load(Ordering::Relaxed);
        let walked = self.walked_entries.load(Ordering::Relaxed);
        let bytes = self.ahead_bytes.load(Ordering::Relaxed);
        let read = self.walked_bytes.load(Ordering::Relaxed);
        ahead > walked + AHEAD_ENTRIES || bytes > read + AHEAD_BYTES
    }
}

/// The read-ahead of one walk; stopped (and its threads joined) on drop.
pub(crate) struct ReadAhead {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// What the read-ahead threads need of the run's options.
#[derive(Clone)]
pub(crate) struct Scope {
    pub(crate) excludes: Patterns,
    pub(crate) one_file_system: bool,
    /// Ask the kernel for regular files' contents too (a run without a
    /// parent snapshot reads every file; one with a parent reads few).
    pub(crate) contents: bool,
}

impl ReadAhead {
    /// Starts `threads` threads reading ahead under `roots` (path, device).
    pub(crate) fn start(roots: Vec<(PathBuf, u64)>, scope: Scope, threads: usize) -> Self {
        let shared = Arc::new(Shared::default());
        shared.queue.lock().expect("read-ahead queue").0 = roots.into_iter().rev().collect();
        let threads = (0..threads)
            .map(|_| {
                let shared = Arc::clone(&shared);
                let scope = scope.clone();
                std::thread::spawn(move || worker(&shared, &scope))
            })
            .collect();
        Self { shared, threads }
    }

    /// The walk has done `entries` more entries and read `bytes` more.
    pub(crate) fn walked(&self, entries: u64, bytes: u64) {
        let s = &self.shared;
        let before = s.walked_entries.fetch_add(entries, Ordering::Relaxed);
        s.walked_bytes.fetch_add(bytes, Ordering::Relaxed);
        if bytes > 0 || (before + entries) / 256 != before / 256 {
            s.moved.notify_all();
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Taken so that no worker is between its check and its wait.
        drop(self.shared.queue.lock());
        self.shared.moved.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Waits for the walk to catch up, takes the next directory and lists it,
/// until the queue is empty and no other thread is listing one.
fn worker(shared: &Shared, scope: &Scope) {
    loop {
        let (dir, dev) = {
            let mut q = shared.queue.lock().expect("read-ahead queue");
            loop {
                if shared.stop.load(Ordering::Relaxed) {
                    return;
                }
                // A timeout as well: `walked` signals without the lock.
                let wait = Duration::from_millis(20);
                if shared.too_far() {
                    q = shared.moved.wait_timeout(q, wait).expect("queue").0;
                    continue;
                }
                if let Some(next) = q.0.pop() {
                    q.1 += 1;
                    break next;
                }
                if q.1 == 0 {
                    shared.moved.notify_all();
                    return;
                }
                q = shared.moved.wait_timeout(q, wait).expect("queue").0;
            }
        };
        let subdirs = list(shared, scope, &dir, dev);
        let mut q = shared.queue.lock().expect("read-ahead queue");
        q.0.extend(subdirs.into_iter().rev().map(|d| (d, dev)));
        q.1 -= 1;
        shared.moved.notify_all();
    }
}

/// Lists `dir` in the walk's order, `lstat`s each entry the walk will
/// visit, asks for file contents if the scope says so; returns the
/// subdirectories the walk will descend into.
fn list(shared: &Shared, scope: &Scope, dir: &std::path::Path, dev: u64) -> Vec<PathBuf> {
    let Ok(md) = fs::symlink_metadata(dir) else {
        return Vec::new();
    };
    if scope.one_file_system && md.dev() != dev {
        return Vec::new();
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    names.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
    let mut subdirs = Vec::new();
    for path in names {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        if scope.excludes.matches(&path) {
            continue;
        }
        let Ok(md) = fs::symlink_metadata(&path) else {
            continue;
        };
        shared.ahead_entries.fetch_add(1, Ordering::Relaxed);
        if md.is_dir() {
            subdirs.push(path);
        } else if scope.contents
            && md.is_file()
            && md.len() > 0
            && let Ok(f) = fs::File::open(&path)
        {
            let len = md.len().min(AHEAD_BYTES);
            let _ = rustix::fs::fadvise(
                &f,
                0,
                std::num::NonZeroU64::new(len),
                rustix::fs::Advice::WillNeed,
            );
            shared.ahead_bytes.fetch_add(len, Ordering::Relaxed);
        }
    }
    subdirs
}
