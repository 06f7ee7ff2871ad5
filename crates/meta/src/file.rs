//! Regular files in the store: block maps (docs/format.md §16.9), the
//! `WRITE` and `TRUNCATE` records (§16.12) with the write ordering of
//! §16.14, `fsync` of a file (§16.15), and step 3 of recovery (§16.16).
//!
//! A block is **fresh** when it was a hole (or past the end) at the last
//! checkpoint and no `SYNC` of its file was logged since it was written:
//! its ciphertext goes straight to the data file, before its record, and
//! a crash can only lose it (recovery turns it back into a hole). Every
//! other block is **journaled**: its ciphertext travels in the record's
//! payload and reaches the data file at the next checkpoint, so nothing a
//! durable state references is ever overwritten in place. Until then it
//! is read back from the log segment ([`Journaled`]), not held in memory.
//!
//! The store seals nothing here: the content layer hands over sealed
//! blocks ([`SealedBlock`]) and answers [`BlockVerifier`] questions.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::backing::Backing;
use crate::blocks::{BLOCK, BlockVerifier, SealedBlock, data_dir_name, data_file_name};
use crate::error::{Location, MetaError};
use crate::log::{BackingSegments, Body, Flush, GroupCommit, segment_name};
use crate::page::PageRef;
use crate::pager::Pager;
use crate::radix::Radix;
use crate::record::{
    Content, HEAD_LEN, MAX_TREE_DEPTH, MapEntry, ObjectHead, ObjectKind, ObjectRecord, Timestamp,
    blocks_for, inline_blocks,
};
use crate::store::{FsError, Store, nanos};
use crate::superblock::Root;

/// Blocks one `WRITE` record carries at most (§16.12).
pub const MAX_WRITE_BLOCKS: usize = 256;
/// Data files and directories a checkpoint syncs one by one at most;
/// above, one `syncfs` of the backing file system (§16.13 step 5).
pub const SYNCFS_ABOVE: usize = 64;
const FRESH: u8 = 1;
const JOURNALED: u8 = 2;

/// Where the ciphertext of a journaled block is until the checkpoint
/// writes it in place (§16.13 step 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Journaled {
    /// In its record's payload in log segment `segment`, at `offset`: a
    /// block journaled through this store, read back when needed, so
    /// that the memory a mount holds does not grow with what it journals.
    Log { segment: u64, offset: u64 },
    /// Held in memory: a block replayed by recovery, whose checkpoint
    /// follows at once.
    Memory(Vec<u8>),
}

/// The payload of a `WRITE` or `TRUNCATE` record being applied.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Payload<'a> {
    /// Its bytes (a replayed record).
    Bytes(&'a [u8]),
    /// Where it starts in the log (a record just written).
    Logged { segment: u64, offset: u64 },
}

impl Payload<'_> {
    /// Journaled block `i` of the payload.
    fn block(&self, i: usize) -> Journaled {
        let len = BLOCK as usize;
        match *self {
            Self::Bytes(bytes) => Journaled::Memory(bytes[i * len..(i + 1) * len].to_vec()),
            Self::Logged { segment, offset } => Journaled::Log {
                segment,
                offset: offset + (i * len) as u64,
            },
        }
    }
}

/// Reads journaled blocks into `buf`: `blocks` holds, in ascending order
/// of index, `(i, block)` for the 4,096 bytes of `buf` at `i · 4096`.
/// Blocks that follow each other both in `buf` and in one log segment
/// are read with one `pread`.
fn read_journaled(
    backing: &dyn Backing,
    blocks: &[(usize, &Journaled)],
    buf: &mut [u8],
) -> Result<(), MetaError> {
    let len = BLOCK as usize;
    let mut at = 0;
    while at < blocks.len() {
        let (i, block) = blocks[at];
        let (segment, offset) = match block {
            Journaled::Memory(bytes) => {
                buf[i * len..(i + 1) * len].copy_from_slice(bytes);
                at += 1;
                continue;
            }
            Journaled::Log { segment, offset } => (*segment, *offset),
        };
        let mut run = 1;
        while let Some((
            j,
            Journaled::Log {
                segment: s,
                offset: o,
            },
        )) = blocks.get(at + run)
        {
            if *j != i + run || *s != segment || *o != offset + (run * len) as u64 {
                break;
            }
            run += 1;
        }
        let name = segment_name(segment);
        backing
            .read_exact_at(&name, offset, &mut buf[i * len..(i + run) * len])
            .map_err(MetaError::io(format!(
                "reading journaled blocks from {name}"
            )))?;
        at += run;
    }
    Ok(())
}

/// What the store remembers of one block written since the last
/// checkpoint.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockState {
    /// A hole or past the end in the checkpoint: its data file bytes
    /// belong to no durable state until written and synced.
    hole_at_checkpoint: bool,
    /// A `SYNC` of its file followed a write of it: from now on it is
    /// durable data, journaled until the next checkpoint.
    synced: bool,
}

/// A regular file changed since the last checkpoint.
#[derive(Debug, Default)]
pub(crate) struct FileState {
    blocks: HashMap<u64, BlockState>,
    /// The fewest blocks a shrinking truncate left since the checkpoint:
    /// a hole at or past it may have been sealed in the checkpoint.
    shrunk_to: Option<u64>,
    /// The size at the last checkpoint, `SYNC` or `TRUNCATE`: recovery
    /// never cuts the file below it.
    settled: u64,
    /// Blocks written fresh and not yet covered by a `SYNC` of the file.
    unsynced_fresh: BTreeSet<u64>,
    /// Fresh ciphertext went to the data file since the checkpoint.
    fresh_written: bool,
    /// Writes of fresh blocks since the checkpoint (a count that tells
    /// whether one came after a flush ahead).
    fresh_writes: u64,
    /// `fresh_writes` when a flush ahead of the checkpoint (which needs
    /// no store) last made the data file durable: the checkpoint syncs
    /// it again only if a fresh write came since.
    flushed_at: Option<u64>,
    /// Fresh blocks written since the checkpoint, and how many of them
    /// the last flush ahead covered: what is left for the next.
    fresh_blocks: u64,
    flushed_blocks: u64,
    /// The data file was created since the checkpoint (its directory
    /// entry is synced with its first `fsync`).
    created: bool,
    /// A truncate shrank it: the checkpoint trims the data file.
    trim: bool,
}

impl FileState {
    fn new(settled: u64) -> Self {
        Self {
            settled,
            ..Self::default()
        }
    }

