//! An open format 2 metadata store: the object table, directories and
//! symlink blobs of one vault. Every namespace operation is first a
//! `META` record in the log (docs/format.md §16.12), written before the
//! call returns and durable at the next [`Store::sync`]; then it changes
//! the in-memory pages, which copy-on-write checkpoints (§16.13) write
//! out. [`Store::open`] recovers (§16.16): the last checkpoint plus the
//! durable prefix of the log.
//!
//! Block maps and file contents are `file.rs`'s, extended attributes
//! `xattr.rs`'s; the witness joins in stage 5 of docs/plans/format-2.md.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::backing::Backing;
use crate::bitmap;
use crate::blocks::BlockVerifier;
use crate::bytes::{Put, Reader};
use crate::change::{self, Change};
use crate::directory::{DirEntry, Directory, MAX_NAME, valid_name};
use crate::error::MetaError;
use crate::file::FileState;
use crate::keys::MetaKeys;
use crate::log::{self, BackingSegments, Body, GroupCommit, LogWriter, SegmentStore};
use crate::objects::ObjectTable;
use crate::page::{Expect, PAGE_SIZE, PageHeader, PageKind, PageRef, REF_LEN, item_space};
use crate::pager::{Allocator, META_FILE, Pager};
use crate::radix::Radix;
use crate::record::{
    Content, INLINE_TARGET, MAX_TARGET, MapEntry, ObjectHead, ObjectKind, ObjectRecord, ROOT_ID,
    Timestamp,
};
use crate::recovery;
use crate::superblock::{Generation, MAX_RECENT, Root, State, Superblock};

/// What a namespace operation refused, as the file system reports it.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("file name too long")]
    NameTooLong,
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("operation not permitted: {0}")]
    NotPermitted(&'static str),
    /// No attribute of that name (`ENODATA`).
    #[error("no such attribute")]
    NoData,
    /// An attribute name too long (`ERANGE`, as the kernel says it).
    #[error("attribute name too long")]
    Range,
    /// An attribute value too long (`E2BIG`).
    #[error("attribute value too long")]
    TooBig,
    /// A per-object bound reached (`ENOSPC`).
    #[error("no space: {0}")]
    NoSpace(&'static str),
    /// Not something a vault stores (`EOPNOTSUPP`).
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// The config a checkpoint records (§16.3): its generation and the
/// SHA-256 of its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigBinding {
    pub generation: u64,
    pub hash: [u8; 32],
}

/// What recovery at open did (§16.16 step 6, the counts of its
/// `RECOVERY` record): `None` when the log held nothing to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recovery {
    /// Log records after the checkpoint, its own `CHECKPOINT` excluded.
    pub replayed: u64,
    /// Fresh blocks written without an fsync and lost: now holes.
    pub reverted: u64,
    /// Files whose size was cut back to their last sealed block.
    pub cut_back: u64,
    /// Bytes those files lost.
    pub trimmed: u64,
    /// Data files of objects freed in the replay, removed.
    pub removed: u64,
    /// A torn tail of the log was cut.
    pub torn: bool,
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} log records replayed; {} blocks written without fsync lost (now holes), \
             {} files cut back by {} bytes, {} data files of freed objects removed",
            self.replayed, self.reverted, self.cut_back, self.trimmed, self.removed
        )?;
        if self.torn {
            f.write_str("; a torn log tail cut")?;
        }
        Ok(())
    }
}

/// Who opens a store: the reason of its `MOUNT` record (§16.12), and
/// which superblock states it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opener {
    /// A mount, or `fsck` (which opens the store as a mount does).
    Mount = 1,
    /// `atrest migrate`.
    Migrate = 3,
}

/// A new object's kind and attributes.
#[derive(Debug, Clone)]
pub struct NewObject {
    pub kind: ObjectKind,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    /// Device number of a character or block device.
    pub rdev: u64,
    /// A symlink's target.
    pub target: Vec<u8>,
}

/// Attribute changes of `setattr` (sizes are the content layer's).
#[derive(Debug, Clone, Default)]
pub struct SetAttr {
    pub mode: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: Option<Timestamp>,
    pub mtime: Option<Timestamp>,
}

/// How `rename` treats an existing destination (`renameat2` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RenameMode {
    #[default]
    Replace,
    NoReplace,
    Exchange,
}

pub struct Store {
    pub(crate) keys: MetaKeys,
    pub(crate) backing: Arc<dyn Backing>,
    /// The last durable superblock.
    pub(crate) superblock: Superblock,
    pub(crate) alloc: Allocator,
    pub(crate) bitmap_pages: Vec<u64>,
    pub(crate) objects: ObjectTable,
    pub(crate) dirs: HashMap<u64, Directory>,
    /// Symlink targets longer than a record holds, until a checkpoint
    /// writes their blob pages.
    pub(crate) unwritten_blobs: HashMap<u64, Vec<u8>>,
    /// Block maps of regular files not inline, loaded on first use.
    pub(crate) maps: HashMap<u64, Radix<MapEntry>>,
    /// Where the ciphertext of journaled blocks is, by (object, block),
    /// until the next checkpoint writes it in place (§16.13 step 3).
    pub(crate) journaled: HashMap<(u64, u64), crate::file::Journaled>,
    /// Regular files written or truncated since the last checkpoint.
    pub(crate) files: HashMap<u64, FileState>,
    /// The fresh blocks of `files` no `SYNC` covered yet, counted
    /// ([`Store::unsynced_fresh_bytes`]).
    pub(crate) unsynced_fresh_blocks: u64,
    /// Objects freed since the last checkpoint whose data files it
    /// removes once it is durable.
    pub(crate) freed_data: BTreeSet<u64>,
    pub(crate) next_id: u64,
    pub(crate) log: LogWriter,
    /// Flushes of the log shared by concurrent `fsync` calls, which make
    /// them without the store ([`crate::FileSync`]).
    pub(crate) group: Arc<GroupCommit>,
    /// Time of the last record, for the records of calls that take none
    /// (`SYNC`): informational only.
    pub(crate) last_time: u64,
    /// Objects open through the mount ([`Store::set_open`]): one whose
    /// last name goes stays, as an `ORPHAN`, until it is closed.
    pub(crate) open: HashSet<u64>,
    /// Attributes of objects read or changed since the last checkpoint
    /// (`xattr.rs`), which writes the changed ones and drops them all.
    pub(crate) xattrs: HashMap<u64, crate::xattr::Xattrs>,
    /// What recovery at open did, if anything.
    pub(crate) recovery: Option<Recovery>,
    /// The config this store was opened with, which every checkpoint
    /// records (§16.3): a config put back from before it is then refused.
    pub(crate) config: ConfigBinding,
    /// The generations the next checkpoint lists as acknowledged (§16.17):
    /// the superblock's, and the `WITNESSED` records since.
    pub(crate) acknowledged: crate::witness::Acknowledged,
    /// A write to the log or a checkpoint failed: what is in memory may be
    /// ahead of what the disk holds, so nothing more is written until the
    /// vault is opened again (and recovered from the disk).
    pub(crate) failed: bool,
}

