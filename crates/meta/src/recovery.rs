//! Recovery at open (docs/format.md §16.16, steps 1–3 and 5–6): the log
//! from the superblock's replay position, every record of its durable
//! prefix applied to the checkpoint's state (journaled blocks checked as
//! they are read), fresh blocks no `SYNC` covered checked and lost ones
//! reverted to holes (`file.rs`), the torn tail cut, then `RECOVERY` and
//! `MOUNT` records and a checkpoint if the log held changes.
//!
//! [`Store::apply`] is also what every live operation runs after logging
//! its record, so the state a replay rebuilds is the state the records
//! were written from.

use crate::backing::Backing;
use crate::blocks::BlockVerifier;
use crate::change::{Change, Entry};
use crate::directory::Directory;
use crate::error::{Location, MetaError};
use crate::keys::MetaKeys;
use crate::log::{self, BackingSegments, Body, Replay, Replayed, SegmentStore, Start};
use crate::page::{PAGE_SIZE, PageRef};
use crate::pager::Pager;
use crate::record::{Content, HeadChange, ObjectHead, ObjectKind, ObjectRecord, Timestamp};
use crate::store::{FsError, Opener, Recovery, Store, blob_pages};
use crate::superblock::{State, Superblock};

/// Step 1–2: the durable prefix of the log from `superblock`'s replay
/// position, which must start with the superblock's own `CHECKPOINT(k)`
/// record at `S + 1` (§16.5 "Choosing"): anything else means the metadata
/// and the log come from different moments.
pub(crate) fn read_log(
    keys: &MetaKeys,
    backing: &dyn Backing,
    superblock: &Superblock,
    verifier: &dyn BlockVerifier,
) -> Result<Replay, MetaError> {
    let k = superblock.generation.checkpoint;
    let start = Start {
        segment: superblock.replay_segment,
        offset: superblock.replay_offset,
        next_seq: superblock.generation.sequence + 1,
        chain: superblock.generation.chain,
    };
    let replay = log::replay_with(keys, &BackingSegments::new(backing), start, verifier)?;
    let continues = replay.records.first().is_some_and(|r| {
        r.segment == start.segment
            && r.offset == start.offset
            && r.seq == start.next_seq
            && r.body == Body::Checkpoint { k }
    });
    if !continues {
        // Written and synced before the superblock that points at it, so
        // never lost to a crash: an older or newer copy of one of them.
        return Err(MetaError::Auth(Location::LogRecord {
            segment: start.segment,
            offset: start.offset,
            seq: start.next_seq,
        }));
    }
    Ok(replay)
}

fn inconsistent(seq: u64, why: impl std::fmt::Display) -> MetaError {
    MetaError::Inconsistent(format!("log record {seq}: {why}"))
}

/// An error of a directory lookup while applying record `seq`.
pub(crate) fn applying(seq: u64) -> impl Fn(FsError) -> MetaError {
    move |e| match e {
        FsError::Meta(m) => m,
        other => inconsistent(seq, other),
    }
}

impl Store {
    /// Steps 2, 3, 5 and 6 on a store opened at its checkpoint.
    pub(crate) fn recover(
        mut self,
        replay: Replay,
        verifier: &dyn BlockVerifier,
        opener: Opener,
    ) -> Result<Self, MetaError> {
        let mut changes = 0u64;
        let mut last_time = self.last_time;
        // The first record is the checkpoint's own CHECKPOINT record.
        for record in &replay.records[1..] {
            if self.replay_record(record)? {
                changes += 1;
            }
            last_time = last_time.max(record.time);
        }
        self.last_time = last_time;
        // Step 3.
        let blocks = self.check_fresh_blocks(verifier)?;
        let end = &replay.end;
        let torn = end.torn.is_some();
        // Step 5: cut the torn tail, durably, so that nothing of it can
        // come back after a later crash and be taken for a record.
        let mut segments = BackingSegments::new(self.backing.as_ref());
        if end.offset < log::SEGMENT_HEADER_LEN as u64 {
            segments.remove(end.segment)?;
            self.log.ensure_segment(&mut segments)?;
        } else if torn {
            segments.cut(end.segment, end.offset)?;
        }
        // Step 6.
        let recovered = changes > 0 || torn;
        if recovered {
            let summary = Recovery {
                replayed: (replay.records.len() - 1) as u64,
                reverted: blocks.reverted,
                cut_back: blocks.cut_back,
                trimmed: blocks.trimmed,
                removed: self.freed_data.len() as u64,
                torn,
            };
            self.recovery = Some(summary);
            let body = Body::Recovery {
                replayed: summary.replayed,
                reverted: summary.reverted,
                cut_back: summary.cut_back,
                trimmed: summary.trimmed,
                removed: summary.removed,
            };
            self.log
                .append(&self.keys, &mut segments, last_time, &body, &[])?;
        }
        // Host and boot ids come with the mount (stage 3).
        let mount = Body::Mount {
            reason: opener as u8,
            host_id: Vec::new(),
            boot_id: Vec::new(),
        };
        self.log
            .append(&self.keys, &mut segments, last_time, &mount, &[])?;
        self.log.write_out(&mut segments)?;
        if recovered {
            if self.superblock.state != State::Migrating {
                self.superblock.state = State::Recovered;
            }
            let now = Timestamp {
                secs: i64::try_from(last_time / 1_000_000_000).unwrap_or(0),
                nanos: (last_time % 1_000_000_000) as u32,
            };
            self.checkpoint(now)?;
        }
        Ok(self)
    }