    /// Whether block `n`, whose current entry is `current`, may be
    /// written fresh.
    fn fresh(&self, n: u64, current: &MapEntry) -> bool {
        match self.blocks.get(&n) {
            Some(b) => b.hole_at_checkpoint && !b.synced,
            None => *current == MapEntry::Hole && self.shrunk_to.is_none_or(|s| n < s),
        }
    }

    /// Remembers a write of block `n` (entry `current` before it).
    /// Returns how the count of unsynced fresh blocks changed (−1, 0 or
    /// 1), for [`Store::unsynced_fresh_bytes`].
    fn note_write(&mut self, n: u64, current: &MapEntry, fresh: bool) -> i64 {
        let hole = self.fresh_as_untracked(n, current);
        self.blocks.entry(n).or_insert(BlockState {
            hole_at_checkpoint: hole,
            synced: false,
        });
        if fresh {
            self.fresh_written = true;
            self.fresh_writes += 1;
            self.fresh_blocks += 1;
            i64::from(self.unsynced_fresh.insert(n))
        } else {
            -i64::from(self.unsynced_fresh.remove(&n))
        }
    }

    /// Holds fresh writes no flush ahead made durable yet.
    fn unflushed(&self) -> bool {
        self.fresh_written && self.flushed_at != Some(self.fresh_writes)
    }

    /// ... or a new directory entry.
    fn needs_flush(&self) -> bool {
        self.unflushed() || self.created
    }

    fn fresh_as_untracked(&self, n: u64, current: &MapEntry) -> bool {
        *current == MapEntry::Hole && self.shrunk_to.is_none_or(|s| n < s)
    }

    /// A `SYNC` of the file: what was written is durable data now.
    /// Returns how many fresh blocks it covered.
    fn note_sync(&mut self, size: u64) -> u64 {
        let covered = std::mem::take(&mut self.unsynced_fresh);
        for n in &covered {
            if let Some(b) = self.blocks.get_mut(n) {
                b.synced = true;
            }
        }
        self.settled = size;
        covered.len() as u64
    }
}

/// Recovery's step 3 in numbers, for its `RECOVERY` record.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockCheck {
    pub reverted: u64,
    pub cut_back: u64,
    pub trimmed: u64,
}

fn inconsistent(seq: u64, why: impl std::fmt::Display) -> MetaError {
    MetaError::Inconsistent(format!("log record {seq}: {why}"))
}

fn io_data(id: u64) -> impl FnOnce(std::io::Error) -> MetaError {
    MetaError::io(format!("data file {}", data_file_name(id)))
}

impl Store {
    /// The tree map of file `id` whose record names `root`, loaded on
    /// first use (the record's root is stale once loaded: the loaded map
    /// is what the next checkpoint writes).
    fn map_of(
        maps: &mut HashMap<u64, Radix<MapEntry>>,
        algorithm: atrest_core::ContentAlgorithm,
        id: u64,
        root: Root,
    ) -> &mut Radix<MapEntry> {
        maps.entry(id)
            .or_insert_with(|| Radix::open(id, algorithm, root, MAX_TREE_DEPTH))
    }

    /// The entry of block `n` in `record`'s map (a hole past the end).
    fn entry_in(&mut self, record: &ObjectRecord, n: u64) -> Result<MapEntry, MetaError> {
        if n >= blocks_for(record.head.size) {
            return Ok(MapEntry::Hole);
        }
        match &record.content {
            Content::InlineMap(entries) => Ok(entries[n as usize]),
            Content::Tree(root) => {
                let pager = Pager::new(&self.keys, self.backing.as_ref());
                Self::map_of(&mut self.maps, self.keys.algorithm(), record.head.id, *root)
                    .get(&pager, n)
            }
            _ => Err(MetaError::Inconsistent(format!(
                "object {} is not a regular file",
                record.head.id
            ))),
        }
    }

    fn regular(&mut self, id: u64) -> Result<ObjectRecord, FsError> {
        let record = self.record(id)?;
        match record.head.kind {
            ObjectKind::Regular => Ok(record),
            ObjectKind::Directory => Err(FsError::IsDir),
            _ => Err(FsError::Invalid("not a regular file")),
        }
    }

    /// The map entry of block `n` of file `id`.
    pub fn map_entry(&mut self, id: u64, n: u64) -> Result<MapEntry, FsError> {
        let record = self.regular(id)?;
        Ok(self.entry_in(&record, n)?)
    }

    /// Block `n` of file `id` as sealed: `None` for a hole. A journaled
    /// block not yet written in place is served from its log record
    /// (§16.14); any other from the data file, where a missing or short
    /// block is an authentication failure of that block.
    pub fn read_block(&mut self, id: u64, n: u64) -> Result<Option<SealedBlock>, FsError> {
        let mut ciphertext = vec![0u8; BLOCK as usize];
        let plan = self.locate_blocks(id, n, &mut ciphertext)?;
        let MapEntry::Sealed(nonce_tag) = plan.entries()[0] else {
            return Ok(None);
        };
        plan.fetch(&mut ciphertext)?;
        Ok(Some(SealedBlock {
            nonce_tag,
            ciphertext,
        }))
    }

    /// Where the ciphertext of blocks `first ..` of file `id` is (as
    /// many blocks as `buf` holds, 4,096 bytes each; `buf` a whole number
    /// of blocks): journaled blocks are read into `buf` here (from the
    /// log), the
    /// others are read from the data file by [`BlockPlan::fetch`], which
    /// needs no access to the store. So a reader holds the store only to
    /// plan, and reads and opens outside it (the mount's reads).
    ///
    /// The plan stays right for as long as nothing changes these blocks:
    /// the caller keeps writes and truncates of the file out until the
    /// fetch is done (the mount's per-inode lock). A checkpoint in
    /// between only writes journaled blocks in place, which the plan
    /// already holds, and trims past the file's size.
    pub fn locate_blocks(
        &mut self,
        id: u64,
        first: u64,
        buf: &mut [u8],
    ) -> Result<BlockPlan, FsError> {
        assert!(
            buf.len().is_multiple_of(BLOCK as usize),
            "whole blocks are located"
        );
        let record = self.regular(id)?;
        let count = buf.len() / BLOCK as usize;
        let mut entries = Vec::with_capacity(count);
        let mut runs: Vec<(usize, usize)> = Vec::new();
        let mut journaled = Vec::new();
        for i in 0..count {
            let n = first + i as u64;
            let entry = self.entry_in(&record, n)?;
            if entry != MapEntry::Hole {
                if self.journaled.contains_key(&(id, n)) {
                    journaled.push(n);
                } else {
                    match runs.last_mut() {
                        Some((start, len)) if *start + *len == i => *len += 1,
                        _ => runs.push((i, 1)),
                    }
                }
            }
            entries.push(entry);
        }
        if !journaled.is_empty() {
            // Read here, under the caller's hold of the store: a
            // checkpoint may retire the segment once the store is let go.
            let blocks: Vec<(usize, &Journaled)> = journaled
                .iter()
                .map(|n| ((n - first) as usize, &self.journaled[&(id, *n)]))
                .collect();
            read_journaled(self.backing.as_ref(), &blocks, buf)?;
        }
        Ok(BlockPlan {
            id,
            first,
            entries,
            runs,
            backing: self.backing.clone(),
        })
    }