impl Store {
    /// Formats the metadata of a new vault: an empty root directory with the
    /// given mode and owner, checkpoint 1 and the log segment it starts.
    pub fn format(
        keys: MetaKeys,
        backing: Arc<dyn Backing>,
        config: ConfigBinding,
        root: (u16, u32, u32),
        now: Timestamp,
    ) -> Result<Self, MetaError> {
        if backing
            .len(META_FILE)
            .map_err(MetaError::io("reading atrest.meta"))?
            .is_some()
        {
            return Err(MetaError::Inconsistent("atrest.meta already exists".into()));
        }
        let mut segments = BackingSegments::new(backing.as_ref());
        if !segments.list()?.is_empty() {
            return Err(MetaError::Inconsistent(
                "atrest.log/ already holds log segments".into(),
            ));
        }
        // Segment 0 holds nothing: the first checkpoint's cut starts
        // segment 1 with CHECKPOINT(1) at sequence 1, and retires it.
        let log = LogWriter::create(
            &keys,
            &mut segments,
            0,
            1,
            log::chain_genesis(keys.vault_id()),
        )?;
        let algorithm = keys.algorithm();
        let superblock = Superblock {
            algorithm,
            state: State::Open,
            vault_id: *keys.vault_id(),
            generation: Generation {
                checkpoint: 0,
                sequence: 0,
                chain: [0; 32],
            },
            replay_segment: 0,
            replay_offset: 0,
            config_generation: config.generation,
            config_hash: config.hash,
            object_table: empty_root(),
            bitmap: empty_root(),
            page_count: 2,
            next_object_id: ROOT_ID + 1,
            pending: PageRef::NULL,
            time_ms: 0,
            recent: Vec::new(),
            acknowledged: Vec::new(),
        };
        // Both superblock pages exist from the start (zero until written).
        backing
            .write_at(META_FILE, 0, &[0u8; 2 * PAGE_SIZE])
            .map_err(MetaError::io("writing atrest.meta"))?;
        let mut store = Self {
            keys,
            backing,
            superblock,
            alloc: Allocator::new(),
            bitmap_pages: Vec::new(),
            objects: ObjectTable::empty(algorithm),
            dirs: HashMap::new(),
            unwritten_blobs: HashMap::new(),
            maps: HashMap::new(),
            journaled: HashMap::new(),
            files: HashMap::new(),
            unsynced_fresh_blocks: 0,
            freed_data: BTreeSet::new(),
            next_id: ROOT_ID + 1,
            log,
            group: Arc::new(GroupCommit::new()),
            last_time: nanos(now),
            open: HashSet::new(),
            xattrs: HashMap::new(),
            recovery: None,
            config,
            acknowledged: crate::witness::Acknowledged::default(),
            failed: false,
        };
        let (mode, uid, gid) = root;
        let head = ObjectHead {
            id: ROOT_ID,
            kind: ObjectKind::Directory,
            inline: false,
            orphan: false,
            mode: mode & 0o7777,
            uid,
            gid,
            nlink: 2,
            size: 0,
            mtime: now,
            ctime: now,
            atime: now,
            btime: now,
            rdev: 0,
            parent: ROOT_ID,
            file_id: [0; 16],
        };
        let pager = Pager::new(&store.keys, store.backing.as_ref());
        store.objects.set(
            &pager,
            ObjectRecord {
                head,
                content: Content::Tree(empty_root()),
                xattrs: PageRef::NULL,
                changed_at: 0,
            },
        )?;
        store.dirs.insert(ROOT_ID, Directory::empty(ROOT_ID));
        store.checkpoint(now)?;
        // The entries of atrest.meta and atrest.log/, so that the vault
        // exists after a crash.
        store
            .backing
            .sync_dir("")
            .map_err(MetaError::io("syncing the vault directory"))?;
        Ok(store)
    }

    /// Opens the metadata of a vault and recovers it (§16.16 steps 1–3,
    /// 5–6): the newer valid superblock, its config binding checked
    /// against the config just opened, then every record of the durable
    /// prefix of the log after its checkpoint applied (journaled blocks
    /// checked by `verifier` as they are read), fresh blocks no `SYNC`
    /// covered checked and lost ones reverted to holes; a torn tail is
    /// cut, and a vault that needed recovery is checkpointed at once.
    pub fn open(
        keys: MetaKeys,
        backing: Arc<dyn Backing>,
        config: ConfigBinding,
        verifier: &dyn BlockVerifier,
    ) -> Result<Self, MetaError> {
        Self::open_witnessed(keys, backing, config, verifier, |_, _| Ok(()))
    }

