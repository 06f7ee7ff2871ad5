//! What `fsck --repair` changes in the store (docs/format.md §16.18): a
//! failed block set to a hole, an orphan a stopped mount left freed.
//! Each is one `REPAIR` record (§16.12) that states it fully, logged
//! before it changes anything and applied by replay with the same code,
//! so a repair cut short by a crash is redone or not done, never half.

use crate::error::MetaError;
use crate::log::Body;
use crate::record::{MapEntry, ObjectKind, Timestamp, blocks_for};
use crate::store::{FsError, Store};

/// `REPAIR` actions (§16.12); this build writes and replays 2 and 3.
pub mod action {
    pub const ENTRY_DROPPED: u8 = 1;
    pub const BLOCK_HOLE: u8 = 2;
    pub const OBJECT_FREED: u8 = 3;
    pub const NLINK_CORRECTED: u8 = 4;
    pub const SIZE_CORRECTED: u8 = 5;
}

fn inconsistent(seq: u64, why: impl std::fmt::Display) -> MetaError {
    MetaError::Inconsistent(format!("log record {seq}: {why}"))
}

impl Store {
    /// Block `block` of regular file `id`, which fails authentication,
    /// becomes a hole: it reads as zeros instead of `EIO` from now on.
    pub fn repair_block_hole(
        &mut self,
        id: u64,
        block: u64,
        now: Timestamp,
    ) -> Result<(), FsError> {
        let head = self.getattr(id)?;
        if head.kind != ObjectKind::Regular || block >= blocks_for(head.size) {
            return Err(FsError::Invalid("not a block of a regular file"));
        }
        self.log_repair(action::BLOCK_HOLE, id, block, now)
    }

    /// Frees object `id`, which lost its last name while open and whose
    /// mount stopped before it was closed (an `ORPHAN`: nothing can reach
    /// it any more).
    pub fn repair_free_orphan(&mut self, id: u64, now: Timestamp) -> Result<(), FsError> {
        let head = self.getattr(id)?;
        if !head.orphan || self.open.contains(&id) {
            return Err(FsError::Invalid("not an orphan left by a stopped mount"));
        }
        self.log_repair(action::OBJECT_FREED, id, 0, now)
    }

    fn log_repair(
        &mut self,
        action: u8,
        object: u64,
        detail: u64,
        now: Timestamp,
    ) -> Result<(), FsError> {
        let body = Body::Repair {
            action,
            object,
            detail,
        };
        let seq = self.log_body(&body, &[], now)?;
        if let Err(e) = self.apply_repair(action, object, detail, seq) {
            // Checked before logging: a bug. Memory may be half-changed.
            self.failed = true;
            return Err(e.into());
        }
        Ok(())
    }

    /// Applies a `REPAIR` record, live or replayed.
    pub(crate) fn apply_repair(
        &mut self,
        action: u8,
        object: u64,
        detail: u64,
        seq: u64,
    ) -> Result<(), MetaError> {
        let record = self
            .record(object)
            .map_err(|e| inconsistent(seq, format!("repairs object {object}: {e}")))?;
        match action {
            action::BLOCK_HOLE => {
                if record.head.kind != ObjectKind::Regular || detail >= blocks_for(record.head.size)
                {
                    return Err(inconsistent(seq, "a hole outside a regular file"));
                }
                self.journaled.remove(&(object, detail));
                self.reshape(record.head, &[(detail, MapEntry::Hole)], seq)
            }
            action::OBJECT_FREED => {
                if !record.head.orphan {
                    return Err(inconsistent(seq, "frees an object that has names"));
                }
                self.apply_free(object, seq)
            }
            _ => Err(inconsistent(
                seq,
                format!("a repair of action {action}, which this version does not apply"),
            )),
        }
    }
}
