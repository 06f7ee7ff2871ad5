//! Group commit of the log across threads (docs/format.md §16.15:
//! concurrent `fsync` calls share one flush).
//!
//! The mount flushes the log without the store's lock, so several
//! `fsync` requests can be flushing at once. Rather than each
//! `fdatasync`ing the segment, one of them (the leader) flushes for
//! everyone that asked before it started, and the others wait: a caller
//! whose records a completed flush covered returns at once, and callers
//! that arrived during a flush share the next one, whose leader flushes
//! through the furthest record any of them asked for. However many calls
//! arrive during one flush, they cost one more flush between them, not
//! one each.
//!
//! Every record a caller asks to be made durable was written (`pwrite`)
//! before it asks ([`super::LogWriter::begin_sync`]), so a flush started
//! after the ask covers it. Segments before the newest were synced
//! before it was created, so a flush of a later segment covers the
//! records of earlier ones.
//!
//! A failed flush is final: the kernel reports a write-back error to one
//! flush only, so a later flush that succeeds proves nothing about the
//! records the failed one was for. Every waiter and every later call
//! fails too (and the store stops, §16.13).

use std::sync::{Condvar, Mutex, MutexGuard};

use super::segments::segment_name;
use super::writer::Flush;
use crate::backing::Backing;
use crate::error::MetaError;

/// The log's flushes, shared by the threads that make it durable.
#[derive(Debug, Default)]
pub struct GroupCommit {
    state: Mutex<State>,
    /// Signalled when a flush ends.
    ended: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// The furthest flush that completed.
    durable: Option<Flush>,
    /// A leader is flushing (without this lock).
    running: bool,
    /// The furthest flush asked for and not started yet: the next
    /// leader's.
    wanted: Option<Flush>,
    /// Callers waiting for a flush (tests watch it).
    waiting: usize,
    /// A flush failed: nothing is proven durable any more.
    failed: Option<String>,
}

/// The later of two flushes (by the last record each makes durable).
fn furthest(a: Option<Flush>, b: Flush) -> Flush {
    match a {
        Some(a) if a.through >= b.through => a,
        _ => b,
    }
}

