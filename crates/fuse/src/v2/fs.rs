//! [`VaultFs2`]: the fuser `Filesystem` of a format 2 vault.
//!
//! Inode numbers are object ids (the root is object 1, FUSE's root), so
//! there is no node table: `forget` has nothing to drop. Handles are 0;
//! reads and writes go to the object, and only a count of open handles
//! per object is kept (with the file's cipher, derived once), so that a
//! file unlinked or renamed over while open lives on as an orphan until
//! its last handle is released. Durability follows §16.15: `fsync` is
//! [`Store::sync_file`] (in its two halves, the flushes between them made
//! without the store's lock), `fsyncdir` the same for object 0 (the log
//! alone); everything else is logged before the reply and durable at the
//! next of either.
//!
//! Locks: one around the store, held for each operation's metadata work;
//! and striped per-inode locks for contents. A read holds its inode's
//! lock shared and the store only to locate its blocks: the data file
//! read and the opening run outside it, in parallel with other requests.
//! A write holds its inode's lock exclusively and the store to read the
//! blocks it covers in part and to log, not while it seals. Writes,
//! truncates and reads of one file are so ordered as the store's plan of
//! a read needs ([`Store::locate_blocks`]). Checkpoints run on a thread
//! of their own ([`super::checkpoints`]).
//!
//! Extended attributes are the store's (`user.` only, §16.10). Not yet:
//! orphans left by a crash are not freed by recovery.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use atrest_meta::directory::DirEntry;
use atrest_meta::record::{ObjectHead, ObjectKind, ROOT_ID, Timestamp};
use atrest_meta::{NewObject, RenameMode, SetAttr, Store, XattrMode};
use atrest_vault::{
    ContentFile2, ContentKey2, Contents2, DurableGeneration, FileCipher2, LocalWitnessFile,
};
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use parking_lot::{Mutex, RwLock};

use super::checkpoints::{Backlog, FLUSH_AHEAD_BYTES, FLUSH_ROUNDS, INTERVAL, Trigger};
use super::errors::{content_errno, fs_errno, meta_errno};
use crate::GenerationReporter;
use crate::fs::{LOCK_STRIPES, system_time, timespec};

/// Entries read from the store per `readdir` call; the kernel's buffer
/// (4 KiB to 128 KiB) takes fewer, and the rest are read again.
const READDIR_BATCH: usize = 256;

/// A directory and a batch of its entries, each with its object's head
/// (`None`: the record failed, and was logged).
type Listing = (ObjectHead, Vec<(DirEntry, Option<ObjectHead>)>);

/// What the checkpointer thread is woken for.
enum Wake {
    /// A bound was crossed ([`Trigger::wake`]).
    Due,
    /// Unmounting: stop (the last checkpoint is `destroy`'s).
    Stop,
}

/// One object open through the mount.
struct Open {
    handles: u32,
    /// Its file's cipher, derived at the first read or write.
    cipher: Option<Arc<FileCipher2>>,
}

struct State {
    store: Store,
    content: ContentKey2,
    trigger: Trigger,
    /// Wakes the checkpointer.
    wake: mpsc::Sender<Wake>,
    /// Open handles per object: the store keeps an object whose last
    /// name goes while it is open (an orphan) until the last is released.
    open: HashMap<u64, Open>,
    /// The host's local witness, written after every checkpoint.
    witness: Option<LocalWitnessFile>,
    /// Told every checkpoint, for the key authorities (§16.17.1).
    reporter: Option<Arc<dyn GenerationReporter>>,
    /// The generation the local witness file last named.
    witness_at: Option<atrest_meta::superblock::Generation>,
}

impl State {
    /// The cipher of file `id`: kept while it is open, derived for a
    /// file that is not (`truncate(2)` by name).
    fn cipher(&mut self, id: u64) -> Result<Arc<FileCipher2>, Errno> {
        let file_id = self.store.getattr(id).map_err(|e| fs_errno(id, e))?.file_id;
        let Some(open) = self.open.get_mut(&id) else {
            return Ok(Arc::new(self.content.file_cipher(file_id)));
        };
        match &open.cipher {
            Some(cipher) if cipher.file_id() == file_id => Ok(cipher.clone()),
            _ => Ok(open
                .cipher
                .insert(Arc::new(self.content.file_cipher(file_id)))
                .clone()),
        }
    }