    /// [`Self::open`] with the witness check (§16.16 step 4): `witness`
    /// is shown the authenticated superblock once the log has been read
    /// and before recovery writes anything, and its refusal ends the open
    /// with the disk untouched.
    pub fn open_witnessed<E: From<MetaError>>(
        keys: MetaKeys,
        backing: Arc<dyn Backing>,
        config: ConfigBinding,
        verifier: &dyn BlockVerifier,
        witness: impl FnOnce(&Superblock, &MetaKeys) -> Result<(), E>,
    ) -> Result<Self, E> {
        Self::open_as(keys, backing, config, verifier, witness, Opener::Mount)
    }

    /// [`Self::open`] for `atrest migrate` (§16.19): the only open that
    /// takes a superblock in state *migrating*; its `MOUNT` record has
    /// reason 3, and every checkpoint says *migrating* until
    /// [`Self::finish_migration`].
    pub fn open_migrating(
        keys: MetaKeys,
        backing: Arc<dyn Backing>,
        config: ConfigBinding,
        verifier: &dyn BlockVerifier,
    ) -> Result<Self, MetaError> {
        Self::open_as(
            keys,
            backing,
            config,
            verifier,
            |_, _| Ok(()),
            Opener::Migrate,
        )
    }

    /// The first checkpoint of a migration, on the store `atrest migrate`
    /// just formatted: state *migrating* (§16.19 step 2).
    pub fn begin_migration(&mut self, now: Timestamp) -> Result<Generation, MetaError> {
        self.superblock.state = State::Migrating;
        self.checkpoint(now)
    }

    /// The last checkpoint of a migration: state *clean* (a format 2
    /// vault from now on, which mounts again), as an unmount's.
    pub fn finish_migration(&mut self, now: Timestamp) -> Result<Generation, MetaError> {
        self.superblock.state = State::Open;
        self.close(now)
    }