    /// Applies one replayed record; returns whether it changed the state.
    fn replay_record(&mut self, record: &Replayed) -> Result<bool, MetaError> {
        match &record.body {
            Body::Meta { .. } => {
                let change =
                    Change::from_body(&record.body).map_err(|why| inconsistent(record.seq, why))?;
                self.apply(&change, record.seq)?;
                Ok(true)
            }
            Body::Write { .. } | Body::Truncate { .. } => {
                self.apply_file_record(
                    &record.body,
                    crate::file::Payload::Bytes(&record.payload),
                    record.seq,
                )?;
                Ok(true)
            }
            Body::Sync { object, .. } => {
                if *object != 0 {
                    self.replay_sync(*object)?;
                }
                Ok(false)
            }
            Body::Witnessed { .. } => {
                // Listed by the next checkpoint, as when it was written;
                // not a change of the tree.
                self.acknowledged.replay(&record.body);
                Ok(false)
            }
            Body::Checkpoint { .. }
            | Body::Mount { .. }
            | Body::Recovery { .. }
            | Body::Config { .. }
            | Body::RollbackAccepted { .. }
            | Body::Migrate { .. } => Ok(false),
            Body::Repair {
                action,
                object,
                detail,
            } => {
                self.apply_repair(*action, *object, *detail, record.seq)?;
                Ok(true)
            }
        }
    }

    /// Applies a logged change in memory: entries removed, heads set or
    /// slots freed, entries inserted. Checks what a genuine record always
    /// satisfies, so a bad one is an error, never a panic or a silently
    /// wrong tree.
    pub(crate) fn apply(&mut self, change: &Change, seq: u64) -> Result<(), MetaError> {
        for e in change.entries.iter().filter(|e| !e.insert) {
            self.apply_remove(e, seq)?;
        }
        for head in &change.heads {
            match head {
                HeadChange::Freed(id) => self.apply_free(*id, seq)?,
                HeadChange::Set(head) => self.apply_head(head, change, seq)?,
            }
        }
        for e in change.entries.iter().filter(|e| e.insert) {
            self.apply_insert(e, seq)?;
        }
        if matches!(
            change.op,
            crate::change::op::SETXATTR | crate::change::op::REMOVEXATTR
        ) {
            self.apply_xattr(change, seq)?;
        }
        Ok(())
    }

    fn apply_remove(&mut self, e: &Entry, seq: u64) -> Result<(), MetaError> {
        let pager = Pager::new(&self.keys, self.backing.as_ref());
        let dir = Self::dir_of(&mut self.dirs, &mut self.objects, &pager, e.dir)
            .map_err(applying(seq))?;
        match dir.remove(&pager, &mut self.alloc, &e.name)? {
            Some(removed) if removed.id == e.id && removed.kind == e.kind => Ok(()),
            _ => Err(inconsistent(
                seq,
                format!("removes an entry of directory {} that is not there", e.dir),
            )),
        }
    }

    fn apply_insert(&mut self, e: &Entry, seq: u64) -> Result<(), MetaError> {
        let pager = Pager::new(&self.keys, self.backing.as_ref());
        match self.objects.get(&pager, e.id)? {
            Some(record) if record.head.kind == e.kind => {}
            _ => {
                return Err(inconsistent(
                    seq,
                    format!("names object {} that is not live or of another kind", e.id),
                ));
            }
        }
        let dir = Self::dir_of(&mut self.dirs, &mut self.objects, &pager, e.dir)
            .map_err(applying(seq))?;
        if dir.lookup(&pager, &e.name)?.is_some() {
            return Err(inconsistent(
                seq,
                format!("inserts a name directory {} already holds", e.dir),
            ));
        }
        dir.insert(&pager, e.id, e.kind, &e.name)?;
        Ok(())
    }