    /// Logs the generations the key authorities accepted since the last
    /// checkpoint (`WITNESSED`), so that the next lists them as
    /// acknowledged (§16.17.1). A failure stops the store, as any failed
    /// log write does; the checkpoint then fails and says so.
    fn record_acknowledged(&mut self) {
        let Some(reporter) = &self.reporter else {
            return;
        };
        for acknowledgement in reporter.take_acknowledged() {
            if let Err(e) = acknowledgement.record(&mut self.store) {
                tracing::error!("the key authority's acknowledgement was not logged: {e}");
                return;
            }
        }
    }

    /// Writes the local witness after a durable checkpoint (§16.17.5): it
    /// never names a generation the disk does not have. While it cannot be
    /// written, the generation it still names is logged as acknowledged
    /// once, so that it stays in the lineage however long the failures
    /// last; the next checkpoints try again.
    fn keep_witness(&mut self) {
        let Some(witness) = &self.witness else {
            return;
        };
        match witness.record(&self.store) {
            Ok(()) => self.witness_at = Some(self.store.superblock().generation),
            Err(e) => {
                tracing::warn!("the local witness was not written: {e}");
                if let Some(named) = self.witness_at
                    && let Err(e) = atrest_vault::witness::acknowledge_local(&mut self.store, named)
                {
                    tracing::error!("the local witness's generation was not logged: {e}");
                }
            }
        }
    }

    /// The contents of file `id`.
    fn file(&mut self, id: u64) -> Result<ContentFile2<'_>, Errno> {
        let cipher = self.cipher(id)?;
        Ok(ContentFile2::with_cipher(&mut self.store, cipher, id))
    }

    /// A checkpoint; a failure is logged (the store then stops, §16.13,
    /// and every later request fails with `EIO`).
    fn checkpoint(&mut self) -> bool {
        self.record_acknowledged();
        match self.store.checkpoint(now()) {
            Ok(generation) => {
                let sequence = self.store.sequence();
                self.trigger.done(sequence);
                tracing::debug!(checkpoint = generation.checkpoint, "checkpoint written");
                self.keep_witness();
                if let Some(reporter) = &self.reporter {
                    reporter.checkpointed(DurableGeneration::of(self.store.superblock()));
                }
                true
            }
            Err(e) => {
                meta_errno(0, e);
                false
            }
        }
    }

    fn opened(&mut self, id: u64) -> Result<(), Errno> {
        let open = self.open.entry(id).or_insert(Open {
            handles: 0,
            cipher: None,
        });
        open.handles += 1;
        if open.handles == 1 {
            self.store
                .set_open(id, true, now())
                .map_err(|e| fs_errno(id, e))?;
        }
        Ok(())
    }

    fn released(&mut self, id: u64) -> Result<(), Errno> {
        let Some(open) = self.open.get_mut(&id) else {
            return Ok(());
        };
        open.handles -= 1;
        if open.handles > 0 {
            return Ok(());
        }
        self.open.remove(&id);
        self.store
            .set_open(id, false, now())
            .map_err(|e| fs_errno(id, e))
    }
}

pub struct VaultFs2 {
    state: Arc<Mutex<State>>,
    /// Striped per-inode locks of contents (see the module's comment).
    locks: Vec<RwLock<()>>,
    /// The checkpointer thread, stopped by [`Wake::Stop`].
    checkpointer: Option<(mpsc::Sender<Wake>, JoinHandle<()>)>,
    /// The backing directory, for `statfs`.
    root: PathBuf,
    ttl: Duration,
}

#[allow(
    clippy::disallowed_methods,
    reason = "file times are the wall clock, as on any file system"
)]
fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        secs: d.as_secs() as i64,
        nanos: d.subsec_nanos(),
    }
}

/// A time `setattr` was given; `None` when the kernel said to leave it.
fn time_of(t: Option<TimeOrNow>, now: Timestamp) -> Option<Timestamp> {
    let t = t?;
    if matches!(t, TimeOrNow::Now) {
        return Some(now);
    }
    let spec = timespec(Some(t));
    Some(Timestamp {
        secs: spec.tv_sec,
        nanos: spec.tv_nsec as u32,
    })
}