    fn open_as<E: From<MetaError>>(
        keys: MetaKeys,
        backing: Arc<dyn Backing>,
        config: ConfigBinding,
        verifier: &dyn BlockVerifier,
        witness: impl FnOnce(&Superblock, &MetaKeys) -> Result<(), E>,
        opener: Opener,
    ) -> Result<Self, E> {
        let mut pages = [[0u8; PAGE_SIZE]; 2];
        for (i, page) in pages.iter_mut().enumerate() {
            backing
                .read_exact_at(META_FILE, (i * PAGE_SIZE) as u64, page)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::NotFound => {
                        MetaError::NoSuperblock(
                            "atrest.meta is missing or shorter than two pages".into(),
                        )
                    }
                    _ => MetaError::io("reading atrest.meta")(e),
                })?;
        }
        let (mut superblock, _other) = Superblock::choose(&keys, &pages[0], &pages[1])?;
        match opener {
            // Migrating from now on, in every checkpoint, until the
            // migration's last (a crash recovered on the way included:
            // the migration converts again what it lost).
            Opener::Migrate => superblock.state = State::Migrating,
            Opener::Mount if superblock.state == State::Migrating => {
                return Err(MetaError::Migrating.into());
            }
            // Open from now on, in every checkpoint, until `close` (a
            // vault that recovered a crash stays so until a complete fsck).
            Opener::Mount if superblock.state == State::Clean => superblock.state = State::Open,
            Opener::Mount => {}
        }
        if superblock.config_generation > config.generation {
            return Err(MetaError::Inconsistent(format!(
                "the config (generation {}) is older than the vault's metadata (generation {}): a restored copy?",
                config.generation, superblock.config_generation
            ))
            .into());
        }
        if superblock.config_generation == config.generation
            && superblock.config_hash != config.hash
        {
            return Err(MetaError::Inconsistent(
                "the config is not the one the vault's metadata was written with".into(),
            )
            .into());
        }
        let pager = Pager::new(&keys, backing.as_ref());
        let loaded = bitmap::read(&pager, superblock.bitmap, superblock.page_count)?;
        let alloc = Allocator::from_used(loaded.used, superblock.page_count);
        let objects = ObjectTable::open(keys.algorithm(), superblock.object_table);
        let replay = recovery::read_log(&keys, backing.as_ref(), &superblock, verifier)?;
        witness(&superblock, &keys)?;
        let next_id = superblock.next_object_id;
        let last_time = superblock.time_ms.saturating_mul(1_000_000);
        let store = Self {
            acknowledged: crate::witness::Acknowledged::new(&superblock.acknowledged),
            log: LogWriter::continuing(&keys, &replay.end),
            group: Arc::new(GroupCommit::new()),
            keys,
            backing,
            superblock,
            alloc,
            bitmap_pages: loaded.pages,
            objects,
            dirs: HashMap::new(),
            unwritten_blobs: HashMap::new(),
            maps: HashMap::new(),
            journaled: HashMap::new(),
            files: HashMap::new(),
            unsynced_fresh_blocks: 0,
            freed_data: BTreeSet::new(),
            next_id,
            last_time,
            open: HashSet::new(),
            xattrs: HashMap::new(),
            recovery: None,
            config,
            failed: false,
        };
        Ok(store.recover(replay, verifier, opener)?)
    }

    /// Takes the vault as it is although a witness had seen `witnessed`,
    /// which it does not descend from (§16.17.4): a `ROLLBACK_ACCEPTED`
    /// record at a sequence number past both the vault's and `W`'s, so
    /// that every later generation is ahead of `W`, then a checkpoint.
    /// `approval` is the audit sequence of the authority's approval, 0
    /// for a local `--accept-rollback`.
    pub fn accept_rollback(
        &mut self,
        witnessed: Generation,
        approval: u64,
        now: Timestamp,
    ) -> Result<Generation, MetaError> {
        self.usable()?;
        let disk_s = self.log.next_seq() - 1;
        let body = Body::RollbackAccepted {
            k: witnessed.checkpoint,
            s: witnessed.sequence,
            h: witnessed.chain,
            disk_s,
            audit_seq: approval,
        };
        let seq = disk_s.max(witnessed.sequence) + 1;
        let mut segments = BackingSegments::new(self.backing.as_ref());
        let appended = self
            .log
            .append_at(&self.keys, &mut segments, seq, nanos(now), &body, &[])
            .and_then(|_| self.log.write_out(&mut segments));
        if appended.is_err() {
            self.failed = true;
        }
        appended?;
        self.checkpoint(now)
    }

    pub fn keys(&self) -> &MetaKeys {
        &self.keys
    }

    /// The last durable superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.superblock
    }

    /// What recovery did when this store was opened; `None` if the log
    /// held nothing to replay (the last close was clean).
    pub fn recovery(&self) -> Option<Recovery> {
        self.recovery
    }

    /// A complete check found the vault sound after a recovered crash:
    /// the next checkpoint writes the superblock's state back from
    /// *recovered* (§16.18).
    pub fn mark_checked(&mut self) {
        if self.superblock.state == State::Recovered {
            self.superblock.state = State::Open;
        }
    }

    /// The last checkpoint before the store is dropped (unmount, the end
    /// of fsck): the superblock's state becomes *clean*, unless a crash
    /// was recovered and no complete check has run since.
    pub fn close(&mut self, now: Timestamp) -> Result<Generation, MetaError> {
        if self.superblock.state == State::Open {
            self.superblock.state = State::Clean;
        }
        let result = self.checkpoint(now);
        if self.superblock.state == State::Clean {
            self.superblock.state = State::Open;
        }
        result
    }

    /// The sequence number of the last log record written.
    pub fn sequence(&self) -> u64 {
        self.log.next_seq() - 1
    }

    /// The last log record a completed [`Self::sync`] or checkpoint made
    /// durable.
    pub fn durable_through(&self) -> u64 {
        self.log.durable_through()
    }

    pub(crate) fn pager(&self) -> Pager<'_> {
        Pager::new(&self.keys, self.backing.as_ref())
    }

    /// The record of a live object.
    pub fn record(&mut self, id: u64) -> Result<ObjectRecord, FsError> {
        let pager = Pager::new(&self.keys, self.backing.as_ref());
        self.objects.get(&pager, id)?.ok_or(FsError::NotFound)
    }

    pub fn getattr(&mut self, id: u64) -> Result<ObjectHead, FsError> {
        Ok(self.record(id)?.head)
    }

    /// The entry tree of directory `id`, loaded on first use.
    fn dir(&mut self, id: u64) -> Result<&mut Directory, FsError> {
        let pager = Pager::new(&self.keys, self.backing.as_ref());
        Self::dir_of(&mut self.dirs, &mut self.objects, &pager, id)
    }

    /// The entry `name` in directory `parent`.
    pub fn lookup_entry(&mut self, parent: u64, name: &[u8]) -> Result<Option<DirEntry>, FsError> {
        check_name(name)?;
        let pager = Pager::new(&self.keys, self.backing.as_ref());
        let dir = Self::dir_of(&mut self.dirs, &mut self.objects, &pager, parent)?;
        Ok(dir.lookup(&pager, name)?)
    }

    pub fn lookup(&mut self, parent: u64, name: &[u8]) -> Result<ObjectHead, FsError> {
        let entry = self.lookup_entry(parent, name)?.ok_or(FsError::NotFound)?;
        let head = self.getattr(entry.id)?;
        if head.kind != entry.kind {
            return Err(MetaError::Inconsistent(format!(
                "entry {:?} names object {} of another kind",
                String::from_utf8_lossy(name),
                entry.id
            ))
            .into());
        }
        Ok(head)
    }

    /// `dir` without borrowing the whole store (the pager borrows keys
    /// and backing at the same time).
    pub(crate) fn dir_of<'s>(
        dirs: &'s mut HashMap<u64, Directory>,
        objects: &mut ObjectTable,
        pager: &Pager<'_>,
        id: u64,
    ) -> Result<&'s mut Directory, FsError> {
        match dirs.entry(id) {
            Entry::Occupied(dir) => Ok(dir.into_mut()),
            Entry::Vacant(slot) => {
                let record = objects.get(pager, id)?.ok_or(FsError::NotFound)?;
                let (ObjectKind::Directory, Content::Tree(root)) =
                    (record.head.kind, record.content)
                else {
                    return Err(FsError::NotDir);
                };
                Ok(slot.insert(Directory::open(id, root)))
            }
        }
    }

    /// Entries of `dir` after offset `after` (0 from the start), at most
    /// `limit` unless a run of equal hashes needs more.
    pub fn readdir(
        &mut self,
        dir: u64,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DirEntry>, FsError> {
        let pager = Pager::new(&self.keys, self.backing.as_ref());
        let d = Self::dir_of(&mut self.dirs, &mut self.objects, &pager, dir)?;
        Ok(d.read_from(&pager, after, limit)?)
    }

    /// A symlink's target.
    pub fn readlink(&mut self, id: u64) -> Result<Vec<u8>, FsError> {
        let record = self.record(id)?;
        match record.content {
            Content::InlineTarget(target) => Ok(target),
            Content::Blob(reference) if reference.is_null() => {
                Ok(self.unwritten_blobs.get(&id).cloned().ok_or_else(|| {
                    MetaError::Inconsistent(format!("symlink {id} has no target"))
                })?)
            }
            Content::Blob(reference) => {
                let pager = self.pager();
                Ok(read_blob(&pager, id, reference, record.head.size)?.0)
            }
            _ => Err(FsError::Invalid("not a symlink")),
        }
    }

    pub(crate) fn usable(&self) -> Result<(), MetaError> {
        if self.failed {
            return Err(MetaError::Stopped);
        }
        Ok(())
    }

    /// Logs `change` (sealed, chained and written to the log segment, no
    /// sync) and then applies it in memory; returns its sequence number.
    /// A failed write stops the store: memory would run ahead of the disk.
    pub(crate) fn log_and_apply(
        &mut self,
        change: &Change,
        now: Timestamp,
    ) -> Result<u64, FsError> {
        self.usable()?;
        let time = nanos(now);
        let mut segments = BackingSegments::new(self.backing.as_ref());
        let logged = self
            .log
            .append(&self.keys, &mut segments, time, &change.to_body(), &[])
            .and_then(|(_, _, seq)| self.log.write_out(&mut segments).map(|()| seq));
        let seq = match logged {
            Ok(seq) => seq,
            Err(e) => {
                self.failed = true;
                return Err(e.into());
            }
        };
        self.last_time = time;
        if let Err(e) = self.apply(change, seq) {
            // Checked before logging: a bug. Memory is half-changed.
            self.failed = true;
            return Err(e.into());
        }
        Ok(seq)
    }

    /// The head of `id` as `change` leaves it so far.
    fn head_in(&mut self, change: &Change, id: u64) -> Result<ObjectHead, FsError> {
        match change.head(id) {
            Some(head) => Ok(head.clone()),
            None => self.getattr(id),
        }
    }

    /// Creates `name` in `parent`.
    pub fn create(
        &mut self,
        parent: u64,
        name: &[u8],
        new: NewObject,
        now: Timestamp,
    ) -> Result<ObjectHead, FsError> {
        check_name(name)?;
        let parent_record = self.record(parent)?;
        if parent_record.head.kind != ObjectKind::Directory {
            return Err(FsError::NotDir);
        }
        if self.lookup_entry(parent, name)?.is_some() {
            return Err(FsError::Exists);
        }
        if new.kind == ObjectKind::Symlink && !(1..=MAX_TARGET).contains(&new.target.len()) {
            return Err(if new.target.is_empty() {
                FsError::NotFound
            } else {
                FsError::NameTooLong
            });
        }
        let id = self.next_id;
        let mut head = ObjectHead {
            id,
            kind: new.kind,
            inline: false,
            orphan: false,
            mode: new.mode & 0o7777,
            uid: new.uid,
            gid: new.gid,
            nlink: 1,
            size: 0,
            mtime: now,
            ctime: now,
            atime: now,
            btime: now,
            rdev: if new.kind.is_device() { new.rdev } else { 0 },
            parent: 0,
            file_id: [0; 16],
        };
        let mut change = Change::new(change::create_op(new.kind));
        match new.kind {
            ObjectKind::Regular => {
                head.inline = true;
                head.file_id = random_file_id();
            }
            ObjectKind::Directory => {
                head.nlink = 2;
                head.parent = parent;
            }
            ObjectKind::Symlink => {
                head.size = new.target.len() as u64;
                head.inline = new.target.len() <= INLINE_TARGET;
                change.extra = new.target;
            }
            _ => {}
        }
        let mut parent_head = parent_record.head;
        parent_head.size += 1;
        if new.kind == ObjectKind::Directory {
            parent_head.nlink += 1;
        }
        touch(&mut parent_head, now);
        change.set(head.clone());
        change.set(parent_head);
        change.insert(parent, id, new.kind, name);
        self.log_and_apply(&change, now)?;
        Ok(head)
    }

    /// A new name for an existing non-directory.
    pub fn link(
        &mut self,
        id: u64,
        parent: u64,
        name: &[u8],
        now: Timestamp,
    ) -> Result<ObjectHead, FsError> {
        check_name(name)?;
        let mut head = self.getattr(id)?;
        if head.kind == ObjectKind::Directory {
            return Err(FsError::NotPermitted("hard links to directories"));
        }
        let mut parent_head = self.getattr(parent)?;
        if parent_head.kind != ObjectKind::Directory {
            return Err(FsError::NotDir);
        }
        if self.lookup_entry(parent, name)?.is_some() {
            return Err(FsError::Exists);
        }
        if head.nlink == u32::MAX {
            return Err(FsError::NotPermitted("too many links"));
        }
        head.nlink += 1;
        head.ctime = now;
        parent_head.size += 1;
        touch(&mut parent_head, now);
        let mut change = Change::new(change::op::LINK);
        change.set(head.clone());
        change.set(parent_head);
        change.insert(parent, id, head.kind, name);
        self.log_and_apply(&change, now)?;
        Ok(head)
    }

    /// Removes a non-directory's name; frees the object with its last
    /// name. Returns the object's id and whether it was freed.
    pub fn unlink(
        &mut self,
        parent: u64,
        name: &[u8],
        now: Timestamp,
    ) -> Result<(u64, bool), FsError> {
        let entry = self.lookup_entry(parent, name)?.ok_or(FsError::NotFound)?;
        if entry.kind == ObjectKind::Directory {
            return Err(FsError::IsDir);
        }
        let mut change = Change::new(change::op::UNLINK);
        let freed = self.drop_name(&mut change, parent, &entry, now)?;
        self.log_and_apply(&change, now)?;
        Ok((entry.id, freed))
    }

    /// Removes an empty directory.
    pub fn rmdir(&mut self, parent: u64, name: &[u8], now: Timestamp) -> Result<u64, FsError> {
        let entry = self.lookup_entry(parent, name)?.ok_or(FsError::NotFound)?;
        if entry.kind != ObjectKind::Directory {
            return Err(FsError::NotDir);
        }
        if !self.dir(entry.id)?.is_empty() {
            return Err(FsError::NotEmpty);
        }
        let mut change = Change::new(change::op::RMDIR);
        self.drop_name(&mut change, parent, &entry, now)?;
        self.log_and_apply(&change, now)?;
        Ok(entry.id)
    }

    /// Adds to `change` the removal of `entry` from `parent`: the entry,
    /// the parent's size, link count and times, and the object's link
    /// count, or its slot freed with its last name (a directory: always).
    /// Returns whether the object is freed.
    fn drop_name(
        &mut self,
        change: &mut Change,
        parent: u64,
        entry: &DirEntry,
        now: Timestamp,
    ) -> Result<bool, FsError> {
        let mut parent_head = self.head_in(change, parent)?;
        parent_head.size -= 1;
        if entry.kind == ObjectKind::Directory {
            parent_head.nlink -= 1;
        }
        touch(&mut parent_head, now);
        change.set(parent_head);
        change.remove(parent, entry.id, entry.kind, &entry.name);
        if entry.kind == ObjectKind::Directory {
            change.free(entry.id);
            return Ok(true);
        }
        let mut head = self.head_in(change, entry.id)?;
        head.nlink -= 1;
        head.ctime = now;
        if head.nlink == 0 && !self.open.contains(&entry.id) {
            change.free(entry.id);
            Ok(true)
        } else {
            // Still open: an ORPHAN, freed when it is closed (§16.14).
            head.orphan = head.nlink == 0;
            change.set(head);
            Ok(false)
        }
    }

    /// Adds to `change` the insertion of `id` as `name` into `parent`.
    fn add_name(
        &mut self,
        change: &mut Change,
        parent: u64,
        id: u64,
        kind: ObjectKind,
        name: &[u8],
        now: Timestamp,
    ) -> Result<(), FsError> {
        let mut parent_head = self.head_in(change, parent)?;
        parent_head.size += 1;
        if kind == ObjectKind::Directory {
            parent_head.nlink += 1;
        }
        touch(&mut parent_head, now);
        change.set(parent_head);
        change.insert(parent, id, kind, name);
        Ok(())
    }

    /// Whether `ancestor` is `id` or one of its parents.
    fn is_ancestor(&mut self, ancestor: u64, mut id: u64) -> Result<bool, FsError> {
        loop {
            if id == ancestor {
                return Ok(true);
            }
            if id == ROOT_ID {
                return Ok(false);
            }
            id = self.record(id)?.head.parent;
        }
    }

    /// `rename(2)` / `renameat2(2)`.
    pub fn rename(
        &mut self,
        from_parent: u64,
        from_name: &[u8],
        to_parent: u64,
        to_name: &[u8],
        mode: RenameMode,
        now: Timestamp,
    ) -> Result<(), FsError> {
        check_name(to_name)?;
        let source = self
            .lookup_entry(from_parent, from_name)?
            .ok_or(FsError::NotFound)?;
        let target = self.lookup_entry(to_parent, to_name)?;
        if self.record(to_parent)?.head.kind != ObjectKind::Directory {
            return Err(FsError::NotDir);
        }
        if source.kind == ObjectKind::Directory && self.is_ancestor(source.id, to_parent)? {
            return Err(FsError::Invalid("a directory cannot move into itself"));
        }
        match (mode, &target) {
            (RenameMode::NoReplace, Some(_)) => return Err(FsError::Exists),
            (RenameMode::Exchange, None) => return Err(FsError::NotFound),
            (RenameMode::Exchange, Some(target)) => {
                if target.kind == ObjectKind::Directory
                    && self.is_ancestor(target.id, from_parent)?
                {
                    return Err(FsError::Invalid("a directory cannot move into itself"));
                }
                return self.exchange(from_parent, &source, to_parent, target, now);
            }
            _ => {}
        }
        let mut change = Change::new(change::op::RENAME);
        if let Some(target) = &target {
            if target.id == source.id {
                // Two names of one object: POSIX says do nothing.
                return Ok(());
            }
            match (
                source.kind == ObjectKind::Directory,
                target.kind == ObjectKind::Directory,
            ) {
                (true, false) => return Err(FsError::NotDir),
                (false, true) => return Err(FsError::IsDir),
                (true, true) if !self.dir(target.id)?.is_empty() => return Err(FsError::NotEmpty),
                _ => {}
            }
            self.drop_name(&mut change, to_parent, target, now)?;
        }
        let mut moved = self.head_in(&change, source.id)?;
        moved.ctime = now;
        if source.kind == ObjectKind::Directory {
            moved.parent = to_parent;
        }
        change.set(moved);
        let mut from = self.head_in(&change, from_parent)?;
        from.size -= 1;
        if source.kind == ObjectKind::Directory {
            from.nlink -= 1;
        }
        touch(&mut from, now);
        change.set(from);
        change.remove(from_parent, source.id, source.kind, from_name);
        self.add_name(&mut change, to_parent, source.id, source.kind, to_name, now)?;
        self.log_and_apply(&change, now)?;
        Ok(())
    }

    fn exchange(
        &mut self,
        a_parent: u64,
        a: &DirEntry,
        b_parent: u64,
        b: &DirEntry,
        now: Timestamp,
    ) -> Result<(), FsError> {
        if a.id == b.id {
            return Ok(());
        }
        let mut change = Change::new(change::op::EXCHANGE);
        for (entry, old_parent, new_parent) in [(a, a_parent, b_parent), (b, b_parent, a_parent)] {
            let mut head = self.head_in(&change, entry.id)?;
            head.ctime = now;
            if entry.kind == ObjectKind::Directory {
                head.parent = new_parent;
            }
            change.set(head);
            let mut from = self.head_in(&change, old_parent)?;
            from.size -= 1;
            if entry.kind == ObjectKind::Directory {
                from.nlink -= 1;
            }
            touch(&mut from, now);
            change.set(from);
            change.remove(old_parent, entry.id, entry.kind, &entry.name);
        }
        self.add_name(&mut change, a_parent, b.id, b.kind, &a.name, now)?;
        self.add_name(&mut change, b_parent, a.id, a.kind, &b.name, now)?;
        self.log_and_apply(&change, now)?;
        Ok(())
    }

    /// Marks object `id` open (through the mount) or closed. Removing the
    /// last name of an open object leaves it an `ORPHAN` (§16.14), still
    /// read, written and `fstat`ed through its descriptors; closing it
    /// frees it, with a `META` record. Recovery does not free orphans a
    /// crash left yet (§16.16 step 5): they stay unreachable.
    pub fn set_open(&mut self, id: u64, open: bool, now: Timestamp) -> Result<(), FsError> {
        if open {
            self.open.insert(id);
            return Ok(());
        }
        self.open.remove(&id);
        let head = match self.getattr(id) {
            Ok(head) => head,
            Err(FsError::NotFound) => return Ok(()),
            Err(e) => return Err(e),
        };
        if head.orphan {
            let mut change = Change::new(change::op::UNLINK);
            change.free(id);
            self.log_and_apply(&change, now)?;
        }
        Ok(())
    }

    /// Mode, owner and times; ctime becomes `now`.
    pub fn setattr(
        &mut self,
        id: u64,
        attrs: &SetAttr,
        now: Timestamp,
    ) -> Result<ObjectHead, FsError> {
        let mut head = self.getattr(id)?;
        if let Some(mode) = attrs.mode {
            head.mode = mode & 0o7777;
        }
        if let Some(uid) = attrs.uid {
            head.uid = uid;
        }
        if let Some(gid) = attrs.gid {
            head.gid = gid;
        }
        if let Some(atime) = attrs.atime {
            head.atime = atime;
        }
        if let Some(mtime) = attrs.mtime {
            head.mtime = mtime;
        }
        head.ctime = now;
        let mut change = Change::new(change::op::SETATTR);
        change.set(head.clone());
        self.log_and_apply(&change, now)?;
        Ok(head)
    }

    /// Keeps `bytes` of zeros written ahead of the log's records before
    /// each flush ([`LogWriter::set_zeros_ahead`]; the mount's
    /// [`log::ZEROS_AHEAD`]): an `fsync` then overwrites the segment
    /// rather than appending to it, which the backing file system makes
    /// durable without writing its size and allocation first.
    pub fn set_log_zeros_ahead(&mut self, bytes: u64) {
        self.log.set_zeros_ahead(bytes);
    }

    /// `fsync` through the mount (§16.15): when it returns, every
    /// operation before it is durable and survives any crash. One sync of
    /// the log covers every record written since the last (group commit),
    /// and is followed by a `SYNC` record, the on-disk proof that these
    /// records were acknowledged (§16.12). Nothing new since the last
    /// sync: no I/O.
    pub fn sync(&mut self) -> Result<(), MetaError> {
        self.usable()?;
        let mut segments = BackingSegments::new(self.backing.as_ref());
        let result = self
            .log
            .sync(&self.keys, &mut segments, self.last_time, 0)
            .map(drop);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    /// Checkpoint `k + 1` (§16.13): cuts the log (a new segment starting
    /// with `CHECKPOINT(k + 1)`, made durable), writes every change since
    /// checkpoint `k` to pages no durable structure uses, then the
    /// superblock into the other superblock page, pointing at that record;
    /// then retires the segments before it. A failure stops the store
    /// (open it again: recovery replays from checkpoint `k`).
    pub fn checkpoint(&mut self, now: Timestamp) -> Result<Generation, MetaError> {
        self.usable()?;
        let result = self.write_checkpoint(now);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn write_checkpoint(&mut self, now: Timestamp) -> Result<Generation, MetaError> {
        let k = self.superblock.generation.checkpoint + 1;
        let sequence = self.log.next_seq() - 1;
        let chain = self.log.chain();
        let mut segments = BackingSegments::new(self.backing.as_ref());
        // Step 1–2: the cut, durable before any page is written.
        let (replay_segment, replay_offset, _) =
            self.log
                .cut_checkpoint(&self.keys, &mut segments, nanos(now), k)?;
        let pager = Pager::new(&self.keys, self.backing.as_ref());
        // Blobs first: their records change.
        let mut blobs: Vec<_> = self.unwritten_blobs.drain().collect();
        blobs.sort_by_key(|(id, _)| *id);
        for (id, target) in blobs {
            let reference = write_blob(&pager, &mut self.alloc, id, &target)?;
            let mut record = self
                .objects
                .get(&pager, id)?
                .ok_or_else(|| MetaError::Inconsistent(format!("blob of a freed object {id}")))?;
            record.content = Content::Blob(reference);
            self.objects.set(&pager, record)?;
        }
        // Attribute chains, whose records hold their first pages.
        self.checkpoint_xattrs()?;
        // Step 3, and block maps, whose records hold their roots.
        let data_to_sync = self.checkpoint_files()?;
        let pager = Pager::new(&self.keys, self.backing.as_ref());
        // Then directories, whose records hold their roots.
        let mut ids: Vec<u64> = self.dirs.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let dir = self.dirs.get_mut(&id).expect("listed");
            let root = dir.flush(&pager, &mut self.alloc)?;
            let mut record = self
                .objects
                .get(&pager, id)?
                .ok_or_else(|| MetaError::Inconsistent(format!("directory {id} has no record")))?;
            if record.content != Content::Tree(root) {
                record.content = Content::Tree(root);
                self.objects.set(&pager, record)?;
            }
        }
        let object_table = self.objects.flush(&pager, &mut self.alloc)?;
        let (bitmap_root, bitmap_pages) =
            bitmap::write(&pager, &mut self.alloc, &self.bitmap_pages)?;
        self.sync_data_files(&data_to_sync)?;
        self.backing
            .sync(META_FILE)
            .map_err(MetaError::io("syncing atrest.meta"))?;
        let previous = &self.superblock;
        let generation = Generation {
            checkpoint: k,
            sequence,
            chain,
        };
        let recent = if previous.generation.checkpoint == 0 {
            Vec::new()
        } else {
            std::iter::once(previous.generation)
                .chain(previous.recent.iter().copied())
                .take(MAX_RECENT - 1)
                .collect()
        };
        let superblock = Superblock {
            generation,
            replay_segment,
            replay_offset,
            object_table,
            bitmap: bitmap_root,
            page_count: self.alloc.page_count(),
            next_object_id: self.next_id,
            time_ms: u64::try_from(now.secs).unwrap_or(0) * 1000 + u64::from(now.nanos / 1_000_000),
            recent,
            acknowledged: self.acknowledged.list().to_vec(),
            config_generation: self.config.generation,
            config_hash: self.config.hash,
            ..previous.clone()
        };
        let bytes = superblock.encode(&self.keys);
        let index = Superblock::page_of(generation.checkpoint);
        self.backing
            .write_at(META_FILE, index * PAGE_SIZE as u64, &bytes[..])
            .map_err(MetaError::io("writing the superblock"))?;
        self.backing
            .sync(META_FILE)
            .map_err(MetaError::io("syncing atrest.meta"))?;
        self.alloc.commit();
        self.bitmap_pages = bitmap_pages;
        self.superblock = superblock;
        // Journaled blocks are in place now and read from there: the
        // segments holding their records go next.
        self.journaled.clear();
        // Step 7: segments wholly before the replay position are covered
        // by the checkpoint. Removals lost in a crash are redone by the
        // next checkpoint; replay never reads segments before its start.
        let mut segments = BackingSegments::new(self.backing.as_ref());
        for segment in segments.list()? {
            if segment >= replay_segment {
                break;
            }
            segments.remove(segment)?;
        }
        // Then data files of freed objects and trims.
        self.after_checkpoint_files()?;
        Ok(generation)
    }
}

/// Unix nanoseconds of `t` (a record's informational `time`).
pub(crate) fn nanos(t: Timestamp) -> u64 {
    u64::try_from(t.secs)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(t.nanos))
}