    /// Whether block `n` (entry `current`) of file `id` may be written
    /// fresh.
    fn fresh(&self, id: u64, n: u64, current: &MapEntry) -> bool {
        match self.files.get(&id) {
            Some(f) => f.fresh(n, current),
            None => *current == MapEntry::Hole,
        }
    }

    /// Writes the ciphertext of fresh blocks `first ..` to the data file
    /// (before their record, §16.14).
    fn write_fresh(&mut self, id: u64, first: u64, bytes: &[u8]) -> Result<(), FsError> {
        let name = data_file_name(id);
        // Written fresh since the checkpoint: it exists, and was handled.
        let written = self.files.get(&id).is_some_and(|f| f.fresh_written);
        let exists = written || self.backing.len(&name).map_err(io_data(id))?.is_some();
        if exists && id >= self.superblock.next_object_id && !written {
            // An id a crash forgot, handed out again: whatever a lost
            // write left under it belongs to nothing (§16.7, O_TRUNC).
            self.backing.set_len(&name, 0).map_err(io_data(id))?;
        }
        // Space first, then the bytes, as format 1 does (`Backing::reserve`).
        let result = self
            .backing
            .reserve(&name, first * BLOCK, bytes.len() as u64)
            .and_then(|()| self.backing.write_at(&name, first * BLOCK, bytes));
        if let Err(e) = result {
            self.failed = true;
            return Err(io_data(id)(e).into());
        }
        if !exists {
            self.files.entry(id).or_default().created = true;
        }
        Ok(())
    }

    /// Logs `body` with `payload` (written, not synced); a failure stops
    /// the store.
    pub(crate) fn log_body(
        &mut self,
        body: &Body,
        payload: &[u8],
        now: Timestamp,
    ) -> Result<u64, FsError> {
        self.log_payload(body, payload, now).map(|(seq, _)| seq)
    }