fn file_type(kind: ObjectKind) -> FileType {
    match kind {
        ObjectKind::Regular => FileType::RegularFile,
        ObjectKind::Directory => FileType::Directory,
        ObjectKind::Symlink => FileType::Symlink,
        ObjectKind::Fifo => FileType::NamedPipe,
        ObjectKind::Socket => FileType::Socket,
        ObjectKind::CharDevice => FileType::CharDevice,
        ObjectKind::BlockDevice => FileType::BlockDevice,
    }
}

/// The kind `mknod` was asked for.
fn kind_of_mode(mode: u32) -> Result<ObjectKind, Errno> {
    Ok(match mode & libc::S_IFMT {
        libc::S_IFREG | 0 => ObjectKind::Regular,
        libc::S_IFIFO => ObjectKind::Fifo,
        libc::S_IFSOCK => ObjectKind::Socket,
        libc::S_IFCHR => ObjectKind::CharDevice,
        libc::S_IFBLK => ObjectKind::BlockDevice,
        _ => return Err(Errno::EINVAL),
    })
}

/// A new object of `kind`; its owner is set by [`VaultFs2::make`].
fn new_object(kind: ObjectKind, mode: u32, rdev: u64, target: Vec<u8>) -> NewObject {
    NewObject {
        kind,
        mode: (mode & 0o7777) as u16,
        uid: 0,
        gid: 0,
        rdev,
        target,
    }
}

/// A `getxattr` or `listxattr` answer: the size when asked with 0, the
/// bytes when they fit, else `ERANGE` (the caller asks again).
fn reply_xattr(reply: ReplyXattr, size: u32, result: Result<Vec<u8>, Errno>) {
    match result {
        Ok(bytes) if size == 0 => reply.size(bytes.len() as u32),
        Ok(bytes) if bytes.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(bytes) => reply.data(&bytes),
        Err(e) => reply.error(e),
    }
}

fn attr(head: &ObjectHead) -> FileAttr {
    let time = |t: Timestamp| system_time(t.secs, i64::from(t.nanos));
    FileAttr {
        ino: INodeNo(head.id),
        size: head.size,
        blocks: head.size.div_ceil(512),
        atime: time(head.atime),
        mtime: time(head.mtime),
        ctime: time(head.ctime),
        crtime: time(head.btime),
        kind: file_type(head.kind),
        perm: head.mode,
        nlink: head.nlink,
        uid: head.uid,
        gid: head.gid,
        rdev: head.rdev as u32,
        blksize: 4096,
        flags: 0,
    }
}

