//! When a mounted format 2 vault writes a checkpoint (§16.13): the log
//! and the journaled blocks served from memory grow until one, and
//! recovery replays everything after the last. A checkpoint runs, under
//! the store's lock, after the operation that crosses either bound; every
//! [`INTERVAL`] if anything was logged since the last (a timer thread);
//! and once more when the file system is unmounted.

use std::time::Duration;

/// How long a logged change waits at most for its checkpoint.
pub const INTERVAL: Duration = Duration::from_secs(30);

/// Log records after which the next operation checkpoints.
pub const MAX_RECORDS: u64 = 16_384;

/// Bytes written through the mount after which the next operation
/// checkpoints (journaled blocks are held in memory until then).
pub const MAX_BYTES: u64 = 256 << 20;

/// What has been written since the last checkpoint.
#[derive(Debug, Default)]
pub struct Trigger {
    /// The store's sequence at the last checkpoint.
    at_sequence: u64,
    bytes: u64,
}

impl Trigger {
    pub fn new(sequence: u64) -> Self {
        Self {
            at_sequence: sequence,
            bytes: 0,
        }
    }

    pub fn wrote(&mut self, bytes: usize) {
        self.bytes = self.bytes.saturating_add(bytes as u64);
    }

    /// Whether the store, now at `sequence`, is due a checkpoint.
    pub fn due(&self, sequence: u64) -> bool {
        sequence.saturating_sub(self.at_sequence) >= MAX_RECORDS || self.bytes >= MAX_BYTES
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
    fn due_after_either_bound_and_reset_by_a_checkpoint() {
        let mut t = Trigger::new(10);
        assert!(!t.due(10 + MAX_RECORDS - 1));
        assert!(t.due(10 + MAX_RECORDS));
        t.wrote((MAX_BYTES - 1) as usize);
        assert!(!t.due(11));
        t.wrote(1);
        assert!(t.due(11));
        t.done(11);
        assert!(!t.due(11 + MAX_RECORDS - 1));
        assert!(!t.pending(11));
        assert!(t.pending(12));
    }
}
