//! When a mounted format 2 vault writes a checkpoint (§16.13): the log
//! and the journaled blocks it copies in place grow until one, and
//! recovery replays everything after the last. Checkpoints run on one
//! thread of their own (the checkpointer, in `fs.rs`): woken when an
//! operation brings the log or the bytes written past a bound, every
//! [`INTERVAL`] if anything was logged since the last, and once more
//! when the file system is unmounted. Before taking the store's lock it
//! flushes the data files the checkpoint will sync
//! ([`atrest_meta::Store::flush_ahead`]), up to [`FLUSH_ROUNDS`] times
//! while writes meanwhile left many to flush, so that the checkpoint's
//! own flush under the lock, which every request waits for, finds little
//! left to write.

use std::time::Duration;

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

/// Bytes written through the mount after which a checkpoint is due: the
/// bound of §16.13 on fresh bytes (recovery verifies each fresh block not
/// covered by a `SYNC`), counted over every write.
pub const MAX_WRITTEN: u64 = 2 << 30;

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

    /// Whether the store, now at `sequence` and holding `journaled`
    /// bytes in memory, is due a checkpoint.
    pub fn due(&self, sequence: u64, journaled: u64) -> bool {
        sequence.saturating_sub(self.at_sequence) >= MAX_RECORDS
            || journaled >= MAX_JOURNALED
            || self.bytes >= MAX_WRITTEN
    }

    /// [`Self::due`], once per checkpoint: whether to wake the
    /// checkpointer now.
    pub fn wake(&mut self, sequence: u64, journaled: u64) -> bool {
        let wake = !self.woken && self.due(sequence, journaled);
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

    #[test]
    fn due_after_any_bound_and_reset_by_a_checkpoint() {
        let mut t = Trigger::new(10);
        assert!(!t.due(10 + MAX_RECORDS - 1, 0));
        assert!(t.due(10 + MAX_RECORDS, 0));
        assert!(!t.due(11, MAX_JOURNALED - 1));
        assert!(t.due(11, MAX_JOURNALED));
        t.wrote((MAX_WRITTEN - 1) as usize);
        assert!(
            !t.due(11, 0),
            "fresh bytes hold no memory: no checkpoint yet"
        );
        t.wrote(1);
        assert!(t.due(11, 0));
        assert!(t.wake(11, 0), "the first operation past a bound wakes it");
        assert!(!t.wake(11, 0), "later ones do not");
        t.done(11);
        assert!(!t.due(11 + MAX_RECORDS - 1, 0));
        assert!(!t.pending(11));
        assert!(t.pending(12));
        assert!(
            t.wake(11 + MAX_RECORDS, 0),
            "woken again after a checkpoint"
        );
    }
}