fn empty_root() -> Root {
    Root {
        reference: PageRef::NULL,
        depth: 0,
    }
}

fn touch(head: &mut ObjectHead, now: Timestamp) {
    head.mtime = now;
    head.ctime = now;
}

fn check_name(name: &[u8]) -> Result<(), FsError> {
    if name.len() > MAX_NAME {
        return Err(FsError::NameTooLong);
    }
    if !valid_name(name) {
        return Err(FsError::Invalid(
            "a name must not be empty, '.', '..' or hold '/' or NUL",
        ));
    }
    Ok(())
}

fn random_file_id() -> [u8; 16] {
    loop {
        let id = atrest_core::random_array::<16>();
        if id != [0; 16] {
            return id;
        }
    }
}

/// Data bytes per blob page: the items less `next` and the length.
fn blob_capacity(pager: &Pager<'_>) -> usize {
    item_space(pager.keys) - REF_LEN - 2
}

/// Writes `data` as a chain of blob pages, last page first so each page
/// knows the reference of the next.
pub(crate) fn write_blob(
    pager: &Pager<'_>,
    alloc: &mut Allocator,
    owner: u64,
    data: &[u8],
) -> Result<PageRef, MetaError> {
    let capacity = blob_capacity(pager);
    let mut next = PageRef::NULL;
    for chunk in data.chunks(capacity).rev() {
        let mut items = Vec::with_capacity(REF_LEN + 2 + chunk.len());
        items
            .put(&next.encode())
            .put_u16(u16::try_from(chunk.len()).expect("≤ 4,010 bytes"))
            .put(chunk);
        let number = alloc.allocate();
        next = pager.write(
            number,
            &PageHeader {
                kind: PageKind::Blob,
                level: 0,
                count: 1,
                owner,
            },
            &items,
        )?;
    }
    Ok(next)
}