    /// [`Self::log_body`], also saying where in the log `payload` went.
    fn log_payload<'p>(
        &mut self,
        body: &Body,
        payload: &'p [u8],
        now: Timestamp,
    ) -> Result<(u64, Payload<'p>), FsError> {
        if self.failed {
            return Err(MetaError::Stopped.into());
        }
        let time = nanos(now);
        let mut segments = BackingSegments::new(self.backing.as_ref());
        let logged = self
            .log
            .append(&self.keys, &mut segments, time, body, payload)
            .and_then(|(segment, _, seq)| {
                // The record, its payload last, ends where the next starts.
                let offset = self.log.offset() - payload.len() as u64;
                self.log
                    .write_out(&mut segments)
                    .map(|()| (seq, Payload::Logged { segment, offset }))
            });
        match logged {
            Ok(logged) => {
                self.last_time = time;
                Ok(logged)
            }
            Err(e) => {
                self.failed = true;
                Err(e.into())
            }
        }
    }

    /// Writes sealed blocks `first ..` of file `id` and sets its size to
    /// at least `size` (a write never shrinks a file); mtime and ctime
    /// become `now`. Fresh and journaled blocks go in separate `WRITE`
    /// records of at most 256 blocks each. [`Self::write_sealed`] takes
    /// the same blocks laid out one after the other.
    pub fn write_blocks(
        &mut self,
        id: u64,
        first: u64,
        blocks: &[SealedBlock],
        size: u64,
        now: Timestamp,
    ) -> Result<ObjectHead, FsError> {
        if blocks.iter().any(|b| b.ciphertext.len() != BLOCK as usize) {
            return Err(FsError::Invalid("a block's ciphertext is not 4,096 bytes"));
        }
        let nonce_tags: Vec<[u8; 40]> = blocks.iter().map(|b| b.nonce_tag).collect();
        let mut ciphertext = Vec::with_capacity(blocks.len() * BLOCK as usize);
        for b in blocks {
            ciphertext.extend_from_slice(&b.ciphertext);
        }
        self.write_sealed(id, first, &nonce_tags, &ciphertext, size, now)
    }

    /// [`Self::write_blocks`] of `nonce_tags.len()` blocks whose 4,096
    /// ciphertext bytes each follow one another in `ciphertext`: what the
    /// content layer seals a write into, written to the data file or the
    /// log without another copy.
    pub fn write_sealed(
        &mut self,
        id: u64,
        first: u64,
        nonce_tags: &[[u8; 40]],
        ciphertext: &[u8],
        size: u64,
        now: Timestamp,
    ) -> Result<ObjectHead, FsError> {
        // Nothing reaches a data file once the store stopped.
        if self.failed {
            return Err(MetaError::Stopped.into());
        }
        let mut record = self.regular(id)?;
        let count = nonce_tags.len();
        if ciphertext.len() != count * BLOCK as usize {
            return Err(FsError::Invalid("a block's ciphertext is not 4,096 bytes"));
        }
        if count == 0 {
            return Ok(record.head);
        }
        let end = first
            .checked_add(count as u64)
            .ok_or(FsError::Invalid("block number overflows"))?;
        let size = size.max(record.head.size);
        if end > blocks_for(size) {
            return Err(FsError::Invalid("blocks written past the size"));
        }
        let algorithm = self.keys.algorithm();
        let mut at = 0usize;
        while at < count {
            let n = first + at as u64;
            let current = self.entry_in(&record, n)?;
            let fresh = self.fresh(id, n, &current);
            let mut run = 1;
            while at + run < count && run < MAX_WRITE_BLOCKS {
                let m = first + (at + run) as u64;
                let current = self.entry_in(&record, m)?;
                if self.fresh(id, m, &current) != fresh {
                    break;
                }
                run += 1;
            }
            let run_tags = &nonce_tags[at..at + run];
            let run_bytes = &ciphertext[at * BLOCK as usize..(at + run) * BLOCK as usize];
            let run_end = n + run as u64;
            let run_size = if at + run == count {
                size
            } else {
                record.head.size.max(run_end * BLOCK)
            };
            if fresh {
                self.write_fresh(id, n, run_bytes)?;
            }
            let mut head = record.head.clone();
            head.size = run_size;
            head.inline = blocks_for(run_size) <= inline_blocks(self.keys.algorithm());
            head.mtime = now;
            head.ctime = now;
            let settled = self.files.get(&id).map_or(record.head.size, |f| f.settled);
            let body = Body::Write {
                head: head.encode(),
                first_block: n,
                mode: if fresh { FRESH } else { JOURNALED },
                settled_size: settled,
                entries: run_tags
                    .iter()
                    .map(|tag| {
                        let mut out = Vec::with_capacity(MapEntry::len(algorithm));
                        MapEntry::Sealed(*tag).encode(algorithm, &mut out);
                        out
                    })
                    .collect(),
            };
            let payload: &[u8] = if fresh { &[] } else { run_bytes };
            let (seq, logged) = self.log_payload(&body, payload, now)?;
            if let Err(e) = self.apply_file_record(&body, logged, seq) {
                self.failed = true;
                return Err(e.into());
            }
            record = self.regular(id)?;
            at += run;
        }
        Ok(record.head)
    }

    /// `truncate(2)` of file `id` to `size`. A shrink inside a sealed
    /// block needs that block resealed with its bytes past `size` zeroed
    /// (`tail`, from the content layer); anything else takes none.
    pub fn truncate(
        &mut self,
        id: u64,
        size: u64,
        tail: Option<SealedBlock>,
        now: Timestamp,
    ) -> Result<ObjectHead, FsError> {
        if self.failed {
            return Err(MetaError::Stopped.into());
        }
        let record = self.regular(id)?;
        let old = record.head.size;
        let t = size / BLOCK;
        let needs_tail = size < old
            && !size.is_multiple_of(BLOCK)
            && self.entry_in(&record, t)? != MapEntry::Hole;
        if needs_tail != tail.is_some() {
            return Err(FsError::Invalid(
                "a shrink inside a sealed block, and only that, takes its resealed tail",
            ));
        }
        if tail
            .as_ref()
            .is_some_and(|b| b.ciphertext.len() != BLOCK as usize)
        {
            return Err(FsError::Invalid("a block's ciphertext is not 4,096 bytes"));
        }
        let algorithm = self.keys.algorithm();
        let mut mode = 0;
        let mut payload = Vec::new();
        if let Some(block) = &tail {
            let current = self.entry_in(&record, t)?;
            if self.fresh(id, t, &current) {
                mode = FRESH;
                self.write_fresh(id, t, &block.ciphertext)?;
            } else {
                mode = JOURNALED;
                payload = block.ciphertext.clone();
            }
        }
        let mut head = record.head.clone();
        head.size = size;
        head.inline = blocks_for(size) <= inline_blocks(algorithm);
        head.mtime = now;
        head.ctime = now;
        let body = Body::Truncate {
            head: head.encode(),
            old_size: old,
            tail: mode,
            tail_entry: tail.as_ref().map(|b| {
                let mut out = Vec::new();
                b.entry().encode(algorithm, &mut out);
                out
            }),
        };
        let (seq, logged) = self.log_payload(&body, &payload, now)?;
        if let Err(e) = self.apply_file_record(&body, logged, seq) {
            self.failed = true;
            return Err(e.into());
        }
        Ok(head)
    }

    /// `fsync` of file `id` (§16.15): its data file if it holds fresh
    /// blocks not yet synced (and its directory entry if new), then the
    /// log, then a `SYNC(id)` record. When it returns, every write to the
    /// file before it, and every operation logged before it, survives
    /// any crash.
    pub fn sync_file(&mut self, id: u64) -> Result<(), MetaError> {
        let sync = self.begin_sync_file(id)?;
        let flushed = sync.run();
        self.end_sync_file(sync, flushed)
    }

    /// The first half of [`Self::sync_file`], for callers that flush
    /// without holding the store (the mount: other requests go on, and
    /// concurrent calls share the log's flush): what to flush. The caller
    /// keeps writes and truncates of file `id` out until
    /// [`Self::end_sync_file`] (the mount's per-inode lock), so that what
    /// the flush covers is what that call marks synced. Object 0 is the
    /// log alone (`fsyncdir`).
    pub fn begin_sync_file(&mut self, id: u64) -> Result<FileSync, MetaError> {
        if self.failed {
            return Err(MetaError::Stopped);
        }
        let (data, dir) = match self.files.get(&id) {
            Some(f) if !f.unsynced_fresh.is_empty() => (true, f.created),
            _ => (false, false),
        };
        let mut segments = BackingSegments::new(self.backing.as_ref());
        let log = match self.log.begin_sync(&mut segments) {
            Ok(log) => log,
            Err(e) => {
                self.failed = true;
                return Err(e);
            }
        };
        Ok(FileSync {
            backing: self.backing.clone(),
            group: self.group.clone(),
            id,
            data,
            dir,
            log,
        })
    }

    /// The last half of [`Self::sync_file`], with the outcome of
    /// [`FileSync::run`]: the `SYNC` record, and the file's fresh blocks
    /// counted as durable data from now on. Any failure stops the store
    /// (a write-back error is reported to one flush only).
    pub fn end_sync_file(
        &mut self,
        sync: FileSync,
        flushed: Result<Synced, MetaError>,
    ) -> Result<(), MetaError> {
        let result = flushed.and_then(|synced| self.end_sync_inner(&sync, synced));
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn end_sync_inner(&mut self, sync: &FileSync, synced: Synced) -> Result<(), MetaError> {
        if self.failed {
            return Err(MetaError::Stopped);
        }
        // The flush that covered this call's records, perhaps reaching
        // further (another caller's): a `SYNC` may follow the last
        // record it covered.
        if let Some(flush) = synced.log {
            let mut segments = BackingSegments::new(self.backing.as_ref());
            self.log
                .end_sync(&self.keys, &mut segments, self.last_time, sync.id, flush)?;
        }
        let size = {
            let pager = Pager::new(&self.keys, self.backing.as_ref());
            self.objects.get(&pager, sync.id)?.map(|r| r.head.size)
        };
        if let (Some(f), Some(size)) = (self.files.get_mut(&sync.id), size) {
            self.unsynced_fresh_blocks -= f.note_sync(size);
            // Until its directory is synced, a new data file may vanish
            // in a crash: the next sync with fresh blocks, or the
            // checkpoint, syncs it.
            f.created &= !sync.dir;
        }
        Ok(())
    }

    /// A replayed `SYNC` of a file.
    pub(crate) fn replay_sync(&mut self, id: u64) -> Result<(), MetaError> {
        let size = {
            let pager = Pager::new(&self.keys, self.backing.as_ref());
            self.objects.get(&pager, id)?.map(|r| r.head.size)
        };
        if let (Some(f), Some(size)) = (self.files.get_mut(&id), size) {
            self.unsynced_fresh_blocks -= f.note_sync(size);
        }
        Ok(())
    }

    /// Applies a `WRITE` or `TRUNCATE` record, live or replayed. Checks
    /// what a genuine record always satisfies.
    pub(crate) fn apply_file_record(
        &mut self,
        body: &Body,
        payload: Payload<'_>,
        seq: u64,
    ) -> Result<(), MetaError> {
        let algorithm = self.keys.algorithm();
        let decode_head = |bytes: &[u8; HEAD_LEN]| {
            ObjectHead::decode(bytes).map_err(|why| inconsistent(seq, why))
        };
        let entry = |bytes: &[u8]| match MapEntry::decode(algorithm, bytes) {
            Some(e @ MapEntry::Sealed(_)) => Ok(e),
            _ => Err(inconsistent(seq, "a block entry that is not sealed")),
        };
        let (head, sets) = match body {
            Body::Write {
                head,
                first_block,
                mode,
                settled_size,
                entries,
            } => {
                let head = decode_head(head)?;
                let record = self.file_record(&head, seq)?;
                if head.size < record.head.size {
                    return Err(inconsistent(seq, "a WRITE that shrinks its file"));
                }
                let end = first_block
                    .checked_add(entries.len() as u64)
                    .ok_or_else(|| inconsistent(seq, "block number overflows"))?;
                if end > blocks_for(head.size) {
                    return Err(inconsistent(seq, "a WRITE past its file's size"));
                }
                self.files
                    .entry(head.id)
                    .or_insert_with(|| FileState::new(*settled_size));
                let mut sets = Vec::with_capacity(entries.len());
                for (i, bytes) in entries.iter().enumerate() {
                    let n = first_block + i as u64;
                    let current = self.entry_in(&record, n)?;
                    let fresh = *mode == FRESH;
                    let change = self
                        .files
                        .get_mut(&head.id)
                        .expect("inserted above")
                        .note_write(n, &current, fresh);
                    self.unsynced_fresh_blocks =
                        self.unsynced_fresh_blocks.saturating_add_signed(change);
                    if fresh {
                        self.journaled.remove(&(head.id, n));
                    } else {
                        self.journaled.insert((head.id, n), payload.block(i));
                    }
                    sets.push((n, entry(bytes)?));
                }
                (head, sets)
            }
            Body::Truncate {
                head,
                old_size,
                tail,
                tail_entry,
            } => {
                let head = decode_head(head)?;
                let record = self.file_record(&head, seq)?;
                if record.head.size != *old_size {
                    return Err(inconsistent(seq, "a TRUNCATE from a size the file has not"));
                }
                let new_blocks = blocks_for(head.size);
                let mut sets = Vec::new();
                if let Some(bytes) = tail_entry {
                    let t = head.size / BLOCK;
                    if head.size >= *old_size || head.size.is_multiple_of(BLOCK) {
                        return Err(inconsistent(seq, "a tail on a truncate that cuts no block"));
                    }
                    let current = self.entry_in(&record, t)?;
                    let state = self
                        .files
                        .entry(head.id)
                        .or_insert_with(|| FileState::new(record.head.size));
                    let change = state.note_write(t, &current, *tail == FRESH);
                    self.unsynced_fresh_blocks =
                        self.unsynced_fresh_blocks.saturating_add_signed(change);
                    if *tail == FRESH {
                        self.journaled.remove(&(head.id, t));
                    } else {
                        self.journaled.insert((head.id, t), payload.block(0));
                    }
                    sets.push((t, entry(bytes)?));
                }
                let state = self
                    .files
                    .entry(head.id)
                    .or_insert_with(|| FileState::new(record.head.size));
                state.settled = head.size;
                if new_blocks < blocks_for(*old_size) {
                    state.shrunk_to =
                        Some(state.shrunk_to.map_or(new_blocks, |s| s.min(new_blocks)));
                    state.trim = true;
                    let before = state.unsynced_fresh.len() as u64;
                    state.unsynced_fresh.retain(|&n| n < new_blocks);
                    self.unsynced_fresh_blocks -= before - state.unsynced_fresh.len() as u64;
                    let id = head.id;
                    self.journaled
                        .retain(|&(i, n), _| i != id || n < new_blocks);
                }
                (head, sets)
            }
            _ => return Err(inconsistent(seq, "not a record of file contents")),
        };
        self.reshape(head, &sets, seq)
    }

    /// The live record of the regular file `head` names, checked against
    /// it.
    fn file_record(&mut self, head: &ObjectHead, seq: u64) -> Result<ObjectRecord, MetaError> {
        let pager = Pager::new(&self.keys, self.backing.as_ref());
        match self.objects.get(&pager, head.id)? {
            Some(r)
                if r.head.kind == ObjectKind::Regular
                    && head.kind == ObjectKind::Regular
                    && r.head.file_id == head.file_id =>
            {
                Ok(r)
            }
            _ => Err(inconsistent(
                seq,
                format!(
                    "changes the contents of object {}, not a live regular file",
                    head.id
                ),
            )),
        }
    }

    /// Gives file `head.id` its new head and sets `sets` in its map,
    /// moving the map between the record (`INLINE`) and a tree as its
    /// new size requires (§16.6: one canonical form) and emptying every
    /// entry past the new end.
    pub(crate) fn reshape(
        &mut self,
        head: ObjectHead,
        sets: &[(u64, MapEntry)],
        seq: u64,
    ) -> Result<(), MetaError> {
        let algorithm = self.keys.algorithm();
        let id = head.id;
        let pager = Pager::new(&self.keys, self.backing.as_ref());
        let mut record = self
            .objects
            .get(&pager, id)?
            .ok_or_else(|| inconsistent(seq, format!("object {id} is not live")))?;
        let old_blocks = blocks_for(record.head.size);
        let new_blocks = blocks_for(head.size);
        let inline = new_blocks <= inline_blocks(algorithm);
        if head.inline != inline {
            return Err(inconsistent(
                seq,
                format!("object {id}: INLINE flag not canonical"),
            ));
        }
        if sets.iter().any(|(n, _)| *n >= new_blocks) {
            return Err(inconsistent(seq, "an entry past the end of its file"));
        }
        let content = match (&record.content, inline) {
            (Content::InlineMap(entries), true) => {
                let mut entries = entries.clone();
                entries.resize(new_blocks as usize, MapEntry::Hole);
                for (n, e) in sets {
                    entries[*n as usize] = *e;
                }
                Content::InlineMap(entries)
            }
            (Content::InlineMap(entries), false) => {
                let mut map = Radix::empty(id, algorithm, MAX_TREE_DEPTH);
                for (n, e) in entries.iter().enumerate() {
                    map.set(&pager, n as u64, *e)?;
                }
                for (n, e) in sets {
                    map.set(&pager, *n, *e)?;
                }
                self.maps.insert(id, map);
                Content::Tree(Root {
                    reference: PageRef::NULL,
                    depth: 0,
                })
            }
            (Content::Tree(root), true) => {
                let map = Self::map_of(&mut self.maps, algorithm, id, *root);
                let mut entries = Vec::with_capacity(new_blocks as usize);
                for n in 0..new_blocks {
                    entries.push(map.get(&pager, n)?);
                }
                map.clear_from(&pager, &mut self.alloc, 0)?;
                // Flushed empty, it releases its root too.
                map.flush(&pager, &mut self.alloc)?;
                self.maps.remove(&id);
                for (n, e) in sets {
                    entries[*n as usize] = *e;
                }
                Content::InlineMap(entries)
            }
            (Content::Tree(root), false) => {
                let map = Self::map_of(&mut self.maps, algorithm, id, *root);
                if new_blocks < old_blocks {
                    map.clear_from(&pager, &mut self.alloc, new_blocks)?;
                }
                for (n, e) in sets {
                    map.set(&pager, *n, *e)?;
                }
                record.content.clone()
            }
            _ => return Err(inconsistent(seq, format!("object {id} has no block map"))),
        };
        record.head = head;
        record.content = content;
        record.changed_at = seq;
        record
            .check(algorithm)
            .map_err(|why| inconsistent(seq, why))?;
        self.objects.set(&pager, record)?;
        Ok(())
    }

    /// Frees the map pages of a regular file being freed, forgets its
    /// blocks, and lists its data file for removal after the next
    /// checkpoint.
    pub(crate) fn free_file(&mut self, record: &ObjectRecord) -> Result<(), MetaError> {
        let id = record.head.id;
        if let Content::Tree(root) = record.content {
            let pager = Pager::new(&self.keys, self.backing.as_ref());
            let map = Self::map_of(&mut self.maps, self.keys.algorithm(), id, root);
            map.clear_from(&pager, &mut self.alloc, 0)?;
            map.flush(&pager, &mut self.alloc)?;
        }
        self.maps.remove(&id);
        if let Some(f) = self.files.remove(&id) {
            self.unsynced_fresh_blocks -= f.unsynced_fresh.len() as u64;
        }
        self.journaled.retain(|&(i, _), _| i != id);
        self.freed_data.insert(id);
        Ok(())
    }

    /// Checkpoint step 3 and the map part of step 4: journaled blocks
    /// written in place, every loaded map flushed into its record.
    /// Returns the data files to sync before the superblock: those it
    /// wrote, and those holding fresh blocks not flushed ahead of it.
    pub(crate) fn checkpoint_files(&mut self) -> Result<BTreeSet<u64>, MetaError> {
        let mut to_sync: BTreeSet<u64> = self.unflushed().collect();
        let mut journaled: Vec<_> = self.journaled.iter().collect();
        journaled.sort_by_key(|(k, _)| **k);
        // One write per run of consecutive blocks of a file (at most
        // MAX_WRITE_BLOCKS), read from the log with one read per run of
        // them that follow each other there too.
        let mut buf = vec![0u8; MAX_WRITE_BLOCKS * BLOCK as usize];
        let mut at = 0;
        while at < journaled.len() {
            let (id, first) = *journaled[at].0;
            let mut run = 1;
            while run < MAX_WRITE_BLOCKS
                && journaled
                    .get(at + run)
                    .is_some_and(|((i, n), _)| *i == id && *n == first + run as u64)
            {
                run += 1;
            }
            let blocks: Vec<(usize, &Journaled)> = journaled[at..at + run]
                .iter()
                .enumerate()
                .map(|(k, (_, block))| (k, *block))
                .collect();
            let bytes = &mut buf[..run * BLOCK as usize];
            read_journaled(self.backing.as_ref(), &blocks, bytes)?;
            self.backing
                .write_at(&data_file_name(id), first * BLOCK, bytes)
                .map_err(io_data(id))?;
            to_sync.insert(id);
            at += run;
        }
        let pager = Pager::new(&self.keys, self.backing.as_ref());
        let mut ids: Vec<u64> = self.maps.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let map = self.maps.get_mut(&id).expect("listed");
            let root = map.flush(&pager, &mut self.alloc)?;
            let mut record = self.objects.get(&pager, id)?.ok_or_else(|| {
                MetaError::Inconsistent(format!("block map of a freed object {id}"))
            })?;
            if record.content != Content::Tree(root) {
                record.content = Content::Tree(root);
                self.objects.set(&pager, record)?;
            }
        }
        Ok(to_sync)
    }

    /// Checkpoint step 5 for data files: `to_sync` and the directory
    /// entries of data files created since the last checkpoint.
    pub(crate) fn sync_data_files(&self, to_sync: &BTreeSet<u64>) -> Result<(), MetaError> {
        let created = self.files.values().filter(|f| f.created).count();
        if to_sync.len() + created > SYNCFS_ABOVE
            && self
                .backing
                .sync_all()
                .map_err(MetaError::io("syncing the backing file system"))?
        {
            return Ok(());
        }
        for &id in to_sync {
            self.backing
                .sync(&data_file_name(id))
                .map_err(io_data(id))?;
        }
        let dirs: BTreeSet<String> = self
            .files
            .iter()
            .filter(|(_, f)| f.created)
            .map(|(id, _)| data_dir_name(*id))
            .collect();
        for dir in dirs {
            self.backing
                .sync_dir(&dir)
                .map_err(MetaError::io(format!("syncing {dir}")))?;
        }
        Ok(())
    }

    /// Checkpoint step 7 for data files, once the superblock is durable:
    /// data files of freed objects removed, shrunk ones trimmed to their
    /// size. Returns how many were removed. A crash before this leaves
    /// longer or unreferenced data files, which nothing reads.
    pub(crate) fn after_checkpoint_files(&mut self) -> Result<u64, MetaError> {
        let mut removed = 0;
        for id in std::mem::take(&mut self.freed_data) {
            match self.backing.remove(&data_file_name(id)) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_data(id)(e)),
            }
        }
        let trims: Vec<u64> = self
            .files
            .iter()
            .filter(|(_, f)| f.trim)
            .map(|(id, _)| *id)
            .collect();
        for id in trims {
            let pager = Pager::new(&self.keys, self.backing.as_ref());
            let Some(record) = self.objects.get(&pager, id)? else {
                continue;
            };
            let len = blocks_for(record.head.size) * BLOCK;
            let name = data_file_name(id);
            if self
                .backing
                .len(&name)
                .map_err(io_data(id))?
                .is_some_and(|l| l > len)
            {
                self.backing.set_len(&name, len).map_err(io_data(id))?;
            }
        }
        self.files.clear();
        self.unsynced_fresh_blocks = 0;
        self.journaled.clear();
        Ok(removed)
    }

    /// Recovery step 3 (§16.16): every fresh block the replay left
    /// without a `SYNC` of its file is read and checked; one that does
    /// not open was lost with the power and becomes a hole, and a file
    /// whose last blocks are such holes is cut back to the end of its
    /// last sealed block, never below its settled size. Every replayed
    /// file's data file is trimmed by the checkpoint that follows.
    pub(crate) fn check_fresh_blocks(
        &mut self,
        verifier: &dyn BlockVerifier,
    ) -> Result<BlockCheck, MetaError> {
        let mut check = BlockCheck::default();
        let mut ids: Vec<u64> = self.files.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            // What the crash left of the data file is what the checkpoint
            // after recovery makes durable, its directory entry included
            // (after a `kill -9` it may still sit in the page cache only);
            // a data file that vanished holds no block left sealed.
            let exists = self
                .backing
                .len(&data_file_name(id))
                .map_err(io_data(id))?
                .is_some();
            let state = self.files.get_mut(&id).expect("listed");
            state.trim = true;
            state.fresh_written &= exists;
            state.created = state.fresh_written;
            let fresh: Vec<u64> = state.unsynced_fresh.iter().copied().collect();
            let settled = state.settled;
            if fresh.is_empty() {
                continue;
            }
            let pager = Pager::new(&self.keys, self.backing.as_ref());
            let Some(record) = self.objects.get(&pager, id)? else {
                continue;
            };
            let mut reverted = Vec::new();
            for n in fresh {
                let MapEntry::Sealed(nonce_tag) = self.entry_in(&record, n)? else {
                    continue;
                };
                if self.journaled.contains_key(&(id, n)) {
                    continue;
                }
                let mut ciphertext = vec![0u8; BLOCK as usize];
                let ok = self
                    .backing
                    .read_exact_at(&data_file_name(id), n * BLOCK, &mut ciphertext)
                    .is_ok()
                    && verifier.verify(&record.head.file_id, n, &nonce_tag, &ciphertext);
                if !ok {
                    reverted.push((n, MapEntry::Hole));
                }
            }
            if reverted.is_empty() {
                continue;
            }
            check.reverted += reverted.len() as u64;
            let seq = record.changed_at;
            self.reshape(record.head.clone(), &reverted, seq)?;
            let blocks = blocks_for(record.head.size);
            if !reverted.iter().any(|(n, _)| *n + 1 == blocks) {
                continue;
            }
            let pager = Pager::new(&self.keys, self.backing.as_ref());
            let record = self.objects.get(&pager, id)?.expect("just set");
            let mut end = blocks;
            while end > 0 && self.entry_in(&record, end - 1)? == MapEntry::Hole {
                end -= 1;
            }
            let size = (end * BLOCK).max(settled).min(record.head.size);
            if size < record.head.size {
                check.cut_back += 1;
                check.trimmed += record.head.size - size;
                let mut head = record.head.clone();
                head.size = size;
                head.inline = blocks_for(size) <= inline_blocks(self.keys.algorithm());
                self.reshape(head, &[], seq)?;
            }
        }
        Ok(check)
    }
}

