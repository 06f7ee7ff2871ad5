//! Records that change no metadata but say what a tool did: `MIGRATE`
//! (what `atrest migrate` converted, and what `--drop-corrupt` left out,
//! docs/format.md §16.19). Recovery reads past them; the changes they
//! describe are the `META`, `WRITE` and `TRUNCATE` records around them.
//! (`REPAIR` records are `fsck --repair`'s and are applied: repair.rs.)

use crate::log::Body;
use crate::record::Timestamp;
use crate::store::{FsError, Store};

/// `MIGRATE` actions (§16.12).
pub mod migrate_action {
    pub const DIRECTORY_DONE: u8 = 1;
    pub const FILE_DONE: u8 = 2;
    pub const BATCH_REMOVED: u8 = 3;
    pub const FINISHED: u8 = 4;
    /// `--drop-corrupt` left a block of the source out (a hole); the
    /// inode field holds the block number.
    pub const BLOCK_DROPPED: u8 = 5;
    /// `--drop-corrupt` left an entry out (its name, symlink target or
    /// contents failed); the object is its parent directory.
    pub const ENTRY_DROPPED: u8 = 6;
}

impl Store {
    /// Logs a `MIGRATE` record (written, not synced): `path_hash` names
    /// the format 1 source, `object` what it became, `inode` its backing
    /// inode.
    pub fn log_migrate(
        &mut self,
        action: u8,
        path_hash: [u8; 32],
        object: u64,
        inode: u64,
        now: Timestamp,
    ) -> Result<u64, FsError> {
        self.log_note(
            &Body::Migrate {
                action,
                path_hash,
                object,
                inode,
            },
            now,
        )
    }

    fn log_note(&mut self, body: &Body, now: Timestamp) -> Result<u64, FsError> {
        body.validate(0).map_err(FsError::Invalid)?;
        self.log_body(body, &[], now)
    }
}
