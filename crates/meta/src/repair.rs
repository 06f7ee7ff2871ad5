//! What `fsck --repair` changes in the store (docs/format.md §16.18): the
//! entries naming an object whose record is lost dropped, a failed block
//! set to a hole, an orphan a stopped mount left or a lost record freed,
//! a directory's or file's `nlink` and a directory's `size` corrected.
//! Each is one `REPAIR` record (§16.12) that states it fully, logged
//! before it changes anything and applied by replay with the same code,
//! so a repair cut short by a crash is redone or not done, never half.

use crate::directory::DirEntry;
use crate::error::MetaError;
use crate::log::Body;
use crate::pager::Pager;
use crate::record::{MapEntry, ObjectKind, Timestamp, blocks_for};
use crate::recovery::applying;
use crate::store::{FsError, Store};
use crate::usage::PageUsage;

/// Entries read from a directory at a time while dropping entries.
const BATCH: usize = 1024;

/// `REPAIR` actions (§16.12).
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
    /// The pages the last durable checkpoint references, against its
    /// bitmap (§16.11, §16.18), read from the disk.
    pub fn page_usage(&self) -> Result<PageUsage, MetaError> {
        crate::usage::read(&self.pager(), &self.superblock)
    }

    /// Corrects a bitmap that disagrees with the pages in use, as `usage`
    /// (this store's [`Self::page_usage`], with no checkpoint since) says:
    /// a referenced page it marks free is kept in use from now on, so no
    /// checkpoint writes over it; a page marked used that nothing
    /// references is released. Only the bitmap changes, and the next
    /// checkpoint writes it whole or not at all, so nothing is logged: a
    /// crash before that checkpoint leaves the bitmap as it was, and the
    /// next `fsck` finds the same.
    pub fn repair_page_usage(&mut self, usage: &PageUsage) -> Result<(), MetaError> {
        self.usable()?;
        if usage.marked != self.alloc.durable_pages() {
            return Err(MetaError::Inconsistent(
                "the page usage is not of the last durable checkpoint".into(),
            ));
        }
        for page in usage.free_but_referenced() {
            self.alloc.keep(page);
        }
        for page in usage.leaked() {
            if page >= crate::page::FIRST_SEALED_PAGE && !self.bitmap_pages.contains(&page) {
                self.alloc.release(page);
            }
        }
        Ok(())
    }

    /// **Danger, for tests of `fsck` only:** allocates a page nothing
    /// will reference, so the next checkpoint's bitmap marks it used
    /// (what a leak in the accounting would leave). Returns the page.
    #[doc(hidden)]
    pub fn danger_leak_page(&mut self) -> u64 {
        self.alloc.allocate()
    }

    /// **Danger, for tests of `fsck` only:** `page`, which the durable
    /// checkpoint references, is released although it stays referenced,
    /// so the next checkpoint's bitmap marks it free (and the checkpoint
    /// after could write over it: drop the store after the next one).
    #[doc(hidden)]
    pub fn danger_unmark_page(&mut self, page: u64) {
        self.alloc.release(page);
    }

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

    /// Drops every entry of directory `dir` naming object `id`, whose
    /// record fails authentication or is free: the rest of the directory
    /// stays usable, and its `size` and `nlink` follow.
    pub fn repair_drop_entries(
        &mut self,
        dir: u64,
        id: u64,
        now: Timestamp,
    ) -> Result<(), FsError> {
        if self.getattr(dir)?.kind != ObjectKind::Directory {
            return Err(FsError::NotDir);
        }
        if !self.lost(id)? {
            return Err(FsError::Invalid("the entry's object is live"));
        }
        if self.entries_naming(dir, id)?.is_empty() {
            return Err(FsError::NotFound);
        }
        self.log_repair(action::ENTRY_DROPPED, dir, id, now)
    }

    /// Frees object `id`, whose record fails authentication, by dropping
    /// the page of the object table that holds it (every record in that
    /// page is lost with it). The entries naming those objects must have
    /// been dropped first.
    pub fn repair_free_lost(&mut self, id: u64, now: Timestamp) -> Result<(), FsError> {
        let pager = Pager::new(&self.keys, self.backing.as_ref());
        if !self.objects.has_failed(&pager, id) {
            return Err(FsError::Invalid(
                "the object's record authenticates, or the root of the object table fails",
            ));
        }
        self.log_repair(action::OBJECT_FREED, id, 0, now)
    }

    /// Sets the `nlink` of object `id` to `nlink`: 2 plus its
    /// subdirectories for a directory, the entries naming it otherwise.
    pub fn repair_nlink(&mut self, id: u64, nlink: u32, now: Timestamp) -> Result<(), FsError> {
        let head = self.getattr(id)?;
        if nlink < minimum_nlink(head.kind) {
            return Err(FsError::Invalid("an nlink below the object's minimum"));
        }
        self.log_repair(action::NLINK_CORRECTED, id, u64::from(nlink), now)
    }

    /// Sets the `size` of directory `id` to `entries`, its number of
    /// entries.
    pub fn repair_directory_size(
        &mut self,
        id: u64,
        entries: u64,
        now: Timestamp,
    ) -> Result<(), FsError> {
        if self.getattr(id)?.kind != ObjectKind::Directory {
            return Err(FsError::NotDir);
        }
        self.log_repair(action::SIZE_CORRECTED, id, entries, now)
    }

    /// The entries of directory `dir` naming object `id`.
    fn entries_naming(&mut self, dir: u64, id: u64) -> Result<Vec<DirEntry>, FsError> {
        let mut naming = Vec::new();
        let mut after = 0;
        loop {
            let batch = self.readdir(dir, after, BATCH)?;
            let Some(last) = batch.last() else { break };
            after = last.hash;
            naming.extend(batch.into_iter().filter(|e| e.id == id));
        }
        Ok(naming)
    }

    /// Whether the record of `id` is free or fails authentication.
    fn lost(&mut self, id: u64) -> Result<bool, MetaError> {
        let pager = Pager::new(&self.keys, self.backing.as_ref());
        match self.objects.get(&pager, id) {
            Ok(record) => Ok(record.is_none()),
            Err(e) if e.is_auth() => Ok(true),
            Err(e) => Err(e),
        }
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
        match action {
            action::ENTRY_DROPPED => return self.apply_drop_entries(object, detail, seq),
            action::OBJECT_FREED => {
                let pager = Pager::new(&self.keys, self.backing.as_ref());
                if let Err(e) = self.objects.get(&pager, object)
                    && e.is_auth()
                {
                    return self.objects.drop_failed(&pager, &mut self.alloc, object);
                }
            }
            _ => {}
        }
        let mut record = self
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
            action::NLINK_CORRECTED | action::SIZE_CORRECTED => {
                if action == action::NLINK_CORRECTED {
                    record.head.nlink = u32::try_from(detail)
                        .ok()
                        .filter(|n| *n >= minimum_nlink(record.head.kind))
                        .ok_or_else(|| inconsistent(seq, format!("an nlink of {detail}")))?;
                } else if record.head.kind == ObjectKind::Directory {
                    record.head.size = detail;
                } else {
                    return Err(inconsistent(seq, "corrects the size of a non-directory"));
                }
                record.changed_at = seq;
                let pager = Pager::new(&self.keys, self.backing.as_ref());
                self.objects.set(&pager, record)
            }
            _ => Err(inconsistent(
                seq,
                format!("a repair of action {action}, which this version does not apply"),
            )),
        }
    }

    /// Action 1: the entries of directory `dir` naming `id`, whose record
    /// is lost, removed; the directory's `size` and `nlink` follow.
    fn apply_drop_entries(&mut self, dir: u64, id: u64, seq: u64) -> Result<(), MetaError> {
        if !self.lost(id)? {
            return Err(inconsistent(
                seq,
                format!("drops entries of object {id}, which is live"),
            ));
        }
        let dropped = self.entries_naming(dir, id).map_err(applying(seq))?;
        let pager = Pager::new(&self.keys, self.backing.as_ref());
        let mut record = self
            .objects
            .get(&pager, dir)?
            .ok_or_else(|| inconsistent(seq, format!("drops entries of directory {dir}, free")))?;
        let directory =
            Self::dir_of(&mut self.dirs, &mut self.objects, &pager, dir).map_err(applying(seq))?;
        if dropped.is_empty() {
            return Err(inconsistent(
                seq,
                format!("drops entries of directory {dir}: none names object {id}"),
            ));
        }
        for entry in &dropped {
            directory.remove(&pager, &mut self.alloc, &entry.name)?;
        }
        let subdirectories = dropped
            .iter()
            .filter(|e| e.kind == ObjectKind::Directory)
            .count();
        let head = &mut record.head;
        head.size = head.size.saturating_sub(dropped.len() as u64);
        head.nlink = head
            .nlink
            .saturating_sub(u32::try_from(subdirectories).unwrap_or(u32::MAX))
            .max(2);
        record.changed_at = seq;
        self.objects.set(&pager, record)
    }
}

/// The least `nlink` a live object of `kind` has.
fn minimum_nlink(kind: ObjectKind) -> u32 {
    if kind == ObjectKind::Directory { 2 } else { 1 }
}