/// The blocks [`Store::locate_blocks`] found: each one's map entry, and
/// the runs of them to read from the data file.
pub struct BlockPlan {
    id: u64,
    first: u64,
    entries: Vec<MapEntry>,
    /// `(index of the first block, blocks)` of each run read from the
    /// data file, ascending.
    runs: Vec<(usize, usize)>,
    backing: Arc<dyn Backing>,
}

impl BlockPlan {
    /// The number of the first block located.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// The map entry of each block, from the first: a hole is never read.
    pub fn entries(&self) -> &[MapEntry] {
        &self.entries
    }

    /// Reads the blocks that are in the data file into `buf` (the buffer
    /// given to [`Store::locate_blocks`]), one read per contiguous run. A
    /// missing data file, or one that ends before a block, is an
    /// authentication failure of that block.
    pub fn fetch(&self, buf: &mut [u8]) -> Result<(), FsError> {
        let name = data_file_name(self.id);
        let len = BLOCK as usize;
        for &(start, count) in &self.runs {
            let run = &mut buf[start * len..(start + count) * len];
            let offset = (self.first + start as u64) * BLOCK;
            let mut done = 0;
            while done < run.len() {
                let read = match self
                    .backing
                    .read_at(&name, offset + done as u64, &mut run[done..])
                {
                    Ok(read) => read,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                    Err(e) => return Err(io_data(self.id)(e).into()),
                };
                if read == 0 {
                    return Err(MetaError::Auth(Location::DataFile {
                        object: self.id,
                        block: self.first + (start + done / len) as u64,
                    })
                    .into());
                }
                done += read;
            }
        }
        Ok(())
    }
}