impl GroupCommit {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes every record up to `want.through` durable, sharing the
    /// `fdatasync` with concurrent callers. Returns the flush that did,
    /// which may reach further than `want`.
    pub fn flush(&self, backing: &dyn Backing, want: Flush) -> Result<Flush, MetaError> {
        let mut state = self.state();
        loop {
            if let Some(why) = &state.failed {
                return Err(MetaError::io("flushing the log")(std::io::Error::other(
                    format!("an earlier flush failed: {why}"),
                )));
            }
            if let Some(durable) = state.durable
                && durable.through >= want.through
            {
                return Ok(durable);
            }
            state.wanted = Some(furthest(state.wanted, want));
            if state.running {
                state.waiting += 1;
                state = self.ended.wait(state).unwrap_or_else(|e| e.into_inner());
                state.waiting -= 1;
                continue;
            }
            let target = state.wanted.take().expect("just set");
            state.running = true;
            drop(state);
            let name = segment_name(target.segment);
            let result = match backing.sync(&name) {
                // Retired by a checkpoint, which synced it first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            };
            state = self.state();
            state.running = false;
            match result {
                Ok(()) => state.durable = Some(furthest(state.durable, target)),
                Err(e) => {
                    let e = MetaError::io(format!("syncing {name}"))(e);
                    state.failed = Some(e.to_string());
                    self.wake(&state);
                    return Err(e);
                }
            }
            self.wake(&state);
        }
    }

    /// Wakes the callers waiting for the flush that just ended (a
    /// `notify_all` is a system call even with no one waiting, and most
    /// flushes have no one).
    fn wake(&self, state: &State) {
        if state.waiting > 0 {
            self.ended.notify_all();
        }
    }

    /// Callers waiting for a leader's flush to end.
    pub fn waiting(&self) -> usize {
        self.state().waiting
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, mpsc};

    use super::*;
    use crate::backing::MemBacking;

    /// A backing that counts syncs, can hold its first sync until the
    /// test lets it go, and can fail one.
    #[derive(Default)]
    struct TestBacking {
        inner: MemBacking,
        syncs: AtomicU64,
        /// Told when the first sync starts; it then waits for `release`.
        entered: Mutex<Option<mpsc::Sender<()>>>,
        release: Mutex<Option<mpsc::Receiver<()>>>,
        fail: AtomicBool,
    }

    impl Backing for TestBacking {
        fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
            self.inner.read_at(name, offset, buf)
        }
        fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.inner.write_at(name, offset, data)
        }
        fn len(&self, name: &str) -> std::io::Result<Option<u64>> {
            self.inner.len(name)
        }
        fn set_len(&self, name: &str, len: u64) -> std::io::Result<()> {
            self.inner.set_len(name, len)
        }
        fn sync(&self, name: &str) -> std::io::Result<()> {
            let entered = self.entered.lock().unwrap().take();
            if let Some(entered) = entered {
                entered.send(()).unwrap();
                let release = self.release.lock().unwrap().take().unwrap();
                release.recv().unwrap();
            }
            if self.fail.swap(false, Ordering::SeqCst) {
                return Err(std::io::Error::other("write-back error (simulated)"));
            }
            self.syncs.fetch_add(1, Ordering::SeqCst);
            self.inner.sync(name)
        }
        fn sync_dir(&self, dir: &str) -> std::io::Result<()> {
            self.inner.sync_dir(dir)
        }
        fn remove(&self, name: &str) -> std::io::Result<()> {
            self.inner.remove(name)
        }
        fn list(&self, dir: &str) -> std::io::Result<Vec<String>> {
            self.inner.list(dir)
        }
    }

    fn flush(segment: u64, through: u64) -> Flush {
        Flush { segment, through }
    }

    #[test]
    fn callers_during_a_flush_share_the_next_one() {
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let backing = Arc::new(TestBacking {
            entered: Mutex::new(Some(entered_tx)),
            release: Mutex::new(Some(release_rx)),
            ..TestBacking::default()
        });
        backing.write_at(&segment_name(3), 0, b"records").unwrap();
        let group = Arc::new(GroupCommit::new());
        let leader = {
            let (group, backing) = (group.clone(), backing.clone());
            std::thread::spawn(move || group.flush(backing.as_ref(), flush(3, 5)))
        };
        entered.recv().unwrap();
        let followers: Vec<_> = [6, 8, 7]
            .into_iter()
            .map(|through| {
                let (group, backing) = (group.clone(), backing.clone());
                std::thread::spawn(move || group.flush(backing.as_ref(), flush(3, through)))
            })
            .collect();
        while group.waiting() < 3 {
            std::thread::yield_now();
        }
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap().unwrap().through, 5);
        for follower in followers {
            assert_eq!(follower.join().unwrap().unwrap().through, 8);
        }
        assert_eq!(
            backing.syncs.load(Ordering::SeqCst),
            2,
            "the leader's flush, then one for all three that waited"
        );
        // Covered already: no flush at all.
        let again = group.flush(backing.as_ref(), flush(3, 7)).unwrap();
        assert_eq!(again.through, 8);
        assert_eq!(backing.syncs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_failed_flush_fails_every_later_one() {
        let backing = TestBacking::default();
        backing.write_at(&segment_name(1), 0, b"records").unwrap();
        let group = GroupCommit::new();
        assert_eq!(group.flush(&backing, flush(1, 2)).unwrap().through, 2);
        backing.fail.store(true, Ordering::SeqCst);
        assert!(group.flush(&backing, flush(1, 3)).is_err());
        // The backing would succeed now; the records of the failed flush
        // may still be lost, so nothing counts as durable any more.
        assert!(group.flush(&backing, flush(1, 4)).is_err());
        assert!(group.flush(&backing, flush(1, 1)).is_err());
    }

    #[test]
    fn a_retired_segment_needs_no_flush() {
        let group = GroupCommit::new();
        let backing = MemBacking::new();
        assert_eq!(group.flush(&backing, flush(9, 40)).unwrap(), flush(9, 40));
    }
}