fn blob_expect(owner: u64) -> Expect {
    Expect {
        kind: PageKind::Blob,
        owner,
        level: Some(0),
    }
}

/// Reads a blob chain of `len` bytes; returns it and its pages.
pub(crate) fn read_blob(
    pager: &Pager<'_>,
    owner: u64,
    first: PageRef,
    len: u64,
) -> Result<(Vec<u8>, Vec<u64>), MetaError> {
    let mut out = Vec::new();
    let mut pages = Vec::new();
    let mut reference = first;
    while let Some(number) = reference.page() {
        let page = pager.read(&reference, blob_expect(owner))?;
        pages.push(number);
        let mut r = Reader::new(&page.items);
        let next = PageRef::read(&mut r).ok_or_else(|| page.corrupt("bad next reference"))?;
        let n = r.u16().ok_or_else(|| page.corrupt("short blob page"))?;
        let data = r
            .take(usize::from(n))
            .filter(|d| !d.is_empty())
            .ok_or_else(|| page.corrupt("blob length past the page"))?;
        page.check_zero_after(r.position())?;
        out.extend_from_slice(data);
        if out.len() as u64 > len {
            return Err(page.corrupt("blob longer than its record says"));
        }
        reference = next;
    }
    if out.len() as u64 != len {
        return Err(MetaError::Inconsistent(format!(
            "blob of object {owner} holds {} bytes, its record says {len}",
            out.len()
        )));
    }
    Ok((out, pages))
}

pub(crate) fn blob_pages(
    pager: &Pager<'_>,
    owner: u64,
    first: PageRef,
) -> Result<Vec<u64>, MetaError> {
    let mut pages = Vec::new();
    let mut reference = first;
    while let Some(number) = reference.page() {
        let page = pager.read(&reference, blob_expect(owner))?;
        pages.push(number);
        reference = PageRef::read(&mut Reader::new(&page.items))
            .ok_or_else(|| page.corrupt("bad next reference"))?;
    }
    Ok(pages)
}