/// The flushes of one `fsync` ([`Store::begin_sync_file`]), done without
/// the store.
pub struct FileSync {
    backing: Arc<dyn Backing>,
    /// The store's log flushes, shared with concurrent calls.
    group: Arc<GroupCommit>,
    id: u64,
    /// The data file holds fresh blocks not yet synced.
    data: bool,
    /// ... and was created since the checkpoint: its directory too.
    dir: bool,
    log: Option<Flush>,
}

impl FileSync {
    /// `fdatasync` of the data file (and `fsync` of its directory), then
    /// of the log segment (§16.15), shared with the calls flushing at the
    /// same time ([`GroupCommit`]). A segment gone meanwhile was retired
    /// by a checkpoint, which synced it first.
    pub fn run(&self) -> Result<Synced, MetaError> {
        let id = self.id;
        if self.data {
            self.backing
                .sync(&data_file_name(id))
                .map_err(io_data(id))?;
        }
        if self.dir {
            self.backing
                .sync_dir(&data_dir_name(id))
                .map_err(MetaError::io(format!("syncing {}", data_dir_name(id))))?;
        }
        let log = match self.log {
            Some(flush) => Some(self.group.flush(self.backing.as_ref(), flush)?),
            None => None,
        };
        Ok(Synced { log })
    }
}

