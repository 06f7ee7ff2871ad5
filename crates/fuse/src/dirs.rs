//! Open handles (`O_PATH`) of backing directories, by FUSE inode number.
//!
//! Every backing file is reached relative to its directory's handle
//! (`openat`, `fstatat`, `renameat2`...), never by a joined path: encrypted
//! names are longer than plaintext ones, so a joined backing path passes
//! `PATH_MAX` long before the plaintext path does. A handle follows its
//! directory through renames, so a rename needs no update here; only a
//! removed directory (rmdir, renamed over) and a forgotten inode leave.
//!
//! The cache is bounded: past `capacity` handles, an arbitrary one is
//! closed; it is opened again from its parent when next needed.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use parking_lot::Mutex;

pub struct DirHandles {
    handles: Mutex<HashMap<u64, Arc<OwnedFd>>>,
    capacity: usize,
}

impl DirHandles {
    pub fn new(capacity: usize) -> Self {
        Self {
            handles: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    pub fn get(&self, ino: u64) -> Option<Arc<OwnedFd>> {
        self.handles.lock().get(&ino).cloned()
    }

    pub fn insert(&self, ino: u64, fd: Arc<OwnedFd>) {
        let mut handles = self.handles.lock();
        if handles.len() >= self.capacity
            && !handles.contains_key(&ino)
            && let Some(victim) = handles.keys().next().copied()
        {
            // Users of the evicted handle hold their own Arc.
            handles.remove(&victim);
        }
        handles.insert(ino, fd);
    }

    pub fn remove(&self, ino: u64) {
        self.handles.lock().remove(&ino);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.handles.lock().len()
    }
}

/// How many directory handles to keep: half the descriptors this process
/// may open (after raising its soft limit to the hard one), the rest being
/// for open files and FUSE itself.
pub fn capacity() -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    let current = getrlimit(Resource::Nofile).current.unwrap_or(1 << 20);
    (current / 2).clamp(64, 1 << 16) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> Arc<OwnedFd> {
        Arc::new(
            rustix::fs::open(
                "/",
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .unwrap(),
        )
    }

    #[test]
    fn bounded_and_evicted_handles_stay_usable() {
        let cache = DirHandles::new(3);
        let held = fd();
        cache.insert(1, held.clone());
        for ino in 2..10 {
            cache.insert(ino, fd());
            assert!(cache.len() <= 3);
        }
        assert!(cache.get(9).is_some(), "the newest is kept");
        // Whoever held an evicted handle can still use it.
        assert!(rustix::fs::fstat(&*held).is_ok());
        cache.remove(9);
        assert!(cache.get(9).is_none());
    }
}
