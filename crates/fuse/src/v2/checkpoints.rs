//! When a mounted format 2 vault writes a checkpoint (§16.13): the log
//! and the journaled blocks it copies in place grow until one, and
//! recovery replays everything after the last. Checkpoints run on one
//! thread of their own (the checkpointer, in `fs.rs`): woken when an
//! operation brings the log or the bytes written past a bound, every
//! [`INTERVAL`] if anything was logged since the last, and once more
//! when the file system is unmounted. Before taking the store's lock it
//! flushes the data files the checkpoint will sync
//! ([`atrest_meta::Store::flush_ahead`]), up to [`FLUSH_ROUNDS`] times
//! while writes meanwhile left many files or many bytes to flush, so
//! that the checkpoint's own flush under the lock, which every request
//! waits for, finds little left to write.
//!
//! The bytes written bound only what the store remembers per block until
//! a checkpoint; the bound of §16.13 on fresh bytes is on those recovery
//! would verify, which an `fsync` of their file takes out: a stream that
//! ends in `fsync` (`dd conv=fsync`, a copy) leaves none, and so costs no
//! checkpoint in the middle of the next one.

use std::time::Duration;

use atrest_meta::Store;

/// How long a logged change waits at most for its checkpoint.
pub const INTERVAL: Duration = Duration::from_secs(30);

/// Log records after which a checkpoint is due: a stand-in for §16.13's
/// bound on dirty pages, which also bounds what recovery replays. An
/// untar of 16,000 files logs about 90,000 (create, writes, owner, mode
/// and times of each).
pub const MAX_RECORDS: u64 = 65_536;

/// Journaled bytes (in the log until the checkpoint copies them in
/// place, under the store's lock) after which a checkpoint is due: the
/// log's bound of §16.13.
pub const MAX_JOURNALED: u64 = 256 << 20;

/// Flushes ahead of one checkpoint at most (each without the store's
/// lock; see the module's comment).
pub const FLUSH_ROUNDS: u32 = 3;

/// Fresh bytes written since the last flush ahead above which another
/// round flushes them without the store's lock (while rounds are left):
/// a stream written during the first round's flush would otherwise be
/// flushed by the checkpoint under the lock, stalling every request.
pub const FLUSH_AHEAD_BYTES: u64 = 32 << 20;

/// Fresh bytes not covered by a `SYNC` after which a checkpoint is due:
/// the bound of §16.13 on fresh bytes (recovery verifies each fresh block
/// not covered by a `SYNC`, §16.16 step 3).
pub const MAX_FRESH: u64 = 2 << 30;

/// Bytes written through the mount after which a checkpoint is due,
/// synced or not: a bound on what the store remembers of each block
/// written since the last checkpoint (20 to 40 bytes a block, at most
/// about 40 MiB at this bound).
pub const MAX_WRITTEN: u64 = 4 << 30;

/// What the store holds since its last checkpoint, measured against the
/// bounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// The store's sequence number.
    pub sequence: u64,
    /// Journaled bytes (read back from the log by the checkpoint).
    pub journaled: u64,
    /// Fresh bytes no `SYNC` covered ([`Store::unsynced_fresh_bytes`]).
    pub unsynced_fresh: u64,
}

impl Backlog {
    pub fn of(store: &Store) -> Self {
        Self {
            sequence: store.sequence(),
            journaled: store.journaled_bytes(),
            unsynced_fresh: store.unsynced_fresh_bytes(),
        }
    }
}

/// What has been written since the last checkpoint.
#[derive(Debug, Default)]
pub struct Trigger {
    /// The store's sequence at the last checkpoint.
    at_sequence: u64,
    bytes: u64,
    /// The checkpointer was woken for this checkpoint already.
    woken: bool,
}

impl Trigger {
    pub fn new(sequence: u64) -> Self {
        Self {
            at_sequence: sequence,
            ..Self::default()
        }
    }

    pub fn wrote(&mut self, bytes: usize) {
        self.bytes = self.bytes.saturating_add(bytes as u64);
    }

    /// Whether a store holding `backlog` is due a checkpoint.
    pub fn due(&self, backlog: Backlog) -> bool {
        backlog.sequence.saturating_sub(self.at_sequence) >= MAX_RECORDS
            || backlog.journaled >= MAX_JOURNALED
            || backlog.unsynced_fresh >= MAX_FRESH
            || self.bytes >= MAX_WRITTEN
    }

    /// [`Self::due`], once per checkpoint: whether to wake the
    /// checkpointer now.
    pub fn wake(&mut self, backlog: Backlog) -> bool {
        let wake = !self.woken && self.due(backlog);
        self.woken |= wake;
        wake
    }

    /// Whether anything was logged since the last checkpoint (the timer's
    /// question).
    pub fn pending(&self, sequence: u64) -> bool {
        sequence > self.at_sequence
    }

    pub fn done(&mut self, sequence: u64) {
        *self = Self::new(sequence);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(sequence: u64, journaled: u64, unsynced_fresh: u64) -> Backlog {
        Backlog {
            sequence,
            journaled,
            unsynced_fresh,
        }
    }

    #[test]
    fn due_after_any_bound_and_reset_by_a_checkpoint() {
        let mut t = Trigger::new(10);
        assert!(!t.due(at(10 + MAX_RECORDS - 1, 0, 0)));
        assert!(t.due(at(10 + MAX_RECORDS, 0, 0)));
        assert!(!t.due(at(11, MAX_JOURNALED - 1, 0)));
        assert!(t.due(at(11, MAX_JOURNALED, 0)));
        assert!(!t.due(at(11, 0, MAX_FRESH - 1)));
        assert!(
            t.due(at(11, 0, MAX_FRESH)),
            "fresh bytes recovery would verify"
        );
        t.wrote((MAX_WRITTEN - 1) as usize);
        assert!(
            !t.due(at(11, 0, 0)),
            "bytes written and synced: no checkpoint yet"
        );
        t.wrote(1);
        assert!(t.due(at(11, 0, 0)), "the bound on what the store remembers");
        assert!(
            t.wake(at(11, 0, 0)),
            "the first operation past a bound wakes it"
        );
        assert!(!t.wake(at(11, 0, 0)), "later ones do not");
        t.done(11);
        assert!(!t.due(at(11 + MAX_RECORDS - 1, 0, 0)));
        assert!(!t.pending(11));
        assert!(t.pending(12));
        assert!(
            t.wake(at(11 + MAX_RECORDS, 0, 0)),
            "woken again after a checkpoint"
        );
    }

    #[test]
    fn streams_that_end_in_fsync_cross_no_bound() {
        // Two 1 GiB `dd conv=fsync` in a row (bench/fuse-stream-ab.sh):
        // before, the second crossed the fresh-byte bound at its last
        // write, and its fsync waited for a whole checkpoint.
        let mut t = Trigger::new(1);
        for stream in 1..=2u64 {
            t.wrote(1 << 30);
            assert!(!t.wake(at(1 + 1024 * stream, 0, 1 << 30)));
        }
        assert!(!t.wake(at(1 + 2048, 0, 0)), "after its fsync");
    }
}