/// What [`FileSync::run`] made durable, for [`Store::end_sync_file`]:
/// only `run` makes one, so a `SYNC` record is only ever written after a
/// flush that completed.
#[derive(Debug)]
pub struct Synced {
    /// The log flush that covered the call's records (`None`: they were
    /// durable already).
    log: Option<Flush>,
}

/// The data files a checkpoint would sync, to flush ahead of it without
/// the store ([`Store::flush_ahead`]).
pub struct FlushAhead {
    backing: Arc<dyn Backing>,
    /// Each data file with its `fresh_writes` and `fresh_blocks` when
    /// listed.
    ids: Vec<(u64, u64, u64)>,
    /// Those among them created since the checkpoint: their directories.
    created: Vec<u64>,
}

impl FlushAhead {
    /// Flushes each data file and the directories of new ones (or the
    /// backing file system, for more than [`SYNCFS_ABOVE`]). A file
    /// removed since was freed: nothing to do.
    pub fn run(&self) -> Result<(), MetaError> {
        if self.ids.len() + self.created.len() > SYNCFS_ABOVE
            && self
                .backing
                .sync_all()
                .map_err(MetaError::io("syncing the backing file system"))?
        {
            return Ok(());
        }
        for &(id, _, _) in &self.ids {
            match self.backing.sync(&data_file_name(id)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_data(id)(e));
                }
                _ => {}
            }
        }
        let dirs: BTreeSet<String> = self.created.iter().map(|&id| data_dir_name(id)).collect();
        for dir in dirs {
            self.backing
                .sync_dir(&dir)
                .map_err(MetaError::io(format!("syncing {dir}")))?;
        }
        Ok(())
    }

    /// Whether there is nothing to flush.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.created.is_empty()
    }
}