    pub(crate) fn apply_free(&mut self, id: u64, seq: u64) -> Result<(), MetaError> {
        let record = self
            .objects
            .get(&Pager::new(&self.keys, self.backing.as_ref()), id)?
            .ok_or_else(|| inconsistent(seq, format!("frees object {id}, which is not live")))?;
        self.free_xattrs(id, record.xattrs)?;
        let pager = Pager::new(&self.keys, self.backing.as_ref());
        match (&record.head.kind, &record.content) {
            (ObjectKind::Directory, _) => {
                let dir = Self::dir_of(&mut self.dirs, &mut self.objects, &pager, id)
                    .map_err(applying(seq))?;
                if !dir.is_empty() {
                    return Err(inconsistent(
                        seq,
                        format!("frees directory {id}, not empty"),
                    ));
                }
                dir.release_all(&pager, &mut self.alloc)?;
                self.dirs.remove(&id);
            }
            (ObjectKind::Symlink, Content::Blob(reference)) => {
                self.unwritten_blobs.remove(&id);
                if !reference.is_null() {
                    for page in blob_pages(&pager, id, *reference)? {
                        self.alloc.release(page);
                    }
                }
            }
            (ObjectKind::Regular, _) => self.free_file(&record)?,
            _ => {}
        }
        let pager = Pager::new(&self.keys, self.backing.as_ref());
        self.objects.free(&pager, id)?;
        Ok(())
    }

    fn apply_head(
        &mut self,
        head: &ObjectHead,
        change: &Change,
        seq: u64,
    ) -> Result<(), MetaError> {
        let algorithm = self.keys.algorithm();
        let pager = Pager::new(&self.keys, self.backing.as_ref());
        let record = match self.objects.get(&pager, head.id)? {
            Some(mut record) => {
                if record.head.kind != head.kind || record.head.file_id != head.file_id {
                    return Err(inconsistent(
                        seq,
                        format!("changes the kind or file id of object {}", head.id),
                    ));
                }
                record.head = head.clone();
                record.changed_at = seq;
                record
            }
            None => {
                // A new object: ids are handed out in order, never reused.
                if head.id < self.next_id {
                    return Err(inconsistent(
                        seq,
                        format!(
                            "creates object {} below the next id {}",
                            head.id, self.next_id
                        ),
                    ));
                }
                let content = match head.kind {
                    ObjectKind::Regular => Content::InlineMap(Vec::new()),
                    ObjectKind::Directory => Content::Tree(crate::superblock::Root {
                        reference: PageRef::NULL,
                        depth: 0,
                    }),
                    ObjectKind::Symlink if head.inline => {
                        Content::InlineTarget(change.extra.clone())
                    }
                    ObjectKind::Symlink => Content::Blob(PageRef::NULL),
                    _ => Content::None,
                };
                ObjectRecord {
                    head: head.clone(),
                    content,
                    xattrs: PageRef::NULL,
                    changed_at: seq,
                }
            }
        };
        canonical(&record, algorithm).map_err(|why| inconsistent(seq, why))?;
        let new = head.id >= self.next_id;
        if new && head.kind == ObjectKind::Symlink {
            if change.extra.len() as u64 != head.size {
                return Err(inconsistent(seq, "a symlink whose target is not its size"));
            }
            if !head.inline {
                self.unwritten_blobs.insert(head.id, change.extra.clone());
            }
        }
        if new && head.kind == ObjectKind::Directory {
            self.dirs.insert(head.id, Directory::empty(head.id));
        }
        self.objects.set(&pager, record)?;
        if new {
            self.next_id = head.id + 1;
        }
        Ok(())
    }
}

/// [`ObjectRecord::check`], with a long symlink target not yet in blob
/// pages (it is, from the next checkpoint on) taken as written.
fn canonical(
    record: &ObjectRecord,
    algorithm: atrest_core::ContentAlgorithm,
) -> Result<(), String> {
    static UNWRITTEN: [u8; PAGE_SIZE] = [0; PAGE_SIZE];
    match record.content {
        Content::Blob(reference) if reference.is_null() => {
            let mut probe = record.clone();
            probe.content = Content::Blob(PageRef::to_sealed(2, &UNWRITTEN));
            probe.check(algorithm)
        }
        _ => record.check(algorithm),
    }
}