/// The checkpointer thread: a checkpoint when an operation crossed a
/// bound, and every [`INTERVAL`] if anything was logged since the last;
/// each after flushing the data files it will sync without the store's
/// lock, again while writes meanwhile left more than
/// [`atrest_meta::SYNCFS_ABOVE`] files or [`FLUSH_AHEAD_BYTES`] to flush
/// (at most [`FLUSH_ROUNDS`] times), so that the checkpoint, which every
/// request waits for, syncs a few files and megabytes rather than the
/// whole backing file system or what a stream wrote meanwhile. A failed
/// checkpoint stops the store (it writes nothing more; the next mount
/// recovers from the last good one), so it is logged and every later
/// operation fails with `EIO`.
fn checkpointer(state: &Mutex<State>, woken: &mpsc::Receiver<Wake>, interval: Duration) {
    loop {
        let timer = match woken.recv_timeout(interval) {
            Ok(Wake::Due) => false,
            Err(mpsc::RecvTimeoutError::Timeout) => true,
            Ok(Wake::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        {
            let state = state.lock();
            let backlog = Backlog::of(&state.store);
            let wanted = if timer {
                state.trigger.pending(backlog.sequence)
            } else {
                state.trigger.due(backlog)
            };
            if !wanted {
                continue;
            }
        }
        for round in 1..=FLUSH_ROUNDS {
            let ahead = state.lock().store.flush_ahead();
            let flushed = ahead.run();
            let mut state = state.lock();
            if let Err(e) = state.store.flushed_ahead(&ahead, flushed) {
                meta_errno(0, e);
                break;
            }
            if round == FLUSH_ROUNDS
                || (state.store.unflushed_count() <= atrest_meta::SYNCFS_ABOVE
                    && state.store.unflushed_bytes() <= FLUSH_AHEAD_BYTES)
            {
                state.checkpoint();
                break;
            }
        }
    }
}

impl VaultFs2 {
    /// Serves `contents` (opened and recovered by
    /// [`atrest_vault::Vault::open_format_2`]); `root` is the backing
    /// directory; `witness`, if any, is written after every checkpoint,
    /// and `reporter`, if any, told of each; `interval` is the longest a
    /// logged change waits for its checkpoint (`None`: [`INTERVAL`]).
    pub fn new(
        contents: Contents2,
        root: &Path,
        ttl: Duration,
        witness: Option<LocalWitnessFile>,
        reporter: Option<Arc<dyn GenerationReporter>>,
        interval: Option<Duration>,
    ) -> Self {
        let Contents2 { mut store, content } = contents;
        store.set_log_zeros_ahead(atrest_meta::log::ZEROS_AHEAD);
        if let Some(recovery) = store.recovery() {
            tracing::warn!("the vault was not unmounted cleanly; recovered: {recovery}");
        }
        // `open_format_2_witnessed_by` wrote the witness for this.
        let witness_at = witness.as_ref().map(|_| store.superblock().generation);
        let trigger = Trigger::new(store.sequence());
        let (wake, woken) = mpsc::channel::<Wake>();
        let state = Arc::new(Mutex::new(State {
            store,
            content,
            trigger,
            wake: wake.clone(),
            open: HashMap::new(),
            witness,
            reporter,
            witness_at,
        }));
        let timed = state.clone();
        let interval = interval.unwrap_or(INTERVAL);
        let thread = std::thread::spawn(move || checkpointer(&timed, &woken, interval));
        Self {
            state,
            locks: (0..LOCK_STRIPES).map(|_| RwLock::new(())).collect(),
            checkpointer: Some((wake, thread)),
            root: root.to_path_buf(),
            ttl,
        }
    }

    /// Runs `f` on the store; then wakes the checkpointer if the log has
    /// grown past its bounds.
    fn with<T>(&self, f: impl FnOnce(&mut State) -> Result<T, Errno>) -> Result<T, Errno> {
        let mut state = self.state.lock();
        let result = f(&mut state);
        let backlog = Backlog::of(&state.store);
        if state.trigger.wake(backlog) {
            // Gone only once `destroy` stopped it, after the last request.
            let _ = state.wake.send(Wake::Due);
        }
        result
    }

    /// `fsync` of object `id` (§16.15), its flushes made without the
    /// store's lock: other requests go on meanwhile, and concurrent calls
    /// share the log's flush. Callers other than `fsyncdir` hold the
    /// file's contents lock.
    fn sync(&self, id: u64) -> Result<(), Errno> {
        let sync = self.with(|s| s.store.begin_sync_file(id).map_err(|e| meta_errno(id, e)))?;
        let flushed = sync.run();
        self.with(|s| {
            s.store
                .end_sync_file(sync, flushed)
                .map_err(|e| meta_errno(id, e))
        })
    }

    /// The contents lock of inode `ino`.
    fn lock(&self, ino: INodeNo) -> &RwLock<()> {
        &self.locks[(ino.0 % LOCK_STRIPES as u64) as usize]
    }

    fn owner(req: &Request, store: &mut Store, parent: u64) -> Result<(u32, u32, bool), Errno> {
        let dir = store.getattr(parent).map_err(|e| fs_errno(parent, e))?;
        let setgid = u32::from(dir.mode) & libc::S_ISGID != 0;
        let gid = if setgid { dir.gid } else { req.gid() };
        Ok((req.uid(), gid, setgid))
    }

    /// Creates `name` in `parent` as `new` describes (its owner comes
    /// from the request, or the group from a set-group-id parent, which
    /// also hands its bit down to new directories).
    fn make(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mut new: NewObject,
    ) -> Result<FileAttr, Errno> {
        self.with(|s| {
            let (uid, gid, setgid) = Self::owner(req, &mut s.store, parent.0)?;
            new.mode &= 0o7777;
            if setgid && new.kind == ObjectKind::Directory {
                new.mode |= libc::S_ISGID as u16;
            }
            (new.uid, new.gid) = (uid, gid);
            s.store
                .create(parent.0, name.as_bytes(), new, now())
                .map(|h| attr(&h))
                .map_err(|e| fs_errno(parent.0, e))
        })
    }

    fn entries(&self, ino: INodeNo, offset: u64) -> Result<Listing, Errno> {
        self.with(|s| {
            let dir = s.store.getattr(ino.0).map_err(|e| fs_errno(ino.0, e))?;
            // Offsets 1 and 2 are "." and ".."; entry hashes start at 3.
            let list = s
                .store
                .readdir(ino.0, offset.max(2), READDIR_BATCH)
                .map_err(|e| fs_errno(ino.0, e))?;
            let mut out = Vec::with_capacity(list.len());
            for entry in list {
                let head = match s.store.getattr(entry.id) {
                    Ok(head) => Some(head),
                    Err(e) => {
                        // Logged, and left out of readdirplus.
                        fs_errno(entry.id, e);
                        None
                    }
                };
                out.push((entry, head));
            }
            Ok((dir, out))
        })
    }
}

impl Filesystem for VaultFs2 {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_background(64);
        // As format 1's: reads run outside the store's lock, so parallel
        // and asynchronous direct I/O pay off here too.
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ASYNC_DIO
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_ATOMIC_O_TRUNC;
        let _ = config.add_capabilities(wanted & config.capabilities());
        Ok(())
    }

    /// Unmounting: the timer stopped, then a last checkpoint, so the next
    /// mount replays nothing.
    fn destroy(&mut self) {
        if let Some((wake, thread)) = self.checkpointer.take() {
            let _ = wake.send(Wake::Stop);
            let _ = thread.join();
        }
        // The last checkpoint marks the vault clean (§16.5 state); the
        // witness then names it, as after every checkpoint.
        let state = &mut *self.state.lock();
        state.record_acknowledged();
        match state.store.close(now()) {
            Ok(_) => {
                if let Some(witness) = &state.witness
                    && let Err(e) = witness.record(&state.store)
                {
                    tracing::warn!("the local witness was not written: {e}");
                }
                tracing::info!("unmounted: checkpoint written");
                if let Some(reporter) = &state.reporter {
                    reporter.unmounted(DurableGeneration::of(state.store.superblock()));
                    // The unmount's report, once accepted, names the last
                    // checkpoint: logged after it and synced, replayed by
                    // the next open and listed by its first checkpoint, so
                    // that mounts which do not report (a passphrase
                    // unlock) cannot push it out of the lineage.
                    state.record_acknowledged();
                    if let Err(e) = state.store.sync() {
                        tracing::warn!("the unmount's acknowledgement was not made durable: {e}");
                    }
                }
            }
            Err(e) => {
                meta_errno(0, e);
            }
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = self.with(|s| {
            s.store
                .lookup(parent.0, name.as_bytes())
                .map_err(|e| fs_errno(parent.0, e))
        });
        match result {
            Ok(head) => reply.entry(&self.ttl, &attr(&head), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.with(|s| s.store.getattr(ino.0).map_err(|e| fs_errno(ino.0, e))) {
            Ok(head) => reply.attr(&self.ttl, &attr(&head)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _contents = size.map(|_| self.lock(ino).write());
        let result = self.with(|s| {
            let now = now();
            if let Some(size) = size {
                s.file(ino.0)?
                    .set_len(size, now)
                    .map_err(|e| content_errno(ino.0, e))?;
            }
            let attrs = SetAttr {
                mode: mode.map(|m| (m & 0o7777) as u16),
                uid,
                gid,
                atime: time_of(atime, now),
                mtime: time_of(mtime, now),
            };
            let changes = attrs.mode.is_some()
                || uid.is_some()
                || gid.is_some()
                || attrs.atime.is_some()
                || attrs.mtime.is_some();
            if changes {
                s.store.setattr(ino.0, &attrs, now)
            } else {
                s.store.getattr(ino.0)
            }
            .map_err(|e| fs_errno(ino.0, e))
        });
        match result {
            Ok(head) => reply.attr(&self.ttl, &attr(&head)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.with(|s| s.store.readlink(ino.0).map_err(|e| fs_errno(ino.0, e))) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let result = kind_of_mode(mode).and_then(|kind| {
            let new = new_object(kind, mode & !umask, u64::from(rdev), Vec::new());
            self.make(req, parent, name, new)
        });
        match result {
            Ok(attr) => reply.entry(&self.ttl, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let new = new_object(ObjectKind::Directory, mode & !umask, 0, Vec::new());
        match self.make(req, parent, name, new) {
            Ok(attr) => reply.entry(&self.ttl, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.with(|s| {
            s.store
                .unlink(parent.0, name.as_bytes(), now())
                .map_err(|e| fs_errno(parent.0, e))
        });
        match result {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.with(|s| {
            s.store
                .rmdir(parent.0, name.as_bytes(), now())
                .map_err(|e| fs_errno(parent.0, e))
        });
        match result {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let target = target.as_os_str().as_bytes().to_vec();
        let new = new_object(ObjectKind::Symlink, 0o777, 0, target);
        match self.make(req, parent, link_name, new) {
            Ok(attr) => reply.entry(&self.ttl, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mode = if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            RenameMode::Exchange
        } else if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            RenameMode::NoReplace
        } else if flags.is_empty() {
            RenameMode::Replace
        } else {
            // RENAME_WHITEOUT: overlayfs's, not ours.
            return reply.error(Errno::EINVAL);
        };
        let result = self.with(|s| {
            s.store
                .rename(
                    parent.0,
                    name.as_bytes(),
                    newparent.0,
                    newname.as_bytes(),
                    mode,
                    now(),
                )
                .map_err(|e| fs_errno(parent.0, e))
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let result = self.with(|s| {
            s.store
                .link(ino.0, newparent.0, newname.as_bytes(), now())
                .map_err(|e| fs_errno(ino.0, e))
        });
        match result {
            Ok(head) => reply.entry(&self.ttl, &attr(&head), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let truncate = flags.0 & libc::O_TRUNC != 0;
        let _contents = truncate.then(|| self.lock(ino).write());
        let result = self.with(|s| {
            let head = s.store.getattr(ino.0).map_err(|e| fs_errno(ino.0, e))?;
            if head.kind == ObjectKind::Directory {
                return Err(Errno::EISDIR);
            }
            if truncate && head.kind == ObjectKind::Regular && head.size > 0 {
                // FUSE_ATOMIC_O_TRUNC: the truncation comes with the open.
                s.file(ino.0)?
                    .set_len(0, now())
                    .map_err(|e| content_errno(ino.0, e))?;
            }
            s.opened(ino.0)
        });
        match result {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _contents = self.lock(ino).read();
        let result = self
            .with(|s| {
                s.file(ino.0)?
                    .plan_read(offset, size as usize)
                    .map_err(|e| content_errno(ino.0, e))
            })
            .and_then(|read| read.run().map_err(|e| content_errno(ino.0, e)));
        match result {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _contents = self.lock(ino).write();
        let result = self
            .with(|s| {
                s.file(ino.0)?
                    .begin_write(offset, data.len())
                    .map_err(|e| content_errno(ino.0, e))
            })
            // Sealed without the store's lock.
            .map(|edges| edges.seal(data))
            .and_then(|sealed| {
                self.with(|s| {
                    s.trigger.wrote(data.len());
                    s.file(ino.0)?
                        .finish_write(sealed, now())
                        .map_err(|e| content_errno(ino.0, e))
                })
            });
        match result {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) promises no durability; fsync does.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        match self.with(|s| s.released(ino.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _contents = self.lock(ino).read();
        match self.sync(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let result = self.with(|s| s.store.getattr(ino.0).map_err(|e| fs_errno(ino.0, e)));
        match result {
            Ok(head) if head.kind == ObjectKind::Directory => {
                reply.opened(FileHandle(0), FopenFlags::empty())
            }
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(e),
        }
    }

    /// Offsets are entry hashes (§16.7): a listing resumes after the last
    /// hash returned, whatever was inserted or removed since. A run of
    /// equal hashes cut by a full buffer would lose its rest; with 64-bit
    /// keyed hashes that needs a collision in one directory.
    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let (dir, entries) = match self.entries(ino, offset) {
            Ok(listed) => listed,
            Err(e) => return reply.error(e),
        };
        if offset == 0 && reply.add(ino, 1, FileType::Directory, ".") {
            return reply.ok();
        }
        if offset <= 1 && reply.add(INodeNo(dir.parent), 2, FileType::Directory, "..") {
            return reply.ok();
        }
        for (entry, _) in entries {
            let name = OsStr::from_bytes(&entry.name);
            if reply.add(INodeNo(entry.id), entry.hash, file_type(entry.kind), name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let (dir, entries) = match self.entries(ino, offset) {
            Ok(listed) => listed,
            Err(e) => return reply.error(e),
        };
        let this = attr(&dir);
        if offset == 0 && reply.add(ino, 1, ".", &self.ttl, &this, Generation(0)) {
            return reply.ok();
        }
        if offset <= 1 {
            let parent = if dir.id == ROOT_ID {
                Ok(dir.clone())
            } else {
                self.with(|s| {
                    s.store
                        .getattr(dir.parent)
                        .map_err(|e| fs_errno(dir.parent, e))
                })
            };
            match parent {
                Ok(parent) => {
                    if reply.add(
                        INodeNo(parent.id),
                        2,
                        "..",
                        &self.ttl,
                        &attr(&parent),
                        Generation(0),
                    ) {
                        return reply.ok();
                    }
                }
                Err(e) => return reply.error(e),
            }
        }
        for (entry, head) in entries {
            // An object whose record fails is logged and left out.
            let Some(head) = head else { continue };
            let name = OsStr::from_bytes(&entry.name);
            if reply.add(
                INodeNo(entry.id),
                entry.hash,
                name,
                &self.ttl,
                &attr(&head),
                Generation(0),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Object 0: the log alone (§16.15, `fsyncdir`).
        match self.sync(0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match rustix::fs::statvfs(&self.root) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                atrest_meta::directory::MAX_NAME as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(Errno::from_i32(e.raw_os_error())),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let mode = match flags {
            0 => XattrMode::Any,
            libc::XATTR_CREATE => XattrMode::Create,
            libc::XATTR_REPLACE => XattrMode::Replace,
            _ => return reply.error(Errno::EINVAL),
        };
        let result = self.with(|s| {
            s.store
                .set_xattr(ino.0, name.as_bytes(), value, mode, now())
                .map_err(|e| fs_errno(ino.0, e))
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        // Nothing outside user. is stored: the kernel asks for
        // security.capability before writes, answered without the lock.
        if !name.as_bytes().starts_with(atrest_meta::xattr::NAMESPACE) {
            return reply.error(Errno::NO_XATTR);
        }
        let result = self.with(|s| {
            s.store
                .get_xattr(ino.0, name.as_bytes())
                .map_err(|e| fs_errno(ino.0, e))
        });
        reply_xattr(reply, size, result);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let result = self.with(|s| {
            let names = s.store.list_xattrs(ino.0).map_err(|e| fs_errno(ino.0, e))?;
            let mut list = Vec::with_capacity(names.iter().map(|n| n.len() + 1).sum());
            for name in names {
                list.extend_from_slice(&name);
                list.push(0);
            }
            Ok(list)
        });
        reply_xattr(reply, size, result);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.with(|s| {
            s.store
                .remove_xattr(ino.0, name.as_bytes(), now())
                .map_err(|e| fs_errno(ino.0, e))
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Permissions are checked by the kernel (default_permissions).
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let new = new_object(ObjectKind::Regular, mode & !umask, 0, Vec::new());
        let made = self
            .make(req, parent, name, new)
            .and_then(|attr| self.with(|s| s.opened(attr.ino.0)).map(|()| attr));
        match made {
            Ok(attr) => reply.created(
                &self.ttl,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // Only plain allocation, which for us means: extend the size.
        if mode != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let _contents = self.lock(ino).write();
        let result = self.with(|s| {
            let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
            let mut file = s.file(ino.0)?;
            let size = file.len().map_err(|e| content_errno(ino.0, e))?;
            if end > size {
                file.set_len(end, now())
                    .map_err(|e| content_errno(ino.0, e))?;
            }
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}