impl Store {
    /// The data files holding fresh blocks written since the last
    /// checkpoint, which the next one syncs (§16.13 step 5) under the
    /// caller's lock: [`FlushAhead::run`] flushes them first without it,
    /// while requests go on, so the checkpoint's own sync finds little
    /// to write. Hand its outcome to [`Self::flushed_ahead`].
    ///
    /// Only files with fresh writes since their last flush ahead are
    /// listed, so a caller may flush ahead again until what is left is
    /// small ([`Self::unflushed_count`]): a stream of writes meanwhile
    /// then costs the checkpoint a few `fdatasync`s, not a `syncfs`.
    pub fn flush_ahead(&self) -> FlushAhead {
        FlushAhead {
            backing: self.backing.clone(),
            ids: self
                .files
                .iter()
                .filter(|(_, f)| f.unflushed())
                .map(|(id, f)| (*id, f.fresh_writes, f.fresh_blocks))
                .collect(),
            created: self
                .files
                .iter()
                .filter(|(_, f)| f.created)
                .map(|(id, _)| *id)
                .collect(),
        }
    }

    /// The outcome of a [`FlushAhead`]: the files it flushed count as
    /// durable up to their writes when listed (and new ones' directory
    /// entries as durable). A failure stops the store, as a failed
    /// checkpoint does (the kernel reports a write-back error to one
    /// flush of a file only, so the checkpoint's could miss it).
    pub fn flushed_ahead(
        &mut self,
        ahead: &FlushAhead,
        result: Result<(), MetaError>,
    ) -> Result<(), MetaError> {
        if result.is_err() {
            self.failed = true;
            return result;
        }
        for &(id, writes, blocks) in &ahead.ids {
            if let Some(f) = self.files.get_mut(&id) {
                f.flushed_at = Some(writes);
                f.flushed_blocks = blocks;
            }
        }
        for id in &ahead.created {
            if let Some(f) = self.files.get_mut(id) {
                f.created = false;
            }
        }
        Ok(())
    }

    /// Data files with fresh writes not yet flushed ahead.
    fn unflushed(&self) -> impl Iterator<Item = u64> + '_ {
        self.files
            .iter()
            .filter(|(_, f)| f.unflushed())
            .map(|(id, _)| *id)
    }

    /// What the next checkpoint would sync of data files and their
    /// directories, journaled blocks aside: above [`SYNCFS_ABOVE`], a
    /// `syncfs` under the store's lock.
    pub fn unflushed_count(&self) -> usize {
        self.files.values().filter(|f| f.needs_flush()).count()
    }

    /// Bytes of fresh blocks written since the last flush ahead (or the
    /// checkpoint): what the next checkpoint would sync of them under
    /// the caller's lock. A stream of writes makes this grow while a
    /// flush ahead runs; another round flushes it without the lock.
    pub fn unflushed_bytes(&self) -> u64 {
        self.files
            .values()
            .filter(|f| f.unflushed())
            .map(|f| (f.fresh_blocks - f.flushed_blocks) * BLOCK)
            .sum()
    }

    /// Bytes of fresh blocks written since the last checkpoint and not
    /// yet covered by a `SYNC` of their file: what recovery would read
    /// and verify after a crash (§16.16 step 3), which §16.13's
    /// fresh-byte trigger bounds. A file's `fsync` takes its blocks out.
    pub fn unsynced_fresh_bytes(&self) -> u64 {
        self.unsynced_fresh_blocks * BLOCK
    }

    /// Bytes of journaled blocks since the last checkpoint, which it
    /// copies from the log in place (a bound of the mount's checkpoint
    /// trigger: of the log, and of the checkpoint's work under the lock).
    pub fn journaled_bytes(&self) -> u64 {
        self.journaled.len() as u64 * BLOCK
    }
}
